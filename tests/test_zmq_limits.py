"""The zmq server under hostile peers: bounded memory, calls in flight per peer, frame cap.

Each test starts a real server process and drives it with hand-made DEALER sockets
(`zmq_support.RawPeer`) doing what the real client never does. Memory is the server process's
resident set size from /proc/<pid>/status; the bounds are generous (the v0.1 server held
+231 MB and +160 MB in the same situations), and every test prints its numbers (``-s``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess
from zmq_support import (
    RawPeer,
    RawZmtp,
    import_client_stub,
    peak_rss_kib,
    probe_project,
    rss_kib,
    wait_for_file,
    write_config,
)

from srpc_core import protocol

pytest.importorskip("zmq")

MIB = 1024 * 1024
#: What a hostile peer may add to the server's memory, at most, in these tests.
BOUND_KIB = 64 * 1024
#: How long any wait for the server may take before it counts as a hang.
HANG = 20.0
BLOB = 8 * MIB


def serve_probe(tmp_path: Path, **zmq: Any) -> tuple[ServerProcess, Any, Path]:
    """The probe project with ``[srpc.zmq]`` = `zmq`: its server process (not started), the
    client stub class and a client srpc.toml."""
    project = probe_project(tmp_path)
    write_config(project / "srpc.toml", transport="zmq", zmq=zmq)
    client_toml = write_config(tmp_path / "client.toml", transport="zmq")
    return ServerProcess(project, "probe"), import_client_stub(project, "probe"), client_toml


def pid_of(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def wait_until(condition: Callable[[], bool], what: str, timeout: float = HANG) -> None:
    """Wait until `condition()` holds (checked every 10 ms); fail naming `what` after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.01)


def is_busy(message: bytes) -> bool:
    return (
        protocol.is_control(message)
        and protocol.parse_control_error(message).code == protocol.Code.BUSY
    )


def test_large_replies_a_peer_never_reads_stay_bounded(tmp_path: Path) -> None:
    # The hostile peer is hand-written ZMTP that never reads its socket (a libzmq DEALER would
    # read the replies into its own process). One worker, so that a call of the good client
    # running proves every earlier answer was handed to the front socket; in flight high
    # enough that only the byte-bounded queues keep the unread replies in check.
    server, stub, client_toml = serve_probe(tmp_path, workers=1, max_in_flight=64)
    calls, size = 60, BLOB // 2  # 240 MiB of replies (v0.1 held them all)
    with server, stub(port=server.port, config=client_toml) as good:
        pid = pid_of(server)
        with RawPeer(server.port) as reader:
            reader.hello()  # a session token: any connection of the service may use it
            reader.send_call("blob", size)  # one reply read: its working memory is baseline
            assert len(reader.recv()) > size
            session = reader.session
        base = rss_kib(pid)
        markers = [tmp_path / f"ran-{i}" for i in range(calls)]
        with RawZmtp(server.port) as hostile:
            for call_id, marker in enumerate(markers, 1):
                hostile.send_request(call_id, session, "marked_blob", size, str(marker))
            for marker in markers:
                wait_for_file(marker, HANG)
            assert good.add(1, 2) == 3  # ran on the only worker: every blob was answered
            held = rss_kib(pid)
        assert good.add(2, 2) == 4
        wait_until(lambda: rss_kib(pid) - base < BOUND_KIB, "memory released")
        after, peak = rss_kib(pid), peak_rss_kib(pid)
    print(
        f"\nunread replies: {calls} x {size // MIB} MiB; server RSS base {base // 1024} MiB, "
        f"held while the peer is connected +{(held - base) // 1024} MiB, after it left "
        f"+{(after - base) // 1024} MiB, peak +{(peak - base) // 1024} MiB"
    )
    assert held - base < BOUND_KIB, f"held +{(held - base) // 1024} MiB of unread replies"
    assert peak - base < BOUND_KIB, f"peaked at +{(peak - base) // 1024} MiB"


def test_a_peer_stuck_in_an_unfinished_message_is_dropped_and_its_frames_released(
    tmp_path: Path,
) -> None:
    # libzmq keeps the frames of a message until its last frame (its high-water marks count
    # whole messages), and it never sends part of a message itself: a hand-written ZMTP peer
    # sends ten 8 MiB frames with MORE set and then nothing, not even heartbeat answers.
    server, stub, client_toml = serve_probe(tmp_path, idle_timeout=1)
    frames, frame = 10, b"m" * BLOB
    with server, stub(port=server.port, config=client_toml) as good:
        pid = pid_of(server)
        assert good.add(1, 1) == 2
        base = rss_kib(pid)
        with RawZmtp(server.port) as hostile:
            for _ in range(frames):
                hostile.send_frame(frame, more=True)
            held = 0

            def released() -> bool:
                nonlocal held
                rss = rss_kib(pid)
                held = max(held, rss - base)
                return rss - base < BOUND_KIB and held >= BOUND_KIB

            # The frames arrive (RSS grows past the bound), then the server drops the peer
            # that stopped answering heartbeats, and libzmq releases them.
            wait_until(released, "the frames arrived and then were released")
            assert good.add(2, 2) == 4
            assert hostile.closed_by_peer(HANG), "the server kept the silent peer connected"
        after = rss_kib(pid)
        assert good.add(3, 3) == 6
    print(
        f"\nunfinished message: {frames} x {BLOB // MIB} MiB frames with MORE, then silence; "
        f"server RSS base {base // 1024} MiB, at most +{held // 1024} MiB while the frames "
        f"were held, +{(after - base) // 1024} MiB after the server dropped the peer"
    )
    assert after - base < BOUND_KIB


def test_a_peer_pipelining_slow_calls_does_not_starve_others(tmp_path: Path) -> None:
    # Defaults: 16 workers, 8 calls in flight per peer.
    server, stub, client_toml = serve_probe(tmp_path)
    gate = tmp_path / "gate"
    started = [tmp_path / f"started-{i}" for i in range(16)]
    with (
        server,
        stub(port=server.port, config=client_toml, timeout=HANG) as good,
        RawPeer(server.port) as greedy,
    ):
        greedy.hello()
        for path in started:
            greedy.send_call("hold", str(path), str(gate), 2 * HANG)
        try:
            # The calls past the per-peer limit are refused at once, while 8 are held.
            refusals = [greedy.recv(HANG) for _ in range(8)]
            assert all(is_busy(message) for message in refusals), refusals
            wait_until(lambda: sum(p.exists() for p in started) == 8, "8 calls running")
            assert [good.add(i, 1) for i in range(20)] == list(range(1, 21))
        finally:
            gate.touch()
        answers = [greedy.recv(HANG) for _ in range(8)]
    assert not any(protocol.is_control(message) for message in answers), answers
    assert sum(path.exists() for path in started) == 8


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([b"\x00\x00\x00\x01", b"extra", b""], id="an-extra-routing-frame"),
        pytest.param([b"\x00\x00\x00\x01", b"", b"{}", b"trailer"], id="a-frame-after-the-message"),
        pytest.param([b"x"] * 40, id="forty-frames"),
    ],
)
def test_a_message_of_another_shape_than_a_request_is_refused(
    tmp_path: Path, frames: list[bytes]
) -> None:
    server, stub, client_toml = serve_probe(tmp_path)
    with server, RawPeer(server.port) as peer:
        hello = protocol.hello("json", "zmq", peer.service)
        # The hello itself is valid; the frames around it are not.
        odd = [*frames, hello] if frames[-1] == b"" else frames
        peer.send_frames(odd)
        reply = peer.recv()
        assert protocol.is_control(reply)
        error = protocol.parse_control_error(reply)
        assert error.code == protocol.Code.MALFORMED and "frames" in error.message, error
        peer.hello()  # the same connection still works with a proper request
        assert peer.session
        with stub(port=server.port, config=client_toml) as good:
            assert good.add(1, 2) == 3
