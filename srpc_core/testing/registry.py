"""How the kit gets hold of the codec or transport under test.

A kit class names it either by its registered name (a string: looked up among the installed
plugins, exactly as srpc.toml would) or by its factory (usually the class: it need not be
installed). A factory is registered for the test under the name ``<name>-under-test``, so it
never collides with an installed plugin of the same name.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from srpc_core.codec import Codec
from srpc_core.hookspecs import RegisterCodec, RegisterTransport, hookimpl
from srpc_core.plugins import Plugins, get_plugins
from srpc_core.transport import Transport, TransportSettings

#: A registered name, or a factory: ``factory(options)`` returns a `Codec`.
CodecSpec = str | Callable[..., Codec]
#: A registered name, or a factory: ``factory(settings)`` returns a `Transport`.
TransportSpec = str | Callable[[TransportSettings], Transport]


def registered_name(spec: str | Callable[..., Any]) -> str:
    """The name srpc.toml would select `spec` by in the kit's tests."""
    if isinstance(spec, str):
        return spec
    base = getattr(spec, "name", "") or getattr(spec, "__name__", "") or "plugin"
    return f"{base}-under-test"


class _UnderTest:
    """A plugin object registering the factories under test."""

    def __init__(self, transport: TransportSpec, codec: CodecSpec) -> None:
        self.transport = transport
        self.codec = codec

    @hookimpl
    def srpc_register_transports(self, register: RegisterTransport) -> None:
        if not isinstance(self.transport, str):
            register(registered_name(self.transport), self.transport)

    @hookimpl
    def srpc_register_codecs(self, register: RegisterCodec) -> None:
        if not isinstance(self.codec, str):
            register(registered_name(self.codec), self.codec)


@functools.cache
def plugins_for(transport: TransportSpec, codec: CodecSpec) -> Plugins:
    """The installed plugins, plus `transport` and `codec` when they are given as factories."""
    if isinstance(transport, str) and isinstance(codec, str):
        return get_plugins()
    return Plugins(extra_plugins={"srpc-conformance-under-test": _UnderTest(transport, codec)})


def make_codec(spec: CodecSpec, options: Mapping[str, Any]) -> Codec:
    """Build the codec under test: through the installed plugins when named, else directly."""
    if isinstance(spec, str):
        return get_plugins().codec(spec, options)
    codec = spec(dict(options))
    if not isinstance(codec, Codec):
        raise TypeError(f"{spec!r} did not return a srpc_core.Codec")
    if not codec.name:
        raise TypeError(f"{type(codec).__qualname__} must set `name`, the name it registers under")
    return codec


__all__ = [
    "CodecSpec",
    "TransportSpec",
    "make_codec",
    "plugins_for",
    "registered_name",
]
