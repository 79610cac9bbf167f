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

import re
import time

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


def render(
    view: MetricsView, source: str, width: int = 80, waiting: str | None = None
) -> RenderableType:
    """The dashboard for `view`; `source` names the log, `waiting` replaces an empty table."""
    if not view.servers:
        message = waiting or f"No server has written to {source} yet."
        return Panel(Text(message), title="srpc metrics", box=box.ROUNDED, expand=False)
    parts: list[RenderableType] = [_header(view), _table(view, wide=width >= WIDE_COLUMNS)]
    errors = _errors_table(view)
    if errors is not None:
        parts.append(errors)
    stamp = time.strftime("%H:%M:%S", time.localtime(view.time))
    parts.append(Text(f"log: {source} · {stamp}", style="dim"))
    return Group(*parts)


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


def _table(view: MetricsView, wide: bool) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, header_style="bold")
    table.add_column("procedure", no_wrap=True, overflow="ellipsis", max_width=28)
    for name in ("ok", "failed", "err%", "calls/s"):
        table.add_column(name, justify="right", no_wrap=True)
    latency_columns = list(LATENCY_FIELDS) if wide else ["p50", "p95", "p99", "max"]
    for name in latency_columns:
        table.add_column(name, justify="right", no_wrap=True)
    for row in view.procedures:
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
        *(
            Text(format_seconds(values[name]), style="dim" if idle else "")
            for name in latency_columns
        ),
    ]


def _errors_table(view: MetricsView) -> Table | None:
    rows = [
        (row.name, name, count) for row in view.procedures for name, count in row.stats.top_errors()
    ]
    if not rows:
        return None
    table = Table(
        title="top errors",
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        header_style="bold",
    )
    table.add_column("procedure", no_wrap=True, overflow="ellipsis", max_width=28)
    table.add_column("exception", overflow="fold")
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
    follower: LogFollower, aggregator: MetricsAggregator, console: Console, interval: float
) -> None:
    """Redraw the dashboard every `interval` seconds until Ctrl+C (which returns normally)."""
    try:
        # "ellipsis": a table taller than the terminal is cut, never scrolled into a mess.
        with Live(console=console, auto_refresh=False, vertical_overflow="ellipsis") as live:
            while True:
                aggregator.feed(follower.poll())
                view = aggregator.view()
                waiting = _waiting_message(follower)
                live.update(render(view, follower.path, console.width, waiting), refresh=True)
                time.sleep(interval)
    except KeyboardInterrupt:
        pass  # Live's exit has restored the cursor; Ctrl+C is the normal way out


__all__ = [
    "MAX_NAME",
    "MAX_SERVERS_LISTED",
    "WIDE_COLUMNS",
    "format_seconds",
    "format_uptime",
    "printable",
    "render",
    "show_live",
    "show_once",
]
