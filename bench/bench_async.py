"""The async client against the sync one, in the same run, over tcp+json.

    python bench/bench_async.py                    # 20000 calls per throughput row
    python bench/bench_async.py --calls 5000
    python bench/bench_async.py --pin 0,0          # client and server on CPU 0 (both)
    python bench/bench_async.py --loop both        # stdlib loop and uvloop, same run

For each server (the threaded server, `start()` with the calculator's plain methods; and the
asyncio server, `serve()` with an ``async def`` calculator), in one client process:

* throughput: the sync `Client` shared by 8 threads (8 connections) against one `AsyncClient`
  with 256 calls in flight on one connection, in calls per second;
* latency: sequential ``add(i, 1)`` calls, the median and p99 of each client.

The server runs in its own process; rows take turns so background load hits them alike.
``--loop uvloop`` runs the async client under uvloop and the asyncio server with ``[srpc]
event_loop = "uvloop"``; ``--loop both`` measures both loops in the same run (an asyncio server
on each loop; every async client row on each loop), taking turns.

``--pin C,S`` pins the client to CPU C and the server to CPU S: on a small shared VM, a
round trip between two CPUs costs a cross-CPU wake-up each way (tens of microseconds) that
dwarfs what is measured, so latencies are steadiest with both on one CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
CALC = REPO / "examples" / "calc" / "server"
sys.path.insert(0, str(CALC))

from calc.calc import Calc  # noqa: E402
from calc.calc_interface import CalcInterface  # noqa: E402

from srpc_core import AsyncClient, Client, Config, Server  # noqa: E402
from srpc_core.server import event_loop_factory  # noqa: E402

IN_FLIGHT = 256
THREADS = 8
T = TypeVar("T")


class AsyncCalc(Calc):
    async def add(self, a: float, b: float) -> float:  # type: ignore[override]
        return a + b


def config(port: int, loop: str = "asyncio") -> Config:
    return Config(port=port, metrics_path="", max_in_flight=IN_FLIGHT, event_loop=loop)


def run(coroutine: Coroutine[Any, Any, T], loop: str) -> T:
    """Run `coroutine` on a new event loop: the stdlib's or uvloop's."""
    with asyncio.Runner(loop_factory=event_loop_factory(config(0, loop))) as runner:
        return runner.run(coroutine)


def serve(mode: str) -> None:
    """Server process: print the port, serve until killed. `mode` is "threaded", or
    "asyncio:LOOP" (the asyncio server, started by `start()` on that loop)."""
    kind, _, loop = mode.partition(":")
    implementation = AsyncCalc() if kind == "asyncio" else Calc()
    server = Server(CalcInterface, implementation, config=config(0, loop or "asyncio"))
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    if not server.wait_until_serving(20):
        raise SystemExit("the server did not start")
    print(f"PORT {server.port}", flush=True)
    thread.join()


def sync_throughput(port: int, calls: int) -> float:
    client = Client(CalcInterface, config=config(port))
    each = calls // THREADS

    def work() -> None:
        for i in range(each):
            client.call("add", (i, 1))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    client.close()
    return each * THREADS / elapsed


async def async_throughput(port: int, calls: int) -> float:
    async with AsyncClient(CalcInterface, config=config(port)) as client:
        await client.call("add", (0, 1))  # connect first
        each = calls // IN_FLIGHT

        async def work() -> None:
            for i in range(each):
                await client.call("add", (i, 1))

        started = time.perf_counter()
        await asyncio.gather(*(work() for _ in range(IN_FLIGHT)))
        elapsed = time.perf_counter() - started
        assert client._shared.bridge is None  # one multiplexed connection
    return each * IN_FLIGHT / elapsed


def sync_latency(port: int, calls: int) -> list[float]:
    timings = []
    with Client(CalcInterface, config=config(port)) as client:
        for i in range(calls + 200):
            started = time.perf_counter_ns()
            client.call("add", (i, 1))
            timings.append((time.perf_counter_ns() - started) / 1000)
    return timings[200:]


async def async_latency(port: int, calls: int) -> list[float]:
    timings = []
    async with AsyncClient(CalcInterface, config=config(port)) as client:
        for i in range(calls + 200):
            started = time.perf_counter_ns()
            await client.call("add", (i, 1))
            timings.append((time.perf_counter_ns() - started) / 1000)
    return timings[200:]


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per throughput row")
    parser.add_argument("--latency-calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2, help="turns each row takes")
    parser.add_argument("--pin", help="CLIENT,SERVER: the CPUs to run the two processes on")
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop", "both"),
        default="asyncio",
        help="the event loop of the async client and the asyncio server",
    )
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    pin_client, pin_server = (int(c) for c in args.pin.split(",")) if args.pin else (-1, -1)
    print(
        f"tcp+json, Python {sys.version.split()[0]}; throughput: {args.calls} add() calls per "
        f"row, sync {THREADS} threads vs async {IN_FLIGHT} in flight on one connection; "
        f"loops: {', '.join(loops)}"
        + (f"; client on CPU {pin_client}, server on CPU {pin_server}" if args.pin else "")
    )
    for mode in ["threaded", *(f"asyncio:{loop}" for loop in loops)]:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", mode],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {pin_server})) if args.pin else None,
        )
        if args.pin:
            os.sched_setaffinity(0, {pin_client})
        try:
            assert server.stdout is not None
            port = next(int(line[5:]) for line in server.stdout if line.startswith("PORT "))
            sync_rates: list[float] = []
            sync_times: list[float] = []
            async_rates: dict[str, list[float]] = {loop: [] for loop in loops}
            async_times: dict[str, list[float]] = {loop: [] for loop in loops}
            for _ in range(args.rounds):
                sync_rates.append(sync_throughput(port, args.calls))
                sync_times += sync_latency(port, args.latency_calls)
                for loop in loops:
                    async_rates[loop].append(run(async_throughput(port, args.calls), loop))
                    async_times[loop] += run(async_latency(port, args.latency_calls), loop)
            sync_rate, sm = max(sync_rates), statistics.median(sync_times)
            kind, _, server_loop = mode.partition(":")
            print(f"\n{kind} server" + (f" on {server_loop}" if server_loop else ""))
            print(f"  sync  8 threads                {sync_rate:9.0f} calls/s")
            for loop in loops:
                rate = max(async_rates[loop])
                print(
                    f"  async 256 in flight, {loop:7}   {rate:9.0f} calls/s  "
                    f"({rate / sync_rate:.2f}x)"
                )
            print(f"  sync  latency            median {sm:6.1f} us  p99 {p99(sync_times):6.1f} us")
            for loop in loops:
                am = statistics.median(async_times[loop])
                print(
                    f"  async latency, {loop:7}  median {am:6.1f} us  "
                    f"p99 {p99(async_times[loop]):6.1f} us  ({am / sm:.2f}x)"
                )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
