"""The ``tcp`` transport (the default): length-prefixed messages over plain TCP sockets.

Wire: every message is a 4-byte big-endian unsigned length followed by that many bytes
(docs/protocol.md). Client: one connection per channel, TCP_NODELAY, timeouts on connect and
every read. Server: a thread per connection (a slow call holds up nobody else) with a shutdown
that lets calls in flight finish. Framing, channel and listener come from `srpc_core.streams`;
this module adds TCP addressing and recognises a ZeroMQ peer on the other end.

Options (``[srpc.tcp]``): ``idle_timeout`` (seconds a server keeps a silent connection;
overrides ``[srpc] idle_timeout``, default 300), ``backlog`` (listen backlog, default 128).
The limits of ``[srpc]`` apply: ``max_connections``, ``timeout`` (also the most a message may
take to arrive whole from its first byte), ``max_message_bytes``.
"""

from __future__ import annotations

import socket

from srpc_core import async_streams
from srpc_core.errors import MismatchError, OversizedFrameError, ServerUnavailableError
from srpc_core.hookspecs import RegisterTransport, hookimpl
from srpc_core.options import Option, PluginOptions
from srpc_core.streams import StreamChannel, StreamListener, identify_protocol
from srpc_core.transport import (
    AsyncChannel,
    AsyncListener,
    Channel,
    Endpoint,
    Handler,
    Listener,
    OnConnection,
    Transport,
    TransportSettings,
)

#: The ``[srpc.tcp]`` table.
OPTIONS = {
    "idle_timeout": Option(
        float,
        default=None,
        minimum=0,
        exclusive_minimum=True,
        help="seconds a server keeps a silent connection open; overrides [srpc] idle_timeout",
    ),
    "backlog": Option(int, default=128, minimum=1, maximum=65535, help="the listen backlog"),
}


class TcpTransport(Transport):
    """Plain TCP with 4-byte length framing."""

    name = "tcp"

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        options = PluginOptions.wrap(settings.options, self.name).check(OPTIONS)
        idle_timeout = options["idle_timeout"]
        self.idle_timeout: float = settings.idle_timeout if idle_timeout is None else idle_timeout
        self.backlog: int = options["backlog"]

    def connect(self, host: str, port: int, timeout: float) -> Channel:
        address = self.url(host, port)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise ServerUnavailableError(
                f"no srpc server at {address}: connecting timed out after {timeout} s"
            ) from None
        except OSError as exc:
            raise ServerUnavailableError(
                f"no srpc server at {address}: is it running? ({exc.strerror or exc})"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return TcpChannel(sock, address, self.settings.max_message_bytes, timeout)

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=self.backlog)
        port = sock.getsockname()[1]
        return TcpListener(
            sock,
            self.url(host, port),
            port,
            handler,
            max_bytes=self.settings.max_message_bytes,
            idle_timeout=self.idle_timeout,
            drain_timeout=self.settings.timeout,
            message_timeout=self.settings.timeout,
            max_connections=self.settings.max_connections,
        )

    async def open_async_channel(self, endpoint: Endpoint, timeout: float) -> AsyncChannel:
        """The native async side: one connection carrying many calls (asyncio streams)."""
        address = self.url(endpoint.host, endpoint.port)
        return await async_streams.open_tcp_channel(
            endpoint.host, endpoint.port, address, self.settings.max_message_bytes, timeout
        )

    async def bind_async(self, endpoint: Endpoint, on_connection: OnConnection) -> AsyncListener:
        """The native async side of the server (asyncio streams)."""
        return await async_streams.bind_tcp(
            endpoint.host,
            endpoint.port,
            on_connection,
            url=self.url(endpoint.host, endpoint.port).rsplit(":", 1)[0] + ":{port}",
            backlog=self.backlog,
            max_bytes=self.settings.max_message_bytes,
            message_timeout=self.settings.timeout,
            idle_timeout=self.idle_timeout,
            max_connections=self.settings.max_connections,
        )


class TcpChannel(StreamChannel):
    """One client connection; explains a ZeroMQ server that resets it during the hello.

    (A ZeroMQ server that answers with its greeting is recognised by `StreamChannel` itself:
    `identify_protocol` on the first reply.)
    """

    def broken(self, exc: OSError | EOFError) -> Exception:
        if isinstance(exc, ConnectionResetError) and not self.answered:
            # A ZeroMQ server often reads the hello before its greeting went out, and resets
            # the connection without sending the 0xFF byte `identify_protocol` recognises.
            return MismatchError(
                f"the server at {self.address} reset the connection instead of answering the "
                "srpc hello: it probably speaks ZeroMQ (transport 'zmq'), while this client "
                "uses transport 'tcp': set the same transport in srpc.toml on both sides"
            )
        return super().broken(exc)


class TcpListener(StreamListener):
    """The TCP server; explains the mismatch to a ZeroMQ client."""

    def refusal(self, exc: OversizedFrameError) -> str:
        if identify_protocol(exc.header) == "ZeroMQ":
            return (
                f"this is an srpc server with transport 'tcp' at {self.address}; the client "
                "speaks ZeroMQ (transport 'zmq'): set the same transport in srpc.toml on both sides"
            )
        return super().refusal(exc)


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``tcp``."""
    register("tcp", TcpTransport)


__all__ = [
    "OPTIONS",
    "TcpChannel",
    "TcpListener",
    "TcpTransport",
    "srpc_register_transports",
]
