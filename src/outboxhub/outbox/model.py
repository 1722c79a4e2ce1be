"""The outbox record, its statuses and the small value objects the stores and the drainer exchange.

Field names follow the Mongo record of the original TypeScript outbox (docs/outbox.md): ``_id`` is
``id`` in SQL, ``topic``, ``payload``, ``headers``, ``status``, ``claimed_by``, ``lease_until``,
``last_err``, ``ts``, ``attempts``; plus what a safe drainer needs: ``key`` (per-key ordering),
``claim_token`` (lease fencing), ``available_at`` (retry backoff) and ``sent_at`` (retention). All times
are integer milliseconds since the epoch.

Lifecycle::

    pending ──claim──▶ claimed ──mark_sent──▶ sent ──retention──▶ (deleted)
       ▲                  │
       ├──mark_failed─────┤ (retry verdict: available_at = now + backoff)
       ├──release─────────┤ (graceful stop, sink unavailable: the attempt is refunded)
       ├──requeue_expired─┘ (lease passed: the owner crashed or stalled)
       │                  └──mark_failed──▶ dead ──purge──▶ (deleted)
       └──────────retry (operator)───────────┘

That outbox's terminal ``"error"`` status is ``"dead"`` here.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

__all__ = [
    "CLAIMED",
    "DEAD",
    "PENDING",
    "SENT",
    "STATUSES",
    "Failure",
    "OutboxRecord",
    "OutboxStats",
    "PreparedRecord",
    "Status",
    "Verdict",
]

Status = Literal["pending", "claimed", "sent", "dead"]

PENDING: Final = "pending"
CLAIMED: Final = "claimed"
SENT: Final = "sent"
DEAD: Final = "dead"
STATUSES: Final[tuple[Status, ...]] = (PENDING, CLAIMED, SENT, DEAD)


class PreparedRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A validated record about to be inserted by ``add``: what every backend's insert receives.

    ``payload_json`` is the payload already encoded to JSON (SQL backends store the text); ``payload`` is
    the original value (document databases store it natively). ``headers_json`` is None without headers.
    """

    id: str
    topic: str
    payload: Any
    payload_json: str
    key: str | None
    headers: dict[str, str] | None
    headers_json: str | None
    ts: int


class OutboxRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One outbox record as a store returns it.

    ``seq`` is the backend's insertion order (the SQL row number; a document store may leave it 0 and
    order by ``ts`` and ``id``). ``attempts`` counts claims (bumped with the lease, so a record that
    crashed its drainer has used an attempt). ``claim_token`` is fresh on every claim and fences
    ``mark_sent``/``mark_failed``/``release``.
    """

    id: str
    topic: str
    payload: Any = None
    key: str | None = None
    headers: dict[str, str] | None = None
    status: Status = PENDING
    ts: int = 0
    attempts: int = 0
    available_at: int = 0
    claimed_by: str | None = None
    claim_token: str | None = None
    lease_until: int | None = None
    last_err: str | None = None
    sent_at: int | None = None
    seq: int = 0


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """What to do with a record whose publish failed: retry after ``delay_ms``, or mark it ``dead``."""

    dead: bool
    delay_ms: int = 0


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """A failed record with its error text and the verdict for ``OutboxStore.mark_failed``."""

    record: OutboxRecord
    error: str
    verdict: Verdict


class OutboxStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts for dashboards and metrics.

    ``oldest_pending_age_ms`` is now minus the ``ts`` of the oldest pending record (None when nothing is
    pending). ``next_retry_at`` is the earliest ``available_at`` among pending records still in backoff
    (None when none is waiting). Sent records are not counted (there may be millions).
    """

    pending: int
    claimed: int
    dead: int
    oldest_pending_age_ms: int | None = None
    next_retry_at: int | None = None
