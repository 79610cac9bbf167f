"""``python -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py``: write the srpc stubs.

Also available as ``srpc-stub-gen`` and ``srpc gen``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from srpc_core.codegen.generator import GeneratedFile, generate, write
from srpc_core.errors import StubGenError

PROG = "srpc-stub-gen"

DESCRIPTION = """\
Generate the srpc server and client stubs for a service interface.

Given calc/calc_interface.py (a package `calc` holding `class CalcInterface(ABC)` with
@abstractmethod methods, and `class Calc(CalcInterface)` in calc/calc.py), write
srpc_calc_server_stub.py (SrpcCalcServerStub) and srpc_calc_client_stub.py
(SrpcCalcClientStub) into the output folder. Run it from the folder that holds the package.

Exit status: 0 when done (with --check: the stubs are current), 1 with --check when a stub is
stale or missing, 2 when the interface cannot be used (the message says why).
"""

EPILOG = """\
examples:
  python -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py
  srpc gen user_store/user_store_interface.py -o build/
  srpc gen calc/calc_interface.py --check        # in CI: fail if the stubs are stale
  srpc gen calc/calc_interface.py --only client  # a client folder needs only this one
"""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the stub generator's arguments to `parser`."""
    parser.add_argument(
        "interface", help="path of the interface module, e.g. calc/calc_interface.py"
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        default=".",
        metavar="DIR",
        help="folder to write the stubs into (default: the current folder)",
    )
    parser.add_argument(
        "--only",
        choices=["server", "client"],
        help="write (or check) only this stub, e.g. in a client folder without the implementation",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the stubs in DIR are missing or stale against the "
        "interface (for CI), 0 if they are current",
    )


def run(args: argparse.Namespace) -> int:
    """Generate (or check) the stubs; return the exit code (0 ok, 1 stale, 2 error)."""
    try:
        stubs = generate(args.interface, args.output_dir)
        files = [file for file in stubs.files if args.only in (None, file.role)]
        if args.check:
            return _check(files, _command(args))
        write(files)
    except StubGenError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: cannot write the stubs: {exc}", file=sys.stderr)
        return 2
    for file in files:
        print(f"{PROG}: wrote {file.path}")
    for note in stubs.notes if args.only != "client" else []:
        print(f"{PROG}: note: {note}", file=sys.stderr)
    return 0


def _check(files: list[GeneratedFile], command: str) -> int:
    """Report stale or missing stubs without writing; 1 if any, else 0."""
    stale = [file for file in files if not file.is_current()]
    for file in stale:
        state = "stale" if file.path.exists() else "missing"
        print(f"{PROG}: {file.path} is {state}", file=sys.stderr)
    if stale:
        print(f"{PROG}: regenerate the stubs with:\n    {command}", file=sys.stderr)
        return 1
    print(f"{PROG}: {' and '.join(str(f.path) for f in files)} are up to date")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command that regenerates the stubs the way they were asked for."""
    command = f"python -m srpc_core.tools.srpc_stub_gen {shlex.quote(args.interface)}"
    if Path(args.output_dir) != Path("."):
        command += f" -o {shlex.quote(args.output_dir)}"
    if args.only:
        command += f" --only {args.only}"
    return command


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``srpc-stub-gen``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DESCRIPTION",
    "EPILOG",
    "PROG",
    "configure_parser",
    "main",
    "run",
]
