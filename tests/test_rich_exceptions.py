"""Rich exceptions through a real server process and the generated stubs.

An exception of a class from the interface module comes back as that class, with its args and
its plain instance attributes converted by the class's annotations; anything else comes back
as a `RemoteError` keeping its name; nothing from the wire can stop a ``map()`` over the stub.
"""

from __future__ import annotations

import datetime
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ServerProcess, make_project

import srpc_core
from srpc_core.metrics import LogFollower, MetricsAggregator

INTERFACE = '''\
"""A warehouse: its exceptions carry data."""

from __future__ import annotations

import dataclasses
import datetime
from abc import ABC, abstractmethod


@dataclasses.dataclass
class Item:
    name: str
    qty: int


class OutOfStock(Exception):
    """Raised as OutOfStock(name, wanted, available): its args are one formatted message."""

    name: str
    wanted: int
    available: int
    restock: datetime.date
    item: Item
    tags: set[str]

    def __init__(self, name: str, wanted: int, available: int) -> None:
        super().__init__(f"{name}: wanted {wanted}, only {available} left")
        self.name = name
        self.wanted = wanted
        self.available = available
        self.restock = datetime.date(2030, 1, 31)
        self.item = Item(name, available)
        self.tags = {"fragile"}
        self._internal = "server only"


class Unannotated(Exception):
    def __init__(self, code, detail):
        super().__init__(code, detail)
        self.code = code
        self.detail = detail
        self.pair = (1, 2)
        self.lookup = {"a": [1, 2]}


class Reformatting(Exception):
    """Its __init__ accepts its own args, but formats them anew."""

    code: int

    def __init__(self, code: int = 0) -> None:
        super().__init__(f"code {code}")
        self.code = code


class Leveled(Exception):
    @property
    def level(self) -> str:
        return "defined by the class"


class WarehouseInterface(ABC):
    @abstractmethod
    def take(self, name: str, qty: int) -> int: ...

    @abstractmethod
    def fail(self, kind: str) -> None: ...

    @abstractmethod
    def next_value(self, n: int) -> int: ...
'''

IMPLEMENTATION = '''\
from warehouse.warehouse_interface import (
    Leveled, OutOfStock, Reformatting, Unannotated, WarehouseInterface,
)


class Hidden(ValueError):
    """Known only to the server: not on the client's allow-list."""

    def __init__(self, message):
        super().__init__(message)
        self.secret = "never set in the client"


class Warehouse(WarehouseInterface):
    def take(self, name: str, qty: int) -> int:
        if qty > 2:
            raise OutOfStock(name, qty, 2)
        return qty

    def fail(self, kind: str) -> None:
        if kind == "unannotated":
            raise Unannotated(7, "no annotations here")
        if kind == "reformatting":
            raise Reformatting(5)
        if kind == "leveled":
            error = Leveled("with a level")
            error.__dict__["level"] = "sent by the server"
            raise error
        if kind == "hidden":
            raise Hidden("from the server only")
        if kind == "surrogate":
            raise ValueError("a lone \\udcff surrogate")
        if kind == "huge":
            raise ValueError("x" * 10_000_000)
        raise AssertionError(kind)

    def next_value(self, n: int) -> int:
        if n == 2:
            raise StopIteration("the server ran out")
        return n
'''

SRPC_TOML = """\
[srpc]
codec = "{codec}"

[srpc.metrics]
flush_interval = 0.05
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    project = make_project(
        tmp_path_factory.mktemp("rich"),
        "warehouse",
        {
            "warehouse/warehouse_interface.py": INTERFACE,
            "warehouse/warehouse.py": IMPLEMENTATION,
        },
    )
    sys.path.insert(0, str(project))
    try:
        yield project
    finally:
        sys.path.remove(str(project))
        for name in [m for m in sys.modules if m.startswith(("warehouse", "srpc_warehouse"))]:
            del sys.modules[name]


class Running:
    def __init__(self, server: ServerProcess, stub: Any, interface: Any) -> None:
        self.server, self.stub, self.interface = server, stub, interface


@pytest.fixture(scope="module", params=["json", "cbor"])
def running(request: pytest.FixtureRequest, project: Path) -> Iterator[Running]:
    codec: str = request.param
    config = project / f"srpc_{codec}.toml"
    config.write_text(SRPC_TOML.format(codec=codec))
    interface = importlib.import_module("warehouse.warehouse_interface")
    stubs = importlib.import_module("srpc_warehouse_client_stub")
    with ServerProcess(project, "warehouse", config=config) as server:
        stub = stubs.SrpcWarehouseClientStub("127.0.0.1", server.port, config=config, timeout=20)
        yield Running(server, stub, interface)
        stub.close()


def test_an_annotated_exception_comes_back_with_typed_attributes(running: Running) -> None:
    interface = running.interface
    with pytest.raises(interface.OutOfStock) as raised:
        running.stub.take("widget", 5)
    error = raised.value
    assert type(error) is interface.OutOfStock
    assert error.args == ("widget: wanted 5, only 2 left",)
    assert str(error) == "widget: wanted 5, only 2 left"
    assert (error.name, error.wanted, error.available) == ("widget", 5, 2)
    assert type(error.restock) is datetime.date and error.restock == datetime.date(2030, 1, 31)
    assert type(error.item) is interface.Item and error.item == interface.Item("widget", 2)
    assert type(error.tags) is set and error.tags == {"fragile"}
    assert not hasattr(error, "_internal")  # private attributes never travel
    assert running.stub.take("widget", 1) == 1


def test_an_exception_without_annotations_keeps_its_args_and_wire_values(
    running: Running,
) -> None:
    with pytest.raises(running.interface.Unannotated) as raised:
        running.stub.fail("unannotated")
    error = raised.value
    assert error.args == (7, "no annotations here")
    assert (error.code, error.detail) == (7, "no annotations here")
    assert error.pair == [1, 2]  # no annotation: as the wire carries it
    assert error.lookup == {"a": [1, 2]}


def test_args_and_attributes_are_the_servers_even_when_init_reformats(running: Running) -> None:
    with pytest.raises(running.interface.Reformatting) as raised:
        running.stub.fail("reformatting")
    assert raised.value.args == ("code 5",) and str(raised.value) == "code 5"
    assert raised.value.code == 5


def test_a_property_of_the_class_is_never_overwritten(running: Running) -> None:
    with pytest.raises(running.interface.Leveled) as raised:
        running.stub.fail("leveled")
    assert raised.value.level == "defined by the class"
    assert "level" not in vars(raised.value)


def test_a_class_outside_the_allow_list_is_a_remote_error_keeping_its_name(
    running: Running,
) -> None:
    with pytest.raises(srpc_core.RemoteError) as raised:
        running.stub.fail("hidden")
    error = raised.value
    assert type(error).__name__ == "Hidden" and error.remote_type == "Hidden"
    assert error.remote_module == "warehouse.warehouse"
    assert isinstance(error, ValueError)
    assert str(error) == "from the server only"
    assert not hasattr(error, "secret")
    assert error.remote_traceback is None  # tracebacks are off by default


def test_a_map_over_the_stub_does_not_stop_silently_at_a_remote_stop_iteration(
    running: Running,
) -> None:
    assert list(map(running.stub.next_value, [0, 1])) == [0, 1]
    with pytest.raises(srpc_core.RemoteError) as raised:
        list(map(running.stub.next_value, [0, 1, 2, 3]))
    error = raised.value
    assert not isinstance(error, StopIteration)
    assert error.remote_type == "StopIteration" and str(error) == "the server ran out"

    def values() -> Iterator[int]:
        for n in [0, 1, 2, 3]:
            yield running.stub.next_value(n)

    with pytest.raises(srpc_core.RemoteError):  # not a RuntimeError from PEP 479, not an end
        list(values())


def test_a_lone_surrogate_and_a_huge_message_still_answer(running: Running) -> None:
    with pytest.raises(ValueError) as raised:
        running.stub.fail("surrogate")
    assert str(raised.value) == "a lone \\udcff surrogate"
    str(raised.value).encode()  # encodable text

    with pytest.raises(ValueError) as raised:
        running.stub.fail("huge")
    message = str(raised.value)
    assert message.startswith("x" * 1000) and message.endswith(" characters cut]")
    assert len(message) < 70_000
    assert running.stub.take("widget", 2) == 2  # the server goes on


def test_every_failed_call_is_counted_in_the_metrics(project: Path) -> None:
    """A failure whose message holds a lone surrogate used to break the error path and drop
    the call from the metrics; each failed call is a failure in the log."""
    config = project / "srpc_metrics.toml"
    config.write_text(SRPC_TOML.format(codec="json"))
    log = project / "metrics_check.log"
    config.write_text(
        config.read_text().replace("[srpc.metrics]", f"[srpc.metrics]\npath = {str(log)!r}")
    )
    stubs = importlib.import_module("srpc_warehouse_client_stub")
    with ServerProcess(project, "warehouse", config=config) as server:
        with stubs.SrpcWarehouseClientStub("127.0.0.1", server.port, config=config) as stub:
            for kind in ("surrogate", "unannotated", "surrogate"):
                with pytest.raises(Exception, match=r"surrogate|no annotations"):
                    stub.fail(kind)
            assert stub.take("widget", 1) == 1
        assert server.stop() == 0  # a clean stop writes the last records
    follower, aggregator = LogFollower(log), MetricsAggregator()
    aggregator.feed(follower.poll())
    follower.close()
    rows = {row.name: row.stats for row in aggregator.view().procedures}
    assert rows["fail"].errors == {"ValueError": 2, "Unannotated": 1}
    assert (rows["take"].ok, rows["take"].failed) == (1, 0)
