"""The built-in metrics log: every server writes its call statistics to a JSON-lines file.

Turned on by default (``[srpc.metrics] path``, default ``srpc_server_metrics.log`` in the
server's working directory; ``path = ""`` turns it off). ``flush_interval`` (seconds, default
1.0) sets how often records are written. `srpc metrics` shows the file as a live dashboard;
docs/metrics.md documents the format.

The serving threads only record into a `Collector` (no I/O, no lock on success); a daemon
thread writes the batched records. Writing problems (disk full, permissions) are logged once
and never reach a caller: metrics must not take the server down.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from srpc_core.config import METRICS_OPTIONS
from srpc_core.hookspecs import RegisterObserver, hookimpl
from srpc_core.metrics import (
    FULL_SNAPSHOT_SECONDS,
    Collector,
    WriterInfo,
    encode_record,
    stats_record,
    stop_record,
    writer_record,
)
from srpc_core.observer import CallObserver, ServerInfo

log = logging.getLogger("srpc")
DEFAULT_FLUSH_INTERVAL: float = METRICS_OPTIONS["flush_interval"].default


@hookimpl
def srpc_register_call_observers(register: RegisterObserver, server: ServerInfo) -> None:
    """Register a `MetricsLog` unless the config turns the metrics log off."""
    options = server.config.options("metrics").check(METRICS_OPTIONS)
    path = server.config.metrics_path
    if path:
        register(MetricsLog(server, path, options["flush_interval"]))


class AppendLog:
    """An append-only log file shared with other processes, reopened after rotation.

    Each `write` is one ``write(2)`` on an ``O_APPEND`` descriptor, so the lines of several
    processes never interleave on a local file system. `write` returns True when the file is
    new to this writer (first open, rotated away, deleted or truncated): the caller then
    writes its identity and every procedure again, so a reader of the new file has them.
    """

    def __init__(self, path: str) -> None:
        # Resolved now, so a later chdir of the server does not move the log.
        self.path = os.path.abspath(path)
        self._fd: int | None = None
        self._size_after_write = 0
        self._warned = False

    def is_fresh(self) -> bool:
        """True if the next write goes to a file this writer has not written to (or cannot)."""
        if self._fd is None:
            return True
        try:
            on_disk = os.stat(self.path)
            ours = os.fstat(self._fd)
        except OSError:  # deleted (or unreadable): open a new one on the next write
            self.close()
            return True
        if (on_disk.st_dev, on_disk.st_ino) != (ours.st_dev, ours.st_ino):
            self.close()  # rotated: the path names another file now
            return True
        if ours.st_size < self._size_after_write:
            self._size_after_write = 0  # truncated (copytruncate) under us
            return True
        return False

    def write(self, data: bytes) -> None:
        """Append `data`; log (once) and drop it when the file cannot be written."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.write(self._fd, data)
            self._size_after_write = os.fstat(self._fd).st_size
            self._warned = False
        except OSError as exc:
            if not self._warned:
                log.warning("srpc: cannot write the metrics log %s: %s", self.path, exc)
                self._warned = True
            self.close()

    def close(self) -> None:
        """Close the file (a later `write` opens it again)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass


class MetricsLog(CallObserver):
    """A call observer that writes cumulative per-procedure statistics to a log file.

    Args:
        server: the server being watched.
        path: the log file (relative paths are relative to the current directory).
        flush_interval: seconds between records while there are calls.
    """

    def __init__(self, server: ServerInfo, path: str, flush_interval: float = 1.0) -> None:
        self.info = WriterInfo.new(
            service=server.service,
            address=server.address,
            transport=server.transport,
            codec=server.codec,
            procedures=server.procedures,
            flush_interval=flush_interval,
        )
        self.file = AppendLog(path)
        self._collector = Collector(server.procedures)
        self._record = self._collector.record  # saves an attribute lookup per call
        #: What `Collector.record` of a success and `Collector.start` append to, inlined below.
        self._pending, self._starts = self._collector.hot_lists()
        self._seq = 0
        self._last_full = self._last_write = 0.0
        self._flush_lock = threading.Lock()
        self._closed = threading.Event()
        self.flush()  # the identity goes out at once: the dashboard shows the server at start
        self._thread = threading.Thread(target=self._run, name="srpc-metrics-log", daemon=True)
        self._thread.start()

    def call_started(self, procedure: str) -> None:
        """Count the call in flight (runs in the serving thread: a list append, no lock)."""
        starts = self._starts.get(procedure)  # `Collector.start`, inlined
        if starts is not None:
            starts.append(None)

    def call_finished(self, procedure: str, seconds: float, error: BaseException | None) -> None:
        """Record the call (runs in the serving thread: no I/O, no lock when it succeeded)."""
        if error is None:
            pending = self._pending.get(procedure)  # `Collector.record`'s hot path, inlined
            if pending is not None:
                pending.append(seconds)
            else:
                self._record(procedure, seconds)
        else:
            self._record(procedure, seconds, type(error).__name__)

    def close(self) -> None:
        """Stop the writer thread, write the last numbers and a ``stop`` record."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join(timeout=10)
        self.flush(final=True)
        self.file.close()

    def _run(self) -> None:
        interval = self.info.flush_interval
        while not self._closed.wait(interval):
            try:
                self.flush()
            except Exception:  # never let the writer thread die silently
                log.exception("srpc: writing the metrics log failed")

    def flush(self, final: bool = False) -> None:
        """Write what changed since the last record (everything, when the file is new)."""
        with self._flush_lock:
            now = time.time()
            full = self.file.is_fresh() or now - self._last_full >= FULL_SNAPSHOT_SECONDS
            stats = self._collector.snapshot(changed_only=not full)
            records = []
            if full:
                records.append(writer_record(self.info, self._next_seq(), now))
                self._last_full = now
            if full or stats or now - self._last_write >= self.info.heartbeat:
                records.append(stats_record(self.info.writer, self._next_seq(), now, stats, full))
            if final:
                records.append(stop_record(self.info.writer, self._next_seq(), now))
            if records:
                self.file.write(b"".join(encode_record(record) for record in records))
                self._last_write = now

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq - 1


__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "AppendLog",
    "MetricsLog",
    "srpc_register_call_observers",
]
