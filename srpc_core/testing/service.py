"""The implementation of the kit's test service (server side only)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from srpc_core.testing.interface import ConformanceError, ConformanceInterface

#: How long a blocked procedure waits for the test before giving up, so that a broken test or
#: transport cannot keep a server thread forever.
GATE_TIMEOUT = 30.0
#: How long `rendezvous` waits for the other calls: they all start at once, so this is ample.
RENDEZVOUS_TIMEOUT = 10.0


class ServerOnlyError(ValueError):
    """Not declared by the interface: the caller gets a `RemoteError` that is a `ValueError`."""


_FAILURES: dict[str, type[Exception]] = {
    "ZeroDivisionError": ZeroDivisionError,
    "KeyError": KeyError,
    "ValueError": ValueError,
    "ConformanceError": ConformanceError,
    "ServerOnlyError": ServerOnlyError,
}


class ConformanceService(ConformanceInterface):
    """Serves the kit's calls; tests coordinate with it through `entered` and `release`."""

    def __init__(self, rendezvous_timeout: float = RENDEZVOUS_TIMEOUT) -> None:
        self.rendezvous_timeout = rendezvous_timeout
        #: Set when a `block` call has started.
        self.entered = threading.Event()
        #: Set by the test to let `block` calls return.
        self.release = threading.Event()
        self._barriers: dict[int, threading.Barrier] = {}
        self._lock = threading.Lock()

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, value: Any) -> Any:
        return value

    def blob(self, size: int) -> str:
        return "x" * size

    def fail(self, kind: str, message: str) -> None:
        raise _FAILURES[kind](message)

    def block(self, value: Any) -> Any:
        self.entered.set()
        if not self.release.wait(GATE_TIMEOUT):
            raise TimeoutError("the conformance test never released block()")
        return value

    def rendezvous(self, parties: int) -> int:
        with self._lock:
            barrier = self._barriers.setdefault(parties, threading.Barrier(parties))
        try:
            barrier.wait(self.rendezvous_timeout)
        except threading.BrokenBarrierError:
            raise RuntimeError(
                f"only some of {parties} concurrent calls ever ran at the same time: the "
                "transport serves calls one after another"
            ) from None
        return parties


class AsyncConformanceService(ConformanceService):
    """The same service with ``async def`` methods, so that `Server.start()` serves it with the
    asyncio server (over the transport's async listener, when it has one).

    `add`, `echo`, `blob`, `fail` and `block` run on the server's event loop; `rendezvous`
    stays a plain method (it runs in the server's thread pool). `cancelled` is set when the
    server cancels a `block` call (the client cancelled it).
    """

    def __init__(self, rendezvous_timeout: float = RENDEZVOUS_TIMEOUT) -> None:
        super().__init__(rendezvous_timeout)
        #: Set when a `block` call was cancelled by the server.
        self.cancelled = threading.Event()

    async def add(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + b

    async def echo(self, value: Any) -> Any:
        return value

    async def blob(self, size: int) -> str:  # type: ignore[override]
        return "x" * size

    async def fail(self, kind: str, message: str) -> None:  # type: ignore[override]
        raise _FAILURES[kind](message)

    async def block(self, value: Any) -> Any:
        self.entered.set()
        try:
            released = await asyncio.to_thread(self.release.wait, GATE_TIMEOUT)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if not released:
            raise TimeoutError("the conformance test never released block()")
        return value


__all__ = [
    "GATE_TIMEOUT",
    "RENDEZVOUS_TIMEOUT",
    "AsyncConformanceService",
    "ConformanceService",
    "ServerOnlyError",
]
