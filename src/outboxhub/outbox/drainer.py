"""The drainer: claims outbox records in batches, publishes each batch to a sink in one call, marks it sent.

One pass (``drain_once``)::

    claim_batch (lease, attempts + 1) → sink.publish_batch(events) → mark_sent (one statement, shielded)

The event id is the record id, so a batch published again after a crash (lease expired before
``mark_sent``) is deduplicated by the hub: every record is in the log exactly once.

Failures:

* the sink is unreachable (``StoreUnavailable``, ``OSError``, ``TimeoutError``): the batch is released
  with its attempt refunded and the drainer pauses with exponential backoff. An outage never kills records.
* any other error: a single record fails alone; in a batch, the records are published one at a time to
  find the culprit(s). Each failure gets a pure retry verdict (``backoff.retry_verdict``): pending again
  after an exponential, jittered delay, or ``dead`` with its last error once ``max_attempts`` is reached.
  With ``ordered_by_key``, later records of a failed record's key are released, not published.
* a record whose topic or JSON cannot be read is dead at once: retrying cannot fix it; so is a record
  claimed more than ``max_attempts`` times (only expired leases get it there: it crashes its drainers).

``run()`` loops until ``stop()``; ``run_until_idle()`` returns once nothing is left to do (tests, scripts).
Counters on the drainer (``published``, ``retried``, ``dead``, …) are plain ints for the metrics exporter.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

import msgspec

from outboxhub.client import HubConnectionError, NotAuthenticated, RateLimited, Unavailable
from outboxhub.errors import ConfigError, StoreError, StoreUnavailable, TopicError
from outboxhub.ids import new_id, now_ms
from outboxhub.model import NewEvent, PublishResult
from outboxhub.outbox.backoff import RetryPolicy, backoff_ms, retry_verdict
from outboxhub.outbox.base import OutboxStore
from outboxhub.outbox.model import Failure, OutboxRecord, OutboxStats, Verdict
from outboxhub.topics import validate_topic

__all__ = [
    "TRANSIENT_ERRORS",
    "Drainer",
    "DrainerMetrics",
    "DrainerSettings",
    "PublishOneSink",
    "Sink",
    "run_drainers",
]

log = logging.getLogger("outboxhub.outbox")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    OSError,
    TimeoutError,
    HubConnectionError,
    Unavailable,
    RateLimited,
    NotAuthenticated,
)
"""Sink errors that mean "the hub is unreachable", not "this record is bad": no attempt is used up."""

MAX_ERROR_TEXT = 2_000
_checked_topic = functools.lru_cache(maxsize=4096)(validate_topic)


@runtime_checkable
class Sink(Protocol):
    """Where drained records go. The in-process ``Bus`` and every ``Store`` satisfy it.

    ``publish_batch`` must be idempotent by event id (a duplicate returns the original's seq) and return
    one result per event, in order. With ``ordered_by_key`` it must store the events of one key in batch
    order: the ``Bus`` and the stores store a whole batch in order; ``HubClient.publish_batch`` keeps
    per-key order (``outboxhub drain --url`` asks it to only when the drainer is ordered by key).
    """

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]: ...


class PublishOneSink:
    """Adapter for a client that publishes one event at a time (``async publish(event)``).

    Not needed for outboxhub's own SDK: ``HubClient`` has ``publish_batch`` and is a ``Sink`` as it is
    (that is what ``outboxhub drain --url`` uses). The events are pipelined (sent without waiting for each
    reply) in call order. That does not guarantee per-key order if the hub refuses one event and stores a
    later one already on its way, so do not use it with ``ordered_by_key`` unless the client re-sends in
    order and holds back later events of a key (``HubClient`` does).
    """

    def __init__(self, publish: Callable[[NewEvent], Awaitable[PublishResult]]) -> None:
        self._publish = publish

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        return list(await asyncio.gather(*(self._publish(event) for event in events)))


class DrainerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How a drainer works. Every duration is in milliseconds (the field says so).

    ``idle_wait_ms`` is the longest sleep when the outbox is empty: a fallback poll where the database
    cannot wake the drainer (and when a wake-up was lost). ``retention_ms=None`` keeps sent records
    forever; 0 deletes them at the next cleanup. ``ordered_by_key`` must be the same for every drainer
    of one outbox.
    """

    batch_size: int = 500
    lease_ms: int = 30_000
    max_attempts: int = 10
    backoff_base_ms: int = 500
    backoff_max_ms: int = 300_000
    backoff_jitter: float = 0.5
    sink_backoff_max_ms: int = 30_000
    idle_wait_ms: int = 1_000
    requeue_interval_ms: int = 5_000
    retention_ms: int | None = 86_400_000
    cleanup_interval_ms: int = 60_000
    cleanup_batch_size: int = 1_000
    concurrency: int = 2
    ordered_by_key: bool = False
    worker_id: str | None = None

    def __post_init__(self) -> None:
        for name in (
            "batch_size",
            "lease_ms",
            "sink_backoff_max_ms",
            "idle_wait_ms",
            "requeue_interval_ms",
            "cleanup_interval_ms",
            "cleanup_batch_size",
            "concurrency",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"drainer setting {name} must be a positive integer, got {value!r}")
        if self.retention_ms is not None and self.retention_ms < 0:
            raise ConfigError(f"drainer setting retention_ms must be >= 0 or None, got {self.retention_ms}")
        self.retry_policy  # noqa: B018 - validates the retry fields (ConfigError names the field)

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry fields as a ``RetryPolicy`` for ``retry_verdict``."""
        return RetryPolicy(
            max_attempts=self.max_attempts,
            base_ms=self.backoff_base_ms,
            max_ms=self.backoff_max_ms,
            jitter=self.backoff_jitter,
        )


class DrainerMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a drainer's counters (since it was created)."""

    published: int
    duplicates: int
    retried: int
    dead: int
    released: int
    batches: int
    sink_errors: int
    store_errors: int


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _event(record: OutboxRecord) -> NewEvent:
    return NewEvent(
        id=record.id, topic=record.topic, payload=record.payload, key=record.key, headers=record.headers
    )


class _Outcome:
    """What happened to the records of one batch; ``inflight`` are those whose fate is not yet written."""

    __slots__ = ("failures", "inflight", "release", "results", "sent")

    def __init__(self, batch: list[OutboxRecord]) -> None:
        self.inflight = batch
        self.sent: list[OutboxRecord] = []
        self.results: list[PublishResult] = []
        self.failures: list[Failure] = []
        self.release: list[OutboxRecord] = []


class Drainer:
    """Drains one outbox into one sink. Several drainers may share an outbox (leases keep them apart)."""

    def __init__(
        self,
        outbox: OutboxStore,
        sink: Sink,
        settings: DrainerSettings | None = None,
        *,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.outbox = outbox
        self.sink = sink
        self.settings = settings = settings or DrainerSettings()
        self.worker_id = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self._policy = settings.retry_policy
        self._rand = rand
        self._stop = asyncio.Event()
        self._sink_failures = 0
        self._next_requeue = 0.0
        self._next_cleanup = 0.0
        self._next_retry_at: int | None = None
        self.published = 0
        self.duplicates = 0
        self.retried = 0
        self.dead = 0
        self.released = 0
        self.batches = 0
        self.sink_errors = 0
        self.store_errors = 0

    @property
    def metrics(self) -> DrainerMetrics:
        """The counters as one value object."""
        return DrainerMetrics(
            published=self.published,
            duplicates=self.duplicates,
            retried=self.retried,
            dead=self.dead,
            released=self.released,
            batches=self.batches,
            sink_errors=self.sink_errors,
            store_errors=self.store_errors,
        )

    async def stats(self) -> OutboxStats:
        """The outbox's counts (pending, claimed, dead, oldest pending age)."""
        return await self.outbox.stats()

    def stop(self) -> None:
        """Ask ``run``/``run_until_idle`` to return after the current batch (claims are released)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- one pass -----------------------------------------------------------------------------------------

    async def drain_once(self) -> int:
        """Claim one batch, publish it, record the outcome; return how many records were claimed."""
        s = self.settings
        batch = await self.outbox.claim_batch(
            s.batch_size, s.lease_ms, self.worker_id, ordered_by_key=s.ordered_by_key
        )
        if not batch:
            return 0
        self.batches += 1
        outcome = _Outcome(batch)
        try:
            await self._publish(outcome)
            await self._settle(outcome)
        finally:
            if outcome.inflight:
                # Cancelled (or the store failed) before the outcome was written: give the rest back.
                leftover, outcome.inflight = outcome.inflight, []
                with contextlib.suppress(Exception):
                    self.released += await asyncio.shield(self.outbox.release(leftover))
        return len(batch)

    async def _drain_burst(self) -> int:
        """``drain_once`` until nothing is claimable, in ``concurrency`` lanes: while one lane publishes,
        another claims or marks. Return how many records were claimed."""

        async def lane() -> int:
            total = 0
            while not self._stop.is_set():
                claimed = await self.drain_once()
                total += claimed
                if not claimed or self._sink_failures:
                    break
            return total

        if self.settings.concurrency == 1:
            return await lane()
        lanes = [asyncio.create_task(lane()) for _ in range(self.settings.concurrency)]
        try:
            await asyncio.wait(lanes, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in lanes:
                task.cancel()  # no-op for finished lanes; the others release their batch
            await asyncio.gather(*lanes, return_exceptions=True)
        for task in lanes:
            error = task.exception()
            if error is not None:
                raise error
        return sum(task.result() for task in lanes)

    async def _publish(self, outcome: _Outcome) -> None:
        good: list[OutboxRecord] = []
        ordered = self.settings.ordered_by_key
        failed_keys: set[str] = set()  # ordered mode: keys with an earlier record failing in this batch
        for record in outcome.inflight:  # in seq order
            if ordered and record.key is not None and record.key in failed_keys:
                outcome.release.append(record)
                continue
            problem = self._unpublishable(record)
            if problem is None:
                good.append(record)
                continue
            outcome.failures.append(Failure(record=record, error=problem, verdict=Verdict(dead=True)))
            if record.key is not None:
                failed_keys.add(record.key)
        if not good:
            return
        try:
            results = await self.sink.publish_batch([_event(r) for r in good])
            if len(results) != len(good):
                raise RuntimeError(f"sink returned {len(results)} results for {len(good)} events")
        except TRANSIENT_ERRORS as exc:
            self._sink_down(outcome, good, exc)
            return
        except Exception as exc:
            if len(good) == 1:
                self._failed(outcome, good[0], exc)
            else:
                await self._isolate(outcome, good, exc)
            return
        self._sink_failures = 0
        outcome.sent.extend(good)
        outcome.results.extend(results)

    def _unpublishable(self, record: OutboxRecord) -> str | None:
        """Why ``record`` must go dead without a publish, or None."""
        if record.attempts > self._policy.max_attempts:
            # Only expired leases push attempts past the maximum (failures stop at it, sink outages
            # refund it): the record keeps crashing or stalling its drainers. Stop the loop, as arq does.
            return (
                f"claimed {record.attempts} times without completing: its drainers crashed or stalled "
                f"(lease {self.settings.lease_ms} ms)"
            )
        try:
            _checked_topic(record.topic)
        except TopicError as exc:
            return str(exc)
        return None

    async def _isolate(self, outcome: _Outcome, records: list[OutboxRecord], exc: Exception) -> None:
        """The batch failed: publish its records one by one to find which fail."""
        log.info(
            "outbox %s: batch of %d failed (%s); publishing one by one", self.outbox.table, len(records), exc
        )
        failed_keys: set[str] = set()
        for index, record in enumerate(records):
            if self.settings.ordered_by_key and record.key is not None and record.key in failed_keys:
                outcome.release.append(record)
                continue
            try:
                (result,) = await self.sink.publish_batch([_event(record)])
            except TRANSIENT_ERRORS as down:
                self._sink_down(outcome, records[index:], down)
                return
            except Exception as one:
                self._failed(outcome, record, one)
                if record.key is not None:
                    failed_keys.add(record.key)
            else:
                self._sink_failures = 0
                outcome.sent.append(record)
                outcome.results.append(result)

    def _failed(self, outcome: _Outcome, record: OutboxRecord, exc: Exception) -> None:
        verdict = retry_verdict(record.attempts, self._policy, self._rand())
        outcome.failures.append(Failure(record=record, error=_error_text(exc), verdict=verdict))

    def _sink_down(self, outcome: _Outcome, records: Sequence[OutboxRecord], exc: BaseException) -> None:
        self.sink_errors += 1
        self._sink_failures += 1
        log.warning(
            "outbox %s: sink unavailable (%s); releasing %d records", self.outbox.table, exc, len(records)
        )
        outcome.release.extend(records)

    def _sink_pause_ms(self) -> int:
        if not self._sink_failures:
            return 0
        s = self.settings
        raw = backoff_ms(self._sink_failures, base_ms=max(1, s.backoff_base_ms), max_ms=s.sink_backoff_max_ms)
        return raw - int(raw * s.backoff_jitter * self._rand())

    @staticmethod
    def _settling(outcome: _Outcome, records: Sequence[OutboxRecord]) -> None:
        # Records leave the in-flight list just before their write: a cancellation from here on must
        # not release them (the shielded write completes), and releases whatever is still in the list.
        done = {id(r) for r in records}
        outcome.inflight = [r for r in outcome.inflight if id(r) not in done]

    async def _settle(self, outcome: _Outcome) -> None:
        """Record the outcome; the writes are shielded so a cancellation cannot lose a mark-sent."""
        if outcome.sent:
            self._settling(outcome, outcome.sent)
            marked = await asyncio.shield(self.outbox.mark_sent(outcome.sent))
            if marked < len(outcome.sent):
                log.warning(
                    "outbox %s: %d of %d published records were no longer ours (lease expired); "
                    "their new owner re-publishes them and the hub deduplicates",
                    self.outbox.table,
                    len(outcome.sent) - marked,
                    len(outcome.sent),
                )
            self.published += len(outcome.sent)
            self.duplicates += sum(1 for r in outcome.results if r.duplicate)
        if outcome.failures:
            self._settling(outcome, [f.record for f in outcome.failures])
            await asyncio.shield(self.outbox.mark_failed(outcome.failures))
            for failure in outcome.failures:
                if failure.verdict.dead:
                    self.dead += 1
                    log.warning(
                        "outbox %s: record %s (%s) is dead after %d attempts: %s",
                        self.outbox.table,
                        failure.record.id,
                        failure.record.topic,
                        failure.record.attempts,
                        failure.error,
                    )
                else:
                    self.retried += 1
                    at = now_ms() + failure.verdict.delay_ms
                    self._next_retry_at = min(at, self._next_retry_at or at)
        if outcome.release:
            self._settling(outcome, outcome.release)
            delay = self._sink_pause_ms()
            self.released += await asyncio.shield(self.outbox.release(outcome.release, delay_ms=delay))

    # -- loops --------------------------------------------------------------------------------------------

    async def _maintain(self, *, force_requeue: bool = False) -> None:
        loop = asyncio.get_running_loop()
        s = self.settings
        if force_requeue or loop.time() >= self._next_requeue:
            self._next_requeue = loop.time() + s.requeue_interval_ms / 1000
            requeued = await self.outbox.requeue_expired()
            if requeued:
                log.info("outbox %s: requeued %d records whose lease expired", self.outbox.table, requeued)
        if s.retention_ms is not None and loop.time() >= self._next_cleanup:
            self._next_cleanup = loop.time() + s.cleanup_interval_ms / 1000
            await self.outbox.delete_sent_older_than(s.retention_ms, batch_size=s.cleanup_batch_size)

    async def _wait(self, timeout_s: float) -> None:
        """Sleep until the outbox signals new records, ``stop()`` is called, or ``timeout_s`` passes."""
        if self._stop.is_set() or timeout_s <= 0:
            return
        waiter = asyncio.ensure_future(self.outbox.wait(timeout_s))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
            results = await asyncio.gather(waiter, stopper, return_exceptions=True)
        for result in results:
            if isinstance(result, StoreError):
                raise result

    def _idle_timeout_s(self) -> float:
        timeout_ms = self.settings.idle_wait_ms
        if self._next_retry_at is not None:
            until = self._next_retry_at - now_ms()
            if until <= timeout_ms:
                self._next_retry_at = None
                timeout_ms = max(0, until)
        return timeout_ms / 1000

    async def run_until_idle(self) -> None:
        """Drain until no record is claimable now, claimed (by anyone) or waiting for a retry.

        Records in backoff and records claimed by other (or crashed) drainers are waited for; pending
        records blocked behind a dead record of their key (``ordered_by_key``) are not. Errors propagate.
        """
        while not self._stop.is_set():
            await self._maintain()
            if await self._drain_burst():
                continue
            pause = self._sink_pause_ms()
            if pause:
                await self._wait(pause / 1000)
                continue
            await self._maintain(force_requeue=True)
            at = now_ms()
            stats = await self.outbox.stats(now=at)
            if stats.claimed == 0 and stats.next_retry_at is None:
                if await self.drain_once():  # a retry that came due between the claim and the stats
                    continue
                return
            timeout_ms = self.settings.idle_wait_ms
            if stats.next_retry_at is not None:
                timeout_ms = min(timeout_ms, max(1, stats.next_retry_at - at))
            await self._wait(timeout_ms / 1000)

    async def run(self) -> None:
        """Drain until ``stop()`` (or cancellation). Store and sink errors are logged and retried with
        backoff; a cancellation releases the batch in flight."""
        store_failures = 0
        while not self._stop.is_set():
            try:
                await self._maintain()
                claimed = await self._drain_burst()
                store_failures = 0
            except StoreError as exc:
                self.store_errors += 1
                store_failures += 1
                delay = backoff_ms(store_failures, base_ms=100, max_ms=self.settings.sink_backoff_max_ms)
                log.warning("outbox %s: %s; retrying in %d ms", self.outbox.table, exc, delay)
                await self._sleep_or_stop(delay / 1000)
                continue
            except Exception:
                self.store_errors += 1
                log.exception("outbox %s: drainer pass failed", self.outbox.table)
                await self._sleep_or_stop(1.0)
                continue
            pause = self._sink_pause_ms()
            if pause:
                await self._sleep_or_stop(pause / 1000)
            elif not claimed:
                try:
                    await self._wait(self._idle_timeout_s())
                except StoreError as exc:
                    log.debug("outbox %s: wait failed: %s", self.outbox.table, exc)
                    await self._sleep_or_stop(self.settings.idle_wait_ms / 1000)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)


async def run_drainers(
    urls: Sequence[str],
    sink: Sink,
    settings: DrainerSettings | None = None,
    *,
    ensure_schema: bool = True,
    on_start: Callable[[list[Drainer]], None] | None = None,
    stop_grace_s: float = 10.0,
) -> None:
    """Drain every outbox URL into ``sink`` until cancelled: what ``outboxhub serve --outbox URL`` (the
    option may be repeated) and ``outboxhub drain`` call.

    Every URL is opened (and, with ``ensure_schema``, its table created) before draining starts, so a
    bad URL or an unreachable database fails at once. ``on_start`` receives the drainers (for metrics).
    On cancellation each drainer finishes or releases its batch (up to ``stop_grace_s``), then the
    connections are closed.
    """
    from outboxhub.outbox.url import open_outbox

    stores: list[OutboxStore] = []
    try:
        for url in urls:
            store = await open_outbox(url)
            stores.append(store)
            if ensure_schema:
                await store.ensure_schema()
        drainers = [Drainer(store, sink, settings) for store in stores]
        if on_start is not None:
            on_start(drainers)
        tasks = [asyncio.create_task(d.run(), name=f"drainer:{d.outbox.url}") for d in drainers]
        try:
            # asyncio.wait, not gather: cancelling us must not cancel the drainers mid-batch.
            if tasks:
                await asyncio.wait(tasks)
            for task in tasks:
                task.result()
        finally:
            for drainer in drainers:
                drainer.stop()
            if tasks:
                _, late = await asyncio.wait(tasks, timeout=stop_grace_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for store in stores:
            with contextlib.suppress(Exception):
                await store.close()
