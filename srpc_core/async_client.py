"""The asyncio client: `AsyncClient`, the async sibling of `srpc_core.Client`.

It shares everything that does no I/O with `Client` through `_BaseClient` (settings, the
interface's conversion plans, drift checks, the session, building requests and reading
responses) and differs only in how messages travel:

* over a transport with a native async side (`Transport.open_async_channel`, e.g. ``tcp``),
  **one connection carries many calls at once**: every request has its own id, and every message
  that comes back is handed to the call waiting for that id as it arrives (straight from the
  event loop over `srpc_core.async_streams`, else by one reader task), in whatever order the
  server answers. Calls in flight on the connection are bounded by the
  server's advertised ``max_in_flight`` (and the client's own);
* over a transport with only the v0.1 sync interface, the **bridge** runs its `Channel` in
  threads: one channel per call in flight, from a pool, in a thread pool of the same bound.

A call's timeout is a deadline for all of it (waiting for a slot, connecting, the hello,
sending, waiting). When a call is cancelled (its task is cancelled, or the deadline passes) the
client sends the server a ``cancel`` message (the server cancels an ``async def``
implementation) and forgets the call: its late response is dropped when it comes, and the
connection goes on carrying the other calls. At most once, as `Client`: a request is sent
again only when it provably never left (the connection was found closed before it was
written, or the server refused the session) or the procedure is ``@srpc_core.idempotent``.
"""

from __future__ import annotations

import asyncio
import copy
import math
import os
import threading
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from time import monotonic
from typing import Any

from srpc_core import protocol
from srpc_core.async_streams import AsyncStreamChannel
from srpc_core.auth import TAG_BYTES, CallKeys
from srpc_core.client import _CHECK_AFTER, _FIRST_BACKOFF, _MAX_BACKOFF, _BaseClient
from srpc_core.config import Config, load_config
from srpc_core.convert import ProcedurePlan
from srpc_core.deadline import Deadline
from srpc_core.errors import (
    CallTimeoutError,
    OversizedFrameError,
    ProtocolError,
    ServerUnavailableError,
    SessionError,
    SrpcError,
    TransportError,
)
from srpc_core.interface import Procedure
from srpc_core.observer import ObservedMetadata, observe_call_async
from srpc_core.plugins import Plugins
from srpc_core.protocol import CONTROL_PREFIX, STATUS_OK
from srpc_core.transport import AsyncChannel, Channel

#: Seconds a cancel message may take to go out (it is sent in the background).
_CANCEL_TIMEOUT = 1.0
#: Seconds early a deadline timer may fire (uvloop's clock counts milliseconds).
_TIMER_SLACK = 0.001


class _NotSent(TransportError):
    """The connection was found closed before the request was written: safe to send again."""


class _Slots:
    """A counting limit whose size may change (the server advertises it in the hello)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        while self.used >= self.limit:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise
        self.used += 1

    def release(self) -> None:
        self.used -= 1
        self._wake()

    def free(self) -> bool:
        """Whether `acquire` would return at once (no one waits before us)."""
        return self.used < self.limit and not self._waiters

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class _Connection:
    """One multiplexed connection: calls waiting by id, and what reads the answers.

    Over an `AsyncStreamChannel` every answer is handed to `take` as it arrives, from the
    event loop, with no reader task in between; over another `AsyncChannel`, a reader task
    awaits `receive` and does the same.
    """

    def __init__(self, client: AsyncClient, channel: AsyncChannel) -> None:
        self.client = client
        self.channel = channel
        self.pending: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        #: With a shared secret: the keys each pending call's response is checked with.
        self.keys: dict[int, CallKeys] = {}
        self.broken: BaseException | None = None
        self.retired = False  # no new calls: closed once its calls have ended
        self.reader: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.loop = asyncio.get_running_loop()
        #: The fast path's calls' deadlines (`loop.time()`), watched by one timer for them all.
        self.expiries: dict[int, float] = {}
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = math.inf
        #: Responses need no unsealing (no shared secret): `take` decodes them itself.
        self._plain = client._auth is None
        self._decode = client._codec.decode

    def start(self) -> None:
        channel = self.channel
        if isinstance(channel, AsyncStreamChannel):
            channel.deliver(self.take, self.ended)
        else:
            self.reader = asyncio.get_running_loop().create_task(self._read())

    def usable(self) -> bool:
        return self.broken is None and not self.retired and not self.channel.closing()

    def retire(self) -> None:
        """Send no new calls here (the client opens another connection); the calls pending
        end here, and the connection closes after the last one."""
        self.retired = True
        shared = self.client._shared
        if shared.connection is self:
            shared.connection = None
        if not self.pending:
            self.close()

    def ready(self) -> bool:
        """Usable from this event loop, with a slot free now (for the fast path)."""
        slots = self.client._shared.slots
        return (
            slots is not None
            and slots.free()
            and self.loop is asyncio.get_running_loop()
            and self.usable()
        )

    async def call(
        self, call_id: int, message: bytes, keys: CallKeys | None = None
    ) -> tuple[bool, Any]:
        if not self.usable():
            raise _NotSent("the connection was closed before the request was sent")
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self.pending[call_id] = future
        if keys is not None:
            self.keys[call_id] = keys
        try:
            await self.channel.send(message)
            return await future
        except asyncio.CancelledError:
            if future.cancelled() or not future.done():  # no answer yet: tell the server
                self.client._cancel_later(self, call_id)
            raise
        finally:
            del self.pending[call_id]
            if keys is not None:
                del self.keys[call_id]
            if self.retired and not self.pending:
                self.close()

    def watch(self, call_id: int, expires: float) -> None:
        """Fail the pending call `call_id` with `_Expired` at `expires` (`loop.time()`).

        One timer serves every call: it is set again only for a call that ends before the
        moment it is set for (a timer per call would cost more than the rest of the call)."""
        self.expiries[call_id] = expires
        if expires < self._watch_at:
            if self._watch is not None:
                self._watch.cancel()
            self._watch_at = expires
            self._watch = self.loop.call_at(expires, self._expire_due)

    def _expire_due(self) -> None:
        self._watch = None
        soon = self.loop.time() + _TIMER_SLACK  # (loops may fire a timer a little early)
        nearest = math.inf
        for call_id, expires in list(self.expiries.items()):
            if expires <= soon:
                del self.expiries[call_id]
                future = self.pending.get(call_id)
                if future is not None and not future.done():
                    future.set_exception(_Expired())
            elif expires < nearest:
                nearest = expires
        self._watch_at = nearest
        if nearest != math.inf:
            self._watch = self.loop.call_at(nearest, self._expire_due)

    async def send_cancel(self, call_id: int) -> None:
        if self.usable() or self.retired:
            client = self.client
            message = protocol.cancel(
                call_id, client._server.session, client._cancel_fields(call_id)
            )
            async with asyncio.timeout(_CANCEL_TIMEOUT):
                await self.channel.send(message)

    def take(self, message: bytes) -> None:
        """One message from the server: the answer to a pending call (or dropped)."""
        try:
            if self._plain and message[:5] != CONTROL_PREFIX:
                # The common case (a result), read here; anything else takes `_take`'s road.
                try:
                    response = self._decode(message)
                except Exception:
                    response = None
                if (
                    type(response) is list
                    and len(response) == 3
                    and response[1] == STATUS_OK
                    and type(response[0]) is int
                ):
                    future = self.pending.get(response[0])
                    if future is not None and not future.done():
                        future.set_result((True, response[2]))
                    return
            self._take(message)
        except Exception as exc:
            self.ended(exc)

    def _take(self, message: bytes) -> None:
        client = self.client
        tag = b""
        if client._auth is not None and not protocol.is_control(message):
            message, tag = message[:-TAG_BYTES], message[-TAG_BYTES:]
        call_id, ok, value = client._read_reply(message)
        if tag:
            keys = self.keys.get(call_id) if call_id is not None else None
            if keys is None:
                return  # the answer to a call that was cancelled: dropped
            if not keys.response_ok(message, tag):
                ok, value = False, client._unseal_failed()
        pending = self.pending
        if call_id is None:
            if ok:
                return  # a cancel's acknowledgement
            # A control error that names no request: the oldest call's (servers that
            # cannot name it answer in order). The server could not read a request (too
            # large, another protocol) and closes the connection after it: no new calls on it.
            self.retire()
            call_id = next(iter(pending), None)
        future = pending.get(call_id) if call_id is not None else None
        if future is None or future.done():
            return  # the answer to a call that was cancelled: dropped
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def ended(self, end: BaseException | None) -> None:
        """No more answers on this connection: its calls still waiting fail, and it closes."""
        if self.broken is not None:
            return
        address = self.client.address
        if end is None:
            error: BaseException = TransportError(f"the server at {address} closed the connection")
        elif isinstance(end, OversizedFrameError):
            error = TransportError(
                f"the server at {address} sent a {end.size}-byte message, more than "
                f"max_message_bytes ({self.client.config.max_message_bytes})"
            )
        elif isinstance(end, TransportError):
            error = end
        elif isinstance(end, (SrpcError, OSError)):
            error = TransportError(str(end))
        else:  # a bug must not leave calls waiting for ever
            error = TransportError(f"reading from {address} failed: {end!r}")
        self._fail(error)
        if self.reader is None:  # (a reader task closes the channel as it ends)
            self.close()

    def close(self) -> None:
        """Close the connection (in the background); calls still waiting fail."""
        if self.reader is not None:
            self.reader.cancel()
            return
        self._fail(TransportError(f"the connection to {self.client.address} was closed"))
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self.channel.close())

    async def _read(self) -> None:
        try:
            while self.broken is None:
                message = await self.channel.receive()
                if message is None:
                    self.ended(None)
                    break
                self.take(message)
        except asyncio.CancelledError:
            self._fail(TransportError(f"the connection to {self.client.address} was closed"))
            raise
        except Exception as exc:
            self.ended(exc)
        finally:
            await self.channel.close()

    def _fail(self, error: BaseException) -> None:
        if self.broken is None:
            self.broken = error
        for future in self.pending.values():
            if not future.done():
                future.set_exception(error)
        if self._watch is not None:  # (its calls have all ended now)
            self._watch.cancel()
            self._watch, self._watch_at = None, math.inf


class _Bridge:
    """Runs a v0.1 transport's sync channels in threads: one channel per call in flight."""

    def __init__(self, client: AsyncClient, threads: int) -> None:
        self.client = client
        self.idle: deque[tuple[Channel, float]] = deque()
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="srpc-bridge")

    async def ensure_session(self, deadline: Deadline) -> None:
        """Open a first channel (hello done) so that requests carry a session token."""
        if not self.client._server.session:
            loop = asyncio.get_running_loop()
            channel = await loop.run_in_executor(self.executor, self._open, deadline)
            self.idle.append((channel, monotonic()))

    async def call(
        self, call_id: int, message: bytes, deadline: Deadline, keys: CallKeys | None = None
    ) -> tuple[bool, Any]:
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(self.executor, self._exchange, message, deadline)
        reply = self.client._unseal(reply, keys)
        return protocol.decode_response(self.client._codec, reply, call_id, self.client.address)

    def send_cancel(self, call_id: int) -> None:
        client = self.client
        message = protocol.cancel(call_id, client._server.session, client._cancel_fields(call_id))
        self.executor.submit(self._exchange, message, Deadline(_CANCEL_TIMEOUT))

    def _exchange(self, message: bytes, deadline: Deadline) -> bytes:
        """In a thread: send `message` on a pooled channel and return the reply; the channel
        goes back to the pool whether the caller still waits or not (a cancelled call's late
        reply is read here and dropped, leaving the channel in step)."""
        channel = self._acquire(deadline)
        try:
            reply = channel.request(message, deadline.remaining())
        except BaseException:
            channel.close()
            raise
        self.idle.append((channel, monotonic()))
        return reply

    def _acquire(self, deadline: Deadline) -> Channel:
        while True:
            try:
                channel, last_used = self.idle.pop()
            except IndexError:
                return self._open(deadline)
            if monotonic() - last_used < _CHECK_AFTER or channel.usable():
                return channel
            channel.close()

    def _open(self, deadline: Deadline) -> Channel:
        client = self.client
        channel = client._transport.open_channel(client._endpoint, deadline.remaining())
        try:
            hello, nonce = client._start_hello()
            client._accept_hello(channel.request(hello, deadline.remaining()), nonce)
        except BaseException:
            channel.close()
            raise
        return channel

    def close(self) -> None:
        while self.idle:
            try:
                self.idle.pop()[0].close()
            except IndexError:
                break
        self.executor.shutdown(wait=False)


class _Shared:
    """The connections of an `AsyncClient`, shared with its `with_options` views."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connection: _Connection | None = None
        self.bridge: _Bridge | None = None
        self.native: bool | None = None  # whether the transport has an async side
        self.slots: _Slots | None = None
        self.lock: asyncio.Lock | None = None
        self.background: set[asyncio.Task[None]] = set()
        self.guard = threading.Lock()


class AsyncClient(_BaseClient):
    """Calls the procedures of `interface` on a remote server, from asyncio code.

    Args:
        interface: the service's ABC (the client never needs the implementation).
        host, port, timeout: override the srpc.toml settings when not None.
        config: a srpc.toml path or a `Config`; None follows the normal lookup.
        plugins: the plugins to use (default: this process's).
        max_in_flight: the most calls this client has in flight at once (further calls wait
            for a slot, within their deadline); None: ``[srpc] max_in_flight``. The server's
            advertised ``max_in_flight`` bounds it too.

    Use it from one event loop at a time; ``async with`` closes its connections.
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
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(interface, host, port, config=config, timeout=timeout, plugins=plugins)
        self._max_in_flight = max_in_flight or self.config.max_in_flight
        self._shared = _Shared()

    async def call(
        self,
        procedure: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Call `procedure` remotely and return its result, or raise its exception.

        As `Client.call`: `TypeError` before anything is sent for arguments that do not fit;
        the result converted to the return annotation; the whole call within `timeout`
        seconds, else `CallTimeoutError` (and the server is told to cancel it).
        """
        if kwargs is None and metadata is None and self._auth is None and not self._observers:
            # The common case (positional arguments that fit, an agreed procedure, an open
            # connection with a free slot): the road of `_call`, inlined (`_fast_call`).
            connection = self._shared.connection
            plan = self._plans.get(procedure)
            if (
                connection is not None
                and plan is not None
                and connection.ready()
                and plan.fits(args)
                and procedure in self._server.agreed
            ):
                return await self._fast_call(plan, args, connection)
        if self._observers and type(metadata) is not ObservedMetadata:
            observers = self._observers
            return await observe_call_async(self.call, observers, procedure, args, kwargs, metadata)
        plan, wire_args, wire_kwargs = self._procedure(procedure, args, kwargs or {})
        deadline = Deadline(self._timeout, procedure, self.address)
        spec = plan.procedure
        ok, value = await self._call_within(spec, wire_args, wire_kwargs, metadata, deadline)
        return self._outcome(plan, ok, value)

    def with_options(self, *, timeout: float | None = None) -> AsyncClient:
        """A view of this client with other per-call options; it shares the connections."""
        view = copy.copy(self)
        if timeout is not None:
            view._timeout = load_config(self.config, timeout=timeout).timeout
        return view

    async def aclose(self) -> None:
        """Close the connections (calls still waiting end with `TransportError`)."""
        shared = self._shared
        sending = [task for task in shared.background if not task.done()]
        if sending:  # cancels of calls just cancelled go out first (each within its bound)
            await asyncio.wait(sending)
        connection, shared.connection = shared.connection, None
        if connection is not None:
            connection.retired = True
            connection.close()
            await connection.channel.close()
        if shared.bridge is not None:
            shared.bridge.close()
            shared.bridge = None
        shared.native = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the road of a call --------------------------------------------------------------------

    async def _call_within(
        self,
        spec: Procedure,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        metadata: Mapping[str, Any] | None,
        deadline: Deadline,
        session_retry: bool = True,
    ) -> tuple[bool, Any]:
        """`_call` within `deadline` (`CallTimeoutError` when it passes)."""
        try:
            async with asyncio.timeout(deadline.remaining()):
                try:
                    return await self._call(spec, args, kwargs, metadata, deadline)
                except SessionError:
                    if not session_retry:
                        raise
                    # Refused before anything ran (the server restarted with other settings):
                    # a fresh connection and hello, and one more try, are safe.
                    self._retire()
                    return await self._call(spec, args, kwargs, metadata, deadline)
        except TimeoutError as exc:
            if isinstance(exc, CallTimeoutError):
                raise
            raise self._timed_out(spec.name) from None

    async def _fast_call(
        self, plan: ProcedurePlan, args: tuple[Any, ...], connection: _Connection
    ) -> Any:
        """`_call_within` for the common case, on a `ready` connection: the same steps
        (a slot, `_encode`, `_Connection.call`, the deadline, `_outcome`) inlined, with one
        timer for the deadline; whatever goes wrong is handled as the general road does."""
        spec = plan.procedure
        slots = self._shared.slots
        assert slots is not None
        loop = connection.loop
        pending = connection.pending
        timeout = self._timeout
        expires = monotonic() + timeout
        call_id = next(self._ids)
        future: asyncio.Future[tuple[bool, Any]] = loop.create_future()
        slots.used += 1
        try:
            message = self._fast_request(spec.name, call_id, args, timeout)
            pending[call_id] = future
            connection.watch(call_id, loop.time() + timeout)
            await connection.channel.send(message)
            ok, value = await future
        except _Expired:
            self._cancel_later(connection, call_id)
            raise self._timed_out(spec.name) from None
        except asyncio.CancelledError:
            if future.cancelled() or not future.done():  # no answer yet: tell the server
                self._cancel_later(connection, call_id)
            raise
        except SessionError:
            self._retire()  # as `_call_within`: a fresh hello, and one more try (below)
            retry: bool | None = False
        except ServerUnavailableError:
            raise
        except TransportError as exc:
            if not spec.idempotent:
                raise self._outcome_unknown(spec, exc) from None
            retry = True  # sent again (below)
        else:
            retry = None
        finally:
            connection.expiries.pop(call_id, None)
            pending.pop(call_id, None)
            slots.release()  # before any retry, which takes a slot of its own
            if connection.retired and not pending:
                connection.close()
        if retry is not None:
            deadline = Deadline.until(expires, timeout, spec.name, self.address)
            ok, value = await self._call_within(spec, args, {}, None, deadline, retry)
        if ok:
            return value if type(value) in plan.result_types else plan.result_from_wire(value)
        self._raise_error(value)

    def _timed_out(self, procedure: str) -> CallTimeoutError:
        return CallTimeoutError(
            f"no reply from {self.address} to {procedure}() within {self._timeout} s"
        )

    async def _call(
        self,
        spec: Procedure,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any],
        metadata: Mapping[str, Any] | None,
        deadline: Deadline,
    ) -> tuple[bool, Any]:
        shared = self._state()
        backoff = _FIRST_BACKOFF
        while True:
            slots = shared.slots
            assert slots is not None
            await slots.acquire()
            try:
                connection = await self._connect(deadline)
                if spec.name not in self._server.agreed:
                    self._check_drift(spec)
                call_id = next(self._ids)
                message, keys = self._encode(
                    call_id, spec, args, kwargs, metadata, deadline.remaining()
                )
                if connection is None:
                    bridge = shared.bridge
                    assert bridge is not None
                    try:
                        return await bridge.call(call_id, message, deadline, keys)
                    except asyncio.CancelledError:
                        bridge.send_cancel(call_id)
                        raise
                return await connection.call(call_id, message, keys)
            except _NotSent:
                continue  # nothing was written: a new connection, and the same request
            except ServerUnavailableError:
                raise  # the transport knows no server took the request (NATS)
            except TransportError as exc:
                if not spec.idempotent:
                    raise self._outcome_unknown(spec, exc) from None
            finally:
                slots.release()
            await asyncio.sleep(min(backoff, deadline.left()))
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _state(self) -> _Shared:
        """The shared state, bound to the running loop (reset if the loop changed)."""
        shared = self._shared
        loop = asyncio.get_running_loop()
        if shared.loop is not loop:
            with shared.guard:
                if shared.loop is not loop:
                    if shared.bridge is not None:
                        shared.bridge.close()
                    shared.connection = shared.bridge = None
                    shared.native = None
                    shared.lock = asyncio.Lock()
                    shared.slots = _Slots(self._max_in_flight)
                    shared.background = set()
                    shared.loop = loop
        return shared

    async def _connect(self, deadline: Deadline) -> _Connection | None:
        """The open multiplexed connection (None: the transport is bridged)."""
        shared = self._shared
        connection = shared.connection
        if connection is not None and connection.usable():
            return connection
        if shared.native is False:
            assert shared.bridge is not None
            await shared.bridge.ensure_session(deadline)
            return None
        assert shared.lock is not None
        async with shared.lock:
            connection = shared.connection
            if connection is not None and connection.usable():
                return connection
            channel = await self._transport.open_async_channel(self._endpoint, deadline.remaining())
            if channel is None:
                shared.native = False
                if shared.bridge is None:
                    shared.bridge = _Bridge(self, self._max_in_flight)
                await shared.bridge.ensure_session(deadline)
                self._limit_slots()
                return None
            shared.native = True
            try:
                hello, nonce = self._start_hello()
                await channel.send(hello)
                reply = await channel.receive()
                if reply is None:
                    raise TransportError(
                        f"the server at {self.address} closed the connection during the hello"
                    )
                self._accept_hello(reply, nonce)
            except OversizedFrameError as exc:
                await channel.close()
                raise ProtocolError(
                    f"the server at {self.address} answered the hello with a {exc.size}-byte "
                    "message: is it an srpc server?"
                ) from None
            except BaseException:
                await channel.close()
                raise
            self._limit_slots()
            connection = shared.connection = _Connection(self, channel)
            connection.start()
            return connection

    def _limit_slots(self) -> None:
        advertised = self._server.max_in_flight
        slots = self._shared.slots
        if slots is not None:
            slots.limit = min(self._max_in_flight, advertised or self._max_in_flight)

    def _retire(self) -> None:
        """Send no new calls on the current connection (its calls finish there)."""
        connection = self._shared.connection
        if connection is not None:
            connection.retired = True
            if not connection.pending:
                connection.close()
            self._shared.connection = None
        if self._shared.bridge is not None:
            self._shared.bridge.close()
            self._shared.bridge = None
            self._shared.native = None
        with self._server.lock:
            self._server.session = ""

    def _cancel_later(self, connection: _Connection, call_id: int) -> None:
        self._background(connection.send_cancel(call_id))

    def _background(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(_quietly(coroutine))
        self._shared.background.add(task)
        task.add_done_callback(self._shared.background.discard)


class _Expired(Exception):
    """A fast-path call's deadline passed (set on its future by its timer)."""


async def _quietly(coroutine: Any) -> None:
    """Run a background step whose failure only matters to nobody (a cancel message)."""
    try:
        await coroutine
    except (SrpcError, OSError, TimeoutError):
        pass


__all__ = ["AsyncClient"]
