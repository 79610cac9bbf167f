"""The server side of the ``zmq`` transport: a bound front socket and a pool of worker threads.

Shape (the load-balancing pattern of the ZeroMQ guide, built from pyzmq sockets and a Poller)::

    clients --tcp--> front socket --(main loop)--> inproc ROUTER --> worker threads (DEALER each)

The main loop owns the front socket and hands each request to an *idle* worker; while every
worker is busy it does not even read the front socket. So a slow call holds up only its own
worker. (The classic ROUTER -> DEALER device round-robins requests to workers blindly, which
queues some requests behind a slow call.) Each worker thread has its own socket: ZeroMQ sockets
are never shared between threads.

Fairness and bounds (docs/scaling.md has the arithmetic): each client connection (a ROUTER
peer) may have at most ``max_in_flight`` calls waiting or running, and a call past that gets a
``busy`` control error at once; waiting calls are served round robin across peers, so a peer
that pipelines many slow calls cannot take every worker; ZeroMQ's queues per peer are bounded in
bytes through their high-water marks; a request has exactly the frames of a request; and a peer
that has gone (a reply to it finds no route) loses the calls it left waiting.

The front socket is `BoundFront`, a ROUTER bound at host:port that clients connect to directly.
With CURVE (``[srpc.zmq] curve_secret_key_file``) it is a CURVE server, and pyzmq's
ThreadAuthenticator admits the keys of ``curve_authorized_keys``; a connection that fails the
handshake never delivers a message, and a socket monitor reports it in one log line per kind
of failure per `WARN_INTERVAL`.
(The ZeroMQ broker, and the connect mode that served behind it, are retired: many servers of a
service run on NATS, docs/scaling.md.)
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import OrderedDict, deque
from time import monotonic

import zmq
from zmq.utils.monitor import recv_monitor_message

from srpc_core import protocol
from srpc_core.transport import Handler, Listener, TransportSettings, answer
from srpc_core.wakeup import Waker
from srpc_plugins.zmq.curve import CurveKeys
from srpc_plugins.zmq.wire import (
    DELIMITER,
    REQUEST_FRAMES,
    ms,
    split_client_request,
    tcp_endpoint,
)

log = logging.getLogger("srpc.zmq")
#: How long closing the front socket may take to deliver the last answers, in milliseconds.
LINGER_MS = 2000
#: While stopping, the main loop wakes at least this often to check its deadlines.
STOPPING_POLL = 0.1
#: While serving, it wakes at least this often, so that Python runs a signal handler even when
#: the kernel delivered the signal to another thread (the main thread sleeps in zmq_poll, which
#: only a signal delivered to the main thread interrupts).
SERVING_POLL = 1.0
#: Signals the worker threads block, so that Ctrl+C and SIGTERM reach the main thread (libzmq
#: blocks every signal in its own threads for the same reason). Faults stay deliverable.
_FAULTS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}
ASYNC_SIGNALS = signal.valid_signals() - _FAULTS
WORKER_READY = b"READY"
WORKER_STOP = b"STOP"

#: While answers wait in an outbox (their peer's ZeroMQ queue was full), the main loop retries
#: them at least this often.
FLUSH_RETRY = 0.005
#: At most one warning per this many seconds about peers whose replies were dropped.
WARN_INTERVAL = 10.0

#: The monitor events of the front socket that the server logs: failed handshakes.
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

Context = zmq.Context[zmq.Socket[bytes]]
Request = tuple[list[bytes], bytes]  # (envelope, message)


class FairQueue:
    """Requests waiting for a worker, one FIFO per peer, taken round robin across peers.

    A peer is the first frame of a request's envelope (the ROUTER's id of the connection).
    """

    def __init__(self) -> None:
        self._queues: OrderedDict[bytes, deque[Request]] = OrderedDict()
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, request: Request) -> None:
        peer = request[0][0]
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = deque()
        queue.append(request)
        self._length += 1

    def popleft(self) -> Request:
        """The next request of the peer whose turn it is (that peer then goes last)."""
        peer, queue = next(iter(self._queues.items()))
        request = queue.popleft()
        self._length -= 1
        if queue:
            self._queues.move_to_end(peer)
        else:
            del self._queues[peer]
        return request

    def drop(self, peer: bytes) -> int:
        """Forget the waiting requests of `peer`; return how many there were."""
        queue = self._queues.pop(peer, None)
        dropped = len(queue) if queue else 0
        self._length -= dropped
        return dropped


class PeerLimits:
    """Calls in flight (waiting or running) per peer; None as the limit: no limit.

    Only peers with calls in flight have an entry, so a peer that has gone leaves nothing here
    once its calls are over (or dropped).
    """

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._in_flight: dict[bytes, int] = {}

    def admit(self, peer: bytes) -> bool:
        """Count one more call of `peer`, or return False if it is at its limit."""
        count = self._in_flight.get(peer, 0)
        if self.limit is not None and count >= self.limit:
            return False
        self._in_flight[peer] = count + 1
        return True

    def done(self, peer: bytes, calls: int = 1) -> None:
        """`calls` calls of `peer` are over (answered or dropped)."""
        count = self._in_flight.get(peer, 0) - calls
        if count > 0:
            self._in_flight[peer] = count
        else:
            self._in_flight.pop(peer, None)

    def __len__(self) -> int:
        """How many peers have calls in flight."""
        return len(self._in_flight)


class WorkerPool:
    """`size` threads running the handler, each with its own DEALER on an inproc ROUTER.

    A worker announces itself with one READY frame, then answers every ``[*envelope,
    message]`` it receives with ``[*envelope, answer]``; a single STOP frame ends it.
    """

    def __init__(self, context: Context, handler: Handler, size: int, max_bytes: int) -> None:
        self.size = size
        self.running = 0  # requests handed to workers and not answered yet
        self._handler = handler
        self._max_bytes = max_bytes
        self._idle: deque[bytes] = deque()  # routing ids of workers waiting for work
        self.socket = context.socket(zmq.ROUTER)
        self.socket.linger = 0
        endpoint = f"inproc://srpc-zmq-workers-{id(self):x}"
        self.socket.bind(endpoint)
        self._threads = [
            threading.Thread(
                target=self._work, args=(context, endpoint), name=f"srpc-zmq-{i}", daemon=True
            )
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def idle(self) -> int:
        """How many workers wait for work."""
        return len(self._idle)

    def submit(self, envelope: list[bytes], message: bytes) -> None:
        """Hand a request to an idle worker (call only while `idle` > 0)."""
        self.socket.send_multipart([self._idle.popleft(), *envelope, message], copy=False)
        self.running += 1

    def collect(self) -> list[Request]:
        """Take the answers the workers have sent, as (envelope, answer) pairs."""
        answers: list[Request] = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return answers
            self._idle.append(frames[0])
            if len(frames) > 2:  # [worker, *envelope, answer]; [worker, READY] is a start-up
                self.running -= 1
                answers.append((frames[1:-1], frames[-1]))

    def stop(self, timeout: float) -> None:
        """End every worker (all must be idle) and close the pool's socket."""
        for worker in self._idle:
            self.socket.send_multipart([worker, WORKER_STOP])
        deadline = monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - monotonic(), 0))
        self.socket.close()

    def _work(self, context: Context, endpoint: str) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        try:
            sock.send(WORKER_READY)
            while True:
                frames = sock.recv_multipart()
                if len(frames) == 1:  # STOP: requests always carry an envelope
                    return
                sock.send_multipart(
                    [*frames[:-1], answer(self._handler, frames[-1], self._max_bytes)], copy=False
                )
        except zmq.ContextTerminated:
            return
        finally:
            sock.close()


class BoundFront:
    """Clients connect straight to this server: a ROUTER bound at host:port.

    Args:
        high_water_mark: ZeroMQ's send and receive high-water marks per peer, in messages
            (``queue_bytes // max_message_bytes``: the queues are bounded in bytes).
        handshake_timeout: seconds a new connection has to complete the ZeroMQ handshake.
        idle_timeout: the heartbeat interval and timeout: a peer that does not answer a ping
            within it (it vanished, or it is not a ZeroMQ peer at all) is disconnected.
        queue_bytes: the bytes of answers the server keeps itself for a peer whose ZeroMQ
            queue is full (at least one answer); further answers to it are dropped.
        curve: the server's CURVE keys (and the client keys it admits), or None: no CURVE.

    ZeroMQ's high-water mark counts messages, and a burst of small answers to one peer (busy
    errors) finds a one-message queue full before its I/O thread has taken the first: such
    answers wait in a per-peer outbox bounded in bytes, and leave on the next turns of the
    loop. A peer that does not read what it asked for fills both, and loses further answers.
    """

    def __init__(
        self,
        context: Context,
        host: str,
        port: int,
        max_bytes: int,
        *,
        high_water_mark: int = 1000,
        handshake_timeout: float = 30.0,
        idle_timeout: float = 300.0,
        queue_bytes: int = 16 * 1024 * 1024,
        curve: CurveKeys | None = None,
        track_peers: bool = False,
    ) -> None:
        self._curve = curve
        #: With `track_peers` (the async listener): the connection (file descriptor) each
        #: peer's last message came on, and the peers whose connection the monitor saw end.
        self.track_peers = track_peers
        self._peer_fds: dict[int, bytes] = {}
        self.disconnected: list[bytes] = []
        self.socket = context.socket(zmq.ROUTER)
        self.socket.linger = LINGER_MS
        self.socket.maxmsgsize = max_bytes  # libzmq drops a larger request before allocating
        self.socket.sndhwm = high_water_mark
        # A peer admitted by the ZAP authenticator (curve_authorized_keys) has one more entry
        # ahead of its first message in the receive queue (libzmq's ZAP credential), which a
        # one-message queue could never get past: room for it.
        zap = curve is not None and curve.authorized is not None
        self.socket.rcvhwm = high_water_mark + 1 if zap else high_water_mark
        # Report a peer that has gone (EHOSTUNREACH) or stopped reading (EAGAIN) when sending
        # to it, instead of dropping the message silently: the server then forgets the peer.
        self.socket.router_mandatory = 1
        self.socket.handshake_ivl = ms(handshake_timeout)
        self.socket.heartbeat_ivl = ms(idle_timeout)
        self.socket.heartbeat_timeout = ms(idle_timeout)
        self.socket.ipv6 = ":" in host
        self._auth = None
        if curve is not None:
            curve.apply_to_server(self.socket)
            self._auth = curve.start_authenticator(context)  # before bind: no unchecked client
        #: Reports failed handshakes (plaintext against CURVE, unknown keys, not ZeroMQ).
        self.monitor = self.socket.get_monitor_socket(
            HANDSHAKE_FAILED | (zmq.EVENT_DISCONNECTED if track_peers else 0)
        )
        endpoint = tcp_endpoint(host, port)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.close(linger=0)
            raise OSError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from None
        # The real endpoint: with port 0 the OS picked the port.
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self._stopping = False
        self._queue_bytes = queue_bytes
        self._outbox: OrderedDict[bytes, deque[list[bytes]]] = OrderedDict()
        self._outbox_bytes: dict[bytes, int] = {}
        self._dropped = 0  # replies dropped since the last warning
        self._warned = 0.0
        self._refused: dict[str, int] = {}  # failed handshakes of each kind since its warning
        self._refused_warned: dict[str, float] = {}

    def accepting(self, room: int) -> bool:
        return room > 0 and not self._stopping

    def read(self, room: int) -> list[Request]:
        requests: list[Request] = []
        for _ in range(room):
            try:
                if self.track_peers:
                    parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                    frames = [part.bytes for part in parts]
                    self._peer_fds[parts[-1].get(zmq.SRCFD)] = frames[0]
                else:
                    frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            request = split_client_request(frames)
            if request is None:
                self._refuse(frames)
            else:
                requests.append(request)
        return requests

    def send(self, envelope: list[bytes], answer: bytes) -> bool:
        peer, frames = envelope[0], [*envelope, answer]
        if peer not in self._outbox:  # else: after the answers already waiting, in order
            sent = self._send_now(frames)
            if sent is not None:
                return sent
        queued = self._outbox_bytes.get(peer, 0)
        if queued and queued + len(answer) > self._queue_bytes:
            self._note_dropped()  # it does not read what it asked for
            return True
        self._outbox.setdefault(peer, deque()).append(frames)
        self._outbox_bytes[peer] = queued + len(answer)
        return True

    @property
    def waiting(self) -> bool:
        return bool(self._outbox)

    @property
    def queued(self) -> int:
        """How many answers wait in the outbox."""
        return sum(len(queue) for queue in self._outbox.values())

    def flush(self) -> list[bytes]:
        gone: list[bytes] = []
        for peer in list(self._outbox):
            queue = self._outbox[peer]
            while queue:
                sent = self._send_now(queue[0])
                if sent is None:  # still full
                    break
                if not sent:
                    gone.append(peer)
                    queue.clear()
                    break
                self._outbox_bytes[peer] -= len(queue.popleft()[-1])
            if not queue:
                del self._outbox[peer], self._outbox_bytes[peer]
        return gone

    def _send_now(self, frames: list[bytes]) -> bool | None:
        """Send without waiting: True if sent, False if the peer has gone, None if its queue
        is full."""
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return None
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            raise
        return True

    def begin_shutdown(self) -> None:
        # Stop reading; stay bound: libzmq's unbind would also cut the connections of the
        # clients still waiting for answers. Requests left unread are dropped at close, and
        # their clients see the connection break.
        self._stopping = True

    def receiving_done(self) -> bool:
        return self._stopping

    def close(self, linger: int | None = None) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

    def note_handshakes(self) -> None:
        """Read the monitor: log failed handshakes, one line per kind per WARN_INTERVAL."""
        while self.monitor.poll(0):
            message = recv_monitor_message(self.monitor)
            if message["event"] == zmq.EVENT_DISCONNECTED:  # (asked for with track_peers)
                peer = self._peer_fds.pop(message["value"], None)
                if peer is not None:
                    self.disconnected.append(peer)
                continue
            kind = self._handshake_failure(message["event"], message["value"])
            self._refused[kind] = self._refused.get(kind, 0) + 1
            now = monotonic()
            if now - self._refused_warned.get(kind, -WARN_INTERVAL) < WARN_INTERVAL:
                continue
            self._refused_warned[kind] = now
            log.warning(
                "srpc zmq: refused a connection: %s (%d such connection(s) since the last "
                "warning); nothing it sent was run",
                kind,
                self._refused.pop(kind),
            )

    def _handshake_failure(self, event: int, value: int) -> str:
        curve = self._curve is not None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return "a CURVE client key not in [srpc.zmq] curve_authorized_keys"
        if (
            event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        ):
            if curve:
                return "a plaintext client (this server requires CURVE)"
            return "a CURVE client (this server does not use CURVE)"
        if curve and event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return "a failed CURVE handshake (the client has a wrong curve_server_key?)"
        # Broken off without a reason: libzmq on a client whose mechanism differs may reset
        # the connection before this side has read the client's greeting, so say both.
        other = "a plaintext client" if curve else "a CURVE client"
        return (
            f"a connection closed during the ZeroMQ handshake ({other}, or a peer not "
            "speaking ZeroMQ?)"
        )

    def _refuse(self, frames: list[bytes]) -> None:
        self._note_dropped(malformed=True)
        error = protocol.control_error(
            f"malformed ZeroMQ request: expected {REQUEST_FRAMES - 1} frames [tag, empty frame, "
            f"message], got {len(frames) - 1} frames"
        )
        self.send([frames[0], DELIMITER], error)

    def _note_dropped(self, malformed: bool = False) -> None:
        """Warn about refused requests and dropped replies, at most once per WARN_INTERVAL."""
        self._dropped += 1
        now = monotonic()
        if now - self._warned < WARN_INTERVAL:
            return
        self._warned = now
        what = (
            "a request without the [tag, empty, message] envelope"
            if malformed
            else ("a reply dropped: its client does not read its replies (queue full)")
        )
        log.warning("srpc zmq: %s (%d such event(s) since the last warning)", what, self._dropped)
        self._dropped = 0


class ZmqListener(Listener):
    """Serves `handler` behind a `BoundFront` with a `WorkerPool`."""

    def __init__(
        self,
        settings: TransportSettings,
        front: BoundFront,
        context: Context,
        handler: Handler,
        workers: int,
        address: str,
        *,
        max_in_flight: int | None = None,
    ) -> None:
        self.address = address
        self.port = front.port
        self._settings = settings
        self._front = front
        self._context = context
        self._pool = WorkerPool(context, handler, workers, settings.max_message_bytes)
        self._pending = FairQueue()  # calls read, awaiting a worker
        self._peers = PeerLimits(max_in_flight)
        # The front reads ahead up to `workers` waiting calls, so that a call past its peer's
        # limit is refused at once and waiting calls are taken round robin.
        self._backlog = workers
        self._stop = threading.Event()
        self._waker = Waker()

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pool.socket, zmq.POLLIN)
        poller.register(self._waker, zmq.POLLIN)
        poller.register(self._front.monitor, zmq.POLLIN)
        drained = False
        try:
            drained = self._loop(poller)
        finally:
            self._close(drained)

    def shutdown(self) -> None:
        self._stop.set()
        self._waker.wake()

    def _loop(self, poller: zmq.Poller) -> bool:
        """Serve until shut down; return whether every call in flight was answered."""
        deadline: float | None = None
        while True:
            if deadline is None and self._stop.is_set():
                self._front.begin_shutdown()
                deadline = monotonic() + self._settings.timeout
            if deadline is not None:
                if self._drained():
                    return True
                if monotonic() > deadline:
                    log.warning("srpc zmq: stopping with %d call(s) unanswered", self._pool.running)
                    return False
            room = self._pool.idle + self._backlog - len(self._pending)
            poller.register(self._front.socket, zmq.POLLIN if self._front.accepting(room) else 0)
            timeout = ms(SERVING_POLL if deadline is None else STOPPING_POLL)
            if self._front.waiting:
                timeout = ms(FLUSH_RETRY)
            self._handle(dict(poller.poll(timeout)), room)

    def _handle(self, events: dict[object, int], room: int) -> None:
        if self._waker.fileno() in events:  # a Poller reports it by its file descriptor
            self._waker.drain()
        if self._front.monitor in events:
            self._front.note_handshakes()
        if self._front.waiting:
            for peer in self._front.flush():
                self._peers.done(peer, self._pending.drop(peer))
        if self._pool.socket in events:
            for envelope, answer in self._pool.collect():
                self._peers.done(envelope[0])
                self._send(envelope, answer)
        if self._front.socket in events:
            for request in self._front.read(room):
                self._admit(request)
        while self._pending and self._pool.idle:
            self._pool.submit(*self._pending.popleft())

    def _admit(self, request: Request) -> None:
        """Queue a request, or refuse it at once if its peer has `max_in_flight` calls."""
        envelope = request[0]
        if self._peers.admit(envelope[0]):
            self._pending.append(request)
            return
        busy = protocol.control_error(
            f"too many calls in flight on this connection (at most {self._peers.limit}: "
            "[srpc.zmq] max_in_flight); nothing ran",
            protocol.Code.BUSY,
        )
        self._send(envelope, busy)

    def _send(self, envelope: list[bytes], answer: bytes) -> None:
        """Send an answer; if its peer has gone, drop the calls it left waiting."""
        if not self._front.send(envelope, answer):
            peer = envelope[0]
            self._peers.done(peer, self._pending.drop(peer))

    def _drained(self) -> bool:
        return (
            self._front.receiving_done()
            and not self._pending
            and not self._front.waiting
            and self._pool.idle == self._pool.size  # answered, and every worker has started
        )

    def _close(self, drained: bool) -> None:
        self._front.close()
        self._waker.close()
        if drained:
            self._pool.stop(self._settings.timeout)
            self._context.term()  # waits up to LINGER_MS for the last answers to leave
        else:  # workers are stuck in calls: terminating the context would wait for them
            self._pool.socket.close(linger=0)


__all__ = [
    "ASYNC_SIGNALS",
    "FLUSH_RETRY",
    "HANDSHAKE_FAILED",
    "LINGER_MS",
    "SERVING_POLL",
    "STOPPING_POLL",
    "WARN_INTERVAL",
    "WORKER_READY",
    "WORKER_STOP",
    "BoundFront",
    "Context",
    "FairQueue",
    "PeerLimits",
    "Request",
    "WorkerPool",
    "ZmqListener",
]
