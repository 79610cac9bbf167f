"""Building blocks for transports over stream sockets (TCP, Unix domain sockets, ...).

A stream transport frames each message as a 4-byte big-endian unsigned length followed by that
many bytes (docs/protocol.md). This module holds the parts every such transport shares, so a
plugin only says how to open and bind its sockets:

* `send_frame` / `recv_frame`: the framing, with `max_message_bytes` enforced before a body
  is read or allocated;
* `StreamChannel`: a client channel over one connected socket;
* `StreamListener`: a server that serves each connection in its own thread (a slow call holds
  up nobody else), like `socketserver.ThreadingTCPServer`, with a shutdown that lets calls in
  flight finish and answer.

srpc's ``tcp`` transport is built from them; so is the example plugin's ``uds`` transport.
"""

from __future__ import annotations

import logging
import selectors
import socket
import struct
import sys
import threading
import time

from srpc_core import protocol
from srpc_core.errors import (
    CallTimeoutError,
    FrameTooLargeError,
    OversizedFrameError,
    TransportError,
)
from srpc_core.transport import Channel, Handler, Listener, answer

log = logging.getLogger("srpc.streams")
HEADER = struct.Struct(">I")
#: Below this, header and body go out in one system call; above it, copying them together
#: would cost more than the second call.
SMALL_MESSAGE = 64 * 1024


#: The name v0.1 plugins import (kept so that they work unchanged).
OversizedFrame = OversizedFrameError

#: On Linux, timeouts are set in the kernel (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket:
#: Python's own socket timeout runs a poll() before every recv and send, a few microseconds per
#: call that srpc's hot path does not need. Elsewhere, Python's timeout.
KERNEL_TIMEOUTS = sys.platform.startswith("linux")


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """Make every later recv and send on `sock` give up after `seconds` with `TimeoutError`
    (as raised by `send_frame` and `recv_frame`)."""
    if not KERNEL_TIMEOUTS:
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def send_frame(sock: socket.socket, message: bytes) -> None:
    """Send one length-prefixed message."""
    try:
        if len(message) < SMALL_MESSAGE:
            sock.sendall(HEADER.pack(len(message)) + message)
        else:
            sock.sendall(HEADER.pack(len(message)))
            sock.sendall(message)
    except BlockingIOError:  # a kernel timeout (see set_timeout) ran out
        raise TimeoutError("timed out") from None


def recv_frame(sock: socket.socket, max_bytes: int) -> bytes | None:
    """Receive one message; None if the peer closed the connection between messages.

    Raises `OversizedFrameError` *before* reading a body longer than `max_bytes`, `EOFError` if the
    peer closed the connection in the middle of a message, and `TimeoutError` from the socket.
    """
    try:
        header = _recv_exactly(sock, HEADER.size)
        if header is None:
            return None
        (size,) = HEADER.unpack(header)
        if size > max_bytes:
            raise OversizedFrameError(size, header)
        body = _recv_exactly(sock, size)
    except BlockingIOError:  # a kernel timeout (see set_timeout) ran out
        raise TimeoutError("timed out") from None
    if body is None:
        raise EOFError("the peer closed the connection in the middle of a message")
    return body


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None if the connection ends before the first byte."""
    if size == 0:
        return b""
    first = sock.recv(size)  # usually the whole message: no buffer to assemble
    if len(first) == size:
        return first
    if not first:
        return None
    buffer = bytearray(size)
    buffer[: len(first)] = first
    view, received = memoryview(buffer), len(first)
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError("the peer closed the connection in the middle of a message")
        received += count
    return bytes(buffer)


class StreamChannel(Channel):
    """A client channel over one connected stream socket."""

    def __init__(self, sock: socket.socket, address: str, max_bytes: int, timeout: float) -> None:
        set_timeout(sock, timeout)
        self.sock = sock
        self.address = address
        self.max_bytes = max_bytes
        self._timeout = timeout
        self.answered = False  # whether a reply has come on this connection yet

    def request(self, message: bytes, timeout: float) -> bytes:
        if timeout != self._timeout:  # setting it costs system calls: only when it changes
            set_timeout(self.sock, timeout)
            self._timeout = timeout
        try:
            send_frame(self.sock, message)
            reply = recv_frame(self.sock, self.max_bytes)
        except OversizedFrameError as exc:
            raise self.oversized_reply(exc) from None
        except TimeoutError:
            raise CallTimeoutError(f"no reply from {self.address} within {timeout} s") from None
        except (OSError, EOFError) as exc:
            raise self.broken(exc) from None
        if reply is None:
            raise TransportError(f"the server at {self.address} closed the connection")
        self.answered = True
        return reply

    def oversized_reply(self, exc: OversizedFrameError) -> Exception:
        """The error for a reply longer than `max_bytes` (transports may recognise more)."""
        return FrameTooLargeError(
            f"the server at {self.address} sent a {exc.size}-byte message, more than "
            f"max_message_bytes ({self.max_bytes})"
        )

    def broken(self, exc: OSError | EOFError) -> Exception:
        """The error for a connection that failed (transports may explain more)."""
        return TransportError(f"connection to {self.address} failed: {exc}")

    def close(self) -> None:
        self.sock.close()  # idempotent


class StreamListener(Listener):
    """Serves a bound, listening stream socket: one thread per connection.

    Args:
        sock: the bound socket, already listening.
        address, port: what `Listener.address` and `Listener.port` report.
        handler: the server's request handler.
        max_bytes: `max_message_bytes`.
        idle_timeout: seconds a silent connection is kept.
        drain_timeout: seconds shutdown waits for calls in flight.
    """

    def __init__(
        self,
        sock: socket.socket,
        address: str,
        port: int,
        handler: Handler,
        *,
        max_bytes: int,
        idle_timeout: float,
        drain_timeout: float,
    ) -> None:
        self.address = address
        self.port = port
        self._sock = sock
        self._handler = handler
        self._max_bytes = max_bytes
        self._idle_timeout = idle_timeout
        self._drain_timeout = drain_timeout
        self._stopping = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._lock = threading.Lock()

    def serve_forever(self) -> None:
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._sock, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self._sock:
                            self._accept()
        finally:
            self._sock.close()
            try:
                self.closed()
            finally:  # whatever closed() does, calls in flight still get their answers
                self._drain()
                self._wake_reader.close()
                self._wake_writer.close()

    def shutdown(self) -> None:
        self._stopping.set()
        try:  # wakes the selector; safe in a signal handler
            self._wake_writer.send(b"x")
        except OSError:  # already closed: serve_forever has returned
            pass

    def closed(self) -> None:
        """Called once the listening socket is closed (a Unix socket removes its file here)."""

    def refusal(self, exc: OversizedFrameError) -> str:
        """What to tell a peer whose message is too large (transports may recognise more)."""
        return f"a {exc.size}-byte message exceeds max_message_bytes ({self._max_bytes})"

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
            log.warning("srpc: accept failed on %s: %s", self.address, exc)
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
        deadline = time.monotonic() + self._drain_timeout  # for all of them, not each
        for thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            if conn.family in (socket.AF_INET, socket.AF_INET6):  # EINVAL on macOS if reset
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_timeout(conn, self._idle_timeout)
            while not self._stopping.is_set():
                try:
                    message = recv_frame(conn, self._max_bytes)
                except OversizedFrameError as exc:
                    error = self.refusal(exc)
                    log.warning("srpc: closing a connection to %s: %s", self.address, error)
                    send_frame(conn, protocol.control_error(error))
                    return  # the unread body makes the connection unusable
                if message is None:
                    return  # the client hung up
                send_frame(conn, answer(self._handler, message, self._max_bytes))
        except (OSError, EOFError) as exc:  # idle timeout, reset, truncated message, shutdown
            log.debug("srpc: connection to %s ended: %s", self.address, exc)
        finally:
            with self._lock:
                self._connections.pop(conn, None)
            conn.close()
