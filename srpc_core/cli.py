"""The ``srpc`` command line: ``srpc gen``, ``srpc metrics``, ``srpc plugins``, and whatever
subcommands plugins add (the zmq plugin adds ``srpc broker``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from typing import Any

from srpc_core import __version__
from srpc_core.errors import SrpcError
from srpc_core.plugins import get_plugins
from srpc_core.tools import srpc_inspect, srpc_keygen, srpc_show_metrics, srpc_stub_gen

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

    def add(
        name: str,
        help: str,
        configure: Callable[[Any], None],
        run: Runner,
        description: str | None = None,
        epilog: str | None = None,
    ) -> None:
        sub = commands.add_parser(
            name,
            help=help,
            description=description or help,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        configure(sub)
        sub.set_defaults(run=run)

    add(
        "gen",
        "generate the server and client stubs for an interface",
        srpc_stub_gen.configure_parser,
        srpc_stub_gen.run,
        srpc_stub_gen.DESCRIPTION,
        srpc_stub_gen.EPILOG,
    )
    add(
        "metrics",
        "show a server's metrics log as a live dashboard",
        srpc_show_metrics.configure_parser,
        srpc_show_metrics.run,
        srpc_show_metrics.DESCRIPTION,
    )
    add(
        "plugins",
        "list the installed plugins and the transports and codecs they offer",
        _configure_plugins,
        _run_plugins,
    )
    add(
        "list",
        "list a live server's procedures",
        srpc_inspect.configure_list,
        srpc_inspect.run_list,
    )
    add(
        "call",
        "call a procedure of a live server",
        srpc_inspect.configure_call,
        srpc_inspect.run_call,
    )
    add(
        "ping",
        "check that a server answers (exit 0/1)",
        srpc_inspect.configure_ping,
        srpc_inspect.run_ping,
    )
    add(
        "keygen",
        "make a CURVE key pair (NAME.key, NAME.pub) for the zmq transport",
        srpc_keygen.configure_parser,
        srpc_keygen.run,
        srpc_keygen.DESCRIPTION,
        srpc_keygen.EPILOG,
    )
    get_plugins().register_commands(add)
    return parser


def _configure_plugins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")


def _run_plugins(args: argparse.Namespace) -> int:
    infos = sorted(get_plugins().infos.values(), key=lambda i: (i.distribution, i.name))
    if args.json:
        print(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
        return 0
    table = [("plugin", "distribution", "transports", "codecs")] + [
        (
            info.name,
            f"{info.distribution} {info.version}".strip(),
            ", ".join(info.transports) or "-",
            ", ".join(info.codecs) or "-",
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for info in infos:
        if info.error:
            print(f"\nplugin {info.name!r} ({info.module}) failed to load: {info.error}")
        for missing in info.missing:
            print(f"\nplugin {info.name!r} offers {missing}")
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


__all__ = [
    "Runner",
    "build_parser",
    "main",
]
