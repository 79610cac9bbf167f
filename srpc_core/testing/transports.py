"""`TransportConformance`: the tests every srpc transport must pass.

Each test runs a real `srpc_core.Server` serving the kit's `ConformanceService` over the
transport under test, in a background thread of the test process, and calls it with real
`srpc_core.Client` objects. A transport with a native async side is also checked through
`srpc_core.AsyncClient` and the asyncio server, and on its `AsyncChannel` and `AsyncListener`
alone: those checks come from `srpc_core.testing.async_transports` (which says why they are
part of this class) and are skipped for a transport without one.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

import pytest

from srpc_core import protocol
from srpc_core.async_client import AsyncClient
from srpc_core.client import Client
from srpc_core.config import Config
from srpc_core.errors import (
    CallTimeoutError,
    ConfigError,
    FrameTooLargeError,
    RemoteError,
    SrpcError,
    TransportError,
)
from srpc_core.plugins import Plugins
from srpc_core.server import Server
from srpc_core.testing.async_transports import AsyncTransportChecks
from srpc_core.testing.interface import ConformanceError, ConformanceInterface
from srpc_core.testing.limits import (
    HANG,
    IDLE_TIMEOUT,
    LIMIT,
    LONG_DRAIN,
    NEAR_LIMIT_MARGIN,
    PROMPT,
    RANDOM_SEED,
    STOP_TIMEOUT,
)
from srpc_core.testing.registry import CodecSpec, TransportSpec, plugins_for, registered_name
from srpc_core.testing.service import RENDEZVOUS_TIMEOUT, ConformanceService
from srpc_core.transport import Channel, Handler, Listener, Transport, TransportSettings


@dataclasses.dataclass
class RunningServer:
    """A server running in a background thread, and what a test needs to talk to it."""

    server: Server
    thread: threading.Thread
    service: ConformanceService
    host: str
    config: Config
    plugins: Plugins
    errors: list[BaseException]
    #: How long `stop` waits for the server thread.
    stop_timeout: float = STOP_TIMEOUT

    @property
    def port(self) -> int:
        """The port clients use (the bound one: the kit listens on port 0)."""
        return self.server.port

    def client(
        self, *, timeout: float | None = None, max_message_bytes: int | None = None
    ) -> Client:
        """A new client of this server (close it, or use it as a context manager)."""
        config = self.config
        if max_message_bytes is not None:
            config = dataclasses.replace(config, max_message_bytes=max_message_bytes)
        return Client(
            ConformanceInterface,
            self.host,
            self.port,
            config=config,
            timeout=timeout,
            plugins=self.plugins,
        )

    def async_client(
        self, *, timeout: float | None = None, max_message_bytes: int | None = None
    ) -> AsyncClient:
        """A new asyncio client of this server (``async with`` it, or `aclose` it)."""
        config = self.config
        if max_message_bytes is not None:
            config = dataclasses.replace(config, max_message_bytes=max_message_bytes)
        return AsyncClient(
            ConformanceInterface,
            self.host,
            self.port,
            config=config,
            timeout=timeout,
            plugins=self.plugins,
        )

    def stop(self) -> None:
        """Stop the server and wait for `start()` to return; fail if it does not."""
        self.service.release.set()  # let any blocked call finish
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(self.stop_timeout)
        assert not self.thread.is_alive(), f"the listener did not stop within {self.stop_timeout} s"
        assert not self.errors, f"the server failed: {self.errors[0]!r}"


def start_server(
    transport: TransportSpec,
    options: Mapping[str, Any],
    codec: CodecSpec,
    codec_options: Mapping[str, Any],
    host: str,
    rendezvous_timeout: float = RENDEZVOUS_TIMEOUT,
    timeout: float = HANG,
    service: ConformanceService | None = None,
) -> RunningServer:
    """Start the kit's server on `host`, port 0, in a background thread.

    `timeout` is the config's: the clients' call timeout and the listener's drain timeout.
    `service` is what it serves (default: a new `ConformanceService`, plain methods: the
    threaded server); an `AsyncConformanceService` has ``async def`` methods, so `start()`
    runs the asyncio server, over the transport's async listener when it has one.
    """
    transport_name, codec_name = registered_name(transport), registered_name(codec)
    config = Config(
        transport=transport_name,
        codec=codec_name,
        host=host,
        port=0,
        timeout=timeout,
        max_message_bytes=LIMIT,
        metrics_path="",
        tables={transport_name: dict(options), codec_name: dict(codec_options)},
        source="the srpc conformance kit",
    )
    plugins = plugins_for(transport, codec)
    if service is None:
        service = ConformanceService(rendezvous_timeout)
    server = Server(ConformanceInterface, service, config=config, plugins=plugins)
    errors: list[BaseException] = []
    finished = threading.Event()

    def serve() -> None:
        try:
            server.start()
        except BaseException as exc:  # reported by the test, not lost in a thread
            errors.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=serve, name="srpc-conformance-server", daemon=True)
    thread.start()
    # Wait for serving, or for start() to fail (it then returns at once with the error).
    deadline = time.monotonic() + HANG
    while not server.wait_until_serving(0.05):
        if finished.is_set() or time.monotonic() > deadline:
            server.stop()
            reason = repr(errors[0]) if errors else f"not serving after {HANG} s"
            raise AssertionError(f"the conformance server did not start: {reason}")
    return RunningServer(
        server, thread, service, host, config, plugins, errors, max(STOP_TIMEOUT, 2 * timeout)
    )


@dataclasses.dataclass
class RunningListener:
    """A listener of the transport under test serving a handler of the test's own."""

    listener: Listener
    #: The transport built with the clients' settings.
    client_transport: Transport
    host: str

    def channel(self) -> Channel:
        """A new channel to the listener (close it)."""
        return self.client_transport.connect(self.host, self.listener.port, HANG)


@contextmanager
def serve_handler(
    transport: TransportSpec,
    options: Mapping[str, Any],
    host: str,
    handler: Handler,
    *,
    max_message_bytes: int = LIMIT,
    client_max_message_bytes: int = LIMIT,
) -> Iterator[RunningListener]:
    """Run the transport's listener on `host`, port 0, serving `handler`, with no srpc server.

    This lets the kit check what a listener and a channel do on their own: with a handler that
    raises, or replies larger than the client accepts. Clients get `client_max_message_bytes`.
    """
    plugins = plugins_for(transport, "json")
    name = registered_name(transport)
    server_side = plugins.transport(name, TransportSettings(options, max_message_bytes, HANG))
    client_side = plugins.transport(
        name, TransportSettings(options, client_max_message_bytes, HANG)
    )
    listener = server_side.listen(host, 0, handler)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            listener.serve_forever()
        except BaseException as exc:  # reported below, not lost in a thread
            failures.append(exc)

    thread = threading.Thread(target=serve, name="srpc-conformance-listener", daemon=True)
    thread.start()
    try:
        yield RunningListener(listener, client_side, host)
    finally:
        listener.shutdown()
        thread.join(STOP_TIMEOUT)
    assert not thread.is_alive(), f"the listener did not stop within {STOP_TIMEOUT} s"
    assert not failures, f"serve_forever() failed: {failures[0]!r}"


def connect_raw(address: str, timeout: float) -> socket.socket | None:
    """A plain socket to a listener's address URL, or None if the kit cannot tell how.

    Understands ``scheme://host:port`` (TCP) and ``scheme:///path`` where the path is a Unix
    domain socket.
    """
    _, sep, rest = address.partition("://")
    if not sep:
        return None
    if os.path.exists(rest) and stat.S_ISSOCK(os.stat(rest).st_mode):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(rest)
        return sock
    host, _, port = rest.rstrip("/").rpartition(":")
    if host and port.isdigit():
        return socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    return None


class TransportConformance(AsyncTransportChecks):
    """Subclass it in a test module and name your transport; pytest runs every check on it::

        from srpc_core.testing import TransportConformance
        from my_plugin import MyTransport

        class TestMyTransport(TransportConformance):
            transport = MyTransport    # the factory you register, or a registered name: "my"

    Checked: calls and round trips, messages near `max_message_bytes` and refusal above it (by
    the listener, and by the channel for replies), call timeouts, many threads on one client,
    calls running side by side, exceptions coming back as themselves, garbage sent to the
    listener, a handler that raises, silent connections dropped after the idle timeout
    (`idle_timeout_option`), shutdown letting calls in flight finish and not waiting for idle
    connections, and a clear error (never a hang) when no server is there.

    With a native async side (`open_async_channel`, `bind_async`), the ``test_async_*`` checks
    (`AsyncTransportChecks`) run it too; without one they are skipped, saying so.

    The server listens on `host` (override the `listen_host` fixture to compute it per test,
    e.g. a directory under ``tmp_path``) and port 0; override `raw_socket` if the kit cannot
    reach your listener with a plain socket for the garbage tests.
    """

    #: The transport under test: its factory (usually the class) or its registered name.
    transport: ClassVar[TransportSpec]
    #: The transport's options (its ``[srpc.<name>]`` table).
    options: ClassVar[Mapping[str, Any]] = {}
    #: The codec the calls are encoded with: a registered name or a factory.
    codec: ClassVar[CodecSpec] = "json"
    #: The codec's options.
    codec_options: ClassVar[Mapping[str, Any]] = {}
    #: Where the kit's server listens (with port 0).
    host: ClassVar[str] = "127.0.0.1"
    #: How long concurrent calls wait for each other before the kit calls the transport serial.
    rendezvous_timeout: ClassVar[float] = RENDEZVOUS_TIMEOUT
    #: The transport's option (in ``[srpc.<name>]``) that sets, in seconds, how long its
    #: listener keeps a silent connection. The kit sets it to `IDLE_TIMEOUT` and checks that a
    #: silent peer is dropped. None: the transport keeps no connections a peer could hold open
    #: (the check is skipped, saying so).
    idle_timeout_option: ClassVar[str | None] = "idle_timeout"

    @pytest.fixture
    def listen_host(self) -> str:
        """The host the server listens on and clients connect to."""
        return self.host

    @pytest.fixture
    def running(self, listen_host: str) -> Iterator[RunningServer]:
        """A server of the kit's service over the transport under test."""
        running = self._start(listen_host, self.options)
        try:
            yield running
        finally:
            running.stop()

    def raw_socket(self, running: RunningServer) -> socket.socket | None:
        """A plain socket connected to the listener (for garbage), or None to skip those."""
        return connect_raw(running.server.address, HANG)

    # -- calls -------------------------------------------------------------------------------

    def test_calls_round_trip(self, running: RunningServer) -> None:
        with running.client() as client:
            assert [client.call("add", (i, 1)) for i in range(50)] == list(range(1, 51))
            text = "\x00srpc ünïcødé ✓ 🚀"
            assert client.call("echo", (text,)) == text
            assert client.call("echo", ([1, {"a": None}],)) == [1, {"a": None}]

    def test_listener_reports_its_address(self, running: RunningServer) -> None:
        assert "://" in running.server.address
        assert isinstance(running.port, int) and running.port >= 0

    def test_large_messages_near_the_limit(self, running: RunningServer) -> None:
        # The request's other fields (id, session, procedure, metadata) take far less than
        # NEAR_LIMIT_MARGIN bytes, whatever the protocol version puts in them.
        payload = "x" * (LIMIT - NEAR_LIMIT_MARGIN)
        with running.client() as client:
            assert client.call("echo", (payload,)) == payload
            assert client.call("add", (2, 2)) == 4

    def test_a_request_above_the_limit_is_refused_and_the_server_goes_on(
        self, running: RunningServer
    ) -> None:
        with running.client(max_message_bytes=4 * LIMIT) as big_sender:
            with pytest.raises(SrpcError) as refused:
                big_sender.call("echo", ("x" * (LIMIT + 4096),))
            assert not isinstance(refused.value, CallTimeoutError), "refusal must not be a hang"
            assert big_sender.call("add", (1, 2)) == 3
        with running.client() as client:
            assert client.call("add", (1, 2)) == 3

    def test_a_response_above_the_limit_is_an_error_for_that_caller(
        self, running: RunningServer
    ) -> None:
        with running.client() as client:
            with pytest.raises(SrpcError) as refused:
                client.call("blob", (LIMIT + 4096,))
            assert not isinstance(refused.value, CallTimeoutError), "refusal must not be a hang"
            assert client.call("add", (1, 2)) == 3

    def test_the_channel_refuses_a_reply_above_its_limit(self, listen_host: str) -> None:
        # The listener may send up to 4 * LIMIT; the client's channel accepts LIMIT.
        def big_replies(message: bytes) -> bytes:
            return b"y" * (LIMIT + 4096) if message == b"big" else message

        with self._serve_handler(listen_host, big_replies, 4 * LIMIT) as running:
            channel = running.channel()
            try:
                assert channel.request(b"small", HANG) == b"small"
                try:
                    reply = channel.request(b"big", HANG)
                except FrameTooLargeError:
                    pass
                except TransportError:  # e.g. libzmq drops an oversized message and the link
                    pass
                except CallTimeoutError:
                    pytest.fail("a reply above max_message_bytes made the channel time out")
                else:
                    pytest.fail(
                        f"the channel returned a {len(reply)}-byte reply; max_message_bytes is "
                        f"{LIMIT}: raise FrameTooLargeError (before reading the reply's body)"
                    )
            finally:
                channel.close()

    def test_a_slow_call_times_out(self, running: RunningServer) -> None:
        with running.client(timeout=1.0) as client:
            with pytest.raises(CallTimeoutError):
                client.call("block", ("slow",))
            running.service.release.set()
            assert client.call("add", (1, 2)) == 3  # the client recovers from the timeout

    def test_concurrent_calls_from_many_threads_on_one_client(self, running: RunningServer) -> None:
        with running.client() as client, ThreadPoolExecutor(8) as pool:
            values = [[i, f"call-{i}"] for i in range(200)]
            assert list(pool.map(lambda v: client.call("echo", (v,)), values)) == values

    def test_calls_run_side_by_side(self, running: RunningServer) -> None:
        # Each call waits until all four are inside the procedure at once: a transport that
        # serves one call at a time makes them fail instead.
        parties = 4
        with running.client() as client, ThreadPoolExecutor(parties) as pool:
            results = list(pool.map(lambda _: client.call("rendezvous", (parties,)), range(4)))
        assert results == [parties] * parties

    # -- errors ------------------------------------------------------------------------------

    def test_exceptions_come_back_as_themselves(self, running: RunningServer) -> None:
        with running.client() as client:
            with pytest.raises(ZeroDivisionError, match="division by zero") as zero:
                client.call("fail", ("ZeroDivisionError", "division by zero"))
            assert type(zero.value) is ZeroDivisionError
            with pytest.raises(KeyError) as key:
                client.call("fail", ("KeyError", "missing"))
            assert key.value.args == ("missing",)
            with pytest.raises(ConformanceError) as declared:
                client.call("fail", ("ConformanceError", "declared by the interface"))
            assert type(declared.value) is ConformanceError
            assert declared.value.args == ("declared by the interface",)

    def test_undeclared_exceptions_come_back_as_remote_errors(self, running: RunningServer) -> None:
        with running.client() as client, pytest.raises(ValueError) as raised:
            client.call("fail", ("ServerOnlyError", "only the server knows this class"))
        assert isinstance(raised.value, RemoteError)
        assert raised.value.remote_type == "ServerOnlyError"
        assert "only the server knows this class" in str(raised.value)

    # -- garbage -----------------------------------------------------------------------------

    def test_garbage_messages_get_an_answer(self, running: RunningServer) -> None:
        rng = random.Random(RANDOM_SEED)
        garbage = [b"", b"\x00srpc", b"\x00srpc{not json", b"\x00srpc[]", rng.randbytes(512)]
        garbage += [bytes([b]) + rng.randbytes(40) for b in (0x00, 0x7F, 0x80, 0xFF)]
        channel = running.server.transport.connect(running.host, running.port, HANG)
        try:
            for message in garbage:
                reply = channel.request(message, HANG)
                assert protocol.is_control(reply), f"no control error for {message[:16]!r}"
        finally:
            channel.close()
            channel.close()  # close must be idempotent
        with running.client() as client:
            assert client.call("add", (2, 3)) == 5

    def test_raw_garbage_does_not_kill_the_listener(self, running: RunningServer) -> None:
        rng = random.Random(RANDOM_SEED)
        garbage = [
            rng.randbytes(1024),
            b"\xff\xff\xff\xff" + rng.randbytes(64),
            b"\x00\x00\x00\x10short",
            b"GET / HTTP/1.1\r\nHost: srpc\r\n\r\n",
            b"\x00srpc" * 20,
            b"",
        ]
        for data in garbage:
            sock = self.raw_socket(running)
            if sock is None:
                pytest.skip("override raw_socket() to let the kit reach this listener")
            _send_and_hang_up(sock, data)
        for _ in range(20):  # connections that say nothing at all
            sock = self.raw_socket(running)
            assert sock is not None
            sock.close()
        with running.client() as client:
            assert client.call("add", (2, 3)) == 5

    def test_a_handler_that_raises_gets_a_control_error_and_the_listener_goes_on(
        self, listen_host: str
    ) -> None:
        def failing(message: bytes) -> bytes:
            if message == b"raise":
                raise RuntimeError("a bug in the handler")
            return message

        with self._serve_handler(listen_host, failing, LIMIT) as running:
            channel = running.channel()
            try:
                try:
                    reply = channel.request(b"raise", HANG)
                except SrpcError as exc:
                    pytest.fail(
                        f"a handler that raised cost the client its call: {exc!r}; catch "
                        "Exception around handler(message) and answer with a control error "
                        "(srpc_core.transport.answer does both)"
                    )
                assert protocol.is_control(reply), f"not a control error: {reply[:40]!r}"
                assert not protocol.decode_control(reply).get("ok"), reply
                assert channel.request(b"same connection", HANG) == b"same connection"
            finally:
                channel.close()
            other = running.channel()
            try:
                assert other.request(b"new connection", HANG) == b"new connection"
            finally:
                other.close()

    def test_a_silent_connection_is_dropped_after_the_idle_timeout(self, listen_host: str) -> None:
        option = self.idle_timeout_option
        if option is None:
            pytest.skip("idle_timeout_option is None: the transport keeps no idle connections")
        running = self._start(listen_host, {**self.options, option: IDLE_TIMEOUT})
        try:
            sock = self.raw_socket(running)
            if sock is None:
                pytest.skip("override raw_socket() to let the kit reach this listener")
            with sock:
                sock.settimeout(HANG)
                try:
                    dropped = sock.recv(1) == b""
                except TimeoutError:
                    dropped = False
                except OSError:  # reset: dropped too
                    dropped = True
            assert dropped, (
                f"a connection that said nothing was still open after {HANG} s, with "
                f"[srpc.<name>] {option} = {IDLE_TIMEOUT}: close silent connections after it"
            )
            with running.client() as client:
                assert client.call("add", (2, 3)) == 5
        finally:
            running.stop()

    # -- lifecycle ---------------------------------------------------------------------------

    def test_shutdown_lets_calls_in_flight_finish(self, running: RunningServer) -> None:
        outcome: list[Any] = []
        with running.client() as client:
            caller = threading.Thread(target=_call_into, args=(client, outcome, "in flight"))
            caller.start()
            assert running.service.entered.wait(HANG), "block() never started"
            running.server.stop()
            running.thread.join(0.2)
            assert running.thread.is_alive(), "start() returned while a call was in flight"
            running.service.release.set()
            caller.join(HANG)
        assert outcome == ["in flight"], f"the call in flight did not finish: {outcome}"
        running.thread.join(STOP_TIMEOUT)
        assert not running.thread.is_alive(), "start() did not return after the call finished"

    def test_shutdown_does_not_wait_for_idle_connections(self, listen_host: str) -> None:
        running = self._start(listen_host, self.options, timeout=LONG_DRAIN)
        client = running.client(timeout=HANG)
        sock: socket.socket | None = None
        try:
            assert client.call("add", (1, 2)) == 3  # its connection now waits in the client
            sock = self.raw_socket(running)  # a peer that never says anything
            started = time.monotonic()
            running.server.stop()
            running.thread.join(PROMPT)
            assert not running.thread.is_alive(), (
                f"with only idle connections open, shutdown took more than {PROMPT} s (the "
                f"drain timeout is {LONG_DRAIN} s): wake connections waiting for a request "
                "and close them; wait only for calls in flight"
            )
            assert time.monotonic() - started < PROMPT
        finally:
            client.close()  # lets a listener that waits for its peers finish at once
            if sock is not None:
                sock.close()
            running.stop()

    def test_no_server_is_an_error_not_a_hang(self, running: RunningServer) -> None:
        client = running.client(timeout=2.0)
        running.stop()
        with client, pytest.raises((TransportError, CallTimeoutError)):
            client.call("add", (1, 2))

    # -- helpers -----------------------------------------------------------------------------

    def _start(
        self,
        listen_host: str,
        options: Mapping[str, Any],
        timeout: float = HANG,
        service: ConformanceService | None = None,
    ) -> RunningServer:
        spec = self._spec()
        try:
            return start_server(
                spec,
                options,
                self.codec,
                self.codec_options,
                listen_host,
                self.rendezvous_timeout,
                timeout,
                service,
            )
        except ConfigError as exc:
            option = self.idle_timeout_option
            if option is None or options.get(option) != IDLE_TIMEOUT:
                raise
            pytest.fail(
                f"the transport refused [srpc.<name>] {option} = {IDLE_TIMEOUT} ({exc}): set "
                "`idle_timeout_option` to the name of its idle-timeout option (seconds), or to "
                "None if it keeps no connections"
            )

    def _serve_handler(
        self, listen_host: str, handler: Handler, max_message_bytes: int
    ) -> AbstractContextManager[RunningListener]:
        return serve_handler(
            self._spec(), self.options, listen_host, handler, max_message_bytes=max_message_bytes
        )

    def _spec(self) -> TransportSpec:
        spec = getattr(self, "transport", None)
        if spec is None:
            pytest.fail(f"{type(self).__name__} must set `transport = YourTransportClass`")
        return spec


def _call_into(client: Client, outcome: list[Any], value: str) -> None:
    try:
        outcome.append(client.call("block", (value,)))
    except Exception as exc:  # shown in the assertion message
        outcome.append(exc)


def _send_and_hang_up(sock: socket.socket, data: bytes) -> None:
    """Send `data`, close our side, and read until the server closes (or HANG passes)."""
    with sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:  # refused, reset or timed out: all fine, the server decides
            pass


__all__ = [
    "HANG",
    "IDLE_TIMEOUT",
    "LIMIT",
    "LONG_DRAIN",
    "NEAR_LIMIT_MARGIN",
    "PROMPT",
    "RANDOM_SEED",
    "STOP_TIMEOUT",
    "RunningListener",
    "RunningServer",
    "TransportConformance",
    "connect_raw",
    "serve_handler",
    "start_server",
]
