"""The client never imports a module, or recreates a class, just because a server named it.

A hostile server is played by a real socket server in this process: it answers the hello, then
answers each call with a crafted error response.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import srpc_core
from srpc_core.protocol import HelloReply


class DeclaredError(Exception):
    """Declared in the interface's module: comes back as itself."""


class ProbeInterface(ABC):
    @abstractmethod
    def probe(self) -> None: ...


def _read_frame(reader: Any) -> bytes:
    (size,) = struct.unpack(">I", reader.read(4))
    data: bytes = reader.read(size)
    return data


def _send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack(">I", len(data)) + data)


Raise = Callable[[dict[str, Any]], BaseException]


@pytest.fixture
def remote_raises() -> Iterator[Raise]:
    """Call `probe` on a fake server that fails with the given error map; return what the
    client raised."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_one(error: dict[str, Any]) -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            _read_frame(reader)  # the hello
            _send_frame(conn, HelloReply("json", "tcp", "ProbeInterface", "s.x", {}).encode())
            request = json.loads(_read_frame(reader))
            _send_frame(conn, json.dumps([request[0], 1, error]).encode())

    def raises(error: dict[str, Any]) -> BaseException:
        server = threading.Thread(target=serve_one, args=(error,), daemon=True)
        server.start()
        try:
            with srpc_core.Client(ProbeInterface, "127.0.0.1", port, timeout=10) as client:
                client.call("probe")
        except BaseException as exc:
            return exc
        finally:
            server.join(10)
        raise AssertionError("the call did not fail")

    yield raises
    listener.close()


def error_map(type_: str, module: str, base: str = "Exception") -> dict[str, Any]:
    return {
        "type": type_,
        "module": module,
        "message": "remote says no",
        "args": ["remote says no"],
        "base": base,
        "traceback": None,
    }


def test_a_module_named_by_the_server_is_never_imported(remote_raises: Raise) -> None:
    assert "antigravity" not in sys.modules and "this" not in sys.modules
    first = remote_raises(error_map("Fly", "antigravity", "ValueError"))
    second = remote_raises(error_map("Zen", "this"))
    assert "antigravity" not in sys.modules and "this" not in sys.modules
    assert isinstance(first, srpc_core.RemoteError) and isinstance(first, ValueError)
    assert type(first).__name__ == "Fly" and str(first) == "remote says no"
    assert isinstance(second, srpc_core.RemoteError)


def test_a_class_is_recreated_only_from_the_interface_module(remote_raises: Raise) -> None:
    declared = remote_raises(error_map("DeclaredError", __name__))
    assert type(declared) is DeclaredError
    # the same name claimed from another module is not trusted
    impostor = remote_raises(error_map("DeclaredError", "somewhere.else"))
    assert type(impostor) is not DeclaredError and isinstance(impostor, srpc_core.RemoteError)
    # a non-exception attribute of the interface module is never instantiated
    not_an_error = remote_raises(error_map("ProbeInterface", __name__))
    assert isinstance(not_an_error, srpc_core.RemoteError)


@pytest.mark.parametrize("name", ["SystemExit", "KeyboardInterrupt", "GeneratorExit"])
def test_a_server_cannot_make_the_client_exit(remote_raises: Raise, name: str) -> None:
    error = remote_raises(error_map(name, "builtins", name))
    assert isinstance(error, srpc_core.RemoteError)
    assert isinstance(error, Exception)


def test_builtin_exceptions_come_back_as_themselves(remote_raises: Raise) -> None:
    error = remote_raises({**error_map("KeyError", "builtins", "LookupError"), "args": ["k"]})
    assert type(error) is KeyError and error.args == ("k",)


def test_a_malformed_error_map_still_gives_a_clear_error(remote_raises: Raise) -> None:
    error = remote_raises({"type": 5, "module": None, "args": "nope"})
    assert isinstance(error, srpc_core.RemoteError)
