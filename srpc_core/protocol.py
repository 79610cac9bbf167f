"""The srpc message layer: every message's shape, built and parsed here, with no I/O.

Client, async client, dispatcher and tools use these functions and know nothing of the message
format themselves (docs/protocol.md is the specification). A transport carries opaque
*messages* (byte strings) of two kinds:

* **Control messages** start with `CONTROL_PREFIX` (``b"\\x00srpc"``) followed by a UTF-8 JSON
  object. They are codec-independent, so the hello, cancel requests and errors about
  undecodable input always reach the peer in a form it can read.
* **Call messages** are anything else: a request or a response encoded with the codec the hello
  agreed on.

Protocol version 2 (this module), call messages:

Request:  ``[id, session, procedure, args, kwargs]`` or ``[id, session, procedure, args, kwargs,
metadata]``: `session` is the token the hello reply issued; `metadata` is a map (``timeout_ms``:
whole milliseconds the caller still waits, sent by the Python clients with every request;
``timeout``: the same in seconds, any number, still read; ``traceparent``/``tracestate``:
trace context; any other string key: the caller's own entries).
Response: ``[id, STATUS_OK, result]`` or ``[id, STATUS_ERROR, error]`` where `error` is a
`WireError` map (an optional ``attributes`` map carries the exception's public instance
attributes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, NotRequired, TypedDict

from srpc_core.codec import Codec
from srpc_core.errors import (
    AuthenticationError,
    CallTimeoutError,
    DecodeError,
    FrameTooLargeError,
    MismatchError,
    ProtocolError,
    ServerUnavailableError,
    SessionError,
    SrpcError,
)

PROTOCOL_VERSION: Final = 2
CONTROL_PREFIX: Final = b"\x00srpc"
STATUS_OK: Final = 0
STATUS_ERROR: Final = 1
#: Metadata keys srpc itself uses; every other string key belongs to the caller.
META_TIMEOUT: Final = "timeout"
#: The caller's remaining time in whole milliseconds: what the Python clients send (an integer
#: is cheaper to write and read than a float: json writes ``29999`` faster than ``29.99873``).
META_TIMEOUT_MS: Final = "timeout_ms"
META_TRACEPARENT: Final = "traceparent"
META_TRACESTATE: Final = "tracestate"


class Code:
    """The ``code`` of a control error: what went wrong, for programs (the text is for people)."""

    VERSION: Final = "version"  # the peers speak different protocol versions
    MISMATCH: Final = "mismatch"  # codec, transport or service differ
    SESSION: Final = "session"  # no valid session: say hello first (nothing was dispatched)
    AUTH: Final = "auth"  # the shared-secret check failed, or a sealed call did not verify
    DECODE: Final = "decode"  # the codec could not decode the message
    MALFORMED: Final = "malformed"  # decoded, but not a message of this protocol
    TOO_LARGE: Final = "too_large"  # larger than max_message_bytes
    BUSY: Final = "busy"  # a limit refused the connection or the call
    INTERNAL: Final = "internal"  # the server failed while answering (a bug, not the input)
    DISABLED: Final = "disabled"  # the server turned this feature off (reflection = false)
    UNKNOWN: Final = "unknown"  # a code this version does not know


class WireError(TypedDict):
    """An exception as it travels in an error response."""

    type: str  # class name, e.g. "ZeroDivisionError"
    module: str  # defining module, e.g. "builtins"
    message: str  # str(exception)
    args: list[Any]  # exception.args when the codec can carry them, else [message]
    base: str  # nearest built-in base class name, e.g. "ValueError"
    traceback: str | None  # formatted remote traceback, only when the server allows it
    attributes: NotRequired[dict[str, Any]]  # the exception's own instance attributes, if any


# -- control messages ----------------------------------------------------------------------


def encode_control(fields: Mapping[str, Any]) -> bytes:
    """Encode a control message (a JSON object behind `CONTROL_PREFIX`)."""
    return CONTROL_PREFIX + json.dumps(fields, separators=(",", ":")).encode()


def is_control(message: bytes) -> bool:
    """True if `message` is a control message rather than a codec-encoded call message."""
    return message[:5] == CONTROL_PREFIX


#: Control messages are small; anything deeper than this is hostile.
_MAX_CONTROL_DEPTH = 8


def decode_control(message: bytes) -> dict[str, Any]:
    """Decode a control message; raise `ProtocolError` if it is malformed."""
    try:
        fields = json.loads(message[len(CONTROL_PREFIX) :])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed srpc control message: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("malformed srpc control message: not a JSON object")
    if _depth(fields) > _MAX_CONTROL_DEPTH:
        raise ProtocolError("malformed srpc control message: nested too deeply")
    return fields


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_CONTROL_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def control_error(message: str, code: str = Code.MALFORMED, call_id: int | None = None) -> bytes:
    """A control message that reports `message` to the peer (used where no codec applies).

    `code` is one of `Code`; `call_id` names the request it answers, where known.
    """
    fields: dict[str, Any] = {"v": PROTOCOL_VERSION, "ok": False, "code": code, "error": message}
    if call_id is not None:
        fields["id"] = call_id
    return encode_control(fields)


class ControlError(NamedTuple):
    """A control error as the client reads it."""

    code: str
    message: str
    call_id: int | None


def parse_control_error(message: bytes) -> ControlError:
    """Read a control message sent instead of a response."""
    fields = decode_control(message)
    code = fields.get("code")
    call_id = fields.get("id")
    return ControlError(
        code if isinstance(code, str) else Code.UNKNOWN,
        str(fields.get("error", "(no reason given)")),
        call_id if type(call_id) is int else None,
    )


def raise_control_error(message: bytes, address: str) -> None:
    """Raise the error a server reported in a control message sent instead of a response."""
    error = parse_control_error(message)
    text = f"the server at {address} rejected the request: {error.message}"
    if error.code in (Code.VERSION, Code.MISMATCH):
        raise MismatchError(text)
    if error.code == Code.TOO_LARGE:
        raise FrameTooLargeError(text)
    if error.code == Code.SESSION:
        raise SessionError(text)
    if error.code == Code.AUTH:
        raise AuthenticationError(text)
    raise ProtocolError(text)


# -- the hello -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """The client's first message on every new channel (and what the server reads of it)."""

    codec: str
    transport: str
    service: str
    version: Any = PROTOCOL_VERSION
    #: Extra fields (with a shared secret: ``auth``, the nonce and proof, `srpc_core.auth`).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The hello as a control message."""
        return encode_control(
            {
                **self.extra,
                "v": self.version,
                "hello": True,
                "codec": self.codec,
                "transport": self.transport,
                "service": self.service,
            }
        )


def hello(codec: str, transport: str, service: str) -> bytes:
    """The client's hello as bytes (see `Hello`)."""
    return Hello(codec, transport, service).encode()


def parse_hello(fields: Mapping[str, Any]) -> Hello:
    """Read a decoded hello; missing fields become ``None`` so the check can name them."""
    known = {"v", "hello", "codec", "transport", "service"}
    return Hello(
        codec=fields.get("codec"),  # type: ignore[arg-type]
        transport=fields.get("transport"),  # type: ignore[arg-type]
        service=fields.get("service"),  # type: ignore[arg-type]
        version=fields.get("v"),
        extra={k: v for k, v in fields.items() if k not in known},
    )


def hello_problems(request: Hello, codec: str, transport: str, service: str) -> tuple[str, str]:
    """Why the server must refuse `request`: ``(code, text)``, or ``("", "")`` if it fits."""
    if request.version != PROTOCOL_VERSION:
        return Code.VERSION, (
            f"protocol version: client speaks {request.version!r}, server speaks "
            f"{PROTOCOL_VERSION}: upgrade srpclib on the older side"
        )
    problems = []
    if request.codec != codec:
        problems.append(f"codec: client uses {request.codec!r}, server uses {codec!r}")
    if request.transport not in (None, transport):
        problems.append(f"transport: client uses {request.transport!r}, server uses {transport!r}")
    if request.service != service:
        problems.append(f"service: client expects {request.service!r}, server serves {service!r}")
    if problems:
        return Code.MISMATCH, "; ".join(problems)
    return "", ""


def hello_refusal(
    code: str, problems: str, codec: str, transport: str, service: str, *, prefix: bool = True
) -> bytes:
    """The server's reply to a hello it refuses, naming both sides' settings (`prefix`: the
    text starts with "client and server settings disagree: ")."""
    return encode_control(
        {
            "v": PROTOCOL_VERSION,
            "ok": False,
            "code": code,
            "codec": codec,
            "transport": transport,
            "service": service,
            "error": ("client and server settings disagree: " if prefix else "") + problems,
        }
    )


@dataclass(frozen=True)
class ProcedureInfo:
    """What a hello reply says about one procedure: its fingerprint and signature text."""

    fingerprint: str
    signature: str


@dataclass(frozen=True)
class HelloReply:
    """The server's answer to an accepted hello.

    Attributes:
        session: the token every request of this client carries (any server of the service
            with the same settings accepts it).
        procedures: name -> `ProcedureInfo` for every procedure the server serves.
        extra: other fields (limits the server advertises, the authentication proof...).
    """

    codec: str
    transport: str
    service: str
    session: str
    procedures: Mapping[str, ProcedureInfo]
    extra: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        """The reply as a control message."""
        return encode_control(
            {
                **self.extra,
                "v": PROTOCOL_VERSION,
                "ok": True,
                "codec": self.codec,
                "transport": self.transport,
                "service": self.service,
                "session": self.session,
                "procedures": {
                    name: [info.fingerprint, info.signature]
                    for name, info in self.procedures.items()
                },
            }
        )


def parse_hello_reply(message: bytes, address: str) -> HelloReply:
    """Validate the server's hello reply; raise `MismatchError`/`ProtocolError` if it is bad."""
    if not is_control(message):
        raise ProtocolError(
            f"the server at {address} did not answer the srpc hello: it is not an srpc server, "
            "or it speaks an older protocol"
        )
    reply = decode_control(message)
    if reply.get("code") == Code.BUSY:
        raise ServerUnavailableError(f"the server at {address} is busy: {reply.get('error')}")
    if reply.get("code") == Code.AUTH:
        raise AuthenticationError(
            f"the server at {address} refused the hello: {reply.get('error')}"
        )
    if reply.get("v") != PROTOCOL_VERSION or not reply.get("ok"):
        error = reply.get("error") or (
            f"protocol version: server speaks {reply.get('v')!r}, client speaks "
            f"{PROTOCOL_VERSION}: upgrade srpclib on the older side"
        )
        raise MismatchError(f"{address}: {error}")
    session, procedures = reply.get("session"), reply.get("procedures")
    if not isinstance(session, str) or not isinstance(procedures, dict):
        raise ProtocolError(f"the server at {address} sent a malformed hello reply")
    infos = {}
    for name, entry in procedures.items():
        if not (isinstance(entry, list) and len(entry) == 2 and all(type(e) is str for e in entry)):
            raise ProtocolError(f"the server at {address} sent a malformed hello reply")
        infos[name] = ProcedureInfo(entry[0], entry[1])
    known = {"v", "ok", "codec", "transport", "service", "session", "procedures"}
    return HelloReply(
        codec=str(reply.get("codec")),
        transport=str(reply.get("transport")),
        service=str(reply.get("service")),
        session=session,
        procedures=infos,
        extra={k: v for k, v in reply.items() if k not in known},
    )


# -- cancel ----------------------------------------------------------------------------------


def cancel(call_id: int, session: str, extra: Mapping[str, Any] | None = None) -> bytes:
    """Ask the server to cancel the call `call_id` (a control message; `extra`: more fields,
    such as the ``mac`` a shared secret requires)."""
    return encode_control(
        {**(extra or {}), "v": PROTOCOL_VERSION, "cancel": call_id, "session": session}
    )


def cancel_ack(call_id: int, found: bool) -> bytes:
    """The server's answer to a cancel: whether the call was still running."""
    return encode_control({"v": PROTOCOL_VERSION, "ok": True, "cancel": call_id, "found": found})


# -- reflection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcedureDescription:
    """What reflection says about one procedure (`srpc list`)."""

    signature: str
    doc: str | None
    fingerprint: str


def reflect(session: str, extra: Mapping[str, Any] | None = None) -> bytes:
    """Ask the server for its interface (a control message carrying the session token the
    hello issued; `extra`: more fields, such as the ``mac`` a shared secret requires)."""
    return encode_control(
        {**(extra or {}), "v": PROTOCOL_VERSION, "reflect": True, "session": session}
    )


def reflect_mac(request_key: bytes, session: str) -> str:
    """The ``mac`` of a reflection request with a shared secret: an HMAC of the session token
    under the session's request key (`srpc_core.auth.CallKeys.request`), hex."""
    return hmac.digest(request_key, b"reflect|" + session.encode(), hashlib.sha256)[:16].hex()


def reflection(service: str, procedures: Mapping[str, ProcedureDescription]) -> bytes:
    """The server's answer to a reflection request: the interface, procedure by procedure."""
    return encode_control(
        {
            "v": PROTOCOL_VERSION,
            "ok": True,
            "reflect": {
                "service": service,
                "procedures": {
                    name: {"signature": p.signature, "doc": p.doc, "fingerprint": p.fingerprint}
                    for name, p in procedures.items()
                },
            },
        }
    )


def parse_reflection(message: bytes, address: str) -> tuple[str, dict[str, ProcedureDescription]]:
    """Read the answer to a reflection request: ``(service, procedures)``. Raises what
    `raise_control_error` raises for a control error (reflection turned off: `ProtocolError`
    with code ``disabled``), `ProtocolError` for a malformed answer."""
    if not is_control(message):
        raise ProtocolError(f"the server at {address} did not answer the reflection request")
    fields = decode_control(message)
    if fields.get("ok") is not True:
        raise_control_error(message, address)
    body = fields.get("reflect")
    malformed = ProtocolError(f"the server at {address} sent a malformed reflection answer")
    if not isinstance(body, dict) or not isinstance(body.get("procedures"), dict):
        raise malformed
    procedures = {}
    for name, entry in body["procedures"].items():
        if not isinstance(entry, dict):
            raise malformed
        signature, doc, fingerprint = (
            entry.get("signature"),
            entry.get("doc"),
            entry.get("fingerprint"),
        )
        if type(signature) is not str or type(fingerprint) is not str:
            raise malformed
        if doc is not None and type(doc) is not str:
            raise malformed
        procedures[str(name)] = ProcedureDescription(signature, doc, fingerprint)
    return str(body.get("service", "")), procedures


# -- requests and responses ------------------------------------------------------------------


#: A decoded request: ``(call_id, session, procedure, args, kwargs, metadata)`` (a plain tuple:
#: it is built for every call).
Request = tuple[int, str, str, list[Any], dict[str, Any], dict[str, Any]]


_NO_METADATA: dict[str, Any] = {}


def encode_request(
    codec: Codec,
    call_id: int,
    session: str,
    procedure: str,
    args: list[Any] | tuple[Any, ...],
    kwargs: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> bytes:
    """A request as bytes. Raises the codec's `EncodeError` for a value it cannot carry."""
    if metadata:
        return codec.encode([call_id, session, procedure, args, kwargs, metadata])
    return codec.encode([call_id, session, procedure, args, kwargs])


def decode_request(codec: Codec, message: bytes) -> Request | bytes:
    """The request in `message`, or the control error (bytes) to answer instead.

    Never raises for bad input: garbage gets an answer naming what was wrong.
    """
    try:
        request = codec.decode(message)
    except DecodeError as exc:
        return control_error(
            f"could not decode the request with codec {codec.name!r}: {exc}", Code.DECODE
        )
    except RecursionError:
        return control_error(f"the request is nested too deeply for codec {codec.name!r}")
    return check_request(request)


def check_request(request: Any) -> Request | bytes:
    """The request a decoded message holds, or the control error (bytes) to answer instead."""
    if type(request) is not list or not 5 <= len(request) <= 6:
        if type(request) is list and len(request) == 4:
            return control_error(
                "this looks like a protocol version 1 request; this server speaks version "
                f"{PROTOCOL_VERSION}: upgrade srpclib on the client",
                Code.VERSION,
            )
        return control_error(_MALFORMED_REQUEST)
    call_id, session, name, args, kwargs = request[:5]
    metadata = request[5] if len(request) == 6 else _NO_METADATA
    if (
        type(call_id) is not int
        or type(session) is not str
        or type(name) is not str
        or type(args) is not list
        or type(kwargs) is not dict
        or type(metadata) is not dict
        or (kwargs and not all(type(key) is str for key in kwargs))
        or (
            metadata
            # the common case, srpc's own deadline alone, needs no walk over the keys
            and (len(metadata) != 1 or META_TIMEOUT_MS not in metadata)
            and not all(type(key) is str for key in metadata)
        )
    ):
        return control_error(_MALFORMED_REQUEST, call_id=call_id if type(call_id) is int else None)
    return (call_id, session, name, args, kwargs, metadata)


_MALFORMED_REQUEST = (
    "malformed request: expected [id, session, procedure, args, kwargs] or [..., metadata] with "
    "an integer id, the session token from the hello, a procedure name, a list of arguments, a "
    "map of keyword arguments and a map of metadata"
)


def encode_result(codec: Codec, call_id: int, result: Any) -> bytes:
    """A successful response. Raises the codec's `EncodeError` if `result` cannot travel."""
    return codec.encode([call_id, STATUS_OK, result])


def encode_error(codec: Codec, call_id: int, error: WireError) -> bytes:
    """An error response; falls back to the message alone when the args cannot travel."""
    try:
        return codec.encode([call_id, STATUS_ERROR, error])
    except SrpcError:  # args or attributes the codec cannot carry: keep the message only
        slim: dict[str, Any] = {**error, "args": [error["message"]]}
        slim.pop("attributes", None)
        return codec.encode([call_id, STATUS_ERROR, slim])


def decode_response(codec: Codec, message: bytes, call_id: int, address: str) -> tuple[bool, Any]:
    """Read the response to `call_id`: ``(True, result)`` or ``(False, WireError map)``.

    Raises for a control error (see `raise_control_error`) or a malformed response.
    """
    if message[:5] == CONTROL_PREFIX:
        raise_control_error(message, address)
    try:
        response = codec.decode(message)
    except RecursionError:
        raise ProtocolError(f"the server at {address} sent a response nested too deeply") from None
    return read_response(response, call_id, address)


def read_response(response: Any, call_id: int, address: str) -> tuple[bool, Any]:
    """`decode_response` after the decoding: the outcome a decoded response holds."""
    if type(response) is list and len(response) == 3 and response[0] == call_id:
        status = response[1]
        if status == STATUS_OK:
            return True, response[2]
        if status == STATUS_ERROR and isinstance(response[2], dict):
            return False, response[2]
        raise ProtocolError(f"the server at {address} sent an unknown status {status!r}")
    raise ProtocolError(
        f"the server at {address} sent a malformed response (expected [{call_id}, status, value])"
    )


def timeout_metadata(seconds: float, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Request metadata saying that the caller still waits `seconds` (``timeout_ms``, rounded
    down to whole milliseconds), added to `metadata` when given."""
    if metadata:
        return {**metadata, META_TIMEOUT_MS: int(seconds * 1000)}
    return {META_TIMEOUT_MS: int(seconds * 1000)}


def remaining_timeout(metadata: Mapping[str, Any]) -> float | None:
    """The seconds the caller still waits, from a request's metadata (``timeout_ms``, else
    ``timeout``); None if neither is given as a number."""
    value = metadata.get(META_TIMEOUT_MS)
    if type(value) is int:
        return value / 1000
    value = metadata.get(META_TIMEOUT)
    if type(value) is float or type(value) is int:
        return float(value)
    return None


def expired_error(procedure: str) -> CallTimeoutError:
    """The error a server answers for a call whose deadline passed before it started."""
    return CallTimeoutError(f"the deadline of {procedure}() passed before the server started it")


__all__ = [
    "CONTROL_PREFIX",
    "META_TIMEOUT",
    "META_TIMEOUT_MS",
    "META_TRACEPARENT",
    "META_TRACESTATE",
    "PROTOCOL_VERSION",
    "STATUS_ERROR",
    "STATUS_OK",
    "Code",
    "ControlError",
    "Hello",
    "HelloReply",
    "ProcedureDescription",
    "ProcedureInfo",
    "Request",
    "WireError",
    "cancel",
    "cancel_ack",
    "check_request",
    "control_error",
    "decode_control",
    "decode_request",
    "decode_response",
    "encode_control",
    "encode_error",
    "encode_request",
    "encode_result",
    "expired_error",
    "hello",
    "hello_problems",
    "hello_refusal",
    "is_control",
    "parse_control_error",
    "parse_hello",
    "parse_hello_reply",
    "parse_reflection",
    "raise_control_error",
    "read_response",
    "reflect",
    "reflect_mac",
    "reflection",
    "remaining_timeout",
    "timeout_metadata",
]
