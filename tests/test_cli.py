"""The `srpc` command line, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from support import PYTHON, child_env

BIN = Path(PYTHON).parent


def srpc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "srpc"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(**(env or {})),
    )


def test_help_lists_the_commands() -> None:
    result = srpc("--help")
    assert result.returncode == 0
    for command in ("gen", "metrics", "plugins"):
        assert command in result.stdout


def test_plugins_lists_builtins_with_their_distribution() -> None:
    result = srpc("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {row["name"]: row for row in json.loads(result.stdout)}
    assert plugins["tcp"]["distribution"] == "srpclib" and plugins["tcp"]["transports"] == ["tcp"]
    assert plugins["json"]["codecs"] == ["json"]
    assert plugins["errors"]["error"] is None
    table = srpc("plugins").stdout
    assert "tcp" in table and "json" in table and "srpclib 0.2.0" in table


def test_disabled_plugins_are_not_loaded() -> None:
    result = srpc("plugins", "--json", env={"SRPC_DISABLE_PLUGINS": "cbor"})
    assert "cbor" not in {row["name"] for row in json.loads(result.stdout)}


def test_essential_plugins_cannot_be_disabled() -> None:
    result = srpc("plugins", "--json", env={"SRPC_DISABLE_PLUGINS": "json,errors"})
    assert {"json", "errors"} <= {row["name"] for row in json.loads(result.stdout)}
    assert "SRPC_DISABLE_PLUGINS=errors ignored: srpc cannot work without it" in result.stderr


def test_python_dash_m_srpc_core_is_the_same_command() -> None:
    result = subprocess.run(
        [PYTHON, "-m", "srpc_core", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "srpc 0.2.0"


def test_plugins_names_a_missing_optional_dependency() -> None:
    from srpc_core import Codec, hookimpl
    from srpc_core.plugins import Plugins

    class NeedsNothingInstalled(Codec):
        requires = {"srpc_dependency_nobody_installed": "pip install srpc-nothing"}

        def encode(self, message: object) -> bytes:
            raise NotImplementedError

        def decode(self, data: bytes) -> object:
            raise NotImplementedError

    class Plugin:
        @hookimpl
        def srpc_register_codecs(self, register: Callable[..., None]) -> None:
            register("nothing", NeedsNothingInstalled)

    info = Plugins({"needy": Plugin()}).infos["needy"]
    assert info.missing == [
        "nothing: needs srpc_dependency_nobody_installed (pip install srpc-nothing)"
    ]


def test_the_optional_built_ins_declare_what_they_need() -> None:
    from srpc_plugins.cbor_codec import CborCodec
    from srpc_plugins.zmq import ZmqTransport

    assert ZmqTransport.requires == {"zmq": "pip install 'srpclib[zmq]'"}
    assert CborCodec.requires == {"cbor2": "pip install 'srpclib[cbor]'"}
