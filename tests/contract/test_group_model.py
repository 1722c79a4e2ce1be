"""Contract, property-based: random runs of publish / claim / ack / nack / release / time passing keep the
group guarantees, checked against a small model after every step and after a final drain.

Guarantees checked: a delivered event is not acked or dead-lettered and not in flight elsewhere; attempts
count up by one and stop at ``max_deliver``; claims are in seq order and within the limit; with
``ordered_by_key`` every earlier event of the key is settled; the ack floor sits exactly below the oldest
unsettled event (no matching event in between is skipped); ``lag_count`` counts the matching events above
the floor; at the end every event is settled exactly once (acked, or dead-lettered once with at least
``max_deliver`` attempts).

Every example uses its own topic prefix, so examples can share the test's database.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outboxhub.model import NewEvent
from outboxhub.store import Store

from . import EARLIEST, T0, ev

TIMEOUT = 1_000
MEMBERS = ("m1", "m2", "m3")
_examples = itertools.count()

_op = st.one_of(
    st.tuples(st.just("publish"), st.lists(st.sampled_from([None, "a", "b", "c"]), min_size=1, max_size=4)),
    st.tuples(st.just("claim"), st.sampled_from(MEMBERS), st.integers(1, 5)),
    st.tuples(st.just("ack"), st.integers(0, 2**16)),
    st.tuples(st.just("nack"), st.integers(0, 2**16), st.sampled_from([0, 300, None])),
    st.tuples(st.just("release"), st.sampled_from(MEMBERS)),
    st.tuples(st.just("tick"), st.integers(0, 2 * TIMEOUT)),
)


@dataclass
class Model:
    prefix: str
    ordered: bool
    max_deliver: int
    now: int = T0
    ids: list[str] = field(default_factory=list)  # in seq order
    seq: dict[str, int] = field(default_factory=dict)
    key: dict[str, str | None] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    holder: dict[str, tuple[str, int]] = field(default_factory=dict)  # claimed: (member, deadline)
    acked: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)

    @property
    def pattern(self) -> str:
        return f"{self.prefix}.*"

    def settled(self, event_id: str) -> bool:
        return event_id in self.acked or event_id in self.dead

    def pending(self) -> list[str]:
        """Delivered at least once and not settled, in seq order."""
        return [i for i in self.ids if i in self.attempts and not self.settled(i)]


async def _refresh_dead(store: Store, model: Model) -> None:
    dlq = await store.scan(f"dlq.g.{model.prefix}.t", limit=10_000)
    originals = [e.headers["x-original-id"] for e in dlq if e.headers]
    assert len(originals) == len(set(originals)), "an event was dead-lettered twice"
    for original in set(originals) - model.dead:
        assert original not in model.acked, f"{original} was acked and dead-lettered"
        assert model.attempts.get(original, 0) >= model.max_deliver, f"{original} dead-lettered too early"
        model.dead.add(original)
        model.holder.pop(original, None)


async def _check_floor(store: Store, model: Model) -> None:
    lag = await store.lag(model.pattern, "g")
    assert lag is not None
    floor = lag.cursor.seq
    unsettled = [i for i in model.ids if not model.settled(i)]
    if unsettled:
        oldest = model.seq[unsettled[0]]
        before = [model.seq[i] for i in model.ids if model.seq[i] < oldest]
        assert (before[-1] if before else 0) <= floor < oldest, (floor, oldest)
    elif model.ids:
        assert floor >= model.seq[model.ids[-1]]
    assert lag.lag_count == sum(1 for i in model.ids if model.seq[i] > floor)


async def _claim(store: Store, model: Model, member: str, limit: int) -> list[str]:
    got = await store.claim(
        model.pattern,
        "g",
        member,
        limit=limit,
        ack_timeout_ms=TIMEOUT,
        max_deliver=model.max_deliver,
        ordered_by_key=model.ordered,
        now=model.now,
    )
    await _refresh_dead(store, model)
    assert len(got) <= limit
    seqs = [d.event.seq for d in got]
    assert seqs == sorted(seqs)
    for d in got:
        event_id = d.event.id
        assert not model.settled(event_id), f"{event_id} delivered after it was settled"
        held = model.holder.get(event_id)
        assert held is None or held[1] <= model.now, f"{event_id} delivered while in flight to {held[0]}"
        assert d.attempt == model.attempts.get(event_id, 0) + 1
        assert d.attempt <= model.max_deliver, f"{event_id} delivered {d.attempt} times"
        assert d.deadline == model.now + TIMEOUT
        if model.ordered and model.key[event_id] is not None:
            for earlier in model.ids:
                if model.seq[earlier] >= d.event.seq:
                    break
                if model.key[earlier] == model.key[event_id]:
                    assert model.settled(earlier), f"{event_id} delivered before {earlier} of its key"
        model.attempts[event_id] = d.attempt
        model.holder[event_id] = (member, d.deadline)
    return [d.event.id for d in got]


async def _step(store: Store, model: Model, op: tuple[Any, ...]) -> None:
    kind = op[0]
    if kind == "publish":
        events: list[NewEvent] = []
        for k in op[1]:
            event_id = f"{model.prefix}-{len(model.ids) + len(events)}"
            events.append(ev(f"{model.prefix}.t", event_id, id=event_id, key=k))
        for event, result in zip(events, await store.publish_batch(events), strict=True):
            assert event.id is not None and result.id == event.id and not result.duplicate
            model.ids.append(event.id)
            model.seq[event.id] = result.seq
            model.key[event.id] = event.key
    elif kind == "claim":
        await _claim(store, model, op[1], op[2])
    elif kind == "ack":
        pending = model.pending()
        chosen = [i for n, i in enumerate(pending) if op[1] >> (n % 16) & 1]
        assert await store.ack(model.pattern, "g", chosen) == len(chosen)
        for event_id in chosen:
            model.acked.add(event_id)
            model.holder.pop(event_id, None)
    elif kind == "nack":
        pending = model.pending()
        if not pending:
            return
        event_id = pending[op[1] % len(pending)]
        assert await store.nack(
            model.pattern, "g", event_id, max_deliver=model.max_deliver, delay_ms=op[2], now=model.now
        )
        model.holder.pop(event_id, None)
        await _refresh_dead(store, model)
        if model.attempts[event_id] >= model.max_deliver:
            assert event_id in model.dead
    elif kind == "release":
        mine = [i for i, (member, _) in model.holder.items() if member == op[1]]
        assert await store.release(model.pattern, "g", op[1]) == len(mine)
        for event_id in mine:
            del model.holder[event_id]
    elif kind == "tick":
        model.now += op[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(_op, max_size=30), ordered=st.booleans(), max_deliver=st.integers(1, 3))
async def test_random_runs_keep_the_group_guarantees(
    store: Store, ops: list[tuple[Any, ...]], ordered: bool, max_deliver: int
) -> None:
    model = Model(prefix=f"hm{next(_examples)}", ordered=ordered, max_deliver=max_deliver)
    await store.ensure_group(model.pattern, "g", EARLIEST)
    for op in ops:
        await _step(store, model, op)
        await _check_floor(store, model)
    # Drain: time passes, one member claims and acks everything until nothing is left.
    for _ in range(4 * (len(model.ids) + 1)):
        model.now += 10 * TIMEOUT
        got = await _claim(store, model, "drain", 100)
        if got:
            assert await store.ack(model.pattern, "g", got) == len(got)
            model.acked.update(got)
            for event_id in got:
                model.holder.pop(event_id, None)
        elif all(model.settled(i) for i in model.ids):
            break
    assert all(model.settled(i) for i in model.ids), "events left unsettled after the drain"
    assert not model.acked & model.dead
    await _check_floor(store, model)
