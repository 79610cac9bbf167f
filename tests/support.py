"""Helpers for tests that run srpc the way a user does: generated stubs, real processes.

Servers are started with port 0; the start-up line they print tells the real address, and
doubles as the readiness signal (no sleeps, no guessed ports).
"""

from __future__ import annotations

import errno
import importlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
PYTHON = sys.executable
READY = re.compile(r"srpc: serving \S+ at (?P<address>\S+)")
START_TIMEOUT = 20.0


def child_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: ours, unbuffered, without a stray SRPC_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k != "SRPC_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def generate_stubs(
    project: Path, interface: str, *extra_args: str
) -> subprocess.CompletedProcess[str]:
    """Run the stub generator as a user would, in `project`."""
    return subprocess.run(
        [PYTHON, "-m", "srpc_core.tools.srpc_stub_gen", interface, *extra_args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


def make_project(tmp_path: Path, package: str, files: dict[str, str]) -> Path:
    """Write a user project: `files` maps relative paths to source; then generate the stubs."""
    project = tmp_path / f"{package}_project"
    for relative, source in files.items():
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(source)
    (project / package / "__init__.py").touch()
    result = generate_stubs(project, f"{package}/{package}_interface.py")
    assert result.returncode == 0, result.stderr
    return project


def calc_project(tmp_path: Path) -> Path:
    """A copy of examples/calc/server with freshly generated stubs."""
    project = tmp_path / "calc_project"
    shutil.copytree(EXAMPLES / "calc" / "server" / "calc", project / "calc")
    result = generate_stubs(project, "calc/calc_interface.py")
    assert result.returncode == 0, result.stderr
    return project


class ServerProcess:
    """A server started from a generated server stub in its own process.

    Use as a context manager; the process is stopped (SIGTERM, then SIGKILL) on exit.
    """

    def __init__(
        self,
        project: Path,
        package: str,
        *,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        code: str | None = None,
    ) -> None:
        camel = "".join(p.capitalize() for p in package.split("_"))
        self.code = code or (
            f"from srpc_{package}_server_stub import Srpc{camel}ServerStub\n"
            f"Srpc{camel}ServerStub({host!r}, {port}"
            + (f", config={str(config)!r}" if config else "")
            + ").start()\n"
        )
        self.project = project
        self.env = child_env(**(env or {}))
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.address = ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [PYTHON, "-c", self.code],
            cwd=self.project,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self.address = self.wait_for(READY).group("address")

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1].rstrip("/"))

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
        """Wait until the server prints a line matching `pattern`; fail with its output if not."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                raise AssertionError(
                    f"server never printed {pattern.pattern!r}; output:\n{self.text()}"
                ) from None
            if line is None:  # type: ignore[comparison-overlap]
                raise AssertionError(f"server exited; output:\n{self.text()}")
            match = pattern.search(line)
            if match:
                return match

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)  # type: ignore[arg-type]

    def text(self) -> str:
        return "".join(self.output)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop the server; return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def import_interface(project: Path, package: str) -> type:
    """Import `<package>.<package>_interface` from `project` into this process (fresh copy)."""
    sys.path.insert(0, str(project))
    try:
        for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
            del sys.modules[name]
        module = importlib.import_module(f"{package}.{package}_interface")
    finally:
        sys.path.remove(str(project))
    camel = "".join(p.capitalize() for p in package.split("_"))
    interface: type = getattr(module, f"{camel}Interface")
    return interface


def import_stub_module(project: Path, package: str) -> Any:
    """Import the generated client stub module of `project` into this process (it holds
    ``Srpc<Name>ClientStub`` and ``Srpc<Name>AsyncClientStub``). Earlier imports of the same
    names (from another test's project) are forgotten first."""
    stub_module = f"srpc_{package}_client_stub"
    stale = [n for n in sys.modules if n in (package, stub_module) or n.startswith(f"{package}.")]
    for name in stale:
        del sys.modules[name]
    sys.path.insert(0, str(project))
    try:
        return importlib.import_module(stub_module)
    finally:
        sys.path.remove(str(project))


def run_client(
    project: Path, code: str, *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run client code in its own process in `project`."""
    return subprocess.run(
        [PYTHON, "-c", code],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(**(env or {})),
    )


#: What a server's test procedure runs to hold a call until the test opens its gate: the FIFO
#: is opened before `announce` is printed (so the test may open the gate once it sees the
#: line), then waited on for `limit` seconds at most. Paste it into the implementation's source.
HOLD_ON_FIFO = """
def hold_on_fifo(gate, announce, limit=30):
    import os, select
    fifo = os.open(gate, os.O_RDONLY | os.O_NONBLOCK)
    try:
        print(announce, flush=True)
        return bool(select.select([fifo], [], [], limit)[0])
    finally:
        os.close(fifo)
"""


def open_gate(fifo: Path) -> None:
    """Let every call holding on `fifo` return (none holding: nothing to do)."""
    try:
        gate = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader: no call holds
            return
        raise
    try:
        os.write(gate, b"go")
    finally:
        os.close(gate)
