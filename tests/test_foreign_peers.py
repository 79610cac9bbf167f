"""A tcp client pointed at a server of another protocol is told so at once, not after its timeout.

The servers are real (http.server) or speak the real opening bytes (an SSH banner), in threads
of this process on free ports of 127.0.0.1. Every client waits up to CLIENT_TIMEOUT: getting a
`MismatchError` instead of a `CallTimeoutError` shows the peer was recognised, not waited out.
"""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

import srpc_core
from srpc_core.streams import identify_protocol
from srpc_core.testing import ConformanceInterface

CLIENT_TIMEOUT = 30.0
SSH_BANNER = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n"


def client(port: int) -> srpc_core.Client:
    return srpc_core.Client(
        ConformanceInterface,
        "127.0.0.1",
        port,
        config=srpc_core.Config(metrics_path=""),
        timeout=CLIENT_TIMEOUT,
    )


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def ssh_port() -> Iterator[int]:
    """A server that greets every connection with an SSH banner, as sshd does."""
    listening = socket.create_server(("127.0.0.1", 0))
    served = threading.Event()

    def serve() -> None:
        conn, _ = listening.accept()
        with conn:
            conn.settimeout(CLIENT_TIMEOUT)
            conn.sendall(SSH_BANNER)
            try:
                while conn.recv(4096):  # until the client hangs up, as sshd would wait
                    pass
            except OSError:
                pass
        served.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listening.getsockname()[1]
        assert served.wait(CLIENT_TIMEOUT), "the client never connected and hung up"
    finally:
        listening.close()
        thread.join(10)


def test_a_tcp_client_of_an_http_server_is_told_at_once(http_port: int) -> None:
    with client(http_port) as calc, pytest.raises(srpc_core.MismatchError) as raised:
        calc.call("add", (1, 2))
    assert str(raised.value) == (
        f"the server at tcp://127.0.0.1:{http_port} speaks HTTP, not srpc: check host and port"
    )


def test_a_tcp_client_of_an_ssh_server_is_told_at_once(ssh_port: int) -> None:
    with client(ssh_port) as calc, pytest.raises(srpc_core.MismatchError) as raised:
        calc.call("add", (1, 2))
    message = str(raised.value)
    assert message == (
        f"the server at tcp://127.0.0.1:{ssh_port} speaks SSH, not srpc: check host and port"
    )
    assert "byte message" not in message  # not a "1.4 GB frame"


@pytest.mark.parametrize(
    ("first_bytes", "name"),
    [
        (b"HTTP/1.0 400 Bad request\r\n", "HTTP"),
        (b"HTTP", "HTTP"),
        (b"GET / HTTP/1.1\r\n", "HTTP"),
        (b"POST", "HTTP"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2"),
        (b"<!DOCTYPE HTML>\n<html lang", "HTTP"),  # an error page with no status line
        (SSH_BANNER, "SSH"),
        (b"SSH-", "SSH"),
        (b"\x16\x03\x01\x02\x00\x01", "TLS"),  # a ClientHello record
        (b"\x15\x03\x03\x00\x02\x02\x46", "TLS"),  # an alert
        (b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f", "ZeroMQ"),  # a ZMTP greeting
        (b"\xff", "ZeroMQ"),
    ],
)
def test_identify_protocol_names_what_peers_send_first(first_bytes: bytes, name: str) -> None:
    assert identify_protocol(first_bytes) == name


@pytest.mark.parametrize(
    "first_bytes",
    [
        b"\x00\x00\x00\x4b",  # an srpc length prefix
        b"\x00\x00\x00\x00",
        b"\x00srpc",
        b"HT",  # too short to tell
        b"GETX",
        b"\x16\x02\x01\x00",  # not TLS version 3.x
        b"",
    ],
)
def test_identify_protocol_names_nothing_it_cannot_tell(first_bytes: bytes) -> None:
    assert identify_protocol(first_bytes) is None
