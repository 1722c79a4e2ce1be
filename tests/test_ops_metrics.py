"""/metrics: the gateway's counters, store-derived gauges and request latency, one registry per hub."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from outboxhub import outbox
from outboxhub.app import Hub
from outboxhub.gateway import GatewayStats
from outboxhub.model import NewEvent
from outboxhub.ops.metrics import HubMetrics
from outboxhub.outbox import DrainerMetrics
from outboxhub.store.base import mask_url


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def _scrape(hub: Hub, path: str = "/metrics") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as s, s.get(hub.ops_url.rstrip("/") + path) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return _samples(await r.text())


async def test_gateway_counters_and_group_gauges(hub: Hub, ws_connect: Any, token: Any) -> None:
    client = await ws_connect(hub.ws_url, token=token(scopes=["publish:**", "subscribe:**"]))
    for i in range(3):
        assert (await client.request("PUBLISH", topic="jobs.run", payload=i))["op"] == "OK"
    await client.request("SUBSCRIBE", topic="jobs.*", group="workers", opts={"start": "earliest"})
    first, second, third = [await client.next_event() for _ in range(3)]
    assert (await client.request("ACK", topic="jobs.*", group="workers", id=first["event"]["id"]))[
        "op"
    ] == "OK"
    nack = await client.request("NACK", topic="jobs.*", group="workers", id=second["event"]["id"], delay_ms=0)
    assert nack["op"] == "OK"
    again = await client.next_event()
    assert again["event"]["id"] == second["event"]["id"] and again["ctx"]["attempt"] == 2
    await client.request("PUBLISH", topic="bad..topic", payload=0)  # one ERR bad_request

    m = await _scrape(hub)
    assert m[("outboxhub_publishes_total", ())] == 3
    assert m[("outboxhub_deliveries_total", ())] == 4
    assert m[("outboxhub_redeliveries_total", ())] == 1
    assert m[("outboxhub_acks_total", ())] == 1
    assert m[("outboxhub_nacks_total", ())] == 1
    assert m[("outboxhub_connections_total", ())] == 1
    assert m[("outboxhub_connections_open", ())] == 1
    assert m[("outboxhub_protocol_errors_total", (("code", "bad_request"),))] == 1
    group = (("group", "workers"), ("pattern", "jobs.*"))
    assert m[("outboxhub_group_members", group)] == 1
    assert m[("outboxhub_group_in_flight", group)] == 2
    assert m[("outboxhub_group_lag_events", group)] == 2
    assert m[("outboxhub_group_dead_letters", group)] == 0
    assert m[("outboxhub_store_up", ())] == 1
    assert m[("outboxhub_store_last_seq", ())] == 3
    assert third["event"]["seq"] == 3


async def test_request_latency_is_labelled_by_route_template(hub: Hub) -> None:
    async with aiohttp.ClientSession() as s:
        for path in ("/lag?topic=a", "/lag?topic=b", "/no/such/route", "/healthz"):
            async with s.get(hub.ops_url.rstrip("/") + path) as r:
                await r.read()
    m = await _scrape(hub)
    count = "outboxhub_http_request_duration_seconds_count"
    assert m[(count, (("method", "GET"), ("route", "/lag"), ("status", "401")))] == 2
    assert m[(count, (("method", "GET"), ("route", "(unmatched)"), ("status", "404")))] == 1
    assert m[(count, (("method", "GET"), ("route", "/healthz"), ("status", "200")))] == 1
    assert not any("/no/such" in str(labels) for _, labels in m)


async def test_outbox_gauges(hub_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
        outbox.add(conn, "a.b", 1)
        outbox.add(conn, "a.b", 2)
    hub = await hub_factory(
        outbox=[f"sqlite:///{path}", f"sqlite:///{tmp_path / 'missing.db'}"], outbox_drain=False
    )
    m = await _scrape(hub)
    ok = (("outbox", f"sqlite:///{path}"),)
    assert m[("outboxhub_outbox_up", ok)] == 1
    assert m[("outboxhub_outbox_pending", ok)] == 2
    assert m[("outboxhub_outbox_dead", ok)] == 0
    assert m[("outboxhub_outbox_oldest_pending_age_seconds", ok)] >= 0
    assert m[("outboxhub_outbox_up", (("outbox", f"sqlite:///{tmp_path / 'missing.db'}"),))] == 0


async def test_each_hub_has_its_own_registry(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    one, two = await hub_factory(), await hub_factory()
    client = await ws_connect(one.ws_url, token=token(scopes=["publish:**"]))
    await client.request("PUBLISH", topic="x.y", payload=1)
    assert (await _scrape(one))[("outboxhub_publishes_total", ())] == 1
    assert (await _scrape(two))[("outboxhub_publishes_total", ())] == 0
    assert one.metrics.registry is not two.metrics.registry
    default = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "outboxhub_" not in default


async def test_drainer_counters_are_exported_per_outbox(hub_factory: Any, tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
        outbox.add(conn, "a.b", 1)
        outbox.add(conn, "a.b", 2)
        # Written by another program with a topic the hub refuses: dead at once, never retried.
        conn.execute("INSERT INTO outbox (topic, payload) VALUES ('bad..topic', '3')")
    url = f"sqlite:///{path}"
    hub = await hub_factory(outbox=[url])
    (drainer,) = hub.drainers
    for _ in range(600):  # safety net only: the drainer is woken by the records already there
        if drainer.published + drainer.dead == 3:
            break
        await asyncio.sleep(0.05)
    m = await _scrape(hub)
    label = (("outbox", url),)
    assert m[("outboxhub_outbox_published_total", label)] == 2
    assert m[("outboxhub_outbox_retried_total", label)] == 0
    assert m[("outboxhub_outbox_failed_permanently_total", label)] == 1
    assert m[("outboxhub_outbox_dead", label)] == 1  # the gauge, next to the counter


def test_drainer_counters_are_read_at_scrape_time_and_masked_names_kept() -> None:
    counters = {"published": 5, "retried": 2, "dead": 1}
    name = mask_url("postgresql://app:secret@db/app")

    def drainers() -> list[tuple[str, DrainerMetrics]]:
        one = DrainerMetrics(duplicates=0, released=0, batches=1, sink_errors=0, store_errors=0, **counters)
        return [(name, one), (name, one)]  # the same outbox configured twice: one summed series

    metrics = HubMetrics(stats=GatewayStats(), open_connections=lambda: 0, drainers=drainers)
    label = (("outbox", "postgresql://app:***@db/app"),)
    first = _samples(metrics.render().decode())
    assert first[("outboxhub_outbox_published_total", label)] == 10
    assert first[("outboxhub_outbox_retried_total", label)] == 4
    assert first[("outboxhub_outbox_failed_permanently_total", label)] == 2
    counters["published"] = 7
    assert _samples(metrics.render().decode())[("outboxhub_outbox_published_total", label)] == 14
    idle = HubMetrics(stats=GatewayStats(), open_connections=lambda: 0)
    assert not any(n.startswith("outboxhub_outbox_published") for n, _ in _samples(idle.render().decode()))


async def test_dead_letters_withheld_by_the_acl_are_counted(hub: Hub, ws_connect: Any, token: Any) -> None:
    policy = {
        "rules": [
            {"effect": "allow", "action": "subscribe", "topics": ["**"]},
            {"effect": "deny", "action": "*", "topics": ["secret.**"]},
        ]
    }
    client = await ws_connect(hub.ws_url, token=token(policy=policy))
    assert (await client.request("SUBSCRIBE", topic="dlq.**", group="snoop"))["op"] == "OK"
    await hub.bus.publish_batch(
        [
            NewEvent(topic="dlq.payroll.secret.salaries", payload={"salary": 1}),
            NewEvent(topic="dlq.payroll.public.notice", payload={"marker": True}),
        ]
    )
    marker = await client.next_event()  # after the secret one: that one was decided first
    assert marker["event"]["topic"] == "dlq.payroll.public.notice"
    m = await _scrape(hub)
    assert m[("outboxhub_events_withheld_total", ())] == 1
    assert m[("outboxhub_deliveries_total", ())] == 1
