"""The server: lifecycle around one listener and one dispatcher.

`Server.start()` binds, prints a start-up line, and serves until `stop()` is called from any
thread, or Ctrl+C / SIGTERM arrive (handled only when `start` runs in the main thread). Calls in
flight finish and get their responses before it returns.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from srpc_core.config import Config, load_config, resolve_host
from srpc_core.dispatcher import Dispatcher
from srpc_core.errors import SrpcError
from srpc_core.interface import read_interface
from srpc_core.observer import CallObserver, ServerInfo
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.signals import stop_on_signals
from srpc_core.transport import Endpoint, Listener


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
        codec, self.transport = self._plugins.for_config(cfg)
        self.dispatcher = Dispatcher(
            self.service,
            implementation,
            codec,
            cfg.transport,
            self._plugins.error_to_wire,
            cfg.send_tracebacks,
            types=self._plugins.type_adapters(),
        )
        self._listener: Listener | None = None
        self._serving = threading.Event()
        self._stop_requested = threading.Event()

    @property
    def address(self) -> str:
        """The URL clients reach (the real port once serving), e.g. ``tcp://127.0.0.1:5000``."""
        if self._listener is not None:
            return self._listener.address
        return self.transport.url(self.config.host, self.config.port)

    @property
    def port(self) -> int:
        """The bound port once listening (useful with port 0), else the configured one."""
        return self._listener.port if self._listener is not None else self.config.port

    def start(self, exit_on_error: bool | None = None) -> None:
        """Bind and serve until stopped. Blocks.

        If the server cannot start (the port is taken, say), the error is raised; when
        `exit_on_error` is true (the default in the main thread, i.e. in a ``server.py``) the
        process exits with the message instead of a traceback. In the main thread, Ctrl+C and
        SIGTERM stop it (calls in flight finish first); elsewhere, call `stop`.
        """
        listener = self._bind_or_exit(exit_on_error)
        with stop_on_signals(self.stop):
            self._serve(listener)

    def _bind_or_exit(self, exit_on_error: bool | None) -> Listener:
        """Bind the listener; on failure raise, or exit with the message (see `start`)."""
        try:
            return self._bind()
        except (SrpcError, OSError) as exc:
            in_main_thread = threading.current_thread() is threading.main_thread()
            if exit_on_error if exit_on_error is not None else in_main_thread:
                raise SystemExit(f"srpc: cannot start {self.service.name}: {exc}") from None
            raise

    def _serve(self, listener: Listener) -> None:
        """Serve on a bound listener until stopped: observers, the start and stop lines."""
        observers = self._plugins.call_observers(self._server_info(listener))
        self.dispatcher.set_observers(observers)
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
            print(f"srpc: stopped serving {self.service.name} at {listener.address}", flush=True)

    def stop(self) -> None:
        """Ask a running `start()` to return after calls in flight finish. Thread-safe."""
        self._stop_requested.set()
        if self._listener is not None:
            self._listener.shutdown()

    def wait_until_serving(self, timeout: float = 10.0) -> bool:
        """Block until `start()` (in another thread) is serving; False on timeout."""
        return self._serving.wait(timeout)

    def _bind(self) -> Listener:
        host = resolve_host(self.config.host)
        try:
            endpoint = Endpoint(host, self.config.port, self.service.name, self.service.dotted_name)
            listener = self.transport.bind(endpoint, self.dispatcher.handle)
        except OSError as exc:
            if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
                raise OSError(
                    exc.errno,
                    f"{self.transport.url(host, self.config.port)} is already in use: stop the "
                    "other server or choose another port (srpc.toml [srpc] port, or port=)",
                ) from None
            raise
        self._listener = listener
        return listener

    def _server_info(self, listener: Listener) -> ServerInfo:
        return ServerInfo(
            service=self.service.dotted_name,
            address=listener.address,
            transport=self.config.transport,
            codec=self.config.codec,
            procedures=tuple(self.service.procedures),
            pid=os.getpid(),
            config=self.config,
        )


def _check_implementation(interface: type, implementation: object, names: Any) -> None:
    missing = [n for n in names if not callable(getattr(implementation, n, None))]
    if missing:
        raise TypeError(
            f"{type(implementation).__name__} does not implement {', '.join(missing)} "
            f"of {interface.__qualname__}"
        )


def _close_observers(observers: list[CallObserver]) -> None:
    for observer in observers:
        try:
            observer.close()
        except Exception as exc:  # closing one must not keep the others from flushing
            print(f"srpc: call observer {observer!r} failed to close: {exc}", file=sys.stderr)


__all__ = [
    "Server",
]
