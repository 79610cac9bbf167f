"""How much do metrics cost a server? Throughput with the metrics log on vs off.

Two real srpc servers run side by side, each in its own process on 127.0.0.1 over TCP: one with
the metrics log on, one with it off. A client process with several threads calls ``add`` as
fast as it can on one server, then the other, in short bursts in ABBA order (off, on, on, off,
...), so that anything else happening on the machine hits both settings alike. Each pair of
bursts gives one on/off ratio; the median ratio is the result. On Linux the servers are pinned
to one CPU and the client to another, so they never compete for a core.

Also printed: the server's CPU time per call in each setting, and the observer's own cost per
call measured in-process (the part of the difference that is the metrics themselves).

    python bench/bench_metrics.py                         # 8 rounds of 1 s bursts
    python bench/bench_metrics.py --seconds 2 --rounds 10 --threads 8

The same script also plays the server (``--serve``) and the client (``--load``) it starts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import srpc_core
from srpc_core.config import Config


class BenchInterface(ABC):
    """The benchmarked service."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """Return a + b."""


class Bench(BenchInterface):
    """The implementation: as cheap as possible, so that srpc's own cost dominates."""

    def add(self, a: int, b: int) -> int:
        return a + b


def pin(cpu: int | None) -> None:
    """Run this process on one CPU only (Linux; elsewhere a no-op)."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# -- the server process: answers "cpu" with its CPU seconds, stops on "stop" ---------------------


def serve(metrics_path: str, cpu: int | None) -> int:
    """Serve in a thread; on stdin, answer ``cpu`` with the CPU seconds used, stop on ``stop``."""
    pin(cpu)
    config = Config(metrics_path=metrics_path)
    server = srpc_core.Server(BenchInterface, Bench(), "127.0.0.1", 0, config=config)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    if not server.wait_until_serving(30):
        return 1
    print(f"READY {server.port}", flush=True)
    for command in sys.stdin:
        if command.strip() == "cpu":
            print(f"CPU {time.process_time()}", flush=True)
        else:
            break
    server.stop()
    thread.join(30)
    return 0


# -- the client process: on "PORT SECONDS", calls add() from every thread, answers the count -----


def load(threads: int, cpu: int | None) -> int:
    """For each ``PORT SECONDS`` line on stdin, call ``add`` on that port from `threads` threads
    for `SECONDS` and print how many calls were made."""
    pin(cpu)
    clients: dict[int, list[srpc_core.Client]] = {}
    for command in sys.stdin:
        port_text, seconds_text = command.split()
        port, seconds = int(port_text), float(seconds_text)
        if port not in clients:  # connect once, outside the measured time
            clients[port] = [
                srpc_core.Client(BenchInterface, "127.0.0.1", port) for _ in range(threads)
            ]
            for client in clients[port]:
                client.call("add", (1, 2), {})
        print(f"CALLS {burst(clients[port], seconds)}", flush=True)
    return 0


def burst(clients: list[srpc_core.Client], seconds: float) -> int:
    counts = [0] * len(clients)
    start = threading.Barrier(len(clients))

    def hammer(slot: int) -> None:
        client = clients[slot]
        start.wait()
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            client.call("add", (n, 2), {})
            n += 1
        counts[slot] = n

    workers = [threading.Thread(target=hammer, args=(slot,)) for slot in range(len(clients))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts)


# -- the driver ----------------------------------------------------------------------------------


class Child:
    """A process of this script playing one role, spoken to line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str | None, answer: str) -> str:
        """Send `command` (if any) and return the value of the first line starting `answer`."""
        stdin, stdout = self._pipes()
        if command is not None:
            stdin.write(command + "\n")
            stdin.flush()
        for line in stdout:  # the server's own start-up line is skipped here
            if line.startswith(answer + " "):
                return line.split()[1]
        raise SystemExit(f"a benchmark process ended without answering {answer}")

    def stop(self) -> None:
        stdin, _ = self._pipes()
        stdin.close()
        self.process.wait(60)

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        return self.process.stdin, self.process.stdout


@dataclass
class Burst:
    """One measured burst of calls against one server."""

    metrics: bool
    calls_per_second: float
    cpu_us_per_call: float


class Setup:
    """The two servers and the client process."""

    def __init__(self, workdir: Path, threads: int, pinning: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pinning = pinning and len(cpus) >= 2
        server_cpu = ["--cpu", str(cpus[0])] if pinning else []
        client_cpu = ["--cpu", str(cpus[1])] if pinning else []
        log = str(workdir / "srpc_server_metrics.log")
        self.servers = {
            False: Child("--serve", "--metrics-path", "", *server_cpu),
            True: Child("--serve", "--metrics-path", log, *server_cpu),
        }
        self.ports = {metrics: int(s.ask(None, "READY")) for metrics, s in self.servers.items()}
        self.client = Child("--load", "--threads", str(threads), *client_cpu)
        self.pinned = pinning

    def burst(self, metrics: bool, seconds: float) -> Burst:
        server = self.servers[metrics]
        cpu_before = float(server.ask("cpu", "CPU"))
        calls = int(self.client.ask(f"{self.ports[metrics]} {seconds}", "CALLS"))
        cpu = float(server.ask("cpu", "CPU")) - cpu_before
        return Burst(metrics, calls / seconds, 1e6 * cpu / max(calls, 1))

    def close(self) -> None:
        for child in (self.client, *self.servers.values()):
            child.stop()


def observer_cost_ns(calls: int = 100_000, repeats: int = 5) -> tuple[float, float]:
    """In-process: ns per `call_finished`, and ns per call to fold the samples into histograms
    and write the record (done by the metrics thread once a second). Best of `repeats`, as
    timeit does: slower repeats measure the machine's other work, not the code."""
    from srpc_core.observer import ServerInfo
    from srpc_plugins.metrics_log import MetricsLog

    best_record = best_fold = float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        info = ServerInfo("bench.BenchInterface", "tcp://x", "tcp", "json", ("add",), 0, Config())
        log = MetricsLog(info, str(Path(tmp) / "m.log"), flush_interval=3600)
        finished = log.call_finished
        for _ in range(repeats):
            started = time.perf_counter()
            for n in range(calls):
                finished("add", 1e-5 + n * 1e-10, None)
            best_record = min(best_record, time.perf_counter() - started)
            started = time.perf_counter()
            log.flush()
            best_fold = min(best_fold, time.perf_counter() - started)
        log.close()
    return 1e9 * best_record / calls, 1e9 * best_fold / calls


def report(bursts: list[Burst], args: argparse.Namespace) -> None:
    off = [b for b in bursts if not b.metrics]
    on = [b for b in bursts if b.metrics]
    # Bursts come in ABBA order; pair each "on" with its neighbouring "off".
    ratios = [
        b_on.calls_per_second / b_off.calls_per_second for b_on, b_off in zip(on, off, strict=True)
    ]
    ratio = statistics.median(ratios)
    off_rate = statistics.median(b.calls_per_second for b in off)
    on_rate = statistics.median(b.calls_per_second for b in on)
    off_cpu = statistics.median(b.cpu_us_per_call for b in off)
    on_cpu = statistics.median(b.cpu_us_per_call for b in on)
    record_ns, fold_ns = observer_cost_ns()
    print()
    print(f"{'':14}{'calls/s':>12}{'server CPU/call':>18}")
    print(f"{'metrics off':14}{off_rate:>12,.0f}{off_cpu:>15.1f} µs")
    print(f"{'metrics on':14}{on_rate:>12,.0f}{on_cpu:>15.1f} µs")
    print(
        f"{'overhead':14}{100 * (1 - ratio):>11.1f}%{100 * (on_cpu / off_cpu - 1):>17.1f}%"
        "   (median of per-pair on/off ratios; medians of CPU/call)"
    )
    print(
        f"\nthe observer itself, in-process: call_finished {record_ns:.0f} ns/call + folding and "
        f"writing {fold_ns:.0f} ns/call = {(record_ns + fold_ns) / 10 / off_cpu:.2f}% of the "
        "server CPU time of a call"
    )


def drive(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        setup = Setup(Path(tmp), args.threads, pinning=not args.no_pin)
        print(
            f"{args.rounds} rounds x 2 bursts of {args.seconds:g}s per setting; 1 client process x "
            f"{args.threads} threads calling add() over TCP; {os.cpu_count()} CPUs"
            + ("; servers and client pinned to separate CPUs" if setup.pinned else "")
        )
        bursts: list[Burst] = []
        try:
            setup.burst(False, min(args.seconds, 0.5))  # warm-up, not counted
            setup.burst(True, min(args.seconds, 0.5))
            for _ in range(args.rounds):
                for metrics in (False, True, True, False):
                    result = setup.burst(metrics, args.seconds)
                    bursts.append(result)
                    print(
                        f"  metrics {'on ' if metrics else 'off'} {result.calls_per_second:9,.0f}"
                        f" calls/s  {result.cpu_us_per_call:6.1f} µs server CPU/call",
                        flush=True,
                    )
        finally:
            setup.close()
    report(bursts, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one of its roles) and print the results."""
    parser = argparse.ArgumentParser(
        description="Throughput of a real srpc server with the metrics log on vs off.",
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="length of a burst (1)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of off,on,on,off (8)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (4)")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin servers and client to separate CPUs"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-path", default="", help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args.metrics_path, args.cpu)
    if args.load:
        return load(args.threads, args.cpu)
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
