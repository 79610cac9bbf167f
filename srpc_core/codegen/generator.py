"""The stub generator: reads ``pkg/pkg_interface.py`` and writes the two stub modules.

The interface module is imported (it is the user's own code) to read the procedures exactly as
the runtime will; the signatures are copied from its source with `ast`, so the stubs show the
interface's own annotations and defaults.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from srpc_core.codegen import templates
from srpc_core.codegen.naming import ServiceNames
from srpc_core.errors import SrpcError
from srpc_core.interface import InterfaceError, read_interface

#: Attributes of the client stub a procedure must not shadow.
RESERVED_NAMES = frozenset({"close"})


class StubGenError(SrpcError):
    """The interface cannot be turned into stubs; the message says why and what to do."""


@dataclass(frozen=True)
class GeneratedFile:
    """A stub module: where it goes and what it holds."""

    path: Path
    text: str

    def is_current(self) -> bool:
        """True if the file on disk holds exactly this text."""
        return self.path.is_file() and self.path.read_text(encoding="utf-8") == self.text


def generate(interface_file: str | Path, output_dir: str | Path = ".") -> list[GeneratedFile]:
    """Build (without writing) the server and client stubs for `interface_file`."""
    path = Path(interface_file)
    names = _service_names(path)
    module = _import_interface(path, names)
    interface = getattr(module, names.interface_class, None)
    if not isinstance(interface, type):
        found = [
            n for n, v in vars(module).items() if isinstance(v, type) and n.endswith("Interface")
        ]
        hint = f" (found: {', '.join(found)})" if found else ""
        raise StubGenError(
            f"{path}: no class {names.interface_class} in {names.interface_module}{hint}; the "
            f"interface of package {names.package!r} must be called {names.interface_class}"
        )
    try:
        service = read_interface(interface)
    except InterfaceError as exc:
        raise StubGenError(f"{path}: {exc}") from None
    clashes = RESERVED_NAMES & set(service.procedures)
    if clashes:
        raise StubGenError(
            f"{path}: procedure name(s) {', '.join(sorted(clashes))} clash with the client stub's "
            "own method(s) of the same name: rename them in the interface"
        )
    methods = [_method_source(interface, name) for name in service.procedures]
    imports = _annotation_imports(methods, module, names.interface_class)
    source = path.as_posix()
    out = Path(output_dir)
    return [
        GeneratedFile(out / names.server_stub_file, templates.server_stub(names, source)),
        GeneratedFile(
            out / names.client_stub_file,
            templates.client_stub(names, source, imports, [m.text for m in methods]),
        ),
    ]


def write(files: list[GeneratedFile]) -> None:
    """Write the generated stubs to disk."""
    for file in files:
        file.path.parent.mkdir(parents=True, exist_ok=True)
        file.path.write_text(file.text, encoding="utf-8")


def _service_names(path: Path) -> ServiceNames:
    if not path.is_file():
        raise StubGenError(f"{path}: no such file; give the path of your pkg/pkg_interface.py")
    package_dir = path.resolve().parent
    package = package_dir.name
    if path.name != f"{package}_interface.py":
        raise StubGenError(
            f"{path}: expected the interface of package {package!r} in "
            f"{package}/{package}_interface.py (the naming convention srpc's stubs follow)"
        )
    if not (package_dir / "__init__.py").is_file():
        raise StubGenError(
            f"{path}: {package_dir.name}/ is not a package: add an empty {package}/__init__.py"
        )
    parts = [package]
    root = package_dir.parent
    while (root / "__init__.py").is_file():
        parts.insert(0, root.name)
        root = root.parent
    return ServiceNames(package=package, module_prefix=".".join(parts), root=root)


def _import_interface(path: Path, names: ServiceNames) -> ModuleType:
    top = names.module_prefix.split(".")[0]
    for cached in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        del sys.modules[cached]  # a previous generation in this process may have another copy
    sys.path.insert(0, str(names.root))
    try:
        return importlib.import_module(names.interface_module)
    except Exception as exc:
        raise StubGenError(
            f"{path}: importing {names.interface_module} failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path.remove(str(names.root))


@dataclass(frozen=True)
class _Method:
    text: str
    node: ast.FunctionDef


def _method_source(interface: type, name: str) -> _Method:
    node = _function_node(interface, name)
    return _Method(templates.client_method(node), node)


def _function_node(interface: type, name: str) -> ast.FunctionDef:
    for klass in interface.__mro__:
        if name not in vars(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            break
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef) and node.name == name:
                raise StubGenError(f"{name}: async methods are not supported by srpc stubs")
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
    raise StubGenError(f"cannot find the source of {interface.__qualname__}.{name}")


def _annotation_imports(methods: list[_Method], module: ModuleType, interface: str) -> list[str]:
    """Names the stub must import from the interface module for its annotations and defaults."""
    needed: set[str] = set()
    for method in methods:
        annotations, defaults = _signature_expressions(method.node)
        for expression in annotations:
            needed |= _names_in(expression, strings_name_things=True)
        for expression in defaults:
            needed |= _names_in(expression, strings_name_things=False)
    needed.discard(interface)
    missing = [n for n in needed if n not in vars(module) and not hasattr(builtins, n)]
    if missing:
        raise StubGenError(
            f"{module.__name__}: the name(s) {', '.join(sorted(missing))} used in signatures are "
            "not defined at module level"
        )
    return sorted(n for n in needed if n in vars(module))


def _signature_expressions(node: ast.FunctionDef) -> tuple[list[ast.expr], list[ast.expr]]:
    """The annotations and the default values of a function's signature."""
    args = node.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    every += [a for a in (args.vararg, args.kwarg) if a is not None]
    annotations = [a.annotation for a in every if a.annotation is not None]
    if node.returns is not None:
        annotations.append(node.returns)
    defaults = [d for d in (*args.defaults, *args.kw_defaults) if d is not None]
    return annotations, defaults


def _names_in(expression: ast.expr, strings_name_things: bool) -> set[str]:
    names: set[str] = set()
    for sub in ast.walk(expression):
        if isinstance(sub, ast.Name):
            names.add(sub.id)
        elif strings_name_things and isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            try:  # a string annotation ("Point") names things too
                names |= _names_in(ast.parse(sub.value, mode="eval").body, True)
            except SyntaxError:
                pass
    return names
