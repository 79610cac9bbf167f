"""``srpc list``, ``srpc call`` and ``srpc ping``: a live service from the shell (docs/cli.md).

They need no interface class and no stub: `RemoteService` is a generic client built on the
core's public parts (the configuration, the plugins' transports and codecs, the message layer
in `srpc_core.protocol`, the shared secret in `srpc_core.auth`):

1. a hello that names no service: the server refuses it, and its refusal names the service it
   serves and its codec (a codec installed here is then used, whatever srpc.toml says);
2. the real hello (with the shared secret's proof when ``[srpc.auth]`` is configured): the
   reply issues the session and lists every procedure with its fingerprint and signature;
3. ``list``: the reflection request (signatures, docstrings, fingerprints), answered only for
   that session and only while the server's ``[srpc] reflection`` is on; ``call``: a request,
   as any client sends it; ``ping``: steps 1 and 2 within the timeout.

Nothing the server sends is imported, evaluated or executed. Arguments are JSON; where a
parameter's reported annotation is a plain built-in type (``int``, ``float``, ``bytes``,
``datetime.datetime``, ``list[int]``...) it is read as text (`ast.parse`, never evaluated) and
the argument converted to that type, then to the codec's wire form; anything else travels as
the JSON value and the server's own validation answers (a ``TypeError`` naming the parameter).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime
import decimal
import itertools
import json
import re
import sys
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from srpc_core import protocol
from srpc_core.auth import TAG_BYTES, Authenticator, CallKeys
from srpc_core.codec import Codec
from srpc_core.config import Config, load_config, resolve_host
from srpc_core.convert import WireProfile
from srpc_core.deadline import Deadline
from srpc_core.errors import (
    AuthenticationError,
    ConfigError,
    MismatchError,
    ProtocolError,
    SrpcError,
)
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.transport import Channel, Endpoint

#: Seconds ``srpc ping`` waits by default (``--timeout``); list and call use ``[srpc] timeout``.
PING_TIMEOUT = 5.0
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069]")
_KEYWORD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def _safe(text: object) -> str:
    """Text from the server, safe to print (control characters and bidi overrides replaced)."""
    return _UNPRINTABLE.sub("\ufffd", str(text))


# -- where the server is -----------------------------------------------------------------------


def target_config(url: str | None, config: str | None = None) -> Config:
    """The settings to reach the server: srpc.toml (`config`, else the usual lookup), with
    `url` (``tcp://127.0.0.1:5000``, ``zmq://host:port``, ``nats://host:4222/subject``...)
    naming the transport and address instead, when given."""
    cfg = load_config(config)
    if url is None:
        return cfg
    parts = urlsplit(url)
    scheme = parts.scheme
    if not scheme or not parts.netloc:
        raise ConfigError(
            f"{url!r} is not a server URL: write it as transport://host:port, e.g. "
            "tcp://127.0.0.1:5000 (NATS: nats://host:4222/subject)"
        )
    if scheme in ("nats", "tls"):  # nats-py's schemes: the servers, and the service's subject
        tables = {k: dict(v) for k, v in cfg.tables.items()}
        nats = tables.setdefault("nats", {})
        nats["servers"] = [f"{scheme}://{parts.netloc}"]
        if parts.path.strip("/"):
            nats["subject"] = parts.path.strip("/")
        return dataclasses.replace(cfg, transport="nats", tables=tables)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{url!r}: the port is not a number from 0 to 65535") from None
    if parts.hostname is None or port is None:
        raise ConfigError(f"{url!r}: write the address as {scheme}://host:port")
    return dataclasses.replace(cfg, transport=scheme, host=parts.hostname, port=port)


# -- the generic client --------------------------------------------------------------------------


class RemoteService:
    """A client of whatever service answers at the configured address (no interface needed).

    Args:
        config: the settings (`target_config`).
        plugins: the plugins to use (default: this process's).
    """

    def __init__(self, config: Config, plugins: Plugins | None = None) -> None:
        self.config = config
        self._plugins = plugins or get_plugins()
        self._codec, self._transport = self._plugins.for_config(config)
        self._host = resolve_host(config.host)
        self.address = self._transport.url(self._host, config.port)
        #: What the hello told: the service's name and its procedures.
        self.service = ""
        self.procedures: Mapping[str, protocol.ProcedureInfo] = {}
        self._channel: Channel | None = None
        self._session = ""
        self._keys: CallKeys | None = None
        self._ids = itertools.count(1)

    @property
    def codec(self) -> Codec:
        """The codec calls are encoded with (the server's)."""
        return self._codec

    def connect(self, deadline: Deadline) -> None:
        """Learn the service's name and codec, then say hello (with the shared secret's proof
        when configured) and keep the channel. Raises what the transport, the hello or the
        authentication raise (`ServerUnavailableError`, `MismatchError`, ...)."""
        self._learn_service(deadline)
        endpoint = Endpoint(self._host, self.config.port, self.service, "")
        channel = self._transport.open_channel(endpoint, deadline.remaining())
        try:
            auth = Authenticator.from_config(self.config, self.service, self._codec.name)
            extra, nonce = auth.client_hello() if auth is not None else ({}, "")
            hello = protocol.Hello(
                self._codec.name, self.config.transport, self.service, extra=extra
            )
            reply = protocol.parse_hello_reply(
                channel.request(hello.encode(), deadline.remaining()), self.address
            )
            if auth is not None:
                auth.check_server(reply.extra, nonce, reply.session, self.address)
                self._keys = auth.call_keys(reply.session)
        except BaseException:
            channel.close()
            raise
        self._channel, self._session, self.procedures = channel, reply.session, reply.procedures

    def _learn_service(self, deadline: Deadline) -> None:
        """A hello naming no service: the refusal names the server's service and codec."""
        endpoint = Endpoint(self._host, self.config.port, "", "")
        channel = self._transport.open_channel(endpoint, deadline.remaining())
        try:
            hello = protocol.hello(self._codec.name, self.config.transport, "")
            answer = channel.request(hello, deadline.remaining())
        finally:
            channel.close()
        if not protocol.is_control(answer):
            raise ProtocolError(f"the server at {self.address} did not answer the srpc hello")
        fields = protocol.decode_control(answer)
        code = fields.get("code")
        if code == protocol.Code.VERSION:
            raise MismatchError(f"{self.address}: {_safe(fields.get('error'))}")
        if code == protocol.Code.BUSY:
            protocol.parse_hello_reply(answer, self.address)  # raises ServerUnavailableError
        service, codec = fields.get("service"), fields.get("codec")
        if type(service) is not str or not service or type(codec) is not str:
            raise ProtocolError(
                f"the server at {self.address} did not say which service it serves "
                f"({_safe(fields.get('error', 'no reason given'))})"
            )
        self.service = service
        if codec != self._codec.name:
            if codec not in self._plugins.codecs:
                raise MismatchError(
                    f"the server at {self.address} uses codec {_safe(codec)!r}, which is not "
                    f"installed here (installed: {', '.join(sorted(self._plugins.codecs))})"
                )
            self._codec = self._plugins.codec(codec, self.config.options(codec))

    def describe(self, deadline: Deadline) -> tuple[str, dict[str, protocol.ProcedureDescription]]:
        """The interface, by reflection: ``(service, procedures)``."""
        if self._channel is None:
            self.connect(deadline)
        extra = None
        if self._keys is not None:
            extra = {"mac": protocol.reflect_mac(self._keys.request, self._session)}
        answer = self._request(protocol.reflect(self._session, extra), deadline)
        return protocol.parse_reflection(answer, self.address)

    def call(
        self, procedure: str, args: Sequence[Any], kwargs: Mapping[str, Any], deadline: Deadline
    ) -> tuple[bool, Any]:
        """Call `procedure` with wire-form arguments: ``(True, result)`` or ``(False, error)``
        (a `WireError` map)."""
        if self._channel is None:
            self.connect(deadline)
        call_id = next(self._ids)
        message = protocol.encode_request(
            self._codec,
            call_id,
            self._session,
            procedure,
            list(args),
            dict(kwargs),
            protocol.timeout_metadata(deadline.remaining()),
        )
        if self._keys is not None:
            message = self._keys.seal_request(message)
        reply = self._request(message, deadline)
        if self._keys is not None and not protocol.is_control(reply):
            body, tag = reply[:-TAG_BYTES], reply[-TAG_BYTES:]
            if not self._keys.response_ok(body, tag):
                raise AuthenticationError(
                    f"a response from {self.address} is not sealed with this session's key"
                )
            reply = body
        return protocol.decode_response(self._codec, reply, call_id, self.address)

    def _request(self, message: bytes, deadline: Deadline) -> bytes:
        if self._channel is None:
            self.connect(deadline)
        assert self._channel is not None
        return self._channel.request(message, deadline.remaining())

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            channel.close()


# -- arguments and results -----------------------------------------------------------------------

_NAMES: dict[str, Any] = {
    "int": int,
    "float": int | float,  # PEP 484's numeric tower, as the server reads it
    "str": str,
    "bool": bool,
    "bytes": bytes,
    "bytearray": bytearray,
    "None": None,
    "Any": Any,
    "typing.Any": Any,
    "datetime.datetime": datetime.datetime,
    "datetime.date": datetime.date,
    "datetime.time": datetime.time,
    "datetime.timedelta": datetime.timedelta,
    "decimal.Decimal": decimal.Decimal,
    "uuid.UUID": uuid.UUID,
}
_GENERICS: dict[str, Any] = {
    "list": list,
    "set": set,
    "frozenset": frozenset,
    "tuple": tuple,
    "dict": dict,
}


class _Unknown(Exception):
    """An annotation this tool does not rebuild (it then sends the JSON value as it is)."""


def _annotation(node: ast.expr | None) -> Any:
    """The type an annotation's syntax tree names, for the built-in types only (`_Unknown`
    otherwise). Nothing is evaluated: names are looked up in `_NAMES`."""
    if node is None:
        raise _Unknown
    if isinstance(node, ast.Constant) and node.value is None:
        return None
    if isinstance(node, ast.Name | ast.Attribute):
        name = ast.unparse(node)
        if name in _NAMES:
            return _NAMES[name]
        raise _Unknown
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation(node.left) | _annotation(node.right)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        origin = _GENERICS.get(node.value.id)
        if origin is None:
            raise _Unknown
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if origin is tuple and len(items) == 2 and ast.unparse(items[1]) == "...":
            return tuple[_annotation(items[0]), ...]  # type: ignore[misc]
        return origin[tuple(_annotation(item) for item in items)]
    raise _Unknown


@dataclasses.dataclass(frozen=True)
class Plan:
    """The types this tool could read from a reported signature (None: unknown, sent as is)."""

    positional: list[tuple[str, Any]]
    keywords: dict[str, Any]
    result: Any = None
    result_known: bool = False
    #: Whether the signature text parsed (else nothing is known of the parameters).
    parsed: bool = True


def plan_from_signature(text: str) -> Plan:
    """Read a signature as the server reports it (``add(a: float, b: float) -> float``) with
    `ast.parse`; only built-in types are rebuilt (`_annotation`)."""
    try:
        tree = ast.parse(f"def {text}: pass", mode="exec")
        function = tree.body[0]
        assert isinstance(function, ast.FunctionDef)
    except (SyntaxError, AssertionError, ValueError):
        return Plan([], {}, parsed=False)
    positional: list[tuple[str, Any]] = []
    keywords: dict[str, Any] = {}
    arguments = function.args
    for argument in [*arguments.posonlyargs, *arguments.args]:
        kind = _try_annotation(argument.annotation)
        positional.append((argument.arg, kind))
        if argument not in arguments.posonlyargs:
            keywords[argument.arg] = kind
    for argument in arguments.kwonlyargs:
        keywords[argument.arg] = _try_annotation(argument.annotation)
    try:
        result, known = _annotation(function.returns), True
    except _Unknown:
        result, known = None, False
    return Plan(positional, keywords, result, known)


def _try_annotation(node: ast.expr | None) -> Any:
    try:
        return _Typed(_annotation(node))
    except _Unknown:
        return None


@dataclasses.dataclass(frozen=True)
class _Typed:
    kind: Any


def parse_arguments(
    words: Sequence[str], names: Collection[str] | None = None
) -> tuple[list[Any], dict[str, Any]]:
    """``ARG... name=value...`` as JSON values (a word that is not JSON is taken as a string:
    ``srpc call greet bob``); a word ``name=...`` is a keyword argument when `name` is one of
    the procedure's parameter `names` (any identifier when they are not known), so base64
    text such as ``aGk=`` stays a positional argument."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for word in words:
        match = _KEYWORD.match(word)
        if match and (names is None or match.group(1) in names):
            kwargs[match.group(1)] = _json_value(match.group(2))
        elif kwargs:
            raise ConfigError(f"positional argument {word!r} follows a keyword argument")
        else:
            args.append(_json_value(word))
    return args, kwargs


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def to_wire(
    plan: Plan, codec: Codec, args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments converted to the types the plan names, then to `codec`'s wire forms; a
    value that does not convert is sent as it is (the server's validation names the problem)."""
    profile = WireProfile.for_codec(codec)

    def convert(kind: Any, value: Any) -> Any:
        if not isinstance(kind, _Typed):
            return value
        try:
            return profile.to_wire(msgspec.convert(value, kind.kind, strict=False))
        except (msgspec.ValidationError, TypeError, ValueError):
            return value

    wire_args = [
        convert(plan.positional[i][1] if i < len(plan.positional) else None, value)
        for i, value in enumerate(args)
    ]
    wire_kwargs = {name: convert(plan.keywords.get(name), v) for name, v in kwargs.items()}
    return wire_args, wire_kwargs


def show_result(plan: Plan, codec: Codec, value: Any, as_repr: bool) -> str:
    """The result as JSON, or (`as_repr`) as the Python repr of the value converted to the
    reported return type where this tool knows it."""
    if as_repr:
        if plan.result_known:
            native = WireProfile.for_codec(codec).native
            try:
                value = msgspec.convert(value, plan.result, strict=False, builtin_types=native)
            except (msgspec.ValidationError, TypeError, ValueError):
                pass
        return _safe(repr(value))
    return msgspec.json.encode(value, enc_hook=repr).decode()


# -- the commands --------------------------------------------------------------------------------


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the srpc.toml to read (default: $SRPC_CONFIG, ./srpc.toml)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds the whole command may take (default: [srpc] timeout; ping: 5)",
    )


URL_HELP = (
    "the server: tcp://HOST:PORT, zmq://HOST:PORT, nats://HOST:PORT/SUBJECT, or another "
    "transport's NAME://HOST:PORT (default: what srpc.toml names)"
)


def configure_list(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``srpc list``."""
    parser.add_argument("url", nargs="?", help=URL_HELP)
    parser.add_argument("--json", action="store_true", help="print the interface as JSON")
    _add_common(parser)


def configure_call(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``srpc call``."""
    parser.usage = (
        "srpc call [-h] [--repr] [--config PATH] [--timeout SECONDS] "
        "[URL] PROCEDURE [ARG ...] [NAME=VALUE ...]"
    )
    parser.add_argument(
        "words",
        nargs="+",
        metavar="[URL] PROCEDURE [ARG ...] [NAME=VALUE ...]",
        help="the server (optional: " + URL_HELP + "), the procedure, and its arguments as "
        "JSON (4, 2.5, '\"text\"', '[1, 2]', 'true'; a word that is not JSON is a string); "
        "NAME=VALUE passes a keyword argument",
    )
    parser.add_argument(
        "--repr", action="store_true", help="print the result as a Python repr, not JSON"
    )
    _add_common(parser)


def configure_ping(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``srpc ping``."""
    parser.add_argument("url", nargs="?", help=URL_HELP)
    _add_common(parser)


def _connected(url: str | None, args: argparse.Namespace, default: float | None = None) -> Any:
    cfg = target_config(url, args.config)
    timeout = args.timeout if args.timeout is not None else default or cfg.timeout
    if not timeout > 0:
        raise ConfigError("--timeout must be a positive number of seconds")
    remote = RemoteService(cfg)
    return remote, Deadline(timeout, where=remote.address)


def _fail(remote: RemoteService | None, exc: BaseException) -> int:
    where = f" ({remote.address})" if remote is not None else ""
    print(f"srpc: {type(exc).__name__}{where}: {_safe(exc)}", file=sys.stderr)
    return 1


def run_list(args: argparse.Namespace) -> int:
    """``srpc list``: the procedures with their signatures and docstrings."""
    remote, deadline = _connected(args.url, args)
    try:
        service, procedures = remote.describe(deadline)
    except (SrpcError, OSError) as exc:
        return _fail(remote, exc)
    finally:
        remote.close()
    if args.json:
        body = {name: dataclasses.asdict(p) for name, p in procedures.items()}
        print(
            json.dumps(
                {"service": service, "address": remote.address, "procedures": body}, indent=2
            )
        )
        return 0
    print(f"{_safe(service)} at {remote.address} ({len(procedures)} procedures)")
    for description in procedures.values():
        print(f"\n  {_safe(description.signature)}")
        for line in (description.doc or "").splitlines():
            print(f"      {_safe(line)}".rstrip())
    return 0


def run_call(args: argparse.Namespace) -> int:
    """``srpc call``: one call; the result on stdout, a remote exception as ``Type: message``
    on stderr with exit code 1."""
    words = list(args.words)
    url = words.pop(0) if "://" in words[0] else None
    if not words:
        raise ConfigError("srpc call: name the procedure to call")
    procedure, rest = words[0], words[1:]
    remote, deadline = _connected(url, args)
    try:
        remote.connect(deadline)
        info = remote.procedures.get(procedure)
        if info is None:
            known = ", ".join(remote.procedures) or "(none)"
            print(
                f"srpc: {_safe(remote.service)} at {remote.address} has no procedure "
                f"{_safe(procedure)!r}; it serves: {_safe(known)}",
                file=sys.stderr,
            )
            return 1
        plan = plan_from_signature(info.signature)
        call_args, call_kwargs = parse_arguments(rest, plan.keywords if plan.parsed else None)
        wire_args, wire_kwargs = to_wire(plan, remote.codec, call_args, call_kwargs)
        ok, value = remote.call(procedure, wire_args, wire_kwargs, deadline)
    except (SrpcError, OSError) as exc:
        return _fail(remote, exc)
    finally:
        remote.close()
    if not ok:
        kind = value.get("type", "RemoteError") if isinstance(value, dict) else "RemoteError"
        message = value.get("message", "") if isinstance(value, dict) else value
        print(f"{_safe(kind)}: {_safe(message)}", file=sys.stderr)
        return 1
    print(show_result(plan, remote.codec, value, args.repr))
    return 0


def run_ping(args: argparse.Namespace) -> int:
    """``srpc ping``: exit 0 when the server answers the hello within the timeout."""
    remote, deadline = _connected(args.url, args, PING_TIMEOUT)
    started = time.perf_counter()
    try:
        remote.connect(deadline)
    except (SrpcError, OSError) as exc:
        return _fail(remote, exc)
    finally:
        remote.close()
    elapsed = (time.perf_counter() - started) * 1000
    print(
        f"ok: {_safe(remote.service)} at {remote.address} answered in {elapsed:.1f} ms "
        f"({len(remote.procedures)} procedures)"
    )
    return 0


__all__ = [
    "PING_TIMEOUT",
    "Plan",
    "RemoteService",
    "configure_call",
    "configure_list",
    "configure_ping",
    "parse_arguments",
    "plan_from_signature",
    "run_call",
    "run_list",
    "run_ping",
    "show_result",
    "target_config",
    "to_wire",
]
