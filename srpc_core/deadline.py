"""A call's deadline: one budget for connecting, sending and waiting, not one per step."""

from __future__ import annotations

from time import monotonic

from srpc_core.errors import CallTimeoutError


class Deadline:
    """The moment a call gives up, `timeout` seconds after it started.

    Every step of a call asks `remaining()` for its own timeout, so a server that accepts slowly,
    answers the hello slowly and then trickles its reply still cannot hold the caller past
    `timeout` in total.
    """

    __slots__ = ("expires", "procedure", "timeout", "where")

    def __init__(self, timeout: float, procedure: str = "", where: str = "") -> None:
        self.timeout = timeout
        self.procedure = procedure  # for the error message, formatted only when it is raised
        self.where = where
        self.expires = monotonic() + timeout

    @classmethod
    def until(
        cls, expires: float, timeout: float, procedure: str = "", where: str = ""
    ) -> Deadline:
        """The deadline of a call that started at ``expires - timeout`` (a `monotonic` time)."""
        deadline = cls.__new__(cls)
        deadline.timeout = timeout
        deadline.procedure = procedure
        deadline.where = where
        deadline.expires = expires
        return deadline

    def remaining(self) -> float:
        """Seconds left; raises `CallTimeoutError` when none are."""
        left = self.expires - monotonic()
        if left <= 0:
            what = f"the call to {self.procedure}()" if self.procedure else "the call"
            where = f" at {self.where}" if self.where else ""
            raise CallTimeoutError(f"{what}{where} did not finish within {self.timeout} s")
        return left

    def left(self) -> float:
        """Seconds left, 0.0 when none are (never raises)."""
        return max(0.0, self.expires - monotonic())


__all__ = ["Deadline"]
