"""The async side of stream transports: the framing of `srpc_core.streams` as an asyncio protocol.

Same bytes as the threaded side (a 4-byte big-endian length, then the message: docs/protocol.md)
and the same limits: `max_message_bytes` is checked on the length before a body is buffered, a
message must arrive whole within `timeout` of its first byte, and a peer that does not take
what is sent within `timeout` loses its connection. What changes is the shape: an
`AsyncStreamChannel` is one connection carrying many messages each way at once (the async
client and the asyncio server match answers to calls by their ids), and an
`AsyncStreamListener` runs a coroutine of the core for every accepted connection.

The channel is an `asyncio.Protocol`: the bytes the loop reads are split into messages in
`data_received`, with no task woken per message. A consumer either awaits `receive` (the
`AsyncChannel` interface) or, faster, has every message handed to a callback as it arrives
(`AsyncStreamChannel.deliver`, which the async client uses). Small messages are written
without waiting; a sender waits only when the peer stopped reading (asyncio's
pause/resume_writing), within `timeout`. Memory follows the bytes that arrived: past
`READ_LIMIT` bytes waiting for a consumer, the channel stops reading the socket.

TLS (`ssl.SSLContext`, the same contexts as the sync side): a client channel is upgraded after
connecting (`loop.start_tls`, within its own `timeout`); a TLS listener peeks at each new
connection's first byte, tells a plaintext peer that TLS is required, and runs the handshake
off the accept loop within `timeout`.

srpc's ``tcp`` transport uses these for its native async side (`open_tcp_channel`,
`bind_tcp`); a plugin for another stream socket can build its own from `AsyncStreamChannel`
and `AsyncStreamListener` the same way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from srpc_core import protocol
from srpc_core.errors import (
    FrameTooLargeError,
    MismatchError,
    OversizedFrameError,
    ServerUnavailableError,
    TransportError,
)
from srpc_core.ratelimit import LogLimiter
from srpc_core.streams import HEADER, SMALL_MESSAGE, identify_protocol
from srpc_core.transport import AsyncChannel, AsyncListener, OnConnection

log = logging.getLogger("srpc.streams")
_limited = LogLimiter(period=10.0)
#: Bytes a connection keeps read but not yet taken by the core: past this, it stops reading
#: the socket until the core took them (memory follows what the core consumes, not what a peer
#: sends). A message longer than this is still read whole (up to `max_message_bytes`).
READ_LIMIT = 256 * 1024
#: The first byte of every TLS connection: a handshake record.
TLS_HANDSHAKE = 0x16
_unpack_from = HEADER.unpack_from
_pack = HEADER.pack

#: Called with every message, as it arrives (see `AsyncStreamChannel.deliver`).
OnMessage = Callable[[bytes], None]
#: Called once when no more messages will come: None (the peer closed the connection between
#: messages, or stayed silent for the idle timeout) or the error that ended the connection.
OnEnd = Callable[[BaseException | None], None]


class AsyncStreamChannel(AsyncChannel, asyncio.Protocol):
    """One connection, carrying many messages each way at once; an `asyncio.Protocol`.

    Args:
        address: the peer's URL (for messages).
        max_bytes: `max_message_bytes`.
        message_timeout: seconds a message may take to arrive whole from its first byte, and
            the peer to take a message sent to it.
        idle_timeout: on a server, seconds without a message beginning after which the peer
            is treated as gone (the end, as if it had closed); None: no limit (the client
            bounds its own waits).
        client: True on the client side: the first message received is checked for another
            protocol's opening bytes (`identify_protocol`).
        local: on a server, the listener's address (for log lines).
    """

    transport: asyncio.Transport

    def __init__(
        self,
        address: str,
        max_bytes: int,
        message_timeout: float,
        idle_timeout: float | None = None,
        client: bool = False,
        local: str = "",
    ) -> None:
        self.address = address
        self.max_bytes = max_bytes
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self.local = local
        self._check_first = client
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._closed = False  # close() was called
        self._ended = False  # on_end was called: no more messages
        self._lost = False  # the transport is gone
        self._end: tuple[BaseException | None] | None = None  # the end, before a consumer
        self._held = False  # the consumer asked for no messages for now
        self._parsing = False
        self._reading = True
        self._write_paused = False
        self._drainers: list[asyncio.Future[None]] = []
        self._write_error: BaseException | None = None
        self._message_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last_input = 0.0
        self._lost_waiter: asyncio.Future[None] = self._loop.create_future()
        # Until a consumer calls deliver(): messages wait in a queue for receive().
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._waiter: asyncio.Future[None] | None = None
        self._on_message: OnMessage = self._enqueue
        self._on_end: OnEnd = self._enqueue_end

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.idle_timeout is not None:
            self._last_input = self._loop.time()
            self._idle_timer = self._loop.call_at(
                self._last_input + self.idle_timeout, self._idle_check
            )

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        if self.idle_timeout is not None:
            self._last_input = self._loop.time()
        buffer = self._buffer
        if not buffer and not self._held and not self._check_first:
            # The hot path: whole messages in one read, nothing left over.
            size = len(data)
            if size >= 4:
                (length,) = _unpack_from(data)
                if length + 4 == size and length <= self.max_bytes:
                    self._on_message(data[4:])
                    return
        buffer += data
        self._parse()

    def eof_received(self) -> bool:
        if self._buffer and not self._ended:
            self._finish(self._incomplete())
        else:
            self._finish(None)
        # Keep the connection open for writing (the answers of calls still running), except
        # over TLS, which cannot be half closed.
        return self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._finish(TransportError(f"connection to {self.address} failed: {exc}"))
        elif self._buffer:
            self._finish(self._incomplete())
        else:
            self._finish(None)
        error = self._write_error = self._write_error or TransportError(
            f"the connection to {self.address} is closed"
        )
        for drainer in self._drainers:
            if not drainer.done():
                drainer.set_exception(error)
        self._drainers.clear()
        if not self._lost_waiter.done():
            self._lost_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for drainer in self._drainers:
            if not drainer.done():
                drainer.set_result(None)
        self._drainers.clear()

    # -- incoming messages ----------------------------------------------------------------

    def _parse(self) -> None:
        """Hand every whole message in the buffer to the consumer (while it takes them)."""
        if self._parsing:  # release() from within on_message: the loop below goes on
            return
        self._parsing = True
        buffer = self._buffer
        start = 0
        try:
            while not self._held and not self._ended and len(buffer) - start >= 4:
                (length,) = _unpack_from(buffer, start)
                if self._check_first:
                    self._check_first = False
                    name = identify_protocol(bytes(buffer[start : start + 4]))
                    if name is not None:
                        raise MismatchError(
                            f"the server at {self.address} speaks {name}, not srpc: check "
                            "host, port and transport"
                        )
                if length > self.max_bytes:
                    raise self._oversized(length, bytes(buffer[start : start + 4]))
                end = start + 4 + length
                if end > len(buffer):
                    break
                message = bytes(memoryview(buffer)[start + 4 : end])
                start = end
                self._on_message(message)
        except (MismatchError, OversizedFrameError) as exc:
            start = len(buffer)
            self._pause_reading()  # the rest of that message is never read
            self._finish(exc)
            return
        finally:
            self._parsing = False
            if start:
                del buffer[:start]
        if self._ended:
            return
        timer = self._message_timer
        if buffer and not self._held:  # a message began and is not whole yet
            if timer is None or start:  # its first byte came with this read
                if timer is not None:
                    timer.cancel()
                self._message_timer = self._loop.call_later(
                    self.message_timeout, self._message_late
                )
        elif timer is not None:
            timer.cancel()
            self._message_timer = None
        if self._held and len(buffer) > READ_LIMIT:
            self._pause_reading()  # whole messages wait for the consumer: no more for now

    def _oversized(self, length: int, header: bytes) -> OversizedFrameError:
        error = OversizedFrameError(length, header)
        if self.local:  # a server: say it in the log (the core tells the peer)
            name = identify_protocol(header)
            _limited.warning(
                log,
                ("oversized", self.address.rpartition(":")[0]),
                "srpc: closing a connection from %s to %s: %s",
                self.address,
                self.local,
                f"the client speaks {name}"
                if name is not None
                else f"a {length}-byte message exceeds max_message_bytes ({self.max_bytes})",
            )
        return error

    def _incomplete(self) -> TransportError:
        return TransportError(f"{self.address} closed the connection in the middle of a message")

    def _message_late(self) -> None:
        self._message_timer = None
        if self._buffer and not self._held and not self._ended:
            self._finish(
                TransportError(
                    f"a message from {self.address} did not arrive whole within "
                    f"{self.message_timeout} s of its first byte"
                )
            )
            self.transport.abort()

    def _idle_check(self) -> None:
        assert self.idle_timeout is not None
        self._idle_timer = None
        if self._ended or self._lost:
            return
        expires = self._last_input + self.idle_timeout
        if self._buffer or self._held or self._loop.time() < expires:
            self._idle_timer = self._loop.call_at(
                max(expires, self._loop.time() + 0.001), self._idle_check
            )
            return
        self._finish(None)  # silent for idle_timeout: as if the peer had gone

    def _finish(self, end: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        for timer in (self._message_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._message_timer = self._idle_timer = None
        self._on_end(end)

    def _pause_reading(self) -> None:
        if self._reading and not self._lost:
            self._reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if not self._reading and not self._lost and not self._ended:
            self._reading = True
            self.transport.resume_reading()

    def deliver(self, on_message: OnMessage, on_end: OnEnd) -> None:
        """Hand every message to `on_message` as it arrives (in order, from the event loop,
        with no task in between), and the end once to `on_end`; messages already received
        (and the end, if it came) first. `receive` is not used any more after this."""
        queued, self._queue = self._queue, deque()
        self._queued = 0
        self._on_message, self._on_end = on_message, on_end
        for message in queued:
            on_message(message)
        if self._end is not None:
            on_end(self._end[0])
        elif not self._held:
            self._resume_reading()
            if self._buffer:
                self._parse()

    def hold(self) -> None:
        """Take no messages for now (the consumer is busy): the socket is not read past
        `READ_LIMIT` bytes, and the time spent holding counts against no deadline."""
        self._held = True
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None

    def release(self) -> None:
        """Take messages again after `hold`."""
        if self._held:
            self._held = False
            if not self._ended:
                self._resume_reading()
                self._parse()

    def _enqueue(self, message: bytes) -> None:
        self._queue.append(message)
        self._queued += len(message)
        if self._queued > READ_LIMIT:
            self._pause_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _enqueue_end(self, end: BaseException | None) -> None:
        self._end = (end,)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def receive(self) -> bytes | None:
        while not self._queue:
            if self._end is not None:
                end = self._end[0]
                if end is None:
                    return None
                raise end
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        self._queued -= len(message)
        if self._queued <= READ_LIMIT and not self._held:
            self._resume_reading()
        return message

    # -- outgoing messages ----------------------------------------------------------------

    def write(self, message: bytes) -> None:
        """Send one message without waiting (the caller bounds what it sends; `send` waits
        while the peer is not reading)."""
        if self._closed or self._lost:
            raise self._write_error or TransportError(f"the connection to {self.address} is closed")
        transport = self.transport
        if len(message) < SMALL_MESSAGE:  # one write, no copy worth avoiding
            transport.write(_pack(len(message)) + message)
        else:  # two writes back to back: concurrent senders never interleave their bytes
            transport.write(_pack(len(message)))
            transport.write(message)

    async def send(self, message: bytes) -> None:
        self.write(message)
        if self._write_paused:
            await self.drain()

    async def drain(self) -> None:
        """Wait until the peer has taken what was written, within `message_timeout`; a peer
        that does not read for that long loses its connection."""
        while self._write_paused:
            if self._write_error is not None:
                raise self._write_error
            drainer: asyncio.Future[None] = self._loop.create_future()
            self._drainers.append(drainer)
            try:
                async with asyncio.timeout(self.message_timeout):
                    await drainer
            except TimeoutError:
                self._write_error = TransportError(
                    f"{self.address} did not take a message within {self.message_timeout} s"
                )
                self.transport.abort()
                raise self._write_error from None

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._finish(TransportError(f"the connection to {self.address} was closed"))
            self.transport.close()
        try:
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._lost_waiter)
        except (TimeoutError, asyncio.CancelledError):
            self.transport.abort()

    def closing(self) -> bool:
        return self._closed or self._lost or self._ended or self.transport.is_closing()


async def open_tcp_channel(
    host: str,
    port: int,
    address: str,
    max_bytes: int,
    timeout: float,
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str = "",
) -> AsyncStreamChannel:
    """Connect to an srpc server over TCP (TCP_NODELAY) within `timeout` seconds.

    With `tls`, the connection is then upgraded (server certificate and host name checked
    against `server_name`, or `host`) within another `timeout`; the handshake's own errors
    (`ssl.SSLError`, `OSError`, `TimeoutError`) are raised as they are, for the transport to
    explain.
    """
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, channel = await loop.create_connection(
                lambda: AsyncStreamChannel(address, max_bytes, timeout, client=True), host, port
            )
    except TimeoutError:
        raise ServerUnavailableError(
            f"no srpc server at {address}: connecting timed out after {timeout} s"
        ) from None
    except OSError as exc:
        raise ServerUnavailableError(
            f"no srpc server at {address}: is it running? ({exc.strerror or exc})"
        ) from None
    _no_delay(transport)
    if tls is not None:
        try:
            async with asyncio.timeout(timeout):
                upgraded = await loop.start_tls(
                    transport,
                    channel,
                    tls,
                    server_hostname=server_name or host,
                    ssl_handshake_timeout=timeout + 1,  # the deadline above comes first
                )
        except BaseException:
            transport.abort()
            raise
        channel.transport = cast(asyncio.Transport, upgraded)
    return channel


def _no_delay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # EINVAL on macOS when the peer reset the connection
            pass


class AsyncStreamListener(AsyncListener):
    """Serves a listening stream socket on the running event loop: `on_connection` runs as a
    task of its own for every connection, past `max_connections` a connection gets a ``busy``
    control error and is closed. With `tls`, every connection is TLS (see the module)."""

    def __init__(
        self,
        address: str,
        port: int,
        on_connection: OnConnection,
        *,
        max_bytes: int,
        message_timeout: float,
        idle_timeout: float,
        max_connections: int | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self._on_connection = on_connection
        self._max_bytes = max_bytes
        self._message_timeout = message_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._tls = tls
        self._server: asyncio.AbstractServer | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._count = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, sock: socket.socket) -> None:
        """Start accepting on the bound, listening `sock`."""
        loop = asyncio.get_running_loop()
        if self._tls is None:
            self._server = await loop.create_server(self._channel, sock=sock)
        else:  # accept here: each connection is looked at before its handshake
            sock.setblocking(False)
            self._sock = sock
            self._accepting = loop.create_task(self._accept(sock))

    def _channel(self) -> AsyncStreamChannel:
        return _ServerChannel(self)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, channel: AsyncStreamChannel) -> None:
        limit = self._max_connections
        if limit is not None and self._count >= limit:
            message = protocol.control_error(
                f"the server at {self.address} is serving its maximum of {limit} connections: "
                "try again later",
                protocol.Code.BUSY,
            )
            try:
                channel.write(message)
            except TransportError:
                pass
            await channel.close()
            return
        self._count += 1
        try:
            await self._on_connection(channel)
        except Exception:
            log.exception("srpc: serving a connection to %s failed", self.address)
        finally:
            self._count -= 1
            await channel.close()

    async def _accept(self, sock: socket.socket) -> None:
        """The accept loop of a TLS listener."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                _limited.info(log, ("accept", exc.errno), "srpc: accept failed: %s", exc)
                await asyncio.sleep(0.1)  # out of descriptors, say: let connections go first
                continue
            self._spawn(self._start_tls(conn))

    async def _start_tls(self, conn: socket.socket) -> None:
        """A TLS connection: refuse a plaintext peer clearly, else the handshake, then serve."""
        assert self._tls is not None
        loop = asyncio.get_running_loop()
        peer = _peer(conn)
        timeout = self._message_timeout
        try:
            async with asyncio.timeout(timeout):
                await _readable(loop, conn)
                first = conn.recv(1, socket.MSG_PEEK)
                if not first:
                    conn.close()
                    return
                if first[0] != TLS_HANDSHAKE:
                    await self._refuse_plaintext(loop, conn, peer)
                    return
                await loop.connect_accepted_socket(
                    self._channel, conn, ssl=self._tls, ssl_handshake_timeout=timeout + 1
                )
        except (ssl.SSLError, OSError) as exc:  # TimeoutError included
            conn.close()
            _limited.warning(
                log,
                ("tls", peer.partition(":")[0]),
                "srpc: the TLS handshake with %s at %s failed: %s",
                peer,
                self.address,
                str(exc) or "it did not complete in time",
            )

    async def _refuse_plaintext(
        self, loop: asyncio.AbstractEventLoop, conn: socket.socket, peer: str
    ) -> None:
        _limited.warning(
            log,
            ("plaintext", peer.partition(":")[0]),
            "srpc: refused a plaintext connection from %s to the TLS server at %s",
            peer,
            self.address,
        )
        try:
            try:
                conn.recv(65536)  # its hello: closing with unread input would lose our answer
            except BlockingIOError:
                pass
            message = protocol.control_error(
                f"the server at {self.address} requires TLS: set [srpc.tcp] tls_ca (the CA "
                "that signed the server's certificate) in the client's srpc.toml",
                protocol.Code.MISMATCH,
            )
            await loop.sock_sendall(conn, _pack(len(message)) + message)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()

    async def close(self) -> None:
        # Stops accepting; connections are the core's to end.
        if self._server is not None:
            self._server.close()
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _ServerChannel(AsyncStreamChannel):
    """A connection accepted by an `AsyncStreamListener`: served once it is made."""

    def __init__(self, listener: AsyncStreamListener) -> None:
        super().__init__(
            "a peer",
            listener._max_bytes,
            listener._message_timeout,
            listener._idle_timeout,
            local=listener.address,
        )
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.address = f"{peer[0]}:{peer[1]}"
        _no_delay(transport)
        self._listener._spawn(self._listener._serve(self))


async def _readable(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    """Wait until `sock` has something to read (or is closed)."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except (OSError, ValueError):
        return "a peer"
    return f"{host}:{port}"


async def bind_tcp(
    host: str,
    port: int,
    on_connection: OnConnection,
    *,
    url: str,
    backlog: int,
    max_bytes: int,
    message_timeout: float,
    idle_timeout: float,
    max_connections: int | None,
    reuse_port: bool = False,
    tls: ssl.SSLContext | None = None,
) -> AsyncStreamListener:
    """Bind a TCP listener at host/port (port 0: any free one) serving `on_connection`.

    `url` is the address with ``{port}`` standing for the bound port; with `tls`, every
    connection is TLS.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog, reuse_port=reuse_port)
    bound = sock.getsockname()[1]
    listener = AsyncStreamListener(
        url.format(port=bound),
        bound,
        on_connection,
        max_bytes=max_bytes,
        message_timeout=message_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
        tls=tls,
    )
    try:
        await listener.start(sock)
    except BaseException:
        sock.close()
        raise
    return listener


def oversized(address: str, exc: OversizedFrameError, max_bytes: int) -> FrameTooLargeError:
    """The client's error for a message longer than its `max_message_bytes`."""
    return FrameTooLargeError(
        f"the server at {address} sent a {exc.size}-byte message, more than "
        f"max_message_bytes ({max_bytes})"
    )


__all__ = [
    "READ_LIMIT",
    "AsyncStreamChannel",
    "AsyncStreamListener",
    "OnEnd",
    "OnMessage",
    "bind_tcp",
    "open_tcp_channel",
    "oversized",
]
