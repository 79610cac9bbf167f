"""Generated stubs pass ``mypy --strict`` in a user's project, and so does code that uses them.

Each project is a folder the way users lay it out (tests/inventory_project, the calculator
example), copied to a temporary folder; the stubs come from the real generator, and mypy runs
as a command (the venv's, which finds srpc_core as installed: through its py.typed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import EXAMPLES, PYTHON, child_env, generate_stubs

HERE = Path(__file__).resolve().parent

# Calls that do not fit the stub's types: mypy must flag each numbered line.
BAD_CLIENT = """\
from inventory.inventory_interface import Category, Item
from srpc_inventory_client_stub import SrpcInventoryClientStub

stub = SrpcInventoryClientStub()
item: Item = stub.find("x")
count: str = stub.take("x")
stub.take("x", qty="2")
stub.search("ham", Category.TOOL)
result: int = stub.clear()
stub.ticket("x", note=None)
"""
BAD_LINES = {"5", "6", "7", "8", "9", "10"}

REVEAL = """\
from srpc_inventory_client_stub import SrpcInventoryClientStub

stub = SrpcInventoryClientStub()
reveal_type(stub.find("x"))
reveal_type(stub.names())
reveal_type(stub.shelf("x"))
reveal_type(stub.ticket("x"))
reveal_type(stub.clear())
"""
REVEALED = [
    "inventory.inventory_interface.Item | None",
    "dict[int, str]",
    "tuple[int, int]",
    "uuid.UUID",
    "None",
]

# The async stub: the same types, awaited; calls that do not fit are flagged the same way.
ASYNC_CLIENT = """\
import asyncio

from srpc_inventory_client_stub import SrpcInventoryAsyncClientStub


async def main() -> None:
    async with SrpcInventoryAsyncClientStub() as stub:
        reveal_type(await stub.find("x"))
        reveal_type(await stub.names())
        reveal_type(await stub.with_options(timeout=0.5).shelf("x"))
        reveal_type(await stub.clear())
        count: str = await stub.take("x")
        await stub.take("x", qty="2")
        stub.find("x").upper()


asyncio.run(main())
"""
ASYNC_BAD_LINES = {"12", "13", "14"}
ASYNC_REVEALED = [
    "inventory.inventory_interface.Item | None",
    "dict[int, str]",
    "tuple[int, int]",
    "None",
]

# Return annotations of every shape the client stub casts to (or does not).
EDGE_INTERFACE = '''\
"""Return annotations the client stub must cast to exactly as written."""

from __future__ import annotations

import collections.abc
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, NoReturn


@dataclass
class Thing:
    """A thing (a dataclass: srpc carries it)."""


class EdgeInterface(ABC):
    """Odd but valid signatures."""

    @abstractmethod
    def forward(self) -> "list[Thing]":
        """A quoted annotation."""

    @abstractmethod
    def nested(self) -> collections.abc.Mapping[str, "Thing"]:
        """Quotes inside the annotation."""

    @abstractmethod
    def literal(self) -> Literal['say "hi"', "it's", "a\\\\b"]:
        """Both quotes and a backslash."""

    @abstractmethod
    def anything(self) -> Any:
        """Nothing to cast to."""

    @abstractmethod
    def fail(self) -> NoReturn:
        """Never returns."""

    @abstractmethod
    def film(self, title: str, cast: list[str]) -> typing.Optional[Thing]:  # noqa: UP045
        """A parameter called cast."""

    @abstractmethod
    def nothing(self, x: int, /) -> "None":
        """Returns nothing."""
'''

EDGE_CLIENT = """\
from typing import Any, Literal

from edge.edge_interface import Thing
from srpc_edge_client_stub import SrpcEdgeClientStub

stub = SrpcEdgeClientStub()
things: list[Thing] = stub.forward()
by_name: dict[str, Thing] = dict(stub.nested())
word: Literal['say "hi"', "it's", "a\\\\b"] = stub.literal()
value: Any = stub.anything()
found: Thing | None = stub.film("Alien", ["Weaver"])
stub.nothing(1)
"""


def mypy_strict(
    project: Path, cache: Path, *targets: str
) -> tuple[int, list[str], subprocess.CompletedProcess[str]]:
    """Run ``python -m mypy --strict`` on `targets` in `project`: exit code and error lines."""
    result = subprocess.run(
        [PYTHON, "-m", "mypy", "--strict", "--cache-dir", str(cache), *targets],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    return result.returncode, errors, result


def assert_clean(project: Path, cache: Path, *targets: str) -> None:
    code, errors, result = mypy_strict(project, cache, *targets)
    assert errors == [], result.stdout
    assert code == 0, result.stdout + result.stderr
    assert result.stdout.startswith("Success: no issues found"), result.stdout


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache for the module's runs (the standard library and srpc_core once)."""
    return tmp_path_factory.mktemp("mypy_cache")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inventory project (tests/inventory_project) with freshly generated stubs."""
    project = tmp_path_factory.mktemp("inventory") / "project"
    shutil.copytree(HERE / "inventory_project", project)
    result = generate_stubs(project, "inventory/inventory_interface.py")
    assert result.returncode == 0, result.stderr
    (project / "bad_client.py").write_text(BAD_CLIENT)
    (project / "reveal.py").write_text(REVEAL)
    (project / "async_client.py").write_text(ASYNC_CLIENT)
    return project


def test_inventory_stubs_and_their_users_pass_mypy_strict(inventory: Path, cache: Path) -> None:
    assert_clean(
        inventory,
        cache,
        "srpc_inventory_server_stub.py",
        "srpc_inventory_client_stub.py",
        "client.py",
        "server.py",
        "inventory",
    )


def test_the_client_stub_has_the_interface_types(inventory: Path, cache: Path) -> None:
    _, errors, result = mypy_strict(inventory, cache, "bad_client.py", "reveal.py")
    assert {line.split(":")[0] for line in errors} == {"bad_client.py"}, result.stdout
    assert {line.split(":")[1] for line in errors} == BAD_LINES, result.stdout
    revealed = re.findall(r'Revealed type is "(.*)"', result.stdout.replace("builtins.", ""))
    assert revealed == REVEALED, result.stdout


def test_the_async_client_stub_has_the_interface_types(inventory: Path, cache: Path) -> None:
    _, errors, result = mypy_strict(inventory, cache, "async_client.py")
    assert {line.split(":")[1] for line in errors} == ASYNC_BAD_LINES, result.stdout
    revealed = re.findall(r'Revealed type is "(.*)"', result.stdout.replace("builtins.", ""))
    assert revealed == ASYNC_REVEALED, result.stdout


def test_client_methods_cast_to_the_return_annotation_as_written(inventory: Path) -> None:
    stub = (inventory / "srpc_inventory_client_stub.py").read_text()
    assert "from typing import Optional, Self, cast\n" in stub
    assert '        return cast("Optional[Item]", self._srpc.call("find", (sku,), {}))\n' in stub
    assert (
        '        return cast("uuid.UUID", self._srpc.call("ticket", (sku,), {"note": note}))\n'
        in stub
    )
    assert '        """Remove every item."""\n        self._srpc.call("clear", (), {})\n' in stub
    imported = subprocess.run(
        [PYTHON, "-c", "import srpc_inventory_client_stub, srpc_inventory_server_stub"],
        cwd=inventory,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert imported.returncode == 0, imported.stderr


@pytest.mark.parametrize("side", ["server", "client"])
def test_the_calculator_example_passes_mypy_strict(side: str, tmp_path: Path, cache: Path) -> None:
    """The committed example stubs, with the example's own server.py or client.py."""
    project = tmp_path / side
    shutil.copytree(EXAMPLES / "calc" / side, project, ignore=shutil.ignore_patterns("__pycache__"))
    assert_clean(project, cache, f"srpc_calc_{side}_stub.py", f"{side}.py", "calc")


def test_odd_return_annotations(tmp_path: Path, cache: Path) -> None:
    project = tmp_path / "edge_project"
    (project / "edge").mkdir(parents=True)
    (project / "edge/__init__.py").write_text("")
    (project / "edge/edge_interface.py").write_text(EDGE_INTERFACE)
    (project / "client.py").write_text(EDGE_CLIENT)
    result = generate_stubs(project, "edge/edge_interface.py", "--only", "client")
    assert result.returncode == 0, result.stderr
    stub = (project / "srpc_edge_client_stub.py").read_text()
    assert "import typing\n" in stub
    assert "from typing import Any, Literal, NoReturn, Self, cast\n" in stub
    for line in [
        'return cast("list[Thing]", self._srpc.call("forward", (), {}))\n',
        """return cast(\n            'collections.abc.Mapping[str, "Thing"]',\n""",
        'return typing.cast(\n            "typing.Optional[Thing]",\n',
        'return self._srpc.call("anything", (), {})\n',
        'self._srpc.call("fail", (), {})\n        raise AssertionError("fail() returned")\n',
        '"""Returns nothing."""\n        self._srpc.call("nothing", (x,), {})\n',
    ]:
        assert line in stub
    # the literal's source text, in the quotes that need fewer escapes (as ruff would pick)
    assert r"""            'Literal[\'say "hi"\', "it\'s", "a\\\\b"]',""" in stub
    assert_clean(project, cache, "srpc_edge_client_stub.py", "client.py", "edge")
    check = subprocess.run(
        [PYTHON, "-c", "import srpc_edge_client_stub"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert check.returncode == 0, check.stderr


def test_parameters_named_cast_and_typing_are_a_clear_error(tmp_path: Path) -> None:
    project = tmp_path / "edge_project"
    (project / "edge").mkdir(parents=True)
    (project / "edge/__init__.py").write_text("")
    (project / "edge/edge_interface.py").write_text(
        "from abc import ABC, abstractmethod\n\n\nclass EdgeInterface(ABC):\n"
        "    @abstractmethod\n    def f(self, cast: int, typing: int) -> int: ...\n"
    )
    result = generate_stubs(project, "edge/edge_interface.py")
    assert result.returncode == 2
    assert "f has parameters named both 'cast' and 'typing'" in result.stderr
    assert "Traceback" not in result.stderr
