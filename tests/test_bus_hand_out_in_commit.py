"""A group member whose parked claim ran in a commit gets its deliveries in that commit's listener call:
before the publish's caller sees its result (inline) or its done callbacks run (writer thread), not after
the claim future's callback and the member task's wake-up. Each delivery is handed out once. Real SQLite
file, real bus."""

from __future__ import annotations

from bus_support import inline_and_threaded
from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from outboxhub.store.sqlite.store import SQLiteStore
from sqlite_support import writer_settled
from waiting import until

EARLIEST = GroupOptions(start=StartPosition(kind="earliest"))

inline, threaded = inline_and_threaded()


async def test_an_inline_publish_hands_the_parked_claim_out_before_it_returns(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = inline
    got: list[Delivery] = []
    await bus.subscribe("h.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    ids: list[str] = []
    for n in range(3):
        await writer_settled(store)
        await until(lambda: store.parked_claims == 1, "the member parks its claim")
        commits = store.writer_stats.inline_commits
        done = bus.publish_batch_soon([NewEvent(topic="h.x", payload=n)])
        assert done.done() and store.writer_stats.inline_commits == commits + 1  # inline, with the claim
        [result] = done.result()
        ids.append(result.id)
        # no await since the publish: the member had its delivery in the commit's own callback
        assert [d.event.id for d in got] == ids
    await until(lambda: store.parked_claims == 1, "the member parks again")
    assert [d.event.id for d in got] == ids  # each handed out once


async def test_a_publish_on_the_writer_thread_hands_out_before_its_done_callbacks(
    threaded: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = threaded
    got: list[Delivery] = []
    seen_in_callback: list[list[str]] = []
    await bus.subscribe("h.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    await writer_settled(store)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    done = bus.publish_batch_soon([NewEvent(topic="h.x", payload=1)])
    done.add_done_callback(lambda _: seen_in_callback.append([d.event.id for d in got]))
    [result] = await done
    await until(lambda: bool(seen_in_callback), "the done callback runs")
    assert seen_in_callback == [[result.id]]
    await until(lambda: store.parked_claims == 1, "the member parks again")
    assert [d.event.id for d in got] == [result.id]
