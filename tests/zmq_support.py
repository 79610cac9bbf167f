"""Helpers for the zmq transport and broker tests: a probe service, configs, a broker process.

The probe service tells which server process answered (``pid``), and has a call that stays
busy until the test releases it (``hold``), so tests about slow calls need no timing.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from support import PYTHON, ServerProcess, make_project

PROBE_INTERFACE = '''\
"""A service that reports which server process answered."""

from abc import ABC, abstractmethod


class ProbeInterface(ABC):
    """Small calls for transport tests."""

    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """Return a + b."""

    @abstractmethod
    def pid(self) -> int:
        """Return the server's process id."""

    @abstractmethod
    def sleep(self, seconds: float) -> int:
        """Sleep, then return the server's process id."""

    @abstractmethod
    def hold(self, started: str, gate: str, limit: float) -> bool:
        """Create the file `started`, wait until `gate` exists (at most `limit` seconds)."""

    @abstractmethod
    def echo(self, text: str) -> str:
        """Return `text`."""

    @abstractmethod
    def blob(self, size: int) -> str:
        """Return a string of `size` characters."""
'''

PROBE_IMPLEMENTATION = '''\
"""The probe's implementation (server side only)."""

import os
import time

from probe.probe_interface import ProbeInterface


class Probe(ProbeInterface):
    def add(self, a: float, b: float) -> float:
        return a + b

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def hold(self, started: str, gate: str, limit: float) -> bool:
        open(started, "w").close()
        deadline = time.monotonic() + limit
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return os.path.exists(gate)

    def echo(self, text: str) -> str:
        return text

    def blob(self, size: int) -> str:
        return "x" * size
'''

BROKER_READY = re.compile(
    r"srpc broker: clients -> (?P<frontend>\S+), servers -> (?P<backend>\S+?);"
)


def probe_project(tmp_path: Path) -> Path:
    """A user project holding the probe service and its generated stubs."""
    return make_project(
        tmp_path,
        "probe",
        {"probe/probe_interface.py": PROBE_INTERFACE, "probe/probe.py": PROBE_IMPLEMENTATION},
    )


def write_config(path: Path, *, zmq: dict[str, Any] | None = None, **srpc: Any) -> Path:
    """Write an srpc.toml with the metrics log off: `srpc` keys, then a ``[srpc.zmq]`` table."""
    lines = ["[srpc]", *(f"{key} = {_toml(value)}" for key, value in srpc.items())]
    lines += ["[srpc.metrics]", 'path = ""']
    if zmq is not None:
        lines += ["[srpc.zmq]", *(f"{key} = {_toml(value)}" for key, value in zmq.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def port_of(url: str) -> int:
    """The port of ``scheme://host:port``."""
    return int(url.rsplit(":", 1)[1])


def import_client_stub(project: Path, package: str) -> Any:
    """Import the generated client stub class of `project` into this process.

    Earlier imports of the same names (from another test's project) are forgotten first.
    """
    stub_module = f"srpc_{package}_client_stub"
    stale = [n for n in sys.modules if n in (package, stub_module) or n.startswith(f"{package}.")]
    for name in stale:
        del sys.modules[name]
    sys.path.insert(0, str(project))
    try:
        module = importlib.import_module(stub_module)
    finally:
        sys.path.remove(str(project))
    camel = "".join(part.capitalize() for part in package.split("_"))
    return getattr(module, f"Srpc{camel}ClientStub")


class BrokerProcess(ServerProcess):
    """``srpc broker`` in its own process, on free ports; a context manager like a server.

    Its log lines (servers joining and leaving) can be awaited with `wait_for`.
    """

    def __init__(self, cwd: Path, *args: str) -> None:
        super().__init__(cwd, "broker")
        self.args = args or ("--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0")
        self.frontend = ""
        self.backend = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-m", "srpc_core", "broker", *self.args],
            cwd=self.project,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        ready = self.wait_for(BROKER_READY)
        self.frontend, self.backend = ready["frontend"], ready["backend"]
        self.address = self.frontend

    def wait_for_servers(self, count: int) -> None:
        """Wait until the broker logs that `count` servers are taking calls."""
        self.wait_for(re.compile(rf"; {count} server\(s\)$"))


def wait_for_file(path: Path, timeout: float = 20.0) -> None:
    """Wait until `path` exists (a probe's ``hold`` call has started); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)
