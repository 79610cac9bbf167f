"""OpenTelemetry for srpc: spans and duration metrics for every call, trace context across
services (the ``srpclib[otel]`` extra; docs/observability.md).

Turned on per process in srpc.toml::

    [srpc.otel]
    enabled = true

Then a server records a SERVER span per call it serves and the histogram
``rpc.server.duration`` (milliseconds), and a client a CLIENT span per call it makes and
``rpc.client.duration``, with OpenTelemetry's RPC semantic-convention attributes
(``rpc.system`` = ``srpc``, ``rpc.service``, ``rpc.method``, ``server.address``,
``server.port``, ``network.transport``, and ``error.type`` when the call failed). The client
injects the W3C trace context into the request's metadata (``traceparent``, ``tracestate``, by
the globally configured propagator) and the server continues the trace from it; the server's
span is current while the implementation runs, so calls it makes to other services join the
same trace.

Spans and metrics go to the globally configured providers (``opentelemetry.trace`` and
``opentelemetry.metrics``): the application sets up the SDK and its exporters, srpc only uses
the API. Exception messages are not recorded (they may carry the caller's data); the type is.
"""

from __future__ import annotations

import contextvars
from typing import Any
from urllib.parse import urlsplit

from srpc_core.errors import MissingDependencyError
from srpc_core.hookspecs import RegisterClientObserver, RegisterObserver, hookimpl
from srpc_core.metrics import UNKNOWN_PROCEDURE
from srpc_core.observer import (
    CallObserver,
    ClientInfo,
    ClientObserver,
    ServerInfo,
    request_metadata,
)
from srpc_core.options import Option
from srpc_core.version import __version__

#: The keys of ``[srpc.otel]``.
OTEL_OPTIONS: dict[str, Option] = {
    "enabled": Option(
        bool, default=False, help="record OpenTelemetry spans and metrics for every call"
    ),
}
INSTRUMENTATION = "srpc"
RPC_SYSTEM = "srpc"


def _enabled(config: Any) -> bool:
    enabled: bool = config.options("otel").check(OTEL_OPTIONS)["enabled"]
    if enabled:
        try:
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                f"{config.source}: [srpc.otel] enabled = true needs opentelemetry-api: "
                "pip install 'srpclib[otel]'"
            ) from None
    return enabled


@hookimpl
def srpc_register_call_observers(register: RegisterObserver, server: ServerInfo) -> None:
    """A `ServerSpans` observer when ``[srpc.otel] enabled = true``."""
    if _enabled(server.config):
        register(ServerSpans(server))


@hookimpl
def srpc_register_client_observers(register: RegisterClientObserver, client: ClientInfo) -> None:
    """A `ClientSpans` observer when ``[srpc.otel] enabled = true``."""
    if _enabled(client.config):
        register(ClientSpans(client))


def _metric_attributes(service: str, method: str) -> dict[str, Any]:
    """The attributes of a duration measurement (few: each combination is a time series)."""
    return {"rpc.system": RPC_SYSTEM, "rpc.service": service, "rpc.method": method}


def _base_attributes(service: str, address: str, transport: str) -> dict[str, Any]:
    parts = urlsplit(address)
    attributes: dict[str, Any] = {"rpc.system": RPC_SYSTEM, "rpc.service": service}
    try:
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        if parts.port is not None:
            attributes["server.port"] = parts.port
    except ValueError:
        pass
    if transport in ("tcp", "zmq"):
        attributes["network.transport"] = "tcp"
    return attributes


class ServerSpans(CallObserver):
    """A SERVER span and an ``rpc.server.duration`` measurement for every call served."""

    reads_metadata = True

    def __init__(self, server: ServerInfo) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self.service = server.service.rpartition(".")[2]
        self.procedures = frozenset(server.procedures)
        base = _base_attributes(self.service, server.address, server.transport)
        #: Per method, built once: the span's attributes, and the (fewer) metric attributes.
        self._span_attributes = {
            m: {**base, "rpc.method": m} for m in [*server.procedures, UNKNOWN_PROCEDURE]
        }
        self._metric_attributes = {
            m: _metric_attributes(self.service, m) for m in self._span_attributes
        }
        self._tracer = trace.get_tracer(INSTRUMENTATION, __version__)
        self._duration = metrics.get_meter(INSTRUMENTATION, __version__).create_histogram(
            "rpc.server.duration", unit="ms", description="duration of calls served"
        )
        #: The span of the call this thread (or task) serves, and the context token.
        self._current: contextvars.ContextVar[tuple[Any, object] | None] = contextvars.ContextVar(
            "srpc_otel_server_span", default=None
        )

    def _method(self, procedure: str) -> str:
        # A client chooses unknown names: one name for them keeps span names bounded.
        return procedure if procedure in self.procedures else UNKNOWN_PROCEDURE

    def call_started(self, procedure: str) -> None:
        """Start the span, as a child of the caller's trace context, and make it current."""
        from opentelemetry import context, propagate

        metadata = request_metadata()
        carrier = {k: v for k, v in metadata.items() if type(v) is str} if metadata else {}
        parent = propagate.extract(carrier) if carrier else None
        method = self._method(procedure)
        span = self._tracer.start_span(
            f"{self.service}/{method}",
            context=parent,
            kind=self._trace.SpanKind.SERVER,
            attributes=self._span_attributes[method],
        )
        token = context.attach(self._trace.set_span_in_context(span, parent))
        self._current.set((span, token))

    def call_finished(self, procedure: str, seconds: float, error: BaseException | None) -> None:
        """End the span (its status says whether the call failed) and record the duration."""
        from opentelemetry import context

        attributes = self._metric_attributes[self._method(procedure)]
        if error is not None:
            attributes = {**attributes, "error.type": type(error).__name__}
        current = self._current.get()
        if current is not None:
            span, token = current
            self._current.set(None)
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(
                    self._trace.Status(self._trace.StatusCode.ERROR, type(error).__name__)
                )
            span.end()
            try:
                context.detach(token)  # type: ignore[arg-type]
            except Exception:  # a token from another context: nothing to restore
                pass
        self._duration.record(seconds * 1000, attributes)


class ClientSpans(ClientObserver):
    """A CLIENT span and an ``rpc.client.duration`` measurement for every call made; the
    trace context travels in the request's metadata."""

    def __init__(self, client: ClientInfo) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self.service = client.service
        self._attributes = _base_attributes(client.service, client.address, client.transport)
        self._metric_attributes: dict[str, dict[str, Any]] = {}
        self._tracer = trace.get_tracer(INSTRUMENTATION, __version__)
        self._duration = metrics.get_meter(INSTRUMENTATION, __version__).create_histogram(
            "rpc.client.duration", unit="ms", description="duration of calls made"
        )

    def call_started(self, procedure: str, metadata: dict[str, Any]) -> object:
        """Start the span (a child of the current one) and put its context in `metadata`."""
        from opentelemetry import propagate

        span = self._tracer.start_span(
            f"{self.service}/{procedure}",
            kind=self._trace.SpanKind.CLIENT,
            attributes={**self._attributes, "rpc.method": procedure},
        )
        propagate.inject(metadata, context=self._trace.set_span_in_context(span))
        return span

    def call_finished(
        self, procedure: str, state: object, seconds: float, error: BaseException | None
    ) -> None:
        """End the span and record the duration."""
        attributes = self._metric_attributes.get(procedure)
        if attributes is None:  # the interface's procedures only: a bounded set
            attributes = self._metric_attributes[procedure] = _metric_attributes(
                self.service, procedure
            )
        if error is not None:
            attributes = {**attributes, "error.type": type(error).__name__}
        span: Any = state
        if span is not None:
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
                span.set_status(
                    self._trace.Status(self._trace.StatusCode.ERROR, type(error).__name__)
                )
            span.end()
        self._duration.record(seconds * 1000, attributes)


__all__ = [
    "INSTRUMENTATION",
    "OTEL_OPTIONS",
    "RPC_SYSTEM",
    "ClientSpans",
    "ServerSpans",
    "srpc_register_call_observers",
    "srpc_register_client_observers",
]
