"""The Transport interface: how messages (byte strings) travel between client and server.

A transport is a small class registered under a name in `srpc_register_transports` (see
docs/plugins.md). It makes two kinds of object:

* a `Channel` on the client side (`Transport.connect`): one conversation with a server, used by
  one thread at a time: send a request message, wait for its response message;
* a `Listener` on the server side (`Transport.listen`): accepts peers and, for every request
  message, calls the `Handler` the server gave it and sends back what the handler returns.

Transports move bytes only. Encoding, the handshake and dispatch are the core's business.

A transport may also have a native **async side** (0.3): `Transport.open_async_channel` and
`Transport.bind_async` return an `AsyncChannel` (one connection carrying many calls at once:
send any message, receive the next one, in whatever order the peer answers) and an
`AsyncListener`. Transports without one (every v0.1 transport) keep working under the async
client and the asyncio server: the core bridges their sync `Channel` and `Listener` with
threads (docs/asyncio.md).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from srpc_core import protocol
from srpc_core.ratelimit import LogLimiter

log = logging.getLogger("srpc")
_limited = LogLimiter(period=10.0)

#: Called by a listener for every request message; returns the response message. It is
#: thread-safe, never raises for bad input (it answers with an error message instead), and may
#: take as long as the user's procedure takes.
Handler = Callable[[bytes], bytes]


def answer(handler: Handler, message: bytes, max_bytes: int) -> bytes:
    """Run `handler` on a request message the way every listener should.

    A handler that raises (a bug: it should answer errors itself) costs one call, not the
    server; a response larger than `max_bytes` becomes a control error the client can read.
    """
    try:
        reply = handler(message)
    except Exception as exc:
        # A bug, not bad input: one line per kind of failure every 10 s (a traceback per
        # request would let one client flood the log); the traceback at DEBUG.
        _limited.warning(log, type(exc).__qualname__, "srpc: the request handler failed: %r", exc)
        log.debug("srpc: the request handler failed", exc_info=True)
        return protocol.control_error(
            f"internal server error: {type(exc).__name__}", protocol.Code.INTERNAL
        )
    if len(reply) > max_bytes:
        return protocol.control_error(
            f"the response is {len(reply)} bytes, more than max_message_bytes ({max_bytes})",
            protocol.Code.TOO_LARGE,
        )
    return reply


@dataclass(frozen=True)
class TransportSettings:
    """What a transport is constructed with.

    Attributes:
        options: the transport's own table in srpc.toml (``[srpc.<name>]``), possibly empty:
            a `srpc_core.options.PluginOptions` (a read-only mapping that also knows its table
            and file) when srpc builds the transport, possibly a plain mapping when code does.
            Check it with ``PluginOptions.wrap(settings.options, name).check({...})``.
        max_message_bytes: the largest message either side may send; a transport must refuse a
            larger incoming message *before* allocating memory for it.
        timeout: seconds to wait for a connection or a response before giving up; on a
            server, also the most seconds a message may take to arrive whole from its first
            byte.
        max_connections: ``[srpc] max_connections``: connections a server serves at once;
            past it a new connection gets a ``busy`` control error and is closed.
        idle_timeout: ``[srpc] idle_timeout``: seconds a server keeps a silent connection (a
            transport's own ``idle_timeout`` option, where it has one, overrides it).
        max_in_flight: ``[srpc] max_in_flight``: calls one connection may have running at
            once (a listener that runs one at a time is within any limit;
            `srpc_core.streams.StreamListener` runs pipelined requests side by side up to it).
        reuse_port: bind with ``SO_REUSEPORT`` so several processes share the port (``[srpc]
            workers``); a transport without it ignores it (the server refuses workers there).
        max_message_bytes_given: whether srpc.toml (or the code) set `max_message_bytes`;
            False when it is srpc's default, which a transport whose broker carries less
            (NATS's ``max_payload``) may lower to what it carries instead of refusing it.

    Fields after `timeout` were added in 0.2 with defaults, so code that builds settings the
    v0.1 way keeps working.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    max_message_bytes: int = 16 * 1024 * 1024
    timeout: float = 30.0
    max_connections: int = 1024
    idle_timeout: float = 300.0
    max_in_flight: int = 16
    reuse_port: bool = False
    max_message_bytes_given: bool = True


@dataclass(frozen=True)
class Endpoint:
    """Where a client connects or a server listens, and which service it carries there.

    Attributes:
        host, port: from srpc.toml or the stub's arguments (transports that route by name,
            such as NATS, may ignore them).
        service: the interface's name, e.g. ``CalcInterface``.
        dotted_service: its full name, e.g. ``calc.calc_interface.CalcInterface``.
    """

    host: str
    port: int
    service: str = ""
    dotted_service: str = ""


class Channel(ABC):
    """A client's connection to one server. Used by one thread at a time."""

    @abstractmethod
    def request(self, message: bytes, timeout: float) -> bytes:
        """Send `message`, then wait at most `timeout` seconds for the response message.

        Raise `srpc_core.errors.CallTimeoutError` on timeout, `TransportError` if the
        connection broke (the client then discards this channel), and `FrameTooLargeError` if
        the response exceeds `max_message_bytes`.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Must be idempotent."""

    def usable(self) -> bool:
        """Cheaply check, before an idle channel is reused, that the peer has not closed it.

        srpc runs a call at most once: if a request may have reached the server before the
        connection broke, the caller gets an error, not a second run. A channel found unusable
        here is closed and replaced *before* anything is sent, so a server restart between
        calls costs nothing. The default (True) means "cannot tell"; stream transports look
        for an end-of-file waiting on the socket.
        """
        return True


class AsyncChannel(ABC):
    """One connection, used from one event loop, that carries many messages each way at once.

    The async client sends requests (and cancels) with `send` while one task reads every
    incoming message with `receive` and matches responses to calls by their ids, so answers
    may come in any order. The asyncio server gets one per accepted connection and uses it
    the same way. Messages are whole byte strings, as with `Channel`.
    """

    #: Where the peer is, as a URL (for messages).
    address: str = ""

    @abstractmethod
    async def send(self, message: bytes) -> None:
        """Send one message. Concurrent sends must not interleave their bytes.

        Raise `TransportError` if the connection is broken.
        """

    @abstractmethod
    async def receive(self) -> bytes | None:
        """The next message, or None once the peer closed the connection between messages.

        Raise `TransportError` if the connection broke in the middle of a message,
        `FrameTooLargeError`/`OversizedFrameError` for a message longer than
        `max_message_bytes` (read before it is allocated), `TimeoutError` when a message that
        began does not arrive whole within the transport's `timeout`. Waiting for a message
        to begin has no timeout of its own: the caller bounds it.
        """

    @abstractmethod
    async def close(self) -> None:
        """Close the connection (a pending `receive` returns or raises). Idempotent."""

    def closing(self) -> bool:
        """True once the connection is closed or the peer has closed it, as far as known
        without waiting: the client then opens a new one before sending anything."""
        return False


#: What an `AsyncListener` calls, as a task of its own, for every connection it accepts; the
#: connection is closed when the returned awaitable ends.
OnConnection = Callable[[AsyncChannel], Awaitable[None]]


class AsyncListener(ABC):
    """A bound server endpoint of a transport's async side (see `Transport.bind_async`)."""

    address: str
    port: int

    @abstractmethod
    async def close(self) -> None:
        """Stop accepting connections. Connections already accepted are the core's to end
        (it drains their calls first)."""


class Listener(ABC):
    """A server's bound endpoint. Created bound (so "address in use" surfaces at once)."""

    #: Where clients reach this listener, as a URL such as ``tcp://127.0.0.1:5000``.
    address: str
    #: The bound port (the real one when port 0 was asked for), or 0 where ports do not apply.
    port: int

    @abstractmethod
    def serve_forever(self) -> None:
        """Accept peers and serve requests until `shutdown` is called. Blocks."""

    @abstractmethod
    def shutdown(self) -> None:
        """Ask `serve_forever` to return: stop accepting, let calls in flight finish and send
        their responses, then close. Must not block, and must be safe to call from any thread
        or from a signal handler."""


class Transport(ABC):
    """A way to carry srpc messages. Subclasses take a `TransportSettings` in `__init__`."""

    #: The name this transport is registered under; filled in by the registry if left empty.
    name: ClassVar[str] = ""

    def __init__(self, settings: TransportSettings) -> None:
        self.settings = settings

    @abstractmethod
    def connect(self, host: str, port: int, timeout: float) -> Channel:
        """Open a channel to the server at host/port within `timeout` seconds.

        Raise `srpc_core.errors.ServerUnavailableError` when nobody answers there, with a
        message like ``"no srpc server at tcp://127.0.0.1:5000: is it running?"``.
        """

    @abstractmethod
    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        """Bind a listener at host/port (port 0 = any free port) that serves `handler`.

        Raise `OSError` with a clear message if the address is taken.
        """

    def open_channel(self, endpoint: Endpoint, timeout: float) -> Channel:
        """Open a channel to the server of `endpoint.service` within `timeout` seconds.

        The client calls this; the default calls `connect` (the v0.1 method). Transports that
        route by service (a subject, a path) override this instead of `connect`.
        """
        return self.connect(endpoint.host, endpoint.port, timeout)

    def bind(self, endpoint: Endpoint, handler: Handler) -> Listener:
        """Bind a listener that serves `endpoint.service` with `handler`.

        The server calls this; the default calls `listen` (the v0.1 method).
        """
        return self.listen(endpoint.host, endpoint.port, handler)

    async def open_async_channel(self, endpoint: Endpoint, timeout: float) -> AsyncChannel | None:
        """Open an `AsyncChannel` to the server of `endpoint.service` within `timeout` seconds,
        or return None when this transport has no native async side (the default): the async
        client then runs `open_channel` channels in threads, one per call in flight.

        Raise `ServerUnavailableError` as `connect` does.
        """
        return None

    async def bind_async(
        self, endpoint: Endpoint, on_connection: OnConnection
    ) -> AsyncListener | None:
        """Bind an `AsyncListener` serving `endpoint.service` that runs `on_connection` for
        every accepted connection, or return None when this transport has no native async side
        (the default): the asyncio server then serves `bind`'s threaded listener.

        Raise `OSError` with a clear message if the address is taken.
        """
        return None

    def url(self, host: str, port: int) -> str:
        """The address as a URL for messages, e.g. ``tcp://127.0.0.1:5000``."""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{self.name}://{host}:{port}"


__all__ = [
    "AsyncChannel",
    "AsyncListener",
    "Channel",
    "Endpoint",
    "Handler",
    "Listener",
    "OnConnection",
    "Transport",
    "TransportSettings",
    "answer",
]
