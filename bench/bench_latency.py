"""Per-call latency of srpc against a bare Python socket round trip, measured in one run.

    python bench/bench_latency.py                      # tcp+json, 10,000 calls
    python bench/bench_latency.py --calls 20000 --combos tcp:json tcp:cbor zmq:json zmq:cbor

Each row: a server process started from generated calc stubs, one client on one connection
making sequential `add(i, 1)` calls after a warm-up; every call is timed on its own. The
baseline is the same loop over a bare socket: a 4-byte length-prefixed echo server written with
nothing but the standard library, the smallest round trip Python can do over TCP.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ECHO_SERVER = """
import socket, struct, sys
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
conn, _ = listener.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reader = conn.makefile("rb")
while True:
    header = reader.read(4)
    if len(header) < 4:
        break
    body = reader.read(struct.unpack(">I", header)[0])
    conn.sendall(header + body)
"""


def time_calls(call: object, calls: int, warmup: int) -> list[float]:
    """Per-call durations in microseconds."""
    assert callable(call)
    for i in range(warmup):
        call(i)
    timings = []
    clock = time.perf_counter_ns
    for i in range(calls):
        started = clock()
        call(i)
        timings.append((clock() - started) / 1000)
    return timings


def bare_socket(calls: int, warmup: int) -> list[float]:
    server = subprocess.Popen(
        [sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")
        request = b'[1,"add",[4,2],{}]'
        frame = struct.pack(">I", len(request)) + request

        def round_trip(i: int) -> None:
            sock.sendall(frame)
            reader.read(struct.unpack(">I", reader.read(4))[0])

        return time_calls(round_trip, calls, warmup)
    finally:
        server.kill()
        server.wait()


def srpc_combo(project: Path, transport: str, codec: str, calls: int, warmup: int) -> list[float]:
    config = project / f"{transport}-{codec}.toml"
    config.write_text(
        f'[srpc]\ntransport = "{transport}"\ncodec = "{codec}"\n[srpc.metrics]\npath = ""\n'
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from srpc_calc_server_stub import SrpcCalcServerStub\n"
            f"SrpcCalcServerStub('127.0.0.1', 0, config={str(config)!r}).start()",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        port = _wait_for_port(server)
        sys.path.insert(0, str(project))
        from srpc_calc_client_stub import SrpcCalcClientStub  # type: ignore[import-not-found]

        with SrpcCalcClientStub("127.0.0.1", port, config=str(config)) as calc:
            return time_calls(lambda i: calc.add(i, 1), calls, warmup)
    finally:
        server.terminate()
        server.wait()


def _wait_for_port(server: subprocess.Popen[str]) -> int:
    assert server.stdout is not None
    for line in server.stdout:
        if "srpc: serving" in line:
            return int(line.split(" at ")[1].split()[0].rsplit(":", 1)[1])
    raise SystemExit(f"the server did not start (exit code {server.wait()})")


def make_project() -> Path:
    project = Path(tempfile.mkdtemp(prefix="srpc-bench-"))
    shutil.copytree(REPO / "examples" / "calc" / "server" / "calc", project / "calc")
    subprocess.run(
        [sys.executable, "-m", "srpc_core.tools.srpc_stub_gen", "calc/calc_interface.py"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    return project


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", type=int, default=10_000, help="timed calls per row (default 10000)"
    )
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls first (default 500)")
    parser.add_argument(
        "--combos",
        nargs="+",
        default=["tcp:json"],
        metavar="TRANSPORT:CODEC",
        help="srpc rows to measure (default tcp:json)",
    )
    args = parser.parse_args()
    project = make_project()
    try:
        rows = [("bare socket (baseline)", bare_socket(args.calls, args.warmup))]
        for combo in args.combos:
            transport, codec = combo.split(":")
            rows.append(
                (
                    f"srpc {transport}+{codec}",
                    srpc_combo(project, transport, codec, args.calls, args.warmup),
                )
            )
    finally:
        shutil.rmtree(project, ignore_errors=True)
    baseline = statistics.median(rows[0][1])
    print(
        f"{args.calls} sequential calls per row, one connection, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'row':<26}{'median us':>10}{'p99 us':>10}{'mean us':>10}{'x baseline':>12}")
    for name, timings in rows:
        median = statistics.median(timings)
        p99 = statistics.quantiles(timings, n=100)[98]
        print(
            f"{name:<26}{median:>10.1f}{p99:>10.1f}{statistics.fmean(timings):>10.1f}{median / baseline:>12.2f}"
        )


if __name__ == "__main__":
    main()
