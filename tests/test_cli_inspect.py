"""`srpc list`, `srpc call`, `srpc ping` through subprocesses against live servers (tcp, zmq, nats),
reflection turned off, the shared secret covering reflection, and a server that never answers.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from nats_support import NatsServer, nats_config, nats_server  # noqa: F401 (a fixture)
from support import PYTHON, ServerProcess, child_env, make_project

SHOP_INTERFACE = '''\
"""A small shop: the interface."""

import datetime
from abc import ABC, abstractmethod
from dataclasses import dataclass


class OutOfStock(Exception):
    """Not enough items."""


@dataclass
class Item:
    name: str
    qty: int


class ShopInterface(ABC):
    """A shop."""

    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """Return a + b."""

    @abstractmethod
    def take(self, name: str, qty: int = 1) -> Item:
        """Take `qty` items.

        Raises OutOfStock when there are not enough."""

    @abstractmethod
    def pair(self, a: int, b: int) -> tuple[int, int]:
        """Both, as a pair."""

    @abstractmethod
    def later(self, when: datetime.datetime, data: bytes) -> str:
        """Describe a moment and some bytes."""

    @abstractmethod
    def blob(self) -> object:
        """Return something no codec can carry."""
'''

SHOP = """\
from shop.shop_interface import Item, OutOfStock, ShopInterface


class Shop(ShopInterface):
    def add(self, a, b):
        return a + b

    def take(self, name, qty=1):
        if qty > 5:
            raise OutOfStock(f"only 5 {name} left")
        return Item(name, qty)

    def pair(self, a, b):
        return (a, b)

    def later(self, when, data):
        return f"{when.isoformat()} {data!r}"

    def blob(self):
        return object()
"""

SECRET_ENV = "SRPC_TEST_INSPECT_SECRET"
SECRET = "inspect-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("inspect"),
        "shop",
        {"shop/shop_interface.py": SHOP_INTERFACE, "shop/shop.py": SHOP},
    )


def srpc(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `srpc` command line as a user would."""
    return subprocess.run(
        [PYTHON, "-m", "srpc_core", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(**(env or {})),
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- tcp and zmq: list, call, ping ----------------------------------------------------------------


@pytest.fixture(scope="module", params=["tcp", "zmq", "nats"])
def served(request: pytest.FixtureRequest, shop: Path) -> tuple[Path, str]:
    """A shop server on `transport`; yields the project and the server's URL."""
    transport = request.param
    if transport == "zmq":
        pytest.importorskip("zmq")
    if transport == "nats":  # a real nats-server; the URL names it and the service's subject
        nats: NatsServer = request.getfixturevalue("nats_server")
        config = nats_config(shop / "nats.toml", nats.url)
    else:
        config = write_config(shop / f"{transport}.toml", f'[srpc]\ntransport = "{transport}"\n')
    server = ServerProcess(shop, "shop", config=config)
    server.start()
    request.addfinalizer(server.stop)
    return shop, server.address


def test_ping(served: tuple[Path, str]) -> None:
    project, url = served
    result = srpc(project, "ping", url)
    assert result.returncode == 0, result.stderr
    assert f"ShopInterface at {url}" in result.stdout and "5 procedures" in result.stdout


def test_list_signatures_and_docstrings(served: tuple[Path, str]) -> None:
    project, url = served
    result = srpc(project, "list", url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"ShopInterface at {url} (5 procedures)" in out
    assert "add(a: float, b: float) -> float" in out
    assert "take(name: str, qty: int = 1) -> shop.shop_interface.Item" in out
    assert "Raises OutOfStock when there are not enough." in out
    as_json = json.loads(srpc(project, "list", "--json", url).stdout)
    procedures = as_json["procedures"]
    assert list(procedures) == ["add", "take", "pair", "later", "blob"]
    assert procedures["pair"]["doc"] == "Both, as a pair."
    assert len(procedures["add"]["fingerprint"]) == 16


def test_call_results(served: tuple[Path, str]) -> None:
    project, url = served
    assert srpc(project, "call", url, "add", "4", "2").stdout == "6\n"
    assert srpc(project, "call", url, "add", "4", "2.5").stdout == "6.5\n"
    taken = srpc(project, "call", url, "take", "bolt", "qty=2")
    assert json.loads(taken.stdout) == {"name": "bolt", "qty": 2}
    assert srpc(project, "call", "--repr", url, "pair", "1", "2").stdout == "(1, 2)\n"
    assert srpc(project, "call", url, "pair", "1", "2").stdout == "[1,2]\n"
    # Arguments converted by the reported annotations: ISO text to datetime, base64 to bytes
    # (a trailing "=" of base64 is not taken for a keyword argument).
    later = srpc(project, "call", url, "later", "2024-01-02T03:04:05", "aGVsbG8=")
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout) == "2024-01-02T03:04:05 b'hello'"


def test_call_remote_errors(served: tuple[Path, str]) -> None:
    project, url = served
    refused = srpc(project, "call", url, "take", "bolt", "qty=7")
    assert refused.returncode == 1
    assert refused.stderr == "OutOfStock: only 5 bolt left\n"
    invalid = srpc(project, "call", url, "add", "lots", "2")
    assert invalid.returncode == 1
    assert invalid.stderr.startswith("TypeError: add(): parameter 'a'")
    unencodable = srpc(project, "call", url, "blob")
    assert unencodable.returncode == 1 and unencodable.stderr.startswith("EncodeError: ")
    unknown = srpc(project, "call", url, "nope")
    assert unknown.returncode == 1 and "has no procedure 'nope'" in unknown.stderr


def test_url_from_config(served: tuple[Path, str], tmp_path: Path) -> None:
    """Without a URL, the address comes from ./srpc.toml; --config picks another file."""
    _, url = served
    transport, _, rest = url.partition("://")
    if transport == "nats":  # the NATS server and the service's subject from [srpc.nats]
        server, _, subject = rest.partition("/")
        text = (
            f'[srpc]\ntransport = "nats"\n[srpc.nats]\nservers = ["nats://{server}"]\n'
            f'subject = "{subject}"\n'
        )
    else:
        host, _, port = rest.rstrip("/").rpartition(":")
        text = f'[srpc]\ntransport = "{transport}"\nhost = "{host}"\nport = {port}\n'
    write_config(tmp_path / "srpc.toml", text)
    assert srpc(tmp_path, "call", "add", "1", "2").stdout == "3\n"
    other = write_config(tmp_path / "other.toml", text)
    (tmp_path / "srpc.toml").unlink()
    assert srpc(tmp_path, "ping", "--config", str(other)).returncode == 0


# -- reflection off, the shared secret -------------------------------------------------------------


def test_reflection_off(shop: Path) -> None:
    config = write_config(shop / "noreflect.toml", "[srpc]\nreflection = false\n")
    with ServerProcess(shop, "shop", config=config) as server:
        listed = srpc(shop, "list", server.address)
        assert listed.returncode == 1
        assert "reflection is off" in listed.stderr and "reflection = false" in listed.stderr
        # calls and health checks still work
        assert srpc(shop, "call", server.address, "add", "1", "1").stdout == "2\n"
        assert srpc(shop, "ping", server.address).returncode == 0


def test_shared_secret_covers_reflection(shop: Path, tmp_path: Path) -> None:
    auth = f'[srpc]\n[srpc.auth]\nsecret_env = "{SECRET_ENV}"\n'
    config = write_config(shop / "auth.toml", auth)
    with ServerProcess(shop, "shop", config=config, env={SECRET_ENV: SECRET}) as server:
        url = server.address
        # Without the secret: refused, nothing described.
        plain = srpc(shop, "list", url)
        assert plain.returncode == 1 and "AuthenticationError" in plain.stderr
        assert "add(a: float" not in plain.stdout
        wrong = srpc(shop, "list", "--config", str(config), url, env={SECRET_ENV: "x" * 32})
        assert wrong.returncode == 1 and "AuthenticationError" in wrong.stderr
        # With it: list and call work.
        good = {SECRET_ENV: SECRET}
        listed = srpc(shop, "list", "--config", str(config), url, env=good)
        assert listed.returncode == 0, listed.stderr
        assert "add(a: float, b: float) -> float" in listed.stdout
        called = srpc(shop, "call", "--config", str(config), url, "add", "2", "3", env=good)
        assert called.stdout == "5\n", called.stderr


def test_reflection_needs_a_session(shop: Path) -> None:
    """A reflection request without a session token this server issued gets nothing."""
    with ServerProcess(shop, "shop") as server:
        code = (
            "import socket, struct, sys\n"
            "from srpc_core import protocol\n"
            f"s = socket.create_connection(('127.0.0.1', {server.port}), timeout=10)\n"
            "msg = protocol.reflect('forged.token')\n"
            "s.sendall(struct.pack('>I', len(msg)) + msg)\n"
            "n = struct.unpack('>I', s.recv(4))[0]\n"
            "data = b''\n"
            "while len(data) < n:\n"
            "    data += s.recv(n - len(data))\n"
            "print(protocol.parse_control_error(data).code)\n"
            "print(b'add(' in data)\n"
        )
        result = subprocess.run(
            [PYTHON, "-c", code], capture_output=True, text=True, timeout=30, env=child_env()
        )
        assert result.stdout.split() == ["session", "False"], result.stderr


# -- unhealthy servers ---------------------------------------------------------------------------


def test_ping_nobody_there(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on (bound, never listening)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        result = srpc(tmp_path, "ping", f"tcp://127.0.0.1:{port}", "--timeout", "5")
    assert result.returncode == 1
    assert "ServerUnavailableError" in result.stderr and "is it running?" in result.stderr


def test_ping_a_server_that_never_answers(tmp_path: Path) -> None:
    """A peer that accepts and stays silent: ping gives up within its timeout, with a reason."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        accepted: list[socket.socket] = []
        done = threading.Event()

        def accept() -> None:
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass
            done.set()

        threading.Thread(target=accept, daemon=True).start()
        port = silent.getsockname()[1]
        result = srpc(tmp_path, "ping", f"tcp://127.0.0.1:{port}", "--timeout", "1")
        assert done.wait(10)  # the ping did connect
        for conn in accepted:
            conn.close()
    assert result.returncode == 1
    assert "CallTimeoutError" in result.stderr


def test_bad_url(tmp_path: Path) -> None:
    result = srpc(tmp_path, "ping", "tcp://127.0.0.1")
    assert result.returncode == 2 and "host:port" in result.stderr
