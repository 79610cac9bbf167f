"""``srpc broker`` with real processes: a broker, servers in connect mode, a client.

The probe service returns the pid of the server that ran the call, so the tests see where
every call went. The broker logs ``...; N server(s)`` whenever a server joins or leaves, which
is the readiness signal for servers (their own start-up line comes before they connect).
"""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from support import PYTHON, ServerProcess, child_env
from zmq_support import (
    BrokerProcess,
    import_client_stub,
    port_of,
    probe_project,
    wait_for_file,
    write_config,
)

import srpc_core

WAIT = 20.0  # seconds any wait for progress may take before the test fails
SERVER_NUMBERS = itertools.count()


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    return probe_project(tmp_path)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    with BrokerProcess(tmp_path) as broker:
        yield broker


@pytest.fixture
def probe_client(probe_dir: Path, broker: BrokerProcess, tmp_path: Path) -> Iterator[Any]:
    """A client of the broker's front end: a normal host/port in its srpc.toml."""
    config = write_config(
        tmp_path / "client.toml",
        transport="zmq",
        host="127.0.0.1",
        port=port_of(broker.frontend),
    )
    with import_client_stub(probe_dir, "probe")(config=config) as probe:
        yield probe


def start_server(
    stack: ExitStack, probe_dir: Path, broker: BrokerProcess, **zmq: Any
) -> ServerProcess:
    """Start a probe server in connect mode, pointed at the broker's back end."""
    config = write_config(
        probe_dir / f"server-{next(SERVER_NUMBERS)}.toml",
        transport="zmq",
        zmq={"connect": broker.backend, **zmq},
    )
    return stack.enter_context(ServerProcess(probe_dir, "probe", config=config))


def pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def test_calls_spread_over_servers_that_join_and_leave(
    probe_dir: Path, broker: BrokerProcess, probe_client: Any
) -> None:
    with ExitStack() as stack:
        first, second, third = (start_server(stack, probe_dir, broker) for _ in range(3))
        broker.wait_for_servers(3)
        served = Counter(probe_client.pid() for _ in range(100))
        assert set(served) == {pid(first), pid(second), pid(third)}  # each serves some

        assert first.stop() == 0  # SIGTERM: it says goodbye, then finishes
        served = Counter(probe_client.pid() for _ in range(100))  # every one succeeds
        assert set(served) == {pid(second), pid(third)}

        newcomer = start_server(stack, probe_dir, broker)
        broker.wait_for_servers(3)
        served = Counter(probe_client.pid() for _ in range(100))
        assert served[pid(newcomer)] > 0
        assert set(served) == {pid(second), pid(third), pid(newcomer)}
    assert broker.stop() == 0
    assert "srpc broker: stopped" in broker.text()


def test_a_server_stopping_under_load_loses_no_call(
    probe_dir: Path, broker: BrokerProcess, probe_client: Any
) -> None:
    done = threading.Condition()
    results: list[int] = []
    errors: list[BaseException] = []
    finish = threading.Event()

    def call_until_finished() -> None:
        while not finish.is_set():
            try:
                result = probe_client.sleep(0.005)
            except BaseException as exc:  # reported below
                errors.append(exc)
                return
            with done:
                results.append(result)
                done.notify_all()

    def wait_for_calls(count: int) -> None:
        with done:
            assert done.wait_for(lambda: len(results) >= count or bool(errors), WAIT), results

    with ExitStack() as stack:
        leaving, staying = (start_server(stack, probe_dir, broker) for _ in range(2))
        broker.wait_for_servers(2)
        callers = [threading.Thread(target=call_until_finished) for _ in range(4)]
        for caller in callers:
            caller.start()
        try:
            wait_for_calls(40)
            assert leaving.stop() == 0  # while four callers keep calling
            stopped_at = len(results)
            wait_for_calls(stopped_at + 40)
        finally:
            finish.set()
            for caller in callers:
                caller.join(WAIT)
    assert errors == []
    assert pid(leaving) in results[:stopped_at]
    assert set(results[stopped_at:]) == {pid(staying)}


def test_a_busy_server_gets_no_new_calls(
    probe_dir: Path, broker: BrokerProcess, probe_client: Any, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    with ExitStack() as stack:
        servers = [start_server(stack, probe_dir, broker, workers=1) for _ in range(2)]
        broker.wait_for_servers(2)
        holder = threading.Thread(target=probe_client.hold, args=(str(started), str(gate), 30))
        holder.start()
        try:
            wait_for_file(started)  # one server's only worker is now busy
            served = {probe_client.pid() for _ in range(20)}
        finally:
            gate.touch()
            holder.join(WAIT)
        assert len(served) == 1 and served <= {pid(s) for s in servers}  # all to the idle one


def test_with_no_server_a_call_times_out_and_a_joining_server_serves(
    probe_dir: Path, broker: BrokerProcess, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "client.toml", transport="zmq")
    stub = import_client_stub(probe_dir, "probe")
    with stub(port=port_of(broker.frontend), config=config, timeout=1.0) as probe:
        with pytest.raises(srpc_core.CallTimeoutError):
            probe.pid()  # the broker holds the call until a server has room
        with ExitStack() as stack:
            server = start_server(stack, probe_dir, broker)
            broker.wait_for_servers(1)
            assert probe.pid() == pid(server)


def test_broker_help_explains_both_ends() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "srpc_core", "broker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr
    for text in ("--frontend", "--backend", "connect = ", "srpc.toml", "port 0"):
        assert text in result.stdout


def test_servers_and_clients_reconnect_after_the_broker_restarts(
    probe_dir: Path, tmp_path: Path
) -> None:
    stub = import_client_stub(probe_dir, "probe")
    with ExitStack() as stack:
        first = stack.enter_context(BrokerProcess(tmp_path))
        server = start_server(stack, probe_dir, first)
        first.wait_for_servers(1)
        config = write_config(tmp_path / "client.toml", transport="zmq")
        probe = stack.enter_context(stub(port=port_of(first.frontend), config=config))
        assert probe.pid() == pid(server)
        assert first.stop() == 0
        ends = ("--frontend", first.frontend, "--backend", first.backend)
        second = stack.enter_context(BrokerProcess(tmp_path, *ends))
        second.wait_for_servers(1)  # the server reconnected and announced itself again
        assert probe.pid() == pid(server)  # the client's next call opens a new connection
