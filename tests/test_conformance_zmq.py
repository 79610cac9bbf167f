"""The zmq transport passes the conformance kit (skipped until srpc_plugins.zmq exists)."""

from __future__ import annotations

import socket

import pytest

from srpc_core.testing import TransportConformance
from srpc_core.testing.transports import HANG, RunningServer, connect_raw

zmq_plugin = pytest.importorskip("srpc_plugins.zmq")

#: The first bytes every ZeroMQ peer sends (ZMTP 3 signature), unprompted, as it accepts.
ZMTP_SIGNATURE_BYTES = 10


class ZmqConformance(TransportConformance):
    """The kit, with raw sockets that first read the ZeroMQ greeting the listener sends.

    A ZeroMQ listener greets every connection at once with the 10-byte ZMTP signature, so a
    peer that says nothing still reads those bytes before anything else. The kit's silent
    peer expects its first read to be the end of the connection; reading the greeting first
    keeps that check honest: the peer still sends nothing, and the listener must close it
    (``[srpc.zmq] idle_timeout`` bounds the handshake it never completes).
    """

    def raw_socket(self, running: RunningServer) -> socket.socket | None:
        sock = connect_raw(running.server.address, HANG)
        if sock is None:
            return None
        greeting = b""
        while len(greeting) < ZMTP_SIGNATURE_BYTES:
            chunk = sock.recv(ZMTP_SIGNATURE_BYTES - len(greeting))
            assert chunk, f"the listener closed a new connection after {greeting!r}"
            greeting += chunk
        assert greeting[:1] == b"\xff" and greeting[-1:] == b"\x7f", greeting
        return sock


class TestZmqTransport(ZmqConformance):
    transport = zmq_plugin.ZmqTransport


class TestZmqByRegisteredNameWithCbor(ZmqConformance):
    transport = "zmq"
    codec = "cbor"
