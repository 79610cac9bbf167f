"""asyncio end to end: async client stubs against real server processes from generated stubs.

The service mixes ``async def`` and plain methods. What the server did is read from what it
prints (a cancelled ``async def`` method says so), never guessed from timings; concurrency is
proved by a barrier that only opens once every call is running at the same time.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import struct
import sys
from pathlib import Path

import pytest
from support import (
    EXAMPLES,
    ServerProcess,
    import_interface,
    import_stub_module,
    make_project,
    run_client,
)

import srpc_core
from srpc_core.plugins import Plugins

INTERFACE = '''\
"""A service for asyncio tests."""

from abc import ABC, abstractmethod


class SlowInterface(ABC):
    """Calls that wait."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """Plain: a + b."""

    @abstractmethod
    def gather(self, value: int, count: int) -> int:
        """Async: return value once `count` gather() calls are running at once."""

    @abstractmethod
    def echo_after(self, value: int, seconds: float) -> int:
        """Async: return value after `seconds`."""

    @abstractmethod
    def block(self, tag: str, seconds: float) -> str:
        """Plain: sleep in a thread, then return tag."""

    @abstractmethod
    def hang(self, tag: str) -> None:
        """Async: wait for ever (until cancelled), saying so."""
'''

IMPLEMENTATION = '''\
"""A mixed implementation: some methods async def, some plain."""

import asyncio
import time

from slow.slow_interface import SlowInterface


class Slow(SlowInterface):
    def __init__(self) -> None:
        self.arrived = 0
        self.everyone: asyncio.Event | None = None

    def add(self, a: int, b: int) -> int:
        return a + b

    async def gather(self, value: int, count: int) -> int:  # type: ignore[override]
        if self.everyone is None:
            self.everyone = asyncio.Event()
        self.arrived += 1
        if self.arrived == count:
            print(f"all {count} running at once", flush=True)
            self.everyone.set()
        await self.everyone.wait()
        return value * 2

    async def echo_after(self, value: int, seconds: float) -> int:  # type: ignore[override]
        print(f"echo started {value}", flush=True)
        await asyncio.sleep(seconds)
        return value

    def block(self, tag: str, seconds: float) -> str:
        print(f"block started {tag}", flush=True)
        time.sleep(seconds)
        print(f"block finished {tag}", flush=True)
        return tag

    async def hang(self, tag: str) -> None:  # type: ignore[override]
        print(f"hang started {tag}", flush=True)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print(f"hang cancelled {tag}", flush=True)
            raise
'''

CONFIG = """\
[srpc]
max_in_flight = 256

[srpc.metrics]
path = ""
"""

EMBEDDED = """\
import asyncio

from srpc_slow_server_stub import SrpcSlowServerStub


async def main() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    await SrpcSlowServerStub("127.0.0.1", 0).serve()
    ticker.cancel()
    print(f"serve returned; the application goes on (ticks > 0: {ticks > 0})", flush=True)


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("asyncio")
    files = {
        "slow/slow_interface.py": INTERFACE,
        "slow/slow.py": IMPLEMENTATION,
        "srpc.toml": CONFIG,
    }
    return make_project(root, "slow", files)


@pytest.fixture(scope="module")
def server(project: Path) -> ServerProcess:
    with ServerProcess(project, "slow") as process:
        yield process  # type: ignore[misc]


@pytest.fixture(scope="module")
def stubs(project: Path) -> object:
    """The generated client stub module, imported into this process."""
    return import_stub_module(project, "slow")


def client(stubs: object, server: ServerProcess, project: Path, **kwargs: object) -> object:
    cls = stubs.SrpcSlowAsyncClientStub  # type: ignore[attr-defined]
    return cls("127.0.0.1", server.port, config=str(project / "srpc.toml"), **kwargs)


def test_the_server_runs_asyncio_for_async_methods(server: ServerProcess) -> None:
    assert "asyncio" in server.text()


def test_hundreds_of_calls_at_once_on_one_connection(
    stubs: object, server: ServerProcess, project: Path
) -> None:
    count = 200

    async def main() -> None:
        async with client(stubs, server, project) as calc:  # type: ignore[attr-defined]
            results = await asyncio.gather(*(calc.gather(i, count) for i in range(count)))
            assert results == [i * 2 for i in range(count)]
            # Answers in any order, matched by id: the later ones come first here.
            late = [calc.echo_after(i, 0.02 * (10 - i)) for i in range(10)]
            assert await asyncio.gather(*late) == list(range(10))
            assert calc._srpc._shared.connection is not None
            assert calc._srpc._shared.bridge is None  # tcp: native, one connection

    asyncio.run(main())
    # The barrier opened: all of them were running on the server at the same time.
    server.wait_for(re.compile(f"all {count} running at once"))


def test_mixed_plain_and_async_methods(stubs: object, server: ServerProcess, project: Path) -> None:
    async def main() -> None:
        async with client(stubs, server, project) as calc:  # type: ignore[attr-defined]
            blocked = asyncio.create_task(calc.block("mixed", 0.3))
            sums = await asyncio.gather(*(calc.add(i, 1) for i in range(50)))
            assert sums == [i + 1 for i in range(50)]
            assert await calc.echo_after(5, 0.0) == 5
            assert await blocked == "mixed"
            with pytest.raises(TypeError):
                await calc.add("x", 1)

    asyncio.run(main())


def test_the_sync_client_calls_async_methods_too(server: ServerProcess, project: Path) -> None:
    code = (
        "from srpc_slow_client_stub import SrpcSlowClientStub\n"
        f"s = SrpcSlowClientStub('127.0.0.1', {server.port})\n"
        "print(s.echo_after(3, 0.0), s.add(2, 2))\n"
    )
    result = run_client(project, code)
    assert result.stdout.split() == ["3", "4"], result.stderr


#: The first call of a client opens its connection (the general road); later ones take the
#: fast path (`AsyncClient._fast_call`): deadlines and cancellation are checked on both.
ROADS = pytest.mark.parametrize("warm", [False, True], ids=["first-call", "open-connection"])


@ROADS
def test_a_deadline_cancels_an_async_method_on_the_server(
    stubs: object, server: ServerProcess, project: Path, warm: bool
) -> None:
    tag = f"deadline-{warm}"

    async def main() -> None:
        async with client(stubs, server, project) as calc:  # type: ignore[attr-defined]
            if warm:
                assert await calc.add(0, 0) == 0
            with pytest.raises(srpc_core.CallTimeoutError, match=r"hang\(\) within 0.5 s"):
                await calc.with_options(timeout=0.5).hang(tag)
            assert await calc.add(1, 2) == 3  # the connection goes on

    asyncio.run(main())
    server.wait_for(re.compile(f"hang cancelled {tag}"))


@ROADS
def test_cancelling_the_task_cancels_the_call_on_the_server(
    stubs: object, server: ServerProcess, project: Path, warm: bool
) -> None:
    tag = f"task-{warm}"

    async def main() -> None:
        async with client(stubs, server, project) as calc:  # type: ignore[attr-defined]
            if warm:
                assert await calc.add(0, 0) == 0
            task = asyncio.create_task(calc.hang(tag))
            await asyncio.to_thread(server.wait_for, re.compile(f"hang started {tag}"))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(server.wait_for, re.compile(f"hang cancelled {tag}"))
            assert await calc.add(2, 2) == 4  # same connection, still in step

    asyncio.run(main())


def test_a_late_plain_result_is_dropped_and_counted(
    stubs: object, server: ServerProcess, project: Path
) -> None:
    async def main() -> None:
        async with client(stubs, server, project) as calc:  # type: ignore[attr-defined]
            with pytest.raises(srpc_core.CallTimeoutError):
                await calc.with_options(timeout=0.3).block("late", 1.0)
            assert await calc.add(3, 3) == 6
            await asyncio.to_thread(server.wait_for, re.compile("block finished late"))

    asyncio.run(main())
    server.wait_for(re.compile(r"block\(\) came after its deadline .* \(1 late results so far\)"))


def test_the_event_loop_keeps_running_during_a_call(
    stubs: object, server: ServerProcess, project: Path
) -> None:
    async def main() -> None:
        async with client(stubs, server, project) as calc:  # type: ignore[attr-defined]
            slow = asyncio.create_task(calc.hang("heartbeat"))
            ticks = 0
            for _ in range(20):  # were the loop blocked by the call, this would never run
                await asyncio.sleep(0.005)
                ticks += 1
            assert ticks == 20 and not slow.done()
            assert await calc.add(20, 1) == 21  # another call passes the waiting one
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow

    asyncio.run(main())
    server.wait_for(re.compile("hang cancelled heartbeat"))  # (the server stops at once)


def test_serve_embedded_in_an_asyncio_program_drains_on_sigterm(project: Path) -> None:
    with ServerProcess(project, "slow", code=EMBEDDED) as process:

        async def main() -> None:
            async with srpc_core.AsyncClient(
                import_interface(project, "slow"),
                "127.0.0.1",
                process.port,
                config=str(project / "srpc.toml"),
            ) as calc:
                call = asyncio.create_task(calc.call("echo_after", (7, 1.0)))
                await asyncio.to_thread(process.wait_for, re.compile("echo started 7"))
                assert process.process is not None
                process.process.send_signal(signal.SIGTERM)
                assert await call == 7  # the call in flight finished and answered

        asyncio.run(main())
        process.wait_for(re.compile(r"serve returned; the application goes on \(ticks > 0: True"))
        assert process.process is not None
        assert process.process.wait(timeout=15) == 0


# -- a v0.1 transport (the example plugin's uds) through the bridge -----------------------------

EXAMPLE_PLUGIN = EXAMPLES / "srpc-plugin-example" / "src"


def uds_plugins() -> Plugins:
    sys.path.insert(0, str(EXAMPLE_PLUGIN))
    try:
        from srpc_plugin_example import uds
    finally:
        sys.path.remove(str(EXAMPLE_PLUGIN))
    return Plugins(extra_plugins={"uds": uds})


@pytest.fixture(scope="module")
def uds_server(project: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    """The server stub over ``uds``, the example plugin found through an entry point on
    PYTHONPATH (as if installed), served from its source folder."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "srpc_plugin_example_uds-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: srpc-plugin-example-uds\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text("[srpc]\nuds = srpc_plugin_example.uds\n")
    sockets = tmp_path_factory.mktemp("sockets")
    config = project / "uds.toml"
    config.write_text(
        f'[srpc]\ntransport = "uds"\nhost = "{sockets}/"\n\n[srpc.metrics]\npath = ""\n'
    )
    pythonpath = f"{EXAMPLE_PLUGIN}:{site}"
    code = (
        "from srpc_slow_server_stub import SrpcSlowServerStub\n"
        f"SrpcSlowServerStub(port=0, config={str(config)!r}).start()\n"
    )
    with ServerProcess(project, "slow", code=code, env={"PYTHONPATH": pythonpath}) as process:
        yield process  # type: ignore[misc]


def test_a_v01_transport_works_under_the_async_client(
    project: Path, uds_server: ServerProcess
) -> None:
    path = uds_server.address.removeprefix("uds://")
    port = int(re.search(r"srpc-(\d+)\.sock$", path).group(1))  # type: ignore[union-attr]
    config = srpc_core.Config(
        transport="uds", host=str(Path(path).parent) + "/", port=port, metrics_path=""
    )

    async def main() -> None:
        async with srpc_core.AsyncClient(
            import_interface(project, "slow"), config=config, plugins=uds_plugins()
        ) as calc:
            results = await asyncio.gather(*(calc.call("add", (i, 1)) for i in range(40)))
            assert results == [i + 1 for i in range(40)]
            assert calc._shared.bridge is not None  # no native async side: threads
            assert await calc.call("echo_after", (9, 0.0)) == 9
            # Cancelling reaches the server through another channel of the pool.
            task = asyncio.create_task(calc.call("hang", ("bridge",)))
            await asyncio.to_thread(uds_server.wait_for, re.compile("hang started bridge"))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(uds_server.wait_for, re.compile("hang cancelled bridge"))
            assert await calc.call("add", (1, 1)) == 2

    asyncio.run(main())


# -- the limits of the native async side (srpc_core.async_streams), from raw sockets ----------

LIMITED = """\
[srpc]
timeout = 1.0
max_message_bytes = 4096

[srpc.metrics]
path = ""
"""


@pytest.fixture(scope="module")
def limited(project: Path, tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    config = tmp_path_factory.mktemp("limited") / "srpc.toml"
    config.write_text(LIMITED)
    with ServerProcess(project, "slow", config=config) as process:
        yield process  # type: ignore[misc]


def _read_frame(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data[4:]


def test_an_oversized_message_is_refused_from_its_length(limited: ServerProcess) -> None:
    """A 1 GB length, no body: the server answers at once (it never waits for, or makes room
    for, the body) and closes the connection."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(struct.pack(">I", 1 << 30))
        reply = _read_frame(sock)
        assert b"exceeds max_message_bytes (4096)" in reply
        assert sock.recv(1) == b""


def test_an_oversized_request_costs_that_call_only(
    limited: ServerProcess, stubs: object, project: Path
) -> None:
    """The server refuses a request above its max_message_bytes (4096) and closes that
    connection: the call gets the refusal, and the client's next calls go on a new one."""

    async def main() -> None:
        async with client(stubs, limited, project) as calc:  # type: ignore[attr-defined]
            assert await calc.add(1, 1) == 2
            with pytest.raises(srpc_core.FrameTooLargeError, match="max_message_bytes"):
                await calc.block("x" * 8192, 0.0)
            assert [await calc.add(i, 1) for i in range(5)] == [1, 2, 3, 4, 5]

    asyncio.run(main())


def test_a_message_that_stops_halfway_costs_its_connection(
    limited: ServerProcess, stubs: object, project: Path
) -> None:
    """Server timeout 1 s: a peer that sends half a message is closed; others are served."""
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as stuck:
        stuck.sendall(struct.pack(">I", 100) + b"{" * 10)

        async def main() -> int:
            async with client(stubs, limited, project) as calc:  # type: ignore[attr-defined]
                return int(await calc.add(2, 3))

        assert asyncio.run(main()) == 5
        assert stuck.recv(1) == b""  # closed by the server (its timeout, not ours)
