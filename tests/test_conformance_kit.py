"""The conformance kit catches broken plugins: it is run, as an author would, on bad ones."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from support import child_env

BROKEN_PLUGINS = '''
import json
import threading

from srpc_core import DecodeError, EncodeError
from srpc_core.testing import CodecConformance, TransportConformance
from srpc_plugins.json_codec import JsonCodec
from srpc_plugins.tcp import TcpTransport


class SloppyCodec(JsonCodec):
    """Ignores bytes after the message, turns sets into lists, claims bytes it cannot carry."""

    name = "sloppy"
    value_types = (*JsonCodec.value_types, bytes)

    def encode(self, message):
        try:
            return json.dumps(message, default=list).encode()
        except ValueError as exc:
            raise EncodeError(str(exc)) from None

    def decode(self, data):
        try:
            return json.JSONDecoder().raw_decode(data.decode())[0]
        except ValueError as exc:
            raise DecodeError(str(exc)) from None


class SerialTransport(TcpTransport):
    """Serves one call at a time."""

    def listen(self, host, port, handler):
        lock = threading.Lock()

        def one_at_a_time(message):
            with lock:
                return handler(message)

        return super().listen(host, port, one_at_a_time)


class TestSloppyCodec(CodecConformance):
    codec = SloppyCodec


class TestSerialTransport(TransportConformance):
    transport = SerialTransport
    rendezvous_timeout = 1.0
'''


def run_kit(tmp_path: Path) -> tuple[set[str], str]:
    (tmp_path / "test_broken_plugins.py").write_text(BROKEN_PLUGINS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=child_env(),
    )
    failed = set(re.findall(r"^FAILED \S+::(\w+::\w+)", result.stdout, re.MULTILINE))
    return failed, result.stdout + result.stderr


def test_the_kit_fails_broken_plugins_and_only_where_they_are_broken(tmp_path: Path) -> None:
    failed, output = run_kit(tmp_path)
    assert failed == {
        "TestSloppyCodec::test_round_trips_every_declared_type",
        "TestSloppyCodec::test_refuses_values_it_cannot_carry",
        "TestSloppyCodec::test_bytes_after_a_message_are_a_decode_error",
        "TestSerialTransport::test_calls_run_side_by_side",
    }, output
    assert "transport serves calls one after another" in output
    assert "was encoded: declare its type in value_types, or refuse it" in output
