"""[srpc] limits through real server processes: memory follows the bytes that arrived,
max_connections, accept at the descriptor limit, thread-start failure, rate-limited logs.

Each test starts its own calculator server (tests/limits_support.py) with the limits it needs,
attacks it over real sockets on 127.0.0.1, and checks that a well-behaved client in another
process is still served.
"""

from __future__ import annotations

import re
import select
import signal
import socket
import struct
import sys
from pathlib import Path

import pytest
from limits_support import (
    connect,
    control,
    cpu_seconds,
    frame,
    good_call,
    limits_server,
    memory_kib,
    read_frame,
)
from support import ServerProcess, run_client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, Linux limits"),
]

MIB = 1024 * 1024


def wait_closed(sock: socket.socket, timeout: float = 30.0) -> bool:
    """Wait until the server closes `sock` (end of file or reset); False if it never does."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_memory_follows_the_bytes_that_arrived_not_the_announced_length(tmp_path) -> None:
    """32 connections each announce a 16 MiB message and send 1 byte: v0.1 allocated the 16 MiB
    at once (RSS 19 -> 532 MB). The peak resident memory is measured after the server closed
    them all (each message has `timeout` to arrive whole), so every read has happened."""
    with limits_server(tmp_path, timeout=2.0, max_message_bytes=16 * MIB) as server:
        assert server.process is not None
        pid = server.process.pid
        assert good_call(server) == "6"
        peak_before = memory_kib(pid, "VmHWM")
        socks = [connect(server) for _ in range(32)]
        for sock in socks:
            sock.sendall(struct.pack(">I", 16 * MIB) + b"x")
        assert all(wait_closed(sock) for sock in socks)  # the message deadline closed them
        growth = memory_kib(pid, "VmHWM") - peak_before
        for sock in socks:
            sock.close()
        assert growth < 64 * 1024, f"peak RSS grew {growth} KiB for 32 bytes received"
        assert good_call(server) == "6"


def test_past_max_connections_a_new_connection_is_told_busy_and_closed(tmp_path) -> None:
    with limits_server(tmp_path, max_connections=3) as server:
        held = [connect(server) for _ in range(3)]  # accepted in order: these are served
        refused = connect(server)
        error = control(read_frame(refused))
        assert error["code"] == "busy"
        assert "maximum of 3 connections" in error["error"]
        assert read_frame(refused) is None  # then closed
        assert "busy" in good_call(server) or "maximum of 3" in good_call(server)
        # One held connection leaves: the server has let it go once it closes its side.
        held[0].shutdown(socket.SHUT_WR)
        assert wait_closed(held[0])
        assert good_call(server) == "6"
        for sock in held:
            sock.close()
        assert server.text().count("refusing new ones") == 1  # logged once, not per refusal


def test_accept_backs_off_at_the_descriptor_limit_and_recovers(tmp_path) -> None:
    """RLIMIT_NOFILE of 64 in the server, 100 idle connections: v0.1's accept loop spun at
    80-97% CPU writing megabytes of log. Now it pauses, logs once, and serves again as soon as
    descriptors are free."""
    with limits_server(tmp_path, nofile=64) as server:
        assert server.process is not None
        socks = [connect(server) for _ in range(100)]  # the kernel queues what is not accepted
        server.wait_for(re.compile(r"pausing new connections"))
        before, lines_before = cpu_seconds(server.process.pid), len(server.output)
        # Watch the server for a second while the backlog stays full: an observation window.
        select.select([], [], [], 1.0)
        used = cpu_seconds(server.process.pid) - before
        assert used < 0.5, f"the accept loop used {used:.2f} s of CPU in 1 s"
        assert len(server.output) - lines_before <= 1, server.text()[-2000:]
        for sock in socks:
            sock.close()
        assert good_call(server) == "6"
        assert server.alive()


def test_a_thread_that_cannot_start_costs_one_connection_not_the_server(tmp_path) -> None:
    with limits_server(tmp_path) as server:
        assert server.process is not None
        assert good_call(server) == "6"
        server.process.send_signal(signal.SIGUSR1)
        server.wait_for(re.compile("new threads fail"))
        victims = [connect(server) for _ in range(5)]
        for sock in victims:
            sock.sendall(frame(b"\x00srpc{}"))
            assert wait_closed(sock)  # that connection alone is closed
            sock.close()
        server.wait_for(re.compile(r"cannot serve a new peer.*can't start new thread"))
        server.process.send_signal(signal.SIGUSR2)
        server.wait_for(re.compile("new threads work"))
        assert good_call(server) == "6"
        assert server.text().count("cannot serve a new peer") == 1  # rate-limited
        assert server.stop() == 0  # and shutdown drains cleanly
        assert "stopped serving" in server.text()


def test_log_lines_about_one_peer_are_rate_limited(tmp_path) -> None:
    with limits_server(tmp_path, max_message_bytes=1024) as server:
        for _ in range(50):
            with connect(server) as sock:
                sock.sendall(struct.pack(">I", 4096))
                error = control(read_frame(sock))
                assert "exceeds max_message_bytes" in error["error"]
        assert good_call(server) == "6"
        assert server.text().count("exceeds max_message_bytes") == 1, server.text()


def test_the_limits_in_srpc_toml_reach_the_transport(calc_dir: Path) -> None:
    """[srpc] max_connections set in srpc.toml, a real server from the generated stub: the
    connection past the limit is refused as busy, and the client says so."""
    config = calc_dir / "limits.toml"
    config.write_text("[srpc]\nmax_connections = 1\nidle_timeout = 30\n")
    with ServerProcess(calc_dir, "calc", config=config) as server:
        holder = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        try:
            result = run_client(
                server.project,
                "import srpc_core\n"
                "from srpc_calc_client_stub import SrpcCalcClientStub\n"
                f"calc = SrpcCalcClientStub('127.0.0.1', {server.port}, timeout=10)\n"
                "try:\n    calc.add(1, 2)\n"
                "except srpc_core.ServerUnavailableError as e:\n    print('UNAVAILABLE', e)\n",
            )
        finally:
            holder.close()
        assert "UNAVAILABLE" in result.stdout and "busy" in result.stdout, (
            result.stdout + result.stderr
        )
