"""`ThreadedListener`: a `Listener` that serves each peer in a thread of its own.

Everything a threaded server needs besides talking to its peers lives here, once: the loop that
accepts peers until `shutdown`, the stop flag, a wake-up that makes a waiting accept return at
once (from any thread, or a signal handler), the bookkeeping of the threads serving peers, and
a shutdown that lets calls in flight finish and answer within one deadline while idle peers are
let go at once. A subclass says how to accept one peer, how to serve it, and how to let go of
an idle one::

    class MyListener(ThreadedListener[MyPeer]):
        def accept(self) -> MyPeer | None:
            if not self.wait_readable(self._server_socket):
                return None                       # woken by shutdown()
            return MyPeer(self._server_socket.accept()[0])

        def serve(self, peer: MyPeer) -> None:  # in the peer's own thread
            while not self.stopping:
                request = peer.read()             # with a timeout: the idle timeout
                if request is None:
                    return
                peer.write(answer(self._handler, request, self._max_bytes))

        def interrupt(self, peer: MyPeer) -> None:
            peer.stop_reading()                   # an idle read returns; a call in flight answers

        def close_peer(self, peer: MyPeer) -> None:
            peer.close()

        def stop_accepting(self) -> None:
            self._server_socket.close()

`srpc_core.streams.StreamListener` (stream sockets: tcp, uds) is built this way.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from srpc_core.ratelimit import LogLimiter
from srpc_core.transport import Listener
from srpc_core.wakeup import Waker

log = logging.getLogger("srpc.listeners")
#: The default of ``[srpc] max_connections``.
DEFAULT_MAX_CONNECTIONS = 1024
#: Seconds `ThreadedListener.back_off` pauses accepting when the system is out of resources.
BACK_OFF_SECONDS = 0.1
#: Log lines about the same trouble (per kind, per peer): at most one per 10 s.
_limited = LogLimiter(period=10.0)

#: A peer as a listener sees it (a connected socket, a session object, ...); hashable.
Peer = TypeVar("Peer", bound=Hashable)


class ThreadedListener(Listener, Generic[Peer]):
    """A `Listener` serving every peer in its own thread, with a draining shutdown.

    Args:
        address, port: what `Listener.address` and `Listener.port` report.
        drain_timeout: the most seconds shutdown waits, in all, for calls in flight.
        max_connections: the most peers served at once; a peer accepted past it is handed to
            `refuse` (which tells it the server is busy) instead of getting a thread. None: no
            limit.

    Subclasses implement `accept`, `serve`, `interrupt`, `close_peer` and `stop_accepting`, and
    may override `closed` and `refuse`.

    At the operating system's limits the listener degrades instead of failing: a peer whose
    thread cannot start (the thread limit) is closed and the others are served; `accept`
    implementations call `back_off` when accepting fails for want of descriptors (EMFILE), so
    the loop pauses instead of spinning; such events are logged once per 10 s, not per peer.
    """

    def __init__(
        self,
        address: str,
        port: int,
        *,
        drain_timeout: float,
        max_connections: int | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.drain_timeout = drain_timeout
        self.max_connections = max_connections
        self._stopping = threading.Event()
        self._waker = Waker()
        self._selector: selectors.BaseSelector | None = None
        self._peers: dict[Peer, threading.Thread] = {}
        self._peers_lock = threading.Lock()

    # -- what subclasses implement ---------------------------------------------------------

    @abstractmethod
    def accept(self) -> Peer | None:
        """Wait for the next peer and return it; return None when `shutdown` woke the wait (or
        after a failure to accept that is only worth a log line).

        Wait with `wait_readable` (or make the wait return when `wake` is called).
        """

    @abstractmethod
    def serve(self, peer: Peer) -> None:
        """Serve `peer` until it leaves, falls silent for the idle timeout, or `stopping` is
        set. Runs in the peer's own thread; must not raise for anything the peer does."""

    @abstractmethod
    def interrupt(self, peer: Peer) -> None:
        """Shutdown has begun: make `serve` return if it is waiting for the peer's next request
        (an idle keep-alive peer must not hold shutdown up), but let a call in flight finish
        and send its answer. Called from the thread running `serve_forever`."""

    @abstractmethod
    def close_peer(self, peer: Peer) -> None:
        """Release `peer` (close its connection); called once `serve` has returned."""

    @abstractmethod
    def stop_accepting(self) -> None:
        """Close the listening endpoint; called once, when the accept loop has ended."""

    def closed(self) -> None:
        """Called once the listening endpoint is closed, before draining (clean up here)."""

    def refuse(self, peer: Peer) -> None:
        """`peer` came while `max_connections` peers are being served: tell it, if the
        transport can without waiting, and release it. The default releases it
        (`close_peer`). Runs in the accept loop: must never block."""
        self.close_peer(peer)

    # -- what subclasses use ---------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """True once `shutdown` has been called."""
        return self._stopping.is_set()

    def wait_readable(self, fileobj: socket.socket) -> bool:
        """Wait until `fileobj` is readable (True) or `shutdown` wakes the listener (False)."""
        selector = self._selector
        if selector is None:
            selector = self._selector = selectors.DefaultSelector()
            selector.register(self._waker, selectors.EVENT_READ)
        try:
            selector.get_key(fileobj)
        except KeyError:
            selector.register(fileobj, selectors.EVENT_READ)
        while not self._stopping.is_set():
            for key, _ in selector.select():
                if key.fileobj is not self._waker:
                    return True
                self._waker.drain()
        return False

    def wake(self) -> None:
        """Make a waiting `accept` return. Never blocks; safe in a signal handler."""
        self._waker.wake()

    def back_off(self, reason: str) -> None:
        """Pause accepting for `BACK_OFF_SECONDS` (or until `shutdown`), logging `reason` at
        most once per 10 s: for an `accept` that failed because the process or the system is
        out of something (EMFILE, ENFILE), which accepting again at once would only repeat
        while burning a CPU."""
        _limited.warning(
            log,
            ("back off", self.address),
            "srpc: %s; pausing new connections for %g s",
            reason,
            BACK_OFF_SECONDS,
        )
        self._stopping.wait(BACK_OFF_SECONDS)

    def peers(self) -> list[Peer]:
        """The peers being served right now."""
        with self._peers_lock:
            return list(self._peers)

    # -- the Listener interface ------------------------------------------------------------

    def serve_forever(self) -> None:
        try:
            while not self._stopping.is_set():
                peer = self.accept()
                if peer is not None:
                    self._start(peer)
        finally:
            try:
                self.stop_accepting()
            finally:
                try:
                    self.closed()
                finally:  # whatever closed() does, calls in flight still get their answers
                    self._drain()
                    if self._selector is not None:
                        self._selector.close()
                    self._waker.close()

    def shutdown(self) -> None:
        self._stopping.set()
        self.wake()

    # -- bookkeeping -----------------------------------------------------------------------

    def _start(self, peer: Peer) -> None:
        limit = self.max_connections
        with self._peers_lock:
            full = limit is not None and len(self._peers) >= limit
        if full:
            _limited.warning(
                log,
                ("full", self.address),
                "srpc: %s is serving its maximum of %d "
                "connections (max_connections): refusing new ones",
                self.address,
                limit,
            )
            self._release(peer, self.refuse)
            return
        try:
            thread = threading.Thread(target=self._run, args=(peer,), daemon=True)
            with self._peers_lock:
                self._peers[peer] = thread
            thread.start()
        except Exception as exc:  # "can't start new thread": the OS limit; serve the others
            with self._peers_lock:
                self._peers.pop(peer, None)
            _limited.warning(
                log,
                ("thread", self.address),
                "srpc: cannot serve a new peer of %s: %s",
                self.address,
                exc,
            )
            self._release(peer, self.close_peer)

    def _release(self, peer: Peer, how: Callable[[Peer], None]) -> None:
        try:
            how(peer)
        except Exception:  # a peer already gone, say: the listener goes on
            log.debug("srpc: releasing a peer of %s failed", self.address, exc_info=True)

    def _run(self, peer: Peer) -> None:
        try:
            self.serve(peer)
        except Exception:
            log.exception("srpc: serving a peer of %s failed", self.address)
        finally:
            with self._peers_lock:
                self._peers.pop(peer, None)
            self.close_peer(peer)

    def _drain(self) -> None:
        """Let idle peers go; give calls in flight until one deadline to finish and answer."""
        with self._peers_lock:
            serving = dict(self._peers)
        for peer in serving:
            try:
                self.interrupt(peer)
            except Exception:  # a peer already gone, say: the others still get theirs
                log.debug("srpc: interrupting a peer of %s failed", self.address, exc_info=True)
        deadline = time.monotonic() + self.drain_timeout  # for all of them, not each
        for thread in serving.values():
            if thread.ident is not None:  # started (a thread that never started is not waited)
                thread.join(max(0.0, deadline - time.monotonic()))


__all__ = [
    "BACK_OFF_SECONDS",
    "DEFAULT_MAX_CONNECTIONS",
    "Peer",
    "ThreadedListener",
]
