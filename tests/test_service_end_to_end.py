"""A multi-word service end to end: generated stubs, a server process, separate client processes.

The ``user_store`` service is written into a temporary project the way a user writes it; the
client runs in a folder that holds only the interface and the client stub.
"""

from __future__ import annotations

import json
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess, make_project, run_client

INTERFACE = '''\
"""The user store: what clients may call."""

from abc import ABC, abstractmethod
from typing import Any


class UserNotFound(LookupError):
    """No user has this name."""


class UserStoreInterface(ABC):
    """Stores users by name."""

    @abstractmethod
    def add_user(self, name: str, age: int = 0, *, tags: list[str] | None = None) -> dict:
        """Store a user and return the record."""

    @abstractmethod
    def get_user(self, name: str) -> dict:
        """Return a user's record; UserNotFound if there is none."""

    @abstractmethod
    def echo(self, value: Any, *more: Any, **named: Any) -> list:
        """Return [value, more, named]."""

    @abstractmethod
    def lookup(self, key: str) -> Any:
        """Look `key` up in an empty dict (a KeyError)."""

    @abstractmethod
    def check_age(self, age: int) -> int:
        """Return `age`; ValueError if it is negative."""

    @abstractmethod
    def explode(self, message: str) -> None:
        """Raise Boom, an exception the interface does not declare."""

    @abstractmethod
    def as_set(self, *items: int) -> Any:
        """Return the items as a set (which JSON cannot carry)."""
'''

IMPLEMENTATION = '''\
"""The user store's implementation (server side only)."""

from typing import Any

from user_store.user_store_interface import UserNotFound, UserStoreInterface


class Boom(ValueError):
    """Known only to the server."""


class UserStore(UserStoreInterface):
    def __init__(self) -> None:
        self.users: dict[str, dict] = {}

    def add_user(self, name: str, age: int = 0, *, tags: list[str] | None = None) -> dict:
        self.users[name] = {"name": name, "age": age, "tags": tags}
        return self.users[name]

    def get_user(self, name: str) -> dict:
        try:
            return self.users[name]
        except KeyError:
            raise UserNotFound(f"no user named {name!r}") from None

    def echo(self, value: Any, *more: Any, **named: Any) -> list:
        return [value, list(more), named]

    def lookup(self, key: str) -> Any:
        return {}[key]

    def check_age(self, age: int) -> int:
        if age < 0:
            raise ValueError(f"age must not be negative, got {age}")
        return age

    def explode(self, message: str) -> None:
        raise Boom(message)

    def as_set(self, *items: int) -> Any:
        return set(items)
'''

# show(call) prints one JSON line: the call's result, or a description of its exception.
CLIENT_PRELUDE = """\
import json, sys
import srpc_core
from srpc_user_store_client_stub import SrpcUserStoreClientStub
from user_store.user_store_interface import UserNotFound

store = SrpcUserStoreClientStub("127.0.0.1", {port})

def info(exc):
    return {{
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "args": [repr(a) for a in exc.args],
        "remote": isinstance(exc, srpc_core.RemoteError),
        "bases": [c.__name__ for c in type(exc).__mro__],
        "traceback": getattr(exc, "remote_traceback", None),
        "notes": getattr(exc, "__notes__", []),
    }}

def describe(call):
    try:
        return {{"result": call()}}
    except Exception as exc:
        return info(exc)

def show(call):
    print(json.dumps(describe(call)))
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's project: the user_store package and its generated stubs."""
    return make_project(
        tmp_path_factory.mktemp("e2e"),
        "user_store",
        {
            "user_store/user_store_interface.py": INTERFACE,
            "user_store/user_store.py": IMPLEMENTATION,
        },
    )


@pytest.fixture(scope="module")
def client_dir(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client folder with only the interface and the client stub: no implementation."""
    folder = tmp_path_factory.mktemp("client")
    (folder / "user_store").mkdir()
    for relative in ["user_store/__init__.py", "user_store/user_store_interface.py"]:
        (folder / relative).write_text((project / relative).read_text())
    stub = "srpc_user_store_client_stub.py"
    (folder / stub).write_text((project / stub).read_text())
    return folder


@pytest.fixture(scope="module")
def server(project: Path) -> Iterator[ServerProcess]:
    """The user store served with the default settings (no remote tracebacks)."""
    with ServerProcess(project, "user_store") as process:
        yield process


@pytest.fixture(scope="module")
def traceback_server(project: Path) -> Iterator[ServerProcess]:
    """The user store served with ``send_tracebacks = true``."""
    config = project / "tracebacks" / "srpc.toml"
    config.parent.mkdir()
    config.write_text("[srpc]\nsend_tracebacks = true\n")
    with ServerProcess(project, "user_store", config=config) as process:
        yield process


def client(folder: Path, port: int, body: str) -> list[Any]:
    """Run `body` (after the prelude) in a client process; return its JSON lines."""
    code = CLIENT_PRELUDE.format(port=port) + textwrap.dedent(body)
    result = run_client(folder, code)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_defaults_and_keyword_only_arguments_work_remotely(
    server: ServerProcess, client_dir: Path
) -> None:
    lines = client(
        client_dir,
        server.port,
        """
        show(lambda: store.add_user("ann"))
        show(lambda: store.add_user("bob", 41, tags=["admin", "ops"]))
        show(lambda: store.add_user(name="cy", tags=[]))
        show(lambda: store.get_user("bob"))
        """,
    )
    assert lines == [
        {"result": {"name": "ann", "age": 0, "tags": None}},
        {"result": {"name": "bob", "age": 41, "tags": ["admin", "ops"]}},
        {"result": {"name": "cy", "age": 0, "tags": []}},
        {"result": {"name": "bob", "age": 41, "tags": ["admin", "ops"]}},
    ]


def test_values_round_trip(server: ServerProcess, client_dir: Path) -> None:
    value: dict[str, Any] = {
        "text": "héllo ✓ 日本",
        "none": None,
        "list": [1, 2.5, True, None, "x", [], {}],
        "nested": {"a": {"b": [{"c": "日本"}]}},
        "big": 2**53,
        "negative": -7,
    }
    lines = client(
        client_dir,
        server.port,
        f"""
        value = {value!r}
        print(json.dumps(store.echo(value) == [value, [], {{}}], ensure_ascii=False))
        print(json.dumps(store.echo(value, None, "日本", key="héllo ✓"), ensure_ascii=False))
        print(json.dumps(store.echo(None)))
        """,
    )
    assert lines == [True, [value, [None, "日本"], {"key": "héllo ✓"}], [None, [], {}]]


def test_an_exception_declared_in_the_interface_comes_back_as_itself(
    server: ServerProcess, client_dir: Path
) -> None:
    [caught] = client(
        client_dir,
        server.port,
        """
        try:
            store.get_user("nobody")
        except UserNotFound as exc:
            print(json.dumps([type(exc) is UserNotFound, str(exc), exc.args[0]]))
        """,
    )
    assert caught == [True, "no user named 'nobody'", "no user named 'nobody'"]


def test_built_in_exceptions_come_back_as_themselves(
    server: ServerProcess, client_dir: Path
) -> None:
    key_error, value_error = client(
        client_dir,
        server.port,
        """
        show(lambda: store.lookup("missing-key"))
        show(lambda: store.check_age(-1))
        """,
    )
    assert (key_error["type"], key_error["module"]) == ("KeyError", "builtins")
    assert key_error["args"] == ["'missing-key'"]
    assert not key_error["remote"]
    assert (value_error["type"], value_error["module"]) == ("ValueError", "builtins")
    assert value_error["message"] == "age must not be negative, got -1"
    assert not value_error["remote"]


def test_an_exception_only_the_server_knows_is_a_remote_error(
    server: ServerProcess, client_dir: Path
) -> None:
    [boom] = client(
        client_dir,
        server.port,
        """
        try:
            store.explode("it went boom")
        except ValueError as exc:  # Boom derives from ValueError on the server
            print(json.dumps(info(exc)))
        """,
    )
    assert boom["type"] == "Boom"
    assert boom["remote"]
    assert "ValueError" in boom["bases"] and "RemoteError" in boom["bases"]
    assert boom["message"] == "it went boom"
    assert boom["traceback"] is None  # tracebacks stay on the server by default
    assert boom["notes"] == []


def test_remote_tracebacks_travel_only_when_the_server_allows_it(
    server: ServerProcess, traceback_server: ServerProcess, client_dir: Path
) -> None:
    body = """
        show(lambda: store.explode("with traceback"))
        show(lambda: store.get_user("nobody"))
        """
    boom, not_found = client(client_dir, traceback_server.port, body)
    assert boom["type"] == "Boom" and boom["remote"]
    assert "Traceback (most recent call last)" in boom["traceback"]
    assert 'user_store.py", line' in boom["traceback"]
    assert "raise Boom(message)" in boom["traceback"]
    assert "Remote traceback:" in boom["message"]
    assert not_found["type"] == "UserNotFound" and not not_found["remote"]
    assert any("raise UserNotFound" in note for note in not_found["notes"])
    boom, not_found = client(client_dir, server.port, body)
    assert boom["traceback"] is None and "Remote traceback" not in boom["message"]
    assert not_found["notes"] == []


def test_wrong_arguments_fail_in_the_client_before_anything_is_sent(client_dir: Path) -> None:
    with socket.socket() as taken:  # a port that is bound but where no server listens
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        lines = client(
            client_dir,
            port,
            """
            show(lambda: store.add_user())
            show(lambda: store.add_user("ann", 1, ["tag"]))
            show(lambda: store.add_user("ann", colour="red"))
            show(lambda: store.get_user("ann", "bob"))
            show(lambda: store._srpc.call("get_user", (), {"nom": "ann"}))
            show(lambda: store.get_user("ann"))
            """,
        )
    *wrong, right = lines
    assert [line["type"] for line in wrong] == ["TypeError"] * 5
    assert "missing 1 required positional argument: 'name'" in wrong[0]["message"]
    assert "takes from 2 to 3 positional arguments but 4 were given" in wrong[1]["message"]
    assert "unexpected keyword argument 'colour'" in wrong[2]["message"]
    assert wrong[4]["message"].startswith("get_user(name: str) -> dict: ")
    assert right["type"] == "ServerUnavailableError"  # the right call did try to connect


def test_wrong_arguments_are_type_errors_against_a_live_server_too(
    server: ServerProcess, client_dir: Path
) -> None:
    wrong, right = client(
        client_dir,
        server.port,
        """
        show(lambda: store.check_age(1, 2))
        show(lambda: store.check_age(age=5))
        """,
    )
    assert wrong["type"] == "TypeError" and not wrong["remote"]
    assert right == {"result": 5}


def test_a_value_the_codec_cannot_carry_is_an_encode_error(
    server: ServerProcess, client_dir: Path
) -> None:
    [error] = client(
        client_dir,
        server.port,
        """
        try:
            store.echo({1, 2})
        except srpc_core.EncodeError as exc:
            print(json.dumps([isinstance(exc, TypeError), str(exc)]))
        """,
    )
    is_type_error, message = error
    assert is_type_error
    assert "codec 'json' cannot carry a value of type 'set'" in message


def test_a_result_the_codec_cannot_carry_is_a_clear_error_and_the_server_goes_on(
    server: ServerProcess, client_dir: Path
) -> None:
    bad_result, after, again = client(
        client_dir,
        server.port,
        """
        show(lambda: store.as_set(1, 2, 3))
        show(lambda: store.echo("still serving"))
        show(lambda: store.as_set())
        """,
    )
    assert bad_result["type"] == "EncodeError"
    assert bad_result["module"] == "srpc_core.errors"
    assert "TypeError" in bad_result["bases"]
    assert "the result of as_set() cannot be sent" in bad_result["message"]
    assert "codec 'json' cannot carry a value of type 'set'" in bad_result["message"]
    assert after == {"result": ["still serving", [], {}]}
    assert again["type"] == "EncodeError"
    assert server.alive()
    assert client(client_dir, server.port, "show(lambda: store.check_age(3))") == [{"result": 3}]


def test_the_client_folder_has_no_implementation(client_dir: Path) -> None:
    assert sorted(p.name for p in client_dir.rglob("*.py")) == [
        "__init__.py",
        "srpc_user_store_client_stub.py",
        "user_store_interface.py",
    ]
