"""Sample values for codec round trips, and the strict equality they are checked with."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

#: Values every codec that claims a type must round-trip exactly, by type. Integers stay within
#: 64 bits (what most binary formats carry); a codec that carries more lists extra values.
SAMPLES: dict[type, tuple[Any, ...]] = {
    type(None): (None,),
    bool: (True, False),
    int: (
        0,
        1,
        -1,
        23,
        24,
        255,
        256,
        65_536,
        2**31 - 1,
        -(2**31),
        2**32,
        2**53 + 1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
    ),
    float: (0.0, -0.0, 1.5, -2.25, 0.1, 1e300, 5e-324, 2.0**53, math.inf, -math.inf, math.nan),
    str: ("", "srpc", "ünïcødé ✓ 🚀 你好", "\x00srpc", 'line\nbreak\ttab"quote\\', "x" * 70_000),
    bytes: (b"", b"\x00srpc", bytes(range(256)), b"\xff" * 70_000),
    list: ([], [1, "two", None, [3.5, [True]]], [[[]]]),
    dict: ({}, {"a": 1}, {"nested": {"list": [1, {"deep": None}]}, "": "empty key", "ü": "ü"}),
    datetime: (
        datetime(2024, 2, 29, 12, 30, 45, 123_456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1970, 1, 1, tzinfo=timezone(timedelta(hours=-8))),
    ),
    date: (date(2024, 2, 29), date(1, 1, 1)),
    Decimal: (Decimal("3.14159"), Decimal("-1E-30")),
    uuid.UUID: (uuid.UUID("12345678-1234-5678-1234-567812345678"),),
}


class Unsendable:
    """A plain object: no codec can carry it."""

    def __repr__(self) -> str:
        return "Unsendable()"


#: Values of types a codec may not claim; each must be refused with an `EncodeError` unless the
#: codec declares its type in `value_types`.
CANDIDATES_TO_REFUSE: tuple[Any, ...] = (
    {1, 2},
    frozenset({"a"}),
    1 + 2j,
    Unsendable(),
    object(),
    b"bytes",
    datetime(2024, 1, 1, tzinfo=UTC),
    date(2024, 1, 1),
    Decimal("1.5"),
    uuid.UUID(int=1),
)


def same(sent: Any, received: Any) -> bool:
    """True if `received` is `sent` after a round trip: equal, and of the same type.

    Tuples may come back as lists. NaN equals NaN and the sign of zero counts. Aware datetimes
    must name the same instant and stay aware (the offset may be normalised).
    """
    if isinstance(sent, tuple):
        sent = list(sent)
    if type(sent) is not type(received):
        return False
    if isinstance(sent, float):
        if math.isnan(sent):
            return math.isnan(received)
        return sent == received and math.copysign(1, sent) == math.copysign(1, received)
    if isinstance(sent, list):
        return len(sent) == len(received) and all(map(same, sent, received))
    if isinstance(sent, dict):
        return sent.keys() == received.keys() and all(same(v, received[k]) for k, v in sent.items())
    if isinstance(sent, datetime):
        return (sent.tzinfo is None) == (received.tzinfo is None) and sent == received
    return bool(sent == received)


def short_repr(value: Any, limit: int = 80) -> str:
    """`repr` cut to `limit` characters, for failure messages about 70 kB strings."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + "...)"


__all__ = [
    "CANDIDATES_TO_REFUSE",
    "SAMPLES",
    "Unsendable",
    "same",
    "short_repr",
]
