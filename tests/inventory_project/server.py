"""Serves the inventory (blocks; Ctrl+C stops it)."""

from srpc_inventory_server_stub import SrpcInventoryServerStub

if __name__ == "__main__":
    SrpcInventoryServerStub().start()
