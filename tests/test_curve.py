"""CURVE on zmq ([srpc.zmq] curve_*) and ``srpc keygen``: keys made at run time by the real
command, real server processes from generated stubs, real ZeroMQ sockets on 127.0.0.1. Every
refusal is checked on both sides: the caller's error, and the ledger (the procedure's side
effect) unchanged; the server goes on serving authorized clients."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq.auth
from support import PYTHON, child_env, import_interface, make_project
from test_auth import IMPLEMENTATION, INTERFACE, Ledger
from zmq_support import keygen

import srpc_core


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("curve"),
        "ledger",
        {"ledger/ledger_interface.py": INTERFACE, "ledger/ledger.py": IMPLEMENTATION},
    )


@pytest.fixture(scope="module")
def interface(project: Path) -> type:
    return import_interface(project, "ledger")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """server, alice (authorized), mallory (not): made by `srpc keygen`; alice's public key
    listed in authorized.txt."""
    directory = tmp_path_factory.mktemp("keys")
    for name in ("server", "alice", "mallory"):
        keygen(name, directory)
    alice = zmq.auth.load_certificate(directory / "alice.pub")[0].decode()
    (directory / "authorized.txt").write_text(f"# clients of the ledger\n{alice} alice-laptop\n")
    return directory


def _write(path: Path, table: str, timeout: float = 5.0) -> Path:
    path.write_text(
        f'[srpc]\ntransport = "zmq"\ntimeout = {timeout}\n[srpc.metrics]\npath = ""\n'
        f"[srpc.zmq]\n{table}\n"
    )
    return path


def server_table(keys: Path, authorized: str | None = "authorized.txt") -> str:
    table = f'curve_secret_key_file = "{keys / "server.key"}"\n'
    if authorized is not None:
        table += f'curve_authorized_keys = "{keys / authorized}"\n'
    return table


def client_table(keys: Path, name: str = "alice", server_key: str | None = None) -> str:
    server_key = server_key or str(keys / "server.pub")
    return f'curve_secret_key_file = "{keys / name}.key"\ncurve_server_key = "{server_key}"\n'


def client(interface: type, port: int, path: Path, table: str) -> srpc_core.Client:
    return srpc_core.Client(interface, port=port, config=_write(path, table))


@pytest.fixture
def curve_ledger(project: Path, tmp_path: Path, keys: Path) -> Iterator[Ledger]:
    config = _write(tmp_path / "server.toml", server_table(keys), 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as server:
        yield server


# --- srpc keygen ------------------------------------------------------------------------------


def srpc(*args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "srpc_core", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def test_keygen_writes_a_key_pair_pyzmq_reads(tmp_path: Path) -> None:
    result = srpc("keygen", "node", "-d", str(tmp_path / "keys"), umask=0)  # umask 0: no help
    assert result.returncode == 0, result.stderr
    secret, public = tmp_path / "keys" / "node.key", tmp_path / "keys" / "node.pub"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    pair = zmq.auth.load_certificate(secret)
    assert pair[1] is not None and len(pair[1]) == 40
    assert zmq.auth.load_certificate(public) == (pair[0], None)
    assert f"public key: {pair[0].decode()}" in result.stdout


def test_keygen_never_overwrites_without_force(tmp_path: Path) -> None:
    assert srpc("keygen", "node", "-d", str(tmp_path)).returncode == 0
    before = (tmp_path / "node.key").read_bytes(), (tmp_path / "node.pub").read_bytes()
    refused = srpc("keygen", "node", "-d", str(tmp_path))
    assert refused.returncode == 2
    assert "already exist" in refused.stderr and "--force" in refused.stderr
    assert ((tmp_path / "node.key").read_bytes(), (tmp_path / "node.pub").read_bytes()) == before
    (tmp_path / "node.key").chmod(0o644)  # a carelessly copied old key: --force still gives 0600
    forced = srpc("keygen", "node", "-d", str(tmp_path), "--force", umask=0)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "node.key").read_bytes() != before[0]
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key", "node.pub"]  # no leftovers


def test_keygen_help_and_bad_names(tmp_path: Path) -> None:
    helped = srpc("keygen", "--help")
    assert helped.returncode == 0
    for text in ("NAME.key", "NAME.pub", "0600", "--force", "curve_server_key", "-d DIR"):
        assert text in helped.stdout
    bad = srpc("keygen", "keys/node", "-d", str(tmp_path))
    assert bad.returncode == 2 and "use -d DIR" in bad.stderr
    assert list(tmp_path.iterdir()) == []


def test_keygen_without_pyzmq_names_the_extra(tmp_path: Path) -> None:
    hidden = tmp_path / "no_pyzmq"
    hidden.mkdir()
    (hidden / "zmq.py").write_text(
        "raise ImportError('No module named zmq (hidden by the test)')\n"
    )
    result = subprocess.run(
        [PYTHON, "-m", "srpc_core", "keygen", "node", "-d", str(tmp_path / "k")],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(PYTHONPATH=str(hidden)),
    )
    assert result.returncode == 2
    assert "pip install 'srpclib[zmq]'" in result.stderr
    assert not (tmp_path / "k").exists()


# --- calls over CURVE -------------------------------------------------------------------------


def test_calls_over_curve(
    curve_ledger: Ledger, interface: type, tmp_path: Path, keys: Path
) -> None:
    with client(interface, curve_ledger.port, tmp_path / "c.toml", client_table(keys)) as c:
        assert c.call("charge", ("alice", 100)) == 1
        assert c.call("count") == 1
    # The server's key as z85 text instead of a file.
    z85 = zmq.auth.load_certificate(keys / "server.pub")[0].decode()
    table = client_table(keys, server_key=z85)
    assert client(interface, curve_ledger.port, tmp_path / "z.toml", table).call("count") == 1
    assert curve_ledger.charges() == ["alice 100"]


def test_an_unknown_client_key_is_refused_and_the_server_serves_on(
    curve_ledger: Ledger, interface: type, tmp_path: Path, keys: Path
) -> None:
    mallory = client(
        interface, curve_ledger.port, tmp_path / "m.toml", client_table(keys, "mallory")
    )
    with pytest.raises(srpc_core.AuthenticationError, match="curve_authorized_keys"):
        mallory.call("charge", ("mallory", 1))
    assert curve_ledger.charges() == []
    alice = client(interface, curve_ledger.port, tmp_path / "a.toml", client_table(keys))
    assert alice.call("charge", ("alice", 5)) == 1
    assert curve_ledger.charges() == ["alice 5"]
    curve_ledger.server.stop()
    assert (
        "a CURVE client key not in [srpc.zmq] curve_authorized_keys" in curve_ledger.server.text()
    )


def test_a_wrong_server_key_is_refused(
    curve_ledger: Ledger, interface: type, tmp_path: Path, keys: Path
) -> None:
    """alice names mallory's public key as the server's: an impostor server would be refused
    the same way (the client cannot complete the handshake)."""
    table = client_table(keys, server_key=str(keys / "mallory.pub"))
    with pytest.raises(srpc_core.AuthenticationError, match="curve_server_key"):
        client(interface, curve_ledger.port, tmp_path / "w.toml", table).call("charge", ("a", 1))
    assert curve_ledger.charges() == []
    assert (
        client(interface, curve_ledger.port, tmp_path / "a.toml", client_table(keys)).call("count")
        == 0
    )


def test_plaintext_against_curve_fails_clearly_on_both_sides(
    curve_ledger: Ledger, interface: type, tmp_path: Path, keys: Path
) -> None:
    plain = client(interface, curve_ledger.port, tmp_path / "p.toml", "")
    with pytest.raises(srpc_core.MismatchError, match=r"requires CURVE.*curve_server_key"):
        plain.call("charge", ("eve", 1))
    assert curve_ledger.charges() == []
    assert (
        client(interface, curve_ledger.port, tmp_path / "a.toml", client_table(keys)).call("count")
        == 0
    )
    curve_ledger.server.stop()
    text = curve_ledger.server.text()
    # (Either "a plaintext client (this server requires CURVE)" or, when the client's libzmq
    # reset the connection before the server read its greeting, "... (a plaintext client, or
    # a peer not speaking ZeroMQ?)": the server names the likely cause either way.)
    assert "a plaintext client" in text, text


def test_curve_against_plaintext_fails_clearly_on_both_sides(
    project: Path, interface: type, tmp_path: Path, keys: Path
) -> None:
    config = _write(tmp_path / "server.toml", "", 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as plain:
        with pytest.raises(srpc_core.MismatchError, match="does not use CURVE"):
            client(interface, plain.port, tmp_path / "c.toml", client_table(keys)).call(
                "charge", ("alice", 1)
            )
        assert plain.charges() == []
        plain.server.stop()
        assert "a CURVE client" in plain.server.text()  # (see the test above on the race)


def test_without_authorized_keys_any_client_with_the_server_key_may_call(
    project: Path, interface: type, tmp_path: Path, keys: Path
) -> None:
    config = _write(tmp_path / "server.toml", server_table(keys, authorized=None), 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as server:
        table = client_table(keys, "mallory")
        assert client(interface, server.port, tmp_path / "m.toml", table).call("charge", ("m", 1))
        with pytest.raises(srpc_core.MismatchError):
            client(interface, server.port, tmp_path / "p.toml", "").call("charge", ("eve", 1))
        assert server.charges() == ["m 1"]


def test_authorized_keys_as_a_directory_of_pub_files(
    project: Path, interface: type, tmp_path: Path, keys: Path
) -> None:
    allowed = tmp_path / "clients"
    allowed.mkdir()
    (allowed / "alice.pub").write_bytes((keys / "alice.pub").read_bytes())
    table = f'curve_secret_key_file = "{keys / "server.key"}"\ncurve_authorized_keys = "{allowed}"'
    config = _write(tmp_path / "server.toml", table, 2.0)
    with Ledger(project, tmp_path / "server", config, {}) as server:
        mallory = client(interface, server.port, tmp_path / "m.toml", client_table(keys, "mallory"))
        with pytest.raises(srpc_core.AuthenticationError):
            mallory.call("charge", ("mallory", 1))
        alice = client(interface, server.port, tmp_path / "a.toml", client_table(keys))
        assert alice.call("charge", ("alice", 1)) == 1
        assert server.charges() == ["alice 1"]


# --- configuration errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('curve_secret_key_file = "{keys}/nobody.key"', r"curve_secret_key_file .* does not exist"),
        (
            'curve_secret_key_file = "{keys}/alice.pub"\ncurve_server_key = "{keys}/server.pub"',
            r"curve_secret_key_file .* only a public key .*NAME\.key",
        ),
        (
            'curve_secret_key_file = "{keys}/authorized.txt"\n'
            'curve_server_key = "{keys}/server.pub"',
            r"authorized\.txt' is not a ZeroMQ CURVE key file",
        ),
        (
            'curve_secret_key_file = "{keys}/alice.key"',
            r"curve_secret_key_file but not curve_server_key",
        ),
        ('curve_server_key = "{keys}/server.pub"', r"sets curve_server_key but not curve_secret"),
        (
            'curve_secret_key_file = "{keys}/alice.key"\ncurve_server_key = "not-a-key"',
            r"curve_server_key = 'not-a-key': .*does not exist",
        ),
        (
            'curve_secret_key_file = "{keys}/server.key"\n'
            'curve_authorized_keys = "{keys}/server.key"',
            r"curve_authorized_keys = .*line \d+ of .* is not a CURVE public key",
        ),
        ("curve_secret_key_file = 7", r"curve_secret_key_file = 7 is invalid"),
    ],
)
def test_bad_curve_settings_are_config_errors_naming_file_and_key(
    interface: type, tmp_path: Path, keys: Path, table: str, message: str
) -> None:
    """A client is refused when it is made (its transport reads the keys then); the message
    names the srpc.toml and the key."""
    config = _write(tmp_path / "bad.toml", table.format(keys=keys))
    with pytest.raises(srpc_core.ConfigError, match=message) as refused:
        srpc_core.Client(interface, port=5, config=config).call("count")
    assert str(config) in str(refused.value) and "[srpc.zmq]" in str(refused.value)


def test_a_server_with_a_bad_authorized_keys_file_does_not_start(
    project: Path, tmp_path: Path, keys: Path
) -> None:
    (tmp_path / "empty.txt").write_text("# nobody yet\n")
    table = server_table(keys, authorized=None) + f'curve_authorized_keys = "{tmp_path}/empty.txt"'
    config = _write(tmp_path / "server.toml", table, 2.0)
    with pytest.raises(AssertionError) as exited, Ledger(project, tmp_path / "s", config, {}):
        pass
    assert "ConfigError" in str(exited.value) and "lists no keys" in str(exited.value)
