"""A bus over a real SQLite store for the bus tests (no tests here).

The bus test modules differ in the URL options of their store, not in how they open and close it:
:func:`sqlite_bus` is the one place that does, :func:`bus_fixture` makes a fixture of that pair
(``inline = bus_fixture("inline_claims=4")``: the fixture is named after the module attribute),
:func:`inline_and_threaded` the pair of fixtures that commit a publish with a parked claim on the loop
thread or on the writer thread, and :func:`store_and_bus` a module's ``store`` and ``bus`` fixtures
(``store, bus = store_and_bus()``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from outboxhub.bus.core import Bus
from outboxhub.store.sqlite.store import SQLiteStore
from sqlite_support import QUIET

__all__ = [
    "INLINE_CLAIMS",
    "NO_POLL_S",
    "bus_fixture",
    "inline_and_threaded",
    "sqlite_bus",
    "sqlite_store",
    "store_and_bus",
]

NO_POLL_S = 120.0
"""The bus's safety poll, longer than any wait of a test: what arrives, arrived by notification."""


@contextlib.asynccontextmanager
async def sqlite_store(
    path: Path, options: str = "", *, kind: type[SQLiteStore] = SQLiteStore
) -> AsyncIterator[SQLiteStore]:
    """The SQLite store (``kind``) at ``path`` opened with the URL query ``options``; closed on exit."""
    store = await kind.open(f"sqlite:///{path}" + (f"?{options}" if options else ""))
    try:
        yield store
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def sqlite_bus(
    path: Path, options: str = "", *, kind: type[SQLiteStore] = SQLiteStore
) -> AsyncIterator[tuple[Bus, SQLiteStore]]:
    """:func:`sqlite_store` and a started bus over it (safety poll ``NO_POLL_S``); the bus closes first."""
    async with sqlite_store(path, options, kind=kind) as store, Bus(store, poll_interval_s=NO_POLL_S) as bus:
        yield bus, store


def bus_fixture(options: str = "") -> Any:
    """A fixture of :func:`sqlite_bus`'s ``(bus, store)`` over ``hub.db`` in the test's directory."""

    @pytest.fixture
    async def served(tmp_path: Path) -> AsyncIterator[tuple[Bus, SQLiteStore]]:
        async with sqlite_bus(tmp_path / "hub.db", options) as pair:
            yield pair

    return served


INLINE_CLAIMS = 4
"""``inline_claims`` of :func:`inline_and_threaded`'s ``inline`` store."""


def inline_and_threaded() -> tuple[Any, Any]:
    """A module's ``inline`` and ``threaded`` fixtures (``inline, threaded = inline_and_threaded()``), both
    :func:`bus_fixture` with ``QUIET`` checkpoints: ``inline``'s lone publishes commit on the loop thread with
    up to ``INLINE_CLAIMS`` parked claims; ``threaded`` (``inline_claims=0``) commits every publish on the
    writer thread whenever a claim is parked."""
    return bus_fixture(f"inline_claims={INLINE_CLAIMS}&{QUIET}"), bus_fixture(f"inline_claims=0&{QUIET}")


def store_and_bus(options: str = "") -> tuple[Any, Any]:
    """A module's ``store`` fixture (``hub.db`` in the test's directory, URL query ``options``) and its
    ``bus`` fixture over it: a test that takes only ``store`` gets no bus."""

    @pytest.fixture(name="store")
    async def store_fixture(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        async with sqlite_store(tmp_path / "hub.db", options) as store:
            yield store

    @pytest.fixture(name="bus")
    async def bus_over_store(store: SQLiteStore) -> AsyncIterator[Bus]:
        async with Bus(store, poll_interval_s=NO_POLL_S) as bus:
            yield bus

    return store_fixture, bus_over_store
