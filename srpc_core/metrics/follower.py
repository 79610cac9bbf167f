"""`LogFollower`: reads the records appended to a metrics log, following it like ``tail -F``."""

from __future__ import annotations

import os
from typing import Any

from srpc_core.metrics.records import decode_line


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


__all__ = [
    "LogFollower",
]
