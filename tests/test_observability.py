"""Metrics that do not lie and the call logs, through real server processes.

An encode failure, a validation failure and a deadline exceeded on the server (before the call
started, and while it ran) are failures in the metrics log, each with its type; calls in flight
are counted per procedure; every failure leaves a WARNING line (rate-limited, with a summary at
stop); the access log (logger ``srpc.access`` at INFO) has a line per call. Both server roads:
the threaded server and the asyncio one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from support import (
    HOLD_ON_FIFO,
    PYTHON,
    ServerProcess,
    child_env,
    make_project,
    open_gate,
    run_client,
)

OBS_INTERFACE = '''\
"""A service whose calls fail in every way a server counts."""

from abc import ABC, abstractmethod


class ObsInterface(ABC):
    """Probes for metrics and logs."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """Return a + b."""

    @abstractmethod
    def div(self, a: float, b: float) -> float:
        """Return a / b."""

    @abstractmethod
    def blob(self) -> object:
        """Return what no codec carries."""

    @abstractmethod
    def hold(self, tag: str, gate: str) -> bool:
        """Print "holding <tag>", then wait until the FIFO `gate` is written (at most 30 s)."""
'''

OBS_IMPLEMENTATION = (
    """\
from obs.obs_interface import ObsInterface


class Obs(ObsInterface):
    def add(self, a, b):
        return a + b

    def div(self, a, b):
        return a / b

    def blob(self):
        return object()

    def hold(self, tag, gate):
        return hold_on_fifo(gate, f"holding {tag}")
"""
    + HOLD_ON_FIFO
)

#: The asyncio road: an ``async def`` method makes the server stub use the asyncio server.
ASYNC_EXTRA = """

class AsyncObs(Obs):
    async def add(self, a, b):
        return a + b
"""

SERVER = """\
import logging, sys
sys.path.insert(0, ".")
{logging}
import srpc_core
from obs.obs_interface import ObsInterface
from obs.obs import {implementation}
srpc_core.Server(ObsInterface, {implementation}(), "127.0.0.1", 0, config="srpc.toml").start()
"""

CONFIG = """\
[srpc]
timeout = 20.0

[srpc.metrics]
path = "metrics.log"
flush_interval = 0.05
"""


@pytest.fixture(params=["threaded", "asyncio"])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    project = make_project(
        tmp_path,
        "obs",
        {
            "obs/obs_interface.py": OBS_INTERFACE,
            "obs/obs.py": OBS_IMPLEMENTATION + ASYNC_EXTRA,
        },
    )
    (project / "srpc.toml").write_text(CONFIG)
    return project, "Obs" if request.param == "threaded" else "AsyncObs"


def start(project: Path, implementation: str, logging_setup: str = "") -> ServerProcess:
    code = SERVER.format(logging=logging_setup, implementation=implementation)
    return ServerProcess(project, "obs", code=code)


def metrics(project: Path) -> dict[str, Any]:
    """The numbers of the metrics log, as `srpc metrics --json` prints them."""
    result = subprocess.run(
        [PYTHON, "-m", "srpc_core", "metrics", "--json", "metrics.log"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return {row["name"]: row for row in view["procedures"]}


def wait_for_metrics(project: Path, check: Any, timeout: float = 20.0) -> dict[str, Any]:
    """Read the metrics log until `check(rows)` holds (the log is written every 50 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = metrics(project)
        if check(rows):
            return rows
        assert time.monotonic() < deadline, f"the metrics never showed it: {rows}"


#: A client that sends what the stub would refuse, and a request whose deadline has passed.
RAW_CLIENT = """\
from srpc_core import protocol
from srpc_core.config import load_config
from srpc_core.deadline import Deadline
from srpc_core.tools.srpc_inspect import RemoteService, target_config

remote = RemoteService(target_config({url!r}))
deadline = Deadline(20)
print(remote.call("add", ["lots", 2], {{}}, deadline))  # validation: TypeError
print(remote.call("blob", [], {{}}, deadline))  # the result cannot be encoded: EncodeError
channel, codec = remote._channel, remote.codec
late = {{"timeout_ms": 0}}
expired = protocol.encode_request(codec, 99, remote._session, "add", [1, 2], {{}}, late)
print(protocol.decode_response(codec, channel.request(expired, 20), 99, "server"))
"""

STUB_CLIENT = """\
import sys
from srpc_obs_client_stub import SrpcObsClientStub
import srpc_core

obs = SrpcObsClientStub("127.0.0.1", {port})
for _ in range(3):
    assert obs.add(1, 2) == 3
for _ in range(20):
    try:
        obs.div(1, 0)
    except ZeroDivisionError:
        pass
try:
    obs.with_options(timeout=0.5).hold("late", {gate!r})
except srpc_core.CallTimeoutError:
    print("timed out")
"""


def test_failures_are_counted_with_their_types_and_logged(project: tuple[Path, str]) -> None:
    path, implementation = project
    with start(path, implementation) as server:
        raw = run_client(path, RAW_CLIENT.format(url=server.address))
        assert raw.returncode == 0, raw.stderr
        assert "'type': 'TypeError'" in raw.stdout and "'type': 'EncodeError'" in raw.stdout
        assert "'type': 'CallTimeoutError'" in raw.stdout
        gate = path / "gate"
        os.mkfifo(gate)
        client = run_client(path, STUB_CLIENT.format(port=server.port, gate=str(gate)))
        assert client.stdout == "timed out\n", client.stderr
        server.wait_for(re.compile("holding late"))
        open_gate(gate)  # the held call ends now, long after its caller gave up
        rows = wait_for_metrics(path, lambda rows: rows["hold"]["failed"] == 1)
        server.stop()
        log = server.text()
    rows = metrics(path)
    assert rows["add"]["ok"] == 3
    assert rows["add"]["errors"] == {"TypeError": 1, "CallTimeoutError": 1}
    assert rows["blob"] == {**rows["blob"], "ok": 0, "errors": {"EncodeError": 1}}
    assert rows["div"]["errors"] == {"ZeroDivisionError": 20}
    assert rows["hold"]["errors"] == {"CallTimeoutError": 1} and rows["hold"]["ok"] == 0
    assert all(row["in_flight"] == 0 for row in rows.values())
    # One WARNING line per failure kind (the 20 divisions by zero: one line, then a summary).
    failed = [line for line in log.splitlines() if "srpc: call failed:" in line]
    kinds = sorted(re.search(r"procedure=(\S+) error=(\w+)", line).groups() for line in failed)  # type: ignore[union-attr]
    assert kinds == [
        ("add", "CallTimeoutError"),
        ("add", "TypeError"),
        ("blob", "EncodeError"),
        ("div", "ZeroDivisionError"),
        ("hold", "CallTimeoutError"),
    ], log
    assert all("duration_ms=" in line and "service=ObsInterface" in line for line in failed)
    summary = [line for line in log.splitlines() if "more failed calls not logged" in line]
    assert summary == [
        "srpc: 19 more failed calls not logged (rate limit): service=ObsInterface "
        "procedure=div error=ZeroDivisionError"
    ], log
    assert "lots" not in log  # the caller's data stays out of the log


HOLD_CLIENT = """\
from srpc_obs_client_stub import SrpcObsClientStub

obs = SrpcObsClientStub("127.0.0.1", {port})
print(obs.hold("in-flight", {gate!r}))
"""


def test_calls_in_flight(project: tuple[Path, str]) -> None:
    path, implementation = project
    with start(path, implementation) as server:
        gate = path / "gate"
        os.mkfifo(gate)
        code = HOLD_CLIENT.format(port=server.port, gate=str(gate))
        client = subprocess.Popen(
            [PYTHON, "-c", code], cwd=path, env=child_env(), stdout=subprocess.PIPE, text=True
        )
        try:
            server.wait_for(re.compile("holding in-flight"))
            rows = wait_for_metrics(path, lambda rows: "hold" in rows and rows["hold"]["in_flight"])
            assert rows["hold"]["in_flight"] == 1 and rows["add"]["in_flight"] == 0
        finally:
            open_gate(gate)
            out, _ = client.communicate(timeout=30)
        assert out == "True\n"
        rows = wait_for_metrics(path, lambda rows: rows["hold"]["ok"] == 1)
        assert rows["hold"]["in_flight"] == 0


ACCESS_LOGGING = (
    "logging.basicConfig(format='%(name)s %(levelname)s %(message)s')\n"
    "logging.getLogger('srpc.access').setLevel(logging.INFO)"
)


def test_access_log(project: tuple[Path, str]) -> None:
    path, implementation = project
    with start(path, implementation, ACCESS_LOGGING) as server:
        code = (
            "from srpc_obs_client_stub import SrpcObsClientStub\n"
            f"obs = SrpcObsClientStub('127.0.0.1', {server.port})\n"
            "print(obs.add(2, 3))\n"
            "try:\n    obs.div(1, 0)\nexcept ZeroDivisionError:\n    print('zero')\n"
        )
        client = run_client(path, code)
        assert client.stdout == "5\nzero\n", client.stderr
        server.stop()
        lines = server.text().splitlines()
    access = [line for line in lines if line.startswith("srpc.access INFO")]
    assert len(access) == 2, lines
    assert "procedure=add outcome=ok duration_ms=" in access[0]
    assert "procedure=div outcome=ZeroDivisionError" in access[1]
    # The caller, as the tcp transport names it: the client's address and port.
    assert all(re.search(r" peer=127\.0\.0\.1:\d+$", line) for line in access), access
    assert any(
        line.startswith("srpc.calls WARNING srpc: call failed:")
        and "procedure=div" in line
        and re.search(r" peer=127\.0\.0\.1:\d+$", line)
        for line in lines
    ), lines
