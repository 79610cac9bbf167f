"""The essential plugins (error mapper, json, tcp) are registered by import: a source checkout
runs the calculator with only pluggy and msgspec installed, and SRPC_DISABLE_PLUGINS cannot turn
them off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from support import ServerProcess, run_client

from srpc_core.plugins import ESSENTIAL_PLUGINS, Plugins

REPO = Path(__file__).resolve().parent.parent
CALC = REPO / "examples" / "calc"
pytestmark = pytest.mark.e2e


def test_disabling_an_essential_plugin_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRPC_DISABLE_PLUGINS", "errors,json,tcp")
    plugins = Plugins()
    assert {"json"} <= plugins.codecs.keys() and {"tcp"} <= plugins.transports.keys()
    assert all(name in plugins.infos for name in ESSENTIAL_PLUGINS)


def test_remote_exceptions_survive_disabling_the_error_mapper(
    calc_server: ServerProcess,
) -> None:
    result = run_client(
        calc_server.project,
        "from srpc_calc_client_stub import SrpcCalcClientStub\n"
        f"calc = SrpcCalcClientStub('127.0.0.1', {calc_server.port})\n"
        "try:\n    calc.div(4, 0)\n"
        "except ZeroDivisionError as e:\n    print('ZeroDivisionError', e)\n",
        env={"SRPC_DISABLE_PLUGINS": "errors"},
    )
    assert result.stdout.strip() == "ZeroDivisionError division by zero", result.stderr


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with nothing but pluggy and msgspec (srpc is not installed)."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.create(root, with_pip=True)
    python = root / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "pluggy", "msgspec"],
        check=True,
        env=env,
        timeout=300,
    )
    return python


def test_a_checkout_runs_the_calculator_with_only_pluggy_and_msgspec(
    bare_python: Path, tmp_path: Path
) -> None:
    project = tmp_path / "calc"
    shutil.copytree(CALC, project)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "SRPC_CONFIG")}
    env.update(PYTHONPATH=str(REPO), PYTHONNOUSERSITE="1")
    listing = subprocess.run(
        [str(bare_python), "-m", "srpc_core", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    names = {row["name"] for row in json.loads(listing.stdout)}
    assert names == set(ESSENTIAL_PLUGINS), names  # no entry points: srpc is not installed
    server = subprocess.Popen(
        [
            str(bare_python),
            "-u",
            "-c",
            (
                "import threading\n"
                "from srpc_calc_server_stub import SrpcCalcServerStub\n"
                "s = SrpcCalcServerStub(port=0)\n"
                "threading.Thread(target=s.start, daemon=True).start()\n"
                "s.wait_until_serving()\n"
                "print('PORT', s.port, flush=True)\n"
                "input()\n"
                "s.stop()\n"
            ),
        ],
        cwd=project / "server",
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = next(int(line.split()[1]) for line in server.stdout if line.startswith("PORT"))
        client = subprocess.run(
            [
                str(bare_python),
                "-c",
                (
                    "from srpc_calc_client_stub import SrpcCalcClientStub\n"
                    f"calc = SrpcCalcClientStub('127.0.0.1', {port})\n"
                    "print(calc.add(4, 2), calc.div(4, 2))\n"
                    "try:\n    calc.div(4, 0)\n"
                    "except ZeroDivisionError as e:\n    print('ZeroDivisionError', e)\n"
                ),
            ],
            cwd=project / "client",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert client.stdout.split("\n")[:2] == ["6 2.0", "ZeroDivisionError division by zero"], (
            client.stdout + client.stderr
        )
    finally:
        server.kill()
        server.wait()
    assert sys.executable != str(bare_python)
