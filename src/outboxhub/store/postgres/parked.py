"""Claims parked by waiting group members, run in the group commit that appends a matching event.

A member with nothing to claim parks its next claim (``bus/parking.py``) instead of only sleeping. The
store's writer takes the parked claims whose pattern matches a topic of the batch it is about to append
and sends the batch as ``publish_claim`` (schema version 5): the publish, then each claim as
``claim_parked``, one statement and one transaction. The event published to a waiting member is so
claimed by the commit that makes it durable: one statement per delivered event instead of two (publish,
then the woken member's ``claim_new``). The commit stays synchronous (it publishes events); the claims
ride on it.

A claim runs here only when ``claim_new`` could take it (not key-ordered; the others stay parked and are
woken by the commit as before). It does not run (``NOT_RUN``, the member then claims as usual) when its
group row is locked by another transaction, when a pending event of the group is due (the planner's
work), or when the batch fails. The lock order: the publish holds the counter row; ``claim_parked``
locks group rows with ``SKIP LOCKED``, so it never waits for one, while a claim that dead-letters holds its
group row and then waits for the counter (``groups.py``). No wait-for cycle, no deadlock.

At most ``MAX_CLAIMS_PER_BATCH`` claims ride on one batch: each holds the counter lock a little longer,
so a tenant with many parked members cannot stretch everyone's publishes without bound; the rest stay
parked for the next batch, and are woken by this one's commit like any sleeping member.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from outboxhub.model import Delivery, PublishResult
from outboxhub.store.codec import Prepared
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.store.parkedclaim import ParkedClaimBase
from outboxhub.store.postgres import wire
from outboxhub.store.postgres.ackride import AckJob
from outboxhub.store.postgres.claim import filter_args_of
from outboxhub.store.postgres.events import AppendBatch, PgConn, decode_rows

__all__ = [
    "MAX_CLAIMS_PER_BATCH",
    "NOT_RUN",
    "REPARK_TURNS",
    "ParkedClaim",
    "ParkedStats",
    "ParkingLot",
    "publish_claim",
    "wait_for_reparking",
]

MAX_CLAIMS_PER_BATCH = 16

REPARK_TURNS = 2
"""Event loop turns a batch staged right after one that ran claims waits for their members to park again:
one for the claim's result to wake the member, one for the member's task to hand out and park."""

NOT_RUN: tuple[list[Delivery], int] = ([], -1)
"""The result of a parked claim that did not run: nothing claimed, no commit covered (the member wakes
and claims as usual)."""

_T, _I8, _I4 = wire.TEXT_ARRAY, wire.INT8_ARRAY, wire.INT4_ARRAY
_PUBLISH_CLAIM = wire.Statement(
    "publish_claim",
    "SELECT * FROM publish_claim($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    [_T, _T, _I8, _T, _T, _T, wire.TEXT, _T, _T, _T, wire.INT8, _I8, _I4, _I4, _T, _T, _T],
)
_PUBLISH_CLAIM_ACKS = wire.Statement(
    "publish_claim_acks",
    "SELECT * FROM publish_claim_acks(" + ", ".join(f"${n}" for n in range(1, 24)) + ")",
    [*_PUBLISH_CLAIM.types, _T, _T, _T, _I4, _I8, _T],
)
"""``publish_claim`` with the ACKs riding on it (schema version 8, ``ackride.py``)."""


@dataclass(slots=True)
class ParkedStats:
    """Parked claims taken by group commits so far: run in the publish's statement, or not run."""

    ran: int = 0
    not_run: int = 0

    def count(self, outcomes: Sequence[tuple[list[Delivery], int]]) -> None:
        for outcome in outcomes:
            if outcome is NOT_RUN:
                self.not_run += 1
            else:
                self.ran += 1


class ParkedClaim(ParkedClaimBase):
    """One parked claim for ``request``; ``future`` resolves with ``(deliveries, last_seq)`` (``NOT_RUN``
    when it did not run): ``last_seq`` is the counter its commit reached."""

    __slots__ = ("request",)

    def __init__(
        self,
        lot: ParkingLot,
        future: asyncio.Future[tuple[list[Delivery], int]],
        request: ClaimRequest,
        matches: Callable[[str], object],
    ) -> None:
        super().__init__(lot, future, matches)
        self.request = request


class ParkingLot:
    """The parked claims of one store (event loop only). Key-ordered claims are kept, never taken."""

    __slots__ = ("_claims", "_members")

    def __init__(self) -> None:
        self._claims: dict[ParkedClaim, None] = {}  # insertion-ordered: the first parked runs first
        self._members: Counter[tuple[str, str, str]] = Counter()  # claims parked per (pattern, group, member)

    def __len__(self) -> int:
        return len(self._claims)

    def add(self, claim: ParkedClaim) -> None:
        self._claims[claim] = None
        self._members[_member_of(claim.request)] += 1

    def remove(self, claim: ParkedClaim) -> bool:
        if self._claims.pop(claim, 0) is not None:
            return False
        self._forget(claim)
        return True

    def holds(self, request: ClaimRequest) -> bool:
        """Whether the member of ``request`` has a claim parked here (for the same pattern and group)."""
        return self._members[_member_of(request)] > 0

    def _forget(self, claim: ParkedClaim) -> None:
        key = _member_of(claim.request)
        left = self._members[key] - 1
        if left > 0:
            self._members[key] = left
        else:
            del self._members[key]

    def take(self, topics: Sequence[str]) -> list[ParkedClaim]:
        """Remove and return up to ``MAX_CLAIMS_PER_BATCH`` claims whose pattern matches one of ``topics``."""
        taken: list[ParkedClaim] = []
        for claim in self._claims:
            if not claim.request.ordered and any(claim.matches(name) for name in topics):
                taken.append(claim)
                if len(taken) == MAX_CLAIMS_PER_BATCH:
                    break
        for claim in taken:
            del self._claims[claim]
            self._forget(claim)
        return taken


def _member_of(request: ClaimRequest) -> tuple[str, str, str]:
    return request.pattern, request.group, request.member


async def wait_for_reparking(lot: ParkingLot, ran: Sequence[ParkedClaim]) -> None:
    """Give the members whose claims ``ran`` in the batch just committed up to ``REPARK_TURNS`` loop turns
    to park their next claims, so the batch about to be staged (already queued: publishes arrived while
    the last one was in flight) takes them. Without it that batch went out without them and its commit
    woke each member into a claim of its own: one more statement per event under load."""
    for _ in range(REPARK_TURNS):
        if all(lot.holds(claim.request) for claim in ran):
            return
        await asyncio.sleep(0)


def resolve(claims: Sequence[ParkedClaim], outcomes: Sequence[tuple[list[Delivery], int]]) -> None:
    for claim, outcome in zip(claims, outcomes, strict=True):
        if not claim.future.done():
            claim.future.set_result(outcome)


def not_run(claims: Sequence[ParkedClaim]) -> None:
    resolve(claims, [NOT_RUN] * len(claims))


async def publish_claim(
    conn: PgConn,
    channel: str,
    rows: Sequence[Prepared],
    requests: Sequence[ClaimRequest],
    now: int,
    acks: Sequence[AckJob] = (),
) -> tuple[list[PublishResult], int, list[tuple[list[Delivery], int]], list[int | None]]:
    """Append ``rows`` and run ``requests`` (claims ``claim_new`` takes, ``now`` their time) after them,
    in one statement on ``conn`` in autocommit mode (one transaction, committed synchronously); return the
    publish's results, its highest new seq, per claim ``(deliveries, last_seq)`` or ``NOT_RUN``, and per
    ACK of ``acks`` (run first, ``ackride.py``) its count, or None when it did not run."""
    batch = AppendBatch(rows)
    plans = [request.at(now).plan() for request in requests]
    filters = [filter_args_of(request.pattern) for request in requests]
    text = wire.text_array
    res = await wire.execute(
        conn,
        _PUBLISH_CLAIM_ACKS if acks else _PUBLISH_CLAIM,
        [
            *batch.wire_params(),
            channel.encode(),
            text([r.pattern for r in requests]),
            text([r.group for r in requests]),
            text([r.member for r in requests]),
            wire.int8(now),
            wire.int8_array([plan.deadline for plan in plans]),
            wire.int4_array([r.limit for r in requests]),
            wire.int4_array([f[0] for f in filters]),
            text([f[1] for f in filters]),
            text([f[2] for f in filters]),
            text([f[3] for f in filters]),
            *(_ack_params(acks) if acks else ()),
        ],
    )
    published: list[tuple[int, bool]] = []
    acked: list[int | None] = [None] * len(acks)
    last = 0
    fallback: set[int] = set()
    claimed: dict[int, list[tuple[Any, ...]]] = {}
    value, read_int, read_bool = res.get_value, wire.read_int, wire.read_bool
    for i in range(res.ntuples):
        index = read_int(value(i, 0))
        if index < 0:
            acked[-index - 1] = None if read_bool(value(i, 1)) else read_int(value(i, 2))
        elif index == 0:
            if read_bool(value(i, 1)):
                last = read_int(value(i, 2))
            else:
                published.append((read_int(value(i, 2)), read_bool(value(i, 3))))
        elif read_bool(value(i, 1)):
            fallback.add(index)
        else:
            claimed.setdefault(index, []).append(_claimed_row(value, i))
    results, top = batch.results(published)
    outcomes: list[tuple[list[Delivery], int]] = []
    for index, plan in enumerate(plans, start=1):
        if index in fallback:
            outcomes.append(NOT_RUN)
            continue
        page = sorted(claimed.get(index, []), key=_seq)
        deliveries = [Delivery(event=e, attempt=1, deadline=plan.deadline) for e in decode_rows(page)]
        outcomes.append((deliveries, last))
    return results, top, outcomes, acked


def _ack_params(acks: Sequence[AckJob]) -> list[bytes | None]:
    """``publish_claim_acks``' last six arguments: per ACK its pattern, group and member, then per ref
    its ACK's number (from 1), seq and id."""
    text = wire.text_array
    jobs = [number for number, ack in enumerate(acks, start=1) for _ in ack.refs]
    return [
        text([ack.pattern for ack in acks]),
        text([ack.group for ack in acks]),
        text([ack.member for ack in acks]),
        wire.int4_array(jobs),
        wire.int8_array([ref.seq or 0 for ack in acks for ref in ack.refs]),
        text([ref.id for ack in acks for ref in ack.refs]),
    ]


def _seq(row: tuple[Any, ...]) -> int:
    return int(row[0])


def _claimed_row(value: Callable[[int, int], bytes | None], i: int) -> tuple[Any, ...]:
    """Row ``i`` of ``publish_claim``'s result as ``decode_rows`` reads it: ``(seq, id, topic_id, ts, key,
    payload, meta, topic)``, payload and meta the JSON text as bytes."""
    key, topic = value(i, 7), value(i, 10)
    return (
        wire.read_int(value(i, 2)),
        (value(i, 4) or b"").decode(),
        wire.read_int(value(i, 5)),
        wire.read_int(value(i, 6)),
        None if key is None else key.decode(),
        value(i, 8),
        value(i, 9),
        None if topic is None else topic.decode(),
    )
