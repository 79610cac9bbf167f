"""The client: turns a procedure call into a request message and its response into a result.

`_BaseClient` holds everything that does no I/O (settings, the interface, the session the hello
issued, drift checks, building requests and reading responses) so that a sync `Client` and an
async client share it, as httpx's clients share their BaseClient. The message format itself
lives in `srpc_core.protocol`.

`Client` keeps a small pool of channels (connections): a thread takes an idle one or opens a
new one, so a client stub can be shared by many threads and each call still runs on a
connection of its own. Connections open lazily; each new one starts with the hello.

A call runs **at most once**: a request is sent again only when it provably never reached the
server (the idle connection was found closed before anything was written, or the server refused
it before dispatching) or when the interface marks the procedure ``@srpc_core.idempotent``.
"""

from __future__ import annotations

import copy
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from srpc_core import protocol
from srpc_core.auth import TAG_BYTES, Authenticator, CallKeys
from srpc_core.config import Config, load_config, resolve_host
from srpc_core.convert import ProcedurePlan, plan_service
from srpc_core.deadline import Deadline
from srpc_core.errors import (
    AuthenticationError,
    CallTimeoutError,
    ErrorContext,
    FrameTooLargeError,
    MismatchError,
    ProtocolError,
    ServerUnavailableError,
    SessionError,
    SrpcError,
    TransportError,
    UnknownProcedureError,
)
from srpc_core.interface import Procedure, read_interface
from srpc_core.observer import ClientInfo, ObservedMetadata, observe_call
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.protocol import CONTROL_PREFIX, META_TIMEOUT_MS, STATUS_ERROR, STATUS_OK
from srpc_core.transport import Channel, Endpoint

#: First pause before an idempotent call is sent again; doubles up to `_MAX_BACKOFF`.
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0
#: Idle channels older than this are checked before reuse (see `Client._acquire`).
_CHECK_AFTER = 0.001


class _ServerView:
    """What the latest hello reply told us, shared by a client and its `with_options` views."""

    def __init__(self) -> None:
        self.session = ""
        #: With a shared secret: the session and its call keys, read together (one tuple).
        self.sealed: tuple[str, CallKeys] | None = None
        self.procedures: Mapping[str, protocol.ProcedureInfo] = {}
        self.agreed: frozenset[str] = frozenset()  # procedures whose fingerprints match
        #: Calls one connection may have running at once, as the server advertised it.
        self.max_in_flight: int | None = None
        self.lock = threading.Lock()


class _BaseClient:
    """The I/O-free half of a client, shared by the sync and async clients."""

    def __init__(
        self,
        interface: type,
        host: str | None = None,
        port: int | None = None,
        *,
        config: str | os.PathLike[str] | Config | None = None,
        timeout: float | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        self.config = cfg = load_config(config, host=host, port=port, timeout=timeout)
        self.service = read_interface(interface)
        self._plugins = plugins or get_plugins()
        self._codec, self._transport = self._plugins.for_config(cfg)
        #: Stream transports hand a large reply over as the bytearray it was read into; a
        #: codec that does not say it decodes one (srpc's own do) gets bytes.
        self._bytes_only = not self._codec.decodes_bytearray
        self._max_message_bytes = cfg.max_message_bytes
        #: A codec may encode the requests of one session and procedure with a function of
        #: its own, byte for byte what `encode` gives (json: `JsonCodec.request_encoder`).
        self._request_encoder_of = getattr(self._codec, "request_encoder", None)
        #: procedure -> (session, its request encoder or None), for `_fast_request`.
        self._request_encoders: dict[str, tuple[str, Callable[..., bytes] | None]] = {}
        #: How each procedure's arguments and result are converted (InterfaceError here for
        #: an annotation srpc cannot carry).
        self._plans = plan_service(self.service, self._codec, self._plugins.type_adapters())
        host = resolve_host(cfg.host)
        self._endpoint = Endpoint(host, cfg.port, self.service.name, self.service.dotted_name)
        self.address = self._transport.url(host, cfg.port)
        self._timeout = cfg.timeout
        self._ids = itertools.count(1)
        self._error_context = ErrorContext(interface)
        self._hello = protocol.hello(cfg.codec, cfg.transport, self.service.name)
        #: The shared secret (``[srpc.auth]``), or None.
        self._auth = Authenticator.from_config(cfg, self.service.name, cfg.codec)
        self._server = _ServerView()
        #: What plugins registered to see every call (trace context...); usually none.
        self._observers = self._plugins.client_observers(
            ClientInfo(self.service.name, self.address, cfg.transport, cfg.codec, cfg)
        )

    @property
    def timeout(self) -> float:
        """Seconds a call may take in total (connect, send and wait)."""
        return self._timeout

    def _procedure(
        self, procedure: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[ProcedurePlan, tuple[Any, ...] | list[Any], dict[str, Any]]:
        """The plan of the procedure called and the arguments' wire forms, checked against
        the interface's signature and annotations (`TypeError` before anything is sent)."""
        plan = self._plans.get(procedure)
        if plan is None:
            raise UnknownProcedureError(f"{self.service.name} declares no procedure {procedure!r}")
        if not kwargs and plan.fits(args):  # exact builtin types: nothing to convert
            return plan, args, kwargs
        plan.procedure.check_arguments(args, kwargs)
        wire_args, wire_kwargs = plan.arguments_to_wire(args, kwargs)
        return plan, wire_args, wire_kwargs

    def _start_hello(self) -> tuple[bytes, str]:
        """The hello to send on a new channel, and the nonce its reply must prove (with a
        shared secret: a fresh one for every hello; else "")."""
        if self._auth is None:
            return self._hello, ""
        extra, nonce = self._auth.client_hello()
        cfg = self.config
        return protocol.Hello(
            cfg.codec, cfg.transport, self.service.name, extra=extra
        ).encode(), nonce

    def _accept_hello(self, reply: bytes, nonce: str = "") -> None:
        """Read the server's hello reply and remember the session and procedures it gives
        (with a shared secret: after checking that the server proved it knows it)."""
        hello = protocol.parse_hello_reply(reply, self.address)
        sealed = None
        if self._auth is not None:
            self._auth.check_server(hello.extra, nonce, hello.session, self.address)
            sealed = (hello.session, self._auth.call_keys(hello.session))
        agreed = frozenset(
            name
            for name, spec in self.service.procedures.items()
            if name in hello.procedures and hello.procedures[name].fingerprint == spec.fingerprint
        )
        limit = hello.extra.get("max_in_flight")
        with self._server.lock:
            self._server.session = hello.session
            self._server.sealed = sealed
            self._server.procedures = hello.procedures
            self._server.agreed = agreed
            if type(limit) is int and limit > 0:
                self._server.max_in_flight = limit

    def _check_drift(self, spec: Procedure) -> None:
        """Raise `MismatchError` if the server's signature of `spec` differs from ours."""
        theirs = self._server.procedures.get(spec.name)
        if theirs is None:
            return  # the server may not serve it: it answers UnknownProcedureError itself
        raise MismatchError(
            f"the interface changed: this client calls {spec.signature_text} but the server at "
            f"{self.address} serves {theirs.signature}; regenerate the client stub from the "
            "server's interface"
        )

    def _encode(
        self,
        call_id: int,
        spec: Procedure,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        metadata: Mapping[str, Any] | None,
        remaining: float,
    ) -> tuple[bytes, CallKeys | None]:
        """The request, its metadata carrying the `remaining` seconds of the call's deadline
        (``timeout_ms``: the server does not start a call whose deadline has passed); with a
        shared secret it is sealed, and the keys to check its response with come along."""
        sealed = self._server.sealed
        keys = None
        if sealed is not None:
            session, keys = sealed
        else:
            session = self._server.session
        message = protocol.encode_request(
            self._codec,
            call_id,
            session,
            spec.name,
            args,
            kwargs,
            protocol.timeout_metadata(remaining, metadata),
        )
        if keys is not None:
            message = keys.seal_request(message)
        if len(message) > self.config.max_message_bytes:
            raise FrameTooLargeError(
                f"the request to {spec.name}() is {len(message)} bytes, more than "
                f"max_message_bytes ({self.config.max_message_bytes})"
            )
        return message, keys

    def _fast_request(
        self, procedure: str, call_id: int, args: tuple[Any, ...], budget: float
    ) -> bytes:
        """`_encode` for the fast paths (no secret, no metadata but the deadline): with the
        codec's request encoder for this session and procedure when it has one."""
        session = self._server.session
        cached = self._request_encoders.get(procedure)
        if cached is not None and cached[0] is session:
            encode = cached[1]
        else:
            make = self._request_encoder_of
            encode = None if make is None else make(session, procedure)
            self._request_encoders[procedure] = (session, encode)
        if encode is not None:
            message: bytes = encode(call_id, args, int(budget * 1000))
        else:
            message = self._codec.encode(
                [call_id, session, procedure, args, {}, {META_TIMEOUT_MS: int(budget * 1000)}]
            )
        if len(message) > self._max_message_bytes:
            raise FrameTooLargeError(
                f"the request to {procedure}() is {len(message)} bytes, more than "
                f"max_message_bytes ({self._max_message_bytes})"
            )
        return message

    def _unseal(self, reply: bytes, keys: CallKeys | None) -> bytes:
        """A response without its tag, checked (with a shared secret); control messages
        (errors, which the server cannot seal) as they are."""
        if type(reply) is bytearray and self._bytes_only:
            reply = bytes(reply)
        if keys is None or protocol.is_control(reply):
            return reply
        body, tag = reply[:-TAG_BYTES], reply[-TAG_BYTES:]
        if len(reply) <= TAG_BYTES or not keys.response_ok(body, tag):
            raise self._unseal_failed()
        return body

    def _unseal_failed(self) -> AuthenticationError:
        return AuthenticationError(
            f"a response from {self.address} is not sealed with this session's key: it was "
            "altered on the way, or it does not come from the server (discarded)"
        )

    def _cancel_fields(self, call_id: int) -> dict[str, Any] | None:
        """What a cancel carries besides the call id and session (with a shared secret, its
        mac)."""
        sealed = self._server.sealed
        return None if sealed is None else {"mac": sealed[1].cancel_mac(call_id)}

    def _raise_error(self, wire: Any) -> None:
        """Raise the exception an error response describes."""
        raise self._plugins.error_from_wire(wire, self._error_context)

    def _outcome(self, plan: ProcedurePlan, ok: bool, value: Any) -> Any:
        """The result of a response (converted to the return annotation), or raise its error."""
        if ok:
            return value if type(value) in plan.result_types else plan.result_from_wire(value)
        self._raise_error(value)

    def _read_reply(self, message: bytes) -> tuple[int | None, bool, Any]:
        """Read a message that came on a connection carrying many calls (async client).

        Returns ``(call_id, True, (ok, value))`` for a response, ``(call_id, False, error)``
        for a control error (`call_id` None when the server could not name the request), and
        ``(None, True, None)`` for a message to drop (a cancel's acknowledgement). Raises
        `ProtocolError` for a message that is none of these.
        """
        if protocol.is_control(message):
            fields = protocol.decode_control(message)
            if "cancel" in fields and fields.get("ok") is True:
                return None, True, None
            error = protocol.parse_control_error(message)
            try:
                protocol.raise_control_error(message, self.address)
            except SrpcError as exc:
                return error.call_id, False, exc
            return error.call_id, False, ProtocolError(error.message)
        try:
            response = self._codec.decode(message)
        except RecursionError:
            raise ProtocolError(
                f"the server at {self.address} sent a response nested too deeply"
            ) from None
        if type(response) is list and len(response) == 3 and type(response[0]) is int:
            call_id, status, value = response
            if status == STATUS_OK:
                return call_id, True, (True, value)
            if status == STATUS_ERROR and isinstance(value, dict):
                return call_id, True, (False, value)
            return (
                call_id,
                False,
                ProtocolError(f"the server at {self.address} sent an unknown status {status!r}"),
            )
        raise ProtocolError(
            f"the server at {self.address} sent a malformed response (expected [id, status, value])"
        )

    def _outcome_unknown(self, spec: Procedure, exc: TransportError) -> TransportError:
        return TransportError(
            f"the connection to {self.address} broke after the request to {spec.name}() was "
            f"sent, so whether the server ran it is unknown ({exc}). srpc runs a call at most "
            "once and did not send it again; mark the procedure @srpc_core.idempotent in the "
            "interface if running it twice is harmless"
        )


class Client(_BaseClient):
    """Calls the procedures of `interface` on a remote server.

    Args:
        interface: the service's ABC (the client never needs the implementation).
        host, port, timeout: override the srpc.toml settings when not None.
        config: a srpc.toml path or a `Config`; None follows the normal lookup.
        plugins: the plugins to use (default: this process's).
    """

    def __init__(
        self,
        interface: type,
        host: str | None = None,
        port: int | None = None,
        *,
        config: str | os.PathLike[str] | Config | None = None,
        timeout: float | None = None,
        plugins: Plugins | None = None,
    ) -> None:
        super().__init__(interface, host, port, config=config, timeout=timeout, plugins=plugins)
        #: Idle channels and when each was last used (`time.monotonic()`).
        self._idle: deque[tuple[Channel, float]] = deque()

    def call(
        self,
        procedure: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call `procedure` remotely and return its result, or raise its exception.

        Arguments that do not fit the interface's signature or annotations raise `TypeError`
        before anything is sent; the result comes back as the return annotation says (as it
        came, when it does not fit). The whole call (connecting, the hello, sending, waiting)
        takes at most `timeout` seconds, then raises `CallTimeoutError`. `metadata` entries
        travel with the request (docs/protocol.md).
        """
        if self._observers and type(metadata) is not ObservedMetadata:
            return observe_call(self.call, self._observers, procedure, args, kwargs, metadata)
        if metadata is None and not kwargs and self._auth is None:
            # The common case (no shared secret, positional arguments that need no conversion,
            # a channel used a moment ago): the road of `_call`, inlined (`_fast_call`).
            plan = self._plans.get(procedure)
            if plan is not None and plan.fits(args) and procedure in self._server.agreed:
                idle = self._idle
                try:
                    channel, last_used = idle.pop()
                except IndexError:
                    pass
                else:
                    now = monotonic()  # the deadline starts here, as in the general road
                    if now - last_used < _CHECK_AFTER:
                        expires = now + self._timeout
                        try:
                            ok, value = self._fast_call(plan, args, channel, expires)
                        except SessionError:
                            self.close()  # as below
                            ok, value = self._call(
                                plan.procedure, args, {}, None, self._deadline(procedure, expires)
                            )
                        if not ok:
                            self._raise_error(value)
                        if type(value) in plan.result_types:
                            return value
                        return plan.result_from_wire(value)
                    idle.append((channel, last_used))  # to be checked: the general road
        plan, wire_args, wire_kwargs = self._procedure(procedure, args, kwargs or {})
        spec = plan.procedure
        deadline = Deadline(self._timeout, procedure, self.address)
        try:
            ok, value = self._call(spec, wire_args, wire_kwargs, metadata, deadline)
        except SessionError:
            # The server refused our session before running anything (it restarted with other
            # settings, say): a fresh hello and one more try are safe.
            self.close()
            ok, value = self._call(spec, wire_args, wire_kwargs, metadata, deadline)
        if ok:
            return value if type(value) in plan.result_types else plan.result_from_wire(value)
        self._raise_error(value)

    def with_options(self, *, timeout: float | None = None) -> Client:
        """A view of this client with other per-call options; it shares the connections."""
        view = copy.copy(self)
        if timeout is not None:
            view._timeout = load_config(self.config, timeout=timeout).timeout
        return view

    def close(self) -> None:
        """Close every idle connection. Calls made afterwards open new ones."""
        while self._idle:
            try:
                self._idle.pop()[0].close()
            except IndexError:  # another thread took it
                break

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _deadline(self, procedure: str, expires: float) -> Deadline:
        return Deadline.until(expires, self._timeout, procedure, self.address)

    def _fast_call(
        self, plan: ProcedurePlan, args: tuple[Any, ...], channel: Channel, expires: float
    ) -> tuple[bool, Any]:
        """`_call` for the common case, on an idle `channel` that needs no check: the same
        steps (`_budget`, `_encode`, `_unseal`, `decode_response`) inlined; whatever goes
        wrong is handled as `_call` handles it."""
        spec = plan.procedure
        try:
            call_id = next(self._ids)
            timeout = self._timeout
            remaining = expires - monotonic()
            if remaining <= 0:
                raise CallTimeoutError("")  # reworded below, as `_call` does
            budget = timeout if timeout - remaining < 0.001 else remaining
            reply = channel.request(self._fast_request(spec.name, call_id, args, budget), budget)
            if type(reply) is bytearray and self._bytes_only:
                reply = bytes(reply)
            if reply[:5] == CONTROL_PREFIX:
                response = protocol.decode_response(self._codec, reply, call_id, self.address)
            else:
                try:
                    decoded = self._codec.decode(reply)
                except RecursionError:
                    raise ProtocolError(
                        f"the server at {self.address} sent a response nested too deeply"
                    ) from None
                response = protocol.read_response(decoded, call_id, self.address)
        except ServerUnavailableError:
            channel.close()  # the transport knows no server took the request (NATS)
            raise
        except TransportError as exc:
            channel.close()
            if not spec.idempotent:
                raise self._outcome_unknown(spec, exc) from None
            deadline = self._deadline(spec.name, expires)
            time.sleep(min(_FIRST_BACKOFF, deadline.left()))
            return self._call(spec, args, {}, None, deadline, _FIRST_BACKOFF * 2)
        except CallTimeoutError:
            channel.close()
            raise CallTimeoutError(
                f"no reply from {self.address} to {spec.name}() within {self._timeout} s"
            ) from None
        except BaseException:
            channel.close()  # its state is unknown (an oversized or malformed reply...)
            raise
        self._idle.append((channel, monotonic()))
        return response

    def _call(
        self,
        spec: Procedure,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        metadata: Mapping[str, Any] | None,
        deadline: Deadline,
        backoff: float = _FIRST_BACKOFF,
    ) -> tuple[bool, Any]:
        """Send the request on a channel and read its response: ``(ok, result or error)``."""
        while True:
            channel = self._acquire(deadline)
            try:
                if spec.name not in self._server.agreed:
                    self._check_drift(spec)
                call_id = next(self._ids)
                budget = self._budget(deadline)
                message, keys = self._encode(call_id, spec, args, kwargs, metadata, budget)
                reply = self._unseal(channel.request(message, budget), keys)
                response = protocol.decode_response(self._codec, reply, call_id, self.address)
            except ServerUnavailableError:
                channel.close()  # the transport knows no server took the request (NATS)
                raise
            except TransportError as exc:
                channel.close()
                if not spec.idempotent:
                    raise self._outcome_unknown(spec, exc) from None
                time.sleep(min(backoff, deadline.left()))
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            except CallTimeoutError:
                channel.close()
                raise CallTimeoutError(
                    f"no reply from {self.address} to {spec.name}() within {self._timeout} s"
                ) from None
            except BaseException:
                channel.close()  # its state is unknown (an oversized or malformed reply...)
                raise
            self._idle.append((channel, monotonic()))
            return response

    def _budget(self, deadline: Deadline) -> float:
        """The timeout for the channel: what is left of the deadline, rounded up to the whole
        timeout when less than a millisecond of it is gone (transports reset socket timeouts
        only when the value changes, and that costs system calls on every call)."""
        remaining = deadline.remaining()
        return self._timeout if self._timeout - remaining < 0.001 else remaining

    def _acquire(self, deadline: Deadline) -> Channel:
        """An idle channel the server has not closed, or a new one (hello done).

        A channel idle for more than `_CHECK_AFTER` seconds is checked with `Channel.usable`
        first (a system call on stream transports), so a server that closed it (a restart)
        costs a reconnect, not an error. One used a moment ago is not: were the server to close
        it in that moment, the call would fail as "outcome unknown", never run twice.
        """
        while True:
            try:
                channel, last_used = self._idle.pop()
            except IndexError:
                return self._open(deadline)
            if monotonic() - last_used < _CHECK_AFTER or channel.usable():
                return channel
            channel.close()  # closed by the server while idle: nothing was sent on it

    def _open(self, deadline: Deadline) -> Channel:
        channel = self._transport.open_channel(self._endpoint, deadline.remaining())
        try:
            hello, nonce = self._start_hello()
            self._accept_hello(channel.request(hello, deadline.remaining()), nonce)
        except BaseException:
            channel.close()
            raise
        return channel


__all__ = ["Client"]
