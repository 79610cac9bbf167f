"""The metrics log on disk: the writer (the metrics_log plugin) and the follower (``tail -F``).

Everything here uses real files; several writers are real processes appending to one file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from srpc_core.config import Config
from srpc_core.metrics import (
    FORMAT_VERSION,
    LogFollower,
    MetricsAggregator,
    WriterInfo,
    encode_record,
    stats_record,
    writer_record,
)
from srpc_core.observer import ServerInfo
from srpc_plugins import metrics_log
from srpc_plugins.metrics_log import MetricsLog

PROCEDURES = ("add", "div")
NEVER = 3600.0  # a flush interval the tests never reach: they call flush() themselves


def server_info(config: Config | None = None, port: int = 5000) -> ServerInfo:
    return ServerInfo(
        service="calc.calc_interface.CalcInterface",
        address=f"tcp://127.0.0.1:{port}",
        transport="tcp",
        codec="json",
        procedures=PROCEDURES,
        pid=os.getpid(),
        config=config or Config(),
    )


def line(writer: str = "w1", seq: int = 1, ok: int = 1) -> bytes:
    """One encoded stats record."""
    from srpc_core.metrics import Histogram, ProcedureStats

    histogram = Histogram()
    for _ in range(ok):
        histogram.record(0.001)
    return encode_record(
        stats_record(writer, seq, 1.0 + seq, {"add": ProcedureStats(histogram)}, False)
    )


def oks(records: list[dict[str, Any]]) -> list[int]:
    return [r["procedures"]["add"]["ok"] for r in records if r["type"] == "stats"]


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


# -- the follower ------------------------------------------------------------------------------


def test_a_log_that_does_not_exist_yet_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    follower = LogFollower(path)
    assert not follower.exists()
    assert follower.poll() == []
    append(path, line(ok=3))
    assert oks(follower.poll()) == [3]
    assert follower.poll() == []


def test_only_new_records_are_returned(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    append(path, line(seq=1, ok=1) + line(seq=2, ok=2))
    follower = LogFollower(path)
    assert oks(follower.poll()) == [1, 2]
    append(path, line(seq=3, ok=3))
    assert oks(follower.poll()) == [3]


def test_a_partial_last_line_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    whole = line(ok=7)
    append(path, line(ok=1) + whole[:20])
    follower = LogFollower(path)
    assert oks(follower.poll()) == [1]
    append(path, whole[20:-1])
    assert follower.poll() == []
    append(path, b"\n")
    assert oks(follower.poll()) == [7]
    assert follower.skipped == 0


def test_truncation_starts_again_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    append(path, line(ok=1) + line(ok=2) + line(ok=3))
    follower = LogFollower(path)
    assert oks(follower.poll()) == [1, 2, 3]
    with open(path, "r+b") as handle:  # what `logrotate copytruncate` does
        handle.truncate(0)
    append(path, line(ok=4))
    assert oks(follower.poll()) == [4]
    assert follower.truncations == 1


def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    append(path, line(ok=1))
    follower = LogFollower(path)
    assert oks(follower.poll()) == [1]
    append(path, line(ok=2))  # written just before the rotation
    path.rename(tmp_path / "metrics.log.1")
    append(path, line(ok=3) + line(ok=4))
    assert oks(follower.poll()) == [2, 3, 4]
    assert follower.rotations == 1
    append(path, line(ok=5))
    assert oks(follower.poll()) == [5]


def test_a_deleted_log_is_followed_when_it_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    append(path, line(ok=1))
    follower = LogFollower(path)
    assert oks(follower.poll()) == [1]
    path.unlink()
    assert follower.poll() == []
    assert not follower.exists()
    append(path, line(ok=2))
    assert oks(follower.poll()) == [2]


def test_foreign_and_broken_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    future = json.dumps({"v": FORMAT_VERSION + 1, "type": "stats", "time": 1, "writer": "x"})
    junk = [b"not json", b'{"torn": ', b"[1, 2]", future.encode(), b"\xff\xfe", b"   "]
    append(path, line(ok=1) + b"\n".join(junk) + b"\n" + line(ok=2))
    follower = LogFollower(path)
    assert oks(follower.poll()) == [1, 2]
    assert follower.skipped == 5  # the blank line is not counted


def test_a_huge_log_is_read_from_near_its_end(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    append(path, b"".join(line(seq=i, ok=i) for i in range(1, 201)))
    follower = LogFollower(path, initial_bytes=len(line(seq=199, ok=199)) * 2 + 10)
    assert oks(follower.poll()) == [199, 200]  # the cut line before them is skipped silently
    assert follower.skipped == 0


# -- the writer --------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text().splitlines()]


def test_the_plugin_registers_a_log_unless_the_path_is_empty(tmp_path: Path) -> None:
    registered: list[Any] = []
    config = Config(metrics_path="", tables={"metrics": {"path": ""}})
    metrics_log.srpc_register_call_observers(registered.append, server_info(config))
    assert registered == []

    config = Config(
        metrics_path=str(tmp_path / "m.log"), tables={"metrics": {"flush_interval": 0.25}}
    )
    metrics_log.srpc_register_call_observers(registered.append, server_info(config))
    [observer] = registered
    try:
        assert isinstance(observer, MetricsLog)
        assert observer.info.flush_interval == 0.25
        assert observer.file.path == str(tmp_path / "m.log")
    finally:
        observer.close()


def test_a_relative_path_is_relative_to_the_working_directory_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    log = MetricsLog(server_info(), "relative.log", flush_interval=NEVER)
    monkeypatch.chdir("/")
    log.close()
    types = [r["type"] for r in read_records(tmp_path / "relative.log")]
    assert types == ["writer", "stats", "stop"]


def test_the_writer_identifies_itself_at_once_then_writes_what_changed(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    log = MetricsLog(server_info(), str(path), flush_interval=NEVER)
    first = read_records(path)
    assert [r["type"] for r in first] == ["writer", "stats"]
    assert first[0]["address"] == "tcp://127.0.0.1:5000"
    assert first[0]["procedures"] == list(PROCEDURES)
    assert [r["seq"] for r in first] == [0, 1]

    log.call_finished("add", 0.002, None)
    log.call_finished("div", 0.001, ZeroDivisionError("division by zero"))
    log.flush()
    log.flush()  # nothing changed, and the heartbeat is not due: nothing written
    log.call_finished("add", 0.004, None)
    log.close()
    records = read_records(path)[2:]
    assert [r["type"] for r in records] == ["stats", "stats", "stop"]
    assert records[0]["procedures"]["div"] == {
        "ok": 0,
        "errors": {"ZeroDivisionError": 1},
        "sum": 0.0,
        "min": None,
        "max": None,
        "hist": {"start": 0, "counts": []},
    }
    assert set(records[1]["procedures"]) == {"add"}  # only what changed ...
    assert records[1]["procedures"]["add"]["ok"] == 2  # ... with cumulative numbers
    assert records[1]["procedures"]["add"]["max"] == 0.004
    assert [r["seq"] for r in records] == [2, 3, 4]


def test_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    log = MetricsLog(server_info(), str(path), flush_interval=NEVER)
    log.close()
    log.close()
    assert [r["type"] for r in read_records(path)].count("stop") == 1


def test_the_writer_thread_flushes_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    log = MetricsLog(server_info(), str(path), flush_interval=0.01)
    try:
        log.call_finished("add", 0.001, None)
        follower = LogFollower(path)
        aggregator = MetricsAggregator()
        deadline = time.monotonic() + 10
        while not any(row.stats.ok for row in aggregator.view().procedures):
            assert time.monotonic() < deadline, "the writer thread never wrote the call"
            time.sleep(0.005)  # polling interval
            aggregator.feed(follower.poll())
    finally:
        log.close()


def test_the_writer_starts_a_rotated_log_with_its_identity_and_everything(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    log = MetricsLog(server_info(), str(path), flush_interval=NEVER)
    log.call_finished("add", 0.001, None)
    log.call_finished("div", 0.001, None)
    log.flush()
    path.rename(tmp_path / "metrics.log.1")
    log.call_finished("add", 0.001, None)
    log.flush()
    log.close()
    records = read_records(path)
    assert [r["type"] for r in records] == ["writer", "stats", "stop"]
    assert records[1]["full"] is True
    assert {n: p["ok"] for n, p in records[1]["procedures"].items()} == {"add": 2, "div": 1}


def test_the_writer_starts_a_truncated_log_again(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    log = MetricsLog(server_info(), str(path), flush_interval=NEVER)
    log.call_finished("add", 0.001, None)
    log.flush()
    with open(path, "r+b") as handle:
        handle.truncate(0)
    log.flush()
    log.close()
    records = read_records(path)
    assert [r["type"] for r in records] == ["writer", "stats", "stop"]
    assert records[1]["procedures"]["add"]["ok"] == 1


def test_an_unwritable_log_does_not_break_the_server(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = MetricsLog(server_info(), str(blocker / "metrics.log"), flush_interval=NEVER)
    log.call_finished("add", 0.001, None)
    log.flush()
    log.close()  # no exception: the failure is logged once


WRITER_PROCESS = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from srpc_core.config import Config
    from srpc_core.observer import ServerInfo
    from srpc_plugins.metrics_log import MetricsLog

    path, port, calls, writers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    info = ServerInfo("calc.calc_interface.CalcInterface", f"tcp://127.0.0.1:{port}", "tcp",
                      "json", ("add", "div"), os.getpid(), Config())
    log = MetricsLog(info, path, flush_interval=0.001)
    # Several servers share a log while they run at the same time: wait until all have started.
    deadline = time.monotonic() + 30
    while Path(path).read_bytes().count(b'"type":"writer"') < writers:
        assert time.monotonic() < deadline, "the other writers never started"
    for i in range(calls):
        log.call_finished("add", 0.0001 * (1 + i % 7), None)
        if i % 10 == 0:
            log.call_finished("div", 0.0001, ZeroDivisionError("division by zero"))
    log.close()
    """
)


def test_several_writer_processes_share_one_log(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    follower = LogFollower(path)
    aggregator = MetricsAggregator()
    calls = [3000, 5000, 7000]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER_PROCESS,
                str(path),
                str(6000 + n),
                str(c),
                str(len(calls)),
            ]
        )
        for n, c in enumerate(calls)
    ]
    while any(p.poll() is None for p in processes):  # read while they write
        aggregator.feed(follower.poll())
    assert [p.returncode for p in processes] == [0, 0, 0]
    aggregator.feed(follower.poll())
    assert follower.skipped == 0  # no two writes ever interleaved inside a line
    view = aggregator.view()
    assert sorted(s.address for s in view.servers) == [
        "tcp://127.0.0.1:6000",
        "tcp://127.0.0.1:6001",
        "tcp://127.0.0.1:6002",
    ]
    assert {s.state for s in view.servers} == {"stopped"}
    rows = {row.name: row.stats for row in view.procedures}
    assert rows["add"].ok == sum(calls)
    assert rows["div"].errors == {"ZeroDivisionError": sum(c // 10 for c in calls)}
    assert rows["add"].latency.min == pytest.approx(0.0001)
    assert rows["add"].latency.max == pytest.approx(0.0007)


def test_a_reader_starting_after_the_writers_gets_the_same_totals(tmp_path: Path) -> None:
    path = tmp_path / "metrics.log"
    info = WriterInfo.new("svc.I", "tcp://127.0.0.1:1", "tcp", "json", ["add"])
    append(path, encode_record(writer_record(info, 0, info.started)))
    append(path, line(writer=info.writer, seq=1, ok=5) + line(writer=info.writer, seq=2, ok=9))
    aggregator = MetricsAggregator()
    aggregator.feed(LogFollower(path).poll())
    assert aggregator.view().procedures[0].stats.ok == 9
