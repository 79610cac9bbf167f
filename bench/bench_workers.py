"""W3 throughput with ``[srpc] workers = 1`` against ``workers = 2``, measured in one run.

    python bench/bench_workers.py                       # 3 rounds of 5 s per cell
    python bench/bench_workers.py --seconds 10 --rounds 5 --clients 1,2,4 --threads 8

W3 as in bench/run.py: client threads, each with its own connection, call ``add(i, n)`` as fast
as they can for a fixed time; every result is checked. Here the clients are C client processes
of T threads each (C from ``--clients``), so the client side is not limited to one core either.
For each round, for each client count, the server runs with ``workers = 1`` and with ``workers =
2`` (order alternating between rounds), a fresh server process (a generated stub, tcp + json,
metrics log off) each time; a cell is the median over rounds.

Read it against the machine: on a 2-core VM the clients and the server workers share the two
cores, so a second worker can only win what the one worker left idle (the GIL of one server
process caps it at one core). Absolute figures swing with load; compare within one run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from support import ServerProcess, child_env, make_project  # noqa: E402

INTERFACE = '''\
from abc import ABC, abstractmethod


class BenchInterface(ABC):
    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """Return a + b."""
'''

IMPLEMENTATION = """\
from bench.bench_interface import BenchInterface


class Bench(BenchInterface):
    def add(self, a: int, b: int) -> int:
        return a + b
"""

#: One client process: THREADS threads, each with its own connection, warm; says "ready", waits
#: for "go" on stdin, calls add() for SECONDS, prints the calls it completed and the time taken.
CLIENT = """
import sys, threading, time
import srpc_core
from bench.bench_interface import BenchInterface

port, threads, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
clients = [srpc_core.Client(BenchInterface, "127.0.0.1", port) for _ in range(threads)]
for n, client in enumerate(clients):
    assert client.call("add", (n, 1)) == n + 1  # connected and warm before the clock starts
counts = [0] * threads
go, stop = threading.Event(), threading.Event()

def work(n):
    call, done = clients[n].call, 0
    go.wait()
    while not stop.is_set():
        if call("add", (done, n)) != done + n:
            raise SystemExit("wrong sum")
        done += 1
    counts[n] = done

workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
for thread in workers:
    thread.start()
print("ready", flush=True)
sys.stdin.readline()
began = time.perf_counter()
go.set()
time.sleep(seconds)
stop.set()
for thread in workers:
    thread.join()
print(sum(counts), time.perf_counter() - began, flush=True)
for client in clients:
    client.close()
"""


def write_config(directory: Path, workers: int) -> Path:
    config = directory / f"srpc-workers-{workers}.toml"
    config.write_text(
        f'[srpc]\nhost = "127.0.0.1"\nport = 0\nworkers = {workers}\n\n[srpc.metrics]\npath = ""\n'
    )
    return config


def measure(project: Path, workers: int, clients: int, threads: int, seconds: float) -> float:
    """calls/s of `clients` processes x `threads` threads against a fresh server."""
    config = write_config(project, workers)
    with ServerProcess(project, "bench", config=config) as server:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", CLIENT, str(server.port), str(threads), str(seconds)],
                cwd=project,
                env=child_env(),
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for _ in range(clients)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    raise SystemExit(f"a client failed to start: {line!r}")
            for proc in procs:  # all clients start together
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            total = 0.0
            for proc in procs:
                out, _ = proc.communicate(timeout=seconds + 60)
                if proc.returncode != 0:
                    raise SystemExit(f"a client failed: {out!r}")
                calls, elapsed = out.split()
                total += int(calls) / float(elapsed)
            return total
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per cell (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="medians over rounds (default 3)")
    parser.add_argument(
        "--clients", default="1,2", help="client process counts, comma-separated (default 1,2)"
    )
    parser.add_argument("--threads", type=int, default=8, help="threads per client (default 8)")
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    results: dict[tuple[int, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(
            Path(tmp),
            "bench",
            {"bench/bench_interface.py": INTERFACE, "bench/bench.py": IMPLEMENTATION},
        )
        for round_ in range(args.rounds):
            for clients in client_counts:
                order = (1, 2) if round_ % 2 == 0 else (2, 1)
                for workers in order:
                    rate = measure(project, workers, clients, args.threads, args.seconds)
                    results.setdefault((clients, workers), []).append(rate)
                    print(
                        f"round {round_ + 1}: {clients} x {args.threads} threads, "
                        f"workers = {workers}: {rate:,.0f} calls/s",
                        file=sys.stderr,
                        flush=True,
                    )
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\nW3 calls/s, tcp+json, medians of {args.rounds} rounds of {args.seconds:g} s; "
        f"{cpus} CPUs shared by clients and server; {sys.platform}, Python "
        f"{re.sub(r' .*', '', sys.version)}\n"
    )
    print("| clients | workers = 1 | workers = 2 | ratio |")
    print("|---|---:|---:|---:|")
    for clients in client_counts:
        one = statistics.median(results[(clients, 1)])
        two = statistics.median(results[(clients, 2)])
        print(
            f"| {clients} process{'es' if clients > 1 else ''} x {args.threads} threads "
            f"| {one:,.0f} | {two:,.0f} | {two / one:.2f}x |"
        )


if __name__ == "__main__":
    main()
