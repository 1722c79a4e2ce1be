"""The SDK against a real hub: ``raise Terminate`` and ``msg.terminate`` dead-letter at once,
``msg.in_progress()`` keeps a delivery past its ack timeout, and publishes refused by a quota are re-sent
in order after ``retry_after_ms``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.client import BadRequest, Event, HubClient, SubscribeContext, Terminate

ALL = ("publish:**", "subscribe:**")


@pytest.fixture
async def client(hub: Hub, token: Callable[..., str]) -> AsyncIterator[HubClient]:
    async with HubClient(hub.ws_url, token(scopes=ALL)) as c:
        yield c


async def _dead(client: HubClient, topic: str) -> Any:
    stream = client.messages(topic, "inspect", start="earliest")
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    await msg.ack()
    await stream.unsubscribe()
    return msg


async def test_raise_terminate_dead_letters_on_the_first_attempt(client: HubClient) -> None:
    attempts: list[int] = []

    def handler(event: Event, ctx: SubscribeContext) -> None:
        attempts.append(ctx.attempt)
        raise Terminate("order 7 refers to a deleted account")

    await client.subscribe("acct.*", "g", handler, start="earliest", max_deliver=5)
    published = await client.publish("acct.close", {"order": 7})
    dead = await _dead(client, "dlq.g.acct.close")
    headers = dead.event.headers or {}
    assert headers["x-reason"] == "order 7 refers to a deleted account"
    assert headers["x-attempts"] == "1" and headers["x-original-id"] == published.id
    await asyncio.sleep(0.3)
    assert attempts == [1]


async def test_msg_terminate(client: HubClient) -> None:
    stream = client.messages("t2.*", "g", start="earliest")
    await client.publish("t2.x", 1)
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    await msg.terminate("no")
    dead = await _dead(client, "dlq.g.t2.x")
    assert (dead.event.headers or {})["x-reason"] == "no"
    await stream.unsubscribe()


async def test_in_progress_keeps_the_delivery(hub: Hub, client: HubClient, token: Callable[..., str]) -> None:
    stream = client.messages("slow.*", "g", start="earliest", ack_timeout_ms=1_500, max_in_flight=1)
    await client.publish("slow.x", 1)
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    async with HubClient(hub.ws_url, token(scopes=ALL)) as other_client:
        other = other_client.messages("slow.*", "g", ack_timeout_ms=1_500)
        await other.__aenter__()
        for _ in range(8):  # four ack timeouts of "work"
            await msg.in_progress()
            await asyncio.sleep(0.5)
        await msg.ack()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await other.__anext__()
        await other.unsubscribe()
    assert msg.attempt == 1
    with pytest.raises(RuntimeError, match="already acked"):
        await msg.in_progress()
    await stream.unsubscribe()


async def test_in_progress_of_a_delivery_no_longer_held_is_refused(client: HubClient) -> None:
    stream = client.messages("late.*", "g", start="earliest")
    await client.publish("late.x", 1)
    async with asyncio.timeout(10):
        msg = await stream.__anext__()
    await client._settle(msg.context, ack=True, reason=None, delay_ms=None, confirm=True)  # settled
    with pytest.raises(BadRequest, match="not held by this connection"):
        await msg.in_progress()
    await stream.unsubscribe()


async def test_publishes_over_quota_are_resent_in_order(hub_factory: Any, token: Callable[..., str]) -> None:
    hub = await hub_factory(quotas=["q.**=20/s:2"])
    async with HubClient(hub.ws_url, token(scopes=ALL)) as c:
        results = await asyncio.gather(*(c.publish("q.t", i) for i in range(10)))
    assert [r.seq for r in results] == sorted(r.seq for r in results)
    stored = await hub.store.scan("q.**")
    assert [e.payload for e in stored] == list(range(10))
    assert hub.gateway.stats.quota_refusals[("principal", "q.**")] >= 1
