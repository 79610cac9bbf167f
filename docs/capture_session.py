"""Capture real srpc protocol bytes for docs/protocol.md.

Starts the calculator example (examples/calc/server/server.py) as a real server process, runs
the real generated client stub (examples/calc/client) through a recording TCP proxy, then talks
to the server with a bare socket (no srpc code) to show the control errors. Prints Markdown:

    python docs/capture_session.py > /tmp/capture.md
    python docs/capture_session.py --v1-tree /tmp/srpc_v1    # also v1 <-> v2 examples

``--v1-tree`` names a directory holding srpc 0.1's ``srpc_core``, ``srpc_plugins`` and
``examples/calc`` (e.g. ``git archive <v0.1 commit> srpc_core srpc_plugins examples/calc |
tar -x -C /tmp/srpc_v1``). The session token and the ids differ from run to run; nothing else
does.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = struct.Struct(">I")
PREFIX = b"\x00srpc"
TIMEOUT = 10.0


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, port: int) -> Path:
    path = directory / "srpc.toml"
    path.write_text(f'[srpc]\nport = {port}\n\n[srpc.metrics]\npath = ""\n')
    return path


def start_server(tree: Path, port: int, workdir: Path) -> subprocess.Popen[str]:
    """The calculator example's server.py from `tree`, serving on `port`."""
    config = write_config(workdir, port)
    env = {**os.environ, "PYTHONPATH": str(tree), "SRPC_CONFIG": str(config)}
    process = subprocess.Popen(
        [sys.executable, str(tree / "examples/calc/server/server.py")],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "serving" not in line:
        process.kill()
        raise SystemExit(f"the server did not start: {line}{process.stdout.read()}")
    return process


def run_client(tree: Path, port: int, workdir: Path, code: str) -> str:
    """Run `code` with the calculator's client stub from `tree` importable; its output."""
    config = write_config(workdir, port)
    client_dir = tree / "examples/calc/client"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(client_dir)]),
        "SRPC_CONFIG": str(config),
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (done.stdout + done.stderr).strip()


CLIENT_CALLS = textwrap.dedent(
    """
    from srpc_calc_client_stub import SrpcCalcClientStub
    calc = SrpcCalcClientStub("127.0.0.1")
    print("calc.add(4, 2) ->", calc.add(4, 2))
    try:
        calc.div(4, 0)
    except ZeroDivisionError as error:
        print("calc.div(4, 0) raised", repr(error))
    """
)

CLIENT_ONE_CALL = textwrap.dedent(
    """
    from srpc_calc_client_stub import SrpcCalcClientStub
    calc = SrpcCalcClientStub("127.0.0.1", timeout=5)
    try:
        print(calc.add(4, 2))
    except Exception as error:
        print(f"{type(error).__module__}.{type(error).__qualname__}: {error}")
    """
)


# -- the recording proxy -----------------------------------------------------------------------


class Proxy:
    """Forwards one TCP connection at a time to the server and records both byte streams."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections: list[dict[str, bytearray]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            record = {"c2s": bytearray(), "s2c": bytearray()}
            self.connections.append(record)
            for src, dst, key in ((client, server, "c2s"), (server, client, "s2c")):
                threading.Thread(
                    target=self._pump, args=(src, dst, record[key]), daemon=True
                ).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, record: bytearray) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            record += data
            dst.sendall(data)

    def close(self) -> None:
        self.sock.close()


def split_frames(stream: bytes) -> list[bytes]:
    """The messages in a recorded tcp byte stream (4-byte big-endian length, then the body)."""
    frames, offset = [], 0
    while offset + HEADER.size <= len(stream):
        (size,) = HEADER.unpack_from(stream, offset)
        frames.append(bytes(stream[offset : offset + HEADER.size + size]))
        offset += HEADER.size + size
    return frames


# -- a bare-socket client ----------------------------------------------------------------------


def frame(message: bytes) -> bytes:
    return HEADER.pack(len(message)) + message


def read_frame(sock: socket.socket) -> bytes | None:
    """One whole frame (header included), or None if the server closed the connection."""
    header = _read_exactly(sock, HEADER.size)
    if header is None:
        return None
    body = _read_exactly(sock, HEADER.unpack(header)[0])
    return header + (body or b"")


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def control(fields: dict[str, object]) -> bytes:
    return PREFIX + json.dumps(fields, separators=(",", ":")).encode()


def hello_v2() -> bytes:
    return control(
        {"v": 2, "hello": True, "codec": "json", "transport": "tcp", "service": "CalcInterface"}
    )


class Raw:
    """A socket-level srpc client: sends frames, records what went out and came back."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.log: list[tuple[str, bytes | None]] = []

    def send(self, message: bytes, *, raw: bool = False) -> bytes | None:
        data = message if raw else frame(message)
        self.sock.sendall(data)
        self.log.append(("C", data))
        reply = read_frame(self.sock)
        self.log.append(("S", reply))
        return reply

    def hello(self) -> str:
        reply = self.send(hello_v2())
        assert reply is not None
        return str(json.loads(reply[HEADER.size + len(PREFIX) :])["session"])

    def close(self) -> None:
        self.sock.close()


# -- output ------------------------------------------------------------------------------------


def show(direction: str, data: bytes | None) -> str:
    """One frame as Markdown-friendly text: the length prefix in hex, the body as a literal."""
    arrow = "C->S" if direction == "C" else "S->C"
    if data is None:
        return f"{arrow} (connection closed by the server, no frame)"
    if len(data) < HEADER.size:
        return f"{arrow} {data.hex(' ')}"
    (size,) = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    shown = repr(body if len(body) <= 600 else body[:600] + b"...")
    return f"{arrow} len={data[: HEADER.size].hex(' ')} ({size})  {shown}"


def hexdump(data: bytes) -> str:
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:04x}  {hexes:<47}  {text}")
    return "\n".join(lines)


def section(title: str, lines: list[str]) -> None:
    print(f"\n### {title}\n\n```")
    for line in lines:
        print(line)
    print("```")


def show_log(raw: Raw) -> list[str]:
    return [show(direction, data) for direction, data in raw.log]


# -- the captures ------------------------------------------------------------------------------


def capture_real_session(port: int, workdir: Path) -> None:
    proxy = Proxy(port)
    output = run_client(ROOT, proxy.port, workdir, CLIENT_CALLS)
    proxy.close()
    record = proxy.connections[0]
    sent, received = split_frames(record["c2s"]), split_frames(record["s2c"])
    print("\n## The real client stub against the real server (tcp + json)\n")
    print("Client output:\n\n```\n" + output + "\n```")
    for number, (request, reply) in enumerate(zip(sent, received, strict=False), 1):
        section(
            f"exchange {number}",
            [
                show("C", request),
                show("S", reply),
                "",
                "C->S bytes:",
                hexdump(request),
                "",
                "S->C bytes:",
                hexdump(reply),
            ],
        )


def capture_raw(port: int) -> None:
    print("\n## Bare-socket probes against the same server\n")

    raw = Raw(port)
    raw.send(b'[1,"not-a-token","add",[4,2],{}]')
    raw.close()
    section("a request before any hello (made-up token)", show_log(raw))

    raw = Raw(port)
    token = raw.hello()
    raw.send(
        json.dumps(
            [
                7,
                token,
                "add",
                [4, 2],
                {},
                {
                    "timeout": 4.5,
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    "tenant": "acme",
                },
            ],
            separators=(",", ":"),
        ).encode()
    )
    raw.send(json.dumps([8, token, "add", [4, 2], {}, {"timeout": 0}]).encode())
    raw.send(json.dumps([9, token, "add", [4], {}]).encode())
    raw.send(json.dumps([10, token, "__class__", [], {}]).encode())
    raw.send(json.dumps([11, token, "add", [], {"a": 1, "b": 2.5}]).encode())
    raw.send(b"{not json")
    raw.send(b'{"id": 12}')
    raw.send(json.dumps([13, token, "add", "4,2", {}]).encode())
    raw.send(control({"v": 2, "cancel": 11, "session": token}))
    raw.send(control({"v": 2, "ping": True}))
    raw.send(b"\x00srpc[not an object")
    raw.close()
    section("hello, then calls with metadata, bad calls and control messages", show_log(raw))

    raw = Raw(port)
    raw.send(json.dumps([1, token, "mul", [4, 2], {}]).encode())
    raw.close()
    section("the same token on a new connection without a hello (accepted)", show_log(raw))

    raw = Raw(port)
    raw.send(
        control(
            {"v": 1, "hello": True, "codec": "json", "transport": "tcp", "service": "CalcInterface"}
        )
    )
    raw.send(b'[1,"add",[4,2],{}]')
    raw.close()
    section("a v1 client's hello and a v1 request", show_log(raw))

    raw = Raw(port)
    raw.send(
        control(
            {"v": 2, "hello": True, "codec": "cbor", "transport": "tcp", "service": "Calculator"}
        )
    )
    raw.close()
    section("a hello with another codec and service", show_log(raw))

    raw = Raw(port)
    raw.hello()
    raw.send(HEADER.pack(0x7FFFFFFF), raw=True)
    raw.close()
    section("a frame longer than max_message_bytes (only its length is sent)", show_log(raw))


def capture_versions(v1_tree: Path, v2_port: int, workdir: Path) -> None:
    print("\n## Version negotiation with srpc 0.1 (protocol v1)\n")
    v1_port = free_port()
    v1_dir = workdir / "v1"
    v1_dir.mkdir()
    server = start_server(v1_tree, v1_port, v1_dir)
    try:
        proxy = Proxy(v1_port)
        output = run_client(ROOT, proxy.port, workdir, CLIENT_ONE_CALL)
        proxy.close()
        lines = [f"client says: {output}", ""]
        for record in proxy.connections:
            for request, reply in zip(
                split_frames(record["c2s"]), split_frames(record["s2c"]), strict=False
            ):
                lines += [show("C", request), show("S", reply)]
        section("a v2 client (srpclib 0.2) against a v1 server (srpc 0.1)", lines)
    finally:
        server.terminate()
        server.wait(TIMEOUT)

    proxy = Proxy(v2_port)
    output = run_client(v1_tree, proxy.port, workdir, CLIENT_ONE_CALL)
    proxy.close()
    lines = [f"client says: {output}", ""]
    for record in proxy.connections:
        for request, reply in zip(
            split_frames(record["c2s"]), split_frames(record["s2c"]), strict=False
        ):
            lines += [show("C", request), show("S", reply)]
    section("a v1 client (srpc 0.1) against a v2 server (srpclib 0.2)", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--v1-tree", type=Path, help="a directory holding srpc 0.1's sources")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        server = start_server(ROOT, port, workdir)
        try:
            print("# srpc protocol capture (tcp + json, examples/calc)")
            capture_real_session(port, workdir)
            capture_raw(port)
            if args.v1_tree:
                capture_versions(args.v1_tree.resolve(), port, workdir)
        finally:
            server.terminate()
            server.wait(TIMEOUT)


if __name__ == "__main__":
    main()
