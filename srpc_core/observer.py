"""Call observers: objects that see every call a server serves (the metrics log is one).

Plugins hand observers to a starting server through the `srpc_register_call_observers` hook.
The dispatcher then calls the observer objects directly, so no pluggy hook runs per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from srpc_core.config import Config


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
    `call_started` is only called when a subclass overrides it.
    """

    def call_started(self, procedure: str) -> None:
        """A call to `procedure` is about to run."""

    def call_finished(self, procedure: str, seconds: float, error: BaseException | None) -> None:
        """A call to `procedure` took `seconds`; `error` is what it raised, or None.

        `procedure` may also be a name the interface does not declare (a client asked for an
        unknown procedure); `error` is then an `UnknownProcedureError`.
        """

    def close(self) -> None:
        """The server has stopped: flush and release resources."""


__all__ = [
    "CallObserver",
    "ServerInfo",
]
