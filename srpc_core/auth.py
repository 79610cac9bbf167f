"""Shared-secret authentication (``[srpc.auth]``): the proofs in the hello and the keys that
seal every call. No I/O beyond reading the secret; docs/security.md explains the reasoning and
docs/protocol.md the fields.

Keys (every one an HMAC-SHA256 under the secret, so a secret shared by two services, or by two
codecs of one service, never lets a proof or a token of one pass for the other)::

    base     = HMAC(secret, "srpc-auth|2|<service>|<codec>")
    hello    = HMAC(base, "hello")            # the proofs in the hello and its reply
    token    = HMAC(base, "token")            # the session token's MAC (`SessionKeeper`)
    call     = HMAC(base, "call")             # the root of every session's call keys
    request  = HMAC(call, "request|" + id)    # per session: seals requests
    response = HMAC(call, "response|" + id)   # per session: seals responses

The exchange, one round trip:

1. the client's hello carries ``"auth": {"nonce": N, "proof": HMAC(hello, "client|" + N)}``,
   N 16 fresh random bytes (hex);
2. the server checks the proof (a peer without the secret is refused with code ``auth`` and
   nothing it sends is run), opens a session whose id is fresh random, and its reply carries
   ``"auth": {"proof": HMAC(hello, "server|" + N + "|" + token)}``;
3. the client checks that proof (a server without the secret is refused:
   `AuthenticationError`), and derives the session's call keys from the id in the token.

From then on every request is ``codec bytes + 16-byte tag`` (HMAC(request key, bytes), cut to
128 bits) and every response ``codec bytes + tag`` under the response key. The call keys never
travel: they are computed from the secret and the session id, so any server of the service
(a NATS queue group, a restarted server) verifies a request with no shared state, and someone
who captured a hello, a reply or a request cannot seal a request of their own. A request
replayed on the same server is refused by the session's window of call ids
(`srpc_core.session.Session.fresh`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NamedTuple

from srpc_core.config import Config, check_auth_table
from srpc_core.errors import AuthenticationError, ConfigError
from srpc_core.protocol import PROTOCOL_VERSION

#: Bytes of the tag that ends every sealed request and response (HMAC-SHA256, truncated).
TAG_BYTES: Final = 16
#: The hello field that carries the exchange.
FIELD: Final = "auth"
_NONCE_BYTES = 16
#: A secret shorter than this is refused: the proofs travel in clear, so a short secret can be
#: guessed offline from one captured hello.
MIN_SECRET_BYTES: Final = 16


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, hashlib.sha256)


class CallKeys(NamedTuple):
    """The keys that seal one session's requests and responses (never sent)."""

    request: bytes
    response: bytes

    def seal_request(self, body: bytes) -> bytes:
        """`body` followed by its tag."""
        return body + hmac.digest(self.request, body, hashlib.sha256)[:TAG_BYTES]

    def seal_response(self, body: bytes) -> bytes:
        """`body` followed by its tag."""
        return body + hmac.digest(self.response, body, hashlib.sha256)[:TAG_BYTES]

    def request_ok(self, body: bytes, tag: bytes) -> bool:
        """Whether `tag` seals `body` as a request of this session (constant time)."""
        expected = hmac.digest(self.request, body, hashlib.sha256)[:TAG_BYTES]
        return hmac.compare_digest(tag, expected)

    def cancel_mac(self, call_id: int) -> str:
        """The ``mac`` field of a cancel for `call_id` in this session (hex)."""
        return _mac(self.request, b"cancel|%d" % call_id)[:TAG_BYTES].hex()

    def response_ok(self, body: bytes, tag: bytes) -> bool:
        """Whether `tag` seals `body` as a response of this session (constant time)."""
        expected = hmac.digest(self.response, body, hashlib.sha256)[:TAG_BYTES]
        return hmac.compare_digest(tag, expected)


class Authenticator:
    """The shared secret of one service and codec, and what both sides compute from it.

    Args:
        secret: the shared secret's bytes.
        service: the interface's name (`Endpoint.service`).
        codec: the codec's name.
    """

    def __init__(self, secret: bytes, service: str, codec: str) -> None:
        base = _mac(secret, f"srpc-auth|{PROTOCOL_VERSION}|{service}|{codec}".encode())
        self._hello = _mac(base, b"hello")
        self._call = _mac(base, b"call")
        #: The key session tokens are made with (for `srpc_core.session.SessionKeeper`).
        self.token_key = _mac(base, b"token")

    @classmethod
    def from_config(cls, config: Config, service: str, codec: str) -> Authenticator | None:
        """The authenticator ``[srpc.auth]`` configures, or None when there is no such table.

        Raises:
            ConfigError: the table is invalid, the variable is unset, the file is missing,
                unreadable or empty, or the secret is shorter than `MIN_SECRET_BYTES`.
        """
        if FIELD not in config.tables:
            return None
        values = check_auth_table(config.options(FIELD))
        where = f"{config.source}: " if config.source != "defaults" else ""
        if values["secret_env"] is not None:
            name = values["secret_env"]
            text = os.environ.get(name)
            if text is None:
                raise ConfigError(
                    f"{where}[srpc.auth] secret_env = {name!r}: the environment variable "
                    f"{name} is not set; set it to the service's shared secret (the same on "
                    "every client and server)"
                )
            secret = text.strip().encode()
            origin = f"the environment variable {name}"
        else:
            path = Path(values["secret_file"]).expanduser()
            if not path.is_absolute() and config.source != "defaults":
                path = Path(config.source).parent / path
            try:
                secret = path.read_bytes().strip()
            except FileNotFoundError:
                raise ConfigError(
                    f"{where}[srpc.auth] secret_file: {str(path)!r} does not exist"
                ) from None
            except OSError as exc:
                raise ConfigError(
                    f"{where}[srpc.auth] secret_file: {str(path)!r} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from None
            origin = f"the file {str(path)!r}"
        if not secret:
            raise ConfigError(f"{where}[srpc.auth]: {origin} is empty; it must hold the secret")
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"{where}[srpc.auth]: the secret in {origin} is {len(secret)} bytes; use at "
                f'least {MIN_SECRET_BYTES} random bytes (e.g. python -c "import secrets; '
                'print(secrets.token_urlsafe(32))")'
            )
        return cls(secret, service, codec)

    # -- the client's side ---------------------------------------------------------------------

    def client_hello(self) -> tuple[dict[str, Any], str]:
        """The hello's ``auth`` field and the nonce to check the reply against."""
        nonce = secrets.token_hex(_NONCE_BYTES)
        proof = _mac(self._hello, f"client|{nonce}".encode()).hex()
        return {FIELD: {"nonce": nonce, "proof": proof}}, nonce

    def check_server(self, extra: Mapping[str, Any], nonce: str, token: str, address: str) -> None:
        """Raise `AuthenticationError` unless the reply proves the server knows the secret."""
        field = extra.get(FIELD)
        proof = field.get("proof") if isinstance(field, dict) else None
        if not isinstance(proof, str):
            raise AuthenticationError(
                f"the server at {address} did not prove that it knows the shared secret (its "
                "hello reply has no authentication): it is not configured with [srpc.auth], "
                "or it is not the server you meant to reach; nothing was sent"
            )
        expected = _mac(self._hello, f"server|{nonce}|{token}".encode()).hex()
        if not hmac.compare_digest(proof.encode(), expected.encode()):
            raise AuthenticationError(
                f"the server at {address} failed the shared-secret check: it does not know this "
                "client's secret ([srpc.auth] differs between the two sides, or it is not the "
                "server you meant to reach); nothing was sent"
            )

    # -- the server's side ---------------------------------------------------------------------

    def check_client(self, extra: Mapping[str, Any]) -> tuple[str, str] | None:
        """None if the hello proves the client knows the secret; else ``(why for the client,
        why for the server's log)``, and the hello must be refused."""
        field = extra.get(FIELD)
        if not isinstance(field, dict):
            return (
                "this server requires the shared secret: configure [srpc.auth] secret_env or "
                "secret_file on the client, with the same secret as the server (nothing was run)",
                "a hello without authentication",
            )
        nonce, proof = field.get("nonce"), field.get("proof")
        if (
            not isinstance(nonce, str)
            or not isinstance(proof, str)
            or not 16 <= len(nonce) <= 128
            or not hmac.compare_digest(
                proof.encode(), _mac(self._hello, f"client|{nonce}".encode()).hex().encode()
            )
        ):
            return (
                "authentication failed: the client's proof does not match this server's shared "
                "secret ([srpc.auth] differs between the two sides); nothing was run",
                "a hello whose proof does not match the shared secret",
            )
        return None

    def server_proof(self, nonce: str, token: str) -> dict[str, Any]:
        """The reply's ``auth`` field for an accepted hello."""
        return {FIELD: {"proof": _mac(self._hello, f"server|{nonce}|{token}".encode()).hex()}}

    @staticmethod
    def nonce_of(extra: Mapping[str, Any]) -> str:
        """The client's nonce in a hello that `check_client` accepted."""
        return str(extra[FIELD]["nonce"])

    # -- both sides ----------------------------------------------------------------------------

    def call_keys(self, token: str) -> CallKeys:
        """The keys that seal the calls of the session `token` names."""
        session_id = token.partition(".")[0].encode()
        return CallKeys(
            _mac(self._call, b"request|" + session_id),
            _mac(self._call, b"response|" + session_id),
        )


__all__ = ["FIELD", "MIN_SECRET_BYTES", "TAG_BYTES", "Authenticator", "CallKeys"]
