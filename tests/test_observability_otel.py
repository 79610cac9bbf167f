"""OpenTelemetry through real processes: a client calls a front service whose implementation
calls a back service; each process records with the SDK's in-memory exporters and dumps what
it recorded as it ends. One trace crosses the three processes (W3C trace context in request
metadata), spans and metrics carry the RPC semantic-convention attributes, failures say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess, generate_stubs, make_project, run_client

pytest.importorskip("opentelemetry.sdk")

BACK_INTERFACE = '''\
from abc import ABC, abstractmethod


class BackInterface(ABC):
    """The service behind the front."""

    @abstractmethod
    def double(self, x: int) -> int:
        """Return 2 * x."""
'''

BACK = """\
from back.back_interface import BackInterface


class Back(BackInterface):
    def double(self, x):
        return 2 * x
"""

FRONT_INTERFACE = '''\
from abc import ABC, abstractmethod


class FrontInterface(ABC):
    """The service clients call."""

    @abstractmethod
    def relay(self, x: int) -> int:
        """Return the back's double of x, plus one."""

    @abstractmethod
    def fail(self) -> int:
        """Raise ValueError."""

    @abstractmethod
    def ping(self) -> str:
        """Return "pong"."""
'''

FRONT = '''\
from front.front_interface import FrontInterface
from srpc_back_client_stub import SrpcBackClientStub


class Front(FrontInterface):
    def __init__(self):
        self.back = SrpcBackClientStub(config="to_back.toml")

    def relay(self, x):
        return self.back.double(x) + 1

    def fail(self):
        raise ValueError("the caller's secret")

    def ping(self):
        return "pong"


class AsyncFront(Front):
    """Served by the asyncio server: relay runs in its thread pool."""

    async def ping(self):
        return "pong"
'''

#: Sets up the SDK with in-memory exporters; `dump(path)` writes what was recorded.
OTEL_DUMP = """\
import json

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


def dump(path):
    spans = [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace": format(s.context.trace_id, "032x"),
            "id": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "status": s.status.status_code.name,
            "attributes": dict(s.attributes),
        }
        for s in exporter.get_finished_spans()
    ]
    points = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points.append(
                        {"name": metric.name, "unit": metric.unit, "count": point.count,
                         "attributes": dict(point.attributes)}
                    )
    with open(path, "w") as f:
        json.dump({"spans": spans, "metrics": points}, f)
"""

SERVER = """\
import sys
sys.path.insert(0, ".")
import otel_dump
import srpc_core
from {package}.{package}_interface import {interface}
from {package}.{package} import {implementation}
srpc_core.Server({interface}, {implementation}(), config={config!r}).start()
otel_dump.dump({out!r})
"""

CLIENT = """\
import otel_dump
from srpc_front_client_stub import SrpcFrontClientStub

front = SrpcFrontClientStub(config="to_front.toml")
print(front.relay(20))
try:
    front.fail()
except ValueError as exc:
    print(type(exc).__name__)
otel_dump.dump("client.json")
"""

OTEL = "\n[srpc.otel]\nenabled = true\n"


def toml(path: Path, port: int, otel: bool = True) -> str:
    path.write_text(f'[srpc]\nhost = "127.0.0.1"\nport = {port}\n' + (OTEL if otel else ""))
    return path.name


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = make_project(
        tmp_path,
        "front",
        {
            "front/front_interface.py": FRONT_INTERFACE,
            "front/front.py": FRONT,
            "back/__init__.py": "",
            "back/back_interface.py": BACK_INTERFACE,
            "back/back.py": BACK,
            "otel_dump.py": OTEL_DUMP,
        },
    )
    assert generate_stubs(project, "back/back_interface.py").returncode == 0
    return project


def server(project: Path, package: str, implementation: str, config: str) -> ServerProcess:
    code = SERVER.format(
        package=package,
        interface=f"{package.capitalize()}Interface",
        implementation=implementation,
        config=config,
        out=f"{package}.json",
    )
    return ServerProcess(project, package, code=code)


def recorded(project: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize("front_implementation", ["Front", "AsyncFront"])
def test_one_trace_crosses_three_processes(project: Path, front_implementation: str) -> None:
    back = server(project, "back", "Back", toml(project / "back.toml", 0))
    back.start()
    try:
        toml(project / "to_back.toml", back.port)
        front = server(project, "front", front_implementation, toml(project / "front.toml", 0))
        with front:
            toml(project / "to_front.toml", front.port)
            client = run_client(project, CLIENT)
            assert client.stdout == "41\nValueError\n", client.stderr
            front.stop()
            assert front.process is not None and front.process.returncode == 0, front.text()
    finally:
        back.stop()
    spans = {where: recorded(project, where)["spans"] for where in ("client", "front", "back")}
    (call_relay, call_fail) = spans["client"]
    assert call_relay["name"] == "FrontInterface/relay" and call_relay["kind"] == "CLIENT"
    assert call_relay["parent"] is None
    assert call_relay["attributes"] == {
        "rpc.system": "srpc",
        "rpc.service": "FrontInterface",
        "rpc.method": "relay",
        "server.address": "127.0.0.1",
        "server.port": front.port,
        "network.transport": "tcp",
    }
    assert call_fail["status"] == "ERROR" and call_fail["attributes"]["error.type"] == "ValueError"

    front_spans = {(s["name"], s["kind"]): s for s in spans["front"]}
    served = front_spans[("FrontInterface/relay", "SERVER")]
    onward = front_spans[("BackInterface/double", "CLIENT")]
    failed = front_spans[("FrontInterface/fail", "SERVER")]
    (back_served,) = spans["back"]
    assert back_served["name"] == "BackInterface/double" and back_served["kind"] == "SERVER"
    # One trace, parent to child: client -> front (served) -> front (calls back) -> back.
    trace_id = call_relay["trace"]
    assert {served["trace"], onward["trace"], back_served["trace"]} == {trace_id}
    assert served["parent"] == call_relay["id"]
    assert onward["parent"] == served["id"]
    assert back_served["parent"] == onward["id"]
    assert failed["trace"] == call_fail["trace"] != trace_id
    assert failed["parent"] == call_fail["id"]
    assert failed["status"] == "ERROR" and failed["attributes"]["error.type"] == "ValueError"
    assert served["attributes"]["rpc.method"] == "relay" and served["status"] == "UNSET"
    assert "the caller's secret" not in json.dumps(spans)

    def points(where: str, name: str) -> list[dict[str, Any]]:
        return [p for p in recorded(project, where)["metrics"] if p["name"] == name]

    server_durations = {
        p["attributes"]["rpc.method"]: p for p in points("front", "rpc.server.duration")
    }
    assert server_durations["relay"]["count"] == 1 and server_durations["relay"]["unit"] == "ms"
    assert server_durations["fail"]["attributes"]["error.type"] == "ValueError"
    assert points("back", "rpc.server.duration")[0]["count"] == 1
    (onward_duration,) = points("front", "rpc.client.duration")
    assert onward_duration["attributes"]["rpc.service"] == "BackInterface"
    client_durations = points("client", "rpc.client.duration")
    assert sorted(p["attributes"]["rpc.method"] for p in client_durations) == ["fail", "relay"]


def test_off_by_default_records_nothing(project: Path) -> None:
    """Without [srpc.otel] enabled, neither side records a span (nor pays for one)."""
    with server(project, "back", "Back", toml(project / "back.toml", 0, otel=False)) as back:
        toml(project / "to_back.toml", back.port, otel=False)
        code = (
            "import otel_dump\n"
            "from srpc_back_client_stub import SrpcBackClientStub\n"
            "back = SrpcBackClientStub(config='to_back.toml')\n"
            "assert back._srpc._observers == []\n"
            "print(back.double(4))\n"
            "otel_dump.dump('client.json')\n"
        )
        client = run_client(project, code)
        assert client.stdout == "8\n", client.stderr
        back.stop()
    assert recorded(project, "client")["spans"] == []
    assert recorded(project, "back")["spans"] == []
