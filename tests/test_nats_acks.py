"""The JetStream store's confirmed acknowledgements (``store/nats/acks.py``): a bus ACK flush
(``NatsStore.ack_soon``) runs without a task, also when the driver's publish has to wait, and a closing
store's NAKs of the deliveries it still holds are confirmed before it closes.
Real JetStream (127.0.0.1:4222 or OUTBOXHUB_TEST_NATS_URL), one throwaway stream per test.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from nats_server import claim, claim_until, stream_fixture
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.base import EventRef
from outboxhub.store.nats.store import NatsStore
from outboxhub.testing import unavailable
from task_counting import tasks_started

pytestmark = pytest.mark.nats
url = stream_fixture()
EARLIEST = StartPosition(kind="earliest")


async def _held(store: NatsStore, count: int) -> list[EventRef]:
    """``count`` events published and claimed by member ``m1``, after one more published, claimed and
    acked."""
    await store.ensure_group("t.*", "g", EARLIEST)
    await store.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(count + 1)])
    held = [EventRef(d.event.id, d.event.seq) for d in await claim(store)]
    assert len(held) == count + 1
    assert await store.ack("t.*", "g", held[:1], member="m1") == 1
    return held[1:]


@pytest.mark.parametrize("per_flush", [1, 9])
async def test_a_bus_ack_flush_starts_no_task(url: str, per_flush: int) -> None:
    """``ack_soon`` answers from the confirmations' callbacks: no task per flush (the store's ``_ack`` ran
    in one, one per flush, on the PostgreSQL and SQLite stores' side none)."""
    store = await open_store(url)
    assert isinstance(store, NatsStore)
    try:
        refs = await _held(store, 3 * per_flush)
        with tasks_started() as started:
            for at in range(0, len(refs), per_flush):
                done = store.ack_soon("t.*", "g", refs[at : at + per_flush], member="m1")
                assert await done == per_flush
        assert started == [], "the ACK flushes started tasks"
        [info] = await store.groups()
        assert info.in_flight == 0  # confirmed: JetStream had applied every ACK when the future was answered
        assert await store.ack("t.*", "g", refs, member="m1") == 0  # settled once
    finally:
        await store.close()


async def test_a_stores_first_ack_and_one_for_a_group_it_holds_nothing_of_start_no_task(url: str) -> None:
    """The reply subscription is made when the store opens the group (its first claim), so the store's
    first ACK flush is sent in place too (it ran in a task that made the subscription); a flush for a
    group this store has not opened is answered 0 at once (it ran the generic task)."""
    store = await open_store(url)
    assert isinstance(store, NatsStore)
    try:
        await store.ensure_group("t.*", "g", EARLIEST)
        await store.publish(NewEvent(topic="t.a"))
        [delivery] = await claim(store)
        ref = EventRef(delivery.event.id, delivery.event.seq)
        with tasks_started() as started:
            assert await store.ack_soon("t.*", "g", [ref], member="m1") == 1
            assert await store.ack_soon("t.*", "unopened", [ref], member="m1") == 0
        assert started == [], "the first ACK flush started tasks"
        [info] = await store.groups()
        assert info.in_flight == 0  # confirmed
    finally:
        await store.close()


async def test_an_ack_flush_whose_publishes_wait_still_confirms_each_in_order(url: str) -> None:
    """When the driver's publish suspends (its outbound buffer over the limit: it waits for the flusher),
    the flush steps it on from the future it waits on, still without a task, and every ACK is confirmed."""
    store = await open_store(url)
    assert isinstance(store, NatsStore)
    try:
        refs = await _held(store, 9)
        store._conn.nc._max_pending_size = 1  # every publish force-flushes
        with tasks_started() as started:
            assert await store.ack_soon("t.*", "g", refs, member="m1") == 9
        assert started == []
        [info] = await store.groups()
        assert info.in_flight == 0
    finally:
        await store.close()


class _Server:
    """A private single nats-server with JetStream on a free port and its own store directory."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            unavailable("this test needs the nats-server binary on PATH")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self._command = [binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(tmp_path / "js")]
        self._log = tmp_path / "nats.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(self._command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        """A graceful shutdown (SIGTERM): JetStream writes its streams' and consumers' state."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[_Server]:
    server = _Server(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def _opened(url: str) -> NatsStore:
    for _ in range(100):  # the server may still be starting
        try:
            store = await open_store(url)
        except Exception:
            await asyncio.sleep(0.1)
            continue
        assert isinstance(store, NatsStore)
        return store
    raise AssertionError(f"no store at {url}")


async def test_the_naks_of_a_store_closing_while_nats_is_away_reach_jetstream(
    private_server: _Server,
) -> None:
    """A store closes while its connection is reconnecting (the server restarts): the NAKs of the
    deliveries it holds wait in the client's buffer for the reconnect and are confirmed, so another hub gets
    them at once. NAKs sent without waiting for their confirmation were dropped with the buffer when the
    drain gave up on the reconnecting connection, and the deliveries came back only after their ack wait
    (10 minutes here)."""
    url = f"nats://127.0.0.1:{private_server.port}?stream=S&timeout_s=20"
    closing = await _opened(url)
    await closing.ensure_group("t.*", "g", EARLIEST)
    sent = await closing.publish_batch([NewEvent(topic="t.a", payload=i) for i in range(5)])
    held = await claim_until(closing, len(sent), ack_timeout_ms=600_000)
    assert len(held) == len(sent)
    private_server.stop()
    nc = closing._conn.nc
    for _ in range(500):  # until the client knows: what it wrote to the dead socket before is lost anyway
        if nc.is_reconnecting:
            break
        await asyncio.sleep(0.01)
    assert nc.is_reconnecting
    closed = asyncio.ensure_future(closing.close())
    await asyncio.sleep(0.3)  # the store's close is under way while the server is away
    private_server.start()
    await asyncio.wait_for(closed, 30)
    other = await _opened(url)
    try:
        again = await claim_until(other, len(sent), timeout_s=20, ack_timeout_ms=600_000)
        assert sorted(d.event.seq for d in again) == [r.seq for r in sent]
    finally:
        await other.close()


async def test_a_store_closes_without_an_error_while_nats_stays_away(private_server: _Server) -> None:
    """Closing while the connection is reconnecting and the server does not come back: the NAKs time out
    (JetStream redelivers after the ack wait) and ``close`` returns; it raised the driver's
    ``ConnectionResetError`` from tearing down the lost connection."""
    closing = await _opened(f"nats://127.0.0.1:{private_server.port}?stream=S&timeout_s=1")
    await closing.ensure_group("t.*", "g", EARLIEST)
    await closing.publish(NewEvent(topic="t.a"))
    assert len(await claim_until(closing, 1)) == 1
    private_server.stop()
    nc = closing._conn.nc
    for _ in range(500):
        if nc.is_reconnecting:
            break
        await asyncio.sleep(0.01)
    assert nc.is_reconnecting
    await closing.close()
    assert nc.is_closed
