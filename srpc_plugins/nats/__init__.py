"""The ``nats`` transport: srpc calls as NATS requests, servers of a service in one queue group.

Select it with ``transport = "nats"`` in srpc.toml on both sides; the stubs stay the same. It
needs the ``srpclib[nats]`` extra (nats-py). This module imports without nats-py, so
``srpc plugins`` always lists it; nats-py is imported only when the transport is built.

Every call is one NATS request on the service's subject (``srpc.<InterfaceName>`` unless
``subject`` says otherwise); every server of the service subscribes to it in the queue group
``srpc``, so NATS hands each call to one of them. ``[srpc] host`` and ``port`` do not apply: the
NATS servers are named by ``servers``. docs/nats.md is the user's guide.

Options (``[srpc.nats]``): see `OPTIONS`.

The package: this module (options, the transport, the hook; importable without nats-py),
`_loop` (the process's background asyncio loop, fork-safe), `_connect` (connecting to NATS,
credentials and TLS, the clients' shared connections), `channel` (the sync client side),
`_intake` (the server's queue subscription with flow control and draining, shared by both
server sides), `listener` (the threaded server side) and `aio` (the native async side: the
async client's channel and the asyncio server's listener, on the caller's event loop).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from srpc_core.errors import ConfigError, MissingDependencyError
from srpc_core.hookspecs import RegisterTransport, hookimpl
from srpc_core.options import Option, PluginOptions
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

INSTALL_HINT = "pip install 'srpclib[nats]'"
#: The queue group every server of a service joins (NATS scopes it to the subject).
QUEUE_GROUP = "srpc"
#: The subject of a service without ``subject`` set: ``srpc.<InterfaceName>``.
SUBJECT_PREFIX = "srpc."
MAX_CONCURRENT = 1024
_URL_SCHEMES = ("nats://", "tls://", "ws://", "wss://")
#: Keys that would put a secret in srpc.toml itself, and what to use instead.
_LITERAL_SECRETS = {
    "token": "token_env",
    "password": "password_env",
    "user": "user_env",
    "nkey_seed": "nkey_seed_file",
    "creds": "creds_file",
}


def _valid_subject(subject: str) -> bool:
    """A NATS subject a service can be published to: dot-separated tokens, no wildcards."""
    if subject == "":
        return True  # the default: srpc.<InterfaceName>
    tokens = subject.split(".")
    return all(
        token and token not in ("*", ">") and not any(c.isspace() for c in token)
        for token in tokens
    )


def _valid_servers(servers: list[str]) -> bool:
    return bool(servers) and all(s.startswith(_URL_SCHEMES) and len(s) > 7 for s in servers)


def _valid_env_name(name: str) -> bool:
    return name == "" or (name.replace("_", "a").isalnum() and not name[0].isdigit())


#: The ``[srpc.nats]`` table.
OPTIONS = {
    "servers": Option(
        list[str],
        default=["nats://127.0.0.1:4222"],
        check=_valid_servers,
        expected='a non-empty list of NATS URLs such as ["nats://127.0.0.1:4222"] '
        "(schemes nats, tls, ws, wss)",
    ),
    "subject": Option(
        str,
        default="",
        check=_valid_subject,
        expected='a NATS subject without wildcards such as "srpc.Calc", or "" for '
        "srpc.<InterfaceName>",
    ),
    "max_concurrent": Option(
        int,
        default=16,
        minimum=1,
        maximum=MAX_CONCURRENT,
        help="calls one server runs at once",
    ),
    "flow_control": Option(
        bool,
        default=True,
        help="servers with free slots get more of the calls; see docs/nats.md",
    ),
    "creds_file": Option(str, default="", help="a NATS credentials file (JWT and nkey seed)"),
    "nkey_seed_file": Option(str, default="", help="a file holding an nkey seed"),
    "token_env": Option(
        str,
        default="",
        check=_valid_env_name,
        help="the environment variable that holds the token",
    ),
    "user_env": Option(
        str,
        default="",
        check=_valid_env_name,
        help="the environment variable that holds the user name",
    ),
    "password_env": Option(
        str,
        default="",
        check=_valid_env_name,
        help="the environment variable that holds the password",
    ),
    "tls_ca": Option(str, default="", help="a PEM file of the CAs that verify the NATS server"),
    "tls_cert": Option(str, default="", help="this side's PEM certificate (mutual TLS)"),
    "tls_key": Option(str, default="", help="the private key of tls_cert"),
}


def require_nats() -> None:
    """Raise `MissingDependencyError` naming the extra when nats-py is not installed."""
    try:
        import nats  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"transport 'nats' needs nats-py, which is not installed: {INSTALL_HINT}"
        ) from None


@dataclass(frozen=True)
class NatsOptions:
    """The ``[srpc.nats]`` table, checked, with secrets read from the environment.

    `connection_key` identifies what a NATS connection is made with: clients in one process
    with the same key share one connection.
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    subject: str = ""
    max_concurrent: int = 16
    flow_control: bool = True
    creds_file: str = ""
    nkey_seed_file: str = ""
    token: str = field(default="", repr=False)
    user: str = ""
    password: str = field(default="", repr=False)
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> NatsOptions:
        """Check `options`; raise `ConfigError` naming the file, ``[srpc.nats]``, the key and
        what is valid."""
        table = PluginOptions.wrap(options, "nats")
        for key, instead in _LITERAL_SECRETS.items():
            if key in table:
                raise ConfigError(
                    f"{_where(table)}[{table.table}] {key} is refused: secrets do not belong in "
                    f"srpc.toml (it is often committed or readable by others); use {instead} "
                    "instead"
                )
        values = table.check(OPTIONS)
        auth = [k for k in ("creds_file", "nkey_seed_file", "token_env", "user_env") if values[k]]
        if len(auth) > 1:
            raise table.invalid(
                auth[1], f"one way to authenticate, not both {auth[0]} and {auth[1]}"
            )
        if bool(values["user_env"]) != bool(values["password_env"]):
            given = "user_env" if values["user_env"] else "password_env"
            raise table.invalid(given, "user_env and password_env together")
        if bool(values["tls_cert"]) != bool(values["tls_key"]):
            given = "tls_cert" if values["tls_cert"] else "tls_key"
            raise table.invalid(given, "tls_cert and tls_key together")
        for key in ("creds_file", "nkey_seed_file", "tls_ca", "tls_cert", "tls_key"):
            path = values[key]
            if path and not os.path.isfile(path):
                raise table.invalid(key, f"a readable file ({path!r} does not exist)")
        secrets = {}
        for key in ("token_env", "user_env", "password_env"):
            name = values[key]
            if name:
                secret = os.environ.get(name, "")
                if not secret:
                    raise table.invalid(
                        key, f"the name of a set, non-empty environment variable ({name} is not)"
                    )
                secrets[key.removesuffix("_env")] = secret
        return cls(
            servers=tuple(values["servers"]),
            subject=values["subject"],
            max_concurrent=values["max_concurrent"],
            flow_control=values["flow_control"],
            creds_file=values["creds_file"],
            nkey_seed_file=values["nkey_seed_file"],
            token=secrets.get("token", ""),
            user=secrets.get("user", ""),
            password=secrets.get("password", ""),
            tls_ca=values["tls_ca"],
            tls_cert=values["tls_cert"],
            tls_key=values["tls_key"],
        )

    @property
    def connection_key(self) -> tuple[Any, ...]:
        """What makes two connections interchangeable (servers, credentials, TLS)."""
        return (
            self.servers,
            self.creds_file,
            self.nkey_seed_file,
            self.token,
            self.user,
            self.password,
            self.tls_ca,
            self.tls_cert,
            self.tls_key,
        )

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for nats-py, or None when no TLS option is set."""
        if not (self.tls_ca or self.tls_cert):
            return None
        try:
            context = ssl.create_default_context(cafile=self.tls_ca or None)
            if self.tls_cert:
                context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"[srpc.nats] tls_ca/tls_cert/tls_key cannot be loaded: {exc}"
            ) from None
        return context

    def connect_arguments(self) -> dict[str, Any]:
        """The credentials and TLS keyword arguments of ``nats.connect``."""
        arguments: dict[str, Any] = {}
        if self.creds_file:
            arguments["user_credentials"] = self.creds_file
        if self.nkey_seed_file:
            arguments["nkeys_seed"] = self.nkey_seed_file
        if self.token:
            arguments["token"] = self.token
        if self.user:
            arguments["user"] = self.user
            arguments["password"] = self.password
        context = self.tls_context()
        if context is not None:
            arguments["tls"] = context
        return arguments


def _where(table: PluginOptions) -> str:
    return f"{table.source}: " if table.source and table.source != "defaults" else ""


class NatsTransport(Transport):
    """NATS request/reply: a subject per service, its servers in one queue group."""

    name: ClassVar[str] = "nats"
    requires: ClassVar[dict[str, str]] = {"nats": INSTALL_HINT}

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        self.options = NatsOptions.parse(settings.options)
        require_nats()
        self.options.tls_context()  # a bad certificate is an error now, not at the first call

    def subject(self, service: str) -> str:
        """The subject of `service`: ``[srpc.nats] subject``, else ``srpc.<service>``."""
        if self.options.subject:
            return self.options.subject
        if not service:
            raise ConfigError(
                "transport 'nats' routes calls by service, and none was named: set "
                "[srpc.nats] subject, or call through a stub or srpc_core.Client"
            )
        return SUBJECT_PREFIX + service

    def url(self, host: str, port: int) -> str:
        first = self.options.servers[0]
        return f"{first}/{self.options.subject}" if self.options.subject else first

    def open_channel(self, endpoint: Endpoint, timeout: float) -> Channel:
        from srpc_plugins.nats.channel import NatsChannel

        return NatsChannel.open(self, self.subject(endpoint.service), timeout)

    def bind(self, endpoint: Endpoint, handler: Handler) -> Listener:
        from srpc_plugins.nats.listener import NatsListener

        return NatsListener(self, self.subject(endpoint.service), handler)

    async def open_async_channel(self, endpoint: Endpoint, timeout: float) -> AsyncChannel:
        """A channel on the running event loop, with a NATS connection of its own (`aio`)."""
        from srpc_plugins.nats.aio import AsyncNatsChannel

        return await AsyncNatsChannel.open(self, self.subject(endpoint.service), timeout)

    async def bind_async(self, endpoint: Endpoint, on_connection: OnConnection) -> AsyncListener:
        """The asyncio server's listener: each request is a connection of one message (`aio`)."""
        from srpc_plugins.nats.aio import AsyncNatsListener

        return await AsyncNatsListener.bind(self, self.subject(endpoint.service), on_connection)

    def connect(self, host: str, port: int, timeout: float) -> Channel:
        """A channel to ``[srpc.nats] subject`` (host and port do not apply)."""
        return self.open_channel(Endpoint(host, port), timeout)

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        """A listener on ``[srpc.nats] subject`` (host and port do not apply)."""
        return self.bind(Endpoint(host, port), handler)


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``nats``."""
    register("nats", NatsTransport)


__all__ = [
    "INSTALL_HINT",
    "OPTIONS",
    "QUEUE_GROUP",
    "NatsOptions",
    "NatsTransport",
    "require_nats",
    "srpc_register_transports",
]
