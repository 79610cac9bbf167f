"""The ``tcp`` transport (the default): length-prefixed messages over plain TCP sockets.

Wire: every message is a 4-byte big-endian unsigned length followed by that many bytes
(docs/protocol.md). Client: one connection per channel, TCP_NODELAY, timeouts on connect and
every read. Server: a thread per connection (a slow call holds up nobody else) with a shutdown
that lets calls in flight finish. Framing, channel and listener come from `srpc_core.streams`;
this module adds TCP addressing and recognises a ZeroMQ peer on the other end.

Options (``[srpc.tcp]``): ``idle_timeout`` (seconds a server keeps a silent connection;
overrides ``[srpc] idle_timeout``, default 300), ``backlog`` (listen backlog, default 128), and
TLS (stdlib `ssl`, TLS 1.2 or later): ``tls_cert`` and ``tls_key`` (a server serves TLS when
they are set; on a client they are its certificate for mutual TLS), ``tls_ca`` (the CAs a side
trusts: a client uses TLS when it is set and checks the server's certificate and host name
with it; a server uses it to check client certificates), ``tls_client_auth`` (server: require a
client certificate), ``tls_server_name`` (client: the name the server's certificate must carry
when it differs from ``host``, e.g. when connecting by IP address). The TLS handshake runs in
the connection's own thread (never in the accept loop) within ``[srpc] timeout``; the async
client and the asyncio server use the same contexts natively (`srpc_core.async_streams`).
The limits of ``[srpc]`` apply: ``max_connections``, ``timeout`` (also the most a message may
take to arrive whole from its first byte), ``max_message_bytes``.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import time
from typing import Any

from srpc_core import async_streams, protocol
from srpc_core.errors import (
    AuthenticationError,
    ConfigError,
    MismatchError,
    OversizedFrameError,
    ServerUnavailableError,
    SrpcError,
)
from srpc_core.hookspecs import RegisterTransport, hookimpl
from srpc_core.options import Option, PluginOptions
from srpc_core.ratelimit import LogLimiter
from srpc_core.streams import StreamChannel, StreamListener, identify_protocol, send_frame
from srpc_core.transport import (
    AsyncChannel,
    AsyncListener,
    Channel,
    Endpoint,
    Handler,
    Listener,
    OnConnection,
    Transport,
    TransportSettings,
)

#: The ``[srpc.tcp]`` table.
OPTIONS = {
    "idle_timeout": Option(
        float,
        default=None,
        minimum=0,
        exclusive_minimum=True,
        help="seconds a server keeps a silent connection open; overrides [srpc] idle_timeout",
    ),
    "backlog": Option(int, default=128, minimum=1, maximum=65535, help="the listen backlog"),
    "tls_cert": Option(str, default="", help="a PEM certificate (chain): this side's, for TLS"),
    "tls_key": Option(str, default="", help="the PEM private key of tls_cert"),
    "tls_ca": Option(str, default="", help="a PEM file of the CAs that verify the other side"),
    "tls_client_auth": Option(
        bool, default=False, help="server: require a client certificate signed by tls_ca"
    ),
    "tls_server_name": Option(
        str, default="", help="client: the name the server's certificate must carry"
    ),
}

log = logging.getLogger("srpc")
_limited = LogLimiter(period=10.0)
#: The first byte of every TLS connection: a handshake record.
_TLS_HANDSHAKE = 0x16


class TcpTransport(Transport):
    """Plain TCP with 4-byte length framing."""

    name = "tcp"

    def __init__(self, settings: TransportSettings) -> None:
        super().__init__(settings)
        options = PluginOptions.wrap(settings.options, self.name).check(OPTIONS)
        idle_timeout = options["idle_timeout"]
        self.idle_timeout: float = settings.idle_timeout if idle_timeout is None else idle_timeout
        self.backlog: int = options["backlog"]
        self.tls_server_name: str = options["tls_server_name"]
        self.server_tls, self.client_tls = _tls_contexts(options)

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
        if self.client_tls is not None:
            sock = self._tls_handshake(sock, host, address, timeout)
        return TcpChannel(sock, address, self.settings.max_message_bytes, timeout)

    def _tls_handshake(
        self, sock: socket.socket, host: str, address: str, timeout: float
    ) -> ssl.SSLSocket:
        assert self.client_tls is not None
        name = self.tls_server_name or host
        try:
            tls = self.client_tls.wrap_socket(
                sock, server_hostname=name, do_handshake_on_connect=False
            )
            _handshake(tls, time.monotonic() + timeout)
        except (ssl.SSLError, OSError) as exc:  # TimeoutError included
            sock.close()
            raise _tls_failure(exc, address, name, timeout) from None
        return tls

    def listen(self, host: str, port: int, handler: Handler) -> Listener:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server(
            (host, port),
            family=family,
            backlog=self.backlog,
            reuse_port=self.settings.reuse_port,  # [srpc] workers: the processes share the port
        )
        port = sock.getsockname()[1]
        listener = TcpListener(
            sock,
            self.url(host, port),
            port,
            handler,
            max_bytes=self.settings.max_message_bytes,
            idle_timeout=self.idle_timeout,
            drain_timeout=self.settings.timeout,
            message_timeout=self.settings.timeout,
            max_connections=self.settings.max_connections,
            max_in_flight=self.settings.max_in_flight,
        )
        listener.tls = self.server_tls
        return listener

    async def open_async_channel(self, endpoint: Endpoint, timeout: float) -> AsyncChannel | None:
        """The native async side: one connection carrying many calls (an asyncio protocol),
        TLS when ``tls_ca`` is set (the same context, checks and errors as `connect`)."""
        address = self.url(endpoint.host, endpoint.port)
        name = self.tls_server_name or endpoint.host
        try:
            return await async_streams.open_tcp_channel(
                endpoint.host,
                endpoint.port,
                address,
                self.settings.max_message_bytes,
                timeout,
                tls=self.client_tls,
                server_name=name,
            )
        except SrpcError:
            raise
        except (ssl.SSLError, OSError) as exc:  # the TLS handshake; TimeoutError included
            raise _tls_failure(exc, address, name, timeout) from None

    async def bind_async(
        self, endpoint: Endpoint, on_connection: OnConnection
    ) -> AsyncListener | None:
        """The native async side of the server (an asyncio protocol), TLS when ``tls_cert`` is
        set (the same context as `listen`; a plaintext peer is told TLS is required)."""
        return await async_streams.bind_tcp(
            endpoint.host,
            endpoint.port,
            on_connection,
            url=self.url(endpoint.host, endpoint.port).rsplit(":", 1)[0] + ":{port}",
            backlog=self.backlog,
            max_bytes=self.settings.max_message_bytes,
            message_timeout=self.settings.timeout,
            idle_timeout=self.idle_timeout,
            max_connections=self.settings.max_connections,
            reuse_port=self.settings.reuse_port,
            tls=self.server_tls,
        )


class TcpChannel(StreamChannel):
    """One client connection; explains a ZeroMQ server that resets it during the hello.

    (A ZeroMQ server that answers with its greeting is recognised by `StreamChannel` itself:
    `identify_protocol` on the first reply.)
    """

    def broken(self, exc: OSError | EOFError) -> Exception:
        if isinstance(exc, ConnectionResetError) and not self.answered:
            # A ZeroMQ server often reads the hello before its greeting went out, and resets
            # the connection without sending the 0xFF byte `identify_protocol` recognises.
            return MismatchError(
                f"the server at {self.address} reset the connection instead of answering the "
                "srpc hello: it probably speaks ZeroMQ (transport 'zmq'), while this client "
                "uses transport 'tcp': set the same transport in srpc.toml on both sides"
            )
        return super().broken(exc)


class TcpListener(StreamListener):
    """The TCP server; explains the mismatch to a ZeroMQ client; serves TLS when `tls` is set
    (the handshake runs in the connection's own thread, within the message timeout)."""

    tls: ssl.SSLContext | None = None

    def serve(self, conn: socket.socket) -> None:
        if self.tls is None:
            super().serve(conn)
            return
        tls = self._accept_tls(conn)
        if tls is None:
            conn.close()
            return
        self._wrapped[id(conn)] = tls
        try:
            super().serve(tls)
        finally:
            self._wrapped.pop(id(conn), None)
            tls.close()

    @property
    def _wrapped(self) -> dict[int, Any]:
        wrapped: dict[int, Any] | None = self.__dict__.get("_tls_peers")
        if wrapped is None:
            wrapped = self.__dict__["_tls_peers"] = {}
        return wrapped

    def interrupt(self, conn: socket.socket) -> None:
        super().interrupt(self._wrapped.get(id(conn), conn))

    def close_peer(self, conn: socket.socket) -> None:
        super().close_peer(self._wrapped.get(id(conn), conn))

    def _accept_tls(self, conn: socket.socket) -> ssl.SSLSocket | None:
        """The TLS connection, or None (a plaintext or failed peer, told and logged)."""
        assert self.tls is not None
        timeout = self._message_timeout
        expires = time.monotonic() + timeout
        peer = _peer(conn)
        try:
            conn.settimeout(timeout)
            if not select.select([conn], [], [], timeout)[0]:
                raise TimeoutError("nothing arrived")
            first = conn.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if first[0] != _TLS_HANDSHAKE:
                self._refuse_plaintext(conn, peer)
                return None
            tls = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            _handshake(tls, expires)
            return tls
        except (ssl.SSLError, OSError) as exc:  # TimeoutError included
            _limited.warning(
                log,
                ("tls", peer.partition(":")[0]),
                "srpc: the TLS handshake with %s at %s failed: %s",
                peer,
                self.address,
                exc,
            )
            return None

    def _refuse_plaintext(self, conn: socket.socket, peer: str) -> None:
        _limited.warning(
            log,
            ("plaintext", peer.partition(":")[0]),
            "srpc: refused a plaintext connection from %s to the TLS server at %s",
            peer,
            self.address,
        )
        try:
            conn.recv(65536)  # its hello: closing with unread input would lose our answer
            send_frame(
                conn,
                protocol.control_error(
                    f"the server at {self.address} requires TLS: set [srpc.tcp] tls_ca (the CA "
                    "that signed the server's certificate) in the client's srpc.toml",
                    protocol.Code.MISMATCH,
                ),
            )
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def refusal(self, exc: OversizedFrameError) -> str:
        if identify_protocol(exc.header) == "ZeroMQ":
            return (
                f"this is an srpc server with transport 'tcp' at {self.address}; the client "
                "speaks ZeroMQ (transport 'zmq'): set the same transport in srpc.toml on both sides"
            )
        return super().refusal(exc)


def _tls_contexts(options: dict[str, Any]) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """The server's and the client's TLS contexts from ``[srpc.tcp]`` (None: no TLS)."""
    cert, key, ca = options["tls_cert"], options["tls_key"], options["tls_ca"]
    if bool(cert) != bool(key):
        raise ConfigError("[srpc.tcp] tls_cert and tls_key go together: set both or neither")
    if options["tls_client_auth"] and not (cert and ca):
        raise ConfigError(
            "[srpc.tcp] tls_client_auth = true needs tls_cert and tls_key (the server's) and "
            "tls_ca (the CA that signs the clients' certificates)"
        )
    try:
        server = client = None
        if cert:
            server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server.minimum_version = ssl.TLSVersion.TLSv1_2
            server.load_cert_chain(cert, key)
            if options["tls_client_auth"]:
                server.verify_mode = ssl.CERT_REQUIRED
                server.load_verify_locations(ca)
        if ca:
            client = ssl.create_default_context(cafile=ca)  # hostname checking on
            client.minimum_version = ssl.TLSVersion.TLSv1_2
            if cert:
                client.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[srpc.tcp] TLS files cannot be used: {exc}") from None
    return server, client


def _tls_failure(exc: BaseException, address: str, name: str, timeout: float) -> SrpcError:
    """The client's error for a TLS handshake that failed with `exc` (sync and async sides)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return AuthenticationError(
            f"the TLS certificate of the server at {address} did not verify against "
            f"[srpc.tcp] tls_ca: {exc.verify_message or exc.reason}"
            + (
                f" (the certificate must name {name!r}; when connecting by IP address, set "
                "[srpc.tcp] tls_server_name to the name it carries)"
                if "mismatch" in str(exc.verify_message)
                else ""
            )
        )
    if isinstance(exc, TimeoutError):
        return ServerUnavailableError(
            f"the server at {address} did not complete the TLS handshake within {timeout} s"
        )
    return MismatchError(
        f"the TLS handshake with the server at {address} failed ({exc}): the server "
        "probably does not use TLS (it needs [srpc.tcp] tls_cert and tls_key), or it "
        "requires a client certificate ([srpc.tcp] tls_cert and tls_key here)"
    )


def _handshake(sock: ssl.SSLSocket, expires: float) -> None:
    """Complete the TLS handshake by `expires` (a peer that never completes it is dropped)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                ready = select.select([sock], [], [], max(0.0, expires - time.monotonic()))[0]
            except ssl.SSLWantWriteError:
                ready = select.select([], [sock], [], max(0.0, expires - time.monotonic()))[1]
            if not ready:
                raise TimeoutError("the TLS handshake did not complete in time")
    finally:
        sock.settimeout(timeout)


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except (OSError, ValueError):
        return "a peer"
    return f"{host}:{port}"


@hookimpl
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer ``tcp``."""
    register("tcp", TcpTransport)


__all__ = [
    "OPTIONS",
    "TcpChannel",
    "TcpListener",
    "TcpTransport",
    "srpc_register_transports",
]
