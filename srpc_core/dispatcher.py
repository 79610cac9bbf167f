"""The dispatcher: one request message in, one response message out.

It is the server's half of the one road every call takes: read the message with the protocol
layer, answer a hello by opening a session, refuse a request whose session it cannot verify,
look the procedure up in the table built from the interface (the allow-list), check the
arguments, call the implementation, and encode the result or the error. It never raises for bad
input: whatever a client sends, the client gets an answer and the server goes on serving.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import perf_counter
from typing import Any

from srpc_core import protocol
from srpc_core.codec import Codec
from srpc_core.convert import NO_ADAPTERS, ProcedurePlan, TypeAdapters, plan_service
from srpc_core.errors import EncodeError, ErrorContext, ProtocolError, UnknownProcedureError
from srpc_core.interface import Service
from srpc_core.observer import CallObserver
from srpc_core.protocol import Code, WireError
from srpc_core.session import SessionKeeper, default_session_key

log = logging.getLogger("srpc")
ErrorToWire = Callable[[BaseException, ErrorContext], WireError]


class Dispatcher:
    """Serves the calls of one service. Thread-safe: transports call `handle` from many threads.

    Args:
        service: the interface, read.
        implementation: the object whose methods run the calls.
        codec: the codec call messages are encoded with.
        transport_name: the transport's name, checked in the hello.
        error_to_wire: describes a raised exception for the error response.
        send_tracebacks: whether error responses may carry the server's traceback.
        sessions: the session keeper (default: one keyed by the service's settings).
        types: the types plugins taught srpc (`Plugins.type_adapters`).

    Raises `InterfaceError` when an annotation names a type srpc cannot carry.
    """

    def __init__(
        self,
        service: Service,
        implementation: object,
        codec: Codec,
        transport_name: str,
        error_to_wire: ErrorToWire,
        send_tracebacks: bool = False,
        sessions: SessionKeeper | None = None,
        types: TypeAdapters = NO_ADAPTERS,
    ) -> None:
        self.service = service
        self.codec = codec
        self.transport_name = transport_name
        plans = plan_service(service, codec, types)
        self.table: dict[str, tuple[Callable[..., Any], ProcedurePlan]] = {
            name: (getattr(implementation, name), plans[name]) for name in service.procedures
        }
        self.sessions = sessions or SessionKeeper(default_session_key(service.name, codec.name))
        self._error_to_wire = error_to_wire
        self._error_context = ErrorContext(service.interface, send_tracebacks)
        self._observers: list[CallObserver] = []
        self._start_observers: list[CallObserver] = []
        self._procedure_infos = {
            name: protocol.ProcedureInfo(p.fingerprint, p.signature_text)
            for name, p in service.procedures.items()
        }

    def set_observers(self, observers: list[CallObserver]) -> None:
        """Install the call observers (before serving starts)."""
        self._observers = list(observers)
        self._start_observers = [
            o for o in observers if type(o).call_started is not CallObserver.call_started
        ]

    def handle(self, message: bytes) -> bytes:
        """Answer one message (a `transport.Handler`)."""
        if protocol.is_control(message):
            return self._handle_control(message)
        request = protocol.decode_request(self.codec, message)
        if isinstance(request, bytes):
            return request  # a control error about the message itself
        call_id, token, name, args, kwargs, metadata = request
        if self.sessions.find(token) is None:
            return protocol.control_error(
                f"no session: the request to {name!r} does not carry a session token this "
                f"{self.service.name} server issued; send the srpc hello first (nothing was run)",
                Code.SESSION,
                call_id,
            )
        if metadata:
            timeout = protocol.remaining_timeout(metadata)
            if timeout is not None and timeout <= 0:
                return self._error_response(call_id, protocol.expired_error(name))
        return self._call(call_id, name, args, kwargs)

    def _call(
        self,
        call_id: int,
        name: str,
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> bytes:
        for observer in self._start_observers:
            observer.call_started(name)
        started = perf_counter()
        error: BaseException | None = None
        try:
            entry = self.table.get(name)
            if entry is None:
                raise UnknownProcedureError(self._unknown_message(name))
            function, plan = entry
            if kwargs or not plan.fits(args):  # else: exact builtin types, nothing to convert
                plan.procedure.check_arguments(args, kwargs)
                args, kwargs = plan.arguments_from_wire(args, kwargs)
            result = function(*args, **kwargs)
            if type(result) not in plan.result_types:
                result = plan.result_to_wire(result)
        except BaseException as exc:  # the implementation's errors belong to the caller
            error = exc
            response = self._error_response(call_id, exc)
        else:
            try:
                response = protocol.encode_result(self.codec, call_id, result)
            except EncodeError as exc:  # a failure, and counted as one
                error = EncodeError(f"the result of {name}() cannot be sent: {exc}")
                response = self._error_response(call_id, error)
        seconds = perf_counter() - started
        for observer in self._observers:
            try:
                observer.call_finished(name, seconds, error)
            except Exception:  # a broken observer must not break calls
                log.exception("srpc call observer %r failed", observer)
        return response

    def _error_response(self, call_id: int, error: BaseException) -> bytes:
        return protocol.encode_error(
            self.codec, call_id, self._error_to_wire(error, self._error_context)
        )

    def _handle_control(self, message: bytes) -> bytes:
        try:
            fields = protocol.decode_control(message)
        except ProtocolError as exc:
            return protocol.control_error(str(exc))
        if fields.get("hello") is True:
            return self._answer_hello(protocol.parse_hello(fields))
        if "cancel" in fields:
            # Calls on a request/reply handler run to their end: nothing is left to cancel.
            call_id = fields["cancel"]
            return protocol.cancel_ack(call_id if type(call_id) is int else -1, False)
        return protocol.control_error(
            "unknown control message: expected a hello or a cancel", Code.MALFORMED
        )

    def _answer_hello(self, hello: protocol.Hello) -> bytes:
        codec, transport, service = self.codec.name, self.transport_name, self.service.name
        code, problems = protocol.hello_problems(hello, codec, transport, service)
        if code:
            return protocol.hello_refusal(code, problems, codec, transport, service)
        session = self.sessions.open()
        return protocol.HelloReply(
            codec, transport, service, session.token, self._procedure_infos
        ).encode()

    def _unknown_message(self, name: object) -> str:
        known = ", ".join(self.table)
        return f"{self.service.name} has no procedure {name!r}; it serves: {known}"


__all__ = ["Dispatcher", "ErrorToWire"]
