"""Helpers for the zmq transport tests: a probe service, configs, hand-driven ZeroMQ peers.

The probe service tells which server process answered (``pid``), and has a call that stays
busy until the test releases it (``hold``), so tests about slow calls need no timing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from support import PYTHON, child_env, import_stub_module, make_project

PROBE_INTERFACE = '''\
"""A service that reports which server process answered."""

from abc import ABC, abstractmethod


class ProbeInterface(ABC):
    """Small calls for transport tests."""

    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """Return a + b."""

    @abstractmethod
    def pid(self) -> int:
        """Return the server's process id."""

    @abstractmethod
    def sleep(self, seconds: float) -> int:
        """Sleep, then return the server's process id."""

    @abstractmethod
    def hold(self, started: str, gate: str, limit: float) -> bool:
        """Create the file `started`, wait until `gate` exists (at most `limit` seconds)."""

    @abstractmethod
    def echo(self, text: str) -> str:
        """Return `text`."""

    @abstractmethod
    def blob(self, size: int) -> str:
        """Return a string of `size` characters."""

    @abstractmethod
    def marked_blob(self, size: int, marker: str) -> str:
        """Create the file `marker`, then return a string of `size` characters."""
'''

PROBE_IMPLEMENTATION = '''\
"""The probe's implementation (server side only)."""

import os
import time

from probe.probe_interface import ProbeInterface


class Probe(ProbeInterface):
    def add(self, a: float, b: float) -> float:
        return a + b

    def pid(self) -> int:
        return os.getpid()

    def sleep(self, seconds: float) -> int:
        time.sleep(seconds)
        return os.getpid()

    def hold(self, started: str, gate: str, limit: float) -> bool:
        open(started, "w").close()
        deadline = time.monotonic() + limit
        while not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.005)
        return os.path.exists(gate)

    def echo(self, text: str) -> str:
        return text

    def blob(self, size: int) -> str:
        return "x" * size

    def marked_blob(self, size: int, marker: str) -> str:
        open(marker, "w").close()
        return "x" * size
'''


def probe_project(tmp_path: Path) -> Path:
    """A user project holding the probe service and its generated stubs."""
    return make_project(
        tmp_path,
        "probe",
        {"probe/probe_interface.py": PROBE_INTERFACE, "probe/probe.py": PROBE_IMPLEMENTATION},
    )


def write_config(path: Path, *, zmq: dict[str, Any] | None = None, **srpc: Any) -> Path:
    """Write an srpc.toml with the metrics log off: `srpc` keys, then a ``[srpc.zmq]`` table."""
    lines = ["[srpc]", *(f"{key} = {_toml(value)}" for key, value in srpc.items())]
    lines += ["[srpc.metrics]", 'path = ""']
    if zmq is not None:
        lines += ["[srpc.zmq]", *(f"{key} = {_toml(value)}" for key, value in zmq.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def keygen(name: str, directory: Path) -> tuple[Path, Path]:
    """Make a CURVE key pair with the real ``srpc keygen`` (a subprocess); return the paths of
    ``NAME.key`` and ``NAME.pub``."""
    import subprocess

    result = subprocess.run(
        [PYTHON, "-m", "srpc_core", "keygen", name, "-d", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )
    assert result.returncode == 0, result.stderr
    return directory / f"{name}.key", directory / f"{name}.pub"


def port_of(url: str) -> int:
    """The port of ``scheme://host:port``."""
    return int(url.rsplit(":", 1)[1])


def import_client_stub(project: Path, package: str) -> Any:
    """Import the generated client stub class of `project` into this process."""
    camel = "".join(part.capitalize() for part in package.split("_"))
    return getattr(import_stub_module(project, package), f"Srpc{camel}ClientStub")


def wait_for_file(path: Path, timeout: float = 20.0) -> None:
    """Wait until `path` exists (a probe's ``hold`` call has started); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def rss_kib(pid: int) -> int:
    """The resident set size of process `pid`, in KiB (Linux: /proc/<pid>/status)."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The largest resident set size process `pid` has had, in KiB (VmHWM)."""
    return _status_kib(pid, "VmHWM")


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class RawPeer:
    """A hand-driven ZeroMQ DEALER speaking srpc (json codec) to a zmq server, for tests that
    must do what the real client never does: pipeline calls, not read replies, send odd frames.

    `hello()` gets a session token; `send_call` sends one request without waiting; `recv`
    reads one reply (the frames after the tag and delimiter).
    """

    def __init__(self, port: int, service: str = "ProbeInterface") -> None:
        import zmq

        self.service = service
        self.sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.session = ""
        self._ids = 0

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close(linger=0)

    def send_frames(self, frames: list[bytes], more: bool = False) -> None:
        import zmq

        self.sock.send_multipart(frames, flags=zmq.SNDMORE if more else 0)

    def recv(self, timeout: float = 20.0) -> bytes:
        """The next reply's message frame; fail if none comes within `timeout`."""
        assert self.sock.poll(int(timeout * 1000)), f"no reply within {timeout} s"
        return self.sock.recv_multipart()[-1]

    def hello(self) -> None:
        from srpc_core import protocol

        self.send_frames([b"\x00\x00\x00\x00", b"", protocol.hello("json", "zmq", self.service)])
        reply = protocol.parse_hello_reply(self.recv(), "test server")
        self.session = reply.session

    def send_call(self, procedure: str, *args: Any) -> int:
        """Send a request for `procedure(*args)` without waiting; return its call id."""
        import json

        self._ids += 1
        message = json.dumps([self._ids, self.session, procedure, list(args), {}]).encode()
        self.send_frames([self._ids.to_bytes(4, "big"), b"", message])
        return self._ids


class RawZmtp:
    """A ZeroMQ peer written by hand (ZMTP 3.0, NULL mechanism, over a plain socket).

    libzmq never sends part of a multipart message (it keeps the frames until the last one);
    a hostile peer does, and this is how a test plays it.
    """

    def __init__(self, port: int, timeout: float = 20.0) -> None:
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        mechanism = b"NULL".ljust(20, b"\x00")
        self.sock.sendall(b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + mechanism + b"\x00" * 32)
        self._read_exactly(64)  # the server's greeting, before our first command
        ready = b"\x05READY" + _zmtp_property(b"Socket-Type", b"DEALER")
        self.sock.sendall(b"\x04" + bytes([len(ready)]) + ready)

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, f"the server closed the connection after {data!r}"
            data += chunk
        return data

    def __enter__(self) -> RawZmtp:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.sock.close()

    def closed_by_peer(self, timeout: float) -> bool:
        """Read (and discard) what the server sends until it closes the connection; False
        if it is still open after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except OSError:  # reset: closed too
                return True
        return False

    def send_request(self, call_id: int, session: str, procedure: str, *args: Any) -> None:
        """An srpc request (json codec) in the frames a DEALER sends: tag, empty, message."""
        import json

        message = json.dumps([call_id, session, procedure, list(args), {}]).encode()
        self.send_frame(call_id.to_bytes(4, "big"), more=True)
        self.send_frame(b"", more=True)
        self.send_frame(message, more=False)

    def send_frame(self, data: bytes, more: bool) -> None:
        """One message frame (long form), with the MORE flag or as the message's last."""
        flags = 0x02 | (0x01 if more else 0)
        self.sock.sendall(bytes([flags]) + len(data).to_bytes(8, "big") + data)


def _zmtp_property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value
