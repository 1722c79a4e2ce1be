"""The delivery lifecycle of one event in one consumer group, as code that runs: the transition table and
the claim planner that enforces it. Pure: no I/O, no clock of its own (``now`` is always passed in).

Every store backend gathers rows in its own SQL or Mongo calls, asks this module what to do with them and
executes the answer; the rules (which expired delivery comes first, when one is dead-lettered, when a key
is busy, how far one claim scans) live here only. A transition the table does not list raises
``LifecycleError``: the table is not a description next to the code, it is the code.

The table (``DELIVERY_LIFECYCLE``, state -> trigger -> next state)::

    new        claim                  -> delivered   (attempt 1)
    new        claim_key_busy         -> new         (held back until the key is free; ordered_by_key)
    delivered  ack                    -> acked
    delivered  nack                   -> waiting     (backoff or delay_ms)
    delivered  nack_final             -> dead        (attempts >= max_deliver)
    delivered  nack_terminal          -> dead        (NACK with terminal: no more attempts)
    delivered  extend                 -> delivered   (EXTEND: deadline = now + ack_timeout_ms)
    delivered  deadline               -> due         (the ack timeout passed)
    delivered  release                -> due         (the member closed)
    waiting    backoff_elapsed        -> due
    waiting    ack                    -> acked       (late)
    waiting    nack / nack_final      -> waiting / dead   (a repeated NACK)
    waiting    nack_terminal          -> dead
    due        claim                  -> delivered   (attempt + 1)
    due        claim_final            -> dead        (attempts >= max_deliver)
    due        claim_key_busy         -> due         (an earlier event of its key is pending)
    due        ack                    -> acked       (late)
    due        nack / nack_final      -> waiting / dead   (a late NACK)
    due        nack_terminal          -> dead
    acked      (final: the ack floor may pass it)
    dead       (final: copied to dlq.<group>.<topic>, then acked)

How a pending row maps to a state (``state_of``): ``attempts == 0`` is *new* (taken into the pending set
but held back, never delivered); otherwise a passed deadline is *due*, else a row with a member is
*delivered* and one without (NACKed) is *waiting*. ``deadline`` and ``backoff_elapsed`` are therefore
transitions of the clock, not of a statement. Events above the group's frontier are *new* too.

``extend`` (the EXTEND frame, ``Store.extend``) is allowed from *delivered* only: a *due* delivery (its
deadline passed) may already be redelivered elsewhere, a *waiting* one is held by nobody. Each backend runs
it as one conditional statement whose condition is ``ExtendRequest.condition``: the row is held (by the
given member, when one is given) and its deadline has not passed, i.e. ``state_of(...) is DELIVERED``.

The claim rule (``ClaimPlan``), in the order a claim applies it:

1. Pending rows whose deadline passed, oldest seq first, read in chunks of ``limit + 32``: a row with
   ``attempts >= max(1, max_deliver)`` is dead-lettered (*due* -> *dead*); with ``ordered_by_key`` a row
   whose key this claim already handed out or held back, or whose key has an older pending row (not
   counting rows dead-lettered by this claim), is skipped; every other row is redelivered with
   ``attempt = attempts + 1``. Stops at ``limit`` redeliveries or when a chunk comes up short. A *new*
   (held-back) row is never dead-lettered: that is what the ``max(1, ...)`` clamp guarantees for
   ``max_deliver <= 0``.
2. New events above the frontier, in seq order, until ``limit`` deliveries in all: with ``ordered_by_key``
   an event whose key is busy (handed out or held back by this claim, or pending in the group) is taken
   into the pending set held back; ordered scans read pages of ``max(wanted, 64)`` and at most
   ``max(wanted * 4, 256)`` events, so a hot key cannot make one claim walk the whole log. When a page
   comes up short every matching event up to the log's last seq is pending, and the frontier moves there.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from outboxhub.model import nack_backoff_ms

__all__ = [
    "DEAD_LETTER_TRIGGERS",
    "DELIVERY_LIFECYCLE",
    "ORDERED_SCAN_CAP",
    "SETTLE_SQL",
    "ClaimPlan",
    "ClaimRequest",
    "Decision",
    "Expired",
    "ExtendRequest",
    "LifecycleError",
    "NackRequest",
    "State",
    "Trigger",
    "Verdict",
    "effective_max_deliver",
    "may_settle",
    "plan_nack",
    "state_of",
    "step",
]


class State(StrEnum):
    """Where one event stands in one group."""

    NEW = "new"
    DELIVERED = "delivered"
    WAITING = "waiting"
    DUE = "due"
    ACKED = "acked"
    DEAD = "dead"


class Trigger(StrEnum):
    """What moves an event from one state to the next."""

    CLAIM = "claim"
    CLAIM_KEY_BUSY = "claim_key_busy"
    CLAIM_FINAL = "claim_final"
    ACK = "ack"
    NACK = "nack"
    NACK_FINAL = "nack_final"
    NACK_TERMINAL = "nack_terminal"
    EXTEND = "extend"
    DEADLINE = "deadline"
    RELEASE = "release"
    BACKOFF_ELAPSED = "backoff_elapsed"


_S, _T = State, Trigger

DELIVERY_LIFECYCLE: Final[Mapping[State, Mapping[Trigger, State]]] = {
    _S.NEW: {_T.CLAIM: _S.DELIVERED, _T.CLAIM_KEY_BUSY: _S.NEW},
    _S.DELIVERED: {
        _T.ACK: _S.ACKED,
        _T.NACK: _S.WAITING,
        _T.NACK_FINAL: _S.DEAD,
        _T.NACK_TERMINAL: _S.DEAD,
        _T.EXTEND: _S.DELIVERED,
        _T.DEADLINE: _S.DUE,
        _T.RELEASE: _S.DUE,
    },
    _S.WAITING: {
        _T.BACKOFF_ELAPSED: _S.DUE,
        _T.ACK: _S.ACKED,
        _T.NACK: _S.WAITING,
        _T.NACK_FINAL: _S.DEAD,
        _T.NACK_TERMINAL: _S.DEAD,
    },
    _S.DUE: {
        _T.CLAIM: _S.DELIVERED,
        _T.CLAIM_FINAL: _S.DEAD,
        _T.CLAIM_KEY_BUSY: _S.DUE,
        _T.ACK: _S.ACKED,
        _T.NACK: _S.WAITING,
        _T.NACK_FINAL: _S.DEAD,
        _T.NACK_TERMINAL: _S.DEAD,
    },
    _S.ACKED: {},
    _S.DEAD: {},
}
"""state -> trigger -> next state, for one event in one group (the table in the module docstring)."""

DEAD_LETTER_TRIGGERS: Final = frozenset({Trigger.NACK_FINAL, Trigger.NACK_TERMINAL})
"""The NACK triggers a backend executes by dead-lettering the event."""

ORDERED_SCAN_CAP: Final = 4
"""With ordered_by_key, one claim scans at most this many times ``limit`` (min 256) new events looking for
deliverable ones."""

_EXPIRED_SLACK: Final = 32
"""Expired rows are read in chunks of ``limit + _EXPIRED_SLACK`` (some may be skipped or dead-lettered)."""


class LifecycleError(RuntimeError):
    """A transition the lifecycle table does not allow (a bug in the caller, never a client error)."""


def step(state: State, trigger: Trigger) -> State:
    """The state ``trigger`` moves ``state`` to; ``LifecycleError`` when the table has no such move."""
    try:
        return DELIVERY_LIFECYCLE[state][trigger]
    except KeyError:
        raise LifecycleError(f"no {trigger.value!r} transition from {state.value!r}") from None


def state_of(*, attempts: int, held: bool, deadline: int, now: int) -> State:
    """The state of a pending row: ``held`` is whether a member holds it (its ``member`` is set)."""
    if attempts <= 0:
        return State.NEW
    if deadline <= now:
        return State.DUE
    return State.DELIVERED if held else State.WAITING


def effective_max_deliver(max_deliver: int) -> int:
    """``max_deliver`` as the rule uses it: at least 1, so an event is always delivered once before it can
    be dead-lettered."""
    return max(1, max_deliver)


def plan_nack(
    *, attempts: int, held: bool, deadline: int, now: int, max_deliver: int, terminal: bool = False
) -> Trigger | None:
    """What a NACK of a pending row does: ``Trigger.NACK`` (wait for the backoff), ``Trigger.NACK_FINAL``
    (dead-letter now: out of attempts), ``Trigger.NACK_TERMINAL`` (dead-letter now: a terminal NACK) or
    None for a row never delivered (held back: there is nothing to NACK, the row is left unchanged and the
    store answers as for an event that is not pending)."""
    state = state_of(attempts=attempts, held=held, deadline=deadline, now=now)
    if state is State.NEW:
        return None
    if terminal:
        trigger = Trigger.NACK_TERMINAL
    elif attempts >= effective_max_deliver(max_deliver):
        trigger = Trigger.NACK_FINAL
    else:
        trigger = Trigger.NACK
    step(state, trigger)
    return trigger


def may_settle(*, settler: str | None, holder: str | None, attempts: int) -> bool:
    """Whether ``settler`` may ACK/NACK a pending row held by ``holder`` (None: nobody) after ``attempts``
    deliveries: a trusted caller (``settler`` None) always; a member only a delivered row (attempts > 0)
    that it holds or that nobody holds (NACKed, released, or expired and not yet claimed again, which is
    what keeps a late ACK meaningful). The SQL backends write the same rule as ``SETTLE_SQL``."""
    if settler is None:
        return True
    return attempts > 0 and (holder is None or holder == settler)


SETTLE_SQL: Final = " AND {p}attempts > 0 AND ({p}member IS NULL OR {p}member = {param})"
"""``may_settle`` as a SQL condition on a pending row: ``{p}`` is the row's table prefix (``"p."`` or ``""``),
``{param}`` the settler's placeholder."""


class Verdict(StrEnum):
    """What a claim does with one row: the store executes it."""

    REDELIVER = "redeliver"
    """An expired pending row: hand it to the member again (``attempt`` = attempts + 1)."""
    DEAD_LETTER = "dead_letter"
    """An expired pending row out of attempts: publish to ``dlq.<group>.<topic>``, then drop it."""
    SKIP = "skip"
    """An expired pending row whose key is busy: leave it as it is."""
    DELIVER = "deliver"
    """A new event: insert it pending, held by the member (``attempt`` 1)."""
    HOLD = "hold"
    """A new event whose key is busy: insert it pending, held back (no member, attempts 0, deadline 0)."""


@dataclass(frozen=True, slots=True)
class Expired:
    """A pending row whose deadline passed, as the claim planner needs it."""

    seq: int
    key: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Decision:
    """One row's verdict, the attempt number it is delivered as (0 unless delivered) and its next state."""

    seq: int
    verdict: Verdict
    attempt: int
    state: State


class ClaimPlan:
    """The plan of one claim: feed it the rows the store reads, execute the decisions it returns.

    Use::

        plan = ClaimPlan(limit=..., ack_timeout_ms=..., max_deliver=..., ordered=..., now=...)
        while not plan.expired_done:                     # 1. expired pending rows
            rows = <pending rows with deadline <= plan.now and seq > plan.after, by seq, plan.chunk of them>
            keys, dying = plan.keys_to_check(rows)       # ordered only: whose oldest pending seq to look up
            oldest = <{key: min(seq) of pending rows of key, leaving out the seqs in dying}>
            decisions = plan.expired(rows, oldest)       # execute: redeliver / dead-letter / skip
        plan.begin_new(frontier, delivered=<redeliveries that took effect>)
        while (size := plan.page_size()):                # 2. new events above the frontier
            page = <up to size events after plan.position>
            pending = <keys of plan.new_keys_to_check(page) that have a pending row in the group>
            decisions = plan.new_events(page, pending, asked=size)   # execute: deliver / hold
        new_frontier = plan.frontier(last_seq)           # last_seq read before the first page
    """

    def __init__(self, *, limit: int, ack_timeout_ms: int, max_deliver: int, ordered: bool, now: int) -> None:
        self.limit = max(0, limit)
        self.now = now
        self.deadline = now + ack_timeout_ms
        """The deadline of every delivery this claim hands out."""
        self.max_deliver = effective_max_deliver(max_deliver)
        self.ordered = ordered
        self.chunk = self.limit + _EXPIRED_SLACK
        """How many expired rows to read at a time."""
        self.after = 0
        """Read expired rows with seq above this."""
        self.expired_done = self.limit == 0
        self._busy: set[str] = set()  # keys handed out or held back by this claim
        self._redelivered = 0
        # the new-events phase (begin_new)
        self.position = 0
        """Read new events with seq above this; after the claim, where the scan stopped."""
        self._wanted = 0
        self._handed = 0
        self._budget = 0
        self._new_done = True
        self._exhausted = False

    # -- 1. expired pending rows --------------------------------------------------------------------------

    def keys_to_check(self, rows: Sequence[Expired]) -> tuple[list[str], list[int]]:
        """For ``ordered``: the keys whose oldest pending seq ``expired`` needs, and the seqs of ``rows``
        that this chunk dead-letters (leave them out of that lookup). Both empty when not ordered."""
        dying = [row.seq for row in rows if self._exhausted_row(row)]
        if not self.ordered:
            return [], dying
        dead = set(dying)
        keys = {row.key for row in rows if row.key is not None and row.seq not in dead}
        return sorted(keys), dying

    def expired(self, rows: Sequence[Expired], oldest: Mapping[str, int]) -> list[Decision]:
        """Decide a chunk of expired rows (by seq, above ``after``, at most ``chunk``). ``oldest`` maps each
        key of ``keys_to_check`` to its oldest pending seq (ignored when not ordered)."""
        if self.expired_done:
            raise LifecycleError("ClaimPlan.expired() after the expired phase ended")
        decisions: list[Decision] = []
        for row in rows:
            if row.seq <= self.after:
                raise LifecycleError(f"expired rows out of order: seq {row.seq} after {self.after}")
            self.after = row.seq
            decision = self._expired_one(row, oldest)
            decisions.append(decision)
            if decision.verdict is Verdict.REDELIVER:
                self._redelivered += 1
                if self._redelivered == self.limit:
                    self.expired_done = True
                    return decisions
        if len(rows) < self.chunk:
            self.expired_done = True
        return decisions

    def _exhausted_row(self, row: Expired) -> bool:
        return row.attempts >= 1 and row.attempts >= self.max_deliver

    def _expired_one(self, row: Expired, oldest: Mapping[str, int]) -> Decision:
        state = State.NEW if row.attempts <= 0 else State.DUE  # its deadline passed
        if self._exhausted_row(row):
            return Decision(row.seq, Verdict.DEAD_LETTER, 0, step(state, Trigger.CLAIM_FINAL))
        if self.ordered and row.key is not None:
            busy = row.key in self._busy
            self._busy.add(row.key)
            if busy or oldest.get(row.key) != row.seq:
                return Decision(row.seq, Verdict.SKIP, 0, step(state, Trigger.CLAIM_KEY_BUSY))
        return Decision(row.seq, Verdict.REDELIVER, row.attempts + 1, step(state, Trigger.CLAIM))

    # -- 2. new events ------------------------------------------------------------------------------------

    def begin_new(self, frontier: int, *, delivered: int) -> None:
        """Start the new-events phase at the group's ``frontier``; ``delivered`` is how many redeliveries
        took effect (a backend that re-checks rows when it writes may hand out fewer than decided)."""
        self.expired_done = True
        self.position = frontier
        self._wanted = max(0, self.limit - delivered)
        self._handed = 0
        self._budget = self._scan_budget(self._wanted)
        self._new_done = self._wanted == 0
        self._exhausted = False

    @property
    def wanted(self) -> int:
        """How many new events the claim may still deliver."""
        return self._wanted - self._handed

    def page_size(self) -> int:
        """How many new events to read next (after ``position``); 0 when the scan is over."""
        if self._new_done or self._budget <= 0:
            return 0
        return self._page(self._wanted - self._handed, self._budget)

    def first_page_size(self) -> int:
        """The size of the new-events phase's first page if no redelivery takes effect (``begin_new`` with
        ``delivered=0``): a backend may read that page together with the first expired chunk. A longer
        page given to ``new_events`` is cut to what the plan wants."""
        return self._page(self.limit, self._scan_budget(self.limit))

    def _page(self, left: int, budget: int) -> int:
        return min(budget, max(left, 64)) if self.ordered else left

    def _scan_budget(self, wanted: int) -> int:
        return max(wanted * ORDERED_SCAN_CAP, 256) if self.ordered else wanted

    def new_keys_to_check(self, page: Sequence[tuple[int, str | None]]) -> list[str]:
        """For ``ordered``: the keys of ``page`` (``(seq, key)`` rows) whose pending state ``new_events``
        needs (keys this claim already made busy are known without asking)."""
        if not self.ordered:
            return []
        return sorted({key for _, key in page if key is not None and key not in self._busy})

    def new_events(
        self, page: Sequence[tuple[int, str | None]], pending_keys: Collection[str], *, asked: int
    ) -> list[Decision]:
        """Decide a page of new events (``(seq, key)`` by seq, read with limit ``asked``): deliver or hold
        back. ``pending_keys``: the keys of ``new_keys_to_check`` with a pending row in the group. A page
        longer than what is left of the scan budget is cut to it."""
        if self._new_done:
            raise LifecycleError("ClaimPlan.new_events() after the new-events phase ended")
        if len(page) > self._budget:
            page, asked = page[: self._budget], self._budget
        self._budget -= len(page)
        decisions: list[Decision] = []
        for seq, key in page:
            if seq <= self.position:
                raise LifecycleError(f"new events out of order: seq {seq} after {self.position}")
            self.position = seq
            if self.ordered and key is not None:
                busy = key in self._busy or key in pending_keys
                self._busy.add(key)
                if busy:
                    decisions.append(Decision(seq, Verdict.HOLD, 0, step(State.NEW, Trigger.CLAIM_KEY_BUSY)))
                    continue
            decisions.append(Decision(seq, Verdict.DELIVER, 1, step(State.NEW, Trigger.CLAIM)))
            self._handed += 1
            if self._handed == self._wanted:
                self._new_done = True
                return decisions
        if len(page) < asked:
            self._exhausted = True
            self._new_done = True
        return decisions

    def frontier(self, last_seq: int) -> int:
        """The group's frontier after the claim: where the scan stopped, or ``last_seq`` (read before the
        first page) when the scan reached the end of the log."""
        return max(self.position, last_seq) if self._exhausted else self.position


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimRequest:
    """One ``Store.claim`` call, its ``now`` resolved: what ``StoreBackend`` hands a backend's claim."""

    pattern: str
    group: str
    member: str
    limit: int
    ack_timeout_ms: int
    max_deliver: int
    ordered: bool
    now: int

    def at(self, now: int) -> ClaimRequest:
        """This claim with its ``now`` resolved again (a parked claim runs later than it was asked): built
        directly, half the cost of ``dataclasses.replace`` on the commit path."""
        return ClaimRequest(
            pattern=self.pattern,
            group=self.group,
            member=self.member,
            limit=self.limit,
            ack_timeout_ms=self.ack_timeout_ms,
            max_deliver=self.max_deliver,
            ordered=self.ordered,
            now=now,
        )

    def plan(self) -> ClaimPlan:
        """A fresh ``ClaimPlan`` for this claim."""
        return ClaimPlan(
            limit=self.limit,
            ack_timeout_ms=self.ack_timeout_ms,
            max_deliver=self.max_deliver,
            ordered=self.ordered,
            now=self.now,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class NackRequest:
    """One ``Store.nack`` call, its ``now`` resolved: what ``StoreBackend`` hands a backend's NACK."""

    pattern: str
    group: str
    event_id: str
    max_deliver: int
    delay_ms: int | None
    reason: str | None
    now: int
    seq: int | None = None
    """The delivery's seq when the caller named it (see ``EventRef`` in ``store/base.py``)."""
    member: str | None = None
    """The member settling (``may_settle``); None for a trusted in-process caller."""
    terminal: bool = False
    """A terminal NACK (``nack_terminal``): dead-letter now, whatever the attempts left."""

    def trigger(self, *, attempts: int, held: bool, deadline: int) -> Trigger | None:
        """``plan_nack`` for the pending row of the event (see there)."""
        return plan_nack(
            attempts=attempts,
            held=held,
            deadline=deadline,
            now=self.now,
            max_deliver=self.max_deliver,
            terminal=self.terminal,
        )

    def redeliver_at(self, attempts: int) -> int:
        """The deadline a NACKed row waits for: ``delay_ms``, or the backoff of its ``attempts``."""
        return self.now + nack_backoff_ms(attempts, self.delay_ms)


@dataclass(frozen=True, slots=True, kw_only=True)
class ExtendRequest:
    """One ``Store.extend`` call, its ``now`` resolved: the ``extend`` transition (*delivered* ->
    *delivered*) as one conditional write.

    A backend updates the pending row of ``event_id`` in the group, setting ``deadline`` to
    :attr:`new_deadline`, only where :meth:`applies` holds: the row is held (by ``member`` when given)
    and its deadline is after ``now``. Any other state has no ``extend`` move: nothing changes and the
    store answers False. The row is found as a settle finds it (``EventRef`` in ``store/base.py``): by
    ``(group, seq)`` carrying ``event_id`` when ``seq`` is given, else only when ``event_id`` matches
    exactly one row the condition holds for (two topics under one pattern may carry the same id).
    """

    pattern: str
    group: str
    event_id: str
    ack_timeout_ms: int
    member: str | None
    now: int
    seq: int | None = None
    """The delivery's seq when the caller named it."""

    @property
    def new_deadline(self) -> int:
        return self.now + self.ack_timeout_ms

    def applies(self, *, attempts: int, member: str | None, deadline: int) -> bool:
        """Whether the row (as read) is *delivered* to the right member: what the backend's condition
        must express."""
        if member is None or (self.member is not None and member != self.member):
            return False
        state = state_of(attempts=attempts, held=True, deadline=deadline, now=self.now)
        if state is not State.DELIVERED:
            return False
        step(state, Trigger.EXTEND)
        return True
