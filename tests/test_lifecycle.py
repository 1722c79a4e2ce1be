"""The delivery lifecycle as a state machine (``outboxhub.store.lifecycle``): the table, the transitions it
allows and forbids, the row -> state mapping, the NACK decision and the claim planner (ordering, chunking,
key skipping, exhaustion, scan budget), checked against a tiny in-memory model with hypothesis."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outboxhub.bus.core import DELIVERY_LIFECYCLE as BUS_TABLE
from outboxhub.model import nack_backoff_ms
from outboxhub.store.lifecycle import (
    DELIVERY_LIFECYCLE,
    ClaimPlan,
    ClaimRequest,
    Decision,
    Expired,
    ExtendRequest,
    LifecycleError,
    NackRequest,
    State,
    Trigger,
    Verdict,
    effective_max_deliver,
    plan_nack,
    state_of,
    step,
)

ALLOWED = [
    (state, trigger, nxt) for state, moves in DELIVERY_LIFECYCLE.items() for trigger, nxt in moves.items()
]
FORBIDDEN = [
    (state, trigger)
    for state, trigger in itertools.product(State, Trigger)
    if trigger not in DELIVERY_LIFECYCLE[state]
]


# -- the table ----------------------------------------------------------------------------------------------


def test_the_bus_exports_the_same_table() -> None:
    assert BUS_TABLE is DELIVERY_LIFECYCLE


def test_the_table_covers_every_state_and_only_known_triggers() -> None:
    assert set(DELIVERY_LIFECYCLE) == set(State)
    for moves in DELIVERY_LIFECYCLE.values():
        assert set(moves) <= set(Trigger)
        assert set(moves.values()) <= set(State)
    assert {t for moves in DELIVERY_LIFECYCLE.values() for t in moves} == set(Trigger)


def test_the_table_as_documented() -> None:
    as_strings = {
        s.value: {t.value: n.value for t, n in moves.items()} for s, moves in DELIVERY_LIFECYCLE.items()
    }
    assert as_strings == {
        "new": {"claim": "delivered", "claim_key_busy": "new"},
        "delivered": {
            "ack": "acked",
            "nack": "waiting",
            "nack_final": "dead",
            "nack_terminal": "dead",
            "extend": "delivered",
            "deadline": "due",
            "release": "due",
        },
        "waiting": {
            "backoff_elapsed": "due",
            "ack": "acked",
            "nack": "waiting",
            "nack_final": "dead",
            "nack_terminal": "dead",
        },
        "due": {
            "claim": "delivered",
            "claim_final": "dead",
            "claim_key_busy": "due",
            "ack": "acked",
            "nack": "waiting",
            "nack_final": "dead",
            "nack_terminal": "dead",
        },
        "acked": {},
        "dead": {},
    }


def test_final_states_have_no_moves_and_every_state_reaches_one() -> None:
    final = {state for state, moves in DELIVERY_LIFECYCLE.items() if not moves}
    assert final == {State.ACKED, State.DEAD}
    for start in State:
        seen, todo = {start}, [start]
        while todo:
            for nxt in DELIVERY_LIFECYCLE[todo.pop()].values():
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & final


@pytest.mark.parametrize(("state", "trigger", "nxt"), ALLOWED, ids=[f"{s}-{t}" for s, t, _ in ALLOWED])
def test_every_allowed_transition(state: State, trigger: Trigger, nxt: State) -> None:
    assert step(state, trigger) is nxt


@pytest.mark.parametrize(("state", "trigger"), FORBIDDEN, ids=[f"{s}-{t}" for s, t in FORBIDDEN])
def test_every_forbidden_transition_raises(state: State, trigger: Trigger) -> None:
    with pytest.raises(LifecycleError, match=f"no '{trigger.value}' transition from '{state.value}'"):
        step(state, trigger)


def test_extend_only_from_delivered() -> None:
    assert [s for s in State if Trigger.EXTEND in DELIVERY_LIFECYCLE[s]] == [State.DELIVERED]


@given(
    attempts=st.integers(0, 10),
    holder=st.sampled_from([None, "m1", "m2"]),
    asker=st.sampled_from([None, "m1", "m2"]),
    deadline=st.integers(0, 200),
)
def test_extend_applies_exactly_to_a_delivered_row_of_the_member(
    attempts: int, holder: str | None, asker: str | None, deadline: int
) -> None:
    request = ExtendRequest(pattern="p.*", group="g", event_id="e", ack_timeout_ms=50, member=asker, now=100)
    state = state_of(attempts=attempts, held=holder is not None, deadline=deadline, now=100)
    expected = state is State.DELIVERED and (asker is None or asker == holder)
    assert request.applies(attempts=attempts, member=holder, deadline=deadline) is expected
    assert request.new_deadline == 150


# -- rows and NACK ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempts", "held", "deadline", "expected"),
    [
        (0, False, 0, State.NEW),
        (0, True, 500, State.NEW),
        (1, True, 101, State.DELIVERED),
        (1, False, 101, State.WAITING),
        (1, True, 100, State.DUE),
        (3, False, 0, State.DUE),
    ],
)
def test_state_of_a_pending_row(attempts: int, held: bool, deadline: int, expected: State) -> None:
    assert state_of(attempts=attempts, held=held, deadline=deadline, now=100) is expected


@pytest.mark.parametrize(("max_deliver", "expected"), [(-5, 1), (0, 1), (1, 1), (7, 7)])
def test_effective_max_deliver_is_at_least_one(max_deliver: int, expected: int) -> None:
    assert effective_max_deliver(max_deliver) == expected


@given(
    attempts=st.integers(0, 10),
    held=st.booleans(),
    deadline=st.integers(0, 200),
    max_deliver=st.integers(-3, 10),
)
def test_nack_decision(attempts: int, held: bool, deadline: int, max_deliver: int) -> None:
    trigger = plan_nack(attempts=attempts, held=held, deadline=deadline, now=100, max_deliver=max_deliver)
    terminal = plan_nack(
        attempts=attempts, held=held, deadline=deadline, now=100, max_deliver=max_deliver, terminal=True
    )
    if attempts == 0:
        assert trigger is None and terminal is None
        return
    assert terminal is Trigger.NACK_TERMINAL
    assert step(state_of(attempts=attempts, held=held, deadline=deadline, now=100), terminal) is State.DEAD
    if attempts >= max(1, max_deliver):
        assert trigger is Trigger.NACK_FINAL
    else:
        assert trigger is Trigger.NACK


@given(
    attempts=st.integers(0, 10),
    held=st.booleans(),
    deadline=st.integers(0, 200),
    max_deliver=st.integers(-3, 10),
    delay_ms=st.none() | st.integers(-10, 400_000),
)
def test_a_nack_request_decides_as_plan_nack(
    attempts: int, held: bool, deadline: int, max_deliver: int, delay_ms: int | None
) -> None:
    request = NackRequest(
        pattern="p.*",
        group="g",
        event_id="e",
        max_deliver=max_deliver,
        delay_ms=delay_ms,
        reason=None,
        now=100,
    )
    assert request.trigger(attempts=attempts, held=held, deadline=deadline) is plan_nack(
        attempts=attempts, held=held, deadline=deadline, now=100, max_deliver=max_deliver
    )
    assert request.redeliver_at(attempts) == 100 + nack_backoff_ms(attempts, delay_ms)


@given(
    limit=st.integers(-2, 50),
    ack_timeout_ms=st.integers(0, 10_000),
    max_deliver=st.integers(-3, 10),
    ordered=st.booleans(),
)
def test_a_claim_request_plans_with_its_own_arguments(
    limit: int, ack_timeout_ms: int, max_deliver: int, ordered: bool
) -> None:
    request = ClaimRequest(
        pattern="p.*",
        group="g",
        member="m",
        limit=limit,
        ack_timeout_ms=ack_timeout_ms,
        max_deliver=max_deliver,
        ordered=ordered,
        now=1_000,
    )
    got = request.plan()
    want = ClaimPlan(
        limit=limit, ack_timeout_ms=ack_timeout_ms, max_deliver=max_deliver, ordered=ordered, now=1_000
    )
    assert (got.limit, got.now, got.deadline, got.max_deliver, got.ordered, got.chunk) == (
        want.limit,
        want.now,
        want.deadline,
        want.max_deliver,
        want.ordered,
        want.chunk,
    )
    assert got.first_page_size() == want.first_page_size()
    assert request.plan() is not got  # a fresh plan each time: a plan is used up by one claim


# -- the claim planner: expired rows ------------------------------------------------------------------------


def _plan(limit: int = 10, *, max_deliver: int = 5, ordered: bool = False) -> ClaimPlan:
    return ClaimPlan(limit=limit, ack_timeout_ms=1_000, max_deliver=max_deliver, ordered=ordered, now=100)


def _verdicts(decisions: list[Decision]) -> list[tuple[int, str, int]]:
    return [(d.seq, d.verdict.value, d.attempt) for d in decisions]


def test_plan_deadline_and_chunk() -> None:
    plan = _plan(limit=10)
    assert (plan.deadline, plan.chunk, plan.after, plan.expired_done) == (1_100, 42, 0, False)
    assert _plan(limit=0).expired_done


def test_expired_rows_are_redelivered_or_dead_lettered() -> None:
    plan = _plan(max_deliver=3)
    rows = [Expired(1, None, 1), Expired(2, None, 3), Expired(4, None, 2), Expired(5, None, 7)]
    assert plan.keys_to_check(rows) == ([], [2, 5])
    decisions = plan.expired(rows, {})
    assert _verdicts(decisions) == [
        (1, "redeliver", 2),
        (2, "dead_letter", 0),
        (4, "redeliver", 3),
        (5, "dead_letter", 0),
    ]
    assert [d.state for d in decisions] == [State.DELIVERED, State.DEAD, State.DELIVERED, State.DEAD]
    assert plan.expired_done and plan.after == 5  # a short chunk ends the phase


def test_a_held_back_row_is_never_dead_lettered_even_with_max_deliver_zero() -> None:
    plan = _plan(max_deliver=0)
    decisions = plan.expired([Expired(1, None, 0), Expired(2, None, 1)], {})
    assert _verdicts(decisions) == [(1, "redeliver", 1), (2, "dead_letter", 0)]
    assert plan.max_deliver == 1


def test_the_limit_stops_the_expired_phase_mid_chunk() -> None:
    plan = _plan(limit=2, max_deliver=2)
    rows = [Expired(s, None, 1) for s in (1, 2)] + [Expired(3, None, 2)]
    assert _verdicts(plan.expired(rows, {})) == [(1, "redeliver", 2), (2, "redeliver", 2)]
    assert plan.expired_done and plan.after == 2  # seq 3 (exhausted) waits for the next claim


def test_a_full_chunk_asks_for_the_next_one() -> None:
    plan = _plan(limit=1, max_deliver=1)
    rows = [Expired(s, None, 1) for s in range(1, plan.chunk + 1)]  # all exhausted
    decisions = plan.expired(rows, {})
    assert {d.verdict for d in decisions} == {Verdict.DEAD_LETTER}
    assert not plan.expired_done and plan.after == plan.chunk
    plan.expired([Expired(plan.chunk + 5, None, 0)], {})
    assert plan.expired_done


def test_ordered_expired_rows_skip_busy_keys() -> None:
    plan = _plan(ordered=True, max_deliver=3)
    rows = [
        Expired(1, "a", 3),  # dead: leaves the key lookup
        Expired(2, "a", 1),  # oldest pending of a once 1 is gone: redelivered
        Expired(3, "a", 1),  # a is busy now
        Expired(5, "b", 1),  # b has an older pending row (4, not expired)
        Expired(6, None, 1),
        Expired(7, "c", 0),  # held back, oldest of c: delivered for the first time
    ]
    keys, dying = plan.keys_to_check(rows)
    assert (keys, dying) == (["a", "b", "c"], [1])
    decisions = plan.expired(rows, {"a": 2, "b": 4, "c": 7})
    assert _verdicts(decisions) == [
        (1, "dead_letter", 0),
        (2, "redeliver", 2),
        (3, "skip", 0),
        (5, "skip", 0),
        (6, "redeliver", 2),
        (7, "redeliver", 1),
    ]
    assert [d.state for d in decisions][2:4] == [State.DUE, State.DUE]


def test_a_key_whose_oldest_row_vanished_is_skipped() -> None:
    plan = _plan(ordered=True)
    assert _verdicts(plan.expired([Expired(3, "a", 1)], {})) == [(3, "skip", 0)]


def test_out_of_order_or_late_input_raises() -> None:
    plan = _plan()
    with pytest.raises(LifecycleError, match="out of order"):
        plan.expired([Expired(2, None, 1), Expired(2, None, 1)], {})
    plan = _plan()
    plan.expired([], {})
    with pytest.raises(LifecycleError, match="after the expired phase ended"):
        plan.expired([], {})
    plan.begin_new(10, delivered=0)
    with pytest.raises(LifecycleError, match="out of order"):
        plan.new_events([(10, None)], set(), asked=10)


# -- the claim planner: new events --------------------------------------------------------------------------


def test_new_events_fill_what_redeliveries_left() -> None:
    plan = _plan(limit=5)
    plan.begin_new(100, delivered=2)
    assert (plan.wanted, plan.page_size()) == (3, 3)
    decisions = plan.new_events([(101, None), (103, "k"), (104, "k")], set(), asked=3)
    assert _verdicts(decisions) == [(101, "deliver", 1), (103, "deliver", 1), (104, "deliver", 1)]
    assert plan.page_size() == 0 and plan.position == 104
    assert plan.frontier(500) == 104  # a full page: not known to be the end of the log


def test_a_short_page_moves_the_frontier_to_the_last_seq() -> None:
    plan = _plan(limit=5)
    plan.begin_new(100, delivered=0)
    plan.new_events([(101, None)], set(), asked=5)
    assert plan.page_size() == 0 and plan.frontier(120) == 120
    empty = _plan(limit=5)
    empty.begin_new(7, delivered=0)
    assert empty.new_events([], set(), asked=5) == [] and empty.frontier(30) == 30


def test_nothing_wanted_means_no_scan() -> None:
    plan = _plan(limit=2)
    plan.begin_new(9, delivered=2)
    assert plan.page_size() == 0 and plan.frontier(50) == 9


def test_ordered_new_events_hold_back_busy_keys() -> None:
    plan = _plan(limit=3, ordered=True)
    plan.expired([Expired(1, "a", 1)], {"a": 1})  # a is handed out by this claim
    plan.begin_new(10, delivered=1)
    assert (plan.wanted, plan.page_size(), plan.first_page_size()) == (2, 64, 64)
    page = [(11, "a"), (12, "b"), (13, "c"), (14, "c"), (15, "d")]
    assert plan.new_keys_to_check(page) == ["b", "c", "d"]
    decisions = plan.new_events(page, {"b"}, asked=64)
    assert _verdicts(decisions) == [
        (11, "hold", 0),
        (12, "hold", 0),
        (13, "deliver", 1),
        (14, "hold", 0),
        (15, "deliver", 1),
    ]
    assert [d.state for d in decisions] == [State.NEW, State.NEW, State.DELIVERED, State.NEW, State.DELIVERED]
    assert plan.page_size() == 0 and plan.frontier(99) == 15


def test_the_ordered_scan_budget_caps_one_claim() -> None:
    plan = _plan(limit=1, ordered=True)
    plan.begin_new(0, delivered=0)
    seen = 0
    while size := plan.page_size():
        page = [(seen + i + 1, "hot") for i in range(size)]
        plan.new_events(page, {"hot"}, asked=size)
        seen += size
    assert seen == 256 and plan.frontier(10_000) == 256


def test_a_long_first_page_is_cut_to_the_budget() -> None:
    plan = _plan(limit=4)
    plan.begin_new(0, delivered=3)  # read with first_page_size() == 4, one wanted
    decisions = plan.new_events(
        [(1, None), (2, None), (3, None), (4, None)], set(), asked=plan.first_page_size()
    )
    assert _verdicts(decisions) == [(1, "deliver", 1)]
    assert plan.frontier(10) == 1


# -- the planner against a model ----------------------------------------------------------------------------

_row = st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 4))


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(_row, max_size=60),
    limit=st.integers(1, 8),
    max_deliver=st.integers(-1, 4),
    ordered=st.booleans(),
)
def test_expired_phase_matches_a_model(
    rows: list[tuple[str | None, int]], limit: int, max_deliver: int, ordered: bool
) -> None:
    """Feed the planner chunk by chunk as a store would (dead rows deleted between chunks) and compare it
    with the rule written as one loop over all rows."""
    pending = {seq: (key, attempts) for seq, (key, attempts) in enumerate(rows, start=1)}
    cap = max(1, max_deliver)
    # The model: one pass in seq order.
    expected: list[tuple[int, str, int]] = []
    busy: set[str] = set()
    alive = dict(pending)
    redelivered = 0
    for seq, (key, attempts) in sorted(pending.items()):
        if redelivered == limit:
            break
        if attempts >= 1 and attempts >= cap:
            expected.append((seq, "dead_letter", 0))
            del alive[seq]
            continue
        if ordered and key is not None:
            was_busy = key in busy
            busy.add(key)
            if was_busy or min(s for s, (k, _) in alive.items() if k == key) != seq:
                expected.append((seq, "skip", 0))
                continue
        expected.append((seq, "redeliver", attempts + 1))
        redelivered += 1
    # The planner, driven like a backend.
    plan = ClaimPlan(limit=limit, ack_timeout_ms=1, max_deliver=max_deliver, ordered=ordered, now=0)
    store = dict(pending)
    got: list[tuple[int, str, int]] = []
    while not plan.expired_done:
        chunk = [Expired(s, k, a) for s, (k, a) in sorted(store.items()) if s > plan.after][: plan.chunk]
        keys, dying = plan.keys_to_check(chunk)
        oldest = {
            key: min(s for s, (k, _) in store.items() if k == key and s not in dying)
            for key in keys
            if any(k == key and s not in dying for s, (k, _) in store.items())
        }
        decisions = plan.expired(chunk, oldest)
        for d in decisions:
            if d.verdict is Verdict.DEAD_LETTER:
                del store[d.seq]
        got.extend(_verdicts(decisions))
    assert got == expected
