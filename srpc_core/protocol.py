"""The srpc message layer, independent of any codec or transport (see docs/protocol.md).

A transport carries opaque *messages* (byte strings). Two kinds exist:

* **Control messages** start with `CONTROL_PREFIX` (``b"\\x00srpc"``) followed by a UTF-8 JSON
  object. They are codec-independent, so the hello handshake and errors about undecodable
  input always reach the peer in a form it can read.
* **Call messages** are anything else: a request or a response encoded with the configured
  codec.

Request:  ``[id, procedure, args, kwargs]``
Response: ``[id, STATUS_OK, result]`` or ``[id, STATUS_ERROR, error]`` where `error` is a
`WireError` map.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

from srpc_core.errors import MismatchError, ProtocolError

PROTOCOL_VERSION = 1
CONTROL_PREFIX = b"\x00srpc"
STATUS_OK = 0
STATUS_ERROR = 1


class WireError(TypedDict):
    """An exception as it travels in an error response."""

    type: str  # class name, e.g. "ZeroDivisionError"
    module: str  # defining module, e.g. "builtins"
    message: str  # str(exception)
    args: list[Any]  # exception.args when the codec can carry them, else [message]
    base: str  # nearest built-in base class name, e.g. "ValueError"
    traceback: str | None  # formatted remote traceback, only when the server allows it


def encode_control(fields: dict[str, Any]) -> bytes:
    """Encode a control message."""
    return CONTROL_PREFIX + json.dumps(fields, separators=(",", ":")).encode()


def is_control(message: bytes) -> bool:
    """True if `message` is a control message rather than a codec-encoded call message."""
    return message[:5] == CONTROL_PREFIX


def decode_control(message: bytes) -> dict[str, Any]:
    """Decode a control message; raise `ProtocolError` if it is malformed."""
    try:
        fields = json.loads(message[len(CONTROL_PREFIX) :])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed srpc control message: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("malformed srpc control message: not a JSON object")
    return fields


def control_error(message: str) -> bytes:
    """A control message that reports `message` to the peer (used where no codec applies)."""
    return encode_control({"v": PROTOCOL_VERSION, "ok": False, "error": message})


def hello(codec: str, transport: str, service: str) -> bytes:
    """The client's first message on every new channel."""
    return encode_control(
        {
            "v": PROTOCOL_VERSION,
            "hello": True,
            "codec": codec,
            "transport": transport,
            "service": service,
        }
    )


def answer_hello(request: dict[str, Any], codec: str, transport: str, service: str) -> bytes:
    """The server's reply to a hello: ``ok`` or an error naming both sides' settings."""
    problems = []
    if request.get("v") != PROTOCOL_VERSION:
        problems.append(
            f"protocol version: client speaks {request.get('v')!r}, server speaks "
            f"{PROTOCOL_VERSION}"
        )
    if request.get("codec") != codec:
        problems.append(f"codec: client uses {request.get('codec')!r}, server uses {codec!r}")
    if request.get("transport") not in (None, transport):
        problems.append(
            f"transport: client uses {request.get('transport')!r}, server uses {transport!r}"
        )
    if request.get("service") not in (None, service):
        problems.append(
            f"service: client expects {request.get('service')!r}, server serves {service!r}"
        )
    reply: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "ok": not problems,
        "codec": codec,
        "transport": transport,
        "service": service,
    }
    if problems:
        reply["error"] = "client and server settings disagree: " + "; ".join(problems)
    return encode_control(reply)


def check_hello_reply(message: bytes, address: str) -> dict[str, Any]:
    """Validate the server's hello reply; raise `MismatchError`/`ProtocolError` if it is bad."""
    if not is_control(message):
        raise ProtocolError(
            f"the server at {address} did not answer the srpc hello: it is not an srpc server, "
            "or it speaks an older protocol"
        )
    reply = decode_control(message)
    if not reply.get("ok"):
        raise MismatchError(f"{address}: {reply.get('error', 'hello refused')}")
    return reply


def raise_control_error(message: bytes, address: str) -> None:
    """Raise the error a server reported in a control message sent instead of a response."""
    fields = decode_control(message)
    raise ProtocolError(f"the server at {address} rejected the request: {fields.get('error')}")
