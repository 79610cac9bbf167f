"""The native async side of the ``zmq`` transport: `AsyncZmqChannel` and `AsyncZmqListener`.

Client: one DEALER socket per channel, a `zmq.asyncio` socket on the running loop, carrying
many calls at once (the async client matches answers to calls by their ids). It is set up,
connected and checked exactly as the sync `channel.ZmqChannel` (`channel.ClientSide`: the same
socket options, CURVE, the same monitor events and the same errors), and a monitor task marks
the channel broken the moment ZeroMQ reports the connection gone.

Server: the same `server.BoundFront` as the threaded listener (a ROUTER with the same limits:
``max_message_bytes`` as ZMQ_MAXMSGSIZE, high-water marks from ``queue_bytes``, handshake and
heartbeat timeouts from ``idle_timeout``, CURVE with pyzmq's ThreadAuthenticator, malformed
requests answered and dropped), read by one task that awaits it with a `zmq.asyncio.Poller`
and takes every message waiting at once. Each peer (a ROUTER identity: one client socket) is
one connection of the asyncio server: its first message starts ``on_connection`` with a
`PeerChannel` that receives that peer's messages and sends to it. A peer may have at most
``[srpc.zmq] max_in_flight`` messages waiting besides the ``[srpc] max_in_flight`` calls the
server runs for it (the server stops taking a peer's messages at that limit); past both, a
message is answered with a ``busy`` control error at once and never runs. A peer silent for
``idle_timeout`` ends its connection (a later message starts a new one; the session travels
in every request). Past ``[srpc] max_connections`` peers, a new peer's message is answered
``busy``.

Tags (`wire`): a lockstep client (`ZmqChannel`) sends 4-byte tags and needs each answer under
the tag of its request: the listener answers a peer with the last tag it sent, which is that
request's (a lockstep client has one request out at a time). This channel sends 8-byte tags:
the threaded server echoes them, so the channel knows which requests are unanswered, and a
request refused ``busy`` by that server (a peer past ``[srpc.zmq] max_in_flight`` there, below
the ``[srpc] max_in_flight`` its hello advertised) is held and sent again when an answer frees
a place: nothing ran, so at most once holds. The async listener answers 8-byte tags with an
empty tag (answers come in any order); the channel then tracks nothing.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections import deque
from time import monotonic
from typing import Any, cast

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from srpc_core import protocol
from srpc_core.errors import FrameTooLargeError, ServerUnavailableError, TransportError
from srpc_core.transport import AsyncChannel, AsyncListener, OnConnection
from srpc_plugins.zmq.channel import (
    BROKEN_EVENTS,
    CONNECTED,
    MONITORED_EVENTS,
    SILENT,
    SUCCEEDED,
    ClientSide,
    client_socket,
)
from srpc_plugins.zmq.curve import CurveKeys
from srpc_plugins.zmq.server import FLUSH_RETRY, SERVING_POLL, BoundFront, Context
from srpc_plugins.zmq.wire import DELIMITER, END, LOCKSTEP_TAG_BYTES, ms, tcp_endpoint

log = logging.getLogger("srpc.zmq")
#: The async channel's tags: 8 bytes (a lockstep client's are 4), see the module docstring.
ASYNC_TAG = struct.Struct(">Q")
#: Messages the listener reads from its socket per turn before letting other tasks run.
READ_BATCH = 256


class _Broken(Exception):
    """Set on a pending receive when the monitor reports the connection gone."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a send's failure as seen (the monitor reports the broken connection)."""
    if not future.cancelled():
        future.exception()


def is_busy(message: bytes) -> bool:
    """Whether `message` is a ``busy`` control error that names no call (a refusal)."""
    if not protocol.is_control(message):
        return False
    try:
        refusal = protocol.parse_control_error(message)
    except Exception:
        return False
    return refusal.code == protocol.Code.BUSY and refusal.call_id is None


class AsyncZmqChannel(ClientSide, AsyncChannel):
    """One client connection to a zmq server, from one event loop; use `open`."""

    def __init__(
        self, host: str, port: int, address: str, max_bytes: int, curve: CurveKeys | None
    ) -> None:
        self.address = self._address = address
        self._host_port = (host, port)
        self._curve = curve
        self._max_bytes = max_bytes
        context = cast(Context, zmq.asyncio.Context.instance())
        self._sock = cast(
            zmq.asyncio.Socket, client_socket(context, host, address, max_bytes, curve)
        )
        self._monitor = cast(zmq.asyncio.Socket, self._sock.get_monitor_socket(MONITORED_EVENTS))
        self._counter = 0
        self._broken = ""  # why the connection is unusable, once it is
        self._closed = False
        self._closed_by_server = False
        self._receiving: asyncio.Future[Any] | None = None
        self._sending: set[asyncio.Future[Any]] = set()
        self._watcher: asyncio.Task[None] | None = None
        #: While the server echoes tags (the threaded server): requests not answered yet.
        self._unanswered: dict[bytes, bytes] = {}
        self._echoes = True
        #: Requests waiting to be sent: refused ``busy`` (nothing ran), or past `_cap`.
        self._held: deque[tuple[bytes, bytes]] = deque()
        #: Requests the server takes at once from this peer, once a ``busy`` showed it.
        self._cap: int | None = None

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        address: str,
        max_bytes: int,
        timeout: float,
        curve: CurveKeys | None = None,
    ) -> AsyncZmqChannel:
        """Connect within `timeout`: the ZeroMQ handshake done, or the error that says why."""
        channel = cls(host, port, address, max_bytes, curve)
        try:
            await channel._connect(tcp_endpoint(host, port), timeout)
        except BaseException:
            await channel.close()
            raise
        channel._watcher = asyncio.get_running_loop().create_task(channel._watch())
        return channel

    async def _connect(self, endpoint: str, timeout: float) -> None:
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ServerUnavailableError(f"cannot connect to {self._address}: {exc}") from None
        deadline = monotonic() + timeout
        handshaking = False
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0:
                raise self._handshake_timeout(handshaking, timeout)
            try:
                async with asyncio.timeout(remaining):
                    frames = await self._monitor.recv_multipart()
            except TimeoutError:
                raise self._handshake_timeout(handshaking, timeout) from None
            event = parse_monitor_message(frames)
            step = self.handshake_step(event["event"], event["value"], handshaking)
            if step == SUCCEEDED:
                return
            if step == CONNECTED:
                handshaking = True
            elif step == SILENT:  # a blocking probe of the server's greeting, off the loop
                raise await asyncio.to_thread(self._silent_failure, deadline)

    async def _watch(self) -> None:
        """Mark the channel broken when the monitor reports the connection gone."""
        try:
            while True:
                event = parse_monitor_message(await self._monitor.recv_multipart())
                if event["event"] & BROKEN_EVENTS:
                    break
        except (zmq.ZMQError, asyncio.CancelledError):
            return
        self._broken = self.broken_text()
        receiving = self._receiving
        if receiving is not None and not receiving.done():
            receiving.set_exception(_Broken())
        self._fail_sends(TransportError(self._broken))

    def _fail_sends(self, error: Exception) -> None:
        for future in list(self._sending):
            if not future.done():
                future.set_exception(error)

    def closing(self) -> bool:
        return self._closed or self._closed_by_server or bool(self._broken)

    async def send(self, message: bytes) -> None:
        if len(message) > self._max_bytes:
            raise FrameTooLargeError(
                f"a {len(message)}-byte message exceeds max_message_bytes ({self._max_bytes})"
            )
        if self._closed:
            raise TransportError(f"the connection to {self._address} was closed")
        if self._broken:
            raise TransportError(self._broken)
        self._counter += 1
        tag = ASYNC_TAG.pack(self._counter % 2**64)
        if self._held or (self._cap is not None and len(self._unanswered) >= self._cap):
            self._held.append((tag, message))  # sent when an answer frees a place
            return
        future = self._transmit(tag, message)
        if not future.done():
            self._sending.add(future)
            try:
                await future
            finally:
                self._sending.discard(future)
        elif future.exception() is not None:
            raise TransportError(f"cannot send to {self._address}: {future.exception()}")

    def _transmit(self, tag: bytes, message: bytes) -> asyncio.Future[Any]:
        if self._echoes:
            self._unanswered[tag] = message
        return cast(
            "asyncio.Future[Any]",
            self._sock.send_multipart([tag, DELIMITER, message], copy=False),
        )

    def _release(self) -> None:
        """Send held requests while the server has room for them (in order)."""
        while self._held and (self._cap is None or len(self._unanswered) < self._cap):
            future = self._transmit(*self._held.popleft())
            future.add_done_callback(_retrieve)

    async def receive(self) -> bytes | None:
        while True:
            if self._closed or self._closed_by_server:
                return None
            if self._broken:
                # Answers that arrived before the connection broke are still delivered.
                try:  # (a non-blocking receive's future is done at once)
                    frames = self._sock.recv_multipart(zmq.NOBLOCK).result()  # type: ignore[attr-defined]
                except zmq.ZMQError:
                    raise TransportError(self._broken) from None
            else:
                future = self._receiving = cast(
                    "asyncio.Future[list[bytes]]", self._sock.recv_multipart()
                )
                try:
                    frames = await future
                except _Broken:
                    continue
                except zmq.ZMQError as exc:
                    raise TransportError(f"reading from {self._address} failed: {exc}") from None
                finally:
                    self._receiving = None
            if len(frames) == 3 and frames[1] == DELIMITER and frames[2] == END:
                self._closed_by_server = True  # the server ended this connection
                return None
            message = self._accept(frames)
            if message is not None:
                return message

    def _accept(self, frames: list[bytes]) -> bytes | None:
        """The message of an answer's frames, or None for one to skip."""
        if len(frames) != 3 or frames[1] != DELIMITER:
            return None  # not an answer's shape
        tag, message = frames[0], frames[2]
        if not tag:  # a server that multiplexes (the async listener): it never refuses us
            if self._echoes:
                self._echoes, self._cap = False, None
                self._unanswered.clear()
                self._release()
            return message
        request = self._unanswered.pop(tag, None)
        if request is not None and self._unanswered and is_busy(message):
            # The server runs as many of ours as it takes: hold this one until an answer
            # comes (nothing of it ran), and send no more than that at once from now on.
            self._cap = len(self._unanswered)
            self._held.appendleft((tag, request))
            return None
        self._release()
        return message

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        receiving = self._receiving
        if receiving is not None and not receiving.done():
            receiving.set_result([])  # (the pending receive returns None)
        self._fail_sends(TransportError(f"the connection to {self._address} was closed"))
        if self._watcher is not None:
            self._watcher.cancel()
        self._held.clear()
        self._unanswered.clear()
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)


class PeerChannel(AsyncChannel):
    """One peer of an `AsyncZmqListener` (a ROUTER identity) as a connection."""

    def __init__(self, listener: AsyncZmqListener, peer: bytes, address: str) -> None:
        self.address = address
        self._listener = listener
        self._peer = peer
        self._tag = b""  # the tag answers go under (see the module docstring)
        self._waiting: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.ended = False  # no more messages for this channel (idle, gone or closed)
        self.gone = False  # the peer's connection is gone (nothing can reach it)

    def put(self, tag: bytes, message: bytes) -> bool:
        """Queue a message of the peer; False (refuse it) when the peer is at its limits."""
        if self.full():  # (each message at most max_message_bytes)
            return False
        self._tag = tag if len(tag) == LOCKSTEP_TAG_BYTES else b""
        self._waiting.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def full(self) -> bool:
        """Whether the next message of the peer would be refused (`put`)."""
        return len(self._waiting) >= self._listener.max_waiting

    def end(self, gone: bool = False) -> None:
        """No more messages for this channel; `gone`: the peer's connection is gone too."""
        self.ended = True
        self.gone = self.gone or gone
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def closing(self) -> bool:
        return self.ended

    async def receive(self) -> bytes | None:
        while not self._waiting:
            if self.ended:
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._listener.idle_timeout):
                    await waiter
            except TimeoutError:
                if not self._waiting:  # silent for idle_timeout: the peer is gone
                    self.end()
            finally:
                self._waiter = None
        message = self._waiting.popleft()
        return message

    async def send(self, message: bytes) -> None:
        if not self._listener.send([self._peer, self._tag, DELIMITER], message):
            self.end(gone=True)
            raise TransportError(f"the client at {self.address} has gone")

    async def close(self) -> None:
        """End the connection; a peer still there is told with an `END` message (ZeroMQ
        cannot close one peer's connection), so its channel ends as a TCP one would."""
        if not self.gone and self._listener._peers.get(self._peer) in (self, None):
            self._listener.send([self._peer, self._tag, DELIMITER], END)
        self.end()
        self._waiting.clear()


class AsyncZmqListener(AsyncListener):
    """Serves the peers of a `BoundFront` on the running event loop (see the module doc)."""

    def __init__(
        self,
        front: BoundFront,
        context: Context,
        on_connection: OnConnection,
        address: str,
        *,
        max_in_flight: int,
        running: int,
        max_connections: int,
        idle_timeout: float,
    ) -> None:
        self.address = address
        self.port = front.port
        #: Messages of a peer read and not yet taken by the server: those it may start at
        #: once (a batch read arrives before the server takes any), and max_in_flight more.
        self.max_waiting = running + max_in_flight
        self.idle_timeout = idle_timeout
        self._running = running
        self._front = front
        self._context = context
        self._on_connection = on_connection
        self._max_connections = max_connections
        self._peers: dict[bytes, PeerChannel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._polling: asyncio.Future[Any] | None = None
        self._woken = False
        self._closing = False
        self._shut = False
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        front = self._front
        poller = zmq.asyncio.Poller()
        poller.register(front.socket, zmq.POLLIN)
        poller.register(front.monitor, zmq.POLLIN)
        progress = False  # the last flush sent answers: watch for room (POLLOUT) again
        while True:
            wait = FLUSH_RETRY if front.waiting else SERVING_POLL
            # A ROUTER with ROUTER_MANDATORY is writable while a peer's queue has room; while
            # the last flush made progress, wake when it does (else retry every FLUSH_RETRY,
            # so that another peer with room does not keep the loop spinning).
            room = zmq.POLLOUT if front.waiting and progress else 0
            poller.register(front.socket, zmq.POLLIN | room)
            polling = self._polling = cast("asyncio.Future[Any]", poller.poll(ms(wait)))
            try:
                await polling
            finally:
                self._polling = None
            if self._woken:
                # Woken by `send`: the poller lets go of the socket's descriptor in callbacks
                # queued behind this task; let them run before the next poll watches it again.
                self._woken = False
                await asyncio.sleep(0)
            front.note_handshakes()
            while front.disconnected:  # the client closed its socket, or libzmq dropped it
                self._gone(front.disconnected.pop())
            if front.waiting:
                before = front.queued
                for peer in front.flush():
                    self._gone(peer)
                progress = front.queued < before
            try:
                requests = front.read(READ_BATCH)
            except zmq.ZMQError:  # closed under us
                return
            for envelope, message in requests:
                channel = self._peers.get(envelope[0])
                if channel is not None and channel.full():
                    await asyncio.sleep(0)  # its reader may take what waits: refuse only then
                self._deliver(envelope, message)
            if len(requests) == READ_BATCH:
                await asyncio.sleep(0)  # let the calls run before reading on

    def _deliver(self, envelope: list[bytes], message: bytes) -> None:
        peer, tag = envelope[0], envelope[1]
        channel = self._peers.get(peer)
        if channel is None or channel.ended:
            if self._closing:
                self._refuse(envelope, "the server is stopping: no new connections")
                return
            if len(self._tasks) >= self._max_connections:
                self._refuse(envelope, "too many connections")
                return
            channel = self._peers[peer] = PeerChannel(self, peer, self.address)
            task = asyncio.get_running_loop().create_task(self._serve(channel))
            self._tasks.add(task)
        if not channel.put(tag, message):
            self._refuse(envelope, "too many calls in flight on this connection")

    def _refuse(self, envelope: list[bytes], what: str) -> None:
        busy = protocol.control_error(
            f"{what} (at most {self._running} running and {self.max_waiting - self._running} "
            "more waiting: [srpc] max_in_flight, [srpc.zmq] max_in_flight"
            + (f", [srpc] max_connections {self._max_connections}" if "connections" in what else "")
            + "); nothing ran",
            protocol.Code.BUSY,
        )
        self.send(envelope[:3], busy)

    async def _serve(self, channel: PeerChannel) -> None:
        try:
            await self._on_connection(channel)
        except Exception as exc:  # a bug in the core must not end the listener
            log.warning("srpc zmq: serving a connection failed: %r", exc)
        finally:
            await channel.close()
            if self._peers.get(channel._peer) is channel:
                del self._peers[channel._peer]
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            if self._closing and not self._tasks:
                self._shutdown()

    def send(self, envelope: list[bytes], message: bytes) -> bool:
        """Send an answer (or queue it in the front's outbox); False if the peer has gone."""
        if self._shut:
            return False
        if self._front.waiting:  # answers queued for full peers go first
            for peer in self._front.flush():
                self._gone(peer)
        sent = self._front.send(envelope, message)
        # A send may have taken the socket's read event: let the reader look again.
        polling = self._polling
        if polling is not None and not polling.done() and self._front.socket.poll(0):
            self._woken = True
            polling.set_result([])
        return sent

    def _gone(self, peer: bytes) -> None:
        channel = self._peers.get(peer)
        if channel is not None:
            channel.end(gone=True)

    async def close(self) -> None:
        """Stop accepting new peers (they are answered ``busy``); the peers already served go
        on until the core ends them, and the socket closes when the last has ended (or at
        once, with none)."""
        self._closing = True
        if not self._tasks:
            self._shutdown()

    def _shutdown(self) -> None:
        """Close the socket and end the context, without waiting (so a task cancelled at the
        loop's end still does it): the context ends in a thread, after the answers left."""
        if self._shut:
            return
        self._shut = True
        if self._reader is not asyncio.current_task():
            self._reader.cancel()  # (its poller lets go of the socket's descriptor as it ends)
        self._front.close()  # lingers up to LINGER_MS for the last answers
        threading.Thread(target=self._context.term, name="srpc-zmq-term", daemon=True).start()


__all__ = [
    "ASYNC_TAG",
    "READ_BATCH",
    "AsyncZmqChannel",
    "AsyncZmqListener",
    "PeerChannel",
    "is_busy",
]
