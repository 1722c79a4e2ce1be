"""``outboxhub serve --outbox mysql://…``: a hub drains a MariaDB outbox into its log, and the ops API's
outbox view (what the dashboard shows) and operator retry work on it through the ``OutboxStore`` API."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from conftest import HubFactory, TokenFactory
from mysql_support import mysql_db
from outboxhub.outbox import Failure, Verdict, open_outbox

pytestmark = pytest.mark.mysql
WAIT_S = 30.0


async def test_hub_drains_a_mysql_outbox_and_ops_shows_and_retries_it(
    hub_factory: HubFactory, token: TokenFactory
) -> None:
    with mysql_db() as db:
        # One dead record first, made through the store as a drainer would.
        db.add_many([{"topic": "orders.poison", "payload": {"n": -1}, "id": "dead-1"}])
        store = await open_outbox(db.url)
        try:
            (record,) = await store.claim_batch(1, 1_000, "w")
            await store.mark_failed([Failure(record=record, error="boom", verdict=Verdict(dead=True))])
        finally:
            await store.close()
        ids = db.add_many(
            [{"topic": "orders.paid", "payload": {"n": i}, "key": f"k{i % 3}"} for i in range(20)]
        )
        hub = await hub_factory(outbox=[db.url])
        deadline = time.monotonic() + WAIT_S
        while db.count("status = 'sent'") < len(ids):
            assert time.monotonic() < deadline, "the hub did not drain the MySQL outbox"
            await asyncio.sleep(0.05)
        log = await hub.store.scan("orders.**", after_seq=0, limit=100)
        assert [e.id for e in log] == ids

        headers = {"Authorization": f"Bearer {token(scopes=['ops:read', 'ops:write'])}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.get(f"{hub.ops_url}outbox") as resp:
                assert resp.status == 200, await resp.text()
                (state,) = (await resp.json())["outboxes"]
            assert (state["up"], state["table"], state["dead"], state["pending"]) == (True, "outbox", 1, 0)
            assert [d["id"] for d in state["deadRecords"]] == ["dead-1"]
            async with http.post(
                f"{hub.ops_url}outbox/retry", json={"outbox": state["name"], "ids": ["dead-1"]}
            ) as resp:
                assert resp.status == 200, await resp.text()
        deadline = time.monotonic() + WAIT_S
        while db.count("status = 'sent'") < len(ids) + 1:  # the retried record is published too
            assert time.monotonic() < deadline, "the retried record was not published"
            await asyncio.sleep(0.05)
