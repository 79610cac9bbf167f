"""Throughput through ``srpc broker`` with 1 server and with 3, measured in one run.

    python bench/bench_broker.py                          # ~1 ms of CPU work per call
    python bench/bench_broker.py --work sleep --workers 1 # servers that do one call at a time
    python bench/bench_broker.py --servers 1 2 3 --clients 6 --seconds 10

For each row: a fresh broker process (``srpc broker``, free ports), N server processes started
from generated stubs in connect mode, and several client processes (each with its own threads)
calling ``work()`` as fast as they can for a fixed time; calls/s is the total they completed.
Also shown: the median latency of one sequential ``add`` call through the broker, and a
reference row without a broker (one server bound directly, clients connected to it).

``--work cpu`` spins for the given milliseconds holding the GIL (a CPU-bound procedure: one
server process does one at a time however many workers it has); ``--work sleep`` sleeps
(an I/O-bound procedure). Read the ratio against the number of CPU cores: every process here
(clients, broker, servers) shares this machine.
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
        else:
            end = time.perf_counter() + ms / 1000
            while time.perf_counter() < end:
                pass
        return os.getpid()
"""

SERVER = """
from srpc_work_server_stub import SrpcWorkServerStub
SrpcWorkServerStub(config={config!r}).start()
"""

CLIENT = """
import sys, threading, time
from srpc_work_client_stub import SrpcWorkClientStub
config, kind, ms, seconds, threads = sys.argv[1:6]
ms, seconds, threads = float(ms), float(seconds), int(threads)
stub = SrpcWorkClientStub(config=config)
for _ in range(20 * threads):
    stub.work(kind, ms)
print("ready", flush=True)
sys.stdin.readline()
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
print(statistics.median(timings) * 1e6, flush=True)
"""

BROKER_READY = re.compile(r"clients -> (?P<frontend>\S+), servers -> (?P<backend>\S+?);")
SERVING = re.compile(r"srpc: serving \S+ at \S+:(?P<port>\d+) ")


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


def write_config(path: Path, zmq: dict[str, object], port: int = 0) -> str:
    """Write a zmq srpc.toml (metrics off); return its path."""
    table = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in zmq.items())
    path.write_text(
        f'[srpc]\ntransport = "zmq"\nport = {port}\n[srpc.metrics]\npath = ""\n[srpc.zmq]\n{table}'
    )
    return str(path)


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
    """A child process (stdin and merged stdout piped); terminated, then killed, on exit."""
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
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_broker(stack: ExitStack, project: Path) -> tuple[str, str, subprocess.Popen[str]]:
    """``srpc broker`` on free ports: (front end, back end, process)."""
    args = ["--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0"]
    broker = stack.enter_context(
        running([sys.executable, "-m", "srpc_core", "broker", *args], project)
    )
    ready = wait_for_line(broker, BROKER_READY)
    return ready["frontend"], ready["backend"], broker


def start_server(stack: ExitStack, project: Path, config: str) -> re.Match[str]:
    """A server process; returns its start-up line."""
    server = stack.enter_context(
        running([sys.executable, "-c", SERVER.format(config=config)], project)
    )
    return wait_for_line(server, SERVING)


def throughput(project: Path, client_config: str, args: argparse.Namespace) -> float:
    """Calls per second completed by all the client processes together."""
    command = [sys.executable, "-c", CLIENT, client_config, args.work, str(args.ms)]
    command += [str(args.seconds), str(args.threads)]
    with ExitStack() as stack:
        clients = [stack.enter_context(running(command, project)) for _ in range(args.clients)]
        for client in clients:
            wait_for_line(client, re.compile("^ready"))
        for client in clients:  # start them together
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
        total = sum(int(wait_for_line(c, re.compile(r"^\d+$"))[0]) for c in clients)
    return total / args.seconds


def latency(project: Path, client_config: str, calls: int) -> float:
    """Median microseconds of one sequential ``add`` call."""
    result = subprocess.run(
        [sys.executable, "-c", LATENCY, client_config, str(calls)],
        cwd=project,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout)


def via_broker(project: Path, servers: int, args: argparse.Namespace) -> tuple[float, float]:
    """(calls/s, median add µs) with `servers` servers behind a fresh broker."""
    with ExitStack() as stack:
        frontend, backend, broker = start_broker(stack, project)
        config = write_config(
            project / "server.toml", {"connect": backend, "workers": args.workers}
        )
        for _ in range(servers):
            start_server(stack, project, config)
        wait_for_line(broker, re.compile(rf"; {servers} server\(s\)"))
        client = write_config(project / "client.toml", {}, port=int(frontend.rsplit(":", 1)[1]))
        return throughput(project, client, args), latency(project, client, args.latency_calls)


def direct(project: Path, args: argparse.Namespace) -> tuple[float, float]:
    """(calls/s, median add µs) with one server and no broker."""
    with ExitStack() as stack:
        config = write_config(project / "server.toml", {"workers": args.workers})
        port = int(start_server(stack, project, config)["port"])
        client = write_config(project / "client.toml", {}, port=port)
        return throughput(project, client, args), latency(project, client, args.latency_calls)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 3], help="rows (default 1 3)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="threads per client (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per row (default 5)")
    parser.add_argument("--work", choices=["cpu", "sleep"], default="cpu", help="default cpu")
    parser.add_argument("--ms", type=float, default=1.0, help="work per call in ms (default 1)")
    parser.add_argument("--workers", type=int, default=16, help="[srpc.zmq] workers (default 16)")
    parser.add_argument("--latency-calls", type=int, default=3000, help="default 3000")
    parser.add_argument("--no-direct", action="store_true", help="skip the no-broker row")
    args = parser.parse_args()
    concurrency = args.clients * args.threads
    print(
        f"{args.clients} client processes x {args.threads} threads = {concurrency} calls in "
        f"flight; work: {args.ms} ms of {args.work} per call; {args.workers} workers per "
        f"server; {args.seconds} s per row; {os.cpu_count()} CPU cores"
    )
    with tempfile.TemporaryDirectory() as tmp:
        project = make_project(Path(tmp))
        rows = [] if args.no_direct else [("1, no broker", *direct(project, args))]
        rows += [(f"{n} via broker", *via_broker(project, n, args)) for n in args.servers]
    base = next((r[1] for r in rows if r[0] == f"{args.servers[0]} via broker"), rows[0][1])
    print(f"{'servers':<14} {'calls/s':>9} {'vs first broker row':>20} {'add median µs':>14}")
    for name, rate, micros in rows:
        print(f"{name:<14} {rate:>9.0f} {rate / base:>19.2f}x {micros:>14.0f}")


if __name__ == "__main__":
    main()
