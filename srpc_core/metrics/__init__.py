"""Call metrics: collecting them, the metrics log format, and reading the log back.

Pure Python with no dependency (the dashboard aside, which needs rich and is imported on its
own); the server side (the `metrics_log` plugin) and the reader side (the dashboard,
``srpc metrics --json``, third-party tools) both build on it. docs/metrics.md documents the
format for people who read the log with other tools. The modules, in the order data flows:

* `histogram`: `Histogram`, latency in log-linear buckets that merge exactly across
  processes, and `latency_summary` (min, mean, p50, p95, p99, max), the numbers people read.
* `stats`: `ProcedureStats`, what is known about the calls of one procedure.
* `collector`: `Collector`, the thread-safe recorder behind a server's observer.
* `records`: the log format (JSON lines): `WriterInfo`, `writer_record`, `stats_record`,
  `stop_record`, `encode_record`, `decode_line`.
* `follower`: `LogFollower` follows the log file like ``tail -F``.
* `view`: `MetricsAggregator` turns the records of every writer into a `MetricsView`.
* `dashboard`: the view drawn with rich (the ``srpclib[dashboard]`` extra; not imported here).

Every name below is importable from `srpc_core.metrics` itself.
"""

from __future__ import annotations

from srpc_core.metrics.collector import Collector
from srpc_core.metrics.follower import LogFollower
from srpc_core.metrics.histogram import (
    BUCKETS_PER_OCTAVE,
    LATENCY_FIELDS,
    MAX_BUCKET,
    Histogram,
    bucket_bounds,
    bucket_of,
    bucket_value,
    latency_summary,
)
from srpc_core.metrics.records import (
    FORMAT_VERSION,
    FULL_SNAPSHOT_SECONDS,
    HEARTBEAT_SECONDS,
    WriterInfo,
    decode_line,
    encode_record,
    stats_record,
    stop_record,
    writer_record,
)
from srpc_core.metrics.stats import (
    MAX_ERROR_TYPES,
    OTHER_ERRORS,
    UNKNOWN_PROCEDURE,
    ProcedureStats,
)
from srpc_core.metrics.view import MetricsAggregator, MetricsView, ProcedureView, ServerView

__all__ = [
    "BUCKETS_PER_OCTAVE",
    "FORMAT_VERSION",
    "FULL_SNAPSHOT_SECONDS",
    "HEARTBEAT_SECONDS",
    "LATENCY_FIELDS",
    "MAX_BUCKET",
    "MAX_ERROR_TYPES",
    "OTHER_ERRORS",
    "UNKNOWN_PROCEDURE",
    "Collector",
    "Histogram",
    "LogFollower",
    "MetricsAggregator",
    "MetricsView",
    "ProcedureStats",
    "ProcedureView",
    "ServerView",
    "WriterInfo",
    "bucket_bounds",
    "bucket_of",
    "bucket_value",
    "decode_line",
    "encode_record",
    "latency_summary",
    "stats_record",
    "stop_record",
    "writer_record",
]
