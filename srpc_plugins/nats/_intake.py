"""The server side's NATS half, shared by the threaded and the asyncio listener: `Intake`.

An `Intake` lives on one event loop (the process's background loop for the threaded
`listener.NatsListener`, the server's own loop for `aio.AsyncNatsListener`) and does there
everything that is about NATS rather than about running a call:

* connect (failing fast, then reconnecting for ever, saying so) and check ``max_message_bytes``
  against the NATS server's ``max_payload``;
* subscribe to the service's subject in the queue group ``srpc``;
* refuse a message above ``max_message_bytes`` with a ``too_large`` control error;
* bound the calls it runs at once by ``max_concurrent``, queueing the rest, with **flow
  control**: NATS gives each message of a queue group to one member, at random, so a server
  whose slots are all taken would get as many new calls as an idle one, and they would wait in
  its queue while the idle server has nothing to do. So a server with every slot taken hands a
  new call back to NATS (the same subject, the caller's reply subject, a header counting the
  hops), which gives it to a random member again: with k servers of which b are busy, a call
  stays on a busy one with probability (b/k) ** (MAX_FORWARDS + 1) instead of b/k. After
  `MAX_FORWARDS` hops a call waits where it lands, so with every server busy calls do not bounce
  for ever. Nothing is lost or run twice: the call is either handed on (NATS carries it at
  most once, like the original request) or queued here. docs/nats.md has the measurements, and
  why subscribing and unsubscribing per free slot (the other way) was dropped;
* stop taking calls (leave the queue group without dropping one already on its way), tell how
  many are in flight, wait until they have answered, close the connection.

What runs a call is the listener's: `Intake` awaits ``run(msg)`` for each message it takes
(the listener answers with `Intake.reply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from srpc_core import protocol
from srpc_plugins.nats._connect import message_limit, open_connection

if TYPE_CHECKING:
    from srpc_plugins.nats import NatsTransport

log = logging.getLogger("srpc.nats")
#: How many times a call may be handed back to NATS by busy servers (flow control).
MAX_FORWARDS = 3
#: The header that counts them.
HOPS_HEADER = "Srpc-Forwards"
#: Seconds a server leaving the queue group still serves calls NATS matched to it before.
STRAGGLER_GRACE = 0.5
#: The longest closing the NATS connection may take.
CLOSE_TIMEOUT = 5.0

Run = Callable[[Any], Awaitable[None]]


class Intake:
    """The queue subscription of one server of `subject`, its slots and its flow control.

    Created, connected (`connect`), started, stopped and closed on one event loop.

    Args:
        transport: the nats transport (options and settings).
        subject: the service's subject.
        run: runs one call (a nats-py message) and answers it; awaited in a task of its own.
        control_first: run control messages (the hello, cancels) at once, outside the slots
            and never handed on: a cancel must not wait behind the calls it would cancel.
    """

    def __init__(
        self, transport: NatsTransport, subject: str, run: Run, *, control_first: bool = False
    ) -> None:
        from srpc_plugins.nats import QUEUE_GROUP

        options = transport.options
        settings = transport.settings
        self.subject = subject
        self.address = f"{options.servers[0]}/{subject}"
        self._transport = transport
        self._queue = QUEUE_GROUP
        self._run = run
        self._control_first = control_first
        self._max_bytes = settings.max_message_bytes
        self._slots = options.max_concurrent
        self._flow_control = options.flow_control
        self._timeout = settings.timeout
        self.nc: Any = None
        self._free = self._slots
        self._waiting: deque[Any] = deque()
        self._sub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Calls handed back to NATS because every slot was taken (flow control).
        self.forwarded = 0
        self.started = False
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set while no call waits for a slot (every call taken is running or done).
        self._dispatched = asyncio.Event()
        self._dispatched.set()

    # -- starting ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, check ``max_payload``, subscribe (raises `ServerUnavailableError`,
        `ConfigError`)."""
        transport = self._transport
        self.nc = await open_connection(
            transport.options,
            f"srpc server {self.subject}",
            self._timeout,
            on_disconnect=self._disconnected,
            on_reconnect=self._reconnected,
        )
        try:
            self._max_bytes = message_limit(self.nc, transport.settings, transport.options)
            self._sub = await self.nc.subscribe(
                self.subject, queue=self._queue, cb=self._on_message
            )
            await self.nc.flush(max(1, int(self._timeout)))
        except BaseException:
            await self.close()
            raise
        if self.nc.connected_url:
            self.address = f"{self.nc.connected_url.geturl()}/{self.subject}"

    def start(self) -> None:
        """Run calls (those received so far first)."""
        self.started = True
        self._dispatch()

    async def _disconnected(self) -> None:
        if not self.stopping:
            print(f"srpc: lost the NATS connection of {self.subject}; reconnecting", flush=True)

    async def _reconnected(self) -> None:
        url = self.nc.connected_url.geturl() if self.nc.connected_url else "NATS"
        print(f"srpc: reconnected to {url} for {self.subject}", flush=True)

    # -- taking calls ------------------------------------------------------------------------

    async def _on_message(self, msg: Any) -> None:
        if len(msg.data) > self._max_bytes:
            await self.reply(
                msg,
                protocol.control_error(
                    f"a {len(msg.data)}-byte message exceeds max_message_bytes ({self._max_bytes})",
                    protocol.Code.TOO_LARGE,
                ),
            )
            return
        if self._control_first and protocol.is_control(msg.data):
            self._idle.clear()
            self._spawn(self._run_control(msg))
            return
        if self._busy() and await self._forward(msg):
            return
        self._waiting.append(msg)
        self._idle.clear()
        self._dispatched.clear()
        self._dispatch()

    def _busy(self) -> bool:
        """Every slot is taken: a call arriving now would wait here."""
        return (
            self._flow_control
            and self.started
            and not self.stopping
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
            await self.nc.publish(
                self.subject, msg.data, reply=msg.reply, headers={HOPS_HEADER: str(hops + 1)}
            )
        except Exception as exc:  # too large with the header, or the connection is down
            log.debug("srpc: forwarding a call on %s failed: %r", self.subject, exc)
            return False
        self.forwarded += 1
        return True

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Future[Any]) -> None:
        # Idle is judged here, once the task is out of the set: judged in the tasks' own
        # `finally`, two that ended together each saw the other still there, and idle was
        # never set (stopping then waited `timeout` for nothing).
        self._tasks.discard(task)
        self._check_idle()

    def _dispatch(self) -> None:
        while self.started and self._free > 0 and self._waiting:
            self._free -= 1
            self._spawn(self._run_in_slot(self._waiting.popleft()))
        if not self._waiting:
            self._dispatched.set()

    async def _run_in_slot(self, msg: Any) -> None:
        try:
            await self._run(msg)
        except Exception as exc:  # a bug: it costs this call, not the server
            log.warning("srpc: serving a call on %s failed: %r", self.subject, exc)
        finally:
            self._free += 1
            self._dispatch()

    async def _run_control(self, msg: Any) -> None:
        try:
            await self._run(msg)
        except Exception as exc:
            log.warning("srpc: answering a control message on %s failed: %r", self.subject, exc)

    def _check_idle(self) -> None:
        if not self._tasks and not self._waiting:
            self._idle.set()

    async def reply(self, msg: Any, reply: bytes) -> None:
        """Answer `msg` on its reply subject (nobody to answer without one). Never raises."""
        if not msg.reply:
            return
        if len(reply) > self._max_bytes:  # (the core's limit may be above what NATS carries)
            reply = protocol.control_error(
                f"the response is {len(reply)} bytes, more than this server's NATS "
                f"connection carries ({self._max_bytes}: max_message_bytes, max_payload)",
                protocol.Code.TOO_LARGE,
            )
        try:
            await self.nc.publish(msg.reply, reply)
        except Exception as exc:  # the connection is gone: the caller times out
            log.debug("srpc: replying on %s failed: %r", self.subject, exc)

    # -- stopping ----------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Calls received and not yet answered (running or waiting for a slot)."""
        return self._slots - self._free + len(self._waiting)

    async def stop_taking(self) -> None:
        """Leave the queue group (calls already on their way here are still taken)."""
        self.stopping = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._unsubscribe(), self._timeout + STRAGGLER_GRACE)

    async def _unsubscribe(self) -> None:
        """Leave the queue group without dropping a call already on its way here.

        After an UNSUB and the round trip that confirms it, the NATS server may still deliver
        a message it matched to this subscription just before (measured: about 1 in 400
        unsubscribes under load). nats-py's `Subscription.drain` forgets the subscription at
        that point and drops such a message, and the caller would time out; so the
        subscription is kept, and what arrives is served, for `STRAGGLER_GRACE` seconds
        more. (With a nats-py that lacks the method used, `drain` is the fallback.)
        """
        sub, self._sub = self._sub, None
        if sub is None:
            return
        send_unsubscribe = getattr(self.nc, "_send_unsubscribe", None)
        if send_unsubscribe is None:
            await sub.drain()
            return
        await send_unsubscribe(sub._id)
        await self.nc.flush(max(1, int(self._timeout)))
        await asyncio.sleep(STRAGGLER_GRACE)
        await sub.unsubscribe()

    def announce_stop(self) -> None:
        print(
            f"srpc: {self.address} takes no more calls; finishing {self.in_flight} in flight",
            flush=True,
        )

    async def wait_dispatched(self, timeout: float | None) -> bool:
        """Wait until no call waits for a slot (each has started running); False when
        `timeout` (None: no limit) passed first."""
        try:
            await asyncio.wait_for(self._dispatched.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def wait_idle(self, timeout: float | None) -> bool:
        """Wait until every call taken has answered; False when `timeout` (None: no limit)
        passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close the NATS connection (replies not yet published are lost). Idempotent."""
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), CLOSE_TIMEOUT)


__all__ = ["HOPS_HEADER", "MAX_FORWARDS", "STRAGGLER_GRACE", "Intake"]
