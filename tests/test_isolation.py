"""Tenant isolation (issue #14): two tokens against one real hub. A victim's publishes, deliveries and reads
stay correct, and keep their rate, while another token attacks.

Each attack is one :class:`Attack` with ``run(hub, token)``: it performs a bounded number of hostile
operations with the attacker's token and asserts that the hub refused or contained each one (so every
attack is also a test of its item against a real hub, failing before the fix). Other items' attacks plug in
by adding an ``Attack`` to :data:`ATTACKS`.

The rate is compared inside one run, never against a wall-clock threshold: after two warm-up rounds the
victim's workload runs :data:`ROUNDS` times alone and :data:`ROUNDS` times with the attack repeating
alongside, the order alternating round by round so drift (caches warming, other load on the machine)
falls on both sides, and the median rates are compared. The attacker runs in this same process and is
paced (:data:`ATTACK_PAUSE_S` between runs), as a tenant is by its rate limits, so the ratio measures the
interference the hub lets through, not the attacker's own fair share of a loaded 2-core machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from outboxhub.app import Hub
from outboxhub.model import NewEvent

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

MEASURE_RATES = os.environ.get("OUTBOXHUB_ISOLATION_RATES") == "1"
ROUNDS = 5 if MEASURE_RATES else 2
"""Solo and attacked rounds each: five when the rate ratio is asserted; two otherwise (every round still
checks the victim's results, and the ratio is still recorded), which keeps the suite's time down."""
VICTIM_EVENTS = 150
ATTACK_PAUSE_S = 0.05  # between two runs of an attack: a paced tenant, not a CPU hog in our own process
MIN_RATE_RATIO = 0.65  # "within 35 % of their solo rate"

VICTIM_SCOPES = ["publish:victim.**", "subscribe:victim.**", "ops:read"]
SECRET_POLICY = {
    "rules": [
        {"effect": "allow", "action": "subscribe", "topics": ["**"]},
        {"effect": "allow", "action": "publish", "topics": ["attacker.**"]},
        {"effect": "deny", "action": "*", "topics": ["secret.**"]},
    ],
    "ops": ["read", "write"],
}


# ------------------------------------------------------------------------------------------- plumbing


class Ws:
    """A minimal WebSocket client for the suite (the shared ``ws_connect`` fixture is per test)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.rid = 0
        self.events: list[dict[str, Any]] = []

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        self.rid += 1
        rid = f"r{self.rid}"
        await self.ws.send_str(json.dumps({"op": op, "rid": rid, **fields}))
        while True:
            frame = await self.read()
            if frame.get("rid") == rid:
                return frame

    async def read(self, wait_s: float = 15.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=wait_s)
        if msg.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {msg.type!r} {msg.data!r}")
        frame: dict[str, Any] = json.loads(msg.data)
        if frame.get("op") == "EVENT":
            self.events.append(frame)
        return frame


@dataclass
class Env:
    """What an attack gets: the hub, an HTTP session, and the tokens."""

    hub: Hub
    session: aiohttp.ClientSession
    token: Callable[..., str]
    sockets: list[Ws] = field(default_factory=list)
    kept: dict[str, Ws] = field(default_factory=dict)
    """Connections an attack keeps from one run to the next (closed only at the end of the test)."""

    async def ws(self, token: str | None = None) -> Ws:
        raw = await self.session.ws_connect(self.hub.ws_url, max_msg_size=0)
        client = Ws(raw)
        self.sockets.append(client)
        if token is not None:
            reply = await client.request("AUTH", token=token)
            assert reply["op"] == "OK", reply
        return client

    async def get(self, path: str, token: str | None) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(self.hub.ops_url.rstrip("/") + path, headers=headers) as resp:
            return resp.status, await resp.text()

    async def post(self, path: str, body: bytes, token: str) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        async with self.session.post(self.hub.ops_url.rstrip("/") + path, data=body, headers=headers) as r:
            return r.status, await r.text()


@dataclass(frozen=True)
class Attack:
    """One hostile behaviour. ``run(env, token)`` does it a bounded number of times with ``token`` (minted
    from ``scopes`` or ``policy``) and asserts the hub contained every attempt."""

    name: str
    run: Callable[[Env, str], Awaitable[None]]
    scopes: tuple[str, ...] = ()
    policy: dict[str, Any] | None = None
    stores: tuple[str, ...] = ("sqlite", "postgres", "mongo")
    settings: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- attacks


async def _exp_overflow(env: Env, token: str) -> None:
    """Item 1: an AUTH whose exp overflows gets ERR jwt_invalid and a close, never a wedged socket."""
    import base64
    import hashlib
    import hmac

    secret = env.hub.settings.jwt_secret
    assert secret is not None

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    body = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(b'{"exp": 1' + b"0" * 400 + b"}")
    bad = (body + b"." + b64(hmac.new(secret.encode(), body, hashlib.sha256).digest())).decode()
    for _ in range(2):
        client = await env.ws()
        reply = await client.request("AUTH", token=bad)
        assert reply["op"] == "ERR" and reply["code"] == "jwt_invalid" and "exp" in reply["msg"], reply
        await client.ws.close()


_HEAVY_RULES = 266


def _heavy_policy() -> dict[str, Any]:
    rules = [
        {"effect": "allow", "action": "subscribe", "topics": [f"**.a{n}.**.b.**.c{n}.**"]}
        for n in range(_HEAVY_RULES - 1)
    ]
    return {"rules": [*rules, {"effect": "deny", "action": "*", "topics": ["**.z.**.z.**.z.**"]}]}


async def _huge_policy(env: Env, token: str) -> None:
    """Item 7: a 266-rule policy's SUBSCRIBE decisions are cheap (compiled once per AUTH, pre-filtered) and
    run off the loop; each one is still answered. The connection is kept: the cost under test is SUBSCRIBE,
    not re-AUTH."""
    client = env.kept.get("huge-policy")
    if client is None:
        client = env.kept["huge-policy"] = await env.ws(token)
    for n in range(6):
        pattern = ".".join(["**", f"a{n}", "*", "b", "**", f"c{n}", "*"] * 4)
        reply = await client.request("SUBSCRIBE", topic=pattern)
        assert reply["op"] in ("OK", "ERR"), reply
        if reply["op"] == "ERR":
            assert reply["code"] == "forbidden", reply


async def _dlq_read(env: Env, token: str) -> None:
    """Item 9: with allow subscribe ** + deny * secret.**, dead letters of secret.* never reach the token:
    not live, not through a group, not on /replay, not on /latest-by-key."""
    live = await env.ws(token)
    grouped = await env.ws(token)
    assert (await live.request("SUBSCRIBE", topic="dlq.**"))["op"] == "OK"
    assert (await grouped.request("SUBSCRIBE", topic="dlq.**", group="snoop"))["op"] == "OK"
    await env.hub.bus.publish_batch(
        [
            NewEvent(topic="dlq.payroll.secret.salaries", key="k", payload={"salary": 1}),
            NewEvent(topic="dlq.payroll.public.notice", key="k", payload={"marker": True}),
        ]
    )
    for client in (live, grouped):  # the marker comes after the secret one: once it is here, so is that
        while not any(e["event"]["topic"] == "dlq.payroll.public.notice" for e in client.events):
            await client.read()
        assert not any("secret" in e["event"]["topic"] for e in client.events), client.events
    status, text = await env.get("/replay?pattern=dlq.**", token)
    assert status == 200 and "secret" not in text and "public.notice" in text, text
    status, text = await env.get("/latest-by-key?topic=dlq.payroll.secret.salaries&key=k", token)
    assert status == 403 and "salary" not in text, text


async def _nested_json(env: Env, token: str) -> None:
    """Item 15: a deeply nested body on an ops POST is a 400 naming the body, not a 500."""
    for path in ("/outbox/retry", "/outbox/purge"):
        status, text = await env.post(path, b'{"ids": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", token)
        assert status == 400 and "body" in text, (status, text)


async def _nbsp_scope(env: Env, token: str) -> None:
    """Item 15: ``openid<NBSP>publish:**`` grants nothing."""
    client = await env.ws(token)
    reply = await client.request("PUBLISH", topic="victim.orders", payload={"forged": True})
    assert reply["op"] == "ERR" and reply["code"] == "forbidden", reply


async def _other_group(env: Env, token: str) -> None:
    """Item 11: a scope restricted to group ``audit`` cannot join the victim's group ``billing``."""
    client = await env.ws(token)
    for group in ("billing", None):
        reply = await client.request("SUBSCRIBE", topic="victim.**", group=group)
        assert reply["op"] == "ERR" and reply["code"] == "forbidden", reply


async def _id_squat(env: Env, token: str) -> None:
    """Item 10: ids are scoped by topic. An id the victim used reveals nothing (not ``duplicate``, its own
    seq), and an id squatted first does not block the victim's later publish of it on its own topic."""
    client = await env.ws(token)
    used = f"order-{uuid.uuid4()}"
    victim = await env.hub.bus.publish(NewEvent(topic="victim.orders", id=used, payload={"v": 1}))
    reply = await client.request("PUBLISH", topic="attacker.x", opts={"id": used}, payload={"probe": True})
    assert reply["op"] == "OK" and not reply["duplicate"] and reply["seq"] != victim.seq, reply
    squatted = f"pay-{uuid.uuid4()}"
    reply = await client.request(
        "PUBLISH", topic="attacker.x", opts={"id": squatted}, payload={"squat": True}
    )
    assert reply["op"] == "OK" and not reply["duplicate"], reply
    later = await env.hub.bus.publish(NewEvent(topic="victim.pay", id=squatted, payload={"amount": 7}))
    assert not later.duplicate, "a squatted id blocked the victim's publish"
    stored = await env.hub.store.get_event(squatted, "victim.pay")
    assert stored is not None and stored.payload == {"amount": 7}


async def _foreign_settle(env: Env, token: str) -> None:
    """Item 11: a member of the victim's group cannot ACK, NACK (plain or terminal) or EXTEND a delivery
    another member holds; the holder's own ACK (with seq) settles it."""
    pattern, group = "victim.iso.*", "settle"
    holder = env.kept.get("settle-holder")
    if holder is None:
        holder = env.kept["settle-holder"] = await env.ws(
            env.token(sub="victim", scopes=["subscribe:victim.**"])
        )
        assert (await holder.request("SUBSCRIBE", topic=pattern, group=group))["op"] == "OK"
    event_id = f"held-{uuid.uuid4()}"
    published = await env.hub.bus.publish(NewEvent(topic="victim.iso.x", id=event_id, payload={}))
    while not any(e["event"]["id"] == event_id for e in holder.events):
        await holder.read()
    attacker = await env.ws(token)  # joins once the holder holds it
    assert (await attacker.request("SUBSCRIBE", topic=pattern, group=group))["op"] == "OK"
    ids = {"topic": pattern, "group": group, "id": event_id}
    for op, extra in (("ACK", {"seq": published.seq}), ("ACK", {})):
        reply = await attacker.request(op, **ids, **extra)
        assert reply["op"] == "OK", reply  # acking what is not yours is not an error: it does nothing
    for op, extra in (
        ("NACK", {"seq": published.seq, "delay_ms": 0}),
        ("NACK", {"seq": published.seq, "terminal": True}),
        ("EXTEND", {"seq": published.seq}),
        ("EXTEND", {}),
    ):
        # NACK/EXTEND of what this connection does not hold is refused, as for any event it does not hold
        # (gateway/settle.py): the answer does not tell that another member holds it.
        reply = await attacker.request(op, **ids, **extra)
        assert reply["op"] == "ERR" and reply["code"] == "bad_request", reply
        assert "not held by this connection" in reply["msg"], reply
    cursor = await env.hub.store.cursor(pattern, group)
    assert cursor is not None and cursor.seq < published.seq, "another member settled the holder's delivery"
    assert not any(e["event"]["id"] == event_id for e in attacker.events), "a foreign NACK handed it over"
    assert (await holder.request("ACK", **ids, seq=published.seq))["op"] == "OK"
    cursor = await env.hub.store.cursor(pattern, group)
    assert cursor is not None and cursor.seq >= published.seq, "the holder's ACK did not settle it"


ATTACKS = [
    Attack(name="exp-overflow", run=_exp_overflow, scopes=("publish:attacker.**",), stores=("sqlite",)),
    Attack(
        name="huge-policy",
        run=_huge_policy,
        policy=_heavy_policy(),
        settings={"max_policy_rules": 300},
        stores=("sqlite",),
    ),
    Attack(name="dlq-read", run=_dlq_read, policy=SECRET_POLICY),
    Attack(name="nested-json", run=_nested_json, scopes=("ops:read", "ops:write"), stores=("sqlite",)),
    Attack(name="nbsp-scope", run=_nbsp_scope, scopes=("subscribe:attacker.**",), stores=("sqlite",)),
    Attack(name="other-group", run=_other_group, scopes=("subscribe:victim.**@audit",), stores=("sqlite",)),
    Attack(name="id-squat", run=_id_squat, scopes=("publish:attacker.**",)),
    Attack(name="foreign-settle", run=_foreign_settle, scopes=("subscribe:victim.iso.*",)),
]


# ------------------------------------------------------------------------------------------- the victim


async def _victim_round(env: Env, publisher: Ws, consumer: Ws, token: str, round_no: int) -> float:
    """Publish VICTIM_EVENTS events one by one, receive and ACK each in group billing, read them back on
    /replay; assert everything is correct and return the rate (events per second, end to end)."""
    topic = f"victim.r{round_no}"
    started = time.perf_counter()
    ids = []
    for n in range(VICTIM_EVENTS):
        reply = await publisher.request("PUBLISH", topic=topic, payload={"n": n})
        assert reply["op"] == "OK" and not reply.get("duplicate"), reply
        ids.append(reply["id"])
    got: list[str] = []
    while len(got) < VICTIM_EVENTS:
        frame = await consumer.read()
        if frame.get("op") != "EVENT" or frame["event"]["topic"] != topic:
            continue
        got.append(frame["event"]["id"])
        await consumer.ws.send_str(
            json.dumps({"op": "ACK", "topic": "victim.**", "group": "billing", "id": frame["event"]["id"]})
        )
    elapsed = time.perf_counter() - started
    assert sorted(got) == sorted(ids)
    status, text = await env.get(f"/replay?pattern={topic}", token)
    assert status == 200 and [json.loads(line)["id"] for line in text.splitlines()] == ids
    return VICTIM_EVENTS / elapsed


async def _close_others(env: Env, keep: list[Ws]) -> None:
    keep = [*keep, *env.kept.values()] if keep else []
    for client in [c for c in env.sockets if c not in keep]:
        with contextlib.suppress(Exception):
            await client.ws.close()
    env.sockets[:] = keep


async def _keep_attacking(
    attack: Attack, env: Env, token: str, victims: list[Ws], stop: asyncio.Event
) -> None:
    """Run the attack again and again (paced) until ``stop``; at least once."""
    while True:
        await attack.run(env, token)
        await _close_others(env, victims)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ATTACK_PAUSE_S)
        if stop.is_set():
            return


@pytest.fixture(params=["sqlite", "postgres", "mongo"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[tuple[str, str | None]]:
    kind = request.param
    if kind == "sqlite":
        yield kind, None
    elif kind == "postgres":
        from outboxhub.testing.postgres import throwaway_schema

        async with throwaway_schema("iso") as url:
            yield kind, url
    else:
        request.getfixturevalue("mongo_server")
        from outboxhub.testing.mongo import mongo_database

        async with mongo_database(prefix="iso") as url:
            yield kind, url


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_a_victim_is_unaffected_by_an_attack(
    attack: Attack,
    store_url: tuple[str, str | None],
    hub_factory: Any,
    token: Any,
    record_property: Callable[[str, object], None],
) -> None:
    kind, url = store_url
    if kind not in attack.stores:
        pytest.skip(f"{attack.name} does not involve the store; run on SQLite only")
    overrides = dict(attack.settings)
    if url is not None:
        overrides["store"] = url
    hub = await hub_factory(**overrides)
    victim_token = token(sub="victim", scopes=VICTIM_SCOPES)
    attacker_token = token(sub="attacker", scopes=list(attack.scopes), policy=attack.policy)
    async with aiohttp.ClientSession() as session:
        env = Env(hub=hub, session=session, token=token)
        publisher = await env.ws(victim_token)
        consumer = await env.ws(victim_token)
        assert (await consumer.request("SUBSCRIBE", topic="victim.**", group="billing"))["op"] == "OK"
        victims = list(env.sockets)
        await attack.run(env, attacker_token)  # once alone: the item's own test, whatever the timing
        await _close_others(env, victims)
        for warm in (0, 1) if MEASURE_RATES else (0,):
            await _victim_round(env, publisher, consumer, victim_token, warm)

        solo: list[float] = []
        attacked: list[float] = []
        rounds = iter(range(2, 2 + 2 * ROUNDS))
        for round_no in range(ROUNDS):
            for under_attack in (False, True) if round_no % 2 == 0 else (True, False):
                if not under_attack:
                    solo.append(await _victim_round(env, publisher, consumer, victim_token, next(rounds)))
                    continue
                stop = asyncio.Event()
                attacker = asyncio.create_task(_keep_attacking(attack, env, attacker_token, victims, stop))
                try:
                    attacked.append(await _victim_round(env, publisher, consumer, victim_token, next(rounds)))
                finally:
                    stop.set()
                    await attacker  # the attack's own assertions: every attempt was contained
        await _close_others(env, [])
    ratio = statistics.median(attacked) / statistics.median(solo)
    record_property("victim_rate_ratio", round(ratio, 3))
    message = (
        f"victim rate under {attack.name} on {kind}: {ratio:.0%} of solo (solo {solo}, attacked {attacked})"
    )
    print(message)
    if MEASURE_RATES:
        # Opt-in: on a shared, loaded 2-core machine the solo rounds alone vary 2-3x, so this is run where
        # the machine is quiet enough to measure (see docs/security.md, "The isolation suite").
        assert ratio >= MIN_RATE_RATIO, message
