"""The server's log of calls: a line per failed call, and an access log on request.

Two call observers, through the standard `logging` module only (docs/observability.md):

* `FailureLog` (always): one WARNING line per failed call on the logger ``srpc.calls``, with the
  service, the procedure, the exception's type, the peer (`srpc_core.observer.request_peer`:
  ``host:port`` over tcp, ``-`` where the transport does not say) and the duration. At most
  one line per procedure and exception type per `FAILURE_PERIOD` seconds: the next line says
  how many were held back, and the server's stop
  writes a summary of those still held. The exception's message is not logged (it may carry
  the caller's data); the caller has it.
* `AccessLog` (when the logger ``srpc.access`` is enabled for INFO as the server starts): one
  INFO line per call, ok or failed, never rate-limited.

Both lines carry the values as `extra` attributes too (``srpc_service``, ``srpc_procedure``,
``srpc_outcome``, ``srpc_duration``, ``srpc_peer``) for structured formatters.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from srpc_core.hookspecs import RegisterObserver, hookimpl
from srpc_core.metrics import UNKNOWN_PROCEDURE
from srpc_core.observer import CallObserver, ServerInfo, request_peer
from srpc_core.ratelimit import RateLimiter

CALLS_LOGGER = "srpc.calls"
ACCESS_LOGGER = "srpc.access"
#: Seconds between two lines about the same procedure and exception type.
FAILURE_PERIOD = 10.0
_calls_log = logging.getLogger(CALLS_LOGGER)
_access_log = logging.getLogger(ACCESS_LOGGER)


@hookimpl
def srpc_register_call_observers(register: RegisterObserver, server: ServerInfo) -> None:
    """The failure log always; the access log when ``srpc.access`` logs INFO."""
    register(FailureLog(server))
    if _access_log.isEnabledFor(logging.INFO):
        register(AccessLog(server))


def _service_name(server: ServerInfo) -> str:
    return server.service.rpartition(".")[2]


def _shown(procedure: str, known: frozenset[str]) -> str:
    """A procedure's name for a log line: a name the client chose (an unknown procedure) is
    shown as a shortened repr, so it cannot forge lines or drive a terminal."""
    return procedure if procedure in known else f"{UNKNOWN_PROCEDURE}:{procedure[:60]!r}"


def _extra(
    service: str, procedure: str, outcome: str, seconds: float, peer: str | None
) -> dict[str, Any]:
    return {
        "srpc_service": service,
        "srpc_procedure": procedure,
        "srpc_outcome": outcome,
        "srpc_duration": seconds,
        "srpc_peer": peer,
    }


def _peer() -> str | None:
    """The caller as its transport named it (`request_peer`), made safe for a log line."""
    peer = request_peer()[:100]
    if not peer:
        return None
    return peer if peer.isprintable() and " " not in peer else repr(peer)


class FailureLog(CallObserver):
    """A WARNING line per failed call (logger ``srpc.calls``), rate-limited per procedure and
    exception type.

    Args:
        server: the server watched.
        period: seconds between two lines of the same procedure and type.
    """

    def __init__(self, server: ServerInfo, period: float = FAILURE_PERIOD) -> None:
        self.service = _service_name(server)
        self.procedures = frozenset(server.procedures)
        self._limiter = RateLimiter(period)
        self._lock = threading.Lock()
        #: (procedure, type) -> lines held back since the last one written.
        self._held: dict[tuple[str, str], int] = {}

    def call_finished(self, procedure: str, seconds: float, error: BaseException | None) -> None:
        """Log a failure (the successful path costs one comparison)."""
        if error is None or not _calls_log.isEnabledFor(logging.WARNING):
            return
        # A client chooses unknown names: one key for all of them keeps the limiter bounded.
        name = procedure if procedure in self.procedures else UNKNOWN_PROCEDURE
        kind = type(error).__name__
        key = (name, kind)
        held = self._limiter.allow(key)
        with self._lock:
            if held is None:
                self._held[key] = self._held.get(key, 0) + 1
                return
            self._held.pop(key, None)
        more = f" ({held} more like it held back in the last {self._limiter.period:g} s)"
        peer = _peer()
        _calls_log.warning(
            "srpc: call failed: service=%s procedure=%s error=%s duration_ms=%.3f peer=%s%s",
            self.service,
            _shown(procedure, self.procedures),
            kind,
            seconds * 1000,
            peer or "-",
            more if held else "",
            extra=_extra(self.service, name, kind, seconds, peer),
        )

    def close(self) -> None:
        """Say how many lines were held back and never written."""
        with self._lock:
            held, self._held = self._held, {}
        for (name, kind), count in sorted(held.items()):
            _calls_log.warning(
                "srpc: %d more failed calls not logged (rate limit): service=%s procedure=%s "
                "error=%s",
                count,
                self.service,
                name,
                kind,
                extra=_extra(self.service, name, kind, 0.0, None),
            )


class AccessLog(CallObserver):
    """An INFO line per call on the logger ``srpc.access``."""

    def __init__(self, server: ServerInfo) -> None:
        self.service = _service_name(server)
        self.procedures = frozenset(server.procedures)

    def call_finished(self, procedure: str, seconds: float, error: BaseException | None) -> None:
        """Log the call."""
        outcome = "ok" if error is None else type(error).__name__
        shown = _shown(procedure, self.procedures)
        peer = _peer()
        _access_log.info(
            "srpc: call service=%s procedure=%s outcome=%s duration_ms=%.3f peer=%s",
            self.service,
            shown,
            outcome,
            seconds * 1000,
            peer or "-",
            extra=_extra(self.service, shown, outcome, seconds, peer),
        )


__all__ = [
    "ACCESS_LOGGER",
    "CALLS_LOGGER",
    "FAILURE_PERIOD",
    "AccessLog",
    "FailureLog",
    "srpc_register_call_observers",
]
