"""`TransportConformance`: the tests every srpc transport must pass.

Each test runs a real `srpc_core.Server` serving the kit's `ConformanceService` over the
transport under test, in a background thread of the test process, and calls it with real
`srpc_core.Client` objects.
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
from typing import Any, ClassVar

import pytest

from srpc_core import protocol
from srpc_core.client import Client
from srpc_core.config import Config
from srpc_core.errors import CallTimeoutError, RemoteError, SrpcError, TransportError
from srpc_core.plugins import Plugins
from srpc_core.server import Server
from srpc_core.testing.interface import ConformanceError, ConformanceInterface
from srpc_core.testing.registry import CodecSpec, TransportSpec, plugins_for, registered_name
from srpc_core.testing.service import RENDEZVOUS_TIMEOUT, ConformanceService

#: The kit server's max_message_bytes: small enough to make "near the limit" cheap.
LIMIT = 1 << 20
#: Seconds any wait in the kit may take before it counts as a hang.
HANG = 10.0
#: How long a test waits for the server thread to return after `stop()`.
STOP_TIMEOUT = 20.0
RANDOM_SEED = 20240229


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

    def stop(self) -> None:
        """Stop the server and wait for `start()` to return; fail if it does not."""
        self.service.release.set()  # let any blocked call finish
        if self.thread.is_alive():
            self.server.stop()
            self.thread.join(STOP_TIMEOUT)
        assert not self.thread.is_alive(), f"the listener did not stop within {STOP_TIMEOUT} s"
        assert not self.errors, f"the server failed: {self.errors[0]!r}"


def start_server(
    transport: TransportSpec,
    options: Mapping[str, Any],
    codec: CodecSpec,
    codec_options: Mapping[str, Any],
    host: str,
    rendezvous_timeout: float = RENDEZVOUS_TIMEOUT,
) -> RunningServer:
    """Start the kit's server on `host`, port 0, in a background thread."""
    transport_name, codec_name = registered_name(transport), registered_name(codec)
    config = Config(
        transport=transport_name,
        codec=codec_name,
        host=host,
        port=0,
        timeout=HANG,
        max_message_bytes=LIMIT,
        metrics_path="",
        tables={transport_name: dict(options), codec_name: dict(codec_options)},
        source="the srpc conformance kit",
    )
    plugins = plugins_for(transport, codec)
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
    return RunningServer(server, thread, service, host, config, plugins, errors)


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


class TransportConformance:
    """Subclass it in a test module and name your transport; pytest runs every check on it::

        from srpc_core.testing import TransportConformance
        from my_plugin import MyTransport

        class TestMyTransport(TransportConformance):
            transport = MyTransport    # the factory you register, or a registered name: "my"

    Checked: calls and round trips, messages near `max_message_bytes` and refusal above it,
    call timeouts, many threads on one client, calls running side by side, exceptions coming
    back as themselves, garbage sent to the listener, shutdown letting calls in flight finish,
    and a clear error (never a hang) when no server is there.

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

    @pytest.fixture
    def listen_host(self) -> str:
        """The host the server listens on and clients connect to."""
        return self.host

    @pytest.fixture
    def running(self, listen_host: str) -> Iterator[RunningServer]:
        """A server of the kit's service over the transport under test."""
        spec = getattr(self, "transport", None)
        if spec is None:
            pytest.fail(f"{type(self).__name__} must set `transport = YourTransportClass`")
        running = start_server(
            spec,
            self.options,
            self.codec,
            self.codec_options,
            listen_host,
            self.rendezvous_timeout,
        )
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
        codec = running.plugins.codec(
            running.config.codec, running.config.options(running.config.codec)
        )
        overhead = len(codec.encode([2**31, "echo", [""], {}]))
        payload = "x" * (LIMIT - overhead - 16)
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

    def test_no_server_is_an_error_not_a_hang(self, running: RunningServer) -> None:
        client = running.client(timeout=2.0)
        running.stop()
        with client, pytest.raises((TransportError, CallTimeoutError)):
            client.call("add", (1, 2))


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
