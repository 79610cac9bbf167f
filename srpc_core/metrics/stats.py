"""`ProcedureStats`: what is known about the calls of one procedure (latency and errors)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from srpc_core.metrics.histogram import Histogram, as_int

#: The row that counts calls of procedures the server does not serve; one row for all such
#: names, because a client choosing names must not be able to grow the server's memory.
UNKNOWN_PROCEDURE = "<unknown>"
#: Distinct exception type names kept per procedure; the rest are counted as `OTHER_ERRORS`.
MAX_ERROR_TYPES = 20
OTHER_ERRORS = "(other)"


@dataclass
class ProcedureStats:
    """What is known about the calls of one procedure.

    Attributes:
        latency: the durations of the successful calls. Failed calls are not in it: many
            fail fast (bad arguments) and would make the procedure look quicker than it is.
        errors: failed calls by exception class name, e.g. ``{"ZeroDivisionError": 3}``.
        in_flight: calls running when the numbers were taken.
    """

    latency: Histogram = field(default_factory=Histogram)
    errors: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0

    @property
    def ok(self) -> int:
        """Successful calls."""
        return self.latency.count

    @property
    def failed(self) -> int:
        """Calls that raised."""
        return sum(self.errors.values())

    @property
    def calls(self) -> int:
        """All calls."""
        return self.ok + self.failed

    @property
    def error_rate(self) -> float:
        """Failed calls / all calls (0.0 when there were none)."""
        calls = self.calls
        return self.failed / calls if calls else 0.0

    def record_error(self, type_name: str, count: int = 1) -> None:
        """Count `count` failures raising `type_name`, keeping at most `MAX_ERROR_TYPES` names."""
        if type_name not in self.errors and len(self.errors) >= MAX_ERROR_TYPES:
            type_name = OTHER_ERRORS
        self.errors[type_name] = self.errors.get(type_name, 0) + count

    def top_errors(self, limit: int = 3) -> list[tuple[str, int]]:
        """The `limit` most frequent exception types, most frequent first."""
        return sorted(self.errors.items(), key=lambda item: (-item[1], item[0]))[:limit]

    def merge(self, other: ProcedureStats) -> None:
        """Add `other`'s calls to these."""
        self.latency.merge(other.latency)
        for type_name, count in other.errors.items():
            self.record_error(type_name, count)
        self.in_flight += other.in_flight

    def copy(self) -> ProcedureStats:
        """An independent copy."""
        return ProcedureStats(self.latency.copy(), dict(self.errors), self.in_flight)

    def to_json(self) -> dict[str, Any]:
        """The per-procedure object of a ``stats`` record (see docs/metrics.md)."""
        latency = self.latency
        data = {
            "ok": latency.count,
            "errors": dict(self.errors),
            "sum": latency.total,
            "min": latency.min if latency.count else None,
            "max": latency.max if latency.count else None,
            "hist": latency.to_json(),
        }
        if self.in_flight:  # optional: absent means none
            data["in_flight"] = self.in_flight
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcedureStats:
        """Parse `to_json` output; raise ValueError/TypeError/KeyError when it is malformed."""
        latency = Histogram.from_json(
            data["hist"], data.get("sum") or 0.0, data.get("min") or 0.0, data.get("max") or 0.0
        )
        if latency.count != as_int(data["ok"]):
            raise ValueError("'ok' does not match the histogram's total count")
        errors = {str(name): as_int(count) for name, count in dict(data["errors"]).items()}
        in_flight = as_int(data.get("in_flight", 0))  # optional: absent in older logs
        if in_flight < 0:
            raise ValueError("'in_flight' is negative")
        return cls(latency, errors, in_flight)


__all__ = [
    "MAX_ERROR_TYPES",
    "OTHER_ERRORS",
    "UNKNOWN_PROCEDURE",
    "ProcedureStats",
]
