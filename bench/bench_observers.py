"""Observer overhead per call, with OpenTelemetry on and off, in the same run.

Two measurements, each a median of rounds, alternating the configurations within every round:

* **server**: `Dispatcher.handle` on a request already in memory (no transport), i.e. what
  the observers add to a served call: none at all; the default (metrics log and failure log);
  the default plus OpenTelemetry's server spans and ``rpc.server.duration``.
* **round trip**: a sync `srpc_core.Client` calling a threaded server over tcp on 127.0.0.1 in
  this process, with ``[srpc.otel]`` off and on (both sides).

OpenTelemetry runs with the SDK (``opentelemetry-sdk``): a TracerProvider whose spans go
through a BatchSpanProcessor to an exporter that drops them, and a MeterProvider with an
in-memory reader, the usual production shape without the network.

    python bench/bench_observers.py [--calls 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from srpc_core import Client, Server, protocol
from srpc_core.config import load_config
from srpc_core.observer import CallObserver
from srpc_core.plugins import get_plugins


class BenchInterface(ABC):
    """One small procedure."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """Return a + b."""


class Bench(BenchInterface):
    def add(self, a: int, b: int) -> int:
        return a + b


def setup_otel() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def write_config(directory: Path, name: str, otel: bool, port: int = 0) -> Path:
    path = directory / name
    text = f'[srpc]\nport = {port}\n[srpc.metrics]\npath = "{directory / "metrics.log"}"\n'
    path.write_text(text + ("[srpc.otel]\nenabled = true\n" if otel else ""))
    return path


def per_call(run: Callable[[int], None], calls: int) -> float:
    """Seconds per call of `run(calls)`."""
    started = time.perf_counter()
    run(calls)
    return (time.perf_counter() - started) / calls


def server_side(directory: Path, calls: int, rounds: int) -> dict[str, float]:
    """What observers add to `Dispatcher.handle`, per call (µs)."""
    setups: dict[str, Callable[[int], None]] = {}
    closers: list[CallObserver] = []
    for label, otel, observers in (
        ("no observers", False, False),
        ("default (metrics + failure log)", False, True),
        ("default + OpenTelemetry", True, True),
    ):
        config = load_config(write_config(directory, f"server-{otel}.toml", otel))
        server = Server(BenchInterface, Bench(), config=config)
        dispatcher = server.dispatcher
        info = server._server_info("tcp://127.0.0.1:0")
        chosen = get_plugins().call_observers(info) if observers else []
        closers.extend(chosen)
        dispatcher.set_observers(chosen)
        hello = protocol.parse_hello_reply(
            dispatcher.handle(protocol.hello("json", "tcp", "BenchInterface")), "bench"
        )
        request = protocol.encode_request(
            dispatcher.codec, 1, hello.session, "add", [1, 2], {}, {"timeout_ms": 30000}
        )

        def run(
            n: int, handle: Callable[[bytes], bytes] = dispatcher.handle, message: bytes = request
        ) -> None:
            for _ in range(n):
                handle(message)

        setups[label] = run
    results: dict[str, list[float]] = {label: [] for label in setups}
    for _ in range(rounds):
        for label, run in setups.items():
            results[label].append(per_call(run, calls))
    for observer in closers:
        observer.close()
    return {label: statistics.median(values) * 1e6 for label, values in results.items()}


def round_trip(directory: Path, calls: int, rounds: int) -> dict[str, float]:
    """A tcp round trip per call (µs), OpenTelemetry off and on."""
    setups: dict[str, Callable[[int], None]] = {}
    servers: list[Server] = []
    clients: list[Client] = []
    for label, otel in (("OpenTelemetry off", False), ("OpenTelemetry on", True)):
        server = Server(BenchInterface, Bench(), config=write_config(directory, "rt.toml", otel))
        threading.Thread(target=server.start, kwargs={"exit_on_error": False}, daemon=True).start()
        assert server.wait_until_serving(10)
        servers.append(server)
        client_config = write_config(directory, f"client-{otel}.toml", otel, server.port)
        client = Client(BenchInterface, config=client_config)
        assert bool(client._observers) is otel
        clients.append(client)

        def run(n: int, call: Callable[..., Any] = client.call) -> None:
            for _ in range(n):
                call("add", (1, 2))

        run(200)  # connect, warm up
        setups[label] = run
    results: dict[str, list[float]] = {label: [] for label in setups}
    for _ in range(rounds):
        for label, run in setups.items():
            results[label].append(per_call(run, calls))
    for client in clients:
        client.close()
    for server in servers:
        server.stop()
    return {label: statistics.median(values) * 1e6 for label, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the median is shown)")
    args = parser.parse_args()
    setup_otel()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        os.chdir(directory)
        server = server_side(directory, args.calls, args.rounds)
        trip = round_trip(directory, max(args.calls // 4, 1000), args.rounds)
    base = server["no observers"]
    print(f"server side: Dispatcher.handle per call (median of {args.rounds} rounds)")
    for label, micro in server.items():
        print(f"  {label:<34} {micro:7.2f} µs  (+{micro - base:5.2f} µs)")
    off = trip["OpenTelemetry off"]
    print(f"round trip: sync Client -> threaded server, tcp 127.0.0.1 (median of {args.rounds})")
    for label, micro in trip.items():
        print(f"  {label:<34} {micro:7.2f} µs  (+{micro - off:5.2f} µs)")


if __name__ == "__main__":
    main()
