"""The nats transport's native async side, against a real nats-server.

The async client's channel (`AsyncNatsChannel`) and the asyncio server's listener
(`AsyncNatsListener`) run on the caller's event loop with NATS connections of their own: no
bridge threads. Servers run in a thread of the test process (the asyncio server, with ``async
def`` methods, or the threaded one) or, for SIGTERM, in a process of their own started from
generated stubs. Tests wait on events (a method entered, a line printed), never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats_support import TEST_MAX_PAYLOAD, NatsServer, nats_config, nats_server  # noqa: F401
from support import ServerProcess, import_interface, make_project

from srpc_core.async_client import AsyncClient
from srpc_core.client import Client
from srpc_core.config import Config
from srpc_core.errors import CallTimeoutError, ServerUnavailableError
from srpc_core.options import PluginOptions
from srpc_core.server import Server
from srpc_core.transport import AsyncChannel, Endpoint, TransportSettings

pytest.importorskip("nats", reason="needs nats-py: pip install 'srpclib[nats]'")

from srpc_plugins.nats import NatsTransport, aio
from srpc_plugins.nats._intake import Intake

WAIT = 20.0
_subjects = itertools.count()


class MathInterface(ABC):
    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """a + b."""

    @abstractmethod
    def echo(self, value: str) -> str:
        """The value."""

    @abstractmethod
    def wait(self, tag: str) -> str:
        """Wait until the test releases it; return the tag."""


class AsyncMath(MathInterface):
    """``async def`` methods: the asyncio server serves them (natively over nats)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.cancelled = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.gate: asyncio.Event | None = None

    async def add(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + b

    async def echo(self, value: str) -> str:  # type: ignore[override]
        return value

    async def wait(self, tag: str) -> str:  # type: ignore[override]
        self.loop = asyncio.get_running_loop()
        if self.gate is None:
            self.gate = asyncio.Event()
        self.entered.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return tag

    def release(self) -> None:
        if self.loop is not None and self.gate is not None:
            self.loop.call_soon_threadsafe(self.gate.set)


class PlainMath(MathInterface):
    """Plain methods: the threaded server (the threaded nats listener) serves them."""

    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, value: str) -> str:
        return value

    def wait(self, tag: str) -> str:
        return tag


def make_config(url: str, subject: str, timeout: float = 10.0, **nats: Any) -> Config:
    return Config(
        transport="nats",
        timeout=timeout,
        max_message_bytes=TEST_MAX_PAYLOAD,
        max_in_flight=256,  # what the server advertises: the async client's calls in flight
        metrics_path="",
        tables={"nats": {"servers": [url], "subject": subject, **nats}},
    )


class Running:
    """A server serving in a thread of this process."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        assert server.wait_until_serving(WAIT), f"not serving: {self.errors}"

    def _serve(self) -> None:
        try:
            self.server.start()
        except BaseException as exc:  # reported by stop()
            self.errors.append(exc)

    def stop(self) -> None:
        self.server.stop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the server did not stop"
        assert not self.errors, self.errors


@pytest.fixture
def config(nats_server: NatsServer) -> Config:  # noqa: F811
    return make_config(nats_server.url, f"srpc.asynctest.s{next(_subjects)}")


@pytest.fixture
def service() -> AsyncMath:
    return AsyncMath()


@pytest.fixture
def async_server(config: Config, service: AsyncMath) -> Iterator[Running]:
    running = Running(Server(MathInterface, service, config=config))
    assert isinstance(running.server._async_listener, aio.AsyncNatsListener), (
        "the asyncio server did not serve the native async listener"
    )
    try:
        yield running
    finally:
        service.release()
        running.stop()


@pytest.fixture
def threaded_server(config: Config) -> Iterator[Running]:
    running = Running(Server(MathInterface, PlainMath(), config=config))
    assert running.server._listener is not None and running.server._async_listener is None
    try:
        yield running
    finally:
        running.stop()


def assert_native(client: AsyncClient) -> None:
    assert client._shared.bridge is None, "the async client went through the bridge"
    assert client._shared.native is True
    connection = client._shared.connection
    assert connection is not None and isinstance(connection.channel, aio.AsyncNatsChannel)


async def entered(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, WAIT), "the method never started on the server"


# -- many calls at once, natively --------------------------------------------------------------


def test_hundreds_of_calls_at_once_on_the_asyncio_server(
    config: Config, async_server: Running
) -> None:
    async def main() -> None:
        async with AsyncClient(MathInterface, config=config, max_in_flight=512) as client:
            results = await asyncio.gather(*(client.call("add", (i, 1)) for i in range(600)))
            assert results == [i + 1 for i in range(600)]
            assert_native(client)
            assert client._shared.slots is not None and client._shared.slots.limit == 256

    asyncio.run(main())


def test_hundreds_of_calls_at_once_on_the_threaded_listener(
    config: Config, threaded_server: Running
) -> None:
    async def main() -> None:
        async with AsyncClient(MathInterface, config=config, max_in_flight=512) as client:
            results = await asyncio.gather(*(client.call("add", (i, 2)) for i in range(400)))
            assert results == [i + 2 for i in range(400)]
            assert_native(client)
            assert client._shared.slots is not None and client._shared.slots.limit == 256

    asyncio.run(main())


def test_large_requests_at_once_come_back_whole(config: Config, async_server: Running) -> None:
    values = [chr(65 + i) * (64 * 1024 + i * 9973) for i in range(24)]

    async def main() -> None:
        async with AsyncClient(MathInterface, config=config) as client:
            results = await asyncio.gather(*(client.call("echo", (v,)) for v in values))
            assert results == values
            assert_native(client)

    asyncio.run(main())


def test_sync_client_against_the_async_listener(config: Config, async_server: Running) -> None:
    with Client(MathInterface, config=config) as client:
        assert [client.call("add", (i, 3)) for i in range(50)] == [i + 3 for i in range(50)]
        assert client.call("echo", ("ünïcødé",)) == "ünïcødé"


# -- flow control on the async listener -------------------------------------------------------


def nats_transport(url: str, subject: str, **options: Any) -> NatsTransport:
    table = PluginOptions(
        {"servers": [url], "subject": subject, **options}, table="srpc.nats", source="test"
    )
    return NatsTransport(TransportSettings(table, 1 << 20, 10.0))


def test_a_busy_async_listener_hands_calls_back_to_nats(
    nats_server: NatsServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Listener "busy" runs one call at a time, "roomy" 128: once a held call takes the busy
    # one's slot, every call landing there is handed back to NATS (at most 3 times), and the
    # quick calls come back while it still holds its call, each exactly once.
    subject = f"srpc.asyncflow.{tmp_path.name}"
    endpoint = Endpoint("", 0, "Flow")

    async def main() -> None:
        release = asyncio.Event()
        holders: asyncio.Queue[str] = asyncio.Queue()

        def serve_as(name: str) -> Any:
            async def on_connection(channel: AsyncChannel) -> None:
                message = await channel.receive()
                assert message is not None
                if message == b"hold":
                    holders.put_nowait(name)
                    await release.wait()
                await channel.send(name.encode() + b" " + message)
                assert await channel.receive() is None

            return on_connection

        busy = await nats_transport(nats_server.url, subject, max_concurrent=1).bind_async(
            endpoint, serve_as("busy")
        )
        roomy = await nats_transport(nats_server.url, subject, max_concurrent=128).bind_async(
            endpoint, serve_as("roomy")
        )
        assert isinstance(busy, aio.AsyncNatsListener)
        channel = await nats_transport(nats_server.url, subject).open_async_channel(endpoint, 10)
        try:
            held = 0
            while True:  # until the busy listener holds one
                await channel.send(b"hold")
                held += 1
                if await asyncio.wait_for(holders.get(), WAIT) == "busy":
                    break
            calls = 40
            await asyncio.gather(*(channel.send(b"q%d" % i) for i in range(calls)))
            # With flow control a call stays on the busy listener only if NATS picks it 4 times
            # running (1 in 16): 30 of 40 come back while it still holds its call.
            replies = [await asyncio.wait_for(channel.receive(), WAIT) for _ in range(30)]
            assert busy.forwarded > 0
            release.set()
            replies += [
                await asyncio.wait_for(channel.receive(), WAIT) for _ in range(calls - 30 + held)
            ]
        finally:
            await channel.close()
            await busy.close()
            await roomy.close()
        quick = sorted(r.split()[1] for r in replies if r is not None and b"hold" not in r)
        assert quick == sorted(b"q%d" % i for i in range(calls)), "a call lost or run twice"

    asyncio.run(main())


# -- cancellation and deadlines ---------------------------------------------------------------


def test_a_cancelled_call_cancels_the_async_method_on_the_server(
    config: Config, async_server: Running, service: AsyncMath
) -> None:
    async def main() -> None:
        async with AsyncClient(MathInterface, config=config) as client:
            call = asyncio.create_task(client.call("wait", ("cancelled",)))
            await entered(service.entered)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            assert await asyncio.to_thread(service.cancelled.wait, WAIT), (
                "the server never cancelled the method: the cancel did not reach it"
            )
            assert await client.call("add", (1, 1)) == 2
            assert_native(client)

    asyncio.run(main())


def test_a_call_past_its_deadline_is_cancelled_on_the_server(
    config: Config, async_server: Running, service: AsyncMath
) -> None:
    async def main() -> None:
        async with AsyncClient(MathInterface, config=config, timeout=0.5) as client:
            with pytest.raises(CallTimeoutError):
                await client.call("wait", ("late",))
            assert await asyncio.to_thread(service.cancelled.wait, WAIT), (
                "the method ran on past its deadline"
            )
            assert await client.call("add", (2, 2)) == 4

    asyncio.run(main())


def test_stop_drains_calls_waiting_for_a_slot_too(nats_server: NatsServer) -> None:  # noqa: F811
    # One slot: the first call runs (held), the second waits for the slot. stop() must let
    # both answer: the one waiting is handed to the core before the listener's close returns.
    config = make_config(nats_server.url, f"srpc.asynctest.s{next(_subjects)}", max_concurrent=1)
    service = AsyncMath()
    running = Running(Server(MathInterface, service, config=config))

    async def main() -> None:
        async with AsyncClient(MathInterface, config=config) as client:
            first = asyncio.create_task(client.call("wait", ("first",)))
            await entered(service.entered)
            # The second call's send() returns once NATS has seen the request: from then on it
            # is on its way to the server (the only one), which must not lose it as it stops.
            channel = client._shared.connection.channel  # type: ignore[union-attr]
            sent = asyncio.Event()
            original = channel.send

            async def send(message: bytes) -> None:
                await original(message)
                sent.set()

            channel.send = send  # type: ignore[method-assign]
            second = asyncio.create_task(client.call("wait", ("second",)))
            await asyncio.wait_for(sent.wait(), WAIT)
            await asyncio.to_thread(running.server.stop)
            done, _ = await asyncio.wait([first, second], timeout=0.2)
            assert not done, done
            service.release()
            assert await asyncio.wait_for(first, WAIT) == "first"
            assert await asyncio.wait_for(second, WAIT) == "second"

    try:
        asyncio.run(main())
    finally:
        service.release()
        running.stop()


# -- no server ---------------------------------------------------------------------------------


def test_no_server_fails_at_once(config: Config) -> None:
    # A long timeout: waiting for it would end in CallTimeoutError, not the error expected.
    config = Config(**{**config.__dict__, "timeout": 60.0})

    async def main() -> None:
        async with AsyncClient(MathInterface, config=config) as client:
            started = time.monotonic()
            with pytest.raises(ServerUnavailableError, match="no responders"):
                await client.call("add", (1, 2))
            assert time.monotonic() - started < 5.0
            service = AsyncMath()
            running = Running(Server(MathInterface, service, config=config))
            try:
                assert await client.call("add", (1, 2)) == 3
                assert_native(client)
            finally:
                running.stop()
            # The channel is open, the server is gone: every call at once fails at once, alone.
            started = time.monotonic()
            outcomes = await asyncio.gather(
                *(client.call("add", (i, 1)) for i in range(20)), return_exceptions=True
            )
            assert all(isinstance(o, ServerUnavailableError) for o in outcomes), outcomes
            assert time.monotonic() - started < 5.0

    asyncio.run(main())


def test_the_channel_answers_a_late_no_responders_and_names_the_call(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    # What comes through receive(): a "no responders" that came after its send() stopped
    # waiting (NATS slow or reconnecting) and control errors that name no call. The channel
    # names the call (its id read with the hello's codec), so only that call is touched.
    from srpc_core import protocol
    from srpc_core.errors import SessionError

    class Status:
        def __init__(self, subject: str, data: bytes, headers: dict[str, str] | None) -> None:
            self.subject, self.data, self.headers = subject, data, headers

    async def main() -> None:
        transport = nats_transport(nats_server.url, "srpc.asynctest.nobody")
        channel = await transport.open_async_channel(Endpoint("", 0, "Nobody"), WAIT)
        assert isinstance(channel, aio.AsyncNatsChannel)
        try:
            hello = protocol.hello("json", "nats", "Nobody")
            with pytest.raises(ServerUnavailableError, match="no responders"):
                await channel.send(hello)  # no server: the hello is refused at once
            request = b'[7,"token","add",[1,2],{}]'
            inbox = channel._inbox
            for token, message, reply in [
                ("late", request, Status(f"{inbox}.late", b"", {"Status": "503"})),
                ("big", request, Status(f"{inbox}.big", b"x" * (2 << 20), None)),
                ("plain", request, Status(f"{inbox}.plain", protocol.control_error("no"), None)),
                ("cancel", protocol.cancel(7, "token"), Status(f"{inbox}.cancel", b"", None)),
            ]:
                channel._sent[token] = message
                if token == "cancel":  # a cancel nobody took: nothing to say
                    reply.headers = {"Status": "503"}
                await channel._on_reply(reply)
            late, big, plain = [await channel.receive() for _ in range(3)]
            assert late is not None and big is not None and plain is not None
            for message, code in [
                (late, protocol.Code.SESSION),
                (big, protocol.Code.TOO_LARGE),
                (plain, protocol.Code.MALFORMED),
            ]:
                error = protocol.parse_control_error(message)
                assert (error.code, error.call_id) == (code, 7), error
            with pytest.raises(SessionError):
                protocol.raise_control_error(late, channel.address)
            assert not channel._arrived, "a cancel nobody took was passed on"
        finally:
            await channel.close()

    asyncio.run(main())


def test_credentials_are_passed_by_the_async_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with NatsServer(tmp_path / "auth-nats", token="s3cret-token") as nats:
        config = make_config(nats.url, "srpc.asynctest.auth", token_env="NT")
        monkeypatch.setenv("NT", "s3cret-token")
        running = Running(Server(MathInterface, AsyncMath(), config=config))
        try:

            async def main() -> None:
                async with AsyncClient(MathInterface, config=config) as client:
                    assert await client.call("add", (1, 2)) == 3
                    assert_native(client)
                monkeypatch.setenv("NT", "not-it")
                async with AsyncClient(MathInterface, config=config) as client:
                    with pytest.raises(ServerUnavailableError, match="credentials"):
                        await client.call("add", (1, 2))

            asyncio.run(main())
        finally:
            running.stop()


def test_the_async_client_on_uvloop(config: Config, async_server: Running) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        assert "uvloop" in type(asyncio.get_running_loop()).__module__
        async with AsyncClient(MathInterface, config=config) as client:
            results = await asyncio.gather(*(client.call("add", (i, 1)) for i in range(300)))
            assert results == [i + 1 for i in range(300)]
            assert_native(client)

    uvloop.run(main())


# -- NATS restarts ---------------------------------------------------------------------------


def test_a_nats_restart_is_survived_by_the_async_client_and_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconnected = threading.Event()
    original = Intake._reconnected

    async def noted(intake: Intake) -> None:
        await original(intake)
        reconnected.set()

    monkeypatch.setattr(Intake, "_reconnected", noted)
    with NatsServer(tmp_path / "own-nats") as nats:
        config = make_config(nats.url, "srpc.asynctest.restart", timeout=20.0)
        running = Running(Server(MathInterface, AsyncMath(), config=config))
        try:

            async def main() -> None:
                async with AsyncClient(MathInterface, config=config) as client:
                    assert await client.call("add", (1, 1)) == 2
                    await asyncio.to_thread(nats.restart)
                    assert await asyncio.to_thread(reconnected.wait, WAIT), "no reconnection"
                    assert await client.call("add", (2, 2)) == 4
                    assert_native(client)

            asyncio.run(main())
        finally:
            running.stop()


# -- SIGTERM drains the asyncio server (a process of its own) ------------------------------------

INTERFACE = '''
from abc import ABC, abstractmethod


class HeldInterface(ABC):
    @abstractmethod
    def whoami(self) -> int:
        """The server's pid."""

    @abstractmethod
    def hold(self, tag: str) -> str:
        """Print that the call is in flight, then wait until the test opens the FIFO."""
'''

IMPLEMENTATION = """
import asyncio
import os

from held.held_interface import HeldInterface


def _read(path):
    with open(path) as fifo:
        return fifo.read()


class Held(HeldInterface):
    async def whoami(self) -> int:  # type: ignore[override]
        return os.getpid()

    async def hold(self, tag: str) -> str:  # type: ignore[override]
        print(f"holding {tag} on {type(asyncio.get_running_loop()).__name__}", flush=True)
        await asyncio.to_thread(_read, os.path.join(os.environ["HOLD_DIR"], tag))
        return f"released {tag}"
"""

DRAINING = re.compile(r"takes no more calls; finishing (?P<n>\d+) in flight")


def test_sigterm_drains_the_asyncio_server(
    tmp_path: Path,
    nats_server: NatsServer,  # noqa: F811
) -> None:
    project = make_project(
        tmp_path,
        "held",
        {"held/held_interface.py": INTERFACE, "held/held.py": IMPLEMENTATION},
    )
    config = nats_config(project / "srpc.toml", nats_server.url, extra_srpc="timeout = 30.0\n")
    hold_dir = tmp_path / "hold"
    hold_dir.mkdir()
    fifo = hold_dir / "inflight"
    os.mkfifo(fifo)
    interface = import_interface(project, "held")
    with ServerProcess(project, "held", config=config, env={"HOLD_DIR": str(hold_dir)}) as held:
        assert held.process is not None
        assert "asyncio" in held.text(), "the server did not start the asyncio server"

        async def main() -> None:
            async with AsyncClient(interface, config=str(config)) as client:
                assert await client.call("whoami") == held.process.pid  # type: ignore[union-attr]
                call = asyncio.create_task(client.call("hold", ("inflight",)))
                await asyncio.to_thread(held.wait_for, re.compile("holding inflight"))
                held.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
                match = await asyncio.to_thread(held.wait_for, DRAINING)
                assert match.group("n") == "1"
                # It takes no more calls (it was the only server)...
                with pytest.raises(ServerUnavailableError):
                    await client.call("whoami")
                assert held.alive() and not call.done()  # ...while the call in flight runs
                await asyncio.to_thread(fifo.write_text, "go")
                assert await asyncio.wait_for(call, WAIT) == "released inflight"
                assert_native(client)

            asyncio.run(main())
            assert held.process.wait(timeout=WAIT) == 0
