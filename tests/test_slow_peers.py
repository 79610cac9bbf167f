"""Slow peers: a message must arrive whole within `timeout` of its first byte, on the server
(slowloris) and in the client (a malicious server trickling its reply).

The trickling side paces itself (it *is* the attacker: a byte, then a pause); nothing here
sleeps to synchronise. Each test would pass on v0.1 only if the trickle ran to its end, so
each checks that the victim gave up before it did.
"""

from __future__ import annotations

import re
import select
import struct
import subprocess

import pytest
from limits_support import connect, good_call, limits_server
from support import PYTHON, child_env

from srpc_core.errors import CallTimeoutError
from srpc_core.transport import TransportSettings
from srpc_plugins.tcp import TcpTransport

pytestmark = [pytest.mark.e2e]


def test_a_slowloris_connection_is_closed_within_timeout_of_its_first_byte(tmp_path) -> None:
    """idle_timeout 2 s, timeout 2 s; a byte every 0.5 s, each well within the idle timeout,
    of a 100-byte message. v0.1 kept the connection for as long as the bytes kept coming."""
    with limits_server(tmp_path, timeout=2.0, idle_timeout=2.0) as server:
        with connect(server) as sock:
            sock.sendall(struct.pack(">I", 100))
            sent, closed = 0, False
            while sent < 100 and not closed:
                # The pacing: half a second between bytes, unless the server closes first.
                if select.select([sock], [], [], 0.5)[0]:
                    closed = sock.recv(1) == b""
                    break
                try:
                    sock.sendall(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sent += 1
            assert closed, "the server kept a connection whose message never finished"
            assert sent < 20  # timeout 2 s at 2 bytes a second: about 4 bytes, not 100
        assert good_call(server) == "6"


TRICKLER = """
import socket, struct, sys, time
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
header = conn.recv(4)                 # the client's request: read it and ignore it
conn.recv(struct.unpack(">I", header)[0])
reply = struct.pack(">I", 200) + b"\\x00srpc" + b" " * 195
for count, byte in enumerate(reply, 1):
    try:
        conn.sendall(bytes([byte]))
    except OSError:
        print("client gone after", count - 1, flush=True)
        break
    print("sent", count, flush=True)
    time.sleep(0.1)                   # the attack: a byte every 100 ms, 20 s in all
else:
    print("trickle done", flush=True)
"""


def test_a_server_trickling_its_reply_cannot_hold_the_client_past_its_timeout() -> None:
    """v0.1: a client with timeout=1 was held 21.5 s. `timeout` bounds the whole request."""
    trickler = subprocess.Popen(
        [PYTHON, "-c", TRICKLER], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert trickler.stdout is not None
        port = int(trickler.stdout.readline())
        channel = TcpTransport(TransportSettings()).connect("127.0.0.1", port, timeout=1.0)
        with pytest.raises(CallTimeoutError):
            channel.request(b"\x00srpc{}", timeout=1.0)
        channel.close()
        lines = []
        for line in trickler.stdout:
            lines.append(line)
            if line.startswith(("client gone", "trickle done")):
                break
        assert lines[-1].startswith("client gone"), lines[-3:]
        sent = int(re.findall(r"\d+", lines[-1])[0])
        assert sent < 204  # the client left long before the reply was complete
    finally:
        trickler.kill()
        trickler.wait()


def test_a_reply_in_pieces_within_the_timeout_still_arrives() -> None:
    """The deadline path is taken when a read comes back short, and it still delivers."""
    code = TRICKLER.replace("time.sleep(0.1)", "time.sleep(0.001)").replace("200", "20")
    code = code.replace('b" " * 195', 'b" " * 15')
    trickler = subprocess.Popen(
        [PYTHON, "-c", code], stdout=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert trickler.stdout is not None
        port = int(trickler.stdout.readline())
        channel = TcpTransport(TransportSettings()).connect("127.0.0.1", port, timeout=10.0)
        assert channel.request(b"\x00srpc{}", timeout=10.0) == b"\x00srpc" + b" " * 15
        channel.close()
    finally:
        trickler.kill()
        trickler.wait()


def test_a_large_message_arriving_in_many_reads_is_answered(tmp_path) -> None:
    """A 4 MiB request arrives in many reads (by chunks) and is answered normally."""
    with limits_server(tmp_path, timeout=10.0) as server:
        with connect(server) as sock:
            body = b"[" + b"1," * (2 * 1024 * 1024) + b"1]"
            sock.sendall(struct.pack(">I", len(body)) + body)
            reply = sock.recv(4)
            assert len(reply) == 4  # an answer (a refusal of the malformed request), not a hang
        assert good_call(server) == "6"
