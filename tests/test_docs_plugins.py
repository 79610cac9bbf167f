"""docs/plugins.md stays true: every hook is documented, and the worked example is the real one."""

from __future__ import annotations

import importlib
import inspect
import re
import sys
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
from support import EXAMPLES, REPO

from srpc_core import hookspecs, plugins, testing

DOC = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
EXAMPLE = EXAMPLES / "srpc-plugin-example"
VERBATIM = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```", re.DOTALL)
WORKED_TOML = re.compile(r"<!-- srpc.toml of the worked example -->\n```toml\n(.*?)```", re.DOTALL)


def hook_specs() -> dict[str, Callable[..., Any]]:
    """Every hook srpc defines, found the way pluggy finds them (not from a list of names)."""
    marker = f"{hookspecs.hookspec.project_name}_spec"
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if callable(function) and hasattr(function, marker)
    }


def test_hooks_are_found() -> None:
    assert len(hook_specs()) >= 6  # the contract names six; more may come


@pytest.mark.parametrize("name", sorted(hook_specs()))
def test_every_hook_has_a_section_with_its_signature(name: str) -> None:
    assert f"### `{name}`" in DOC, f"docs/plugins.md has no section for the hook {name}"
    parameters = ", ".join(inspect.signature(hook_specs()[name]).parameters)
    documented = re.search(rf"^def {name}\((?P<params>[^)]*)\)", DOC, re.MULTILINE)
    assert documented, f"docs/plugins.md does not show the signature of {name}"
    names = [p.split(":")[0].strip() for p in documented.group("params").split(",")]
    assert ", ".join(names) == parameters, (
        f"{name}: the docs show ({names}), the spec has ({parameters})"
    )


def test_plugin_discovery_facts_match_the_code() -> None:
    assert f"group `{plugins.ENTRY_POINT_GROUP}`" in DOC
    assert f'project name `"{hookspecs.hookspec.project_name}"`' in DOC
    assert f"`{plugins.DISABLE_ENV_VAR}=" in DOC


@pytest.mark.parametrize("path", [m.group("path") for m in VERBATIM.finditer(DOC)])
def test_files_shown_in_the_worked_example_are_the_real_files(path: str) -> None:
    shown = next(m.group("code") for m in VERBATIM.finditer(DOC) if m.group("path") == path)
    assert shown == (REPO / path).read_text(encoding="utf-8"), (
        f"docs/plugins.md shows an outdated {path}: paste the current file into its block"
    )


def example_entry_points() -> dict[str, str]:
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points: dict[str, str] = project["project"]["entry-points"]["srpc"]
    return entry_points


def test_the_worked_example_shows_every_plugin_module_it_registers() -> None:
    shown = {m.group("path") for m in VERBATIM.finditer(DOC)}
    for module in example_entry_points().values():
        path = f"examples/srpc-plugin-example/src/{module.replace('.', '/')}.py"
        assert path in shown, f"the worked example never shows {path}"


def registered_names() -> dict[str, set[str]]:
    """What the example's plugin modules register, by calling their hooks."""
    sys.path.insert(0, str(EXAMPLE / "src"))
    try:
        offered: dict[str, set[str]] = {"transport": set(), "codec": set()}
        for module_name in example_entry_points().values():
            module = importlib.import_module(module_name)
            for kind in offered:
                hook = getattr(module, f"srpc_register_{kind}s", None)
                if hook is not None:
                    hook(register=lambda name, factory, kind=kind: offered[kind].add(name))
        return offered
    finally:
        sys.path.remove(str(EXAMPLE / "src"))


def test_the_worked_example_selects_what_the_example_plugin_registers() -> None:
    match = WORKED_TOML.search(DOC)
    assert match, "docs/plugins.md lost the srpc.toml of the worked example"
    selected = tomllib.loads(match.group(1))["srpc"]
    offered = registered_names()
    assert selected["transport"] in offered["transport"]
    assert selected["codec"] in offered["codec"]
    for name in (selected["transport"], selected["codec"]):
        assert name in example_entry_points(), f"{name} is not an entry point of the example"


def test_documented_kit_attributes_exist() -> None:
    kits = {
        "CodecConformance": [testing.CodecConformance],
        "TransportConformance": [testing.TransportConformance],
        "both": [testing.CodecConformance, testing.TransportConformance],
    }
    rows = re.findall(r"^\| (both|`\w+Conformance`) \| ([^|]+) \|", DOC, re.MULTILINE)
    assert rows, "docs/plugins.md lost the table of kit attributes"
    for kit, cell in rows:
        classes = kits[kit.strip("`")]
        for attribute in re.findall(r"`(\w+)`", cell):
            assert any(
                attribute in getattr(c, "__annotations__", {}) or hasattr(c, attribute)
                for c in classes
            ), f"the docs name a kit attribute {attribute!r} that {kit} does not have"
