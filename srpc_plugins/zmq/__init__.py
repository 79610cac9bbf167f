"""The ``zmq`` transport (srpc messages over ZeroMQ, with pyzmq) and the ``srpc broker`` command.

Select it with ``transport = "zmq"`` in srpc.toml on both sides; the stubs stay the same. It
needs the ``srpclib[zmq]`` extra. This module imports without pyzmq, so ``srpc plugins`` always
lists it; pyzmq is imported only when the transport is built or the broker runs.

Options (``[srpc.zmq]``):

* ``connect``: a server with this set (e.g. ``"tcp://broker-host:5001"``) connects to the back
  end of ``srpc broker`` instead of binding host:port (docs/scaling.md). Clients ignore it.
* ``workers``: how many calls a server runs at once (threads), default 16.
* ``idle_timeout``: seconds a server keeps a connection that does not complete the ZeroMQ
  handshake, or that stops answering ZeroMQ heartbeats (default 300; the handshake is also
  bounded by ``[srpc] timeout``).
* ``max_in_flight``: calls one client connection may have waiting or running at once, default
  8; a call past it is refused at once with a ``busy`` control error.
* ``queue_bytes``: bytes ZeroMQ may queue for one client connection in each direction, default
  16 MiB: the high-water marks are ``max(1, queue_bytes // max_message_bytes)`` messages.

See docs/config.md for what these bound, and docs/scaling.md for the arithmetic.

The package: this module (the options, the transport and the hooks, importable without pyzmq),
`channel` (the client side), `server` (the listener), `broker` (``srpc broker``) and `wire`
(the frames they exchange).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from srpc_core.errors import MissingDependencyError
from srpc_core.hookspecs import RegisterCommand, RegisterTransport, hookimpl
from srpc_core.options import Option, PluginOptions
from srpc_core.signals import stop_on_signals
from srpc_core.transport import Channel, Handler, Listener, Transport, TransportSettings

INSTALL_HINT = "pip install 'srpclib[zmq]'"
MAX_WORKERS = 1024
MIB = 1024 * 1024
#: The ``[srpc.zmq]`` table.
OPTIONS = {
    "connect": Option(
        str,
        default="",
        check=lambda value: value == "" or "://" in value,
        expected='the broker\'s back end as a ZeroMQ endpoint such as "tcp://127.0.0.1:5001", '
        'or "" to bind',
    ),
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
}


def require_pyzmq() -> None:
    """Raise `MissingDependencyError` naming the extra when pyzmq is not installed."""
    try:
        import zmq  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"transport 'zmq' needs pyzmq, which is not installed: {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class ZmqOptions:
    """The ``[srpc.zmq]`` table, checked."""

    connect: str = ""
    workers: int = 16
    idle_timeout: float = 300.0
    max_in_flight: int = 8
    queue_bytes: int = 16 * MIB

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> ZmqOptions:
        """Check `options`; raise `ConfigError` naming the file, ``[srpc.zmq]``, the key and
        the valid values."""
        checked = PluginOptions.wrap(options, "zmq").check(OPTIONS)
        return cls(**{name: checked[name] for name in OPTIONS})

    def high_water_mark(self, max_message_bytes: int) -> int:
        """The ZeroMQ high-water mark (in messages) that keeps a queue within `queue_bytes`.

        ZeroMQ counts whole messages, not bytes; each message is at most `max_message_bytes`,
        so ``queue_bytes // max_message_bytes`` messages hold at most `queue_bytes` (never
        fewer than one message: a queue must hold the message it is carrying).
        """
        return max(1, self.queue_bytes // max_message_bytes)


class ZmqTransport(Transport):
    """ZeroMQ: a DEALER socket per client channel, a ROUTER and worker threads per server."""

    name = "zmq"
    #: What `srpc plugins` checks for (see docs/plugins.md).
    requires = {"zmq": INSTALL_HINT}

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        self.options = ZmqOptions.parse(settings.options)
        require_pyzmq()

    def connect(self, host: str, port: int, timeout: float) -> Channel:
        import zmq

        from srpc_plugins.zmq.channel import ZmqChannel

        address = self.url(host, port)
        max_bytes = self.settings.max_message_bytes
        return ZmqChannel(zmq.Context.instance(), host, port, address, max_bytes, timeout)

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        import zmq

        from srpc_plugins.zmq.server import BoundFront, BrokerFront, ZmqListener

        context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()  # its own: term() on shutdown
        max_bytes = self.settings.max_message_bytes
        front: BoundFront | BrokerFront
        try:
            if self.options.connect:
                front = BrokerFront(context, self.options.connect, max_bytes)
                address = f"broker+{self.options.connect}"
            else:
                front = BoundFront(
                    context,
                    host,
                    port,
                    max_bytes,
                    high_water_mark=self.options.high_water_mark(max_bytes),
                    handshake_timeout=min(self.options.idle_timeout, self.settings.timeout),
                    idle_timeout=self.options.idle_timeout,
                    queue_bytes=self.options.queue_bytes,
                )
                address = self.url(host, front.port)
        except BaseException:
            context.destroy(linger=0)
            raise
        return ZmqListener(
            self.settings,
            front,
            context,
            handler,
            self.options.workers,
            address,
            max_in_flight=self.options.max_in_flight if self.options.connect == "" else None,
        )


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``zmq``."""
    register("zmq", ZmqTransport)


@hookimpl
def srpc_register_commands(register: RegisterCommand) -> None:
    """Offer ``srpc broker``."""
    register(
        "broker",
        "run a ZeroMQ broker: clients call one address, calls spread over many servers",
        configure_broker_parser,
        run_broker,
    )


BROKER_DESCRIPTION = """\
Run a ZeroMQ broker: clients connect to its front end as if it were one server, servers
connect to its back end, and every call goes to a server with an idle worker, in turn.
Servers may join and leave at any time; a server that stops finishes its calls and gets
no new ones. Ctrl+C or SIGTERM stops the broker. Needs the extra: pip install 'srpclib[zmq]'.

Servers' srpc.toml (the stubs do not change):
  [srpc]
  transport = "zmq"
  [srpc.zmq]
  connect = "tcp://BROKER-HOST:5001"      # the broker's --backend

Clients' srpc.toml:
  [srpc]
  transport = "zmq"
  host = "BROKER-HOST"                    # the broker's --frontend
  port = 5000
"""

BROKER_EPILOG = """\
examples:
  srpc broker                                       # 127.0.0.1:5000 and 127.0.0.1:5001
  srpc broker --frontend tcp://0.0.0.0:5000 --backend tcp://0.0.0.0:5001
  srpc broker --frontend tcp://127.0.0.1:0 --backend tcp://127.0.0.1:0   # any free ports

See docs/scaling.md for what the broker guarantees and where it stops.
"""


def configure_broker_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``srpc broker`` arguments."""
    parser.description = BROKER_DESCRIPTION
    parser.epilog = BROKER_EPILOG
    parser.add_argument(
        "--frontend",
        default="tcp://127.0.0.1:5000",
        metavar="ENDPOINT",
        help="where clients connect (default: %(default)s; port 0 = any free port)",
    )
    parser.add_argument(
        "--backend",
        default="tcp://127.0.0.1:5001",
        metavar="ENDPOINT",
        help="where servers connect (default: %(default)s; port 0 = any free port)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=int,
        default=16 * 1024 * 1024,
        metavar="N",
        help="drop larger messages; keep it <= the servers' max_message_bytes (default: "
        "%(default)s)",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="on stop, how long to wait for calls in flight (default: %(default)s)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="do not log servers joining and leaving"
    )


def run_broker(args: argparse.Namespace) -> int:
    """Run the broker until Ctrl+C or SIGTERM; return the exit code."""
    require_pyzmq()
    from srpc_plugins.zmq.broker import Broker

    _log_to_stderr(logging.getLogger("srpc.broker"), args.quiet)
    try:
        broker = Broker(
            args.frontend,
            args.backend,
            max_message_bytes=args.max_message_bytes,
            grace=args.grace,
        )
    except OSError as exc:
        print(f"srpc broker: error: {exc}", file=sys.stderr)
        return 1

    with stop_on_signals(broker.stop):  # installed before the line that says Ctrl+C stops
        print(
            f"srpc broker: clients -> {broker.frontend_endpoint}, "
            f"servers -> {broker.backend_endpoint}; Ctrl+C stops",
            flush=True,
        )
        broker.serve()
    print("srpc broker: stopped", flush=True)
    return 0


def _log_to_stderr(logger: logging.Logger, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("srpc broker: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


__all__ = [
    "BROKER_DESCRIPTION",
    "BROKER_EPILOG",
    "INSTALL_HINT",
    "MAX_WORKERS",
    "MIB",
    "OPTIONS",
    "ZmqOptions",
    "ZmqTransport",
    "configure_broker_parser",
    "require_pyzmq",
    "run_broker",
    "srpc_register_commands",
    "srpc_register_transports",
]
