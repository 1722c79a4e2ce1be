"""The store contract suite: one set of tests that every ``Store`` backend must pass unchanged.

Backends are registered in ``conftest.py``. Time-dependent behaviour (ack timeouts, NACK backoff) is driven
through the ``now=`` parameters, never by sleeping. Helpers shared by the test modules live here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from outboxhub.ids import now_ms
from outboxhub.model import Delivery, NewEvent, StartPosition
from outboxhub.store import Store, open_store

__all__ = ["EARLIEST", "LATEST", "T0", "StoreFactory", "claim", "ev", "eventually", "ids_of", "seqs_of"]

EARLIEST = StartPosition(kind="earliest")
LATEST = StartPosition(kind="latest")
T0 = now_ms()
"""A fixed "now" for tests that move time by hand (the wall clock at import)."""


class StoreFactory:
    """``await factory()`` opens a store on this test's database (again: a restart); all are closed after
    the test. ``backend`` names the backend under test."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self._stores: list[Store] = []

    async def __call__(self, **options: Any) -> Store:
        store = await open_store(self.url, **options)
        self._stores.append(store)
        return store

    async def close_all(self) -> None:
        for store in reversed(self._stores):
            await store.close()


def ev(topic: str, payload: Any = None, **fields: Any) -> NewEvent:
    return NewEvent(topic=topic, payload=payload, **fields)


async def claim(
    store: Store,
    pattern: str,
    group: str,
    member: str = "m1",
    *,
    limit: int = 100,
    ack_timeout_ms: int = 30_000,
    max_deliver: int = 5,
    ordered_by_key: bool = False,
    now: int | None = T0,
) -> list[Delivery]:
    return await store.claim(
        pattern,
        group,
        member,
        limit=limit,
        ack_timeout_ms=ack_timeout_ms,
        max_deliver=max_deliver,
        ordered_by_key=ordered_by_key,
        now=now,
    )


def seqs_of(deliveries: list[Delivery]) -> list[int]:
    return [d.event.seq for d in deliveries]


def ids_of(deliveries: list[Delivery]) -> list[str]:
    return [d.event.id for d in deliveries]


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``condition()`` holds (for notifications a backend may deliver asynchronously)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - polling a plain predicate, there is no event to await
            await asyncio.sleep(0.005)
