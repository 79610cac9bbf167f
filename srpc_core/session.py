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
who it is. With a shared secret, the authentication layer supplies a key derived from the
secret, and only a peer that proved knowledge of it in the hello ever receives a token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from srpc_core.protocol import PROTOCOL_VERSION

#: Verified tokens kept so that the hot path is one dict lookup, not an HMAC.
DEFAULT_CACHE_SIZE = 4096
_MAC_CHARS = 32  # 128 bits of HMAC-SHA256, hex


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
    """

    token: str
    opened: float = field(default_factory=time.monotonic)


class SessionKeeper:
    """Opens sessions for accepted hellos and recognises their tokens. Thread-safe.

    Args:
        key: the HMAC key tokens are made with (see `default_session_key`).
        cache_size: how many verified sessions to remember (oldest forgotten first; a forgotten
            token is verified again, never refused).
    """

    def __init__(self, key: bytes, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        self._key = key
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
                session = self._sessions[token] = Session(token)
            return session


__all__ = ["DEFAULT_CACHE_SIZE", "Session", "SessionKeeper", "default_session_key"]
