"""The ``cbor`` codec: messages as RFC 8949 CBOR, via cbor2 (``pip install 'srpclib[cbor]'``).

Carries what JSON carries plus three types that travel as themselves:

* `bytes` (CBOR byte strings; `bytearray` and `memoryview` arrive as `bytes`);
* big integers of any size (tags 2 and 3);
* time-zone-aware `datetime` (tag 0, an RFC 3339 string that keeps the UTC offset, so
  ``12:00+05:30`` arrives as ``12:00+05:30``, with a fixed-offset `timezone` as its tzinfo).

A *naive* `datetime` is refused with an `EncodeError`: it names no instant, and guessing a time
zone would silently shift it. Attach one (``datetime.now(timezone.utc)``).

Decoding is hardened for hostile input. cbor2 turns many semantic tags into Python objects
(regular expressions, MIME messages, Decimals, Fractions, UUIDs, IP addresses, sets, shared and
cyclic references); this codec accepts only tags 0 and 1 (date-times), 2 and 3 (big integers)
and 55799 (the self-describe marker) and refuses every other tag, known or not. Nesting is
limited (``max_depth``, default 256), map keys must be text or byte strings (other keys let an
attacker build maps whose hashes collide), duplicate keys and bytes after the message are
refused. Nothing is ever imported or executed because of what the data says. (CBOR's
``undefined`` and simple values decode to cbor2's inert marker objects; encoding refuses them.)

Decoding budgets (a message is refused with a `DecodeError` before it costs more):

* ``max_bignum_bytes`` (default 1024): the longest big integer (tags 2 and 3) accepted, in
  bytes. Arithmetic on huge integers is slow and holds the GIL (two 1 MiB integers multiplied
  stall every other call for seconds); 1024 bytes (2,466 decimal digits) stays within Python's
  own limit on converting integers to text (4,300 digits).
* ``max_containers`` (default 1,000,000): the most arrays and maps in one message. An empty
  array is one byte of CBOR but some 60 bytes of Python objects, so a message of nothing else
  would cost 75 times its size in memory; the budget bounds that (about 100 MB at most). It is
  checked before decoding, at the cost of a byte count when the message could not exceed it.

Options (``[srpc.cbor]``): ``max_depth`` (deepest nesting of arrays and maps accepted, default
256), ``max_bignum_bytes``, ``max_containers``.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import io
import ipaddress
import re
import uuid
from collections.abc import Callable, Mapping
from email.message import Message
from importlib.metadata import PackageNotFoundError, version
from typing import IO, Any, NoReturn, cast

from srpc_core.codec import Codec
from srpc_core.errors import DecodeError, EncodeError, MissingDependencyError
from srpc_core.hookspecs import RegisterCodec, hookimpl
from srpc_core.options import Option, PluginOptions

#: The self-describe marker: allowed (with 0, 1, 2 and 3, which cbor2 decodes itself); inert.
SELF_DESCRIBE_TAG = 55799
#: Tags cbor2 decodes into Python objects on its own; each is refused explicitly.
CBOR2_BUILTIN_TAGS = (4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004)
DEFAULT_MAX_DEPTH = 256
DEFAULT_MAX_BIGNUM_BYTES = 1024
DEFAULT_MAX_CONTAINERS = 1_000_000
#: The ``[srpc.cbor]`` table.
OPTIONS = {
    "max_depth": Option(
        int,
        default=DEFAULT_MAX_DEPTH,
        minimum=1,
        maximum=10_000,
        help="the deepest nesting of arrays and maps accepted",
    ),
    "max_bignum_bytes": Option(
        int,
        default=DEFAULT_MAX_BIGNUM_BYTES,
        minimum=8,
        help="the longest big integer accepted, in bytes",
    ),
    "max_containers": Option(
        int,
        default=DEFAULT_MAX_CONTAINERS,
        minimum=1,
        help="the most arrays and maps accepted in one message",
    ),
}
#: The first bytes of arrays and maps (major types 4 and 5).
CONTAINER_HEADS = bytes(range(0x80, 0xC0))
#: Types cbor2 would encode natively that srpc does not carry (the peer would refuse them).
REFUSED_TYPES: tuple[type, ...] = (
    set,
    frozenset,
    complex,
    datetime.date,
    datetime.time,
    decimal.Decimal,
    fractions.Fraction,
    uuid.UUID,
    re.Pattern,
    Message,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
)


class CborCodec(Codec):
    """CBOR via cbor2, restricted to srpc's data model plus bytes, datetimes and big ints."""

    name = "cbor"
    #: What `srpc plugins` checks for (see docs/plugins.md).
    requires = {"cbor2": "pip install 'srpclib[cbor]'"}
    value_types = (type(None), bool, int, float, str, bytes, list, dict, datetime.datetime)
    #: `decode` takes a bytearray as well as bytes (how stream transports hand over a large
    #: message, read in place), without copying it first.
    decodes_bytearray = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        checked = PluginOptions.wrap(options, self.name).check(OPTIONS)
        super().__init__(options)
        try:
            import cbor2
        except ImportError:
            raise MissingDependencyError(
                "codec 'cbor' needs the cbor2 package: pip install 'srpclib[cbor]'"
            ) from None
        if _major_version("cbor2") < 6:  # the decoder restrictions below need the 6.x API
            raise MissingDependencyError(
                "codec 'cbor' needs cbor2 6 or later: pip install --upgrade 'srpclib[cbor]'"
            )
        self._max_depth: int = checked["max_depth"]
        self._max_bignum_bytes: int = checked["max_bignum_bytes"]
        self._max_containers: int = checked["max_containers"]
        self._cbor2 = cbor2
        self._encoders = self._build_encoders(cbor2)
        self._tag_decoders: dict[int, Callable[[Any, bool], Any]] = {
            tag: _refuse_builtin_tag(tag) for tag in CBOR2_BUILTIN_TAGS
        }
        # cbor2's own decoder for the self-describe marker freezes the value (lists become
        # tuples); the marker means nothing, so hand the value through as it is.
        self._tag_decoders[SELF_DESCRIBE_TAG] = _pass_through
        self._tag_decoders[2] = self._positive_bignum
        self._tag_decoders[3] = self._negative_bignum

    def encode(self, message: Any) -> bytes:
        try:
            data: bytes = self._cbor2.dumps(message, encoders=self._encoders, default=_refuse)
        except EncodeError:
            raise
        except (self._cbor2.CBOREncodeError, RecursionError, OverflowError) as exc:
            # Cycles, values cbor2 rejects: name the problem, not cbor2's internals.
            raise EncodeError(f"codec 'cbor' cannot carry this value: {exc}") from None
        return data

    def decode(self, data: bytes) -> Any:
        if len(data) > self._max_containers:  # a message this short cannot exceed the budget
            self._check_containers(data)
        # A bytearray (a large message, as the stream transports receive it) is read in place:
        # io.BytesIO would copy it whole first (it shares only a bytes object's memory).
        stream = io.BytesIO(data) if type(data) is bytes else cast(IO[bytes], _BufferReader(data))
        decoder = self._cbor2.CBORDecoder(
            stream,
            tag_hook=_refuse_unknown_tag,
            semantic_decoders=self._tag_decoders,
            max_depth=self._max_depth,
            strict_hashable_types=True,
            allow_duplicate_keys=False,
        )
        try:
            message = decoder.decode()
        except self._cbor2.CBORDecodeError as exc:
            raise DecodeError(f"not valid srpc CBOR: {_describe(exc)}") from None
        # cbor2 stops after one item; anything after it means the bytes are not one message.
        if stream.tell() != len(data):
            raise DecodeError(
                f"not valid srpc CBOR: {len(data) - stream.tell()} unexpected bytes after the "
                "message"
            )
        return message

    def _check_containers(self, data: bytes) -> None:
        """Refuse a message of more than `max_containers` arrays and maps, before decoding."""
        budget = self._max_containers
        if _count_containers(data, budget) > budget:
            raise DecodeError(
                f"not accepted: the message holds more than {budget} arrays and maps "
                "(max_containers in [srpc.cbor])"
            )

    def _positive_bignum(self, value: Any, immutable: bool) -> int:
        return int.from_bytes(self._bignum_bytes(value), "big")

    def _negative_bignum(self, value: Any, immutable: bool) -> int:
        return -1 - int.from_bytes(self._bignum_bytes(value), "big")

    def _bignum_bytes(self, value: Any) -> bytes:
        if not isinstance(value, bytes):
            raise DecodeError("CBOR big integers (tags 2 and 3) must hold a byte string")
        if len(value) > self._max_bignum_bytes:
            raise DecodeError(
                f"a {len(value)}-byte big integer is longer than max_bignum_bytes "
                f"({self._max_bignum_bytes}) in [srpc.cbor]"
            )
        return value

    def _build_encoders(self, cbor2: Any) -> dict[type, Callable[[Any, Any], None]]:
        encoders: dict[type, Callable[[Any, Any], None]] = {t: _refuse for t in REFUSED_TYPES}
        for t in (cbor2.CBORTag, cbor2.CBORSimpleValue, type(cbor2.undefined)):
            encoders[t] = _refuse
        encoders[dict] = _encode_map
        encoders[datetime.datetime] = _encode_datetime
        return encoders


#: For the heads of major types 0-6: how many bytes of argument follow an additional info of
#: 24, 25, 26, 27.
_ARGUMENT_BYTES = {24: 1, 25: 2, 26: 4, 27: 8}


#: How many items `_count_containers` looks at before it tries an upper bound at C speed.
_QUICK_WALK = 4096


def _count_containers(data: bytes, budget: int) -> int:
    """How many arrays and maps `data` holds (stopping once past `budget`).

    A linear walk over the items' heads that skips the contents of strings: items nest, but
    every head is visited in order, so no stack is needed, and a message of a few large
    strings is over at once. A message of many small items would make the walk slow, so after
    `_QUICK_WALK` items it first tries an upper bound at C speed: every array and map starts
    with one of `CONTAINER_HEADS`, so the count of those bytes (strings and numbers may hold
    them too) bounds the count. Malformed input ends the count (the decoder reports it).
    """
    count, position, end, steps = 0, 0, len(data), 0
    while position < end:
        steps += 1
        if steps == _QUICK_WALK and end - len(data.translate(None, CONTAINER_HEADS)) <= budget:
            return count  # cannot exceed it
        head = data[position]
        major, info = head >> 5, head & 0x1F
        position += 1
        if info < 24:
            argument = info
        elif info in _ARGUMENT_BYTES:
            size = _ARGUMENT_BYTES[info]
            argument = int.from_bytes(data[position : position + size], "big")
            position += size
        else:  # 31: indefinite length (or a break); 28-30: malformed
            argument = 0
        if major in (4, 5):
            count += 1
            if count > budget:
                return count
        elif major in (2, 3) and info != 31:
            position += argument  # a definite string: skip its bytes
    return count


class _BufferReader:
    """The file cbor2's decoder reads from, over a bytes-like object without copying it: each
    read copies out only the bytes it returns (what io.BytesIO does for a bytes object)."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        start = self._position
        end = len(self._view) if size < 0 else min(start + size, len(self._view))
        self._position = end
        return self._view[start:end].tobytes()

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = (0, self._position, len(self._view))[whence]
        self._position = max(0, base + offset)
        return self._position


def _major_version(distribution: str) -> int:
    try:
        return int(version(distribution).split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 0


def _refuse(encoder: Any, value: Any) -> NoReturn:
    raise EncodeError(
        f"codec 'cbor' cannot carry a value of type {type(value).__qualname__!r}; convert it to "
        "str, bytes, int, float, bool, None, list, dict or an aware datetime"
    )


def _encode_map(encoder: Any, value: dict[Any, Any]) -> None:
    # The decoder only accepts text and byte string keys (see the module docstring): refuse
    # other keys here, so the caller gets the error instead of the peer.
    for key in value:
        if not isinstance(key, str | bytes):
            raise EncodeError(
                f"codec 'cbor' cannot carry a dict key of type {type(key).__qualname__!r}; "
                "dict keys must be str (or bytes)"
            )
    encoder.encode_map(value)


def _encode_datetime(encoder: Any, value: datetime.datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise EncodeError(
            f"codec 'cbor' cannot carry a naive value of type 'datetime' ({value.isoformat()}): "
            "it names no instant; attach a time zone, e.g. datetime.now(timezone.utc)"
        )
    encoder.encode_datetime(value)


def _refuse_unknown_tag(tag: Any, immutable: bool) -> NoReturn:
    raise DecodeError(f"CBOR semantic tag {tag.tag} is not allowed in srpc messages")


def _refuse_builtin_tag(number: int) -> Callable[[Any, bool], NoReturn]:
    def refuse(value: Any, immutable: bool) -> NoReturn:
        raise DecodeError(f"CBOR semantic tag {number} is not allowed in srpc messages")

    return refuse


def _pass_through(value: Any, immutable: bool) -> Any:
    return value


def _describe(exc: BaseException) -> str:
    """cbor2 wraps our DecodeError (and other causes) in its own: show the root cause."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, DecodeError):
        return str(cause)
    return f"{exc}: {cause}" if cause is not None else str(exc)


@hookimpl
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer ``cbor``."""
    register("cbor", CborCodec)


__all__ = [
    "CBOR2_BUILTIN_TAGS",
    "CONTAINER_HEADS",
    "DEFAULT_MAX_BIGNUM_BYTES",
    "DEFAULT_MAX_CONTAINERS",
    "DEFAULT_MAX_DEPTH",
    "OPTIONS",
    "REFUSED_TYPES",
    "SELF_DESCRIBE_TAG",
    "CborCodec",
    "srpc_register_codecs",
]
