"""Teaching srpc a type (the ``srpc_register_types`` hook), and refusing unknown ones early.

The worked example of docs/types.md, pydantic models, runs end to end: the user's package ships
the plugin module, the stub generator, the server process and the client process register it
(the way an installed entry point would), and a model crosses the wire as itself.
"""

from __future__ import annotations

import json
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path

import pytest
from support import PYTHON, ServerProcess, child_env, generate_stubs

from srpc_core import Client, InterfaceError, Server, hookimpl
from srpc_core.plugins import Plugins

INTERFACE = """\
from abc import ABC, abstractmethod

from pydantic import BaseModel


class Order(BaseModel):
    sku: str
    qty: int
    lines: list[str] = []


class ShopInterface(ABC):
    @abstractmethod
    def place(self, order: Order) -> Order: ...

    @abstractmethod
    def orders(self) -> dict[int, Order]: ...

    @abstractmethod
    def placed(self) -> int: ...
"""

IMPLEMENTATION = """\
from shop.shop_interface import Order, ShopInterface


class Shop(ShopInterface):
    def __init__(self):
        self._orders = {}

    def place(self, order):
        assert type(order) is Order, type(order)
        self._orders[len(self._orders)] = order
        return order.model_copy(update={"qty": order.qty * 2})

    def orders(self):
        return self._orders

    def placed(self):
        return len(self._orders)
"""

# The plugin, exactly as docs/types.md shows it.
PLUGIN = """\
from pydantic import BaseModel

from srpc_core import hookimpl


def to_wire(model):
    return model.model_dump(mode="json")


def from_wire(cls, data):
    return cls.model_validate(data)


@hookimpl
def srpc_register_types(register):
    register(BaseModel, to_wire, from_wire)
"""

# What an installed entry point does: the plugin is registered before anything runs.
REGISTER = """\
from srpc_core.plugins import get_plugins
import pydantic_types
get_plugins().add("pydantic_types", pydantic_types)
"""

CLIENT = (
    REGISTER
    + """\
import json
from shop.shop_interface import Order
from srpc_shop_client_stub import SrpcShopClientStub

shop = SrpcShopClientStub("127.0.0.1", {port})
back = shop.place(Order(sku="a", qty=2, lines=["x"]))
print(json.dumps([type(back).__name__, back.model_dump()]))
orders = shop.orders()
print(json.dumps([[type(k).__name__, type(v).__name__] for k, v in orders.items()]))
try:
    shop.place({{"sku": "b", "qty": "many"}})
except TypeError as exc:
    print(json.dumps(["TypeError", str(exc), shop.placed()]))
"""
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pydantic")
    project = tmp_path_factory.mktemp("shop")
    (project / "shop").mkdir()
    (project / "shop/__init__.py").touch()
    (project / "shop/shop_interface.py").write_text(INTERFACE)
    (project / "shop/shop.py").write_text(IMPLEMENTATION)
    (project / "pydantic_types.py").write_text(PLUGIN)
    return project


def test_without_the_plugin_stub_generation_names_the_unknown_type(project: Path) -> None:
    result = generate_stubs(project, "shop/shop_interface.py")
    assert result.returncode == 2
    assert "place(): parameter 'order' is annotated Order" in result.stderr
    assert "srpc does not know the type Order" in result.stderr
    assert "srpc_register_types" in result.stderr


def test_a_pydantic_model_crosses_the_wire_as_itself(project: Path) -> None:
    generate = REGISTER + (
        "from srpc_core.tools.srpc_stub_gen import main\n"
        "raise SystemExit(main(['shop/shop_interface.py']))\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", generate], cwd=project, capture_output=True, text=True, env=child_env()
    )
    assert result.returncode == 0, result.stderr
    server_code = REGISTER + "from srpc_shop_server_stub import SrpcShopServerStub\n"
    server_code += "SrpcShopServerStub('127.0.0.1', 0).start()\n"
    with ServerProcess(project, "shop", code=server_code) as server:
        client = subprocess.run(
            [PYTHON, "-c", CLIENT.format(port=server.port)],
            cwd=project,
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=60,
        )
    assert client.returncode == 0, client.stderr
    placed, orders, refused = (json.loads(line) for line in client.stdout.splitlines())
    assert placed == ["Order", {"sku": "a", "qty": 4, "lines": ["x"]}]
    assert orders == [["int", "Order"]]
    assert refused[0] == "TypeError"
    assert "place(): parameter 'order' expects Order" in refused[1]
    assert refused[2] == 1  # the refused order never reached the implementation


class Unknown(ABC):
    @abstractmethod
    def f(self, when: complex) -> None: ...


class Implemented(Unknown):
    def f(self, when: complex) -> None:
        pass


def test_server_and_client_construction_refuse_an_unknown_type() -> None:
    with pytest.raises(InterfaceError, match=r"f\(\): parameter 'when' .* the type complex"):
        Server(Unknown, Implemented(), "127.0.0.1", 0)
    with pytest.raises(InterfaceError, match=r"f\(\): parameter 'when' .* the type complex"):
        Client(Unknown, "127.0.0.1", 1)


class ComplexTypes:
    @hookimpl
    def srpc_register_types(self, register: object) -> None:
        register(complex, lambda c: [c.real, c.imag], lambda cls, data: cls(*data))  # type: ignore[operator]


def test_a_taught_type_is_accepted_at_construction() -> None:
    plugins = Plugins({"complex_types": ComplexTypes()})
    client = Client(Unknown, "127.0.0.1", 1, plugins=plugins)
    plan = client._plans["f"]
    assert plan.arguments_to_wire((1 + 2j,), {}) == ([[1.0, 2.0]], {})
    assert plan.arguments_from_wire([[1.0, 2.0]], {}) == ([1 + 2j], {})
    with pytest.raises(TypeError, match=r"f\(\): parameter 'when' expects complex, got str"):
        plan.arguments_from_wire(["x"], {})
