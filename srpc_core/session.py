"""Server-side sessions: the state of a client that completed the hello.

A successful hello opens a `Session` and the reply hands the client its *token*; every request
carries the token, and the dispatcher runs nothing for a request whose token it cannot verify.
The token is ``<id>.<mac>``, the mac an HMAC of the id under the service's session key, so it is
checked without shared state: any server process of the service with the same settings (a NATS
queue group, workers behind one port, a restarted server) accepts it. That is what makes the
rule "nothing is dispatched before a successful hello" hold on every transport, stateless ones
included, without transports knowing about it: v0.1 transports that only pass messages to a
handler get it for free.

Without authentication the session key is derived from public settings (service, codec,
protocol version): the token proves that this client completed a hello for this service, not
who it is. With a shared secret (`srpc_core.auth`), the key derives from the secret, each
session also has call keys that seal its requests and responses (computed from the secret and
the session id, never sent), and `Session.fresh` refuses a call id the session already used:
a request replayed to the same server runs nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from srpc_core.protocol import PROTOCOL_VERSION

#: Verified tokens kept so that the hot path is one dict lookup, not an HMAC.
DEFAULT_CACHE_SIZE = 4096
_MAC_CHARS = 32  # 128 bits of HMAC-SHA256, hex
#: How many call ids back a session remembers (`Session.fresh`): ids older than the newest
#: minus this are refused, so calls may arrive out of order by up to this many.
REPLAY_WINDOW = 4096
_WINDOW_MASK = (1 << REPLAY_WINDOW) - 1


def default_session_key(service: str, codec: str) -> bytes:
    """The session key of a server without a shared secret (derived from its settings)."""
    text = f"srpc-session|{PROTOCOL_VERSION}|{service}|{codec}"
    return hashlib.sha256(text.encode()).digest()


@dataclass
class Session:
    """One client's hello, as the server remembers it.

    Attributes:
        token: what the client's requests carry.
        opened: `time.monotonic()` when this process first saw the token.
        keys: with a shared secret, the session's call keys (`srpc_core.auth.CallKeys`).
    """

    token: str
    opened: float = field(default_factory=time.monotonic)
    keys: Any = None
    _highest: int = field(default=-(2**63), repr=False)
    _seen: int = field(default=0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fresh(self, call_id: int) -> bool:
        """True the first time this process sees `call_id` in this session; False for an id
        seen before, or older than the newest seen minus `REPLAY_WINDOW` (a replay)."""
        with self._lock:
            offset = self._highest - call_id
            if offset < 0:
                shift = -offset
                seen = (self._seen << shift) & _WINDOW_MASK if shift < REPLAY_WINDOW else 0
                self._seen, self._highest = seen | 1, call_id
                return True
            if offset >= REPLAY_WINDOW or self._seen >> offset & 1:
                return False
            self._seen |= 1 << offset
            return True


class SessionKeeper:
    """Opens sessions for accepted hellos and recognises their tokens. Thread-safe.

    Args:
        key: the HMAC key tokens are made with (see `default_session_key`).
        cache_size: how many verified sessions to remember (oldest forgotten first; a forgotten
            token is verified again, never refused).
        derive: with a shared secret, computes a session's `Session.keys` from its token.
    """

    def __init__(
        self,
        key: bytes,
        cache_size: int = DEFAULT_CACHE_SIZE,
        derive: Callable[[str], Any] | None = None,
    ) -> None:
        self._key = key
        self._derive = derive
        self._cache_size = cache_size
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self) -> Session:
        """Start a session for a client whose hello was accepted."""
        session_id = secrets.token_urlsafe(12)
        return self._remember(f"{session_id}.{self._mac(session_id)}")

    def find(self, token: str) -> Session | None:
        """The session `token` belongs to, or None if this service never issued it."""
        session = self._sessions.get(token)
        if session is not None:
            return session
        session_id, _, mac = token.partition(".")
        if (
            len(mac) != _MAC_CHARS
            or not mac.isascii()
            or not hmac.compare_digest(mac, self._mac(session_id))
        ):
            return None
        return self._remember(token)

    def __len__(self) -> int:
        return len(self._sessions)

    def _mac(self, session_id: str) -> str:
        digest = hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()
        return digest[:_MAC_CHARS]

    def _remember(self, token: str) -> Session:
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                if len(self._sessions) >= self._cache_size:
                    del self._sessions[next(iter(self._sessions))]  # the oldest
                keys = self._derive(token) if self._derive is not None else None
                session = self._sessions[token] = Session(token, keys=keys)
            return session


__all__ = ["DEFAULT_CACHE_SIZE", "REPLAY_WINDOW", "Session", "SessionKeeper", "default_session_key"]
