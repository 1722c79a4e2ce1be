"""docs/grafana/: the Grafana dashboard and the Prometheus alert rules parse, and every metric they name is
exported by a real hub's /metrics (with a group, dead letters, an outbox and its drainer, so every family
has samples)."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from outboxhub import outbox
from outboxhub.model import NewEvent, StartPosition

DOCS = Path(__file__).resolve().parent.parent / "docs" / "grafana"
METRIC = re.compile(r"\boutboxhub_[a-z0-9_]+")
ISSUE_ALERTS = (
    "OutboxhubGroupLagHigh",
    "OutboxhubDeadLettersRising",
    "OutboxhubOutboxPendingTooOld",
    "OutboxhubDrainerErrors",
)


def _dashboard_exprs() -> list[str]:
    doc = json.loads((DOCS / "dashboard.json").read_text())
    assert doc["title"] and doc["panels"]
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((DOCS / "alerts.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    for rule in rules:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical")
    return rules


@pytest.fixture
async def exported(hub_factory: Any, tmp_path: Path, token: Any) -> set[str]:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
        outbox.add(conn, "orders.new", {"n": 1})
    hub = await hub_factory(outbox=[f"sqlite:///{path}"])
    await hub.bus.publish(NewEvent(topic="orders.paid", payload=1))
    await hub.store.ensure_group("orders.*", "billing", StartPosition(kind="earliest"))
    async with aiohttp.ClientSession() as s:
        async with s.get(
            hub.ops_url + "topics", headers={"Authorization": f"Bearer {token(scopes=['ops:read'])}"}
        ) as r:
            assert r.status == 200  # one ops request, so the latency histogram has a sample
        async with s.get(hub.ops_url + "metrics") as r:
            text = await r.text()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":  # declared even before its first sample (e.g. no ERR sent yet)
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def test_the_issue_alerts_are_there() -> None:
    names = {r["alert"] for r in _rules()}
    assert set(ISSUE_ALERTS) <= names


async def test_every_metric_named_is_exported(exported: set[str]) -> None:
    named = {m for expr in _dashboard_exprs() + [r["expr"] for r in _rules()] for m in METRIC.findall(expr)}
    assert len(named) >= 10
    missing = sorted(named - exported)
    assert not missing, f"named in docs/grafana but not exported: {missing}"
