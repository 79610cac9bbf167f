"""The plugin passes srpc's conformance kit: run ``pytest`` in this folder."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest
from srpc_core.testing import CodecConformance, TransportConformance

from srpc_plugin_example.msgpack_codec import MsgpackCodec
from srpc_plugin_example.uds import UdsTransport


class TestMsgpackCodec(CodecConformance):
    codec = MsgpackCodec


class TestUdsTransport(TransportConformance):
    transport = UdsTransport  # host 127.0.0.1: sockets in the default directory


class TestUdsTransportInADirectory(TransportConformance):
    transport = UdsTransport
    codec = MsgpackCodec

    @pytest.fixture
    def listen_host(self) -> Iterator[str]:
        # Socket paths are limited to about 100 bytes: a short directory, not tmp_path.
        with tempfile.TemporaryDirectory(prefix="srpc-uds-") as directory:
            yield directory


class TestUdsTransportAtASocketPath(TransportConformance):
    transport = UdsTransport

    @pytest.fixture
    def listen_host(self) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="srpc-uds-") as directory:
            yield f"{directory}/service.sock"
