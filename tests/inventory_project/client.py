"""Uses the client stub the way a user would; mypy --strict must accept every line."""

import uuid
from decimal import Decimal

from inventory.inventory_interface import Category, InventoryInterface, Item, OutOfStock
from srpc_inventory_client_stub import SrpcInventoryClientStub


def main() -> None:
    with SrpcInventoryClientStub("127.0.0.1", 5000, timeout=2.0) as stub:
        added: Item = stub.add(Item("x", "hammer", Decimal("9.50"), Category.TOOL, qty=3))
        item: Item | None = stub.find("x")
        found: list[Item] = stub.search("ham", category=Category.TOOL, limit=5)
        left: int = stub.take("x", 2)
        names: dict[int, str] = stub.names()
        label: bytes = stub.label("x")
        aisle, shelf = stub.shelf("x")
        ticket: uuid.UUID = stub.ticket("x", note="low")
        total: Decimal = stub.total(Category.TOOL)
        stub.clear()
        try:
            stub.take("x", 100)
        except OutOfStock as exc:
            available: int = exc.available
            print(available)
        print(added, item, found, left, names, label, aisle + shelf, ticket, total)
    service: InventoryInterface = SrpcInventoryClientStub(config="srpc.toml")
    print(service.find("y"))


if __name__ == "__main__":
    main()
