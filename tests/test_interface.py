"""Reading an interface (`read_interface`) and checking arguments (`Procedure.check_arguments`)."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any

import pytest

from srpc_core.interface import (
    InterfaceError,
    Procedure,
    private_abstract_names,
    public_abstract_names,
    read_interface,
)


class BaseInterface(ABC):
    """A base interface whose abstract methods are inherited."""

    @abstractmethod
    def ping(self) -> str:
        """Answer "pong"."""


class ShopInterface(BaseInterface):
    """Every kind of member an interface may have."""

    @abstractmethod
    def add(self, a: int, b: int = 2) -> int:
        """Add two numbers."""

    @abstractmethod
    def order(self, item: str, /, count: int = 1, *, gift: bool = False, note: str) -> dict:
        """Place an order."""

    @abstractmethod
    def total(self, *prices: float, **discounts: float) -> float:
        """Sum prices."""

    @abstractmethod
    def nothing(self) -> None: ...

    def helper(self) -> int:
        """A concrete helper: not a procedure."""
        return 1

    def _private(self) -> None:
        """Private: not a procedure."""

    def __len__(self) -> int:
        return 0


def procedure(name: str) -> Procedure:
    return read_interface(ShopInterface).procedures[name]


# -- read_interface ----------------------------------------------------------------------------


def test_procedures_are_the_public_abstract_methods_base_first() -> None:
    service = read_interface(ShopInterface)
    assert list(service.procedures) == ["ping", "add", "order", "total", "nothing"]
    assert service.interface is ShopInterface
    assert service.name == "ShopInterface"
    assert service.dotted_name == f"{__name__}.ShopInterface"


def test_a_procedure_has_the_signature_without_self_and_the_docstring() -> None:
    add = procedure("add")
    assert add.name == "add"
    assert str(add.signature) == "(a: 'int', b: 'int' = 2) -> 'int'"
    assert add.doc == "Add two numbers."
    assert procedure("nothing").doc is None
    assert procedure("ping").doc == 'Answer "pong".'


def test_the_fast_path_is_set_up_only_for_simple_signatures() -> None:
    add = procedure("add")
    assert (add.simple, add.min_positional, add.max_positional) == (True, 1, 2)
    assert procedure("nothing").simple
    assert not procedure("order").simple
    assert not procedure("total").simple


def test_an_overridden_abstract_method_is_no_procedure() -> None:
    class PartlyDone(ShopInterface):
        def nothing(self) -> None:
            return None

    assert "nothing" not in read_interface(PartlyDone).procedures


def test_private_and_public_abstract_names() -> None:
    class WithPrivate(ABC):
        @abstractmethod
        def run(self) -> None: ...

        @abstractmethod
        def _hidden(self) -> None: ...

        @abstractmethod
        def __call__(self) -> None: ...

    assert list(read_interface(WithPrivate).procedures) == ["run"]
    assert public_abstract_names(WithPrivate) == ["run"]
    assert sorted(private_abstract_names(WithPrivate)) == ["__call__", "_hidden"]


def test_a_class_that_is_not_an_abc_is_refused() -> None:
    class Plain:
        def add(self, a: int) -> int:
            return a

    with pytest.raises(InterfaceError, match="not an abstract base class"):
        read_interface(Plain)
    assert issubclass(InterfaceError, TypeError)


def test_an_abc_without_abstract_methods_is_refused() -> None:
    class Empty(ABC):  # noqa: B024
        def helper(self) -> None:
            return None

    with pytest.raises(InterfaceError, match="declares no public @abstractmethod"):
        read_interface(Empty)


def test_an_abc_with_only_private_abstract_methods_is_refused() -> None:
    class OnlyPrivate(ABC):
        @abstractmethod
        def _hidden(self) -> None: ...

    with pytest.raises(InterfaceError, match="nothing to serve"):
        read_interface(OnlyPrivate)


def make_property_interface() -> type:
    class WithProperty(ABC):
        @property
        @abstractmethod
        def size(self) -> int: ...

    return WithProperty


def make_static_interface() -> type:
    class WithStatic(ABC):
        @staticmethod
        @abstractmethod
        def make(x: int) -> int: ...

    return WithStatic


def make_class_method_interface() -> type:
    class WithClassMethod(ABC):
        @classmethod
        @abstractmethod
        def make(cls, x: int) -> int: ...

    return WithClassMethod


def make_async_interface() -> type:
    class WithAsync(ABC):
        @abstractmethod
        async def fetch(self, key: str) -> str: ...

    return WithAsync


def make_selfless_interface() -> type:
    class Selfless(ABC):
        @abstractmethod
        def run(*args: Any) -> None: ...

    return Selfless


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (make_property_interface, "WithProperty.size is a property, not a plain method"),
        (make_static_interface, "WithStatic.make is a staticmethod, not a plain method"),
        (make_class_method_interface, "WithClassMethod.make is a classmethod"),
        (make_async_interface, "WithAsync.fetch is an async method"),
        (make_selfless_interface, "has no `self` parameter"),
    ],
)
def test_members_srpc_cannot_call_are_refused(make: Any, message: str) -> None:
    with pytest.raises(InterfaceError, match=message.replace(".", r"\.")):
        read_interface(make())


# -- Procedure.check_arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1,), {}),  # fast path: the default fills b
        ((1, 2), {}),  # fast path
        ((), {"a": 1}),  # slow path: by keyword
        ((1,), {"b": 3}),
        ((), {"b": 3, "a": 1}),
        ([1, 2], {}),  # the server passes lists
    ],
)
def test_arguments_that_fit_pass(args: Any, kwargs: dict[str, Any]) -> None:
    procedure("add").check_arguments(args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument: 'a'"),
        ((1, 2, 3), {}, "too many positional arguments"),
        ((1,), {"c": 3}, "got an unexpected keyword argument 'c'"),
        ((1,), {"a": 1}, "multiple values for argument 'a'"),
    ],
)
def test_arguments_that_do_not_fit_raise_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError) as raised:
        procedure("add").check_arguments(args, kwargs)
    assert message in str(raised.value)
    assert str(raised.value).startswith("add(a: 'int', b: 'int' = 2) -> 'int': ")


def test_keyword_only_and_positional_only_parameters() -> None:
    order = procedure("order")
    order.check_arguments(("tea",), {"note": "hi"})
    order.check_arguments(("tea", 3), {"gift": True, "note": "hi"})
    order.check_arguments(("tea",), {"count": 3, "note": "hi"})
    failures = [
        ((("tea",), {}), "missing a required argument: 'note'"),
        ((("tea", 3, True), {"note": "x"}), "too many positional arguments"),
        # (Python 3.13 words it "positional-only arguments passed as keyword arguments".)
        (
            ((), {"item": "tea", "note": "x"}),
            "'item' parameter is positional only|positional-only.*'item'",
        ),
    ]
    for (args, kwargs), message in failures:
        with pytest.raises(TypeError, match=message):
            order.check_arguments(args, kwargs)


def test_var_positional_and_var_keyword_parameters() -> None:
    total = procedure("total")
    total.check_arguments((), {})
    total.check_arguments((1.0, 2.0, 3.0), {"member": 0.1, "any_name": 0.2})
    nothing = procedure("nothing")
    nothing.check_arguments((), {})
    with pytest.raises(TypeError, match="too many positional arguments"):
        nothing.check_arguments((1,), {})
    with pytest.raises(TypeError, match="unexpected keyword argument 'x'"):
        nothing.check_arguments((), {"x": 1})


def test_the_signature_is_the_interface_signature_without_self() -> None:
    for name, proc in read_interface(ShopInterface).procedures.items():
        full = inspect.signature(getattr(ShopInterface, name))
        assert list(proc.signature.parameters.values()) == list(full.parameters.values())[1:]
        assert proc.signature.return_annotation == full.return_annotation


def test_the_fast_path_decides_plain_positional_calls_alone() -> None:
    # A Procedure whose signature takes nothing, but whose fast path allows 1 to 2 positional
    # arguments: a call the fast path accepts never reaches Signature.bind.
    fast = Procedure("f", inspect.Signature(), None, 1, 2, simple=True)
    fast.check_arguments((1, 2), {})
    with pytest.raises(TypeError, match="too many positional arguments"):
        fast.check_arguments((1, 2, 3), {})  # outside the range: the slow path decides
    with pytest.raises(TypeError, match="too many positional arguments"):
        fast.check_arguments((1,), {"x": 1})  # keywords always take the slow path
    slow = Procedure("f", inspect.Signature(), None, 1, 2, simple=False)
    with pytest.raises(TypeError, match="too many positional arguments"):
        slow.check_arguments((1, 2), {})
