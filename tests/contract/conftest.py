"""The store contract suite's fixtures: every test runs once per registered store backend.

``store_factory`` opens stores on one fresh database per test; calling it again opens another store on the
same database (restart tests close one and reopen). ``store`` is the first store it opens.

Adding a backend: write an async context manager ``database(tmp_path) -> url`` that creates a fresh database
(or schema) for one test and drops it afterwards, and append a ``Backend`` to ``BACKENDS`` (with the pytest
marks naming the service it needs). The tests themselves stay unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mongo_server import mongo_database
from outboxhub.store import Store

from . import StoreFactory

__all__ = ["BACKENDS", "Backend"]


@dataclass(frozen=True)
class Backend:
    """A store backend under contract: how to make (and drop) a fresh database for one test."""

    name: str
    database: Callable[[Path], AbstractAsyncContextManager[str]]
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


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


BACKENDS: list[Backend] = [
    Backend("sqlite", sqlite_database),
    Backend("postgres", postgres_database, marks=(pytest.mark.postgres,)),
    # MongoDB: a fresh database on the nx-27017 stand-in (or OUTBOXHUB_TEST_MONGO_URL), dropped after.
    Backend("mongo", mongo_database, marks=(pytest.mark.mongo,)),
]


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS])
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    backend: Backend = request.param
    async with backend.database(tmp_path) as url:
        factory = StoreFactory(backend.name, url)
        try:
            yield factory
        finally:
            await factory.close_all()


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()
