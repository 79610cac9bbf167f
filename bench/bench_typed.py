"""What typed values cost: a round trip of a 5-field dataclass, and of a list of 100 of them,
converted by srpc from the annotations, against hand-written conversion in the same run.

    python bench/bench_typed.py --calls 2000
    python bench/bench_typed.py --codec cbor

One server process (tcp, the codec chosen) serves both ways of doing it:

* **srpc typed**: ``echo(item: Item) -> Item`` and ``echo_many(items: list[Item]) -> list[Item]``;
  srpc converts on both sides (msgspec, from the interface's annotations) and validates the
  arguments on the server.
* **hand-written**: ``echo_raw(data: Any) -> Any`` and ``echo_raw_many(data: Any) -> Any``; the
  caller writes ``dataclasses.asdict`` before and ``Item(**data)`` after, the implementation
  ``Item(**data)`` and ``asdict`` (what one wrote before srpc knew types; nothing is validated).

Rows take turns in blocks of calls so background load hits each alike; the table shows the
median and 99th percentile per call and each typed row's ratio to its hand-written row. Client
and server share CPU 0 (as bench_latency.py's default), so the numbers are srpc's own cost.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from srpc_core import Client, Config, Server

BLOCK = 100


@dataclasses.dataclass
class Item:
    sku: str
    name: str
    qty: int
    price: float
    active: bool


class BenchInterface(ABC):
    @abstractmethod
    def echo(self, item: Item) -> Item: ...

    @abstractmethod
    def echo_many(self, items: list[Item]) -> list[Item]: ...

    @abstractmethod
    def echo_raw(self, data: Any) -> Any: ...

    @abstractmethod
    def echo_raw_many(self, data: Any) -> Any: ...


class Bench(BenchInterface):
    def echo(self, item: Item) -> Item:
        return item

    def echo_many(self, items: list[Item]) -> list[Item]:
        return items

    def echo_raw(self, data: Any) -> Any:
        return dataclasses.asdict(Item(**data))

    def echo_raw_many(self, data: Any) -> Any:
        return [dataclasses.asdict(Item(**d)) for d in data]


def config(codec: str, port: int) -> Config:
    return Config(transport="tcp", codec=codec, host="127.0.0.1", port=port, metrics_path="")


def serve(codec: str) -> None:
    os.sched_setaffinity(0, {0})
    server = Server(BenchInterface, Bench(), config=config(codec, 0))
    server.start()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per row")
    parser.add_argument("--codec", default="json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.codec)
        return
    os.sched_setaffinity(0, {0})
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--codec", args.codec],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # "srpc: serving ... at tcp://127.0.0.1:PORT ..."
        port = int(line.split(" at ", 1)[1].split()[0].rsplit(":", 1)[1])
        with Client(BenchInterface, config=config(args.codec, port)) as client:
            report(measure(client, args.calls), args.calls, args.codec)
    finally:
        process.terminate()
        process.wait()


def rows(client: Client) -> dict[str, Callable[[], object]]:
    one = Item("sku-1", "a hammer", 3, 12.5, True)
    many = [Item(f"sku-{i}", f"item {i}", i, i * 1.5, i % 2 == 0) for i in range(100)]

    def typed_one() -> object:
        result = client.call("echo", (one,))
        assert result == one
        return result

    def raw_one() -> object:
        result = Item(**client.call("echo_raw", (dataclasses.asdict(one),)))
        assert result == one
        return result

    def typed_many() -> object:
        result = client.call("echo_many", (many,))
        assert result == many
        return result

    def raw_many() -> object:
        data = [dataclasses.asdict(item) for item in many]
        result = [Item(**d) for d in client.call("echo_raw_many", (data,))]
        assert result == many
        return result

    return {
        "1 item, hand-written": raw_one,
        "1 item, srpc typed": typed_one,
        "100 items, hand-written": raw_many,
        "100 items, srpc typed": typed_many,
    }


def measure(client: Client, calls: int) -> dict[str, list[float]]:
    work = rows(client)
    timings: dict[str, list[float]] = {name: [] for name in work}
    for call in work.values():  # warm up
        for _ in range(50):
            call()
    for _ in range(max(1, calls // BLOCK)):
        for name, call in work.items():
            samples = timings[name]
            for _ in range(BLOCK):
                started = time.perf_counter()
                call()
                samples.append(time.perf_counter() - started)
    return timings


def report(timings: dict[str, list[float]], calls: int, codec: str) -> None:
    print(
        f"{calls} calls per row (in turns of {BLOCK}), tcp + {codec}, one connection, "
        f"Python {sys.version.split()[0]}, client and server on CPU 0"
    )
    print(f"{'row':26}{'median us':>11}{'p99 us':>10}{'vs hand-written':>17}")
    medians = {name: statistics.median(t) * 1e6 for name, t in timings.items()}
    for name, samples in timings.items():
        p99 = statistics.quantiles(samples, n=100)[98] * 1e6
        baseline = medians[name.split(",")[0] + ", hand-written"]
        print(f"{name:26}{medians[name]:11.1f}{p99:10.1f}{medians[name] / baseline:17.2f}")


if __name__ == "__main__":
    main()
