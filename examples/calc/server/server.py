"""Start the calculator server (Ctrl+C stops it)."""

from srpc_calc_server_stub import SrpcCalcServerStub

SrpcCalcServerStub().start()
