"""`srpc.toml`: where it is found, what it holds, and how it is checked (docs/config.md).

Lookup order: a `config=` argument, the ``SRPC_CONFIG`` environment variable, ``./srpc.toml``;
none of them -> the defaults. Arguments given to a stub (host, port, timeout) beat the file.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srpc_core.errors import ConfigError
from srpc_core.options import DEFAULTS_SOURCE, Option, PluginOptions, _closest, _where

CONFIG_ENV_VAR = "SRPC_CONFIG"
CONFIG_FILE_NAME = "srpc.toml"
#: Frames carry a 4-byte length, so no message may exceed this.
MAX_MESSAGE_BYTES_LIMIT = 2**32 - 1
LAN_HOST = "lan"
#: The values of ``[srpc] event_loop``: the loop srpc makes when it makes one (docs/asyncio.md).
EVENT_LOOPS = ("asyncio", "uvloop")


#: ``[srpc.<name>]`` tables that belong to srpc itself rather than to a transport or codec:
#: ``metrics`` (the metrics log) and ``auth`` (the shared secret, `AUTH_OPTIONS`).
CORE_TABLES = frozenset({"metrics", "auth"})

#: The keys of ``[srpc]``; they also check the arguments that override them.
SETTINGS: dict[str, Option] = {
    "transport": Option(str, check=bool, expected="a transport name such as 'tcp'"),
    "codec": Option(str, check=bool, expected="a codec name such as 'json'"),
    "host": Option(str, check=bool, expected="a host name, an IP address or 'lan'"),
    "port": Option(int, minimum=0, maximum=65535),
    "timeout": Option(float, minimum=0, exclusive_minimum=True, help="seconds"),
    "max_message_bytes": Option(int, minimum=1, maximum=MAX_MESSAGE_BYTES_LIMIT),
    "send_tracebacks": Option(bool),
    "max_connections": Option(
        int, minimum=1, help="connections a server serves at once; more are refused as busy"
    ),
    "idle_timeout": Option(
        float,
        minimum=0,
        exclusive_minimum=True,
        help="seconds a server keeps a silent connection open",
    ),
    "max_in_flight": Option(int, minimum=1, help="calls one connection may have running at once"),
    "workers": Option(
        int, minimum=1, maximum=256, help="server processes sharing the port (tcp, Linux)"
    ),
    "reflection": Option(bool, help="whether the server describes its interface to `srpc list`"),
    "event_loop": Option(
        str,
        choices=EVENT_LOOPS,
        help="the event loop srpc creates for the asyncio server started by start()",
    ),
}

#: The keys of ``[srpc.metrics]``: ``path`` is read here (`Config.metrics_path`),
#: ``flush_interval`` by the metrics log plugin.
METRICS_OPTIONS: dict[str, Option] = {
    "path": Option(
        str,
        default="srpc_server_metrics.log",
        expected='a file path, or "" to turn the metrics log off',
    ),
    "flush_interval": Option(
        float,
        default=1.0,
        minimum=0,
        exclusive_minimum=True,
        help="seconds between batched writes of the metrics log",
    ),
}

#: The keys of ``[srpc.auth]``: where the shared secret is (exactly one of them; docs/security.md).
#: The secret itself is read by `srpc_core.auth` when a client or server starts.
AUTH_OPTIONS: dict[str, Option] = {
    "secret_env": Option(
        str,
        default=None,
        check=bool,
        expected="the name of an environment variable holding the shared secret",
    ),
    "secret_file": Option(
        str,
        default=None,
        check=bool,
        expected="the path of a file holding the shared secret",
    ),
}


def check_auth_table(options: PluginOptions) -> dict[str, Any]:
    """Check an ``[srpc.auth]`` table: exactly one of `AUTH_OPTIONS`, and never the secret
    itself. Returns the checked values (absent keys are None).

    Raises:
        ConfigError: naming the file and the key, and saying why.
    """
    if "secret" in options:
        raise ConfigError(
            f"{_where(options.source)}[srpc.auth] secret = ... is refused: a secret written in "
            "srpc.toml ends up in version control, backups and logs of the configuration. Put "
            'it in an environment variable (secret_env = "NAME") or in a file readable only '
            'by the service (secret_file = "path"), and keep srpc.toml free of it'
        )
    values = options.check(AUTH_OPTIONS)
    given = [key for key in AUTH_OPTIONS if values[key] is not None]
    if len(given) != 1:
        which = "both secret_env and secret_file are" if given else "neither key is"
        raise ConfigError(
            f"{_where(options.source)}[srpc.auth] needs exactly one of secret_env "
            f"(an environment variable's name) or secret_file (a path); {which} given"
        )
    return values


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
    #: Limits (docs/security.md): connections served at once, seconds a silent connection is
    #: kept, calls one connection may have running.
    max_connections: int = 1024
    idle_timeout: float = 300.0
    max_in_flight: int = 16
    #: Server processes that share the port (tcp on Linux; docs/scaling.md).
    workers: int = 1
    #: Whether the server answers the reflection request (`srpc list`; docs/cli.md).
    reflection: bool = True
    #: The event loop srpc creates itself (`Server.start` with ``async def`` methods):
    #: "asyncio" (the stdlib's) or "uvloop". ``await serve()`` and the async client run on
    #: whatever loop the application runs.
    event_loop: str = "asyncio"
    metrics_path: str = "srpc_server_metrics.log"
    #: The ``[srpc.<name>]`` tables, by name (plugins read their own with `options`).
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Where the settings came from: a file path, or "defaults".
    source: str = DEFAULTS_SOURCE
    #: The ``[srpc]`` settings srpc.toml or `load_config`'s arguments gave (the others are
    #: srpc's defaults); None for a `Config` built in code, whose settings all count as given.
    explicit: frozenset[str] | None = None

    def options(self, name: str) -> PluginOptions:
        """The ``[srpc.<name>]`` table (empty when there is none), for its plugin to check.

        A read-only mapping that also knows its `~PluginOptions.table` and
        `~PluginOptions.source`, so the errors of `PluginOptions.check` name both.
        """
        return PluginOptions(self.tables.get(name), table=f"srpc.{name}", source=self.source)

    def check_tables(self, known: Iterable[str]) -> None:
        """Refuse a ``[srpc.<name>]`` table that nothing reads, such as a misspelt
        ``[srpc.metrcs]``: nothing in srpc.toml is silently ignored.

        Valid names are `known` (`Plugins.for_config` passes every registered transport and
        codec name and every plugin's name) and `CORE_TABLES`.

        Raises:
            ConfigError: naming the file, the table and the valid table names.
        """
        valid = sorted(set(known) | CORE_TABLES)
        for name in self.tables:
            if name in valid:
                continue
            guess = _closest(name, valid)
            hint = f" (did you mean [srpc.{guess}]?)" if guess else ""
            raise ConfigError(
                f"{_where(self.source)}unknown table [srpc.{name}]{hint}; valid tables: "
                + ", ".join(f"[srpc.{table}]" for table in valid)
                + " (a table is named after a registered transport, codec or plugin: "
                "`srpc plugins` lists them)"
            )


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
        base = _read_file(path) if path else Config(explicit=frozenset())
    given = {key: value for key, value in overrides.items() if value is not None}
    for key, value in given.items():
        if key not in SETTINGS:
            raise ConfigError(f"unknown setting {key!r}; valid: {', '.join(sorted(SETTINGS))}")
        try:
            given[key] = SETTINGS[key].convert(value)
        except ValueError:
            raise ConfigError(
                f"argument {key}={value!r} is invalid: expected {SETTINGS[key].describe()}"
            ) from None
    if not given:
        return base
    explicit = None if base.explicit is None else base.explicit | given.keys()
    return dataclasses.replace(base, **given, explicit=explicit)


def _read_file(path: Path) -> Config:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    for key, value in document.items():
        if key == "srpc":
            continue
        if isinstance(value, dict):
            hint = " (did you mean [srpc]?)" if _closest(key, ["srpc"]) else ""
            raise ConfigError(
                f"{path}: unknown table [{key}]{hint}; the only valid top-level table is "
                "[srpc] (plugin settings go in [srpc.<name>])"
            )
        raise ConfigError(f"{path}: the key {key!r} is outside any table; put it under [srpc]")
    if "srpc" not in document:
        raise ConfigError(
            f"{path}: there is no [srpc] table, so nothing in this file would be used; put "
            "the settings under a line [srpc]"
        )
    section = document["srpc"]
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'srpc' must be a table: write [srpc]")
    tables = {k: v for k, v in section.items() if isinstance(v, dict) and k not in SETTINGS}
    srpc = PluginOptions(
        {k: v for k, v in section.items() if k not in tables}, table="srpc", source=str(path)
    )
    for key in srpc:
        if key not in SETTINGS:
            raise ConfigError(
                f"{srpc.unknown_key(key, SETTINGS)} (plugin settings go in their own table, "
                "[srpc.<plugin>])"
            )
    values = srpc.check({key: SETTINGS[key] for key in srpc})
    metrics = PluginOptions(tables.get("metrics"), table="srpc.metrics", source=str(path))
    metrics_path = metrics.check(METRICS_OPTIONS)["path"]
    if "path" in metrics:
        values["metrics_path"] = metrics_path
    if "auth" in tables:
        check_auth_table(PluginOptions(tables["auth"], table="srpc.auth", source=str(path)))
    return Config(**values, tables=tables, source=str(path), explicit=frozenset(values))


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


__all__ = [
    "AUTH_OPTIONS",
    "CONFIG_ENV_VAR",
    "CONFIG_FILE_NAME",
    "CORE_TABLES",
    "EVENT_LOOPS",
    "LAN_HOST",
    "MAX_MESSAGE_BYTES_LIMIT",
    "METRICS_OPTIONS",
    "SETTINGS",
    "Config",
    "check_auth_table",
    "find_config_file",
    "load_config",
    "resolve_host",
]
