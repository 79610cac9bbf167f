"""The zmq transport end to end: generated stubs, real server processes, real ZeroMQ sockets.

Switching a project to ZeroMQ is an edit of srpc.toml on both sides; the stubs stay the same.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from support import EXAMPLES, ServerProcess, run_client
from zmq_support import import_client_stub, probe_project, wait_for_file, write_config

import srpc_core


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    """The probe project, with ``transport = "zmq"`` in its srpc.toml."""
    project = probe_project(tmp_path)
    write_config(project / "srpc.toml", transport="zmq", max_message_bytes=65536)
    return project


@pytest.fixture
def probe_server(probe_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(probe_dir, "probe") as server:
        yield server


@pytest.fixture
def probe_stub(probe_dir: Path) -> Any:
    """The generated client stub class, imported into the test process."""
    return import_client_stub(probe_dir, "probe")


def client_config(tmp_path: Path, **srpc: Any) -> Path:
    """A client's srpc.toml selecting zmq (plus `srpc` settings)."""
    return write_config(tmp_path / "client.toml", transport="zmq", **srpc)


def test_calc_walkthrough_over_zmq_with_only_srpc_toml_changed(calc_dir: Path) -> None:
    (calc_dir / "srpc.toml").write_text('[srpc]\ntransport = "zmq"\n')  # what a user edits
    with ServerProcess(calc_dir, "calc") as server:
        assert server.address.startswith("zmq://127.0.0.1:") and server.port > 0  # real port
        code = (
            (EXAMPLES / "calc" / "client" / "client.py")
            .read_text()
            .replace(
                'SrpcCalcClientStub("127.0.0.1")', f'SrpcCalcClientStub("127.0.0.1", {server.port})'
            )
        )
        result = run_client(calc_dir, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "6",
        "8",
        "2",
        "2.0",
        "ZeroDivisionError: division by zero",
    ]


def test_one_client_shared_by_many_threads(
    probe_server: ServerProcess, probe_stub: Any, tmp_path: Path
) -> None:
    with probe_stub(port=probe_server.port, config=client_config(tmp_path)) as probe:

        def work(worker: int) -> list[str]:
            return [probe.echo(f"{worker}-{i}") for i in range(50)]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
    assert results == [[f"{w}-{i}" for i in range(50)] for w in range(8)]


def test_a_slow_call_holds_up_no_other_call(
    probe_server: ServerProcess, probe_stub: Any, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    config = client_config(tmp_path)
    with probe_stub(port=probe_server.port, config=config) as probe:
        outcome: list[bool] = []
        slow = threading.Thread(
            target=lambda: outcome.append(probe.hold(str(started), str(gate), 30))
        )
        slow.start()
        try:
            wait_for_file(started)
            # 40 calls from another thread of the same client while the slow one is running
            assert [probe.add(i, 1) for i in range(40)] == [i + 1 for i in range(40)]
            assert outcome == []  # still held by the gate: the calls above went past it
        finally:
            gate.touch()
            slow.join(30)
    assert outcome == [True]


def test_a_slow_call_times_out_and_the_client_recovers(
    probe_server: ServerProcess, probe_stub: Any, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    with probe_stub(port=probe_server.port, config=client_config(tmp_path), timeout=1.0) as probe:
        try:
            with pytest.raises(srpc_core.CallTimeoutError, match="no reply from zmq://"):
                probe.hold(str(started), str(gate), 30)
        finally:
            gate.touch()  # frees the server's worker
        assert probe.add(1, 2) == 3


def test_an_oversized_request_is_refused_and_the_server_goes_on(
    probe_server: ServerProcess, probe_stub: Any, tmp_path: Path
) -> None:
    big = "x" * 200_000  # the server's max_message_bytes is 65536
    config = client_config(tmp_path, max_message_bytes=1_000_000)
    with probe_stub(port=probe_server.port, config=config) as probe:
        with pytest.raises(srpc_core.TransportError, match="max_message_bytes"):
            probe.echo(big)
        assert probe.add(2, 2) == 4
    same_limit = client_config(tmp_path, max_message_bytes=65536)
    with probe_stub(port=probe_server.port, config=same_limit) as probe:
        with pytest.raises(srpc_core.FrameTooLargeError):  # over its own limit: never sent
            probe.echo(big)
        assert probe.echo("small") == "small"


def test_an_oversized_response_is_an_error_for_that_caller(
    probe_server: ServerProcess, probe_stub: Any, tmp_path: Path
) -> None:
    config = client_config(tmp_path, max_message_bytes=1_000_000)
    with probe_stub(port=probe_server.port, config=config) as probe:
        with pytest.raises(srpc_core.ProtocolError, match="max_message_bytes"):
            probe.blob(100_000)  # more than the server's 65536
        assert probe.blob(10) == "x" * 10


def test_the_client_reconnects_after_the_server_restarts(
    probe_dir: Path, probe_stub: Any, tmp_path: Path
) -> None:
    with ServerProcess(probe_dir, "probe") as first:
        port = first.port
        probe = probe_stub(port=port, config=client_config(tmp_path))
        first_pid = probe.pid()
    with probe:
        with pytest.raises(srpc_core.ServerUnavailableError, match="is it running"):
            probe.pid()  # nobody there now: an error at once, not a hang
        with ServerProcess(probe_dir, "probe", port=port):
            second_pid = probe.pid()
    assert second_pid != first_pid


def test_unknown_option_names_the_table_and_the_valid_keys(probe_stub: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", transport="zmq", zmq={"wrokers": 4})
    valid = "idle_timeout, max_in_flight, queue_bytes, workers"
    with pytest.raises(srpc_core.ConfigError, match=rf"wrokers.*\[srpc\.zmq\].*{valid}"):
        probe_stub(port=5000, config=config)


def test_broker_settings_are_refused_with_a_pointer_to_nats(
    probe_dir: Path, probe_stub: Any, tmp_path: Path
) -> None:
    """The broker is retired: a server or client whose srpc.toml still has ``connect`` stops at
    once and is told to use transport "nats"."""
    write_config(probe_dir / "srpc.toml", transport="zmq", zmq={"connect": "tcp://127.0.0.1:5001"})
    # The server process exits before serving: starting it fails with its output.
    with pytest.raises(AssertionError) as exited, ServerProcess(probe_dir, "probe"):
        pass
    output = str(exited.value)
    assert "ConfigError: srpc.toml: [srpc.zmq] connect = 'tcp://127.0.0.1:5001':" in output
    assert "broker (srpc broker) was retired" in output
    assert 'transport = "nats"' in output and "docs/nats.md" in output
    config = write_config(tmp_path / "client.toml", transport="zmq", zmq={"connect": ""})
    with pytest.raises(srpc_core.ConfigError, match=r"\[srpc\.zmq\] connect = '': .*retired"):
        probe_stub(port=5000, config=config)


def test_the_broker_command_is_gone(probe_dir: Path) -> None:
    result = run_client(
        probe_dir, "from srpc_core.cli import main; import sys; sys.exit(main(['broker']))"
    )
    assert result.returncode == 2
    assert "invalid choice: 'broker'" in result.stderr


def test_without_pyzmq_the_error_names_the_extra(probe_dir: Path, tmp_path: Path) -> None:
    hidden = tmp_path / "no_pyzmq"
    hidden.mkdir()
    (hidden / "zmq.py").write_text(
        "raise ImportError('No module named zmq (hidden by the test)')\n"
    )
    env = {"PYTHONPATH": str(hidden)}
    code = "from srpc_probe_client_stub import SrpcProbeClientStub\nSrpcProbeClientStub()\n"
    client = run_client(probe_dir, code, env=env)
    assert client.returncode != 0
    last_line = client.stderr.strip().splitlines()[-1]
    assert last_line.startswith("srpc_core.errors.MissingDependencyError: ")
    assert "pip install 'srpclib[zmq]'" in last_line
    listing = run_client(probe_dir, "from srpc_core.cli import main; main(['plugins'])", env=env)
    assert listing.returncode == 0, listing.stderr
    assert any(line.split()[:1] == ["zmq"] for line in listing.stdout.splitlines())


def test_a_message_without_the_srpc_envelope_gets_an_error(
    probe_server: ServerProcess, probe_stub: Any, tmp_path: Path
) -> None:
    import zmq

    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(f"tcp://127.0.0.1:{probe_server.port}")
        sock.send(b"one frame, no [tag, empty, message] envelope")
        assert sock.poll(20_000), "no answer within 20 s"
        frames = sock.recv_multipart()
    finally:
        sock.close()
    assert frames[0] == b"" and b"malformed ZeroMQ request" in frames[-1]
    with probe_stub(port=probe_server.port, config=client_config(tmp_path)) as probe:
        assert probe.add(1, 1) == 2
