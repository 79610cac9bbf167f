"""Large payloads: 8 MiB of bytes each way under every built-in codec, through a real server
process (plain tcp and TLS), checked for equality; and the framing of large messages (read in
place into a buffer that grows with the bytes that arrived, sent with one `sendmsg`) under the
whole-message deadline, on both sides.
"""

from __future__ import annotations

import hashlib
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, import_interface, make_project
from test_tls import Pki

import srpc_core
from srpc_core import streams
from srpc_core.errors import CallTimeoutError
from srpc_core.transport import TransportSettings
from srpc_plugins.tcp import TcpTransport

pytestmark = [pytest.mark.e2e]

MIB = 1024 * 1024
CODECS = ["json", "cbor", "msgpack"]

INTERFACE = '''
from abc import ABC, abstractmethod


class BlobInterface(ABC):
    @abstractmethod
    def echo(self, data: bytes) -> bytes:
        """Return `data` as it came."""

    @abstractmethod
    def digest(self, data: bytes) -> str:
        """The SHA-256 of `data`, in hex (checks the request alone)."""

    @abstractmethod
    def make(self, size: int, seed: int) -> bytes:
        """`size` pseudo-random bytes from `seed` (checks the reply alone)."""
'''

IMPLEMENTATION = """
import hashlib
import random

from blob.blob_interface import BlobInterface


class Blob(BlobInterface):
    def echo(self, data: bytes) -> bytes:
        return data

    def digest(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def make(self, size: int, seed: int) -> bytes:
        return random.Random(seed).randbytes(size)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_project(
        tmp_path_factory.mktemp("large"),
        "blob",
        {"blob/blob_interface.py": INTERFACE, "blob/blob.py": IMPLEMENTATION},
    )


@pytest.fixture(scope="module")
def interface(project: Path) -> type:
    return import_interface(project, "blob")


def _config(path: Path, codec: str, tcp: str = "") -> Path:
    # 8 MiB under json travels as base64 text: about 11.2 MB, within the default 16 MiB.
    path.write_text(
        f'[srpc]\ncodec = "{codec}"\ntimeout = 60\n[srpc.metrics]\npath = ""\n[srpc.tcp]\n{tcp}\n'
    )
    return path


@pytest.fixture(scope="module", params=CODECS)
def blob_server(
    request: pytest.FixtureRequest, project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerProcess]]:
    codec: str = request.param
    config = _config(tmp_path_factory.mktemp(codec) / "server.toml", codec)
    with ServerProcess(project, "blob", config=config) as server:
        yield codec, server


def test_8_mib_of_bytes_round_trips_under_each_codec(
    blob_server: tuple[str, ServerProcess], interface: type, tmp_path: Path
) -> None:
    codec, server = blob_server
    payload = random.Random(1).randbytes(8 * MIB)
    config = _config(tmp_path / "client.toml", codec)
    with srpc_core.Client(interface, port=server.port, config=config) as client:
        back = client.call("echo", (payload,))
        assert type(back) is bytes
        assert back == payload
        # Each direction alone: the request (the server hashes what it got), the reply.
        assert client.call("digest", (payload,)) == hashlib.sha256(payload).hexdigest()
        made = client.call("make", (8 * MIB, 7))
        assert type(made) is bytes and made == random.Random(7).randbytes(8 * MIB)
        # Sizes around the framing's thresholds, on the same connection.
        for size in (streams.SMALL_MESSAGE - 100, streams.SMALL_MESSAGE + 1, streams.CHUNK + 1):
            data = random.Random(size).randbytes(size)
            assert client.call("echo", (data,)) == data
        assert client.call("echo", (b"",)) == b""


def test_8_mib_round_trips_over_tls(
    project: Path, interface: type, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    pki = Pki(tmp_path_factory.mktemp("pki"))
    served = f'tls_cert = "{pki.server_cert}"\ntls_key = "{pki.server_key}"\n'
    config = _config(tmp_path / "server.toml", "msgpack", served)
    with ServerProcess(project, "blob", config=config) as server:
        table = f'tls_ca = "{pki.ca_pem}"\ntls_server_name = "srpc.test"\n'
        client_config = _config(tmp_path / "client.toml", "msgpack", table)
        payload = random.Random(2).randbytes(8 * MIB)
        with srpc_core.Client(interface, port=server.port, config=client_config) as client:
            assert client.call("echo", (payload,)) == payload
            assert client.call("make", (3 * MIB, 3)) == random.Random(3).randbytes(3 * MIB)


# -- the framing itself, over a socket pair ---------------------------------------------------


def _pair(timeout: float = 10.0) -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    streams.set_timeout(a, timeout)
    streams.set_timeout(b, timeout)
    return a, b


@pytest.mark.parametrize("size", [streams.SMALL_MESSAGE + 1, streams.CHUNK + 1, 3 * MIB + 5])
def test_a_large_message_is_read_in_place_and_recv_frame_still_returns_bytes(size: int) -> None:
    payload = random.Random(size).randbytes(size)
    a, b = _pair()
    with a, b:
        sender = threading.Thread(target=streams.send_frame, args=(a, payload))
        sender.start()
        message = streams._recv_frame(b, 16 * MIB, None, 10.0, None)
        sender.join()
        assert message == payload
        # Past CHUNK, the bytearray it was read into (no copy into bytes); up to it, bytes.
        assert type(message) is (bytearray if size > streams.CHUNK else bytes)
        sender = threading.Thread(
            target=streams.send_frame_by, args=(a, payload, time.monotonic() + 30)
        )
        sender.start()
        message = streams.recv_frame(b, 16 * MIB, timeout=10.0)
        sender.join()
        assert type(message) is bytes and message == payload  # the public function: bytes


def test_a_large_message_stalled_half_way_times_out_from_its_first_byte() -> None:
    """A peer that sends part of a large message, then nothing, holds the reader no longer
    than the message timeout (the socket's own timeout is far longer)."""
    a, b = _pair(timeout=60.0)
    with a, b:
        a.sendall(struct.pack(">I", 4 * MIB) + b"x" * (100 * 1024))  # fits the buffer
        with pytest.raises(TimeoutError, match=r"within 0\.5 s"):
            streams._recv_frame(b, 16 * MIB, None, 0.5, None)


def test_a_large_reply_stalled_half_way_cannot_hold_the_client() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            size = struct.unpack(">I", conn.recv(4))[0]
            while size:
                size -= len(conn.recv(size))
            conn.sendall(struct.pack(">I", 2 * MIB) + b"y" * (500 * 1024))
            done.wait(10)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        channel = TcpTransport(TransportSettings()).connect(
            "127.0.0.1", listener.getsockname()[1], timeout=1.0
        )
        channel.answered = True  # type: ignore[attr-defined]  # skip the first-reply check
        with pytest.raises(CallTimeoutError):
            channel.request(b"z" * 100, timeout=1.0)
        channel.close()
    finally:
        done.set()
        thread.join()
        listener.close()


def test_a_reader_that_stops_cannot_hold_a_large_send_past_its_deadline() -> None:
    a, b = _pair(timeout=60.0)
    with a, b:
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            streams.send_frame_by(a, b"z" * (16 * MIB), time.monotonic() + 0.5)
        assert time.monotonic() - began < 5
        assert select.select([b], [], [], 0)[0]  # the part that went is there to read
