"""Client and server whose srpc.toml disagree on the transport fail at once, naming both.

Each client has a 30-second timeout: getting a `MismatchError` back (not a `CallTimeoutError`)
is what shows the mismatch was detected rather than waited out.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import ServerProcess
from zmq_support import import_client_stub, probe_project, write_config

import srpc_core

CLIENT_TIMEOUT = 30.0


@pytest.fixture
def probe_dir(tmp_path: Path) -> Path:
    return probe_project(tmp_path)


def test_zmq_client_and_tcp_server(probe_dir: Path, tmp_path: Path) -> None:
    write_config(probe_dir / "srpc.toml", transport="tcp")
    client_config = write_config(tmp_path / "client.toml", transport="zmq")
    stub = import_client_stub(probe_dir, "probe")
    with ServerProcess(probe_dir, "probe") as server:
        probe = stub(port=server.port, config=client_config, timeout=CLIENT_TIMEOUT)
        with probe, pytest.raises(srpc_core.MismatchError) as raised:
            probe.add(1, 2)
        message = str(raised.value)
        assert f"zmq://127.0.0.1:{server.port}" in message
        assert "not speaking ZeroMQ (probably transport 'tcp')" in message
        assert "this client uses transport 'zmq'" in message
        assert server.alive()  # and it goes on serving tcp clients:
        tcp_config = write_config(tmp_path / "tcp.toml", transport="tcp")
        with stub(port=server.port, config=tcp_config) as tcp_probe:
            assert tcp_probe.add(1, 2) == 3


def test_tcp_client_and_zmq_server(probe_dir: Path, tmp_path: Path) -> None:
    write_config(probe_dir / "srpc.toml", transport="zmq")
    client_config = write_config(tmp_path / "client.toml", transport="tcp")
    stub = import_client_stub(probe_dir, "probe")
    with ServerProcess(probe_dir, "probe") as server:
        probe = stub(port=server.port, config=client_config, timeout=CLIENT_TIMEOUT)
        with probe, pytest.raises(srpc_core.MismatchError) as raised:
            probe.add(1, 2)
        message = str(raised.value)
        assert f"tcp://127.0.0.1:{server.port}" in message
        assert "speaks ZeroMQ (transport 'zmq')" in message
        assert "this client uses transport 'tcp'" in message
        zmq_config = write_config(tmp_path / "zmq.toml", transport="zmq")
        with stub(port=server.port, config=zmq_config) as zmq_probe:
            assert zmq_probe.add(1, 2) == 3


def test_zmq_on_both_sides_but_different_codecs(probe_dir: Path, tmp_path: Path) -> None:
    write_config(probe_dir / "srpc.toml", transport="zmq", codec="cbor")
    client_config = write_config(tmp_path / "client.toml", transport="zmq", codec="json")
    stub = import_client_stub(probe_dir, "probe")
    with ServerProcess(probe_dir, "probe") as server:
        probe = stub(port=server.port, config=client_config, timeout=CLIENT_TIMEOUT)
        with (
            probe,
            pytest.raises(srpc_core.MismatchError, match="client uses 'json', server uses 'cbor'"),
        ):
            probe.add(1, 2)
