"""At most once: a call is sent again only when it provably never reached the server, or when
the interface marks the procedure @srpc_core.idempotent. A TCP proxy between a real client and a
real server process cuts the connection at chosen points; the server counts what it ran."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ServerProcess, import_interface, make_project

import srpc_core
from srpc_core import protocol

INTERFACE = """\
from abc import ABC, abstractmethod

import srpc_core


class PaymentsInterface(ABC):
    @abstractmethod
    def charge(self, card: str) -> int: ...

    @srpc_core.idempotent
    @abstractmethod
    def balance(self) -> int: ...
"""

IMPLEMENTATION = """\
import os
from pathlib import Path

from payments.payments_interface import PaymentsInterface


def _count(log: str, entry: str) -> int:
    with Path(log).open("a") as f:
        f.write(entry + "\\n")
    return len(Path(log).read_text().splitlines())


class Payments(PaymentsInterface):
    def charge(self, card):
        count = _count("charges.log", card)
        if card == "crash":  # the call ran; the server dies before it can answer
            os._exit(3)
        return count

    def balance(self):
        return _count("balances.log", "balance")
"""


def _read_frame(sock: socket.socket) -> bytes | None:
    header = b""
    while len(header) < 4:
        chunk = sock.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    (size,) = struct.unpack(">I", header)
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return header + body


class CuttingProxy:
    """Forwards frames between clients and the server; can drop the connection instead of
    delivering a reply (the server ran the call, the client never hears of it), or close a
    client's connection while it is idle (before the next request reaches the server)."""

    def __init__(self, server_port: int) -> None:
        self.server_port = server_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.replies_to_drop = 0  # replies (after the hello reply) to swallow, cutting the link
        #: The connection (1: the first accepted) whose requests are all refused, as a server
        #: restarted with other settings refuses the sessions of before; 0: none.
        self.refuse_connection = 0
        self.refused = 0
        self.accepted = 0
        self.close_when_idle = threading.Event()
        self.closed_idle = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.server_port))
            self.accepted += 1
            threading.Thread(
                target=self._pump, args=(client, upstream, self.accepted), daemon=True
            ).start()

    def _pump(self, client: socket.socket, upstream: socket.socket, number: int) -> None:
        with client, upstream:
            while True:
                request = _read_frame(client)
                if request is None:
                    return
                if number == self.refuse_connection and self._refuse(client, request):
                    continue  # not forwarded: nothing ran
                upstream.sendall(request)
                reply = _read_frame(upstream)
                if reply is None:
                    return
                hello_reply = request[4:9] == b"\x00srpc"
                with self.lock:
                    drop = not hello_reply and self.replies_to_drop > 0
                    self.replies_to_drop -= drop
                if drop:
                    return  # both connections close: the reply is lost
                client.sendall(reply)
                if not hello_reply and self.close_when_idle.is_set():
                    self.close_when_idle.clear()
                    client.shutdown(socket.SHUT_RDWR)
                    self.closed_idle.set()
                    return

    def _refuse(self, client: socket.socket, request: bytes) -> bool:
        """Answer `request` with a ``session`` control error (as a server restarted with other
        settings does) if asked to, instead of forwarding it."""
        if request[4:9] == b"\x00srpc":
            return False  # control messages (the hello, cancels) pass
        call_id = json.loads(request[4:])[0]
        error = protocol.control_error("unknown session", protocol.Code.SESSION, call_id)
        client.sendall(struct.pack(">I", len(error)) + error)
        with self.lock:
            self.refused += 1
        return True

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def payments(tmp_path: Path) -> Iterator[tuple[ServerProcess, CuttingProxy]]:
    project = make_project(
        tmp_path,
        "payments",
        {
            "payments/payments_interface.py": INTERFACE,
            "payments/payments.py": IMPLEMENTATION,
        },
    )
    with ServerProcess(project, "payments") as server:
        proxy = CuttingProxy(int(server.address.rsplit(":", 1)[1]))
        try:
            yield server, proxy
        finally:
            proxy.close()


def _lines(server: ServerProcess, name: str) -> int:
    path = server.project / name
    return len(path.read_text().splitlines()) if path.exists() else 0


def _client(server: ServerProcess, proxy: CuttingProxy) -> srpc_core.Client:
    interface = import_interface(server.project, "payments")
    return srpc_core.Client(interface, "127.0.0.1", proxy.port, timeout=10)


def test_a_reply_lost_after_the_call_ran_is_an_error_not_a_second_run(
    payments: tuple[ServerProcess, CuttingProxy],
) -> None:
    server, proxy = payments
    with _client(server, proxy) as client:
        assert client.call("charge", ("card-1",)) == 1
        proxy.replies_to_drop = 1
        with pytest.raises(srpc_core.TransportError, match="is unknown"):
            client.call("charge", ("card-2",))
        assert _lines(server, "charges.log") == 2  # ran once, never sent again
        assert client.call("charge", ("card-3",)) == 3  # the client recovers


def test_an_idempotent_call_is_sent_again(payments: tuple[ServerProcess, CuttingProxy]) -> None:
    server, proxy = payments
    with _client(server, proxy) as client:
        proxy.replies_to_drop = 1
        assert client.call("balance") == 2  # the first run's reply was lost: it ran twice
        assert _lines(server, "balances.log") == 2


def test_the_async_client_runs_a_call_at_most_once_too(
    payments: tuple[ServerProcess, CuttingProxy],
) -> None:
    server, proxy = payments
    interface = import_interface(server.project, "payments")

    async def main() -> None:
        async with srpc_core.AsyncClient(interface, "127.0.0.1", proxy.port, timeout=10) as client:
            assert await client.call("charge", ("card-1",)) == 1
            proxy.replies_to_drop = 1  # on an open connection: the async fast path's road
            with pytest.raises(srpc_core.TransportError, match="is unknown"):
                await client.call("charge", ("card-2",))
            assert _lines(server, "charges.log") == 2  # ran once, never sent again
            assert await client.call("charge", ("card-3",)) == 3  # a new connection
            proxy.replies_to_drop = 1
            assert await client.call("balance") == 2  # idempotent: sent again, ran twice
        assert _lines(server, "balances.log") == 2

    asyncio.run(main())


def test_async_calls_refused_for_their_session_are_sent_again_without_deadlock(
    payments: tuple[ServerProcess, CuttingProxy],
) -> None:
    """Every call in flight (more than the slots) is refused for its session at once: each
    one is sent once more on a new connection, after giving up its slot."""
    server, proxy = payments
    interface = import_interface(server.project, "payments")

    async def main() -> list[int]:
        async with srpc_core.AsyncClient(interface, "127.0.0.1", proxy.port, timeout=10) as client:
            assert await client.call("charge", ("first",)) == 1  # open: the fast path from here
            proxy.refuse_connection = proxy.accepted  # that connection's server "restarted"
            slots = client._shared.slots
            assert slots is not None and slots.limit < 24
            return list(await asyncio.gather(*(client.call("balance") for _ in range(24))))

    counts = asyncio.run(main())
    assert sorted(counts) == list(range(1, 25))  # each ran once, after its refusal
    assert proxy.refused >= 1


def test_a_connection_closed_while_idle_is_replaced_before_sending(
    payments: tuple[ServerProcess, CuttingProxy],
) -> None:
    server, proxy = payments
    with _client(server, proxy) as client:
        proxy.close_when_idle.set()
        assert client.call("charge", ("card-1",)) == 1
        assert proxy.closed_idle.wait(10)
        # The client checks channels idle for more than 1 ms before reuse; waiting for the
        # proxy's event took longer than that in practice, and this makes sure of it.
        threading.Event().wait(0.01)
        assert client.call("charge", ("card-2",)) == 2  # a new connection, no error
        assert _lines(server, "charges.log") == 2


def test_the_idempotent_marker_is_read_from_the_interface(
    payments: tuple[ServerProcess, CuttingProxy],
) -> None:
    interface = import_interface(payments[0].project, "payments")
    service = srpc_core.Client(interface, "127.0.0.1", 1).service
    assert service.procedures["balance"].idempotent
    assert not service.procedures["charge"].idempotent


@pytest.mark.parametrize("transport", ["tcp", "zmq"])
def test_a_server_that_dies_after_running_the_call_is_not_called_again(
    tmp_path: Path, transport: str
) -> None:
    project = make_project(
        tmp_path,
        "payments",
        {
            "payments/payments_interface.py": INTERFACE,
            "payments/payments.py": IMPLEMENTATION,
            "srpc.toml": f'[srpc]\ntransport = "{transport}"\n[srpc.metrics]\npath = ""\n',
        },
    )
    interface = import_interface(project, "payments")
    with ServerProcess(project, "payments") as server:
        config = project / "srpc.toml"
        with srpc_core.Client(interface, "127.0.0.1", server.port, config=config) as client:
            assert client.with_options(timeout=10).call("charge", ("card-1",)) == 1
            with pytest.raises(srpc_core.TransportError, match="is unknown"):
                client.with_options(timeout=10).call("charge", ("crash",))
        assert server.process is not None and server.process.wait(10) == 3
    assert _lines(server, "charges.log") == 2  # the crashing call ran once, never again
