"""`Collector`: the thread-safe recorder behind a server's metrics observer.

A successful call costs one dict lookup and one list append (no lock), and so does its start
(calls in flight); the periodic `snapshot` folds those samples into the histograms and the
counts off the hot path.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from srpc_core.metrics.stats import UNKNOWN_PROCEDURE, ProcedureStats


class Collector:
    """Thread-safe per-procedure call statistics, cheap to record into.

    `record` is called from every thread serving calls. A successful call of a known procedure
    only appends its duration to that procedure's pending list: `list.append` is atomic, so no
    lock is taken. Failures and unknown procedures (rare) take a lock. `snapshot`, called by one
    background thread, moves the pending durations into the histograms.
    """

    def __init__(self, procedures: Iterable[str]) -> None:
        self._lock = threading.Lock()
        # Built once and never resized, so the hot path may read it without the lock.
        self._pending: dict[str, list[float]] = {name: [] for name in procedures}
        #: Calls started since the last snapshot, one ``None`` each (the same lock-free
        #: append), and the total of all earlier ones: in flight = started - finished.
        self._starts: dict[str, list[None]] = {name: [] for name in self._pending}
        self._started: dict[str, int] = dict.fromkeys(self._pending, 0)
        self._stats: dict[str, ProcedureStats] = {}
        self._changed: set[str] = set()

    def hot_lists(self) -> tuple[dict[str, list[float]], dict[str, list[None]]]:
        """The pending durations and the starts, by procedure, for an observer that appends to
        them itself (what `record` of a success and `start` do, minus a call). The dicts are
        never resized; only `list.append` may be called on their lists."""
        return self._pending, self._starts

    def start(self, procedure: str) -> None:
        """Count one call of `procedure` that started (calls of unknown procedures are not
        counted in flight: they end at once)."""
        starts = self._starts.get(procedure)
        if starts is not None:
            starts.append(None)

    def record(self, procedure: str, seconds: float, error_type: str | None = None) -> None:
        """Count one call of `procedure` that took `seconds` and raised `error_type` (or not)."""
        if error_type is None:
            pending = self._pending.get(procedure)
            if pending is not None:
                pending.append(seconds)
                return
        with self._lock:
            name = procedure if procedure in self._pending else UNKNOWN_PROCEDURE
            stats = self._stats_of(name)
            if error_type is None:
                stats.latency.record(seconds)
            else:
                stats.record_error(error_type)
            self._changed.add(name)

    def snapshot(self, changed_only: bool = False) -> dict[str, ProcedureStats]:
        """Copies of the cumulative stats of every called procedure.

        With `changed_only`, only those with calls since the previous snapshot.
        """
        with self._lock:
            for name, pending in self._pending.items():
                # Take exactly the first n samples: appends racing with us land after them.
                n = len(pending)
                if n:
                    batch = pending[:n]
                    del pending[:n]
                    self._stats_of(name).latency.record_many(batch)
                    self._changed.add(name)
            # Starts after finishes: every call counted finished has been counted started.
            for name, starts in self._starts.items():
                n = len(starts)
                if n:
                    del starts[:n]
                    self._started[name] += n
                    self._changed.add(name)
                if self._started[name]:
                    stats = self._stats_of(name)
                    in_flight = max(self._started[name] - stats.calls, 0)
                    if in_flight != stats.in_flight:
                        stats.in_flight = in_flight
                        self._changed.add(name)
            names = self._changed if changed_only else set(self._stats)
            self._changed = set()
            return {name: self._stats[name].copy() for name in names}

    def _stats_of(self, name: str) -> ProcedureStats:
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = ProcedureStats()
        return stats


__all__ = [
    "Collector",
]
