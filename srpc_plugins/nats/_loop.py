"""One background asyncio event loop per process, for nats-py (which is asyncio-native).

Sync code (channels, listeners) hands coroutines to it with `BackgroundLoop.run`. After a
fork, the child has no loop thread (threads do not survive ``fork``), and the parent's
connections are not its own: `background_loop` notices the new pid and starts a fresh loop
(with a fresh table of shared connections); a fork handler also resets the lock guarding it,
which a thread of the parent may have held at the moment of the fork.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_current: BackgroundLoop | None = None


class LoopTimeout(Exception):
    """`BackgroundLoop.run` gave up waiting (the coroutine was cancelled)."""


class BackgroundLoop:
    """An asyncio loop running forever in a daemon thread of this process."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        #: Per-process state of the package (the clients' shared connections), by name.
        self.state: dict[str, Any] = {}
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), name="srpc-nats-loop", daemon=True
        )
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coroutine` on the loop; its result arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run `coroutine` on the loop and wait for its result at most `timeout` seconds.

        Raises what the coroutine raises, or `LoopTimeout` (after cancelling it). Must not be
        called from the loop's own thread.
        """
        if threading.current_thread() is self.thread:
            coroutine.close()
            raise RuntimeError("BackgroundLoop.run called from the loop's own thread")
        future = self.submit(coroutine)
        try:
            return future.result(max(timeout, 0.0))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise LoopTimeout(f"gave up after {timeout} s") from None

    def call_soon(self, callback: Any, *args: Any) -> None:
        """Run ``callback(*args)`` on the loop soon; never blocks (usable in signal handlers)."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed (interpreter shutdown)
            pass


def background_loop() -> BackgroundLoop:
    """This process's loop, started on first use (and again in a forked child)."""
    global _current
    current = _current
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _current is None or _current.pid != os.getpid():
            _current = BackgroundLoop()
        return _current


def _after_fork_in_child() -> None:
    global _current, _lock
    _current = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["BackgroundLoop", "LoopTimeout", "background_loop"]
