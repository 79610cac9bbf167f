"""Per-call latency of each transport and codec, against tcp+json measured in the same run.

    python bench/bench_codecs_transports.py                  # 5,000 calls per row
    python bench/bench_codecs_transports.py --calls 20000 --combos tcp:json uds:msgpack

Each row: a server process serving the calculator of examples/calc, one client (one connection)
making sequential ``add(i, 1)`` calls after a warm-up, every call timed on its own; the table
shows the median, the 99th percentile, and the median's ratio to tcp+json. ``uds`` and
``msgpack`` come from examples/srpc-plugin-example, used from its source folder when it is not
installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from srpc_core import Client, Config, Server
from srpc_core.plugins import Plugins, get_plugins

REPO = Path(__file__).resolve().parent.parent
CALC = REPO / "examples" / "calc" / "server"
EXAMPLE_PLUGIN = REPO / "examples" / "srpc-plugin-example" / "src"
DEFAULT_COMBOS = ["tcp:json", "tcp:cbor", "tcp:msgpack", "uds:json", "uds:cbor", "uds:msgpack"]
BASELINE = "tcp:json"
BLOCK = 250


def plugins() -> Plugins:
    """srpc's plugins, plus the example plugin's modules if it is not installed."""
    installed = get_plugins()
    if "uds" in installed.transports:
        return installed
    sys.path.insert(0, str(EXAMPLE_PLUGIN))
    from srpc_plugin_example import msgpack_codec, uds

    extra: dict[str, ModuleType] = {"uds": uds, "msgpack": msgpack_codec}
    return Plugins(extra_plugins=extra)


def config(transport: str, codec: str, host: str, port: int) -> Config:
    return Config(transport=transport, codec=codec, host=host, port=port, metrics_path="")


def serve(transport: str, codec: str, host: str) -> None:
    """Server process: print the bound port, then serve until killed."""
    import threading

    sys.path.insert(0, str(CALC))
    from calc.calc import Calc
    from calc.calc_interface import CalcInterface

    server = Server(
        CalcInterface, Calc(), config=config(transport, codec, host, 0), plugins=plugins()
    )
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    if not server.wait_until_serving(20):
        raise SystemExit("the server did not start")
    print(f"PORT {server.port}", flush=True)
    thread.join()


class Row:
    """One transport+codec: its server process and a client of it."""

    def __init__(self, combo: str, sockets: Path) -> None:
        sys.path.insert(0, str(CALC))
        from calc.calc_interface import CalcInterface

        self.name = combo.replace(":", "+")
        transport, codec = combo.split(":")
        host = str(sockets) if transport == "uds" else "127.0.0.1"
        self.server = subprocess.Popen(
            [sys.executable, __file__, "--serve", transport, codec, host],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.server.stdout is not None
        port = next(int(line[5:]) for line in self.server.stdout if line.startswith("PORT "))
        self.client = Client(
            CalcInterface, config=config(transport, codec, host, port), plugins=plugins()
        )
        self.timings: list[float] = []

    def time_calls(self, calls: int, record: bool = True) -> None:
        """Make `calls` sequential add() calls, timing each (in microseconds)."""
        clock, call, timings = time.perf_counter_ns, self.client.call, self.timings
        for i in range(calls):
            started = clock()
            call("add", (i, 1))
            if record:
                timings.append((clock() - started) / 1000)

    def close(self) -> None:
        self.client.close()
        self.server.terminate()
        self.server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls first")
    parser.add_argument("--combos", nargs="+", default=DEFAULT_COMBOS, metavar="TRANSPORT:CODEC")
    parser.add_argument(
        "--serve", nargs=3, metavar=("TRANSPORT", "CODEC", "HOST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    combos = [BASELINE, *(c for c in args.combos if c != BASELINE)]
    with tempfile.TemporaryDirectory(prefix="srpc-bench-") as sockets:
        rows = [Row(combo, Path(sockets)) for combo in combos]
        try:
            # Small blocks, taking turns: background load hits every row alike.
            for row in rows:
                row.time_calls(args.warmup, record=False)
            for _ in range(max(1, args.calls // BLOCK)):
                for row in rows:
                    row.time_calls(BLOCK)
        finally:
            for row in rows:
                row.close()
    report(rows, args.calls)


def report(rows: list[Row], calls: int) -> None:
    baseline = statistics.median(rows[0].timings)
    print(
        f"{calls} sequential add() calls per row (in turns of {BLOCK}), one connection each, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'transport+codec':<18}{'median us':>11}{'p99 us':>10}{'vs tcp+json':>13}")
    for row in rows:
        median = statistics.median(row.timings)
        p99 = statistics.quantiles(row.timings, n=100)[98]
        print(f"{row.name:<18}{median:>11.1f}{p99:>10.1f}{median / baseline:>13.2f}")


if __name__ == "__main__":
    main()
