"""The client SDK against a real hub (SQLite file, real sockets): publish, subscribe, typed topics, acks."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pydantic
import pytest

from outboxhub.app import Hub
from outboxhub.client import (
    BadRequest,
    Event,
    Forbidden,
    HubClient,
    Message,
    NotSubscribed,
    PublishResult,
    SubscribeContext,
    TooLarge,
    Topic,
    connect,
    connect_sync,
)
from outboxhub.errors import TopicError

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ALL = ("publish:**", "subscribe:**")


@pytest.fixture
async def client(hub: Hub, token: Callable[..., str]) -> AsyncIterator[HubClient]:
    async with HubClient(hub.ws_url, token(scopes=ALL)) as c:
        yield c


async def _next(sub: Any, wait_s: float = 10.0) -> Message[Any]:
    async with asyncio.timeout(wait_s):
        msg: Message[Any] = await anext(sub)
        return msg


# -- publish -------------------------------------------------------------------------------------------


async def test_publish_returns_the_confirmation_and_the_event_is_stored(hub: Hub, client: HubClient) -> None:
    assert client.connected and client.subject == "tester" and client.exp is not None
    result = await client.publish(
        "orders.created",
        {"n": 1},
        key="o-1",
        headers={"source": "test"},
        tags=["t1"],
    )
    assert isinstance(result, PublishResult) and result.seq >= 1 and not result.duplicate
    stored = await hub.store.get_event(result.id)
    assert stored is not None
    assert (stored.topic, stored.payload, stored.key, stored.headers, stored.tags) == (
        "orders.created",
        {"n": 1},
        "o-1",
        {"source": "test"},
        ["t1"],
    )


async def test_publishing_an_id_again_is_deduplicated(hub: Hub, client: HubClient) -> None:
    first = await client.publish("orders.created", 1, id="order-7")
    again = await client.publish("orders.created", 2, id="order-7", caused_by=[first.id])
    assert (again.id, again.seq, again.duplicate) == ("order-7", first.seq, True)
    assert await hub.store.count("orders.created") == 1


async def test_two_thousand_pipelined_publishes_are_all_confirmed_in_order(
    hub: Hub, client: HubClient
) -> None:
    n = 2000
    confirmed: list[PublishResult] = []

    async def one(i: int) -> PublishResult:
        result = await client.publish("load.pipelined", {"i": i})
        confirmed.append(result)  # in the order the confirmations arrive
        return result

    results = await asyncio.gather(*(one(i) for i in range(n)))
    assert len({r.id for r in results}) == n
    seqs = [r.seq for r in confirmed]
    assert seqs == sorted(seqs) and len(set(seqs)) == n
    assert await hub.store.count("load.pipelined") == n
    stored = await hub.store.scan("load.pipelined", limit=n)
    assert sorted(e.payload["i"] for e in stored) == list(range(n))


async def test_hub_refusals_raise_typed_errors_and_the_connection_stays_usable(
    hub: Hub, token: Callable[..., str]
) -> None:
    async with HubClient(hub.ws_url, token(scopes=["publish:orders.**", "subscribe:orders.**"])) as c:
        with pytest.raises(Forbidden) as caught:
            await c.publish("billing.invoice", {})
        assert caught.value.code == "forbidden" and "billing.invoice" in caught.value.msg
        with pytest.raises(Forbidden):
            await c.subscribe("billing.*", "g", lambda event, ctx: None)
        with pytest.raises(BadRequest, match="headers"):
            await c.publish("orders.x", {}, headers={"n": 1})  # type: ignore[dict-item]
        with pytest.raises(TopicError):  # checked before anything is sent
            await c.publish("orders.*", {})
        with pytest.raises(TypeError, match="JSON"):
            await c.publish("orders.x", object())
        with pytest.raises(TooLarge, match="the limit is 1048576 bytes"):  # refused before sending
            await c.publish("orders.x", "x" * 2_000_000)
        assert (await c.publish("orders.x", {"still": "fine"})).seq >= 1


async def test_async_connect_and_sync_facade(hub: Hub, token: Callable[..., str]) -> None:
    c = await connect(hub.ws_url, token(scopes=ALL))
    try:
        assert (await c.publish("a.b", 1)).seq >= 1
    finally:
        await c.close()

    def blocking() -> list[PublishResult]:
        with connect_sync(hub.ws_url, token(scopes=ALL)) as sync_hub:
            return [sync_hub.publish("sync.topic", {"i": i}, key="k") for i in range(3)]

    results = await asyncio.to_thread(blocking)
    assert [r.seq for r in results] == sorted(r.seq for r in results)
    assert await hub.store.count("sync.topic") == 3


# -- subscribe with a handler ------------------------------------------------------------------------------


async def test_handler_return_acks_and_raise_nacks_with_redelivery(hub: Hub, client: HubClient) -> None:
    seen: list[tuple[str, int, bool]] = []
    done = asyncio.Event()

    async def handler(event: Event, ctx: SubscribeContext) -> None:
        seen.append((event.payload["name"], ctx.attempt, ctx.redelivered))
        if event.payload["name"] == "flaky" and ctx.attempt == 1:
            raise RuntimeError("first try fails")
        if len(seen) == 3:
            done.set()

    sub = await client.subscribe("jobs.*", "workers", handler, start="earliest", nack_delay_ms=50)
    await client.publish("jobs.a", {"name": "steady"})
    await client.publish("jobs.b", {"name": "flaky"})
    async with asyncio.timeout(10):
        await done.wait()
    assert seen == [("steady", 1, False), ("flaky", 1, False), ("flaky", 2, True)]
    await sub.unsubscribe()
    assert not sub.active
    # every event was acked: the group's ack floor is at the tail
    lag = await hub.store.lag("jobs.*", "workers")
    assert lag is not None and lag.lag_count == 0


async def test_handler_exception_text_is_the_dead_letter_reason(client: HubClient) -> None:
    def handler(event: Event, ctx: SubscribeContext) -> None:  # a sync handler
        raise ValueError(f"cannot handle {event.payload}")

    await client.subscribe("pay.*", "billing", handler, start="earliest", max_deliver=1)
    published = await client.publish("pay.card", 42)
    dead = client.messages("dlq.billing.pay.card", "inspect", start="earliest")
    msg = await _next(dead)
    assert msg.event.headers is not None
    assert msg.event.headers["x-reason"] == "ValueError: cannot handle 42"
    assert msg.event.headers["x-original-id"] == published.id
    await msg.ack()
    await dead.unsubscribe()


async def test_ephemeral_subscription_gets_live_events(client: HubClient) -> None:
    got: asyncio.Queue[tuple[Any, str | None]] = asyncio.Queue()
    await client.subscribe("live.**", None, lambda event, ctx: got.put_nowait((event.payload, ctx.group)))
    await client.publish("live.x.y", "hello")
    async with asyncio.timeout(10):
        assert await got.get() == ("hello", None)


async def test_subscribing_twice_to_the_same_pair_is_refused(client: HubClient) -> None:
    await client.subscribe("dup.*", "g", lambda event, ctx: None)
    with pytest.raises(ValueError, match="already subscribed"):
        await client.subscribe("dup.*", "g", lambda event, ctx: None)


# -- the message iterator ------------------------------------------------------------------------------


async def test_messages_iterator_with_ack_nack_and_double_ack(client: HubClient) -> None:
    for i in range(3):
        await client.publish("iter.t", {"i": i})
    async with client.messages("iter.*", "it", start="earliest", max_in_flight=10) as stream:
        first = await _next(stream)
        assert (first.payload, first.attempt, first.event.topic, first.context.pattern) == (
            {"i": 0},
            1,
            "iter.t",
            "iter.*",
        )
        await first.double_ack()  # confirmed by the hub
        with pytest.raises(RuntimeError, match="already acked"):
            await first.ack()
        second = await _next(stream)
        await second.nack(delay_ms=0)
        rest = [await _next(stream), await _next(stream)]
        assert sorted((m.payload["i"], m.attempt) for m in rest) == [(1, 2), (2, 1)]
        for m in rest:
            await m.ack()
    assert not stream.active


async def test_double_ack_reports_a_refusal(hub: Hub, client: HubClient) -> None:
    stream = client.messages("solo.*", "s", start="earliest")
    await client.publish("solo.one", 1)
    msg = await _next(stream)
    await stream.unsubscribe()
    with pytest.raises(NotSubscribed):
        await msg.double_ack()


async def test_iteration_is_plain_async_for(client: HubClient) -> None:
    for i in range(5):
        await client.publish("plain.t", i)
    got: list[int] = []
    async with asyncio.timeout(10):
        async for msg in client.messages("plain.t", "p", start="earliest"):
            got.append(msg.payload)
            await msg.ack()
            if len(got) == 5:
                break
    assert got == [0, 1, 2, 3, 4]


# -- typed topics ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class DcState:
    name: str
    cpu: float


class StructState(msgspec.Struct):
    name: str
    cpu: float


class PydState(pydantic.BaseModel):
    name: str
    cpu: float


@pytest.mark.parametrize(
    ("kind", "make"),
    [("dc", DcState), ("struct", StructState), ("pyd", PydState)],
)
async def test_typed_round_trip(hub: Hub, client: HubClient, kind: str, make: Callable[..., object]) -> None:
    topic: Topic[Any] = Topic(f"typed.{kind}", type(make(name="x", cpu=0.0)))
    received: asyncio.Queue[object] = asyncio.Queue()

    async def handler(state: object, ctx: SubscribeContext) -> None:
        received.put_nowait(state)

    await client.subscribe(topic, "typed", handler, start="earliest")
    sent = make(name="db", cpu=0.5)
    result = await client.publish(topic, sent)
    stored = await hub.store.get_event(result.id)
    assert stored is not None and stored.payload == {"name": "db", "cpu": 0.5}
    async with asyncio.timeout(10):
        got = await received.get()
    assert type(got) is type(sent) and got == sent

    stream = client.messages(topic, "typed-iter", start="earliest")
    msg = await _next(stream)
    assert msg.payload == sent and msg.event.payload == {"name": "db", "cpu": 0.5}
    await msg.ack()
    await stream.unsubscribe()


async def test_typed_publish_refuses_the_wrong_type_at_run_time(client: HubClient) -> None:
    topic = Topic("typed.strict", StructState)
    with pytest.raises(TypeError, match="takes StructState payloads"):
        await client.publish(topic, {"name": "x", "cpu": 1.0})  # type: ignore[arg-type]


async def test_undecodable_payload_is_dead_lettered_at_once(client: HubClient) -> None:
    topic = Topic("typed.bad", StructState)
    handled: list[StructState] = []

    def handler(state: StructState, ctx: SubscribeContext) -> None:
        handled.append(state)

    await client.subscribe(topic, "strict", handler, start="earliest", max_deliver=5)
    bad = await client.publish("typed.bad", {"name": "x", "cpu": "hot"})  # untyped: goes through
    good = await client.publish(topic, StructState(name="ok", cpu=1.0))

    dead = client.messages("dlq.strict.typed.bad", "inspect", start="earliest")
    msg = await _next(dead)
    headers = msg.event.headers or {}
    # Terminal: dead-lettered on the first attempt, not retried max_deliver times.
    assert headers["x-original-id"] == bad.id and headers["x-attempts"] == "1"
    assert "does not decode as StructState" in headers["x-reason"] and "cpu" in headers["x-reason"]
    assert msg.event.payload == {"name": "x", "cpu": "hot"}
    await dead.unsubscribe()
    assert handled == [StructState(name="ok", cpu=1.0)]
    assert good.seq > bad.seq
