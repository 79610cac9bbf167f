"""Building blocks for transports over stream sockets (TCP, Unix domain sockets, ...).

A stream transport frames each message as a 4-byte big-endian unsigned length followed by that
many bytes (docs/protocol.md). This module holds the parts every such transport shares, so a
plugin only says how to open and bind its sockets:

* `send_frame` / `recv_frame`: the framing, with `max_message_bytes` enforced before a body
  is read or allocated;
* `StreamChannel`: a client channel over one connected socket;
* `StreamListener`: a server that serves each connection in its own thread (a slow call holds
  up nobody else), like `socketserver.ThreadingTCPServer`, with a shutdown that lets calls in
  flight finish and answer; requests a client pipelines behind a slow call get threads of
  their own (`srpc_core.pipelining`).

srpc's ``tcp`` transport is built from them; so is the example plugin's ``uds`` transport.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import cast

from srpc_core import protocol
from srpc_core.errors import (
    CallTimeoutError,
    FrameTooLargeError,
    MismatchError,
    OversizedFrameError,
    TransportError,
)
from srpc_core.listeners import DEFAULT_MAX_CONNECTIONS, ThreadedListener
from srpc_core.observer import serving_peer
from srpc_core.pipelining import Connection, Watchdog
from srpc_core.ratelimit import LogLimiter
from srpc_core.transport import Channel, Handler, answer

log = logging.getLogger("srpc.streams")
HEADER = struct.Struct(">I")
_unpack = HEADER.unpack
#: Below this, header and body are copied together and go out in one system call; above it,
#: they go out together with `sendmsg` (no copy).
SMALL_MESSAGE = 64 * 1024
#: Up to this, a message is received as `bytes` (one read of at most this much, usually
#: enough); above it, it is read in place into a `bytearray` that starts at this size and
#: doubles as the bytes arrive, and handed over as that bytearray. Memory follows the bytes
#: that arrived, never the length a peer announced.
CHUNK = 256 * 1024


#: The name v0.1 plugins import (kept so that they work unchanged).
OversizedFrame = OversizedFrameError

#: On Linux, timeouts are set in the kernel (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket:
#: Python's own socket timeout runs a poll() before every recv and send, a few microseconds per
#: call that srpc's hot path does not need. Elsewhere, Python's timeout.
KERNEL_TIMEOUTS = sys.platform.startswith("linux")


def set_timeout(sock: socket.socket, seconds: float) -> None:
    """Make every later recv and send on `sock` give up after `seconds` with `TimeoutError`
    (as raised by `send_frame` and `recv_frame`). A TLS socket always gets Python's timeout
    (OpenSSL reads the socket itself and must see a timeout, not a failed read)."""
    if not KERNEL_TIMEOUTS or type(sock) is ssl.SSLSocket:
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
        elif type(sock) is ssl.SSLSocket or not _SENDMSG:  # TLS sockets have no sendmsg
            sock.sendall(HEADER.pack(len(message)))
            sock.sendall(message)
        else:  # header and body in one system call, without copying them together
            sent = sock.sendmsg([HEADER.pack(len(message)), message])
            if sent < len(message) + HEADER.size:  # interrupted: the rest as it goes
                _send_rest(sock, message, sent)
    except BlockingIOError:  # a kernel timeout (see set_timeout) ran out
        raise TimeoutError("timed out") from None


def _send_rest(sock: socket.socket, message: bytes, sent: int) -> None:
    """What `sendmsg` left of the header (`sent` bytes of it and `message` went) and message."""
    if sent < HEADER.size:
        sock.sendall(HEADER.pack(len(message))[sent:])
        sent = HEADER.size
    sock.sendall(memoryview(message)[sent - HEADER.size :])


def recv_frame(sock: socket.socket, max_bytes: int, timeout: float | None = None) -> bytes | None:
    """Receive one message; None if the peer closed the connection between messages.

    Raises `OversizedFrameError` *before* reading a body longer than `max_bytes`, `EOFError` if the
    peer closed the connection in the middle of a message, and `TimeoutError` from the socket, or
    when `timeout` is given and the message did not arrive whole within `timeout` seconds of its
    first byte (a peer that trickles a byte now and then cannot hold the connection for ever).

    Memory follows the bytes that arrived: a peer that announces 16 MiB and sends one byte costs
    one byte (plus a read buffer of at most `CHUNK`), never the length it announced.

    Always `bytes`. (`StreamChannel` and `StreamListener` receive a message longer than
    `CHUNK` as the `bytearray` it was read into, saving a copy; this function, kept for
    plugins, copies it into `bytes`.)
    """
    message = _recv_frame(sock, max_bytes, None, timeout, None)
    return message if message is None or type(message) is bytes else bytes(message)


def _recv_frame(
    sock: socket.socket,
    max_bytes: int,
    check_header: Callable[[bytes], None] | None,
    timeout: float | None,
    expires: float | None,
) -> bytes | bytearray | None:
    """`recv_frame`, checking the header with `check_header` first, and with `expires` (a
    `time.monotonic` moment) as the deadline of the whole message when it is given.

    The common case costs two system calls: one read for the header and one for the body,
    which has usually arrived with it. Only a read that comes back short takes the road that
    tracks the deadline (`_recv_rest`). A body longer than `CHUNK` is read into a
    `bytearray` that grows with the bytes that arrived (`_recv_large`) and returned as it is:
    the codecs srpc ships decode it without a copy to `bytes` first.
    """
    try:
        header = sock.recv(4)
    except BlockingIOError:  # a kernel timeout (see set_timeout) ran out
        raise TimeoutError("timed out") from None
    if len(header) != 4:
        if not header:
            return None
        if expires is None and timeout is not None:
            expires = time.monotonic() + timeout  # the message has begun
        header = _recv_rest(sock, header, 4, expires, timeout)
    if check_header is not None:
        check_header(header)
    size = _unpack(header)[0]
    if size > max_bytes:
        raise OversizedFrameError(size, header)
    if not size:
        return b""
    if size > CHUNK:
        if expires is None and timeout is not None:
            expires = time.monotonic() + timeout  # the message has begun
        return _recv_large(sock, size, expires, timeout)
    deadline = expires is not None or timeout is not None
    dontwait = _DONTWAIT if type(sock) is not ssl.SSLSocket else None
    try:
        if deadline and dontwait is not None:  # only what has arrived: no wait here
            first = sock.recv(size, dontwait)
        else:
            first = sock.recv(size)
            if not first:
                raise EOFError("the peer closed the connection in the middle of a message")
    except BlockingIOError:  # nothing yet (MSG_DONTWAIT), or a kernel timeout ran out
        if not deadline or dontwait is None:
            raise TimeoutError("timed out") from None
        first = b""
    if len(first) == size:
        return first
    if expires is None and timeout is not None:
        expires = time.monotonic() + timeout
    return _recv_rest(sock, first, size, expires, timeout)


def _recv_rest(
    sock: socket.socket, first: bytes, size: int, expires: float | None, timeout: float | None
) -> bytes:
    """`first` completed to `size` bytes (at most `CHUNK`), read as they arrive, all
    of them by `expires` (when it is given)."""
    buffer = bytearray(first)
    while len(buffer) < size:
        if expires is not None:
            _wait_readable(sock, expires, timeout)
        try:
            chunk = sock.recv(size - len(buffer))
        except BlockingIOError:  # a kernel timeout ran out
            raise TimeoutError("timed out") from None
        if not chunk:
            raise EOFError("the peer closed the connection in the middle of a message")
        buffer += chunk
    return bytes(buffer)


def _recv_large(
    sock: socket.socket, size: int, expires: float | None, timeout: float | None
) -> bytearray:
    """A body of `size` bytes (more than `CHUNK`), all of it by `expires` (when it is
    given), read straight into the `bytearray` returned (`recv_into`: no copy in Python).

    The buffer starts at `CHUNK` bytes and doubles when full, up to `size` (the last step
    goes to `size` when that is at most 2.5 times what arrived): memory follows the bytes that
    arrived (at most 2.5 times them, and at least `CHUNK`), never the announced length.
    With a deadline, reads do not wait (MSG_DONTWAIT) and a poll waits only when nothing has
    arrived: no system call for a wait that is not needed.
    """
    buffer = bytearray(min(size, CHUNK))
    view = memoryview(buffer)
    got = 0
    # Reads that return at once, where the deadline is kept by polling (not on TLS: OpenSSL
    # reads the socket itself, and there the socket's Python timeout bounds each read).
    dontwait = _DONTWAIT if expires is not None and type(sock) is not ssl.SSLSocket else None
    try:
        while got < size:
            if got == len(buffer):  # full: double it (the bytes so far have arrived)
                grown = 2 * got
                if grown + (grown >> 2) >= size:  # the last step takes the rest at once
                    grown = size  # (not 1 MiB, then 64 bytes more: a second realloc)
                view.release()
                buffer.extend(bytes(grown - got))
                view = memoryview(buffer)
            if dontwait is not None:
                try:
                    n = sock.recv_into(view[got:], 0, dontwait)
                except BlockingIOError:  # nothing waiting: wait for it, within the deadline
                    assert expires is not None
                    _wait_readable(sock, expires, timeout)
                    continue
            else:
                if expires is not None:
                    _wait_readable(sock, expires, timeout)
                try:
                    n = sock.recv_into(view[got:])
                except BlockingIOError:  # a kernel timeout ran out
                    raise TimeoutError("timed out") from None
            if not n:
                raise EOFError("the peer closed the connection in the middle of a message")
            got += n
    finally:
        view.release()
    return buffer


def _wait_readable(sock: socket.socket, expires: float, timeout: float | None) -> None:
    """Return when `sock` has bytes (or an end of file) to read; `TimeoutError` at `expires`."""
    if type(sock) is ssl.SSLSocket and sock.pending():
        return  # decrypted bytes wait in OpenSSL's buffer, not in the socket
    left = expires - time.monotonic()
    if left > 0:
        if hasattr(select, "poll"):  # any descriptor number (select() stops at 1024)
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            if poller.poll(left * 1000):
                return
        elif select.select([sock], [], [], left)[0]:
            return
    raise TimeoutError(f"the message did not arrive whole within {timeout} s of its first byte")


def _send_by(sock: socket.socket, data: bytes | memoryview, expires: float) -> None:
    """Send `data` completely by `expires` (a peer that stops reading cannot hold us longer)."""
    if _DONTWAIT is None or type(sock) is ssl.SSLSocket:  # TLS: bounded by the socket timeout
        sock.sendall(data)
        return
    view = memoryview(data)
    while view:
        try:  # as much as the socket's buffer takes now (no copy: the kernel reads the view)
            sent = sock.send(view, _DONTWAIT)
        except BlockingIOError:
            _wait_writable(sock, expires)
            continue
        view = view[sent:]


def _wait_writable(sock: socket.socket, expires: float) -> None:
    left = expires - time.monotonic()
    if left > 0:
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        if poller.poll(left * 1000):
            return
    raise TimeoutError("the peer did not read the message in time")


def send_frame_by(sock: socket.socket, message: bytes, expires: float) -> None:
    """`send_frame`, all of it by `expires` (a `time.monotonic` moment), for messages large
    enough that a peer that stops reading could otherwise hold the sender: small ones go out
    in one system call, as with `send_frame`. A large one goes out with its header in one
    `sendmsg` (no copy of header and body together), then what the socket did not take at
    once as it takes it."""
    if len(message) < SMALL_MESSAGE:
        send_frame(sock, message)
        return
    header = HEADER.pack(len(message))
    try:
        if _DONTWAIT is None or not _SENDMSG or type(sock) is ssl.SSLSocket:
            _send_by(sock, header, expires)
            _send_by(sock, message, expires)
            return
        try:
            sent = sock.sendmsg([header, message], (), _DONTWAIT)
        except BlockingIOError:  # the socket's buffer is full: wait, then the usual road
            sent = 0
        if sent < HEADER.size:
            _send_by(sock, header[sent:], expires)
            sent = HEADER.size
        if sent - HEADER.size < len(message):
            _send_by(sock, memoryview(message)[sent - HEADER.size :], expires)
    except BlockingIOError:  # a kernel timeout (see set_timeout) ran out
        raise TimeoutError("timed out") from None


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


_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", None)
_PEEK_FLAGS = None if _MSG_DONTWAIT is None else socket.MSG_PEEK | _MSG_DONTWAIT
#: Reads and writes that return at once, for the roads that keep a deadline: only where
#: sockets are blocking with kernel timeouts (a Python-level socket timeout would wait first).
_DONTWAIT = _MSG_DONTWAIT if KERNEL_TIMEOUTS else None
#: Whether sockets have `sendmsg` (not on Windows).
_SENDMSG = hasattr(socket.socket, "sendmsg")


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
        """Send `message` and return the reply, all of it within `timeout` seconds: a server
        that trickles its reply a byte at a time cannot hold the caller longer."""
        expires = time.monotonic() + timeout
        if timeout != self._timeout:  # setting it costs system calls: only when it changes
            set_timeout(self.sock, timeout)
            self._timeout = timeout
        try:
            if self.answered:
                if len(message) < SMALL_MESSAGE:  # the hot path: one system call
                    self.sock.sendall(HEADER.pack(len(message)) + message)
                else:
                    send_frame_by(self.sock, message, expires)
                check = None
            else:
                send_frame_by(self.sock, _ended_by_a_line_break(message), expires)
                check = self._check_first_reply
            if len(message) >= SMALL_MESSAGE and expires - time.monotonic() < timeout - 0.001:
                # Sending took time (a large request, a server slow to read): the wait for the
                # reply gets what is left, not a whole `timeout` of its own.
                _wait_readable(self.sock, expires, timeout)
            reply = _recv_frame(self.sock, self.max_bytes, check, timeout, expires)
        except _ForeignPeer as exc:
            raise self.foreign_peer(exc.name) from None
        except OversizedFrameError as exc:
            raise self.oversized_reply(exc) from None
        except (TimeoutError, BlockingIOError):  # BlockingIOError: a kernel timeout ran out
            raise CallTimeoutError(f"no reply from {self.address} within {timeout} s") from None
        except (OSError, EOFError) as exc:
            raise self.broken(exc) from None
        if reply is None:
            raise TransportError(f"the server at {self.address} closed the connection")
        self.answered = True
        # A large reply is the bytearray it was read into (no copy): srpc's client reads it
        # as bytes (it copies it for a codec that does not say `decodes_bytearray`).
        return cast(bytes, reply)

    def usable(self) -> bool:
        """False if the server closed the connection (or sent something unasked) while it was
        idle: then the client opens a new one before sending anything."""
        if type(self.sock) is ssl.SSLSocket:
            return _tls_usable(self.sock, self._timeout)
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


def _tls_usable(sock: ssl.SSLSocket, timeout: float) -> bool:
    """`StreamChannel.usable` for TLS: records that carry no data (a TLS 1.3 session ticket)
    may wait in the socket; only data or an end of file means the connection is out of step."""
    if not sock.pending() and not select.select([sock], [], [], 0)[0]:
        return True
    sock.setblocking(False)
    try:
        sock.recv(1)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return True  # only protocol records were waiting
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    return False  # an end of file, or bytes nobody asked for (data)


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
    bookkeeping, the connection limit and the draining shutdown; this class adds sockets and
    framing.

    Args:
        sock: the bound socket, already listening.
        address, port: what `Listener.address` and `Listener.port` report.
        handler: the server's request handler.
        max_bytes: `max_message_bytes`.
        idle_timeout: seconds a silent connection is kept.
        drain_timeout: seconds shutdown waits for calls in flight.
        message_timeout: seconds a message may take to arrive whole from its first byte (and
            a reply to be taken by the peer); None: `drain_timeout` (srpc passes ``[srpc]
            timeout`` for both).
        max_connections: connections served at once; past it a new connection is answered
            with a ``busy`` control error and closed. None: no limit.
        max_in_flight: calls one connection may run at once. A connection runs its calls
            one after another in its thread; when a client pipelines requests behind a call
            that runs for a while, the ones waiting get threads of their own, up to this many
            calls in all (`srpc_core.pipelining`). None or 1: one at a time (as in v0.1).
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
        message_timeout: float | None = None,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(
            address, port, drain_timeout=drain_timeout, max_connections=max_connections
        )
        self._watchdog = Watchdog(self._follow, max_in_flight or 1)
        self._sock = sock
        self._handler = handler
        self._max_bytes = max_bytes
        self._idle_timeout = idle_timeout
        self._drain_timeout = drain_timeout
        self._message_timeout = drain_timeout if message_timeout is None else message_timeout

    def closed(self) -> None:
        """Called once the listening socket is closed (a Unix socket removes its file here)."""

    def refusal(self, exc: OversizedFrameError) -> str:
        """What to tell a peer whose message is too large (transports may recognise more).

        A peer of another protocol (HTTP, TLS, SSH, ZeroMQ: `identify_protocol`) announces a
        huge length with its first bytes; it is told what it reached instead.
        """
        name = identify_protocol(exc.header)
        if name is not None:
            return f"this is an srpc server at {self.address}; the client speaks {name}"
        return f"a {exc.size}-byte message exceeds max_message_bytes ({self._max_bytes})"

    # -- ThreadedListener ------------------------------------------------------------------

    def accept(self) -> socket.socket | None:
        if not self.wait_readable(self._sock):
            return None
        try:
            conn, _ = self._sock.accept()
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:  # EMFILE, ENFILE...: let connections go first
                self.back_off(f"accepting on {self.address}: {exc.strerror or exc}")
            else:  # e.g. a connection reset before it was accepted
                _limited.info(log, ("accept", exc.errno), "srpc: accept failed: %s", exc)
            return None
        return conn

    def serve(self, conn: socket.socket) -> None:
        try:
            if conn.family in (socket.AF_INET, socket.AF_INET6):  # EINVAL on macOS if reset
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            set_timeout(conn, self._idle_timeout)
        except OSError as exc:  # reset before we began
            log.debug("srpc: connection to %s ended: %s", self.address, exc)
            return
        connection = Connection(conn)
        self._watchdog.add(connection)
        try:
            self._serve_requests(connection, connection.reader)
            connection.join_followers()
        finally:
            self._watchdog.remove(connection)

    def _follow(self, connection: Connection, generation: int) -> threading.Thread:
        """Start a thread that reads `connection` from now on (`srpc_core.pipelining`)."""
        thread = threading.Thread(
            target=self._serve_requests, args=(connection, generation), daemon=True
        )
        thread.start()
        return thread

    def _serve_requests(self, connection: Connection, generation: int) -> None:
        """Read requests from `connection` and answer them, while this thread is its reader."""
        conn = connection.sock
        timeout = self._message_timeout
        serving_peer(_peer_name(conn))  # for the call observers (the access log)
        try:
            while not self.stopping:
                try:
                    message = _recv_frame(conn, self._max_bytes, None, timeout, None)
                except OversizedFrameError as exc:
                    error = self.refusal(exc)
                    _limited.warning(
                        log,
                        ("oversized", _peer_host(conn)),
                        "srpc: closing a connection from %s to %s: %s",
                        _peer_name(conn),
                        self.address,
                        error,
                    )
                    foreign = identify_protocol(exc.header) is not None
                    code = protocol.Code.MISMATCH if foreign else protocol.Code.TOO_LARGE
                    with connection.send_lock:
                        send_frame(conn, protocol.control_error(error, code))
                    return  # the unread body makes the connection unusable
                if message is None:
                    return  # the client hung up
                connection.begin()
                # A large message is the bytearray it was read into (no copy): srpc's
                # dispatcher reads it as bytes (see `decodes_bytearray` on the codecs).
                reply = answer(self._handler, cast(bytes, message), self._max_bytes)
                reading = connection.end(generation)
                with connection.send_lock:
                    if len(reply) < SMALL_MESSAGE:  # one system call into the socket's buffer
                        conn.sendall(HEADER.pack(len(reply)) + reply)
                    else:  # a peer that stops reading cannot hold this thread past `timeout`
                        send_frame_by(conn, reply, time.monotonic() + timeout)
                if not reading:
                    return  # another thread reads this connection now
        except (OSError, EOFError) as exc:  # idle timeout, reset, truncated message, shutdown
            log.debug("srpc: connection to %s ended: %s", self.address, exc)

    def refuse(self, conn: socket.socket) -> None:
        """Past `max_connections`: a ``busy`` control error, without waiting, then close."""
        try:
            _drain_input(conn)  # closing with unread input would reset, losing our answer
            message = protocol.control_error(
                f"the server at {self.address} is serving its maximum of "
                f"{self.max_connections} connections: try again later",
                protocol.Code.BUSY,
            )
            data = HEADER.pack(len(message)) + message
            if _MSG_DONTWAIT is not None:
                conn.send(data, _MSG_DONTWAIT)
            else:
                conn.setblocking(False)
                conn.send(data)
            conn.shutdown(socket.SHUT_WR)
            _drain_input(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def interrupt(self, conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_RD)  # an idle reader wakes with EOF; a busy one answers
        except OSError:
            pass

    def close_peer(self, conn: socket.socket) -> None:
        conn.close()

    def stop_accepting(self) -> None:
        self._sock.close()


#: Errors of accept() that mean the process or the system is out of something (descriptors,
#: buffers): accepting again at once would fail again.
OUT_OF_RESOURCES = frozenset(
    code
    for code in (getattr(errno, name, None) for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"))
    if code is not None
)
#: Log lines about one peer (or one kind of failure): at most one per 10 s each.
_limited = LogLimiter(period=10.0)


def _peer_name(conn: socket.socket) -> str:
    try:
        name = conn.getpeername()
    except OSError:
        return "a peer"
    if isinstance(name, tuple):
        return f"{name[0]}:{name[1]}"
    return str(name) or "a local peer"


def _peer_host(conn: socket.socket) -> str:
    try:
        name = conn.getpeername()
    except OSError:
        return ""
    return str(name[0]) if isinstance(name, tuple) else str(name)


def _drain_input(conn: socket.socket) -> None:
    """Read and drop whatever `conn` has received so far, without waiting."""
    for _ in range(16):
        try:
            if _MSG_DONTWAIT is None or not conn.recv(65536, _MSG_DONTWAIT):
                return
        except OSError:  # nothing more (BlockingIOError) or reset
            return


__all__ = [
    "CHUNK",
    "HEADER",
    "KERNEL_TIMEOUTS",
    "OUT_OF_RESOURCES",
    "SIGNATURES",
    "SMALL_MESSAGE",
    "TLS_CONTENT_TYPES",
    "OversizedFrame",
    "StreamChannel",
    "StreamListener",
    "identify_protocol",
    "recv_frame",
    "send_frame",
    "send_frame_by",
    "set_timeout",
]
