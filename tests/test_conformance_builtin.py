"""The built-in plugins and the example third-party plugin pass the conformance kit."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from srpc_core.testing import CodecConformance, TransportConformance
from srpc_plugins.cbor_codec import CborCodec
from srpc_plugins.json_codec import JsonCodec
from srpc_plugins.msgpack_codec import MsgpackCodec
from srpc_plugins.tcp import TcpTransport

EXAMPLE_SRC = Path(__file__).resolve().parent.parent / "examples" / "srpc-plugin-example" / "src"
sys.path.insert(0, str(EXAMPLE_SRC))  # the example plugin is not installed in srpc's own venv

from srpc_plugin_example.msgpack_codec import MsgpackCodec as ExampleMsgpackCodec  # noqa: E402
from srpc_plugin_example.uds import UdsTransport  # noqa: E402


class TestJsonCodec(CodecConformance):
    codec = JsonCodec
    extra_values = (2**100, -(2**70))


class TestCborCodec(CodecConformance):
    codec = CborCodec
    extra_values = (2**64, 2**100, -(2**70))


class TestCborByRegisteredName(CodecConformance):
    codec = "cbor"  # found through srpc's own entry points, as srpc.toml would


class TestMsgpackCodec(CodecConformance):
    codec = MsgpackCodec


class TestMsgpackByRegisteredName(CodecConformance):
    codec = "msgpack"  # srpc's own entry point


class TestMsgpackCodecWithSmallBudgets(CodecConformance):
    codec = MsgpackCodec
    options = {"max_depth": 8, "max_containers": 64}


class TestExampleMsgpackCodec(CodecConformance):
    codec = ExampleMsgpackCodec


class TestTcpTransport(TransportConformance):
    transport = TcpTransport


class TestTcpByRegisteredNameWithCbor(TransportConformance):
    transport = "tcp"
    codec = "cbor"


class TestTcpByRegisteredNameWithMsgpack(TransportConformance):
    transport = "tcp"
    codec = "msgpack"


class TestUdsTransport(TransportConformance):
    transport = UdsTransport
    codec = ExampleMsgpackCodec

    @pytest.fixture
    def listen_host(self) -> Iterator[str]:
        # A short private directory: Unix socket paths are limited to about 100 bytes.
        with tempfile.TemporaryDirectory(prefix="srpc-uds-") as directory:
            yield directory
