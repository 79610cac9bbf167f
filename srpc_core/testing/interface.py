"""The interface of the kit's test service (its module is the exception allow-list)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class ConformanceError(Exception):
    """Declared by the interface's module, so it comes back to the caller as itself."""


class ConformanceInterface(ABC):
    """What the transport kit's server serves."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """Return a + b."""

    @abstractmethod
    def echo(self, value: Any) -> Any:
        """Return `value` unchanged."""

    @abstractmethod
    def blob(self, size: int) -> str:
        """Return a string of `size` characters (to make large responses)."""

    @abstractmethod
    def fail(self, kind: str, message: str) -> None:
        """Raise the exception named by `kind` with `message`."""

    @abstractmethod
    def block(self, value: Any) -> Any:
        """Wait until the test releases the service, then return `value`."""

    @abstractmethod
    def rendezvous(self, parties: int) -> int:
        """Wait until `parties` calls are in this procedure at once; return `parties`."""


__all__ = [
    "ConformanceError",
    "ConformanceInterface",
]
