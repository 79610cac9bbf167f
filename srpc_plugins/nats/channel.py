"""The client side: a `Channel` is a NATS request on the service's subject per message.

Channels of one process share one NATS connection (per set of connection settings), driven by
the process's background event loop; a channel holds no socket of its own, so opening one
costs only the hello.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from srpc_core import protocol
from srpc_core.errors import (
    CallTimeoutError,
    FrameTooLargeError,
    ServerUnavailableError,
    SessionError,
    TransportError,
)
from srpc_core.transport import Channel
from srpc_plugins.nats._connect import (
    SharedConnection,
    acquire_shared,
    message_limit,
    release_shared,
)
from srpc_plugins.nats._loop import BackgroundLoop, LoopTimeout, background_loop

if TYPE_CHECKING:
    from srpc_plugins.nats import NatsTransport


class NatsChannel(Channel):
    """Requests to one subject over this process's shared NATS connection."""

    def __init__(
        self,
        loop: BackgroundLoop,
        shared: SharedConnection,
        nc: Any,
        subject: str,
        address: str,
        max_bytes: int,
    ) -> None:
        self._loop = loop
        self._shared = shared
        self._nc = nc
        self._subject = subject
        self.address = address
        self._max_bytes = max_bytes
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def open(cls, transport: NatsTransport, subject: str, timeout: float) -> NatsChannel:
        """A channel to `subject`, connecting this process to NATS first if need be."""
        options = transport.options
        loop = background_loop()
        connect_timeout = max(timeout, 0.001)
        try:
            shared, nc = loop.run(acquire_shared(options, connect_timeout), connect_timeout)
        except LoopTimeout:
            raise ServerUnavailableError(
                f"no connection to NATS at {', '.join(options.servers)} within {timeout} s"
            ) from None
        address = f"{transport.url('', 0).rstrip('/')}"
        if not options.subject:
            address = f"{address}/{subject}"
        channel = cls(loop, shared, nc, subject, address, transport.settings.max_message_bytes)
        try:
            channel._max_bytes = message_limit(nc, transport.settings, options)
        except BaseException:
            channel.close()
            raise
        return channel

    def request(self, message: bytes, timeout: float) -> bytes:
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        if self._closed:
            raise TransportError(f"the channel to {self.address} is closed")
        if len(message) > self._max_bytes:  # (NATS would refuse it: nothing is sent)
            raise FrameTooLargeError(
                f"the request is {len(message)} bytes, more than {self.address} carries "
                f"({self._max_bytes}: max_message_bytes, and the NATS server's max_payload)"
            )
        future = self._loop.submit(self._nc.request(self._subject, message, timeout=timeout))
        try:
            # nats-py times the request out itself; the margin covers the hop to its loop.
            reply = future.result(timeout + 1.0)
        except (NatsTimeout, TimeoutError):
            future.cancel()
            raise CallTimeoutError(f"no reply from {self.address} within {timeout} s") from None
        except NoRespondersError:
            text = (
                f"no srpc server is subscribed to {self.address} (NATS: no responders); the "
                "request reached no server"
            )
            if protocol.is_control(message):  # the hello: nothing to retry
                raise ServerUnavailableError(text) from None
            # A call: NATS proves no server received it. SessionError tells the client that
            # nothing ran and a fresh hello may go to whichever server is there now, which
            # raises ServerUnavailableError at once if none is.
            raise SessionError(text) from None
        except FrameTooLargeError:
            raise
        except Exception as exc:  # the connection is closed, draining, or the publish failed
            raise TransportError(f"NATS request to {self.address} failed: {exc!r}") from None
        data: bytes = reply.data
        if len(data) > self._max_bytes:
            raise FrameTooLargeError(
                f"the reply from {self.address} is {len(data)} bytes, more than "
                f"max_message_bytes ({self._max_bytes})"
            )
        return data

    def usable(self) -> bool:
        return not self._closed and not self._nc.is_closed

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._loop.call_soon(release_shared, self._shared)


__all__ = ["NatsChannel"]
