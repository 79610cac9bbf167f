"""``[srpc] workers = N``: N server processes sharing one tcp port (docs/scaling.md).

`Server.start` hands over to a `WorkerPool` when ``workers`` is more than 1. The parent process
(the one that ran ``start()``) serves nothing itself: it

* reserves the port (`reserve_port`): one socket bound with ``SO_REUSEPORT`` and never
  listening, so port 0 gets a real port the workers then share, no other program can take the
  port while a worker is being replaced, and a port that anything else holds (even another
  srpc server with workers) is refused as in use;
* forks the workers. **fork, not spawn**, deliberately: the implementation object the user
  built (``ServerStub(implementation=MyImpl(...))``) exists in every worker as it was, with no
  need to be importable or picklable, and a worker is ready in milliseconds. The price: fork
  copies no thread, and a lock held by another thread at that moment stays held in the
  child forever, so `start` refuses to fork while other threads run (`check_no_threads`). And
  whatever the implementation opened in its constructor (a database connection, a file, a
  socket) is the *same* descriptor in every worker, shared between processes: open such things
  lazily in the worker (on first use) instead;
* prints one start line naming the workers' pids once every worker is listening; each
  worker binds the port with ``SO_REUSEPORT`` and the kernel spreads new connections over them;
* on SIGTERM or SIGINT (or `WorkerPool.stop`) sends SIGTERM to every worker, which drains like
  a single server (calls in flight finish and answer within ``timeout``), waits for them all
  (``timeout`` + `KILL_GRACE` seconds at most, then SIGKILL) and returns;
* replaces a worker that dies unexpectedly after it was ready (a crash of a C extension, the
  OOM killer, a ``kill -9``), reporting it on stderr; the calls in flight in that worker fail,
  for those callers alone. A worker that fails *before* it is ready (it could not bind, say)
  stops them all, with its error: it would only fail again.

Workers die with the parent (``PR_SET_PDEATHSIG``): a parent killed with SIGKILL leaves no
worker serving behind it. Each worker writes its own records to the metrics log (its own
writer id and pid), and the dashboard sums them.

Linux only: elsewhere ``SO_REUSEPORT`` either does not exist or does not spread connections
(on macOS and the BSDs the last socket bound gets them all).
"""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from srpc_core.config import Config
from srpc_core.errors import ConfigError, SrpcError
from srpc_core.options import _where
from srpc_core.signals import STOP_SIGNALS, stop_on_signals
from srpc_core.wakeup import Waker

#: Seconds the parent waits for workers beyond ``timeout`` (their drain) before SIGKILL.
KILL_GRACE = 5.0
#: ``prctl`` option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def platform_problem() -> str | None:
    """Why this platform cannot run workers, or None when it can."""
    if not sys.platform.startswith("linux"):
        return (
            f"this is {sys.platform}: workers need Linux, whose SO_REUSEPORT spreads "
            "connections over the processes sharing a port"
        )
    if not hasattr(socket, "SO_REUSEPORT"):
        return "this Python has no socket.SO_REUSEPORT"
    if not hasattr(os, "fork"):
        return "this Python has no os.fork"
    return None


def check_supported(config: Config) -> None:
    """Refuse ``workers`` > 1 where it cannot work: another transport than tcp, or a platform
    without ``SO_REUSEPORT`` load balancing or ``fork``.

    Raises:
        ConfigError: naming the file, the setting and what to do instead.
    """
    if config.workers <= 1:
        return
    where = f"{_where(config.source)}[srpc] workers = {config.workers}"
    if config.transport != "tcp":
        instead = {
            "nats": "for nats run more server processes: each joins the service's queue group "
            "and NATS spreads the calls (docs/scaling.md)",
        }.get(
            config.transport,
            f"for {config.transport} run more server processes (each on its own port, behind "
            "a load balancer)",
        )
        raise ConfigError(
            f"{where}: workers applies to transport 'tcp' (processes sharing its port with "
            f"SO_REUSEPORT), not {config.transport!r}; {instead}; or set workers = 1"
        )
    problem = platform_problem()
    if problem is not None:
        raise ConfigError(
            f"{where} is not supported here: {problem}. Set workers = 1 and run one server "
            "process per port (behind a load balancer), or use transport = 'nats'"
        )


def check_no_threads(config: Config) -> None:
    """Refuse to fork workers while other threads run (fork copies none of them)."""
    others = [t.name for t in threading.enumerate() if t is not threading.current_thread()]
    if threading.current_thread() is not threading.main_thread():
        others.insert(0, "(start() itself runs outside the main thread)")
    if others:
        raise SrpcError(
            f"[srpc] workers = {config.workers}: start() forks the worker processes, so it must "
            "run in the main thread with no other thread running, and these run: "
            + ", ".join(repr(name) for name in others)
            + ". A thread is not copied into the workers, and a lock it holds would stay held "
            "there forever: start threads lazily in the implementation's methods (in each "
            "worker), or set workers = 1"
        )


def refuse_serve(config: Config) -> ConfigError:
    """The error for ``await serve()`` with ``workers`` > 1."""
    return ConfigError(
        f"{_where(config.source)}[srpc] workers = {config.workers} applies to start(), which "
        "forks the worker processes; await serve() runs inside your event loop, in this one "
        "process. Call start() (plain def methods), run several server processes yourself, or "
        "set workers = 1"
    )


def refuse_coroutines(config: Config, names: list[str]) -> ConfigError:
    """The error for ``workers`` > 1 with an implementation that has ``async def`` methods."""
    return ConfigError(
        f"{_where(config.source)}[srpc] workers = {config.workers} runs the threaded server in "
        f"each worker, and {', '.join(names)} is async def (served by the asyncio server, in "
        "one process): make the methods plain def, run several server processes yourself, or "
        "set workers = 1"
    )


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with ``SO_REUSEPORT`` that never listens: it holds the port
    (the real one when `port` is 0) for the workers, and receives no connection itself.

    Raises:
        OSError: EADDRINUSE when anything else holds the port, even sockets that would let
            this one join them (another server with workers on the same port).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:
        # A plain bind fails where any socket holds the port, including a SO_REUSEPORT group
        # that the reserving socket below would otherwise silently join.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def describe_exit(status: int) -> str:
    """A wait status in words: ``exited with status 3``, ``was killed by SIGKILL``."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with status {code}"


@dataclass
class _Worker:
    pid: int
    fd: int  # the read end of its pipe: "ready" or "error ..." lines, then EOF when it exits
    ready: bool = False
    error: str = ""
    buffer: bytes = b""


@dataclass
class WorkerPool:
    """Runs `count` worker processes until stopped (see the module docstring).

    Args:
        count: the number of workers.
        bind: in a worker: bind the listener (raises SrpcError/OSError when it cannot).
        serve: in a worker: serve on the bound listener until `stop` is called.
        stop_worker: in a worker: make `serve` return after the calls in flight (signal-safe).
        announce: in the parent, once every worker is listening, with their pids.
        drain_timeout: the seconds a worker's drain may take (``[srpc] timeout``).
        closing: sockets the parent holds that the workers must not keep (the reservation).
    """

    count: int
    bind: Callable[[], Any]
    serve: Callable[[Any], None]
    stop_worker: Callable[[], None]
    announce: Callable[[list[int]], None]
    drain_timeout: float
    closing: list[socket.socket] = field(default_factory=list)
    #: Where reports of dead workers go (stderr).
    report: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
    _workers: dict[int, _Worker] = field(default_factory=dict)
    _waker: Waker | None = None
    _selector: selectors.BaseSelector | None = None
    _stop_requested: bool = False
    _parent: int = 0

    @property
    def pids(self) -> list[int]:
        """The pids of the workers running now."""
        return list(self._workers)

    def stop(self) -> None:
        """Ask `run` to drain the workers and return. Thread-safe and signal-safe."""
        if os.getpid() != self._parent:
            return  # a worker's copy of the pool: the worker stops through its own server
        self._stop_requested = True
        if self._waker is not None:
            self._waker.wake()

    def run(self) -> str | None:
        """Start the workers and supervise them until stopped; the error that stopped them
        all when one could not start, else None. Blocks."""
        self._parent = os.getpid()
        failure: str | None = None
        announced = stopping = False
        deadline = time.monotonic() + self.drain_timeout + KILL_GRACE  # to get ready
        with Waker() as waker, selectors.DefaultSelector() as selector:
            self._waker, self._selector = waker, selector
            selector.register(waker, selectors.EVENT_READ)
            try:
                with stop_on_signals(self.stop):
                    for _ in range(self.count):
                        if not self._stop_requested:
                            self._spawn()
                    while self._workers:
                        if self._stop_requested and not stopping:
                            stopping = True
                            deadline = time.monotonic() + self.drain_timeout + KILL_GRACE
                            self._signal_all(signal.SIGTERM)
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            if not announced and not stopping:
                                failure = "the workers did not get ready in time"
                                self.stop()
                                continue
                            self._kill_all()
                            break
                        wait = None if remaining == float("inf") else remaining
                        for key, _ in selector.select(wait):
                            if key.fileobj is waker:
                                waker.drain()
                            else:
                                problem = self._read(key.data, stopping)
                                if problem and failure is None:
                                    failure = problem
                                    self.stop()
                        if not announced and not stopping and self._all_ready():
                            announced = True
                            deadline = float("inf")
                            self.announce(self.pids)
            finally:
                self._kill_all()  # only left when run itself failed (fork refused, say)
                self._waker = self._selector = None
        return failure

    def _all_ready(self) -> bool:
        return len(self._workers) == self.count and all(w.ready for w in self._workers.values())

    def _read(self, worker: _Worker, stopping: bool) -> str | None:
        """Take in what a worker wrote; on EOF (it exited) reap it and act. Returns the error
        that must stop every worker, if any."""
        try:
            data = os.read(worker.fd, 4096)
        except OSError:
            data = b""
        if data:
            worker.buffer += data
            *lines, worker.buffer = worker.buffer.split(b"\n")
            for line in lines:
                if line == b"ready":
                    worker.ready = True
                elif line.startswith(b"error "):
                    worker.error = line[6:].decode(errors="replace")
            return None
        status = self._reap(worker)
        if stopping:
            if os.waitstatus_to_exitcode(status) != 0:
                self.report(f"srpc: worker {worker.pid} {describe_exit(status)} while stopping")
            return None
        if not worker.ready:
            return (
                worker.error or f"worker {worker.pid} {describe_exit(status)} before it was ready"
            )
        new = self._spawn()
        self.report(
            f"srpc: worker {worker.pid} {describe_exit(status)} unexpectedly; started worker "
            f"{new} in its place"
        )
        return None

    def _reap(self, worker: _Worker) -> int:
        assert self._selector is not None
        self._selector.unregister(worker.fd)
        os.close(worker.fd)
        del self._workers[worker.pid]
        _, status = os.waitpid(worker.pid, 0)
        return status

    def _signal_all(self, signum: int) -> None:
        for pid in self._workers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass  # it exited: its EOF is on the way

    def _kill_all(self) -> None:
        """SIGKILL and reap every worker left (past the drain deadline, or after a failure)."""
        for worker in list(self._workers.values()):
            self.report(f"srpc: worker {worker.pid} did not stop in time: killing it")
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._reap(worker)

    def _spawn(self) -> int:
        """Fork one worker; its pid."""
        assert self._selector is not None
        read_end, write_end = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child would write what the parent buffered once more
        # Signals stay blocked from the fork until the worker has its own handlers: the
        # parent's (forward to the workers) must never run in a worker.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            os.close(read_end)
            os.close(write_end)
            raise
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(read_end)
                code = self._worker_main(write_end, previous)
            except BaseException:
                traceback.print_exc()
            finally:
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.close(write_end)
        worker = _Worker(pid, read_end)
        self._workers[pid] = worker
        self._selector.register(read_end, selectors.EVENT_READ, worker)
        return pid

    def _worker_main(self, pipe: int, mask: set[int | signal.Signals]) -> int:
        """A worker's life: die with the parent, drop the parent's descriptors, bind, say
        ready, serve until SIGTERM/SIGINT; its exit code."""
        _die_with_parent(self._parent)
        assert self._selector is not None and self._waker is not None
        self._selector.close()  # closes the descriptor only: the parent's epoll set is intact
        self._waker.close()
        for other in self._workers.values():
            os.close(other.fd)
        for sock in self.closing:
            sock.close()
        with stop_on_signals(self.stop_worker):
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            try:
                listener = self.bind()
            except (SrpcError, OSError) as exc:
                os.write(pipe, f"error {exc}".replace("\n", " ").encode() + b"\n")
                return 1
            os.write(pipe, b"ready\n")
            self.serve(listener)
        return 0


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM (a drain) when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the parent's SIGTERM is the only way
        return
    if os.getppid() != parent:  # the parent died before prctl: nobody supervises us
        os.kill(os.getpid(), signal.SIGTERM)


__all__ = [
    "KILL_GRACE",
    "WorkerPool",
    "check_no_threads",
    "check_supported",
    "describe_exit",
    "platform_problem",
    "refuse_coroutines",
    "refuse_serve",
    "reserve_port",
]
