"""The calculator's implementation (server side only)."""

from calc.calc_interface import CalcInterface


class Calc(CalcInterface):
    """Does the arithmetic."""

    def add(self, a: float, b: float) -> float:
        return a + b

    def sub(self, a: float, b: float) -> float:
        return a - b

    def mul(self, a: float, b: float) -> float:
        return a * b

    def div(self, a: float, b: float) -> float:
        return a / b
