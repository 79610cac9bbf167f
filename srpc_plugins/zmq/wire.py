"""The ZeroMQ frames a ``zmq`` client and server exchange.

The srpc message itself (a hello, a request, a response: see docs/protocol.md) is always the
last frame and is never looked into here. The frames before it route it.

The client's DEALER socket sends ``[tag, b"", message]``: `tag` is a 4-byte request counter of
that channel (the client uses it to drop a late reply to a call that already timed out), then
an empty delimiter. The server's ROUTER socket sees ``[peer id, tag, b"", message]``, and
answers with the same frames before the message: the *envelope*, which it never interprets.
A message of any other shape is refused.

Tags: a lockstep client (the sync `channel.ZmqChannel`, one request out at a time) sends
4-byte tags (`LOCKSTEP_TAG_BYTES`); the async client's channel (`aio.AsyncZmqChannel`, many
requests out at once) sends 8-byte tags. The threaded server echoes every envelope. The async
listener (`aio.AsyncZmqListener`) answers a lockstep client under the last tag it sent (its
one request's) and a multiplexing client under an empty tag: it cannot tell which request an
answer is for (the client matches answers to calls by the ids inside the messages).

An empty message (`END`) from the async listener ends the connection: ZeroMQ cannot close one
peer's connection, so when the server ends one (the peer was idle for ``idle_timeout``, the
server stops) it says so, and the client's channel ends as a closed TCP connection would (an
srpc message is never empty).

(The ZeroMQ broker's credit protocol, ``READY``/``CALL``/``REPLY``/``BYE`` between servers and
``srpc broker``, is retired with the broker: many servers of a service run on NATS.)
"""

from __future__ import annotations

DELIMITER = b""
#: What a server's ROUTER receives from a client, exactly: peer id, tag, delimiter, message.
#: A message of any other shape is refused (nothing in it is looked at).
REQUEST_FRAMES = 4
#: The message by which the async listener ends a peer's connection.
END = b""
#: The length of a lockstep client's tags (a 4-byte big-endian request counter).
LOCKSTEP_TAG_BYTES = 4


def split_client_request(frames: list[bytes]) -> tuple[list[bytes], bytes] | None:
    """Split a client's request, as a server's ROUTER reads it, into the envelope and the message.

    A request is exactly `REQUEST_FRAMES` frames, ``[peer id, tag, b"", message]``; the envelope
    is returned with the delimiter, so ``envelope + [answer]`` is the answer. Returns None for
    anything else.
    """
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
    "DELIMITER",
    "END",
    "LOCKSTEP_TAG_BYTES",
    "REQUEST_FRAMES",
    "ms",
    "split_client_request",
    "tcp_endpoint",
]
