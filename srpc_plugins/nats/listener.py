"""The threaded server side: `NatsListener`, an `Intake` on the background loop, calls in threads.

Calls run in a pool of `max_concurrent` threads; the NATS side (the subscription, flow control,
replies: `_intake.Intake`, shared with the asyncio listener of `aio`) runs on the process's
background event loop, and `serve_forever` blocks its caller until shutdown is over.

Shutdown: the subscription leaves the queue group (NATS then sends this server nothing more),
the calls received so far run and answer, then the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from srpc_core.transport import Handler, Listener, answer
from srpc_plugins.nats._intake import HOPS_HEADER, MAX_FORWARDS, STRAGGLER_GRACE, Intake
from srpc_plugins.nats._loop import LoopTimeout, background_loop

if TYPE_CHECKING:
    from srpc_plugins.nats import NatsTransport

log = logging.getLogger("srpc.nats")
#: Extra seconds `serve_forever` waits for the loop beyond the drain timeout.
_MARGIN = 5.0


class NatsListener(Listener):
    """Serves `handler` for the requests on `subject`, in the queue group ``srpc``."""

    def __init__(self, transport: NatsTransport, subject: str, handler: Handler) -> None:
        settings = transport.settings
        self.subject = subject
        self.port = 0
        self._transport = transport
        self._handler = handler
        self._max_bytes = settings.max_message_bytes
        self._drain_timeout = settings.timeout
        self._loop = background_loop()
        self._pool = ThreadPoolExecutor(
            transport.options.max_concurrent, thread_name_prefix="srpc-nats-call"
        )
        self._intake: Intake | None = None  # made on the loop
        self._stopped: asyncio.Future[None] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        try:
            self._loop.run(self._bind(), settings.timeout + _MARGIN)
        except LoopTimeout:
            self._close_pipe()
            raise OSError(f"could not subscribe to {subject} within {settings.timeout} s") from None
        except BaseException:
            self._close_pipe()
            self._pool.shutdown(wait=False)
            raise
        assert self._intake is not None
        self.address = self._intake.address

    @property
    def forwarded(self) -> int:
        """Calls handed back to NATS because every slot was taken (flow control)."""
        return self._intake.forwarded if self._intake is not None else 0

    # -- on the loop -----------------------------------------------------------------------

    async def _bind(self) -> None:
        self._intake = Intake(self._transport, self.subject, self._run)
        await self._intake.connect()

    async def _run(self, msg: Any) -> None:
        assert self._intake is not None
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(
            self._pool, answer, self._handler, msg.data, self._max_bytes
        )
        await self._intake.reply(msg, reply)

    def _start(self) -> None:
        assert self._intake is not None
        self._intake.start()

    def _begin_stop(self) -> None:
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())

    async def _stop(self) -> None:
        """Unsubscribe, let the calls received run and answer, close."""
        intake = self._intake
        assert intake is not None
        try:
            await intake.stop_taking()
            if intake.started:
                intake.announce_stop()
                await intake.wait_idle(self._drain_timeout)
        finally:
            await intake.close()

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


__all__ = ["HOPS_HEADER", "MAX_FORWARDS", "STRAGGLER_GRACE", "NatsListener"]
