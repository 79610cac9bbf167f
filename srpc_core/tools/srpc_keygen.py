"""``srpc keygen NAME``: make a CURVE key pair for the ``zmq`` transport.

Writes ``NAME.key`` (the key pair, with the secret key: mode 0600 from the moment it exists)
and ``NAME.pub`` (the public key alone), both in the ZeroMQ certificate format that pyzmq's
`zmq.auth.load_certificate` reads. Mounted as ``srpc keygen`` (through `configure_parser` and
`run`); ``python -m srpc_core.tools.srpc_keygen`` works too. Needs pyzmq (``srpclib[zmq]``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
from pathlib import Path

from srpc_core.errors import MissingDependencyError, SrpcError

INSTALL_HINT = "pip install 'srpclib[zmq]'"
DESCRIPTION = """\
Make a CURVE key pair for the zmq transport: NAME.key holds the secret key (mode
0600 from the start; keep it on the machine that uses it, never commit it) and
NAME.pub the public key (give it to the other side). Existing files are never
overwritten unless --force is given."""
EPILOG = """\
using the keys (srpc.toml, [srpc.zmq]; see docs/security.md):
  server:  curve_secret_key_file = "server.key"
           curve_authorized_keys = "clients.txt"   # optional: admitted client keys,
                                                   # one z85 public key per line
  client:  curve_secret_key_file = "client.key"
           curve_server_key = "server.pub"         # or the server's key as z85 text

example:
  srpc keygen server -d /etc/calc/keys    # writes server.key and server.pub there
"""

SECRET_BANNER = """\
#   ****  Generated on {now} by srpc keygen  ****
#   ZeroMQ CURVE **Secret** Certificate
#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.

"""
PUBLIC_BANNER = """\
#   ****  Generated on {now} by srpc keygen  ****
#   ZeroMQ CURVE Public Certificate
#   Give it to the other side: a server's to its clients (curve_server_key), a client's to
#   the server (curve_authorized_keys).

"""


class KeygenError(SrpcError):
    """`srpc keygen` cannot write the key files (they exist, the name is not a name...)."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add keygen's arguments to `parser` (used by ``srpc keygen``)."""
    parser.add_argument("name", metavar="NAME", help="the files' name: NAME.key and NAME.pub")
    parser.add_argument(
        "-d",
        "--dir",
        default=".",
        metavar="DIR",
        help="where to write them (default: the current directory; created, mode 0700, if missing)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace existing NAME.key and NAME.pub (the old key pair is lost)",
    )


def certificate(public: str, secret: str | None = None) -> str:
    """The text of a ZeroMQ certificate file (`zmq.auth.load_certificate` reads it)."""
    now = datetime.datetime.now().replace(microsecond=0)
    banner = (SECRET_BANNER if secret else PUBLIC_BANNER).format(now=now)
    text = f'{banner}metadata\ncurve\n    public-key = "{public}"\n'
    return text + (f'    secret-key = "{secret}"\n' if secret else "")


def write_private(path: Path, text: str, *, force: bool, mode: int = 0o600) -> None:
    """Write `text` to `path` with `mode`, a file that never had wider permissions.

    Without `force` the file is created exclusively (an existing file, or a link planted in
    its place, is an error). With `force` it is written to a new 0600 file in the same
    directory first, then moved over the old one.
    """
    if not force:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits from `mode`, never added
            with os.fdopen(fd, "w", encoding="ascii") as f:
                fd = -1
                f.write(text)
        finally:
            if fd >= 0:
                os.close(fd)
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def keygen(name: str, directory: Path, *, force: bool = False) -> tuple[Path, Path, str]:
    """Write ``NAME.key`` and ``NAME.pub`` in `directory`; return their paths and the public
    key (z85).

    Raises:
        MissingDependencyError: pyzmq is not installed.
        KeygenError: `name` is not a plain file name, or a file exists and `force` is False.
    """
    try:
        import zmq
    except ImportError:
        raise MissingDependencyError(
            f"srpc keygen makes ZeroMQ CURVE keys and needs pyzmq, which is not installed: "
            f"{INSTALL_HINT}"
        ) from None
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise KeygenError(
            f"NAME must be a plain name such as 'server', not {name!r}: use -d DIR to choose "
            "the directory"
        )
    secret_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not force:
        existing = [str(p) for p in (secret_path, public_path) if os.path.lexists(p)]
        if existing:
            raise KeygenError(
                f"{' and '.join(existing)} already {'exist' if len(existing) > 1 else 'exists'}: "
                "refusing to overwrite a key pair "
                "(--force replaces both; whoever holds the old public key must then get the "
                "new one)"
            )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    public, secret = (key.decode("ascii") for key in zmq.curve_keypair())
    write_private(secret_path, certificate(public, secret), force=force)
    try:
        write_private(public_path, certificate(public), force=force, mode=0o644)
    except BaseException:
        secret_path.unlink(missing_ok=True)  # never leave half a pair
        raise
    return secret_path, public_path, public


def run(args: argparse.Namespace) -> int:
    """``srpc keygen``: write the key pair and say where it went."""
    try:
        secret_path, public_path, public = keygen(args.name, Path(args.dir), force=args.force)
    except OSError as exc:
        raise KeygenError(f"cannot write the key files: {exc}") from None
    print(f"wrote {secret_path} (secret key, mode 0600: keep it here, never commit it)")
    print(f"wrote {public_path} (public key: give it to the other side)")
    print(f"public key: {public}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m srpc_core.tools.srpc_keygen``."""
    parser = argparse.ArgumentParser(
        prog="srpc keygen",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    try:
        return run(parser.parse_args(argv))
    except SrpcError as exc:
        print(f"srpc: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "DESCRIPTION",
    "EPILOG",
    "KeygenError",
    "certificate",
    "configure_parser",
    "keygen",
    "main",
    "run",
    "write_private",
]
