"""The async side of stream transports: the framing of `srpc_core.streams` on asyncio streams.

Same bytes as the threaded side (a 4-byte big-endian length, then the message: docs/protocol.md)
and the same limits: `max_message_bytes` is checked on the length before a body is read, and a
message must arrive whole within `timeout` of its first byte. What changes is the shape: an
`AsyncStreamChannel` is one connection carrying many messages each way at once (the async
client and the asyncio server match answers to calls by their ids), and an
`AsyncStreamListener` runs a coroutine of the core for every accepted connection.

srpc's ``tcp`` transport uses these for its native async side (`open_tcp_channel`,
`bind_tcp`); a plugin for another stream socket can build its own from `AsyncStreamChannel`
and `AsyncStreamListener` the same way.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from srpc_core import protocol
from srpc_core.errors import (
    FrameTooLargeError,
    MismatchError,
    OversizedFrameError,
    ServerUnavailableError,
    TransportError,
)
from srpc_core.streams import HEADER, SMALL_MESSAGE, identify_protocol
from srpc_core.transport import AsyncChannel, AsyncListener, OnConnection

log = logging.getLogger("srpc.streams")
#: The read buffer of a connection: past twice this, asyncio stops reading until the core
#: took what it holds (memory follows what the core has consumed, not what a peer sends).
READ_LIMIT = 256 * 1024


class AsyncStreamChannel(AsyncChannel):
    """One connection over asyncio streams, carrying many messages each way at once.

    Args:
        reader, writer: the connection.
        address: the peer's URL (for messages).
        max_bytes: `max_message_bytes`.
        message_timeout: seconds a message may take to arrive whole from its first byte.
        idle_timeout: on a server, seconds `receive` waits for a message to begin before it
            treats the peer as gone (returns None); None: no limit (the client bounds its own
            waits).
        client: True on the client side: the first message received is checked for another
            protocol's opening bytes (`identify_protocol`).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        max_bytes: int,
        message_timeout: float,
        idle_timeout: float | None = None,
        client: bool = False,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.address = address
        self.max_bytes = max_bytes
        self.message_timeout = message_timeout
        self.idle_timeout = idle_timeout
        self._check_first = client
        self._closed = False

    async def send(self, message: bytes) -> None:
        writer = self.writer
        if self._closed or writer.is_closing():
            raise TransportError(f"the connection to {self.address} is closed")
        # One write() per message (or two back to back, with no await between them), so
        # concurrent senders never interleave their bytes.
        if len(message) < SMALL_MESSAGE:
            writer.write(HEADER.pack(len(message)) + message)
        else:
            writer.write(HEADER.pack(len(message)))
            writer.write(message)
        if writer.transport.get_write_buffer_size() > 0:  # else drain() has nothing to wait for
            try:
                async with asyncio.timeout(self.message_timeout):
                    await writer.drain()
            except TimeoutError:
                raise TransportError(
                    f"{self.address} did not take a message within {self.message_timeout} s"
                ) from None
            except (OSError, RuntimeError) as exc:
                raise TransportError(f"connection to {self.address} failed: {exc}") from None

    async def receive(self) -> bytes | None:
        reader = self.reader
        try:
            if self.idle_timeout is None:
                header = await reader.readexactly(HEADER.size)
            else:
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        header = await reader.readexactly(1)
                except TimeoutError:
                    return None  # silent for idle_timeout: the caller closes the connection
                async with asyncio.timeout(self.message_timeout):
                    header += await reader.readexactly(HEADER.size - 1)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None  # closed between messages
            raise TransportError(
                f"{self.address} closed the connection in the middle of a message"
            ) from None
        except TimeoutError:
            raise TransportError(
                f"a message from {self.address} did not arrive whole within "
                f"{self.message_timeout} s of its first byte"
            ) from None
        except OSError as exc:
            raise TransportError(f"connection to {self.address} failed: {exc}") from None
        if self._check_first:
            self._check_first = False
            name = identify_protocol(header)
            if name is not None:
                raise MismatchError(
                    f"the server at {self.address} speaks {name}, not srpc: check host, port "
                    "and transport"
                )
        (size,) = HEADER.unpack(header)
        if size > self.max_bytes:
            raise OversizedFrameError(size, header)
        if size == 0:
            return b""
        try:
            async with asyncio.timeout(self.message_timeout):
                return await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise TransportError(
                f"{self.address} closed the connection in the middle of a message"
            ) from None
        except TimeoutError:
            raise TransportError(
                f"a message from {self.address} did not arrive whole within "
                f"{self.message_timeout} s of its first byte"
            ) from None
        except OSError as exc:
            raise TransportError(f"connection to {self.address} failed: {exc}") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (OSError, TimeoutError, asyncio.CancelledError):
            pass

    def closing(self) -> bool:
        return self._closed or self.writer.is_closing() or self.reader.at_eof()


async def open_tcp_channel(
    host: str, port: int, address: str, max_bytes: int, timeout: float
) -> AsyncStreamChannel:
    """Connect to an srpc server over TCP (TCP_NODELAY) within `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, limit=READ_LIMIT)
    except TimeoutError:
        raise ServerUnavailableError(
            f"no srpc server at {address}: connecting timed out after {timeout} s"
        ) from None
    except OSError as exc:
        raise ServerUnavailableError(
            f"no srpc server at {address}: is it running? ({exc.strerror or exc})"
        ) from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return AsyncStreamChannel(reader, writer, address, max_bytes, timeout, client=True)


class AsyncStreamListener(AsyncListener):
    """Serves a listening stream socket on the running event loop: `on_connection` runs as a
    task of its own for every connection, past `max_connections` a connection gets a ``busy``
    control error and is closed."""

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
    ) -> None:
        self.address = address
        self.port = port
        self._on_connection = on_connection
        self._max_bytes = max_bytes
        self._message_timeout = message_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._count = 0

    async def start(self, sock: socket.socket) -> None:
        """Start accepting on the bound, listening `sock`."""
        self._server = await asyncio.start_server(self._accepted, sock=sock, limit=READ_LIMIT)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        name = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "a peer"
        channel = AsyncStreamChannel(
            reader, writer, name, self._max_bytes, self._message_timeout, self._idle_timeout
        )
        limit = self._max_connections
        if limit is not None and self._count >= limit:
            message = protocol.control_error(
                f"the server at {self.address} is serving its maximum of {limit} connections: "
                "try again later",
                protocol.Code.BUSY,
            )
            try:
                writer.write(HEADER.pack(len(message)) + message)
            finally:
                await channel.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._count += 1
        try:
            await self._on_connection(channel)
        except Exception:
            log.exception("srpc: serving a connection to %s failed", self.address)
        finally:
            self._count -= 1
            await channel.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()  # stops accepting; connections are the core's to end


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
) -> AsyncStreamListener:
    """Bind a TCP listener at host/port (port 0: any free one) serving `on_connection`.

    `url` is the address with ``{port}`` standing for the bound port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    bound = sock.getsockname()[1]
    listener = AsyncStreamListener(
        url.format(port=bound),
        bound,
        on_connection,
        max_bytes=max_bytes,
        message_timeout=message_timeout,
        idle_timeout=idle_timeout,
        max_connections=max_connections,
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
    "bind_tcp",
    "open_tcp_channel",
    "oversized",
]
