"""The nats transport's guarantees, through real server processes and a real nats-server.

Servers are started from generated stubs (tests/support.py); a held call waits on a FIFO the
test opens, so tests wait on events (lines the processes print), never on sleeps.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_support import NatsServer, nats_config, nats_server  # noqa: F401  (a fixture)
from support import ServerProcess, import_interface, make_project

from srpc_core.client import Client
from srpc_core.config import Config
from srpc_core.errors import (
    CallTimeoutError,
    ConfigError,
    FrameTooLargeError,
    ServerUnavailableError,
)

pytest.importorskip("nats", reason="needs nats-py: pip install 'srpclib[nats]'")

INTERFACE = '''
from abc import ABC, abstractmethod


class WorkerInterface(ABC):
    @abstractmethod
    def whoami(self) -> int:
        """The server's pid."""

    @abstractmethod
    def hold(self, tag: str) -> str:
        """Print that the call is in flight, then wait until the test opens the FIFO."""
'''

IMPLEMENTATION = """
import os

from worker.worker_interface import WorkerInterface


class Worker(WorkerInterface):
    def whoami(self) -> int:
        return os.getpid()

    def hold(self, tag: str) -> str:
        print(f"holding {tag} in {os.getpid()}", flush=True)
        with open(os.path.join(os.environ["HOLD_DIR"], tag)) as fifo:
            fifo.read()
        return f"released {tag}"
"""

DRAINING = re.compile(r"takes no more calls; finishing (?P<n>\d+) in flight")
RECONNECTED = re.compile(r"reconnected to nats://")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(
        tmp_path,
        "worker",
        {"worker/worker_interface.py": INTERFACE, "worker/worker.py": IMPLEMENTATION},
    )


@pytest.fixture
def hold_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hold"
    directory.mkdir()
    return directory


@pytest.fixture
def config(project: Path, nats_server: NatsServer) -> Path:  # noqa: F811
    return nats_config(project / "srpc.toml", nats_server.url)


def server(project: Path, config: Path, hold_dir: Path, **env: str) -> ServerProcess:
    return ServerProcess(project, "worker", config=config, env={"HOLD_DIR": str(hold_dir), **env})


def client(project: Path, config: Path, timeout: float = 10.0) -> Client:
    return Client(import_interface(project, "worker"), config=str(config), timeout=timeout)


def hold_fifo(hold_dir: Path, tag: str) -> Path:
    path = hold_dir / tag
    os.mkfifo(path)
    return path


def release(fifo: Path) -> None:
    with open(fifo, "w") as writer:
        writer.write("go")


def wait_for_any(servers: list[ServerProcess], pattern: re.Pattern[str]) -> ServerProcess:
    """The server that prints a line matching `pattern` first (each line is an event)."""
    merged: queue.Queue[tuple[ServerProcess, str | None]] = queue.Queue()

    def relay(process: ServerProcess) -> None:
        while True:
            try:
                line = process.lines.get(timeout=30)
            except queue.Empty:
                merged.put((process, None))
                return
            merged.put((process, line))
            if line is None or pattern.search(line):
                return

    for process in servers:
        threading.Thread(target=relay, args=(process,), daemon=True).start()
    for _ in range(10_000):
        process, line = merged.get(timeout=60)
        if line is not None and pattern.search(line):
            return process
    raise AssertionError(f"no server printed {pattern.pattern!r}")


def call_in_thread(worker: Client, *args: Any) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(worker.call("hold", args))
        except Exception as exc:  # examined by the test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def two_servers(project: Path, config: Path, hold_dir: Path) -> Iterator[list[ServerProcess]]:
    with server(project, config, hold_dir) as a, server(project, config, hold_dir) as b:
        yield [a, b]


def test_two_server_processes_share_the_calls(
    project: Path, config: Path, two_servers: list[ServerProcess]
) -> None:
    pids = {s.process.pid for s in two_servers if s.process}
    with client(project, config) as worker:
        answered = {worker.call("whoami") for _ in range(60)}
    assert answered == pids  # both got some (all 60 on one: a chance of 2**-59)


def test_a_server_killed_mid_call_costs_that_call_alone(
    project: Path, config: Path, hold_dir: Path, two_servers: list[ServerProcess]
) -> None:
    hold_fifo(hold_dir, "doomed")
    with client(project, config, timeout=4.0) as held, client(project, config) as others:
        thread, outcome = call_in_thread(held, "doomed")
        victim = wait_for_any(two_servers, re.compile("holding doomed"))
        survivor = next(s for s in two_servers if s is not victim)
        assert victim.process is not None and survivor.process is not None
        victim.process.kill()
        victim.process.wait()
        answers = [others.call("whoami") for _ in range(20)]  # others unaffected
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], CallTimeoutError), outcome
        assert set(answers) == {survivor.process.pid}
        assert others.call("whoami") == survivor.process.pid
    # at most once: NATS never handed the lost call to the other server
    assert "holding doomed" not in survivor.text()


def test_sigterm_drains_stops_taking_calls_and_finishes_those_in_flight(
    project: Path, config: Path, hold_dir: Path, two_servers: list[ServerProcess]
) -> None:
    fifo = hold_fifo(hold_dir, "inflight")
    with client(project, config, timeout=30.0) as worker:
        thread, outcome = call_in_thread(worker, "inflight")
        stopping = wait_for_any(two_servers, re.compile("holding inflight"))
        other = next(s for s in two_servers if s is not stopping)
        assert stopping.process is not None and other.process is not None
        stopping.process.send_signal(signal.SIGTERM)
        assert stopping.wait_for(DRAINING).group("n") == "1"
        # It takes no more calls: every new one goes to the other server...
        assert {worker.call("whoami") for _ in range(30)} == {other.process.pid}
        assert stopping.alive()  # ...while the call in flight keeps it running
        release(fifo)
        thread.join(30)
        assert outcome == ["released inflight"]
        assert stopping.process.wait(timeout=30) == 0


def test_no_server_for_the_service_is_server_unavailable_at_once(
    project: Path, config: Path, hold_dir: Path
) -> None:
    # A long timeout: waiting for it would end in CallTimeoutError, not the error expected.
    with client(project, config, timeout=60.0) as worker:
        with pytest.raises(ServerUnavailableError, match="no responders"):
            worker.call("whoami")
        with server(project, config, hold_dir) as alone:
            assert alone.process is not None
            assert worker.call("whoami") == alone.process.pid
        # its channel is still open; the server is gone
        with pytest.raises(ServerUnavailableError, match="no responders"):
            worker.call("whoami")


def test_a_nats_server_restart_is_survived_by_clients_and_servers(
    project: Path, hold_dir: Path, tmp_path: Path
) -> None:
    with NatsServer(tmp_path / "own-nats") as nats:
        config = nats_config(project / "restart.toml", nats.url)
        with server(project, config, hold_dir) as alone, client(project, config, 20.0) as worker:
            assert alone.process is not None
            assert worker.call("whoami") == alone.process.pid
            nats.restart()
            alone.wait_for(RECONNECTED)
            assert worker.call("whoami") == alone.process.pid
            assert alone.alive()


def test_max_message_bytes_above_the_nats_max_payload_names_both(
    project: Path,
    nats_server: NatsServer,  # noqa: F811
) -> None:
    config = Config(
        transport="nats",
        max_message_bytes=16 * 1024 * 1024,
        metrics_path="",
        tables={"nats": {"servers": [nats_server.url]}},
    )
    worker = Client(import_interface(project, "worker"), config=config)
    with worker, pytest.raises(ConfigError) as refused:
        worker.call("whoami")
    text = str(refused.value)
    assert "max_message_bytes = 16777216" in text and f"max_payload = {8 * 1024 * 1024}" in text


def test_without_max_message_bytes_the_nats_max_payload_is_the_limit(
    project: Path,
    nats_server: NatsServer,  # noqa: F811
    hold_dir: Path,
) -> None:
    """srpc's default limit (16 MiB) is above this NATS server's max_payload (8 MiB): a
    srpc.toml that does not set it works, with max_payload as the limit on both sides."""
    config = project / "default-limit.toml"
    config.write_text(
        '[srpc]\ntransport = "nats"\n[srpc.metrics]\npath = ""\n'
        f'[srpc.nats]\nservers = ["{nats_server.url}"]\n'
    )
    with server(project, config, hold_dir) as alone, client(project, config, 20.0) as worker:
        assert alone.process is not None
        assert worker.call("whoami") == alone.process.pid
        with pytest.raises(FrameTooLargeError, match="max_payload"):
            worker.call("hold", ("x" * (9 * 1024 * 1024),))  # refused before it is sent
        assert worker.call("whoami") == alone.process.pid
    assert "holding" not in alone.text()


def test_token_authentication_against_nats_server_with_auth(
    project: Path, hold_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with NatsServer(tmp_path / "auth-nats", token="s3cret-token") as nats:
        config = nats_config(project / "auth.toml", nats.url, extra_nats='token_env = "NT"\n')
        # a server without the variable stops with an error naming it
        with (
            pytest.raises(AssertionError, match="token_env = 'NT' is invalid"),
            server(project, config, hold_dir),
        ):
            pass
        # a wrong token: refused by NATS, said so
        with (
            pytest.raises(AssertionError, match="refused this side's credentials"),
            server(project, config, hold_dir, NT="wrong"),
        ):
            pass
        with server(project, config, hold_dir, NT="s3cret-token") as alone:
            assert alone.process is not None
            monkeypatch.setenv("NT", "s3cret-token")
            with client(project, config) as worker:
                assert worker.call("whoami") == alone.process.pid
            monkeypatch.setenv("NT", "not-it")
            with (
                client(project, config) as worker,
                pytest.raises(ServerUnavailableError, match="credentials"),
            ):
                worker.call("whoami")
        # without any credentials the NATS server refuses too
        plain = nats_config(project / "plain.toml", nats.url)
        with (
            client(project, plain) as worker,
            pytest.raises(ServerUnavailableError, match="credentials"),
        ):
            worker.call("whoami")


# Forking a process whose NATS loop thread runs is the point (Python 3.12+ warns about it).
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_its_own_loop_and_connection(
    project: Path, config: Path, hold_dir: Path
) -> None:
    with server(project, config, hold_dir) as alone, client(project, config) as worker:
        assert alone.process is not None
        assert worker.call("whoami") == alone.process.pid  # the parent's loop is running
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                with client(project, config) as in_child:
                    code = 0 if in_child.call("whoami") == alone.process.pid else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert worker.call("whoami") == alone.process.pid  # the parent's still works
