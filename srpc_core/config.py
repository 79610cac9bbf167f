"""`srpc.toml`: where it is found, what it holds, and how it is checked (docs/config.md).

Lookup order: a `config=` argument, the ``SRPC_CONFIG`` environment variable, ``./srpc.toml``;
none of them -> the defaults. Arguments given to a stub (host, port, timeout) beat the file.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srpc_core.errors import ConfigError

CONFIG_ENV_VAR = "SRPC_CONFIG"
CONFIG_FILE_NAME = "srpc.toml"
#: Frames carry a 4-byte length, so no message may exceed this.
MAX_MESSAGE_BYTES_LIMIT = 2**32 - 1
LAN_HOST = "lan"


@dataclass(frozen=True)
class Config:
    """The settings of one client or server. Build it with `load_config`."""

    transport: str = "tcp"
    codec: str = "json"
    host: str = "127.0.0.1"
    port: int = 5000
    timeout: float = 30.0
    max_message_bytes: int = 16 * 1024 * 1024
    send_tracebacks: bool = False
    metrics_path: str = "srpc_server_metrics.log"
    #: The ``[srpc.<name>]`` tables, by name (plugins read their own with `options`).
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Where the settings came from: a file path, or "defaults".
    source: str = "defaults"

    def options(self, name: str) -> Mapping[str, Any]:
        """The ``[srpc.<name>]`` table, or an empty mapping."""
        return self.tables.get(name, {})


# key -> (check, description of a valid value); applies to [srpc] and to overrides.
_CHECKS: dict[str, tuple[Any, str]] = {
    "transport": (lambda v: isinstance(v, str) and v != "", "a transport name such as 'tcp'"),
    "codec": (lambda v: isinstance(v, str) and v != "", "a codec name such as 'json'"),
    "host": (lambda v: isinstance(v, str) and v != "", "a host name, an IP address or 'lan'"),
    "port": (lambda v: _is_int(v) and 0 <= v <= 65535, "an integer from 0 to 65535"),
    "timeout": (lambda v: _is_number(v) and v > 0, "a number of seconds greater than 0"),
    "max_message_bytes": (
        lambda v: _is_int(v) and 0 < v <= MAX_MESSAGE_BYTES_LIMIT,
        f"an integer from 1 to {MAX_MESSAGE_BYTES_LIMIT}",
    ),
    "send_tracebacks": (lambda v: isinstance(v, bool), "true or false"),
}
_METRICS_CHECKS: dict[str, tuple[Any, str]] = {
    "path": (lambda v: isinstance(v, str), 'a file path, or "" to turn the metrics log off'),
    "flush_interval": (lambda v: _is_number(v) and v > 0, "a number of seconds greater than 0"),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def find_config_file(config: str | os.PathLike[str] | None = None) -> Path | None:
    """Return the config file to use, following the lookup order, or None for defaults."""
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} (given as config=) does not exist")
        return path
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(f"config file {from_env!r} (from ${CONFIG_ENV_VAR}) does not exist")
        return path
    local = Path(CONFIG_FILE_NAME)
    return local if local.is_file() else None


def load_config(config: str | os.PathLike[str] | Config | None = None, **overrides: Any) -> Config:
    """Load and validate the configuration, then apply `overrides` whose value is not None.

    `config` may be a path, an already loaded `Config`, or None for the normal lookup.
    Raises `ConfigError` naming the file, the key and what would be valid.
    """
    if isinstance(config, Config):
        base = config
    else:
        path = find_config_file(config)
        base = _read_file(path) if path else Config()
    given = {key: value for key, value in overrides.items() if value is not None}
    for key, value in given.items():
        _check(key, value, "argument", _CHECKS)
    return dataclasses.replace(base, **given) if given else base


def _read_file(path: Path) -> Config:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    section = document.get("srpc", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'srpc' must be a table: write [srpc]")
    values: dict[str, Any] = {}
    tables: dict[str, Mapping[str, Any]] = {}
    for key, value in section.items():
        if isinstance(value, dict):
            tables[key] = value
        elif key in _CHECKS:
            _check(key, value, f"{path}: [srpc]", _CHECKS)
            values[key] = value
        else:
            valid = ", ".join(sorted(_CHECKS))
            raise ConfigError(
                f"{path}: unknown key {key!r} in [srpc]; valid keys: {valid} "
                "(plugin settings go in their own table, [srpc.<plugin>])"
            )
    metrics = tables.get("metrics", {})
    for key, value in metrics.items():
        if key not in _METRICS_CHECKS:
            valid = ", ".join(sorted(_METRICS_CHECKS))
            raise ConfigError(f"{path}: unknown key {key!r} in [srpc.metrics]; valid keys: {valid}")
        _check(key, value, f"{path}: [srpc.metrics]", _METRICS_CHECKS)
    if "path" in metrics:
        values["metrics_path"] = metrics["path"]
    if "timeout" in values:
        values["timeout"] = float(values["timeout"])
    return Config(**values, tables=tables, source=str(path))


def _check(key: str, value: Any, where: str, checks: Mapping[str, tuple[Any, str]]) -> None:
    if key not in checks:
        raise ConfigError(f"{where}: unknown setting {key!r}; valid: {', '.join(sorted(checks))}")
    is_valid, expected = checks[key]
    if not is_valid(value):
        raise ConfigError(f"{where} {key} = {value!r} is invalid: expected {expected}")


def resolve_host(host: str) -> str:
    """Turn the special host "lan" into this machine's LAN address; return others unchanged.

    The LAN address is the source address of the default route, found by "connecting" a UDP
    socket (no packet is sent). Falls back to 127.0.0.1 on a machine without a route.
    """
    if host != LAN_HOST:
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
