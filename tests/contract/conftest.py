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
    ("*test_group_model.py::*", _JS_CLOCK),
    ("*test_ordering.py::*", _JS_KEYS),
    ("*test_redelivery.py::*", _JS_CLOCK),
    ("*test_lifecycle_rules.py::*", _JS_CLOCK),
    ("*test_groups.py::test_fan_out_every_group_gets_every_event*", _JS_CLOCK),
    ("*test_groups.py::test_acked_events_are_not_redelivered*", _JS_CLOCK),
    ("*test_restart.py::test_log_groups_pending_and_cursors_survive_a_restart*", _JS_CLOCK),
)
"""Where the NATS store departs from the contract on purpose; tests/test_nats_semantics.py shows the
JetStream behaviour instead (redelivery, NAK delays, dead letters on the real clock)."""

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
