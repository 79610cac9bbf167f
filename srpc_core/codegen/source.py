"""Reading an interface method's source: its `ast` node and the names its signature uses.

The stubs copy each signature as written (annotations and defaults as source text), so they
read like the interface; the names that text uses are then imported into the client stub.
"""

from __future__ import annotations

import ast
import inspect
import sys
from dataclasses import dataclass, field
from types import ModuleType

from srpc_core.errors import SrpcError

#: Subscripted forms whose arguments are values, not types: their strings name nothing.
_LITERAL_FORMS = frozenset({"Literal"})
#: Subscripted forms whose first argument is a type and the rest are values.
_ANNOTATED_FORMS = frozenset({"Annotated"})


class SourceError(SrpcError):
    """The source of an interface method cannot be read or used."""


@dataclass(frozen=True)
class MethodSource:
    """An interface method as written.

    Attributes:
        name: the method name.
        node: its definition.
        text: the source text `node` was parsed from (its positions point into it).
        module: the module the method was defined in, where its signature's names resolve.
    """

    name: str
    node: ast.FunctionDef
    text: str
    module: ModuleType

    def segment(self, expression: ast.expr) -> str:
        """The source text of `expression` as written (normalised if it spans lines)."""
        text = ast.get_source_segment(self.text, expression)
        if text is None or "\n" in text:
            return ast.unparse(expression)
        return text


@dataclass
class UsedNames:
    """The names a signature uses.

    Attributes:
        required: names that appear as code in annotations and defaults: they must resolve.
        optional: names from string (forward-reference) annotations: they are imported when
            they resolve and skipped otherwise (the stub's strings stay as unresolved as the
            interface's).
        dotted: full dotted paths (``collections.abc.Callable``) used, to import submodules.
    """

    required: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)
    dotted: set[str] = field(default_factory=set)


def method_source(interface: type, name: str) -> MethodSource:
    """Read the definition of `interface.name` from its source file."""
    function = inspect.getattr_static(interface, name)
    where = f"{interface.__qualname__}.{name}"
    try:
        lines, _ = inspect.getsourcelines(function)
    except (OSError, TypeError) as exc:
        raise SourceError(f"cannot read the source of {where}: {exc}") from None
    text = "".join(lines)
    if text[:1].isspace():  # a method: indented, maybe with less-indented string lines
        text = "if True:\n" + text
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise SourceError(f"cannot parse the source of {where}: {exc}") from None
    node = next(
        (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)),
        None,
    )
    if node is None or node.name != name:
        raise SourceError(f"cannot find the definition of {where} (def {name}) in its source")
    if isinstance(node, ast.AsyncFunctionDef):
        raise SourceError(f"{where} is an async method: srpc procedures are plain methods")
    module = sys.modules.get(function.__module__)
    if module is None:
        raise SourceError(f"the module of {where} ({function.__module__}) is not loaded")
    return MethodSource(name, node, text, module)


def signature_names(node: ast.FunctionDef) -> UsedNames:
    """The names the annotations and defaults of `node`'s signature use."""
    used = UsedNames()
    args = node.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    every += [a for a in (args.vararg, args.kwarg) if a is not None]
    annotations = [a.annotation for a in every if a.annotation is not None]
    if node.returns is not None:
        annotations.append(node.returns)
    for annotation in annotations:
        _annotation_names(annotation, used, forward=False)
    for default in (*args.defaults, *args.kw_defaults):
        if default is not None:
            _value_names(default, used, optional=False)
    return used


def _annotation_names(expression: ast.expr, used: UsedNames, forward: bool) -> None:
    """Collect the names of a type expression; `forward`: it came from a string."""
    if isinstance(expression, ast.Constant) and isinstance(expression.value, str):
        _string_names(expression.value, used)
    elif isinstance(expression, ast.Subscript):
        _annotation_names(expression.value, used, forward)
        form = _terminal_name(expression.value)
        items = _slice_items(expression.slice)
        if form in _LITERAL_FORMS:  # values: Literal["a", Color.RED]
            for item in items:
                _value_names(item, used, forward)
            return
        if form in _ANNOTATED_FORMS and items:
            _annotation_names(items[0], used, forward)
            for metadata in items[1:]:
                _value_names(metadata, used, forward)
            return
        for item in items:
            _annotation_names(item, used, forward)
    elif isinstance(expression, ast.Name | ast.Attribute):
        _dotted(expression, used, optional=forward)
    else:
        for child in ast.iter_child_nodes(expression):
            if isinstance(child, ast.expr):
                _annotation_names(child, used, forward)


def _string_names(text: str, used: UsedNames) -> None:
    try:
        parsed = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return
    _annotation_names(parsed, used, forward=True)


def _value_names(expression: ast.expr, used: UsedNames, optional: bool) -> None:
    """Collect the names a value (a default, Literal or Annotated arguments) reads.

    Names the expression binds itself (a lambda's parameters, a comprehension's variables) are
    not collected.
    """
    local = {node.arg for node in ast.walk(expression) if isinstance(node, ast.arg)}
    local |= {
        node.id
        for node in ast.walk(expression)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    for sub in ast.walk(expression):
        if isinstance(sub, ast.Name | ast.Attribute) and _root_name(sub) not in local:
            _dotted(sub, used, optional)


def _root_name(expression: ast.expr) -> str | None:
    while isinstance(expression, ast.Attribute):
        expression = expression.value
    return expression.id if isinstance(expression, ast.Name) else None


def _dotted(expression: ast.Name | ast.Attribute, used: UsedNames, optional: bool) -> None:
    parts: list[str] = []
    current: ast.expr = expression
    while isinstance(current, ast.Attribute):
        parts.insert(0, current.attr)
        current = current.value
    if not isinstance(current, ast.Name):
        return
    parts.insert(0, current.id)
    (used.optional if optional else used.required).add(current.id)
    used.dotted.add(".".join(parts))


def _terminal_name(expression: ast.expr) -> str:
    if isinstance(expression, ast.Name):
        return expression.id
    if isinstance(expression, ast.Attribute):
        return expression.attr
    return ""


def _slice_items(expression: ast.expr) -> list[ast.expr]:
    return list(expression.elts) if isinstance(expression, ast.Tuple) else [expression]


__all__ = [
    "MethodSource",
    "SourceError",
    "UsedNames",
    "method_source",
    "signature_names",
]
