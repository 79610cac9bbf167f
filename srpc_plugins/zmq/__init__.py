"""The ``zmq`` transport: srpc messages over direct ZeroMQ connections, with pyzmq.

Select it with ``transport = "zmq"`` in srpc.toml on both sides; the stubs stay the same. It
needs the ``srpclib[zmq]`` extra. This module imports without pyzmq, so ``srpc plugins`` always
lists it; pyzmq is imported only when the transport is built.

A zmq server binds host:port and its clients connect to it directly. The ZeroMQ broker that
once spread calls over many servers (``srpc broker``, ``[srpc.zmq] connect``) is retired: to run
many servers of a service, use ``transport = "nats"`` (docs/nats.md, docs/scaling.md). A table
that still sets ``connect`` is refused with a `ConfigError` saying so.

Options (``[srpc.zmq]``):

* ``workers``: how many calls a server runs at once (threads), default 16.
* ``idle_timeout``: seconds a server keeps a connection that does not complete the ZeroMQ
  handshake, or that stops answering ZeroMQ heartbeats (default 300; the handshake is also
  bounded by ``[srpc] timeout``).
* ``max_in_flight``: calls one client connection may have waiting or running at once, default
  8; a call past it is refused at once with a ``busy`` control error.
* ``queue_bytes``: bytes ZeroMQ may queue for one client connection in each direction, default
  16 MiB: the high-water marks are ``max(1, queue_bytes // max_message_bytes)`` messages.
* ``curve_secret_key_file``: this side's CURVE key pair (``NAME.key`` from ``srpc keygen``);
  a server with it accepts CURVE clients only.
* ``curve_server_key`` (client): the server's public key, z85 text or the path of its
  ``NAME.pub``; with it the client connects with CURVE.
* ``curve_authorized_keys`` (server): a file of admitted client public keys (z85, one per
  line) or a directory of ``*.pub`` files; absent, any client that knows the server's key.

CURVE is libzmq's; the keys are read and checked by `curve` (every problem is a `ConfigError`
naming the file and the key) and clients are admitted by pyzmq's ThreadAuthenticator.

The transport has a native async side (`aio`): the async client's channel is one DEALER on
`zmq.asyncio` carrying many calls at once, and the asyncio server reads the same bound ROUTER
on its event loop, one connection per client socket, with the limits and CURVE above (on it,
``max_in_flight`` counts the messages of a connection waiting besides the ``[srpc]
max_in_flight`` calls it runs; a socket silent for ``idle_timeout`` ends its connection).
Either side works with the other's sync half (docs/asyncio.md).

See docs/config.md for what these bound, and docs/scaling.md for the arithmetic.

The package: this module (the options, the transport and the hook, importable without pyzmq),
`channel` (the client side), `server` (the listener), `aio` (the async client side and
listener), `wire` (the frames they exchange) and `curve` (the CURVE keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from srpc_core.errors import ConfigError, MissingDependencyError
from srpc_core.hookspecs import RegisterTransport, hookimpl
from srpc_core.options import DEFAULTS_SOURCE, Option, PluginOptions
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

if TYPE_CHECKING:
    import zmq

    from srpc_plugins.zmq.server import BoundFront

INSTALL_HINT = "pip install 'srpclib[zmq]'"
MAX_WORKERS = 1024
MIB = 1024 * 1024
#: The ``[srpc.zmq]`` table.
OPTIONS = {
    "workers": Option(
        int, default=16, minimum=1, maximum=MAX_WORKERS, help="calls a server runs at once"
    ),
    "idle_timeout": Option(
        float,
        default=300.0,
        minimum=0,
        exclusive_minimum=True,
        help="seconds a server keeps a connection that does not complete the ZeroMQ handshake "
        "or stops answering heartbeats",
    ),
    "max_in_flight": Option(
        int,
        default=8,
        minimum=1,
        maximum=65536,
        help="calls one client connection may have waiting or running; more are refused as busy",
    ),
    "queue_bytes": Option(
        int,
        default=16 * MIB,
        minimum=1,
        help="bytes ZeroMQ may queue for one client connection in each direction",
    ),
    "curve_secret_key_file": Option(
        str, default="", help="this side's CURVE key pair: the NAME.key srpc keygen wrote"
    ),
    "curve_server_key": Option(
        str,
        default="",
        help="client: the server's CURVE public key, 40 z85 characters or its NAME.pub file",
    ),
    "curve_authorized_keys": Option(
        str,
        default="",
        help="server: a file of client public keys (z85, one per line) or a directory of *.pub",
    ),
}
#: The ``[srpc.zmq]`` keys that configure CURVE (strings; ``""`` = not set).
CURVE_KEYS = ("curve_secret_key_file", "curve_server_key", "curve_authorized_keys")


def require_pyzmq() -> None:
    """Raise `MissingDependencyError` naming the extra when pyzmq is not installed."""
    try:
        import zmq  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"transport 'zmq' needs pyzmq, which is not installed: {INSTALL_HINT}"
        ) from None


#: ``[srpc.zmq]`` keys of the retired broker: a table that still sets one is refused.
RETIRED_BROKER_KEYS = ("connect",)


def broker_retired(table: PluginOptions, key: str) -> ConfigError:
    """The error for a broker setting left in ``[srpc.zmq]``: the broker is gone, use NATS."""
    where = f"{table.source}: " if table.source and table.source != DEFAULTS_SOURCE else ""
    return ConfigError(
        f"{where}[{table.table}] {key} = {table[key]!r}: the ZeroMQ broker (srpc broker) was "
        "retired, and a zmq server only binds host:port. To run many servers of a service, "
        'set transport = "nats" on servers and clients (see docs/nats.md); for one zmq server, '
        f"remove {key} from [{table.table}]"
    )


@dataclass(frozen=True)
class ZmqOptions:
    """The ``[srpc.zmq]`` table, checked."""

    workers: int = 16
    idle_timeout: float = 300.0
    max_in_flight: int = 8
    queue_bytes: int = 16 * MIB
    curve_secret_key_file: str = ""
    curve_server_key: str = ""
    curve_authorized_keys: str = ""

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> ZmqOptions:
        """Check `options`; raise `ConfigError` naming the file, ``[srpc.zmq]``, the key and
        the valid values."""
        table = PluginOptions.wrap(options, "zmq")
        for key in RETIRED_BROKER_KEYS:
            if key in table:
                raise broker_retired(table, key)
        checked = table.check(OPTIONS)
        return cls(**{name: checked[name] for name in OPTIONS})

    def high_water_mark(self, max_message_bytes: int) -> int:
        """The ZeroMQ high-water mark (in messages) that keeps a queue within `queue_bytes`.

        ZeroMQ counts whole messages, not bytes; each message is at most `max_message_bytes`,
        so ``queue_bytes // max_message_bytes`` messages hold at most `queue_bytes` (never
        fewer than one message: a queue must hold the message it is carrying).
        """
        return max(1, self.queue_bytes // max_message_bytes)


class ZmqTransport(Transport):
    """ZeroMQ: a DEALER socket per client channel, a ROUTER and worker threads per server (or
    the ROUTER read on the event loop: the async side)."""

    name = "zmq"
    #: What `srpc plugins` checks for (see docs/plugins.md).
    requires = {"zmq": INSTALL_HINT}

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        table = PluginOptions.wrap(settings.options, "zmq")
        self.options = ZmqOptions.parse(table)
        require_pyzmq()
        from srpc_plugins.zmq.curve import CurveKeys

        strings = {key: getattr(self.options, key) for key in CURVE_KEYS}
        #: This side's CURVE keys, or None: CURVE off.
        self.curve = CurveKeys.load(table, strings)

    def connect(self, host: str, port: int, timeout: float) -> Channel:
        import zmq

        from srpc_plugins.zmq.channel import ZmqChannel

        address = self.url(host, port)
        max_bytes = self.settings.max_message_bytes
        return ZmqChannel(
            zmq.Context.instance(), host, port, address, max_bytes, timeout, curve=self.curve
        )

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        import zmq

        from srpc_plugins.zmq.server import ZmqListener

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()  # its own: term() on shutdown
        front = self._bind_front(context, host, port)
        return ZmqListener(
            self.settings,
            front,
            context,
            handler,
            self.options.workers,
            self.url(host, front.port),
            max_in_flight=self.options.max_in_flight,
        )

    async def open_async_channel(self, endpoint: Endpoint, timeout: float) -> AsyncChannel | None:
        """The native async side: one DEALER carrying many calls (`aio.AsyncZmqChannel`),
        connected and checked as `connect` does (CURVE included)."""
        from srpc_plugins.zmq.aio import AsyncZmqChannel

        host, port = endpoint.host, endpoint.port
        return await AsyncZmqChannel.open(
            host,
            port,
            self.url(host, port),
            self.settings.max_message_bytes,
            timeout,
            self.curve,
        )

    async def bind_async(
        self, endpoint: Endpoint, on_connection: OnConnection
    ) -> AsyncListener | None:
        """The native async side of the server: the ROUTER `listen` binds, read on the running
        loop; each client socket is one connection (`aio.AsyncZmqListener`)."""
        import zmq

        from srpc_plugins.zmq.aio import AsyncZmqListener

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()  # its own: term() at the end
        front = self._bind_front(context, endpoint.host, endpoint.port, track_peers=True)
        settings = self.settings
        return AsyncZmqListener(
            front,
            context,
            on_connection,
            self.url(endpoint.host, front.port),
            max_in_flight=self.options.max_in_flight,
            running=settings.max_in_flight,
            max_connections=settings.max_connections,
            idle_timeout=self.options.idle_timeout,
        )

    def _bind_front(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        host: str,
        port: int,
        *,
        track_peers: bool = False,
    ) -> BoundFront:
        """The bound ROUTER both server sides read, with every limit of ``[srpc.zmq]``."""
        from srpc_plugins.zmq.server import BoundFront

        max_bytes = self.settings.max_message_bytes
        try:
            return BoundFront(
                context,
                host,
                port,
                max_bytes,
                high_water_mark=self.options.high_water_mark(max_bytes),
                handshake_timeout=min(self.options.idle_timeout, self.settings.timeout),
                idle_timeout=self.options.idle_timeout,
                queue_bytes=self.options.queue_bytes,
                curve=self.curve,
                track_peers=track_peers,
            )
        except BaseException:
            context.destroy(linger=0)
            raise


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``zmq``."""
    register("zmq", ZmqTransport)


__all__ = [
    "CURVE_KEYS",
    "INSTALL_HINT",
    "MAX_WORKERS",
    "MIB",
    "OPTIONS",
    "RETIRED_BROKER_KEYS",
    "ZmqOptions",
    "ZmqTransport",
    "broker_retired",
    "require_pyzmq",
    "srpc_register_transports",
]
