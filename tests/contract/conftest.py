"""The store contract suite's fixtures: every test runs once per registered store backend.

``store_factory`` opens stores on one fresh database per test; calling it again opens another store on the
same database (restart tests close one and reopen). ``store`` is the first store it opens.

Adding a backend: write an async context manager ``database(tmp_path) -> url`` that creates a fresh database
(or schema) for one test and drops it afterwards, and append a ``Backend`` to ``BACKENDS`` (with the pytest
marks naming the service it needs). The tests themselves stay unchanged.
"""

from __future__ import annotations

import fnmatch
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mongo_server import mongo_database
from nats_server import nats_database
from outboxhub.store import Store

from . import StoreFactory

__all__ = ["BACKENDS", "Backend"]


@dataclass(frozen=True)
class Backend:
    """A store backend under contract: how to make (and drop) a fresh database for one test."""

    name: str
    database: Callable[[Path], AbstractAsyncContextManager[str]]
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())
    not_applicable: tuple[tuple[str, str], ...] = field(default=())
    """(test node id glob, reason): contract tests whose rule this backend deliberately does not follow;
    each reason is explained in the backend's documentation. They are reported as skipped with it."""


@asynccontextmanager
async def sqlite_database(tmp_path: Path) -> AsyncIterator[str]:
    """A new SQLite file in the test's tmp_path (removed with it)."""
    yield f"sqlite:///{tmp_path / 'contract.db'}"


@asynccontextmanager
async def postgres_database(tmp_path: Path) -> AsyncIterator[str]:
    """A new schema on the test PostgreSQL (OUTBOXHUB_TEST_PG_URL, default 127.0.0.1:5432/test), dropped
    after the test. Skips naming the server when it is unreachable; fails instead under CI=true."""
    from outboxhub.testing.postgres import throwaway_schema

    async with throwaway_schema() as url:
        yield url


_JS_CLOCK = (
    "JetStream keeps AckWait and NAK delays on the server's own clock; a claim's now= cannot move it"
    " (docs/jetstream.md, 'Time')"
)
_JS_KEYS = "ordered_by_key has no JetStream counterpart; the NATS store refuses it (docs/jetstream.md)"
NATS_NOT_APPLICABLE: tuple[tuple[str, str], ...] = (
    *(
        (f"*test_ordering.py::{test}[[]*", _JS_KEYS)
        for test in (
            "test_one_event_per_key_in_flight",
            "test_timed_out_event_is_redelivered_before_the_next_of_its_key",
            "test_nacked_event_keeps_its_key_blocked",
            "test_dead_letter_frees_the_key",
            "test_released_event_keeps_its_place",
            "test_keys_are_blocked_per_group",
            "test_a_hot_key_does_not_starve_other_keys",
        )
    ),
    ("*test_tenancy.py::test_a_held_back_event_cannot_be_settled_by_a_member[[]*", _JS_KEYS),
    *(
        (f"*{test}[[]*", _JS_CLOCK)
        for test in (
            "test_group_model.py::test_random_runs_keep_the_group_guarantees",
            "test_groups.py::test_fan_out_every_group_gets_every_event",
            "test_groups.py::test_acked_events_are_not_redelivered",
            "test_lifecycle_rules.py::test_max_deliver_below_one_still_delivers_a_held_back_event_once",
            "test_lifecycle_rules.py::test_nack_of_a_held_back_event_changes_nothing",
            "test_lifecycle_rules.py::test_a_claim_that_reaches_its_limit_leaves_later_exhausted_events_for_the_next",
            "test_redelivery.py::test_unacked_events_are_redelivered_after_the_ack_timeout",
            "test_redelivery.py::test_redelivery_comes_before_new_events_and_counts_toward_the_limit",
            "test_redelivery.py::test_nack_with_delay",
            "test_redelivery.py::test_nack_default_backoff_doubles_per_attempt",
            "test_redelivery.py::test_dead_letter_after_max_deliver_timeouts",
            "test_redelivery.py::test_nack_reason_is_kept_for_a_later_timeout_dead_letter",
            "test_redelivery.py::test_dead_letters_are_events_other_groups_can_consume",
            "test_redelivery.py::test_extend_pushes_the_deadline",
            "test_redelivery.py::test_next_deadline_is_the_earliest_pending_deadline",
            "test_restart.py::test_log_groups_pending_and_cursors_survive_a_restart",
            "test_crash_loop.py::test_a_member_holding_one_event_at_a_time_dead_letters_only_that_event",
            "test_crash_loop.py::test_every_event_a_crashing_member_held_uses_up_its_attempts",
            "test_extend_terminal.py::test_extend_only_by_the_holder_and_only_while_delivered",
            "test_extend_terminal.py::test_extend_names_the_delivery_by_seq_and_refuses_an_ambiguous_id",
            "test_tenancy.py::test_a_member_may_not_settle_a_delivery_redelivered_to_another",
        )
    ),
)
"""Where the NATS store departs from the contract on purpose, test by test (each of these fails on JetStream;
every other contract test passes); tests/test_nats_semantics.py shows the JetStream behaviour instead
(redelivery, NAK delays, dead letters, NACK reasons on the real clock)."""

BACKENDS: list[Backend] = [
    Backend("sqlite", sqlite_database),
    Backend("postgres", postgres_database, marks=(pytest.mark.postgres,)),
    # MongoDB: a fresh database on the nx-27017 stand-in (or OUTBOXHUB_TEST_MONGO_URL), dropped after.
    Backend("mongo", mongo_database, marks=(pytest.mark.mongo,)),
    # NATS JetStream: a throwaway stream on 127.0.0.1:4222 (or OUTBOXHUB_TEST_NATS_URL), deleted after.
    Backend("nats", nats_database, marks=(pytest.mark.nats,), not_applicable=NATS_NOT_APPLICABLE),
]


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    backend: Backend = request.param
    for glob, reason in backend.not_applicable:
        if fnmatch.fnmatch(request.node.nodeid, glob):
            pytest.skip(f"not applicable to {backend.name}: {reason}")
    async with backend.database(tmp_path) as url:
        factory = StoreFactory(backend.name, url)
        try:
            yield factory
        finally:
            await factory.close_all()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()
