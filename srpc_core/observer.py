"""Call observers: objects that see every call a server serves (the metrics log is one).

Plugins hand observers to a starting server through the `srpc_register_call_observers` hook,
and client observers to each new client through `srpc_register_client_observers`. The
dispatcher and the clients then call the observer objects directly, so no pluggy hook runs per
call; a client with no client observer pays one attribute test per call.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from srpc_core.config import Config

log = logging.getLogger("srpc")
_NO_METADATA: Mapping[str, Any] = {}
#: The metadata of the request being served (set by the dispatcher when an observer asks).
_request_metadata: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "srpc_request_metadata", default=_NO_METADATA
)


#: Who sent the request being served, as its transport names it (set per connection).
_request_peer: contextvars.ContextVar[str] = contextvars.ContextVar("srpc_request_peer", default="")


def serving_peer(peer: str) -> None:
    """Name the peer whose requests this thread or task serves from now on (transports call
    it once per connection, before they hand it requests): ``host:port`` for a stream
    socket, for instance. Observers read it with `request_peer`."""
    _request_peer.set(peer)


def request_peer() -> str:
    """The peer of the request being served, as its transport named it with `serving_peer`,
    or "" where the transport does not say (NATS, whose requests carry no sender). It comes
    from the network: log it as data."""
    return _request_peer.get()


def request_metadata() -> Mapping[str, Any]:
    """The metadata map of the request being served (``traceparent``, ``tracestate``, the
    caller's own entries), for a `CallObserver` whose `reads_metadata` is true, from its
    `call_started`. Empty when the request carried none. Its values come from the network:
    check their types."""
    return _request_metadata.get()


@dataclass(frozen=True)
class ServerInfo:
    """What an observer learns about the server it watches.

    Attributes:
        service: the interface's dotted name, e.g. ``calc.calc_interface.CalcInterface``.
        address: the URL clients reach, e.g. ``tcp://127.0.0.1:5000``.
        transport: the transport name. codec: the codec name.
        procedures: the names of the procedures the server serves.
        pid: the server's process id.
        config: the server's full configuration (plugins read their own tables from it).
    """

    service: str
    address: str
    transport: str
    codec: str
    procedures: tuple[str, ...]
    pid: int
    config: Config


class CallObserver:
    """Base class for call observers. Override what you need.

    Methods run in the thread serving the call, so they must be quick and thread-safe:
    record, do not do I/O (batch it off the hot path as the metrics log does).
    `call_started` is only called when a subclass overrides it. `call_started` and
    `call_finished` of one call run in the same thread (or asyncio task), so an observer may
    keep a call's state in a `contextvars.ContextVar`, and what it makes current there (a
    trace span) is current while the implementation runs.
    """

    #: True: the dispatcher makes each request's metadata available to `call_started` through
    #: `request_metadata` (a little work per call, so only for observers that ask).
    reads_metadata: ClassVar[bool] = False

    def call_started(self, procedure: str) -> None:
        """A call to `procedure` is about to run."""

    def call_finished(self, procedure: str, seconds: float, error: BaseException | None) -> None:
        """A call to `procedure` took `seconds`; `error` is what it raised, or None.

        `procedure` may also be a name the interface does not declare (a client asked for an
        unknown procedure); `error` is then an `UnknownProcedureError`.
        """

    def close(self) -> None:
        """The server has stopped: flush and release resources."""


@dataclass(frozen=True)
class ClientInfo:
    """What a client observer learns about the client it watches.

    Attributes:
        service: the interface's name, e.g. ``CalcInterface``.
        address: the server's URL, e.g. ``tcp://127.0.0.1:5000``.
        transport, codec: the client's settings.
        config: the client's full configuration (plugins read their own tables from it).
    """

    service: str
    address: str
    transport: str
    codec: str
    config: Config


class ClientObserver:
    """Base class for client observers: objects that see every call a client makes.

    Plugins register them with the `srpc_register_client_observers` hook, once per client.
    Both methods run in the calling thread (or task), around the whole call (its retries
    included), so they must be quick and must not raise.
    """

    def call_started(self, procedure: str, metadata: dict[str, Any]) -> object:
        """A call of `procedure` is about to be sent. Add string entries to `metadata` to send
        them with the request (trace context: ``traceparent``, ``tracestate``). The value
        returned is handed back to `call_finished`."""
        return None

    def call_finished(
        self, procedure: str, state: object, seconds: float, error: BaseException | None
    ) -> None:
        """The call ended after `seconds`, with `error` raised to the caller or None;
        `state` is what `call_started` returned."""


class ObservedMetadata(dict[str, Any]):
    """The metadata of a call its client observers have seen (so it is not seen twice)."""


def _observers_started(
    observers: list[ClientObserver], procedure: str, metadata: Mapping[str, Any] | None
) -> tuple[ObservedMetadata, list[object]]:
    carried = ObservedMetadata(metadata or {})
    states: list[object] = []
    for observer in observers:
        try:
            states.append(observer.call_started(procedure, carried))
        except Exception:  # a broken observer must not break calls
            log.exception("srpc client observer %r failed", observer)
            states.append(None)
    return carried, states


def _observers_finished(
    observers: list[ClientObserver],
    procedure: str,
    states: list[object],
    seconds: float,
    error: BaseException | None,
) -> None:
    for observer, state in zip(observers, states, strict=True):
        try:
            observer.call_finished(procedure, state, seconds, error)
        except Exception:
            log.exception("srpc client observer %r failed", observer)


def observe_call(
    call: Callable[..., Any],
    observers: list[ClientObserver],
    procedure: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> Any:
    """Run ``call(procedure, args, kwargs, metadata=...)`` with `observers` around it (what
    `srpc_core.Client.call` does when plugins registered client observers)."""
    carried, states = _observers_started(observers, procedure, metadata)
    error: BaseException | None = None
    started = perf_counter()
    try:
        return call(procedure, args, kwargs, metadata=carried)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _observers_finished(observers, procedure, states, perf_counter() - started, error)


async def observe_call_async(
    call: Callable[..., Awaitable[Any]],
    observers: list[ClientObserver],
    procedure: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> Any:
    """`observe_call` for `srpc_core.AsyncClient.call`."""
    carried, states = _observers_started(observers, procedure, metadata)
    error: BaseException | None = None
    started = perf_counter()
    try:
        return await call(procedure, args, kwargs, metadata=carried)
    except BaseException as exc:
        error = exc
        raise
    finally:
        _observers_finished(observers, procedure, states, perf_counter() - started, error)


__all__ = [
    "CallObserver",
    "ClientInfo",
    "ClientObserver",
    "ObservedMetadata",
    "ServerInfo",
    "observe_call",
    "observe_call_async",
    "request_metadata",
    "request_peer",
    "serving_peer",
]
