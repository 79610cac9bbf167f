"""The client side of the ``zmq`` transport: one DEALER socket per channel.

Why a DEALER and not a REQ socket: REQ enforces send/receive lockstep, so after a timed-out call
the socket is stuck until the late reply arrives. A DEALER has no such state; each request
carries a tag (see `wire`), and a reply whose tag is not the one awaited is dropped.

Why a socket monitor: ZeroMQ connects in the background and retries for ever, which would turn
"nobody there" and "that is not a ZeroMQ peer" into silent hangs. The monitor reports what
happened to the connection, so a channel is handed out only after the ZeroMQ handshake
succeeded, a refused connection fails at once, and a peer that is not speaking ZeroMQ (an srpc
server with transport 'tcp') is reported as a mismatch. After the handshake the monitor also
tells when the connection broke, so a call fails promptly instead of waiting out its timeout,
and the core replaces the channel with a fresh one (and a fresh hello), exactly as with TCP.
The same events tell a CURVE failure apart (ZeroMQ itself reports nothing to the application):
a handshake refused by the server's authenticator (an unknown client key), a mechanism mismatch
(CURVE on one side only), or a CURVE handshake the server broke off (a wrong server key).
ZeroMQ's own reconnection and queueing stay at their defaults on purpose: with reconnection off
(or ZMQ_IMMEDIATE on) libzmq discards an answer that arrived just before the connection
closed, the answer of a server that finished its last call and stopped.

A channel is used by one thread at a time, but the core's pool may hand it to another thread
for a later call. ZeroMQ allows that (a socket may migrate between threads with a full memory
barrier in between, which the pool's lock-free handover under the GIL provides); it forbids
only concurrent use, which never happens.
"""

from __future__ import annotations

import struct
from time import monotonic

import zmq
from zmq.utils.monitor import recv_monitor_message

from srpc_core.errors import (
    AuthenticationError,
    CallTimeoutError,
    FrameTooLargeError,
    MismatchError,
    ServerUnavailableError,
    SrpcError,
    TransportError,
)
from srpc_core.transport import Channel
from srpc_plugins.zmq.curve import CurveKeys
from srpc_plugins.zmq.wire import DELIMITER, END, ms, tcp_endpoint

TAG = struct.Struct(">I")
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
#: Handshake failures that say why: the server's authenticator refused the key, or the other
#: side uses another security mechanism (or is broken). NO_DETAIL says nothing.
DECISIVE_FAILURES = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
#: The connection's life as the monitor reports it: TCP connected, then the ZeroMQ handshake
#: succeeded or failed, and finally closed (refused) or disconnected (broken).
MONITORED_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | HANDSHAKE_FAILED
    | zmq.EVENT_CLOSED
    | zmq.EVENT_DISCONNECTED
)
BROKEN_EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
#: What a client sends to learn a server's security mechanism after a handshake that failed
#: without a reason: the ZMTP signature and major version 3, after which a ZeroMQ peer sends
#: the rest of its 64-byte greeting, whose bytes 12-31 name its mechanism ("NULL", "CURVE").
GREETING_PROBE = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03"
GREETING_BYTES = 64


#: What `ClientSide.handshake_step` makes of a monitor event during the connection.
CONNECTED, SUCCEEDED, SILENT, WAIT = "connected", "succeeded", "silent", "wait"


def client_socket(
    context: zmq.Context[zmq.Socket[bytes]],
    host: str,
    address: str,
    max_bytes: int,
    curve: CurveKeys | None,
) -> zmq.Socket[bytes]:
    """A client's DEALER, set up as both client sides use it (not connected yet)."""
    sock = context.socket(zmq.DEALER)
    sock.linger = 0  # never keep an abandoned request around after close
    sock.maxmsgsize = max_bytes  # libzmq drops a larger reply before allocating it
    sock.ipv6 = ":" in host
    if curve is not None:
        try:
            curve.apply_to_client(sock, address)
        except BaseException:
            sock.close(linger=0)
            raise
    return sock


class ClientSide:
    """What the sync and the async client channels share: reading the monitor's events while
    connecting, and the errors that say what went wrong.

    Subclasses set `_address` (the ``zmq://`` URL), `_host_port`, `_curve` and `_max_bytes`.
    """

    _address: str
    _host_port: tuple[str, int]
    _curve: CurveKeys | None
    _max_bytes: int

    def handshake_step(self, event: int, value: int, handshaking: bool) -> str:
        """What a monitor event means while connecting: `SUCCEEDED` (ready), `CONNECTED` (TCP
        connected, the ZeroMQ handshake under way), `SILENT` (broken off without a reason: ask
        the server with `_silent_failure`) or `WAIT`; raises for a refusal that says why."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return SUCCEEDED
        if event == zmq.EVENT_CONNECTED:
            return CONNECTED
        if event & DECISIVE_FAILURES:
            raise self._handshake_failed(event, value)
        if handshaking and (event & BROKEN_EVENTS or event & HANDSHAKE_FAILED):
            # Broken off without a reason: a peer that refuses the mechanism may reset the
            # connection before this side has read its greeting. Ask the server once.
            return SILENT
        if event & BROKEN_EVENTS:
            raise ServerUnavailableError(
                f"no srpc server at {self._address}: is it running? (connection refused)"
            )
        return WAIT

    def _handshake_failed(self, event: int, value: int) -> AuthenticationError | MismatchError:
        """The error for a handshake the monitor said why it failed (`event`, with `value`: a
        ZAP status code or a protocol error). Nothing was sent on the connection."""
        where = f"the server at {self._address}"
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # the server's authenticator said no
            public = self._curve.public.decode() if self._curve else "(none)"
            return AuthenticationError(
                f"{where} refused this client's CURVE key {public} (status {value}): add it "
                "to the server's [srpc.zmq] curve_authorized_keys; nothing was sent"
            )
        if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:  # CURVE on one side only
            return self._mechanism_mismatch("CURVE" if self._curve is None else "NULL")
        return self._mechanism_mismatch("") if self._curve else self._not_zeromq()

    def _mechanism_mismatch(self, mechanism: str) -> AuthenticationError | MismatchError:
        """The error once the server's `mechanism` is known ("" if it is not)."""
        where = f"the server at {self._address}"
        curve = self._curve is not None
        if curve and mechanism == "NULL":
            return MismatchError(
                f"{where} does not use CURVE, while this client does ([srpc.zmq] "
                "curve_server_key is set): set curve_secret_key_file on the server too, or "
                "remove the curve_* keys here; nothing was sent"
            )
        if not curve and mechanism and mechanism != "NULL":
            return MismatchError(
                f"{where} requires {mechanism}, while this client connects in plaintext: set "
                "[srpc.zmq] curve_server_key (the server's public key) and "
                "curve_secret_key_file (this client's NAME.key from srpc keygen); nothing was "
                "sent"
            )
        if curve and mechanism == "CURVE":
            return AuthenticationError(
                f"{where} broke off the CURVE handshake: [srpc.zmq] curve_server_key is not "
                "that server's public key; nothing was sent"
            )
        if curve:
            return AuthenticationError(
                f"{where} broke off the CURVE handshake: [srpc.zmq] curve_server_key is "
                "probably not that server's public key (or the server is not speaking ZeroMQ); "
                "nothing was sent"
            )
        return self._not_zeromq()

    def _silent_failure(self, deadline: float) -> SrpcError:
        """The error for a handshake broken off without a reason: read the server's greeting
        on a plain socket of our own to learn its mechanism, and say what follows."""
        import socket

        mechanism = ""
        try:
            with socket.create_connection(
                self._host_port, timeout=max(min(deadline - monotonic(), 2.0), 0.05)
            ) as probe:
                probe.sendall(GREETING_PROBE)
                greeting = b""
                while len(greeting) < GREETING_BYTES:
                    chunk = probe.recv(GREETING_BYTES - len(greeting))
                    if not chunk:
                        break
                    greeting += chunk
        except OSError:
            greeting = b""
        if len(greeting) == GREETING_BYTES and greeting[0] == 0xFF and greeting[9] & 1:
            mechanism = greeting[12:32].rstrip(b"\x00").decode("ascii", "replace")
        elif greeting:  # something answered, but not a ZeroMQ greeting
            return self._not_zeromq()
        return self._mechanism_mismatch(mechanism)

    def _not_zeromq(self) -> MismatchError:
        return MismatchError(
            f"the server at {self._address} is not speaking ZeroMQ (probably transport 'tcp'), "
            "while this client uses transport 'zmq': set the same transport in srpc.toml on "
            "both sides"
        )

    def _handshake_timeout(
        self, tcp_connected: bool, timeout: float
    ) -> MismatchError | ServerUnavailableError:
        if tcp_connected:  # something accepted the connection but never greeted like ZeroMQ
            return MismatchError(
                f"the server at {self._address} accepted the connection but did not complete "
                f"the ZeroMQ handshake within {timeout} s: it is probably not speaking ZeroMQ "
                "(transport 'tcp'?), while this client uses transport 'zmq'"
            )
        return ServerUnavailableError(
            f"no srpc server at {self._address}: connecting timed out after {timeout} s"
        )

    def broken_text(self) -> str:
        """Why a connection the monitor reported broken is unusable."""
        return (
            f"the connection to {self._address} broke: the server stopped, or it "
            "refused a message larger than its max_message_bytes (or the reply was "
            f"larger than this client's, {self._max_bytes})"
        )


class ZmqChannel(ClientSide, Channel):
    """One client connection to a zmq server.

    Args:
        context: the ZeroMQ context to make the socket in.
        host, port: where the server is.
        address: the ``zmq://host:port`` URL used in error messages.
        max_bytes: max_message_bytes; a larger reply is dropped by libzmq before allocation.
        timeout: seconds to wait for the connection and handshake.
        curve: this client's CURVE keys and the server's public key, or None (no CURVE).
    """

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        host: str,
        port: int,
        address: str,
        max_bytes: int,
        timeout: float,
        *,
        curve: CurveKeys | None = None,
    ) -> None:
        self._address = address
        self._host_port = (host, port)
        self._curve = curve
        self._max_bytes = max_bytes
        self._tag = 0
        self._broken = ""  # why the connection is unusable, once it is
        self._sock = client_socket(context, host, address, max_bytes, curve)
        self._monitor = self._sock.get_monitor_socket(MONITORED_EVENTS)
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        try:
            self._connect(tcp_endpoint(host, port), timeout)
        except BaseException:
            self.close()
            raise

    def request(self, message: bytes, timeout: float) -> bytes:
        if len(message) > self._max_bytes:
            raise FrameTooLargeError(
                f"a {len(message)}-byte message exceeds max_message_bytes ({self._max_bytes})"
            )
        self._read_events()
        if self._broken:
            raise TransportError(self._broken)
        self._tag = (self._tag + 1) % 2**32
        tag = TAG.pack(self._tag)
        try:
            self._sock.send_multipart([tag, DELIMITER, message], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # cannot happen in lockstep use (the queue holds 1000 messages)
            raise TransportError(f"cannot send to {self._address}: its queue is full") from None
        return self._await_reply(tag, len(message), monotonic() + timeout, timeout)

    def usable(self) -> bool:
        """False once the monitor reported the connection broken (the server stopped while
        this channel was idle): the client then opens a new one before sending anything."""
        self._read_events()
        return not self._broken

    def close(self) -> None:
        if self._sock.closed:
            return
        self._sock.disable_monitor()
        self._monitor.close(linger=0)
        self._sock.close(linger=0)

    def _connect(self, endpoint: str, timeout: float) -> None:
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise ServerUnavailableError(f"cannot connect to {self._address}: {exc}") from None
        deadline = monotonic() + timeout
        handshaking = False  # TCP connected, the ZeroMQ handshake under way
        while True:
            remaining = deadline - monotonic()
            if remaining <= 0 or not self._monitor.poll(ms(remaining)):
                raise self._handshake_timeout(handshaking, timeout)
            message = recv_monitor_message(self._monitor)
            step = self.handshake_step(message["event"], message["value"], handshaking)
            if step == SUCCEEDED:
                return
            if step == CONNECTED:
                handshaking = True
            elif step == SILENT:
                raise self._silent_failure(deadline)

    def _await_reply(self, tag: bytes, sent_bytes: int, deadline: float, timeout: float) -> bytes:
        while True:
            remaining = deadline - monotonic()
            events = dict(self._poller.poll(ms(remaining))) if remaining > 0 else {}
            if not events:
                raise CallTimeoutError(f"no reply from {self._address} within {timeout} s")
            if self._sock in events:
                frames = self._sock.recv_multipart()
                if len(frames) == 3 and frames[0] == tag and frames[1] == DELIMITER:
                    if frames[2] == END:  # the (async) server ended this connection
                        self._broken = f"the server at {self._address} closed the connection"
                        raise TransportError(f"{self._broken}; the request was {sent_bytes} bytes")
                    return frames[2]
                continue  # a late reply to a call that timed out: not ours any more
            self._read_events()
            # A server that answers and then stops: the monitor may report the disconnect in
            # the same poll that did not yet see the answer, which is queued all the same.
            if self._broken and not self._sock.poll(0):
                raise TransportError(f"{self._broken}; the request was {sent_bytes} bytes")

    def _read_events(self) -> None:
        """Note a broken connection reported by the monitor since the last look."""
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event & BROKEN_EVENTS:
                self._broken = self.broken_text()


__all__ = [
    "BROKEN_EVENTS",
    "CONNECTED",
    "DECISIVE_FAILURES",
    "GREETING_BYTES",
    "GREETING_PROBE",
    "HANDSHAKE_FAILED",
    "MONITORED_EVENTS",
    "SILENT",
    "SUCCEEDED",
    "TAG",
    "WAIT",
    "ClientSide",
    "ZmqChannel",
    "client_socket",
]
