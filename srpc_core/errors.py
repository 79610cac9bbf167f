"""Exceptions raised by srpc itself, and the family of `RemoteError` classes.

Every srpc failure derives from `SrpcError` and also from the built-in exception a Python
programmer would reach for (`ConfigError` is a `ValueError`, `CallTimeoutError` is a
`TimeoutError`, ...), so code can catch either.
"""

from __future__ import annotations

import builtins
import threading
from collections import OrderedDict
from dataclasses import dataclass


class SrpcError(Exception):
    """Base class of every error srpc raises on its own account."""


class ConfigError(SrpcError, ValueError):
    """`srpc.toml` (or an argument standing in for it) is invalid."""


class PluginError(SrpcError):
    """A plugin could not be loaded or misbehaves."""


class PluginConflictError(PluginError):
    """Two plugins offer the same transport or codec name."""


class MissingDependencyError(SrpcError, ImportError):
    """A plugin needs an optional dependency that is not installed."""


class InterfaceError(SrpcError, TypeError):
    """A class cannot serve as an srpc interface."""


class StubGenError(SrpcError):
    """The interface cannot be turned into stubs; the message says why and what to do."""


class CommunicationError(SrpcError):
    """Talking to the peer failed: base of every network-level failure of a call."""


class TransportError(CommunicationError, ConnectionError):
    """The connection to the peer failed or broke."""


class ServerUnavailableError(TransportError):
    """No srpc server answered at the configured address."""


class AuthenticationError(CommunicationError, PermissionError):
    """The peer failed the shared-secret authentication (``[srpc.auth]``), or a message did
    not verify under the session's key: nothing was run for it (docs/security.md)."""


class CallTimeoutError(CommunicationError, TimeoutError):
    """The peer did not answer within the configured timeout (the call's deadline passed)."""


class ProtocolError(SrpcError):
    """The peer sent bytes that do not follow the srpc protocol."""


class MismatchError(ProtocolError):
    """Client and server disagree on protocol version, codec, transport or service."""


class SessionError(ProtocolError):
    """The server did not recognise the request's session: it ran nothing (say hello first)."""


class FrameTooLargeError(ProtocolError, ValueError):
    """A message is larger than `max_message_bytes`."""


class OversizedFrameError(FrameTooLargeError):
    """The peer announced a message longer than we accept; its body was not read.

    Attributes:
        size: the announced length.
        header: the raw length prefix, which lets a transport recognise a foreign protocol
            (a ZeroMQ greeting starts with 0xFF, an HTTP response with ``HTTP``).
    """

    def __init__(self, size: int, header: bytes) -> None:
        super().__init__(f"a {size}-byte message exceeds max_message_bytes")
        self.size = size
        self.header = header


class CodecError(SrpcError):
    """Base class of codec failures."""


class EncodeError(CodecError, TypeError):
    """The codec cannot carry a value (its type is named in the message)."""


class DecodeError(CodecError, ValueError):
    """The bytes are not a valid message for this codec."""


class UnknownProcedureError(SrpcError, AttributeError):
    """The called procedure is not declared by the service's interface."""


class RemoteError(SrpcError):
    """An exception raised by the server whose class the client may not recreate.

    The client gets a subclass named like the remote class that also derives from the nearest
    built-in base of the remote class, so `except ValueError` still catches a remote
    `class Boom(ValueError)`.

    Attributes:
        remote_type: the remote class name, e.g. ``"Boom"``.
        remote_module: the module the remote class was defined in.
        remote_traceback: the server's formatted traceback, or None unless the server's
            config sets ``send_tracebacks = true``.
    """

    remote_type: str = "RemoteError"
    remote_module: str = ""
    remote_traceback: str | None = None

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nRemote traceback:\n" + self.remote_traceback
        return text


#: At most this many `RemoteError` subclasses are kept (least recently used go first): a server
#: naming 20,000 different classes must not grow a client without bound.
REMOTE_CLASS_CACHE_SIZE = 256
#: Built-in bases a `RemoteError` stand-in never derives from: raising them changes control flow
#: (a `StopIteration` escaping into `map()` or a generator ends it silently).
_NEVER_A_BASE: tuple[type[BaseException], ...] = (
    StopIteration,
    StopAsyncIteration,
    BaseExceptionGroup,
)
_remote_classes: OrderedDict[tuple[str, str, str], type[RemoteError]] = OrderedDict()
_remote_classes_lock = threading.Lock()


def builtin_exception(name: str) -> type[BaseException] | None:
    """Return the built-in exception class called `name`, or None."""
    candidate = getattr(builtins, name, None) if type(name) is str else None
    if isinstance(candidate, type) and issubclass(candidate, BaseException):
        return candidate
    return None


def remote_error_class(name: str, module: str, base: str) -> type[RemoteError]:
    """Return a `RemoteError` subclass standing in for a remote exception class.

    `base` names the nearest built-in base of the remote class; it is only honoured when it is a
    built-in `Exception` subclass that does not steer control flow: never `SystemExit`,
    `KeyboardInterrupt`, `GeneratorExit` (not `Exception` subclasses), `StopIteration`,
    `StopAsyncIteration` or an exception group. The classes are cached, least recently used
    first out, up to `REMOTE_CLASS_CACHE_SIZE` of them: the same remote name normally gives the
    same class, but catch them by `RemoteError`, a built-in base or `remote_type`, never by
    identity.
    """
    key = (name, module, base)
    with _remote_classes_lock:
        cls = _remote_classes.get(key)
        if cls is not None:
            _remote_classes.move_to_end(key)
            return cls
        cls = _build_remote_error_class(name, module, base)
        _remote_classes[key] = cls
        while len(_remote_classes) > REMOTE_CLASS_CACHE_SIZE:
            _remote_classes.popitem(last=False)
        return cls


def _build_remote_error_class(name: str, module: str, base: str) -> type[RemoteError]:
    namespace = {"remote_type": name, "remote_module": module, "__module__": "srpc_core.remote"}
    builtin_base = builtin_exception(base)
    identifier = name if name.isidentifier() else "RemoteError"
    if (
        builtin_base is not None
        and issubclass(builtin_base, Exception)
        and not issubclass(builtin_base, _NEVER_A_BASE)
    ):
        try:
            cls = type(identifier, (RemoteError, builtin_base), namespace)
            cls("a message")  # built-ins such as UnicodeDecodeError need more arguments
            return cls
        except Exception:  # a built-in whose C layout or constructor cannot be mixed in
            pass
    return type(identifier, (RemoteError,), namespace)


@dataclass(frozen=True)
class ErrorContext:
    """Passed to `srpc_error_to_wire` and `srpc_error_from_wire`.

    Attributes:
        interface: the service's interface class; its module is the allow-list of exception
            classes that are recreated as themselves in the client.
        send_tracebacks: whether the server may include the remote traceback.
    """

    interface: type
    send_tracebacks: bool = False


__all__ = [
    "REMOTE_CLASS_CACHE_SIZE",
    "AuthenticationError",
    "CallTimeoutError",
    "CodecError",
    "CommunicationError",
    "ConfigError",
    "DecodeError",
    "EncodeError",
    "ErrorContext",
    "FrameTooLargeError",
    "InterfaceError",
    "MismatchError",
    "MissingDependencyError",
    "OversizedFrameError",
    "PluginConflictError",
    "PluginError",
    "ProtocolError",
    "RemoteError",
    "ServerUnavailableError",
    "SessionError",
    "SrpcError",
    "StubGenError",
    "TransportError",
    "UnknownProcedureError",
    "builtin_exception",
    "remote_error_class",
]
