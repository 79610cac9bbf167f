"""Reading a service interface: the procedures an ABC declares and their signatures.

The interface is the allow-list: only its public abstract methods can be called remotely.
"""

from __future__ import annotations

import inspect
from abc import ABCMeta
from dataclasses import dataclass
from typing import Any

from srpc_core.errors import SrpcError

_SIMPLE_KINDS = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class InterfaceError(SrpcError, TypeError):
    """A class cannot serve as an srpc interface."""


@dataclass(frozen=True)
class Procedure:
    """One remotely callable method of an interface."""

    name: str
    signature: inspect.Signature  # without `self`
    doc: str | None
    # For the argument check's fast path: positional-only calls to simple signatures.
    min_positional: int
    max_positional: int
    simple: bool

    def check_arguments(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> None:
        """Raise `TypeError` if args/kwargs do not fit the signature."""
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
    """Read the procedures of `interface`, an ABC with public abstract methods."""
    if not isinstance(interface, ABCMeta):
        raise InterfaceError(
            f"{interface!r} is not an abstract base class: derive it from abc.ABC and mark its "
            "methods with @abstractmethod"
        )
    abstract: frozenset[str] = getattr(interface, "__abstractmethods__", frozenset())
    procedures: dict[str, Procedure] = {}
    for name in _definition_order(interface):
        if name in abstract and not name.startswith("_"):
            function = getattr(interface, name)
            if callable(function):
                procedures[name] = _read_procedure(name, function)
    if not procedures:
        raise InterfaceError(
            f"{interface.__qualname__} declares no public @abstractmethod methods, so it has "
            "nothing to serve"
        )
    return Service(interface, procedures)


def _definition_order(cls: type) -> list[str]:
    names: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        names.update(dict.fromkeys(vars(klass)))
    return list(names)


def _read_procedure(name: str, function: Any) -> Procedure:
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    signature = signature.replace(parameters=parameters)
    simple = all(p.kind in _SIMPLE_KINDS for p in parameters)
    required = sum(1 for p in parameters if p.default is inspect.Parameter.empty)
    return Procedure(
        name=name,
        signature=signature,
        doc=inspect.getdoc(function),
        min_positional=required,
        max_positional=len(parameters),
        simple=simple,
    )
