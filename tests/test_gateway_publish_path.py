"""How the gateway hands PUBLISH frames to the store: the frames of one read burst as one batch, and (on
SQLite) a lone publish committed and answered by the reader that read it, with no callback in between."""

from __future__ import annotations

import json
from typing import Any

from outboxhub.app import Hub
from outboxhub.store.sqlite.store import SQLiteStore

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port


async def test_a_burst_of_publishes_reaches_the_store_in_few_batches_and_is_answered_in_order(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    store = hub.store
    assert isinstance(store, SQLiteStore)
    c = await ws_connect(hub.ws_url, token=token())
    assert (await c.request("PUBLISH", topic="burst.warm", payload=0))["op"] == "OK"
    jobs = store.writer_stats.jobs
    n = 64
    for i in range(n):  # nothing awaits between the sends: the hub reads them in one or a few reads
        await c.send(json.dumps({"op": "PUBLISH", "topic": f"burst.t{i % 3}", "payload": i, "rid": i}))
    replies = [await c.recv() for _ in range(n)]
    assert [(r["op"], r["rid"]) for r in replies] == [("OK", i) for i in range(n)]
    assert [r["seq"] for r in replies] == sorted(r["seq"] for r in replies)
    # One store job per batch handed over, about one per socket read (2-3 here: picows starts with a 2 KiB
    # read buffer); a flush per frame would make it 64.
    assert store.writer_stats.jobs - jobs <= 16, store.writer_stats.jobs - jobs


async def test_a_lone_publish_is_answered_without_waiting_on_its_future(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    """On SQLite a lone publish that commits inline has its future done when the store hands it back: the
    connection answers at once and never keeps that future among its in-flight work. (A lone publish may
    still go to the writer thread now and then, e.g. when the writer has WAL upkeep due: then it is kept.)"""
    store = hub.store
    assert isinstance(store, SQLiteStore)
    c = await ws_connect(hub.ws_url, token=token())
    (conn,) = hub.gateway.connections
    kept: list[Any] = []

    class Watched(dict[Any, None]):  # the connection's in-flight work, watched
        def __setitem__(self, key: Any, value: None) -> None:
            kept.append(key)
            super().__setitem__(key, value)

    conn._tasks = Watched(conn._tasks)
    inline_publishes = 0
    for i in range(10):
        inline, before = store.writer_stats.inline_commits, len(kept)
        reply = await c.request("PUBLISH", topic="lone.t", payload=i)
        assert reply["op"] == "OK" and reply["seq"] == i + 1
        if store.writer_stats.inline_commits == inline + 1:
            inline_publishes += 1
            assert len(kept) == before, f"publish {i} committed inline but was kept as in-flight work"
    assert inline_publishes > 0
