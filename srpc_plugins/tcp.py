"""The ``tcp`` transport (the default): length-prefixed messages over plain TCP sockets.

Wire: every message is a 4-byte big-endian unsigned length followed by that many bytes.
Client: one connection per channel, TCP_NODELAY, timeouts on connect and every read.
Server: a thread per connection (a slow call holds up nobody else), like
`socketserver.ThreadingTCPServer` but with a shutdown that lets calls in flight finish.

Options (``[srpc.tcp]``): ``idle_timeout`` (seconds a server keeps a silent connection,
default 300), ``backlog`` (listen backlog, default 128).
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import threading
from typing import Any, BinaryIO

from srpc_core import protocol
from srpc_core.errors import (
    CallTimeoutError,
    ConfigError,
    FrameTooLargeError,
    MismatchError,
    ServerUnavailableError,
    TransportError,
)
from srpc_core.hookspecs import RegisterTransport, hookimpl
from srpc_core.transport import Channel, Handler, Listener, Transport, TransportSettings

log = logging.getLogger("srpc.tcp")
HEADER = struct.Struct(">I")
ZMTP_SIGNATURE_FIRST_BYTE = 0xFF  # every ZeroMQ peer opens with it
SMALL_MESSAGE = 64 * 1024  # below this, header and body go out in one send


def send_message(sock: socket.socket, message: bytes) -> None:
    """Send one length-prefixed message."""
    if len(message) < SMALL_MESSAGE:
        sock.sendall(HEADER.pack(len(message)) + message)
    else:
        sock.sendall(HEADER.pack(len(message)))
        sock.sendall(message)


class TcpTransport(Transport):
    """Plain TCP with 4-byte length framing."""

    name = "tcp"

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        unknown = set(settings.options) - {"idle_timeout", "backlog"}
        if unknown:
            raise ConfigError(
                f"unknown key(s) {', '.join(sorted(unknown))} in [srpc.tcp]; valid keys: "
                "backlog, idle_timeout"
            )
        self.idle_timeout = float(settings.options.get("idle_timeout", 300.0))
        self.backlog = int(settings.options.get("backlog", 128))

    def connect(self, host: str, port: int, timeout: float) -> Channel:
        address = self.url(host, port)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except TimeoutError:
            raise ServerUnavailableError(
                f"no srpc server at {address}: connecting timed out after {timeout} s"
            ) from None
        except OSError as exc:
            raise ServerUnavailableError(
                f"no srpc server at {address}: is it running? ({exc.strerror or exc})"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return TcpChannel(sock, address, self.settings.max_message_bytes, timeout)

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        return TcpListener(self, host, port, handler)


class TcpChannel(Channel):
    """One client connection."""

    def __init__(self, sock: socket.socket, address: str, max_bytes: int, timeout: float) -> None:
        self._sock = sock
        self._reader: BinaryIO = sock.makefile("rb")
        self._address = address
        self._max_bytes = max_bytes
        self._timeout = timeout

    def request(self, message: bytes, timeout: float) -> bytes:
        if timeout != self._timeout:  # settimeout costs a system call: only when it changes
            self._sock.settimeout(timeout)
            self._timeout = timeout
        try:
            send_message(self._sock, message)
            return self._read_reply()
        except TimeoutError:
            raise CallTimeoutError(f"no reply from {self._address} within {timeout} s") from None
        except OSError as exc:
            raise TransportError(f"connection to {self._address} failed: {exc}") from None

    def _read_reply(self) -> bytes:
        header = self._reader.read(HEADER.size)
        if len(header) < HEADER.size:
            raise TransportError(f"the server at {self._address} closed the connection")
        if header[0] == ZMTP_SIGNATURE_FIRST_BYTE:
            raise MismatchError(
                f"the server at {self._address} speaks ZeroMQ (transport 'zmq') but this client "
                "uses transport 'tcp': set the same transport in srpc.toml on both sides"
            )
        (size,) = HEADER.unpack(header)
        if size > self._max_bytes:
            raise FrameTooLargeError(
                f"the server at {self._address} sent a {size}-byte message, more than "
                f"max_message_bytes ({self._max_bytes})"
            )
        body = self._reader.read(size)
        if len(body) < size:
            raise TransportError(f"the server at {self._address} closed the connection mid-reply")
        return body

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self._sock.close()


class TcpListener(Listener):
    """Accepts connections and serves each in its own thread."""

    def __init__(self, transport: TcpTransport, host: str, port: int, handler: Handler) -> None:
        self._transport = transport
        self._handler = handler
        self._max_bytes = transport.settings.max_message_bytes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, port), family=family, backlog=transport.backlog)
        self.port = self._sock.getsockname()[1]
        self.address = transport.url(host, self.port)
        self._stop = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()

    def serve_forever(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._sock:
                        self._accept()
        self._sock.close()
        self._drain()
        self._wake_reader.close()
        self._wake_writer.close()

    def shutdown(self) -> None:
        self._stop.set()
        try:
            self._wake_writer.send(b"x")
        except OSError:  # already closed: serve_forever has returned
            pass

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
            log.warning("srpc tcp: accept failed: %s", exc)
            return
        thread = threading.Thread(target=self._serve_connection, args=(conn,), daemon=True)
        with self._lock:
            self._connections[conn] = thread
        thread.start()

    def _drain(self) -> None:
        """Stop reading new requests; let calls in flight finish and answer."""
        with self._lock:
            connections = dict(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RD)  # an idle reader wakes with EOF; a busy one answers
            except OSError:
                pass
        for thread in connections.values():
            thread.join(self._transport.settings.timeout)

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self._transport.idle_timeout)
        reader = conn.makefile("rb")
        try:
            self._serve_messages(conn, reader)
        except (OSError, ValueError) as exc:  # timeouts, resets, closed during shutdown
            log.debug("srpc tcp: connection ended: %s", exc)
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            reader.close()
            conn.close()

    def _serve_messages(self, conn: socket.socket, reader: Any) -> None:
        while not self._stop.is_set():
            header = reader.read(HEADER.size)
            if len(header) < HEADER.size:
                return  # the client hung up
            (size,) = HEADER.unpack(header)
            if size > self._max_bytes:
                self._refuse(conn, header, size)
                return
            message = reader.read(size)
            if len(message) < size:
                return  # truncated: the client hung up mid-message
            send_message(conn, self._reply(message))

    def _reply(self, message: bytes) -> bytes:
        try:
            reply = self._handler(message)
        except Exception as exc:  # a handler bug must cost one call, not the server
            log.exception("srpc tcp: handler failed")
            return protocol.control_error(f"internal server error: {type(exc).__name__}")
        if len(reply) > self._max_bytes:
            return protocol.control_error(
                f"the response is {len(reply)} bytes, more than max_message_bytes "
                f"({self._max_bytes})"
            )
        return reply

    def _refuse(self, conn: socket.socket, header: bytes, size: int) -> None:
        if header[0] == ZMTP_SIGNATURE_FIRST_BYTE:
            error = (
                f"this is an srpc server with transport 'tcp' at {self.address}; the client "
                "speaks ZeroMQ (transport 'zmq'): set the same transport in srpc.toml on both sides"
            )
        else:
            error = f"a {size}-byte message exceeds max_message_bytes ({self._max_bytes})"
        log.warning("srpc tcp: closing a connection: %s", error)
        send_message(conn, protocol.control_error(error))


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``tcp``."""
    register("tcp", TcpTransport)
