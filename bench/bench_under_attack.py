"""A well-behaved client's latency on a quiet server vs. while the server is under attack, and
the server's memory while 32 peers each announce a 16 MiB message and send one byte.

    python bench/bench_under_attack.py                 # 300 slowloris connections + a fuzzer
    python bench/bench_under_attack.py --slowloris 300 --calls 3000

The server is the calculator of examples/calc (tcp, json, srpc's default limits) in its own
process. The attack: `--slowloris` connections, each of which announced a 100-byte message and
sends one more byte of it every second (within any idle timeout, never finishing), and one
fuzzing client sending random frames (lying lengths, garbage bodies) on fresh connections as
fast as it can. The good client makes sequential ``add`` calls on one connection, each timed.
Rows: quiet, under attack; then the trickle memory measurement (VmRSS of the server, Linux).
"""

from __future__ import annotations

import argparse
import os
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from srpc_core import Client, Config, Server

REPO = Path(__file__).resolve().parent.parent
CALC = REPO / "examples" / "calc" / "server"


def serve() -> None:
    """Server process: print the bound port, then serve until killed."""
    sys.path.insert(0, str(CALC))
    from calc.calc import Calc
    from calc.calc_interface import CalcInterface

    server = Server(CalcInterface, Calc(), config=Config(port=0, metrics_path=""))
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    if not server.wait_until_serving(20):
        raise SystemExit("the server did not start")
    print(f"PORT {server.port}", flush=True)
    thread.join()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Attack:
    """Slowloris connections and a fuzzing client, in background threads."""

    def __init__(self, port: int, slowloris: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.socks = [self._connect() for _ in range(slowloris)]
        for sock in self.socks:
            sock.sendall(struct.pack(">I", 100) + b"x")
        self.fuzzed = 0
        self.threads = [
            threading.Thread(target=self._trickle, daemon=True),
            threading.Thread(target=self._fuzz, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def _trickle(self) -> None:
        while not self.stop.wait(1.0):
            for sock in self.socks:
                try:
                    sock.send(b"x", socket.MSG_DONTWAIT)
                except OSError:
                    pass

    def _fuzz(self) -> None:
        rng = random.Random(9)
        while not self.stop.is_set():
            size = rng.choice([0, 1, 7, 100, 2**31, rng.randrange(2**32)])
            data = struct.pack(">I", size) + rng.randbytes(rng.randrange(200))
            try:
                with self._connect() as sock:
                    sock.sendall(data)
                    sock.shutdown(socket.SHUT_WR)
                    while select.select([sock], [], [], 5)[0] and sock.recv(65536):
                        pass
            except OSError:
                pass
            self.fuzzed += 1

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for sock in self.socks:
            sock.close()


def time_calls(client: Client, calls: int) -> list[float]:
    timings = []
    for i in range(calls):
        started = time.perf_counter_ns()
        client.call("add", (i, 1))
        timings.append((time.perf_counter_ns() - started) / 1000)
    return timings


def trickle_rss(port: int, pid: int, connections: int = 32) -> tuple[float, float]:
    before = rss_mib(pid)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    for sock in socks:
        sock.sendall(struct.pack(">I", 16 * 1024 * 1024) + b"x")
    # A second for every connection's thread to read its header and first byte (v0.1 then
    # allocated the whole announced 16 MiB each).
    select.select([], [], [], 1.0)
    during = rss_mib(pid)
    for sock in socks:
        sock.close()
    return before, during


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per row")
    parser.add_argument("--slowloris", type=int, default=300, help="slowloris connections")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    sys.path.insert(0, str(CALC))
    from calc.calc_interface import CalcInterface

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = next(int(line[5:]) for line in server.stdout if line.startswith("PORT "))
        client = Client(CalcInterface, config=Config(port=port))
        time_calls(client, 300)  # warm-up
        quiet = time_calls(client, args.calls)
        attack = Attack(port, args.slowloris)
        under = time_calls(client, args.calls)
        fuzzed = attack.fuzzed
        attack.close()
        client.close()
        before, during = trickle_rss(port, server.pid)
    finally:
        server.terminate()
        server.wait()
    print(
        f"good client: {args.calls} sequential add() calls per row, tcp+json, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs"
    )
    print(f"{'row':<44}{'median us':>10}{'p99 us':>10}")
    for name, timings in (
        ("quiet server", quiet),
        (f"{args.slowloris} slowloris + fuzzer ({fuzzed} fuzz connections)", under),
    ):
        p99 = statistics.quantiles(timings, n=100)[98]
        print(f"{name:<44}{statistics.median(timings):>10.1f}{p99:>10.1f}")
    print(
        f"server RSS, 32 peers announcing 16 MiB and sending 1 byte: "
        f"{before:.0f} MiB before, {during:.0f} MiB while they wait"
    )


if __name__ == "__main__":
    main()
