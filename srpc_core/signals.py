"""`stop_on_signals`: Ctrl+C and SIGTERM stop a blocking serve loop, then the old handlers return.

Used around a loop that blocks until its ``stop`` is called (a server's `start`)::

    with stop_on_signals(server.stop):
        server.serve_forever()

Python runs signal handlers only in the main thread, and only the main thread may install them;
called from any other thread (a server embedded in a test or an application), the context
manager installs nothing and the loop is stopped the ordinary way, by calling ``stop``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals that ask a server to stop: Ctrl+C, and what ``kill`` and service managers send.
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


@contextmanager
def stop_on_signals(
    stop: Callable[[], None], signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> Iterator[bool]:
    """While inside the block, each of `signals` calls `stop()` instead of its usual handler.

    `stop` runs in the main thread between two Python bytecodes, like any Python signal
    handler: it must return quickly and must not wait for the loop it stops (setting an event
    and waking a `srpc_core.wakeup.Waker` is the intended use). Each arrival calls it again.

    Yields True when the handlers were installed, False when the block runs outside the main
    thread, where nothing is installed. On exit, however the block
    ends, every signal gets back exactly the handler it had before (one not installed from
    Python, which `signal` cannot restore, becomes the default action).
    """
    if threading.current_thread() is not threading.main_thread():
        yield False
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        stop()

    previous: dict[signal.Signals, _Handler] = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, handle)
    except BaseException:  # a signal that cannot be caught (SIGKILL): leave all as it was
        _restore(previous)
        raise
    try:
        yield True
    finally:
        _restore(previous)


def _restore(previous: dict[signal.Signals, _Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


__all__ = [
    "STOP_SIGNALS",
    "stop_on_signals",
]
