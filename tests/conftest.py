"""Shared fixtures: see tests/support.py for the helpers behind them.

Tests that start srpc server processes are marked ``e2e`` here, so ``pytest -m "not e2e"`` is
a quick unit run: a test is e2e if its code, a fixture it uses, or a function of its module
that either calls, names one of the helpers that start them (`ServerProcess`,
`run_client`). A module can also say ``pytestmark = pytest.mark.e2e`` itself.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess, calc_project

#: Helpers that start server processes (or client processes talking to them).
PROCESS_HELPERS = ("ServerProcess", "run_client")
#: Modules e2e as a whole: they build a virtual environment and run pytest or servers in it.
E2E_MODULES = ("test_plugin_package",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start server processes ``e2e``."""
    for item in items:
        functions: list[Callable[..., Any]] = [getattr(item, "obj", None) or (lambda: None)]
        info = getattr(item, "_fixtureinfo", None)
        for definitions in getattr(info, "name2fixturedefs", {}).values():
            functions += [definition.func for definition in definitions]
        module = getattr(item, "module", None)
        if getattr(module, "__name__", "") in E2E_MODULES or any(
            _starts_processes(f, set()) for f in functions
        ):
            item.add_marker(pytest.mark.e2e)


def _starts_processes(function: Callable[..., Any], seen: set[types.CodeType]) -> bool:
    """Whether `function`, or a function or class of its module it names, names a process
    helper."""
    function = getattr(function, "__func__", function)  # a fixture method
    code = getattr(function, "__code__", None)
    if code is None or code in seen:
        return False
    seen.add(code)
    names = _names(code)
    if names & set(PROCESS_HELPERS):
        return True
    module_globals = getattr(function, "__globals__", {})
    for name in names:
        value = module_globals.get(name)
        if isinstance(value, types.FunctionType) and _starts_processes(value, seen):
            return True
        if isinstance(value, type) and _class_starts_processes(value, seen):
            return True
    return False


def _class_starts_processes(cls: type, seen: set[types.CodeType]) -> bool:
    """Whether `cls` is a server process, or one of its methods names a process helper."""
    if issubclass(cls, ServerProcess):
        return True
    for member in vars(cls).values():
        function = member.fget if isinstance(member, property) else member
        function = getattr(function, "__func__", function)  # staticmethod, classmethod
        if isinstance(function, types.FunctionType) and _starts_processes(function, seen):
            return True
    return False


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):  # nested functions, lambdas, comprehensions
            names |= _names(constant)
    return names


@pytest.fixture
def calc_dir(tmp_path: Path) -> Path:
    """A user project holding the calc package and its generated stubs."""
    return calc_project(tmp_path)


@pytest.fixture
def calc_server(calc_dir: Path) -> Iterator[ServerProcess]:
    """A running calc server process (default config, a free port)."""
    with ServerProcess(calc_dir, "calc") as server:
        yield server
