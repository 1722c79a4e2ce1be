"""Trace context (``outboxhub.tracing``) with the OpenTelemetry SDK's in-memory exporter, against a real hub:
``publish`` and ``outbox.add`` put the current ``traceparent``/``tracestate`` into the event headers, the
hub's outbox drainer keeps them, and the SDK runs the handler in a CONSUMER span linked to the producer's
span. Without opentelemetry (blocked in a subprocess) nothing is added and nothing is imported."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, TraceState

from outboxhub import outbox, tracing
from outboxhub.app import Hub
from outboxhub.client import Event, HubClient, SubscribeContext

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)  # once per process; no other test module sets one


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _traceparent(span: Any) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def test_inject_adds_the_current_context_and_keeps_the_callers_headers() -> None:
    tracer = trace.get_tracer("test")
    assert tracing.inject(None) is None, "no current span: nothing to add"
    with tracer.start_as_current_span("produce") as span:
        assert tracing.inject(None) == {"traceparent": _traceparent(span)}
        assert tracing.inject({"a": "1"}) == {"traceparent": _traceparent(span), "a": "1"}
        own = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
        assert tracing.inject(own) is own, "a context set by the caller wins"
    ctx = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=7, span_id=9, is_remote=True, trace_state=TraceState([("vendor", "x")])
            )
        )
    )
    with trace.use_span(trace.get_current_span(ctx)):
        assert tracing.inject(None) == {
            "traceparent": "00-" + f"{7:032x}" + "-" + f"{9:016x}" + "-00",
            "tracestate": "vendor=x",
        }


async def test_publish_carries_the_trace_and_the_handler_runs_in_a_linked_consumer_span(
    hub: Hub, token: Callable[..., str], exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("test")
    seen: list[tuple[dict[str, str], Any]] = []
    done = asyncio.Event()

    async def handler(event: Event, ctx: SubscribeContext) -> None:
        seen.append((ctx.headers, trace.get_current_span().get_span_context()))
        done.set()

    async with HubClient(hub.ws_url, token()) as client:
        await client.subscribe("traced.t", "g", handler, start="earliest")
        with tracer.start_as_current_span("checkout") as producer:
            result = await client.publish("traced.t", {"n": 1}, headers={"source": "shop"})
        async with asyncio.timeout(20):
            await done.wait()
    headers, current = seen[0]
    assert headers == {"source": "shop", "traceparent": _traceparent(producer)}
    stored = await hub.store.get_event(result.id)
    assert stored is not None and stored.headers == headers
    (consumer,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.name == "traced.t process"
    assert consumer.context.span_id == current.span_id, "the handler ran inside the consumer span"
    assert [link.context.span_id for link in consumer.links] == [producer.get_span_context().span_id]
    assert consumer.attributes is not None
    assert consumer.attributes["messaging.message.id"] == result.id
    assert consumer.attributes["messaging.consumer.group.name"] == "g"


async def test_outbox_add_records_the_trace_and_the_drainer_keeps_it(
    hub_factory: Callable[..., Awaitable[Hub]], tmp_path: Path
) -> None:
    conn = sqlite3.connect(tmp_path / "app.db")
    outbox.ensure_schema(conn)
    hub = await hub_factory(outbox=[f"sqlite:///{tmp_path / 'app.db'}"])
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("place order") as span, conn:
        record_id = outbox.add(conn, "orders.placed", {"order": 1})
    conn.close()
    async with asyncio.timeout(20):
        while (event := await hub.store.get_event(record_id)) is None:  # noqa: ASYNC110 - the drainer
            await asyncio.sleep(0.05)
    assert event.headers == {"traceparent": _traceparent(span)}


# -- without opentelemetry --------------------------------------------------------------------------------


def _run_blocked(body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    prelude = "import sys\nfor _n in ('opentelemetry',):\n    sys.modules[_n] = None\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def test_without_opentelemetry_nothing_is_added_and_nothing_is_imported(tmp_path: Path) -> None:
    result = _run_blocked(
        """
        import sqlite3
        from outboxhub import outbox, tracing
        import outboxhub.client
        conn = sqlite3.connect("app.db")
        outbox.ensure_schema(conn)
        with conn:
            rid = outbox.add(conn, "t.x", 1, headers={"a": "b"})
        print(conn.execute("SELECT headers FROM outbox").fetchone()[0])
        with tracing.consumer_span("t.x", rid, {"traceparent": "x"}, group="g", attempt=1):
            pass
        loaded = sorted(m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v)
        print(tracing.enabled(), loaded)
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ['{"a":"b"}', "False []"]
