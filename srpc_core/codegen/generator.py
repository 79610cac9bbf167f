"""The stub generator: reads ``pkg/pkg_interface.py`` and writes the two stub modules.

The interface module is imported (it is the user's own code) to read the procedures exactly as
the runtime will; the signatures are copied from its source with `ast`, so the stubs show the
interface's own annotations and defaults, and the names those use are imported from the module
that defines the method (the interface module itself, or a base interface's module).
"""

from __future__ import annotations
import __future__

import builtins
import importlib
import keyword
import linecache
import os
import sys
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import srpc_core
from srpc_core.codegen import templates
from srpc_core.codegen.naming import ServiceNames
from srpc_core.codegen.source import MethodSource, SourceError, method_source, signature_names
from srpc_core.convert import plan_service
from srpc_core.errors import StubGenError
from srpc_core.interface import InterfaceError, private_abstract_names, read_interface
from srpc_core.plugins import get_plugins

#: Attributes of the client stubs (sync and async) a procedure must not shadow.
RESERVED_NAMES = frozenset({"aclose", "close", "with_options"})
#: Module-level names every client stub binds itself.
_STUB_GLOBALS: dict[str, Any] = {
    "os": os,
    "srpc_core": srpc_core,
    "Self": typing.Self,
    "cast": typing.cast,
    "typing": typing,
}
_MISSING = object()
_CLASH = object()


@dataclass(frozen=True)
class GeneratedFile:
    """A stub module: where it goes, what it holds, and its role (``server`` or ``client``)."""

    path: Path
    text: str
    role: str

    def is_current(self) -> bool:
        """True if the file on disk holds exactly this text."""
        try:
            return self.path.read_text(encoding="utf-8") == self.text
        except (OSError, UnicodeDecodeError):
            return False


@dataclass
class Stubs:
    """The result of `generate`: the stub files, and notes worth showing the user."""

    files: list[GeneratedFile]
    notes: list[str] = field(default_factory=list)


def generate(interface_file: str | Path, output_dir: str | Path = ".") -> Stubs:
    """Build (without writing) the server and client stubs for `interface_file`.

    Raises `StubGenError` with a message for the user when the interface cannot be used.
    """
    path = Path(interface_file)
    names = service_names(path)
    module = _import_interface(path, names)
    interface = _find_interface(path, module, names)
    methods = _read_methods(path, interface)
    imports = _imports(path, methods, module, interface, names)
    _check_types(path, interface)
    future = getattr(module, "annotations", None) is __future__.annotations
    source = names.interface_path
    out = Path(output_dir)
    server = templates.server_stub(names, source)
    client = templates.client_stub(names, source, imports, methods, future)
    return Stubs(
        files=[
            GeneratedFile(out / names.server_stub_file, server, "server"),
            GeneratedFile(out / names.client_stub_file, client, "client"),
        ],
        notes=_notes(names),
    )


def write(files: list[GeneratedFile]) -> None:
    """Write the generated stubs to disk."""
    for file in files:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        file.path.write_text(file.text, encoding="utf-8")


def service_names(path: Path) -> ServiceNames:
    """The names of the service whose interface is `path`; `StubGenError` if it is misplaced."""
    if not path.is_file():
        raise StubGenError(f"{path}: no such file; give the path of your pkg/pkg_interface.py")
    package_dir = path.resolve().parent
    package = package_dir.name
    if path.name != f"{package}_interface.py":
        raise StubGenError(
            f"{path}: expected the interface of package {package!r} in "
            f"{package}/{package}_interface.py (the naming convention srpc's stubs follow)"
        )
    if not package.isidentifier() or keyword.iskeyword(package):
        raise StubGenError(
            f"{path}: {package!r} is not a valid Python package name: use letters, digits and "
            "underscores, e.g. user_store"
        )
    if not (package_dir / "__init__.py").is_file():
        raise StubGenError(
            f"{path}: {package}/ is not a package: add an empty {package}/__init__.py"
        )
    parts = [package]
    root = package_dir.parent
    while (root / "__init__.py").is_file() and root.name.isidentifier():
        parts.insert(0, root.name)
        root = root.parent
    return ServiceNames(package=package, module_prefix=".".join(parts), root=root)


def _import_interface(path: Path, names: ServiceNames) -> ModuleType:
    top = names.module_prefix.split(".")[0]
    for cached in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[cached]  # a previous generation in this process may have another copy
    importlib.invalidate_caches()
    linecache.clearcache()  # the source may have changed since it was last read
    sys.path.insert(0, str(names.root))
    try:
        return importlib.import_module(names.interface_module)
    except (Exception, SystemExit) as exc:
        raise StubGenError(
            f"{path}: importing {names.interface_module} failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path.remove(str(names.root))


def _find_interface(path: Path, module: ModuleType, names: ServiceNames) -> type:
    interface = getattr(module, names.interface_class, None)
    if isinstance(interface, type):
        return interface
    found = [n for n, v in vars(module).items() if isinstance(v, type) and n.endswith("Interface")]
    hint = f" (found: {', '.join(found)})" if found else ""
    raise StubGenError(
        f"{path}: no class {names.interface_class} in {names.interface_module}{hint}; the "
        f"interface of package {names.package!r} must be called {names.interface_class}"
    )


def _read_methods(path: Path, interface: type) -> list[MethodSource]:
    try:
        service = read_interface(interface)
    except InterfaceError as exc:
        raise StubGenError(f"{path}: {exc}") from None
    clashes = sorted(RESERVED_NAMES & set(service.procedures))
    if clashes:
        raise StubGenError(
            f"{path}: procedure name(s) {', '.join(clashes)} clash with the client stub's own "
            "method(s) of the same name: rename them in the interface"
        )
    hidden = private_abstract_names(interface)
    if hidden:
        raise StubGenError(
            f"{path}: {interface.__qualname__} has private abstract method(s) "
            f"{', '.join(hidden)}: only public methods can be called remotely, so the client "
            "stub could not implement them; make them public, or give them a body and drop "
            "@abstractmethod"
        )
    try:
        methods = [method_source(interface, name) for name in service.procedures]
    except SourceError as exc:
        raise StubGenError(f"{path}: {exc}") from None
    for method in methods:
        if {"cast", "typing"} <= templates.parameter_names(method.node):
            raise StubGenError(
                f"{path}: {method.name} has parameters named both 'cast' and 'typing', the "
                "names its client stub method uses to type its result: rename one of them"
            )
    return methods


def _check_types(path: Path, interface: type) -> None:
    """Refuse annotations naming a type srpc cannot carry (unless a plugin taught it)."""
    try:
        plan_service(read_interface(interface), None, get_plugins().type_adapters())
    except InterfaceError as exc:
        raise StubGenError(f"{path}: {exc}") from None


def _imports(
    path: Path,
    methods: list[MethodSource],
    module: ModuleType,
    interface: type,
    names: ServiceNames,
) -> templates.Imports:
    """What the client stub imports: the interface, and the names its signatures use."""
    imports = templates.Imports(first_party=_first_party(names.root))
    imports.add_from(module.__name__, names.interface_class)
    bound: dict[str, Any] = {names.interface_class: interface}
    for method in methods:
        used = signature_names(method.node)
        for name, strict in _each_name(used.required, used.optional):
            value = _resolve(path, method, name, strict)
            if value is _MISSING or _already_bound(path, name, value, bound, names):
                continue
            bound[name] = value
            _add_import(imports, name, value, method.module, module, used.dotted)
    return imports


def _first_party(root: Path) -> frozenset[str]:
    """The top-level packages and modules next to the service's package (the user's own)."""
    return frozenset(
        entry.stem
        for entry in root.iterdir()
        if entry.stem.isidentifier() and (entry.suffix == ".py" or entry.is_dir())
    )


def _each_name(required: set[str], optional: set[str]) -> Iterator[tuple[str, bool]]:
    for name in sorted(required | optional):
        yield name, name in required


def _resolve(path: Path, method: MethodSource, name: str, strict: bool) -> Any:
    """The value `name` has where `method` is defined; `_MISSING` for built-ins and unknowns."""
    value = vars(method.module).get(name, _MISSING)
    if value is not _MISSING or hasattr(builtins, name) or not strict:
        return value
    raise StubGenError(
        f"{path}: the signature of {method.name} uses {name!r}, which is not defined at the "
        f"top level of {method.module.__name__}; the client stub imports the names its "
        "signatures use from there (so not class attributes, nor names imported only under "
        "TYPE_CHECKING)"
    )


def _already_bound(
    path: Path, name: str, value: Any, bound: dict[str, Any], names: ServiceNames
) -> bool:
    """True if the stub already has `name` for `value`; `StubGenError` if for something else."""
    own = _STUB_GLOBALS.get(name, bound.get(name, _MISSING))
    if name in (names.client_stub_class, names.async_client_stub_class):
        own = _CLASH
    if own is _MISSING:
        return False
    if own is value:
        return True
    raise StubGenError(
        f"{path}: the signatures use the name {name!r} for two different things (or for "
        "something other than what the client stub itself calls so): rename one of them"
    )


def _add_import(
    imports: templates.Imports,
    name: str,
    value: Any,
    home: ModuleType,
    interface_module: ModuleType,
    dotted: set[str],
) -> None:
    """Import `name` the plainest way that gives the same object.

    Modules as ``import pkg.mod``; objects from the public module that defines them
    (``from typing import Any``), so linters and type checkers know them; anything else from
    the interface module (or the base interface's module) where the signature found it.
    """
    if isinstance(value, ModuleType) and value.__name__ == name:
        for module in _module_paths(name, dotted):
            imports.add_module(module)
    elif (origin := _public_origin(name, value)) is not None:
        imports.add_from(origin, name)
    elif vars(interface_module).get(name, _MISSING) is value:
        imports.add_from(interface_module.__name__, name)
    else:
        imports.add_from(home.__name__, name)


def _public_origin(name: str, value: Any) -> str | None:
    """The public module that defines `value` under `name`, or None."""
    origin = getattr(value, "__module__", None)
    if not isinstance(origin, str) or origin in ("builtins", "__main__"):
        return None
    if any(part.startswith("_") for part in origin.split(".")):
        return None
    module = sys.modules.get(origin)
    if module is None or vars(module).get(name, _MISSING) is not value:
        return None
    return origin


def _module_paths(name: str, dotted: set[str]) -> set[str]:
    """Modules to import for `name`: ``collections.abc.Callable`` -> ``collections.abc``."""
    modules = {name}
    for path in dotted:
        parts = path.split(".")
        if parts[0] != name:
            continue
        for end in range(len(parts), 1, -1):
            candidate = ".".join(parts[:end])
            if isinstance(sys.modules.get(candidate), ModuleType):
                modules.add(candidate)
                break
    return modules


def _notes(names: ServiceNames) -> list[str]:
    implementation = names.root / Path(*names.implementation_module.split(".")).with_suffix(".py")
    if implementation.is_file():
        return []
    return [
        f"{names.server_stub_file} imports {names.implementation_class} from "
        f"{names.implementation_module}, and {implementation} does not exist yet (the client "
        "needs only the client stub and the interface)"
    ]


__all__ = [
    "RESERVED_NAMES",
    "GeneratedFile",
    "Stubs",
    "generate",
    "service_names",
    "write",
]
