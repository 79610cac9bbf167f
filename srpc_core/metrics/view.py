"""The reader's model: `MetricsAggregator` turns the records of every writer into a `MetricsView`.

A `MetricsView` is what the dashboard shows and what ``srpc metrics --json`` prints: the
servers in view, one `ProcedureView` per procedure and their total.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from srpc_core.metrics.histogram import latency_summary
from srpc_core.metrics.records import HEARTBEAT_SECONDS, WriterInfo
from srpc_core.metrics.stats import MAX_ERROR_TYPES, UNKNOWN_PROCEDURE, ProcedureStats


@dataclass
class _Writer:
    """What the reader knows of one writer."""

    writer: str
    first_seen: float
    last_seen: float
    info: WriterInfo | None = None
    stopped: float | None = None
    #: Whether the reader saw this writer's first record (so it knows all its history).
    seen_from_start: bool = False
    procedures: dict[str, ProcedureStats] = field(default_factory=dict)
    #: (record time, cumulative calls) per procedure, for calls per second.
    history: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    @property
    def started(self) -> float:
        return self.info.started if self.info else self.first_seen

    def stale_after(self) -> float:
        """Seconds of silence after which this writer is taken for dead (killed, no stop)."""
        heartbeat = self.info.heartbeat if self.info else HEARTBEAT_SECONDS
        flush = self.info.flush_interval if self.info else 1.0
        return 2 * heartbeat + flush + 1.0

    def state(self, now: float) -> str:
        """``live``, ``stopped`` (said so) or ``silent`` (no record for too long)."""
        if self.stopped is not None:
            return "stopped"
        return "silent" if now - self.last_seen > self.stale_after() else "live"

    def end(self, now: float) -> float:
        """When this writer's server ended (infinity while it is live)."""
        state = self.state(now)
        if state == "stopped":
            return self.stopped if self.stopped is not None else self.last_seen
        return self.last_seen if state == "silent" else math.inf


@dataclass(frozen=True)
class ServerView:
    """One server process in the view (a writer of the log)."""

    writer: str
    address: str
    service: str
    pid: int | None
    host: str
    started: float
    uptime: float
    state: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProcedureView:
    """One row of the dashboard: a procedure's numbers summed over the servers in view."""

    name: str
    stats: ProcedureStats
    calls_per_second: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; durations in seconds, None when there was no successful call."""
        stats = self.stats
        return {
            "name": self.name,
            "ok": stats.ok,
            "failed": stats.failed,
            "in_flight": stats.in_flight,
            "error_rate": stats.error_rate,
            "errors": dict(stats.top_errors(MAX_ERROR_TYPES + 1)),
            "calls_per_second": self.calls_per_second,
            "latency": latency_summary(stats.latency),
        }


@dataclass(frozen=True)
class MetricsView:
    """Everything the dashboard shows at one moment.

    Attributes:
        time: when the view was taken (Unix seconds). window: seconds behind calls per second.
        servers: the servers in view: those running now, or if none is, those of the last run.
        procedures: one row per procedure, in the servers' declaration order.
        total: all procedures together.
    """

    time: float
    window: float
    servers: list[ServerView]
    procedures: list[ProcedureView]
    total: ProcedureView

    def to_json(self) -> dict[str, Any]:
        """The view as printed by ``srpc metrics --json`` (see docs/metrics.md)."""
        return {
            "time": self.time,
            "window": self.window,
            "servers": [server.to_json() for server in self.servers],
            "procedures": [procedure.to_json() for procedure in self.procedures],
            "total": self.total.to_json(),
        }


class MetricsAggregator:
    """Turns log records from any number of writers into a `MetricsView`.

    Which writers count: the servers of the *current run*, i.e. every writer still alive when
    the most recently started writer started. Several processes sharing a log are summed; a
    server that stopped before a newer one started (a restart) drops out, like a restarted
    server's counters; when every server has stopped, the last run stays in view.
    """

    def __init__(self, window: float = 5.0) -> None:
        if window <= 0:
            raise ValueError("the window must be a positive number of seconds")
        self.window = window
        self._writers: dict[str, _Writer] = {}
        self.ignored = 0  # records that did not parse

    def feed(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Take in records, as `LogFollower.poll` returns them."""
        for record in records:
            try:
                self._feed_one(record)
            except (KeyError, TypeError, ValueError, AttributeError):
                self.ignored += 1

    def _feed_one(self, record: Mapping[str, Any]) -> None:
        now, kind = float(record["time"]), record.get("type")
        if kind not in ("writer", "stats", "stop"):
            return  # a newer writer's optional record type: skip it
        writer = self._writers.get(record["writer"])
        if writer is None:
            writer = self._writers[record["writer"]] = _Writer(record["writer"], now, now)
            writer.seen_from_start = record.get("seq") == 0
        writer.last_seen = max(writer.last_seen, now)
        if kind == "writer":
            writer.info = WriterInfo.from_record(record)
        elif kind == "stop":
            writer.stopped = now
        else:
            writer.stopped = None  # a record after a stop: it is alive after all
            self._feed_stats(writer, now, record["procedures"])

    def _feed_stats(self, writer: _Writer, now: float, procedures: Mapping[str, Any]) -> None:
        for name, data in procedures.items():
            stats = ProcedureStats.from_json(data)
            writer.procedures[name] = stats
            history = writer.history.setdefault(name, deque())
            history.append((now, stats.calls))
            # Keep one point at or before the window's start, drop older ones.
            while len(history) > 2 and history[1][0] <= now - self.window:
                history.popleft()

    def view(self, now: float | None = None) -> MetricsView:
        """The numbers as of `now` (default: the current time)."""
        now = time.time() if now is None else now
        writers = self._current_run(now)
        names = _procedure_order(writers)
        rows = []
        for name in names:
            merged = ProcedureStats()
            for writer in writers:
                stats = writer.procedures.get(name)
                if stats is not None:
                    merged.merge(stats)
                    if stats.in_flight and writer.state(now) != "live":
                        merged.in_flight -= stats.in_flight  # a stopped server runs nothing
            rate = sum(self._rate(writer, name, now) for writer in writers)
            rows.append(ProcedureView(name, merged, rate))
        total = ProcedureStats()
        for row in rows:
            total.merge(row.stats)
        servers = [_server_view(writer, now) for writer in writers]
        return MetricsView(
            now,
            self.window,
            servers,
            rows,
            ProcedureView("total", total, sum(row.calls_per_second for row in rows)),
        )

    def _current_run(self, now: float) -> list[_Writer]:
        if not self._writers:
            return []
        newest_start = max(writer.started for writer in self._writers.values())
        current = [w for w in self._writers.values() if w.end(now) >= newest_start]
        # Writers of earlier runs can never come back into view: forget them (bounded memory).
        self._writers = {writer.writer: writer for writer in current}
        return sorted(current, key=lambda writer: (writer.started, writer.writer))

    def _rate(self, writer: _Writer, name: str, now: float) -> float:
        """Calls per second of `name` at `writer` over the window ending at `now`."""
        history = writer.history.get(name)
        if not history:
            return 0.0
        begin = now - self.window
        before = [calls for at, calls in history if at <= begin]
        if before:
            baseline = before[-1]
        elif writer.seen_from_start:
            baseline = 0  # no record before the window: there were no calls before it
        else:
            baseline = history[0][1]  # history unknown: count only what we saw
        span = self.window
        if writer.seen_from_start and writer.started > begin:
            span = max(now - writer.started, 1e-3)  # the server has run less than a window
        return max(history[-1][1] - baseline, 0) / span


def _procedure_order(writers: Sequence[_Writer]) -> list[str]:
    names: dict[str, None] = {}
    for writer in writers:
        for name in writer.info.procedures if writer.info else ():
            names.setdefault(name, None)
    extra = sorted({n for w in writers for n in w.procedures if n not in names})
    # The unknown-procedure row, if any, goes last.
    extra.sort(key=lambda name: name == UNKNOWN_PROCEDURE)
    return [*names, *extra]


def _server_view(writer: _Writer, now: float) -> ServerView:
    info = writer.info
    end = writer.end(now)
    return ServerView(
        writer=writer.writer,
        address=info.address if info else "?",
        service=info.service if info else "?",
        pid=info.pid if info else None,
        host=info.host if info else "?",
        started=writer.started,
        uptime=max((now if math.isinf(end) else end) - writer.started, 0.0),
        state=writer.state(now),
    )


__all__ = [
    "MetricsAggregator",
    "MetricsView",
    "ProcedureView",
    "ServerView",
]
