"""How the uds transport maps srpc's host and port to a socket file."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from srpc_core import ConfigError, ServerUnavailableError, TransportSettings

from srpc_plugin_example.uds import UdsTransport


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="srpc-uds-") as directory:
        yield Path(directory)


def transport(**options: object) -> UdsTransport:
    return UdsTransport(TransportSettings(options=options))


def test_a_directory_host_names_a_socket_per_port(short_dir: Path) -> None:
    assert transport().socket_path(str(short_dir), 5000) == short_dir / "srpc-5000.sock"
    assert transport().socket_path("/not/yet/made/", 7) == Path("/not/yet/made/srpc-7.sock")


def test_a_file_host_is_the_socket_itself(short_dir: Path) -> None:
    assert transport().socket_path(f"{short_dir}/calc.sock", 5000) == short_dir / "calc.sock"


def test_loopback_hosts_use_the_socket_directory(short_dir: Path) -> None:
    uds = transport(dir=str(short_dir))
    for host in ("127.0.0.1", "localhost", "::1"):
        assert uds.socket_path(host, 5000) == short_dir / "srpc-5000.sock"
    assert transport().socket_path("127.0.0.1", 1).parent.name == f"srpc-{os.getuid()}"


def test_other_hosts_are_refused() -> None:
    with pytest.raises(ConfigError, match="only reaches this machine"):
        transport().socket_path("10.0.0.5", 5000)


def test_unknown_options_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown key.*colour.*valid keys: backlog, dir"):
        transport(colour="blue")


def test_no_server_is_server_unavailable(short_dir: Path) -> None:
    with pytest.raises(ServerUnavailableError, match="no srpc server at uds://"):
        transport().connect(str(short_dir / "nobody.sock"), 0, 1.0)


def test_a_stale_socket_file_is_replaced(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(path))  # bound, never listening: what a killed server leaves behind
    leftover.close()
    listener = transport().listen(str(path), 0, lambda message: message)
    try:
        assert listener.address == f"uds://{path}"
    finally:
        listener.shutdown()
        listener.serve_forever()  # returns at once after shutdown, removing the socket file
    assert not path.exists()


def test_a_live_socket_is_not_stolen(short_dir: Path) -> None:
    path = short_dir / "live.sock"
    first = transport().listen(str(path), 0, lambda message: message)
    try:
        with pytest.raises(OSError, match="already in use"):
            transport().listen(str(path), 0, lambda message: message)
    finally:
        first.shutdown()
        first.serve_forever()


def test_a_regular_file_is_never_replaced(short_dir: Path) -> None:
    path = short_dir / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(OSError, match="not a socket"):
        transport().listen(str(path), 0, lambda message: message)
    assert path.read_text() == "keep me"


def test_the_socket_is_private_by_default(short_dir: Path) -> None:
    listener = transport().listen(str(short_dir / "private.sock"), 0, lambda message: message)
    try:
        assert (short_dir / "private.sock").stat().st_mode & 0o777 == 0o600
    finally:
        listener.shutdown()
        listener.serve_forever()


def test_a_too_long_path_is_a_clear_error(short_dir: Path) -> None:
    with pytest.raises(ConfigError, match="longer than"):
        transport().listen(str(short_dir / ("x" * 120)), 0, lambda message: message)
