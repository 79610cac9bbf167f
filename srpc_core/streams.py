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
import select
import socket
import struct
import sys
from collections.abc import Callable

from srpc_core import protocol
from srpc_core.errors import (
    CallTimeoutError,
    FrameTooLargeError,
    MismatchError,
    OversizedFrameError,
    TransportError,
)
from srpc_core.listeners import ThreadedListener
from srpc_core.transport import Channel, Handler, answer

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
    return _recv_frame(sock, max_bytes, None)


def _recv_frame(
    sock: socket.socket, max_bytes: int, check_header: Callable[[bytes], None] | None
) -> bytes | None:
    try:
        header = _recv_exactly(sock, HEADER.size)
        if header is None:
            return None
        if check_header is not None:
            check_header(header)
        (size,) = HEADER.unpack(header)
        if size > max_bytes:
            raise OversizedFrameError(size, header)
        body = _recv_exactly(sock, size)
    except BlockingIOError:  # a kernel timeout (see set_timeout) ran out
        raise TimeoutError("timed out") from None
    if body is None:
        raise EOFError("the peer closed the connection in the middle of a message")
    return body


#: What other protocols' peers send first, and their names: see `identify_protocol`.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"HTTP/", "HTTP"),  # a response
    (b"PRI * HTTP/2", "HTTP/2"),  # a client's connection preface
    # An HTTP/0.9-style answer: the error page alone (Python's http.server answers a request
    # line it cannot parse this way).
    *((page, "HTTP") for page in (b"<!DOCTYPE", b"<!doctype", b"<html", b"<HTML")),
    *((method, "HTTP") for method in (b"GET ", b"HEAD", b"POST", b"PUT ", b"DELETE", b"OPTIONS")),
    (b"SSH-", "SSH"),  # every SSH peer opens with its banner
    (b"\xff", "ZeroMQ"),  # the first byte of every ZMTP greeting
)
#: TLS records start with a content type (change_cipher_spec, alert, handshake, application
#: data) and the major version 3.
TLS_CONTENT_TYPES = range(0x14, 0x18)


def identify_protocol(data: bytes) -> str | None:
    """The protocol whose peers start talking with `data`, or None if srpc knows none.

    `data` is the first bytes a peer sent (at least the 4 of a length prefix, or the one of a
    ZeroMQ greeting). Names HTTP (requests and responses), HTTP/2, SSH, TLS and ZeroMQ: a
    stream transport that reads such bytes where it expected a length prefix can tell the user
    what answered instead of announcing a 1.4 GB message or waiting out its timeout.
    """
    for signature, name in SIGNATURES:
        needed = min(len(signature), HEADER.size)
        if len(data) >= needed and data[: len(signature)] == signature[: len(data)]:
            return name
    if len(data) >= 3 and data[0] in TLS_CONTENT_TYPES and data[1] == 3 and data[2] <= 4:
        return "TLS"
    return None


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


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)
_PEEK_FLAGS = None if _DONTWAIT is None else socket.MSG_PEEK | _DONTWAIT


class StreamChannel(Channel):
    """A client channel over one connected stream socket.

    The first reply on a connection is checked for another protocol's opening bytes
    (`identify_protocol`): a client pointed at an HTTP, SSH, TLS or ZeroMQ server gets a
    `MismatchError` naming it at once. So that servers of line-based protocols (HTTP) answer at
    once too, the first message, when it is a control message (the hello: a JSON object), goes
    out with a newline after the JSON, which srpc servers read as the whitespace it is.
    """

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
            if self.answered:
                send_frame(self.sock, message)
                reply = recv_frame(self.sock, self.max_bytes)
            else:
                send_frame(self.sock, _ended_by_a_line_break(message))
                reply = _recv_frame(self.sock, self.max_bytes, self._check_first_reply)
        except _ForeignPeer as exc:
            raise self.foreign_peer(exc.name) from None
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

    def usable(self) -> bool:
        """False if the server closed the connection (or sent something unasked) while it was
        idle: then the client opens a new one before sending anything."""
        try:
            if _PEEK_FLAGS is None:  # no MSG_DONTWAIT (Windows): ask select
                return not select.select([self.sock], [], [], 0)[0]
            self.sock.recv(1, _PEEK_FLAGS)
        except BlockingIOError:
            return True  # nothing waiting: the connection is open and in step
        except OSError:
            return False
        return False  # end of file, or bytes nobody asked for

    def oversized_reply(self, exc: OversizedFrameError) -> Exception:
        """The error for a reply longer than `max_bytes` (transports may recognise more)."""
        return FrameTooLargeError(
            f"the server at {self.address} sent a {exc.size}-byte message, more than "
            f"max_message_bytes ({self.max_bytes})"
        )

    def foreign_peer(self, name: str) -> Exception:
        """The error for a server that speaks protocol `name` (see `identify_protocol`)."""
        if name == "ZeroMQ":
            scheme = self.address.partition("://")[0]
            return MismatchError(
                f"the server at {self.address} speaks ZeroMQ (transport 'zmq') but this client "
                f"uses transport {scheme!r}: set the same transport in srpc.toml on both sides"
            )
        return MismatchError(
            f"the server at {self.address} speaks {name}, not srpc: check host and port"
        )

    def broken(self, exc: OSError | EOFError) -> Exception:
        """The error for a connection that failed (transports may explain more)."""
        return TransportError(f"connection to {self.address} failed: {exc}")

    def close(self) -> None:
        self.sock.close()  # idempotent

    def _check_first_reply(self, header: bytes) -> None:
        name = identify_protocol(header)
        if name is not None:
            raise _ForeignPeer(name)


class _ForeignPeer(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _ended_by_a_line_break(message: bytes) -> bytes:
    """A control message (JSON) with a newline after it, which line-based servers wait for."""
    if protocol.is_control(message) and not message.endswith(b"\n"):
        return message + b"\n"
    return message


class StreamListener(ThreadedListener[socket.socket]):
    """Serves a bound, listening stream socket: one thread per connection.

    Built on `srpc_core.listeners.ThreadedListener`, which holds the accept loop, the threads'
    bookkeeping and the draining shutdown; this class adds sockets and framing.

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
        super().__init__(address, port, drain_timeout=drain_timeout)
        self._sock = sock
        self._handler = handler
        self._max_bytes = max_bytes
        self._idle_timeout = idle_timeout
        self._drain_timeout = drain_timeout

    def closed(self) -> None:
        """Called once the listening socket is closed (a Unix socket removes its file here)."""

    def refusal(self, exc: OversizedFrameError) -> str:
        """What to tell a peer whose message is too large (transports may recognise more)."""
        return f"a {exc.size}-byte message exceeds max_message_bytes ({self._max_bytes})"

    # -- ThreadedListener ------------------------------------------------------------------

    def accept(self) -> socket.socket | None:
        if not self.wait_readable(self._sock):
            return None
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:  # e.g. EMFILE: keep serving the connections we have
            log.warning("srpc: accept failed on %s: %s", self.address, exc)
            return None
        return conn

    def serve(self, conn: socket.socket) -> None:
        try:
            if conn.family in (socket.AF_INET, socket.AF_INET6):  # EINVAL on macOS if reset
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_timeout(conn, self._idle_timeout)
            while not self.stopping:
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

    def interrupt(self, conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_RD)  # an idle reader wakes with EOF; a busy one answers
        except OSError:
            pass

    def close_peer(self, conn: socket.socket) -> None:
        conn.close()

    def stop_accepting(self) -> None:
        self._sock.close()
