"""Call metrics: collecting them, the metrics log format, and reading the log back.

This module is pure Python with no dependency; the server side (the `metrics_log` plugin) and
the reader side (the dashboard, `srpc metrics --json`, third-party tools) both build on it.
docs/metrics.md documents the format for people who read the log with other tools.

Four parts, in the order data flows:

* `Histogram` and `ProcedureStats`: per-procedure numbers. Latency goes into log-linear buckets
  (`BUCKETS_PER_OCTAVE` per power of two, so any percentile is within ~1.1% of the exact value)
  whose memory is bounded, and which merge by adding bucket counts, so several processes
  aggregate exactly.
* `Collector`: the thread-safe recorder behind a server's observer. A successful call costs one
  dict lookup and one list append (no lock); the periodic `snapshot` folds those samples into
  the histograms off the hot path.
* The log format: JSON lines, one record per line, see `writer_record`, `stats_record` and
  `stop_record`. Each ``stats`` record carries *cumulative* numbers since the writer started,
  never deltas: the latest record of a writer is its whole story, so a reader that starts
  late, misses lines (rotation, truncation, a torn last line), or follows several writers
  still gets exact totals by keeping the latest record per writer and procedure and merging.
* `LogFollower` follows the log file like ``tail -F``; `MetricsAggregator` turns the records
  of every writer into a `MetricsView` (what the dashboard shows and ``--json`` prints).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import mul
from typing import Any

#: Version of the log format; readers skip records with another ``v``. Adding optional fields
#: keeps the version; changing or removing one bumps it.
FORMAT_VERSION = 1
#: Histogram resolution: buckets per power of two. Each bucket spans a factor 2**(1/32) (2.2%),
#: and the geometric middle of a bucket is within 1.09% of any value in it.
BUCKETS_PER_OCTAVE = 32
#: Bucket 0 starts at 2**-30 s (about 1 ns); smaller values are counted in bucket 0.
_LOWEST_OCTAVE = -30
#: The last bucket ends at 2**12 s (68 minutes); larger values are counted in it.
_HIGHEST_OCTAVE = 12
_INDEX_OFFSET = -_LOWEST_OCTAVE * BUCKETS_PER_OCTAVE
MAX_BUCKET = (_HIGHEST_OCTAVE - _LOWEST_OCTAVE) * BUCKETS_PER_OCTAVE - 1
_MIN_SECONDS = 2.0**_LOWEST_OCTAVE
_MAX_SECONDS = 2.0**_HIGHEST_OCTAVE

#: The row that counts calls of procedures the server does not serve; one row for all such
#: names, because a client choosing names must not be able to grow the server's memory.
UNKNOWN_PROCEDURE = "<unknown>"
#: Distinct exception type names kept per procedure; the rest are counted as `OTHER_ERRORS`.
MAX_ERROR_TYPES = 20
OTHER_ERRORS = "(other)"

#: A writer writes at least one record this often while idle, so readers know it is alive.
HEARTBEAT_SECONDS = 5.0
#: A writer repeats its identity and all its procedures this often, so a reader that starts in
#: the middle of a log (a rotated or huge file) has everything within this time.
FULL_SNAPSHOT_SECONDS = 60.0


# -- latency histogram -------------------------------------------------------------------------


def bucket_of(seconds: float) -> int:
    """The histogram bucket counting a duration of `seconds`."""
    clamped = min(max(seconds, _MIN_SECONDS), _MAX_SECONDS)
    return min(math.floor(math.log2(clamped) * BUCKETS_PER_OCTAVE) + _INDEX_OFFSET, MAX_BUCKET)


def bucket_bounds(index: int) -> tuple[float, float]:
    """The durations ``[low, high)`` that bucket `index` counts."""
    low = 2.0 ** ((index - _INDEX_OFFSET) / BUCKETS_PER_OCTAVE)
    return low, low * 2.0 ** (1 / BUCKETS_PER_OCTAVE)


def bucket_value(index: int) -> float:
    """The value that stands for bucket `index`: its geometric middle (least relative error)."""
    return 2.0 ** ((index - _INDEX_OFFSET + 0.5) / BUCKETS_PER_OCTAVE)


class Histogram:
    """Durations in log-linear buckets plus their exact count, sum, min and max.

    Memory is bounded by the bucket range (at most `MAX_BUCKET` + 1 counters, in practice a
    few dozen: latencies cluster). Not thread-safe on its own: `Collector` guards it.
    """

    __slots__ = ("count", "counts", "max", "min", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def record(self, seconds: float) -> None:
        """Count one duration."""
        index = bucket_of(seconds)
        self.counts[index] = self.counts.get(index, 0) + 1
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)

    def record_many(self, samples: Sequence[float]) -> None:
        """Count many durations at once (how `Collector` folds in a batch).

        The bucket indexes are computed with `map` over C functions rather than a Python loop
        (about 0.2 µs a sample instead of 1 µs): this runs in the server process.
        """
        if not samples:
            return
        try:
            scaled = map(mul, map(math.log2, samples), repeat(float(BUCKETS_PER_OCTAVE)))
            raw_counts = Counter(map(math.floor, scaled))
        except (ValueError, OverflowError):  # a zero or infinite duration: take the slow road
            raw_counts = Counter(bucket_of(seconds) - _INDEX_OFFSET for seconds in samples)
        for raw, count in raw_counts.items():
            index = min(max(raw + _INDEX_OFFSET, 0), MAX_BUCKET)
            self.counts[index] = self.counts.get(index, 0) + count
        self.count += len(samples)
        self.total += sum(samples)
        self.min = min(self.min, min(samples))
        self.max = max(self.max, max(samples))

    def merge(self, other: Histogram) -> None:
        """Add `other`'s durations to this histogram (exact: bucket counts add up)."""
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def copy(self) -> Histogram:
        """An independent copy."""
        twin = Histogram()
        twin.merge(self)
        return twin

    @property
    def mean(self) -> float | None:
        """The exact mean, or None when empty."""
        return self.total / self.count if self.count else None

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile (`fraction` from 0 to 1), or None when empty.

        That is the smallest recorded value with at least `fraction` of all values <= it. The
        lowest and highest ranks are the exact min and max; others are the geometric middle of
        the part of their bucket inside [min, max], within 1.09% of the true value.
        """
        if not self.count:
            return None
        # The small epsilon keeps float noise (0.95 * 100 = 95.00000000000001) off the rank.
        rank = max(1, math.ceil(fraction * self.count - 1e-9))
        if rank == 1 or rank >= self.count:
            return self.min if rank == 1 else self.max
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen >= rank:
                break
        low, high = bucket_bounds(index)
        low = min(max(low, self.min), self.max)
        high = max(min(high, self.max), self.min)
        return math.sqrt(low * high)

    def to_json(self) -> dict[str, Any]:
        """The buckets as ``{"start": first index, "counts": [count per bucket from there]}``."""
        if not self.counts:
            return {"start": 0, "counts": []}
        start, end = min(self.counts), max(self.counts)
        return {"start": start, "counts": [self.counts.get(i, 0) for i in range(start, end + 1)]}

    @classmethod
    def from_json(
        cls, buckets: Mapping[str, Any], total: float, low: float, high: float
    ) -> Histogram:
        """Rebuild a histogram from `to_json` output and the exact sum, min and max."""
        histogram = cls()
        start = _as_int(buckets.get("start", 0))
        for offset, count in enumerate(buckets.get("counts", [])):
            if _as_int(count) > 0:
                histogram.counts[start + offset] = int(count)
        histogram.count = sum(histogram.counts.values())
        if histogram.count:
            histogram.total, histogram.min, histogram.max = float(total), float(low), float(high)
        return histogram


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


@dataclass
class ProcedureStats:
    """What is known about the calls of one procedure.

    Attributes:
        latency: the durations of the successful calls. Failed calls are not in it: many
            fail fast (bad arguments) and would make the procedure look quicker than it is.
        errors: failed calls by exception class name, e.g. ``{"ZeroDivisionError": 3}``.
    """

    latency: Histogram = field(default_factory=Histogram)
    errors: dict[str, int] = field(default_factory=dict)

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

    def copy(self) -> ProcedureStats:
        """An independent copy."""
        return ProcedureStats(self.latency.copy(), dict(self.errors))

    def to_json(self) -> dict[str, Any]:
        """The per-procedure object of a ``stats`` record (see docs/metrics.md)."""
        latency = self.latency
        return {
            "ok": latency.count,
            "errors": dict(self.errors),
            "sum": latency.total,
            "min": latency.min if latency.count else None,
            "max": latency.max if latency.count else None,
            "hist": latency.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProcedureStats:
        """Parse `to_json` output; raise ValueError/TypeError/KeyError when it is malformed."""
        latency = Histogram.from_json(
            data["hist"], data.get("sum") or 0.0, data.get("min") or 0.0, data.get("max") or 0.0
        )
        if latency.count != _as_int(data["ok"]):
            raise ValueError("'ok' does not match the histogram's total count")
        errors = {str(name): _as_int(count) for name, count in dict(data["errors"]).items()}
        return cls(latency, errors)


# -- the collector (server side) ---------------------------------------------------------------


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
        self._stats: dict[str, ProcedureStats] = {}
        self._changed: set[str] = set()

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
            names = self._changed if changed_only else set(self._stats)
            self._changed = set()
            return {name: self._stats[name].copy() for name in names}

    def _stats_of(self, name: str) -> ProcedureStats:
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = ProcedureStats()
        return stats


# -- the log format ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WriterInfo:
    """Who writes to a metrics log: one server process (the ``writer`` record's fields).

    Attributes:
        writer: an id unique to this server run (several processes may share a log, and a
            restarted server is a new writer).
        pid, host: the writing process. service: the interface's dotted name.
        address: where clients reach the server, e.g. ``tcp://127.0.0.1:5000``.
        transport, codec: its settings. started: its start time (Unix seconds).
        procedures: the procedures it serves, in declaration order.
        flush_interval: seconds between its records while busy.
        heartbeat: the longest it stays silent while alive.
    """

    writer: str
    pid: int
    host: str
    service: str
    address: str
    transport: str
    codec: str
    started: float
    procedures: tuple[str, ...]
    flush_interval: float = 1.0
    heartbeat: float = HEARTBEAT_SECONDS

    @classmethod
    def new(
        cls,
        service: str,
        address: str,
        transport: str,
        codec: str,
        procedures: Iterable[str],
        flush_interval: float = 1.0,
    ) -> WriterInfo:
        """The identity of a server starting now in this process."""
        return cls(
            writer=os.urandom(6).hex(),
            pid=os.getpid(),
            host=socket.gethostname(),
            service=service,
            address=address,
            transport=transport,
            codec=codec,
            started=time.time(),
            procedures=tuple(procedures),
            flush_interval=flush_interval,
            heartbeat=max(HEARTBEAT_SECONDS, flush_interval),
        )

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WriterInfo:
        """Parse a ``writer`` record; raise ValueError/TypeError/KeyError when malformed."""
        return cls(
            writer=str(record["writer"]),
            pid=_as_int(record["pid"]),
            host=str(record["host"]),
            service=str(record["service"]),
            address=str(record["address"]),
            transport=str(record.get("transport", "")),
            codec=str(record.get("codec", "")),
            started=float(record["started"]),
            procedures=tuple(str(name) for name in record["procedures"]),
            flush_interval=float(record.get("flush_interval", 1.0)),
            heartbeat=float(record.get("heartbeat", HEARTBEAT_SECONDS)),
        )


def writer_record(info: WriterInfo, seq: int, now: float) -> dict[str, Any]:
    """A ``writer`` record: who writes the records that follow (first, and then repeated).

    `seq` numbers a writer's records from 0, so a reader knows whether it saw the first one.
    """
    return {
        "v": FORMAT_VERSION,
        "type": "writer",
        "time": now,
        "writer": info.writer,
        "seq": seq,
        "pid": info.pid,
        "host": info.host,
        "service": info.service,
        "address": info.address,
        "transport": info.transport,
        "codec": info.codec,
        "started": info.started,
        "procedures": list(info.procedures),
        "flush_interval": info.flush_interval,
        "heartbeat": info.heartbeat,
        "buckets_per_octave": BUCKETS_PER_OCTAVE,
    }


def stats_record(
    writer: str, seq: int, now: float, stats: Mapping[str, ProcedureStats], full: bool
) -> dict[str, Any]:
    """A ``stats`` record: cumulative numbers of the procedures in `stats`.

    `full` says `stats` holds every procedure called so far; otherwise only those called since
    the writer's previous record. An empty record is a heartbeat.
    """
    return {
        "v": FORMAT_VERSION,
        "type": "stats",
        "time": now,
        "writer": writer,
        "seq": seq,
        "full": full,
        "procedures": {name: value.to_json() for name, value in stats.items()},
    }


def stop_record(writer: str, seq: int, now: float) -> dict[str, Any]:
    """A ``stop`` record: the writer's server stopped cleanly; nothing follows from it."""
    return {"v": FORMAT_VERSION, "type": "stop", "time": now, "writer": writer, "seq": seq}


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One log line: compact JSON and a newline."""
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def decode_line(line: bytes) -> dict[str, Any] | None:
    """The record on one log line, or None when it is not a record of this format version."""
    try:
        record = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError: a torn or foreign line
        return None
    if not isinstance(record, dict) or record.get("v") != FORMAT_VERSION:
        return None
    if not isinstance(record.get("writer"), str) or not isinstance(record.get("time"), int | float):
        return None
    return record


# -- following the log -------------------------------------------------------------------------


class LogFollower:
    """Reads the records appended to a log file, following it like ``tail -F``.

    Each `poll` returns the complete records written since the previous one. It copes with a
    file that does not exist yet (or is deleted), truncation (starts again at the top),
    rotation (finishes the old file, then reads the new one from its start), and a last line
    still being written (kept until its newline arrives). Lines that are not records of this
    format version are skipped and counted in `skipped`.

    A log bigger than `initial_bytes` is read from that many bytes before its end: writers
    repeat everything every `FULL_SNAPSHOT_SECONDS`, so the tail is enough.
    """

    #: A partial line longer than this is garbage, not a record in progress: drop it.
    MAX_LINE_BYTES = 16 * 1024 * 1024

    def __init__(self, path: str | os.PathLike[str], initial_bytes: int = 32 * 1024 * 1024) -> None:
        self.path = os.fspath(path)
        self.skipped = 0
        self.rotations = 0
        self.truncations = 0
        self._initial_bytes = initial_bytes
        self._file: Any = None  # a binary file object, or None while there is no file
        self._identity: tuple[int, int] | None = None
        self._position = 0
        self._partial = b""
        self._first_open = True

    def exists(self) -> bool:
        """True if the log file exists now."""
        return os.path.exists(self.path)

    def poll(self) -> list[dict[str, Any]]:
        """The records appended since the previous call (an empty list if none)."""
        records: list[dict[str, Any]] = []
        if self._file is None and not self._open():
            return records
        current = _identity(self.path)
        if current is not None and current != self._identity:
            records += self._read_available()  # what was written before the rotation
            self._close()
            self.rotations += 1
            if not self._open():
                return records
        elif os.fstat(self._file.fileno()).st_size < self._position:
            self.truncations += 1
            self._rewind()
        return records + self._read_available()

    def close(self) -> None:
        """Release the file."""
        self._close()

    def _open(self) -> bool:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 -- kept open across polls
        except OSError:
            return False
        self._file = handle
        stat = os.fstat(handle.fileno())
        self._identity = (stat.st_dev, stat.st_ino)
        self._position, self._partial = 0, b""
        if self._first_open and stat.st_size > self._initial_bytes:
            self._seek_near_end(stat.st_size)
        self._first_open = False
        return True

    def _seek_near_end(self, size: int) -> None:
        self._file.seek(size - self._initial_bytes)
        self._file.readline()  # the first line read is cut: skip to the next one
        self._position = self._file.tell()

    def _rewind(self) -> None:
        self._file.seek(0)
        self._position, self._partial = 0, b""

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._identity = None, None

    def _read_available(self) -> list[dict[str, Any]]:
        self._file.seek(self._position)
        data = self._file.read()
        if not data:
            return []
        self._position += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > self.MAX_LINE_BYTES:
            self._partial = b""
            self.skipped += 1
        records = []
        for line in lines:
            record = decode_line(line) if line.strip() else None
            if record is not None:
                records.append(record)
            elif line.strip():
                self.skipped += 1
        return records


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


# -- aggregating the records -------------------------------------------------------------------


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
        stats, latency = self.stats, self.stats.latency
        return {
            "name": self.name,
            "ok": stats.ok,
            "failed": stats.failed,
            "error_rate": stats.error_rate,
            "errors": dict(stats.top_errors(MAX_ERROR_TYPES + 1)),
            "calls_per_second": self.calls_per_second,
            "latency": {
                "min": latency.min if latency.count else None,
                "mean": latency.mean,
                "p50": latency.percentile(0.50),
                "p95": latency.percentile(0.95),
                "p99": latency.percentile(0.99),
                "max": latency.max if latency.count else None,
            },
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
                if name in writer.procedures:
                    merged.merge(writer.procedures[name])
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
