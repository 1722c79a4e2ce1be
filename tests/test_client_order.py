"""Publish order under refusals and reconnects, against a real hub on a real SQLite store.

The hub's store is made to refuse chosen publishes with ``StoreUnavailable`` (the hub answers ``ERR
unavailable``): :class:`Refusals` sits in front of the real ``publish_batch`` of ``hub.store``, or the
SQLite file is really locked. The order asserted is the order of the events in the hub's log.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest

from outboxhub.app import Hub
from outboxhub.client import Backoff, Forbidden, HubClient, PublishResult
from outboxhub.errors import StoreUnavailable
from outboxhub.ids import new_id
from outboxhub.model import NewEvent
from outboxhub.store.sqlite.store import SQLiteStore

BOTH_WS_SERVERS = True  # every test here runs against the aiohttp and the picows WS port

ALL = ("publish:**", "subscribe:**")
FAST = Backoff(initial_s=0.01, max_s=0.05)


def _patch_publish(
    monkeypatch: pytest.MonkeyPatch,
    hub: Hub,
    publish_batch: Callable[[Sequence[NewEvent]], Awaitable[list[PublishResult]]],
) -> None:
    """Route the hub's publishes through ``publish_batch``: the store's own method and ``publish_soon``,
    the future-returning call the gateway makes."""
    monkeypatch.setattr(hub.store, "publish_batch", publish_batch)
    soon = lambda events: asyncio.ensure_future(publish_batch(events))  # noqa: E731
    monkeypatch.setattr(hub.store, "publish_soon", soon)


class Refusals:
    """Wraps ``hub.store.publish_batch``: a store call holding an event of ``refuse_once`` that was not
    refused yet fails whole with ``StoreUnavailable`` (so, as the protocol says, it has no effect);
    ``after_store(ids)`` runs once a call has been stored, before the hub replies. ``unavailable`` counts
    the calls that failed with ``StoreUnavailable``, whether from here or from the store itself."""

    def __init__(self, hub: Hub, monkeypatch: pytest.MonkeyPatch, refuse_once: Iterable[str] = ()) -> None:
        self.refuse_once = set(refuse_once)
        self.refused: list[str] = []
        self.after_store: Callable[[list[str]], None] | None = None
        self.unavailable = 0
        self._changed = asyncio.Event()
        self._publish_batch = hub.store.publish_batch
        _patch_publish(monkeypatch, hub, self.publish_batch)

    async def publish_batch(self, events: Sequence[NewEvent]) -> list[PublishResult]:
        ids = [e.id for e in events if e.id is not None]
        first_time = [i for i in ids if i in self.refuse_once and i not in self.refused]
        try:
            if first_time:
                self.refused.extend(first_time)
                raise StoreUnavailable("refused once by the test")
            results = await self._publish_batch(events)
        except StoreUnavailable:
            self.unavailable += 1
            self._changed.set()
            raise
        if self.after_store is not None:
            self.after_store(ids)
        return results

    async def wait_unavailable(self, n: int) -> None:
        async with asyncio.timeout(30):
            while self.unavailable < n:
                self._changed.clear()
                await self._changed.wait()


class CutProxy:
    """A TCP proxy in front of the hub; ``cut()`` aborts every connection through it (new ones work)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cuts = 0
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links.append((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.transport.abort()

    def cut(self) -> None:
        self.cuts += 1
        links, self._links = self._links, []
        for client_side, hub_side in links:
            client_side.transport.abort()
            hub_side.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _events(topic: str, keys: Sequence[str | None]) -> list[NewEvent]:
    return [NewEvent(topic=topic, payload={"n": n}, key=key, id=new_id()) for n, key in enumerate(keys)]


async def _log_ids(hub: Hub, topic: str) -> list[str]:
    """The ids of ``topic``'s events in the hub's log, in log (seq) order."""
    return [e.id for e in await hub.store.scan(topic, limit=10_000)]


def _by_key(events: Sequence[NewEvent], ids: Sequence[str]) -> dict[str | None, list[str]]:
    key_of = {e.id: e.key for e in events}
    out: dict[str | None, list[str]] = {}
    for i in ids:
        out.setdefault(key_of[i], []).append(i)
    return out


async def test_a_batch_of_one_key_is_stored_in_order_when_every_event_is_refused_once(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events("ord.each", ["k"] * 10)
    refusals = Refusals(hub, monkeypatch, refuse_once=[e.id for e in events if e.id])
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST) as client:
        results = await client.publish_batch(events)
    assert sorted(refusals.refused) == sorted(e.id for e in events if e.id)
    assert [r.id for r in results] == [e.id for e in events]
    assert await _log_ids(hub, "ord.each") == [e.id for e in events]


@pytest.mark.parametrize("refused", [[3], [0, 4, 9], [2, 3]])
async def test_a_batch_of_one_key_stays_in_order_when_some_events_are_refused(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch, refused: list[int]
) -> None:
    # Pipelined, the events after a refused one would be stored before its retry.
    events = _events("ord.some", ["k"] * 10)
    refusals = Refusals(hub, monkeypatch, refuse_once=[events[i].id or "" for i in refused])
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST) as client:
        results = await client.publish_batch(events)
    assert len(refusals.refused) == len(refused)
    assert [r.id for r in results] == [e.id for e in events]
    assert await _log_ids(hub, "ord.some") == [e.id for e in events]


async def test_each_key_of_a_mixed_batch_is_stored_in_batch_order_despite_refusals(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys: list[str | None] = ["a", "b", "c", None] * 6
    events = _events("ord.mixed", keys)
    refuse = [events[i].id or "" for i in (1, 4, 6, 13, 20)]
    refusals = Refusals(hub, monkeypatch, refuse_once=refuse)
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST) as client:
        results = await client.publish_batch(events)
    assert sorted(refusals.refused) == sorted(refuse)
    assert [r.id for r in results] == [e.id for e in events]
    stored = await _log_ids(hub, "ord.mixed")
    assert sorted(stored) == sorted(e.id for e in events if e.id)
    expected = _by_key(events, [e.id for e in events if e.id])
    got = _by_key(events, stored)
    for key in ("a", "b", "c"):
        assert got[key] == expected[key], key


async def test_pipelined_publishes_refused_once_are_re_sent_in_call_order(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [new_id() for _ in range(20)]
    refusals = Refusals(hub, monkeypatch, refuse_once=ids)
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST) as client:
        results = await asyncio.gather(*(client.publish("ord.calls", n, id=i) for n, i in enumerate(ids)))
    assert sorted(refusals.refused) == sorted(ids)
    assert [r.id for r in results] == ids
    assert await _log_ids(hub, "ord.calls") == ids


class Holds(logging.Handler):
    """Counts the client's "holding back" log lines; ``await holds.wait_for(n)`` returns after n of them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "holding back" in record.getMessage():
            self.count += 1
            self._changed.set()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(30):
            while self.count < n:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def holds() -> Iterator[Holds]:
    handler = Holds()
    logger = logging.getLogger("outboxhub.client")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_a_publish_made_while_others_are_held_back_goes_out_after_them(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch, holds: Holds
) -> None:
    first, second = new_id(), new_id()
    Refusals(hub, monkeypatch, refuse_once=[first])
    slow = Backoff(initial_s=0.3, max_s=1)  # a long hold, so that the second publish surely starts in it
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=slow) as client:
        one = asyncio.create_task(client.publish("ord.hold", 1, id=first))
        await holds.wait_for(1)
        two = await client.publish("ord.hold", 2, id=second)
        assert (await one).seq < two.seq
    assert holds.count == 1
    assert await _log_ids(hub, "ord.hold") == [first, second]


async def test_a_batch_of_one_key_stays_in_order_while_the_database_is_locked(
    hub_factory: Callable[..., Awaitable[Hub]],
    token: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real refusal: another connection holds SQLite's write lock and the hub does not wait for it.
    hub = await hub_factory(store=f"sqlite:///{tmp_path / 'locked.db'}?busy_timeout_ms=0")
    assert isinstance(hub.store, SQLiteStore)
    refusals = Refusals(hub, monkeypatch)  # refuses nothing itself: counts the store's refusals
    events = _events("ord.locked", ["k"] * 8)
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST) as client:
        assert (await client.publish("ord.locked", "before")).seq == 1
        blocker = sqlite3.connect(hub.store.path, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            batch = asyncio.create_task(client.publish_batch(events))
            await refusals.wait_unavailable(3)
            assert not batch.done()
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        results = await asyncio.wait_for(batch, 30)
    assert [r.id for r in results] == [e.id for e in events]
    assert (await _log_ids(hub, "ord.locked"))[1:] == [e.id for e in events]


async def test_a_batch_of_one_key_stays_in_order_across_a_dropped_connection(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events("ord.cut", ["k"] * 10)
    proxy = CutProxy(hub.ws_port)
    url = await proxy.start()
    refusals = Refusals(hub, monkeypatch, refuse_once=[events[2].id or ""])
    cut_at = events[5].id

    def after_store(ids: list[str]) -> None:
        if cut_at in ids and proxy.cuts == 0:
            proxy.cut()  # stored, but the confirmation is lost with the connection

    refusals.after_store = after_store
    try:
        async with HubClient(url, token(scopes=ALL), backoff=FAST) as client:
            results = await client.publish_batch(events)
            assert client.reconnects == 1
    finally:
        await proxy.close()
    assert refusals.refused == [events[2].id]
    assert [r.id for r in results] == [e.id for e in events]
    assert results[5].duplicate and not any(r.duplicate for i, r in enumerate(results) if i != 5)
    assert await _log_ids(hub, "ord.cut") == [e.id for e in events]


async def test_a_pipelined_batch_is_re_sent_in_order_after_a_dropped_connection(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events("ord.cut2", [None] * 40)  # no keys: all pipelined at once
    proxy = CutProxy(hub.ws_port)
    url = await proxy.start()
    refusals = Refusals(hub, monkeypatch)
    cut_at = events[10].id

    def after_store(ids: list[str]) -> None:
        if cut_at in ids and proxy.cuts == 0:
            proxy.cut()

    refusals.after_store = after_store
    try:
        async with HubClient(url, token(scopes=ALL), backoff=FAST) as client:
            results = await client.publish_batch(events)
            assert client.reconnects == 1
    finally:
        await proxy.close()
    assert [r.id for r in results] == [e.id for e in events]
    assert await _log_ids(hub, "ord.cut2") == [e.id for e in events]


async def test_after_a_failed_event_no_later_event_of_its_key_is_stored(
    hub: Hub, token: Callable[..., str]
) -> None:
    ok, denied = "ord.ok", "ord.denied"
    events = [
        NewEvent(topic=ok, payload=0, key="a", id=new_id()),
        NewEvent(topic=denied, payload=1, key="a", id=new_id()),
        NewEvent(topic=ok, payload=2, key="a", id=new_id()),
    ]
    async with HubClient(hub.ws_url, token(scopes=[f"publish:{ok}"]), backoff=FAST) as client:
        with pytest.raises(Forbidden):
            await client.publish_batch(events)
        assert client.connected
    assert await _log_ids(hub, ok) == [events[0].id]


async def test_without_key_order_a_batch_of_one_key_is_pipelined(
    hub: Hub, token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store holds every call until the whole batch has reached it: with per-key chaining the client
    # would wait for the first confirmation before sending the second event, and this would time out.
    events = _events("ord.free", ["k"] * 5)
    arrived: set[str] = set()
    all_arrived = asyncio.Event()
    publish_batch = hub.store.publish_batch

    async def held(batch: Sequence[NewEvent]) -> list[PublishResult]:
        arrived.update(e.id for e in batch if e.id is not None)
        if len(arrived) == len(events):
            all_arrived.set()
        await all_arrived.wait()
        return await publish_batch(batch)

    _patch_publish(monkeypatch, hub, held)
    async with HubClient(hub.ws_url, token(scopes=ALL), backoff=FAST) as client:
        async with asyncio.timeout(10):
            results = await client.publish_batch(events, keep_key_order=False)
    assert [r.id for r in results] == [e.id for e in events]
    assert sorted(await _log_ids(hub, "ord.free")) == sorted(e.id for e in events if e.id)
