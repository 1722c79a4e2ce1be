"""The async ``OutboxStore`` protocol: what a drainer and the ops API need from an outbox database.

One implementation per database (``sqlite.py``, ``postgres.py``, ``mysql.py``, ``mongo/store.py``), each an
``OutboxBackend``: that base class checks the arguments and resolves ``now`` once for all of them and calls
one hook per method for the database work.
Semantics every backend keeps:

* ``claim_batch`` takes up to ``limit`` pending records whose ``available_at <= now``, oldest first, in
  one round trip where the database allows it. Each claimed record gets ``status = "claimed"``,
  ``claimed_by = worker_id``, ``lease_until = now + lease_ms``, ``attempts + 1`` and a ``claim_token``
  that is fresh for this call. Two concurrent claims never return the same record.
  With ``ordered_by_key``, a record with a key is not claimed while an earlier record (lower ``seq``) of
  the same key is unsent: claimed, dead, or pending but not yet available. Earlier records of the key that
  are claimable now are claimed in the same batch, before it, so one batch may carry several records of
  a key in order. All drainers of one outbox must agree on ``ordered_by_key``.
* ``mark_sent``, ``mark_failed`` and ``release`` are fenced by the claim token: they change only records
  still claimed under the token they were claimed with, and return how many they changed. A drainer whose
  lease expired and whose records were claimed again by another drainer changes nothing.
* ``release`` puts claimed records back to pending and refunds the attempt (graceful stop, sink down).
* ``requeue_expired`` puts claimed records whose lease has passed back to pending (the attempt stays
  counted: the owner crashed or stalled with them).
* ``retry`` (dead → pending, attempts reset) and ``purge`` (delete dead records) are operator actions.
* ``delete_sent_older_than`` deletes sent records in batches of ``batch_size`` (short transactions).
* ``wait`` returns when new records may be claimable (insert notification) or after ``timeout_s``.
* Every ``now`` parameter defaults to the wall clock in ms; tests pass it to move time without sleeping.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from outboxhub.ids import now_ms
from outboxhub.outbox.model import Failure, OutboxRecord, OutboxStats

__all__ = [
    "OutboxBackend",
    "OutboxStore",
    "StatsRow",
    "check_ids",
    "check_positive",
    "check_purge_args",
    "make_stats",
    "readable",
    "resolve_now",
    "take_wake",
]


@runtime_checkable
class OutboxStore(Protocol):
    """An outbox table or collection in an application's database, seen by drainers and operators."""

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        ...

    @property
    def table(self) -> str:
        """The outbox table (or collection) name."""
        ...

    async def ensure_schema(self) -> None:
        """Create the table, its indexes (and wake-up trigger where there is one) if missing."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks. Idempotent."""
        ...

    async def claim_batch(
        self,
        limit: int,
        lease_ms: int,
        worker_id: str,
        *,
        ordered_by_key: bool = False,
        now: int | None = None,
    ) -> list[OutboxRecord]:
        """Claim up to ``limit`` records, ordered by ``seq`` (see the module docstring)."""
        ...

    async def mark_sent(self, records: Sequence[OutboxRecord], *, now: int | None = None) -> int:
        """Mark published records sent in one statement; return how many were still ours."""
        ...

    async def mark_failed(self, failures: Sequence[Failure], *, now: int | None = None) -> int:
        """Apply each failure's verdict: pending with ``available_at = now + delay_ms``, or dead; either
        way ``last_err`` is the error text. Return how many were still ours."""
        ...

    async def release(
        self, records: Sequence[OutboxRecord], *, delay_ms: int = 0, now: int | None = None
    ) -> int:
        """Give claimed records back (pending, attempt refunded, available after ``delay_ms``)."""
        ...

    async def requeue_expired(self, *, now: int | None = None) -> int:
        """Return claimed records whose lease passed to pending; return how many."""
        ...

    async def retry(self, ids: Sequence[str] | Literal["all"], *, now: int | None = None) -> int:
        """Operator: make dead records (the given ids, or ``"all"``) pending again with attempts reset."""
        ...

    async def purge(
        self,
        ids: Sequence[str] | None = None,
        *,
        older_than_ms: int | None = None,
        now: int | None = None,
    ) -> int:
        """Operator: delete dead records by id, or those created more than ``older_than_ms`` ago."""
        ...

    async def stats(self, *, now: int | None = None) -> OutboxStats:
        """Pending, claimed and dead counts, the oldest pending record's age, the next retry time."""
        ...

    async def list_dead(self, limit: int = 100) -> list[OutboxRecord]:
        """Dead records, oldest first."""
        ...

    async def get(self, record_id: str) -> OutboxRecord | None:
        """One record by id, whatever its status."""
        ...

    async def delete_sent_older_than(
        self, retention_ms: int, *, batch_size: int = 1000, now: int | None = None
    ) -> int:
        """Delete records sent more than ``retention_ms`` ago, ``batch_size`` per transaction."""
        ...

    async def wait(self, timeout_s: float) -> bool:
        """Sleep until records may have been added (True) or ``timeout_s`` passed (False)."""
        ...


def check_ids(ids: object, *, what: str) -> list[str]:
    """``ids`` as a list of strings, or ``ValueError`` naming the operator call (shared by backends)."""
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise ValueError(f"{what}: ids must be a sequence of record ids (or 'all' for retry)")
    bad = [i for i in ids if not isinstance(i, str)]
    if bad:
        raise ValueError(f"{what}: record ids must be strings, got {bad[0]!r}")
    return list(ids)


def check_positive(value: int, *, name: str) -> None:
    """``ValueError`` unless ``value`` is an int > 0."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_purge_args(ids: object, older_than_ms: object) -> None:
    """``ValueError`` when a purge names neither ids nor an age (it would be a no-op or a surprise)."""
    if ids is None and older_than_ms is None:
        raise ValueError("purge: give ids or older_than_ms (older_than_ms=0 purges every dead record)")


def resolve_now(now: int | None) -> int:
    """``now`` as given (tests move time), else the wall clock in ms."""
    return now_ms() if now is None else now


def make_stats(at: int, row: StatsRow) -> OutboxStats:
    """:class:`OutboxStats` at ``at`` from what ``OutboxBackend._stats`` read (the age of the oldest pending
    record never goes negative when clocks differ)."""
    return OutboxStats(
        pending=row.pending,
        claimed=row.claimed,
        dead=row.dead,
        oldest_pending_age_ms=None if row.oldest_ts is None else max(0, at - row.oldest_ts),
        next_retry_at=row.next_retry_at,
    )


async def take_wake(wake: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``wake`` (set by a backend's listener or change stream) and clear it:
    what ``wait`` returns for a backend that is told about inserts (True: woken, False: timed out)."""
    if not wake.is_set():
        try:
            await asyncio.wait_for(wake.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
    wake.clear()
    return True


def readable(decoded: Iterable[OutboxRecord | str]) -> list[OutboxRecord]:
    """The records among decoding results (an error string is a record that could not be read)."""
    return [r for r in decoded if isinstance(r, OutboxRecord)]


class StatsRow(NamedTuple):
    """What ``OutboxBackend._stats`` reads: the counts, the oldest pending ``ts``, the next retry time."""

    pending: int
    claimed: int
    dead: int
    oldest_ts: int | None
    next_retry_at: int | None


class OutboxBackend(ABC):
    """The ``OutboxStore`` methods whose argument handling every backend shares: positive ``limit`` /
    ``lease_ms`` / ``batch_size``, id lists, empty inputs (0 without a round trip) and the default ``now``.
    Each calls one ``_hook`` with checked arguments and times resolved to ms; a backend implements the
    hooks and the rest of the protocol (``url``, ``table``, ``ensure_schema``, ``close``, ``get``, ``wait``).
    """

    async def claim_batch(
        self,
        limit: int,
        lease_ms: int,
        worker_id: str,
        *,
        ordered_by_key: bool = False,
        now: int | None = None,
    ) -> list[OutboxRecord]:
        check_positive(limit, name="limit")
        check_positive(lease_ms, name="lease_ms")
        return await self._claim_batch(limit, lease_ms, worker_id, ordered_by_key, resolve_now(now))

    @abstractmethod
    async def _claim_batch(
        self, limit: int, lease_ms: int, worker_id: str, ordered: bool, now: int
    ) -> list[OutboxRecord]: ...

    async def mark_sent(self, records: Sequence[OutboxRecord], *, now: int | None = None) -> int:
        return await self._mark_sent(records, resolve_now(now)) if records else 0

    @abstractmethod
    async def _mark_sent(self, records: Sequence[OutboxRecord], now: int) -> int:
        """Mark ``records`` (at least one) sent at ``now``."""

    async def mark_failed(self, failures: Sequence[Failure], *, now: int | None = None) -> int:
        return await self._mark_failed(failures, resolve_now(now)) if failures else 0

    @abstractmethod
    async def _mark_failed(self, failures: Sequence[Failure], now: int) -> int:
        """Apply ``failures`` (at least one); a retried record is available at ``now + delay_ms``."""

    async def release(
        self, records: Sequence[OutboxRecord], *, delay_ms: int = 0, now: int | None = None
    ) -> int:
        return await self._release(records, resolve_now(now) + delay_ms) if records else 0

    @abstractmethod
    async def _release(self, records: Sequence[OutboxRecord], available_at: int) -> int:
        """Give ``records`` (at least one) back, available at ``available_at``."""

    async def requeue_expired(self, *, now: int | None = None) -> int:
        return await self._requeue_expired(resolve_now(now))

    @abstractmethod
    async def _requeue_expired(self, now: int) -> int: ...

    async def retry(self, ids: Sequence[str] | Literal["all"], *, now: int | None = None) -> int:
        at = resolve_now(now)
        return await self._retry(None if ids == "all" else check_ids(ids, what="retry"), at)

    @abstractmethod
    async def _retry(self, ids: list[str] | None, now: int) -> int:
        """Make the dead records ``ids`` (None: all of them) pending at ``now``, attempts reset."""

    async def purge(
        self,
        ids: Sequence[str] | None = None,
        *,
        older_than_ms: int | None = None,
        now: int | None = None,
    ) -> int:
        check_purge_args(ids, older_than_ms)
        id_list = None if ids is None else check_ids(ids, what="purge")
        return await self._purge(id_list, None if older_than_ms is None else resolve_now(now) - older_than_ms)

    @abstractmethod
    async def _purge(self, ids: list[str] | None, created_by: int | None) -> int:
        """Delete dead records: those of ``ids`` if given, and those with ``ts <= created_by`` if given."""

    async def stats(self, *, now: int | None = None) -> OutboxStats:
        at = resolve_now(now)
        return make_stats(at, await self._stats(at))

    @abstractmethod
    async def _stats(self, now: int) -> StatsRow:
        """The counts; ``next_retry_at``: the earliest ``available_at`` of a pending record after ``now``."""

    async def list_dead(self, limit: int = 100) -> list[OutboxRecord]:
        check_positive(limit, name="limit")
        return await self._list_dead(limit)

    @abstractmethod
    async def _list_dead(self, limit: int) -> list[OutboxRecord]: ...

    async def delete_sent_older_than(
        self, retention_ms: int, *, batch_size: int = 1000, now: int | None = None
    ) -> int:
        check_positive(batch_size, name="batch_size")
        return await self._delete_sent(resolve_now(now) - retention_ms, batch_size)

    @abstractmethod
    async def _delete_sent(self, cutoff: int, batch_size: int) -> int:
        """Delete records sent before ``cutoff``, ``batch_size`` per transaction; return how many."""

    @staticmethod
    async def _in_batches(delete_batch: Callable[[], Awaitable[int]], batch_size: int) -> int:
        """Call ``delete_batch`` until it deletes fewer than ``batch_size``; return the total."""
        total = 0
        while True:
            deleted = await delete_batch()
            total += deleted
            if deleted < batch_size:
                return total
