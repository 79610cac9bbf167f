"""Per-call latency of srpc's transports and codecs against a bare Python socket round trip,
all measured in the same run.

    python bench/bench_latency.py --calls 10000 --combos tcp:json     # the headline figure
    python bench/bench_latency.py                                     # every combination

Each srpc row: a server process serving the calculator of examples/calc, one client (one
connection) making sequential ``add(i, 1)`` calls after a warm-up, every call timed on its own.
The baseline row is the same loop over a bare socket: a 4-byte length-prefixed echo server
written with nothing but the standard library, the smallest round trip Python can do over TCP.
Rows take turns in blocks of calls, so background load hits every row alike. The table shows the
median, the 99th percentile, and the median's ratio to the bare socket and to tcp+json.
``uds`` comes from examples/srpc-plugin-example, used from its source folder when it is not
installed; ``msgpack`` is srpc's own (the example's codec is ``msgpack-example``).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
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
DEFAULT_COMBOS = [
    "tcp:json",
    "tcp:cbor",
    "zmq:json",
    "zmq:cbor",
    "uds:json",
    "uds:cbor",
    "uds:msgpack",
    "tcp:msgpack",
]
BASELINE = "tcp:json"
BLOCK = 250
#: CPUs for the server processes (set by --pin); None leaves placement to the scheduler.
SERVER_CPUS: set[int] | None = None


def pin_server() -> None:
    """Run in each server process before it starts (see --pin)."""
    if SERVER_CPUS is not None:
        os.sched_setaffinity(0, SERVER_CPUS)


def plugins() -> Plugins:
    """srpc's plugins, plus the example plugin's modules if it is not installed."""
    installed = get_plugins()
    if "uds" in installed.transports:
        return installed
    sys.path.insert(0, str(EXAMPLE_PLUGIN))
    from srpc_plugin_example import msgpack_codec, uds

    extra: dict[str, ModuleType] = {"uds": uds, "msgpack-example": msgpack_codec}
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
            preexec_fn=pin_server,
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


ECHO_SERVER = """
import socket, struct
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = conn.makefile("rb")
while len(header := reader.read(4)) == 4:
    conn.sendall(header + reader.read(struct.unpack(">I", header)[0]))
"""


class BareSocketRow(Row):
    """The baseline: a request-sized frame echoed by a standard-library socket server."""

    def __init__(self) -> None:
        self.name = "bare socket"
        self.server = subprocess.Popen(
            [sys.executable, "-c", ECHO_SERVER],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=pin_server,
        )
        assert self.server.stdout is not None
        self.sock = socket.create_connection(("127.0.0.1", int(self.server.stdout.readline())))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = self.sock.makefile("rb")
        request = b'[1,"add",[4,2],{}]'  # what srpc tcp+json sends for add(4, 2)
        self.frame = struct.pack(">I", len(request)) + request
        self.timings = []

    def time_calls(self, calls: int, record: bool = True) -> None:
        clock, timings, sock, reader, frame = (
            time.perf_counter_ns,
            self.timings,
            self.sock,
            self.reader,
            self.frame,
        )
        for _ in range(calls):
            started = clock()
            sock.sendall(frame)
            reader.read(struct.unpack(">I", reader.read(4))[0])
            if record:
                timings.append((clock() - started) / 1000)

    def close(self) -> None:
        self.reader.close()
        self.sock.close()
        self.server.kill()
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
    parser.add_argument(
        "--pin",
        choices=["same", "split", "none"],
        default="same",
        help="same: client and servers on CPU 0 (steady; measures srpc's own cost, the default); "
        "split: client on CPU 0, servers on CPU 1 (adds the cross-CPU wake-up, large on VMs); "
        "none: let the scheduler place them (noisy)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    global SERVER_CPUS
    if args.pin != "none":
        os.sched_setaffinity(0, {0})
        SERVER_CPUS = {0} if args.pin == "same" else {1}
    combos = [BASELINE, *(c for c in args.combos if c != BASELINE)]
    with tempfile.TemporaryDirectory(prefix="srpc-bench-") as sockets:
        rows: list[Row] = [BareSocketRow()]
        rows += [Row(combo, Path(sockets)) for combo in combos]
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
    report(rows, args.calls, args.pin)


def report(rows: list[Row], calls: int, pin: str) -> None:
    bare, baseline = (statistics.median(row.timings) for row in rows[:2])
    print(
        f"{calls} sequential add() calls per row (in turns of {BLOCK}), one connection each, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, --pin {pin}"
    )
    print(f"{'row':<18}{'median us':>11}{'p99 us':>10}{'vs bare':>9}{'vs tcp+json':>13}")
    for row in rows:
        median = statistics.median(row.timings)
        p99 = statistics.quantiles(row.timings, n=100)[98]
        print(
            f"{row.name:<18}{median:>11.1f}{p99:>10.1f}{median / bare:>9.2f}"
            f"{median / baseline:>13.2f}"
        )


if __name__ == "__main__":
    main()
