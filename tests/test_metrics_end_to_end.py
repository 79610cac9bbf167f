"""Metrics from real calls: a real server with the built-in metrics_log plugin, a real client
over TCP on 127.0.0.1, then the real ``srpc_show_metrics`` command reading the log."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import srpc_core
from srpc_core.config import Config
from srpc_core.metrics import LogFollower, MetricsAggregator, MetricsView
from srpc_core.plugins import Plugins

TOOL = [sys.executable, "-m", "srpc_core.tools.srpc_show_metrics"]


class Boom(ValueError):
    """Raised by `fail`."""


class ShopInterface(ABC):
    @abstractmethod
    def add(self, a: int, b: int) -> int: ...

    @abstractmethod
    def div(self, a: float, b: float) -> float: ...

    @abstractmethod
    def fail(self) -> None: ...

    @abstractmethod
    def idle(self) -> None: ...


class Shop(ShopInterface):
    def add(self, a: int, b: int) -> int:
        return a + b

    def div(self, a: float, b: float) -> float:
        return a / b

    def fail(self) -> None:
        raise Boom("boom")

    def idle(self) -> None:
        return None


def config(log: Path | str) -> Config:
    return Config(metrics_path=str(log), tables={"metrics": {"flush_interval": 0.05}})


@contextmanager
def running_server(cfg: Config) -> Iterator[srpc_core.Server]:
    """A server serving in a background thread; stopped (and its log closed) on exit."""
    server = srpc_core.Server(ShopInterface, Shop(), "127.0.0.1", 0, config=cfg)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        assert server.wait_until_serving(10), "the server did not start"
        yield server
    finally:
        server.stop()
        thread.join(15)
        assert not thread.is_alive(), "the server did not stop"


def make_calls(server: srpc_core.Server, adds: int, zero_divisions: int, booms: int) -> None:
    with srpc_core.Client(ShopInterface, "127.0.0.1", server.port, timeout=10) as client:
        for i in range(adds):
            assert client.call("add", (i, 1), {}) == i + 1
        for _ in range(zero_divisions):
            with pytest.raises(ZeroDivisionError):
                client.call("div", (1, 0), {})
        for _ in range(booms):
            with pytest.raises(ValueError):
                client.call("fail", (), {})


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SRPC_CONFIG", "COLUMNS")}
    env["COLUMNS"] = "80"
    return subprocess.run([*TOOL, *args], capture_output=True, text=True, timeout=60, env=env)


def json_view(log: Path) -> dict[str, Any]:
    result = run_tool(str(log), "--json")
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def wait_for_calls(log: Path, calls: int, timeout: float = 20.0) -> MetricsView:
    """Follow the log until it accounts for `calls` calls (the writer flushes every 0.05 s)."""
    follower, aggregator = LogFollower(log), MetricsAggregator()
    deadline = time.monotonic() + timeout
    while True:
        aggregator.feed(follower.poll())
        view = aggregator.view()
        if view.total.stats.calls >= calls:
            follower.close()
            return view
        assert time.monotonic() < deadline, f"the log never showed {calls} calls"
        time.sleep(0.01)  # polling interval


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in document["procedures"]}


def test_real_calls_show_up_live_and_after_the_server_stops(tmp_path: Path) -> None:
    log = tmp_path / "srpc_server_metrics.log"
    with running_server(config(log)) as server:
        make_calls(server, adds=60, zero_divisions=7, booms=3)
        wait_for_calls(log, 70)
        live = json_view(log)
        [info] = live["servers"]
        assert (info["address"], info["state"], info["pid"]) == (
            server.address,
            "live",
            os.getpid(),
        )
        assert info["service"].endswith("ShopInterface")
        assert by_name(live)["add"]["calls_per_second"] > 0

    document = json_view(log)
    assert document["servers"][0]["state"] == "stopped"
    rows = by_name(document)
    assert list(rows) == ["add", "div", "fail", "idle"]
    add, div, fail, idle = rows["add"], rows["div"], rows["fail"], rows["idle"]
    assert (add["ok"], add["failed"], add["error_rate"]) == (60, 0, 0.0)
    latency = add["latency"]
    assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert latency["p99"] <= latency["max"] < 5.0
    assert latency["min"] <= latency["mean"] <= latency["max"]
    assert (div["ok"], div["failed"], div["errors"]) == (0, 7, {"ZeroDivisionError": 7})
    assert (fail["failed"], fail["errors"]) == (3, {"Boom": 3})
    assert (idle["ok"], idle["failed"], idle["latency"]["p50"]) == (0, 0, None)
    total = document["total"]
    assert (total["ok"], total["failed"]) == (60, 10)
    assert total["error_rate"] == pytest.approx(10 / 70)

    once = run_tool(str(log), "--once")
    assert once.returncode == 0, once.stderr
    assert "70 calls  60 ok  10 failed (14.3%)" in once.stdout
    assert f"{server.address}  pid {os.getpid()}" in once.stdout
    assert "Boom" in once.stdout and "ZeroDivisionError" in once.stdout


def test_servers_sharing_a_log_are_summed(tmp_path: Path) -> None:
    log = tmp_path / "shared.log"
    with running_server(config(log)) as first, running_server(config(log)) as second:
        make_calls(first, adds=30, zero_divisions=1, booms=0)
        make_calls(second, adds=20, zero_divisions=0, booms=2)
        wait_for_calls(log, 53)
    document = json_view(log)
    assert sorted(s["address"] for s in document["servers"]) == sorted(
        [first.address, second.address]
    )
    rows = by_name(document)
    assert (rows["add"]["ok"], rows["div"]["failed"], rows["fail"]["failed"]) == (50, 1, 2)


def test_a_restarted_server_starts_from_zero_on_the_same_log(tmp_path: Path) -> None:
    log = tmp_path / "srpc_server_metrics.log"
    with running_server(config(log)) as before:
        make_calls(before, adds=25, zero_divisions=0, booms=0)
    with running_server(config(log)) as after:
        make_calls(after, adds=4, zero_divisions=0, booms=0)
        wait_for_calls(log, 4)
        document = json_view(log)
    [server] = document["servers"]
    assert server["address"] == after.address and server["state"] == "live"
    assert by_name(document)["add"]["ok"] == 4


def test_an_empty_metrics_path_writes_no_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with running_server(Config(metrics_path="")) as server:
        make_calls(server, adds=3, zero_divisions=0, booms=0)
    assert list(tmp_path.iterdir()) == []


# -- docs/metrics.md stays true -----------------------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def docs_block(language: str, containing: str) -> str:
    """The fenced code block of docs/metrics.md in `language` that contains `containing`."""
    blocks = re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(), flags=re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    return block


def import_file(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_documented_prometheus_plugin_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "srpc_prometheus.py"
    source.write_text(docs_block("python", "class PrometheusObserver"))
    plugin = import_file(source, "srpc_prometheus")
    cfg = Config(metrics_path="", tables={"prometheus": {"port": 0}})
    server = srpc_core.Server(
        ShopInterface, Shop(), "127.0.0.1", 0, config=cfg, plugins=Plugins({"prometheus": plugin})
    )
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    try:
        assert server.wait_until_serving(10)
        make_calls(server, adds=5, zero_divisions=2, booms=0)
        url = re.search(r"metrics at (\S+)", capsys.readouterr().out)
        assert url is not None
        with urllib.request.urlopen(url.group(1), timeout=10) as response:
            text = response.read().decode()
    finally:
        server.stop()
        thread.join(15)
    service = f'service="{ShopInterface.__module__}.ShopInterface"'
    assert f'srpc_call_seconds_count{{{service},procedure="add"}} 5' in text
    assert (
        f'srpc_call_failures_total{{{service},procedure="div",error="ZeroDivisionError"}} 2' in text
    )
    assert f'srpc_call_seconds{{{service},procedure="div",quantile="0.5"}} NaN' in text


def test_the_documented_reader_snippet_and_json_shape(tmp_path: Path) -> None:
    log = tmp_path / "srpc_server_metrics.log"
    with running_server(config(log)) as server:
        make_calls(server, adds=3, zero_divisions=1, booms=0)
    snippet = tmp_path / "read_metrics.py"
    snippet.write_text(docs_block("python", "MetricsAggregator(window=5)"))
    result = subprocess.run(
        [sys.executable, str(snippet)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [line[:3] for line in lines] == [
        ["add", "3", "0"],
        ["div", "0", "1"],
        ["fail", "0", "0"],
        ["idle", "0", "0"],
    ]

    documented = json.loads(docs_block("json", '"servers"'))
    real = json_view(log)
    assert set(documented) == set(real)
    assert set(documented["servers"][0]) == set(real["servers"][0])
    assert set(documented["procedures"][0]) == set(real["procedures"][0])
    assert set(documented["procedures"][0]["latency"]) == set(real["procedures"][0]["latency"])
