"""``publish_events`` finds already published ids through the ``(id, topic_id)`` index whatever the
statistics say (schema version 4).

On a new database the planner plans the function's dedupe join on statistics taken while ``events`` was
small, and the function keeps that generic plan for the life of the connection. With the version 2 join
it walked ``events_topic_seq`` over every event of the topic for each published event: a pipelined
publish on a fresh schema fell to ~1,300 events/s at 2 % hub CPU, ~330 ms per 1,024-event batch.
``auto_explain`` (contrib, loaded per session by the superuser the tests connect as) shows the plans of
the statements inside the function."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from outboxhub.model import NewEvent
from outboxhub.store.postgres.store import PostgresStore
from pg_support import explaining_session, opened_store

pytestmark = pytest.mark.postgres

TOPIC = "plan.t"


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with opened_store("pubplan") as opened:
        yield opened


async def _explained_publish(store: PostgresStore, ids: list[str]) -> str:
    """Call ``publish_events`` on a new session with ``auto_explain`` on; every nested plan, as text."""
    async with explaining_session(store.schema) as (raw, plans):
        n = len(ids)
        await raw.execute(
            "SELECT * FROM publish_events(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],"
            " %s::text[], 'pubplan_test')",
            (ids, [TOPIC] * n, [1] * n, [None] * n, ["1"] * n, [None] * n),
        )
    return "\n".join(plans)


async def test_the_dedupe_look_up_uses_the_id_index_on_stale_statistics(store: PostgresStore) -> None:
    # No ANALYZE: the statistics of a new database before autovacuum has looked at it.
    for start in range(0, 3000, 500):
        await store.publish_batch([NewEvent(topic=TOPIC, payload=i) for i in range(start, start + 500)])
    ids = [f"fresh-{i}" for i in range(200)]
    plans = await _explained_publish(store, ids)
    dedupe = [p for p in plans.split("Query Text:") if "JOIN events e ON e.id = i.eid" in p]
    assert dedupe, f"auto_explain showed no plan of the dedupe statement:\n{plans}"
    assert "events_id_topic_key" in dedupe[0], dedupe[0]
    assert "events_topic_seq" not in dedupe[0], dedupe[0]


async def test_a_published_id_is_still_found_as_a_duplicate(store: PostgresStore) -> None:
    first = await store.publish_batch([NewEvent(topic=TOPIC, payload=1, id="dup-1")])
    other_topic = await store.publish_batch([NewEvent(topic="plan.u", payload=1, id="dup-1")])
    again = await store.publish_batch([NewEvent(topic=TOPIC, payload=2, id="dup-1")])
    assert [r.duplicate for r in first + other_topic + again] == [False, False, True]
    assert again[0].seq == first[0].seq != other_topic[0].seq
