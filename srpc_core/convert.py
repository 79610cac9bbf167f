"""Typed values: converting arguments and results by the interface's annotations.

The interface's annotations are the schema. For each procedure a `ProcedurePlan` is built once
(when a client or server is constructed, and by the stub generator to refuse unknown types
early) and then used on every call:

* the client turns arguments into their wire form (``msgspec.to_builtins``), checking that the
  wire form fits the annotation, and turns the decoded result into the annotated type;
* the server converts and validates arguments (``msgspec.convert``) before the implementation
  runs, and turns the result into its wire form.

msgspec does all the conversion; srpc never walks values itself. The codec decides where
conversion stops: a type the codec carries exactly (cbor carries ``bytes`` and ``datetime``,
json neither) travels as itself (`WireProfile`).

Three rules on top of msgspec's:

* **Numbers** follow PEP 484's numeric tower: where ``float`` is annotated an ``int`` is
  accepted and stays an ``int`` (the plan converts ``float`` as ``int | float``).
* **Sizes**: an ``int`` *argument* (``int`` or an ``int`` accepted for ``float``) must fit in
  64 bits, ``-2**63 <= n <= 2**63 - 1`` (`INT_MIN`, `INT_MAX`); a bigger one is refused before
  the implementation runs, as is a float given as an integer too large for 64 bits. Results are
  not bounded.
* **Results** that do not fit their annotation travel as they are: the server warns once per
  procedure (in its log) and the client delivers the value as it came.

Annotations inside a dataclass, Struct, NamedTuple or TypedDict are that class's own: msgspec
applies them as written (an ``int`` in a ``float`` field becomes a float, and is not bounded).
"""

from __future__ import annotations

import datetime
import decimal
import logging
import re
import reprlib
import typing
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import NoneType, UnionType
from typing import Annotated, Any

import msgspec
import msgspec.inspect

from srpc_core.codec import Codec
from srpc_core.errors import InterfaceError
from srpc_core.interface import Procedure, Service

log = logging.getLogger("srpc")

#: The range an ``int`` argument must fit in (64-bit signed).
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_BOUNDED_INT = Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
#: Exact builtin types a value may have to skip msgspec entirely (the fast path), per annotation.
_FAST_ARGUMENT: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (float, int),
    str: (str,),
    bool: (bool,),
    None: (NoneType,),
    NoneType: (NoneType,),
}
_NO_CONVERSION = object()  # a parameter annotated Any (or not at all): nothing to do
#: Types msgspec can leave alone when the codec carries them, with sample values to prove it.
_NATIVE_CANDIDATES: dict[type, tuple[Any, ...]] = {
    bytes: (b"\x00srpc\xff",),
    bytearray: (bytearray(b"\x00\xff"),),
    datetime.datetime: (
        datetime.datetime(2024, 2, 29, 12, 30, 15, 250),
        datetime.datetime(
            2024, 2, 29, 12, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=5, minutes=30))
        ),
    ),
    datetime.date: (datetime.date(2024, 2, 29),),
    datetime.time: (datetime.time(12, 30, 15, 250),),
    datetime.timedelta: (datetime.timedelta(days=1, microseconds=5),),
    uuid.UUID: (uuid.UUID(int=2**127 + 5),),
    decimal.Decimal: (decimal.Decimal("1.10"),),
}


# -- teaching srpc a type (the srpc_register_types hook) --------------------------------------

#: A type (matched with issubclass) or a predicate ``matches(cls) -> bool``.
TypeMatcher = type | Callable[[type], bool]
#: ``to_wire(value)``: a value msgspec can turn into builtins (a dict, a str...).
ToWire = Callable[[Any], Any]
#: ``from_wire(cls, data)``: an instance of `cls` built from what `to_wire` made.
FromWire = Callable[[type, Any], Any]


@dataclass(frozen=True)
class TypeAdapter:
    """How to carry values of the types `matcher` matches; registered by a plugin."""

    matcher: TypeMatcher
    to_wire: ToWire
    from_wire: FromWire
    plugin: str = ""

    def matches(self, cls: type) -> bool:
        if isinstance(self.matcher, type):
            return isinstance(cls, type) and issubclass(cls, self.matcher)
        return bool(self.matcher(cls))


@dataclass(frozen=True)
class TypeAdapters:
    """Every `TypeAdapter` the plugins registered (`Plugins.type_adapters`)."""

    adapters: tuple[TypeAdapter, ...] = ()

    def find(self, cls: type) -> TypeAdapter | None:
        for adapter in self.adapters:
            if adapter.matches(cls):
                return adapter
        return None

    def enc_hook(self, value: Any) -> Any:
        """msgspec's ``enc_hook``: a taught type's wire form."""
        adapter = self.find(type(value))
        if adapter is None:
            raise TypeError(f"srpc cannot carry a value of type {type(value).__qualname__!r}")
        return adapter.to_wire(value)

    def dec_hook(self, cls: type, data: Any) -> Any:
        """msgspec's ``dec_hook``: a taught type from its wire form."""
        adapter = self.find(cls)
        if adapter is None:
            raise NotImplementedError
        return adapter.from_wire(cls, data)


NO_ADAPTERS = TypeAdapters()


# -- what the codec carries ----------------------------------------------------------------


@dataclass(frozen=True)
class WireProfile:
    """How values become wire forms for one codec, and which types a plugin taught.

    `native`: the types beyond JSON's that the codec round-trips exactly (in its `value_types`
    and proven with sample values); msgspec leaves those as they are.
    """

    native: tuple[type, ...] = ()
    adapters: TypeAdapters = NO_ADAPTERS

    @classmethod
    def for_codec(cls, codec: Codec | None, adapters: TypeAdapters = NO_ADAPTERS) -> WireProfile:
        """The profile of `codec` (None: the JSON data model only)."""
        if codec is None:
            return cls((), adapters)
        native = tuple(
            kind
            for kind, samples in _NATIVE_CANDIDATES.items()
            if kind in codec.value_types and all(_round_trips(codec, s) for s in samples)
        )
        return cls(native, adapters)

    def to_wire(self, value: Any) -> Any:
        return msgspec.to_builtins(
            value,
            builtin_types=self.native,
            str_keys=True,
            enc_hook=self.adapters.enc_hook if self.adapters.adapters else None,
        )

    def from_wire(self, value: Any, kind: Any) -> Any:
        return msgspec.convert(
            value,
            kind,
            strict=True,
            builtin_types=self.native,
            str_keys=True,
            dec_hook=self.adapters.dec_hook if self.adapters.adapters else None,
        )


def _round_trips(codec: Codec, sample: Any) -> bool:
    try:
        back = codec.decode(codec.encode([sample]))
    except Exception:  # the codec refuses it (cbor refuses naive datetimes): not native
        return False
    return (
        isinstance(back, list)
        and len(back) == 1
        and type(back[0]) is type(sample)
        and (back[0] == sample)
    )


# -- plans ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """One parameter (or the result): its annotation as written and as converted."""

    name: str
    annotation: Any
    kind: Any  # the type msgspec converts to (numeric tower, bounds)
    fast: tuple[type, ...]  # exact types that need no conversion; () when there are none
    bounded: bool  # an int of `fast` must fit in 64 bits

    def quick(self, value: Any) -> bool:
        """True if `value` already has an exact annotated builtin type (and fits the bound)."""
        cls = type(value)
        if cls not in self.fast:
            return False
        return cls is not int or not self.bounded or INT_MIN <= value <= INT_MAX


@dataclass
class ProcedurePlan:
    """How one procedure's arguments and result are converted (built by `plan_service`)."""

    procedure: Procedure
    profile: WireProfile
    positional: tuple[_Slot | None, ...]
    named: dict[str, _Slot | None]
    var_positional: _Slot | None
    var_keyword: _Slot | None
    result: _Slot | None
    #: The fast path of the common case (every parameter int, float, str, bool or None): for
    #: each number of positional arguments the signature takes, the exact types each may have
    #: to need no conversion.
    fast: dict[int, tuple[tuple[type, ...], ...]]
    #: Nothing to convert at all (every parameter is Any or unannotated).
    trivial: bool
    #: Exact result types that need no conversion (int and float for ``-> float``...).
    result_types: frozenset[type] = frozenset()
    _warned: bool = field(default=False, repr=False)

    # -- arguments ----------------------------------------------------------------------------

    def fits(self, args: tuple[Any, ...] | list[Any]) -> bool:
        """True if positional-only `args` fit the signature and need no conversion: the hot
        path of the common case (a short loop: measurably cheaper than looking up the tuple of
        their types, or than zip)."""
        accepted = self.fast.get(len(args))
        if accepted is None:
            return False
        i = 0
        for value in args:
            cls = type(value)
            # INT_MIN and INT_MAX written out: constants cost less than global lookups here.
            if cls not in accepted[i] or (
                cls is int and not -9223372036854775808 <= value <= 9223372036854775807
            ):
                return False
            i += 1  # noqa: SIM113  # enumerate costs more here
        return True

    def arguments_to_wire(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any] | tuple[Any, ...], dict[str, Any]]:
        """Client side: the arguments' wire forms; `TypeError` for one that does not fit."""
        if self.trivial:
            return args, kwargs
        return self._each_argument(args, kwargs, self._argument_to_wire)

    def arguments_from_wire(
        self, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any] | tuple[Any, ...], dict[str, Any]]:
        """Server side: the arguments as the annotations say; `TypeError` naming the first
        that does not fit (the implementation must not run then)."""
        if self.trivial:
            return args, kwargs
        return self._each_argument(args, kwargs, self._argument_from_wire)

    def _each_argument(
        self,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        convert: Callable[[_Slot | None, Any], Any],
    ) -> tuple[list[Any], dict[str, Any]]:
        count = len(self.positional)
        out = [
            convert(self.positional[i] if i < count else self.var_positional, value)
            for i, value in enumerate(args)
        ]
        named = {
            name: convert(self.named.get(name, self.var_keyword), value)
            for name, value in kwargs.items()
        }
        return out, named

    def _argument_to_wire(self, slot: _Slot | None, value: Any) -> Any:
        if slot is None or slot.quick(value):
            return value
        try:
            wire = self.profile.to_wire(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(self._misfit(slot, value, str(exc))) from None
        self._argument_from_wire(slot, wire, shown=value)
        return wire

    def _argument_from_wire(self, slot: _Slot | None, value: Any, shown: Any = None) -> Any:
        if slot is None or slot.quick(value):
            return value
        try:
            return self.profile.from_wire(value, slot.kind)
        except (msgspec.ValidationError, TypeError, ValueError) as exc:
            raise TypeError(
                self._misfit(slot, value if shown is None else shown, str(exc))
            ) from None

    def _misfit(self, slot: _Slot, value: Any, detail: str) -> str:
        message = (
            f"{self.procedure.name}(): parameter {slot.name!r} expects "
            f"{type_text(slot.annotation)}, got {describe(value)}"
        )
        if "<=" in detail or ">=" in detail:
            return f"{message} (an int here must fit in 64 bits: {INT_MIN} to {INT_MAX})"
        if _PLAIN_MISMATCH.fullmatch(detail):
            return message
        return f"{message} ({detail.replace('`$', '`' + slot.name)})"

    # -- the result ---------------------------------------------------------------------------

    def result_to_wire(self, result: Any) -> Any:
        """Server side: the result's wire form. One that does not fit the return annotation
        is sent as it is, with one warning per procedure in the server's log."""
        slot = self.result
        if slot is None or slot.quick(result):
            return result
        try:
            wire = self.profile.to_wire(result)
        except (TypeError, ValueError):
            self._warn(result)
            return result  # the codec says whether it can carry it
        if not self._warned:
            try:
                self.profile.from_wire(wire, slot.kind)
            except (msgspec.ValidationError, TypeError, ValueError):
                self._warn(result)
        return wire

    def result_from_wire(self, value: Any) -> Any:
        """Client side: the result as the return annotation says, or as it came if it does
        not fit (the server warned)."""
        slot = self.result
        if slot is None or slot.quick(value):
            return value
        try:
            return self.profile.from_wire(value, slot.kind)
        except (msgspec.ValidationError, TypeError, ValueError):
            return value

    def _warn(self, result: Any) -> None:
        if self._warned:
            return
        self._warned = True
        assert self.result is not None
        log.warning(
            "srpc: %s() returned %s, which does not fit its return annotation %s; sent as it "
            "is (this warning is shown once per procedure)",
            self.procedure.name,
            describe(result),
            type_text(self.result.annotation),
        )


_PLAIN_MISMATCH = re.compile(r"Expected `[^`]*`, got `[^`]*`")


def plan_service(
    service: Service, codec: Codec | None = None, adapters: TypeAdapters = NO_ADAPTERS
) -> dict[str, ProcedurePlan]:
    """A plan for every procedure of `service` with `codec`'s wire forms.

    Raises `InterfaceError` naming the procedure, the parameter and the type when an annotation
    names a type srpc cannot carry (and no plugin taught it), or does not resolve.
    """
    profile = WireProfile.for_codec(codec, adapters)
    return {name: plan_procedure(p, profile) for name, p in service.procedures.items()}


def plan_procedure(procedure: Procedure, profile: WireProfile) -> ProcedurePlan:
    """The conversion plan of one procedure (see `plan_service`)."""
    hints = procedure.type_hints()
    positional: list[_Slot | None] = []
    named: dict[str, _Slot | None] = {}
    var_positional = var_keyword = None
    kinds = procedure.signature.parameters.values()
    for parameter in kinds:
        slot = _slot(procedure, parameter.name, hints.get(parameter.name, Any), profile, True)
        if parameter.kind is parameter.VAR_POSITIONAL:
            var_positional = slot
        elif parameter.kind is parameter.VAR_KEYWORD:
            var_keyword = slot
        else:
            if parameter.kind is not parameter.KEYWORD_ONLY:
                positional.append(slot)
            if parameter.kind is not parameter.POSITIONAL_ONLY:
                named[parameter.name] = slot
    result = _slot(procedure, "return", hints.get("return", Any), profile, False)
    slots = [*positional, *named.values(), var_positional, var_keyword]
    fast: dict[int, tuple[tuple[type, ...], ...]] = {}
    if procedure.simple and all(s is not None and s.fast for s in positional):
        accepted = tuple(s.fast for s in positional if s is not None)
        fast = {n: accepted[:n] for n in range(procedure.min_positional, len(accepted) + 1)}
    return ProcedurePlan(
        procedure=procedure,
        profile=profile,
        positional=tuple(positional),
        named=named,
        var_positional=var_positional,
        var_keyword=var_keyword,
        result=result,
        fast=fast,
        trivial=all(s is None for s in slots),
        result_types=frozenset(result.fast if result is not None else ()),
    )


def _slot(
    procedure: Procedure, name: str, annotation: Any, profile: WireProfile, argument: bool
) -> _Slot | None:
    if _is_any(annotation):
        return None
    kind = _numeric(annotation, argument)
    where = "the return value" if name == "return" else f"parameter {name!r}"
    try:
        info = msgspec.inspect.type_info(kind)
    except (TypeError, ValueError):  # msgspec refuses the rewritten type: use it as written
        kind = annotation
        try:
            info = msgspec.inspect.type_info(kind)
        except (TypeError, ValueError) as exc:
            raise InterfaceError(
                f"{procedure.name}(): {where} is annotated {type_text(annotation)}, which srpc "
                f"cannot carry: {exc}"
            ) from None
    unknown = [cls for cls in _custom_types(info) if profile.adapters.find(cls) is None]
    if unknown:
        raise InterfaceError(
            f"{procedure.name}(): {where} is annotated {type_text(annotation)}, and srpc does "
            f"not know the type {type_text(unknown[0])}; use a supported type (docs/types.md) "
            "or teach srpc this one with the srpc_register_types hook"
        )
    fast = _FAST_ARGUMENT.get(annotation, ())
    return _Slot(name, annotation, kind, fast, argument and int in fast)


#: Annotations that convert nothing: Any and object, and NoReturn/Never (nothing comes back).
_UNCONVERTED = (Any, object, typing.NoReturn, typing.Never)


def _is_any(annotation: Any) -> bool:
    """True when nothing needs converting: `Any` itself, or a plain `list`/`dict` whose items
    are `Any` (``dict``, ``list[Any]``, ``dict[str, Any]``). Their values travel as the codec
    carries them, as for `Any` (a `datetime` inside a bare ``dict`` stays a datetime under cbor)."""
    if annotation in _UNCONVERTED:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _is_any(typing.get_args(annotation)[0])
    if annotation in (list, dict):
        return True
    arguments = typing.get_args(annotation)
    if origin is list:
        return _is_any(arguments[0])
    if origin is dict:  # int keys and the like need converting
        return arguments[0] in (str, Any) and _is_any(arguments[1])
    return False


def _numeric(annotation: Any, argument: bool) -> Any:
    """`annotation` with the numeric tower applied: ``float`` -> ``int | float``, and for
    arguments every ``int`` bounded to 64 bits. Only the annotation's own generic structure is
    rewritten (lists, dicts, unions...); classes keep their own field annotations."""
    whole = _BOUNDED_INT if argument else int
    if annotation is float:
        return whole | float
    if annotation is int:
        return whole
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is None or not args or origin is typing.Literal:
        return annotation
    if origin is Annotated:
        return Annotated[(_numeric(args[0], argument), *annotation.__metadata__)]
    new = tuple(a if a is Ellipsis else _numeric(a, argument) for a in args)
    if new == args:
        return annotation
    if origin is typing.Union or origin is UnionType:
        return typing.Union[new]  # noqa: UP007  # rebuilt from a tuple of members
    try:
        return origin[new if len(new) > 1 else new[0]]
    except TypeError:
        return annotation


def _custom_types(info: msgspec.inspect.Type) -> list[type]:
    """The classes msgspec does not know (``CustomType``) anywhere inside `info`."""
    found: list[type] = []
    seen: set[int] = set()
    pending: list[Any] = [info]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, msgspec.inspect.CustomType):
            found.append(node.cls)
        elif isinstance(node, msgspec.inspect.Type | msgspec.inspect.Field):
            pending.extend(_children(node))
        elif isinstance(node, tuple | list):
            pending.extend(node)
    return found


def _children(node: msgspec.Struct) -> Iterable[Any]:
    for name in node.__struct_fields__:
        value = getattr(node, name)
        if isinstance(value, msgspec.inspect.Type | msgspec.inspect.Field | tuple | list):
            yield value


# -- words ---------------------------------------------------------------------------------

_repr = reprlib.Repr()
_repr.maxstring = 40
_repr.maxother = 40
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 4


def describe(value: Any) -> str:
    """``str 'lots'``, ``int of 3321929 bits``, ``list [1, 2, 3, 4, ...]``: for errors."""
    kind = type(value).__qualname__
    if type(value) is int and value.bit_length() > 64:
        return f"int of {value.bit_length()} bits"
    try:
        return f"{kind} {_repr.repr(value)}"
    except (ValueError, RecursionError):  # e.g. an int too long to print
        return kind


def type_text(annotation: Any) -> str:
    """An annotation as a reader writes it: ``int``, ``list[Item]``, ``Item | None``."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return _DOTTED.sub(r"\1", repr(annotation))


_DOTTED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")


__all__ = [
    "INT_MAX",
    "INT_MIN",
    "NO_ADAPTERS",
    "FromWire",
    "ProcedurePlan",
    "ToWire",
    "TypeAdapter",
    "TypeAdapters",
    "TypeMatcher",
    "WireProfile",
    "describe",
    "plan_procedure",
    "plan_service",
    "type_text",
]
