"""Third-party plugins as users meet them: pip-installed distributions in a fresh environment.

One virtual environment (no system site-packages) per session gets srpc and
examples/srpc-plugin-example, each built as a wheel and installed with pip. Tests that install
more (a duplicate plugin, a broken one) uninstall it again before they end.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import EXAMPLES, READY, REPO, ServerProcess

EXAMPLE_PLUGIN = EXAMPLES / "srpc-plugin-example"
PIP_TIMEOUT = 300


@dataclass(frozen=True)
class Venv:
    """An isolated environment with srpc and the example plugin installed from wheels."""

    root: Path
    wheels: Path

    @property
    def python(self) -> str:
        return str(self.root / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        """Our environment (pip's settings included) minus whatever could leak the test run's
        packages or srpc settings into the venv."""
        leaks = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SRPC_CONFIG", "SRPC_DISABLE_PLUGINS")
        env = {k: v for k, v in os.environ.items() if k not in leaks}
        env.update(
            PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONNOUSERSITE="1",
            PYTHONUNBUFFERED="1",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            PIP_NO_INPUT="1",
        )
        env.update(extra)
        return env

    def run(
        self, *args: str, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a command of the venv (``srpc``, ``python``, ...) in `cwd`."""
        return subprocess.run(
            [str(self.root / "bin" / args[0]), *args[1:]],
            cwd=cwd or self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
        )

    def pip(self, *args: str) -> None:
        result = self.run("python", "-m", "pip", *args)
        assert result.returncode == 0, result.stdout + result.stderr

    def install_plugin(self, project: Path) -> None:
        self.pip("install", "--quiet", build_wheel(project, self.wheels))


def build_wheel(project: Path, wheels: Path) -> str:
    """Build `project`'s wheel, with the test run's own hatchling when it has one (srpclib[test]
    does): no build environment to create and download, which is most of pip's time."""
    wheels.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(dir=wheels))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
    if importlib.util.find_spec("hatchling") is not None:
        pip_wheel.append("--no-build-isolation")
    result = subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(project)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    return str(wheel)


@pytest.fixture(scope="session")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("plugin-venv")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=PIP_TIMEOUT
    )
    venv = Venv(root / "venv", wheels)
    srpc_wheel = build_wheel(REPO, wheels)
    example_wheel = build_wheel(EXAMPLE_PLUGIN, wheels)
    venv.pip("install", "--quiet", srpc_wheel, example_wheel)
    where = venv.run("python", "-c", "import srpc_core; print(srpc_core.__file__)").stdout
    assert where.startswith(str(venv.root)), f"srpc_core came from {where}, not the venv"
    return venv


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to about 100 bytes: a short directory, not tmp_path.
    with tempfile.TemporaryDirectory(prefix="srpc-") as directory:
        yield Path(directory)


def plugin_rows(venv: Venv, **env: str) -> dict[str, dict[str, object]]:
    result = venv.run("srpc", "plugins", "--json", **env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def tiny_plugin(tmp_path: Path, distribution: str, entry_point: str, module_source: str) -> Path:
    """Write a one-module plugin distribution registered through the ``srpc`` entry points."""
    package = distribution.replace("-", "_")
    project = tmp_path / distribution
    (project / package).mkdir(parents=True)
    (project / package / "__init__.py").write_text(module_source)
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n\n'
        f'[project]\nname = "{distribution}"\nversion = "2.0.0"\ndependencies = ["srpclib"]\n\n'
        f'[project.entry-points.srpc]\n{entry_point} = "{package}"\n'
    )
    return project


class Calc:
    """The calculator of examples/calc, run as two processes of the venv."""

    def __init__(self, venv: Venv, tmp_path: Path, srpc_toml: str) -> None:
        self.venv = venv
        self.server_dir = tmp_path / "server"
        self.client_dir = tmp_path / "client"
        shutil.copytree(EXAMPLES / "calc" / "server", self.server_dir)
        shutil.copytree(EXAMPLES / "calc" / "client", self.client_dir)
        for stub in [*self.server_dir.glob("srpc_*.py"), *self.client_dir.glob("srpc_*.py")]:
            stub.unlink()
        result = venv.run("srpc", "gen", "calc/calc_interface.py", cwd=self.server_dir)
        assert result.returncode == 0, result.stderr
        shutil.move(self.server_dir / "srpc_calc_client_stub.py", self.client_dir)
        for folder in (self.server_dir, self.client_dir):
            (folder / "srpc.toml").write_text(srpc_toml)

    def server(self) -> ServerProcess:
        return VenvServerProcess(self.venv, self.server_dir)

    def client(self, **env: str) -> subprocess.CompletedProcess[str]:
        return self.venv.run("python", "client.py", cwd=self.client_dir, **env)


class VenvServerProcess(ServerProcess):
    """``python server.py`` with the venv's interpreter and environment."""

    def __init__(self, venv: Venv, project: Path) -> None:
        super().__init__(project, "calc")
        self.venv = venv

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.venv.python, "server.py"],
            cwd=self.project,
            env=self.venv.env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self.address = self.wait_for(READY).group("address")


def uds_msgpack_toml(socket_dir: Path) -> str:
    return (
        '[srpc]\ntransport = "uds"\ncodec = "msgpack-example"\nport = 5000\n\n'
        f'[srpc.uds]\ndir = "{socket_dir}"\n\n[srpc.metrics]\npath = ""\n'
    )


CALC_OUTPUT = ["6", "8", "2", "2.0", "ZeroDivisionError: division by zero"]

# -- the tests ---------------------------------------------------------------------------------


def test_srpc_plugins_lists_the_example_plugin(venv: Venv) -> None:
    rows = plugin_rows(venv)
    for name, transports, codecs in (
        ("uds", ["uds"], []),
        ("msgpack-example", [], ["msgpack-example"]),
    ):
        row = rows[name]
        assert (row["distribution"], row["version"]) == ("srpc-plugin-example", "0.1.0")
        assert (row["transports"], row["codecs"], row["error"]) == (transports, codecs, None)
    table = venv.run("srpc", "plugins").stdout
    assert any(
        line.split() == ["uds", "srpc-plugin-example", "0.1.0", "uds", "-"]
        for line in table.splitlines()
    ), table
    # srpc's own msgpack codec sits next to it: the example's codec has a name of its own.
    assert (rows["msgpack"]["distribution"], rows["msgpack"]["codecs"]) == ("srpclib", ["msgpack"])


def test_calc_runs_over_uds_and_msgpack_chosen_in_srpc_toml(
    venv: Venv, tmp_path: Path, socket_dir: Path
) -> None:
    calc = Calc(venv, tmp_path, uds_msgpack_toml(socket_dir))
    with calc.server() as server:
        assert server.address == f"uds://{socket_dir}/srpc-5000.sock"
        assert "(transport uds, codec msgpack-example)" in server.text()
        result = calc.client()
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == CALC_OUTPUT


def test_two_distributions_offering_one_codec_name_are_both_named(
    venv: Venv, tmp_path: Path
) -> None:
    rival = tiny_plugin(
        tmp_path,
        "srpc-rival-msgpack",
        "rival_msgpack",
        "from srpc_core import hookimpl\n\n\n"
        "@hookimpl\ndef srpc_register_codecs(register):\n"
        "    register('msgpack-example', lambda options: None)\n",
    )
    venv.install_plugin(rival)
    try:
        result = venv.run("srpc", "plugins")
        assert result.returncode != 0
        assert "codec 'msgpack-example'" in result.stderr
        assert "'srpc-plugin-example'" in result.stderr
        assert "'srpc-rival-msgpack'" in result.stderr
        # Blocking one of the two resolves the conflict.
        rows = plugin_rows(venv, SRPC_DISABLE_PLUGINS="rival_msgpack")
        assert rows["msgpack-example"]["distribution"] == "srpc-plugin-example"
        assert "rival_msgpack" not in rows
    finally:
        venv.pip("uninstall", "--yes", "srpc-rival-msgpack")


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_work(
    venv: Venv, tmp_path: Path, socket_dir: Path
) -> None:
    broken = tiny_plugin(
        tmp_path,
        "srpc-broken-codec",
        "broken",
        "import srpc_dependency_nobody_installed  # noqa: F401\n",
    )
    venv.install_plugin(broken)
    try:
        listing = venv.run("srpc", "plugins")
        assert listing.returncode == 0, listing.stderr
        assert (
            "plugin 'broken' (srpc_broken_codec) failed to load: ModuleNotFoundError: No module "
            "named 'srpc_dependency_nobody_installed'" in listing.stdout
        )
        assert plugin_rows(venv)["uds"]["error"] is None
        calc = Calc(venv, tmp_path, uds_msgpack_toml(socket_dir))
        with calc.server():
            assert calc.client().stdout.splitlines() == CALC_OUTPUT
        (calc.client_dir / "srpc.toml").write_text('[srpc]\ncodec = "broken"\n')
        chosen = calc.client()
        assert chosen.returncode != 0
        assert "codec = 'broken' is not a registered codec" in chosen.stderr
        assert "broken (ModuleNotFoundError: No module named" in chosen.stderr
    finally:
        venv.pip("uninstall", "--yes", "srpc-broken-codec")


def test_srpc_disable_plugins_blocks_a_plugin(venv: Venv, tmp_path: Path, socket_dir: Path) -> None:
    rows = plugin_rows(venv, SRPC_DISABLE_PLUGINS="msgpack-example")
    assert "msgpack-example" not in rows and "uds" in rows and "msgpack" in rows
    calc = Calc(venv, tmp_path, uds_msgpack_toml(socket_dir))
    blocked = calc.client(SRPC_DISABLE_PLUGINS="msgpack-example")
    assert blocked.returncode != 0
    assert "codec = 'msgpack-example' is not a registered codec" in blocked.stderr


def test_the_example_plugin_passes_the_kit_as_its_author_runs_it(
    venv: Venv, tmp_path: Path
) -> None:
    # The plugin's own tests, against the installed wheels: srpc_core.testing ships in srpc.
    project = tmp_path / "srpc-plugin-example"
    shutil.copytree(EXAMPLE_PLUGIN / "tests", project / "tests")
    shutil.copy(EXAMPLE_PLUGIN / "pyproject.toml", project)
    venv.pip("install", "--quiet", "pytest")
    result = venv.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
