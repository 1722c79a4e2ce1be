"""``publish_events`` of schema version 9 probes the topics index for a small batch's topics and runs its
topics ``INSERT … WHERE NOT EXISTS … ON CONFLICT DO NOTHING`` only when a topic is missing (or the batch is
larger than the probe covers). ``auto_explain`` (contrib, loaded per session by the superuser the tests
connect as) logs every statement the function runs, so the tests see which ones ran."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import throwaway_schema
from pg_support import explaining_session, open_at_version, opened_store, schema_rows

pytestmark = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
LIMITS = {"ack_timeout_ms": 60_000, "max_deliver": 5}
_PUBLISH = (
    "SELECT * FROM publish_events(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[],"
    " 'probe_test')"
)


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with opened_store("probe") as opened:
        yield opened


async def _topics_inserts(store: PostgresStore, batches: list[list[str]]) -> list[int]:
    """Publish one batch per list of topics through ``publish_events`` on a session of its own, in that
    order; for each batch, how many topics INSERT statements it ran."""
    counts = []
    async with explaining_session(store.schema) as (raw, plans):
        for n, topics in enumerate(batches):
            plans.clear()
            ids = [f"b{n}-{i}" for i in range(len(topics))]
            k = len(topics)
            await raw.execute(_PUBLISH, (ids, topics, [1] * k, [None] * k, ["1"] * k, [None] * k))
            counts.append(sum("INSERT INTO topics" in plan for plan in plans))
    return counts


async def test_a_small_batch_of_known_topics_runs_no_topics_insert(store: PostgresStore) -> None:
    await store.publish_batch([NewEvent(topic=t, payload=0) for t in ("a", "b", "c")])
    counts = await _topics_inserts(
        store,
        [
            ["a"],  # the e2e case: one event of a known topic
            ["a", "a", "b", "b"],  # two runs of known topics
            ["a", "new.1"],  # a missing topic: the insert creates it in the same call
            ["a", "b", "c"],  # three runs: more than the probes cover, the set-based insert
            ["a"] * (pg_schema.PROBE_EVENTS + 1),  # a batch larger than the probes cover
        ],
    )
    assert counts == [0, 0, 1, 1, 1]
    assert await schema_rows(store, "SELECT topic, count FROM topics ORDER BY topic_id") == [
        ("a", 1 + 1 + 2 + 1 + 1 + pg_schema.PROBE_EVENTS + 1),
        ("b", 1 + 2 + 1),
        ("c", 2),
        ("new.1", 1),
    ]


async def test_known_and_new_topics_in_one_batch_burn_no_topic_id(store: PostgresStore) -> None:
    await store.publish_batch([NewEvent(topic="k", payload=0)])
    for batch in (["k"], ["k", "k"], ["k", "n1", "k"], ["n1", "k"], ["k"] * 40, ["k", "n2", "n3", "k", "n2"]):
        results = await store.publish_batch([NewEvent(topic=t, payload=i) for i, t in enumerate(batch)])
        assert [r.duplicate for r in results] == [False] * len(batch)
        assert [r.seq for r in results] == list(range(results[0].seq, results[0].seq + len(batch)))
    # Identity values are consecutive: no known topic took one.
    assert await schema_rows(store, "SELECT topic, topic_id FROM topics ORDER BY topic_id") == [
        ("k", 1),
        ("n1", 2),
        ("n2", 3),
        ("n3", 4),
    ]
    counts = await schema_rows(
        store,
        "SELECT t.topic, t.count, count(e.seq), max(e.seq) = t.last_seq FROM topics t"
        " JOIN events e USING (topic_id) GROUP BY 1, 2, t.last_seq ORDER BY 1",
    )
    assert counts == [
        ("k", 1 + 1 + 2 + 2 + 1 + 40 + 2, 49, True),
        ("n1", 2, 2, True),
        ("n2", 2, 2, True),
        ("n3", 1, 1, True),
    ]


async def test_a_re_sent_id_of_a_known_topic_is_a_duplicate(store: PostgresStore) -> None:
    [first] = await store.publish_batch([NewEvent(topic="d", payload=1, id="same")])
    again = await store.publish_batch(
        [NewEvent(topic="d", payload=2, id="same"), NewEvent(topic="d", payload=3)]
    )
    assert [(r.seq, r.duplicate) for r in again] == [(first.seq, True), (first.seq + 1, False)]


async def test_concurrent_publishers_of_new_topics_all_succeed() -> None:
    async with throwaway_schema("probeconc") as url:
        one, two = await open_store(url), await open_store(url)
        assert isinstance(one, PostgresStore)
        try:
            for round_ in range(10):
                topics = [f"r{round_}.shared", f"r{round_}.other"]
                batches = await asyncio.gather(
                    *(
                        s.publish_batch([NewEvent(topic=t, payload=i) for t in topics])
                        for i, s in enumerate((one, two, one, two))
                    )
                )
                assert all(not r.duplicate for batch in batches for r in batch)
            seqs = await schema_rows(one, "SELECT count(*), max(seq), count(DISTINCT topic_id) FROM events")
            assert seqs == [(80, 80, 20)]
            assert await schema_rows(one, "SELECT sum(count), max(topic_id) FROM topics") == [(80, 20)]
        finally:
            await one.close()
            await two.close()


async def test_a_version_8_schema_is_upgraded_and_a_running_version_8_hub_keeps_working() -> None:
    async with throwaway_schema("upgrade9") as url:
        old = await open_at_version(url, 8)
        try:
            await old.ensure_group("a.*", "g", EARLIEST)
            [first] = await old.publish_batch([NewEvent(topic="a.b", payload=1)])
            probe = (
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE"
                " n.nspname = current_schema() AND p.proname = 'publish_events'"
                " AND strpos(p.prosrc, 'PERFORM FROM topics') > 0"
            )
            assert await schema_rows(old, "SELECT version FROM schema_version") == [(8,)]
            assert await schema_rows(old, probe) == [(0,)]
            new = await open_store(url)  # migrates to 9 while the version 8 hub runs
            assert isinstance(new, PostgresStore)
            try:
                assert await schema_rows(new, "SELECT version FROM schema_version") == [
                    (pg_schema.SCHEMA_VERSION,)
                ]
                assert await schema_rows(new, probe) == [(1,)]
                # The old hub's pooled connections run the new function: a known topic, a new one, and its
                # parked claim in the group commit (publish_claim_acks) takes them.
                claim = old.park_claim("a.*", "g", "m", limit=5, **LIMITS)
                published = await old.publish_batch(
                    [NewEvent(topic="a.b", payload=2), NewEvent(topic="a.c", payload=3)]
                )
                deliveries, _ = claim.future.result()
                assert [d.event.seq for d in deliveries] == [first.seq, *(r.seq for r in published)]
                [last] = await new.publish_batch([NewEvent(topic="a.c", payload=4)])
                assert last.seq == published[-1].seq + 1
                assert await schema_rows(new, "SELECT topic, topic_id, count FROM topics ORDER BY 2") == [
                    ("a.b", 1, 2),
                    ("a.c", 2, 2),
                ]
            finally:
                await new.close()
        finally:
            await old.close()
