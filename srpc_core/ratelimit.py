"""Rate-limited logging: one line per kind of event per period, however often it happens.

A hostile or broken peer can make a server fail the same way thousands of times a second
(oversized frames, garbage, a full file-descriptor table). Logging each one costs more than the
failure itself and buries everything else in the log. `LogLimiter` lets the first occurrence
of each *key* (a peer's address, a kind of failure, or both) through, then stays quiet for
`period` seconds and says, with the next line it lets through, how many it held back::

    from srpc_core.ratelimit import LogLimiter

    _limited = LogLimiter(period=10.0)

    def refuse(peer_ip: str, reason: str) -> None:
        _limited.warning(log, ("refused", peer_ip), "srpc: refused %s: %s", peer_ip, reason)

It remembers at most `max_keys` keys (the least recently used go first), so peers that keep
changing their address cannot grow it without bound. Thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

__all__ = ["LogLimiter", "RateLimiter"]


class RateLimiter:
    """Decides, per key, whether an event may be acted upon: once per `period` seconds.

    Args:
        period: seconds after an allowed event during which the same key is refused.
        max_keys: how many keys are remembered (least recently used forgotten first).
        clock: the time source (monotonic seconds); tests may pass their own.
    """

    def __init__(
        self,
        period: float = 10.0,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.period = period
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        #: key -> (when it was last allowed, how many were refused since)
        self._keys: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def allow(self, key: Hashable = None) -> int | None:
        """None if the event must be held back; otherwise how many events of `key` were held
        back since the last one allowed (0 the first time)."""
        now = self._clock()
        with self._lock:
            entry = self._keys.get(key)
            if entry is not None and now - entry[0] < self.period:
                self._keys[key] = (entry[0], entry[1] + 1)
                self._keys.move_to_end(key)
                return None
            self._keys[key] = (now, 0)
            self._keys.move_to_end(key)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
            return 0 if entry is None else entry[1]


class LogLimiter(RateLimiter):
    """A `RateLimiter` that writes log records: at most one per key per `period`."""

    def log(
        self, logger: logging.Logger, level: int, key: Hashable, message: str, *args: object
    ) -> bool:
        """Log `message % args` at `level` unless `key` was logged within the period; return
        whether it was logged. The line says how many were held back before it."""
        if not logger.isEnabledFor(level):
            return False
        held = self.allow(key)
        if held is None:
            return False
        if held:
            message += f" ({held} more like this since the last such line, not logged)"
        logger.log(level, message, *args)
        return True

    def warning(self, logger: logging.Logger, key: Hashable, message: str, *args: object) -> bool:
        """`log` at WARNING."""
        return self.log(logger, logging.WARNING, key, message, *args)

    def info(self, logger: logging.Logger, key: Hashable, message: str, *args: object) -> bool:
        """`log` at INFO."""
        return self.log(logger, logging.INFO, key, message, *args)
