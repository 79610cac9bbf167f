"""Typed values through real server processes: the interface's annotations are the schema.

A ``typed`` service is written into a temporary project the way a user writes it, its stubs are
generated, and a server process serves it under each codec. The test process calls it through
the generated client stub. Every supported type goes out as an argument (the server records the
``repr`` of what its implementation received) and comes back as a result; both are checked for
the exact types, all the way down, and for equality.
"""

from __future__ import annotations

import datetime
import decimal
import importlib
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
from support import ServerProcess, make_project

from srpc_core import protocol
from srpc_core.deadline import Deadline

INTERFACE = '''\
"""Every type srpc carries, as argument and result."""

import datetime
import decimal
import enum
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Optional, TypedDict

import msgspec


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"
    SLOW = "slow"


@dataclass
class Item:
    sku: str
    price: decimal.Decimal
    color: Color
    tags: set[str] = field(default_factory=set)
    updated: datetime.datetime | None = None


class Point(NamedTuple):
    x: int
    y: float


class Row(TypedDict):
    id: int
    when: datetime.date


class Box(msgspec.Struct):
    items: list[Item]
    where: Point
    labels: dict[int, str]


class TypedInterface(ABC):
{echoes}
    @abstractmethod
    def last(self) -> str:
        """repr() of the last value an echo received."""

    @abstractmethod
    def take(self, sku: str, qty: int) -> int:
        """Count a take; return how many ran."""

    @abstractmethod
    def put(self, item: Item, *, level: Level = Level.LOW) -> int:
        """Count a put; return how many ran."""

    @abstractmethod
    def count_in(self, category: Color) -> int:
        """Count a call; return how many ran."""

    @abstractmethod
    def runs(self) -> int:
        """How many take/put/count_in calls ran."""

    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """a + b."""

    @abstractmethod
    def div(self, a: float, b: float) -> int:
        """a / b: the seed's calculator annotates the result int, and returns a float."""

    @abstractmethod
    def scaled(self, xs: list[float], factor: float = 1) -> list[float]:
        """Each x times factor."""

    @abstractmethod
    def gather(
        self, *values: int, **named: decimal.Decimal
    ) -> tuple[list[int], dict[str, decimal.Decimal]]:
        """The extra positional and keyword arguments, converted."""

    @abstractmethod
    def echo_timeout(self, timeout: float) -> float:
        """A parameter named like the option of with_options."""

    @abstractmethod
    def hold(self, seconds: float) -> bool:
        """Wait up to `seconds` on an event nobody sets."""
'''

# name: annotation, as the interface writes it.
TYPES: dict[str, str] = {
    "none": "None",
    "bool": "bool",
    "int": "int",
    "float": "float",
    "str": "str",
    "bytes": "bytes",
    "bytearray": "bytearray",
    "naive_datetime": "datetime.datetime",
    "aware_datetime": "datetime.datetime",
    "date": "datetime.date",
    "time": "datetime.time",
    "timedelta": "datetime.timedelta",
    "decimal": "decimal.Decimal",
    "uuid": "uuid.UUID",
    "enum": "Color",
    "int_enum": "Level",
    "str_enum": "Mode",
    "literal": "Literal['a', 'b', 3]",
    "fixed_tuple": "tuple[int, str, bytes]",
    "variadic_tuple": "tuple[decimal.Decimal, ...]",
    "list": "list[datetime.date]",
    "set": "set[uuid.UUID]",
    "frozenset": "frozenset[int]",
    "int_keys": "dict[int, str]",
    "date_keys": "dict[datetime.date, int]",
    "uuid_keys": "dict[uuid.UUID, Level]",
    "optional_some": "Optional[Item]",
    "optional_none": "Optional[Item]",
    "union": "int | str | None",
    "dataclass": "Item",
    "named_tuple": "Point",
    "typed_dict": "Row",
    "struct": "Box",
    "nested": "dict[str, list[tuple[Item, Optional[Point], frozenset[Level]]]]",
}


def samples(m: ModuleType) -> dict[str, Any]:
    """A value for each of `TYPES`, built with the interface module `m`'s own classes."""
    dt, D = datetime, decimal.Decimal
    return {
        "none": None,
        "bool": True,
        "int": 2**62,
        "float": 2.5,
        "str": "héllo\n",
        "bytes": b"\x00srpc\xff",
        "bytearray": bytearray(b"\x00ab"),
        "naive_datetime": dt.datetime(2024, 2, 29, 12, 30, 15, 250),
        "aware_datetime": dt.datetime(
            2024, 2, 29, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))
        ),
        "date": dt.date(2024, 2, 29),
        "time": dt.time(23, 59, 1, 5),
        "timedelta": dt.timedelta(days=-1, seconds=5),
        "decimal": D("1.10"),
        "uuid": uuid.UUID(int=2**127 + 5),
        "enum": m.Color.BLUE,
        "int_enum": m.Level.HIGH,
        "str_enum": m.Mode.SLOW,
        "literal": 3,
        "fixed_tuple": (1, "x", b"y"),
        "variadic_tuple": (D("1"), D("2.5")),
        "list": [dt.date(2024, 1, 1), dt.date(2025, 1, 1)],
        "set": {uuid.UUID(int=1)},
        "frozenset": frozenset({1, 2, 3}),
        "int_keys": {1: "a", -2: "b"},
        "date_keys": {dt.date(2024, 1, 1): 1},
        "uuid_keys": {uuid.UUID(int=7): m.Level.LOW},
        "optional_some": m.Item("a", D("9.99"), m.Color.RED),
        "optional_none": None,
        "union": "x",
        "dataclass": m.Item(
            "a", D("1.5"), m.Color.RED, {"t"}, dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
        ),
        "named_tuple": m.Point(1, 2.5),
        "typed_dict": {"id": 1, "when": dt.date(2024, 5, 6)},
        "struct": m.Box([m.Item("a", D("1"), m.Color.BLUE)], m.Point(3, 4.0), {5: "e"}),
        "nested": {
            "k": [
                (m.Item("b", D("2"), m.Color.RED, {"u"}), None, frozenset({m.Level.HIGH})),
                (m.Item("c", D("3"), m.Color.BLUE), m.Point(-1, 0.5), frozenset()),
            ]
        },
    }


IMPLEMENTATION = """\
import threading

from typed.typed_interface import TypedInterface


class Typed(TypedInterface):
    def __init__(self) -> None:
        self._last = ""
        self._runs = 0
        self._never = threading.Event()
{echoes}
    def last(self):
        return self._last

    def take(self, sku, qty):
        self._runs += 1
        return self._runs

    def put(self, item, *, level=1):
        self._runs += 1
        return self._runs

    def count_in(self, category):
        self._runs += 1
        return self._runs

    def runs(self):
        return self._runs

    def add(self, a, b):
        return a + b

    def div(self, a, b):
        return a / b

    def scaled(self, xs, factor=1):
        return [x * factor for x in xs]

    def gather(self, *values, **named):
        return list(values), named

    def echo_timeout(self, timeout):
        return timeout

    def hold(self, seconds):
        return self._never.wait(seconds)
"""


def _interface_source() -> str:
    echoes = "".join(
        f"    @abstractmethod\n    def echo_{name}(self, value: {annotation}) -> {annotation}:"
        f"\n        ...\n\n"
        for name, annotation in TYPES.items()
    )
    return INTERFACE.format(echoes=echoes)


def _implementation_source() -> str:
    echoes = "".join(
        f"\n    def echo_{name}(self, value):\n        self._last = repr(value)\n"
        "        return value\n"
        for name in TYPES
    )
    return IMPLEMENTATION.format(echoes=echoes)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = make_project(
        tmp_path_factory.mktemp("typed"),
        "typed",
        {
            "typed/typed_interface.py": _interface_source(),
            "typed/typed.py": _implementation_source(),
        },
    )
    for codec in ("json", "cbor", "msgpack"):
        (project / f"{codec}.toml").write_text(f'[srpc]\ncodec = "{codec}"\n')
    return project


@pytest.fixture(scope="module")
def stub_module(project: Path) -> Iterator[ModuleType]:
    """The generated client stub module, imported in this process."""
    sys.path.insert(0, str(project))
    try:
        for name in [m for m in sys.modules if m == "typed" or m.startswith("typed.")]:
            del sys.modules[name]
        sys.modules.pop("srpc_typed_client_stub", None)
        yield importlib.import_module("srpc_typed_client_stub")
    finally:
        sys.path.remove(str(project))


@pytest.fixture(scope="module")
def m(stub_module: ModuleType) -> ModuleType:
    """The interface module (the classes the stub converts to)."""
    return sys.modules["typed.typed_interface"]


@pytest.fixture(scope="module", params=["json", "cbor", "msgpack"])
def served(request: pytest.FixtureRequest, project: Path) -> Iterator[tuple[ServerProcess, Path]]:
    config = project / f"{request.param}.toml"
    with ServerProcess(project, "typed", config=config) as server:
        yield server, config


@pytest.fixture
def stub(served: tuple[ServerProcess, Path], stub_module: ModuleType) -> Iterator[Any]:
    server, config = served
    with stub_module.SrpcTypedClientStub("127.0.0.1", server.port, config=str(config)) as s:
        yield s


def same(a: Any, b: Any, where: str = "value") -> None:
    """`a` equals `b`, with exactly the same types all the way down."""
    assert type(a) is type(b), f"{where}: {type(a).__qualname__} is not {type(b).__qualname__}"
    assert a == b, f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for key in a:
            other = next(k for k in b if k == key)
            same(key, other, f"{where} key {key!r}")
            same(a[key], b[other], f"{where}[{key!r}]")
    elif isinstance(a, list | tuple):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, set | frozenset):
        for x in a:
            same(x, next(y for y in b if y == x), f"{where} member {x!r}")
    elif isinstance(a, datetime.datetime | datetime.time):
        assert a.utcoffset() == b.utcoffset(), where
    elif hasattr(a, "__dataclass_fields__") or isinstance(a, msgspec.Struct):
        for name in getattr(a, "__struct_fields__", None) or a.__dataclass_fields__:
            same(getattr(a, name), getattr(b, name), f"{where}.{name}")


@pytest.mark.parametrize("name", list(TYPES))
def test_every_type_round_trips_as_argument_and_result(stub: Any, m: ModuleType, name: str) -> None:
    sample = samples(m)[name]
    result = getattr(stub, f"echo_{name}")(sample)
    same(result, sample)
    # The implementation received the value as the annotation says, not its wire form.
    assert stub.last() == repr(sample)


def test_numbers_follow_the_numeric_tower(stub: Any) -> None:
    result = stub.add(4, 2)
    assert result == 6 and type(result) is int
    result = stub.add(4, 0.5)
    assert result == 4.5 and type(result) is float
    result = stub.scaled([1, 2.5], 2)
    assert result == [2, 5.0] and [type(x) for x in result] == [int, float]


def test_variadic_arguments_are_converted(stub: Any) -> None:
    values, named = stub.gather(1, 2, a=decimal.Decimal("0.1"))
    same(values, [1, 2])
    same(named, {"a": decimal.Decimal("0.1")})
    with pytest.raises(TypeError, match=r"gather\(\): parameter 'named' expects Decimal"):
        stub.gather(1, b=[1])


def test_a_result_that_does_not_fit_its_annotation_comes_as_it_is(
    served: tuple[ServerProcess, Path], stub: Any
) -> None:
    server, _ = served
    # The seed's calculator: div -> int returns 2.0, and the caller still gets 2.0.
    assert stub.div(4, 2) == 2.0 and type(stub.div(4, 2)) is float
    assert stub.div(1, 4) == 0.25
    warning = re.compile(
        r"div\(\) returned float 2\.0, which does not fit its return annotation int"
    )
    server.wait_for(warning)
    stub.runs()  # a later line: the warning was not repeated before it
    assert len([line for line in server.output if "div() returned" in line]) == 1


def raw_call(stub: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call through the real protocol but skip the client's own conversion and checks, as a
    client that does not check (another language, an old version) would."""
    client = stub._srpc
    spec = client.service.procedures[name]
    ok, value = client._call(spec, args, kwargs, None, Deadline(10.0, name, client.address))
    if not ok:
        client._raise_error(value)
    return value


REFUSED = [
    ("take", ("x", "lots"), {}, "take(): parameter 'qty' expects int, got str 'lots'"),
    ("take", ("x", 10**30), {}, "take(): parameter 'qty' expects int, got int of 100 bits"),
    ("take", ("x", True), {}, "take(): parameter 'qty' expects int, got bool True"),
    ("take", ("x", 2.0), {}, "take(): parameter 'qty' expects int, got float 2.0"),
    ("put", ([1, 2],), {}, "put(): parameter 'item' expects Item, got list [1, 2]"),
    (
        "put",
        ({"sku": "a", "price": "x", "color": "red"},),
        {},
        "put(): parameter 'item' expects Item, got dict",
    ),
    ("put", ({"sku": "a", "price": "1", "color": "red"},), {"level": 7}, "parameter 'level'"),
    ("count_in", ("food",), {}, "count_in(): parameter 'category' expects Color, got str 'food'"),
    ("add", (10**400, 1), {}, "add(): parameter 'a' expects float, got int of 1329 bits"),
]


@pytest.mark.parametrize(("name", "args", "kwargs", "message"), REFUSED)
def test_the_server_refuses_arguments_that_do_not_fit(
    stub: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    if stub._srpc.config.codec == "msgpack" and any(type(a) is int and a >= 2**64 for a in args):
        pytest.skip("msgpack has no integers beyond 64 bits: the client's codec refuses them")
    before = stub.runs()
    with pytest.raises(TypeError) as caught:
        raw_call(stub, name, args, kwargs)
    assert message in str(caught.value)
    assert stub.runs() == before  # the implementation never ran


@pytest.mark.parametrize(("name", "args", "kwargs", "message"), REFUSED)
def test_the_client_refuses_them_before_sending(
    stub: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    before = stub.runs()
    sent: list[bytes] = []
    original = protocol.encode_request
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            protocol, "encode_request", lambda *a, **k: sent.append(b"") or original(*a, **k)
        )
        with pytest.raises(TypeError) as caught:
            getattr(stub, name)(*args, **kwargs)
    assert message in str(caught.value)
    assert sent == []
    assert stub.runs() == before


def test_a_dict_for_a_dataclass_is_converted_on_the_server(stub: Any) -> None:
    before = stub.runs()
    assert raw_call(stub, "put", ({"sku": "a", "price": "1.5", "color": "red"},), {}) == before + 1


def test_with_options_is_a_view_sharing_the_connections(stub: Any) -> None:
    from srpc_core import CallTimeoutError

    quick = stub.with_options(timeout=0.3)
    assert type(quick) is type(stub)
    assert quick._srpc.timeout == 0.3 and stub._srpc.timeout == 30.0
    assert quick._srpc._idle is stub._srpc._idle
    # A parameter named like the option is the procedure's own.
    assert quick.echo_timeout(timeout=5.0) == 5.0
    assert stub.echo_timeout(7) == 7
    with pytest.raises(CallTimeoutError):
        quick.hold(3.0)
    assert stub.hold(0.0) is False  # the original stub is unaffected and still works


def test_plain_list_and_dict_annotations_convert_nothing() -> None:
    """``dict``, ``list``, ``dict[str, Any]`` and ``list[Any]`` are as loose as `Any`: their
    values travel as the codec carries them (DESIGN: "Any or no annotation: today's
    behaviour"), so cbor keeps a datetime inside a bare ``dict``."""
    from typing import Any

    from srpc_core.convert import _is_any

    for loose in (dict, list, dict[str, Any], list[Any], Any):
        assert _is_any(loose), loose
    for typed in (dict[int, Any], dict[str, int], list[int], set, tuple):
        assert not _is_any(typed), typed
