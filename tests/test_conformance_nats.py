"""The nats transport passes the conformance kit, against a real nats-server."""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator

import pytest
from nats_support import NatsServer, nats_server  # noqa: F401  (a fixture)

from srpc_core.testing import TransportConformance
from srpc_core.testing.transports import RunningServer

nats_plugin = pytest.importorskip("srpc_plugins.nats")
pytest.importorskip("nats", reason="needs nats-py: pip install 'srpclib[nats]'")
_subjects = itertools.count()


class _OnNats(TransportConformance):
    # The listener keeps no connections of its own: clients and servers each hold one
    # connection to nats-server, whose own idle handling (pings) applies. Nothing to time out.
    idle_timeout_option = None

    @pytest.fixture(autouse=True)
    def _use_nats(
        self,
        nats_server: NatsServer,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch,
    ) -> Iterator[None]:
        # The kit reaches listeners through Transport.connect/listen, which name no service:
        # a fixed subject (a new one per test, so nothing of an earlier test can answer).
        options = {"servers": [nats_server.url], "subject": f"srpc.kit.t{next(_subjects)}"}
        monkeypatch.setattr(type(self), "options", options)
        yield

    def raw_socket(self, running: RunningServer) -> socket.socket | None:
        # A NATS listener has no socket a peer connects to: raw bytes would reach nats-server,
        # not srpc. Garbage as NATS messages is test_garbage_messages_get_an_answer.
        return None

    # NATS has no connections: the async listener hands the core each request as a channel
    # of one message (srpc_plugins/nats/aio.py says why). The kit skips its three checks of
    # connection behaviour; what they stand for on NATS is in tests/test_nats_async.py
    # (test_large_requests_at_once_come_back_whole, test_no_server_fails_at_once,
    # test_sigterm_drains_the_asyncio_server).
    connectionless = True


class TestNatsTransport(_OnNats):
    transport = nats_plugin.NatsTransport


class TestNatsByRegisteredNameWithCbor(_OnNats):
    transport = "nats"
    codec = "cbor"


class TestNatsWithoutFlowControl(_OnNats):
    transport = nats_plugin.NatsTransport

    @pytest.fixture(autouse=True)
    def _no_flow_control(self, _use_nats: None, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(type(self), "options", {**self.options, "flow_control": False})
