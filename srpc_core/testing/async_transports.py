"""The async checks of `TransportConformance`: what a transport's native async side must do.

A transport may have a native async side (`Transport.open_async_channel` returning an
`AsyncChannel`, `Transport.bind_async` returning an `AsyncListener`; docs/asyncio.md). These
checks run it through the real thing, the core's `AsyncClient` and the asyncio `Server` (an
implementation with ``async def`` methods, `AsyncConformanceService`) serving over the
transport's async listener, and use the channel and listener directly (serving an
`OnConnection` of the kit's own) where the property belongs to them: many messages at once on
one channel, answered in any order; concurrent sends that never interleave; refusal above
`max_message_bytes`; the end of a connection seen by `receive` and `closing`; `close` waking a
pending `receive`; a cancelled `receive`; a closed listener that stops accepting but keeps its
connections; and the async and sync sides of client and server talking to each other.

Why they live in `TransportConformance` (through this mixin) rather than in a base class of
their own that authors would add: the async side is part of the same `Transport` class, so an
author who adds one (or a transport that gains one, as srpc's own do) is checked by the tests
already written, with nothing to remember; a transport without an async side (every v0.1
transport, which the core bridges with threads) has each of these checks skipped, saying why,
at no cost (nothing is started). A check that needs the async listener is skipped when
`bind_async` returns None, one that needs the async client side when `open_async_channel`
does.

Every check runs in an event loop of its own (`run_async`, bounded by a few `HANG`s, so a hang
fails with a message rather than blocking the run); the kit's servers run in background
threads with event loops of their own, as `start_server` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pytest

from srpc_core.errors import CallTimeoutError, FrameTooLargeError, SrpcError, TransportError
from srpc_core.testing.interface import ConformanceError, ConformanceInterface
from srpc_core.testing.limits import HANG, LIMIT, NEAR_LIMIT_MARGIN, PROMPT, STOP_TIMEOUT
from srpc_core.testing.registry import TransportSpec, plugins_for, registered_name
from srpc_core.testing.service import AsyncConformanceService, ConformanceService
from srpc_core.transport import AsyncChannel, AsyncListener, Endpoint, Transport, TransportSettings

if TYPE_CHECKING:
    from srpc_core.testing.transports import RunningServer

T = TypeVar("T")

#: The service name the kit's raw async listeners are bound for.
SERVICE = ConformanceInterface.__name__
DOTTED_SERVICE = f"{ConformanceInterface.__module__}.{ConformanceInterface.__qualname__}"
#: How long a check runs at most before it counts as hung (it fails, naming the check).
CHECK_LIMIT = 3 * HANG
#: How long a new connection to a closed async listener is given to be served (it must not be).
NOT_SERVED_WAIT = 1.0
#: How long an oversized message may go unanswered: a transport whose library drops it without
#: a word (the client's channel neither ends nor hears back) is given this long to show it did
#: not deliver it; every other outcome (refused, delivered, ended) ends the wait at once.
REFUSAL_WAIT = 2.0
#: Messages sent at once, from as many tasks, on one channel (each larger than the socket
#: buffers, so that a sender that waits for the peer in the middle of a message is caught).
CONCURRENT_MESSAGES = 24
#: Messages of the kit's echo listener: answered at once, kept until FLUSH, or special.
HOLD, FLUSH, BIG, BYE = b"hold", b"flush", b"big", b"bye"


def run_async(check: Callable[[], Coroutine[Any, Any, None]], limit: float = CHECK_LIMIT) -> None:
    """Run `check()` in a new event loop; fail if it is still running after `limit` seconds."""

    async def bounded() -> bool:
        scope = asyncio.timeout(limit)
        try:
            async with scope:
                await check()
        except TimeoutError:
            if not scope.expired():
                raise
            return False
        return True

    try:
        finished = asyncio.run(bounded())
    finally:
        # The loop's garbage (transports, futures) is collected here, in the check, rather
        # than at some later collection that may run in the middle of pytest's reporting.
        gc.collect()
    if not finished:
        pytest.fail(
            f"the check was still running after {limit} s: a send, receive, close or call "
            "of the async side never finished (every wait of the async side must end: "
            "within the transport's timeout, or when the connection closes)"
        )


async def within(awaitable: Awaitable[T], seconds: float, failure: str) -> T:
    """Await `awaitable` for at most `seconds`; past them, fail with `failure` (what to do)."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        pass
    pytest.fail(f"{failure} (still waiting after {seconds} s)")


async def wait_event(event: threading.Event, failure: str, seconds: float = HANG) -> None:
    """Wait, off the event loop, for a `threading.Event` set by the server's side."""
    if not await asyncio.to_thread(event.wait, seconds):
        pytest.fail(f"{failure} (not within {seconds} s)")


class _Echo:
    """The kit's `OnConnection` for a transport's async listener, with no srpc server behind it.

    It echoes every message at once, except: messages starting with HOLD are kept until FLUSH
    arrives and then all sent back at once, from as many tasks, in reverse order; BIG is
    answered with `big_reply` bytes; BYE ends the connection (the listener then closes it).
    It records the largest message received and how each connection ended: None (the peer
    went away or said BYE) or the exception `receive` or `send` raised.
    """

    def __init__(self, big_reply: int) -> None:
        self.big_reply = big_reply
        self.channels: set[AsyncChannel] = set()
        self.ends: list[BaseException | None] = []
        self.largest = 0
        self._ended = asyncio.Event()
        #: Set whenever a message arrives or a connection ends.
        self.activity = asyncio.Event()

    async def serve(self, channel: AsyncChannel) -> None:
        self.channels.add(channel)
        held: list[bytes] = []
        end: BaseException | None = None
        try:
            while True:
                message = await channel.receive()
                if message is None or message == BYE:
                    break
                self.largest = max(self.largest, len(message))
                self.activity.set()
                if message.startswith(HOLD):
                    held.append(message)
                elif message == FLUSH:
                    held, replies = [], held[::-1]
                    await asyncio.gather(*(channel.send(reply) for reply in replies))
                elif message == BIG:
                    await channel.send(b"y" * self.big_reply)
                else:
                    await channel.send(message)
        except Exception as exc:  # the check looks at it
            end = exc
        finally:
            self.channels.discard(channel)
            self.ends.append(end)
            self._ended.set()
            self.activity.set()

    async def wait_ended(self, count: int, failure: str) -> None:
        """Wait until `count` connections have ended on the listener's side."""

        async def wait() -> None:
            while len(self.ends) < count:
                self._ended.clear()
                await self._ended.wait()

        await within(wait(), HANG, failure)


@dataclasses.dataclass
class RunningAsyncListener:
    """A transport's async listener serving the kit's `_Echo`, and how to reach it."""

    listener: AsyncListener
    #: The transport built with the clients' settings.
    client_transport: Transport
    endpoint: Endpoint
    echo: _Echo

    async def channel(self, timeout: float = HANG) -> AsyncChannel:
        """A new channel to the listener (close it); skips the check without a client side."""
        channel = await self.client_transport.open_async_channel(self.endpoint, timeout)
        if channel is None:
            pytest.skip(
                f"{self.client_transport.name}: open_async_channel() returned None (no native "
                "async client side): the check needs one"
            )
        return channel

    async def served(self) -> bool:
        """Whether a new connection is served now (an echo comes back)."""
        try:
            channel = await asyncio.wait_for(self.channel(PROMPT), PROMPT)
        except (SrpcError, OSError, TimeoutError):
            return False
        try:
            await asyncio.wait_for(channel.send(b"anyone there?"), NOT_SERVED_WAIT)
            reply = await asyncio.wait_for(channel.receive(), NOT_SERVED_WAIT)
        except (SrpcError, OSError, TimeoutError):
            return False
        finally:
            await _quietly(channel.close())
        return reply == b"anyone there?"


async def _quietly(awaitable: Awaitable[Any]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(awaitable, PROMPT)


async def _exchange(channel: AsyncChannel, message: bytes, failure: str) -> bytes | None:
    """Send `message` and return the next message received (within HANG)."""
    await within(channel.send(message), HANG, f"send() never returned: {failure}")
    return await within(channel.receive(), HANG, f"no answer came: {failure}")


class AsyncTransportChecks:
    """The async half of `TransportConformance` (see the module): do not use it on its own."""

    transport: ClassVar[TransportSpec]
    options: ClassVar[Mapping[str, Any]] = {}
    rendezvous_timeout: ClassVar[float]
    #: True for a transport without connections (a message broker: NATS), whose async listener
    #: hands the core each request as a server-side channel of one message: the three checks
    #: that need several messages on one server-side channel, or a server that can end a
    #: client's channel, are skipped (saying so); every other async check applies.
    connectionless: ClassVar[bool] = False

    def _spec(self) -> TransportSpec:
        raise NotImplementedError

    def _start(
        self,
        listen_host: str,
        options: Mapping[str, Any],
        timeout: float = HANG,
        service: ConformanceService | None = None,
    ) -> RunningServer:
        raise NotImplementedError

    # -- fixtures and helpers ----------------------------------------------------------------

    @pytest.fixture
    def async_running(self, listen_host: str) -> Iterator[RunningServer]:
        """The asyncio server (``async def`` methods) over the transport's async listener."""
        self._skip_without("bind_async")
        running = self._start(
            listen_host, self.options, service=AsyncConformanceService(self.rendezvous_timeout)
        )
        try:
            if running.server._async_listener is None:
                pytest.skip(
                    f"{self._name()}: bind_async() returned None (no native async listener; "
                    "the asyncio server serves its threaded one): nothing async to check"
                )
            yield running
        finally:
            running.stop()

    def _name(self) -> str:
        return registered_name(self._spec())

    def _transport(self, max_message_bytes: int = LIMIT) -> Transport:
        plugins = plugins_for(self._spec(), "json")
        settings = TransportSettings(self.options, max_message_bytes, HANG)
        return plugins.transport(self._name(), settings)

    def _needs_connections(self, what: str) -> None:
        """Skip a check of connection behaviour for a `connectionless` transport."""
        if self.connectionless:
            pytest.skip(
                f"{self._name()} is connectionless (connectionless = True): every request is "
                f"a server-side channel of its own, so {what}"
            )

    def _skip_without(self, *methods: str) -> None:
        """Skip at once when the transport does not override `methods` (no async side)."""
        transport = type(self._transport())
        for method in methods:
            if getattr(transport, method) is getattr(Transport, method):
                pytest.skip(
                    f"{self._name()} has no native async side ({method}() is Transport's, which "
                    "returns None; the core bridges its sync side): nothing async to check"
                )

    @contextlib.asynccontextmanager
    async def _serve_async(
        self,
        listen_host: str,
        *,
        max_message_bytes: int = LIMIT,
        client_max_message_bytes: int = LIMIT,
    ) -> AsyncIterator[RunningAsyncListener]:
        """Bind the transport's async listener serving `_Echo`; replies up to 4 * LIMIT."""
        self._skip_without("bind_async", "open_async_channel")
        echo = _Echo(LIMIT + 4096)
        server_side = self._transport(max_message_bytes)
        client_side = self._transport(client_max_message_bytes)
        listener = await server_side.bind_async(
            Endpoint(listen_host, 0, SERVICE, DOTTED_SERVICE), echo.serve
        )
        if listener is None:
            pytest.skip(f"{self._name()}: bind_async() returned None (no native async listener)")
        endpoint = Endpoint(listen_host, listener.port, SERVICE, DOTTED_SERVICE)
        try:
            yield RunningAsyncListener(listener, client_side, endpoint, echo)
        finally:
            await within(listener.close(), PROMPT, "AsyncListener.close() never returned")
            open_now = len(echo.ends) + len(echo.channels)
            for channel in list(echo.channels):  # connections are the core's to end: ours
                await _quietly(channel.close())
            await echo.wait_ended(
                open_now,
                "a connection of the async listener was still served after the kit closed its "
                "channel: close() must make a pending receive() return None or raise",
            )

    async def _require_async_channel(self, running: RunningServer) -> None:
        """Skip unless the transport opens an async channel (probed against `running`)."""
        endpoint = Endpoint(running.host, running.port, SERVICE, DOTTED_SERVICE)
        channel = await self._transport().open_async_channel(endpoint, HANG)
        if channel is None:
            pytest.skip(
                f"{self._name()}: open_async_channel() returned None (no native async client "
                "side; the core bridges its sync channels): nothing async to check"
            )
        await channel.close()

    # -- through the async client and the asyncio server -----------------------------------

    def test_async_calls_round_trip(self, async_running: RunningServer) -> None:
        async def check() -> None:
            async with async_running.async_client() as client:
                assert [await client.call("add", (i, 1)) for i in range(50)] == list(range(1, 51))
                text = "\x00srpc ünïcødé ✓ 🚀"
                assert await client.call("echo", (text,)) == text
                assert await client.call("echo", ([1, {"a": None}],)) == [1, {"a": None}]
                payload = "x" * (LIMIT - NEAR_LIMIT_MARGIN)
                assert await client.call("echo", (payload,)) == payload, (
                    "a message near max_message_bytes did not come back whole"
                )
                with pytest.raises(ZeroDivisionError):
                    await client.call("fail", ("ZeroDivisionError", "division by zero"))
                with pytest.raises(ConformanceError):
                    await client.call("fail", ("ConformanceError", "declared"))
                assert await client.call("add", (2, 2)) == 4

        run_async(check)

    def test_async_many_calls_at_once_on_one_channel_answered_in_any_order(
        self, async_running: RunningServer
    ) -> None:
        service = async_running.service

        async def check() -> None:
            async with async_running.async_client() as client:
                first = asyncio.create_task(client.call("block", ("first",)))
                await wait_event(service.entered, "block() never started on the server")
                values = [[i, f"call-{i}"] for i in range(200)]
                results = await within(
                    asyncio.gather(*(client.call("echo", (v,)) for v in values)),
                    HANG,
                    "200 calls at once on one async channel, with an earlier call still "
                    "running, did not all get their answers: the channel must carry messages "
                    "each way while others wait (a receive() waiting must not stop send())",
                )
                assert results == values, (
                    "calls at once got other calls' answers: receive() must return every "
                    "message whole and exactly once"
                )
                assert not first.done(), f"the blocked call ended early: {first}"
                service.release.set()
                answer = await within(first, HANG, "the first call, answered last, never ended")
                assert answer == "first", answer

        run_async(check)

    def test_async_server_refuses_a_request_above_the_limit_and_goes_on(
        self, async_running: RunningServer
    ) -> None:
        async def check() -> None:
            async with async_running.async_client(max_message_bytes=4 * LIMIT) as big_sender:
                with pytest.raises(SrpcError) as refused:
                    await big_sender.call("echo", ("x" * (LIMIT + 4096),))
                assert not isinstance(refused.value, CallTimeoutError), (
                    "a request above max_message_bytes made the call time out: the async "
                    "listener's channel must raise OversizedFrameError from receive() (the core "
                    "answers with an error)"
                )
            # (The server closes that connection; another client goes on as before.)
            async with async_running.async_client() as client:
                with pytest.raises(SrpcError) as too_big:
                    await client.call("blob", (LIMIT + 4096,))
                assert not isinstance(too_big.value, CallTimeoutError), "refusal must not hang"
                assert await client.call("add", (1, 2)) == 3

        run_async(check)

    def test_async_a_cancelled_call_leaves_the_connection_usable(
        self, async_running: RunningServer
    ) -> None:
        service = async_running.service
        assert isinstance(service, AsyncConformanceService)

        async def check() -> None:
            async with async_running.async_client() as client:
                assert await client.call("add", (1, 1)) == 2
                call = asyncio.create_task(client.call("block", ("cancelled",)))
                await wait_event(service.entered, "block() never started on the server")
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                await wait_event(
                    service.cancelled,
                    "the server never cancelled the call the client cancelled: the async "
                    "channel must carry the client's cancel message like any other",
                )
                after = await within(
                    asyncio.gather(*(client.call("add", (i, 1)) for i in range(20))),
                    HANG,
                    "calls after a cancelled one never ended",
                )
                assert after == list(range(1, 21)), after

        run_async(check)

    def test_async_shutdown_lets_calls_in_flight_finish(self, async_running: RunningServer) -> None:
        running = async_running

        async def check() -> None:
            async with running.async_client() as client:
                call = asyncio.create_task(client.call("block", ("in flight",)))
                await wait_event(running.service.entered, "block() never started")
                running.server.stop()
                done, _ = await asyncio.wait([call], timeout=0.2)
                assert not done, (
                    f"the call in flight ended as the server stopped, before it returned "
                    f"({call.exception() or call.result()!r}): AsyncListener.close() must only "
                    "stop accepting, leaving accepted connections to the core"
                )
                assert running.thread.is_alive(), "the server stopped with a call in flight"
                running.service.release.set()
                answer = await within(
                    call,
                    HANG,
                    "the call in flight at stop() never got its answer: keep accepted "
                    "connections open after AsyncListener.close()",
                )
                assert answer == "in flight", answer
            await asyncio.to_thread(running.thread.join, STOP_TIMEOUT)
            assert not running.thread.is_alive(), "the server did not stop after the call ended"

        run_async(check)

    # -- the async and sync sides together -------------------------------------------------

    def test_async_client_calls_a_threaded_listener(self, listen_host: str) -> None:
        self._skip_without("open_async_channel")
        running = self._start(listen_host, self.options)  # plain methods: the threaded server

        async def check() -> None:
            await self._require_async_channel(running)
            async with running.async_client() as client:
                assert await client.call("add", (2, 3)) == 5
                assert await client.call("echo", ("ünïcødé",)) == "ünïcødé"
                values = [[i, f"call-{i}"] for i in range(20)]
                results = await within(
                    asyncio.gather(*(client.call("echo", (v,)) for v in values)),
                    HANG,
                    "calls at once from the async client to the threaded listener (from bind) "
                    "never all ended: the async channel and the threaded listener must frame "
                    "messages the same way",
                )
                assert results == values
                with pytest.raises(KeyError):
                    await client.call("fail", ("KeyError", "missing"))

        try:
            run_async(check)
        finally:
            running.stop()

    def test_sync_client_calls_the_async_listener(self, async_running: RunningServer) -> None:
        parties = 4
        with async_running.client() as client, ThreadPoolExecutor(parties) as pool:
            assert client.call("add", (2, 3)) == 5
            assert client.call("echo", ("ünïcødé",)) == "ünïcødé"
            results = list(pool.map(lambda _: client.call("rendezvous", (parties,)), range(4)))
            assert results == [parties] * parties
            with pytest.raises(KeyError):
                client.call("fail", ("KeyError", "missing"))

    # -- the channel and the listener on their own ------------------------------------------

    def test_async_concurrent_sends_never_interleave(self, listen_host: str) -> None:
        self._needs_connections(
            "the kit's echo cannot hold one channel's messages until a later one (send many "
            "large messages at once on one AsyncChannel in your own tests)"
        )

        async def check() -> None:
            async with self._serve_async(listen_host) as running:
                channel = await running.channel()
                sent = {
                    HOLD + i.to_bytes(4, "big") + bytes([i]) * (64 * 1024 + i * 9973)
                    for i in range(CONCURRENT_MESSAGES)
                }
                received: list[bytes | None] = []
                failure = (
                    f"{CONCURRENT_MESSAGES} large messages sent at once from as many tasks on "
                    "one AsyncChannel, answered at once in reverse order, did not all come back "
                    "whole{}: send() must write a message's length and all its bytes with no "
                    "await in between (or under a lock), so concurrent sends never interleave"
                )
                broke: BaseException | None = None
                try:
                    await within(
                        asyncio.gather(*(channel.send(message) for message in sent)),
                        HANG,
                        failure.format(" (the sends never ended)"),
                    )
                    await channel.send(FLUSH)
                    for _ in sent:
                        message = await within(
                            channel.receive(), HANG, failure.format(" (an answer never came)")
                        )
                        received.append(message)
                        if message is None:
                            break
                except (SrpcError, OSError) as exc:
                    broke = exc
                finally:
                    await _quietly(channel.close())
                if broke is not None:
                    pytest.fail(
                        failure.format(f" ({broke!r}; the listener saw {running.echo.ends})")
                    )
                whole = sum(message in sent for message in received)
                assert set(received) == sent, failure.format(
                    f" ({whole} of {len(sent)} whole; the listener saw "
                    f"{running.echo.ends or 'no error'})"
                )

        run_async(check)

    def test_async_listener_refuses_a_message_above_the_limit(self, listen_host: str) -> None:
        async def check() -> None:
            async with self._serve_async(
                listen_host, client_max_message_bytes=4 * LIMIT
            ) as running:
                echo = running.echo
                channel = await running.channel()
                try:
                    with contextlib.suppress(SrpcError, OSError):  # closed at once: fine
                        await within(
                            channel.send(b"x" * (LIMIT + 4096)), HANG, "send() never returned"
                        )
                    # The first of: an answer or the end on the client's channel, the message
                    # delivered or the end on the listener's side.
                    reply = asyncio.ensure_future(channel.receive())
                    seen = asyncio.ensure_future(echo.activity.wait())
                    await asyncio.wait(
                        [reply, seen], timeout=REFUSAL_WAIT, return_when=asyncio.FIRST_COMPLETED
                    )
                    for waiting in (reply, seen):
                        waiting.cancel()
                    await asyncio.gather(reply, seen, return_exceptions=True)
                finally:
                    await _quietly(channel.close())
                refusal = (
                    f"max_message_bytes is {LIMIT}: receive() must raise FrameTooLargeError "
                    "(OversizedFrameError) on the length, before reading or allocating the body"
                )
                assert echo.largest <= LIMIT, (
                    f"the async listener's channel delivered a {echo.largest}-byte message; "
                    f"{refusal}"
                )
                ends = [
                    e for e in echo.ends if not isinstance(e, FrameTooLargeError | TransportError)
                ]
                assert not ends, f"the listener's channel ended with {ends[0]!r}; {refusal}"
                other = await running.channel()
                try:
                    answer = await _exchange(other, b"next", "after a refusal")
                    assert answer == b"next", "the listener stopped serving after a refusal"
                finally:
                    await other.close()

        run_async(check)

    def test_async_channel_refuses_a_reply_above_its_limit(self, listen_host: str) -> None:
        # The listener may send up to 4 * LIMIT; the client's channel accepts LIMIT.
        async def check() -> None:
            async with self._serve_async(listen_host, max_message_bytes=4 * LIMIT) as running:
                channel = await running.channel()
                try:
                    assert await _exchange(channel, b"small", "a small message") == b"small"
                    await channel.send(BIG)
                    try:
                        reply = await within(
                            channel.receive(),
                            HANG,
                            "a reply above max_message_bytes made receive() wait: raise "
                            "FrameTooLargeError (OversizedFrameError) on its length",
                        )
                    except (FrameTooLargeError, TransportError):
                        return
                    pytest.fail(
                        f"receive() returned {reply if reply is None else len(reply)!r} for a "
                        f"{LIMIT + 4096}-byte reply; max_message_bytes is {LIMIT}: raise "
                        "FrameTooLargeError (OversizedFrameError) before reading its body"
                    )
                finally:
                    await _quietly(channel.close())

        run_async(check)

    def test_async_receive_ends_when_the_peer_closes(self, listen_host: str) -> None:
        self._needs_connections("a server cannot end a client's channel")

        async def check() -> None:
            async with self._serve_async(listen_host) as running:
                channel = await running.channel()
                try:
                    assert await _exchange(channel, b"ping", "an echo") == b"ping"
                    await channel.send(BYE)  # the kit's side ends: the listener closes it
                    try:
                        end = await within(
                            channel.receive(),
                            PROMPT,
                            "receive() went on waiting after the peer closed the connection: "
                            "return None (or raise TransportError) at its end",
                        )
                    except TransportError:
                        end = None
                    assert end is None, f"receive() returned {end!r} after the peer closed"
                    assert channel.closing(), (
                        "closing() was still False after receive() saw the peer close the "
                        "connection: return True then (the client opens a new connection "
                        "instead of sending into a dead one)"
                    )
                finally:
                    await _quietly(channel.close())
                # The other way round: the kit's channel closes, the listener's side ends.
                other = await running.channel()
                assert await _exchange(other, b"ping", "an echo") == b"ping"
                await other.close()
                await running.echo.wait_ended(
                    2,
                    "the listener's receive() went on waiting after the client closed its "
                    "channel: close() must close the connection, and receive() return None",
                )
                ends = running.echo.ends
                assert all(e is None or isinstance(e, TransportError) for e in ends), (
                    f"the listener's channel ended with {ends}: at a peer's close, receive() "
                    "returns None (or raises TransportError)"
                )

        run_async(check)

    def test_async_close_is_idempotent_and_wakes_a_pending_receive(self, listen_host: str) -> None:
        async def check() -> None:
            async with self._serve_async(listen_host) as running:
                channel = await running.channel()
                assert await _exchange(channel, b"ping", "an echo") == b"ping"
                pending = asyncio.create_task(channel.receive())
                await asyncio.sleep(0)  # (a yield, not a wait: receive() is now waiting)
                await within(channel.close(), PROMPT, "close() never returned")
                await within(
                    channel.close(),
                    PROMPT,
                    "a second close() never returned: close() is idempotent",
                )
                done, _ = await asyncio.wait([pending], timeout=PROMPT)
                if not done:
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending
                    pytest.fail(
                        f"a pending receive() was still waiting {PROMPT} s after close(): "
                        "close() must wake it (it returns None or raises TransportError)"
                    )
                error = pending.exception()
                assert error is None or isinstance(error, TransportError), (
                    f"a receive() woken by close() raised {error!r}: return None or raise "
                    "TransportError"
                )
                assert error is not None or pending.result() is None, pending.result()
                assert channel.closing(), "closing() must be True once close() was called"
                with pytest.raises((TransportError, OSError)):
                    await within(channel.send(b"after close"), PROMPT, "send() after close()")
                    pytest.fail("send() after close() did not raise: raise TransportError")

        run_async(check)

    def test_async_a_cancelled_receive_leaves_the_channel_usable(self, listen_host: str) -> None:
        async def check() -> None:
            async with self._serve_async(listen_host) as running:
                channel = await running.channel()
                try:
                    assert await _exchange(channel, b"ping", "an echo") == b"ping"
                    pending = asyncio.create_task(channel.receive())
                    await asyncio.sleep(0)  # (a yield: receive() is now waiting)
                    pending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pending
                    answer = await _exchange(
                        channel,
                        b"after a cancel",
                        "a cancelled receive() left the channel unusable: cancelling a task "
                        "waiting in receive() must lose no message and break nothing",
                    )
                    assert answer == b"after a cancel", (
                        f"after a cancelled receive(), the next one returned {answer!r}"
                    )
                finally:
                    await _quietly(channel.close())

        run_async(check)

    def test_async_listener_close_stops_accepting_and_keeps_connections(
        self, listen_host: str
    ) -> None:
        self._needs_connections(
            "the next message of a kept channel is a new request, which a closed listener must "
            "not take (test_async_shutdown_lets_calls_in_flight_finish checks what applies)"
        )

        async def check() -> None:
            async with self._serve_async(listen_host) as running:
                kept = await running.channel()
                try:
                    assert await _exchange(kept, b"ping", "an echo") == b"ping"
                    close = "AsyncListener.close() never returned"
                    await within(running.listener.close(), PROMPT, close)
                    await within(
                        running.listener.close(),
                        PROMPT,
                        "a second AsyncListener.close() never returned: it must be idempotent "
                        "(the server calls it as it drains and again as it stops)",
                    )
                    assert not await running.served(), (
                        "a new connection was served after AsyncListener.close(): stop "
                        "accepting there (close the listening socket)"
                    )
                    answer = await _exchange(
                        kept,
                        b"still here",
                        "AsyncListener.close() ended a connection it had accepted: only stop "
                        "accepting (the core ends connections once their calls have answered)",
                    )
                    assert answer == b"still here", answer
                finally:
                    await _quietly(kept.close())

        run_async(check)


__all__ = [
    "AsyncTransportChecks",
    "RunningAsyncListener",
    "run_async",
    "wait_event",
    "within",
]
