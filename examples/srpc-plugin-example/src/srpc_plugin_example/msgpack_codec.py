"""The ``msgpack-example`` codec: srpc messages as MessagePack (https://msgpack.org), via msgpack.

Its name is not ``msgpack``: srpc has a built-in codec of that name since 0.2, and two plugins
that offer one name stop srpc with an error naming both.

Carries None, bool, int (64 bits: -2**63 to 2**64 - 1), float, str, bytes, list, dict and
time-zone-aware datetime (the standard timestamp extension; it arrives in UTC). Tuples arrive as
lists. Anything else is refused with an `EncodeError` naming its type.

Decoding is safe for hostile input: extension types other than the timestamp are refused, map
keys must be str or bytes (others let an attacker build maps whose hashes collide), nesting and
lengths are bounded by msgpack, and bytes after the message are refused.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, NoReturn

import msgpack
from srpc_core import Codec, ConfigError, DecodeError, EncodeError, hookimpl
from srpc_core.hookspecs import RegisterCodec


class MsgpackCodec(Codec):
    """MessagePack with bin/str separation and the timestamp extension."""

    name = "msgpack-example"
    value_types = (type(None), bool, int, float, str, bytes, list, dict, datetime.datetime)

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        if self.options:
            raise ConfigError(
                f"unknown key(s) {', '.join(sorted(self.options))} in [srpc.msgpack-example]; "
                "the msgpack-example codec has no options"
            )

    def encode(self, message: Any) -> bytes:
        try:
            data: bytes = msgpack.packb(message, use_bin_type=True, datetime=True, default=_refuse)
        except OverflowError:
            raise EncodeError(
                "codec 'msgpack-example' cannot carry a value of type 'int' outside "
                "-2**63 .. 2**64 - 1"
            ) from None
        except ValueError as exc:  # a naive datetime, a structure that contains itself
            raise EncodeError(f"codec 'msgpack-example' cannot carry this value: {exc}") from None
        return data

    def decode(self, data: bytes) -> Any:
        try:
            return msgpack.unpackb(
                data, raw=False, timestamp=3, strict_map_key=True, ext_hook=_refuse_extension
            )
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
            raise DecodeError(f"not valid srpc MessagePack: {exc or type(exc).__name__}") from None


def _refuse(value: Any) -> NoReturn:
    raise EncodeError(
        f"codec 'msgpack-example' cannot carry a value of type {type(value).__qualname__!r}; "
        "convert it to str, bytes, int, float, bool, None, list, dict or an aware datetime"
    )


def _refuse_extension(code: int, data: bytes) -> NoReturn:
    raise ValueError(f"MessagePack extension type {code} is not allowed in srpc messages")


@hookimpl
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer ``msgpack-example``."""
    register("msgpack-example", MsgpackCodec)
