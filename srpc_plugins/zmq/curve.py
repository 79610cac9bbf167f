"""CURVE on the ``zmq`` transport: the keys from ``[srpc.zmq]``, checked, and how they are put on
sockets. Encryption and authentication are ZeroMQ's own (libzmq's CURVE mechanism); which client
keys a server admits is decided by pyzmq's `zmq.auth.thread.ThreadAuthenticator`.

Keys (docs/security.md, "CURVE on zmq"):

* ``curve_secret_key_file``: this side's key pair, a ZeroMQ certificate file holding
  ``public-key`` and ``secret-key`` (what ``srpc keygen NAME`` writes as ``NAME.key``; pyzmq's
  `zmq.auth.load_certificate` reads it). Setting it on a server makes the server CURVE-only.
* ``curve_server_key`` (client): the server's public key, as its 40 z85 characters or as the
  path of a certificate file holding it (``NAME.pub``). Setting it makes the client use CURVE.
* ``curve_authorized_keys`` (server): the client public keys admitted, either a file with one
  z85 key per line (anything after the key and a space is a label; blank lines and lines
  starting with ``#`` are ignored) or a directory of ``*.pub`` certificate files. Absent: any
  client that knows the server's public key is admitted.

Relative paths are relative to the srpc.toml that names them. Every problem with a key is a
`ConfigError` naming the file, the table and the key.

This module imports pyzmq; the package imports it only once pyzmq is known to be installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from srpc_core.errors import ConfigError
from srpc_core.options import DEFAULTS_SOURCE, PluginOptions

#: A CURVE key is 32 bytes, 40 characters in z85.
Z85_LENGTH = 40
KEYGEN_HINT = "make a key pair with `srpc keygen NAME`"


def is_z85_key(text: str | bytes) -> bool:
    """True when `text` is a CURVE key in z85 (40 characters that decode to 32 bytes)."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else text
    if len(raw) != Z85_LENGTH:
        return False
    try:
        return len(z85.decode(raw)) == 32
    except (KeyError, ValueError, IndexError, TypeError):
        return False


class _KeyProvider:
    """What `ThreadAuthenticator.configure_curve_callback` asks whether a client key may connect
    (pyzmq hands it the client's public key in z85)."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


@dataclass(frozen=True)
class CurveKeys:
    """This side's CURVE keys (z85, as ZeroMQ's socket options take them).

    Attributes:
        public, secret: this side's key pair.
        server_key: the server's public key (a client's setting), or None.
        authorized: the client keys a server admits, or None for any client.
        source: where they were configured, for messages (``srpc.toml: [srpc.zmq]``).
    """

    public: bytes
    secret: bytes
    server_key: bytes | None = None
    authorized: frozenset[bytes] | None = None
    source: str = "[srpc.zmq]"

    @classmethod
    def load(cls, options: PluginOptions, values: dict[str, str]) -> CurveKeys | None:
        """The keys ``[srpc.zmq]`` names, read and checked; None when CURVE is not configured.

        `values` are the table's checked string values (``""`` = absent).
        """
        secret_file = values["curve_secret_key_file"]
        server_key = values["curve_server_key"]
        authorized = values["curve_authorized_keys"]
        where = _where(options)
        if not secret_file:
            for key, value in (
                ("curve_server_key", server_key),
                ("curve_authorized_keys", authorized),
            ):
                if value:
                    raise ConfigError(
                        f"{where} sets {key} but not curve_secret_key_file: CURVE needs this "
                        f"side's own key pair too ({KEYGEN_HINT}, and name NAME.key)"
                    )
            return None
        public, secret = _load_key_pair(options, secret_file)
        return cls(
            public=public,
            secret=secret,
            server_key=_load_server_key(options, server_key) if server_key else None,
            authorized=_load_authorized(options, authorized) if authorized else None,
            source=where,
        )

    def apply_to_client(self, sock: zmq.Socket[bytes], address: str) -> None:
        """Make `sock` (a DEALER) a CURVE client of the server whose key is `server_key`."""
        if self.server_key is None:
            raise ConfigError(
                f"{self.source} sets curve_secret_key_file but not curve_server_key, which a "
                f"client needs to connect to {address} with CURVE: set it to the server's "
                "public key (its 40 z85 characters, or the path of the server's NAME.pub)"
            )
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret

    def apply_to_server(self, sock: zmq.Socket[bytes]) -> None:
        """Make `sock` (the ROUTER, before it binds) a CURVE server: CURVE clients only."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True

    def start_authenticator(
        self, context: zmq.Context[zmq.Socket[bytes]]
    ) -> ThreadAuthenticator | None:
        """Start pyzmq's ZAP authenticator on `context`, admitting only `authorized` client
        keys; None (no authenticator: any client with the server's key) without a list."""
        if self.authorized is None:
            return None
        auth = ThreadAuthenticator(context)
        auth.start()
        auth.configure_curve_callback("*", _KeyProvider(self.authorized))
        return auth


def _where(options: PluginOptions) -> str:
    prefix = f"{options.source}: " if options.source and options.source != DEFAULTS_SOURCE else ""
    return f"{prefix}[{options.table}]"


def _path(options: PluginOptions, value: str) -> Path:
    """`value` as a path; relative to the srpc.toml that names it."""
    path = Path(value).expanduser()
    if not path.is_absolute() and options.source and options.source != DEFAULTS_SOURCE:
        path = Path(options.source).parent / path
    return path


def _read_certificate(options: PluginOptions, key: str, value: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from the certificate file `value` names."""
    path = _path(options, value)
    where = f"{_where(options)} {key} = {value!r}"
    if not path.is_file():
        what = "is a directory, not a key file" if path.is_dir() else "does not exist"
        raise ConfigError(f"{where}: {str(path)!r} {what} ({KEYGEN_HINT})")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as exc:
        raise ConfigError(f"{where}: {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(
            f"{where}: {str(path)!r} is not a ZeroMQ CURVE key file (no public-key line; "
            f"{KEYGEN_HINT})"
        ) from None
    if not is_z85_key(public) or (secret is not None and not is_z85_key(secret)):
        raise ConfigError(
            f"{where}: {str(path)!r} holds a malformed key (a CURVE key is 40 z85 characters; "
            f"{KEYGEN_HINT})"
        )
    return public, secret


def _load_key_pair(options: PluginOptions, value: str) -> tuple[bytes, bytes]:
    public, secret = _read_certificate(options, "curve_secret_key_file", value)
    if secret is None:
        raise ConfigError(
            f"{_where(options)} curve_secret_key_file = {value!r}: the file holds only a public "
            "key (a NAME.pub): name this side's NAME.key, the file with the secret key, which "
            "`srpc keygen NAME` writes next to it"
        )
    return public, secret


def _load_server_key(options: PluginOptions, value: str) -> bytes:
    if is_z85_key(value):
        return value.encode("ascii")
    if len(value) == Z85_LENGTH and not _path(options, value).exists():
        raise ConfigError(
            f"{_where(options)} curve_server_key = {value!r} is neither a CURVE public key (40 z85 "
            "characters) nor an existing file"
        )
    public, _ = _read_certificate(options, "curve_server_key", value)
    return public


def _load_authorized(options: PluginOptions, value: str) -> frozenset[bytes]:
    path = _path(options, value)
    where = f"{_where(options)} curve_authorized_keys = {value!r}"
    if path.is_dir():
        keys = {
            _read_certificate(options, "curve_authorized_keys", str(pub))[0]
            for pub in sorted(path.glob("*.pub"))
        }
        if not keys:
            raise ConfigError(
                f"{where}: the directory {str(path)!r} holds no *.pub files: no client could "
                "connect (absent curve_authorized_keys admits any client that knows the "
                "server's public key)"
            )
        return frozenset(keys)
    if not path.exists():
        raise ConfigError(f"{where}: {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"{where}: {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{where}: {str(path)!r} is not a list of z85 public keys (it is not ASCII text)"
        ) from None
    found: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        entry = words[0]  # a key may contain '#': it is tried as a key before as a comment
        if not is_z85_key(entry) and entry.startswith("#"):
            continue
        if not is_z85_key(entry):
            raise ConfigError(
                f"{where}: line {number} of {str(path)!r} is not a CURVE public key (expected "
                "40 z85 characters, the public-key of a client's NAME.pub, one per line)"
            )
        found.add(entry.encode("ascii"))
    if not found:
        raise ConfigError(
            f"{where}: {str(path)!r} lists no keys: no client could connect (absent "
            "curve_authorized_keys admits any client that knows the server's public key)"
        )
    return frozenset(found)


__all__ = ["KEYGEN_HINT", "Z85_LENGTH", "CurveKeys", "is_z85_key"]
