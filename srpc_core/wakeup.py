"""`Waker`: the self-pipe that wakes a thread sleeping in select, poll or a ZeroMQ poller.

A serving loop waits on its sockets and on a waker's `reader`; any thread (or a signal handler)
calls `wake` to make that wait return, and the loop calls `drain` before looking at why::

    waker = Waker()
    selector.register(waker, selectors.EVENT_READ)     # or zmq.Poller().register(waker, POLLIN)
    ...
    waker.wake()                                       # from anywhere: returns at once
    ...
    waker.drain()                                      # in the loop, once it woke up
    waker.close()                                      # when the loop is done

It is a connected pair of non-blocking sockets (a ``socketpair``), which works on every platform
and with every poller that takes a file descriptor, ZeroMQ's included.
"""

from __future__ import annotations

import socket
from types import TracebackType

#: How much `drain` reads at a time.
_CHUNK = 4096


class Waker:
    """A self-pipe: `wake` makes the `reader` readable until `drain` is called.

    `wake` may be called from any thread and from a signal handler: it never blocks (a waker
    that is already awake stays awake; extra wake-ups are dropped) and never raises, even after
    `close`. The waker can be registered as it is with `selectors` and with `zmq.Poller`, both
    of which take an object with a `fileno` method. Note that `zmq.Poller.poll` reports it by
    its file descriptor, not by the object: test ``waker.fileno() in events``.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    @property
    def reader(self) -> socket.socket:
        """The socket to wait on: readable once `wake` was called, until `drain`."""
        return self._reader

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._reader.fileno() == -1

    def fileno(self) -> int:
        """The reader's file descriptor (what selectors and pollers wait on); -1 once closed."""
        return self._reader.fileno()

    def wake(self) -> None:
        """Make the reader readable. Never blocks, never raises; safe from a signal handler."""
        try:
            self._writer.send(b"\0")
        except OSError:  # already full of wake-ups (so awake), or closed: nothing to do
            pass

    def drain(self) -> None:
        """Consume the pending wake-ups, so the reader waits again. Never blocks."""
        try:
            while len(self._reader.recv(_CHUNK)) == _CHUNK:
                pass
        except OSError:  # nothing (more) to read, or closed
            pass

    def close(self) -> None:
        """Release both sockets; later calls of `wake` and `drain` do nothing. Idempotent."""
        self._writer.close()
        self._reader.close()

    def __enter__(self) -> Waker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = [
    "Waker",
]
