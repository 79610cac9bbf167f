"""``python -m srpc_core.tools.srpc_show_metrics [LOG]``: the live metrics dashboard.

Also installed as ``srpc-show-metrics`` and mounted as ``srpc metrics`` (through
`configure_parser` and `run`). The dashboard needs the ``srpclib[dashboard]`` extra (rich);
``--json`` does not.
"""

from __future__ import annotations

import argparse
import json
import sys

from srpc_core.config import load_config
from srpc_core.errors import ConfigError
from srpc_core.metrics import LogFollower, MetricsAggregator

DEFAULT_LOG = "srpc_server_metrics.log"
DESCRIPTION = (
    "Show the call metrics a server writes to its metrics log: one row per procedure with "
    "successful and failed calls, error rate, calls per second and latency (min, mean, p50, "
    "p95, p99, max), refreshed live. Start it before or after the server; it follows the log "
    "across server restarts, log rotation and truncation, and sums several servers writing to "
    "the same log. Ctrl+C quits."
)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of the metrics viewer to `parser` (used by ``srpc metrics``)."""
    parser.add_argument(
        "log",
        nargs="?",
        default=None,
        help=f"the metrics log to show (default: [srpc.metrics] path from srpc.toml if there is "
        f"one, else {DEFAULT_LOG!r} in the current directory)",
    )
    parser.add_argument("--once", action="store_true", help="print the current table once and exit")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the current numbers as JSON and exit (implies --once; does not need rich)",
    )
    parser.add_argument(
        "--interval",
        "--refresh",
        type=_positive_seconds,
        default=1.0,
        metavar="SECONDS",
        help="seconds between refreshes of the live dashboard (default: 1)",
    )
    parser.add_argument(
        "--window",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="calls per second are averaged over this many recent seconds (default: 5)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the viewer with parsed `args`; return the exit code."""
    path = args.log if args.log is not None else _default_log()
    if not path:
        return 1
    follower = LogFollower(path)
    aggregator = MetricsAggregator(window=args.window)
    if (args.once or args.json) and not follower.exists():
        print(f"srpc metrics: {path} does not exist (no server has written to it)", file=sys.stderr)
        return 1
    try:
        return _show(follower, aggregator, args)
    finally:
        follower.close()


def _show(follower: LogFollower, aggregator: MetricsAggregator, args: argparse.Namespace) -> int:
    if args.json:
        aggregator.feed(follower.poll())
        document = {"log": follower.path, **aggregator.view().to_json()}
        print(json.dumps(document, indent=2))
        return 0
    try:
        from rich.console import Console

        from srpc_core.metrics import dashboard
    except ImportError:
        print(
            "srpc metrics: the dashboard needs rich: pip install 'srpclib[dashboard]' "
            "(or use --json, which does not)",
            file=sys.stderr,
        )
        return 1
    console = Console()
    if args.once:
        dashboard.show_once(follower, aggregator, console)
    else:
        dashboard.show_live(follower, aggregator, console, args.interval)
    return 0


def _default_log() -> str:
    """The log path from srpc.toml, or the default; "" (after saying why) if metrics are off."""
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"srpc metrics: {exc}; using {DEFAULT_LOG!r}", file=sys.stderr)
        return DEFAULT_LOG
    if not config.metrics_path:
        print(
            f'srpc metrics: {config.source} turns the metrics log off ([srpc.metrics] path = ""); '
            "give the log path as an argument",
            file=sys.stderr,
        )
    return config.metrics_path


def main(argv: list[str] | None = None) -> int:
    """The ``srpc-show-metrics`` command."""
    parser = argparse.ArgumentParser(prog="srpc-show-metrics", description=DESCRIPTION)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DEFAULT_LOG",
    "DESCRIPTION",
    "configure_parser",
    "main",
    "run",
]
