"""Pipelined requests on one stream connection, answered side by side by the threaded server.

A `srpc_core.streams.StreamListener` connection thread reads a request, runs it, writes its
answer, then reads the next: the fastest road when a client sends one call at a time (the sync
`Client` does). The async client may send many calls on one connection without waiting for
their answers (up to the ``max_in_flight`` the server advertises); run one after another, a
slow call would hold up every call behind it.

So a `Watchdog` per listener looks, every `TICK` seconds, at the connections whose running call
began at least `TICK` ago. When such a connection has bytes waiting behind that call, it hands
the reading over to a new thread (a *follower*), which reads and runs the next requests the
same way (and may be relieved in turn). The call that was running writes its answer when it
ends, then its thread leaves reading to the follower. Answers never interleave (one lock per
connection's sends), and a connection runs at most ``max_in_flight`` calls at once; requests
past that wait in the socket until one ends.

A connection whose calls are quick never sees any of this: each call costs it a clock read and
three uncontended lock round trips (its state, twice, and its sends). The watchdog's thread
runs only while the listener has connections.

Not for TLS connections: OpenSSL does not allow one thread to read a connection while another
writes it, so TLS connections answer pipelined requests in order (the asyncio server, which
reads and writes from one thread, runs them side by side).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
from collections.abc import Callable
from time import monotonic

log = logging.getLogger("srpc.streams")

#: Seconds a call runs before the requests queued behind it on its connection get a thread of
#: their own (and how often the watchdog looks).
TICK = 0.01


class Connection:
    """The state the threads serving one connection share.

    The thread whose `generation` equals `reader` is the one that reads the next request;
    `busy_since` is when the call it is running began (0: it is reading); `running` counts
    the calls running on the connection.
    """

    __slots__ = ("busy_since", "followers", "lock", "reader", "running", "send_lock", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.send_lock = threading.Lock()
        self.lock = threading.Lock()
        self.reader = 0
        self.busy_since = 0.0
        self.running = 0
        self.followers: list[threading.Thread] = []

    def begin(self) -> None:
        """The reader is about to run a call."""
        with self.lock:
            self.running += 1
            self.busy_since = monotonic()

    def end(self, generation: int) -> bool:
        """The call of the thread of `generation` ended: whether that thread still reads."""
        with self.lock:
            self.running -= 1
            if self.reader == generation:
                self.busy_since = 0.0
                return True
            return False

    def hand_over(
        self, since: float, limit: int, start: Callable[[Connection, int], threading.Thread]
    ) -> None:
        """Give the reading to a new thread if the call that began at `since` still runs and
        the connection runs fewer than `limit` calls."""
        with self.lock:  # (held while the thread starts: `end` waits to know who reads)
            if self.busy_since != since:
                return  # that call ended meanwhile: its thread reads on
            if self.running >= limit:
                return  # as many calls as allowed run: the next request waits its turn
            self.followers = [thread for thread in self.followers if thread.is_alive()]
            self.reader += 1
            self.busy_since = 0.0
            try:
                self.followers.append(start(self, self.reader))
            except RuntimeError as exc:  # "can't start new thread": the old reader reads on
                self.reader -= 1
                self.busy_since = since
                log.warning("srpc: cannot start a thread for pipelined requests: %s", exc)

    def join_followers(self) -> None:
        """Wait for every thread that took over this connection's reading."""
        while True:
            with self.lock:
                alive = [thread for thread in self.followers if thread.is_alive()]
            if not alive:
                return
            alive[0].join()


class Watchdog:
    """Looks for connections with requests waiting behind a running call (see the module).

    Args:
        start: starts the thread that reads `connection` from now on, as `generation`.
        limit: the most calls one connection may run at once (``max_in_flight``).
    """

    def __init__(self, start: Callable[[Connection, int], threading.Thread], limit: int) -> None:
        self._start = start
        self._limit = limit
        self._connections: set[Connection] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None  # runs while there are connections

    def add(self, connection: Connection) -> None:
        if self._limit < 2 or isinstance(connection.sock, ssl.SSLSocket):
            return  # nothing to run side by side (see the module on TLS)
        with self._lock:
            self._connections.add(connection)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="srpc-pipelining", daemon=True
                )
                self._thread.start()

    def remove(self, connection: Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _run(self) -> None:
        pause = threading.Event()  # never set: a timed wait
        while True:
            pause.wait(TICK)
            with self._lock:
                if not self._connections:
                    self._thread = None  # the next connection starts another
                    return
            try:
                self._look()
            except Exception:  # the watchdog must outlive any one connection's trouble
                log.exception("srpc: watching pipelined connections failed")

    def _look(self) -> None:
        now = monotonic()
        with self._lock:
            slow = [
                (connection, connection.busy_since)
                for connection in self._connections
                if connection.busy_since and now - connection.busy_since >= TICK
            ]
        if not slow:
            return
        waiting = _readable([connection.sock for connection, _ in slow])
        for connection, since in slow:
            if connection.sock.fileno() in waiting:
                connection.hand_over(since, self._limit, self._start)


def _readable(socks: list[socket.socket]) -> set[int]:
    """The descriptors among `socks` with bytes waiting, without waiting."""
    fds = [sock.fileno() for sock in socks]
    fds = [fd for fd in fds if fd >= 0]
    if hasattr(select, "poll"):  # no FD_SETSIZE limit
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        return {fd for fd, _ in poller.poll(0)}
    return set(select.select(fds, [], [], 0)[0])


__all__ = ["TICK", "Connection", "Watchdog"]
