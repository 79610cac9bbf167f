"""The ``json`` codec (the default): messages as compact UTF-8 JSON.

Carries None, bool, int, float (NaN and infinities too, as Python writes them), str, list and
dict. Tuples arrive as lists; dict keys that are int, float, bool or None arrive as strings
(JSON objects only have string keys). Anything else (bytes, set, datetime, custom objects) is
refused with an `EncodeError` naming its type: use the ``cbor`` codec for bytes and datetimes.

Decoding budgets (a message is refused with a `DecodeError` before it costs more):

* ``max_int_digits`` (default 4300, Python's own default limit): the longest integer accepted,
  in decimal digits. Converting and multiplying huge integers is slow and holds the GIL. The
  codec never accepts more than the interpreter's own limit (`sys.get_int_max_str_digits`),
  and enforces this budget even where that limit was turned off (``PYTHONINTMAXSTRDIGITS=0``).
* ``max_containers`` (default 1,000,000): the most arrays and objects in one message. ``[],``
  is 3 bytes of JSON but some 64 bytes of Python objects (27 times its size); the budget
  bounds that. It is checked before decoding, and costs nothing for messages shorter than
  twice the budget (they cannot exceed it).

Options (``[srpc.json]``): ``max_int_digits``, ``max_containers``.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from srpc_core.codec import Codec
from srpc_core.errors import DecodeError, EncodeError
from srpc_core.hookspecs import RegisterCodec, hookimpl
from srpc_core.options import Option, PluginOptions

#: Python's default limit on the digits of an integer converted from text.
DEFAULT_MAX_INT_DIGITS = 4300
DEFAULT_MAX_CONTAINERS = 1_000_000
#: The ``[srpc.json]`` table.
OPTIONS = {
    "max_int_digits": Option(
        int,
        default=DEFAULT_MAX_INT_DIGITS,
        minimum=1,
        help="the longest integer accepted, in decimal digits",
    ),
    "max_containers": Option(
        int,
        default=DEFAULT_MAX_CONTAINERS,
        minimum=1,
        help="the most arrays and objects accepted in one message",
    ),
}
#: A JSON string (for counting the brackets outside strings).
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class JsonCodec(Codec):
    """JSON via the standard library's C-accelerated encoder and decoder."""

    name = "json"
    #: `decode` takes a bytearray as well as bytes (how stream transports hand over a large
    #: message, read in place), without copying it first.
    decodes_bytearray = True

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        checked = PluginOptions.wrap(options, self.name).check(OPTIONS)
        super().__init__(options)
        self._max_containers: int = checked["max_containers"]
        #: Compact JSON in chunks, to be joined (`_compact_encoder`).
        self._chunks = _compact_encoder(self._refuse)
        digits: int = checked["max_int_digits"]
        if digits == sys.get_int_max_str_digits():
            decoder = json.JSONDecoder()  # int itself enforces it: the C scanner's fast path
        else:
            decoder = json.JSONDecoder(parse_int=_bounded_int(digits))
        # The scanner is what JSONDecoder.decode runs after two regex whitespace skips we do not
        # need (srpc never pads messages): calling it directly saves a third of the decode time.
        self._scan = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]  # typeshed

    def encode(self, message: Any) -> bytes:
        try:
            return "".join(self._chunks(message, 0)).encode()
        except RecursionError as exc:  # circular or absurdly deep structures
            raise EncodeError(
                f"codec 'json' cannot carry this value: it is circular or nested too deeply ({exc})"
            ) from None
        except ValueError as exc:  # an int beyond Python's digit limit, say
            raise EncodeError(f"codec 'json' cannot carry this value: {exc}") from None

    def request_encoder(
        self, session: str, procedure: str
    ) -> Callable[[int, tuple[Any, ...] | list[Any], int], bytes] | None:
        """A function ``(call_id, args, timeout_ms)`` that returns, byte for byte, what
        `encode` returns for ``[call_id, session, procedure, args, {}, {"timeout_ms":
        timeout_ms}]`` (a client's request: `srpc_core.protocol.encode_request`), with the
        parts that are the same in every call encoded once. None for a subclass that encodes
        in its own way."""
        if type(self).encode is not JsonCodec.encode:
            return None
        chunks = self._chunks
        # What the encoder writes for the two strings (`_compact_encoder`).
        middle = "," + json.encoder.encode_basestring(session) + ","
        middle += json.encoder.encode_basestring(procedure) + ","
        template = "[%d" + middle.replace("%", "%%") + '%s,{},{"timeout_ms":%d}]'

        def encode(call_id: int, args: tuple[Any, ...] | list[Any], timeout_ms: int) -> bytes:
            try:
                return (template % (call_id, "".join(chunks(args, 0)), timeout_ms)).encode()
            except RecursionError as exc:  # as `encode` says it
                raise EncodeError(
                    "codec 'json' cannot carry this value: it is circular or nested too "
                    f"deeply ({exc})"
                ) from None
            except ValueError as exc:
                raise EncodeError(f"codec 'json' cannot carry this value: {exc}") from None

        return encode

    def decode(self, data: bytes) -> Any:
        if len(data) > 2 * self._max_containers:  # shorter, it cannot exceed the budget
            self._check_containers(data)
        try:
            text = data.decode()
            value, end = self._scan(text, 0)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DecodeError(f"not valid JSON: {exc}") from None
        except StopIteration:  # the scanner's way of saying "no JSON value starts here"
            raise DecodeError("not valid JSON: expecting a value at the start") from None
        if end != len(text):
            raise DecodeError(f"not valid JSON: extra data after the message at offset {end}")
        return value

    def _check_containers(self, data: bytes) -> None:
        """Refuse a message of more than `max_containers` arrays and objects, before decoding."""
        budget = self._max_containers
        if data.count(b"[") + data.count(b"{") <= budget:  # an upper bound, at C speed
            return
        bare = _STRING.sub(b'""', data)  # brackets inside strings are not containers
        if bare.count(b"[") + bare.count(b"{") > budget:
            raise DecodeError(
                f"not accepted: the message holds more than {budget} arrays and objects "
                "(max_containers in [srpc.json])"
            )

    @staticmethod
    def _refuse(value: Any) -> NoReturn:
        raise EncodeError(
            f"codec 'json' cannot carry a value of type {type(value).__qualname__!r}; convert it "
            'to str, int, float, bool, None, list or dict, or use codec = "cbor"'
        )


def _bounded_int(digits: int) -> Callable[[str], int]:
    """`int` for the JSON decoder, refusing integers of more than `digits` digits."""

    def parse(text: str) -> int:
        if len(text.lstrip("-")) > digits:
            raise ValueError(
                f"an integer of {len(text.lstrip('-'))} digits is longer than max_int_digits "
                f"({digits}) in [srpc.json]"
            )
        return int(text)

    return parse


def _compact_encoder(default: Callable[[Any], Any]) -> Callable[[Any, int], Iterable[str]]:
    """A function ``(value, 0)`` that writes compact JSON in chunks, the way `json.dumps`
    does it, minus the per-call set-up of `JSONEncoder.encode` (it builds a new C encoder on
    every call)."""
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:  # no C accelerator in this Python: the portable road
        encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default)
        return lambda value, _: (encoder.encode(value),)
    # markers=None skips the circular-reference bookkeeping: a cycle ends in RecursionError.
    iterencode: Callable[[Any, int], Iterable[str]] = make_encoder(
        None, default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    return iterencode


@hookimpl
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer ``json``."""
    register("json", JsonCodec)


__all__ = [
    "DEFAULT_MAX_CONTAINERS",
    "DEFAULT_MAX_INT_DIGITS",
    "OPTIONS",
    "JsonCodec",
    "srpc_register_codecs",
]
