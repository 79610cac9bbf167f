"""`srpc_core.transport.answer`, the guard every listener puts around the request handler."""

from __future__ import annotations

import logging

import pytest

from srpc_core import protocol
from srpc_core.transport import answer


def _broken_handler(message: bytes) -> bytes:
    raise RuntimeError("a bug in the handler, holding " + "x" * 10_000)


def test_a_failing_handler_costs_one_log_line_not_one_traceback_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="srpc")
    for _ in range(200):
        reply = answer(_broken_handler, b"request", 1024)
        assert protocol.parse_control_error(reply).code == protocol.Code.INTERNAL
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None  # the traceback only at DEBUG


def test_a_response_above_the_limit_becomes_a_control_error() -> None:
    reply = answer(lambda message: b"y" * 2000, b"request", 1024)
    error = protocol.parse_control_error(reply)
    assert error.code == protocol.Code.TOO_LARGE and "2000 bytes" in error.message
