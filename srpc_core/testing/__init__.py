"""The srpc conformance kit: the checks every codec and transport plugin must pass.

Write a test module in your plugin's repository and run it with pytest::

    from srpc_core.testing import CodecConformance, TransportConformance
    from my_plugin import MyCodec, MyTransport

    class TestMyCodec(CodecConformance):
        codec = MyCodec

    class TestMyTransport(TransportConformance):
        transport = MyTransport

Name the thing under test by its factory (usually the class: it need not be installed) or by its
registered name (``codec = "my"``: it must be installed). See the class docstrings for the
options, and docs/plugins.md for the contracts the checks come from.

This package imports pytest; nothing else in srpc imports this package.
"""

from srpc_core.testing.codecs import CodecConformance
from srpc_core.testing.interface import ConformanceError, ConformanceInterface
from srpc_core.testing.service import AsyncConformanceService, ConformanceService, ServerOnlyError
from srpc_core.testing.transports import (
    LIMIT,
    RunningServer,
    TransportConformance,
    connect_raw,
    start_server,
)
from srpc_core.testing.values import SAMPLES, same

__all__ = [
    "LIMIT",
    "SAMPLES",
    "AsyncConformanceService",
    "CodecConformance",
    "ConformanceError",
    "ConformanceInterface",
    "ConformanceService",
    "RunningServer",
    "ServerOnlyError",
    "TransportConformance",
    "connect_raw",
    "same",
    "start_server",
]
