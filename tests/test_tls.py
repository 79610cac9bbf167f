"""TLS on tcp ([srpc.tcp] tls_*): certificates made at run time with trustme, real server
processes from generated stubs, real sockets on 127.0.0.1. Every refusal is checked on both
sides: the caller's error, and the ledger (the procedure's side effect) unchanged."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from support import import_interface, make_project
from test_auth import IMPLEMENTATION, INTERFACE, Ledger

import srpc_core


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("tls"),
        "ledger",
        {"ledger/ledger_interface.py": INTERFACE, "ledger/ledger.py": IMPLEMENTATION},
    )


@pytest.fixture(scope="module")
def interface(project: Path) -> type:
    return import_interface(project, "ledger")


class Pki:
    """A CA, the server's certificate (for srpc.test only) and a client certificate."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        self.ca_pem = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self.server_cert, self.server_key = self.issue(directory, "server", "srpc.test")
        self.client_cert, self.client_key = self.issue(directory, "client", "client.srpc.test")

    def issue(self, directory: Path, name: str, host: str) -> tuple[Path, Path]:
        cert = self.ca.issue_cert(host)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _write(path: Path, table: str, timeout: float) -> Path:
    path.write_text(
        f'[srpc]\ntimeout = {timeout}\n[srpc.metrics]\npath = ""\n[srpc.tcp]\n{table}\n'
    )
    return path


def server_table(pki: Pki, client_auth: bool = False) -> str:
    table = f'tls_cert = "{pki.server_cert}"\ntls_key = "{pki.server_key}"\n'
    if client_auth:
        table += f'tls_ca = "{pki.ca_pem}"\ntls_client_auth = true\n'
    return table


@pytest.fixture
def tls_ledger(project: Path, tmp_path: Path, pki: Pki) -> Iterator[Ledger]:
    config = _write(tmp_path / "server.toml", server_table(pki), 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as server:
        yield server


def client(interface: type, port: int, path: Path, table: str) -> srpc_core.Client:
    return srpc_core.Client(interface, port=port, config=_write(path, table, 5.0))


def test_calls_over_tls_sync_and_async(
    tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    table = f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"'
    config = _write(tmp_path / "client.toml", table, 5.0)
    with srpc_core.Client(interface, port=tls_ledger.port, config=config) as c:
        assert c.call("charge", ("alice", 100)) == 1
        assert c.call("count") == 1  # the same TLS connection, reused

    async def main() -> list[int]:
        async with srpc_core.AsyncClient(interface, port=tls_ledger.port, config=config) as a:
            return list(await asyncio.gather(*(a.call("count") for _ in range(10))))

    assert asyncio.run(main()) == [1] * 10
    assert tls_ledger.charges() == ["alice 100"]


def test_the_host_name_is_checked_by_default(
    tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    c = client(interface, tls_ledger.port, tmp_path / "c.toml", f'tls_ca = "{pki.ca_pem}"')
    with pytest.raises(srpc_core.AuthenticationError, match="tls_server_name"):
        c.call("charge", ("alice", 100))
    assert tls_ledger.charges() == []


def test_a_certificate_from_another_ca_is_refused(
    tls_ledger: Ledger, interface: type, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    table = f'tls_ca = "{other}"\ntls_server_name = "srpc.test"'
    with pytest.raises(srpc_core.AuthenticationError, match="did not verify"):
        client(interface, tls_ledger.port, tmp_path / "c.toml", table).call("charge", ("a", 1))
    assert tls_ledger.charges() == []


def test_plaintext_against_tls_fails_clearly_and_the_server_serves_on(
    tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    plain = srpc_core.Client(interface, port=tls_ledger.port, config=_write(tmp_path / "p", "", 5))
    with pytest.raises(srpc_core.MismatchError, match="requires TLS"):
        plain.call("charge", ("eve", 1))
    table = f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"'
    assert client(interface, tls_ledger.port, tmp_path / "c.toml", table).call("count") == 0
    assert tls_ledger.charges() == []
    tls_ledger.server.stop()
    assert "refused a plaintext connection" in tls_ledger.server.text()


def test_tls_against_plaintext_fails_clearly_on_both_sides(
    project: Path, interface: type, tmp_path: Path, pki: Pki
) -> None:
    config = _write(tmp_path / "server.toml", "", 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as plain:
        table = f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"'
        with pytest.raises(srpc_core.MismatchError, match="does not use TLS"):
            client(interface, plain.port, tmp_path / "c.toml", table).call("charge", ("a", 1))
        assert plain.charges() == []
        plain.server.stop()
        assert "the client speaks TLS" in plain.server.text()


def test_mutual_tls_requires_the_client_certificate(
    project: Path, interface: type, tmp_path: Path, pki: Pki
) -> None:
    config = _write(tmp_path / "server.toml", server_table(pki, client_auth=True), 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as server:
        anonymous = f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"'
        with pytest.raises(srpc_core.SrpcError):
            client(interface, server.port, tmp_path / "a.toml", anonymous).call("charge", ("e", 1))
        assert server.charges() == []
        known = anonymous + f'\ntls_cert = "{pki.client_cert}"\ntls_key = "{pki.client_key}"'
        assert client(interface, server.port, tmp_path / "k.toml", known).call("charge", ("a", 1))
        assert server.charges() == ["a 1"]


def test_a_peer_that_never_completes_the_handshake_is_dropped(
    tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    """Server timeout 2 s: a peer that sends the first byte of a ClientHello and stops is
    closed, and meanwhile others are served (the handshake is not in the accept loop)."""
    with socket.create_connection(("127.0.0.1", tls_ledger.port), timeout=30) as stuck:
        stuck.sendall(b"\x16")
        table = f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"'
        assert client(interface, tls_ledger.port, tmp_path / "c.toml", table).call("count") == 0
        assert stuck.recv(1) == b""  # closed by the server (within its timeout, not ours)


# -- the native async side: the async client and the asyncio server, TLS without the bridge --

ASYNC_SERVER = """
import asyncio

from srpc_ledger_server_stub import SrpcLedgerServerStub

asyncio.run(SrpcLedgerServerStub("127.0.0.1", 0, config={config!r}).serve())
"""


class AsyncLedger(Ledger):
    """The ledger served by the asyncio server (`serve()`: asyncio's own TLS)."""

    def __init__(self, project: Path, work: Path, config: Path) -> None:
        super().__init__(project, work, config, {})
        self.server.code = (
            f"import os, sys\nos.chdir({str(work)!r})\nsys.path.insert(0, {str(project)!r})\n"
            + ASYNC_SERVER.format(config=str(config))
        )


@pytest.fixture
def async_tls_ledger(project: Path, tmp_path: Path, pki: Pki) -> Iterator[Ledger]:
    config = _write(tmp_path / "async-server.toml", server_table(pki), 2.0)
    with AsyncLedger(project, tmp_path / "async-server", config) as server:
        assert "asyncio" in server.server.text()
        yield server


def async_call(interface: type, port: int, config: Path, *calls: tuple[str, tuple]) -> list:  # type: ignore[type-arg]
    """Run `calls` at once on one AsyncClient; check they went over its native connection."""

    async def main() -> list:  # type: ignore[type-arg]
        async with srpc_core.AsyncClient(interface, port=port, config=config) as a:
            results = await asyncio.gather(*(a.call(name, args) for name, args in calls))
            assert a._shared.bridge is None and a._shared.native  # not the thread bridge
            return list(results)

    return asyncio.run(main())


def tls_client_table(pki: Pki) -> str:
    return f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"'


def test_async_client_over_native_tls_to_both_servers(
    tls_ledger: Ledger, async_tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    config = _write(tmp_path / "client.toml", tls_client_table(pki), 5.0)
    for ledger in (tls_ledger, async_tls_ledger):
        assert async_call(interface, ledger.port, config, ("charge", ("alice", 100))) == [1]
        calls = [("count", ())] * 50
        assert async_call(interface, ledger.port, config, *calls) == [1] * 50
        assert ledger.charges() == ["alice 100"]
    # The sync client against the asyncio TLS server too.
    with srpc_core.Client(interface, port=async_tls_ledger.port, config=config) as c:
        assert c.call("count") == 1


def test_async_tls_checks_the_host_name_and_the_ca(
    async_tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    port = async_tls_ledger.port
    config = _write(tmp_path / "c.toml", f'tls_ca = "{pki.ca_pem}"', 5.0)
    with pytest.raises(srpc_core.AuthenticationError, match="tls_server_name"):
        async_call(interface, port, config, ("charge", ("alice", 100)))
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    config = _write(tmp_path / "o.toml", f'tls_ca = "{other}"\ntls_server_name = "srpc.test"', 5)
    with pytest.raises(srpc_core.AuthenticationError, match="did not verify"):
        async_call(interface, port, config, ("charge", ("alice", 100)))
    assert async_tls_ledger.charges() == []


def test_plaintext_against_the_asyncio_tls_server_fails_clearly(
    async_tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    port = async_tls_ledger.port
    plain = _write(tmp_path / "p.toml", "", 5.0)
    with pytest.raises(srpc_core.MismatchError, match="requires TLS"):
        async_call(interface, port, plain, ("charge", ("eve", 1)))
    with pytest.raises(srpc_core.MismatchError, match="requires TLS"):
        srpc_core.Client(interface, port=port, config=plain).call("charge", ("eve", 1))
    tls = _write(tmp_path / "c.toml", tls_client_table(pki), 5.0)
    assert async_call(interface, port, tls, ("count", ())) == [0]  # it serves on
    assert async_tls_ledger.charges() == []
    async_tls_ledger.server.stop()
    assert "refused a plaintext connection" in async_tls_ledger.server.text()


def test_async_tls_against_a_plaintext_asyncio_server_fails_clearly_on_both_sides(
    project: Path, interface: type, tmp_path: Path, pki: Pki
) -> None:
    config = _write(tmp_path / "server.toml", "", 2.0)
    with AsyncLedger(project, tmp_path / "server", config) as plain:
        tls = _write(tmp_path / "c.toml", tls_client_table(pki), 5.0)
        with pytest.raises(srpc_core.MismatchError, match="does not use TLS"):
            async_call(interface, plain.port, tls, ("charge", ("a", 1)))
        assert plain.charges() == []
        plain.server.stop()
        assert "the client speaks TLS" in plain.server.text()


def test_mutual_tls_on_the_asyncio_server(
    project: Path, interface: type, tmp_path: Path, pki: Pki
) -> None:
    config = _write(tmp_path / "server.toml", server_table(pki, client_auth=True), 2.0)
    with AsyncLedger(project, tmp_path / "server", config) as server:
        anonymous = tls_client_table(pki)
        with pytest.raises(srpc_core.SrpcError):
            async_call(interface, server.port, _write(tmp_path / "a", anonymous, 5), ("count", ()))
        assert server.charges() == []
        known = anonymous + f'\ntls_cert = "{pki.client_cert}"\ntls_key = "{pki.client_key}"'
        config = _write(tmp_path / "k.toml", known, 5.0)
        assert async_call(interface, server.port, config, ("charge", ("a", 1))) == [1]
        assert server.charges() == ["a 1"]


def test_the_asyncio_server_drops_a_peer_that_never_completes_the_handshake(
    async_tls_ledger: Ledger, interface: type, tmp_path: Path, pki: Pki
) -> None:
    """Server timeout 2 s: a peer that sends one byte of a ClientHello and stops is closed;
    meanwhile others are served (the handshake is not in the accept loop)."""
    with socket.create_connection(("127.0.0.1", async_tls_ledger.port), timeout=30) as stuck:
        stuck.sendall(b"\x16")
        config = _write(tmp_path / "c.toml", tls_client_table(pki), 5.0)
        assert async_call(interface, async_tls_ledger.port, config, ("count", ())) == [0]
        assert stuck.recv(1) == b""  # closed by the server (within its timeout, not ours)
