"""The dispatcher's fast path (`Dispatcher.handle` for the common call) answers exactly what the
general road (`Dispatcher._handle`) answers, request shape by request shape."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pytest

from srpc_core import Config, Server, protocol


class ShapesInterface(ABC):
    @abstractmethod
    def add(self, a: float, b: float) -> float: ...

    @abstractmethod
    def div(self, a: float, b: float) -> float: ...

    @abstractmethod
    def echo(self, value: Any) -> Any: ...

    @abstractmethod
    def pair(self, a: int, b: int) -> tuple[int, int]: ...

    @abstractmethod
    def nothing(self) -> None: ...


class Shapes(ShapesInterface):
    def add(self, a: float, b: float) -> float:
        return a + b

    def div(self, a: float, b: float) -> float:
        return a / b

    def echo(self, value: Any) -> Any:
        return value

    def pair(self, a: int, b: int) -> tuple[int, int]:
        return (a, b)

    def nothing(self) -> None:
        return None


@pytest.fixture
def server() -> Server:
    return Server(ShapesInterface, Shapes(), "127.0.0.1", 0, config=Config(metrics_path=""))


def _requests(token: str) -> list[list[Any]]:
    ms = {"timeout_ms": 5000}
    return [
        [1, token, "add", [4, 2], {}, ms],
        [2, token, "add", [4.5, 2], {}, ms],
        [3, token, "div", [4, 0], {}, ms],  # an exception
        [4, token, "echo", [{"a": [1, 2, None]}], {}, ms],
        [5, token, "pair", [1, 2], {}, ms],  # a converted result
        [6, token, "nothing", [], {}, ms],
        [7, token, "add", ["x", 2], {}, ms],  # refused argument
        [8, token, "add", [1, 2, 3], {}, ms],  # too many
        [9, token, "add", [1, 2], {"b": 1}, ms],
        [10, token, "launch", [], {}, ms],  # unknown procedure
        [11, token, "__class__", [], {}, ms],
        [12, "forged.token", "add", [1, 2], {}, ms],  # no session
        [13, token, "add", [1, 2], {}, {"timeout_ms": 0}],  # expired
        [14, token, "add", [1, 2], {}, {"timeout_ms": -5}],
        [15, token, "add", [1, 2], {}, {"timeout_ms": 5000, "mine": "x"}],  # more metadata
        [16, token, "add", [1, 2], {}, {"timeout": 5.0}],  # the older key
        [17, token, "add", [1, 2], {}],  # no metadata
        [18, token, "add", [2**70, 1], {}, ms],  # beyond 64 bits
        [19, token, "add", [True, 1], {}, ms],
        ["x", token, "add", [1, 2], {}, ms],  # malformed
        [20, token, "add", [1, 2], [], ms],
    ]


def test_the_fast_path_answers_what_the_general_road_answers(server: Server) -> None:
    dispatcher = server.dispatcher
    token = dispatcher.sessions.open().token
    for request in _requests(token):
        message = dispatcher.codec.encode(request)
        fast, general = dispatcher.handle(message), dispatcher._handle(message)
        assert fast == general, request
        assert dispatcher.handle(bytearray(message)) == general, request


def test_the_common_call_is_answered(server: Server) -> None:
    dispatcher = server.dispatcher
    token = dispatcher.sessions.open().token
    message = protocol.encode_request(
        dispatcher.codec, 1, token, "add", [4, 2], {}, {"timeout_ms": 5000}
    )
    assert dispatcher.handle(message) == b"[1,0,6]"
