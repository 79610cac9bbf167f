"""The stub generator, run the way users run it: as a command, in a project folder."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import PYTHON, child_env, generate_stubs

BIN = Path(sys.executable).parent
ENTRY_POINTS = {
    "python -m": [PYTHON, "-m", "srpc_core.tools.srpc_stub_gen"],
    "srpc-stub-gen": [str(BIN / "srpc-stub-gen")],
    "srpc gen": [str(BIN / "srpc"), "gen"],
}

CALC_INTERFACE = '''\
"""A calculator."""

from abc import ABC, abstractmethod


class CalcInterface(ABC):
    """A calculator."""

    @abstractmethod
    def add(self, a: float, b: float) -> float:
        """Return a + b."""
'''

CALC = """\
from calc.calc_interface import CalcInterface


class Calc(CalcInterface):
    def add(self, a: float, b: float) -> float:
        return a + b
"""

# Every feature of a signature the client stub must copy, with future annotations.
RICH_INTERFACE = '''\
"""A user store: the interface."""

from __future__ import annotations

import collections.abc
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, Optional

DEFAULT_LIMIT = 10


class UserNotFound(LookupError):
    """No such user."""


@dataclass
class User:
    """A user record."""

    name: str
    age: int = 0


class BaseInterface(ABC):
    """Methods every service has."""

    @abstractmethod
    def ping(self) -> str:
        """Answer "pong"."""


class UserStoreInterface(BaseInterface):
    """Stores users."""

    @abstractmethod
    def add_user(self, name: str, age: int = 0, *, tags: list[str] | None = None) -> dict[str, Any]:
        """Add a user and return its record.

        Raises ValueError for an empty name.
            (an indented line)
        """

    @abstractmethod
    def find(self, name: str, /, mode: Literal["exact", "prefix"] = "exact") -> Optional[User]:
        """Find a user by name."""

    @abstractmethod
    def names(self, *prefixes: str, limit: int = DEFAULT_LIMIT, **filters: Any) -> list[str]:
        """List user names."""

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def export(
        self, users: "list[User]", fmt: str = "json", sink=None
    ) -> collections.abc.Mapping[str, "User"]:
        """Export users; a \\\\backslash and "quotes" in the docstring."""

    @abstractmethod
    def forget(self, name): ...

    def helper(self) -> int:
        """A concrete helper: inherited, not a procedure."""
        return self.count() + 1

    def _private(self) -> None:
        """Private helper: not a procedure."""
'''

RICH_IMPLEMENTATION = '''\
"""The user store's implementation."""

from __future__ import annotations

import collections.abc
from typing import Any

from user_store.user_store_interface import User, UserStoreInterface


class UserStore(UserStoreInterface):
    """Keeps users in a dict."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    def ping(self) -> str:
        return "pong"

    def add_user(self, name: str, age: int = 0, *, tags: list[str] | None = None) -> dict[str, Any]:
        self.users[name] = User(name, age)
        return {"name": name, "age": age, "tags": tags}

    def find(self, name: str, /, mode: str = "exact") -> User | None:
        return self.users.get(name)

    def names(self, *prefixes: str, limit: int = 10, **filters: Any) -> list[str]:
        return sorted(self.users)[:limit]

    def count(self) -> int:
        return len(self.users)

    def export(
        self, users: list[User], fmt: str = "json", sink: Any = None
    ) -> collections.abc.Mapping[str, User]:
        return {user.name: user for user in users}

    def forget(self, name: Any) -> None:
        self.users.pop(name, None)
'''

# A typed user of the client stub: mypy must accept it.
RICH_CLIENT = """\
from srpc_user_store_client_stub import SrpcUserStoreClientStub
from user_store.user_store_interface import User, UserStoreInterface

store: UserStoreInterface = SrpcUserStoreClientStub("127.0.0.1", 5000, timeout=1.0)
record: dict[str, object] = store.add_user("ann", 3, tags=["a"])
user: User | None = store.find("ann", "prefix")
names: list[str] = store.names("a", "b", limit=3, active=True)
with SrpcUserStoreClientStub() as other:
    total: int = other.count() + other.helper()
"""

# Calls that do not fit the signatures: mypy must flag each line.
BAD_CLIENT = """\
from srpc_user_store_client_stub import SrpcUserStoreClientStub

store = SrpcUserStoreClientStub()
store.add_user(1)
store.add_user("ann", 3, ["tag"])
store.find(name="ann")
store.find("ann", "fuzzy")
wrong: str = store.count()
"""


def run_tool(
    project: Path, *args: str, entry: str = "python -m"
) -> subprocess.CompletedProcess[str]:
    """Run one of the generator's entry points in `project`."""
    return subprocess.run(
        [*ENTRY_POINTS[entry], *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


def write_files(project: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        target = project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return project


def calc(tmp_path: Path, interface: str = CALC_INTERFACE) -> Path:
    return write_files(
        tmp_path / "project",
        {"calc/__init__.py": "", "calc/calc_interface.py": interface, "calc/calc.py": CALC},
    )


@pytest.fixture(scope="module")
def rich_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user_store project with the rich interface and its generated stubs."""
    project = write_files(
        tmp_path_factory.mktemp("rich") / "project",
        {
            "user_store/__init__.py": "",
            "user_store/user_store_interface.py": RICH_INTERFACE,
            "user_store/user_store.py": RICH_IMPLEMENTATION,
            "client.py": RICH_CLIENT,
            "bad_client.py": BAD_CLIENT,
        },
    )
    result = generate_stubs(project, "user_store/user_store_interface.py")
    assert result.returncode == 0, result.stderr
    return project


@pytest.fixture(scope="module")
def rich_client_stub(rich_project: Path) -> str:
    return (rich_project / "srpc_user_store_client_stub.py").read_text()


def assert_clean_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit code 2, the message on stderr, no traceback anywhere."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert "error: " in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


# -- entry points and options ------------------------------------------------------------------


CALC_CLIENT_STUB = '''\
"""srpc client stub for CalcInterface. Generated by srpc: do not edit.

Source: calc/calc_interface.py
To update it, change the interface, then run:
    python -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py
"""

import os
from typing import Self, cast

import srpc_core

from calc.calc_interface import CalcInterface


class SrpcCalcClientStub(CalcInterface):
    """Calls a remote CalcInterface through srpc. Safe to share between threads."""

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        config: str | os.PathLike[str] | srpc_core.Config | None = None,
        timeout: float | None = None,
    ) -> None:
        self._srpc = srpc_core.Client(
            CalcInterface,
            host,
            port,
            config=config,
            timeout=timeout,
        )

    def with_options(self, *, timeout: float | None = None) -> Self:
        """A view of this stub with other per-call options; it shares the connections.

        timeout: the seconds each call may take in all, e.g. with_options(timeout=0.5).
        """
        view = object.__new__(type(self))
        view._srpc = self._srpc.with_options(timeout=timeout)
        return view

    def close(self) -> None:
        """Close the connections to the server."""
        self._srpc.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, a: float, b: float) -> float:
        """Return a + b."""
        return cast("float", self._srpc.call("add", (a, b), {}))


class SrpcCalcAsyncClientStub:
    """Calls a remote CalcInterface from asyncio code through srpc.

    Every procedure is a coroutine; one connection carries many calls at once.
    """

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        config: str | os.PathLike[str] | srpc_core.Config | None = None,
        timeout: float | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        self._srpc = srpc_core.AsyncClient(
            CalcInterface,
            host,
            port,
            config=config,
            timeout=timeout,
            max_in_flight=max_in_flight,
        )

    def with_options(self, *, timeout: float | None = None) -> Self:
        """A view of this stub with other per-call options; it shares the connections.

        timeout: the seconds each call may take in all, e.g. with_options(timeout=0.5).
        """
        view = object.__new__(type(self))
        view._srpc = self._srpc.with_options(timeout=timeout)
        return view

    async def aclose(self) -> None:
        """Close the connections to the server."""
        await self._srpc.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def add(self, a: float, b: float) -> float:
        """Return a + b."""
        return cast("float", await self._srpc.call("add", (a, b), {}))
'''


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_each_entry_point_writes_and_checks_the_stubs(tmp_path: Path, entry: str) -> None:
    project = calc(tmp_path)
    result = run_tool(project, "calc/calc_interface.py", entry=entry)
    assert result.returncode == 0, result.stderr
    assert "wrote srpc_calc_server_stub.py" in result.stdout
    assert "wrote srpc_calc_client_stub.py" in result.stdout
    assert (project / "srpc_calc_client_stub.py").read_text() == CALC_CLIENT_STUB
    server = (project / "srpc_calc_server_stub.py").read_text()
    assert "class SrpcCalcServerStub(srpc_core.Server):" in server
    assert "from calc.calc import Calc\n" in server
    before = (project / "srpc_calc_client_stub.py").stat().st_mtime_ns
    check = run_tool(project, "calc/calc_interface.py", "--check", entry=entry)
    assert check.returncode == 0, check.stderr
    assert "are up to date" in check.stdout
    assert (project / "srpc_calc_client_stub.py").stat().st_mtime_ns == before


def test_output_dir_option(tmp_path: Path) -> None:
    project = calc(tmp_path)
    result = run_tool(project, "calc/calc_interface.py", "-o", "build/stubs")
    assert result.returncode == 0, result.stderr
    assert (project / "build/stubs/srpc_calc_client_stub.py").is_file()
    assert (project / "build/stubs/srpc_calc_server_stub.py").is_file()
    assert not (project / "srpc_calc_client_stub.py").exists()


def test_the_stubs_do_not_depend_on_how_the_path_was_given(tmp_path: Path) -> None:
    project = calc(tmp_path)
    interface = str((project / "calc/calc_interface.py").resolve())
    assert run_tool(project, interface, "-o", str(project.resolve())).returncode == 0
    assert run_tool(project, "calc/calc_interface.py", "--check").returncode == 0
    assert "Source: calc/calc_interface.py\n" in (project / "srpc_calc_client_stub.py").read_text()


def test_check_fails_naming_the_stale_stub_after_the_interface_changes(tmp_path: Path) -> None:
    project = calc(tmp_path)
    assert run_tool(project, "calc/calc_interface.py").returncode == 0
    stub = project / "srpc_calc_client_stub.py"
    old_text = stub.read_text()
    interface = project / "calc/calc_interface.py"
    interface.write_text(
        interface.read_text()
        + '\n    @abstractmethod\n    def neg(self, a: float) -> float:\n        """-a."""\n'
    )
    result = run_tool(project, "calc/calc_interface.py", "--check")
    assert result.returncode == 1
    assert "srpc_calc_client_stub.py is stale" in result.stderr
    assert "srpc_calc_server_stub.py" not in result.stderr  # it does not list procedures
    assert "python -m srpc_core.tools.srpc_stub_gen calc/calc_interface.py" in result.stderr
    assert stub.read_text() == old_text  # --check writes nothing
    assert run_tool(project, "calc/calc_interface.py").returncode == 0
    assert run_tool(project, "calc/calc_interface.py", "--check").returncode == 0


def test_check_fails_when_the_stubs_are_missing(tmp_path: Path) -> None:
    project = calc(tmp_path)
    result = run_tool(project, "calc/calc_interface.py", "--check", "-o", "out")
    assert result.returncode == 1
    assert "out/srpc_calc_client_stub.py is missing" in result.stderr
    assert "out/srpc_calc_server_stub.py is missing" in result.stderr
    assert "srpc_stub_gen calc/calc_interface.py -o out" in result.stderr
    assert not (project / "out").exists()


def test_check_reports_interface_errors_like_generation(tmp_path: Path) -> None:
    project = calc(tmp_path, "class CalcInterface:\n    pass\n")
    assert_clean_error(run_tool(project, "calc/calc_interface.py", "--check"), "not an abstract")


# -- errors ------------------------------------------------------------------------------------

HEAD = "from abc import ABC, abstractmethod\n\n\n"
ERROR_CASES = {
    "not an ABC": (
        "class CalcInterface:\n    def add(self, a: int) -> int: ...\n",
        "class CalcInterface is not an abstract base class: derive it from abc.ABC",
    ),
    "no interface class": (
        HEAD + "class CalculatorInterface(ABC):\n    @abstractmethod\n    def add(self): ...\n",
        "no class CalcInterface in calc.calc_interface (found: CalculatorInterface)",
    ),
    "no abstract methods": (
        HEAD + "class CalcInterface(ABC):\n    def add(self) -> None: ...\n",
        "CalcInterface declares no public @abstractmethod methods",
    ),
    "name clash": (
        HEAD + "class CalcInterface(ABC):\n    @abstractmethod\n    def close(self): ...\n",
        "procedure name(s) close clash with the client stub's own method",
    ),
    "with_options clash": (
        HEAD + "class CalcInterface(ABC):\n    @abstractmethod\n    def with_options(self): ...\n",
        "procedure name(s) with_options clash with the client stub's own method",
    ),
    "unknown type": (
        HEAD + "class CalcInterface(ABC):\n    @abstractmethod\n"
        "    def add(self, a: int, b: list[complex]) -> None: ...\n",
        "add(): parameter 'b' is annotated list[complex], and srpc does not know the type complex",
    ),
    "unknown return type": (
        HEAD + "import threading\n\nclass CalcInterface(ABC):\n    @abstractmethod\n"
        "    def lock(self) -> threading.Lock: ...\n",
        "lock(): the return value is annotated",
    ),
    "import fails": (
        "import no_such_module_here\n",
        "importing calc.calc_interface failed: ModuleNotFoundError: "
        "No module named 'no_such_module_here'",
    ),
    "syntax error": (
        "class CalcInterface(ABC:\n",
        "importing calc.calc_interface failed: SyntaxError",
    ),
    "exit at import": (
        "import sys\nsys.exit('bye')\n",
        "importing calc.calc_interface failed: SystemExit: bye",
    ),
    "async method": (
        HEAD + "class CalcInterface(ABC):\n    @abstractmethod\n    async def add(self): ...\n",
        "CalcInterface.add is an async method",
    ),
    "private abstract method": (
        HEAD
        + "class CalcInterface(ABC):\n    @abstractmethod\n    def add(self): ...\n\n"
        + "    @abstractmethod\n    def _reset(self): ...\n",
        "CalcInterface has private abstract method(s) _reset",
    ),
    "abstract property": (
        HEAD + "class CalcInterface(ABC):\n    @property\n    @abstractmethod\n"
        "    def size(self) -> int: ...\n",
        "CalcInterface.size is a property, not a plain method",
    ),
    "static method": (
        HEAD + "class CalcInterface(ABC):\n    @staticmethod\n    @abstractmethod\n"
        "    def add(a: int) -> int: ...\n",
        "CalcInterface.add is a staticmethod, not a plain method",
    ),
    "class attribute as a default": (
        HEAD + "class CalcInterface(ABC):\n    SCALE = 2\n\n    @abstractmethod\n"
        "    def scaled(self, x: int = SCALE) -> int: ...\n",
        "the signature of scaled uses 'SCALE', which is not defined at the top level",
    ),
    "name missing from a signature": (
        "from __future__ import annotations\n\n"
        + HEAD
        + "class CalcInterface(ABC):\n    @abstractmethod\n    def add(self) -> Number: ...\n",
        "the signature of add uses 'Number', which is not defined at the top level of "
        "calc.calc_interface",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_interfaces_are_clear_errors(tmp_path: Path, case: str) -> None:
    source, message = ERROR_CASES[case]
    project = calc(tmp_path, source)
    result = run_tool(project, "calc/calc_interface.py")
    assert_clean_error(result, "calc/calc_interface.py: ", message)
    assert not (project / "srpc_calc_client_stub.py").exists()
    assert not (project / "srpc_calc_server_stub.py").exists()


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_a_missing_file_is_a_clear_error(tmp_path: Path, entry: str) -> None:
    result = run_tool(tmp_path, "calc/calc_interface.py", entry=entry)
    assert_clean_error(result, "calc/calc_interface.py: no such file")


def test_a_misnamed_interface_file_is_a_clear_error(tmp_path: Path) -> None:
    project = calc(tmp_path)
    (project / "calc/calc_interface.py").rename(project / "calc/interface.py")
    result = run_tool(project, "calc/interface.py")
    assert_clean_error(result, "expected the interface of package 'calc' in calc/calc_interface.py")


def test_a_folder_without_init_is_a_clear_error(tmp_path: Path) -> None:
    project = calc(tmp_path)
    (project / "calc/__init__.py").unlink()
    result = run_tool(project, "calc/calc_interface.py")
    assert_clean_error(result, "calc/ is not a package: add an empty calc/__init__.py")


# -- naming ------------------------------------------------------------------------------------


def test_multi_word_packages(rich_project: Path, rich_client_stub: str) -> None:
    server = (rich_project / "srpc_user_store_server_stub.py").read_text()
    assert "class SrpcUserStoreClientStub(UserStoreInterface):" in rich_client_stub
    assert "class SrpcUserStoreServerStub(srpc_core.Server):" in server
    assert "from user_store.user_store import UserStore\n" in server
    assert "from user_store.user_store_interface import UserStoreInterface\n" in server
    assert "            implementation = UserStore()\n" in server


def test_nested_packages(tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_files(
        project,
        {
            "services/__init__.py": "",
            "services/calc/__init__.py": "",
            "services/calc/calc_interface.py": CALC_INTERFACE,
            "services/calc/calc.py": CALC.replace("from calc.", "from services.calc."),
        },
    )
    result = run_tool(project, "services/calc/calc_interface.py")
    assert result.returncode == 0, result.stderr
    client = (project / "srpc_calc_client_stub.py").read_text()
    server = (project / "srpc_calc_server_stub.py").read_text()
    assert "from services.calc.calc_interface import CalcInterface\n" in client
    assert "Source: services/calc/calc_interface.py\n" in client
    assert "from services.calc.calc import Calc\n" in server
    check = run_client_code(project, "import srpc_calc_server_stub, srpc_calc_client_stub")
    assert check.returncode == 0, check.stderr


BASE_INTERFACE = '''\
from abc import ABC, abstractmethod
from enum import Enum


class Status(Enum):
    OK = "ok"


class ServiceInterface(ABC):
    @abstractmethod
    def status(self, verbose: bool = False) -> Status:
        """Status."""
'''

DERIVED_INTERFACE = """\
from abc import abstractmethod

from common.base import ServiceInterface


class CalcInterface(ServiceInterface):
    @abstractmethod
    def add(self, a: int, b: int) -> int: ...
"""


def test_a_base_interface_in_another_module(tmp_path: Path) -> None:
    project = calc(tmp_path, DERIVED_INTERFACE)
    write_files(project, {"common/__init__.py": "", "common/base.py": BASE_INTERFACE})
    assert run_tool(project, "calc/calc_interface.py").returncode == 0
    stub = (project / "srpc_calc_client_stub.py").read_text()
    imports = "from calc.calc_interface import CalcInterface\nfrom common.base import Status\n"
    assert imports in stub
    assert "    def status(self, verbose: bool = False) -> Status:\n" in stub
    code = SIGNATURE_CHECK.format(
        package="calc", stub="SrpcCalcClientStub", interface="CalcInterface"
    )
    check = run_client_code(project, code)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["procedures"] == {"status": [True, True], "add": [True, True]}


def test_a_note_when_the_implementation_is_not_there_yet(tmp_path: Path) -> None:
    project = calc(tmp_path)
    (project / "calc/calc.py").unlink()
    result = run_tool(project, "calc/calc_interface.py")
    assert result.returncode == 0
    assert "note: srpc_calc_server_stub.py imports Calc from calc.calc" in result.stderr
    assert (project / "srpc_calc_client_stub.py").is_file()


# -- the generated text ------------------------------------------------------------------------


def test_the_header_names_the_source_and_says_do_not_edit(rich_client_stub: str) -> None:
    header = rich_client_stub.split('"""', 2)[1]
    assert header == (
        "srpc client stub for UserStoreInterface. Generated by srpc: do not edit.\n\n"
        "Source: user_store/user_store_interface.py\n"
        "To update it, change the interface, then run:\n"
        "    python -m srpc_core.tools.srpc_stub_gen user_store/user_store_interface.py\n"
    )


def test_names_in_signatures_are_imported_from_where_they_live(rich_client_stub: str) -> None:
    imports = rich_client_stub.split("\n\n\nclass ")[0].split('"""\n\n', 1)[1]
    assert imports == (
        "from __future__ import annotations\n\n"
        "import collections.abc\n"
        "import os\n"
        "from typing import Any, Literal, Optional, Self, cast\n\n"
        "import srpc_core\n\n"
        "from user_store.user_store_interface import DEFAULT_LIMIT, User, UserStoreInterface"
    )


EXPECTED_METHODS = [
    '''\
    def ping(self) -> str:
        """Answer "pong"."""
        return cast("str", self._srpc.call("ping", (), {}))
''',
    '''\
    def add_user(
        self,
        name: str,
        age: int = 0,
        *,
        tags: list[str] | None = None,
    ) -> dict[str, Any]:
        """Add a user and return its record.

        Raises ValueError for an empty name.
            (an indented line)
        """
        return cast(
            "dict[str, Any]",
            self._srpc.call("add_user", (name, age), {"tags": tags}),
        )
''',
    '''\
    def find(
        self,
        name: str,
        /,
        mode: Literal["exact", "prefix"] = "exact",
    ) -> Optional[User]:
        """Find a user by name."""
        return cast("Optional[User]", self._srpc.call("find", (name, mode), {}))
''',
    '''\
    def names(
        self,
        *prefixes: str,
        limit: int = DEFAULT_LIMIT,
        **filters: Any,
    ) -> list[str]:
        """List user names."""
        return cast(
            "list[str]",
            self._srpc.call("names", (*prefixes,), {"limit": limit, **filters}),
        )
''',
    """\
    def count(self) -> int:
        return cast("int", self._srpc.call("count", (), {}))
""",
    '''\
    def export(
        self,
        users: "list[User]",
        fmt: str = "json",
        sink=None,
    ) -> collections.abc.Mapping[str, "User"]:
        """Export users; a \\\\backslash and "quotes" in the docstring."""
        return cast(
            'collections.abc.Mapping[str, "User"]',
            self._srpc.call("export", (users, fmt, sink), {}),
        )
''',
    """\
    def forget(self, name):
        return self._srpc.call("forget", (name,), {})
""",
]


def test_each_method_copies_the_interface_signature_and_docstring(rich_client_stub: str) -> None:
    sync_stub, async_stub = rich_client_stub.split("\n\nclass SrpcUserStoreAsyncClientStub:", 1)
    methods = sync_stub.split("        self.close()\n\n", 1)[1]
    assert methods == "\n".join(EXPECTED_METHODS)
    async_methods = async_stub.split("        await self.aclose()\n\n", 1)[1]
    awaited = "await self._srpc.call"
    assert async_methods == "\n".join(
        m.replace("    def ", "    async def ", 1).replace("self._srpc.call", awaited)
        for m in EXPECTED_METHODS
    )
    assert "helper" not in rich_client_stub
    assert "_private" not in rich_client_stub


def ruff_findings(project: Path, *files: str) -> set[str]:
    """The rule codes ruff reports for `files`: its defaults plus the rules srpc itself uses."""
    command = tool("ruff", "check", "--isolated", "--output-format", "concise")
    command += ["--extend-select", "E,F,W,I,B,UP,RUF", *files]
    result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 1), result.stderr
    return set(re.findall(r"\.py:\d+:\d+: (\w+) ", result.stdout))


def test_the_generated_stubs_pass_ruff(rich_project: Path) -> None:
    stubs = ["srpc_user_store_client_stub.py", "srpc_user_store_server_stub.py"]
    # The client stub copies the interface's signatures, style included: Optional[...]
    # (UP045) and quoted annotations (UP037). It must add nothing of its own.
    assert ruff_findings(rich_project, *stubs) == {"UP037", "UP045"}
    assert {"UP037", "UP045"} <= ruff_findings(rich_project, "user_store/user_store_interface.py")
    formatted = subprocess.run(
        tool("ruff", "format", "--isolated", "--check", *stubs),
        cwd=rich_project,
        capture_output=True,
        text=True,
    )
    assert formatted.returncode == 0, formatted.stdout


def test_a_plain_interface_gives_stubs_without_any_ruff_finding(tmp_path: Path) -> None:
    project = calc(tmp_path)
    assert run_tool(project, "calc/calc_interface.py").returncode == 0
    assert ruff_findings(project, "srpc_calc_client_stub.py", "srpc_calc_server_stub.py") == set()


def test_the_generated_stubs_pass_mypy_and_type_check_their_callers(rich_project: Path) -> None:
    command = tool(
        "mypy",
        "--ignore-missing-imports",
        "--no-error-summary",
        "--cache-dir",
        str(rich_project / ".mypy_cache"),
        "srpc_user_store_client_stub.py",
        "srpc_user_store_server_stub.py",
        "client.py",
        "bad_client.py",
    )
    result = subprocess.run(command, cwd=rich_project, capture_output=True, text=True, timeout=300)
    flagged = {line.split(":")[:2][1] for line in result.stdout.splitlines() if ": error:" in line}
    files = {line.split(":")[0] for line in result.stdout.splitlines() if ": error:" in line}
    assert files == {"bad_client.py"}, result.stdout
    assert flagged == {"4", "5", "6", "7", "8"}, result.stdout


# -- the client stub at run time ---------------------------------------------------------------

SIGNATURE_CHECK = """\
import inspect, json
from srpc_core.interface import read_interface
from srpc_{package}_client_stub import {stub}
from {package}.{package}_interface import {interface}

def same(name):
    a, b = getattr({interface}, name), getattr({stub}, name)
    signature = inspect.signature(a) == inspect.signature(b)
    text = str(inspect.signature(a)) == str(inspect.signature(b))
    return [signature and text, a.__doc__ == b.__doc__ or inspect.getdoc(a) == inspect.getdoc(b)]

print(json.dumps({{
    "subclass": issubclass({stub}, {interface}),
    "abstract": inspect.isabstract({stub}),
    "procedures": {{n: same(n) for n in read_interface({interface}).procedures}},
}}))
"""


def run_client_code(project: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", code],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
    )


RICH_PROCEDURES = ["ping", "add_user", "find", "names", "count", "export", "forget"]


def test_the_client_stub_is_the_interface_with_the_same_signatures(rich_project: Path) -> None:
    code = SIGNATURE_CHECK.format(
        package="user_store", stub="SrpcUserStoreClientStub", interface="UserStoreInterface"
    )
    result = run_client_code(rich_project, code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "subclass": True,
        "abstract": False,
        "procedures": {name: [True, True] for name in RICH_PROCEDURES},
    }


def test_signatures_match_without_future_annotations_too(tmp_path: Path) -> None:
    interface = RICH_INTERFACE.replace("from __future__ import annotations\n", "")
    implementation = RICH_IMPLEMENTATION.replace("from __future__ import annotations\n", "")
    project = write_files(
        tmp_path / "project",
        {
            "user_store/__init__.py": "",
            "user_store/user_store_interface.py": interface,
            "user_store/user_store.py": implementation,
        },
    )
    assert run_tool(project, "user_store/user_store_interface.py").returncode == 0
    stub = (project / "srpc_user_store_client_stub.py").read_text()
    assert "__future__" not in stub
    assert "def __enter__(self) -> Self:" in stub
    code = SIGNATURE_CHECK.format(
        package="user_store", stub="SrpcUserStoreClientStub", interface="UserStoreInterface"
    )
    result = run_client_code(project, code)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["subclass"] and not report["abstract"]
    assert all(all(same) for same in report["procedures"].values()), report


VALUES_INTERFACE = r'''
import enum
from abc import ABC, abstractmethod
from typing import Annotated, Callable, Literal

LIMIT = 3


class Color(enum.Enum):
    RED = 1


def positive(limit: int) -> str:
    return f"0 < x <= {limit}"


class CalcInterface(ABC):
    @abstractmethod
    def paint(
        self,
        color: Color | Literal["red"] = Color.RED,
        key: Annotated[int, Callable[[int], int]] = abs,
    ) -> Annotated[int, positive(LIMIT)]:
        """Say "hi\"\"\" \x07 \\d"""

    @abstractmethod
    def keyed(self, key: Annotated[int, Callable[[int], int]] = lambda v: v * LIMIT) -> None:
        """A lambda default: lambdas equal only themselves, so the signatures differ."""

    @abstractmethod
    def sizes(self, xs: list[int] = [i * LIMIT for i in range(2)]) -> None:  # noqa: B006
        """Ends in a quote: "quoted\""""
'''


def test_names_in_defaults_literals_and_annotated_are_imported(tmp_path: Path) -> None:
    project = calc(tmp_path, VALUES_INTERFACE)
    result = run_tool(project, "calc/calc_interface.py")
    assert result.returncode == 0, result.stderr
    stub = (project / "srpc_calc_client_stub.py").read_text()
    assert "from typing import Annotated, Callable, Literal, Self, cast\n" in stub
    assert "from calc.calc_interface import LIMIT, CalcInterface, Color, positive\n" in stub
    assert "key: Annotated[int, Callable[[int], int]] = lambda v: v * LIMIT" in stub
    code = SIGNATURE_CHECK.format(
        package="calc", stub="SrpcCalcClientStub", interface="CalcInterface"
    )
    check = run_client_code(project, code)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["procedures"] == {
        "paint": [True, True],
        "keyed": [False, True],
        "sizes": [True, True],
    }


def test_the_client_needs_only_the_interface_and_the_client_stub(
    rich_project: Path, tmp_path: Path
) -> None:
    client_dir = write_files(
        tmp_path / "client",
        {
            "user_store/__init__.py": "",
            "user_store/user_store_interface.py": RICH_INTERFACE,
            "srpc_user_store_client_stub.py": (
                rich_project / "srpc_user_store_client_stub.py"
            ).read_text(),
        },
    )
    code = textwrap.dedent(
        """\
        import sys
        from srpc_user_store_client_stub import SrpcUserStoreClientStub
        store = SrpcUserStoreClientStub("127.0.0.1", 1)
        assert "user_store.user_store" not in sys.modules
        print(store.helper.__qualname__)
        """
    )
    result = run_client_code(client_dir, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "UserStoreInterface.helper"


def tool(name: str, *args: str) -> list[str]:
    """A command line for a tool installed next to this Python (ruff, mypy)."""
    return [str(BIN / name), *args]


def test_only_one_stub(tmp_path: Path) -> None:
    project = calc(tmp_path)
    (project / "calc/calc.py").unlink()  # a client folder: no implementation
    result = run_tool(project, "calc/calc_interface.py", "--only", "client")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no note about the missing implementation
    assert (project / "srpc_calc_client_stub.py").is_file()
    assert not (project / "srpc_calc_server_stub.py").exists()
    check = run_tool(project, "calc/calc_interface.py", "--check", "--only", "client")
    assert check.returncode == 0, check.stderr
    check = run_tool(project, "calc/calc_interface.py", "--check", "--only", "server")
    assert check.returncode == 1
    assert "srpc_calc_server_stub.py is missing" in check.stderr
    assert "srpc_calc_client_stub.py" not in check.stderr
    assert "calc/calc_interface.py --only server" in check.stderr
