"""The ``srpc`` command line: ``srpc gen``, ``srpc metrics``, ``srpc plugins``, and whatever
subcommands plugins add (the zmq plugin adds ``srpc broker``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from srpc_core import __version__
from srpc_core.errors import SrpcError
from srpc_core.plugins import get_plugins
from srpc_core.tools import srpc_show_metrics, srpc_stub_gen

Runner = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The ``srpc`` parser with every built-in and plugin subcommand."""
    parser = argparse.ArgumentParser(
        prog="srpc",
        description="srpc: a small, pluggable Python RPC toolkit.",
        epilog="Run `srpc <command> --help` for a command's own options.",
    )
    parser.add_argument("--version", action="version", version=f"srpc {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", required=True)

    def add(name: str, help: str, configure: Callable[[Any], None], run: Runner) -> None:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        configure(sub)
        sub.set_defaults(run=run)

    add(
        "gen",
        "generate the server and client stubs for an interface",
        srpc_stub_gen.configure_parser,
        srpc_stub_gen.run,
    )
    add(
        "metrics",
        "show a server's metrics log as a live dashboard",
        srpc_show_metrics.configure_parser,
        srpc_show_metrics.run,
    )
    add(
        "plugins",
        "list the installed plugins and the transports and codecs they offer",
        _configure_plugins,
        _run_plugins,
    )
    get_plugins().manager.hook.srpc_register_commands(register=add)
    return parser


def _configure_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def _run_plugins(args: argparse.Namespace) -> int:
    plugins = get_plugins()
    rows = [
        {
            "name": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "module": info.module,
            "transports": info.transports,
            "codecs": info.codecs,
            "error": info.error,
        }
        for info in sorted(plugins.infos.values(), key=lambda i: (i.distribution, i.name))
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("plugin", "distribution", "transports", "codecs")
    table = [header] + [
        (
            r["name"],
            f"{r['distribution']} {r['version']}".strip(),
            ", ".join(r["transports"]) or "-",
            ", ".join(r["codecs"]) or "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for r in rows:
        if r["error"]:
            print(f"\nplugin {r['name']!r} ({r['module']}) failed to load: {r['error']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``srpc``)."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        runner: Runner = args.run
        return runner(args)
    except SrpcError as exc:
        print(f"srpc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
