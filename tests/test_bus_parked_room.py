"""A member's parked claim asks only for the room it has left: a claim just before it that ran short filled
some of ``max_in_flight``, and the parked claim (run later, inside a publish's write batch) must not take
past it. Real SQLite file, real bus; the member is driven into that state by what is committed, not timed.
"""

from __future__ import annotations

from pathlib import Path

from bus_support import sqlite_bus
from outboxhub.model import Delivery, GroupOptions, NewEvent, StartPosition
from sqlite_support import QUIET, writer_settled
from waiting import until


async def test_a_parked_claim_after_a_short_claim_takes_only_the_room_left(tmp_path: Path) -> None:
    async with sqlite_bus(tmp_path / "hub.db", QUIET) as (bus, store):
        await bus.publish(NewEvent(topic="r.x", payload=0))
        got: list[Delivery] = []
        options = GroupOptions(start=StartPosition(kind="earliest"), max_in_flight=2)
        # The member's first claim asks for 2 and gets the one event (a short claim); it then parks its next
        # claim with the writer, with room for 1.
        await bus.subscribe("r.*", "g", lambda d: got.append(d) or True, options=options)
        await writer_settled(store)
        await until(lambda: store.parked_claims == 1, "the member, holding one, parks its next claim")
        assert len(got) == 1
        # Two events in one write batch: the parked claim runs in it and may take one of them.
        await bus.publish_batch([NewEvent(topic="r.x", payload=n) for n in (1, 2)])
        await until(lambda: len(got) >= 2, "the parked claim's delivery is handed out")
        [info] = await store.groups()
        assert info.in_flight == len(got) == options.max_in_flight
        await writer_settled(store)
        assert store.parked_claims == 0  # full: it waits for room and parks nothing
        assert len(got) == options.max_in_flight
