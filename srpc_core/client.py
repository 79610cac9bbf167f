"""The client: turns a procedure call into a request message and its response into a result.

One `Client` keeps a small pool of channels (connections): a thread takes an idle one or opens
a new one, so a client stub can be shared by many threads and each call still runs on a
connection of its own. Connections open lazily; each new one starts with the hello handshake.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from typing import Any

from srpc_core import protocol
from srpc_core.config import Config, load_config, resolve_host
from srpc_core.errors import (
    ErrorContext,
    FrameTooLargeError,
    ProtocolError,
    TransportError,
    UnknownProcedureError,
)
from srpc_core.interface import read_interface
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.protocol import STATUS_ERROR, STATUS_OK
from srpc_core.transport import Channel


class Client:
    """Calls the procedures of `interface` on a remote server.

    Args:
        interface: the service's ABC (the client never needs the implementation).
        host, port, timeout: override the srpc.toml settings when not None.
        config: a srpc.toml path or a `Config`; None follows the normal lookup.
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
        self.config = cfg = load_config(config, host=host, port=port, timeout=timeout)
        self.service = read_interface(interface)
        self._plugins = plugins or get_plugins()
        self._codec, self._transport = self._plugins.for_config(cfg)
        self._host = resolve_host(cfg.host)
        self.address = self._transport.url(self._host, cfg.port)
        self._idle: deque[Channel] = deque()
        self._ids = itertools.count(1)
        self._error_context = ErrorContext(interface)
        self._hello = protocol.hello(cfg.codec, cfg.transport, self.service.name)

    def call(
        self, procedure: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        """Call `procedure` remotely and return its result, or raise its exception.

        Arguments that do not fit the interface's signature raise `TypeError` before anything
        is sent.
        """
        kwargs = kwargs or {}
        spec = self.service.procedures.get(procedure)
        if spec is None:
            raise UnknownProcedureError(f"{self.service.name} declares no procedure {procedure!r}")
        spec.check_arguments(args, kwargs)
        call_id = next(self._ids)
        message = self._codec.encode([call_id, procedure, list(args), kwargs])
        if len(message) > self.config.max_message_bytes:
            raise FrameTooLargeError(
                f"the request to {procedure}() is {len(message)} bytes, more than "
                f"max_message_bytes ({self.config.max_message_bytes})"
            )
        return self._read_response(self._exchange(message), call_id)

    def close(self) -> None:
        """Close every connection. Calls made afterwards open new ones."""
        while self._idle:
            self._idle.pop().close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _exchange(self, message: bytes) -> bytes:
        try:
            channel, reused = self._idle.pop(), True
        except IndexError:
            channel, reused = self._open(), False
        try:
            reply = channel.request(message, self.config.timeout)
        except TransportError:
            channel.close()
            if not reused:
                raise
            # The server closed this idle connection (it restarted, or timed the connection
            # out) before reading the request: retry once on a fresh connection.
            channel = self._open()
            try:
                reply = channel.request(message, self.config.timeout)
            except BaseException:
                channel.close()
                raise
        except BaseException:
            channel.close()
            raise
        self._idle.append(channel)
        return reply

    def _open(self) -> Channel:
        channel = self._transport.connect(self._host, self.config.port, self.config.timeout)
        try:
            reply = channel.request(self._hello, self.config.timeout)
            protocol.check_hello_reply(reply, self.address)
        except BaseException:
            channel.close()
            raise
        return channel

    def _read_response(self, reply: bytes, call_id: int) -> Any:
        if protocol.is_control(reply):
            protocol.raise_control_error(reply, self.address)
        response = self._codec.decode(reply)
        if type(response) is not list or len(response) != 3 or response[0] != call_id:
            raise ProtocolError(
                f"the server at {self.address} sent a malformed response (expected "
                f"[{call_id}, status, value])"
            )
        status = response[1]
        if status == STATUS_OK:
            return response[2]
        if status == STATUS_ERROR and isinstance(response[2], dict):
            raise self._plugins.manager.hook.srpc_error_from_wire(
                error=response[2], context=self._error_context
            )
        raise ProtocolError(f"the server at {self.address} sent an unknown status {status!r}")
