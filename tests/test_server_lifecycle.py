"""Server lifecycle and client behaviour through real processes and sockets."""

from __future__ import annotations

import importlib
import re
import signal
import socket
import sys
import threading
from pathlib import Path

import pytest
from support import ServerProcess, import_interface, make_project, run_client

import srpc_core

SLOW_INTERFACE = """
from abc import ABC, abstractmethod


class SlowInterface(ABC):
    @abstractmethod
    def sleep(self, seconds: float) -> str: ...

    @abstractmethod
    def echo(self, value: object) -> object: ...

    @abstractmethod
    def hold(self, name: str) -> str: ...

    @abstractmethod
    def release(self) -> None: ...
"""

SLOW_IMPL = """
import threading
import time

from slow.slow_interface import SlowInterface

RELEASED = threading.Event()


class Slow(SlowInterface):
    def sleep(self, seconds: float) -> str:
        print(f"sleeping {seconds}", flush=True)  # lets tests see the call is in flight
        time.sleep(seconds)
        return f"slept {seconds}"

    def echo(self, value: object) -> object:
        return value

    def hold(self, name: str) -> str:
        print(f"holding {name}", flush=True)  # lets tests see the call is in flight
        if not RELEASED.wait(60):  # a test that never releases cannot keep the server forever
            return f"never released {name}"
        return f"released {name}"

    def release(self) -> None:
        RELEASED.set()
"""


@pytest.fixture
def slow_dir(tmp_path: Path) -> Path:
    return make_project(
        tmp_path, "slow", {"slow/slow_interface.py": SLOW_INTERFACE, "slow/slow.py": SLOW_IMPL}
    )


def client_code(port: int, body: str) -> str:
    return (
        "import threading, time, srpc_core\n"
        "from srpc_slow_client_stub import SrpcSlowClientStub\n"
        f"slow = SrpcSlowClientStub('127.0.0.1', {port})\n" + body
    )


def test_start_up_line_names_address_transport_and_codec(calc_server: ServerProcess) -> None:
    line = calc_server.text().splitlines()[-1]
    assert re.search(
        r"serving CalcInterface at tcp://127\.0\.0\.1:\d+ \(transport tcp, codec json\)", line
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_finishes_calls_in_flight(slow_dir: Path, sig: int) -> None:
    with ServerProcess(slow_dir, "slow") as server:
        result: dict[str, object] = {}

        def slow_call() -> None:
            with srpc_core.Client(
                import_interface(slow_dir, "slow"), "127.0.0.1", server.port
            ) as client:
                client.call("echo", ("warm-up",))  # connected before the signal
                result["value"] = client.call("sleep", (1.0,))

        thread = threading.Thread(target=slow_call)
        thread.start()
        server.wait_for(re.compile("sleeping 1.0"))
        code = server.stop(sig)
        thread.join(10)
        assert result.get("value") == "slept 1.0"
        assert code == 0
        assert "stopped serving SlowInterface" in server.text()
        assert "Traceback" not in server.text()


def test_port_in_use_is_a_clear_error_not_a_traceback(calc_server: ServerProcess) -> None:
    result = run_client(
        calc_server.project,
        "from srpc_calc_server_stub import SrpcCalcServerStub\n"
        f"SrpcCalcServerStub('127.0.0.1', {calc_server.port}).start()\n",
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"tcp://127.0.0.1:{calc_server.port} is already in use" in result.stderr
    assert calc_server.alive()


def test_no_server_is_a_clear_error(calc_dir: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_client(
        calc_dir,
        "import srpc_core\nfrom srpc_calc_client_stub import SrpcCalcClientStub\n"
        f"try:\n    SrpcCalcClientStub('127.0.0.1', {port}).add(1, 2)\n"
        "except srpc_core.ServerUnavailableError as e:\n    print(e)\n",
    )
    assert f"no srpc server at tcp://127.0.0.1:{port}: is it running?" in result.stdout


def test_slow_call_does_not_hold_up_other_clients(slow_dir: Path) -> None:
    interface = import_interface(slow_dir, "slow")
    with ServerProcess(slow_dir, "slow") as server:
        held: dict[str, object] = {}

        def hold() -> None:
            with srpc_core.Client(interface, "127.0.0.1", server.port) as client:
                held["value"] = client.call("hold", ("first",))

        thread = threading.Thread(target=hold)
        thread.start()
        try:
            server.wait_for(re.compile("holding first"))  # the slow call is in flight
            # A server that ran one call at a time would answer none of these until the held
            # call ends, which only the release below does: they would time out instead.
            with srpc_core.Client(interface, "127.0.0.1", server.port, timeout=10) as other:
                assert [other.call("echo", (i,)) for i in range(20)] == list(range(20))
                assert thread.is_alive() and "value" not in held
                other.call("release")
        finally:
            thread.join(30)
    assert held.get("value") == "released first"


def test_timeout_raises_call_timeout_error(slow_dir: Path) -> None:
    with ServerProcess(slow_dir, "slow") as server:
        result = run_client(
            slow_dir,
            "import srpc_core\nfrom srpc_slow_client_stub import SrpcSlowClientStub\n"
            f"slow = SrpcSlowClientStub('127.0.0.1', {server.port}, timeout=0.5)\n"
            "try:\n    slow.hold('until released')\n"
            "except srpc_core.CallTimeoutError as e:\n    print('TIMEOUT', e)\n"
            "print(slow.echo('after'))\n"
            "slow.release()\n",  # the held call may end: the server stops at once
        )
    assert "TIMEOUT no reply from tcp://127.0.0.1" in result.stdout, result.stderr
    assert "within 0.5 s" in result.stdout
    assert result.stdout.splitlines()[-1] == "after"  # the client recovers on a new connection


def test_one_client_stub_shared_between_threads(slow_dir: Path) -> None:
    with ServerProcess(slow_dir, "slow") as server:
        result = run_client(
            slow_dir,
            client_code(
                server.port,
                "errors = []\n"
                "def work(n):\n"
                "    for i in range(50):\n"
                "        value = {'thread': n, 'i': i, 'text': 'x' * (i * 37)}\n"
                "        if slow.echo(value) != value: errors.append((n, i))\n"
                "threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]\n"
                "[t.start() for t in threads]; [t.join() for t in threads]\n"
                "print('errors', errors)\n",
            ),
        )
    assert result.stdout.strip() == "errors []", result.stderr


def test_client_reconnects_after_server_restart(calc_dir: Path) -> None:
    first = ServerProcess(calc_dir, "calc")
    first.start()
    port = first.port
    interface = import_interface(calc_dir, "calc")
    try:
        with srpc_core.Client(interface, "127.0.0.1", port) as calc:
            assert calc.call("add", (1, 2)) == 3
            first.stop()
            with pytest.raises(srpc_core.ServerUnavailableError):
                calc.call("add", (1, 2))
            with ServerProcess(calc_dir, "calc", port=port):
                assert calc.call("add", (2, 2)) == 4
    finally:
        first.stop()


def test_server_embedded_in_a_background_thread(calc_dir: Path) -> None:
    interface = import_interface(calc_dir, "calc")

    sys.path.insert(0, str(calc_dir))
    try:
        calc_module = importlib.import_module("calc.calc")  # the example's own implementation
    finally:
        sys.path.remove(str(calc_dir))

    server = srpc_core.Server(
        interface, calc_module.Calc(), "127.0.0.1", 0, config=srpc_core.Config(metrics_path="")
    )
    thread = threading.Thread(target=server.start)
    thread.start()
    try:
        assert server.wait_until_serving(10)
        with srpc_core.Client(interface, "127.0.0.1", server.port) as client:
            assert client.call("mul", (6, 7)) == 42
            with pytest.raises(ZeroDivisionError, match="division by zero"):
                client.call("div", (1, 0))
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()
