"""The client never imports a module, or recreates a class, just because a server named it.

A hostile server is played by a real socket server in this process: it answers the hello, then
answers each call with a crafted error response.
"""

from __future__ import annotations

import datetime
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
import srpc_core.errors as srpc_errors
from srpc_core.errors import ErrorContext
from srpc_core.protocol import HelloReply
from srpc_plugins.errors import srpc_error_to_wire
from srpc_plugins.json_codec import JsonCodec


class DeclaredError(Exception):
    """Declared in the interface's module: comes back as itself."""


class DeclaredStop(StopIteration):
    """Declared in the interface's module, but a StopIteration: never raised from the wire."""


class Guarded(Exception):
    """Declared, with a property, a method, a class default and a recording __setattr__."""

    count: int
    default = "class default"
    setattr_calls: list[str] = []

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count

    @property
    def level(self) -> str:
        return "defined by the class"

    def describe(self) -> str:
        return "a method"

    def __setattr__(self, name: str, value: Any) -> None:
        Guarded.setattr_calls.append(name)
        super().__setattr__(name, value)


class _Meta(type):
    calls = 0

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        _Meta.calls += 1
        return super().__call__(*args, **kwargs)


class WithMeta(Exception, metaclass=_Meta):
    """Declared, with a metaclass whose __call__ must never run on server data."""


class ProbeInterface(ABC):
    @abstractmethod
    def probe(self) -> None: ...


def _read_frame(reader: Any) -> bytes:
    header = reader.read(4)
    if len(header) < 4:
        return b""
    (size,) = struct.unpack(">I", header)
    data: bytes = reader.read(size)
    return data


def _send_frame(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack(">I", len(data)) + data)


Raise = Callable[[dict[str, Any] | str], BaseException]
#: Each item is an error map (the call fails with it) or a result (the call returns it).
Answers = list[Any]


class HostileServer:
    """A fake srpc server on a real socket: answers the hello, then each call in turn with the
    next of the answers it was given (raw JSON text for an error map that is a string)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]

    def serve(self, answers: Answers) -> threading.Thread:
        thread = threading.Thread(target=self._serve, args=(answers,), daemon=True)
        thread.start()
        return thread

    def _serve(self, answers: Answers) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as reader:
            _read_frame(reader)  # the hello
            _send_frame(conn, HelloReply("json", "tcp", "ProbeInterface", "s.x", {}).encode())
            for answer in answers:
                request = _read_frame(reader)
                if not request:
                    return  # the client hung up
                call_id = json.loads(request)[0]
                if isinstance(answer, Fail):
                    body = (
                        answer.error if isinstance(answer.error, str) else json.dumps(answer.error)
                    )
                    _send_frame(conn, f"[{call_id},1,{body}]".encode())
                else:
                    _send_frame(conn, json.dumps([call_id, 0, answer]).encode())


class Fail:
    """An error answer: a map, or its raw JSON text."""

    def __init__(self, error: dict[str, Any] | str) -> None:
        self.error = error


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.listener.close()


@pytest.fixture
def remote_raises(hostile: HostileServer) -> Raise:
    """Call `probe` on a fake server that fails with the given error map; return what the
    client raised."""

    def raises(error: dict[str, Any] | str) -> BaseException:
        server = hostile.serve([Fail(error)])
        try:
            with srpc_core.Client(ProbeInterface, "127.0.0.1", hostile.port, timeout=10) as client:
                client.call("probe")
        except BaseException as exc:
            return exc
        finally:
            server.join(10)
        raise AssertionError("the call did not fail")

    return raises


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


# -- the client against a malicious server (issue 9) --------------------------------------------


@pytest.mark.parametrize("name", ["StopIteration", "StopAsyncIteration"])
def test_a_server_cannot_make_the_client_raise_stop_iteration(
    remote_raises: Raise, name: str
) -> None:
    error = remote_raises(error_map(name, "builtins", name))
    assert isinstance(error, srpc_core.RemoteError) and error.remote_type == name
    assert not isinstance(error, (StopIteration, StopAsyncIteration))
    # nor through a "nearest built-in base", nor a subclass declared by the interface
    for wire in (error_map("Done", "elsewhere", name), error_map("DeclaredStop", __name__, name)):
        error = remote_raises(wire)
        assert isinstance(error, srpc_core.RemoteError)
        assert not isinstance(error, (StopIteration, StopAsyncIteration))


def test_a_map_over_the_client_does_not_stop_early(hostile: HostileServer) -> None:
    server = hostile.serve([0, 1, Fail(error_map("StopIteration", "builtins", "StopIteration")), 3])
    with (
        srpc_core.Client(ProbeInterface, "127.0.0.1", hostile.port, timeout=10) as client,
        pytest.raises(srpc_core.RemoteError),
    ):
        list(map(lambda _: client.call("probe"), range(4)))
    server.join(10)


@pytest.mark.parametrize(
    "base", ["ExceptionGroup", "BaseExceptionGroup", "UnicodeDecodeError", "SystemExit", "nope"]
)
def test_any_base_gives_a_remote_error_that_can_be_made(remote_raises: Raise, base: str) -> None:
    error = remote_raises(error_map("Odd", "elsewhere", base))
    assert isinstance(error, srpc_core.RemoteError) and str(error) == "remote says no"
    assert not isinstance(error, BaseExceptionGroup)


def test_the_remote_class_cache_is_bounded(hostile: HostileServer) -> None:
    names = [f"Name{i}" for i in range(2000)]
    server = hostile.serve([Fail(error_map(name, "elsewhere", "ValueError")) for name in names])
    seen = []
    with srpc_core.Client(ProbeInterface, "127.0.0.1", hostile.port, timeout=30) as client:
        for name in names:
            with pytest.raises(ValueError) as raised:
                client.call("probe")
            assert type(raised.value).__name__ == name
            seen.append(type(raised.value))
    server.join(10)
    assert len(srpc_errors._remote_classes) <= srpc_errors.REMOTE_CLASS_CACHE_SIZE
    # a class asked for again while recent is the same class
    assert srpc_errors.remote_error_class("Name1999", "elsewhere", "ValueError") is seen[-1]


def test_a_huge_message_and_a_huge_args_list_are_cut(remote_raises: Raise) -> None:
    error = remote_raises(
        {**error_map("DeclaredError", __name__), "message": "m" * 10_000_000, "args": [1] * 10**5}
    )
    assert type(error) is DeclaredError  # recreated, with the message for args
    assert len(error.args) == 1 and len(error.args[0]) < 70_000
    assert error.args[0].endswith(" characters cut]")
    remote = remote_raises({**error_map("Else", "x"), "message": "m" * 10_000_000})
    assert len(str(remote)) < 70_000


def test_deep_nesting_never_escapes_as_a_raw_recursion_error(remote_raises: Raise) -> None:
    for depth in (50, 800, 100_000):
        nested = "[" * depth + "]" * depth
        for field in ("args", "attributes"):
            value = nested if field == "args" else "{" + '"count":' + nested + "}"
            text = (
                f'{{"type":"Guarded","module":"{__name__}","message":"m","base":"Exception",'
                f'"traceback":null,"args":["m",1],"{field}":{value}}}'
            )
            error = remote_raises(text)
            assert not isinstance(error, RecursionError), (depth, field)
            # a clean error: the codec's DecodeError, or the exception itself
            assert isinstance(error, (srpc_core.SrpcError, Guarded)), (depth, field, error)
            str(error)


@pytest.mark.parametrize(
    "garbage",
    [
        {"type": ["x"], "module": {"a": 1}, "message": 5, "args": {"a": 1}, "base": 7},
        {"type": "DeclaredError", "module": __name__, "attributes": "not a map"},
        {"type": "DeclaredError", "module": __name__, "attributes": [["count", 1]]},
        {"type": "DeclaredError", "module": __name__, "traceback": ["x"], "args": None},
        {"type": "T" * 100_000, "module": "m" * 100_000, "base": "ValueError"},
        {},
    ],
)
def test_malformed_fields_still_give_a_clear_error(
    remote_raises: Raise, garbage: dict[str, Any]
) -> None:
    error = remote_raises(garbage)
    assert isinstance(error, (DeclaredError, srpc_core.RemoteError))
    assert len(type(error).__name__) < 300
    str(error).encode()


def test_a_lone_surrogate_in_the_type_name_or_message_is_harmless(remote_raises: Raise) -> None:
    lone = "\udcff"
    for wire in (
        {**error_map(f"Bad{lone}", f"x{lone}", "ValueError"), "message": f"m{lone}"},
        {**error_map("DeclaredError", __name__), "args": [f"m{lone}"], "traceback": lone},
        {**error_map("Remote", "x"), "message": f"m{lone}", "traceback": f"t{lone}"},
    ):
        error = remote_raises(wire)  # json.dumps writes the lone surrogate as \udcff
        assert isinstance(error, (DeclaredError, srpc_core.RemoteError))
        remote_type = getattr(error, "remote_type", "")
        for part in (str(error), remote_type, *getattr(error, "__notes__", [])):
            part.encode()  # never a UnicodeEncodeError when logged or printed
        assert "m\\udcff" in str(error)


def test_attributes_are_set_only_as_plain_instance_attributes(remote_raises: Raise) -> None:
    Guarded.setattr_calls.clear()
    error = remote_raises(
        {
            **error_map("Guarded", __name__),
            "args": ["wrong", "number", "of", "args"],
            "attributes": {
                "count": "12",  # converted by the annotation
                "extra": {"k": [1, 2]},  # no annotation: as it came
                "default": "shadowed",  # a plain class value, not a descriptor: allowed
                "level": "evil",  # a property
                "describe": "evil",  # a method
                "add_note": "evil",  # a method of BaseException
                "args": ["evil"],  # BaseException's own descriptor
                "_private": "evil",
                "__class__": "evil",
                "__dict__": {"count": 0},
                "not an identifier": 1,
            },
        }
    )
    assert type(error) is Guarded
    assert error.args == ("wrong", "number", "of", "args")  # the server's args, no __init__
    assert vars(error) == {"count": 12, "extra": {"k": [1, 2]}, "default": "shadowed"}
    assert error.level == "defined by the class" and error.describe() == "a method"
    assert callable(error.add_note)
    assert not hasattr(error, "_private")
    assert Guarded.setattr_calls == []  # the class's __setattr__ never ran


def test_an_attribute_that_does_not_fit_its_annotation_is_kept_as_it_came(
    remote_raises: Raise,
) -> None:
    error = remote_raises(
        {**error_map("Guarded", __name__), "args": ["m", 3], "attributes": {"count": "lots"}}
    )
    assert type(error) is Guarded and error.count == "lots" and error.args == ("m", 3)


def test_a_metaclass_call_never_runs_on_server_data(remote_raises: Raise) -> None:
    _Meta.calls = 0
    error = remote_raises({**error_map("WithMeta", __name__), "attributes": {"code": 3}})
    assert type(error) is WithMeta and error.args == ("remote says no",)
    assert error.code == 3  # type: ignore[attr-defined]
    assert _Meta.calls == 0


def test_too_many_attributes_are_not_all_set(remote_raises: Raise) -> None:
    attributes = {f"a{i}": i for i in range(10_000)}
    error = remote_raises({**error_map("DeclaredError", __name__), "attributes": attributes})
    assert type(error) is DeclaredError
    assert 0 < len(vars(error)) <= 64


# -- the server side of the mapper --------------------------------------------------------------


class Rich(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.name = "widget"
        self.blob = b"\x00\x01"
        self.when = datetime.date(2030, 1, 2)
        self.unsendable = object()
        self.bad_text = "\udcff"
        self._private = 1


def test_to_wire_keeps_what_every_codec_can_carry() -> None:
    context = ErrorContext(ProbeInterface)
    wire: dict[str, Any] = dict(srpc_error_to_wire(Rich("m" * 100_000), context))
    assert wire["attributes"] == {"name": "widget", "blob": "AAE=", "when": "2030-01-02"}
    assert len(wire["message"]) < 70_000 and wire["message"].endswith(" characters cut]")
    assert wire["args"] == [wire["message"]]  # too large to send twice
    assert wire["traceback"] is None
    for codec in (JsonCodec(), *_optional_cbor()):
        codec.decode(codec.encode([1, 1, wire]))
    surrogate = dict(srpc_error_to_wire(ValueError("a \udcff b"), context))
    assert surrogate["message"] == "a \\udcff b" and surrogate["args"] == ["a \\udcff b"]
    JsonCodec().encode(surrogate)


def test_to_wire_sends_a_bounded_traceback_only_when_allowed() -> None:
    def recurse(n: int) -> None:
        if n == 0:
            raise ValueError("x" * 200_000)
        recurse(n - 1)

    try:
        recurse(50)
    except ValueError as exc:
        error = exc
    assert srpc_error_to_wire(error, ErrorContext(ProbeInterface))["traceback"] is None
    text = srpc_error_to_wire(error, ErrorContext(ProbeInterface, send_tracebacks=True))[
        "traceback"
    ]
    assert text is not None and "recurse" in text and len(text) < 70_000
    assert text.startswith("Traceback") and " characters cut]\n" in text
    assert text.rstrip().endswith("xxx")


def _optional_cbor() -> list[Any]:
    try:
        from srpc_plugins.cbor_codec import CborCodec
    except ImportError:
        return []
    return [CborCodec()]
