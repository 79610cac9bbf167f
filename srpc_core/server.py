"""The server: lifecycle around one listener and one dispatcher.

`Server.start()` binds, prints a start-up line, and serves until `stop()` is called from any
thread, or Ctrl+C / SIGTERM arrive (handled only when `start` runs in the main thread). Calls in
flight finish and get their responses before it returns.

`await Server.serve()` does the same inside a running asyncio application (the asyncio server):
``async def`` methods of the implementation run on the event loop, plain ones in a bounded
thread pool (grpc.aio's rule). Over a transport with a native async side (``tcp``) one
connection runs up to ``max_in_flight`` calls at once and answers them as they finish; over a
v0.1 transport the core serves its threaded listener and runs the ``async def`` methods on the
loop. `start()` uses the asyncio server when the implementation has ``async def`` methods, and
the threaded one (the fastest for plain methods) otherwise.

With ``[srpc] workers = N`` (N > 1; tcp on Linux), `start()` forks N worker processes that
share the port (SO_REUSEPORT), each serving this implementation with the threaded server;
`srpc_core.workers` manages them.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from srpc_core import protocol, workers
from srpc_core.async_streams import AsyncStreamChannel
from srpc_core.auth import Authenticator
from srpc_core.config import Config, load_config, resolve_host
from srpc_core.dispatcher import Call, Dispatcher
from srpc_core.errors import (
    MissingDependencyError,
    OversizedFrameError,
    SrpcError,
    TransportError,
)
from srpc_core.interface import read_interface
from srpc_core.observer import CallObserver, ServerInfo, serving_peer
from srpc_core.options import _where
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.signals import STOP_SIGNALS, stop_on_signals
from srpc_core.streams import identify_protocol
from srpc_core.transport import AsyncChannel, AsyncListener, Endpoint, Listener

log = logging.getLogger("srpc")

#: Threads that run plain (not ``async def``) methods on the asyncio server.
DEFAULT_THREADS = 32


class _Peer:
    """One connection of the asyncio server: its calls running, and its reader.

    Calls in flight are bounded by `slots` on the general road (the reader waits for one);
    a stream channel's messages come from the event loop's callback (`Server._read_stream`),
    which cannot wait, so there the channel is held while `running` is at `limit`.
    """

    def __init__(self, channel: AsyncChannel, max_in_flight: int) -> None:
        self.channel = channel
        self.slots = asyncio.Semaphore(max_in_flight)
        self.limit = max_in_flight
        self.running = 0
        self.stream = isinstance(channel, AsyncStreamChannel)
        self.tasks: set[asyncio.Task[None]] = set()
        self.reader: asyncio.Task[None] | None = None
        self.reading = True  # (a stream channel: False once its reader ended)
        #: The latest deadline of its calls (`time.monotonic`), 0 for none.
        self.latest = 0.0

    def started(self, call: Call) -> None:
        expires = call[5]
        if expires is not None and expires > self.latest:
            self.latest = expires

    def call_ended(self) -> None:
        if not self.stream:
            self.slots.release()
            return
        self.running -= 1
        if self.running == self.limit - 1 and self.reading:
            cast(AsyncStreamChannel, self.channel).release()


class Server:
    """Serves `implementation` (an instance of `interface`) over the configured transport.

    Args:
        interface: the service's ABC; only its public abstract methods can be called.
        implementation: the object whose methods run the calls.
        host, port, timeout: override the srpc.toml settings when not None.
        config: a srpc.toml path or a `Config`; None follows the normal lookup.
    """

    def __init__(
        self,
        interface: type,
        implementation: object,
        host: str | None = None,
        port: int | None = None,
        *,
        config: str | os.PathLike[str] | Config | None = None,
        timeout: float | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.config = load_config(config, host=host, port=port, timeout=timeout)
        self.service = read_interface(interface)
        _check_implementation(interface, implementation, self.service.procedures)
        self._plugins = plugins or get_plugins()
        cfg = self.config
        workers.check_supported(cfg)
        codec, self.transport = self._plugins.for_config(cfg)
        if cfg.workers > 1:  # every worker binds the port with SO_REUSEPORT
            settings = dataclasses.replace(self.transport.settings, reuse_port=True)
            self.transport = self._plugins.transport(cfg.transport, settings, cfg.source)
        self.dispatcher = Dispatcher(
            self.service,
            implementation,
            codec,
            cfg.transport,
            self._plugins.error_to_wire,
            cfg.send_tracebacks,
            types=self._plugins.type_adapters(),
        )
        self.dispatcher.max_in_flight = cfg.max_in_flight
        auth = Authenticator.from_config(cfg, self.service.name, cfg.codec)
        if auth is not None:  # [srpc.auth]: no session without the shared secret
            self.dispatcher.set_auth(auth)
        self.dispatcher.reflection = cfg.reflection
        #: Threads for plain methods on the asyncio server.
        self.threads = DEFAULT_THREADS
        self._listener: Listener | None = None
        self._async_listener: AsyncListener | None = None
        self._serving = threading.Event()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._peers: set[_Peer] = set()
        self._pool: workers.WorkerPool | None = None

    @property
    def address(self) -> str:
        """The URL clients reach (the real port once serving), e.g. ``tcp://127.0.0.1:5000``."""
        if self._listener is not None:
            return self._listener.address
        if self._async_listener is not None:
            return self._async_listener.address
        return self.transport.url(self.config.host, self.config.port)

    @property
    def port(self) -> int:
        """The bound port once listening (useful with port 0), else the configured one."""
        if self._listener is not None:
            return self._listener.port
        if self._async_listener is not None:
            return self._async_listener.port
        return self.config.port

    def start(self, exit_on_error: bool | None = None) -> None:
        """Bind and serve until stopped. Blocks.

        If the server cannot start (the port is taken, say), the error is raised; when
        `exit_on_error` is true (the default in the main thread, i.e. in a ``server.py``) the
        process exits with the message instead of a traceback. In the main thread, Ctrl+C and
        SIGTERM stop it (calls in flight finish first); elsewhere, call `stop`.

        An implementation with ``async def`` methods is served by the asyncio server
        (`serve`) on an event loop of its own: the stdlib's, or uvloop's with ``[srpc]
        event_loop = "uvloop"`` (`event_loop_factory`).

        With ``[srpc] workers`` > 1 it forks the workers and supervises them until stopped
        (`srpc_core.workers`); then it must run in the main thread, with no other thread.
        """
        if self.config.workers > 1:
            self._start_workers(exit_on_error)
            return
        if self.dispatcher.coroutines:
            try:
                loop_factory = event_loop_factory(self.config)
            except SrpcError as exc:
                raise self._start_failure(exc, exit_on_error) from None
            with stop_on_signals(self.stop), asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(self._serve_async(exit_on_error, handle_signals=False))
            return
        listener = self._bind_or_exit(exit_on_error)
        with stop_on_signals(self.stop):
            self._serve(listener)

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Serve on the running event loop until `stop()` (or Ctrl+C / SIGTERM, handled when
        `handle_signals` and this loop runs in the main thread); returns once calls in flight
        have finished and answered (within ``timeout``). Binding errors are raised.

        One process: ``[srpc] workers`` > 1 is refused here (it applies to `start`)."""
        if self.config.workers > 1:
            raise workers.refuse_serve(self.config)
        await self._serve_async(False, handle_signals=handle_signals)

    def _bind_or_exit(self, exit_on_error: bool | None) -> Listener:
        """Bind the listener; on failure raise, or exit with the message (see `start`)."""
        try:
            return self._bind()
        except (SrpcError, OSError) as exc:
            raise self._start_failure(exc, exit_on_error) from None

    def _start_failure(self, exc: Exception, exit_on_error: bool | None) -> BaseException:
        in_main_thread = threading.current_thread() is threading.main_thread()
        if exit_on_error if exit_on_error is not None else in_main_thread:
            return SystemExit(f"srpc: cannot start {self.service.name}: {exc}")
        return exc

    def _serve(self, listener: Listener, announce: bool = True) -> None:
        """Serve on a bound listener until stopped: observers, the start and stop lines (a
        worker leaves the lines to its parent: `announce` false)."""
        observers = self._plugins.call_observers(self._server_info(listener))
        self.dispatcher.set_observers(observers)
        if announce:
            print(
                f"srpc: serving {self.service.name} at {listener.address} "
                f"(transport {self.config.transport}, codec {self.config.codec}); Ctrl+C stops",
                flush=True,
            )
        self._serving.set()
        try:
            if not self._stop_requested.is_set():
                listener.serve_forever()
        finally:
            self._serving.clear()
            _close_observers(observers)
            if announce:
                print(
                    f"srpc: stopped serving {self.service.name} at {listener.address}", flush=True
                )

    def _start_workers(self, exit_on_error: bool | None) -> None:
        """`start` with ``[srpc] workers`` > 1: reserve the port, fork and supervise."""
        cfg = self.config
        host = resolve_host(cfg.host)
        try:
            if self.dispatcher.coroutines:
                raise workers.refuse_coroutines(cfg, sorted(self.dispatcher.coroutines))
            workers.check_no_threads(cfg)
            try:
                reservation = workers.reserve_port(host, cfg.port)
            except OSError as exc:
                raise self._address_in_use(exc, host) from None
        except (SrpcError, OSError) as exc:
            raise self._start_failure(exc, exit_on_error) from None
        with reservation:
            # Port 0: the workers bind the port the reservation got.
            self.config = dataclasses.replace(cfg, port=reservation.getsockname()[1])
            address = self.address

            def announce(pids: list[int]) -> None:
                print(
                    f"srpc: serving {self.service.name} at {address} (transport "
                    f"{cfg.transport}, codec {cfg.codec}, {len(pids)} workers: pids "
                    f"{', '.join(map(str, pids))}); Ctrl+C stops",
                    flush=True,
                )
                self._serving.set()

            self._pool = workers.WorkerPool(
                cfg.workers,
                bind=self._bind,
                serve=lambda listener: self._serve(listener, announce=False),
                stop_worker=self.stop,
                announce=announce,
                drain_timeout=cfg.timeout,
                closing=[reservation],
            )
            try:
                failure = self._pool.run()
            finally:
                self._serving.clear()
                self._pool = None
        if failure is not None:
            raise self._start_failure(SrpcError(failure), exit_on_error) from None
        print(f"srpc: stopped serving {self.service.name} at {address}", flush=True)

    def stop(self) -> None:
        """Ask a running `start()` or `serve()` to return after calls in flight finish.
        Thread-safe, and safe in a signal handler."""
        self._stop_requested.set()
        pool = self._pool
        if pool is not None:
            pool.stop()
        if self._listener is not None:
            self._listener.shutdown()
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop has closed: serving is over
                pass

    # -- the asyncio server ----------------------------------------------------------------------

    async def _serve_async(self, exit_on_error: bool | None, *, handle_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._stop_event = loop, asyncio.Event()
        if self._stop_requested.is_set():
            self._stop_event.set()
        executor = ThreadPoolExecutor(self.threads, thread_name_prefix="srpc-call")
        dispatcher = self.dispatcher
        dispatcher.loop, dispatcher.executor = loop, executor
        thread: threading.Thread | None = None
        try:
            try:
                address = await self._bind_async()
            except (SrpcError, OSError) as exc:
                raise self._start_failure(exc, exit_on_error) from None
            listener = self._listener
            if listener is not None:  # a v0.1 transport: its threaded listener, in a thread
                thread = threading.Thread(target=listener.serve_forever, daemon=True)
                thread.start()
            observers = self._plugins.call_observers(self._server_info(address))
            dispatcher.set_observers(observers)
            print(
                f"srpc: serving {self.service.name} at {address} (transport "
                f"{self.config.transport}, codec {self.config.codec}, asyncio); Ctrl+C stops",
                flush=True,
            )
            self._serving.set()
            try:
                with _loop_signals(loop, self.stop, handle_signals):
                    await self._stop_event.wait()
                await self._drain(thread)
            finally:
                self._serving.clear()
                _close_observers(observers)
                print(f"srpc: stopped serving {self.service.name} at {address}", flush=True)
        finally:
            if self._async_listener is not None:
                await self._async_listener.close()
            executor.shutdown(wait=False, cancel_futures=True)
            self._loop = self._stop_event = None

    async def _bind_async(self) -> str:
        """Bind the transport's async listener, or its threaded one; the address."""
        host = resolve_host(self.config.host)
        endpoint = Endpoint(host, self.config.port, self.service.name, self.service.dotted_name)
        try:
            listener = await self.transport.bind_async(endpoint, self._serve_connection)
        except OSError as exc:
            raise self._address_in_use(exc, host) from None
        if listener is None:
            return self._bind().address
        self._async_listener = listener
        return listener.address

    async def _drain(self, thread: threading.Thread | None) -> None:
        """Stop taking calls; let calls in flight finish and answer, within ``timeout``."""
        expires = time.monotonic() + self.config.timeout
        if self._async_listener is not None:
            await self._async_listener.close()
        for peer in list(self._peers):
            if peer.reader is not None:
                peer.reader.cancel()  # an idle connection ends now; busy ones answer first
        waiting = [t for peer in self._peers for t in peer.tasks]
        if self._listener is not None:
            self._listener.shutdown()
        if thread is not None:
            await asyncio.to_thread(thread.join, max(0.0, expires - time.monotonic()))
        if waiting:
            await asyncio.wait(waiting, timeout=max(0.0, expires - time.monotonic()))
        deadline = max(0.0, expires - time.monotonic())
        peers = [p.reader for p in self._peers if p.reader is not None]
        if peers:
            await asyncio.wait(peers, timeout=deadline)

    async def _serve_connection(self, channel: AsyncChannel) -> None:
        """Serve one connection of the async listener (its `OnConnection`)."""
        serving_peer(channel.address)  # this task's context, and its calls' (they copy it)
        peer = _Peer(channel, self.config.max_in_flight)
        self._peers.add(peer)
        read = self._read_stream(peer) if peer.stream else self._read(peer)
        reader = peer.reader = asyncio.get_running_loop().create_task(read)
        try:
            await asyncio.wait([reader])
            if peer.tasks:  # the peer left or the server stops: calls in flight still answer,
                # each within its caller's deadline (a connection may end as soon as its
                # request is read: NATS gives every request a connection of its own).
                patience = max(self.config.timeout, peer.latest - time.monotonic())
                await asyncio.wait(list(peer.tasks), timeout=patience)
        finally:
            reader.cancel()
            for task in list(peer.tasks):
                task.cancel()
            self._peers.discard(peer)

    async def _read(self, peer: _Peer) -> None:
        """Read a connection's messages; answer control messages, start a task per call."""
        channel, dispatcher = peer.channel, self.dispatcher
        loop = asyncio.get_running_loop()
        while True:
            try:
                message = await channel.receive()
            except OversizedFrameError as exc:
                await self._send(peer, self._refusal(exc))
                return  # the unread body makes the connection unusable
            except (TransportError, OSError):
                return
            if message is None:
                return
            call = dispatcher.begin(message)
            if isinstance(call, bytes):
                await self._send(peer, call)
                continue
            await peer.slots.acquire()  # past max_in_flight: stop reading until one ends
            peer.started(call)
            task = loop.create_task(self._run(peer, call))
            peer.tasks.add(task)
            task.add_done_callback(peer.tasks.discard)

    async def _read_stream(self, peer: _Peer) -> None:
        """`_read` for a stream channel: every message is taken in the event loop's callback
        that parsed it (`AsyncStreamChannel.deliver`), with no task woken per message."""
        channel = cast(AsyncStreamChannel, peer.channel)
        ended: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

        # The loop calls `take` in its own context: the connection's (the peer's name, the
        # request's metadata for observers) is entered for each message, and calls copy it.
        context = contextvars.copy_context()

        def take(message: bytes) -> None:
            try:
                context.run(self._take, peer, message)
            except Exception as exc:  # a bug must not leave the connection half served
                log.exception("srpc: serving a message from %s failed", channel.address)
                end(exc)

        def end(reason: BaseException | None) -> None:
            if not ended.done():
                ended.set_result(reason)

        channel.deliver(take, end)
        try:
            reason = await ended
        finally:
            peer.reading = False
            channel.hold()  # (cancelled when the server stops: no new calls)
        if isinstance(reason, OversizedFrameError):
            await self._send(peer, self._refusal(reason))

    def _take(self, peer: _Peer, message: bytes) -> None:
        """One message of a stream channel: answered at once, or a call started as a task."""
        channel = cast(AsyncStreamChannel, peer.channel)
        call = self.dispatcher.begin(message)
        if isinstance(call, bytes):
            try:
                channel.write(call)
            except TransportError:
                pass  # the peer is gone: the channel ends
            return
        peer.running += 1
        peer.started(call)
        if peer.running == peer.limit:
            channel.hold()  # past max_in_flight: no more messages until one ends
        task = asyncio.get_running_loop().create_task(self._run(peer, call))
        peer.tasks.add(task)
        task.add_done_callback(peer.tasks.discard)

    def _refusal(self, exc: OversizedFrameError) -> bytes:
        """The control error for a message too large to read (or another protocol's)."""
        foreign = identify_protocol(exc.header)
        text = (
            f"this is an srpc server at {self.address}; the client speaks {foreign}"
            if foreign is not None
            else f"a {exc.size}-byte message exceeds max_message_bytes "
            f"({self.config.max_message_bytes})"
        )
        code = protocol.Code.MISMATCH if foreign else protocol.Code.TOO_LARGE
        return protocol.control_error(text, code)

    async def _run(self, peer: _Peer, call: Call) -> None:
        try:
            response = await self.dispatcher.run(call)
            if response is not None:
                limit = self.config.max_message_bytes
                if len(response) > limit:
                    response = protocol.control_error(
                        f"the response is {len(response)} bytes, more than max_message_bytes "
                        f"({limit})",
                        protocol.Code.TOO_LARGE,
                        call[0],
                    )
                await self._send(peer, response)
        finally:
            peer.call_ended()

    async def _send(self, peer: _Peer, message: bytes) -> None:
        try:
            await peer.channel.send(message)
        except (TransportError, OSError):
            pass  # the peer is gone: its reader ends too

    def wait_until_serving(self, timeout: float = 10.0) -> bool:
        """Block until `start()` (in another thread) is serving; False on timeout."""
        return self._serving.wait(timeout)

    def _bind(self) -> Listener:
        host = resolve_host(self.config.host)
        try:
            endpoint = Endpoint(host, self.config.port, self.service.name, self.service.dotted_name)
            listener = self.transport.bind(endpoint, self.dispatcher.handle)
        except OSError as exc:
            raise self._address_in_use(exc, host) from None
        self._listener = listener
        return listener

    def _address_in_use(self, exc: OSError, host: str) -> OSError:
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            return OSError(
                exc.errno,
                f"{self.transport.url(host, self.config.port)} is already in use: stop the "
                "other server or choose another port (srpc.toml [srpc] port, or port=)",
            )
        return exc

    def _server_info(self, listener: Listener | str) -> ServerInfo:
        return ServerInfo(
            service=self.service.dotted_name,
            address=listener if isinstance(listener, str) else listener.address,
            transport=self.config.transport,
            codec=self.config.codec,
            procedures=tuple(self.service.procedures),
            pid=os.getpid(),
            config=self.config,
        )


def event_loop_factory(config: Config) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What makes the event loop srpc creates itself, per ``[srpc] event_loop``: None for the
    stdlib's (asyncio's default), ``uvloop.new_event_loop`` for "uvloop".

    Raises:
        MissingDependencyError: "uvloop" is asked for and uvloop cannot be imported.
    """
    if config.event_loop != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise MissingDependencyError(
            f'{_where(config.source)}[srpc] event_loop = "uvloop" needs uvloop, which is not '
            "installed: pip install 'srpclib[uvloop]' (uvloop does not run on Windows), or set "
            'event_loop = "asyncio"'
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _check_implementation(interface: type, implementation: object, names: Any) -> None:
    """Every procedure is a method of the implementation: ``def`` or ``async def`` (the
    interface declares it with ``def``; an implementation may make it a coroutine), never a
    generator, whose results srpc could not send."""
    missing = [n for n in names if not callable(getattr(implementation, n, None))]
    if missing:
        raise TypeError(
            f"{type(implementation).__name__} does not implement {', '.join(missing)} "
            f"of {interface.__qualname__}"
        )
    generators = [
        n
        for n in names
        if inspect.isgeneratorfunction(getattr(implementation, n))
        or inspect.isasyncgenfunction(getattr(implementation, n))
    ]
    if generators:
        raise TypeError(
            f"{type(implementation).__name__}.{', '.join(generators)} of "
            f"{interface.__qualname__} is a generator; srpc methods are def or async def "
            "functions that return their result"
        )


class _loop_signals:
    """While inside, Ctrl+C and SIGTERM call `stop` through the event loop (when `enabled` and
    in the main thread); the previous handlers come back on exit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stop: Any, enabled: bool) -> None:
        self.loop, self.stop = loop, stop
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> None:
        if not self.enabled:
            return
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.getsignal(signum)
                self.loop.add_signal_handler(signum, self.stop)
            except (NotImplementedError, RuntimeError, ValueError):  # no signals here
                self.previous.pop(signum, None)

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self.previous.items():
            self.loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _close_observers(observers: list[CallObserver]) -> None:
    for observer in observers:
        try:
            observer.close()
        except Exception as exc:  # closing one must not keep the others from flushing
            print(f"srpc: call observer {observer!r} failed to close: {exc}", file=sys.stderr)


__all__ = [
    "Server",
    "event_loop_factory",
]
