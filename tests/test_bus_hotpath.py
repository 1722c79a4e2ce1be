"""The delivery hot path on a real SQLite store: a waiting member's claim runs in the publish's own commit,
an ACK costs one commit and no claim, and the group's next deadline is not re-read per event."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus_support import INLINE_CLAIMS, inline_and_threaded, store_and_bus
from outboxhub.bus.core import Bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, PublishResult, StartPosition
from outboxhub.store.sqlite.parking import ParkedClaim, ParkingLot
from outboxhub.store.sqlite.store import SQLiteStore
from outboxhub.topics import compile_pattern
from sqlite_support import QUIET, writer_settled
from waiting import until

WAIT_S = 30.0  # an upper bound for "soon", never a measured threshold

store, bus = store_and_bus(QUIET)

EARLIEST = GroupOptions(start=StartPosition(kind="earliest"))
inline, threaded = inline_and_threaded()


async def test_each_event_costs_one_commit_to_deliver_and_one_to_ack(bus: Bus, store: SQLiteStore) -> None:
    inbox: asyncio.Queue[tuple[Delivery, int]] = asyncio.Queue()

    def deliver(delivery: Delivery) -> bool:
        inbox.put_nowait((delivery, store.writer_stats.commits))  # commits when the delivery arrived
        return True

    await bus.subscribe("orders.*", "billing", deliver, options=EARLIEST)
    await until(lambda: store.parked_claims == 1, "the idle member parks its claim")
    start = store.writer_stats.commits
    for i in range(20):
        result = await bus.publish(NewEvent(topic="orders.created", payload={"i": i}))
        delivery, commits = await asyncio.wait_for(inbox.get(), WAIT_S)
        assert delivery.event.id == result.id and delivery.attempt == 1
        # the publish's commit carried the claim: no second transaction before the member had it
        assert commits == start + 2 * i + 1
        assert await bus.ack("orders.*", "billing", delivery.event.id)
        await until(lambda: store.parked_claims == 1, "the member parks again")
    # the ACKs woke nobody into an empty claim: publish + ACK per event, nothing else
    assert store.writer_stats.commits == start + 40


async def test_an_idle_member_reads_the_next_deadline_once_not_per_event(
    bus: Bus, store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    read = store.next_deadline

    async def counting(pattern: str, group: str) -> int | None:
        nonlocal reads
        reads += 1
        return await read(pattern, group)

    monkeypatch.setattr(store, "next_deadline", counting)
    got: asyncio.Queue[Delivery] = asyncio.Queue()
    await bus.subscribe("t.**", "g", lambda d: got.put_nowait(d) or True, options=EARLIEST)
    for i in range(20):
        await bus.publish(NewEvent(topic="t.x", payload=i))
        delivery = await asyncio.wait_for(got.get(), WAIT_S)
        assert await bus.ack("t.**", "g", delivery.event.id)
    assert reads == 1


async def test_a_parked_claim_for_another_pattern_stays_parked(bus: Bus, store: SQLiteStore) -> None:
    got: list[Delivery] = []
    await bus.subscribe("a.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    await bus.publish(NewEvent(topic="b.x", payload=1))
    published = await bus.publish(NewEvent(topic="a.x", payload=2))
    await until(lambda: len(got) == 1, "the matching event is delivered")
    assert [d.event.id for d in got] == [published.id]


async def test_publishes_commit_on_the_writer_thread_while_a_claim_is_parked(
    threaded: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = threaded
    got: list[Delivery] = []
    await bus.publish(NewEvent(topic="warm.up"))
    await writer_settled(store)
    inline = store.writer_stats.inline_commits
    await bus.publish(NewEvent(topic="warm.up"))
    assert store.writer_stats.inline_commits == inline + 1  # nothing parked: it committed on the loop thread
    inline += 1
    await bus.subscribe("a.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    for payload in range(3):
        await bus.publish(NewEvent(topic="a.x", payload=payload))
        await until(lambda: store.parked_claims == 1, "the member parks its claim again")
        await asyncio.sleep(0)
    assert len(got) == 3
    assert store.writer_stats.inline_commits == inline


async def test_a_publish_to_a_waiting_member_commits_on_the_loop_thread_with_its_claim(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = inline
    got: list[Delivery] = []
    stats = store.writer_stats
    await bus.subscribe("a.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    await writer_settled(store)
    for payload in range(3):
        await until(lambda: store.parked_claims == 1, "the member parks its claim")
        await asyncio.sleep(0)  # a new loop iteration: the inline turn is free
        inline, commits, claims = stats.inline_commits, stats.commits, bus.stats.claims
        published = await bus.publish(NewEvent(topic="a.x", payload=payload))
        # one commit, on the loop thread, carried both the event and the waiting member's claim: the member
        # had the event from that commit's callback, without a claim of its own (it may have parked its
        # next claim in that callback already: the parked count says nothing here)
        assert (stats.inline_commits, stats.commits) == (inline + 1, commits + 1)
        assert len(got) == payload + 1 and got[-1].event.id == published.id
        assert bus.stats.claims == claims


async def test_a_publish_with_many_claims_parked_commits_on_the_writer_thread(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = inline
    got: list[Delivery] = []
    groups = INLINE_CLAIMS + 1
    for n in range(groups):
        await bus.subscribe("a.*", f"g{n}", lambda d: got.append(d) or True, options=EARLIEST)
    await until(lambda: store.parked_claims == groups, "every member parks its claim")
    await asyncio.sleep(0)
    inline, commits = store.writer_stats.inline_commits, store.writer_stats.commits
    published = await bus.publish(NewEvent(topic="a.x"))
    assert store.writer_stats.inline_commits == inline  # the claims would all have run on the loop
    assert store.writer_stats.commits == commits + 1  # and still in the publish's own commit
    await until(lambda: len(got) == groups, "every group gets the event")
    assert {d.event.id for d in got} == {published.id}


async def test_a_claim_failing_in_an_inline_publish_commit_leaves_the_publish_confirmed(
    inline: tuple[Bus, SQLiteStore],
) -> None:
    bus, store = inline
    got: list[Delivery] = []
    await bus.subscribe("a.*", "g", lambda d: got.append(d) or True, options=EARLIEST)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    await writer_settled(store)
    inline = store.writer_stats.inline_commits
    blocker = sqlite3.connect(store.path, isolation_level=None)
    try:
        blocker.execute("CREATE TRIGGER boom BEFORE INSERT ON pending BEGIN SELECT RAISE(ABORT, 'boom'); END")
        published = await bus.publish(NewEvent(topic="a.x", payload="kept"))
        assert store.writer_stats.inline_commits == inline + 1
        assert store.parked_claims == 0  # the claim ran, and failed, in that commit
        # the claim's failure undid nothing of the publish
        assert await store.get_event(published.id, topic="a.x") is not None
        assert not got
        blocker.execute("DROP TRIGGER boom")
    finally:
        blocker.close()
    await until(lambda: len(got) == 1, "the member's retried claim delivers the event")
    assert got[0].event.id == published.id


async def test_a_member_closed_while_parked_leaves_nothing_parked(bus: Bus, store: SQLiteStore) -> None:
    sub = await bus.subscribe("a.*", "g", lambda d: True, options=EARLIEST)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    await sub.close()
    assert store.parked_claims == 0
    other: list[Delivery] = []
    await bus.subscribe("a.*", "g", lambda d: other.append(d) or True, options=EARLIEST)
    await bus.publish(NewEvent(topic="a.x", payload=1))
    await until(lambda: len(other) == 1, "the event goes to the member still subscribed")


async def test_a_publish_to_several_waiting_members_of_one_group_reaches_exactly_one(
    bus: Bus, store: SQLiteStore
) -> None:
    got: list[tuple[str, Delivery]] = []
    for name in ("m1", "m2", "m3"):
        await bus.subscribe(
            "a.*", "g", lambda d, name=name: got.append((name, d)) or True, options=EARLIEST, member=name
        )
    await until(lambda: store.parked_claims == 3, "every member parks its claim")
    results = await bus.publish_batch([NewEvent(topic="a.x", payload=i) for i in range(5)])
    await until(lambda: len(got) == 5, "every event is delivered")
    await asyncio.sleep(0.05)  # room for a duplicate to show up
    assert sorted(d.event.id for _, d in got) == sorted(r.id for r in results)


# -- the parking lot (pure, threads only) --------------------------------------------------------------------


def _claim(lot: ParkingLot, pattern: str) -> ParkedClaim:
    future: Any = None  # the lot never touches the future
    return ParkedClaim(lot, future, lambda tx: None, (), compile_pattern(pattern).match)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "withdraw", "take"]), st.integers(0, 5), st.sampled_from(["a", "b"])
        ),
        max_size=40,
    )
)
def test_parking_lot_hands_each_claim_to_exactly_one_side(ops: list[tuple[str, int, str]]) -> None:
    lot = ParkingLot()
    patterns = ["a", "b", "*", "a", "b", "*"]
    claims: list[ParkedClaim | None] = [None] * 6
    parked: set[int] = set()
    for op, index, topic in ops:
        if op == "add" and claims[index] is None:
            claims[index] = _claim(lot, patterns[index])
            lot.add(claims[index])  # type: ignore[arg-type]
            parked.add(index)
        elif op == "withdraw" and (claim := claims[index]) is not None:
            assert claim.withdraw() == (index in parked)
            parked.discard(index)
        elif op == "take":
            taken = lot.take([topic])
            expected = {i for i in parked if patterns[i] in (topic, "*")}
            assert {claims.index(c) for c in taken} == expected
            parked -= expected
        assert len(lot) == len(parked)


def test_withdraw_and_take_race_and_exactly_one_wins() -> None:
    lot = ParkingLot()
    claims = [_claim(lot, "*") for _ in range(20_000)]
    taken: list[ParkedClaim] = []
    done = threading.Event()

    def writer() -> None:
        while not done.is_set() or len(lot):
            taken.extend(lot.take(["x"]))

    thread = threading.Thread(target=writer)
    thread.start()
    withdrawn = []
    for claim in claims:
        lot.add(claim)
        if claim.withdraw():
            withdrawn.append(claim)
    done.set()
    thread.join()
    assert len(withdrawn) + len(taken) == len(claims)
    assert not {id(c) for c in withdrawn} & {id(c) for c in taken}


async def test_a_member_that_missed_a_commit_catches_up_with_an_inline_claim(
    threaded: tuple[Bus, SQLiteStore],
) -> None:
    """A member whose parked claim ran but missed a commit (the next publish committed before the member
    had parked again) catches up with a small claim, committed on the event loop thread, instead of a full
    batch on the writer thread."""
    bus, store = threaded
    got: list[Delivery] = []
    second: list[asyncio.Future[list[PublishResult]]] = []

    def deliver(delivery: Delivery) -> bool:
        got.append(delivery)
        if not second:
            # in the hand-out of the first event, before the member can park again (it parks again in
            # the commit's callback once the hand-out is over): a commit its parked claim did not see,
            # inline, as nothing is parked any more
            second.append(store.publish_soon([NewEvent(topic="c.x", payload=2)]))
        return True

    await bus.subscribe("c.*", "g", deliver, options=EARLIEST)
    await writer_settled(store)
    await until(lambda: store.parked_claims == 1, "the member parks its claim")
    stats = store.writer_stats
    inline, commits = stats.inline_commits, stats.commits
    first = store.publish_soon([NewEvent(topic="c.x", payload=1)])  # the thread, with the parked claim
    [one] = await first
    await until(lambda: len(got) == 2, "both events are delivered")
    [two] = await second[0]
    assert [d.event.id for d in got] == [one.id, two.id]
    # the first publish with the claim on the thread, the second inline, the catch-up claim inline too
    assert (stats.inline_commits, stats.commits) == (inline + 2, commits + 3)
    await until(lambda: store.parked_claims == 1, "the member parks again")
