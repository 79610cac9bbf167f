"""The zmq transport passes the conformance kit (skipped until srpc_plugins.zmq exists)."""

from __future__ import annotations

import pytest

from srpc_core.testing import TransportConformance

zmq_plugin = pytest.importorskip("srpc_plugins.zmq")


class TestZmqTransport(TransportConformance):
    transport = zmq_plugin.ZmqTransport


class TestZmqByRegisteredNameWithCbor(TransportConformance):
    transport = "zmq"
    codec = "cbor"
