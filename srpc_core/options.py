"""Checking a plugin's own table in srpc.toml, ``[srpc.<name>]`` (docs/plugins.md).

A plugin declares its options once, as `Option` values, and checks the table it is given
against them::

    from srpc_core.options import Option, PluginOptions

    TCP_OPTIONS = {
        "idle_timeout": Option(float, default=300.0, minimum=0, exclusive_minimum=True,
                               help="seconds a server keeps a silent connection"),
        "backlog": Option(int, default=128, minimum=1, help="listen backlog"),
    }

    class TcpTransport(Transport):
        def __init__(self, settings):
            super().__init__(settings)
            values = PluginOptions.wrap(settings.options, "tcp").check(TCP_OPTIONS)
            self.idle_timeout = values["idle_timeout"]

`PluginOptions.check` returns every declared option (defaults filled in, ints given for a
``float`` option turned into floats) and raises `srpc_core.errors.ConfigError` for an unknown
key, a missing required key, a value of the wrong type, out of range or not among the allowed
choices. Every message names the file, the table, the key, the value and what is valid::

    srpc.toml: [srpc.tcp] idle_timeout = 'abc' is invalid: expected a number greater than 0
    (seconds a server keeps a silent connection)

Types are checked by msgspec (``msgspec.convert`` in strict mode), so an `Option` may name any
type msgspec converts to, such as ``list[str]`` or ``Literal["bind", "connect"]``. An ``int``
is accepted where ``float`` is declared; a ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args, get_origin

import msgspec

from srpc_core.errors import ConfigError

__all__ = ["DEFAULTS_SOURCE", "REQUIRED", "Option", "PluginOptions"]


class _Required:
    """The type of `REQUIRED`."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of an option that has none: leaving it out of the table is an error.
REQUIRED: Final[Any] = _Required()

#: The `PluginOptions.source` of options that come from no file (a `Config` built in code).
DEFAULTS_SOURCE: Final = "defaults"


@dataclass(frozen=True)
class Option:
    """One key of a plugin's ``[srpc.<name>]`` table: its type, default and valid values.

    Attributes:
        type: the type of the value: ``str``, ``int``, ``float``, ``bool``, or anything
            ``msgspec.convert`` converts to (``list[str]``, ``Literal["a", "b"]``, ...).
            An ``int`` is accepted for ``float`` (and returned as a float); a ``bool`` is
            never accepted as a number.
        default: the value when the key is absent; `REQUIRED` (the default) makes the key
            mandatory. The default is returned as it is, not checked.
        minimum: the smallest valid value (numbers), or None.
        maximum: the largest valid value (numbers), or None.
        exclusive_minimum: the value must be greater than `minimum`, not equal to it.
        exclusive_maximum: the value must be less than `maximum`, not equal to it.
        choices: the only valid values, or None.
        check: a last test of the converted value (e.g. the form of a URL): return True when
            it is valid. Say what it accepts in `expected`.
        expected: what a valid value is, for error messages (``"a URL like tcp://host:port"``);
            by default it is worked out from `type`, the range and `choices`. `help` is
            added after it.
        help: what the option means, in a few words; error messages repeat it in parentheses.
    """

    type: Any
    default: Any = REQUIRED
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    choices: Collection[Any] | None = None
    check: Callable[[Any], bool] | None = None
    expected: str = ""
    help: str = ""

    @property
    def required(self) -> bool:
        """True when the key has no default and must be given."""
        return self.default is REQUIRED

    def describe(self) -> str:
        """What a valid value is, e.g. ``"a number greater than 0"``."""
        if self.expected:
            text = self.expected
        elif self.choices is not None:
            text = "one of " + ", ".join(_toml(choice) for choice in self.choices)
        else:
            text = _describe_type(self.type) + self._describe_range()
        return f"{text} ({self.help})" if self.help else text

    def _describe_range(self) -> str:
        low, high = self.minimum, self.maximum
        if low is not None and high is not None:
            if not (self.exclusive_minimum or self.exclusive_maximum):
                return f" from {_number(low)} to {_number(high)}"
            low_word = "greater than" if self.exclusive_minimum else "of at least"
            high_word = "less than" if self.exclusive_maximum else "at most"
            return f" {low_word} {_number(low)} and {high_word} {_number(high)}"
        if low is not None:
            return f" {'greater than' if self.exclusive_minimum else 'of at least'} {_number(low)}"
        if high is not None:
            return f" {'less than' if self.exclusive_maximum else 'of at most'} {_number(high)}"
        return ""

    def _in_range(self, number: float) -> bool:
        low, high = self.minimum, self.maximum
        if low is not None and (number < low or (self.exclusive_minimum and number == low)):
            return False
        return high is None or not (number > high or (self.exclusive_maximum and number == high))

    def convert(self, value: Any) -> Any:
        """Return `value` converted to `type`; raise `ValueError` if it is not valid."""
        try:
            converted = msgspec.convert(value, self.type, strict=True)
        except msgspec.ValidationError as exc:
            raise ValueError(str(exc)) from None
        if self.choices is not None and converted not in self.choices:
            raise ValueError("not one of the choices")
        if isinstance(converted, int | float) and not self._in_range(converted):
            raise ValueError("out of range")
        if self.check is not None and not self.check(converted):
            raise ValueError("refused by check")
        return converted


class PluginOptions(Mapping[str, Any]):
    """A read-only ``[srpc.<name>]`` table that knows where it comes from.

    It is a plain ``Mapping[str, Any]`` of the table's keys (so code that reads options with
    ``options.get("key", default)`` keeps working), plus `table`, `source`, and `check`, which
    validates the table against the plugin's `Option` declarations.

    Args:
        values: the table's keys and values.
        table: the table's name without brackets, e.g. ``"srpc.tcp"``.
        source: the srpc.toml path the table was read from, or ``"defaults"`` when it was
            given in code (then messages name no file).
    """

    __slots__ = ("_values", "source", "table")

    def __init__(
        self,
        values: Mapping[str, Any] | None = None,
        *,
        table: str,
        source: str = DEFAULTS_SOURCE,
    ) -> None:
        self._values: Mapping[str, Any] = types.MappingProxyType(dict(values or {}))
        #: The table's name without brackets, e.g. ``"srpc.tcp"``.
        self.table = table
        #: The srpc.toml path the table was read from, or ``"defaults"``.
        self.source = source

    @classmethod
    def wrap(
        cls, options: Mapping[str, Any] | None, name: str, source: str = DEFAULTS_SOURCE
    ) -> PluginOptions:
        """Return `options` as a `PluginOptions` for table ``[srpc.<name>]``.

        A `PluginOptions` is returned unchanged (it already knows its table and file); a plain
        mapping (a plugin built in code, a v0.1 caller) or None is wrapped. Plugins call this
        on what their constructor receives before `check`.
        """
        if isinstance(options, PluginOptions):
            return options
        return cls(options, table=f"srpc.{name}", source=source)

    @property
    def name(self) -> str:
        """The plugin's table name without the ``srpc.`` prefix, e.g. ``"tcp"``."""
        return self.table.removeprefix("srpc.")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        values = dict(self._values)
        return f"PluginOptions({values!r}, table={self.table!r}, source={self.source!r})"

    def check(self, spec: Mapping[str, Option]) -> dict[str, Any]:
        """Validate the table against `spec` and return every declared option's value.

        Absent keys get their `Option.default`; given values are converted to their
        `Option.type` (an int given for a float option comes back a float).

        Raises:
            ConfigError: for a key `spec` does not declare (naming the valid keys), a missing
                required key, or a value of the wrong type, out of range, not among the
                choices or refused by `Option.check`. The message names the file, the table,
                the key, the value and what would be valid.
        """
        for key in self._values:
            if key not in spec:
                raise self.unknown_key(key, spec)
        values: dict[str, Any] = {}
        for key, option in spec.items():
            if key not in self._values:
                if option.required:
                    raise ConfigError(
                        f"{_where(self.source)}[{self.table}] is missing the key {key!r}: "
                        f"expected {option.describe()}"
                    )
                values[key] = option.default
                continue
            try:
                values[key] = option.convert(self._values[key])
            except ValueError:
                raise self.invalid(key, option.describe()) from None
        return values

    def invalid(self, key: str, expected: str) -> ConfigError:
        """The error for a bad value of `key` (for checks `check` cannot express).

        Returns (does not raise) ``"<file>: [<table>] <key> = <value> is invalid: expected
        <expected>"``.
        """
        value = self._values.get(key, "(absent)")
        return ConfigError(
            f"{_where(self.source)}[{self.table}] {key} = {_toml(value)} is invalid: "
            f"expected {expected}"
        )

    def unknown_key(self, key: str, valid: Iterable[str]) -> ConfigError:
        """The error for a key the plugin does not know, naming the valid keys."""
        names = sorted(valid)
        listing = ", ".join(names) if names else f"none: [{self.table}] takes no options"
        guess = _closest(key, names)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        return ConfigError(
            f"{_where(self.source)}unknown key {key!r} in [{self.table}]{hint}; "
            f"valid keys: {listing}"
        )


def _where(source: str) -> str:
    """The prefix of a config error message: ``"srpc.toml: "``, or ``""`` without a file."""
    return f"{source}: " if source and source != DEFAULTS_SOURCE else ""


def _closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate a misspelt `word` most likely meant, or None."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _toml(value: Any) -> str:
    """`value` as srpc.toml would spell it (true/false for booleans, repr otherwise)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _number(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


_NAMES: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "booleans"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    dict: ("a table", "tables"),
    list: ("a list", "lists"),
}


def _describe_type(tp: Any, plural: bool = False) -> str:
    if tp in _NAMES:
        return _NAMES[tp][1 if plural else 0]
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(_toml(arg) for arg in args)
    if origin in (types.UnionType, typing.Union):
        members = [arg for arg in args if arg is not type(None)]
        return " or ".join(_describe_type(member, plural) for member in members)
    if origin in (list, tuple, set, frozenset) and args:
        word = "lists" if plural else "a list"
        return f"{word} of {_describe_type(args[0], plural=True)}"
    if origin is dict:
        return "tables" if plural else "a table"
    return getattr(tp, "__name__", repr(tp))
