"""The default error mapper: exceptions to the wire and back.

To the wire: class name, module, message, args, the nearest built-in base, and the traceback
only when the server allows it. Back: the interface is the allow-list. Built-in exceptions,
srpc's own errors and exception classes defined in (or imported into) the interface's module
come back as themselves; anything else becomes a `RemoteError` subclass named like the remote
class that also derives from its nearest built-in base. Nothing is imported or evaluated.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import srpc_core.errors as srpc_errors
from srpc_core.errors import ErrorContext, RemoteError, builtin_exception, remote_error_class
from srpc_core.hookspecs import hookimpl
from srpc_core.protocol import WireError


@hookimpl(trylast=True)
def srpc_error_to_wire(error: BaseException, context: ErrorContext) -> WireError:
    """Describe `error` for the wire."""
    cls = type(error)
    return {
        "type": cls.__qualname__,
        "module": cls.__module__,
        "message": _safe_str(error),
        "args": list(error.args),
        "base": _nearest_builtin(cls).__name__,
        "traceback": "".join(traceback.format_exception(error))
        if context.send_tracebacks
        else None,
    }


@hookimpl(trylast=True)
def srpc_error_from_wire(error: WireError, context: ErrorContext) -> BaseException:
    """Rebuild the exception described by `error`."""
    name, module = str(error.get("type", "")), str(error.get("module", ""))
    message = str(error.get("message", ""))
    args = error.get("args")
    args = list(args) if isinstance(args, list) else [message]
    remote_tb = error.get("traceback")
    cls = _allowed_class(name, module, context.interface)
    exc = _instantiate(cls, args) if cls is not None else None
    if exc is None:
        remote_cls = remote_error_class(name, module, str(error.get("base", "Exception")))
        exc = remote_cls(message)
        exc.remote_traceback = remote_tb if isinstance(remote_tb, str) else None
    elif isinstance(remote_tb, str):
        exc.add_note(f"Remote traceback (from the srpc server):\n{remote_tb}")
    return exc


def _allowed_class(name: str, module: str, interface: type) -> type[BaseException] | None:
    """The exception class the client may recreate, or None. Never imports anything."""
    if module == "builtins":
        candidate: Any = builtin_exception(name)
    elif module == srpc_errors.__name__:
        candidate = getattr(srpc_errors, name, None)
    else:
        interface_module = sys.modules.get(interface.__module__)
        candidate = getattr(interface_module, name, None) if interface_module else None
        if candidate is not None and (
            getattr(candidate, "__module__", None) != module
            or getattr(candidate, "__qualname__", None) != name
        ):
            candidate = None
    if isinstance(candidate, type) and issubclass(candidate, Exception):
        return candidate  # never BaseException-only classes such as SystemExit
    return None


def _instantiate(cls: type[BaseException], args: list[Any]) -> BaseException | None:
    try:
        exc = cls(*args)
        str(exc)  # some classes only fail when shown (wrong args for their __str__)
    except Exception:
        return None
    return exc


def _nearest_builtin(cls: type) -> type:
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            return klass
    return Exception


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__qualname__} whose str() failed>"


__all__ = ["RemoteError", "srpc_error_from_wire", "srpc_error_to_wire"]
