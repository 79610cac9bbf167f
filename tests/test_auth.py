"""The shared secret ([srpc.auth]): both sides prove it in the hello, every call is sealed with
the session's keys, replays run nothing; on tcp, zmq and NATS, through real server processes
started from generated stubs. Every refusal is checked on both sides: the caller's error, and
the ledger file (the procedure's side effect) unchanged."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_support import nats_config, nats_server  # noqa: F401  (a fixture)
from support import ServerProcess, import_interface, make_project

import srpc_core
from srpc_core import protocol
from srpc_core.auth import TAG_BYTES, Authenticator
from srpc_core.config import load_config

INTERFACE = '''
from abc import ABC, abstractmethod


class LedgerInterface(ABC):
    @abstractmethod
    def charge(self, card: str, cents: int) -> int:
        """Record a charge; return how many charges the ledger holds."""

    @abstractmethod
    def count(self) -> int:
        """How many charges the ledger holds."""
'''

IMPLEMENTATION = """
from pathlib import Path

from ledger.ledger_interface import LedgerInterface

LEDGER = Path("charges.log")


class Ledger(LedgerInterface):
    def charge(self, card: str, cents: int) -> int:
        with LEDGER.open("a") as f:
            f.write(f"{card} {cents}\\n")
        return self.count()

    def count(self) -> int:
        return len(LEDGER.read_text().splitlines()) if LEDGER.exists() else 0
"""

#: The server process: the generated stub, as a user's server.py.
SERVER = """
from srpc_ledger_server_stub import SrpcLedgerServerStub

SrpcLedgerServerStub("127.0.0.1", 0, config={config!r}).start()
"""

SECRET_ENV = "LEDGER_SECRET"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("auth"),
        "ledger",
        {"ledger/ledger_interface.py": INTERFACE, "ledger/ledger.py": IMPLEMENTATION},
    )


@pytest.fixture(scope="module")
def interface(project: Path) -> type:
    return import_interface(project, "ledger")


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


def write_config(path: Path, *, auth: str = "", transport: str = "", extra: str = "") -> Path:
    path.write_text(
        "[srpc]\n"
        + (f'transport = "{transport}"\n' if transport else "")
        + ("max_message_bytes = 1048576\n" if transport == "nats" else "")
        + '[srpc.metrics]\npath = ""\n'
        + (f"[srpc.auth]\n{auth}\n" if auth else "")
        + extra
    )
    return path


def secret_file(directory: Path, secret: str, name: str = "ledger.secret") -> Path:
    path = directory / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


class Ledger:
    """A ledger server process with its own working directory (its charges.log)."""

    def __init__(self, project: Path, work: Path, config: Path, env: dict[str, str]) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.work = work
        self.server = ServerProcess(
            project,
            "ledger",
            code=f"import os, sys\nos.chdir({str(work)!r})\nsys.path.insert(0, {str(project)!r})\n"
            + SERVER.format(config=str(config)),
            env=env,
        )

    def __enter__(self) -> Ledger:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    def charges(self) -> list[str]:
        ledger = self.work / "charges.log"
        return ledger.read_text().splitlines() if ledger.exists() else []


@pytest.fixture
def ledger(project: Path, tmp_path: Path, secret: str) -> Iterator[Ledger]:
    """A tcp server whose [srpc.auth] names an environment variable."""
    config = write_config(tmp_path / "server.toml", auth=f'secret_env = "{SECRET_ENV}"')
    with Ledger(project, tmp_path / "server", config, {SECRET_ENV: secret}) as server:
        yield server


def client_config(tmp_path: Path, secret: str | None, **kw: Any) -> Path:
    if secret is None:
        return write_config(tmp_path / "client.toml", **kw)
    path = secret_file(tmp_path, secret, "client.secret")
    return write_config(tmp_path / "client.toml", auth=f'secret_file = "{path}"', **kw)


# -- configuration ---------------------------------------------------------------------------


def test_a_literal_secret_in_srpc_toml_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path / "srpc.toml", auth='secret = "hunter2hunter2hunter2"')
    with pytest.raises(srpc_core.ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert str(config) in text and "secret" in text
    assert "version control" in text and "secret_env" in text and "secret_file" in text


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('secret_env = "A"\nsecret_file = "b"', "both secret_env and secret_file"),
        ("", "neither key"),
        ('secret_envv = "A"', "did you mean 'secret_env'"),
        ("secret_env = 5", "environment variable"),
    ],
)
def test_exactly_one_place_for_the_secret(tmp_path: Path, table: str, expected: str) -> None:
    path = tmp_path / "srpc.toml"
    path.write_text(f"[srpc]\n[srpc.auth]\n{table}\n")
    with pytest.raises(srpc_core.ConfigError, match=expected):
        load_config(path)


def test_an_unset_variable_a_missing_or_empty_file_are_clear_errors(
    tmp_path: Path, interface: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SRPC_TEST_UNSET_SECRET", raising=False)
    unset = write_config(tmp_path / "a.toml", auth='secret_env = "SRPC_TEST_UNSET_SECRET"')
    with pytest.raises(srpc_core.ConfigError, match="SRPC_TEST_UNSET_SECRET is not set"):
        srpc_core.Client(interface, config=unset)
    missing = write_config(tmp_path / "b.toml", auth='secret_file = "nowhere.secret"')
    with pytest.raises(srpc_core.ConfigError, match=r"nowhere\.secret.*does not exist"):
        srpc_core.Client(interface, config=missing)
    (tmp_path / "empty.secret").write_text("\n")
    empty = write_config(tmp_path / "c.toml", auth='secret_file = "empty.secret"')
    with pytest.raises(srpc_core.ConfigError, match="is empty"):
        srpc_core.Client(interface, config=empty)
    (tmp_path / "short.secret").write_text("hunter2")
    short = write_config(tmp_path / "d.toml", auth='secret_file = "short.secret"')
    with pytest.raises(srpc_core.ConfigError, match="at least 16"):
        srpc_core.Client(interface, config=short)


# -- tcp ---------------------------------------------------------------------------------------


def test_both_sides_knowing_the_secret_call_as_usual(
    ledger: Ledger, interface: type, tmp_path: Path, secret: str
) -> None:
    config = client_config(tmp_path, secret)
    with srpc_core.Client(interface, port=ledger.port, config=config) as client:
        assert client.call("charge", ("alice", 100)) == 1
        assert client.call("charge", ("bob", 5)) == 2
        assert client.call("count") == 2

    async def main() -> list[int]:
        async with srpc_core.AsyncClient(interface, port=ledger.port, config=config) as aclient:
            return list(await asyncio.gather(*(aclient.call("count") for _ in range(20))))

    assert asyncio.run(main()) == [2] * 20
    assert ledger.charges() == ["alice 100", "bob 5"]


def test_a_client_without_the_secret_is_refused_and_nothing_runs(
    ledger: Ledger, interface: type, tmp_path: Path
) -> None:
    config = client_config(tmp_path, None)
    with pytest.raises(srpc_core.AuthenticationError, match="requires the shared secret"):
        srpc_core.Client(interface, port=ledger.port, config=config).call("charge", ("eve", 1))

    async def main() -> None:
        async with srpc_core.AsyncClient(interface, port=ledger.port, config=config) as aclient:
            await aclient.call("charge", ("eve", 2))

    with pytest.raises(srpc_core.AuthenticationError, match="requires the shared secret"):
        asyncio.run(main())
    assert ledger.charges() == []


def test_a_client_with_another_secret_is_refused_with_one_log_line(
    ledger: Ledger, interface: type, tmp_path: Path
) -> None:
    config = client_config(tmp_path, secrets.token_urlsafe(32))
    for _ in range(5):
        with pytest.raises(srpc_core.AuthenticationError, match="authentication failed"):
            srpc_core.Client(interface, port=ledger.port, config=config).call("charge", ("e", 1))
    assert ledger.charges() == []
    ledger.server.stop()
    lines = [line for line in ledger.server.output if "refused" in line]
    assert len(lines) == 1, ledger.server.text()
    assert "proof does not match" in lines[0]


def test_a_server_without_the_secret_is_refused_by_the_client(
    project: Path, interface: type, tmp_path: Path, secret: str
) -> None:
    config = write_config(tmp_path / "server.toml")  # no [srpc.auth]
    with Ledger(project, tmp_path / "server", config, {}) as impostor:
        client = srpc_core.Client(
            interface, port=impostor.port, config=client_config(tmp_path, secret)
        )
        with pytest.raises(srpc_core.AuthenticationError, match="did not prove"):
            client.call("charge", ("alice", 100))
        assert impostor.charges() == []  # the client sent nothing after the hello


def test_a_server_with_another_secret_is_refused_by_the_client(
    project: Path, interface: type, tmp_path: Path, secret: str
) -> None:
    """The server refuses the client's proof; were it to answer anyway (a server that lies),
    the client checks the server's proof itself: both halves are covered here."""
    other = secrets.token_urlsafe(32)
    config = write_config(tmp_path / "server.toml", auth=f'secret_env = "{SECRET_ENV}"')
    with Ledger(project, tmp_path / "server", config, {SECRET_ENV: other}) as impostor:
        client = srpc_core.Client(
            interface, port=impostor.port, config=client_config(tmp_path, secret)
        )
        with pytest.raises(srpc_core.AuthenticationError):
            client.call("charge", ("alice", 100))
        assert impostor.charges() == []
    auth = Authenticator(secret.encode(), "LedgerInterface", "json")
    liar = Authenticator(other.encode(), "LedgerInterface", "json")
    _, nonce = auth.client_hello()
    with pytest.raises(srpc_core.AuthenticationError, match="failed the shared-secret check"):
        auth.check_server(liar.server_proof(nonce, "id.mac"), nonce, "id.mac", "tcp://x")


# -- what an eavesdropper captured cannot be used ---------------------------------------------


def _frame(sock: socket.socket, message: bytes) -> bytes:
    sock.sendall(struct.pack(">I", len(message)) + message)
    header = _read(sock, 4)
    return _read(sock, struct.unpack(">I", header)[0])


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the server closed the connection"
        data += chunk
    return data


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _code(reply: bytes) -> str:
    assert protocol.is_control(reply), reply
    return str(json.loads(reply[5:])["code"])


def test_a_captured_exchange_replayed_runs_nothing(ledger: Ledger, secret: str) -> None:
    auth = Authenticator(secret.encode(), "LedgerInterface", "json")
    extra, nonce = auth.client_hello()
    hello = protocol.Hello("json", "tcp", "LedgerInterface", extra=extra).encode()
    # The legitimate client's exchange, as an eavesdropper records it.
    with _connect(ledger.port) as sock:
        reply = protocol.parse_hello_reply(_frame(sock, hello), "test")
        auth.check_server(reply.extra, nonce, reply.session, "test")
        keys = auth.call_keys(reply.session)
        body = json.dumps([1, reply.session, "charge", ["alice", 100], {}]).encode()
        request = keys.seal_request(body)
        response = _frame(sock, request)
        assert keys.response_ok(response[:-TAG_BYTES], response[-TAG_BYTES:])
        assert json.loads(response[:-TAG_BYTES]) == [1, 0, 1]
    assert ledger.charges() == ["alice 100"]

    with _connect(ledger.port) as sock:
        # the captured request, again: a replay
        assert _code(_frame(sock, request)) == "auth"
        # the captured hello, again: the server answers with a new session, whose keys the
        # eavesdropper cannot compute without the secret...
        replayed = protocol.parse_hello_reply(_frame(sock, hello), "test")
        assert replayed.session != reply.session
        # ...so the captured request moved to the new session does not verify,
        moved = json.dumps([2, replayed.session, "charge", ["eve", 1], {}]).encode()
        assert _code(_frame(sock, moved + request[-TAG_BYTES:])) == "auth"
        # nor does a request of the eavesdropper's own under the captured token,
        forged = json.dumps([3, reply.session, "charge", ["eve", 1], {}]).encode()
        assert _code(_frame(sock, forged + bytes(TAG_BYTES))) == "auth"
        # nor one sent without any tag, as a client without the secret would.
        assert _code(_frame(sock, forged)) == "auth"
        # A cancel needs the session's mac too.
        cancel = protocol.cancel(1, reply.session)
        assert _code(_frame(sock, cancel)) == "auth"
    assert ledger.charges() == ["alice 100"]
    ledger.server.stop()
    assert "replayed request" in ledger.server.text()


def test_a_tampered_response_is_refused_by_the_client(
    ledger: Ledger, interface: type, tmp_path: Path, secret: str
) -> None:
    """A man in the middle flips a byte of the result: the client refuses the response."""
    client = srpc_core.Client(interface, port=ledger.port, config=client_config(tmp_path, secret))
    client.call("count")  # the hello is done; now tamper with what comes back
    keys = client._server.sealed[1]  # type: ignore[index]
    body = json.dumps([99, 0, 1000000]).encode()
    good = keys.seal_response(body)
    assert client._unseal(good, keys) == body
    bad = good.replace(b"1000000", b"9000000")
    with pytest.raises(srpc_core.AuthenticationError, match="not sealed"):
        client._unseal(bad, keys)
    assert ledger.charges() == []


# -- zmq and NATS -----------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["zmq", "nats"])
def test_the_secret_on_every_transport(
    transport: str,
    project: Path,
    interface: type,
    tmp_path: Path,
    secret: str,
    request: pytest.FixtureRequest,
) -> None:
    extra = ""
    if transport == "nats":
        url = request.getfixturevalue("nats_server").url
        extra = f'[srpc.nats]\nservers = ["{url}"]\nsubject = "auth-{secrets.token_hex(4)}"\n'

    def config(name: str, auth: str) -> Path:
        return write_config(tmp_path / name, auth=auth, transport=transport, extra=extra)

    server_config = config("server.toml", f'secret_env = "{SECRET_ENV}"')
    with Ledger(project, tmp_path / "server", server_config, {SECRET_ENV: secret}) as server:
        port = server.port if transport == "zmq" else 0
        good = config("good.toml", f'secret_file = "{secret_file(tmp_path, secret)}"')
        with srpc_core.Client(interface, port=port, config=good) as client:
            assert client.call("charge", ("alice", 100)) == 1

        async def main() -> int:
            async with srpc_core.AsyncClient(interface, port=port, config=good) as aclient:
                return int(await aclient.call("count"))

        assert asyncio.run(main()) == 1
        none = config("none.toml", "")
        with pytest.raises(srpc_core.AuthenticationError, match="requires the shared secret"):
            srpc_core.Client(interface, port=port, config=none).call("charge", ("eve", 1))
        wrong = config("wrong.toml", f'secret_file = "{secret_file(tmp_path, "x" * 32, "w")}"')
        with pytest.raises(srpc_core.AuthenticationError, match="authentication failed"):
            srpc_core.Client(interface, port=port, config=wrong).call("charge", ("eve", 1))
        assert server.charges() == ["alice 100"]
