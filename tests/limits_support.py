"""Helpers for the limit, slow-peer and fuzz tests: a calculator server process built with
chosen `TransportSettings` limits, raw frames, and a look at a process's memory.

The server is the real one (`srpc_core.Server` serving examples/calc), in its own process; its
transport is built with the limits the test names (``[srpc]`` keys as `TransportSettings`
fields), and it can be told to make thread creation fail (SIGUSR1) or work again (SIGUSR2):
it then asks for a thread stack larger than the address space, so `pthread_create` really
fails, as it does at the operating system's thread limit.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from support import ServerProcess, calc_project, run_client

from srpc_core.protocol import CONTROL_PREFIX

LIMITS_SERVER = """
import json, os, resource, signal, threading
limits = json.loads(os.environ["SRPC_TEST_LIMITS"])
nofile = limits.pop("nofile", None)
if nofile:  # in this server process only
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
codec = limits.pop("codec", "json")
from srpc_core import Server
from srpc_core.config import load_config
from srpc_core.transport import TransportSettings
from srpc_plugins.tcp import TcpTransport
from calc.calc_interface import CalcInterface
from calc.calc import Calc

config = load_config(None, host="127.0.0.1", port=0, timeout=limits.get("timeout", 30.0))
server = Server(CalcInterface, Calc(), config=load_config(config, codec=codec))
server.transport = TcpTransport(TransportSettings(**limits))

def fail_threads(signum, frame):
    threading.stack_size(2**47)  # no address space holds it: pthread_create fails
    print("srpc-test: new threads fail", flush=True)

def normal_threads(signum, frame):
    threading.stack_size(0)
    print("srpc-test: new threads work", flush=True)

signal.signal(signal.SIGUSR1, fail_threads)
signal.signal(signal.SIGUSR2, normal_threads)
server.start()
"""


def limits_server(tmp_path: Path, **limits: Any) -> ServerProcess:
    """A calculator server process whose transport has these `TransportSettings` (plus
    ``nofile``: its RLIMIT_NOFILE, and ``codec``)."""
    project = calc_project(tmp_path)
    return ServerProcess(
        project, "calc", code=LIMITS_SERVER, env={"SRPC_TEST_LIMITS": json.dumps(limits)}
    )


def good_call(server: ServerProcess, codec: str = "json") -> str:
    """A well-behaved client in another process: add(4, 2); returns what it printed."""
    result = run_client(
        server.project,
        "from srpc_core import load_config\n"
        "from srpc_calc_client_stub import SrpcCalcClientStub\n"
        f"config = load_config(None, codec={codec!r})\n"
        f"print(SrpcCalcClientStub('127.0.0.1', {server.port}, config=config).add(4, 2))\n",
    )
    return result.stdout.strip() or result.stderr.strip()


def connect(server: ServerProcess, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame, or None if the server closed the connection (or reset it)."""
    try:
        reader = sock.makefile("rb")
        header = reader.read(4)
        if len(header) < 4:
            return None
        return reader.read(struct.unpack(">I", header)[0])
    except ConnectionResetError:
        return None


def control(payload: bytes | None) -> dict[str, Any]:
    """The fields of a control message."""
    assert payload is not None and payload.startswith(CONTROL_PREFIX), payload
    fields = json.loads(payload[len(CONTROL_PREFIX) :])
    assert isinstance(fields, dict)
    return fields


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """A field of /proc/<pid>/status in KiB: VmRSS (resident now), VmHWM (the peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
