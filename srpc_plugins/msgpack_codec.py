"""The ``msgpack`` codec: messages as MessagePack (https://msgpack.org), via msgspec.

msgspec is a dependency of srpclib itself, so this codec needs nothing more. It carries what
JSON carries plus `bytes`, which travel as themselves (MessagePack ``bin``; `bytearray` and
`memoryview` arrive as `bytes`). NaN and the infinities round-trip (float 64). Tuples arrive as
lists. Integers must fit in 64 bits (``-2**63`` to ``2**64 - 1``: MessagePack has nothing
bigger). Dict keys must be `str`.

Everything else is refused with an `EncodeError` naming its type, although msgspec could encode
much of it: a set would arrive as a list, a `datetime` as a timestamp in UTC that has lost its
offset, a `UUID` as a string. Typed values never get here in those forms: srpc converts them to
their wire forms by the interface's annotations first (docs/types.md); for values annotated
``Any``, refusing is honest where silently changing them is not. (Subclasses of int, float, str,
list, tuple and dict, such as an `IntEnum` member or an `OrderedDict`, travel as their base.)

Decoding is hardened for hostile input. MessagePack extension types are refused, the timestamp
(-1) included; map keys must be text (integer keys let an attacker make hashes collide, and
srpc's messages and typed values only use str keys); bytes after the message are refused;
msgspec never allocates for a length the data does not hold. Nothing is ever imported or
executed because of what the data says.

Budgets (a message is refused before it costs more; the encoder applies the same limits, so a
caller learns at once that the peer would refuse its message):

* ``max_depth`` (default 256, at most 512): the deepest nesting of arrays and maps accepted. A
  structure that contains itself is refused by it when encoding.
* ``max_containers`` (default 1,000,000): the most arrays and maps in one message. An empty
  array is one byte of MessagePack but some 56 bytes of Python objects; the budget bounds that.
  It is checked before decoding, and costs nothing for messages no longer than the budget.

Options (``[srpc.msgpack]``): ``max_depth``, ``max_containers``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

import msgspec

from srpc_core.codec import Codec
from srpc_core.errors import DecodeError, EncodeError
from srpc_core.hookspecs import RegisterCodec, hookimpl
from srpc_core.options import Option, PluginOptions

DEFAULT_MAX_DEPTH = 256
DEFAULT_MAX_CONTAINERS = 1_000_000
#: The ``[srpc.msgpack]`` table.
OPTIONS = {
    "max_depth": Option(
        int,
        default=DEFAULT_MAX_DEPTH,
        minimum=1,
        maximum=512,  # msgspec's decoder stops at Python's recursion limit (1000) anyway
        help="the deepest nesting of arrays and maps accepted",
    ),
    "max_containers": Option(
        int,
        default=DEFAULT_MAX_CONTAINERS,
        minimum=1,
        help="the most arrays and maps accepted in one message",
    ),
}

#: Values that are neither arrays nor maps and travel exactly as themselves.
_SCALARS = frozenset({type(None), bool, int, float, str, bytes})
#: What encoding accepts besides: bytes-like values (sent as bin) and tuples (sent as arrays).
_ENCODABLE_SCALARS = _SCALARS | {bytearray, memoryview}
_SEQUENCES = (list, tuple)
_STR = frozenset({str})
#: Containers shorter than this are checked item by item, longer ones by their types' set.
_SHORT = 16
#: Subclasses of these travel as their base (msgspec encodes them so); see the module docstring.
_SUBCLASSABLE = (int, float, str, list, tuple, dict)
#: Bytes that may start a non-empty map (fixmap 1-15, map 16, map 32) or an extension type
#: (fixext 1-16, ext 8/16/32). A message that holds none of them, anywhere, has neither.
_MAP_OR_EXT = re.compile(b"[\x81-\x8f\xde\xdf\xc7-\xc9\xd4-\xd8]")
#: The first bytes of arrays and maps: fixmap, fixarray, array 16/32, map 16/32.
_CONTAINER_HEADS = bytes(range(0x80, 0xA0)) + b"\xdc\xdd\xde\xdf"
#: How many items `_count_containers` looks at before it tries an upper bound at C speed.
_QUICK_WALK = 4096


class MsgpackCodec(Codec):
    """MessagePack via msgspec, restricted to srpc's data model plus bytes."""

    name = "msgpack"
    value_types = (type(None), bool, int, float, str, bytes, list, dict)
    #: `decode` takes a bytearray as well as bytes (how stream transports hand over a large
    #: message, read in place), without copying it first.
    decodes_bytearray = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        checked = PluginOptions.wrap(options, self.name).check(OPTIONS)
        super().__init__(options)
        self._max_depth: int = checked["max_depth"]
        self._max_containers: int = checked["max_containers"]
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(ext_hook=_refuse_extension).decode

    def encode(self, message: Any) -> bytes:
        _check_encodable(message, self._max_depth)
        try:
            return self._encode(message)
        except OverflowError:
            raise EncodeError(
                "codec 'msgpack' cannot carry a value of type 'int' outside -2**63 .. 2**64 - 1"
            ) from None
        except (TypeError, RecursionError) as exc:  # what the check above lets through: nothing
            raise EncodeError(f"codec 'msgpack' cannot carry this value: {exc}") from None

    def decode(self, data: bytes) -> Any:
        size = len(data)
        if size > self._max_containers:  # shorter, it cannot exceed the budget
            self._check_containers(data)
        try:
            message = self._decode(data)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise DecodeError(f"not valid srpc MessagePack: {exc}") from None
        except _Refused as exc:
            raise DecodeError(f"not valid srpc MessagePack: {exc}") from None
        kind = type(message)
        if kind is list or kind is dict:
            # A short message without maps and extensions holds nothing to refuse, and cannot
            # nest deeper than its length.
            if size > self._max_depth or _MAP_OR_EXT.search(data):
                _check_decoded(message, self._max_depth)
        elif kind not in _SCALARS:
            _refuse_decoded(message)
        return message

    def _check_containers(self, data: bytes) -> None:
        """Refuse a message of more than `max_containers` arrays and maps, before decoding."""
        budget = self._max_containers
        if _count_containers(data, budget) > budget:
            raise DecodeError(
                f"not accepted: the message holds more than {budget} arrays and maps "
                "(max_containers in [srpc.msgpack])"
            )


class _Refused(Exception):
    """Raised inside msgspec's decoder (by the extension hook) and turned into a DecodeError."""


# -- encoding ---------------------------------------------------------------------------------


def _check_encodable(value: Any, depth: int) -> None:
    """Refuse what this codec does not carry (see the module docstring), and nesting deeper
    than `depth`, before msgspec encodes it.

    Short containers (the common case: srpc's own messages) are checked item by item; long
    ones first by the set of their items' types, built at C speed.
    """
    kind = type(value)
    if kind is list or kind is tuple:
        items: Any = value
    elif kind is dict:
        if depth <= 0:
            _too_deep()
        if len(value) < _SHORT:
            for key, item in value.items():
                if type(key) is not str:
                    _refuse_key(key)
                if type(item) not in _ENCODABLE_SCALARS:
                    _check_encodable(item, depth - 1)
            return
        if not {*map(type, value)} <= _STR:
            _refuse_key(next(k for k in value if type(k) is not str))
        items = value.values()
    elif kind in _ENCODABLE_SCALARS:
        return
    elif isinstance(value, _SUBCLASSABLE):  # an IntEnum member, an OrderedDict...
        if isinstance(value, dict):
            value = dict(value)
        elif isinstance(value, _SEQUENCES):
            value = list(value)
        else:
            return
        _check_encodable(value, depth)
        return
    else:
        _refuse_value(value)
    if depth <= 0:
        _too_deep()
    if len(items) >= _SHORT and {*map(type, items)} <= _ENCODABLE_SCALARS:
        return
    for item in items:
        if type(item) not in _ENCODABLE_SCALARS:
            _check_encodable(item, depth - 1)


def _refuse_value(value: Any) -> NoReturn:
    raise EncodeError(
        f"codec 'msgpack' cannot carry a value of type {type(value).__qualname__!r}; convert it "
        "to str, bytes, int, float, bool, None, list or dict (typed values are converted by "
        "their annotations: annotate the parameter)"
    )


def _too_deep() -> NoReturn:
    raise EncodeError(
        "codec 'msgpack' cannot carry this value: it is nested deeper than max_depth in "
        "[srpc.msgpack], or contains itself"
    )


def _refuse_key(key: Any) -> NoReturn:
    raise EncodeError(
        f"codec 'msgpack' cannot carry a dict key of type {type(key).__qualname__!r}; dict keys "
        "must be str (annotate the parameter, e.g. dict[int, str], and srpc converts the keys)"
    )


# -- decoding ---------------------------------------------------------------------------------


def _refuse_extension(code: int, data: memoryview) -> NoReturn:
    raise _Refused(f"MessagePack extension type {code} is not allowed in srpc messages")


def _check_decoded(value: list[Any] | dict[Any, Any], depth: int) -> None:
    """Refuse non-str map keys, timestamps (msgspec decodes extension -1 itself) and nesting
    deeper than `depth` in a decoded message (checked like `_check_encodable`)."""
    if depth <= 0:
        raise DecodeError(
            "not accepted: the message is nested deeper than max_depth in [srpc.msgpack]"
        )
    items: Any = value
    if type(value) is dict:
        if not {*map(type, value)} <= _STR:
            key = next(k for k in value if type(k) is not str)
            raise DecodeError(
                f"not valid srpc MessagePack: a map key of type {type(key).__qualname__!r}; "
                "map keys must be text"
            )
        items = value.values()
    if len(items) >= _SHORT and {*map(type, items)} <= _SCALARS:
        return
    for item in items:
        kind = type(item)
        if kind is list or kind is dict:
            _check_decoded(item, depth - 1)
        elif kind not in _SCALARS:
            _refuse_decoded(item)


def _refuse_decoded(value: Any) -> NoReturn:
    # msgspec turns the timestamp extension (-1) into a datetime without asking ext_hook.
    raise DecodeError(
        f"not valid srpc MessagePack: a value of type {type(value).__qualname__!r} (extension "
        "types, the timestamp included, are not allowed in srpc messages)"
    )


#: For heads with a length or value after them: how many bytes follow (fixed-size items), or
#: how many bytes of length precede the payload (``-n``: str, bin and ext, skipped whole).
_ARGUMENT = {
    0xC4: -1, 0xC5: -2, 0xC6: -4,  # bin 8/16/32
    0xC7: -1, 0xC8: -2, 0xC9: -4,  # ext 8/16/32 (plus a type byte, see below)
    0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,  # float 32/64, uint 8-64
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,  # int 8-64
    0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,  # fixext 1-16 (type byte included)
    0xD9: -1, 0xDA: -2, 0xDB: -4,  # str 8/16/32
    0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4,  # array 16/32, map 16/32 (counts: not skipped)
}  # fmt: skip


def _count_containers(data: bytes, budget: int) -> int:
    """How many arrays and maps `data` holds (stopping once past `budget`).

    A walk over the items' heads that skips the payloads of strings, bins and extensions (a
    message of a few large byte strings is over at once). A message of many small items would
    make the walk slow, so after `_QUICK_WALK` items it first tries an upper bound at C speed:
    the count of bytes that could start an array or map. Malformed input ends the count (the
    decoder reports it).
    """
    count, position, end, steps = 0, 0, len(data), 0
    while position < end:
        steps += 1
        if steps == _QUICK_WALK and end - len(data.translate(None, _CONTAINER_HEADS)) <= budget:
            return count  # cannot exceed it
        head = data[position]
        position += 1
        if head <= 0x7F or head >= 0xE0 or 0xC0 <= head <= 0xC3:
            continue  # fixint, nil, (unused), false, true
        if head <= 0x9F:
            count += 1  # fixmap, fixarray
        elif head <= 0xBF:
            position += head & 0x1F  # fixstr
            continue
        else:
            size = _ARGUMENT.get(head, 0)
            if size > 0:
                if head >= 0xDC:
                    count += 1
                position += size
            elif size < 0:
                length = int.from_bytes(data[position : position - size], "big")
                position += -size + length + (1 if 0xC7 <= head <= 0xC9 else 0)
        if count > budget:
            return count
    return count


@hookimpl
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer ``msgpack``."""
    register("msgpack", MsgpackCodec)


__all__ = [
    "DEFAULT_MAX_CONTAINERS",
    "DEFAULT_MAX_DEPTH",
    "OPTIONS",
    "MsgpackCodec",
    "srpc_register_codecs",
]
