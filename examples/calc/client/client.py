"""Call the calculator server."""

from srpc_calc_client_stub import SrpcCalcClientStub

calc = SrpcCalcClientStub("127.0.0.1")
print(calc.add(4, 2))
print(calc.mul(4, 2))
print(calc.sub(4, 2))
print(calc.div(4, 2))
try:
    calc.div(4, 0)
except ZeroDivisionError as error:
    print(f"ZeroDivisionError: {error}")
