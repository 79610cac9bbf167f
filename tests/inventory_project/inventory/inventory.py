"""The inventory service's implementation (server side only)."""

import uuid
from decimal import Decimal

from inventory.inventory_interface import Category, InventoryInterface, Item, OutOfStock


class Inventory(InventoryInterface):
    """Keeps the stock in a dict."""

    def __init__(self) -> None:
        self.items: dict[str, Item] = {}

    def add(self, item: Item) -> Item:
        self.items[item.sku] = item
        return item

    def find(self, sku: str) -> Item | None:
        return self.items.get(sku)

    def search(self, text: str, *, category: Category | None = None, limit: int = 10) -> list[Item]:
        found = [i for i in self.items.values() if text in i.name]
        return [i for i in found if category in (None, i.category)][:limit]

    def take(self, sku: str, qty: int = 1) -> int:
        item = self.items[sku]
        if item.qty < qty:
            raise OutOfStock(sku, item.qty)
        item.qty -= qty
        return item.qty

    def names(self) -> dict[int, str]:
        return dict(enumerate(item.name for item in self.items.values()))

    def label(self, sku: str) -> bytes:
        return f"[{sku}]".encode()

    def shelf(self, sku: str) -> tuple[int, int]:
        return (len(sku), 1)

    def ticket(self, sku: str, *, note: str = "") -> uuid.UUID:
        return uuid.uuid5(uuid.NAMESPACE_URL, f"{sku}:{note}")

    def total(self, category: Category) -> Decimal:
        items = [i for i in self.items.values() if i.category is category]
        return sum((i.price * i.qty for i in items), Decimal(0))

    def clear(self) -> None:
        self.items.clear()
