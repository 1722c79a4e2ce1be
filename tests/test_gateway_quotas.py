"""Publish quotas over real sockets (gateway/publishquota.py): per principal, per topic, a token's own
quotas clamped to the hub's, ``retry_after_ms``, /metrics; and the bounded bucket map."""

from __future__ import annotations

import math
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.auth.acl import parse_policy
from outboxhub.config import load_settings
from outboxhub.errors import ConfigError, PolicyError
from outboxhub.gateway.publishquota import ConnectionLimits, PublishQuotas
from outboxhub.gateway.ratelimit import TokenBucket
from outboxhub.gateway.stats import GatewayStats
from outboxhub.quotas import Quota, QuotaError, format_rate, parse_quota, parse_rate

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ALL = {"rules": [{"effect": "allow", "action": "*", "topics": ["**"]}]}


async def _burst(c: Any, topic: str, n: int) -> list[dict[str, Any]]:
    for i in range(n):
        await c.send({"op": "PUBLISH", "topic": topic, "payload": i, "rid": f"{topic}-{i}"})
    return [await c.recv() for _ in range(n)]


async def test_per_principal_quota_refuses_a_burst_and_spares_others(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(quotas=["orders.**=0.001/s:3"])
    alice = await ws_connect(hub.ws_url, token=token(sub="alice"))
    replies = await _burst(alice, "orders.eu", 5)
    assert [r["op"] for r in replies] == ["OK", "OK", "OK", "ERR", "ERR"]
    refused = replies[3]
    assert refused["code"] == "rate_limited" and refused["rid"] == "orders.eu-3"
    assert "orders.**=0.001/s:3" in refused["msg"] and "'alice'" in refused["msg"]
    assert refused["retry_after_ms"] > 0
    # The same principal on another connection shares the bucket (it is per principal, not connection)...
    alice2 = await ws_connect(hub.ws_url, token=token(sub="alice"))
    assert (await alice2.request("PUBLISH", topic="orders.us", payload=1))["code"] == "rate_limited"
    # ... other topics and other principals are not affected.
    assert (await alice.request("PUBLISH", topic="billing.eu", payload=1))["op"] == "OK"
    bob = await ws_connect(hub.ws_url, token=token(sub="bob"))
    assert [r["op"] for r in await _burst(bob, "orders.eu", 3)] == ["OK"] * 3
    assert await hub.store.count("orders.**") == 6
    async with aiohttp.ClientSession() as s, s.get(hub.ops_url.rstrip("/") + "/metrics") as r:
        text = await r.text()
    assert 'outboxhub_quota_refusals_total{kind="principal",pattern="orders.**"} 3.0' in text


async def test_per_topic_quota_is_shared_by_all_publishers(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(topic_quotas=["hot.*=0.001/s:2"])
    a = await ws_connect(hub.ws_url, token=token(sub="a"))
    b = await ws_connect(hub.ws_url, token=token(sub="b"))
    assert (await a.request("PUBLISH", topic="hot.one", payload=1))["op"] == "OK"
    assert (await b.request("PUBLISH", topic="hot.one", payload=2))["op"] == "OK"
    err = await a.request("PUBLISH", topic="hot.one", payload=3)
    assert err["code"] == "rate_limited" and "topic 'hot.one'" in err["msg"]
    assert (await b.request("PUBLISH", topic="hot.one", payload=4))["code"] == "rate_limited"
    # Each matching topic has its own bucket.
    assert (await b.request("PUBLISH", topic="hot.two", payload=5))["op"] == "OK"


async def test_a_token_s_own_quota_applies_and_is_clamped_to_the_hub_s(
    hub_factory: Any, ws_connect: Any, token: Any
) -> None:
    hub = await hub_factory(quotas=["orders.**=0.001/s:3"])
    tight = await ws_connect(
        hub.ws_url, token=token(sub="t1", policy={**ALL, "quotas": {"orders.**": "0.001/s:1"}})
    )
    assert [r["op"] for r in await _burst(tight, "orders.x", 2)] == ["OK", "ERR"]
    # A token asking for more than the hub allows gets the hub's limit.
    greedy = await ws_connect(
        hub.ws_url, token=token(sub="t2", policy={**ALL, "quotas": {"orders.**": "1000/s:1000"}})
    )
    assert [r["op"] for r in await _burst(greedy, "orders.x", 4)] == ["OK", "OK", "OK", "ERR"]


def test_bad_quotas_are_config_errors_naming_them() -> None:
    for bad, problem in [
        ("orders.**=0/s", "rate must be > 0"),
        ("orders.**=-1/s", "is not RATE/s[:BURST]"),
        ("orders.**=10", "is not RATE/s[:BURST]"),
        ("orders.**", "expected PATTERN=RATE/s[:BURST]"),
        ("or ders=1/s", "invalid characters"),
        ("a=1/s:0", "burst must be between 1"),
    ]:
        with pytest.raises(ConfigError) as info:
            load_settings(quotas=[bad])
        assert "--quota" in str(info.value) and bad in str(info.value) and problem in str(info.value)


def test_env_quotas_are_semicolon_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOXHUB_QUOTAS", "orders.**=100/s:200; billing.*=0.5/s")
    assert load_settings().quotas == ["orders.**=100/s:200", "billing.*=0.5/s"]
    monkeypatch.setenv("OUTBOXHUB_TOPIC_QUOTAS", "a.*=1/s;b=x")
    with pytest.raises(ConfigError, match=r"topic_quotas \(OUTBOXHUB_TOPIC_QUOTAS=.*quota 'b=x'"):
        load_settings()


def test_a_bad_token_quota_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match=r"quotas\['a.\*'\]: rate must be > 0"):
        parse_policy({**ALL, "quotas": {"a.*": "0/s"}})
    with pytest.raises(PolicyError, match="quotas: must be an object"):
        parse_policy({**ALL, "quotas": ["a.*=1/s"]})
    assert parse_policy({**ALL, "quotas": {"a.*": "2/s"}}).quotas == (Quota("a.*", 2.0, 2),)


@given(rate=st.floats(0.001, 1e6), burst=st.none() | st.integers(1, 10**6))
def test_rate_syntax_round_trips(rate: float, burst: int | None) -> None:
    text = f"{format_rate(rate)}/s" + ("" if burst is None else f":{burst}")
    got_rate, got_burst = parse_rate(text, what="q")
    assert got_rate == rate
    assert got_burst == (burst if burst is not None else max(1, math.ceil(rate)))
    quota = parse_quota(f"a.*={text}")
    assert parse_quota(str(quota)) == quota


@given(st.text(max_size=12))
def test_rate_syntax_never_crashes(text: str) -> None:
    try:
        rate, burst = parse_rate(text, what="q")
    except QuotaError as exc:
        assert "q:" in str(exc)
    else:
        assert rate > 0 and burst >= 1


def test_buckets_stay_bounded_for_a_million_topics() -> None:
    """A principal publishing to ever new topics cannot grow the map past quota_max_buckets."""
    quotas = PublishQuotas(
        [parse_quota("**=1/s:1")], [parse_quota("**=1/s:1")], max_buckets=100, stats=GatewayStats()
    )
    for i in range(20_000):
        quotas.check(f"p{i % 7}", f"t.n{i}", (), now=i / 1000)
        assert len(quotas) <= 100


def test_refused_publishes_take_nothing_and_refill() -> None:
    stats = GatewayStats()
    quotas = PublishQuotas(
        [parse_quota("a.*=1/s:2")], [parse_quota("a.*=10/s:10")], max_buckets=10, stats=stats
    )
    assert quotas.check("p", "a.x", (), now=0.0) is None
    assert quotas.check("p", "a.x", (), now=0.0) is None
    refusal = quotas.check("p", "a.x", (), now=0.0)
    assert refusal is not None and refusal.retry_after_ms == 1000
    assert quotas.check("p", "a.x", (), now=0.5) is not None
    assert quotas.check("p", "a.x", (), now=1.0) is None  # refilled one token
    assert stats.quota_refusals[("principal", "a.*")] == 2


def test_take_or_wait_takes_only_when_the_bucket_holds_the_tokens() -> None:
    bucket = TokenBucket(10.0, 2, now=0.0)
    assert bucket.take_or_wait(0.0) == 0.0
    assert bucket.take_or_wait(0.0) == 0.0
    assert bucket.take_or_wait(0.0) == pytest.approx(0.1)  # empty: nothing taken, 0.1 s to the next token
    assert bucket.take_or_wait(0.05) == pytest.approx(0.05)
    assert bucket.take_or_wait(0.1) == 0.0  # the refilled token
    assert bucket.tokens == pytest.approx(0.0)
    unlimited = TokenBucket(0.0, 1, now=0.0)
    assert all(unlimited.take_or_wait(0.0) == 0.0 for _ in range(10))


def test_a_connection_without_rate_or_quota_is_not_limited_and_one_with_either_is() -> None:
    none = PublishQuotas([], [], max_buckets=10, stats=GatewayStats())
    free = ConnectionLimits(TokenBucket(0.0, 1, now=0.0), none)
    free.authenticated("p", ())
    assert not free.limited  # the gateway skips the check: it would pass and take nothing
    assert all(free.check("a.x", now=0.0) is None for _ in range(100))
    free.authenticated("p", (parse_quota("a.*=1/s:1"),))  # a token's own quota limits it again
    assert free.limited
    assert free.check("a.x", now=0.0) is None
    assert free.check("a.x", now=0.0) is not None

    rated = ConnectionLimits(TokenBucket(2.0, 2, now=0.0), none)
    rated.authenticated("p", ())
    assert rated.limited
    assert rated.check("a.x", now=0.0) is None
    assert rated.check("a.x", now=0.0) is None
    refusal = rated.check("a.x", now=0.0)
    assert refusal is not None and refusal.retry_after_ms == 500
    assert refusal.msg == "publish rate limit of this connection exceeded (2/s, burst 2)"
    assert rated.check("a.x", now=0.5) is None

    hub = PublishQuotas([parse_quota("a.*=1/s:1")], [], max_buckets=10, stats=GatewayStats())
    quota_only = ConnectionLimits(TokenBucket(0.0, 1, now=0.0), hub)
    assert quota_only.limited
    assert quota_only.check("a.x", now=0.0) is None
    assert quota_only.check("a.x", now=0.0) is not None
