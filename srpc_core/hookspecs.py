"""The srpc hook specifications: every way a plugin can extend srpc.

A plugin is a module (or object) with functions named like these and decorated with
``@srpc_core.hookimpl``, made known through the ``srpc`` entry-point group of its distribution.
Hooks that *register* things run once per process; no hook runs per message (per-call work runs
through the objects plugins register). docs/plugins.md is the guide.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from srpc_core.codec import Codec
    from srpc_core.errors import ErrorContext
    from srpc_core.observer import CallObserver, ClientInfo, ClientObserver, ServerInfo
    from srpc_core.protocol import WireError
    from srpc_core.transport import Transport, TransportSettings

hookspec = pluggy.HookspecMarker("srpc")
hookimpl = pluggy.HookimplMarker("srpc")

#: ``register(name, factory)``: `factory(settings)` returns a `Transport` (usually the class).
RegisterTransport = Callable[[str, "Callable[[TransportSettings], Transport]"], None]
#: ``register(name, factory)``: `factory(options)` returns a `Codec` (usually the class).
RegisterCodec = Callable[[str, "Callable[..., Codec]"], None]
#: ``register(observer)``: add a `CallObserver` to the starting server.
RegisterObserver = Callable[["CallObserver"], None]
#: ``register(observer)``: add a `ClientObserver` to the client being built.
RegisterClientObserver = Callable[["ClientObserver"], None]
#: ``register(name, help, configure, run)``: add a ``srpc <name>`` subcommand;
#: `configure(parser)` adds arguments to an argparse parser, `run(args)` returns an exit code.
RegisterCommand = Callable[[str, str, Callable[[Any], None], Callable[[Any], int]], None]
#: ``register(type_or_predicate, to_wire, from_wire)``: teach srpc a type for annotations.
#: `type_or_predicate` is a class (its subclasses match too) or ``matches(cls) -> bool``;
#: ``to_wire(value)`` returns what msgspec can carry (a dict, a str...), ``from_wire(cls, data)``
#: builds an instance of `cls` from it (raising ValueError or TypeError for data that does
#: not fit).
RegisterType = Callable[
    [type | Callable[[type], bool], Callable[[Any], Any], Callable[[type, Any], Any]], None
]


@hookspec
def srpc_register_transports(register: RegisterTransport) -> None:
    """Offer transports: call ``register("name", TransportClass)`` for each.

    The factory is called with a `TransportSettings` only when srpc.toml selects the name, so
    import optional dependencies inside it and raise `MissingDependencyError` naming the pip
    extra when they are missing.
    """


@hookspec
def srpc_register_codecs(register: RegisterCodec) -> None:
    """Offer codecs: call ``register("name", CodecClass)`` for each.

    The factory is called with the codec's options mapping (its ``[srpc.<name>]`` table) only
    when srpc.toml selects the name.
    """


@hookspec(firstresult=True)
def srpc_error_to_wire(error: BaseException, context: ErrorContext) -> WireError | None:
    """Describe an exception raised by a procedure for the error response.

    The first non-None result wins; the built-in mapper runs last. Return None to leave the
    exception to the next mapper. Never include a traceback unless ``context.send_tracebacks``.
    """


@hookspec(firstresult=True)
def srpc_error_from_wire(error: WireError, context: ErrorContext) -> BaseException | None:
    """Turn an error response back into the exception the caller will see.

    The first non-None result wins; the built-in mapper runs last. Must never import a module
    or evaluate text the server sent: resolve names only against built-ins, srpc's own errors
    and ``context.interface``'s module.
    """


@hookspec
def srpc_register_call_observers(register: RegisterObserver, server: ServerInfo) -> None:
    """Called once as a server starts: ``register(observer)`` to watch every call it serves."""


@hookspec
def srpc_register_client_observers(register: RegisterClientObserver, client: ClientInfo) -> None:
    """Called once as a client is built: ``register(observer)`` to see every call it makes
    (a `ClientObserver` may add request metadata, such as trace context, and sees each call's
    outcome). Register nothing unless the client's configuration asks for it: a client
    without client observers pays nothing for the hook."""


@hookspec
def srpc_register_commands(register: RegisterCommand) -> None:
    """Add subcommands to the ``srpc`` command line (e.g. ``srpc uds-list``)."""


@hookspec
def srpc_register_types(register: RegisterType) -> None:
    """Teach srpc types the interface's annotations may use beyond those it knows
    (docs/types.md): ``register(BaseModel, to_wire, from_wire)``.

    Called once per process, the first time a client, a server or the stub generator needs
    the adapters. The first registration whose class or predicate matches a type wins.
    """


__all__ = [
    "RegisterClientObserver",
    "RegisterCodec",
    "RegisterCommand",
    "RegisterObserver",
    "RegisterTransport",
    "RegisterType",
    "hookimpl",
    "hookspec",
    "srpc_error_from_wire",
    "srpc_error_to_wire",
    "srpc_register_call_observers",
    "srpc_register_client_observers",
    "srpc_register_codecs",
    "srpc_register_commands",
    "srpc_register_transports",
    "srpc_register_types",
]
