"""The broker behind ``srpc broker``: one address for clients, any number of servers behind it.

Clients connect to the *front end* exactly as to a zmq server. Servers in connect mode
(``[srpc.zmq] connect = "tcp://broker:5001"``) connect to the *back end* and tell the broker how
many idle workers they have (see `srpc_plugins.zmq.wire`). Both ends are ROUTER sockets, and a
Poller loop moves messages between them:

* a call goes to the next server, in turn, that has an idle worker (credit). With no credit
  anywhere, the broker stops reading the front end, and calls wait in ZeroMQ's queues;
* an answer goes back to the client named in its envelope, and gives its server a credit back;
* a server that says BYE gets no more calls, and its acknowledgement is the last message it
  receives; a server whose connection is gone (ZeroMQ's ROUTER_MANDATORY reports it) is dropped.

Why not ``zmq.proxy`` between a ROUTER and a DEALER: the DEALER round-robins calls blindly, so
a slow server piles up a queue while others idle, and a stopping server cannot stop its
incoming calls without also losing the answers of the calls it is still running.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from time import monotonic

import zmq

from srpc_core import protocol
from srpc_core.wakeup import Waker
from srpc_plugins.zmq.wire import (
    BYE,
    CALL,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TIMEOUT_MS,
    READY,
    REPLY,
    ms,
    split_request,
)

log = logging.getLogger("srpc.broker")
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: How long closing the front end may take to deliver the last answers, in milliseconds.
LINGER_MS = 1000
STOPPING_POLL = 0.1
#: Wake up at least this often, so that Python runs a signal handler even when the kernel
#: delivered the signal to a thread other than the one sleeping in zmq_poll (embedded use).
SERVING_POLL = 1.0


class Broker:
    """A running broker; binds both ends on construction (port 0 = any free port).

    Args:
        frontend: the ZeroMQ endpoint clients connect to, e.g. ``tcp://127.0.0.1:5000``.
        backend: the endpoint servers connect to, e.g. ``tcp://127.0.0.1:5001``.
        max_message_bytes: a larger message is dropped (with its connection) by libzmq before
            it is allocated; keep it no larger than the servers' ``max_message_bytes``.
        grace: seconds `serve` waits, once stopped, for calls in flight to be answered.
    """

    def __init__(
        self,
        frontend: str,
        backend: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        grace: float = 5.0,
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._grace = grace
        self._credits: dict[bytes, int] = {}  # server -> idle workers
        self._busy: dict[bytes, int] = {}  # server -> calls it is running
        self._ring: deque[bytes] = deque()  # servers, in the order they get their turn
        self._queue: deque[list[bytes]] = deque()  # calls read from clients, not yet sent on
        self._stop = threading.Event()
        try:
            self._front = self._bind(frontend, max_message_bytes)
            self._back = self._bind(backend, max_message_bytes)
        except BaseException:
            self._context.destroy(linger=0)
            raise
        self._back.router_mandatory = 1  # sending to a server that is gone raises, not drops
        self._back.heartbeat_ivl = HEARTBEAT_INTERVAL_MS
        self._back.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
        self.frontend_endpoint = self._front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.backend_endpoint = self._back.getsockopt_string(zmq.LAST_ENDPOINT)
        self._waker = Waker()

    @property
    def servers(self) -> int:
        """How many servers are taking calls."""
        return len(self._ring)

    def serve(self) -> None:
        """Move calls and answers until `stop`; then wait up to `grace` for calls in flight."""
        poller = zmq.Poller()
        poller.register(self._back, zmq.POLLIN)
        poller.register(self._waker, zmq.POLLIN)
        stop_at: float | None = None
        try:
            while True:
                if stop_at is None and self._stop.is_set():
                    stop_at = monotonic() + self._grace
                if stop_at is not None and (not any(self._busy.values()) or monotonic() > stop_at):
                    return
                taking = stop_at is None and self._room() > 0
                poller.register(self._front, zmq.POLLIN if taking else 0)
                events = dict(poller.poll(ms(SERVING_POLL if stop_at is None else STOPPING_POLL)))
                self._handle(events)
        finally:
            self._close()

    def stop(self) -> None:
        """Ask `serve` to return. Never blocks; safe from any thread and from a signal handler."""
        self._stop.set()
        self._waker.wake()

    def _bind(self, endpoint: str, max_bytes: int) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.ROUTER)
        sock.linger = LINGER_MS
        sock.maxmsgsize = max_bytes
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise OSError(exc.errno, f"cannot bind {endpoint}: {exc.strerror}") from None
        return sock

    def _handle(self, events: dict[object, int]) -> None:
        if self._waker.fileno() in events:  # a Poller reports it by its file descriptor
            self._waker.drain()
        if self._back in events:
            self._read_back()
        if self._front in events:
            self._read_front()
        self._dispatch()

    def _room(self) -> int:
        return sum(self._credits.values()) - len(self._queue)

    def _read_front(self) -> None:
        while self._room() > 0:
            try:
                frames = self._front.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if split_request(frames) is None:
                log.warning("dropped a malformed request (%d frames)", len(frames))
            else:
                self._queue.append(frames)

    def _dispatch(self) -> None:
        while self._queue:
            server = self._next_server()
            if server is None:
                return
            try:
                self._back.send_multipart([server, CALL, *self._queue[0]], zmq.NOBLOCK, copy=False)
            except zmq.Again:  # its queue is full after all: leave it out until it answers
                self._credits[server] = 0
                continue
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                self._forget(server, "is gone")
                self._busy.pop(server, None)  # its calls in flight are lost with it
                continue
            self._queue.popleft()
            self._credits[server] -= 1
            self._busy[server] = self._busy.get(server, 0) + 1

    def _next_server(self) -> bytes | None:
        for _ in range(len(self._ring)):
            server = self._ring[0]
            self._ring.rotate(-1)
            if self._credits[server] > 0:
                return server
        return None

    def _read_back(self) -> None:
        while True:
            try:
                frames = self._back.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            server, command, rest = frames[0], frames[1:2], frames[2:]
            if command == [REPLY] and len(rest) >= 3:
                self._answer(server, rest)
            elif command == [READY] and len(rest) == 1 and rest[0].isdigit():
                self._join(server, int(rest[0]))
            elif command == [BYE]:
                self._forget(server, "left")
                self._reply_back([server, BYE])
            else:
                self._refuse(frames)

    def _answer(self, server: bytes, reply: list[bytes]) -> None:
        self._front.send_multipart(reply, copy=False)  # a client that has gone: dropped
        if server in self._credits:
            self._credits[server] += 1
        if self._busy.get(server, 0) > 0:
            self._busy[server] -= 1

    def _join(self, server: bytes, workers: int) -> None:
        if server not in self._credits:
            self._ring.append(server)
            log.info("a server joined (%d workers); %d server(s)", workers, len(self._ring))
        self._credits[server] = workers

    def _forget(self, server: bytes, why: str) -> None:
        if self._credits.pop(server, None) is not None:
            self._ring.remove(server)
            log.info("a server %s; %d server(s)", why, len(self._ring))

    def _refuse(self, frames: list[bytes]) -> None:
        """Answer a peer of the back end that does not speak the server protocol."""
        request = split_request(frames)
        if request is None:
            log.warning("dropped an unknown message from the servers' side")
            return
        error = protocol.control_error(
            "this is the servers' side (back end) of an srpc broker: clients connect to its "
            "front end"
        )
        self._reply_back([*request[0], error])

    def _reply_back(self, frames: list[bytes]) -> None:
        try:
            self._back.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError as exc:  # the peer has gone (ROUTER_MANDATORY) or is not reading
            log.warning("could not answer a peer of the servers' side: %s", exc)

    def _close(self) -> None:
        self._front.close()
        self._back.close(linger=0)
        self._waker.close()
        self._context.term()


__all__ = [
    "Broker",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "LINGER_MS",
    "SERVING_POLL",
    "STOPPING_POLL",
]
