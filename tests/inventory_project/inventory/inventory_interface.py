"""An inventory service: the interface (what the client and the server share)."""

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Optional


class Category(Enum):
    """What kind of thing an item is."""

    TOOL = "tool"
    PART = "part"


@dataclass
class Item:
    """A stock item."""

    sku: str
    name: str
    price: Decimal
    category: Category
    qty: int = 0
    tags: set[str] = field(default_factory=set)
    updated: datetime | None = None


class OutOfStock(Exception):
    """Fewer items in stock than asked for."""

    def __init__(self, sku: str, available: int) -> None:
        super().__init__(f"{sku}: only {available} left")
        self.sku = sku
        self.available = available


class InventoryInterface(ABC):
    """Keeps track of stock."""

    @abstractmethod
    def add(self, item: Item) -> Item:
        """Add an item (or replace the one with its sku) and return it."""

    @abstractmethod
    def find(self, sku: str) -> Optional[Item]:  # noqa: UP045 (the old spelling works too)
        """The item with this sku, or None."""

    @abstractmethod
    def search(self, text: str, *, category: Category | None = None, limit: int = 10) -> list[Item]:
        """Items whose name contains `text`."""

    @abstractmethod
    def take(self, sku: str, qty: int = 1) -> int:
        """Take `qty` items out of stock; return how many are left. Raises OutOfStock."""

    @abstractmethod
    def names(self) -> dict[int, str]:
        """Item names by position."""

    @abstractmethod
    def label(self, sku: str) -> bytes:
        """A printable label for the item."""

    @abstractmethod
    def shelf(self, sku: str) -> tuple[int, int]:
        """Where the item is: (aisle, shelf)."""

    @abstractmethod
    def ticket(self, sku: str, *, note: str = "") -> uuid.UUID:
        """Open a restocking ticket."""

    @abstractmethod
    def total(self, category: Category) -> Decimal:
        """The value of the stock of one category."""

    @abstractmethod
    def clear(self) -> None:
        """Remove every item."""
