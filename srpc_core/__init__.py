"""srpc: a small, pluggable Python RPC toolkit.

An ABC is the interface; ``python -m srpc_core.tools.srpc_stub_gen pkg/pkg_interface.py``
writes a server stub and a client stub from it; exceptions come back as themselves. Transports
and codecs are plugins (see `srpc_core.hookspecs` and docs/plugins.md).

Everything users and plugin authors need is importable from here. Modules written for plugin
authors (`srpc_core.streams`, `srpc_core.listeners`, `srpc_core.options`,
`srpc_core.testing`, `srpc_core.hookspecs`) are public too; every other module is internal and
may change between releases.
"""

from srpc_core.async_client import AsyncClient
from srpc_core.client import Client
from srpc_core.codec import Codec
from srpc_core.config import Config, load_config
from srpc_core.errors import (
    AuthenticationError,
    CallTimeoutError,
    CodecError,
    CommunicationError,
    ConfigError,
    DecodeError,
    EncodeError,
    ErrorContext,
    FrameTooLargeError,
    InterfaceError,
    MismatchError,
    MissingDependencyError,
    OversizedFrameError,
    PluginConflictError,
    PluginError,
    ProtocolError,
    RemoteError,
    ServerUnavailableError,
    SessionError,
    SrpcError,
    StubGenError,
    TransportError,
    UnknownProcedureError,
)
from srpc_core.hookspecs import hookimpl
from srpc_core.interface import idempotent
from srpc_core.observer import CallObserver, ServerInfo
from srpc_core.options import Option, PluginOptions
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.protocol import WireError
from srpc_core.server import Server
from srpc_core.transport import (
    Channel,
    Endpoint,
    Handler,
    Listener,
    Transport,
    TransportSettings,
)
from srpc_core.version import __version__

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "CallObserver",
    "CallTimeoutError",
    "Channel",
    "Client",
    "Codec",
    "CodecError",
    "CommunicationError",
    "Config",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "Endpoint",
    "ErrorContext",
    "FrameTooLargeError",
    "Handler",
    "InterfaceError",
    "Listener",
    "MismatchError",
    "MissingDependencyError",
    "Option",
    "OversizedFrameError",
    "PluginConflictError",
    "PluginError",
    "PluginOptions",
    "Plugins",
    "ProtocolError",
    "RemoteError",
    "Server",
    "ServerInfo",
    "ServerUnavailableError",
    "SessionError",
    "SrpcError",
    "StubGenError",
    "Transport",
    "TransportError",
    "TransportSettings",
    "UnknownProcedureError",
    "WireError",
    "__version__",
    "get_plugins",
    "hookimpl",
    "idempotent",
    "load_config",
]
