"""The server side of the ``zmq`` transport: a front socket and a pool of worker threads.

Shape (the load-balancing pattern of the ZeroMQ guide, built from pyzmq sockets and a Poller)::

    clients --tcp--> front socket --(main loop)--> inproc ROUTER --> worker threads (DEALER each)

The main loop owns the front socket and hands each request to an *idle* worker; while every
worker is busy it does not even read the front socket. So a slow call holds up only its own
worker. (The classic ROUTER -> DEALER device round-robins requests to workers blindly, which
queues some requests behind a slow call.) Each worker thread has its own socket: ZeroMQ sockets
are never shared between threads.

The front socket is either

* `BoundFront` (the default): a ROUTER bound at host:port that clients connect to; or
* `BrokerFront` (``[srpc.zmq] connect = "tcp://broker:5001"``): a DEALER connected to the back
  end of ``srpc broker``, speaking the credit protocol described in `srpc_plugins.zmq.wire`.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import deque
from time import monotonic
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from srpc_core import protocol
from srpc_core.errors import ConfigError
from srpc_core.transport import Handler, Listener, TransportSettings, answer
from srpc_core.wakeup import Waker
from srpc_plugins.zmq.wire import (
    BYE,
    CALL,
    DELIMITER,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TIMEOUT_MS,
    READY,
    REPLY,
    ms,
    split_request,
    tcp_endpoint,
)

log = logging.getLogger("srpc.zmq")
#: How long closing the front socket may take to deliver the last answers, in milliseconds.
LINGER_MS = 2000
#: How long a stopping server waits for the broker to acknowledge its BYE, at most.
BYE_ACK_TIMEOUT = 5.0
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

Context = zmq.Context[zmq.Socket[bytes]]
Request = tuple[list[bytes], bytes]  # (envelope, message)


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


class Front(Protocol):
    """Where requests come from and answers go: the listener's front socket."""

    socket: zmq.Socket[bytes]
    #: Other sockets the main loop must watch (`on_event` is called when they are readable).
    watched: list[zmq.Socket[bytes]]

    def accepting(self, room: int) -> bool:
        """Whether to read requests now, with `room` idle workers not spoken for."""

    def read(self, room: int) -> list[Request]:
        """Read the requests that are ready (at most `room` where that matters)."""

    def send(self, envelope: list[bytes], answer: bytes) -> None:
        """Send an answer back where its request came from."""

    def on_event(self, available: int) -> None:
        """A watched socket is readable; `available` workers are free for new calls."""

    def begin_shutdown(self) -> None:
        """Stop taking new calls (the calls already taken are still answered)."""

    def receiving_done(self) -> bool:
        """True once shutting down and no call can arrive any more."""

    def close(self) -> None:
        """Close the sockets, giving the last answers `LINGER_MS` to leave."""


class BoundFront:
    """Clients connect straight to this server: a ROUTER bound at host:port."""

    def __init__(self, context: Context, host: str, port: int, max_bytes: int) -> None:
        self.socket = context.socket(zmq.ROUTER)
        self.socket.linger = LINGER_MS
        self.socket.maxmsgsize = max_bytes  # libzmq drops a larger request before allocating
        self.socket.ipv6 = ":" in host
        self.watched: list[zmq.Socket[bytes]] = []
        endpoint = tcp_endpoint(host, port)
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as exc:
            self.socket.close(linger=0)
            raise OSError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from None
        # The real endpoint: with port 0 the OS picked the port.
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self._stopping = False

    def accepting(self, room: int) -> bool:
        return room > 0 and not self._stopping

    def read(self, room: int) -> list[Request]:
        requests: list[Request] = []
        while len(requests) < room:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            request = split_request(frames)
            if request is None:
                self._refuse(frames)
            else:
                requests.append(request)
        return requests

    def send(self, envelope: list[bytes], answer: bytes) -> None:
        # A ROUTER drops an answer to a client that has gone: nothing to do about it here.
        self.socket.send_multipart([*envelope, answer], copy=False)

    def on_event(self, available: int) -> None:
        pass

    def begin_shutdown(self) -> None:
        # Stop reading; stay bound: libzmq's unbind would also cut the connections of the
        # clients still waiting for answers. Requests left unread are dropped at close, and
        # their clients see the connection break.
        self._stopping = True

    def receiving_done(self) -> bool:
        return self._stopping

    def close(self) -> None:
        self.socket.close()

    def _refuse(self, frames: list[bytes]) -> None:
        log.warning("srpc zmq: a request without the [tag, empty, message] envelope")
        error = protocol.control_error(
            "malformed ZeroMQ request: expected the frames [tag, empty frame, message]"
        )
        self.socket.send_multipart([frames[0], DELIMITER, error])


class BrokerFront:
    """This server takes its calls from ``srpc broker``: a DEALER connected to its back end.

    It tells the broker how many workers are idle on every (re)connection (READY); each answer
    frees one worker again. On shutdown it says BYE and keeps serving what arrives until the
    broker acknowledges, so no call is lost.
    """

    def __init__(self, context: Context, endpoint: str, max_bytes: int) -> None:
        self.socket = context.socket(zmq.DEALER)
        self.socket.linger = LINGER_MS
        self.socket.maxmsgsize = max_bytes
        self.socket.heartbeat_ivl = HEARTBEAT_INTERVAL_MS
        self.socket.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
        self._monitor = self.socket.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
        )
        self.watched = [self._monitor]
        self.endpoint = endpoint
        try:
            self.socket.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"[srpc.zmq] connect = {endpoint!r} is invalid: {exc}") from None
        self._connected = False
        self._stopping = False
        self._acknowledged = False
        self._ack_deadline = 0.0

    def accepting(self, room: int) -> bool:
        return not self.receiving_done()  # the broker sends no more calls than we have credit

    def read(self, room: int) -> list[Request]:
        requests: list[Request] = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return requests
            request = split_request(frames[1:]) if frames[0] == CALL else None
            if request is not None:
                requests.append(request)
            elif frames == [BYE]:
                self._acknowledged = True
            else:
                log.warning("srpc zmq: unexpected message from the broker: %r", frames[:1])

    def send(self, envelope: list[bytes], answer: bytes) -> None:
        try:
            self.socket.send_multipart([REPLY, *envelope, answer], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            log.warning("srpc zmq: an answer was dropped: the broker is not taking any")

    def on_event(self, available: int) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected = True
                log.info("srpc zmq: connected to the broker at %s", self.endpoint)
                if not self._stopping:  # a new connection is a new server to the broker
                    self._send([READY, str(available).encode()])
            elif event == zmq.EVENT_DISCONNECTED:
                self._connected = False
                log.warning("srpc zmq: lost the broker at %s; reconnecting", self.endpoint)

    def begin_shutdown(self) -> None:
        self._stopping = True
        self._ack_deadline = monotonic() + BYE_ACK_TIMEOUT
        if self._connected:
            self._send([BYE])

    def receiving_done(self) -> bool:
        if not self._stopping:
            return False
        # Not connected: the broker cannot send anything, and we never say READY again.
        return self._acknowledged or not self._connected or monotonic() > self._ack_deadline

    def close(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close(linger=0)
        self.socket.close()

    def _send(self, frames: list[bytes]) -> None:
        try:
            self.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("srpc zmq: could not tell the broker %r", frames[0])


class ZmqListener(Listener):
    """Serves `handler` behind a `BoundFront` or a `BrokerFront` with a `WorkerPool`."""

    def __init__(
        self,
        settings: TransportSettings,
        front: BoundFront | BrokerFront,
        context: Context,
        handler: Handler,
        workers: int,
        address: str,
    ) -> None:
        self.address = address
        self.port = front.port if isinstance(front, BoundFront) else 0
        self._settings = settings
        self._front: Front = front
        self._context = context
        self._pool = WorkerPool(context, handler, workers, settings.max_message_bytes)
        self._pending: deque[Request] = deque()  # calls taken from the broker, awaiting a worker
        self._stop = threading.Event()
        self._waker = Waker()

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self._pool.socket, zmq.POLLIN)
        poller.register(self._waker, zmq.POLLIN)
        for watched in self._front.watched:
            poller.register(watched, zmq.POLLIN)
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
            room = self._pool.idle - len(self._pending)
            poller.register(self._front.socket, zmq.POLLIN if self._front.accepting(room) else 0)
            timeout = ms(SERVING_POLL if deadline is None else STOPPING_POLL)
            self._handle(dict(poller.poll(timeout)), room)

    def _handle(self, events: dict[object, int], room: int) -> None:
        if self._waker.fileno() in events:  # a Poller reports it by its file descriptor
            self._waker.drain()
        if self._pool.socket in events:
            for envelope, answer in self._pool.collect():
                self._front.send(envelope, answer)
        if self._front.socket in events:
            self._pending.extend(self._front.read(room))
        if any(watched in events for watched in self._front.watched):
            self._front.on_event(self._pool.size - self._pool.running - len(self._pending))
        while self._pending and self._pool.idle:
            self._pool.submit(*self._pending.popleft())

    def _drained(self) -> bool:
        return (
            self._front.receiving_done()
            and not self._pending
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
