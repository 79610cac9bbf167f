"""The ``uds`` transport: srpc messages over Unix domain sockets, for calls on one machine.

Addresses. srpc's ``host`` and ``port`` name a socket file:

* ``host`` is a path to a directory (an existing one, or any path ending in ``/``): the socket is
  ``<host>/srpc-<port>.sock``;
* ``host`` is any other path (it contains a ``/``): it is the socket file itself and the port is
  ignored;
* ``host`` is a loopback name (``127.0.0.1``, ``localhost``, ``::1``, srpc's default): the
  socket is ``srpc-<port>.sock`` in the socket directory: the ``dir`` option, else
  ``<temp dir>/srpc-<uid>`` (created private to the user). So switching an existing
  ``127.0.0.1:5000`` setup to ``transport = "uds"`` needs no other edit.

Other hosts are refused: a Unix socket never leaves the machine. Port 0 in a directory picks a
free ``srpc-<n>.sock``. Relative paths are relative to each process's working directory.

Options (``[srpc.uds]``): ``dir`` (the socket directory for loopback hosts), ``mode`` (the
socket file's permissions, default ``0o600``: only this user may connect), ``idle_timeout``
(seconds a server keeps a silent connection, default 300), ``backlog`` (default 128).

Wire and server come from ``srpc_core.streams``, as for srpc's tcp transport: the same 4-byte
length framing, and a thread per connection, so a slow call holds up nobody else.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import stat
import tempfile
from pathlib import Path
from typing import TypeVar

from srpc_core import (
    Channel,
    ConfigError,
    Handler,
    Listener,
    ServerUnavailableError,
    Transport,
    TransportSettings,
    hookimpl,
)
from srpc_core.hookspecs import RegisterTransport
from srpc_core.streams import StreamChannel, StreamListener

OPTIONS = ("backlog", "dir", "idle_timeout", "mode")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: sun_path is 108 bytes on Linux, 104 on macOS, including the final NUL.
MAX_PATH_BYTES = 103
FREE_NAME_TRIES = 100
T = TypeVar("T", int, float, str)


class UdsTransport(Transport):
    """Unix domain stream sockets with 4-byte length framing."""

    name = "uds"

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        if not hasattr(socket, "AF_UNIX"):
            raise ConfigError("transport 'uds' needs Unix domain sockets; this platform has none")
        unknown = set(settings.options) - set(OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(sorted(unknown))} in [srpc.uds]; valid keys: "
                + ", ".join(OPTIONS)
            )
        directory = _option(settings, "dir", str, "")
        #: In the shared temporary directory, the socket directory must be ours alone.
        self._check_directory = not directory
        self.directory = Path(directory) if directory else _default_directory()
        self.mode = _option(settings, "mode", int, 0o600)
        self.idle_timeout = _option(settings, "idle_timeout", float, 300.0)
        self.backlog = _option(settings, "backlog", int, 128)

    def socket_path(self, host: str, port: int) -> Path:
        """The socket file that `host` and `port` name (see the module docstring)."""
        return self._resolve(host, port)[0]

    def url(self, host: str, port: int) -> str:
        try:
            return f"uds://{self.socket_path(host, port)}"
        except ConfigError:
            return f"uds://{host}:{port}"

    def connect(self, host: str, port: int, timeout: float) -> Channel:
        path = self.socket_path(host, port)
        if self._check_directory and path.parent == self.directory:
            _check_private_directory(self.directory)  # never talk to another user's server
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(os.fspath(path))
        except TimeoutError:
            sock.close()
            raise ServerUnavailableError(
                f"no srpc server at uds://{path}: connecting timed out after {timeout} s"
            ) from None
        except OSError as exc:
            sock.close()
            raise ServerUnavailableError(
                f"no srpc server at uds://{path}: is it running? ({exc.strerror or exc})"
            ) from None
        return StreamChannel(sock, f"uds://{path}", self.settings.max_message_bytes, timeout)

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        path, in_directory = self._resolve(host, port)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self._check_directory and path.parent == self.directory:
            _check_private_directory(self.directory)
        if in_directory and port == 0:
            sock, path, port = _bind_free_name(path.parent)
        else:
            sock = _bind(path)
        return UdsListener(self, sock, path, port if in_directory else 0, handler)

    def _resolve(self, host: str, port: int) -> tuple[Path, bool]:
        """The socket path, and whether it is ``srpc-<port>.sock`` in a directory."""
        if "/" in host or os.sep in host:
            path = Path(host)
            if host.endswith("/") or path.is_dir():
                return path / f"srpc-{port}.sock", True
            return path, False
        if host in LOOPBACK_HOSTS or host.startswith("127."):
            return self.directory / f"srpc-{port}.sock", True
        raise ConfigError(
            f"transport 'uds' only reaches this machine: host {host!r} must be a socket path, a "
            "directory, or a loopback name such as 127.0.0.1"
        )


class UdsListener(StreamListener):
    """A `StreamListener` on a bound Unix socket file, which it removes when it closes."""

    def __init__(
        self,
        transport: UdsTransport,
        sock: socket.socket,
        path: Path,
        port: int,
        handler: Handler,
    ) -> None:
        self._path = path
        self._inode = path.stat().st_ino  # to remove only our own socket file at the end
        os.chmod(path, transport.mode)
        sock.listen(transport.backlog)
        super().__init__(
            sock,
            f"uds://{path}",
            port,
            handler,
            max_bytes=transport.settings.max_message_bytes,
            idle_timeout=transport.idle_timeout,
            drain_timeout=transport.settings.timeout,
        )

    def closed(self) -> None:
        """Remove the socket file, unless a newer server has replaced it since."""
        try:
            if self._path.stat().st_ino == self._inode:
                self._path.unlink()
        except OSError:
            pass


def _default_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"srpc-{os.getuid()}"


def _check_private_directory(directory: Path) -> None:
    """Refuse the default socket directory unless it belongs to this user alone.

    It lives in the shared temporary directory, where another user could have created it first
    to plant a server of their own in it.
    """
    try:
        info = directory.lstat()
    except FileNotFoundError:
        return  # nothing there yet: no server to reach, and listen() creates it private
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise ConfigError(
            f"transport 'uds': {directory} is not a private directory of this user; remove it, "
            "or choose another directory with [srpc.uds] dir"
        )


def _option(settings: TransportSettings, key: str, kind: type[T], default: T) -> T:
    value = settings.options.get(key, default)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"[srpc.uds] {key} = {value!r} is invalid: expected a value of type {kind.__name__}"
        ) from None


def _bind(path: Path) -> socket.socket:
    """A socket bound at `path`, replacing a stale socket file left by a dead server."""
    if len(os.fsencode(path)) > MAX_PATH_BYTES:
        raise ConfigError(
            f"transport 'uds': the socket path {path} is longer than {MAX_PATH_BYTES} bytes, "
            "the limit of Unix domain sockets; choose a shorter host or [srpc.uds] dir"
        )
    if path.exists() or path.is_symlink():
        _remove_if_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_if_stale(path: Path) -> None:
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; srpc will not replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:  # nobody listens: a crashed server's leftover
        path.unlink()
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"uds://{path} is already in use by a running server")


def _bind_free_name(directory: Path) -> tuple[socket.socket, Path, int]:
    """Bind ``srpc-<n>.sock`` in `directory` for a free n (what port 0 means here)."""
    for _ in range(FREE_NAME_TRIES):
        port = random.randrange(49152, 65536)
        path = directory / f"srpc-{port}.sock"
        if path.exists() or path.is_symlink():
            continue
        try:
            return _bind(path), path, port
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:  # lost a race for this name: try another
                raise
    raise OSError(errno.EADDRINUSE, f"no free srpc-<n>.sock name in {directory}")


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``uds``."""
    register("uds", UdsTransport)
