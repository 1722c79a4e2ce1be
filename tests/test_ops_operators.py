"""The operator routes over real HTTP against a real hub (SQLite in tmp_path): dead letters (list, redrive,
purge), group reset, connections (list, close) and the chart series — auth, bad parameters naming the field,
and ACL filtering for a token with narrower rights."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from outboxhub.app import Hub
from outboxhub.model import NewEvent, StartPosition
from outboxhub.ops import OPS

WRITE = ("ops:read", "ops:write", "subscribe:**", "publish:**")
READ = ("ops:read", "subscribe:**")


class Ops:
    def __init__(self, session: aiohttp.ClientSession, hub: Hub, token: str | None) -> None:
        self.session = session
        self.base = hub.ops_url.rstrip("/")
        self.token = token

    def _headers(self) -> dict[str, str]:
        return {} if self.token is None else {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=self._headers()) as r:
            return r.status, msgspec.json.decode(await r.read())

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        async with self.session.post(self.base + path, data=data, headers=self._headers()) as r:
            return r.status, msgspec.json.decode(await r.read())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def ops_for(session: aiohttp.ClientSession, token: Callable[..., str]) -> Callable[..., Ops]:
    def make(hub: Hub, scopes: tuple[str, ...] | None = WRITE, sub: str = "op") -> Ops:
        return Ops(session, hub, None if scopes is None else token(scopes=list(scopes), sub=sub))

    return make


async def dead_letters(hub: Hub, topic: str, n: int, group: str = "g") -> list[str]:
    """Publish ``n`` events on ``topic`` and dead-letter them in ``(topic, group)``; return their ids."""
    pattern = topic
    results = await hub.bus.publish_batch([NewEvent(topic=topic, payload={"i": i}) for i in range(n)])
    await hub.store.ensure_group(pattern, group, StartPosition(kind="seq", value=results[0].seq - 1))
    claimed = await hub.store.claim(pattern, group, "m", limit=n, ack_timeout_ms=60_000, max_deliver=1)
    assert len(claimed) == n
    for d in claimed:
        assert await hub.store.nack(pattern, group, d.event.id, max_deliver=1, reason="boom")
    page = await hub.store.scan(f"dlq.{group}.{topic}", limit=1000)
    originals = {r.id for r in results}
    return [e.id for e in page if (e.headers or {}).get("x-original-id") in originals]


# -- dead letters -------------------------------------------------------------------------------------------


async def test_dlq_lists_dead_letters_with_their_headers(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    ids = await dead_letters(hub, "orders.created", 3)
    status, body = await ops_for(hub, READ).get("/dlq?group=g")
    assert status == 200, body
    letters = body["deadLetters"]
    assert [x["id"] for x in letters] == ids
    first = letters[0]
    assert first["topic"] == "orders.created" and first["dlqTopic"] == "dlq.g.orders.created"
    assert first["attempts"] == 1 and first["lastError"] == "boom" and first["preview"] == '{"i":0}'
    assert first["originalId"] and first["redriven"] is False
    assert body["hidden"] == 0 and body["purgedThrough"] == 0
    status, body = await ops_for(hub, READ).get("/dlq?group=g&pattern=nothing.*")
    assert status == 200 and body["deadLetters"] == []
    status, body = await ops_for(hub, READ).get("/dlq?group=g&limit=2")
    assert [x["id"] for x in body["deadLetters"]] == ids[:2] and body["nextAfterSeq"] is not None
    status, body = await ops_for(hub, READ).get(f"/dlq?group=g&after_seq={body['nextAfterSeq']}")
    assert [x["id"] for x in body["deadLetters"]] == ids[2:]


async def test_dlq_hides_other_tenants_dead_letters(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    mine = await dead_letters(hub, "a.x", 2)
    theirs = await dead_letters(hub, "b.x", 2)
    tenant = ops_for(hub, ("ops:read", "ops:write", "subscribe:dlq.**", "subscribe:a.**", "publish:**"))
    status, body = await tenant.get("/dlq?group=g")
    assert status == 200
    assert [x["id"] for x in body["deadLetters"]] == mine and body["hidden"] == 2
    # Neither redrive nor purge reaches the other tenant's dead letters.
    status, body = await tenant.post("/dlq/redrive", {"group": "g", "ids": [theirs[0]]})
    assert status == 403 and "not readable" in body["error"]
    status, body = await tenant.post("/dlq/purge", {"group": "g"})
    assert status == 403 and theirs[0] in body["error"]
    status, body = await tenant.post("/dlq/redrive", {"group": "g", "ids": "all"})
    assert status == 200 and [r["id"] for r in body["redriven"]] == mine
    assert await hub.store.count("b.x") == 2  # nothing republished to the other tenant's topic


async def test_redrive_republishes_once(hub: Hub, ops_for: Callable[..., Ops], caplog: Any) -> None:
    ids = await dead_letters(hub, "pay.done", 2)
    ops = ops_for(hub, sub="alice")
    with caplog.at_level(logging.INFO, logger="outboxhub.ops"):
        status, body = await ops.post("/dlq/redrive", {"group": "g", "ids": [ids[0]]})
    assert status == 200, body
    assert body["published"] == 1 and body["duplicates"] == 0
    assert any("'alice' redrove 1 dead letter" in r.getMessage() for r in caplog.records)
    event = await hub.store.get_event(body["redriven"][0]["eventId"])
    assert event is not None and event.topic == "pay.done" and event.payload == {"i": 0}
    assert event.headers == {"x-redriven-from": ids[0]} and event.caused_by == [ids[0]]
    again = (await ops.post("/dlq/redrive", {"group": "g", "ids": "all"}))[1]
    assert again["published"] == 1 and again["duplicates"] == 1  # the first one was already redriven
    assert await hub.store.count("pay.done") == 4  # 2 originals + 2 redriven, not 3
    listed = (await ops.get("/dlq?group=g"))[1]["deadLetters"]
    assert [x["redriven"] for x in listed] == [True, True]


async def test_purge_hides_dead_letters_up_to_a_seq(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    ids = await dead_letters(hub, "p.t", 3)
    ops = ops_for(hub)
    seqs = [x["seq"] for x in (await ops.get("/dlq?group=g"))[1]["deadLetters"]]
    status, body = await ops.post("/dlq/purge", {"group": "g", "through_seq": seqs[0]})
    assert status == 200 and body == {"group": "g", "purged": 1, "purgedThrough": seqs[0]}
    listed = (await ops.get("/dlq?group=g"))[1]
    assert [x["id"] for x in listed["deadLetters"]] == ids[1:] and listed["purgedThrough"] == seqs[0]
    assert (await ops.post("/dlq/purge", {"group": "g"}))[1]["purged"] == 2
    assert (await ops.get("/dlq?group=g"))[1]["deadLetters"] == []
    assert await hub.store.count("dlq.g.**") == 3  # the log keeps them
    groups = (await ops.get("/groups"))[1]["groups"]
    assert all(not g["group"].startswith("~") for g in groups)  # the purge mark is not a group to watch


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/dlq/redrive", {"ids": "all"}, "group"),
        ("/dlq/redrive", {"group": "g"}, "ids"),
        ("/dlq/redrive", {"group": "g", "ids": []}, "ids"),
        ("/dlq/redrive", {"group": "g", "ids": [1]}, "ids[0]"),
        ("/dlq/redrive", {"group": "g", "ids": ["nope"]}, "ids[0]"),
        ("/dlq/redrive", {"group": "bad.name", "ids": "all"}, "group"),
        ("/dlq/redrive", {"group": "g", "ids": "all", "pattern": "a..b"}, "pattern"),
        ("/dlq/redrive", {"group": "g", "ids": "all", "x": 1}, "x"),
        ("/dlq/purge", {"group": "g", "through_seq": -1}, "through_seq"),
        ("/dlq/purge", {"group": "g", "through_seq": "5"}, "through_seq"),
        ("/dlq/purge", b"[1]", "body"),
        ("/groups/reset", {"pattern": "o.*", "group": "g"}, "to"),
        ("/groups/reset", {"pattern": "o.*", "group": "g", "to": "yesterday"}, "to"),
        ("/groups/reset", {"pattern": "o.*", "group": "g", "to": -3}, "to"),
        ("/groups/reset", {"pattern": "o.*", "group": "g", "to": True}, "to"),
        ("/groups/reset", {"pattern": "o..", "group": "g", "to": "earliest"}, "pattern"),
        ("/groups/reset", {"pattern": "o.*", "to": "earliest"}, "group"),
        ("/groups/reset", b"{nope", "body"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(
    hub: Hub, ops_for: Callable[..., Ops], path: str, body: Any, field: str
) -> None:
    status, answer = await ops_for(hub).post(path, body)
    assert status == 400, answer
    assert answer["error"].startswith(f"{field}: "), answer


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "group"),
        ("group=", "group"),
        ("group=a.b", "group"),
        ("group=g&limit=0", "limit"),
        ("group=g&limit=x", "limit"),
        ("group=g&after_seq=-1", "after_seq"),
        ("group=g&pattern=a..b", "pattern"),
        ("group=g&grup=x", "grup"),
    ],
)
async def test_bad_dlq_queries_are_400_naming_the_parameter(
    hub: Hub, ops_for: Callable[..., Ops], query: str, field: str
) -> None:
    status, answer = await ops_for(hub).get(f"/dlq?{query}")
    assert status == 400 and answer["error"].startswith(f"{field}: "), answer


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/dlq/redrive"),
        ("POST", "/dlq/purge"),
        ("POST", "/groups/reset"),
        ("POST", "/connections/conn-x/close"),
    ],
)
async def test_actions_need_ops_write(hub: Hub, ops_for: Callable[..., Ops], method: str, path: str) -> None:
    status, body = await ops_for(hub, READ).post(path, {})
    assert status == 403 and "ops:write" in body["error"]
    status, body = await ops_for(hub, None).post(path, {})
    assert status == 401


@pytest.mark.parametrize("path", ["/dlq?group=g", "/connections", "/series"])
async def test_reads_need_ops_read(hub: Hub, ops_for: Callable[..., Ops], path: str) -> None:
    assert (await ops_for(hub, None).get(path))[0] == 401
    assert (await ops_for(hub, ("subscribe:**",)).get(path))[0] == 403
    assert (await ops_for(hub, READ).get(path))[0] == 200


# -- group reset --------------------------------------------------------------------------------------------


async def test_reset_rewinds_a_group_and_a_member_rereads(
    hub: Hub, ops_for: Callable[..., Ops], ws_connect: Any, token: Any
) -> None:
    await hub.bus.publish_batch([NewEvent(topic="re.a", payload=i) for i in range(3)])
    client = await ws_connect(hub.ws_url, token=token(scopes=["subscribe:**"]))
    await client.request("SUBSCRIBE", topic="re.*", group="workers", opts={"start": "earliest"})
    first = [await client.next_event() for _ in range(3)]
    for event in first:
        await client.send({"op": "ACK", "topic": "re.*", "group": "workers", "id": event["event"]["id"]})
    ops = ops_for(hub)
    status, body = await ops.post("/groups/reset", {"pattern": "re.*", "group": "workers", "to": "earliest"})
    assert status == 200, body
    assert body["frontier"] == 0 and body["to"] == "earliest"
    again = [await client.next_event() for _ in range(3)]
    assert [e["event"]["id"] for e in again] == [e["event"]["id"] for e in first]
    assert [e["ctx"]["attempt"] for e in again] == [1, 1, 1]
    status, body = await ops.post("/groups/reset", {"pattern": "re.*", "group": "nobody", "to": "latest"})
    assert status == 404 and "nobody" in body["error"]


async def test_reset_needs_subscribe_rights_on_the_group(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    await hub.store.ensure_group("b.*", "g", StartPosition(kind="latest"))
    narrow = ops_for(hub, ("ops:read", "ops:write", "subscribe:a.**"))
    status, body = await narrow.post("/groups/reset", {"pattern": "b.*", "group": "g", "to": "earliest"})
    assert status == 403 and "subscribe rights" in body["error"]


# -- connections --------------------------------------------------------------------------------------------


async def test_connections_list_and_close(
    hub: Hub, ops_for: Callable[..., Ops], ws_connect: Any, token: Any
) -> None:
    client = await ws_connect(hub.ws_url, token=token(sub="carol", scopes=["subscribe:**", "publish:**"]))
    await client.request("SUBSCRIBE", topic="c.*")
    await client.request("SUBSCRIBE", topic="secret.*", group="s")
    await client.request("PUBLISH", topic="c.x", payload=1)
    assert (await client.next_event())["event"]["payload"] == 1  # delivered (live) before it is counted
    ops = ops_for(hub)
    status, body = await ops.get("/connections")
    assert status == 200
    [row] = body["connections"]
    assert row["sub"] == "carol" and row["remote"] and row["connectedAt"] > 0
    assert {(s["pattern"], s["group"]) for s in row["subscriptions"]} == {("c.*", None), ("secret.*", "s")}
    assert row["published"] == 1 and row["delivered"] >= 1 and row["queueDepth"] >= 0
    narrow = ops_for(hub, ("ops:read", "subscribe:c.**"))
    [seen] = (await narrow.get("/connections"))[1]["connections"]
    assert seen["subscriptions"] == [{"pattern": "c.*", "group": None}] and seen["hiddenSubscriptions"] == 1

    status, body = await ops.post(f"/connections/{row['id']}/close", {})
    assert status == 200 and body == {"id": row["id"], "closed": True}
    assert await client.wait_closed() == 1008
    for _ in range(100):
        if not (await ops.get("/connections"))[1]["connections"]:
            break
        await asyncio.sleep(0.05)
    assert (await ops.get("/connections"))[1]["connections"] == []
    status, body = await ops.post(f"/connections/{row['id']}/close", {})
    assert status == 404
    status, body = await ops.post("/connections/../close", {})
    assert status in (400, 404)
    status, body = await ops.post("/connections/bogus/close", {})
    assert status == 400 and body["error"].startswith("id: ")


# -- series -------------------------------------------------------------------------------------------------


async def test_series_rates_and_lag_filtered_by_rights(hub: Hub, ops_for: Callable[..., Ops]) -> None:
    sampler = hub.ops_app[OPS].series
    await hub.store.ensure_group("a.*", "ga", StartPosition(kind="earliest"))
    await hub.store.ensure_group("b.*", "gb", StartPosition(kind="earliest"))
    sampler.ring.add(await sampler.sample())
    await hub.bus.publish_batch([NewEvent(topic=t, payload=i) for i in range(4) for t in ("a.x", "b.x")])
    await asyncio.sleep(0.01)  # the next sample is at a later ms
    sampler.ring.add(await sampler.sample())
    status, body = await ops_for(hub, READ).get("/series")
    assert status == 200
    assert len(body["ts"]) >= 1 and body["intervalS"] > 0
    assert body["topics"]["a.x"][-1] > 0 and body["topics"]["b.x"][-1] > 0
    assert body["groups"]["a.* ga"][-1] == 4 and body["groups"]["b.* gb"][-1] == 4
    narrow = ops_for(hub, ("ops:read", "subscribe:a.**"))
    body = (await narrow.get("/series"))[1]
    assert set(body["topics"]) == {"a.x"} and set(body["groups"]) == {"a.* ga"}
