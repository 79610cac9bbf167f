"""The dispatcher: one request message in, one response message out.

It is the server's half of the one road every call takes: read the message with the protocol
layer, answer a hello by opening a session, refuse a request whose session it cannot verify,
look the procedure up in the table built from the interface (the allow-list), check the
arguments, call the implementation, and encode the result or the error. It never raises for bad
input: whatever a client sends, the client gets an answer and the server goes on serving.

The steps that do no I/O (`begin`: read and check a request; `_arguments`: look up and convert;
`_succeeded`/`_failed`: encode the answer and tell the observers) are shared by two ways of
running the implementation:

* `handle`, the sync road: a transport's thread runs the call and returns the answer (an
  ``async def`` method is run on the server's event loop, `loop`, and waited for);
* `run`, the async road (the asyncio server): an ``async def`` method runs on the event loop,
  cancelled when its deadline passes or the client cancels it; a plain one runs in the bounded
  thread pool `executor`, and its result, if it comes after the deadline or a cancel, is
  dropped and counted (`late_results`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import hmac
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from time import monotonic, perf_counter
from typing import Any

from srpc_core import protocol
from srpc_core.auth import TAG_BYTES, Authenticator
from srpc_core.codec import Codec
from srpc_core.convert import NO_ADAPTERS, ProcedurePlan, TypeAdapters, plan_service
from srpc_core.errors import (
    CallTimeoutError,
    CommunicationError,
    DecodeError,
    EncodeError,
    ErrorContext,
    ProtocolError,
    UnknownProcedureError,
)
from srpc_core.interface import Service
from srpc_core.observer import CallObserver, _request_metadata
from srpc_core.protocol import CONTROL_PREFIX, META_TIMEOUT_MS, STATUS_OK, Code, WireError
from srpc_core.ratelimit import LogLimiter
from srpc_core.session import Session, SessionKeeper, default_session_key

log = logging.getLogger("srpc")
ErrorToWire = Callable[[BaseException, ErrorContext], WireError]
#: Warnings about late results: at most one per procedure per 10 s; about peers that failed
#: the shared-secret check: at most one per kind of failure per 10 s.
_limited = LogLimiter(period=10.0)


#: A request read and checked by `Dispatcher.begin`, ready to run: ``(call_id, token, name,
#: args, kwargs, expires)``, arguments in wire form, `expires` the `time.monotonic` moment the
#: caller stops waiting (or None). A plain tuple: one is built for every call.
Call = tuple[int, str, str, list[Any], dict[str, Any], float | None]


class _Current(threading.local):
    """The call a thread of the sync road is running (for ``async def`` methods)."""

    call: Call | None = None


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
        auth: the shared secret (`srpc_core.auth.Authenticator.from_config`), or None: then
            the hello proves nothing and calls are not sealed.

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
        auth: Authenticator | None = None,
    ) -> None:
        self.service = service
        self.codec = codec
        #: Stream transports hand a large request over as the bytearray it was read into; a
        #: codec that does not say it decodes one (srpc's own do) gets bytes.
        self._bytes_only = not codec.decodes_bytearray
        self.transport_name = transport_name
        plans = plan_service(service, codec, types)
        #: The ``async def`` methods of the implementation, by procedure name.
        self.coroutines: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.table: dict[str, tuple[Callable[..., Any], ProcedurePlan]] = {}
        for name in service.procedures:
            function = getattr(implementation, name)
            if inspect.iscoroutinefunction(function):
                self.coroutines[name] = function
                function = functools.partial(self._run_on_loop, function)
            self.table[name] = (function, plans[name])
        #: The event loop ``async def`` methods run on (set by the server); None: none yet.
        self.loop: asyncio.AbstractEventLoop | None = None
        #: The bounded thread pool plain methods run in on the async road (set by the server).
        self.executor: concurrent.futures.Executor | None = None
        #: Results that came after their call's deadline or a cancel, and were dropped.
        self.late_results = 0
        #: Calls that can be cancelled: ``(session token, call id)`` -> a thread-safe canceller.
        self.running: dict[tuple[str, int], Callable[[], object]] = {}
        #: The ``max_in_flight`` the hello reply advertises (set by the server); None: none.
        self.max_in_flight: int | None = None
        #: Whether a reflection request is answered (``[srpc] reflection``, set by the server).
        self.reflection = True
        self._current = _Current()
        self.auth: Authenticator | None = None
        self.sessions = sessions or SessionKeeper(default_session_key(service.name, codec.name))
        if auth is not None:
            self.set_auth(auth)
        self._error_to_wire = error_to_wire
        self._error_context = ErrorContext(service.interface, send_tracebacks)
        self._observers: list[CallObserver] = []
        self._start_observers: list[CallObserver] = []
        self._start_hooks: list[Callable[[str], object]] = []
        self._finish_hooks: list[
            tuple[CallObserver, Callable[[str, float, BaseException | None], object]]
        ] = []
        #: The plain (not ``async def``) methods, for `handle`'s common case.
        self._plain = {n: e for n, e in self.table.items() if n not in self.coroutines}
        self._encode = codec.encode
        self._reads_metadata = False  # whether an observer reads request metadata
        self._procedure_infos = {
            name: protocol.ProcedureInfo(p.fingerprint, p.signature_text)
            for name, p in service.procedures.items()
        }

    def set_auth(self, auth: Authenticator) -> None:
        """Require the shared secret (before serving starts): hellos must prove it, sessions
        are keyed by it, requests and responses are sealed with the session's call keys."""
        self.auth = auth
        self.sessions = SessionKeeper(auth.token_key, derive=auth.call_keys)

    def set_observers(self, observers: list[CallObserver]) -> None:
        """Install the call observers (before serving starts)."""
        self._observers = list(observers)
        self._start_observers = [
            o for o in observers if type(o).call_started is not CallObserver.call_started
        ]
        self._reads_metadata = any(o.reads_metadata for o in self._start_observers)
        # What `handle`'s common case calls, bound once.
        self._start_hooks = [o.call_started for o in self._start_observers]
        self._finish_hooks = [(o, o.call_finished) for o in self._observers]

    # -- the sync road -------------------------------------------------------------------------

    def handle(self, message: bytes) -> bytes:
        """Answer one message (a `transport.Handler`): the sync road.

        The common case (no shared secret; a request of positional arguments that need no
        conversion, with srpc's deadline alone as metadata, to a plain method whose result
        needs none either) takes a road of its own, inlined: the same steps, in the same
        order, as `begin`, `_arguments`, `_succeeded` and `_finished`, with fewer calls and
        clock reads. Everything else, and every failure, takes the general road.
        """
        if self.auth is not None or message[:5] == CONTROL_PREFIX:
            return self._handle(message)
        if type(message) is bytearray and self._bytes_only:
            message = bytes(message)
        try:
            request = self.codec.decode(message)
        except (DecodeError, RecursionError):
            return self._handle(message)  # it answers the control error
        if type(request) is not list or len(request) != 6:
            return self._handle_request(request)
        call_id, token, name, args, kwargs, metadata = request
        if (
            type(call_id) is not int
            or type(token) is not str
            or type(args) is not list
            or type(kwargs) is not dict
            or kwargs
            or type(metadata) is not dict
            or len(metadata) != 1
        ):
            return self._handle_request(request)
        ms = metadata.get(META_TIMEOUT_MS)
        entry = self._plain.get(name) if type(name) is str else None
        if type(ms) is not int or ms <= 0 or entry is None or not entry[1].fits(args):
            return self._handle_request(request)
        function, plan = entry
        if self._reads_metadata:
            _request_metadata.set(metadata)  # for observers, through `request_metadata()`
        if self.sessions.find(token) is None:
            return self._no_session(call_id, name)
        for started_hook in self._start_hooks:
            started_hook(name)
        # One clock for the duration and the deadline (perf_counter, as call durations always
        # were), read three times: when the call starts, when it returns, when it is answered.
        started = perf_counter()
        expires = started + ms / 1000
        try:
            result = function(*args)
        except BaseException as exc:  # the implementation's errors belong to the caller
            if type(exc) is TimeoutError and perf_counter() >= expires:
                exc = _deadline_passed(name)  # as `_overran` says
            response = self._failed(call_id, name, exc, started)
            if perf_counter() > expires:
                self._count_late(name)
            return response
        if perf_counter() > expires:  # the caller has given up: a failure (as `_succeeded`)
            response = self._failed(call_id, name, _deadline_passed(name), started)
            self._count_late(name)
            return response
        if type(result) not in plan.result_types:
            response = self._succeeded(call_id, name, plan, result, started)
            answered = perf_counter()
        else:
            try:
                response = self._encode([call_id, STATUS_OK, result])
            except BaseException as exc:
                response = self._unsendable(call_id, name, exc, started)
                answered = perf_counter()
            else:
                answered = perf_counter()
                seconds = answered - started
                for observer, finished_hook in self._finish_hooks:
                    try:
                        finished_hook(name, seconds, None)
                    except Exception:  # a broken observer must not break calls
                        log.exception("srpc call observer %r failed", observer)
        if answered > expires:
            # The caller has given up; the lockstep connection still expects its answer.
            self._count_late(name)
        return response

    def _handle(self, message: bytes) -> bytes:
        """`handle` on the general road."""
        return self._handle_call(self.begin(message))

    def _handle_request(self, request: Any) -> bytes:
        """`handle` on the general road, for a request already decoded (no shared secret)."""
        return self._handle_call(self._begin_request(protocol.check_request(request)))

    def _handle_call(self, call: Call | bytes) -> bytes:
        if isinstance(call, bytes):
            return call
        call_id, _, name, wire_args, wire_kwargs, expires = call
        if name in self.coroutines:
            self._current.call = call
        for observer in self._start_observers:
            observer.call_started(name)
        started = perf_counter()
        try:
            function, plan, args, kwargs = self._arguments(name, wire_args, wire_kwargs)
            result = function(*args, **kwargs)
        except BaseException as exc:  # the implementation's errors belong to the caller
            response = self._failed(call_id, name, _overran(exc, name, expires), started)
        else:
            response = self._succeeded(call_id, name, plan, result, started, expires)
        if expires is not None and monotonic() > expires:
            # The caller has given up; the lockstep connection still expects its answer.
            self._count_late(name)
        if self.auth is not None:
            return self._seal(call, response)
        return response

    def _run_on_loop(self, function: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        """The sync road's way to run an ``async def`` method: on the server's event loop,
        waited for here, cancellable by the client and by its deadline."""
        loop, call = self.loop, self._current.call
        self._current.call = None
        if loop is None or call is None:
            raise RuntimeError("srpc: an async def method needs the server's event loop")
        call_id, token, name, _, _, expires = call
        future = asyncio.run_coroutine_threadsafe(
            self._with_deadline(function(*args, **kw), expires), loop
        )
        key = (token, call_id)
        self.running[key] = future.cancel
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise CommunicationError(f"{name}() was cancelled by the client") from None
        finally:
            self.running.pop(key, None)

    @staticmethod
    async def _with_deadline(awaitable: Awaitable[Any], expires: float | None) -> Any:
        """Await `awaitable` in the current task; `TimeoutError` at `expires` (monotonic).

        What ``asyncio.timeout_at`` does, with one timer and no context manager: that cost
        about 4.5 us a call here, a third of the asyncio server's own work on a small call."""
        if expires is None:
            return await awaitable
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_at(loop.time() + (expires - monotonic()), expire)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if expired and task.uncancel() == 0:  # ours, and no one else's cancel pending
                raise TimeoutError from None
            raise
        finally:
            timer.cancel()

    # -- the steps both roads share (no I/O) --------------------------------------------------

    def begin(self, message: bytes) -> Call | bytes:
        """Read a request and check it: the `Call` to run, or the answer to send at once
        (a control message's answer, a control error, an expired deadline's error)."""
        if type(message) is bytearray and self._bytes_only:
            message = bytes(message)
        if protocol.is_control(message):
            return self._handle_control(message)
        if self.auth is not None:
            return self._begin_sealed(message)
        return self._begin_request(protocol.decode_request(self.codec, message))

    def _begin_request(self, request: protocol.Request | bytes) -> Call | bytes:
        """`begin` after the decoding (no shared secret)."""
        if isinstance(request, bytes):
            return request  # a control error about the message itself
        call_id, token, name, args, kwargs, metadata = request
        if self._reads_metadata:
            _request_metadata.set(metadata)  # for observers, through `request_metadata()`
        if self.sessions.find(token) is None:
            return self._no_session(call_id, name)
        expires = None
        if metadata:
            ms = metadata.get(META_TIMEOUT_MS)  # what srpc's clients send: read it inline
            timeout = ms / 1000 if type(ms) is int else protocol.remaining_timeout(metadata)
            if timeout is not None:
                if timeout <= 0:
                    return self._expired(call_id, name)
                expires = monotonic() + timeout
        return (call_id, token, name, args, kwargs, expires)

    def _no_session(self, call_id: int, name: str) -> bytes:
        return protocol.control_error(
            f"no session: the request to {name!r} does not carry a session token this "
            f"{self.service.name} server issued; send the srpc hello first (nothing was run)",
            Code.SESSION,
            call_id,
        )

    # -- the shared secret (`srpc_core.auth`) --------------------------------------------------

    def _begin_sealed(self, message: bytes) -> Call | bytes:
        """`begin` with a shared secret: the request must end with the tag of its session's
        request key, and its call id must be new to the session (no replay)."""
        body, tag = message[:-TAG_BYTES], message[-TAG_BYTES:]
        request = protocol.decode_request(self.codec, body)
        if isinstance(request, bytes):
            if not isinstance(protocol.decode_request(self.codec, message), bytes):
                return self._auth_failed(
                    "a request without a tag",
                    "this server requires the shared secret: the request is not sealed with "
                    "a session key (configure [srpc.auth] on the client); nothing was run",
                )
            return request  # a control error about the message itself (nothing to run)
        call_id, token, name, args, kwargs, metadata = request
        if self._reads_metadata:
            _request_metadata.set(metadata)
        session = self.sessions.find(token)
        if session is None:
            return self._no_session(call_id, name)
        if len(message) <= TAG_BYTES or not session.keys.request_ok(body, tag):
            return self._auth_failed(
                "a request whose tag does not verify under its session's key",
                f"the request to {name!r} is not sealed with this session's key (the shared "
                "secret differs, or the request was altered on the way); nothing was run",
                call_id,
            )
        if not session.fresh(call_id):
            return self._auth_failed(
                "a replayed request (a call id its session already used)",
                f"call id {call_id} was already used in this session: a replayed request is "
                "not run (nothing was run)",
                call_id,
            )
        expires = None
        if metadata:
            timeout = protocol.remaining_timeout(metadata)
            if timeout is not None:
                if timeout <= 0:
                    error = self._expired(call_id, name)
                    return session.keys.seal_response(error)
                expires = monotonic() + timeout
        return (call_id, token, name, args, kwargs, expires)

    def _auth_failed(self, logged: str, told: str, call_id: int | None = None) -> bytes:
        """The refusal of a peer that failed the shared-secret check, and one log line (at
        most one per kind of failure per 10 s)."""
        _limited.warning(log, ("auth", logged), "srpc: %s refused: %s", self.service.name, logged)
        return protocol.control_error(told, Code.AUTH, call_id)

    def _seal(self, call: Call, response: bytes) -> bytes:
        """Seal a response (call messages only; control errors travel as they are)."""
        if protocol.is_control(response):
            return response
        session: Session | None = self.sessions.find(call[1])
        assert session is not None  # begin found it
        return session.keys.seal_response(response)

    def _started(self, name: str) -> float:
        for observer in self._start_observers:
            observer.call_started(name)
        return perf_counter()

    def _arguments(
        self, name: str, args: list[Any] | tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Callable[..., Any], ProcedurePlan, list[Any] | tuple[Any, ...], dict[str, Any]]:
        """The implementation's method, the plan, and the arguments converted and validated."""
        entry = self.table.get(name)
        if entry is None:
            raise UnknownProcedureError(self._unknown_message(name))
        function, plan = entry
        if kwargs or not plan.fits(args):  # else: exact builtin types, nothing to convert
            plan.procedure.check_arguments(args, kwargs)
            args, kwargs = plan.arguments_from_wire(args, kwargs)
        return function, plan, args, kwargs

    def _succeeded(
        self,
        call_id: int,
        name: str,
        plan: ProcedurePlan,
        result: Any,
        started: float,
        expires: float | None = None,
    ) -> bytes:
        if expires is not None and monotonic() > expires:  # the caller has given up: a failure
            return self._failed(call_id, name, _deadline_passed(name), started)
        try:
            if type(result) not in plan.result_types:
                result = plan.result_to_wire(result)
            response = protocol.encode_result(self.codec, call_id, result)
        except BaseException as exc:
            return self._unsendable(call_id, name, exc, started)
        self._finished(name, started, None)
        return response

    def _unsendable(self, call_id: int, name: str, exc: BaseException, started: float) -> bytes:
        """The answer to a call whose result could not be converted or encoded: a failure."""
        error: BaseException = exc
        if isinstance(exc, EncodeError):  # a failure, and counted as one
            error = EncodeError(f"the result of {name}() cannot be sent: {exc}")
        response = self._error_response(call_id, error)
        self._finished(name, started, error)
        return response

    def _expired(self, call_id: int, name: str) -> bytes:
        """The answer to a call whose deadline passed before it started: a failure, counted."""
        return self._failed(call_id, name, protocol.expired_error(name), self._started(name))

    def _failed(self, call_id: int, name: str, error: BaseException, started: float) -> bytes:
        response = self._error_response(call_id, error)
        self._finished(name, started, error)
        return response

    def _finished(self, name: str, started: float, error: BaseException | None) -> None:
        seconds = perf_counter() - started
        for observer in self._observers:
            try:
                observer.call_finished(name, seconds, error)
            except Exception:  # a broken observer must not break calls
                log.exception("srpc call observer %r failed", observer)

    def _count_late(self, name: str) -> None:
        self.late_results += 1
        _limited.warning(
            log,
            ("late", name),
            "srpc: a result of %s() came after its deadline or a cancel and was dropped "
            "(%d late results so far)",
            name,
            self.late_results,
        )

    # -- the async road -------------------------------------------------------------------------

    async def run(self, call: Call) -> bytes | None:
        """Run `call` on the async road; the response, or None when there is nothing to send
        (the client cancelled the call, or the server gave up on it)."""
        call_id, token, name, wire_args, wire_kwargs, expires = call
        started = self._started(name)
        key = (token, call_id)
        try:
            function, plan, args, kwargs = self._arguments(name, wire_args, wire_kwargs)
            coroutine = self.coroutines.get(name)
            if coroutine is not None:
                task = asyncio.current_task()
                assert task is not None and self.loop is not None
                self.running[key] = functools.partial(self.loop.call_soon_threadsafe, task.cancel)
                result = await self._with_deadline(coroutine(*args, **kwargs), expires)
            else:
                result = await self._in_thread(call, function, args, kwargs)
        except asyncio.CancelledError as exc:
            self._finished(name, started, exc)
            return None  # cancelled by the client (or by a server that stopped waiting)
        except TimeoutError as exc:
            error: BaseException = exc
            if expires is not None and monotonic() >= expires:
                error = CallTimeoutError(f"the deadline of {name}() passed while it ran")
            response = self._failed(call_id, name, error, started)
        except BaseException as exc:  # the implementation's errors belong to the caller
            response = self._failed(call_id, name, exc, started)
        else:
            response = self._succeeded(call_id, name, plan, result, started)
        finally:
            self.running.pop(key, None)
        if self.auth is not None:
            return self._seal(call, response)
        return response

    async def _in_thread(
        self,
        call: Call,
        function: Callable[..., Any],
        args: list[Any] | tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a plain method in the thread pool. It runs to its end; if the caller stops
        waiting first (deadline, cancel), its result is dropped and counted when it comes."""
        executor = self.executor
        assert executor is not None
        call_id, token, name, _, _, expires = call
        if self._reads_metadata:  # the observers' context (a trace span) goes along
            future = executor.submit(contextvars.copy_context().run, function, *args, **kwargs)
        else:
            future = executor.submit(function, *args, **kwargs)
        waiting = asyncio.wrap_future(future)
        task = asyncio.current_task()
        assert task is not None and self.loop is not None
        self.running[(token, call_id)] = functools.partial(
            self.loop.call_soon_threadsafe, task.cancel
        )
        try:
            if expires is None:
                return await waiting
            loop = asyncio.get_running_loop()
            async with asyncio.timeout_at(loop.time() + (expires - monotonic())):
                return await waiting
        except (asyncio.CancelledError, TimeoutError):
            if not future.cancel():  # running or done: it runs to its end, then is dropped
                future.add_done_callback(lambda done: self._late(name, done))
            raise

    def _late(self, name: str, future: concurrent.futures.Future[Any]) -> None:
        if not future.cancelled():  # it ran (a job cancelled before it started did not)
            self._count_late(name)

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
        if fields.get("reflect") is True:
            return self._answer_reflection(fields)
        if "cancel" in fields:
            call_id, token = fields["cancel"], fields.get("session")
            if type(call_id) is not int:
                return protocol.cancel_ack(-1, False)
            if self.auth is not None and not self._cancel_sealed(call_id, token, fields):
                return self._auth_failed(
                    "a cancel without its session's mac",
                    "the cancel is not sealed with its session's key; nothing was cancelled",
                    call_id,
                )
            canceller = self.running.get((token, call_id)) if type(token) is str else None
            if canceller is not None:
                canceller()  # an async def method, or a wait for a plain one: cancelled
            return protocol.cancel_ack(call_id, canceller is not None)
        return protocol.control_error(
            "unknown control message: expected a hello, a cancel or a reflection request",
            Code.MALFORMED,
        )

    def _answer_reflection(self, fields: dict[str, Any]) -> bytes:
        """The interface (procedures, signatures, docstrings, fingerprints) for `srpc list`:
        only for a session this server issued (with a shared secret, the request carries the
        session's mac), and only while ``[srpc] reflection`` is on."""
        token = fields.get("session")
        session = self.sessions.find(token) if isinstance(token, str) else None
        if session is None or not isinstance(token, str):
            return protocol.control_error(
                "no session: a reflection request must carry the session token of a hello "
                f"this {self.service.name} server accepted",
                Code.SESSION,
            )
        if self.auth is not None:
            mac = fields.get("mac")
            expected = protocol.reflect_mac(session.keys.request, token)
            if type(mac) is not str or not hmac.compare_digest(mac.encode(), expected.encode()):
                return self._auth_failed(
                    "a reflection request without its session's mac",
                    "the reflection request is not sealed with its session's key",
                )
        if not self.reflection:
            return protocol.control_error(
                f"reflection is off on this {self.service.name} server ([srpc] reflection = "
                "false): it does not describe its interface",
                Code.DISABLED,
            )
        described = {
            name: protocol.ProcedureDescription(p.signature_text, p.doc, p.fingerprint)
            for name, p in self.service.procedures.items()
        }
        return protocol.reflection(self.service.name, described)

    def _cancel_sealed(self, call_id: int, token: object, fields: dict[str, Any]) -> bool:
        session = self.sessions.find(token) if type(token) is str else None
        mac = fields.get("mac")
        if session is None or type(mac) is not str:
            return False
        return hmac.compare_digest(mac.encode(), session.keys.cancel_mac(call_id).encode())

    def _answer_hello(self, hello: protocol.Hello) -> bytes:
        codec, transport, service = self.codec.name, self.transport_name, self.service.name
        code, problems = protocol.hello_problems(hello, codec, transport, service)
        if code:
            return protocol.hello_refusal(code, problems, codec, transport, service)
        extra: dict[str, Any] = {}
        if self.auth is not None:
            failure = self.auth.check_client(hello.extra)
            if failure is not None:
                told, logged = failure
                _limited.warning(
                    log, ("auth", logged), "srpc: %s refused %s", self.service.name, logged
                )
                return protocol.hello_refusal(
                    Code.AUTH, told, codec, transport, service, prefix=False
                )
        session = self.sessions.open()
        if self.auth is not None:
            extra.update(self.auth.server_proof(self.auth.nonce_of(hello.extra), session.token))
        if self.max_in_flight is not None:
            extra["max_in_flight"] = self.max_in_flight
        return protocol.HelloReply(
            codec, transport, service, session.token, self._procedure_infos, extra
        ).encode()

    def _unknown_message(self, name: object) -> str:
        known = ", ".join(self.table)
        return f"{self.service.name} has no procedure {name!r}; it serves: {known}"


def _overran(error: BaseException, name: str, expires: float | None) -> BaseException:
    """`error`, or the deadline's `CallTimeoutError` when `error` is the `TimeoutError` of a
    deadline that passed (an ``async def`` method run by the sync road), as on the async road."""
    if type(error) is TimeoutError and expires is not None and monotonic() >= expires:
        return _deadline_passed(name)
    return error


def _deadline_passed(name: str) -> CallTimeoutError:
    return CallTimeoutError(f"the deadline of {name}() passed while it ran")


__all__ = ["Call", "Dispatcher", "ErrorToWire"]
