"""The Codec interface: how Python values become bytes and back.

A codec plugin subclasses `Codec` and registers the class under a name in
`srpc_register_codecs` (see docs/plugins.md). One codec instance is shared by every thread of a
client or server, so `encode` and `decode` must be thread-safe (stateless is easiest).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar


class Codec(ABC):
    """Turns the messages of the srpc protocol into bytes and back.

    A message is built from `None`, `bool`, `int`, `float`, `str`, `list` and `dict` with `str`
    keys (the JSON data model); a codec may carry more (CBOR carries `bytes`, `datetime`,
    big integers) and says so in `value_types`. Tuples are sent as lists.

    Subclasses are constructed with the options of their own table in `srpc.toml`
    (``[srpc.<name>]``), an empty mapping when there is none.
    """

    #: The name this codec is registered under; filled in by the registry if left empty.
    name: ClassVar[str] = ""
    #: The Python types this codec round-trips exactly (used by the conformance kit).
    value_types: ClassVar[tuple[type, ...]] = (type(None), bool, int, float, str, list, dict)
    #: Whether it round-trips NaN, inf and -inf. A codec whose format has no such numbers
    #: (strict JSON) sets it False and refuses them with an `EncodeError`, never turning them
    #: into something else (``null``); the conformance kit checks either promise.
    nonfinite_floats: ClassVar[bool] = True
    #: Whether `decode` accepts a `bytearray` as well as `bytes`. Stream transports read a
    #: large message into a bytearray; a codec that says True decodes it in place, and for one
    #: that says False (the default, safe for v0.1 codecs) srpc copies it to bytes first.
    decodes_bytearray: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: Mapping[str, Any] = dict(options or {})

    @abstractmethod
    def encode(self, message: Any) -> bytes:
        """Return `message` as bytes.

        Raise `srpc_core.errors.EncodeError` naming the offending value's type and this codec
        when a value cannot be carried (e.g. ``"codec 'json' cannot carry a value of type
        'set'"``). The message must never start with ``b"\\x00srpc"`` (reserved for control
        messages).
        """

    @abstractmethod
    def decode(self, data: bytes) -> Any:
        """Return the message encoded in `data`.

        Raise `srpc_core.errors.DecodeError` for bytes that are not a valid encoding. Must
        never execute code or import modules named by the data.
        """


__all__ = [
    "Codec",
]
