"""The dashboard as a user sees it: rendered text, and the real command in a subprocess
(``--once``, ``--json``, the live view in a pseudo-terminal, a missing rich)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from srpc_core.config import Config
from srpc_core.metrics import (
    Histogram,
    MetricsAggregator,
    MetricsView,
    ProcedureStats,
    WriterInfo,
    stats_record,
    writer_record,
)
from srpc_core.metrics.dashboard import format_seconds, format_uptime, render
from srpc_core.observer import ServerInfo
from srpc_plugins.metrics_log import MetricsLog

TOOL = [sys.executable, "-m", "srpc_core.tools.srpc_show_metrics"]
T0 = 1_700_000_000.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def tool_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SRPC_CONFIG", "COLUMNS", "LINES")}
    env.update({"COLUMNS": "80", "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}, **extra)
    return env


def run_tool(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=tool_env(**env)
    )


# -- rendering ---------------------------------------------------------------------------------


def histogram(*values: float) -> Histogram:
    result = Histogram()
    for value in values:
        result.record(value)
    return result


def sample_view(servers: int = 1) -> MetricsView:
    records: list[dict[str, Any]] = []
    for n in range(servers):
        info = WriterInfo(
            f"w{n}", 4000 + n, "box", "calc.calc_interface.CalcInterface",
            f"tcp://127.0.0.1:{5000 + n}", "tcp", "json", T0 - 3725, ("add", "div", "mul"),
        )  # fmt: skip
        procedures = {
            "add": ProcedureStats(histogram(*[0.000120] * 1200, 0.0025)),
            "div": ProcedureStats(histogram(0.000200), {"ZeroDivisionError": 3, "TypeError": 1}),
        }
        records.append(writer_record(info, 0, T0 - 3725))
        records.append(stats_record(info.writer, 1, T0 - 1, procedures, False))
    aggregator = MetricsAggregator(window=5.0)
    aggregator.feed(records)
    return aggregator.view(now=T0)


def rendered(view: MetricsView, width: int) -> str:
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=width, color_system=None, file=sink)
        console.print(render(view, "srpc_server_metrics.log", width))
    return console.export_text()


def row(text: str, name: str) -> list[str]:
    """The cells of the table row starting with `name`."""
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row {name!r} in:\n{text}")


def test_80_columns_show_every_procedure_with_counts_and_percentiles() -> None:
    text = rendered(sample_view(), 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    header = row(text, "procedure")
    assert header == [
        "procedure", "ok", "failed", "err%", "calls/s", "running", "p50", "p95", "p99", "max"
    ]  # fmt: skip
    # All 1,201 calls came in the last record: within the 5 s window. Percentiles are within
    # 1.1% of the true 120µs; the max is exact.
    add = ["add", "1,201", "0", "0.0", "240.2", "0", "121µs", "121µs", "121µs", "2.50ms"]
    assert row(text, "add") == add
    assert row(text, "div")[:4] == ["div", "1", "4", "80.0"]
    assert row(text, "mul") == ["mul", "0", "0", "0.0", "0.0", "0", "-", "-", "-", "-"]
    assert row(text, "total")[:4] == ["total", "1,202", "4", "0.3"]


def test_wide_terminals_add_min_and_mean() -> None:
    text = rendered(sample_view(), 140)
    assert row(text, "procedure")[6:] == ["min", "mean", "p50", "p95", "p99", "max"]
    assert row(text, "add")[6:8] == ["120µs", "122µs"]  # the exact min and mean


def test_header_names_the_server_its_uptime_and_the_totals() -> None:
    text = rendered(sample_view(), 80)
    assert "calc.calc_interface.CalcInterface" in text
    assert "tcp://127.0.0.1:5000  pid 4000 on box  up 1:02:05  live" in text
    assert "1,206 calls  1,202 ok  4 failed (0.3%)" in text


def test_top_errors_are_listed_most_frequent_first() -> None:
    text = rendered(sample_view(), 80)
    errors = text[text.index("top errors") :]
    assert errors.index("ZeroDivisionError") < errors.index("TypeError")
    assert row(errors, "div") == ["div", "ZeroDivisionError", "3"]


def test_several_servers_are_summed_and_listed() -> None:
    text = rendered(sample_view(servers=6), 100)
    assert "srpc metrics · 6 servers" in text
    assert "tcp://127.0.0.1:5003" in text and "tcp://127.0.0.1:5004" not in text
    assert "… and 2 more servers (2 live)" in text
    assert row(text, "add")[1] == "7,206"


def test_an_empty_view_says_what_it_waits_for() -> None:
    view = MetricsAggregator().view(now=T0)
    assert "No server has written to srpc_server_metrics.log yet." in rendered(view, 80)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0, "0.00ns"),
        (8.5e-7, "850ns"),
        (1.234e-5, "12.3µs"),
        (0.0009996, "1.00ms"),
        (0.25, "250ms"),
        (1.2, "1.20s"),
        (4000.0, "4,000s"),
    ],
)
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


def test_format_uptime() -> None:
    assert format_uptime(125.9) == "0:02:05"
    assert format_uptime(3 * 86400 + 10) == "3d 0:00:10"


# -- the command -------------------------------------------------------------------------------


def write_log(path: Path, ok: int = 40, zero_divisions: int = 3, port: int = 5000) -> MetricsLog:
    """A real metrics log, written by the real plugin; the returned writer is still open."""
    info = ServerInfo(
        "calc.calc_interface.CalcInterface", f"tcp://127.0.0.1:{port}", "tcp", "json",
        ("add", "sub", "div"), os.getpid(), Config(),
    )  # fmt: skip
    log = MetricsLog(info, str(path), flush_interval=3600)
    record_calls(log, ok, zero_divisions)
    return log


def record_calls(log: MetricsLog, ok: int, zero_divisions: int) -> None:
    for i in range(ok):
        log.call_finished("add", 0.001 * (1 + i % 4), None)
    for _ in range(zero_divisions):
        log.call_finished("div", 0.0005, ZeroDivisionError("division by zero"))
    log.flush()


def test_once_prints_the_table(tmp_path: Path) -> None:
    write_log(tmp_path / "srpc_server_metrics.log").close()
    result = run_tool("--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert row(result.stdout, "add")[:3] == ["add", "40", "0"]
    assert row(result.stdout, "div")[:4] == ["div", "0", "3", "100.0"]
    assert "stopped" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_json_prints_the_numbers(tmp_path: Path) -> None:
    log = write_log(tmp_path / "m.log")
    try:
        result = run_tool(str(tmp_path / "m.log"), "--json", cwd=tmp_path)
    finally:
        log.close()
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["log"] == str(tmp_path / "m.log")
    [server] = document["servers"]
    assert (server["address"], server["state"], server["pid"]) == (
        "tcp://127.0.0.1:5000",
        "live",
        os.getpid(),
    )
    add, sub, div = document["procedures"]
    assert (add["name"], add["ok"], add["failed"]) == ("add", 40, 0)
    assert add["latency"]["min"] == 0.001 and add["latency"]["max"] == 0.004
    assert add["latency"]["mean"] == pytest.approx(0.0025)
    assert add["latency"]["p50"] == pytest.approx(0.002, rel=0.011)
    assert add["calls_per_second"] > 0
    assert sub["ok"] == 0 and sub["latency"]["p50"] is None
    assert div["errors"] == {"ZeroDivisionError": 3} and div["error_rate"] == 1.0
    assert document["total"]["ok"] == 40 and document["total"]["failed"] == 3


def test_the_log_path_comes_from_srpc_toml(tmp_path: Path) -> None:
    write_log(tmp_path / "custom.log").close()
    (tmp_path / "srpc.toml").write_text('[srpc.metrics]\npath = "custom.log"\n')
    result = run_tool("--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["log"] == "custom.log"


def test_metrics_turned_off_in_srpc_toml_is_explained(tmp_path: Path) -> None:
    (tmp_path / "srpc.toml").write_text('[srpc.metrics]\npath = ""\n')
    result = run_tool("--once", cwd=tmp_path)
    assert result.returncode == 1
    assert "turns the metrics log off" in result.stderr


def test_once_on_a_missing_log_fails_clearly(tmp_path: Path) -> None:
    result = run_tool("nowhere.log", "--once", cwd=tmp_path)
    assert result.returncode == 1
    assert "nowhere.log does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_without_rich_the_dashboard_names_the_extra(tmp_path: Path) -> None:
    write_log(tmp_path / "m.log").close()
    code = (
        "import sys; sys.modules['rich'] = None\n"  # as if rich were not installed
        "from srpc_core.tools.srpc_show_metrics import main\n"
        f"sys.exit(main([{str(tmp_path / 'm.log')!r}, '--once']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=tool_env()
    )
    assert result.returncode == 1
    assert "pip install 'srpclib[dashboard]'" in result.stderr
    assert "Traceback" not in result.stderr
    json_code = code.replace("'--once'", "'--json'")
    result = subprocess.run(
        [sys.executable, "-c", json_code], capture_output=True, text=True, env=tool_env()
    )
    assert result.returncode == 0, result.stderr  # --json does not need rich
    assert json.loads(result.stdout)["total"]["ok"] == 40


def test_help_explains_the_arguments(tmp_path: Path) -> None:
    result = run_tool("--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for expected in ["srpc_server_metrics.log", "--once", "--json", "--interval", "--window"]:
        assert expected in text


def test_bad_interval_is_a_usage_error(tmp_path: Path) -> None:
    result = run_tool("--interval", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "positive number of seconds" in result.stderr


# -- the live dashboard in a real (pseudo-)terminal ----------------------------------------------


class Terminal:
    """The dashboard running in a pseudo-terminal of 100x40, its screen output collected."""

    def __init__(self, args: list[str], cwd: Path, rows: int = 40, columns: int = 100) -> None:
        import fcntl
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = tool_env(TERM="xterm-256color")
        del env["COLUMNS"], env["NO_COLOR"]
        self.process = subprocess.Popen(
            [*TOOL, *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        self.output = b""

    def text(self) -> str:
        return ANSI.sub("", self.output.decode(errors="replace"))

    def wait_for(self, pattern: str, timeout: float = 20.0) -> None:
        import select

        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{pattern!r} never appeared; screen output:\n{self.text()}"
            if select.select([self.master], [], [], min(remaining, 0.2))[0]:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    assert re.search(pattern, self.text()), self.text()

    def frame(self) -> list[str]:
        """The lines of the last picture drawn (rich redraws in place: it moves the cursor up
        over the previous picture, erasing each line, then writes the new one)."""
        raw = self.output.decode(errors="replace")
        last = re.split(r"\r\x1b\[2K(?:\x1b\[1A\x1b\[2K)*", raw)[-1]
        return ANSI.sub("", last).replace("\r", "").split("\n")

    def wait_for_frame(self, check: Any, timeout: float = 20.0) -> list[str]:
        """Read the terminal until its last complete picture satisfies `check(lines)`."""
        import select

        deadline = time.monotonic() + timeout
        while True:
            lines = self.frame()
            if any("quit [q]" in line for line in lines) and check(lines):
                return lines
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the picture never showed it; last picture:\n" + "\n".join(lines)
            if select.select([self.master], [], [], min(remaining, 0.2))[0]:
                self.output += os.read(self.master, 65536)

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def drain(self) -> None:
        """Read what is left after the process exits."""
        import select

        while select.select([self.master], [], [], 0.2)[0]:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_live_dashboard_waits_follows_and_quits_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    path = tmp_path / "srpc_server_metrics.log"
    terminal = Terminal(["--interval", "0.05"], cwd=tmp_path)
    log = None
    try:
        terminal.wait_for("Waiting for .*srpc_server_metrics.log to appear")
        log = write_log(path, ok=7, zero_divisions=0)
        terminal.wait_for(r"add +7 +0 ")
        record_calls(log, ok=5, zero_divisions=2)
        terminal.wait_for(r"add +12 +0 ")
        terminal.wait_for(r"div +0 +2 +100\.0")
        terminal.wait_for(r"tcp://127\.0\.0\.1:5000 +pid \d+ on \S+ +up 0:00:\d\d +live")
        terminal.process.send_signal(signal.SIGINT)
        assert terminal.process.wait(timeout=20) == 0
        terminal.drain()
        assert "Traceback" not in terminal.text()
        assert terminal.output.rstrip(b"\r\n").endswith(b"\x1b[?25h")  # cursor shown again
    finally:
        if log is not None:
            log.close()
        terminal.close()


# -- hostile names in the log ------------------------------------------------------------------

#: What a caller (or whoever writes the log) might put in a name: a screen clear, a window
#: title, a hyperlink, a bidirectional override, and rich markup.
HOSTILE = (
    "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\\u202e[bold red]X[/]\x9b"
)


def test_hostile_names_in_the_log_reach_the_terminal_as_plain_text(tmp_path: Path) -> None:
    """The dashboard draws what the log says, but never lets it drive the terminal."""
    info = ServerInfo(
        f"svc{HOSTILE}", f"tcp://127.0.0.1:5000/{HOSTILE}", "tcp", "json",
        (f"add{HOSTILE}",), os.getpid(), Config(),
    )  # fmt: skip
    log = MetricsLog(info, str(tmp_path / "srpc_server_metrics.log"), flush_interval=3600)
    error = type(f"Boom{HOSTILE}", (Exception,), {})
    log.call_finished(f"add{HOSTILE}", 0.001, None)
    log.call_finished(f"add{HOSTILE}", 0.001, error("no"))
    log.flush()
    log.close()
    # FORCE_COLOR makes rich write escape sequences of its own; none of the log's may pass.
    result = run_tool("--once", cwd=tmp_path, FORCE_COLOR="1", TERM="xterm-256color")
    assert result.returncode == 0, result.stderr
    own = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)  # rich's own colours only
    for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert bad not in own, (bad, result.stdout)
    assert "[bold red]X[/]" in own  # markup shown as the text it is, not obeyed
    assert "\ufffd" in own


def test_printable_replaces_controls_and_bounds_length() -> None:
    from srpc_core.metrics.dashboard import MAX_NAME, printable

    assert printable("a\x1b[2Jb\tc\u202ed") == "a\ufffd[2Jb\ufffdc\ufffdd"
    assert printable("[red]x[/]") == "[red]x[/]"
    assert len(printable("x" * 10_000)) == MAX_NAME


# -- the live dashboard at 80x24 with 30 procedures --------------------------------------------

THIRTY = tuple(f"p{i:02d}" for i in range(30))


def write_thirty(path: Path) -> MetricsLog:
    """p00..p19 called (p19 most often), p20..p29 idle but p25, which has a call running; p05
    fails most, eight procedures fail with eight exception types; p07 is the slowest."""
    info = ServerInfo(
        "big.big_interface.BigInterface", "tcp://127.0.0.1:5000", "tcp", "json",
        THIRTY, os.getpid(), Config(),
    )  # fmt: skip
    log = MetricsLog(info, str(path), flush_interval=3600)
    for i in range(20):
        for _ in range(i + 1):
            log.call_finished(THIRTY[i], 0.5 if i == 7 else 0.001, None)
    errors = [ValueError, KeyError, TypeError, OSError, LookupError, IndexError, EOFError]
    for i, kind in enumerate([*errors, RuntimeError], start=1):
        for _ in range(7 if i == 5 else 1):
            log.call_finished(THIRTY[i], 0.001, kind("x"))
    log.call_started("p25")
    log.flush()
    return log


def first_row(lines: list[str]) -> str:
    """The name in the first procedure row (the line after the table's header rule)."""
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["procedure", "ok"])
    return lines[header + 2].split()[0]


def names(lines: list[str]) -> set[str]:
    """The procedures in the table's rows (not those of the top errors)."""
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["procedure", "ok"])
    total = next(i for i, line in enumerate(lines) if line.split()[:1] == ["total"])
    return {line.split()[0] for line in lines[header + 2 : total] if line.split()}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_live_dashboard_fits_80x24_pages_sorts_and_hides_idle(tmp_path: Path) -> None:
    log = write_thirty(tmp_path / "srpc_server_metrics.log")
    terminal = Terminal(["--interval", "0.05"], cwd=tmp_path, rows=24, columns=80)
    try:
        lines = terminal.wait_for_frame(lambda lines: any("page 1/" in x for x in lines))
        assert len(lines) <= 23 and max(len(line) for line in lines) <= 80, lines
        text = "\n".join(lines)
        # Always in view: the totals, the total row, the top errors (bounded), the keys.
        assert "calls" in text and "ok" in text and "failed" in text
        assert any(line.split()[:1] == ["total"] for line in lines)
        errors = lines[next(i for i, x in enumerate(lines) if "top errors" in x) :]
        assert errors[2].split()[:3] == ["p05", "LookupError", "7"]  # the most frequent first
        assert 1 <= len([x for x in errors[2:] if x.split()[:1] and x[0] == "p"]) <= 5
        pages = int(re.search(r"page 1/(\d+)", text).group(1))  # type: ignore[union-attr]
        assert pages >= 2
        first_page = names(lines)
        assert first_row(lines) == "p00" and len(first_page) < 30

        terminal.press(b"n")
        lines = terminal.wait_for_frame(lambda lines: any("page 2/" in x for x in lines))
        assert names(lines).isdisjoint(first_page) and len(lines) <= 23

        terminal.press(b"c")  # by calls: p19 had the most
        lines = terminal.wait_for_frame(lambda lines: any("sort: calls" in x for x in lines))
        assert first_row(lines) == "p19" and any("page 1/" in x for x in lines)
        terminal.press(b"e")  # by errors
        lines = terminal.wait_for_frame(lambda lines: any("sort: errors" in x for x in lines))
        assert first_row(lines) == "p05"
        terminal.press(b"l")  # by latency
        lines = terminal.wait_for_frame(lambda lines: any("sort: latency" in x for x in lines))
        assert first_row(lines) == "p07"

        terminal.press(b"id")  # idle hidden, declaration order: 21 rows (p25 runs a call)
        lines = terminal.wait_for_frame(lambda lines: any("9 idle hidden" in x for x in lines))
        seen = names(lines)
        for page in range(2, int(re.search(r"page 1/(\d+)", "".join(lines)).group(1)) + 1):  # type: ignore[union-attr]
            terminal.press(b"\x1b[6~")  # PgDn
            lines = terminal.wait_for_frame(
                lambda lines, page=page: f"page {page}/" in "".join(lines)
            )
            seen |= names(lines)
        assert seen == {*THIRTY[:20], "p25"}
        running = next(line.split() for line in lines if line.split()[:1] == ["p25"])
        assert running[:6] == ["p25", "0", "0", "0.0", "0.0", "1"]  # one call in flight

        terminal.press(b"q")
        assert terminal.process.wait(timeout=20) == 0
        terminal.drain()
        assert "Traceback" not in terminal.text()
    finally:
        log.close()
        terminal.close()
