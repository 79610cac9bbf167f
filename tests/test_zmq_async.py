"""The native async side of the zmq transport (srpc_plugins/zmq/aio.py): the async client on
one DEALER, the asyncio server on the ROUTER, and each against the other side's sync half.
Real server processes from generated stubs, real ZeroMQ sockets on 127.0.0.1, ports from the
OS; the tests wait on what the server prints, never on time."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq.auth
from support import HOLD_ON_FIFO, ServerProcess, import_stub_module, make_project, run_client
from zmq_support import keygen, write_config

import srpc_core

pytest.importorskip("zmq")

INTERFACE = '''\
"""A service with slow calls, for the async zmq tests."""

from abc import ABC, abstractmethod


class TideInterface(ABC):
    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """a + b."""

    @abstractmethod
    def gather(self, value: int, count: int) -> int:
        """Wait until `count` calls are running, then return value * 2."""

    @abstractmethod
    def hang(self, tag: str) -> None:
        """Never return (until cancelled)."""

    @abstractmethod
    def blob(self, size: int) -> str:
        """A string of `size` characters."""

    @abstractmethod
    def echo(self, text: str) -> str:
        """`text`."""
'''

#: async def methods: the server stub runs the asyncio server (on zmq's async side).
ASYNC_IMPLEMENTATION = """\
import asyncio

from tide.tide_interface import TideInterface


class Tide(TideInterface):
    def __init__(self) -> None:
        self.arrived = 0
        self.everyone = None

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

    async def hang(self, tag: str) -> None:  # type: ignore[override]
        print(f"hang started {tag}", flush=True)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            print(f"hang cancelled {tag}", flush=True)
            raise

    async def blob(self, size: int) -> str:  # type: ignore[override]
        return "x" * size

    async def echo(self, text: str) -> str:  # type: ignore[override]
        return text
"""

#: Plain methods only: the server stub runs the threaded zmq server.
PLAIN_IMPLEMENTATION = (
    """\
from tide.tide_interface import TideInterface


class Tide(TideInterface):
    def add(self, a: int, b: int) -> int:
        return a + b

    def gather(self, value: int, count: int) -> int:
        if value < count:  # wait until the test writes into the FIFO "gate" (20 s at most)
            hold_on_fifo("gate", f"gather {value} holding", 20)
        return value * 2

    def hang(self, tag: str) -> None:
        raise RuntimeError("not here")

    def blob(self, size: int) -> str:
        return "x" * size

    def echo(self, text: str) -> str:
        return text
"""
    + HOLD_ON_FIFO
)

COUNT = 300


def _project(root: Path, implementation: str) -> Path:
    return make_project(
        root,
        "tide",
        {"tide/tide_interface.py": INTERFACE, "tide/tide.py": implementation},
    )


@pytest.fixture(scope="module")
def async_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _project(tmp_path_factory.mktemp("zmq_async"), ASYNC_IMPLEMENTATION)
    write_config(project / "srpc.toml", transport="zmq", timeout=10.0, max_in_flight=COUNT)
    return project


@pytest.fixture(scope="module")
def plain_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = _project(tmp_path_factory.mktemp("zmq_threaded"), PLAIN_IMPLEMENTATION)
    write_config(project / "srpc.toml", transport="zmq", timeout=10.0)  # defaults: 16 vs 8
    os.mkfifo(project / "gate")
    return project


@pytest.fixture(scope="module")
def async_server(async_project: Path) -> Iterator[ServerProcess]:
    with ServerProcess(async_project, "tide") as process:
        yield process


@pytest.fixture(scope="module")
def threaded_server(plain_project: Path) -> Iterator[ServerProcess]:
    with ServerProcess(plain_project, "tide") as process:
        yield process


@pytest.fixture(scope="module")
def stubs(async_project: Path) -> Any:
    return import_stub_module(async_project, "tide")


def client(stubs: Any, server: ServerProcess, config: Path, **kwargs: Any) -> Any:
    return stubs.SrpcTideAsyncClientStub("127.0.0.1", server.port, config=str(config), **kwargs)


def test_the_async_server_serves_zmq_natively(async_server: ServerProcess) -> None:
    assert re.search(
        r"at zmq://127\.0\.0\.1:\d+ \(transport zmq, codec json, asyncio\)", async_server.text()
    )


def test_hundreds_of_calls_at_once_on_one_zmq_connection(
    stubs: Any, async_server: ServerProcess, async_project: Path
) -> None:
    async def main() -> None:
        async with client(stubs, async_server, async_project / "srpc.toml") as tide:
            results = await asyncio.gather(*(tide.gather(i, COUNT) for i in range(COUNT)))
            assert results == [i * 2 for i in range(COUNT)]
            shared = tide._srpc._shared
            assert shared.bridge is None and shared.connection is not None
            assert type(shared.connection.channel).__name__ == "AsyncZmqChannel"

    asyncio.run(main())
    # The barrier opened: all of them were running on the server at once, over one DEALER.
    async_server.wait_for(re.compile(f"all {COUNT} running at once"))


def test_hundreds_of_calls_against_the_threaded_zmq_server(
    stubs: Any, threaded_server: ServerProcess, plain_project: Path
) -> None:
    """[srpc] max_in_flight 16 is advertised, [srpc.zmq] max_in_flight 8 is enforced: the
    requests the threaded server refuses busy are sent again (nothing ran); no call fails.
    The first 8 calls hold until the gate opens, so the next 8 find the peer at its limit."""

    # Held open read-write, the FIFO keeps what the test writes: once it is written, every
    # call that waits on it, now or later, sees it.
    gate = os.open(plain_project / "gate", os.O_RDWR)

    async def main() -> None:
        async with client(stubs, threaded_server, plain_project / "srpc.toml") as tide:
            calls = asyncio.gather(*(tide.gather(i, 8) for i in range(COUNT)))
            shared = tide._srpc._shared
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            # Wait for the event: the channel saw a busy refusal (and holds that request).
            while shared.connection is None or shared.connection.channel._cap is None:
                assert loop.time() < deadline, "no busy refusal came"
                await asyncio.sleep(0.005)
            os.write(gate, b"go")
            assert await calls == [i * 2 for i in range(COUNT)]
            assert shared.bridge is None
            assert shared.connection.channel._cap is not None  # learned from a refusal

    try:
        asyncio.run(main())
    finally:
        os.close(gate)
    assert "srpc zmq" not in threaded_server.text()  # nothing refused as malformed


ROADS = pytest.mark.parametrize("warm", [False, True], ids=["first-call", "open-connection"])


@ROADS
def test_a_deadline_cancels_an_async_method_on_the_server(
    stubs: Any, async_server: ServerProcess, async_project: Path, warm: bool
) -> None:
    tag = f"deadline-{warm}"

    async def main() -> None:
        async with client(stubs, async_server, async_project / "srpc.toml") as tide:
            if warm:
                assert await tide.add(0, 0) == 0
            with pytest.raises(srpc_core.CallTimeoutError, match=r"hang\(\) within 0.5 s"):
                await tide.with_options(timeout=0.5).hang(tag)
            assert await tide.add(1, 2) == 3  # the connection goes on

    asyncio.run(main())
    async_server.wait_for(re.compile(f"hang cancelled {tag}"))


def test_cancelling_the_task_cancels_the_call_on_the_server(
    stubs: Any, async_server: ServerProcess, async_project: Path
) -> None:
    async def main() -> None:
        async with client(stubs, async_server, async_project / "srpc.toml") as tide:
            task = asyncio.create_task(tide.hang("task"))
            await asyncio.to_thread(async_server.wait_for, re.compile("hang started task"))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.to_thread(async_server.wait_for, re.compile("hang cancelled task"))
            assert await tide.add(2, 2) == 4  # same connection, still in step

    asyncio.run(main())


@pytest.fixture(scope="module")
def small_server(
    async_project: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("small") / "server.toml",
        transport="zmq",
        timeout=10.0,
        max_message_bytes=4096,
    )
    with ServerProcess(async_project, "tide", config=config) as process:
        yield process


def test_an_oversized_message_is_refused_and_the_server_goes_on(
    stubs: Any, small_server: ServerProcess, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "client.toml", transport="zmq", timeout=10.0)

    async def main() -> None:
        async with client(stubs, small_server, config) as tide:
            assert await tide.echo("small") == "small"
            # libzmq drops the connection of a peer whose message exceeds ZMQ_MAXMSGSIZE.
            with pytest.raises(srpc_core.TransportError, match="max_message_bytes"):
                await tide.echo("x" * 10_000)
            assert await tide.echo("again") == "again"  # a new connection, same server
            # An answer larger than the server's limit: a clear error, the connection goes on.
            with pytest.raises(srpc_core.SrpcError, match="max_message_bytes"):
                await tide.blob(10_000)
            assert await tide.add(1, 1) == 2

    asyncio.run(main())
    assert small_server.alive()


def test_a_sync_client_against_the_async_listener(
    async_server: ServerProcess, async_project: Path
) -> None:
    code = (
        "from srpc_tide_client_stub import SrpcTideClientStub\n"
        f"t = SrpcTideClientStub('127.0.0.1', {async_server.port})\n"
        "print(t.add(2, 3), t.echo('sync'), len(t.blob(100000)))\n"
        "import srpc_core\n"
        "try:\n"
        "    t.with_options(timeout=0.3).hang('sync')\n"
        "except srpc_core.CallTimeoutError:\n"
        "    print('timed out')\n"
        "print(t.add(4, 4))\n"  # after a timed-out call: a fresh channel, its own answer
    )
    result = run_client(async_project, code)
    assert result.stdout.split() == ["5", "sync", "100000", "timed", "out", "8"], result.stderr


# --- CURVE -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    for name in ("server", "alice", "mallory"):
        keygen(name, directory)
    alice = zmq.auth.load_certificate(directory / "alice.pub")[0].decode()
    (directory / "authorized.txt").write_text(f"{alice} alice\n")
    return directory


@pytest.fixture(scope="module")
def curve_server(
    async_project: Path, keys: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = write_config(
        tmp_path_factory.mktemp("curve") / "server.toml",
        transport="zmq",
        timeout=3.0,
        zmq={
            "curve_secret_key_file": str(keys / "server.key"),
            "curve_authorized_keys": str(keys / "authorized.txt"),
        },
    )
    with ServerProcess(async_project, "tide", config=config) as process:
        yield process


def _curve_config(path: Path, keys: Path, name: str | None) -> Path:
    table = None
    if name is not None:
        table = {
            "curve_secret_key_file": str(keys / f"{name}.key"),
            "curve_server_key": str(keys / "server.pub"),
        }
    return write_config(path, transport="zmq", timeout=3.0, zmq=table)


def test_curve_on_the_async_side(
    stubs: Any, curve_server: ServerProcess, keys: Path, tmp_path: Path
) -> None:
    alice = _curve_config(tmp_path / "alice.toml", keys, "alice")
    mallory = _curve_config(tmp_path / "mallory.toml", keys, "mallory")
    plaintext = _curve_config(tmp_path / "plain.toml", keys, None)

    async def main() -> None:
        async with client(stubs, curve_server, alice) as tide:
            assert await asyncio.gather(*(tide.add(i, i) for i in range(50))) == [
                2 * i for i in range(50)
            ]
            assert tide._srpc._shared.bridge is None
        async with client(stubs, curve_server, mallory) as tide:
            with pytest.raises(srpc_core.AuthenticationError, match="curve_authorized_keys"):
                await tide.add(1, 1)
        async with client(stubs, curve_server, plaintext) as tide:
            with pytest.raises(srpc_core.MismatchError, match="requires CURVE"):
                await tide.add(1, 1)

    asyncio.run(main())
    curve_server.wait_for(re.compile("refused a connection: a CURVE client key not in"))
    assert curve_server.alive()
