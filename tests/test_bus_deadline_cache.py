"""GroupState's cached next deadline never learns a store answer older than a local change (a NACK's
forget, a local claim): such an answer may predate the NACK, and trusting it left the redelivery waiting
for the safety poll (test_bus.py::test_nack_redelivers_with_the_next_attempt failed about once in 40 runs)."""

from __future__ import annotations

from pathlib import Path

from outboxhub.bus.member import GroupState
from outboxhub.model import GroupOptions
from outboxhub.store import open_store


async def test_a_read_that_started_before_a_forget_is_not_learned(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        state = GroupState(store, "n.*", "g", GroupOptions())
        epoch = state.deadline_epoch  # a member starts its next_deadline read here ...
        state.forget_deadline()  # ... a NACK lands meanwhile ...
        state.learn_deadline(None, valid_until=10_000, epoch=epoch)  # ... and the stale answer arrives
        assert state.known_deadline(now=1) == (False, None)  # not trusted: the member reads again

        state.learn_deadline(500, valid_until=10_000, epoch=state.deadline_epoch)
        assert state.known_deadline(now=1) == (True, 500)
        epoch = state.deadline_epoch
        state.claimed(300)  # a local claim during a read also invalidates that read
        state.learn_deadline(None, valid_until=10_000, epoch=epoch)
        assert state.known_deadline(now=1) == (True, 300)
    finally:
        await store.close()
