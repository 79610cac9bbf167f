"""Interface drift through real processes: a server whose interface changed, a client whose
stub was generated from the old one.

The server's interface changed ``take``'s signature, ``scale``'s default, and added ``added``.
Calls to the changed procedures raise `MismatchError` naming the procedure and both
signatures; everything else keeps working (procedures on one side only do not matter until
called).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, make_project, run_client

OLD = """\
from abc import ABC, abstractmethod


class DriftInterface(ABC):
    @abstractmethod
    def take(self, sku: str, qty: int) -> int: ...

    @abstractmethod
    def scale(self, x: int, factor: int = 2) -> int: ...

    @abstractmethod
    def retype(self, x: int) -> int: ...

    @abstractmethod
    def ping(self) -> str: ...

    @abstractmethod
    def gone(self) -> str: ...
"""

NEW = """\
from abc import ABC, abstractmethod


class DriftInterface(ABC):
    @abstractmethod
    def take(self, sku: str, qty: int, note: str = "") -> int: ...

    @abstractmethod
    def scale(self, x: int, factor: int = 3) -> int: ...

    @abstractmethod
    def retype(self, x: float) -> int: ...

    @abstractmethod
    def ping(self) -> str: ...

    @abstractmethod
    def added(self) -> str: ...
"""

IMPLEMENTATION = """\
from drift.drift_interface import DriftInterface


class Drift(DriftInterface):
    def take(self, sku, qty, note=""):
        return qty

    def scale(self, x, factor=3):
        return x * factor

    def retype(self, x):
        return 1

    def ping(self):
        return "pong"

    def added(self):
        return "new"
"""

CLIENT = """\
import json
import srpc_core
from srpc_drift_client_stub import SrpcDriftClientStub

stub = SrpcDriftClientStub("127.0.0.1", {port})

def show(name, call):
    try:
        print(json.dumps([name, "ok", call()]))
    except Exception as exc:
        print(json.dumps([name, type(exc).__name__, str(exc)]))

show("ping", lambda: stub.ping())
show("take", lambda: stub.take("x", 1))
show("scale", lambda: stub.scale(2))
show("retype", lambda: stub.retype(2))
show("gone", lambda: stub.gone())
show("ping again", lambda: stub.ping())
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    project = make_project(
        tmp_path_factory.mktemp("new"),
        "drift",
        {"drift/drift_interface.py": NEW, "drift/drift.py": IMPLEMENTATION},
    )
    with ServerProcess(project, "drift") as process:
        yield process


@pytest.fixture(scope="module")
def old_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client folder whose stub was generated from the old interface."""
    return make_project(tmp_path_factory.mktemp("old"), "drift", {"drift/drift_interface.py": OLD})


@pytest.fixture(scope="module")
def outcomes(server: ServerProcess, old_client: Path) -> dict[str, list[str]]:
    result = run_client(old_client, CLIENT.format(port=server.port))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return {name: rest for name, *rest in lines}


def test_unchanged_procedures_keep_working(outcomes: dict[str, list[str]]) -> None:
    assert outcomes["ping"] == ["ok", "pong"]
    assert outcomes["ping again"] == ["ok", "pong"]


@pytest.mark.parametrize(
    ("name", "ours", "theirs"),
    [
        ("take", "take(sku: str, qty: int) -> int", "take(sku: str, qty: int, note: str = '')"),
        ("scale", "scale(x: int, factor: int = 2) -> int", "scale(x: int, factor: int = 3)"),
        ("retype", "retype(x: int) -> int", "retype(x: float) -> int"),
    ],
    ids=["changed signature", "changed default", "changed annotation"],
)
def test_a_changed_procedure_is_a_mismatch_error(
    outcomes: dict[str, list[str]], name: str, ours: str, theirs: str
) -> None:
    kind, message = outcomes[name]
    assert kind == "MismatchError"
    assert f"this client calls {ours}" in message
    assert f"serves {theirs}" in message
    assert "regenerate the client stub from the server's interface" in message


def test_a_procedure_the_server_added_does_not_matter(outcomes: dict[str, list[str]]) -> None:
    # The old client never calls `added`; every other call went through (above).
    assert outcomes["ping"][0] == "ok"


def test_a_procedure_the_server_dropped_is_unknown_when_called(
    outcomes: dict[str, list[str]],
) -> None:
    kind, message = outcomes["gone"]
    assert kind == "UnknownProcedureError"
    assert "gone" in message


def test_a_new_client_calls_the_added_procedure(server: ServerProcess) -> None:
    code = textwrap.dedent(
        f"""\
        from srpc_drift_client_stub import SrpcDriftClientStub
        stub = SrpcDriftClientStub("127.0.0.1", {server.port})
        print(stub.added(), stub.scale(2), stub.take("x", 4, note="n"))
        """
    )
    result = run_client(server.project, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["new", "6", "4"]
