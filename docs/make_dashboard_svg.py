"""Regenerate docs/dashboard.svg from a real run: ``python docs/make_dashboard_svg.py``.

Starts the example calculator server (examples/calc) with its metrics log in a temporary
directory, has a few client threads call it for a few seconds (including divisions by zero
and calls with the wrong arguments), then draws the dashboard from that log with rich's
recording console, while the server still runs.
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console

import srpc_core
from srpc_core.config import Config
from srpc_core.metrics import LogFollower, MetricsAggregator, MetricsView
from srpc_core.metrics.dashboard import render

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "examples" / "calc" / "server"))

from calc.calc import Calc  # noqa: E402 -- the example project, found through sys.path above
from calc.calc_interface import CalcInterface  # noqa: E402


def make_calls(port: int, seconds: float, seed: int, made: list[int]) -> None:
    """Mostly adds, some of everything else, a few failures; append the number of calls."""
    rng = random.Random(seed)
    calls = 0
    deadline = time.monotonic() + seconds
    with srpc_core.Client(CalcInterface, "127.0.0.1", port) as client:
        while time.monotonic() < deadline:
            calls += 1
            pick = rng.random()
            try:
                if pick < 0.55:
                    client.call("add", (rng.randint(0, 99), 2))
                elif pick < 0.75:
                    client.call("mul", (rng.random(), 3.5))
                elif pick < 0.85:
                    client.call("sub", (10, rng.randint(0, 9)))
                else:  # one division in ten is by zero
                    client.call("div", (rng.randint(1, 9), rng.choice([0] + [1, 2, 4] * 3)))
            except ZeroDivisionError:
                pass
    made.append(calls)


def wait_for_calls(log: Path, calls: int, timeout: float = 30.0) -> MetricsView:
    """Follow the log until the server's metrics thread has written all `calls`."""
    follower, aggregator = LogFollower(log), MetricsAggregator()
    deadline = time.monotonic() + timeout
    while True:
        aggregator.feed(follower.poll())
        view = aggregator.view()
        if view.total.stats.calls >= calls or time.monotonic() > deadline:
            follower.close()
            return view
        time.sleep(0.05)  # polling interval


def main(argv: list[str] | None = None) -> int:
    """Run the calculator, load it, and save the dashboard as SVG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "dashboard.svg")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the load (4)")
    parser.add_argument("--width", type=int, default=100, help="terminal columns (100)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "srpc_server_metrics.log"
        config = Config(metrics_path=str(log), port=5000)
        server = srpc_core.Server(CalcInterface, Calc(), "127.0.0.1", 0, config=config)
        thread = threading.Thread(target=server.start, daemon=True)
        thread.start()
        try:
            if not server.wait_until_serving(30):
                raise SystemExit("the server did not start")
            made: list[int] = []
            clients = [
                threading.Thread(target=make_calls, args=(server.port, args.seconds, seed, made))
                for seed in range(3)
            ]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            view = wait_for_calls(log, sum(made))
        finally:
            server.stop()
            thread.join(30)
    console = Console(record=True, width=args.width, force_terminal=True, file=io.StringIO())
    console.print(render(view, "srpc_server_metrics.log", args.width))
    console.save_svg(str(args.output), title="srpc metrics")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
