"""The OpenAPI document against the running app: same routes, same access, same parameters, and real
responses that validate against the documented schemas (a small JSON Schema checker below: jsonschema is
not a dependency)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from outboxhub import outbox
from outboxhub.app import Hub
from outboxhub.model import NewEvent, StartPosition
from outboxhub.ops import OPS, openapi_document
from outboxhub.ops.static import STATIC_FILES

_METHODS = ("get", "post", "put", "patch", "delete")


# -- a small JSON Schema (2020-12 subset) checker -----------------------------------------------------------


def _type_ok(value: Any, kind: str) -> bool:
    return {
        "null": value is None,
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }[kind]


def validate(value: Any, schema: dict[str, Any], doc: dict[str, Any], path: str = "$") -> list[str]:
    """Problems of ``value`` against ``schema`` (empty when valid). Supports what openapi.py uses."""
    if "$ref" in schema:
        target: Any = doc
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return validate(value, target, doc, path)
    problems: list[str] = []
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, k) for k in kinds):
            return [f"{path}: {value!r} is not of type {kinds}"]
    if "const" in schema and value != schema["const"]:
        problems.append(f"{path}: {value!r} != const {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and isinstance(value, int) and value < schema["minimum"]:
        problems.append(f"{path}: {value} < minimum {schema['minimum']}")
    if "anyOf" in schema and all(validate(value, s, doc, path) for s in schema["anyOf"]):
        problems.append(f"{path}: matches none of anyOf")
    if "oneOf" in schema and sum(not validate(value, s, doc, path) for s in schema["oneOf"]) != 1:
        problems.append(f"{path}: does not match exactly one of oneOf")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}: missing required {name!r}")
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                problems += validate(item, properties[name], doc, f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                problems.append(f"{path}: undocumented property {name!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += validate(item, schema["additionalProperties"], doc, f"{path}.{name}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            problems.append(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                problems += validate(item, schema["items"], doc, f"{path}[{index}]")
    return problems


def test_the_checker_catches_what_it_claims_to() -> None:
    doc = openapi_document()
    lag = {"$ref": "#/components/schemas/Lag"}
    good = {
        "topic": "a",
        "group": "g",
        "lastCursor": None,
        "tail": None,
        "tailSeq": None,
        "tailTs": None,
        "lagMs": None,
        "lagCount": None,
    }
    assert validate(good, lag, doc) == []
    assert validate({**good, "extra": 1}, lag, doc)
    assert validate({**good, "lagCount": "1"}, lag, doc)
    assert validate({k: v for k, v in good.items() if k != "tail"}, lag, doc)
    assert validate({**good, "lastCursor": {"topic": "a"}}, lag, doc)
    assert validate({"ids": []}, {"$ref": "#/components/schemas/RetryRequest"}, doc)
    assert validate(
        {"name": "x", "up": True, "error": "e"}, {"$ref": "#/components/schemas/OutboxState"}, doc
    )


# -- the document and the app -------------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [node["$ref"]] if "$ref" in node else [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_openapi_31_and_every_ref_resolves() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    schemas = doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["x-outboxhub-access"] in ("open", "metrics", "read", "write"), (method, path)
            assert "200" in op["responses"] or "101" in op["responses"], (method, path)


def _registered(hub: Hub) -> set[tuple[str, str]]:
    return {
        (route.method.lower(), route.resource.canonical)
        for route in hub.ops_app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, p) for p, item in doc["paths"].items() for m in item if m in _METHODS}


async def test_every_route_is_documented_and_every_documented_route_exists(hub: Hub) -> None:
    doc = openapi_document()
    assert _registered(hub) == _documented(doc)
    ctx = hub.ops_app[OPS]
    for method, path in _documented(doc):
        assert ctx.access_for(method.upper(), path) == doc["paths"][path][method]["x-outboxhub-access"], path


async def test_the_served_document_is_the_same(hub: Hub) -> None:
    async with aiohttp.ClientSession() as s, s.get(hub.ops_url + "openapi.json") as r:
        assert r.status == 200 and await r.json() == openapi_document()


# -- real calls validate ------------------------------------------------------------------------------------


@pytest.fixture
async def busy_hub(hub_factory: Any, tmp_path: Path) -> Hub:
    """A hub with events, a group with a cursor, and an outbox with a pending and a dead record."""
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
        outbox.add(conn, "orders.new", {"n": 1}, key="o1", headers={"h": "v"})
        dead_id = outbox.add(conn, "orders.new", {"n": 2})
    store = await outbox.open_outbox(f"sqlite:///{path}")
    try:
        batch = await store.claim_batch(10, 30_000, "w")
        (record,) = [r for r in batch if r.id == dead_id]
        failure = outbox.Failure(record=record, error="boom", verdict=outbox.Verdict(dead=True))
        await store.mark_failed([failure])
        await store.release([r for r in batch if r.id != dead_id])
    finally:
        await store.close()
    hub: Hub = await hub_factory(outbox=[f"sqlite:///{path}"])
    await hub.bus.publish_batch(
        [NewEvent(topic="process.state", key=f"h{i % 2}", payload={"i": i}, tags=["t"]) for i in range(5)]
    )
    await hub.store.ensure_group("process.*", "ops", StartPosition(kind="earliest"))
    claimed = await hub.store.claim("process.*", "ops", "m", limit=2, ack_timeout_ms=30_000, max_deliver=5)
    await hub.store.ack("process.*", "ops", [claimed[0].event.id])
    return hub


CALLS: list[tuple[str, str, str, Any, str, int]] = [
    # method, path, query, JSON body, caller (writer / reader / nobody), expected status
    ("get", "/topics", "", None, "writer", 200),
    ("get", "/groups", "", None, "writer", 200),
    ("get", "/cursors", "?topic=process.*", None, "writer", 200),
    ("get", "/lag", "?topic=process.*&group=ops", None, "writer", 200),
    ("get", "/lag", "?topic=process.*&group=none", None, "writer", 200),
    ("get", "/lag", "?topic=process.*", None, "writer", 400),
    ("get", "/latest-by-key", "?topic=process.state&key=h1", None, "writer", 200),
    ("get", "/latest-by-key", "?topic=process.state&key=nope", None, "writer", 200),
    ("get", "/replay", "?pattern=process.*&limit=3", None, "writer", 200),
    ("get", "/replay", "?pattern=process.*", None, "nobody", 401),
    ("get", "/outbox", "", None, "writer", 200),
    ("post", "/outbox/retry", "", {"ids": "all"}, "writer", 200),
    ("post", "/outbox/retry", "", {"ids": 5}, "writer", 400),
    ("post", "/outbox/purge", "", {"ids": ["x"]}, "reader", 403),
    ("post", "/outbox/purge", "", {"older_than_ms": 0}, "writer", 200),
    ("get", "/dlq", "?group=ops", None, "writer", 200),
    ("get", "/dlq", "?group=a.b", None, "writer", 400),
    ("post", "/dlq/redrive", "", {"group": "ops", "ids": "all"}, "writer", 200),
    ("post", "/dlq/purge", "", {"group": "ops"}, "writer", 200),
    ("post", "/groups/reset", "", {"pattern": "process.*", "group": "ops", "to": "ts:0"}, "writer", 200),
    ("post", "/groups/reset", "", {"pattern": "process.*", "group": "none", "to": 1}, "writer", 404),
    ("get", "/connections", "", None, "reader", 200),
    ("post", "/connections/{id}/close", "", {}, "writer", 404),  # {id}: conn-none
    ("get", "/series", "", None, "reader", 200),
    ("get", "/metrics", "", None, "nobody", 200),
    ("get", "/healthz", "", None, "nobody", 200),
    ("get", "/openapi.json", "", None, "nobody", 200),
    ("get", "/", "", None, "nobody", 200),
    ("get", "/dashboard.js", "", None, "nobody", 200),
    ("get", "/dashboard.css", "", None, "nobody", 200),
    ("get", "/operators.js", "", None, "nobody", 200),
    ("get", "/uPlot.iife.min.js", "", None, "nobody", 200),
    ("get", "/uPlot.min.css", "", None, "nobody", 200),
    ("get", "/uPlot.LICENSE", "", None, "nobody", 200),
    # the browser client: /outboxhub.js, /outboxhub.d.ts and the modules they import (clients/js/dist)
    *[("get", path, "", None, "nobody", 200) for path in STATIC_FILES if path.startswith("/outboxhub")],
]


async def test_real_responses_validate_against_the_documented_schemas(
    busy_hub: Hub, token: Callable[..., str]
) -> None:
    doc = openapi_document()
    callers = {
        "writer": token(scopes=["ops:read", "ops:write", "subscribe:**"]),
        "reader": token(scopes=["ops:read", "subscribe:**"]),
        "nobody": None,
    }
    checked: set[tuple[str, str]] = set()
    async with aiohttp.ClientSession() as s:
        for method, path, query, body, who, expected in CALLS:
            jwt = callers[who]
            headers = {"Authorization": f"Bearer {jwt}"} if jwt else {}
            url = busy_hub.ops_url.rstrip("/") + path.replace("{id}", "conn-none") + query
            async with s.request(method, url, json=body, headers=headers) as r:
                raw = await r.read()
                assert r.status == expected, (method, path, query, raw)
                response = doc["paths"][path][method]["responses"][str(r.status)]
                (media, spec), *_ = response["content"].items()
                assert r.content_type == media, (path, r.content_type)
                if media == "application/json":
                    problems = validate(msgspec.json.decode(raw), spec["schema"], doc)
                elif media == "application/x-ndjson":
                    lines = [msgspec.json.decode(line) for line in raw.splitlines() if line]
                    assert lines, path
                    problems = [p for line in lines for p in validate(line, spec["schema"], doc)]
                else:
                    problems = validate(raw.decode(), spec["schema"], doc)
                assert problems == [], (method, path, query, problems)
                checked.add((method, path))
    documented = _documented(doc) - {("get", "/ws")}
    assert checked == documented, f"not called: {documented - checked}"


async def test_undocumented_query_parameters_are_refused(hub: Hub, token: Callable[..., str]) -> None:
    doc = openapi_document()
    headers = {"Authorization": f"Bearer {token(scopes=['ops:read', 'ops:write', 'subscribe:**'])}"}
    api_paths = [
        p for p, item in doc["paths"].items() if item.get("get", {}).get("x-outboxhub-access") == "read"
    ]
    assert api_paths
    async with aiohttp.ClientSession(headers=headers) as s:
        for path in api_paths:
            async with s.get(hub.ops_url.rstrip("/") + path + "?undocumented=1") as r:
                body = await r.json()
                assert r.status == 400 and body["error"].startswith("undocumented: "), (path, body)
                documented = [p["name"] for p in doc["paths"][path]["get"].get("parameters", [])]
                for name in documented:
                    assert name in body["error"], (path, name, body)
