"""Contract: everything lives in the database — a reopened store carries on where the old one stopped."""

from __future__ import annotations

import pytest

from outboxhub.errors import StoreUnavailable

from . import EARLIEST, T0, StoreFactory, claim, ev, ids_of


async def test_log_groups_pending_and_cursors_survive_a_restart(store_factory: StoreFactory) -> None:
    first = await store_factory()
    results = await first.publish_batch([ev("rs.t", i, key=f"k{i % 2}") for i in range(6)])
    await first.ensure_group("rs.*", "g", EARLIEST)
    await first.ensure_group("rs.*", "idle", EARLIEST)
    d = await claim(first, "rs.*", "g", "m1", limit=4, ack_timeout_ms=1_000)
    await first.ack("rs.*", "g", ids_of(d[:2]))
    await first.nack("rs.*", "g", d[2].event.id, max_deliver=5, delay_ms=5_000, now=T0)
    cursor = await first.cursor("rs.*", "g")
    groups = await first.groups()
    lag = await first.lag("rs.*", "g")
    await first.close()
    await first.close()  # idempotent

    second = await store_factory()
    assert await second.last_seq() == results[-1].seq
    assert [e.payload for e in await second.scan("rs.*")] == list(range(6))
    assert await second.groups() == groups
    assert await second.cursor("rs.*", "g") == cursor
    assert await second.lag("rs.*", "g") == lag
    assert await second.next_deadline("rs.*", "g") == T0 + 1_000
    # Still claimed by m1 until its deadline; the nacked one waits for its backoff.
    new = await claim(second, "rs.*", "g", "m2", limit=10, now=T0 + 999)
    assert ids_of(new) == [results[4].id, results[5].id]
    redelivered = await claim(second, "rs.*", "g", "m2", limit=10, now=T0 + 5_000)
    assert [(x.event.id, x.attempt) for x in redelivered] == [(d[2].event.id, 2), (d[3].event.id, 2)]
    again = await second.publish(ev("rs.t", id=results[0].id))
    assert again.duplicate and again.seq == results[0].seq
    assert (await second.publish(ev("rs.t"))).seq > results[-1].seq


async def test_a_closed_store_refuses_work(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await store.publish(ev("c.t"))
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.publish(ev("c.t"))
    with pytest.raises(StoreUnavailable):
        await store.scan("**")
    with pytest.raises(StoreUnavailable):
        await store.ping()
