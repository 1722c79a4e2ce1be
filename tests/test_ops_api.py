"""The ops API over real HTTP against a real hub (SQLite store in tmp_path): shapes, parameters, auth."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import msgspec
import pytest

from outboxhub import outbox
from outboxhub.app import Hub
from outboxhub.model import NewEvent, StartPosition
from outboxhub.ops import OPS

READ = ("ops:read", "subscribe:**")
WRITE = ("ops:read", "ops:write", "subscribe:**")
SECRET = "outboxhub-test-secret-" + "0123456789abcdef" * 3  # the conftest's TEST_SECRET


class Ops:
    """A small HTTP client for one hub's ops port."""

    def __init__(self, session: aiohttp.ClientSession, hub: Hub, token: str | None) -> None:
        self.session = session
        self.base = hub.ops_url.rstrip("/")
        self.token = token

    def _headers(self, token: str | None) -> dict[str, str]:
        token = self.token if token == "default" else token
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, *, token: str | None = "default") -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=self._headers(token)) as r:
            body = await r.read()
            if r.content_type == "application/json":
                return r.status, msgspec.json.decode(body)
            return r.status, body.decode()

    async def post(self, path: str, body: Any, *, token: str | None = "default") -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        headers = {**self._headers(token), "Content-Type": "application/json"}
        async with self.session.post(self.base + path, data=data, headers=headers) as r:
            return r.status, msgspec.json.decode(await r.read())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def ops_for(session: aiohttp.ClientSession, token: Callable[..., str]) -> Callable[..., Ops]:
    def make(hub: Hub, scopes: tuple[str, ...] | None = WRITE) -> Ops:
        return Ops(session, hub, None if scopes is None else token(scopes=list(scopes)))

    return make


async def publish(hub: Hub, topic: str, n: int, **fields: Any) -> list[Any]:
    results = await hub.bus.publish_batch(
        [NewEvent(topic=topic, payload={"i": i}, **fields) for i in range(n)]
    )
    return [await hub.store.get_event(r.id) for r in results]


# -- auth ---------------------------------------------------------------------------------------------------


async def test_reads_need_a_bearer_token_with_ops_read(
    hub: Hub, ops_for: Callable[..., Ops], token: Any
) -> None:
    ops = ops_for(hub)
    status, body = await ops.get("/topics", token=None)
    assert status == 401 and "Authorization" in body["error"]
    async with ops.session.get(ops.base + "/topics") as r:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    status, body = await ops.get("/topics", token="x")  # not a JWT
    assert status == 401 and body["error"].startswith("jwt_invalid")
    async with ops.session.get(ops.base + "/topics", headers={"Authorization": "Basic dTpw"}) as r:
        assert r.status == 401 and "Bearer" in (await r.json())["error"]
    expired = jwt.encode({"sub": "old", "exp": int(time.time()) - 3600, "scopes": ["ops:read"]}, SECRET)
    status, body = await ops.get("/topics", token=expired)
    assert status == 401 and body["error"].startswith("token_expired")
    status, body = await ops.get("/topics", token=token(scopes=["subscribe:**"]))
    assert status == 403 and "ops:read" in body["error"]
    assert (await ops.get("/topics"))[0] == 200


async def test_outbox_actions_need_ops_write(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    ops = ops_for(hub, READ)
    status, body = await ops.post("/outbox/retry", {"ids": "all"})
    assert status == 403 and "ops:write" in body["error"]
    status, body = await ops.post("/outbox/purge", {"ids": ["a"]}, token=None)
    assert status == 401


async def test_open_routes_and_the_metrics_switch(hub_factory: Any, ops_for: Callable[..., Ops]) -> None:
    open_hub = await hub_factory()
    ops = ops_for(open_hub, None)
    for path in ("/healthz", "/metrics", "/openapi.json", "/", "/outboxhub.js", "/outboxhub.d.ts"):
        assert (await ops.get(path))[0] == 200, path
    closed = await hub_factory(ops_open_metrics=False)
    anonymous, reader = ops_for(closed, None), ops_for(closed, READ)
    for path in ("/healthz", "/metrics"):
        assert (await anonymous.get(path))[0] == 401, path
        assert (await reader.get(path))[0] == 200, path
    assert (await anonymous.get("/openapi.json"))[0] == 200


async def test_unknown_routes_and_methods_answer_json(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    ops = ops_for(hub)
    status, body = await ops.get("/nope")
    assert status == 404 and "/nope" in body["error"]
    status, body = await ops.post("/topics", {})
    assert status == 405 and "GET" in body["error"]


# -- parameters ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/cursors", "topic"),
        ("/cursors?topic=", "topic"),
        ("/cursors?topic=a..b", "topic"),
        ("/lag?group=g", "topic"),
        ("/lag?topic=a", "group"),
        ("/lag?topic=a&group=no%20spaces", "group"),
        ("/latest-by-key?key=k", "topic"),
        ("/latest-by-key?topic=a.*&key=k", "topic"),
        ("/latest-by-key?topic=a", "key"),
        ("/replay", "pattern"),
        ("/replay?pattern=a&from_seq=-1", "from_seq"),
        ("/replay?pattern=a&from_seq=x", "from_seq"),
        ("/replay?pattern=a&limit=0", "limit"),
        ("/replay?pattern=a&since=1&from_seq=1", "since"),
        ("/replay?pattern=a&since=5&until=4", "until"),
        ("/replay?pattern=a&until=99999999999999999999", "until"),
        ("/replay?pattern=a&pattern=b", "pattern"),
        ("/replay?pattern=a&fromseq=1", "fromseq"),
        ("/outbox?dead_limit=1001", "dead_limit"),
        ("/topics?verbose=1", "verbose"),
        ("/groups?x=", "x"),
    ],
)
async def test_every_bad_parameter_is_a_400_naming_it(
    hub: Hub, ops_for: Callable[..., Ops], path: str, name: str
) -> None:
    status, body = await ops_for(hub).get(path)
    assert status == 400, body
    assert body["error"].startswith(f"{name}: "), body


@pytest.mark.parametrize(
    ("route", "body", "name"),
    [
        ("retry", b"{not json", "body"),
        ("retry", [1], "body"),
        ("retry", {}, "ids"),
        ("retry", {"ids": "some"}, "ids"),
        ("retry", {"ids": []}, "ids"),
        ("retry", {"ids": ["a", 3]}, "ids[1]"),
        ("retry", {"ids": "all", "force": True}, "force"),
        ("retry", {"ids": "all", "outbox": "elsewhere"}, "outbox"),
        ("retry", {"ids": "all", "outbox": 1}, "outbox"),
        ("purge", {"ids": "all"}, "ids"),
        ("purge", {}, "ids"),
        ("purge", {"ids": ["a"], "older_than_ms": 5}, "ids"),
        ("purge", {"older_than_ms": -1}, "older_than_ms"),
        ("purge", {"older_than_ms": True}, "older_than_ms"),
    ],
)
async def test_every_bad_body_field_is_a_400_naming_it(
    outbox_hub: Hub, ops_for: Callable[..., Ops], route: str, body: Any, name: str
) -> None:
    status, answer = await ops_for(outbox_hub).post(f"/outbox/{route}", body)
    assert status == 400, answer
    assert answer["error"].startswith(f"{name}: "), answer


# -- seed endpoints -----------------------------------------------------------------------------------------


async def test_cursors_and_lag_follow_the_group_ack_floor(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    ops = ops_for(hub)
    events = await publish(hub, "orders.paid", 3)
    await publish(hub, "orders.refunded", 1)
    store = hub.store
    await store.ensure_group("orders.paid", "billing", StartPosition(kind="earliest"))
    await store.ensure_group("orders.*", "audit", StartPosition(kind="earliest"))
    claimed = await store.claim("orders.paid", "billing", "m1", limit=2, ack_timeout_ms=30_000, max_deliver=5)
    await store.ack("orders.paid", "billing", [d.event.id for d in claimed])

    status, body = await ops.get("/cursors?topic=orders.paid")
    assert status == 200
    assert body == {
        "topic": "orders.paid",
        "cursors": [
            {"group": "billing", "lastId": events[1].id, "lastTs": events[1].ts, "seq": events[1].seq}
        ],
    }
    status, body = await ops.get("/lag?topic=orders.paid&group=billing")
    assert status == 200
    assert body == {
        "topic": "orders.paid",
        "group": "billing",
        "lastCursor": {
            "topic": "orders.paid",
            "group": "billing",
            "seq": events[1].seq,
            "lastId": events[1].id,
            "lastTs": events[1].ts,
        },
        "tail": events[2].id,
        "tailSeq": events[2].seq,
        "tailTs": events[2].ts,
        "lagMs": events[2].ts - events[1].ts,
        "lagCount": 1,
    }
    status, body = await ops.get("/lag?topic=orders.*&group=audit")
    assert body["lagCount"] == 4 and body["lastCursor"]["lastId"] is None and body["lagMs"] is None
    status, body = await ops.get("/lag?topic=orders.paid&group=nobody")
    assert status == 200
    assert body["lastCursor"] is None and body["lagCount"] is None and body["tail"] == events[2].id


async def test_latest_by_key_returns_the_newest_event_or_null(
    hub: Hub, ops_for: Callable[..., Ops], token: Any
) -> None:
    ops = ops_for(hub)
    await publish(hub, "process.state", 2, key="host:a")
    newest = (await publish(hub, "process.state", 1, key="host:a"))[0]
    await publish(hub, "process.state", 1, key="host:b")
    status, body = await ops.get("/latest-by-key?topic=process.state&key=host:a")
    assert status == 200 and body == msgspec.to_builtins(newest)
    assert (await ops.get("/latest-by-key?topic=process.state&key=host:zzz")) == (200, None)
    outsider = token(scopes=["ops:read", "subscribe:other.**"])
    status, body = await ops.get("/latest-by-key?topic=process.state&key=host:a", token=outsider)
    assert status == 403 and "subscribe" in body["error"]


async def test_topics_and_groups(hub: Hub, ops_for: Callable[..., Ops], ws_connect: Any, token: Any) -> None:
    ops = ops_for(hub)
    await publish(hub, "a.one", 2)
    last = (await publish(hub, "a.two", 1))[0]
    status, body = await ops.get("/topics")
    assert status == 200
    assert body["lastSeq"] == last.seq
    assert [(t["topic"], t["count"]) for t in body["topics"]] == [("a.one", 2), ("a.two", 1)]
    assert body["topics"][1]["lastSeq"] == last.seq and body["topics"][1]["lastTs"] == last.ts

    client = await ws_connect(hub.ws_url, token=token(scopes=["subscribe:**"]))
    reply = await client.request("SUBSCRIBE", topic="a.*", group="workers", opts={"start": "earliest"})
    assert reply["op"] == "OK"
    first = await client.next_event()
    assert first["event"]["topic"] == "a.one"

    async def workers() -> dict[str, Any]:
        groups = (await ops.get("/groups"))[1]["groups"]
        return next(g for g in groups if g["group"] == "workers")

    group = await workers()
    assert group["pattern"] == "a.*" and group["members"] == 1
    assert group["inFlight"] == 3 and group["lagCount"] == 3 and group["deadLetters"] == 0
    assert group["tail"] == last.id
    await client.close()
    for _ in range(200):  # the member leaves when the server sees the close
        if (await workers())["members"] == 0:
            break
        await asyncio.sleep(0.01)
    assert (await workers())["members"] == 0


# -- replay -------------------------------------------------------------------------------------------------


async def _replay(
    ops: Ops, query: str, token: str | None = "default"
) -> tuple[int, list[dict[str, Any]], Any]:
    async with ops.session.get(f"{ops.base}/replay?{query}", headers=ops._headers(token)) as r:
        if r.status != 200:
            return r.status, [], await r.json()
        assert r.content_type == "application/x-ndjson"
        lines = [msgspec.json.decode(line) async for line in r.content if line.strip()]
        return r.status, lines, r.headers["X-Replay-Last-Seq"]


async def test_replay_streams_every_match_in_seq_order_across_pages(
    hub: Hub, ops_for: Callable[..., Ops]
) -> None:
    from outboxhub.ops.replay import PAGE_SIZE

    ops = ops_for(hub)
    total = 2 * PAGE_SIZE + 7
    for start in range(0, total, 2000):
        n = min(2000, total - start)
        await hub.bus.publish_batch(
            [NewEvent(topic="m.x" if (start + i) % 2 else "m.y", payload=start + i) for i in range(n)]
        )
    status, lines, last = await _replay(ops, "pattern=m.*")
    assert status == 200 and len(lines) == total and int(last) == lines[-1]["seq"]
    assert [e["payload"] for e in lines] == list(range(total))
    status, lines, _ = await _replay(ops, "pattern=m.x")
    assert len(lines) == total // 2 and all(e["topic"] == "m.x" for e in lines)
    status, lines, _ = await _replay(ops, "pattern=m.*&from_seq=10&limit=5")
    assert [e["seq"] for e in lines] == [10, 11, 12, 13, 14]
    status, lines, _ = await _replay(ops, f"pattern=m.*&from_seq={total + 1}")
    assert status == 200 and lines == []


async def test_replay_by_time_and_rights(hub: Hub, ops_for: Callable[..., Ops], token: Any) -> None:
    ops = ops_for(hub)
    await hub.bus.publish_batch([NewEvent(topic="t.a", payload=ts, ts=ts) for ts in (1000, 2000, 3000, 4000)])
    status, lines, _ = await _replay(ops, "pattern=t.a&since=2000&until=3000")
    assert [e["ts"] for e in lines] == [2000, 3000]
    status, lines, _ = await _replay(ops, "pattern=t.a&until=1500")
    assert [e["ts"] for e in lines] == [1000]
    status, _, body = await _replay(ops, "pattern=t.a", token=token(scopes=["ops:read", "subscribe:other.*"]))
    assert status == 403 and "t.a" in body["error"]
    status, _, body = await _replay(ops, "pattern=t.a", token=token(scopes=["subscribe:**"]))
    assert status == 403 and "ops:read" in body["error"]


async def test_a_client_leaving_mid_replay_costs_nothing(
    hub: Hub, ops_for: Callable[..., Ops], caplog: pytest.LogCaptureFixture
) -> None:
    from outboxhub.ops.replay import PAGE_SIZE

    ops = ops_for(hub)
    await hub.bus.publish_batch([NewEvent(topic="big.x", payload="x" * 200) for _ in range(3 * PAGE_SIZE)])
    async with ops.session.get(f"{ops.base}/replay?pattern=big.x", headers=ops._headers("default")) as r:
        assert r.status == 200
        await r.content.readline()
        r.close()  # drop the connection with most of the stream unread
    assert (await ops.get("/healthz"))[0] == 200
    status, lines, _ = await _replay(ops, "pattern=big.x&limit=2")
    assert status == 200 and len(lines) == 2
    assert [rec for rec in caplog.records if rec.levelname in ("ERROR", "CRITICAL")] == []


# -- outbox -------------------------------------------------------------------------------------------------


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
    return path


@pytest.fixture
async def outbox_hub(hub_factory: Any, outbox_path: Path) -> Hub:
    hub: Hub = await hub_factory(outbox=[f"sqlite:///{outbox_path}"], outbox_drain=False)
    return hub


async def _make_dead(path: Path, topics: list[str]) -> list[str]:
    """Add records and let a drainer whose sink refuses everything kill them (max_attempts=1)."""

    class Refusing:
        async def publish_batch(self, events: Any) -> Any:
            raise ValueError("the sink refuses this record")

    with sqlite3.connect(path) as conn:
        ids = [outbox.add(conn, topic, {"n": i}, key=f"k{i}") for i, topic in enumerate(topics)]
    store = await outbox.open_outbox(f"sqlite:///{path}")
    try:
        drainer = outbox.Drainer(store, Refusing(), outbox.DrainerSettings(max_attempts=1, concurrency=1))
        await drainer.run_until_idle()
        assert drainer.dead == len(ids)
    finally:
        await store.close()
    return ids


async def test_outbox_state_retry_and_purge(
    outbox_hub: Hub, outbox_path: Path, ops_for: Callable[..., Ops]
) -> None:
    ops = ops_for(outbox_hub)
    dead = await _make_dead(outbox_path, ["orders.paid", "orders.paid", "orders.paid"])
    with sqlite3.connect(outbox_path) as conn:
        outbox.add(conn, "orders.new", {"pending": True})
    status, body = await ops.get("/outbox")
    assert status == 200
    (state,) = body["outboxes"]
    assert state["name"] == f"sqlite:///{outbox_path}" and state["up"] is True and state["table"] == "outbox"
    assert (state["pending"], state["claimed"], state["dead"]) == (1, 0, 3)
    assert state["oldestPendingAgeMs"] >= 0
    assert [r["id"] for r in state["deadRecords"]] == dead
    assert state["deadRecords"][0]["lastErr"].endswith("the sink refuses this record")
    assert state["deadRecords"][0]["payload"] == {"n": 0} and state["deadRecords"][0]["key"] == "k0"
    assert len((await ops.get("/outbox?dead_limit=1"))[1]["outboxes"][0]["deadRecords"]) == 1

    assert await ops.post("/outbox/retry", {"ids": [dead[0], "unknown"]}) == (
        200,
        {"outbox": state["name"], "retried": 1},
    )
    assert await ops.post("/outbox/purge", {"outbox": "0", "ids": [dead[1]]}) == (
        200,
        {"outbox": state["name"], "purged": 1},
    )
    state = (await ops.get("/outbox"))[1]["outboxes"][0]
    assert (state["pending"], state["dead"]) == (2, 1)
    assert await ops.post("/outbox/retry", {"outbox": state["name"], "ids": "all"}) == (
        200,
        {"outbox": state["name"], "retried": 1},
    )
    assert (await ops.get("/outbox"))[1]["outboxes"][0]["dead"] == 0


async def test_an_outbox_that_cannot_be_read_is_reported_not_fatal(
    hub_factory: Any, tmp_path: Path, ops_for: Callable[..., Ops]
) -> None:
    hub = await hub_factory(outbox=[f"sqlite:///{tmp_path / 'no-table.db'}"], outbox_drain=False)
    ops = ops_for(hub)
    status, body = await ops.get("/outbox")
    assert status == 200
    (state,) = body["outboxes"]
    assert state["up"] is False and "outbox" in state["error"]
    assert (await ops.get("/healthz"))[0] == 200


async def test_outbox_actions_without_outboxes_name_the_setting(
    hub: Hub, ops_for: Callable[..., Ops]
) -> None:
    status, body = await ops_for(hub).post("/outbox/retry", {"ids": "all"})
    assert status == 400 and "no outbox is configured" in body["error"]
    assert await ops_for(hub).get("/outbox") == (200, {"outboxes": []})


# -- health and failures ------------------------------------------------------------------------------------


async def test_healthz_and_reads_answer_503_when_the_store_is_down(
    hub: Hub, ops_for: Callable[..., Ops]
) -> None:
    ops = ops_for(hub)
    assert await ops.get("/healthz") == (200, {"status": "ok"})
    await hub.store.close()
    status, body = await ops.get("/healthz")
    assert status == 503 and body["status"] == "unavailable"
    status, body = await ops.get("/topics")
    assert status == 503 and body["error"].startswith("store unavailable")
    status, text = await ops.get("/metrics")
    assert status == 200 and "outboxhub_store_up 0.0" in text


async def test_the_route_table_is_on_the_app(hub: Hub) -> None:
    ctx = hub.ops_app[OPS]
    assert ctx.access_for("GET", "/topics") == "read"
    assert ctx.access_for("HEAD", "/metrics") == "metrics"
    assert ctx.access_for("POST", "/outbox/retry") == "write"
    assert ctx.access_for("GET", "/something-else") == "read"
    assert hub.metrics is ctx.metrics
