"""Hypothesis against a live server: framing, both codecs and the request layer.

One calculator server process per codec (tests/limits_support.py) takes every generated input
over real sockets on 127.0.0.1; after each example a well-behaved client (a real `Client`)
must still get ``add(4, 2) == 6``. Example counts are bounded (`EXAMPLES` each) and there are
no hypothesis deadlines: speed is bench/'s business. The decoding budgets (a CBOR bignum
multiplication, container bombs) are checked against the same live servers.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from limits_support import frame, limits_server, read_frame
from support import ServerProcess, import_interface

from srpc_core import Client, load_config, protocol
from srpc_core.codec import Codec
from srpc_core.plugins import get_plugins

pytestmark = [pytest.mark.e2e]

EXAMPLES = 150
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
CODECS = ("json", "cbor")


class Live:
    """A server process, a well-behaved client of it, and raw sessions for the fuzzer."""

    def __init__(self, server: ServerProcess, codec_name: str) -> None:
        self.server = server
        self.codec_name = codec_name
        self.codec: Codec = get_plugins().codec(codec_name, {})
        interface = import_interface(server.project, "calc")
        config = load_config(None, codec=codec_name)
        self.client = Client(interface, "127.0.0.1", server.port, config=config, timeout=10)
        self.session = self._hello()

    def _hello(self) -> str:
        with self.connect() as sock:
            sock.sendall(frame(protocol.hello(self.codec_name, "tcp", "CalcInterface")))
            reply = protocol.parse_hello_reply(read_frame(sock) or b"", "fuzz")
        return reply.session

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.server.port), timeout=10)

    def exchange(self, data: bytes, hello: bool = True) -> list[bytes | None]:
        """Send `data` on a fresh connection (after a hello), then read until it closes."""
        replies: list[bytes | None] = []
        with self.connect() as sock:
            if hello:
                sock.sendall(frame(protocol.hello(self.codec_name, "tcp", "CalcInterface")))
                read_frame(sock)
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:  # the server closed first (an oversized header, say)
                pass
            while True:
                reply = read_frame(sock)
                replies.append(reply)
                if reply is None:
                    return replies

    def assert_serving(self) -> None:
        assert self.client.call("add", (4, 2)) == 6
        assert self.server.alive()


@pytest.fixture(scope="module", params=CODECS)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp(f"fuzz_{request.param}")
    with limits_server(
        tmp, codec=request.param, max_message_bytes=64 * 1024, timeout=5.0
    ) as server:
        live = Live(server, request.param)
        yield live
        live.client.close()


# -- framing -----------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=512))
def test_any_bytes_on_a_connection_leave_the_server_serving(live: Live, data: bytes) -> None:
    live.exchange(data, hello=False)
    live.assert_serving()


@FUZZ
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=256)), min_size=1, max_size=4
    )
)
def test_lying_length_prefixes_leave_the_server_serving(
    live: Live, frames: list[tuple[int, bytes]]
) -> None:
    """Announced lengths that do not match the bytes that follow (larger, smaller, huge)."""
    live.exchange(b"".join(struct.pack(">I", size) + body for size, body in frames))
    live.assert_serving()


# -- codecs and requests -----------------------------------------------------------------------

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


@FUZZ
@given(body=st.binary(max_size=512))
def test_garbage_bodies_after_a_hello_are_answered(live: Live, body: bytes) -> None:
    replies = live.exchange(frame(body))
    assert replies[-1] is None  # the connection ends (the write side was shut)
    live.assert_serving()


@FUZZ
@given(
    call_id=st.integers(-(2**64), 2**64) | VALUES,
    procedure=st.sampled_from(["add", "div", "__class__", "_private", "nope"])
    | st.text(max_size=10),
    args=st.lists(VALUES, max_size=4) | VALUES,
    kwargs=st.dictionaries(st.text(max_size=6), VALUES, max_size=3) | VALUES,
)
def test_well_framed_requests_of_any_shape_get_an_answer(
    live: Live, call_id: Any, procedure: str, args: Any, kwargs: Any
) -> None:
    try:
        body = live.codec.encode([call_id, live.session, procedure, args, kwargs])
    except Exception:  # a value this codec cannot carry: nothing to send
        return
    replies = live.exchange(frame(body))
    assert replies[0] is not None, "a well-framed request got no answer"
    live.assert_serving()


# -- decoding budgets against the live servers ---------------------------------------------------


def request_bytes(live: Live, args: Any) -> bytes:
    if live.codec_name == "cbor":
        return cbor2.dumps([1, live.session, "mul", args, {}])
    return b'[1,"' + live.session.encode() + b'","mul",' + args + b",{}]"


def test_a_huge_bignum_multiplication_is_refused_not_computed(live: Live) -> None:
    """v0.1: a CBOR mul of two 1 MiB integers held the GIL 2-9 s. JSON: Python's digit limit."""
    if live.codec_name == "cbor":
        # 16 KiB each (within this server's 64 KiB messages, 16 times max_bignum_bytes).
        huge: Any = [2 ** (8 * 2**14) - 1, 2 ** (8 * 2**14) - 3]
    else:
        huge = b"[" + b"7" * 5000 + b"," + b"7" * 5000 + b"]"
    body = request_bytes(live, huge)
    with live.connect() as sock:
        sock.sendall(frame(protocol.hello(live.codec_name, "tcp", "CalcInterface")))
        read_frame(sock)
        sock.sendall(struct.pack(">I", len(body)) + body)
        reply = read_frame(sock)
    assert reply is not None
    text = reply.decode("utf-8", "replace")
    assert "max_bignum_bytes" in text or "4300 digits" in text, text
    live.assert_serving()


def test_a_container_bomb_is_refused_before_it_is_decoded(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """v0.1: a 4 MiB CBOR array of empty arrays cost 75x its size in RAM (JSON 27x)."""
    for codec in CODECS:
        tmp = tmp_path_factory.mktemp(f"bomb_{codec}")
        with limits_server(tmp, codec=codec) as server:
            live = Live(server, codec)
            assert server.process is not None
            if codec == "cbor":
                args: Any = [[]] * (4 * 2**20)
            else:
                args = b"[" + b"[]," * (2**20 + 2**18) + b"[]]"
            body = request_bytes(live, args)
            with live.connect() as sock:
                sock.sendall(frame(protocol.hello(codec, "tcp", "CalcInterface")))
                read_frame(sock)
                sock.sendall(struct.pack(">I", len(body)) + body)
                reply = read_frame(sock)
            assert reply is not None
            assert "max_containers" in reply.decode("utf-8", "replace")
            live.assert_serving()
            live.client.close()
