"""srpc's benchmark suite: srpc against the raw-socket floor and other Python RPC libraries.

    python bench/run.py                  # 3 rounds, under 5 minutes on 2 cores
    python bench/run.py --quick          # 1 short round, under a minute
    python bench/run.py --json out.json  # also write every measurement as JSON
    pip install 'srpclib[bench]'         # adds rpyc, Pyro5 and grpcio to the comparison

Workloads, each against a fresh server process:

* **W1**: sequential ``add(i, 1)`` calls on one connection, each timed; p50 and p99 in us.
* **W2**: sequential ``echo(data)`` of 1 KiB, 64 KiB and 1 MiB of bytes; MB/s of payload echoed
  (payload bytes / round-trip time, counted once, though they travel both ways).
* **W3**: 8 client threads in one client process, each with its own connection, calling
  ``add`` as fast as they can for a fixed time; calls/s in total.
* **W4**: one async client process, 256 calls of ``add`` in flight on one connection for a
  fixed time (256 tasks, each calling again when its call returns); calls/s in total. Only
  for the systems with a native async side: srpc over a transport that has one (``tcp``
  today; found out by the run: a transport whose async client bridges to threads shows "-"),
  with srpc's ``AsyncClient``, which matches answers to calls by id; the floor, with a bare
  ``asyncio.Protocol`` client that matches them by order. Measured on asyncio's own event
  loop and, when uvloop is installed, on uvloop's as well (a column each); each is shown with
  its ratio to the floor's and to the same system's W3 (the sync client's 8 threads; the
  median of the rounds' ratios).

Also: the server's resident memory once it is ready (RSS, MiB), and its start-up time (process
start to ready, s).

Systems: the **floor** (a length-prefixed echo server and client on bare sockets, written with
the standard library and nothing else: the least Python can do per round trip), **srpc** in
every built-in transport and codec combination (tcp/zmq x json/cbor/msgpack; the metrics log
off; the threaded server, which ``start()`` runs for plain methods), srpc over tcp with the
**asyncio server** (the same service with ``async def`` methods, for which ``start()`` runs
the asyncio server on asyncio's loop; a row per codec), **stdlib xmlrpc**
(``SimpleXMLRPCServer`` with threads and HTTP/1.1 keep-alive, ``ServerProxy``), and, when
they are installed (the ``bench`` extra), **rpyc** (a ``ThreadedServer``), **Pyro5** (its
defaults: serpent, a thread pool) and **grpcio** (a generic handler with raw-bytes request
and response bodies, so no protobuf cost is counted).
Every call is checked (results and echo lengths), so a system cannot win by doing less.

Method: every server and every client runs in its own process; the server is pinned to one CPU
and the client to another with ``os.sched_setaffinity`` (the output says which, or says that
the machine has one CPU and they share it). Each round runs every system once, in an order
rotated by one place from the round before, so drift and background load spread over all of
them; a system's figure is the median over rounds. Ratios are to the floor of the same run.

Machine behaviour to keep in mind: on the VMs this was written on, a vCPU that has gone idle
adds about 65 us to a loopback round trip (the wake-up of the peer's CPU), so absolute figures
swing with load and between machines. Compare ratios within one run, never absolute figures
across runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio  # imported where used: it would add about 11 MiB to every server's RSS

REPO = Path(__file__).resolve().parent.parent
SIZES = {"1KiB": 1024, "64KiB": 64 * 1024, "1MiB": 1024 * 1024}
THREADS = 8
IN_FLIGHT = 256  # W4: calls in flight on the async client's one connection
HOST = "127.0.0.1"
SRPC_COMBOS = [(t, c) for t in ("tcp", "zmq") for c in ("json", "cbor", "msgpack")]
FLOOR = "raw socket"
#: W4's event loops: asyncio's own, and uvloop's when it is installed.
LOOPS = ["asyncio"] + (["uvloop"] if importlib.util.find_spec("uvloop") is not None else [])
W4_KEYS = {"asyncio": "w4_calls_per_s", "uvloop": "w4_uvloop_calls_per_s"}
#: A W4 figure's ratio to the W3 of the same round (same client process, seconds apart: steadier
#: under changing load than the ratio of two medians).
OVER_W3 = {"w4_calls_per_s": "w4_over_w3", "w4_uvloop_calls_per_s": "w4_uvloop_over_w3"}
MACHINE_NOTE = (
    "On these VMs an idle vCPU adds about 65 us to a loopback round trip, so absolute figures "
    "swing with load; compare ratios within one run."
)


@dataclass(frozen=True)
class Profile:
    """How much each workload does."""

    rounds: int
    w1_calls: int
    w1_warmup: int
    w2_seconds: float  # per payload size, at most
    w2_max_calls: dict[str, int]
    w3_seconds: float
    w4_seconds: float  # per event loop


DEFAULT = Profile(3, 3000, 300, 0.6, {"1KiB": 3000, "64KiB": 1000, "1MiB": 150}, 1.5, 1.0)
QUICK = Profile(1, 1000, 100, 0.25, {"1KiB": 600, "64KiB": 200, "1MiB": 30}, 0.6, 0.5)


# -- the service every system serves ----------------------------------------------------------


class BenchInterface(ABC):
    """What srpc serves (the other systems serve the same two procedures)."""

    @abstractmethod
    def add(self, a: int, b: int) -> int: ...

    @abstractmethod
    def echo(self, data: bytes) -> bytes: ...


class Bench(BenchInterface):
    def add(self, a: int, b: int) -> int:
        return a + b

    def echo(self, data: bytes) -> bytes:
        return data


class AsyncBench(BenchInterface):
    """The same service with ``async def`` methods: `Server.start()` runs the asyncio server."""

    async def add(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + b

    async def echo(self, data: bytes) -> bytes:  # type: ignore[override]
        return data


# -- servers: each runs in its own process, prints "READY <port>", serves until killed --------


def serve_floor() -> None:
    listener = socket.create_server((HOST, 0))
    ready(listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=_floor_connection, args=(conn,), daemon=True).start()


def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view, got = memoryview(buffer), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("peer closed")
        got += n
    return buffer


def _floor_connection(conn: socket.socket) -> None:
    """Frames: 4-byte length, then b"A" + two int64 (reply: their sum) or b"E" + payload."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            (size,) = struct.unpack(">I", _recv_exactly(conn, 4))
            body = _recv_exactly(conn, size)
            if body[:1] == b"A":
                a, b = struct.unpack_from(">qq", body, 1)
                conn.sendall(b"\x00\x00\x00\x08" + struct.pack(">q", a + b))
            else:
                conn.sendmsg([struct.pack(">I", size - 1), memoryview(body)[1:]])
    except (ConnectionError, OSError):
        conn.close()


def srpc_config(transport: str, codec: str, port: int, event_loop: str = "asyncio") -> Any:
    from srpc_core import Config

    # max_in_flight: what the server advertises bounds the async client (W4); the threaded
    # server only advertises it (it answers a connection's calls one after another).
    return Config(
        transport=transport,
        codec=codec,
        host=HOST,
        port=port,
        metrics_path="",
        max_in_flight=IN_FLIGHT,
        event_loop=event_loop,
    )


def serve_srpc(transport: str, codec: str, asyncio_server: bool = False) -> None:
    from srpc_core import Server

    implementation = AsyncBench() if asyncio_server else Bench()
    config = srpc_config(transport, codec, 0)
    server = Server(BenchInterface, implementation, config=config)
    thread = threading.Thread(target=server.start, daemon=True)
    thread.start()
    if not server.wait_until_serving(30):
        raise SystemExit("the srpc server did not start")
    ready(server.port)
    thread.join()


def serve_xmlrpc() -> None:
    from socketserver import ThreadingMixIn
    from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

    class Handler(SimpleXMLRPCRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection per client, like the others

    class Threaded(ThreadingMixIn, SimpleXMLRPCServer):
        daemon_threads = True

    server = Threaded((HOST, 0), Handler, logRequests=False, allow_none=True)
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(lambda data: data, "echo")
    ready(server.server_address[1])
    server.serve_forever()


def serve_rpyc() -> None:
    import rpyc
    from rpyc.utils.server import ThreadedServer

    class Service(rpyc.Service):
        def exposed_add(self, a: int, b: int) -> int:
            return a + b

        def exposed_echo(self, data: bytes) -> bytes:
            return data

    server = ThreadedServer(Service, hostname=HOST, port=0)
    ready(server.port)
    server.start()


def serve_pyro5() -> None:
    import Pyro5.api

    @Pyro5.api.expose
    class Service:
        def add(self, a: int, b: int) -> int:
            return a + b

        def echo(self, data: Any) -> Any:
            return data

    daemon = Pyro5.api.Daemon(host=HOST, port=0)
    daemon.register(Service, "bench")
    ready(daemon.locationStr.rsplit(":", 1)[1])
    daemon.requestLoop()


def serve_grpc() -> None:
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    def add(request: bytes, context: Any) -> bytes:
        a, b = struct.unpack(">qq", request)
        return struct.pack(">q", a + b)

    handlers = {
        "Add": grpc.unary_unary_rpc_method_handler(add),
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
    }
    server = grpc.server(
        ThreadPoolExecutor(max_workers=THREADS + 2),
        handlers=[grpc.method_handlers_generic_handler("bench.Bench", handlers)],
        options=[("grpc.max_receive_message_length", 8 << 20)],
    )
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    ready(port)
    server.wait_for_termination()


def ready(port: int | str) -> None:
    print(f"READY {port}", flush=True)


# -- clients: add(a, b) and echo(data) over one connection ------------------------------------


class BenchClient(ABC):
    @abstractmethod
    def add(self, a: int, b: int) -> int: ...

    @abstractmethod
    def echo(self, data: bytes) -> bytes: ...

    def bind_thread(self) -> None:  # noqa: B027  # optional
        """Called in the thread that will use the client (W3), before its first call."""

    def close(self) -> None:  # noqa: B027  # optional
        pass


class FloorClient(BenchClient):
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _round_trip(self, parts: list[bytes]) -> bytearray:
        self.sock.sendmsg(parts)
        (size,) = struct.unpack(">I", _recv_exactly(self.sock, 4))
        return _recv_exactly(self.sock, size)

    def add(self, a: int, b: int) -> int:
        body = b"A" + struct.pack(">qq", a, b)
        result: int = struct.unpack(">q", self._round_trip([b"\x00\x00\x00\x11", body]))[0]
        return result

    def echo(self, data: bytes) -> bytes:
        return bytes(self._round_trip([struct.pack(">I", len(data) + 1), b"E", data]))

    def close(self) -> None:
        self.sock.close()


class SrpcClient(BenchClient):
    def __init__(self, port: int, transport: str, codec: str) -> None:
        from srpc_core import Client

        self.client = Client(BenchInterface, config=srpc_config(transport, codec, port))
        self.call = self.client.call

    def add(self, a: int, b: int) -> int:
        result: int = self.call("add", (a, b))
        return result

    def echo(self, data: bytes) -> bytes:
        result: bytes = self.call("echo", (data,))
        return result

    def close(self) -> None:
        self.client.close()


class XmlrpcClient(BenchClient):
    def __init__(self, port: int) -> None:
        import xmlrpc.client

        self.binary = xmlrpc.client.Binary
        self.proxy: Any = xmlrpc.client.ServerProxy(f"http://{HOST}:{port}/", allow_none=True)

    def add(self, a: int, b: int) -> int:
        result: int = self.proxy.add(a, b)
        return result

    def echo(self, data: bytes) -> bytes:
        result: bytes = self.proxy.echo(self.binary(data)).data
        return result

    def close(self) -> None:
        self.proxy("close")()


class RpycClient(BenchClient):
    def __init__(self, port: int) -> None:
        import rpyc

        self.conn = rpyc.connect(HOST, port)
        self.root = self.conn.root

    def add(self, a: int, b: int) -> int:
        result: int = self.root.add(a, b)
        return result

    def echo(self, data: bytes) -> bytes:
        result: bytes = self.root.echo(data)
        return result

    def close(self) -> None:
        self.conn.close()


class Pyro5Client(BenchClient):
    def __init__(self, port: int) -> None:
        import Pyro5.api
        import serpent

        self.proxy = Pyro5.api.Proxy(f"PYRO:bench@{HOST}:{port}")
        self.tobytes = serpent.tobytes

    def bind_thread(self) -> None:
        self.proxy._pyroClaimOwnership()  # a Pyro5 proxy belongs to one thread at a time

    def add(self, a: int, b: int) -> int:
        result: int = self.proxy.add(a, b)
        return result

    def echo(self, data: bytes) -> bytes:
        # serpent sends bytes as base64 text; the client turns them back, as users must.
        result: bytes = self.tobytes(self.proxy.echo(data))
        return result

    def close(self) -> None:
        self.proxy._pyroClaimOwnership()
        self.proxy._pyroRelease()


class GrpcClient(BenchClient):
    def __init__(self, port: int) -> None:
        import grpc

        self.channel = grpc.insecure_channel(
            f"{HOST}:{port}",
            options=[
                ("grpc.max_receive_message_length", 8 << 20),
                ("grpc.use_local_subchannel_pool", 1),  # a connection of its own per client
            ],
        )
        self._add = self.channel.unary_unary("/bench.Bench/Add")
        self._echo = self.channel.unary_unary("/bench.Bench/Echo")

    def add(self, a: int, b: int) -> int:
        result: int = struct.unpack(">q", self._add(struct.pack(">qq", a, b)))[0]
        return result

    def echo(self, data: bytes) -> bytes:
        result: bytes = self._echo(data)
        return result

    def close(self) -> None:
        self.channel.close()


# -- async clients (W4): add(a, b) with many calls in flight on one connection ---------------


class AsyncBenchClient(ABC):
    @abstractmethod
    async def open(self) -> bool:
        """Connect; whether the calls share one multiplexed connection (else: no W4)."""

    @abstractmethod
    async def add(self, a: int, b: int) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...


def _floor_protocol() -> type[asyncio.Protocol]:
    """The floor's asyncio protocol (a function: asyncio is imported only by the async side)."""
    import asyncio

    class _FloorProtocol(asyncio.Protocol):
        """The floor's frames on asyncio; the floor server answers in order, so the answers are
        matched to the calls by order."""

        def __init__(self) -> None:
            self.buffer = bytearray()
            self.waiting: deque[asyncio.Future[bytes]] = deque()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport
            self.transport.get_extra_info("socket").setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer
            buffer += data
            start = 0
            while len(buffer) - start >= 4:
                (size,) = struct.unpack_from(">I", buffer, start)
                end = start + 4 + size
                if end > len(buffer):
                    break
                self.waiting.popleft().set_result(bytes(buffer[start + 4 : end]))
                start = end
            del buffer[:start]

        def connection_lost(self, exc: Exception | None) -> None:
            for future in self.waiting:
                if not future.done():
                    future.set_exception(ConnectionError("the floor server closed the connection"))

    return _FloorProtocol


class FloorAsyncClient(AsyncBenchClient):
    def __init__(self, port: int, event_loop: str) -> None:
        self.port = port

    async def open(self) -> bool:
        import asyncio

        self.loop = asyncio.get_running_loop()
        connected = await self.loop.create_connection(_floor_protocol(), HOST, self.port)
        self.protocol: Any = connected[1]
        return True

    async def add(self, a: int, b: int) -> int:
        future = self.loop.create_future()
        self.protocol.waiting.append(future)
        self.protocol.transport.write(b"\x00\x00\x00\x11A" + struct.pack(">qq", a, b))
        result: int = struct.unpack(">q", await future)[0]
        return result

    async def close(self) -> None:
        self.protocol.transport.close()


class SrpcAsyncClient(AsyncBenchClient):
    def __init__(self, port: int, event_loop: str, transport: str, codec: str) -> None:
        from srpc_core import AsyncClient

        config = srpc_config(transport, codec, port, event_loop)
        self.client = AsyncClient(BenchInterface, config=config)
        self.call = self.client.call

    async def open(self) -> bool:
        if await self.call("add", (0, 1)) != 1:
            raise AssertionError("wrong sum")
        # None: the transport has no native async side, and the client bridges its calls to
        # sync channels in threads (a channel per call in flight), which is not W4.
        return self.client._shared.connection is not None

    async def add(self, a: int, b: int) -> int:
        result: int = await self.call("add", (a, b))
        return result

    async def close(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True)
class System:
    name: str
    serve: Callable[[], None]
    client: Callable[[int], BenchClient]
    needs: str = ""  # a module that must be importable
    #: The async client for W4 (port, event loop); None, or a client whose transport has no
    #: native async side: no W4.
    async_client: Callable[[int, str], AsyncBenchClient] | None = None


def systems() -> dict[str, System]:
    found = [System(FLOOR, serve_floor, FloorClient, async_client=FloorAsyncClient)]
    for transport, codec in SRPC_COMBOS:
        found.append(
            System(
                f"srpc {transport}+{codec}",
                lambda t=transport, c=codec: serve_srpc(t, c),  # type: ignore[misc]
                lambda port, t=transport, c=codec: SrpcClient(port, t, c),  # type: ignore[misc]
                "zmq" if transport == "zmq" else ("cbor2" if codec == "cbor" else ""),
                lambda port, loop, t=transport, c=codec: SrpcAsyncClient(port, loop, t, c),  # type: ignore[misc]
            )
        )
    for codec in ("json", "cbor", "msgpack"):
        found.append(
            System(
                f"srpc tcp+{codec}, asyncio server",
                lambda c=codec: serve_srpc("tcp", c, asyncio_server=True),  # type: ignore[misc]
                lambda port, c=codec: SrpcClient(port, "tcp", c),  # type: ignore[misc]
                "cbor2" if codec == "cbor" else "",
                lambda port, loop, c=codec: SrpcAsyncClient(port, loop, "tcp", c),  # type: ignore[misc]
            )
        )
    found += [
        System("xmlrpc", serve_xmlrpc, XmlrpcClient),
        System("rpyc", serve_rpyc, RpycClient, "rpyc"),
        System("Pyro5", serve_pyro5, Pyro5Client, "Pyro5"),
        System("grpcio", serve_grpc, GrpcClient, "grpc"),
    ]
    return {system.name: system for system in found}


def available(system: System) -> bool:
    return not system.needs or importlib.util.find_spec(system.needs) is not None


# -- the workloads (in the client process) -----------------------------------------------------


def run_workloads(system: System, port: int, profile: Profile, turn: int) -> dict[str, float]:
    results: dict[str, float] = {}
    client = system.client(port)
    try:
        # W1: sequential add, each call timed.
        for i in range(profile.w1_warmup):
            client.add(i, 1)
        timings = []
        clock = time.perf_counter_ns
        for i in range(profile.w1_calls):
            started = clock()
            result = client.add(i, 1)
            timings.append(clock() - started)
            if result != i + 1:
                raise AssertionError(f"{system.name}: add({i}, 1) returned {result!r}")
        timings.sort()
        results["w1_p50_us"] = timings[len(timings) // 2] / 1000
        results["w1_p99_us"] = timings[int(len(timings) * 0.99)] / 1000
        # W2: echo of bytes, by size; MB/s from the median round trip.
        for label, size in SIZES.items():
            payload = os.urandom(size)
            client.echo(payload)  # warm-up (and a check)
            rounds: list[float] = []
            deadline = time.perf_counter() + profile.w2_seconds
            while len(rounds) < profile.w2_max_calls[label] and (
                len(rounds) < 5 or time.perf_counter() < deadline
            ):
                began = time.perf_counter()
                back = client.echo(payload)
                rounds.append(time.perf_counter() - began)
                if len(back) != size:
                    raise AssertionError(f"{system.name}: echo of {size} bytes -> {len(back)}")
            results[f"w2_{label}_MBps"] = size / statistics.median(rounds) / 1e6
    finally:
        client.close()
    results["w3_calls_per_s"] = w3(system, port, profile.w3_seconds)
    if system.async_client is not None:
        import asyncio

        from srpc_core import Config
        from srpc_core.server import event_loop_factory

        for loop in LOOPS[turn % len(LOOPS) :] + LOOPS[: turn % len(LOOPS)]:  # loops take turns
            factory = event_loop_factory(Config(event_loop=loop))
            with asyncio.Runner(loop_factory=factory) as runner:
                rate = runner.run(w4(system, port, profile.w4_seconds, loop))
            if rate is None:  # no native async side
                break
            results[W4_KEYS[loop]] = rate
    return results


def w3(system: System, port: int, seconds: float) -> float:
    clients = [system.client(port) for _ in range(THREADS)]
    counts = [0] * THREADS
    start, stop = threading.Barrier(THREADS + 1), threading.Event()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        client, done = clients[n], 0
        try:
            client.bind_thread()
            client.add(n, 1)  # connected and warm before the clock starts
            start.wait()
            while not stop.is_set():
                if client.add(done, n) != done + n:
                    raise AssertionError(f"{system.name}: wrong sum")
                done += 1
        except BaseException as exc:
            errors.append(exc)
            start.abort()
        counts[n] = done

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    for client in clients:
        client.close()
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


async def w4(system: System, port: int, seconds: float, loop: str) -> float | None:
    """Calls/s with IN_FLIGHT calls in flight on one connection; None: the system's async
    client does not multiplex one connection (its transport has no native async side)."""
    import asyncio

    assert system.async_client is not None
    client = system.async_client(port, loop)
    if not await client.open():
        await client.close()
        return None
    counts = [0] * IN_FLIGHT
    stop = False

    async def worker(n: int) -> None:
        done = 0
        while not stop:
            if await client.add(done, n) != done + n:
                raise AssertionError(f"{system.name}: wrong sum")
            done += 1
        counts[n] = done

    try:
        # Warm: every task's first call at once, before the clock starts.
        sums = await asyncio.gather(*(client.add(n, 1) for n in range(IN_FLIGHT)))
        if sums != [n + 1 for n in range(IN_FLIGHT)]:
            raise AssertionError(f"{system.name}: wrong sums")
        began = time.perf_counter()
        tasks = [asyncio.create_task(worker(n)) for n in range(IN_FLIGHT)]
        try:
            await asyncio.sleep(seconds)
        finally:
            stop = True
            await asyncio.gather(*tasks)  # the calls in flight finish, and count
        elapsed = time.perf_counter() - began
    finally:
        await client.close()
    return sum(counts) / elapsed


# -- the orchestrator ---------------------------------------------------------------------------


def placement() -> tuple[set[int] | None, set[int] | None, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None, f"one CPU ({cpus[0]}): server and client share it"
    server, client = {cpus[0]}, {cpus[1]}
    return server, client, f"server pinned to CPU {cpus[0]}, client to CPU {cpus[1]}"


def spawn(role: str, name: str, cpus: set[int] | None, *extra: str) -> subprocess.Popen[str]:
    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    return subprocess.Popen(
        [sys.executable, __file__, f"--{role}", name, *extra],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pin,
        cwd=REPO,
    )


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(
    name: str, profile: Profile, turn: int, server_cpus: Any, client_cpus: Any
) -> dict[str, float]:
    started = time.perf_counter()
    server = spawn("server", name, server_cpus)
    try:
        assert server.stdout is not None
        line = "(nothing)"
        for line in server.stdout:  # srpc prints a line of its own first
            if line.startswith("READY "):
                break
        else:
            raise RuntimeError(f"{name}: the server did not start (last line {line!r})")
        results = {
            "startup_s": time.perf_counter() - started,
            "server_rss_mib": rss_mib(server.pid),
        }
        port, settings = line.split()[1], json.dumps(profile.__dict__)
        client = spawn("client", name, client_cpus, port, settings, str(turn))
        out, _ = client.communicate(timeout=300)
        if client.returncode != 0:
            raise RuntimeError(f"{name}: the client failed (exit {client.returncode})")
        results.update(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        server.kill()
        server.wait()


COLUMNS = [
    ("w1_p50_us", "W1 p50 us", "lower"),
    ("w1_p99_us", "W1 p99 us", "lower"),
    ("w2_1KiB_MBps", "W2 1 KiB MB/s", "higher"),
    ("w2_64KiB_MBps", "W2 64 KiB MB/s", "higher"),
    ("w2_1MiB_MBps", "W2 1 MiB MB/s", "higher"),
    ("w3_calls_per_s", "W3 calls/s", "higher"),
    ("w4_calls_per_s", "W4 calls/s", "higher"),
    ("w4_uvloop_calls_per_s", "W4 uvloop calls/s", "higher"),
    ("server_rss_mib", "server RSS MiB", "lower"),
    ("startup_s", "start-up s", "lower"),
]


def medians_of(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each system's median of every measurement over its rounds, and of each round's W4/W3
    (added to the rounds' results)."""
    for results in runs.values():
        for run in results:
            for key, ratio in OVER_W3.items():
                if key in run and run.get("w3_calls_per_s"):
                    run[ratio] = run[key] / run["w3_calls_per_s"]
    return {
        name: {key: statistics.median(run[key] for run in results) for key in results[0]}
        for name, results in runs.items()
        if results
    }


def table(medians: dict[str, dict[str, float]]) -> str:
    """Every measured column; a workload's figure with its ratio to the floor's, and a W4
    figure also with its ratio to the same system's W3 (the sync client's 8 threads; the
    median of the rounds' ratios)."""
    floor = medians.get(FLOOR, {})
    columns = [c for c in COLUMNS if any(c[0] in values for values in medians.values())]
    lines = [
        "| system | " + " | ".join(title for _, title, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, values in medians.items():
        cells = []
        for key, _, _ in columns:
            value = values.get(key)
            if value is None:
                cells.append("-")
                continue
            text = _number(value)
            ratios = []
            if key.startswith("w") and key in floor and name != FLOOR:
                ratios.append(f"{value / floor[key]:.2f}x")
            if key in OVER_W3 and OVER_W3[key] in values:
                ratios.append(f"{values[OVER_W3[key]]:.2f}x W3")
            if ratios:
                text += f" ({'; '.join(ratios)})"
            cells.append(text)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def w4_loops() -> str:
    """W4's event loops, as the output names them."""
    if "uvloop" not in LOOPS:
        return "asyncio's event loop (uvloop is not installed)"
    import uvloop

    return f"asyncio's event loop and uvloop {uvloop.__version__}'s (its own column)"


def summary(rounds: int, where: str, seconds: float, loops: str, python: str, cpus: Any) -> str:
    return (
        f"Medians of {rounds} round(s), order rotated between rounds; {where}; ratios (x) are to "
        f"the raw socket floor of this run (x W3: the median of each round's W4 / W3 of the same "
        f"system); {seconds:.0f} s. W4: {IN_FLIGHT} calls in flight on one connection, on "
        f"{loops}. Python {python}, {cpus} CPUs. {MACHINE_NOTE}"
    )


def show(path: str) -> None:
    """Print the table of a run saved with --json."""
    saved = json.loads(Path(path).read_text())
    print(table(medians_of(saved["runs"])))
    print()
    print(
        summary(
            saved["rounds"],
            saved["placement"],
            saved["seconds"],
            saved.get("w4_loops", "-"),
            saved["python"],
            saved["cpus"],
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short round (under a minute)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, --quick 1)")
    parser.add_argument("--json", metavar="PATH", help="write every measurement as JSON")
    parser.add_argument("--only", nargs="+", metavar="SYSTEM", help="run only these systems")
    parser.add_argument(
        "--table", metavar="PATH", help="print the table of a --json file, run nothing"
    )
    parser.add_argument("--server", metavar="SYSTEM", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=4, metavar="X", help=argparse.SUPPRESS)
    args = parser.parse_args()
    known = systems()
    if args.table:
        show(args.table)
        return 0
    if args.server:
        known[args.server].serve()
        return 0
    if args.client:
        name, port, profile_json, turn = args.client
        profile = Profile(**json.loads(profile_json))
        print(json.dumps(run_workloads(known[name], int(port), profile, int(turn))))
        return 0

    profile = QUICK if args.quick else DEFAULT
    rounds = args.rounds or profile.rounds
    chosen = [s for s in known.values() if not args.only or s.name in args.only]
    names = [s.name for s in chosen if available(s)]
    skipped = [s.name for s in chosen if not available(s)]
    server_cpus, client_cpus, where = placement()
    print(f"srpc benchmark: {rounds} round(s) of {len(names)} systems; {where}", flush=True)
    if skipped:
        print(f"not installed (pip install 'srpclib[bench]'): {', '.join(skipped)}", flush=True)
    began = time.perf_counter()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    failures: dict[str, list[str]] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            try:
                runs[name].append(measure(name, profile, r, server_cpus, client_cpus))
            except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as exc:
                failures.setdefault(name, []).append(f"round {r + 1}: {exc}")
                print(f"  round {r + 1}: {name} FAILED: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"  round {r + 1}: {name} done", file=sys.stderr, flush=True)
    medians = medians_of(runs)
    elapsed = time.perf_counter() - began
    print()
    print(table(medians))
    print()
    python, cpus = platform.python_version(), os.cpu_count()
    print(summary(rounds, where, elapsed, w4_loops(), python, cpus))
    for name, reasons in failures.items():
        print(f"FAILED {name} ({len(reasons)} of {rounds} rounds): {'; '.join(reasons)}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "placement": where,
                    "w4_in_flight": IN_FLIGHT,
                    "w4_loops": w4_loops(),
                    "rounds": rounds,
                    "profile": profile.__dict__,
                    "note": MACHINE_NOTE,
                    "seconds": elapsed,
                    "medians": medians,
                    "runs": runs,
                    "failures": failures,
                },
                indent=2,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
