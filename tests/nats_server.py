"""NATS JetStream for the tests: the machine's server (``OUTBOXHUB_TEST_NATS_URL``, default
``nats://127.0.0.1:4222``) and a throwaway stream per test, deleted afterwards.

Each server also keeps one small stream that the tests never delete (``KEEPALIVE_STREAM``). nats-server
2.9 removes an account's stream folder when its last stream is deleted, and a stream created at that moment
(the other xdist worker's test) fails with "could not create storage directory … no such file or
directory" (seen at -n 2 on this machine's 2.9.10): with a stream that always exists, the folder stays.

A server that does not answer skips the test, or fails it under ``CI=true`` (``tests/conftest.py``'s
handler of ``outboxhub.testing.unavailable``), with a message naming the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from outboxhub.model import Delivery
from outboxhub.store import Store
from outboxhub.testing import unavailable

__all__ = [
    "ENV",
    "KEEPALIVE_STREAM",
    "api_requests",
    "claim",
    "claim_until",
    "listings",
    "nats_database",
    "nats_url",
    "stream_fixture",
    "throwaway_stream",
]

ENV = "OUTBOXHUB_TEST_NATS_URL"
KEEPALIVE_STREAM = "OUTBOXHUB_TESTS_KEEPALIVE"
_kept_alive: set[str] = set()


def nats_url() -> str:
    """The test server's URL (servers only, no options)."""
    return os.environ.get(ENV, "nats://127.0.0.1:4222")


async def _connect(url: str):  # type: ignore[no-untyped-def]
    try:
        import nats
    except ModuleNotFoundError:
        unavailable("the NATS tests need nats-py: pip install 'outboxhub[nats]'")
    try:
        # Bounded: the driver may retry a first connection it cannot make.
        return await asyncio.wait_for(
            nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False), 5
        )
    except Exception as exc:
        unavailable(f"NATS JetStream at {url} ({ENV}) is not reachable: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def throwaway_stream(
    url: str | None = None, *, replicas: int = 1, options: str = ""
) -> AsyncIterator[str]:
    """A store URL naming a fresh stream on ``url`` (the test server by default); the stream is deleted
    after the block."""
    server = url or nats_url()
    name = "T" + uuid.uuid4().hex[:16]
    nc = await _connect(server.split(",")[0])
    try:
        await nc.jetstream().account_info()
    except Exception as exc:
        await nc.close()
        unavailable(f"NATS at {server} ({ENV}) has no JetStream: {type(exc).__name__}: {exc}")
    if server not in _kept_alive:
        # Idempotent: adding a stream that exists with the same config answers OK.
        await nc.jetstream().add_stream(name=KEEPALIVE_STREAM, subjects=["outboxhub-tests-keepalive"])
        _kept_alive.add(server)
    try:
        yield f"{server}?stream={name}&replicas={replicas}{options}"
    finally:
        with contextlib.suppress(Exception):  # never created (the test failed before opening a store)
            await nc.jetstream().delete_stream(name)
        await nc.close()


@asynccontextmanager
async def nats_database(tmp_path: Path) -> AsyncIterator[str]:
    """The contract suite's database: a throwaway stream on the test server."""
    del tmp_path
    async with throwaway_stream() as url:
        yield url


def stream_fixture() -> Any:
    """A module's fixture of a store URL on a throwaway stream, a new one per test (``url =
    stream_fixture()``: the fixture is named after the module attribute)."""

    @pytest.fixture
    async def stream() -> AsyncIterator[str]:
        async with throwaway_stream() as url:
            yield url

    return stream


async def claim(store: Store, member: str = "m1", **kw: int) -> list[Delivery]:
    """One claim of the tests' group ``g`` on ``t.*`` (limit 100, 30 s ack timeout, 5 deliveries)."""
    opts = {"limit": 100, "ack_timeout_ms": 30_000, "max_deliver": 5} | kw
    return await store.claim("t.*", "g", member, **opts)


def api_requests(store: Store) -> Counter[str]:
    """The store's JetStream API requests from now on, by kind (``CONSUMER.NAMES``, ``CONSUMER.INFO``,
    ``DIRECT.GET``, …): its connection's ``request`` counts them and sends them on."""
    nc = store._conn.nc  # type: ignore[attr-defined]
    request = nc.request
    seen: Counter[str] = Counter()

    async def counted(subject: str, *args: Any, **kw: Any) -> Any:
        if subject.startswith("$JS.API."):
            seen[".".join(subject.split(".")[2:4])] += 1
        return await request(subject, *args, **kw)

    nc.request = counted
    return seen


def listings(seen: Counter[str]) -> int:
    """The consumer listing pages among the requests ``seen`` (``api_requests``)."""
    return seen["CONSUMER.NAMES"] + seen["CONSUMER.LIST"]


async def claim_until(store: Store, wanted: int, timeout_s: float = 10.0, **kw: int) -> list[Delivery]:
    """Claim until ``wanted`` deliveries came (JetStream redelivers on its own clock)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < wanted and time.monotonic() < deadline:
        got += await claim(store, **kw)
        await asyncio.sleep(0.05)
    return got
