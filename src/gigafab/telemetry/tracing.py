"""Traces: OTLP over gRPC when an endpoint is given, otherwise nothing at all.

``configure(service, endpoint)`` exports the spans of ``service`` (``gigafab-operator``,
``gigafab-gateway``) to ``endpoint``, or to ``$OTEL_EXPORTER_OTLP_ENDPOINT``
(``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` first, as the specification says); with
neither, no SDK is loaded and ``span`` costs one generator and yields the API's
invalid span. ``span(name, site=…, tenant=…)`` is a context manager and a decorator;
its keyword arguments become attributes under ``gigafab.`` (``gigafab.site``), and
those that are None are left out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
"""The standard variables (the traces' own first) that turn the exporter on when no endpoint is passed."""
PREFIX = "gigafab."
SCOPE = "gigafab"
"""The instrumentation scope of every span."""


@dataclass
class _Switch:
    tracer: trace.Tracer | None = None
    """None: tracing is off (the default)."""


_switch = _Switch()


def endpoint_of(given: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The OTLP endpoint to export to: the one given, else a standard variable's; None: off."""
    return given or next((environ[name] for name in ENDPOINT_ENVS if environ.get(name)), None)


def configure(service: str, endpoint: str | None) -> TracerProvider | None:
    """Export spans of ``service`` over OTLP/gRPC (``http://`` without TLS, ``https://`` with it).

    Returns the provider (shut it down to flush the last spans), or None when no endpoint is
    set: then no exporter exists and spans are not recorded."""
    url = endpoint_of(endpoint)
    if url is None:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    install(provider)
    return provider


def install(provider: trace.TracerProvider | None) -> None:
    """Record spans with ``provider`` from now on; None turns tracing off again."""
    _switch.tracer = provider.get_tracer(SCOPE) if provider is not None else None


def enabled() -> bool:
    """Whether spans are recorded (callers skip gathering attributes when not)."""
    return _switch.tracer is not None


@contextlib.contextmanager
def span(name: str, **attributes: AttributeValue | None) -> Iterator[trace.Span]:
    """A span named ``name``, current while the block (or the decorated function) runs.

    An exception that leaves the block is recorded on the span and marks it an error."""
    tracer = _switch.tracer
    if tracer is None:
        yield trace.INVALID_SPAN
        return
    with tracer.start_as_current_span(name, attributes=named(attributes)) as current:
        yield current


def annotate(**attributes: AttributeValue | None) -> None:
    """Add attributes to the current span, e.g. what a decision chose (nothing when off)."""
    if _switch.tracer is not None:
        trace.get_current_span().set_attributes(named(attributes))


def named(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    """``{"site": "niemeyer"}`` → ``{"gigafab.site": "niemeyer"}``, without the None values."""
    return {PREFIX + key: value for key, value in attributes.items() if value is not None}
