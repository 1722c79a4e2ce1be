"""The gateway over real sockets: the seed's frames, publish/subscribe/ack, pipelining, redelivery, ACLs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from outboxhub.app import Hub

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port


async def _until(cond: Any, what: str, wait_s: float = 10.0) -> None:
    """Wait (bounded) until ``await cond()`` is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not await cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# ---------------------------------------------------------------- the seed's client, frame for frame


async def test_seed_frames_without_rid(hub: Hub, ws_connect: Any, token: Any) -> None:
    """Exactly what the seed's PromClient sends: no rid anywhere, opts undefined (absent)."""
    c = await ws_connect(hub.ws_url)
    await c.send(json.dumps({"op": "AUTH", "token": token()}))
    ok = await c.recv()
    assert ok["op"] == "OK" and "rid" not in ok
    assert ok["sub"] == "tester" and ok["scopes"] == ["publish:**", "subscribe:**"]

    await c.send(json.dumps({"op": "SUBSCRIBE", "topic": "process.*", "group": "ops"}))
    ok = await c.recv()
    assert ok == {"op": "OK", "topic": "process.*", "group": "ops"}

    await c.send(json.dumps({"op": "PUBLISH", "topic": "process.state", "payload": {"pid": 42}}))
    published = await c.recv()
    assert published["op"] == "OK" and "rid" not in published
    assert published["seq"] >= 1 and published["duplicate"] is False

    ev = await c.next_event()
    assert ev["op"] == "EVENT"
    assert ev["topic"] == "process.*" and ev["group"] == "ops"  # the seed keys handlers by topic::group
    assert ev["event"]["topic"] == "process.state"
    assert ev["event"]["payload"] == {"pid": 42}
    assert ev["event"]["id"] == published["id"] and ev["event"]["seq"] == published["seq"]
    assert ev["ctx"] == {"attempt": 1, "redelivered": False}

    # The seed ACKs fire-and-forget: no reply. The next reply on the wire is the next request's.
    await c.send(
        json.dumps({"op": "ACK", "topic": ev["topic"], "group": ev["group"], "id": ev["event"]["id"]})
    )
    reply = await c.request("UNSUBSCRIBE", topic="process.*", group="ops")
    assert reply == {"op": "OK", "rid": "r1"}

    async def acked() -> bool:
        cursor = await hub.store.cursor("process.*", "ops")
        return cursor is not None and cursor.seq >= published["seq"]

    await _until(acked, "the ACK to advance the group's ack floor")


async def test_seed_publish_with_opts_and_idempotent_id(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    opts = {
        "id": "order-1",
        "key": "k1",
        "headers": {"x": "y"},
        "tags": ["t"],
        "sid": "s",
        "ts": 1_700_000_000_000,
    }
    first = await c.request("PUBLISH", topic="orders.created", payload={"n": 1}, opts=opts)
    assert first["op"] == "OK" and first["id"] == "order-1" and first["duplicate"] is False
    again = await c.request("PUBLISH", topic="orders.created", payload={"n": 2}, opts=opts)
    assert again == {**first, "rid": again["rid"], "duplicate": True}
    stored = await hub.store.get_event("order-1")
    assert stored is not None
    assert (stored.key, stored.headers, stored.tags, stored.sid, stored.ts) == (
        "k1",
        {"x": "y"},
        ["t"],
        "s",
        1_700_000_000_000,
    )
    assert stored.payload == {"n": 1}


# ---------------------------------------------------------------- requests and replies


async def test_requests_before_auth_get_not_authenticated_and_the_connection_stays(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url)
    for op, fields in (
        ("PUBLISH", {"topic": "a.b", "payload": 1}),
        ("SUBSCRIBE", {"topic": "a.*", "group": "g"}),
        ("UNSUBSCRIBE", {"topic": "a.*", "group": "g"}),
        ("ACK", {"topic": "a.*", "group": "g", "id": "e1"}),
        ("NACK", {"topic": "a.*", "group": "g", "id": "e1"}),
    ):
        reply = await c.request(op, **fields)
        assert reply["op"] == "ERR" and reply["code"] == "not_authenticated", reply
    ok = await c.auth(token())
    assert ok["exp"] > 0
    assert (await c.request("PUBLISH", topic="a.b", payload=1))["op"] == "OK"


async def test_unsubscribe_ack_nack_need_a_subscription(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    for op, fields in (
        ("UNSUBSCRIBE", {"topic": "a.*", "group": "g"}),
        ("ACK", {"topic": "a.*", "group": "g", "id": "e1"}),
        ("NACK", {"topic": "a.*", "group": "g", "id": "e1"}),
    ):
        reply = await c.request(op, **fields)
        assert reply["code"] == "not_subscribed" and "'a.*'" in reply["msg"], reply
    # a rid-less ACK for an unknown subscription is invalid: it gets an ERR without rid
    await c.send({"op": "ACK", "topic": "x.*", "group": "g", "id": "e1"})
    err = await c.recv()
    assert err["op"] == "ERR" and err["code"] == "not_subscribed" and "rid" not in err


async def test_subscribe_is_idempotent_and_ack_nack_with_rid_are_answered(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    assert await c.request("SUBSCRIBE", topic="jobs.*", group="w") == {
        "op": "OK",
        "rid": "r2",
        "topic": "jobs.*",
        "group": "w",
    }
    again = await c.request("SUBSCRIBE", topic="jobs.*", group="w")
    assert again["op"] == "OK"
    assert hub.bus.members() == {("jobs.*", "w"): 1}

    pub = await c.request("PUBLISH", topic="jobs.a", payload="x")
    ev = await c.next_event()
    assert ev["event"]["id"] == pub["id"]
    nack = await c.request("NACK", topic="jobs.*", group="w", id=pub["id"], delay_ms=0, reason="retry me")
    assert nack["op"] == "OK"
    redelivered = await c.next_event()
    assert redelivered["event"]["id"] == pub["id"]
    assert redelivered["ctx"] == {"attempt": 2, "redelivered": True}
    assert (await c.request("ACK", topic="jobs.*", group="w", id=pub["id"]))["op"] == "OK"
    assert (await c.request("UNSUBSCRIBE", topic="jobs.*", group="w"))["op"] == "OK"
    assert hub.bus.members() == {}


async def test_ephemeral_subscription_gets_live_events_only(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    await c.request("PUBLISH", topic="t.before", payload=0)
    ok = await c.request("SUBSCRIBE", topic="t.*")
    assert ok["op"] == "OK" and ok["group"] is None
    pub = await c.request("PUBLISH", topic="t.after", payload=1)
    ev = await c.next_event()
    assert ev["group"] is None and ev["topic"] == "t.*" and ev["event"]["id"] == pub["id"]
    # acking an ephemeral delivery is a no-op (the seed echoes group null)
    assert (await c.request("ACK", topic="t.*", group=None, id=pub["id"]))["op"] == "OK"


async def test_subscribe_from_earliest_replays_history_after_its_ok(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    ids = [(await c.request("PUBLISH", topic="hist.a", payload=i))["id"] for i in range(3)]
    await c.send(
        {"op": "SUBSCRIBE", "topic": "hist.*", "group": "late", "opts": {"start": "earliest"}, "rid": "s"}
    )
    first = await c.recv_any()
    assert first == {"op": "OK", "rid": "s", "topic": "hist.*", "group": "late"}  # OK precedes its EVENTs
    got = [(await c.next_event())["event"]["id"] for _ in ids]
    assert got == ids


async def test_an_event_without_payload_carries_payload_null_everywhere(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    """PROTOCOL.md: ``payload`` is a required member of an event. A null (or absent) published payload is
    sent as ``"payload": null`` in EVENT frames, ``/replay`` lines and ``/latest-by-key``; a falsy one as
    itself."""
    jwt = token(scopes=["publish:**", "subscribe:**", "ops:read"])
    c = await ws_connect(hub.ws_url, token=jwt)
    assert (await c.request("SUBSCRIBE", topic="np.*", group="g"))["op"] == "OK"
    await c.send({"op": "PUBLISH", "topic": "np.x", "opts": {"key": "absent"}, "rid": 1})  # seed: undefined
    await c.send({"op": "PUBLISH", "topic": "np.x", "payload": None, "opts": {"key": "null"}, "rid": 2})
    await c.send({"op": "PUBLISH", "topic": "np.x", "payload": 0, "opts": {"key": "zero"}, "rid": 3})
    ids = [(await c.recv())["id"] for _ in range(3)]
    expected = {ids[0]: None, ids[1]: None, ids[2]: 0}

    for _ in ids:
        ev = await c.next_event()
        assert "payload" in ev["event"], ev
        assert ev["event"]["payload"] == expected[ev["event"]["id"]]

    headers = {"Authorization": f"Bearer {jwt}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.get(f"{hub.ops_url}replay", params={"pattern": "np.*"}) as resp:
            assert resp.status == 200
            lines = [json.loads(line) for line in (await resp.text()).splitlines()]
        assert [line["id"] for line in lines] == ids
        assert all("payload" in line and line["payload"] == expected[line["id"]] for line in lines), lines
        for key, event_id in zip(("absent", "null", "zero"), ids, strict=True):
            params = {"topic": "np.x", "key": key}
            async with http.get(f"{hub.ops_url}latest-by-key", params=params) as resp:
                assert resp.status == 200
                latest = await resp.json()
            assert latest["id"] == event_id and "payload" in latest
            assert latest["payload"] == expected[event_id]


async def test_any_json_number_is_a_rid_and_comes_back_unchanged(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url)
    await c.send({"op": "AUTH", "token": token(), "rid": 1.5})
    ok = await c.recv()
    assert ok["op"] == "OK" and ok["rid"] == 1.5, ok
    await c.send('{"op":"PUBLISH","topic":"rid.x","payload":1,"rid":-0.25}')
    await c.send('{"op":"PUBLISH","payload":1,"rid":2.5}')  # no topic: ERR keeps the rid
    await c.send('{"op":"SUBSCRIBE","topic":"rid.*","group":"g","rid":1e3}')
    published = await c.recv()
    assert published["op"] == "OK" and published["rid"] == -0.25
    err = await c.recv()
    assert (err["op"], err["code"], err["rid"]) == ("ERR", "bad_request", 2.5)
    assert (await c.recv())["rid"] == 1000.0


async def test_dev_mode_hub_generates_a_secret(hub_factory: Any, ws_connect: Any, token: Any) -> None:
    hub = await hub_factory(jwt_secret=None)
    assert hub.jwt_secret and len(hub.jwt_secret) >= 32 and hub.settings.jwt_secret == hub.jwt_secret
    c = await ws_connect(hub.ws_url, token=token(secret=hub.jwt_secret))
    assert (await c.request("PUBLISH", topic="dev.x", payload=1))["op"] == "OK"
    other = await ws_connect(hub.ws_url)
    await other.send({"op": "AUTH", "token": token()})  # signed with the test secret, not this run's
    assert (await other.recv())["code"] == "jwt_invalid"


async def test_pipelined_publishes_are_answered_in_order(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    n = 2000
    frames = [json.dumps({"op": "PUBLISH", "topic": f"p.t{i % 7}", "payload": i, "rid": i}) for i in range(n)]
    for frame in frames:  # no waiting between sends
        await c.send(frame)
    seqs = []
    for i in range(n):
        reply = await c.recv()
        assert reply["op"] == "OK" and reply["rid"] == i, reply
        seqs.append(reply["seq"])
    assert seqs == sorted(seqs) and len(set(seqs)) == n
    assert await hub.store.count("p.*") == n


async def test_fan_out_to_groups_and_competition_within_a_group(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    a1 = await ws_connect(hub.ws_url, token=token())
    a2 = await ws_connect(hub.ws_url, token=token())
    b = await ws_connect(hub.ws_url, token=token())
    for c, group in ((a1, "A"), (a2, "A"), (b, "B")):
        assert (await c.request("SUBSCRIBE", topic="fan.**", group=group))["op"] == "OK"
    pub = await ws_connect(hub.ws_url, token=token())
    n = 40
    for i in range(n):
        await pub.send({"op": "PUBLISH", "topic": "fan.x", "payload": i})
    for _ in range(n):
        assert (await pub.recv())["op"] == "OK"

    got_b = [(await b.next_event())["event"]["payload"] for _ in range(n)]
    assert sorted(got_b) == list(range(n))

    got_a: list[int] = []

    async def drain(c: Any) -> None:
        while True:
            try:
                ev = await c.next_event(wait_s=0.5)
            except TimeoutError:
                return
            got_a.append(ev["event"]["payload"])
            await c.send({"op": "ACK", "topic": ev["topic"], "group": ev["group"], "id": ev["event"]["id"]})

    await asyncio.gather(drain(a1), drain(a2))
    assert sorted(got_a) == list(range(n))  # each event to exactly one member of group A


async def test_disconnect_without_ack_redelivers_to_another_member(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    first = await ws_connect(hub.ws_url, token=token())
    assert (await first.request("SUBSCRIBE", topic="work.*", group="workers"))["op"] == "OK"
    pub = await first.request("PUBLISH", topic="work.item", payload={"job": 1})
    ev = await first.next_event()
    assert ev["event"]["id"] == pub["id"] and ev["ctx"]["attempt"] == 1

    second = await ws_connect(hub.ws_url, token=token())
    assert (await second.request("SUBSCRIBE", topic="work.*", group="workers"))["op"] == "OK"
    await first.close()  # never acked: its claim is released on disconnect

    again = await second.next_event()
    assert again["event"]["id"] == pub["id"]
    assert again["ctx"] == {"attempt": 2, "redelivered": True}


# ---------------------------------------------------------------- ACL


async def test_acl_publish_and_subscribe_allowed_and_denied(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token(scopes=["publish:orders.*", "subscribe:orders.**"]))
    assert (await c.request("PUBLISH", topic="orders.created", payload=1))["op"] == "OK"
    denied = await c.request("PUBLISH", topic="billing.paid", payload=1)
    assert denied["code"] == "forbidden" and "billing.paid" in denied["msg"], denied
    denied = await c.request("PUBLISH", topic="orders.eu.created", payload=1)
    assert denied["code"] == "forbidden"
    assert (await c.request("SUBSCRIBE", topic="orders.*", group="g"))["op"] == "OK"
    denied = await c.request("SUBSCRIBE", topic="**", group="g")
    assert denied["code"] == "forbidden" and "**" in denied["msg"]
    assert (await c.request("SUBSCRIBE", topic="billing.*"))["code"] == "forbidden"
    # a token without any of our scopes has no rights at all
    none = await ws_connect(hub.ws_url, token=token(scopes=["openid", "read:user"]))
    assert (await none.request("PUBLISH", topic="orders.created", payload=1))["code"] == "forbidden"


async def test_wildcard_subscribe_is_refused_when_a_deny_overlaps(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    policy = {
        "rules": [
            {"effect": "allow", "action": "*", "topics": ["orders.**"]},
            {"effect": "deny", "action": "subscribe", "topics": ["orders.secret.*"]},
        ]
    }
    c = await ws_connect(hub.ws_url, token=token(scopes=[], policy=policy))
    refused = await c.request("SUBSCRIBE", topic="orders.**", group="g")
    assert refused["code"] == "forbidden", refused
    refused = await c.request("SUBSCRIBE", topic="orders.*.x", group="g")  # overlaps orders.secret.*
    assert refused["code"] == "forbidden"
    assert (await c.request("SUBSCRIBE", topic="orders.public.*", group="g"))["op"] == "OK"
    assert (await c.request("PUBLISH", topic="orders.secret.k", payload=1))["op"] == "OK"


async def test_group_restricted_rule(hub: Hub, ws_connect: Any, token: Any) -> None:
    policy = {
        "rules": [{"effect": "allow", "action": "subscribe", "topics": ["metrics.**"], "groups": ["dash"]}]
    }
    c = await ws_connect(hub.ws_url, token=token(scopes=[], policy=policy))
    assert (await c.request("SUBSCRIBE", topic="metrics.cpu", group="dash"))["op"] == "OK"
    assert (await c.request("SUBSCRIBE", topic="metrics.cpu", group="other"))["code"] == "forbidden"


async def test_re_auth_replaces_the_policy(hub: Hub, ws_connect: Any, token: Any) -> None:
    c = await ws_connect(hub.ws_url, token=token(scopes=["publish:a.*"]))
    assert (await c.request("SUBSCRIBE", topic="a.*", group="g"))["code"] == "forbidden"
    ok = await c.auth(token(sub="other", scopes=["subscribe:a.*"]))
    assert ok["sub"] == "other" and ok["scopes"] == ["subscribe:a.*"]
    assert (await c.request("SUBSCRIBE", topic="a.*", group="g"))["op"] == "OK"
    assert (await c.request("PUBLISH", topic="a.b", payload=1))["code"] == "forbidden"
    # narrowing the rights again ends the subscription the new token does not cover
    await c.auth(token(scopes=["publish:a.*"]))
    assert hub.bus.members() == {}
    assert (await c.request("UNSUBSCRIBE", topic="a.*", group="g"))["code"] == "not_subscribed"
