"""Length-prefixed messages on a stream socket.

Every message is a 4-byte big-endian unsigned length followed by that many bytes: the framing
of srpc's own ``tcp`` transport (docs/protocol.md), here for any stream socket.
"""

from __future__ import annotations

import socket
import struct

HEADER = struct.Struct(">I")
#: Below this, header and body go out in one system call; above it, copying them together
#: would cost more than the second call.
SMALL = 64 * 1024


class FrameTooLarge(Exception):
    """The peer announced a message longer than we accept (its body was not read)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def send_frame(sock: socket.socket, message: bytes) -> None:
    """Send one message."""
    if len(message) < SMALL:
        sock.sendall(HEADER.pack(len(message)) + message)
    else:
        sock.sendall(HEADER.pack(len(message)))
        sock.sendall(message)


def recv_frame(sock: socket.socket, max_bytes: int) -> bytes | None:
    """Receive one message; None if the peer closed the connection between messages.

    Raises `FrameTooLarge` *before* reading (or allocating) a body longer than `max_bytes`, and
    `EOFError` if the peer closed the connection in the middle of a message.
    """
    header = _recv_exactly(sock, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    if size > max_bytes:
        raise FrameTooLarge(size)
    body = _recv_exactly(sock, size)
    if body is None:
        raise EOFError("the peer closed the connection in the middle of a message")
    return body


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes, or None if the connection ends first (EOFError if it ends midway)."""
    if size == 0:
        return b""
    first = sock.recv(size)  # usually the whole message: no buffer to assemble
    if len(first) == size:
        return first
    if not first:
        return None
    buffer = bytearray(size)
    buffer[: len(first)] = first
    view, received = memoryview(buffer), len(first)
    while received < size:
        count = sock.recv_into(view[received:])
        if count == 0:
            raise EOFError("the peer closed the connection in the middle of a message")
        received += count
    return bytes(buffer)
