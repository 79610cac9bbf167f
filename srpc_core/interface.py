"""Reading a service interface: the procedures an ABC declares and their signatures.

The interface is the allow-list: only its public abstract methods (declared in the class or
inherited from a base interface) can be called remotely. Private (``_name``) and dunder methods,
and concrete helper methods, are never procedures.
"""

from __future__ import annotations

import hashlib
import inspect
import typing
from abc import ABCMeta
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FunctionType
from typing import Any, TypeVar

from srpc_core.errors import InterfaceError

_SIMPLE_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_IDEMPOTENT_MARK = "__srpc_idempotent__"
_F = TypeVar("_F", bound=Callable[..., Any])


def idempotent(method: _F) -> _F:
    """Mark an interface method as safe to run more than once.

    srpc runs a call at most once: when a connection breaks after the request was sent, the
    caller gets a `TransportError` saying the outcome is unknown. For a procedure marked
    ``@srpc_core.idempotent`` (above or below ``@abstractmethod``), the client sends it again
    instead, with backoff, until the call's deadline.
    """
    setattr(method, _IDEMPOTENT_MARK, True)
    return method


@dataclass(frozen=True)
class Procedure:
    """One remotely callable method of an interface.

    Attributes:
        name: the method name.
        signature: the method's signature without its ``self`` parameter.
        doc: the method's docstring (cleaned), or None.
        min_positional, max_positional, simple: the argument check's fast path: a call with
            only positional arguments to a `simple` signature (no ``*``, ``**`` or keyword-only
            parameters) fits when it has between `min_positional` and `max_positional` of them.
        idempotent: whether the interface marks it ``@srpc_core.idempotent``.
        fingerprint: a digest of the name, parameters (names, kinds, defaults, annotations)
            and return annotation; client and server compare them to detect interface drift.
        function: the interface's method (for `type_hints`), or None.
    """

    name: str
    signature: inspect.Signature
    doc: str | None
    min_positional: int
    max_positional: int
    simple: bool
    idempotent: bool = False
    fingerprint: str = ""
    function: Any = field(default=None, compare=False, repr=False)

    def type_hints(self) -> dict[str, Any]:
        """The resolved annotations of the parameters and ``return`` (``Annotated`` kept).

        Raises `InterfaceError` naming the procedure when an annotation does not resolve (a
        name imported only under ``TYPE_CHECKING``, a typo in a string annotation).
        """
        if self.function is None:
            return {}
        try:
            return typing.get_type_hints(self.function, include_extras=True)
        except Exception as exc:
            raise InterfaceError(
                f"{self.name}(): an annotation of {self.name}{self.signature} does not "
                f"resolve ({type(exc).__name__}: {exc}); srpc converts values by the "
                "annotations, so every name they use must be importable from the interface's "
                "module at run time"
            ) from None

    @property
    def signature_text(self) -> str:
        """The procedure as written, e.g. ``add(a: float, b: float) -> float``."""
        return f"{self.name}{_canonical_signature(self.signature)}"

    def check_arguments(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> None:
        """Raise `TypeError` if `args` and `kwargs` do not fit the signature."""
        if self.simple and not kwargs and self.min_positional <= len(args) <= self.max_positional:
            return
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}{self.signature}: {exc}") from None


@dataclass(frozen=True)
class Service:
    """An interface class read for srpc."""

    interface: type
    procedures: dict[str, Procedure]

    @property
    def name(self) -> str:
        """The interface's class name, e.g. ``CalcInterface`` (checked in the handshake)."""
        return self.interface.__qualname__

    @property
    def dotted_name(self) -> str:
        """The interface's full name, e.g. ``calc.calc_interface.CalcInterface``."""
        return f"{self.interface.__module__}.{self.interface.__qualname__}"


def read_interface(interface: type) -> Service:
    """Read the procedures of `interface`, an ABC with public abstract methods.

    Raises `InterfaceError` if `interface` is not an ABC, declares no public abstract method,
    or declares one srpc cannot call (a property, a static or class method, an async method).
    """
    if not isinstance(interface, ABCMeta):
        raise InterfaceError(
            f"{_describe(interface)} is not an abstract base class: derive it from abc.ABC and "
            "mark its methods with @abstractmethod"
        )
    procedures = {
        name: _read_procedure(interface, name) for name in public_abstract_names(interface)
    }
    if not procedures:
        raise InterfaceError(
            f"{interface.__qualname__} declares no public @abstractmethod methods, so it has "
            "nothing to serve"
        )
    return Service(interface, procedures)


def public_abstract_names(interface: type) -> list[str]:
    """The public abstract attribute names of `interface`, base classes' first."""
    abstract: frozenset[str] = getattr(interface, "__abstractmethods__", frozenset())
    return [name for name in _definition_order(interface) if name in abstract and _public(name)]


def private_abstract_names(interface: type) -> list[str]:
    """The abstract attribute names of `interface` that are private or dunder."""
    abstract: frozenset[str] = getattr(interface, "__abstractmethods__", frozenset())
    return [name for name in _definition_order(interface) if name in abstract and not _public(name)]


def _public(name: str) -> bool:
    return not name.startswith("_")


def _describe(interface: object) -> str:
    name = getattr(interface, "__qualname__", None)
    return f"class {name}" if isinstance(interface, type) and name else repr(interface)


def _definition_order(cls: type) -> list[str]:
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        names.update(dict.fromkeys(vars(klass)))
    return list(names)


def _read_procedure(interface: type, name: str) -> Procedure:
    function = _plain_method(interface, name)
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in _SIMPLE_KINDS:
        raise InterfaceError(
            f"{interface.__qualname__}.{name}{signature} has no `self` parameter: srpc "
            "procedures are methods, def name(self, ...)"
        )
    parameters = parameters[1:]
    simple = all(p.kind in _SIMPLE_KINDS for p in parameters)
    required = sum(1 for p in parameters if p.default is inspect.Parameter.empty)
    return Procedure(
        name=name,
        signature=signature.replace(parameters=parameters),
        doc=inspect.getdoc(function),
        idempotent=bool(getattr(function, _IDEMPOTENT_MARK, False)),
        fingerprint=_fingerprint(name, signature.replace(parameters=parameters), function),
        function=function,
        min_positional=required,
        max_positional=len(parameters),
        simple=simple,
    )


def _plain_method(interface: type, name: str) -> Any:
    """The function behind `interface.name`; `InterfaceError` if it is not a plain method."""
    static = inspect.getattr_static(interface, name)
    where = f"{interface.__qualname__}.{name}"
    if not isinstance(static, FunctionType):
        kind = type(static).__name__
        raise InterfaceError(
            f"{where} is a {kind}, not a plain method: srpc procedures are methods declared "
            "with def name(self, ...) under @abstractmethod"
        )
    if inspect.iscoroutinefunction(static) or inspect.isasyncgenfunction(static):
        raise InterfaceError(
            f"{where} is an async method: srpc procedures are plain (synchronous) methods; "
            "declare it with def, not async def"
        )
    return static


def _fingerprint(name: str, signature: inspect.Signature, function: Any) -> str:
    """A digest of everything about a procedure that client and server must agree on."""
    text = f"{name}{_canonical_signature(signature, function)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _canonical_signature(signature: inspect.Signature, function: Any = None) -> str:
    """The signature with annotations resolved where possible, so that an interface written
    with ``from __future__ import annotations`` and one without give the same text."""
    hints = _type_hints(function) if function is not None else {}
    parameters = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]
    return_annotation = hints.get("return", signature.return_annotation)
    resolved = signature.replace(parameters=parameters, return_annotation=return_annotation)
    return str(resolved)


def _type_hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation that does not resolve here: keep it as written
        return {}


__all__ = [
    "Procedure",
    "Service",
    "idempotent",
    "private_abstract_names",
    "public_abstract_names",
    "read_interface",
]
