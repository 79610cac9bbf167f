"""The metrics dashboard: a `MetricsView` drawn with rich (the ``srpclib[dashboard]`` extra).

`render` builds the picture (a header naming the servers, one table row per procedure, the
most frequent errors); `show_once` prints it and `show_live` keeps it up to date until Ctrl+C.
Meaning never rests on colour alone: failures are also bold, idle numbers dim, and states are
words, so the dashboard reads the same in a monochrome terminal or a log file.

Everything read from the metrics log (service, procedure, exception names, addresses, host
names, states) is untrusted: anyone who can call the server chooses some of it (an exception's
name, say). It goes through `printable` (control characters, escape sequences and bidirectional
overrides replaced) and reaches rich only as `Text`, never as markup, so a name can neither
drive the terminal (clear it, retitle it, plant a hyperlink) nor restyle the dashboard.
"""

from __future__ import annotations

import io
import math
import os
import re
import select
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from srpc_core.metrics.follower import LogFollower
from srpc_core.metrics.histogram import LATENCY_FIELDS, latency_summary
from srpc_core.metrics.view import MetricsAggregator, MetricsView, ProcedureView

#: Below this many columns the table leaves out min and mean to fit an 80-column terminal.
WIDE_COLUMNS = 96
#: Servers listed by address in the header; more are summarised in one line.
MAX_SERVERS_LISTED = 4
_STATE_STYLES = {"live": "bold green", "stopped": "yellow", "silent": "bold red"}
#: What `printable` replaces: C0 and C1 control characters (ESC and CSI among them), DEL, and
#: the Unicode controls that reorder or hide text (bidirectional overrides, isolates, marks).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
#: The longest name shown (a log line may carry any length).
MAX_NAME = 200


def printable(value: object) -> str:
    """`value` as text that is safe to show: unprintable characters become U+FFFD, and at most
    `MAX_NAME` characters are kept. Markup is left as text (pass the result to `Text`)."""
    text = _UNPRINTABLE.sub("\ufffd", str(value))
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "…"


def format_seconds(seconds: float | None) -> str:
    """A duration in 3 significant digits with a unit: ``850ns``, ``12.3µs``, ``1.20s``."""
    if seconds is None:
        return "-"
    for unit, scale in (("ns", 1e9), ("µs", 1e6), ("ms", 1e3), ("s", 1.0)):
        value = seconds * scale
        if value < 999.5 or unit == "s":
            return _three_digits(value) + unit
    raise AssertionError("unreachable")


def _three_digits(value: float) -> str:
    if value >= 99.95:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 9.995 else f"{value:.2f}"


def format_uptime(seconds: float) -> str:
    """``0:02:05``, ``3d 04:00:10``."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


#: The most rows of the top-errors table (fewer when the terminal is short).
MAX_ERROR_ROWS = 5
#: How the procedures can be ordered (`DashboardState.sort`), and the key that picks each.
SORTS = {"declared": "d", "calls": "c", "errors": "e", "latency": "l"}


@dataclass
class DashboardState:
    """What the person at the live dashboard chose with keys (`DashboardState.press`)."""

    sort: str = "declared"
    hide_idle: bool = False
    page: int = 0
    #: Pages at the last render (set by `render`).
    pages: int = 1

    def press(self, key: str) -> bool:
        """Act on a key: ``c``/``e``/``l``/``d`` sort by calls, errors, latency (p99) or
        declaration order; ``i`` hides or shows idle procedures; ``n``, space or PgDn and
        ``p``, ``b`` or PgUp turn pages. True for ``q`` (quit)."""
        for sort, letter in SORTS.items():
            if key == letter:
                self.sort, self.page = sort, 0
        if key == "i":
            self.hide_idle, self.page = not self.hide_idle, 0
        elif key in ("n", " ", "\x1b[6~", "\x1b[B"):
            self.page = min(self.page + 1, self.pages - 1)
        elif key in ("p", "b", "\x1b[5~", "\x1b[A"):
            self.page = max(self.page - 1, 0)
        return key in ("q", "Q")


def ordered_rows(view: MetricsView, state: DashboardState) -> list[ProcedureView]:
    """The procedure rows `state` asks for: idle ones left out if it says so, sorted."""
    rows = [
        row
        for row in view.procedures
        if not (state.hide_idle and row.stats.calls == 0 and row.stats.in_flight == 0)
    ]
    if state.sort == "calls":
        rows.sort(key=lambda row: -row.stats.calls)
    elif state.sort == "errors":
        rows.sort(key=lambda row: (-row.stats.failed, -row.stats.error_rate))
    elif state.sort == "latency":
        rows.sort(key=lambda row: -(latency_summary(row.stats.latency)["p99"] or -1.0))
    return rows


def render(
    view: MetricsView,
    source: str,
    width: int = 80,
    waiting: str | None = None,
    height: int | None = None,
    state: DashboardState | None = None,
) -> RenderableType:
    """The dashboard for `view`; `source` names the log, `waiting` replaces an empty table.

    With a `height` (the live dashboard), the picture fits in that many lines: the header with
    the totals, the total row and the top errors always show, and the procedures are cut into
    pages (`state` says which page, the order and whether idle procedures show)."""
    if not view.servers:
        message = waiting or f"No server has written to {source} yet."
        return Panel(Text(message), title="srpc metrics", box=box.ROUNDED, expand=False)
    state = state or DashboardState()
    rows = ordered_rows(view, state)
    wide = width >= WIDE_COLUMNS
    stamp = time.strftime("%H:%M:%S", time.localtime(view.time))
    footer = Text(f"log: {printable(source)} · {stamp}", style="dim")
    if height is None:
        state.pages, state.page = 1, 0
        parts: list[RenderableType] = [_header(view), _table(view, rows, wide)]
        errors = _errors_table(view, MAX_ERROR_ROWS)
        if errors is not None:
            parts.append(errors)
        return Group(*parts, footer)
    header = _header(view)
    # One line is left free: a picture as tall as the terminal would scroll it by one.
    table_frame = _lines(_table(view, [view.total], wide), width) - 1  # all but the rows
    room = height - 1 - _lines(header, width) - table_frame - 2
    error_rows = min(MAX_ERROR_ROWS, max(1, room // 3))
    errors = _errors_table(view, error_rows)
    while errors is not None and error_rows > 1 and room - _lines(errors, width) < 1:
        error_rows -= 1
        errors = _errors_table(view, error_rows)
    used = height - 1 - room
    if errors is not None:
        used += _lines(errors, width)
    per_page = max(height - 1 - used, 1)
    state.pages = max(math.ceil(len(rows) / per_page), 1)
    state.page = min(state.page, state.pages - 1)
    shown = rows[state.page * per_page : (state.page + 1) * per_page]
    parts = [header, _table(view, shown, wide)]
    if errors is not None:
        parts.append(errors)
    return Group(*parts, footer, _keys_line(state, len(view.procedures) - len(rows)))


def _keys_line(state: DashboardState, hidden: int) -> Text:
    page = f"page {state.page + 1}/{state.pages} [n/p]" if state.pages > 1 else "page 1/1"
    idle = f"{hidden} idle hidden [i]" if state.hide_idle else "idle shown [i]"
    return Text(f"{page} · sort: {state.sort} [c/e/l/d] · {idle} · quit [q]", style="dim")


def _lines(renderable: RenderableType, width: int) -> int:
    """How many lines `renderable` takes at `width` columns."""
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    return len(console.render_lines(renderable, console.options.update(width=width), pad=False))


def _header(view: MetricsView) -> RenderableType:
    lines = Text()
    services = sorted({server.service for server in view.servers})
    services = [printable(service) for service in services]
    lines.append("service ", style="dim").append(", ".join(services), style="bold")
    for server in view.servers[:MAX_SERVERS_LISTED]:
        lines.append("\n").append(printable(server.address), style="bold")
        pid = f"pid {printable(server.pid)}" if server.pid is not None else "pid ?"
        host = printable(server.host)
        lines.append(f"  {pid} on {host}  up {format_uptime(server.uptime)}  ")
        lines.append(printable(server.state), style=_STATE_STYLES.get(server.state, ""))
    hidden = view.servers[MAX_SERVERS_LISTED:]
    if hidden:
        live = sum(server.state == "live" for server in hidden)
        lines.append(f"\n… and {len(hidden)} more servers ({live} live)", style="dim")
    total = view.total.stats
    lines.append("\n").append(f"{total.calls:,} calls", style="bold")
    lines.append(f"  {total.ok:,} ok  ")
    lines.append(f"{total.failed:,} failed", style="bold red" if total.failed else "")
    lines.append(f" ({100 * total.error_rate:.1f}%)  ")
    lines.append(f"{view.total.calls_per_second:,.1f} calls/s", style="bold")
    lines.append(f" over {view.window:g}s", style="dim")
    title = f"srpc metrics · {len(view.servers)} server" + ("s" if len(view.servers) > 1 else "")
    return Panel(lines, title=title, title_align="left", box=box.ROUNDED, expand=False)


def _table(view: MetricsView, rows: list[ProcedureView], wide: bool) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        header_style="bold",
        show_edge=False,
    )
    table.add_column("procedure", no_wrap=True, overflow="ellipsis", max_width=28)
    for name in ("ok", "failed", "err%", "calls/s", "running"):
        table.add_column(name, justify="right", no_wrap=True)
    latency_columns = list(LATENCY_FIELDS) if wide else ["p50", "p95", "p99", "max"]
    for name in latency_columns:
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row, latency_columns))
    table.add_section()
    table.add_row(*_cells(view.total, latency_columns), style="bold")
    return table


def _cells(row: ProcedureView, latency_columns: list[str]) -> list[Text]:
    stats = row.stats
    idle = stats.calls == 0
    failed_style = "bold red" if stats.failed else "dim"
    values = latency_summary(stats.latency)
    return [
        Text(printable(row.name), style="dim" if idle else ""),
        Text(f"{stats.ok:,}", style="dim" if idle else ""),
        Text(f"{stats.failed:,}", style=failed_style),
        Text(f"{100 * stats.error_rate:.1f}", style=failed_style),
        Text(f"{row.calls_per_second:,.1f}", style="dim" if row.calls_per_second == 0 else ""),
        Text(f"{stats.in_flight:,}", style="bold" if stats.in_flight else "dim"),
        *(
            Text(format_seconds(values[name]), style="dim" if idle else "")
            for name in latency_columns
        ),
    ]


def _errors_table(view: MetricsView, limit: int) -> Table | None:
    """The `limit` most frequent (procedure, exception) pairs, most frequent first."""
    rows = [
        (row.name, name, count) for row in view.procedures for name, count in row.stats.top_errors()
    ]
    rows.sort(key=lambda item: -item[2])  # stable: declaration order among equals
    del rows[limit:]
    if not rows:
        return None
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, header_style="bold", show_edge=False)
    table.add_column("procedure", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("top errors", no_wrap=True, overflow="ellipsis")
    table.add_column("count", justify="right", no_wrap=True)
    for procedure, name, count in rows:
        # Text, never a str: add_row would read a str as markup.
        table.add_row(
            Text(printable(procedure)), Text(printable(name), style="red"), Text(f"{count:,}")
        )
    return table


def _waiting_message(follower: LogFollower) -> str | None:
    if not follower.exists():
        return f"Waiting for {follower.path} to appear (start a server in that directory)…"
    return None


def show_once(follower: LogFollower, aggregator: MetricsAggregator, console: Console) -> None:
    """Read the whole log and print the dashboard once."""
    aggregator.feed(follower.poll())
    view = aggregator.view()
    console.print(render(view, follower.path, console.width, _waiting_message(follower)))


def show_live(
    follower: LogFollower,
    aggregator: MetricsAggregator,
    console: Console,
    interval: float,
    state: DashboardState | None = None,
) -> None:
    """Redraw the dashboard every `interval` seconds, fitted to the terminal's height, until
    Ctrl+C or ``q`` (which return normally); keys change the order, the page and whether idle
    procedures show (`DashboardState.press`)."""
    state = state or DashboardState()
    try:
        # "ellipsis": should anything still be taller than the terminal, it is cut, never
        # scrolled into a mess.
        with (
            _keys() as read_keys,
            Live(console=console, auto_refresh=False, vertical_overflow="ellipsis") as live,
        ):
            redraw = True
            next_poll = 0.0
            while True:
                now = time.monotonic()
                if now >= next_poll:
                    aggregator.feed(follower.poll())
                    next_poll, redraw = now + interval, True
                if redraw:
                    view = aggregator.view()
                    waiting = _waiting_message(follower)
                    size = console.size
                    picture = render(view, follower.path, size.width, waiting, size.height, state)
                    live.update(picture, refresh=True)
                    redraw = False
                for key in read_keys(max(next_poll - time.monotonic(), 0.0)):
                    if state.press(key):
                        return
                    redraw = True
    except KeyboardInterrupt:
        pass  # Live's exit has restored the cursor; Ctrl+C is the normal way out


_KEY = re.compile(r"\x1b\[[0-9;]*[~A-Za-z]|\x1b.?|.", re.DOTALL)


@contextmanager
def _keys() -> Iterator[Callable[[float], list[str]]]:
    """``read(timeout)``: the keys pressed within `timeout` seconds (a key waits that long
    at most). The terminal is in cbreak mode meanwhile (keys come one by one, unechoed), and
    restored after; without a terminal on stdin, ``read`` only waits."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else -1
    if fd < 0 or os.name != "posix":

        def wait(timeout: float) -> list[str]:
            time.sleep(timeout)
            return []

        yield wait
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:

        def read(timeout: float) -> list[str]:
            if not select.select([fd], [], [], timeout)[0]:
                return []
            data = os.read(fd, 64).decode(errors="replace")
            return _KEY.findall(data)

        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


__all__ = [
    "MAX_ERROR_ROWS",
    "MAX_NAME",
    "MAX_SERVERS_LISTED",
    "SORTS",
    "WIDE_COLUMNS",
    "DashboardState",
    "format_seconds",
    "format_uptime",
    "ordered_rows",
    "printable",
    "render",
    "show_live",
    "show_once",
]
