"""Shared fixtures: see tests/support.py for the helpers behind them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, calc_project


@pytest.fixture
def calc_dir(tmp_path: Path) -> Path:
    """A user project holding the calc package and its generated stubs."""
    return calc_project(tmp_path)


@pytest.fixture
def calc_server(calc_dir: Path) -> Iterator[ServerProcess]:
    """A running calc server process (default config, a free port)."""
    with ServerProcess(calc_dir, "calc") as server:
        yield server
