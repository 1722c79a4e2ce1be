"""W3C trace context in event headers, when ``opentelemetry-api`` is installed (the ``otel`` extra).

* :func:`inject` adds the current span's ``traceparent`` (and ``tracestate``) to the headers of an event
  being published or added to an outbox; headers the caller set are kept as they are.
* :func:`consumer_span` runs a handler in a ``CONSUMER`` span named ``"<topic> process"``, linked to the
  span context found in the event's headers.

Without ``opentelemetry-api`` both are no-ops and nothing is imported; the first call finds out (once) by
trying the import. Without a configured ``TracerProvider`` OpenTelemetry's own no-op API applies, and
:func:`inject` adds nothing because there is no valid current span. The propagator is always W3C
TraceContext (``TraceContextTextMapPropagator``), whatever ``OTEL_PROPAGATORS`` says: the headers are part
of the stored event, readable by any consumer.

A base module: it imports nothing from outboxhub.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Final

__all__ = ["TRACE_HEADERS", "consumer_span", "enabled", "inject"]

TRACE_HEADERS: Final = ("traceparent", "tracestate")

_api: Any = None  # (trace module, propagator), or False once the import failed


def _load() -> Any:
    global _api
    if _api is None:
        try:
            from opentelemetry import trace
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            _api = False
        else:
            _api = (trace, TraceContextTextMapPropagator())
    return _api


def enabled() -> bool:
    """True when ``opentelemetry-api`` can be imported."""
    return bool(_load())


def inject(headers: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """``headers`` with the current trace context added (``headers`` itself when there is none)."""
    api = _load()
    if not api:
        return headers
    trace, propagator = api
    if not trace.get_current_span().get_span_context().is_valid:
        return headers
    carrier: dict[str, str] = {}
    propagator.inject(carrier)
    if not carrier:
        return headers
    merged = dict(carrier)
    if headers is not None:
        if any(name in headers for name in TRACE_HEADERS):
            return headers  # the caller propagates a context of its own
        merged.update(headers)
    return merged


@contextlib.contextmanager
def consumer_span(
    topic: str, event_id: str, headers: Mapping[str, str] | None, *, group: str | None, attempt: int
) -> Iterator[None]:
    """Run the body in a consumer span linked to the producer's context in ``headers`` (if any)."""
    api = _load()
    if not api:
        yield
        return
    trace, propagator = api
    links = []
    if headers:
        carrier = {name: headers[name] for name in TRACE_HEADERS if name in headers}
        producer = trace.get_current_span(propagator.extract(carrier)).get_span_context()
        if producer.is_valid:
            links.append(trace.Link(producer))
    attributes: dict[str, str | int] = {
        "messaging.system": "outboxhub",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.message.id": event_id,
        "messaging.outboxhub.attempt": attempt,
    }
    if group is not None:
        attributes["messaging.consumer.group.name"] = group
    tracer = trace.get_tracer("outboxhub")
    with tracer.start_as_current_span(
        f"{topic} process", kind=trace.SpanKind.CONSUMER, links=links, attributes=attributes
    ):
        yield
