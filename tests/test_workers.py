"""``[srpc] workers = N`` through real processes: a generated server stub started with
``workers = 2`` in its srpc.toml, real clients on 127.0.0.1, real SIGTERM and SIGKILL.

Every worker pid a test learns is checked to be gone at the end (and killed if not), so a test
can never leave a worker behind, even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    ServerProcess,
    child_env,
    import_interface,
    make_project,
    open_gate,
    run_client,
)

import srpc_core
from srpc_core import workers
from srpc_core.config import Config, load_config
from srpc_core.errors import ConfigError

pytestmark = pytest.mark.skipif(
    workers.platform_problem() is not None, reason="workers need Linux (SO_REUSEPORT, fork)"
)

INTERFACE = """
from abc import ABC, abstractmethod


class PidsInterface(ABC):
    @abstractmethod
    def pid(self) -> int:
        \"\"\"The serving process's pid.\"\"\"

    @abstractmethod
    def hold(self, name: str) -> int:
        \"\"\"Wait until the test writes into the FIFO $RELEASE_FIFO; the pid.\"\"\"
"""

IMPLEMENTATION = """
import os
import select

from pids.pids_interface import PidsInterface


class Pids(PidsInterface):
    def pid(self) -> int:
        return os.getpid()

    def hold(self, name: str) -> int:
        print(f"holding {name} in {os.getpid()}", flush=True)  # the call is in flight
        gate = os.open(os.environ["RELEASE_FIFO"], os.O_RDONLY | os.O_NONBLOCK)
        try:  # readable once the test writes; 60 s at most (a failing test cannot hang it)
            select.select([gate], [], [], 60)
        finally:
            os.close(gate)
        return os.getpid()
"""

STARTED = re.compile(r"serving PidsInterface at (\S+) \(.*2 workers: pids (\d+), (\d+)\)")
FLUSH = 0.05


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("workers"),
        "pids",
        {"pids/pids_interface.py": INTERFACE, "pids/pids.py": IMPLEMENTATION},
    )


@pytest.fixture(scope="module")
def interface(project: Path) -> type:
    return import_interface(project, "pids")


def write_config(directory: Path, workers: int = 2, extra: str = "") -> Path:
    config = directory / "srpc.toml"
    config.write_text(
        f'[srpc]\nhost = "127.0.0.1"\nport = 0\nworkers = {workers}\ntimeout = 10\n{extra}\n'
        f'[srpc.metrics]\npath = "{directory / "metrics.log"}"\nflush_interval = {FLUSH}\n'
    )
    return config


def exited(pid: int, timeout: float) -> bool:
    """Wait (on a pidfd, no polling) until process `pid` has exited; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


class Pool:
    """A server stub started with ``workers = 2``; knows its worker pids."""

    def __init__(self, server: ServerProcess, known: set[int]) -> None:
        self.server = server
        match = STARTED.search(server.text())
        assert match, server.text()
        self.address = match.group(1)
        self.pids = {int(match.group(2)), int(match.group(3))}
        known.update(self.pids)
        known.add(server.process.pid if server.process else 0)

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def known_pids() -> Iterator[set[int]]:
    """Pids of every process a test started; at the end each must have exited (else killed)."""
    pids: set[int] = set()
    yield pids
    left = [pid for pid in pids if pid and not exited(pid, 15)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes outlived the test: {left}"


@pytest.fixture
def pool(project: Path, tmp_path: Path, known_pids: set[int]) -> Iterator[tuple[Pool, Path]]:
    release = tmp_path / "release"
    os.mkfifo(release)
    config = write_config(tmp_path)
    with ServerProcess(
        project, "pids", config=config, env={"RELEASE_FIFO": str(release)}
    ) as server:
        yield Pool(server, known_pids), release
        open_gate(release)  # a held call (a failing test) may end: the server stops at once


def pids_over_new_connections(interface: type, port: int, want: set[int]) -> set[int]:
    """Call pid() over new connections until every pid in `want` answered (at most 400):
    the kernel picks a worker per connection, by a hash of its addresses."""
    seen: set[int] = set()
    for _ in range(400):
        with srpc_core.Client(interface, "127.0.0.1", port, timeout=10) as client:
            seen.add(client.call("pid"))
        if want <= seen:
            break
    return seen


# -- serving -------------------------------------------------------------------------------------


def test_two_workers_serve_calls_on_one_port(pool: tuple[Pool, Path], interface: type) -> None:
    server, _ = pool
    assert server.server.text().count("srpc: serving") == 1  # one start line, naming both
    assert server.server.process is not None and server.server.process.pid not in server.pids
    assert pids_over_new_connections(interface, server.port, server.pids) == server.pids


def test_sigterm_drains_a_call_in_flight_and_every_process_exits(
    pool: tuple[Pool, Path], interface: type
) -> None:
    server, release = pool
    result: dict[str, object] = {}

    def held_call() -> None:
        with srpc_core.Client(interface, "127.0.0.1", server.port, timeout=30) as client:
            try:
                result["value"] = client.call("hold", ("call",))
            except Exception as exc:
                result["error"] = exc

    thread = threading.Thread(target=held_call)
    thread.start()
    holder = int(server.server.wait_for(re.compile(r"holding call in (\d+)")).group(1))
    assert holder in server.pids
    assert server.server.process is not None
    server.server.process.send_signal(signal.SIGTERM)
    # Draining: every worker stops accepting (the port refuses), and the held call is still
    # running: nothing has answered it yet.
    refused_within(server.port, 10)
    assert thread.is_alive() and not result
    open_gate(release)
    thread.join(30)
    assert result == {"value": holder}
    assert server.server.process.wait(15) == 0
    assert all(exited(pid, 15) for pid in server.pids)
    text = server.server.text()
    assert text.count("srpc: stopped serving PidsInterface") == 1, text
    assert "Traceback" not in text and "unexpectedly" not in text


def refused_within(port: int, timeout: float) -> None:
    """Wait until a connection to `port` is refused (no listening socket is left)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except ConnectionRefusedError:
            return
        select.select([], [], [], 0.01)  # the workers get the forwarded SIGTERM meanwhile
    raise AssertionError(f"port {port} still accepts connections after {timeout} s")


def test_a_killed_parent_takes_its_workers_with_it(pool: tuple[Pool, Path]) -> None:
    server, _ = pool
    assert server.server.process is not None
    server.server.process.kill()
    server.server.process.wait(15)
    assert all(exited(pid, 15) for pid in server.pids), "a worker outlived its killed parent"


def test_a_worker_that_dies_is_reported_and_replaced(
    pool: tuple[Pool, Path], interface: type, known_pids: set[int]
) -> None:
    server, _ = pool
    victim, survivor = sorted(server.pids)
    os.kill(victim, signal.SIGKILL)
    line = server.server.wait_for(
        re.compile(rf"worker {victim} was killed by SIGKILL unexpectedly; started worker (\d+)")
    )
    replacement = int(line.group(1))
    known_pids.add(replacement)
    assert exited(victim, 15)
    # The replacement serves the same port next to the survivor.
    want = {survivor, replacement}
    assert pids_over_new_connections(interface, server.port, want) == want
    assert server.server.stop() == 0
    assert exited(replacement, 15) and exited(survivor, 15)


# -- the metrics log -----------------------------------------------------------------------------


def test_one_metrics_log_with_a_writer_per_worker_and_summed_totals(
    project: Path, tmp_path: Path, interface: type, known_pids: set[int]
) -> None:
    config = write_config(tmp_path)
    log = tmp_path / "metrics.log"
    with ServerProcess(project, "pids", config=config) as process:
        server = Pool(process, known_pids)
        answers: list[int] = []
        for _ in range(400):  # new connections until both workers answered, and at least 50
            with srpc_core.Client(interface, "127.0.0.1", server.port, timeout=10) as client:
                answers.append(client.call("pid"))
            if len(answers) >= 50 and set(answers) == server.pids:
                break
        assert set(answers) == server.pids
        assert process.stop() == 0  # each worker writes its last numbers and a stop record

    records = [json.loads(line) for line in log.read_text().splitlines()]
    writers = {r["writer"]: r["pid"] for r in records if r["type"] == "writer"}
    assert sorted(writers.values()) == sorted(server.pids)
    stops = {r["writer"] for r in records if r["type"] == "stop"}
    assert stops == set(writers)
    last_ok = {}
    for record in records:
        if record["type"] == "stats" and "pid" in record["procedures"]:
            last_ok[writers[record["writer"]]] = record["procedures"]["pid"]["ok"]
    assert last_ok == {pid: answers.count(pid) for pid in server.pids}

    tool = [sys.executable, "-m", "srpc_core.tools.srpc_show_metrics", str(log)]
    shown = subprocess.run(
        [*tool, "--json"], capture_output=True, text=True, timeout=60, env=child_env()
    )
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)
    assert sorted(s["pid"] for s in view["servers"]) == sorted(server.pids)
    rows = {row["name"]: row for row in view["procedures"]}
    assert rows["pid"]["ok"] == len(answers)
    assert view["total"]["ok"] == len(answers) and view["total"]["failed"] == 0

    once = subprocess.run(
        [*tool, "--once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(COLUMNS="120"),
    )
    assert once.returncode == 0, once.stderr
    assert "2 servers" in once.stdout
    assert f"{len(answers):,} calls" in once.stdout
    for pid in server.pids:
        assert f"pid {pid}" in once.stdout


# -- clear errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "advice"),
    [("nats", "for nats run more server processes"), ("zmq", "for zmq run more server")],
)
def test_another_transport_than_tcp_is_refused(
    interface: type, transport: str, advice: str
) -> None:
    impl = type("Impl", (interface,), {"pid": lambda self: 0, "hold": lambda self, n: 0})()
    with pytest.raises(ConfigError) as error:
        srpc_core.Server(interface, impl, config=Config(transport=transport, workers=2))
    assert "workers applies to transport 'tcp'" in str(error.value)
    assert advice in str(error.value)


def test_a_platform_without_so_reuseport_is_refused(
    interface: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    impl = type("Impl", (interface,), {"pid": lambda self: 0, "hold": lambda self, n: 0})()
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ConfigError, match=r"workers = 2 is not supported here: this is darwin"):
        srpc_core.Server(interface, impl, config=Config(workers=2))
    monkeypatch.undo()
    monkeypatch.delattr(socket, "SO_REUSEPORT")
    with pytest.raises(ConfigError, match=r"no socket.SO_REUSEPORT"):
        srpc_core.Server(interface, impl, config=Config(workers=2))
    monkeypatch.undo()
    monkeypatch.delattr(os, "fork")
    with pytest.raises(ConfigError, match=r"no os.fork"):
        srpc_core.Server(interface, impl, config=Config(workers=2))


def test_await_serve_and_async_methods_are_refused(interface: type) -> None:
    impl = type("Impl", (interface,), {"pid": lambda self: 0, "hold": lambda self, n: 0})()
    server = srpc_core.Server(interface, impl, config=Config(port=0, workers=2))
    with pytest.raises(ConfigError, match=r"await serve\(\) runs inside your event loop"):
        asyncio.run(server.serve())

    async def pid(self: object) -> int:
        return 0

    coroutine_impl = type("Impl", (interface,), {"pid": pid, "hold": lambda self, n: 0})()
    server = srpc_core.Server(interface, coroutine_impl, config=Config(port=0, workers=2))
    # Refused before anything forks (a fork here would copy the test runner).
    with pytest.raises(ConfigError, match=r"pid is async def"):
        server.start(exit_on_error=False)


def test_the_workers_key_is_validated(tmp_path: Path) -> None:
    for bad in ("0", '"2"', "2.5", "true", "1000"):
        config = tmp_path / "srpc.toml"
        config.write_text(f"[srpc]\nworkers = {bad}\n")
        with pytest.raises(ConfigError, match=r"\[srpc\] workers = .* is invalid: expected an "):
            load_config(config)
    assert load_config(Config()).workers == 1
    with pytest.raises(ConfigError, match="argument workers=0 is invalid"):
        load_config(Config(), workers=0)


def test_threads_running_at_start_are_refused(project: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_client(
        project,
        "import threading\n"
        "from srpc_pids_server_stub import SrpcPidsServerStub\n"
        "done = threading.Event()\n"
        "threading.Thread(target=done.wait, name='cache-refresher', daemon=True).start()\n"
        f"SrpcPidsServerStub(config={str(config)!r}).start()\n",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "no other thread running, and these run: 'cache-refresher'" in result.stderr
    assert "srpc: serving" not in result.stdout


def test_a_port_in_use_is_refused_even_by_another_pool(
    project: Path, tmp_path: Path, known_pids: set[int]
) -> None:
    config = write_config(tmp_path)
    with ServerProcess(project, "pids", config=config) as process:
        server = Pool(process, known_pids)
        second = tmp_path / "second"
        second.mkdir()
        other = write_config(second).read_text().replace("port = 0", f"port = {server.port}")
        (second / "srpc.toml").write_text(other)
        result = run_client(
            project,
            "from srpc_pids_server_stub import SrpcPidsServerStub\n"
            f"SrpcPidsServerStub(config={str(second / 'srpc.toml')!r}).start()\n",
        )
        assert result.returncode == 1, result.stdout
        assert f"tcp://127.0.0.1:{server.port} is already in use" in result.stderr
        assert "Traceback" not in result.stderr
        assert process.alive()
