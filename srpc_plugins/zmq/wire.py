"""The ZeroMQ frames the ``zmq`` transport and ``srpc broker`` exchange (docs/scaling.md).

The srpc message itself (a hello, a request, a response: see docs/protocol.md) is always the
last frame and is never looked into here. The frames before it route it.

**Client and server** (or the broker's front end, which looks like a server to clients). The
client's DEALER socket sends ``[tag, b"", message]``: `tag` is a 4-byte request counter of that
channel (the client uses it to drop a late reply to a call that already timed out), then an
empty delimiter. The server's ROUTER socket sees ``[peer id, tag, b"", message]``, and answers
with the same frames before the message: the *envelope*, which it never interprets.

**Server and broker** (a server in connect mode, ``[srpc.zmq] connect = ...``). The server's
DEALER socket talks to the broker's back-end ROUTER with a command frame first:

* server -> broker ``[READY, b"<n>"]``: "I have n idle workers" (absolute, sent on every
  (re)connection); ``[REPLY, *envelope, message]``: an answer, which also frees one worker;
  ``[BYE]``: "send me no more calls" (the server is stopping).
* broker -> server ``[CALL, *envelope, message]``: a call to serve; ``[BYE]``: the
  acknowledgement of the server's BYE: no call follows it on this connection.

The broker gives a server a call only while it has idle workers (credit), so a slow or busy
server is skipped instead of piling up a queue, and a stopping server loses no call.
"""

from __future__ import annotations

DELIMITER = b""
#: What a server's ROUTER receives from a client, exactly: peer id, tag, delimiter, message.
#: A message of any other shape is refused (nothing in it is looked at).
REQUEST_FRAMES = 4
#: A client's request: tag, delimiter, message. A server sees one routing frame more per hop.
MAX_ENVELOPE_FRAMES = 8

READY = b"READY"
REPLY = b"REPLY"
CALL = b"CALL"
BYE = b"BYE"

#: ZeroMQ heartbeats (ZMTP PING/PONG) between servers and the broker, in milliseconds: a peer
#: that vanished without closing its connection (a crashed host) is dropped after the timeout.
HEARTBEAT_INTERVAL_MS = 2000
HEARTBEAT_TIMEOUT_MS = 6000


def split_request(frames: list[bytes]) -> tuple[list[bytes], bytes] | None:
    """Split ``[*envelope, message]`` into the envelope and the message.

    The envelope holds at least one routing frame and ends with the empty delimiter; it is
    returned with the delimiter, so ``envelope + [reply]`` is the answer. Returns None when the
    frames do not have that shape.
    """
    if not 3 <= len(frames) <= MAX_ENVELOPE_FRAMES + 1 or frames[-2] != DELIMITER:
        return None
    return frames[:-1], frames[-1]


def split_client_request(frames: list[bytes]) -> tuple[list[bytes], bytes] | None:
    """`split_request` for a client's request read by a server's ROUTER: exactly
    `REQUEST_FRAMES` frames, ``[peer id, tag, b"", message]``; None for anything else."""
    if len(frames) != REQUEST_FRAMES or frames[2] != DELIMITER:
        return None
    return frames[:-1], frames[-1]


def ms(seconds: float) -> int:
    """Seconds as the whole milliseconds ZeroMQ's poll takes, rounded up (0.0004 s is not 0)."""
    return max(1, int(seconds * 1000 + 0.999))


def tcp_endpoint(host: str, port: int) -> str:
    """The ZeroMQ endpoint for host and port (IPv6 literals in brackets)."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


__all__ = [
    "BYE",
    "CALL",
    "DELIMITER",
    "HEARTBEAT_INTERVAL_MS",
    "HEARTBEAT_TIMEOUT_MS",
    "MAX_ENVELOPE_FRAMES",
    "READY",
    "REPLY",
    "REQUEST_FRAMES",
    "ms",
    "split_client_request",
    "split_request",
    "tcp_endpoint",
]
