"""The server side: a queue subscription on the service's subject, with flow control.

Calls run in a pool of `max_concurrent` threads; the NATS side (subscriptions, replies) runs on
the process's background event loop, and `serve_forever` blocks its caller until shutdown is
over.

Flow control. NATS gives each message of a queue group to one member, at random. A server
whose `max_concurrent` calls are all running would get as many new calls as an idle one, and
they would wait in its queue while the idle server has nothing to do. So a server with every
slot taken hands a new call back to NATS (the same subject, the caller's reply subject, a
header counting the hops), which gives it to a random member again: with k servers of which b
are busy, a call stays on a busy one with probability (b/k) ** (MAX_FORWARDS + 1) instead of
b/k. After `MAX_FORWARDS` hops a call waits where it lands, so with every server busy calls do
not bounce for ever. Nothing is lost or run twice: the call is either handed on (NATS carries
it at most once, like the original request) or queued here. docs/nats.md has the measurements,
and why subscribing and unsubscribing per free slot (the other way) was dropped.

Shutdown: the subscription leaves the queue group (NATS then sends this server nothing more),
the calls received so far run and answer, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from srpc_core import protocol
from srpc_core.transport import Handler, Listener, answer
from srpc_plugins.nats._connect import check_max_payload, open_connection
from srpc_plugins.nats._loop import LoopTimeout, background_loop

if TYPE_CHECKING:
    from srpc_plugins.nats import NatsTransport

log = logging.getLogger("srpc.nats")
#: Extra seconds `serve_forever` waits for the loop beyond the drain timeout.
_MARGIN = 5.0
#: How many times a call may be handed back to NATS by busy servers (flow control).
MAX_FORWARDS = 3
#: The header that counts them.
HOPS_HEADER = "Srpc-Forwards"
#: Seconds a server leaving the queue group still serves calls NATS matched to it before.
STRAGGLER_GRACE = 0.5


class NatsListener(Listener):
    """Serves `handler` for the requests on `subject`, in the queue group ``srpc``."""

    def __init__(self, transport: NatsTransport, subject: str, handler: Handler) -> None:
        from srpc_plugins.nats import QUEUE_GROUP

        options = transport.options
        settings = transport.settings
        self.subject = subject
        self.port = 0
        self._queue = QUEUE_GROUP
        self._handler = handler
        self._max_bytes = settings.max_message_bytes
        self._slots = options.max_concurrent
        self._flow_control = options.flow_control
        self._drain_timeout = settings.timeout
        self._loop = background_loop()
        self._pool = ThreadPoolExecutor(self._slots, thread_name_prefix="srpc-nats-call")
        # State below is touched only on the loop thread.
        self._nc: Any = None
        self._free = self._slots
        self._waiting: deque[Any] = deque()
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Calls handed back to NATS because every slot was taken (flow control).
        self.forwarded = 0
        self._started = False
        self._stopping = False
        self._idle: asyncio.Event | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        try:
            self._loop.run(self._bind(transport), settings.timeout + _MARGIN)
        except LoopTimeout:
            self._close_pipe()
            raise OSError(f"could not subscribe to {subject} within {settings.timeout} s") from None
        except BaseException:
            self._close_pipe()
            self._pool.shutdown(wait=False)
            raise
        nc: Any = self._nc  # set by _bind
        url = nc.connected_url.geturl() if nc.connected_url else options.servers[0]
        self.address = f"{url}/{subject}"

    # -- on the loop -----------------------------------------------------------------------

    async def _bind(self, transport: NatsTransport) -> None:
        self._idle = asyncio.Event()
        self._idle.set()
        self._nc = await open_connection(
            transport.options,
            f"srpc server {self.subject}",
            transport.settings.timeout,
            on_disconnect=self._disconnected,
            on_reconnect=self._reconnected,
        )
        try:
            check_max_payload(self._nc, self._max_bytes, transport.options)
            await self._subscribe()
            await self._nc.flush(max(1, int(transport.settings.timeout)))
        except BaseException:
            with contextlib.suppress(Exception):
                await self._nc.close()
            raise

    async def _disconnected(self) -> None:
        if not self._stopping:
            print(f"srpc: lost the NATS connection of {self.subject}; reconnecting", flush=True)

    async def _reconnected(self) -> None:
        url = self._nc.connected_url.geturl() if self._nc.connected_url else "NATS"
        print(f"srpc: reconnected to {url} for {self.subject}", flush=True)

    async def _subscribe(self) -> None:
        self._sub = await self._nc.subscribe(self.subject, queue=self._queue, cb=self._on_message)

    def _spawn(self, coroutine: Any, tasks: set[asyncio.Task[None]]) -> None:
        task = asyncio.ensure_future(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _on_message(self, msg: Any) -> None:
        if len(msg.data) > self._max_bytes:
            await self._reply(
                msg,
                protocol.control_error(
                    f"a {len(msg.data)}-byte message exceeds max_message_bytes ({self._max_bytes})",
                    protocol.Code.TOO_LARGE,
                ),
            )
            return
        if self._busy() and await self._forward(msg):
            return
        self._waiting.append(msg)
        assert self._idle is not None
        self._idle.clear()
        self._dispatch()

    def _busy(self) -> bool:
        """Every slot is taken: a call arriving now would wait here."""
        return (
            self._flow_control
            and self._started
            and not self._stopping
            and self._free <= len(self._waiting)
        )

    async def _forward(self, msg: Any) -> bool:
        """Hand `msg` back to NATS for another member of the queue group; False if not.

        At most `MAX_FORWARDS` times per call (a header counts them), so with every server
        busy a call stops bouncing and waits where it lands. The reply subject stays the
        caller's, so whoever runs the call answers the caller directly.
        """
        if not msg.reply:
            return False
        try:
            hops = int((msg.headers or {}).get(HOPS_HEADER, "0"))
        except (TypeError, ValueError):
            return False
        if hops >= MAX_FORWARDS or hops < 0:
            return False
        try:
            await self._nc.publish(
                self.subject, msg.data, reply=msg.reply, headers={HOPS_HEADER: str(hops + 1)}
            )
        except Exception as exc:  # too large with the header, or the connection is down
            log.debug("srpc: forwarding a call on %s failed: %r", self.subject, exc)
            return False
        self.forwarded += 1
        return True

    def _dispatch(self) -> None:
        while self._started and self._free > 0 and self._waiting:
            self._free -= 1
            self._spawn(self._run(self._waiting.popleft()), self._tasks)

    async def _run(self, msg: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
            reply = await loop.run_in_executor(
                self._pool, answer, self._handler, msg.data, self._max_bytes
            )
            await self._reply(msg, reply)
        finally:
            self._free += 1
            self._dispatch()
            if self._free == self._slots and not self._waiting:
                assert self._idle is not None
                self._idle.set()

    async def _reply(self, msg: Any, reply: bytes) -> None:
        if not msg.reply:  # published without a reply subject: nobody to answer
            return
        try:
            await self._nc.publish(msg.reply, reply)
        except Exception as exc:  # the connection is gone: the caller times out
            log.debug("srpc: replying on %s failed: %r", self.subject, exc)

    def _start(self) -> None:
        self._started = True
        self._dispatch()

    def _begin_stop(self) -> None:
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())

    async def _stop(self) -> None:
        """Unsubscribe, let the calls received run and answer, close."""
        self._stopping = True
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._unsubscribe(), self._drain_timeout)
            if self._started:
                in_flight = self._slots - self._free + len(self._waiting)
                print(
                    f"srpc: {self.address} takes no more calls; finishing {in_flight} in flight",
                    flush=True,
                )
                assert self._idle is not None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._idle.wait(), self._drain_timeout)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), _MARGIN)

    async def _unsubscribe(self) -> None:
        """Leave the queue group without dropping a call already on its way here.

        After an UNSUB and the round trip that confirms it, the NATS server may still deliver
        a message it matched to this subscription just before (measured: about 1 in 400
        unsubscribes under load). nats-py's `Subscription.drain` forgets the subscription at
        that point and drops such a message, and the caller would time out; so the
        subscription is kept, and what arrives is served, for `STRAGGLER_GRACE` seconds
        more. (With a nats-py that lacks the method used, `drain` is the fallback.)
        """
        sub = self._sub
        if sub is None:
            return
        send_unsubscribe = getattr(self._nc, "_send_unsubscribe", None)
        if send_unsubscribe is None:
            await sub.drain()
            return
        await send_unsubscribe(sub._id)
        await self._nc.flush(max(1, int(self._drain_timeout)))
        await asyncio.sleep(STRAGGLER_GRACE)
        await sub.unsubscribe()

    async def _wait_stopped(self) -> None:
        self._begin_stop()
        assert self._stopped is not None
        await self._stopped

    # -- the Listener interface ------------------------------------------------------------

    def serve_forever(self) -> None:
        self._loop.call_soon(self._start)
        try:
            while True:
                try:
                    readable, _, _ = select.select([self._wake_r], [], [])
                except InterruptedError:
                    continue
                if readable:
                    break
            try:
                self._loop.run(self._wait_stopped(), 2 * self._drain_timeout + 2 * _MARGIN)
            except LoopTimeout:
                log.warning("srpc: %s did not finish shutting down in time", self.address)
        finally:
            self._pool.shutdown(wait=False)
            self._close_pipe()

    def shutdown(self) -> None:
        """Stop taking calls and let those in flight finish. Never blocks; signal-safe."""
        self._loop.call_soon(self._begin_stop)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1


__all__ = ["NatsListener"]
