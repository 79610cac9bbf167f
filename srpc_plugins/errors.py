"""The default error mapper: exceptions to the wire and back.

To the wire: class name, module, message, args, instance attributes, the nearest built-in base,
and the traceback only when the server allows it. Back: the interface is the allow-list.
Built-in exceptions, srpc's own errors and exception classes defined in (or imported into) the
interface's module come back as themselves, with their args and attributes; anything else
becomes a `RemoteError` subclass named like the remote class that also derives from its nearest
built-in base. Nothing is imported or evaluated.

The error map (`WireError`) this mapper writes::

    {"type": "OutOfStock", "module": "shop.shop_interface", "message": "...", "args": [...],
     "base": "Exception", "traceback": null, "attributes": {"name": "widget", "available": 2}}

``attributes`` (optional; absent or ``{}`` when there are none) maps attribute names to values:
the exception's plain instance attributes (its ``__dict__``) whose names do not start with
``_``, each in the codec-neutral form `msgspec.to_builtins` gives it (a dataclass becomes a map,
bytes base64 text, a datetime ISO text, a set a list...), so that every codec can carry the
error. Attributes that cannot be written that way are left out.

Limits (a server bounds what it sends; a client never trusts that it did):

* ``message`` is cut to `MAX_MESSAGE_CHARS` characters with a ``[... N characters cut]``
  marker; ``traceback`` (only with ``send_tracebacks = true``) keeps the first and the last
  halves of `MAX_TRACEBACK_CHARS` characters; lone surrogates become ``\\udcxx`` escapes,
  so the response always encodes (and the failed call is still counted in the metrics).
* ``args`` whose JSON form exceeds `MAX_ARGS_BYTES`, or that hold text that cannot be encoded,
  travel as ``[message]``; ``attributes`` keep at most `MAX_ATTRIBUTES` entries within
  `MAX_ATTRIBUTES_BYTES`.

Back in the client, for a class on the allow-list:

1. ``cls(*args)``, as a plain call of the class's own constructor (never for a class whose
   metaclass overrides ``__call__``). When it refuses the args (a class such as
   ``OutOfStock(name, wanted, available)`` whose ``__init__`` passes one formatted message to
   ``super().__init__``, so its ``args`` differ from its parameters), the exception is made with
   ``cls.__new__(cls)`` and ``BaseException.__init__(exc, *args)``, and no ``__init__`` runs.
2. ``exc.args`` is set to the server's args either way (an ``__init__`` that accepts the args
   but formats them anew does not change them).
3. Each attribute is stored in the instance (``object.__setattr__``, so no ``__setattr__`` of
   the class runs) when its name is an identifier not starting with ``_`` and the class
   (``inspect.getattr_static``) defines nothing under that name that is a descriptor (a
   property, a method, a slot): only plain instance attributes. A value is
   converted to the class's annotation for that name with ``msgspec.convert`` where there is
   one, and set as it came when there is none or it does not fit.

So such a class round-trips: ``args``, ``str(e)`` and every carried attribute are the server's,
and ``except OutOfStock as e: e.available`` works. Classes deriving from `StopIteration`,
`StopAsyncIteration` or an exception group, and everything that is not an `Exception`
(`SystemExit`, `KeyboardInterrupt`, `GeneratorExit`), are never recreated: they come back as
`RemoteError` subclasses deriving from `Exception` alone, so a ``map()`` over a stub cannot
stop early and a server cannot make a client exit.
"""

from __future__ import annotations

import functools
import inspect
import sys
import traceback
import typing
from collections.abc import Mapping
from typing import Any, cast

import msgspec

import srpc_core.errors as srpc_errors
from srpc_core.errors import ErrorContext, RemoteError, builtin_exception, remote_error_class
from srpc_core.hookspecs import hookimpl
from srpc_core.protocol import WireError

#: ``message`` is cut to this many characters (with a marker saying how many were cut).
MAX_MESSAGE_CHARS = 64 * 1024
#: A longer traceback keeps its first and last halves of this many characters.
MAX_TRACEBACK_CHARS = 64 * 1024
#: ``args`` larger than this (as JSON) travel as ``[message]``.
MAX_ARGS_BYTES = 64 * 1024
#: At most this many args are used by the client; more make it fall back to ``[message]``.
MAX_ARGS = 64
#: At most this many attributes travel, within this many bytes (as JSON) in all.
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTES_BYTES = 64 * 1024
#: Class names, module names and attribute names longer than this are not trusted.
MAX_NAME_CHARS = 256

#: Built-in classes that are never recreated: raising them from a call changes control flow.
_NEVER_RECREATED: tuple[type[BaseException], ...] = (
    StopIteration,
    StopAsyncIteration,
    BaseExceptionGroup,
)


# -- to the wire (server) ----------------------------------------------------------------------


@hookimpl(trylast=True)
def srpc_error_to_wire(error: BaseException, context: ErrorContext) -> WireError:
    """Describe `error` for the wire. Never raises, and the result always encodes."""
    try:
        return _to_wire(error, context)
    except Exception:  # a last resort: the caller still gets an answer, the call is counted
        message = "the server could not describe its exception"
        wire = {"type": "Exception", "module": "builtins", "message": message, "args": [message]}
        return cast(WireError, {**wire, "base": "Exception", "traceback": None})


def _to_wire(error: BaseException, context: ErrorContext) -> WireError:
    cls = type(error)
    message = _bounded(_clean(_safe_str(error)), MAX_MESSAGE_CHARS)
    wire: dict[str, Any] = {
        "type": _clean(_safe_attr(cls, "__qualname__")),
        "module": _clean(_safe_attr(cls, "__module__")),
        "message": message,
        "args": _wire_args(error, message),
        "base": _nearest_builtin(cls).__name__,
        "traceback": _wire_traceback(error) if context.send_tracebacks else None,
    }
    attributes = _wire_attributes(error)
    if attributes:
        wire["attributes"] = attributes
    return cast(WireError, wire)


def _wire_args(error: BaseException, message: str) -> list[Any]:
    try:
        args = list(error.args)
    except Exception:
        return [message]
    try:
        size = len(msgspec.json.encode(args))
    except TypeError:  # a type msgspec does not know: the codec decides (protocol.encode_error)
        return args
    except Exception:  # lone surrogates, ...
        return [message]
    return args if size <= MAX_ARGS_BYTES else [message]


def _wire_attributes(error: BaseException) -> dict[str, Any]:
    try:
        items = list(vars(error).items())
    except Exception:
        return {}
    attributes: dict[str, Any] = {}
    budget = MAX_ATTRIBUTES_BYTES
    for name, value in items:
        if len(attributes) >= MAX_ATTRIBUTES:
            break
        if not _settable_name(type(error), name):
            continue
        try:
            wire_value = msgspec.to_builtins(value, str_keys=True)
            budget -= len(msgspec.json.encode(wire_value))  # also refuses lone surrogates
        except Exception:  # not plain data: left out
            continue
        if budget < 0:
            break
        attributes[name] = wire_value
    return attributes


def _wire_traceback(error: BaseException) -> str:
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:
        return "(the traceback could not be formatted)"
    text = _clean(text)
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    half = MAX_TRACEBACK_CHARS // 2  # the outermost frames and the raise point
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut]\n{text[-half:]}"


def _nearest_builtin(cls: type) -> type:
    for klass in cls.__mro__:
        if klass.__module__ == "builtins":
            return klass
    return Exception


def _safe_str(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:
        return f"<{_safe_attr(type(error), '__qualname__')} whose str() failed>"
    return text if type(text) is str else str.__str__(text)


def _safe_attr(cls: type, name: str) -> str:
    value = getattr(cls, name, None)
    return value if isinstance(value, str) else "?"


# -- back from the wire (client) ---------------------------------------------------------------


@hookimpl(trylast=True)
def srpc_error_from_wire(error: WireError, context: ErrorContext) -> BaseException:
    """Rebuild the exception described by `error` (an untrusted map from the server)."""
    try:
        return _from_wire(error, context)
    except Exception:  # a last resort: never a raw failure of the error path
        return RemoteError("the server reported an error the client could not read")


def _from_wire(error: WireError, context: ErrorContext) -> BaseException:
    fields: Mapping[str, object] = error if isinstance(error, Mapping) else {}
    name = _name_field(fields, "type")
    module = _name_field(fields, "module")
    message = _bounded(_clean(_text_field(fields, "message")), MAX_MESSAGE_CHARS)
    raw_args = fields.get("args")
    if type(raw_args) is list and len(raw_args) <= MAX_ARGS:
        args = [_clean(arg) if type(arg) is str else arg for arg in raw_args]
    else:
        args = [message]
    raw_tb = fields.get("traceback")
    remote_tb = _bounded(_clean(raw_tb), MAX_TRACEBACK_CHARS) if type(raw_tb) is str else None
    raw_attributes = fields.get("attributes")
    attributes = raw_attributes if type(raw_attributes) is dict else {}
    cls = _allowed_class(name, module, context.interface)
    exc = _instantiate(cls, args, attributes) if cls is not None else None
    if exc is None:
        remote_cls = remote_error_class(name, module, _name_field(fields, "base", "Exception"))
        remote = remote_cls(message)
        remote.remote_traceback = remote_tb
        return remote
    if remote_tb is not None:
        exc.add_note(f"Remote traceback (from the srpc server):\n{remote_tb}")
    return exc


def _name_field(fields: Mapping[str, object], key: str, default: str = "") -> str:
    value = fields.get(key)
    if type(value) is not str or len(value) > MAX_NAME_CHARS:
        return default
    return _clean(value)


def _text_field(fields: Mapping[str, object], key: str) -> str:
    value = fields.get(key)
    return value if type(value) is str else ""


def _allowed_class(name: str, module: str, interface: type) -> type[Exception] | None:
    """The exception class the client may recreate, or None. Never imports anything."""
    if module == "builtins":
        candidate: Any = builtin_exception(name)
    elif module == srpc_errors.__name__:
        candidate = vars(srpc_errors).get(name)
    else:
        interface_module = sys.modules.get(interface.__module__)
        candidate = vars(interface_module).get(name) if interface_module else None
        if candidate is not None and (
            getattr(candidate, "__module__", None) != module
            or getattr(candidate, "__qualname__", None) != name
        ):
            candidate = None
    if (
        isinstance(candidate, type)
        and issubclass(candidate, Exception)  # never SystemExit, KeyboardInterrupt, ...
        and not issubclass(candidate, _NEVER_RECREATED)
    ):
        return candidate
    return None


def _instantiate(
    cls: type[Exception], args: list[Any], attributes: dict[Any, Any]
) -> BaseException | None:
    """`cls` with the server's args and attributes, or None if it cannot be made safely."""
    exc: BaseException | None = None
    if type(cls).__call__ is type.__call__:  # no metaclass code runs
        try:
            exc = cls(*args)
        except Exception:
            exc = None
    if not isinstance(exc, cls):
        try:
            exc = cls.__new__(cls)
            if not isinstance(exc, cls):
                return None
            BaseException.__init__(exc, *args)
        except Exception:
            return None
    try:
        _SET_ARGS(exc, tuple(args))  # BaseException's own slot, never a property of the class
        _set_attributes(exc, cls, attributes)
        str(exc)  # some classes only fail when shown (wrong args for their __str__)
    except Exception:
        return None
    return exc


def _set_attributes(exc: BaseException, cls: type, attributes: dict[Any, Any]) -> None:
    if not attributes:
        return
    hints = _annotations(cls)
    for count, (name, value) in enumerate(attributes.items()):
        if count >= MAX_ATTRIBUTES:
            break
        if not _settable_name(cls, name):
            continue
        annotation = hints.get(name)
        if annotation is not None:
            try:
                value = msgspec.convert(value, annotation, strict=False)
            except Exception:  # does not fit the annotation: delivered as it came
                pass
        object.__setattr__(exc, name, value)  # the instance's __dict__, no __setattr__ of cls


def _settable_name(cls: type, name: object) -> bool:
    """True for a plain instance attribute name: never private, never a descriptor."""
    if type(name) is not str or not name.isidentifier() or name.startswith("_"):
        return False
    if len(name) > MAX_NAME_CHARS:
        return False
    found = inspect.getattr_static(cls, name, _MISSING)
    if found is _MISSING:
        return True
    kind = type(found)
    return not any(hasattr(kind, hook) for hook in ("__get__", "__set__", "__delete__"))


_MISSING = object()
_SET_ARGS = BaseException.args.__set__  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=256)
def _annotations(cls: type) -> dict[str, Any]:
    """The class's resolved annotations (its own module's names only), or {} if they fail."""
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {}


# -- text ------------------------------------------------------------------------------------


def _clean(text: str) -> str:
    """`text` with lone surrogates escaped, so every codec can encode it."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f" [... {len(text) - limit} characters cut]"


__all__ = ["RemoteError", "srpc_error_from_wire", "srpc_error_to_wire"]
