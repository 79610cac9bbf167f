"""The calculator's interface: the contract between server and client."""

from abc import ABC, abstractmethod


class CalcInterface(ABC):
    """A four-function calculator."""

    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """Return a + b."""

    @abstractmethod
    def sub(self, a: float, b: float) -> float:
        """Return a - b."""

    @abstractmethod
    def mul(self, a: float, b: float) -> float:
        """Return a * b."""

    @abstractmethod
    def div(self, a: float, b: float) -> float:
        """Return a / b; dividing by zero raises ZeroDivisionError."""
