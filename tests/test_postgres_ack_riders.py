"""Small ACKs that ride on the next publish statement (PostgreSQL, ``store/postgres/ackride.py``, schema
version 8): while publishes come often an ACK waits for the next publish and runs in its transaction
(``publish_claim_acks``: one commit for both), or is sent alone when none comes in time; it is answered only
after the commit that carries it, and its failure stays its own. Real PostgreSQL; the transaction of each
delete is recorded by a real trigger, and the failure comes from a real trigger. ``RIDE_S`` is set per test
so that nothing depends on how fast the machine is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from outboxhub.errors import StoreError
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import EventRef
from outboxhub.store.postgres import ackride
from outboxhub.store.postgres import schema as pg_schema
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import throwaway_schema
from pg_support import admin_session, open_at_version, opened_store, schema_rows

pytestmark = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
LIMITS = {"ack_timeout_ms": 60_000, "max_deliver": 5}
WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold

# Each deleted pending row with the transaction that deleted it; the delete of event "poison" fails.
_TRIGGERS = """
CREATE TABLE acked_in (seq bigint, xid bigint);
CREATE FUNCTION record_ack() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.event_id = 'poison' THEN
        RAISE EXCEPTION 'this ack fails';
    END IF;
    INSERT INTO acked_in VALUES (OLD.seq, txid_current() % 4294967296);
    RETURN OLD;
END $$;
CREATE TRIGGER record_ack BEFORE DELETE ON pending FOR EACH ROW EXECUTE FUNCTION record_ack();
"""


@pytest.fixture
async def store() -> AsyncIterator[PostgresStore]:
    async with opened_store("riders") as s:
        async with await admin_session(s) as admin:
            await admin.execute(_TRIGGERS)
        yield s


async def held(store: PostgresStore, *ids: str) -> list[EventRef]:
    """Events ``ids`` claimed by member m1 of group g, then two publishes handed over together (publishes
    come often: the next ACK may ride). The held deliveries."""
    await store.ensure_group("acks.*", "g", EARLIEST)
    await store.publish_batch([NewEvent(topic="acks.t", id=i, payload=0) for i in ids])
    deliveries = await store.claim("acks.*", "g", "m1", limit=len(ids), **LIMITS)
    await asyncio.gather(
        store.publish_soon([NewEvent(topic="later", payload=1)]),
        store.publish_soon([NewEvent(topic="later", payload=2)]),
    )
    return [EventRef(d.event.id, d.event.seq) for d in deliveries]


async def test_an_ack_rides_on_the_next_publish_commits_with_it_and_is_answered_after(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ackride, "RIDE_S", 600.0)
    [ref] = await held(store, "e1")
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    await asyncio.sleep(0.05)  # time for a statement of its own, had it been sent
    assert not done.done()  # waiting for a publish to ride on, and not committed:
    assert await schema_rows(store, "SELECT seq FROM pending") == [(ref.seq,)]
    [published] = await store.publish_batch([NewEvent(topic="later", payload=3)])
    assert done.done() and done.result() == 1
    assert await schema_rows(store, "SELECT seq FROM pending") == []
    # One transaction: the ACK's delete and the event the publish appended.
    [(xid,)] = await schema_rows(store, "SELECT xmin::text::bigint FROM events WHERE seq = %s", published.seq)
    assert await schema_rows(store, "SELECT seq, xid FROM acked_in") == [(ref.seq, xid)]
    assert published.seq == 4  # seqs in order: e1, the two publishes, this one
    assert [s for (s,) in await schema_rows(store, "SELECT seq FROM events ORDER BY seq")] == [1, 2, 3, 4]


async def test_with_no_publish_in_time_the_ack_is_sent_alone(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ackride, "RIDE_S", 600.0)
    [ref] = await held(store, "e1")
    monkeypatch.setattr(ackride, "RIDE_S", 0.001)  # the timer below is armed with this bound
    monkeypatch.setattr(store._riders, "_last", store._riders._time())  # the last publish: just now
    monkeypatch.setattr(store._riders, "_gap", 0.0)
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    assert len(store._riders) == 1
    assert await asyncio.wait_for(done, WAIT_S) == 1
    [(xid, seq)] = await schema_rows(store, "SELECT xid, seq FROM acked_in")
    assert seq == ref.seq
    assert await schema_rows(store, "SELECT seq FROM events WHERE xmin::text::bigint = %s", xid) == []


async def test_a_failing_ack_fails_alone_and_the_publish_and_the_other_ack_commit(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ackride, "RIDE_S", 600.0)
    good, bad = await held(store, "fine", "poison")
    ok = store.ack_soon("acks.*", "g", [good], member="m1")
    failing = store.ack_soon("acks.*", "g", [bad], member="m1")
    assert len(store._riders) == 2
    [published] = await store.publish_batch([NewEvent(topic="later", payload=3)])
    assert published.seq == 5 and not published.duplicate
    assert ok.result() == 1
    with pytest.raises(StoreError, match="this ack fails"):
        await asyncio.wait_for(failing, WAIT_S)  # sent alone after its subtransaction failed, and failed
    [(xid,)] = await schema_rows(store, "SELECT xmin::text::bigint FROM events WHERE seq = 5")
    assert await schema_rows(store, "SELECT seq, xid FROM acked_in") == [(good.seq, xid)]
    assert await schema_rows(store, "SELECT event_id FROM pending") == [("poison",)]


async def test_acks_of_a_failing_publish_are_sent_alone(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ackride, "RIDE_S", 600.0)
    [ref] = await held(store, "e1")
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    async with await admin_session(store) as admin:  # every publish fails from now on (a real trigger)
        await admin.execute(
            "CREATE FUNCTION no_events() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no more events'; END $$;"
            " CREATE TRIGGER no_events BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION no_events()"
        )
    with pytest.raises(StoreError, match="no more events"):
        await store.publish(NewEvent(topic="later", payload=3))
    assert await asyncio.wait_for(done, WAIT_S) == 1
    assert await schema_rows(store, "SELECT seq FROM pending") == []


async def test_large_or_seqless_acks_and_rare_publishes_do_not_wait(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ackride, "RIDE_S", 600.0)
    ids = [f"e{i}" for i in range(ackride.RIDE_REFS + 1)]
    refs = await held(store, *ids)
    assert await asyncio.wait_for(store.ack_soon("acks.*", "g", refs, member="m1"), WAIT_S) == len(refs)
    assert len(store._riders) == 0
    riders = store._riders
    monkeypatch.setattr(riders, "_gap", 601.0)  # the last two publishes came far apart
    assert not riders.may_ride([EventRef("x", 1)])
    monkeypatch.setattr(riders, "_gap", 0.0)
    assert riders.may_ride([EventRef("x", 1)]) and not riders.may_ride([EventRef("x")])


async def test_closing_the_store_sends_a_waiting_ack(
    store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ackride, "RIDE_S", 600.0)
    [ref] = await held(store, "e1")
    done = store.ack_soon("acks.*", "g", [ref], member="m1")
    assert len(store._riders) == 1
    await store.close()
    assert done.result() == 1
    assert await schema_rows(store, "SELECT count(*) FROM pending") == [(0,)]


_FUNCTIONS = (
    "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
    " WHERE n.nspname = current_schema() AND p.proname IN ('publish_claim', 'publish_claim_acks') ORDER BY 1"
)


async def test_a_version_7_schema_is_upgraded_and_a_running_version_7_hub_keeps_working() -> None:
    async with throwaway_schema("upgrade8") as url:
        old = await open_at_version(url, 7)
        try:
            await old.ensure_group("a.*", "g", EARLIEST)
            assert await schema_rows(old, "SELECT version FROM schema_version") == [(7,)]
            assert await schema_rows(old, _FUNCTIONS) == [("publish_claim",)]
            new = await open_store(url)  # migrates to 8 while the version 7 hub runs
            assert isinstance(new, PostgresStore)
            try:
                assert await schema_rows(new, "SELECT version FROM schema_version") == [
                    (pg_schema.SCHEMA_VERSION,)
                ]
                assert await schema_rows(new, _FUNCTIONS) == [("publish_claim",), ("publish_claim_acks",)]
                # The old hub's group commit with a parked claim (publish_claim) and its ACK still work.
                claim = old.park_claim("a.*", "g", "m", limit=5, **LIMITS)
                [first] = await old.publish_batch([NewEvent(topic="a.b", payload=1)])
                deliveries, _ = claim.future.result()
                assert [d.event.seq for d in deliveries] == [first.seq]
                assert await old.ack("a.*", "g", [EventRef(d.event.id, d.event.seq) for d in deliveries]) == 1
                # The new hub's riding ACK goes through publish_claim_acks on the upgraded schema.
                with pytest.MonkeyPatch.context() as ride:
                    ride.setattr(ackride, "RIDE_S", 600.0)
                    await new.publish_batch([NewEvent(topic="a.b", payload=2)])
                    [d] = await new.claim("a.*", "g", "m", limit=5, **LIMITS)
                    await asyncio.gather(
                        new.publish_soon([NewEvent(topic="x", payload=3)]),
                        new.publish_soon([NewEvent(topic="x", payload=4)]),
                    )
                    done = new.ack_soon("a.*", "g", [EventRef(d.event.id, d.event.seq)], member="m")
                    assert not done.done()
                    [last] = await new.publish_batch([NewEvent(topic="x", payload=5)])
                    assert done.result() == 1 and last.seq == 5
                assert await schema_rows(new, "SELECT count(*) FROM pending") == [(0,)]
            finally:
                await new.close()
        finally:
            await old.close()
