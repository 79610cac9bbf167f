"""The naming convention that ties a package to its interface, implementation and stubs.

``calc`` -> ``CalcInterface`` in ``calc/calc_interface.py``, ``Calc`` in ``calc/calc.py``,
``SrpcCalcServerStub`` in ``srpc_calc_server_stub.py`` and ``SrpcCalcClientStub`` in
``srpc_calc_client_stub.py``. ``user_store`` -> ``UserStoreInterface``, ``UserStore``, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def camel_case(snake: str) -> str:
    """``user_store`` -> ``UserStore``."""
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_") if part)


@dataclass(frozen=True)
class ServiceNames:
    """Every name derived from a service's package name."""

    package: str  # "user_store"
    module_prefix: str  # dotted package path, e.g. "user_store" or "services.user_store"
    root: Path  # the folder the top package lives in (goes on sys.path to import it)

    @property
    def camel(self) -> str:
        """``user_store`` -> ``UserStore``."""
        return camel_case(self.package)

    @property
    def interface_path(self) -> str:
        """The interface file relative to `root`, e.g. ``user_store/user_store_interface.py``.

        Stubs name their source this way, so they do not depend on where the generator ran.
        """
        return self.interface_module.replace(".", "/") + ".py"

    @property
    def interface_class(self) -> str:
        """``UserStoreInterface``: the ABC in the interface module."""
        return f"{self.camel}Interface"

    @property
    def interface_module(self) -> str:
        """``user_store.user_store_interface`` (dotted, from `root`)."""
        return f"{self.module_prefix}.{self.package}_interface"

    @property
    def implementation_class(self) -> str:
        """``UserStore``: the implementation the server stub serves."""
        return self.camel

    @property
    def implementation_module(self) -> str:
        """``user_store.user_store``."""
        return f"{self.module_prefix}.{self.package}"

    @property
    def server_stub_class(self) -> str:
        """``SrpcUserStoreServerStub``."""
        return f"Srpc{self.camel}ServerStub"

    @property
    def client_stub_class(self) -> str:
        """``SrpcUserStoreClientStub``."""
        return f"Srpc{self.camel}ClientStub"

    @property
    def async_client_stub_class(self) -> str:
        """``SrpcUserStoreAsyncClientStub`` (in the client stub module)."""
        return f"Srpc{self.camel}AsyncClientStub"

    @property
    def server_stub_file(self) -> str:
        """``srpc_user_store_server_stub.py``."""
        return f"srpc_{self.package}_server_stub.py"

    @property
    def client_stub_file(self) -> str:
        """``srpc_user_store_client_stub.py``."""
        return f"srpc_{self.package}_client_stub.py"


__all__ = [
    "ServiceNames",
    "camel_case",
]
