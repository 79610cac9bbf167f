"""The dispatcher: one request message in, one response message out.

It is the server's half of the one road every call takes: decode the request with the codec,
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
from srpc_core.errors import DecodeError, EncodeError, ErrorContext, UnknownProcedureError
from srpc_core.interface import Procedure, Service
from srpc_core.observer import CallObserver
from srpc_core.protocol import STATUS_ERROR, STATUS_OK, WireError

log = logging.getLogger("srpc")
ErrorToWire = Callable[[BaseException, ErrorContext], WireError]


class Dispatcher:
    """Serves the calls of one service. Thread-safe: transports call `handle` from many threads."""

    def __init__(
        self,
        service: Service,
        implementation: object,
        codec: Codec,
        transport_name: str,
        error_to_wire: ErrorToWire,
        send_tracebacks: bool = False,
    ) -> None:
        self.service = service
        self.codec = codec
        self.transport_name = transport_name
        self.table: dict[str, tuple[Callable[..., Any], Procedure]] = {
            name: (getattr(implementation, name), procedure)
            for name, procedure in service.procedures.items()
        }
        self._error_to_wire = error_to_wire
        self._error_context = ErrorContext(service.interface, send_tracebacks)
        self._observers: list[CallObserver] = []
        self._start_observers: list[CallObserver] = []

    def set_observers(self, observers: list[CallObserver]) -> None:
        """Install the call observers (before serving starts)."""
        self._observers = list(observers)
        self._start_observers = [
            o for o in observers if type(o).call_started is not CallObserver.call_started
        ]

    def handle(self, message: bytes) -> bytes:
        """Answer one request message (a `transport.Handler`)."""
        if protocol.is_control(message):
            return self._handle_control(message)
        try:
            request = self.codec.decode(message)
        except DecodeError as exc:
            return protocol.control_error(
                f"could not decode the request with codec {self.codec.name!r}: {exc}"
            )
        if not _is_request(request):
            return protocol.control_error(
                "malformed request: expected [id, procedure, args, kwargs] with an integer id, "
                "a procedure name, a list of arguments and a map of keyword arguments"
            )
        call_id, name, args, kwargs = request
        return self._call(call_id, name, args, kwargs)

    def _call(self, call_id: int, name: str, args: list[Any], kwargs: dict[str, Any]) -> bytes:
        for observer in self._start_observers:
            observer.call_started(name)
        started = perf_counter()
        error: BaseException | None = None
        try:
            entry = self.table.get(name)
            if entry is None:
                raise UnknownProcedureError(self._unknown_message(name))
            function, procedure = entry
            procedure.check_arguments(args, kwargs)
            result = function(*args, **kwargs)
        except BaseException as exc:  # the implementation's errors belong to the caller
            error = exc
            response = self._error_response(call_id, exc)
        else:
            response = self._result_response(call_id, name, result)
        seconds = perf_counter() - started
        for observer in self._observers:
            try:
                observer.call_finished(name, seconds, error)
            except Exception:  # a broken observer must not break calls
                log.exception("srpc call observer %r failed", observer)
        return response

    def _result_response(self, call_id: int, name: str, result: Any) -> bytes:
        try:
            return self.codec.encode([call_id, STATUS_OK, result])
        except EncodeError as exc:
            error = EncodeError(f"the result of {name}() cannot be sent: {exc}")
            return self._error_response(call_id, error)

    def _error_response(self, call_id: int, error: BaseException) -> bytes:
        wire = self._error_to_wire(error, self._error_context)
        try:
            return self.codec.encode([call_id, STATUS_ERROR, wire])
        except EncodeError:  # the exception's args are not encodable: keep the message only
            wire = {**wire, "args": [wire["message"]]}
            return self.codec.encode([call_id, STATUS_ERROR, wire])

    def _handle_control(self, message: bytes) -> bytes:
        try:
            fields = protocol.decode_control(message)
        except Exception as exc:
            return protocol.control_error(str(exc))
        if not fields.get("hello"):
            return protocol.control_error("unknown control message: expected a hello")
        return protocol.answer_hello(
            fields, self.codec.name, self.transport_name, self.service.name
        )

    def _unknown_message(self, name: object) -> str:
        known = ", ".join(self.table)
        return f"{self.service.name} has no procedure {name!r}; it serves: {known}"


def _is_request(request: Any) -> bool:
    return (
        type(request) is list
        and len(request) == 4
        and type(request[0]) is int
        and type(request[1]) is str
        and type(request[2]) is list
        and type(request[3]) is dict
        and (not request[3] or all(type(key) is str for key in request[3]))
    )
