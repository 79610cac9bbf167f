"""The metrics log format: JSON lines, one record per line (docs/metrics.md).

A writer (one server process) writes a ``writer`` record (`writer_record`: who it is), then
``stats`` records (`stats_record`), and a ``stop`` record (`stop_record`) when it stops cleanly.
Each ``stats`` record carries *cumulative* numbers since the writer started, never deltas: the
latest record of a writer is its whole story, so a reader that starts late, misses lines
(rotation, truncation, a torn last line), or follows several writers still gets exact totals by
keeping the latest record per writer and procedure and merging.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from srpc_core.metrics.histogram import BUCKETS_PER_OCTAVE, as_int
from srpc_core.metrics.stats import ProcedureStats

#: Version of the log format; readers skip records with another ``v``. Adding optional fields
#: keeps the version; changing or removing one bumps it.
FORMAT_VERSION = 1
#: A writer writes at least one record this often while idle, so readers know it is alive.
HEARTBEAT_SECONDS = 5.0
#: A writer repeats its identity and all its procedures this often, so a reader that starts in
#: the middle of a log (a rotated or huge file) has everything within this time.
FULL_SNAPSHOT_SECONDS = 60.0


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
            pid=as_int(record["pid"]),
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


__all__ = [
    "FORMAT_VERSION",
    "FULL_SNAPSHOT_SECONDS",
    "HEARTBEAT_SECONDS",
    "WriterInfo",
    "decode_line",
    "encode_record",
    "stats_record",
    "stop_record",
    "writer_record",
]
