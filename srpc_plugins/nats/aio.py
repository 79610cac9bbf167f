"""The native async side of the ``nats`` transport: `AsyncNatsChannel` and `AsyncNatsListener`.

nats-py is asyncio-native, so neither needs the process's background loop: each lives on the
event loop that uses it (the async client's, the asyncio server's), with a NATS connection of
its own made on that loop (`_connect.open_connection`: the same credentials, TLS, fail-fast
start and reconnect-for-ever as the sync side; ``max_message_bytes`` is checked against the
NATS server's ``max_payload`` the same way).

Client (`AsyncNatsChannel`). One wildcard subscription on a reply inbox of its own
(``_INBOX.<nuid>.*``); `send` publishes a request to the service's subject with a reply subject
``_INBOX.<nuid>.<n>`` (a new n per message; no headers, as the sync channel), and `receive`
returns what comes back on the inbox in arrival order, so any number of requests may be
outstanding at once (the async client matches answers to calls by the id inside each message).
NATS answers a request that no server is subscribed to with a "no responders" status (503) on
its reply subject. So that it reaches that call alone, at once, `send` waits until NATS has
seen the message: it publishes a marker to the channel's own inbox right behind it (the sends
of one turn of the loop share one) and returns when the marker comes back, NATS having handled
the message, 503 included, by then (one connection, in order); a send that got a 503 raises
`ServerUnavailableError`, which the async client passes on as it is, for the hello and for a
call alike (nothing ran; the channel stays usable, and the next call goes to whichever server
is there by then). A cancel that no server takes is dropped. The wait costs a NATS round trip
(the reply needs two hops and the server's time, so the call rarely waits on it); it is
bounded by `CONFIRM_WAIT`, and skipped while NATS is reconnecting (the message goes out on
reconnection). A 503 that comes after its send stopped waiting is answered through
`receive`, as the sync channel does: `ServerUnavailableError` for a hello, a ``session``
control error naming the call's id for a call (the client reads `SessionError`: nothing ran,
a fresh hello, then `ServerUnavailableError` at once if still no server is there).

The call's id is read from the request with the codec the hello named (looked up in srpc's
plugins), only when such a late status comes; a control error that names no call (a server
refusing a message above its ``max_message_bytes`` cannot read its id) gets the id the same
way, and so does a reply above this side's ``max_message_bytes`` (a ``too_large`` error for
that call alone). Without an id (raw bytes, an unknown codec) they end the channel instead:
`ServerUnavailableError` / `FrameTooLargeError` from `receive`. nats-py reads a message whole
before srpc sees it; the NATS server's ``max_payload`` (at least ``max_message_bytes``, checked
at connect) bounds what it can hold.

Server (`AsyncNatsListener`). NATS has no connections, so the model is **one request, one
connection**: every request taken from the queue subscription becomes a `RequestChannel`
handed to the core's ``on_connection``. Its `receive` returns the request, then None (the peer
"left" after one message); its `send` publishes to that request's reply subject. Why this
model: a reply must go to the reply subject of the request it answers (the sync client's
nats-py requests each wait on their own), and a channel's `send` does not say which request a
message answers; a channel per request makes that trivially right, for the sync client, the
async client and any NATS requester alike. What carries across requests already does so
without a connection: the session travels in every request (any server of the service
verifies it), and a cancel, which arrives as a request of its own, is matched by the
dispatcher through ``(session, call id)`` in one table for the whole server, whichever channel
brought the call. (With several servers, NATS gives the cancel to one of them at random: it
cancels the call only where it lands; an unmatched cancel is acknowledged and changes nothing.)

The NATS half of the listener is the threaded listener's `_intake.Intake`, so the guarantees are
the same: the queue group ``srpc``; ``max_concurrent`` calls at once (a slot is held until the
core's ``on_connection`` for that request returns, i.e. the call has answered), more waiting in
order, with flow control (a server with every slot taken hands a new call back to NATS, at
most 3 times, counted in a header; nothing runs twice); control messages (hello, cancel) are
answered at once, outside the slots, and never handed on, so a cancel never waits behind the
calls it would cancel; a NATS restart is survived (reconnect, subscribe again). `close` is the
first half of the drain: it leaves the queue group (serving what NATS had already matched to
this server for half a second more), prints how many calls are in flight, and returns once
every request received is in the core's hands (those waiting for a slot wait for it, within
``timeout``); the core then lets them finish and answer; the NATS connection closes when the
last has answered (or at the next `close`, which waits for that at most ``timeout``).

A consequence of the model, from the core's side: a request's connection ends right after the
request, and the asyncio server gives the calls of a connection that ended ``[srpc] timeout``
(the server's) to finish. So on the asyncio server over NATS a call runs at most the server's
``timeout``, not the caller's; give the server a ``timeout`` at least as long as its clients'.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from srpc_core import protocol
from srpc_core.errors import FrameTooLargeError, ServerUnavailableError, TransportError
from srpc_core.transport import AsyncChannel, AsyncListener, OnConnection
from srpc_plugins.nats._connect import message_limit, open_connection
from srpc_plugins.nats._intake import CLOSE_TIMEOUT, Intake

if TYPE_CHECKING:
    from srpc_core.codec import Codec
    from srpc_plugins.nats import NatsTransport

log = logging.getLogger("srpc.nats")
#: The header NATS puts a status in, and the status of "no responders".
STATUS_HEADER = "Status"
NO_RESPONDERS = "503"
#: The longest `AsyncNatsChannel.send` waits for NATS to have seen a message.
CONFIRM_WAIT = 1.0


def _address(transport: NatsTransport, subject: str) -> str:
    """The channel's address for messages, as the sync channel writes it."""
    address = transport.url("", 0).rstrip("/")
    return address if transport.options.subject else f"{address}/{subject}"


def _is_cancel(message: bytes) -> bool:
    if not protocol.is_control(message):
        return False
    try:
        return "cancel" in protocol.decode_control(message)
    except Exception:
        return False


def _codec_named(name: object) -> Codec | None:
    """The codec registered as `name` (the hello's), or None."""
    if not isinstance(name, str):
        return None
    from srpc_core.plugins import get_plugins

    try:
        return get_plugins().codec(name, {})
    except Exception:  # unknown here (a codec registered in code elsewhere): no ids
        return None


class AsyncNatsChannel(AsyncChannel):
    """Requests to one subject, replies on one inbox, on the caller's event loop."""

    def __init__(self, nc: Any, subject: str, address: str, max_bytes: int) -> None:
        self.address = address
        self._nc = nc
        self._subject = subject
        self._max_bytes = max_bytes
        self._inbox = nc.new_inbox()
        self._prefix_len = len(self._inbox) + 1
        self._tokens = itertools.count()
        #: Messages sent whose reply subject has not heard back yet, by reply token.
        self._sent: dict[str, bytes] = {}
        self._codec: Codec | None = None
        self._arrived: deque[bytes | BaseException] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._sub: Any = None
        #: Sends waiting for NATS to have seen their message: token -> "no responders" came.
        self._confirming: dict[str, bool] = {}
        self._batch: asyncio.Future[None] | None = None
        self._markers: dict[str, asyncio.Future[None]] = {}
        self._marking: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, transport: NatsTransport, subject: str, timeout: float) -> AsyncNatsChannel:
        """Connect to NATS on the running loop and subscribe to a new inbox, within `timeout`."""
        options = transport.options
        nc = await open_connection(options, "srpc async client", max(timeout, 0.001))
        try:
            max_bytes = message_limit(nc, transport.settings, options)
            channel = cls(nc, subject, _address(transport, subject), max_bytes)
            channel._sub = await nc.subscribe(f"{channel._inbox}.*", cb=channel._on_reply)
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT)
            raise
        return channel

    # -- the AsyncChannel interface ----------------------------------------------------------

    async def send(self, message: bytes) -> None:
        if self._closed or self._nc.is_closed:
            raise TransportError(f"the channel to {self.address} is closed")
        if len(message) > self._max_bytes:  # (NATS would refuse it: nothing is sent)
            raise FrameTooLargeError(
                f"the message is {len(message)} bytes, more than {self.address} carries "
                f"({self._max_bytes}: max_message_bytes, and the NATS server's max_payload)"
            )
        if self._codec is None and protocol.is_control(message):
            self._learn_codec(message)
        token = str(next(self._tokens))
        self._sent[token] = message
        try:
            await self._nc.publish(self._subject, message, reply=f"{self._inbox}.{token}")
        except Exception as exc:  # closed, draining, too large for NATS
            self._sent.pop(token, None)
            raise TransportError(f"NATS request to {self.address} failed: {exc!r}") from None
        if not self._nc.is_connected:
            return  # sent on reconnection; a "no responders" then comes to receive()
        self._confirming[token] = False
        try:
            await self._round_trip()
        finally:
            refused = self._confirming.pop(token, False)
        if refused and not _is_cancel(message):
            raise ServerUnavailableError(self._no_responders_text())

    async def _round_trip(self) -> None:
        """Wait until NATS has seen every message published so far (at most `CONFIRM_WAIT`).

        A marker published to this channel's own inbox comes back after NATS has handled
        the messages published before it, "no responders" answers included (one connection,
        in order). Sends in the same turn of the loop share one marker. (nats-py's `flush`
        is no such barrier: it writes its PING ahead of publishes still in its buffer.)
        """
        batch = self._batch
        if batch is None:
            batch = self._batch = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._mark, batch)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(batch), CONFIRM_WAIT)

    def _mark(self, batch: asyncio.Future[None]) -> None:
        """Close `batch` and publish its marker (the publish is queued in order at once)."""
        self._batch = None
        token = f"m{next(self._tokens)}"
        self._markers[token] = batch
        task = asyncio.ensure_future(self._publish_marker(token))
        self._marking.add(task)
        task.add_done_callback(self._marking.discard)

    async def _publish_marker(self, token: str) -> None:
        try:
            await self._nc.publish(f"{self._inbox}.{token}", b"")
        except Exception:  # the connection is going: the senders stop waiting on their own
            batch = self._markers.pop(token, None)
            if batch is not None and not batch.done():
                batch.set_result(None)

    async def receive(self) -> bytes | None:
        while True:
            if self._arrived:
                item = self._arrived.popleft()
                if isinstance(item, BaseException):
                    raise item
                return item
            if self._closed:
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sent.clear()
        self._wake()
        for marker in self._markers.values():
            if not marker.done():
                marker.set_result(None)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._nc.close(), CLOSE_TIMEOUT)

    def closing(self) -> bool:
        return self._closed or self._nc.is_closed

    # -- replies -----------------------------------------------------------------------------

    def _learn_codec(self, message: bytes) -> None:
        try:
            fields = protocol.decode_control(message)
        except Exception:
            return
        if fields.get("hello") is True:
            self._codec = _codec_named(fields.get("codec"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _deliver(self, item: bytes | BaseException) -> None:
        self._arrived.append(item)
        self._wake()

    async def _on_reply(self, msg: Any) -> None:
        if self._closed:
            return
        token = msg.subject[self._prefix_len :]
        marker = self._markers.pop(token, None)
        if marker is not None:
            if not marker.done():
                marker.set_result(None)
            return
        request = self._sent.pop(token, None)
        headers = msg.headers
        status = headers.get(STATUS_HEADER) if headers else None
        if status is not None and not msg.data:
            if status == NO_RESPONDERS:
                if token in self._confirming:  # its send() raises ServerUnavailableError
                    self._confirming[token] = True
                else:
                    self._no_responders(request)
            return  # (other statuses are JetStream's)
        data: bytes = msg.data
        if len(data) > self._max_bytes:
            text = (
                f"the reply from {self.address} is {len(data)} bytes, more than "
                f"max_message_bytes ({self._max_bytes})"
            )
            call_id = self._call_id(request)
            if call_id is None:
                self._deliver(FrameTooLargeError(text))
            else:
                self._deliver(protocol.control_error(text, protocol.Code.TOO_LARGE, call_id))
            return
        if protocol.is_control(data):
            data = self._name_the_call(data, request)
        self._deliver(data)

    def _no_responders_text(self) -> str:
        return (
            f"no srpc server is subscribed to {self.address} (NATS: no responders); the "
            "request reached no server"
        )

    def _no_responders(self, request: bytes | None) -> None:
        """A "no responders" that came after its send() stopped waiting (NATS was slow or
        reconnecting): answered through `receive`."""
        text = self._no_responders_text()
        if request is None or _is_cancel(request):
            return  # nothing to cancel anywhere
        if protocol.is_control(request):
            self._deliver(ServerUnavailableError(text))
            return
        call_id = self._call_id(request)
        if call_id is None:
            self._deliver(ServerUnavailableError(text))
            return
        # NATS proves no server received the call: a session error tells the client that
        # nothing ran and a fresh hello may go to whichever server is there now.
        self._deliver(protocol.control_error(text, protocol.Code.SESSION, call_id))

    def _name_the_call(self, data: bytes, request: bytes | None) -> bytes:
        """A control error that names no call, given the id of the request it answers."""
        try:
            fields = protocol.decode_control(data)
        except Exception:
            return data
        if fields.get("ok") is not False or "id" in fields:
            return data
        call_id = self._call_id(request)
        if call_id is None:
            return data
        return protocol.encode_control({**fields, "id": call_id})

    def _call_id(self, request: bytes | None) -> int | None:
        """The id of the call `request` carries (decoded with the hello's codec), or None."""
        if request is None or self._codec is None or protocol.is_control(request):
            return None
        try:
            decoded = self._codec.decode(request)
        except Exception:
            return None
        if type(decoded) is list and decoded and type(decoded[0]) is int:
            call_id: int = decoded[0]
            return call_id
        return None


class RequestChannel(AsyncChannel):
    """One request of the asyncio server: `receive` returns it, then None; `send` answers it."""

    def __init__(self, listener: AsyncNatsListener, msg: Any) -> None:
        self.address = listener.address
        self._listener = listener
        self._msg = msg
        self._request: bytes | None = msg.data
        self._closed = False

    async def receive(self) -> bytes | None:
        request, self._request = self._request, None
        if request is not None:
            self._listener._taken(self)
        return request

    async def send(self, message: bytes) -> None:
        if self._closed:
            raise TransportError(f"the request on {self.address} is closed")
        reply = self._msg.reply
        if not reply:
            return  # published without a reply subject: nobody to answer
        try:
            await self._listener.nc.publish(reply, message)
        except Exception as exc:  # the connection is closed, or the reply too large for NATS
            raise TransportError(f"replying on {self.address} failed: {exc!r}") from None

    async def close(self) -> None:
        self._closed = True
        if self._request is not None:  # never read: nobody will
            self._request = None
            self._listener._taken(self)

    def closing(self) -> bool:
        return self._closed


class AsyncNatsListener(AsyncListener):
    """Serves `on_connection` for the requests on `subject`, in the queue group ``srpc``."""

    def __init__(self, transport: NatsTransport, subject: str, on_connection: OnConnection):
        self.port = 0
        self.subject = subject
        self._on_connection = on_connection
        self._timeout = transport.settings.timeout
        self._intake = Intake(transport, subject, self._serve, control_first=True)
        self.address = self._intake.address
        #: Requests handed to the core and not yet read by it.
        self._untaken: set[RequestChannel] = set()
        self._all_taken = asyncio.Event()
        self._all_taken.set()
        self._stopping: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    @classmethod
    async def bind(
        cls, transport: NatsTransport, subject: str, on_connection: OnConnection
    ) -> AsyncNatsListener:
        listener = cls(transport, subject, on_connection)
        await listener._intake.connect()
        listener.address = listener._intake.address
        listener._intake.start()
        return listener

    @property
    def nc(self) -> Any:
        return self._intake.nc

    @property
    def forwarded(self) -> int:
        """Calls handed back to NATS because every slot was taken (flow control)."""
        return self._intake.forwarded

    async def _serve(self, msg: Any) -> None:
        channel = RequestChannel(self, msg)
        self._untaken.add(channel)
        self._all_taken.clear()
        try:
            await self._on_connection(channel)
        finally:
            await channel.close()

    def _taken(self, channel: RequestChannel) -> None:
        self._untaken.discard(channel)
        if not self._untaken:
            self._all_taken.set()

    async def close(self) -> None:
        """Stop taking calls (see the module); the connection closes once they answered."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop_taking())
            await asyncio.shield(self._stopping)
            self._closer = asyncio.ensure_future(self._close_when_idle())
            return
        await asyncio.shield(self._stopping)
        if self._closer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._closer), self._timeout)
            await self._intake.close()

    async def _stop_taking(self) -> None:
        """Leave the queue group; return once every call received is in the core's hands
        (calls waiting for a slot wait for it, within ``timeout``: the core drains only the
        connections it has been given)."""
        await self._intake.stop_taking()
        self._intake.announce_stop()
        expires = asyncio.get_running_loop().time() + self._timeout
        await self._intake.wait_dispatched(self._timeout)
        left = max(0.0, expires - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_taken.wait(), left)

    async def _close_when_idle(self) -> None:
        try:
            await self._intake.wait_idle(None)
        finally:
            await self._intake.close()


__all__ = ["AsyncNatsChannel", "AsyncNatsListener", "RequestChannel"]
