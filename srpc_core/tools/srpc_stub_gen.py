"""``python -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py``: write the srpc stubs.

Also available as ``srpc-stub-gen`` and ``srpc gen``.
"""

from __future__ import annotations

import argparse
import sys

from srpc_core.codegen.generator import StubGenError, generate, write

DESCRIPTION = """\
Generate the srpc server and client stubs for a service interface.

Given calc/calc_interface.py (a package `calc` holding `class CalcInterface(ABC)` with
@abstractmethod methods, and `class Calc(CalcInterface)` in calc/calc.py), write
srpc_calc_server_stub.py (SrpcCalcServerStub) and srpc_calc_client_stub.py
(SrpcCalcClientStub) into the output folder. Run it from the folder that holds the package.
"""

EPILOG = """\
examples:
  python -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py
  srpc gen user_store/user_store_interface.py -o build/
  srpc gen calc/calc_interface.py --check     # in CI: fail if the stubs are stale
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
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the stubs in DIR are missing or stale against the interface",
    )


def run(args: argparse.Namespace) -> int:
    """Generate (or check) the stubs; return the exit code."""
    try:
        files = generate(args.interface, args.output_dir)
    except StubGenError as exc:
        print(f"srpc-stub-gen: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        stale = [f for f in files if not f.is_current()]
        for file in stale:
            state = "stale" if file.path.exists() else "missing"
            print(f"srpc-stub-gen: {file.path} is {state}; regenerate it with:", file=sys.stderr)
            print(f"    python -m srpc_core.tools.srpc_stub_gen {args.interface}", file=sys.stderr)
        if not stale:
            print(f"srpc-stub-gen: stubs for {args.interface} are up to date")
        return 1 if stale else 0
    write(files)
    for file in files:
        print(f"srpc-stub-gen: wrote {file.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``srpc-stub-gen``)."""
    parser = argparse.ArgumentParser(
        prog="srpc-stub-gen",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
