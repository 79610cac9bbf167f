"""The public API is what `srpc_core.__all__` lists, nothing more and nothing less (like httpx's
test_exported_members): adding or removing a name is a decision this test makes visible."""

from __future__ import annotations

import importlib
import pkgutil
import tomllib
from pathlib import Path

import pytest

import srpc_core
import srpc_plugins

REPO = Path(__file__).resolve().parent.parent

EXPORTED = {
    # errors
    "SrpcError", "ConfigError", "PluginError", "PluginConflictError", "MissingDependencyError",
    "InterfaceError", "StubGenError", "CommunicationError", "TransportError",
    "ServerUnavailableError", "CallTimeoutError", "ProtocolError", "MismatchError",
    "SessionError", "FrameTooLargeError", "OversizedFrameError", "CodecError", "EncodeError",
    "DecodeError", "UnknownProcedureError", "RemoteError", "ErrorContext", "WireError",
    "AuthenticationError",
    # users
    "Client", "AsyncClient", "Server", "Config", "load_config", "idempotent", "__version__",
    # plugin authors
    "hookimpl", "Plugins", "get_plugins", "Codec", "Transport", "TransportSettings", "Channel",
    "Listener", "Handler", "Endpoint", "CallObserver", "ServerInfo", "Option", "PluginOptions",
}  # fmt: skip


def test_the_exported_names_are_exactly_the_public_api() -> None:
    assert set(srpc_core.__all__) == EXPORTED
    assert len(srpc_core.__all__) == len(EXPORTED)  # no duplicates


def test_every_exported_name_exists() -> None:
    for name in srpc_core.__all__:
        assert getattr(srpc_core, name, None) is not None, name


def test_every_error_is_an_srpc_error_defined_in_errors_py() -> None:
    for name in srpc_core.__all__:
        value = getattr(srpc_core, name)
        if isinstance(value, type) and issubclass(value, BaseException):
            assert issubclass(value, srpc_core.SrpcError), name
            assert value.__module__ == "srpc_core.errors", name


def test_the_error_tree() -> None:
    for cls in (
        srpc_core.TransportError,
        srpc_core.CallTimeoutError,
        srpc_core.ServerUnavailableError,
    ):
        assert issubclass(cls, srpc_core.CommunicationError)
    assert issubclass(srpc_core.CallTimeoutError, TimeoutError)
    assert issubclass(srpc_core.TransportError, ConnectionError)


def test_the_version_matches_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "srpclib"
    assert project["version"] == srpc_core.__version__


def _modules() -> list[str]:
    names = []
    for package in (srpc_core, srpc_plugins):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("module_name", _modules())
def test_every_module_says_what_it_exports(module_name: str) -> None:
    if module_name.endswith("__main__"):
        return  # runs the CLI when imported
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # an optional dependency (pyzmq, cbor2, rich)
        pytest.skip(f"{module_name}: {exc}")
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{module_name} has no __all__"
    for name in exported:
        assert hasattr(module, name), f"{module_name}.__all__ names {name!r}, which is missing"
