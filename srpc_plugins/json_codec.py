"""The ``json`` codec (the default): messages as compact UTF-8 JSON.

Carries None, bool, int, float (NaN and infinities too, as Python writes them), str, list and
dict. Tuples arrive as lists; dict keys that are int, float, bool or None arrive as strings
(JSON objects only have string keys). Anything else (bytes, set, datetime, custom objects) is
refused with an `EncodeError` naming its type: use the ``cbor`` codec for bytes and datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NoReturn

from srpc_core.codec import Codec
from srpc_core.errors import DecodeError, EncodeError
from srpc_core.hookspecs import RegisterCodec, hookimpl


class JsonCodec(Codec):
    """JSON via the standard library's C-accelerated encoder and decoder."""

    name = "json"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=self._refuse)
        self._encode = encoder.encode
        self._decode = json.JSONDecoder().decode

    def encode(self, message: Any) -> bytes:
        try:
            return self._encode(message).encode()
        except (ValueError, RecursionError) as exc:  # circular or absurdly deep structures
            raise EncodeError(f"codec 'json' cannot carry this value: {exc}") from None

    def decode(self, data: bytes) -> Any:
        try:
            return self._decode(data.decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DecodeError(f"not valid JSON: {exc}") from None

    @staticmethod
    def _refuse(value: Any) -> NoReturn:
        raise EncodeError(
            f"codec 'json' cannot carry a value of type {type(value).__qualname__!r}; convert it "
            'to str, int, float, bool, None, list or dict, or use codec = "cbor"'
        )


@hookimpl
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer ``json``."""
    register("json", JsonCodec)
