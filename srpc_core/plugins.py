"""Finding plugins and looking up the transports and codecs they offer.

Plugins come from the ``srpc`` entry-point group, srpc's own built-ins included. A plugin that
fails to import is reported by name (`srpc plugins`, and in the error when its name is asked
for) instead of crashing the process. ``SRPC_DISABLE_PLUGINS=a,b`` blocks plugins by name.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from srpc_core import hookspecs
from srpc_core.codec import Codec
from srpc_core.config import Config
from srpc_core.convert import TypeAdapter, TypeAdapters
from srpc_core.errors import ConfigError, ErrorContext, PluginConflictError, PluginError
from srpc_core.hookspecs import RegisterCommand
from srpc_core.observer import CallObserver, ClientInfo, ClientObserver, ServerInfo
from srpc_core.protocol import WireError
from srpc_core.transport import Transport, TransportSettings
from srpc_core.version import __version__

ENTRY_POINT_GROUP = "srpc"
#: Plugins srpc cannot work without, registered by import before any entry point (like
#: pytest's ``essential_plugins``): a source checkout runs without being installed, and
#: `SRPC_DISABLE_PLUGINS` cannot turn them off. Plugin name -> module.
ESSENTIAL_PLUGINS = {
    "errors": "srpc_plugins.errors",
    "json": "srpc_plugins.json_codec",
    "tcp": "srpc_plugins.tcp",
}
DISABLE_ENV_VAR = "SRPC_DISABLE_PLUGINS"
log = logging.getLogger("srpc")


@dataclass
class PluginInfo:
    """One plugin as `srpc plugins` shows it."""

    name: str
    distribution: str
    version: str
    module: str
    error: str | None = None  # why it failed to load, if it did
    transports: list[str] = field(default_factory=list)
    codecs: list[str] = field(default_factory=list)
    #: Optional dependencies its transports and codecs need that are not installed, each
    #: with how to install it, e.g. ``"cbor: needs cbor2 (pip install 'srpclib[cbor]')"``.
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Offer:
    """A name -> factory registration and who made it."""

    name: str
    factory: Callable[..., Any]
    plugin: PluginInfo


class Plugins:
    """The loaded plugins of this process and the names they offer."""

    def __init__(self, extra_plugins: Mapping[str, object] | None = None) -> None:
        self.manager = pluggy.PluginManager("srpc")
        self.manager.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._load_essentials()
        self._load_entry_points()
        for name, plugin in (extra_plugins or {}).items():
            self.add(name, plugin)
        self.manager.check_pending()
        self.transports = self._collect("srpc_register_transports", "transport")
        self.codecs = self._collect("srpc_register_codecs", "codec")

    # -- loading ----------------------------------------------------------------------------

    def add(self, name: str, plugin: object, distribution: str = "(registered in code)") -> None:
        """Register a plugin object directly (tests, applications embedding a plugin)."""
        self.manager.register(plugin, name=name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.infos[name] = PluginInfo(name, distribution, "", module)

    def _load_essentials(self) -> None:
        for name, module in ESSENTIAL_PLUGINS.items():
            self.manager.register(importlib.import_module(module), name=name)
            self.infos[name] = PluginInfo(name, "srpclib", __version__, module)

    def _load_entry_points(self) -> None:
        disabled = {n.strip() for n in os.environ.get(DISABLE_ENV_VAR, "").split(",") if n.strip()}
        for name in sorted(disabled & ESSENTIAL_PLUGINS.keys()):
            log.warning("%s=%s ignored: srpc cannot work without it", DISABLE_ENV_VAR, name)
        for entry_point in entry_points(group=ENTRY_POINT_GROUP):
            if ESSENTIAL_PLUGINS.get(entry_point.name) == entry_point.value:
                self._note_essential(entry_point)
                continue
            if entry_point.name in disabled:
                self.manager.set_blocked(entry_point.name)
                continue
            self._load_entry_point(entry_point)

    def _note_essential(self, entry_point: EntryPoint) -> None:
        """srpc's own entry point for an essential plugin: already registered; note its
        distribution as installed."""
        if entry_point.dist is not None:
            info = self.infos[entry_point.name]
            info.distribution, info.version = entry_point.dist.name, entry_point.dist.version

    def _load_entry_point(self, entry_point: EntryPoint) -> None:
        dist = entry_point.dist
        info = PluginInfo(
            name=entry_point.name,
            distribution=dist.name if dist else "?",
            version=dist.version if dist else "?",
            module=entry_point.value,
        )
        if entry_point.name in self.infos:
            other = self.infos[entry_point.name]
            raise PluginConflictError(
                f"two plugins are named {entry_point.name!r}: one from distribution "
                f"{other.distribution!r}, one from {info.distribution!r}; uninstall one of them"
            )
        self.infos[entry_point.name] = info
        try:
            plugin = entry_point.load()
            self.manager.register(plugin, name=entry_point.name)
        except Exception as exc:  # a broken third-party plugin must not take srpc down
            info.error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "srpc plugin %r (%s) failed to load: %s", info.name, info.module, info.error
            )

    def _collect(self, hook_name: str, kind: str) -> dict[str, Offer]:
        offers: dict[str, Offer] = {}
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            info = self.infos.setdefault(
                impl.plugin_name, PluginInfo(impl.plugin_name, "?", "?", impl.plugin_name)
            )

            def register(name: str, factory: Callable[..., Any], info: PluginInfo = info) -> None:
                if name in offers:
                    other = offers[name].plugin
                    raise PluginConflictError(
                        f"two plugins offer the {kind} {name!r}: plugin {other.name!r} from "
                        f"distribution {other.distribution!r} and plugin {info.name!r} from "
                        f"distribution {info.distribution!r}; uninstall one, or block one with "
                        f"{DISABLE_ENV_VAR}={info.name}"
                    )
                offers[name] = Offer(name, factory, info)
                (info.transports if kind == "transport" else info.codecs).append(name)

            impl.function(register=register)
        for offer in offers.values():
            offer.plugin.missing.extend(_missing_requirements(offer.name, offer.factory))
        return offers

    # -- lookups ----------------------------------------------------------------------------

    def transport(self, name: str, settings: TransportSettings, source: str = "") -> Transport:
        """Build the transport registered as `name`."""
        transport = self._lookup(self.transports, name, "transport", source)(settings)
        if not isinstance(transport, Transport):
            raise PluginError(f"the factory of transport {name!r} did not return a Transport")
        if not transport.name:
            transport.name = name  # type: ignore[misc]
        return transport

    def codec(self, name: str, options: Mapping[str, Any], source: str = "") -> Codec:
        """Build the codec registered as `name`."""
        codec = self._lookup(self.codecs, name, "codec", source)(options)
        if not isinstance(codec, Codec):
            raise PluginError(f"the factory of codec {name!r} did not return a Codec")
        # The hello names the codec by the name srpc.toml selected (the client sends it, the
        # server answers with codec.name), so that is the name, even for a class registered twice.
        codec.name = name  # type: ignore[misc]
        return codec

    def _lookup(self, offers: dict[str, Offer], name: str, kind: str, source: str) -> Any:
        if name in offers:
            return offers[name].factory
        where = f"{source}: [srpc] " if source and source != "defaults" else ""
        message = (
            f"{where}{kind} = {name!r} is not a registered {kind}; valid choices: "
            f"{', '.join(sorted(offers)) or '(none)'}"
        )
        broken = [i for i in self.infos.values() if i.error]
        if broken:
            message += "; plugins that failed to load: " + ", ".join(
                f"{i.name} ({i.error})" for i in broken
            )
        raise ConfigError(message + ". Run `srpc plugins` to see what is installed.")

    def for_config(self, config: Config) -> tuple[Codec, Transport]:
        """The codec and the transport that `config` selects, built with its settings.

        First refuses a ``[srpc.<name>]`` table that no registered transport, codec or plugin
        reads (`Config.check_tables`): a misspelt table is an error, never silently ignored.
        """
        config.check_tables([*self.transports, *self.codecs, *self.infos])
        codec = self.codec(config.codec, config.options(config.codec), config.source)
        settings = TransportSettings(
            config.options(config.transport),
            config.max_message_bytes,
            config.timeout,
            max_connections=config.max_connections,
            idle_timeout=config.idle_timeout,
            max_in_flight=config.max_in_flight,
            max_message_bytes_given=(
                config.explicit is None or "max_message_bytes" in config.explicit
            ),
        )
        return codec, self.transport(config.transport, settings, config.source)

    def error_to_wire(self, error: BaseException, context: ErrorContext) -> WireError:
        """Describe an exception for an error response (the `srpc_error_to_wire` hook)."""
        wire: WireError = self.manager.hook.srpc_error_to_wire(error=error, context=context)
        return wire

    def error_from_wire(self, error: WireError, context: ErrorContext) -> BaseException:
        """The exception an error response stands for (the `srpc_error_from_wire` hook)."""
        exc: BaseException = self.manager.hook.srpc_error_from_wire(error=error, context=context)
        return exc

    def type_adapters(self) -> TypeAdapters:
        """The types plugins taught srpc (the `srpc_register_types` hook), collected once."""
        adapters: TypeAdapters | None = getattr(self, "_type_adapters", None)
        if adapters is None:
            found: list[TypeAdapter] = []
            for impl in self.manager.hook.srpc_register_types.get_hookimpls():

                def register(
                    matcher: Any, to_wire: Any, from_wire: Any, plugin: str = impl.plugin_name
                ) -> None:
                    found.append(TypeAdapter(matcher, to_wire, from_wire, plugin))

                impl.function(register=register)
            adapters = self._type_adapters = TypeAdapters(tuple(found))
        return adapters

    def register_commands(self, register: RegisterCommand) -> None:
        """Let every plugin add ``srpc`` subcommands (the `srpc_register_commands` hook)."""
        self.manager.hook.srpc_register_commands(register=register)

    def call_observers(self, server: ServerInfo) -> list[CallObserver]:
        """Ask every plugin for the observers of a starting server."""
        observers: list[CallObserver] = []
        self.manager.hook.srpc_register_call_observers(register=observers.append, server=server)
        return observers

    def client_observers(self, client: ClientInfo) -> list[ClientObserver]:
        """Ask every plugin for the observers of a client being built (the
        `srpc_register_client_observers` hook); an empty list when none registers one."""
        observers: list[ClientObserver] = []
        self.manager.hook.srpc_register_client_observers(register=observers.append, client=client)
        return observers


def _missing_requirements(name: str, factory: Callable[..., Any]) -> list[str]:
    """What `factory` declares it needs (``requires = {"cbor2": "pip install ..."}``, import
    name -> how to install it) and cannot be found, without importing anything."""
    requires = getattr(factory, "requires", None)
    if not isinstance(requires, Mapping):
        return []
    return [
        f"{name}: needs {module} ({hint})"
        for module, hint in requires.items()
        if isinstance(module, str) and importlib.util.find_spec(module) is None
    ]


_plugins: Plugins | None = None
_plugins_lock = threading.Lock()


def get_plugins() -> Plugins:
    """The process-wide `Plugins`, loaded on first use."""
    global _plugins
    if _plugins is None:
        with _plugins_lock:
            if _plugins is None:
                _plugins = Plugins()
    return _plugins


def reset_plugins() -> None:
    """Forget the loaded plugins (the next `get_plugins` loads them again)."""
    global _plugins
    with _plugins_lock:
        _plugins = None


__all__ = [
    "DISABLE_ENV_VAR",
    "ENTRY_POINT_GROUP",
    "ESSENTIAL_PLUGINS",
    "Offer",
    "PluginInfo",
    "Plugins",
    "get_plugins",
    "reset_plugins",
]
