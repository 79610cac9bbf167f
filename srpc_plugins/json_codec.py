"""The ``json`` codec (the default): messages as compact UTF-8 JSON.

Carries None, bool, int, float (NaN and infinities too, as Python writes them), str, list and
dict. Tuples arrive as lists; dict keys that are int, float, bool or None arrive as strings
(JSON objects only have string keys). Anything else (bytes, set, datetime, custom objects) is
refused with an `EncodeError` naming its type: use the ``cbor`` codec for bytes and datetimes.

It has no options: a ``[srpc.json]`` table must be empty.
"""

from __future__ import annotations

import json
import json.encoder
import json.scanner
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from srpc_core.codec import Codec
from srpc_core.errors import DecodeError, EncodeError
from srpc_core.hookspecs import RegisterCodec, hookimpl
from srpc_core.options import PluginOptions


class JsonCodec(Codec):
    """JSON via the standard library's C-accelerated encoder and decoder."""

    name = "json"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        PluginOptions.wrap(options, self.name).check({})
        super().__init__(options)
        self._encode = _compact_encoder(self._refuse)
        decoder = json.JSONDecoder()
        # The scanner is what JSONDecoder.decode runs after two regex whitespace skips we do not
        # need (srpc never pads messages): calling it directly saves a third of the decode time.
        self._scan = json.scanner.make_scanner(decoder)  # type: ignore[arg-type]  # typeshed

    def encode(self, message: Any) -> bytes:
        try:
            return self._encode(message).encode()
        except (ValueError, RecursionError) as exc:  # circular or absurdly deep structures
            raise EncodeError(
                f"codec 'json' cannot carry this value: it is circular or nested too deeply ({exc})"
            ) from None

    def decode(self, data: bytes) -> Any:
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

    @staticmethod
    def _refuse(value: Any) -> NoReturn:
        raise EncodeError(
            f"codec 'json' cannot carry a value of type {type(value).__qualname__!r}; convert it "
            'to str, int, float, bool, None, list or dict, or use codec = "cbor"'
        )


def _compact_encoder(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    """A function that writes compact JSON, the way `json.dumps` does it, minus the per-call
    set-up of `JSONEncoder.encode` (it builds a new C encoder on every call)."""
    make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if make_encoder is None:  # no C accelerator in this Python: the portable road
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=default).encode
    # markers=None skips the circular-reference bookkeeping: a cycle ends in RecursionError.
    iterencode = make_encoder(
        None, default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )
    return lambda value: "".join(iterencode(value, 0))


@hookimpl
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer ``json``."""
    register("json", JsonCodec)
