"""srpc: a small, pluggable Python RPC toolkit.

An ABC is the interface; ``python -m srpc_core.tools.srpc_stub_gen pkg/pkg_interface.py``
writes a server stub and a client stub from it; exceptions come back as themselves. Transports
and codecs are plugins (see `srpc_core.hookspecs` and docs/plugins.md).
"""

from srpc_core.client import Client
from srpc_core.codec import Codec
from srpc_core.config import Config, load_config
from srpc_core.errors import (
    CallTimeoutError,
    ConfigError,
    DecodeError,
    EncodeError,
    FrameTooLargeError,
    MismatchError,
    MissingDependencyError,
    PluginConflictError,
    PluginError,
    ProtocolError,
    RemoteError,
    ServerUnavailableError,
    SrpcError,
    TransportError,
    UnknownProcedureError,
)
from srpc_core.hookspecs import hookimpl
from srpc_core.observer import CallObserver, ServerInfo
from srpc_core.server import Server
from srpc_core.transport import Channel, Handler, Listener, Transport, TransportSettings
from srpc_core.version import __version__

__all__ = [
    "CallObserver",
    "CallTimeoutError",
    "Channel",
    "Client",
    "Codec",
    "Config",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "FrameTooLargeError",
    "Handler",
    "Listener",
    "MismatchError",
    "MissingDependencyError",
    "PluginConflictError",
    "PluginError",
    "ProtocolError",
    "RemoteError",
    "Server",
    "ServerInfo",
    "ServerUnavailableError",
    "SrpcError",
    "Transport",
    "TransportError",
    "TransportSettings",
    "UnknownProcedureError",
    "__version__",
    "hookimpl",
    "load_config",
]
