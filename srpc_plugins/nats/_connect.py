"""Connecting to NATS: one attempt at each server that fails fast, then reconnect forever.

nats-py retries a failing initial connection for as long as it is allowed to reconnect later.
srpc wants the opposite at start-up (a client or a server whose NATS is down or refuses its
credentials says so at once) and the nats-py behaviour afterwards (a NATS restart is survived):
`open_connection` gives up once every server has failed once, and lets nats-py reconnect
forever once connected.

Clients of one process share one connection per set of connection settings (servers,
credentials, TLS): `acquire_shared` / `release_shared`, counted by the channels using it. A
connection nobody uses is closed after `LINGER` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from srpc_core.errors import ConfigError, ServerUnavailableError
from srpc_plugins.nats._loop import background_loop

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient

    from srpc_core.transport import TransportSettings
    from srpc_plugins.nats import NatsOptions

log = logging.getLogger("srpc.nats")
#: Seconds between reconnect attempts after a NATS server went away (nats-py adds jitter).
RECONNECT_WAIT = 0.5
#: The longest one connection attempt (TCP, INFO, CONNECT) may take.
MAX_CONNECT_ATTEMPT = 5.0
#: Seconds an unused shared client connection stays open (a client reopening a channel at
#: once, after a timeout say, then finds it still there).
LINGER = 10.0
_POOL = "shared_connections"
#: Connections being closed (a task nobody holds could be collected before it runs).
_closing: set[asyncio.Task[None]] = set()

Callback = Callable[[], Awaitable[None]]


def servers_text(options: NatsOptions) -> str:
    return ", ".join(options.servers)


async def open_connection(
    options: NatsOptions,
    label: str,
    timeout: float,
    *,
    on_disconnect: Callback | None = None,
    on_reconnect: Callback | None = None,
) -> NatsClient:
    """Connect to one of `options.servers` within `timeout` seconds.

    Raises `ServerUnavailableError` once every server has failed once (refused, unreachable,
    or refusing the credentials), naming the servers and the last failure.
    """
    from nats.aio.client import Client as NatsClient
    from nats.errors import AuthorizationError

    nc = NatsClient()
    failures: list[BaseException] = []
    gave_up: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    connected = False

    async def error_cb(exc: Exception) -> None:
        if connected:
            log.debug("srpc: NATS connection %s: %s", label, exc)
            return
        failures.append(exc)
        if len(failures) >= len(options.servers) and not gave_up.done():
            gave_up.set_result(None)

    async def nothing() -> None:
        return None

    connecting = asyncio.ensure_future(
        nc.connect(
            servers=list(options.servers),
            name=f"{label} (pid {os.getpid()})",
            error_cb=error_cb,
            disconnected_cb=on_disconnect or nothing,
            reconnected_cb=on_reconnect or nothing,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
            connect_timeout=min(timeout, MAX_CONNECT_ATTEMPT),  # type: ignore[arg-type]
            **options.connect_arguments(),
        )
    )
    try:
        done, _ = await asyncio.wait(
            {connecting, gave_up}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
    except BaseException:  # cancelled: do not leave a connection behind
        connecting.cancel()
        await _close_quietly(nc)
        raise
    if connecting in done and connecting.exception() is None:
        connected = True
        return nc
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    info = getattr(nc, "_server_info", None)  # the NATS server's INFO, if it came
    auth_required = isinstance(info, dict) and bool(info.get("auth_required"))
    await _close_quietly(nc)
    last = failures[-1] if failures else None
    where = f"NATS at {servers_text(options)}"
    sends_credentials = bool(
        options.creds_file or options.nkey_seed_file or options.token or options.user
    )
    if isinstance(last, AuthorizationError) or "authorization" in str(last).lower():
        raise ServerUnavailableError(
            f"{where} refused this side's credentials ({last}): check the credentials "
            "options of [srpc.nats] (creds_file, nkey_seed_file, token_env, user_env and "
            "password_env) against the NATS server's configuration"
        )
    if sends_credentials and isinstance(last, ConnectionResetError):
        # A nats-server refusing credentials answers "-ERR 'Authorization Violation'" and
        # closes; the client sometimes sees the reset before the error line.
        raise ServerUnavailableError(
            f"{where} reset the connection while this side was logging in ({_describe(last)}): "
            "it most likely refused this side's credentials: check the credentials options of "
            "[srpc.nats] (creds_file, nkey_seed_file, token_env, user_env and password_env) "
            "against the NATS server's configuration"
        )
    if auth_required and not sends_credentials and isinstance(last, ConnectionResetError):
        # The same race without credentials: the INFO said they are required.
        raise ServerUnavailableError(
            f"{where} requires credentials and this side sends none (it reset the connection "
            f"at login: {_describe(last)}): set one of creds_file, nkey_seed_file, token_env, "
            "or user_env and password_env in [srpc.nats]"
        )
    if last is not None:
        raise ServerUnavailableError(
            f"cannot reach {where}: {_describe(last)}; is nats-server running there?"
        )
    raise ServerUnavailableError(f"cannot reach {where}: no answer within {timeout} s")


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


async def _close_quietly(nc: NatsClient) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), MAX_CONNECT_ATTEMPT)


def message_limit(nc: NatsClient, settings: TransportSettings, options: NatsOptions) -> int:
    """The largest message this side sends or takes: ``[srpc] max_message_bytes``, checked
    against what the NATS server carries (its ``max_payload``).

    A value srpc.toml set above ``max_payload`` is refused with a `ConfigError` saying what to
    change; srpc's default (16 MiB, above nats-server's own default of 1 MB) is lowered to
    ``max_payload`` instead, so that a default setup works.
    """
    max_payload = int(nc.max_payload)
    if settings.max_message_bytes <= max_payload:
        return settings.max_message_bytes
    if not settings.max_message_bytes_given:
        return max_payload
    check_max_payload(nc, settings.max_message_bytes, options)
    return settings.max_message_bytes


def check_max_payload(nc: NatsClient, max_message_bytes: int, options: NatsOptions) -> None:
    """Refuse a `max_message_bytes` the NATS server would not carry (its ``max_payload``)."""
    max_payload = nc.max_payload
    if max_message_bytes > max_payload:
        url = nc.connected_url.geturl() if nc.connected_url else servers_text(options)
        raise ConfigError(
            f"[srpc] max_message_bytes = {max_message_bytes} is larger than max_payload = "
            f"{max_payload}, the largest message the NATS server at {url} accepts: set "
            f"[srpc] max_message_bytes = {max_payload} (or less) in srpc.toml on both sides, "
            f"or raise max_payload in the NATS server's configuration (max_payload: "
            f"{max_message_bytes}; NATS allows up to 64 MB)"
        )


class SharedConnection:
    """A client connection, counted by the channels using it."""

    def __init__(self, key: tuple[Any, ...], connecting: asyncio.Future[NatsClient]) -> None:
        self.key = key
        self.connecting = connecting
        self.users = 0
        self.closer: asyncio.TimerHandle | None = None

    def broken(self) -> bool:
        if not self.connecting.done():
            return False
        if self.connecting.cancelled() or self.connecting.exception() is not None:
            return True
        return self.connecting.result().is_closed


async def acquire_shared(options: NatsOptions, timeout: float) -> tuple[SharedConnection, Any]:
    """This process's client connection for `options` (opened if need be) and its client."""
    pool: dict[tuple[Any, ...], SharedConnection] = background_loop().state.setdefault(_POOL, {})
    key = options.connection_key
    shared = pool.get(key)
    if shared is None or shared.broken():
        connecting = asyncio.ensure_future(open_connection(options, "srpc client", timeout))
        shared = pool[key] = SharedConnection(key, connecting)
    shared.users += 1
    if shared.closer is not None:
        shared.closer.cancel()
        shared.closer = None
    try:
        nc = await asyncio.shield(shared.connecting)
    except BaseException:
        release_shared(shared)
        if shared.connecting.done() and pool.get(key) is shared and shared.broken():
            del pool[key]
        raise
    return shared, nc


def release_shared(shared: SharedConnection) -> None:
    """One channel less; close the connection `LINGER` seconds after the last one. On the loop."""
    shared.users -= 1
    if shared.users > 0:
        return
    loop = asyncio.get_running_loop()
    if shared.closer is not None:
        shared.closer.cancel()
    shared.closer = loop.call_later(LINGER, _close_unused, shared)


def _close_unused(shared: SharedConnection) -> None:
    if shared.users > 0:
        return
    pool = background_loop().state.get(_POOL, {})
    if pool.get(shared.key) is shared:
        del pool[shared.key]
    if shared.connecting.done() and not shared.broken():
        task = asyncio.ensure_future(_close_quietly(shared.connecting.result()))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


__all__ = [
    "LINGER",
    "RECONNECT_WAIT",
    "SharedConnection",
    "acquire_shared",
    "check_max_payload",
    "message_limit",
    "open_connection",
    "release_shared",
]
