"""Servers answer the pipelined requests of one connection side by side.

The async client sends many calls on one connection; against the threaded server (plain
methods, ``start()``) and the asyncio server (``async def`` methods), a call that waits must not
hold up the calls queued behind it, up to ``max_in_flight`` calls at once per connection. What
ran at once is read from what the server prints, never guessed from timings; every wait is on
an event.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path

import pytest
from support import ServerProcess, import_stub_module, make_project

from srpc_core import protocol
from srpc_core.streams import recv_frame, send_frame
from srpc_plugins.json_codec import JsonCodec

INTERFACE = '''\
"""Calls that wait for each other."""

from abc import ABC, abstractmethod


class GateInterface(ABC):
    @abstractmethod
    def wait(self, tag: str) -> str:
        """Block until open(tag) is called; return tag."""

    @abstractmethod
    def open(self, tag: str) -> int:
        """Let wait(tag) return; the number of calls running, this one included."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """a + b."""
'''

IMPLEMENTATION = """\
import threading
from collections import defaultdict

from gate.gate_interface import GateInterface


class Gate(GateInterface):
    def __init__(self):
        self.gates = defaultdict(threading.Event)
        self.lock = threading.Lock()
        self.running = 0

    def _enter(self, name):
        with self.lock:
            self.running += 1
            print(f"{name} running ({self.running} at once)", flush=True)
            return self.running

    def _leave(self):
        with self.lock:
            self.running -= 1

    def wait(self, tag):
        self._enter(f"wait {tag}")
        try:
            self.gates[tag].wait(30)
            return tag
        finally:
            self._leave()

    def open(self, tag):
        running = self._enter(f"open {tag}")
        try:
            self.gates[tag].set()
            return running
        finally:
            self._leave()

    def add(self, a, b):
        return a + b
"""


ASYNC_IMPLEMENTATION = """\
import asyncio
from collections import defaultdict

from gate.gate_interface import GateInterface


class Gate(GateInterface):
    def __init__(self):
        self.gates = defaultdict(asyncio.Event)
        self.running = 0

    def _enter(self, name):
        self.running += 1
        print(f"{name} running ({self.running} at once)", flush=True)
        return self.running

    async def wait(self, tag):
        self._enter(f"wait {tag}")
        try:
            await asyncio.wait_for(self.gates[tag].wait(), 30)
            return tag
        finally:
            self.running -= 1

    async def open(self, tag):
        running = self._enter(f"open {tag}")
        self.gates[tag].set()
        self.running -= 1
        return running

    async def add(self, a, b):
        return a + b
"""


@pytest.fixture(scope="module", params=["threaded", "asyncio"])
def project(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    root = tmp_path_factory.mktemp(f"pipelining-{request.param}")
    implementation = IMPLEMENTATION if request.param == "threaded" else ASYNC_IMPLEMENTATION
    files = {
        "gate/gate_interface.py": INTERFACE,
        "gate/gate.py": implementation,
        "srpc.toml": '[srpc]\nmax_in_flight = 3\ntimeout = 20\n\n[srpc.metrics]\npath = ""\n',
    }
    return make_project(root, "gate", files)


@pytest.fixture(scope="module")
def server(project: Path) -> ServerProcess:
    with ServerProcess(project, "gate") as process:
        yield process  # type: ignore[misc]


def client(project: Path, server: ServerProcess) -> object:
    stubs = import_stub_module(project, "gate")
    config = str(project / "srpc.toml")
    return stubs.SrpcGateAsyncClientStub("127.0.0.1", server.port, config=config)


def test_the_server_is_the_one_asked_for(server: ServerProcess, project: Path) -> None:
    asyncio_server = "asyncio" in (project / "gate" / "gate.py").read_text()
    assert ("asyncio)" in server.text()) == asyncio_server  # plain methods: the threaded one


def test_a_call_queued_behind_a_waiting_one_runs_at_once(
    project: Path, server: ServerProcess
) -> None:
    async def main() -> None:
        async with client(project, server) as gate:  # type: ignore[attr-defined]
            assert await gate.add(1, 1) == 2  # the connection is open
            connection = gate._srpc._shared.connection
            waiting = asyncio.create_task(gate.wait("first"))
            await asyncio.to_thread(server.wait_for, re.compile("wait first running"))
            # Behind the waiting call, on the same connection: served by another thread.
            assert await gate.open("first") == 2
            assert await waiting == "first"
            assert gate._srpc._shared.connection is connection  # one connection throughout
            assert [await gate.add(i, 1) for i in range(20)] == list(range(1, 21))

    asyncio.run(main())


def test_a_connection_runs_at_most_max_in_flight_calls(
    project: Path, server: ServerProcess
) -> None:
    # A raw peer pipelines past the advertised max_in_flight (3), as the async client never
    # would: the fourth request waits in the socket until one of the three running ends.
    codec = JsonCodec()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        send_frame(sock, protocol.hello("json", "tcp", "GateInterface"))
        session = protocol.parse_hello_reply(recv_frame(sock, 1 << 20), "test").session
        for call_id, (name, tag) in enumerate(
            [("wait", "r0"), ("wait", "r1"), ("wait", "r2"), ("open", "r0")], start=1
        ):
            request = protocol.encode_request(codec, call_id, session, name, [tag], {}, {})
            send_frame(sock, request)
            if call_id <= 3:
                server.wait_for(re.compile(f"wait {tag} running"))

        # Three calls run; "open r0" waits behind them. From another connection, end one.
        async def release(tag: str) -> int:
            async with client(project, server) as gate:  # type: ignore[attr-defined]
                return int(await gate.open(tag))

        assert asyncio.run(release("r1")) == 4  # the 3 waits and this open
        answers = {}
        while len(answers) < 3:  # wait r1; then open r0 (queued) and the wait it ended
            call_id, status, value = codec.decode(recv_frame(sock, 1 << 20))
            answers[call_id] = (status, value)
        assert answers[2][1] == "r1" and answers[1][1] == "r0"
        # It ran once a slot was free (waits r0, r2 and itself; 4 had it run beside all three).
        assert answers[4][1] == 3
        assert asyncio.run(release("r2")) == 2
        assert codec.decode(recv_frame(sock, 1 << 20))[2] == "r2"
