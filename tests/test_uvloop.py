"""``[srpc] event_loop = "uvloop"``: real server processes from generated stubs.

The loop a server runs on is read from the server itself (a procedure returns the module of
its running loop's class), never guessed from timings.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import pytest
from support import ServerProcess, import_stub_module, make_project, run_client

import srpc_core
from srpc_core.config import load_config
from srpc_core.server import event_loop_factory

uvloop = pytest.importorskip("uvloop")

pytestmark = pytest.mark.e2e

INTERFACE = '''\
"""A service for event loop tests."""

from abc import ABC, abstractmethod


class LoopyInterface(ABC):
    """Calls that say where they run."""

    @abstractmethod
    def add(self, a: int, b: int) -> int:
        """a + b."""

    @abstractmethod
    def loop_module(self) -> str:
        """The module of the class of the server's running event loop."""

    @abstractmethod
    def echo_after(self, value: int, seconds: float) -> int:
        """Return value after `seconds`."""
'''

IMPLEMENTATION = '''\
"""An async def implementation: served by the asyncio server."""

import asyncio

from loopy.loopy_interface import LoopyInterface


class Loopy(LoopyInterface):
    async def add(self, a: int, b: int) -> int:  # type: ignore[override]
        return a + b

    async def loop_module(self) -> str:  # type: ignore[override]
        return type(asyncio.get_running_loop()).__module__

    async def echo_after(self, value: int, seconds: float) -> int:  # type: ignore[override]
        print(f"echo started {value}", flush=True)
        await asyncio.sleep(seconds)
        return value
'''

CONFIG = """\
[srpc]
event_loop = "uvloop"
max_in_flight = 256

[srpc.metrics]
path = ""
"""

STDLIB_CONFIG = CONFIG.replace('event_loop = "uvloop"\n', "")

#: `await serve()` on the application's loop: uvloop.run, whatever srpc.toml says.
EMBEDDED = """\
import uvloop

from srpc_loopy_server_stub import SrpcLoopyServerStub


async def main() -> None:
    await SrpcLoopyServerStub("127.0.0.1", 0, config="stdlib.toml").serve()
    print("serve returned", flush=True)


uvloop.run(main())
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uvloop")
    files = {
        "loopy/loopy_interface.py": INTERFACE,
        "loopy/loopy.py": IMPLEMENTATION,
        "srpc.toml": CONFIG,
        "stdlib.toml": STDLIB_CONFIG,
    }
    return make_project(root, "loopy", files)


@pytest.fixture(scope="module")
def server(project: Path) -> ServerProcess:
    with ServerProcess(project, "loopy") as process:
        yield process  # type: ignore[misc]


@pytest.fixture(scope="module")
def stubs(project: Path) -> object:
    """The generated client stub module, imported into this process."""
    return import_stub_module(project, "loopy")


def async_client(stubs: object, port: int, project: Path) -> object:
    cls = stubs.SrpcLoopyAsyncClientStub  # type: ignore[attr-defined]
    return cls("127.0.0.1", port, config=str(project / "srpc.toml"))


def test_start_runs_the_asyncio_server_on_uvloop(server: ServerProcess, project: Path) -> None:
    assert "asyncio" in server.text()
    code = (
        "from srpc_loopy_client_stub import SrpcLoopyClientStub\n"
        f"s = SrpcLoopyClientStub('127.0.0.1', {server.port})\n"
        "print(s.add(2, 3), s.loop_module())\n"
    )
    result = run_client(project, code)
    assert result.stdout.split() == ["5", "uvloop"], result.stderr


def test_without_the_key_the_server_runs_the_stdlib_loop(project: Path) -> None:
    with ServerProcess(project, "loopy", config=project / "stdlib.toml") as process:
        code = (
            "from srpc_loopy_client_stub import SrpcLoopyClientStub\n"
            f"print(SrpcLoopyClientStub('127.0.0.1', {process.port}).loop_module())\n"
        )
        result = run_client(project, code)
        assert result.stdout.strip().startswith("asyncio."), result.stderr


def test_the_async_client_under_uvloop_run(
    stubs: object, server: ServerProcess, project: Path
) -> None:
    async def main() -> None:
        assert type(asyncio.get_running_loop()).__module__ == "uvloop"
        async with async_client(stubs, server.port, project) as loopy:  # type: ignore[attr-defined]
            sums = await asyncio.gather(*(loopy.add(i, 1) for i in range(300)))
            assert sums == [i + 1 for i in range(300)]
            late = [loopy.echo_after(i, 0.02 * (5 - i)) for i in range(5)]
            assert await asyncio.gather(*late) == list(range(5))
            with pytest.raises(srpc_core.CallTimeoutError):
                await loopy.with_options(timeout=0.2).echo_after(1, 5.0)
            assert await loopy.loop_module() == "uvloop"
            assert loopy._srpc._shared.bridge is None  # tcp's native side, on uvloop

    uvloop.run(main())


def test_sigterm_drains_calls_in_flight_on_uvloop(stubs: object, project: Path) -> None:
    with ServerProcess(project, "loopy") as process:

        async def main() -> None:
            async with async_client(stubs, process.port, project) as loopy:  # type: ignore[attr-defined]
                assert await loopy.loop_module() == "uvloop"
                call = asyncio.create_task(loopy.echo_after(7, 1.0))
                await asyncio.to_thread(process.wait_for, re.compile("echo started 7"))
                assert process.process is not None
                process.process.send_signal(signal.SIGTERM)
                assert await call == 7  # the call in flight finished and answered

        uvloop.run(main())
        process.wait_for(re.compile("srpc: stopped serving"))
        assert process.process is not None
        assert process.process.wait(timeout=15) == 0


def test_serve_runs_on_the_applications_loop(stubs: object, project: Path) -> None:
    """`await serve()` runs where the application runs it: uvloop.run here, though the
    srpc.toml it reads leaves event_loop at "asyncio"."""
    with ServerProcess(project, "loopy", code=EMBEDDED) as process:

        async def main() -> None:
            async with async_client(stubs, process.port, project) as loopy:  # type: ignore[attr-defined]
                assert await loopy.loop_module() == "uvloop"

        asyncio.run(main())
        assert process.stop() == 0
        assert "serve returned" in process.text()


def test_a_missing_uvloop_is_a_clear_error(project: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['uvloop'] = None  # as if it were not installed\n"
        "from srpc_loopy_server_stub import SrpcLoopyServerStub\n"
        "SrpcLoopyServerStub('127.0.0.1', 0).start()\n"
    )
    result = run_client(project, code)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert 'event_loop = "uvloop" needs uvloop' in result.stderr, result.stderr
    assert "pip install 'srpclib[uvloop]'" in result.stderr


def test_a_missing_uvloop_raises_missing_dependency_error(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(project / "srpc.toml")
    assert event_loop_factory(config) is uvloop.new_event_loop
    monkeypatch.setitem(sys.modules, "uvloop", None)
    with pytest.raises(srpc_core.MissingDependencyError, match=r"srpclib\[uvloop\]"):
        event_loop_factory(config)
    assert event_loop_factory(load_config(project / "stdlib.toml")) is None


def test_event_loop_is_validated(tmp_path: Path) -> None:
    assert load_config().event_loop == "asyncio"
    path = tmp_path / "srpc.toml"
    path.write_text('[srpc]\nevent_loop = "trio"\n')
    expected = r"event_loop = 'trio' is invalid: expected one of 'asyncio', 'uvloop'"
    with pytest.raises(srpc_core.ConfigError, match=expected):
        load_config(path)
    with pytest.raises(srpc_core.ConfigError, match="event_loop"):
        load_config(None, event_loop="tokio")
