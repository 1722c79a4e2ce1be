"""Crash test: a drainer in a child process publishes an outbox into a hub store (an SQLite store file) and
is killed with SIGKILL again and again, right after the hub committed a batch and before the batch was
marked sent. After a final run, every outbox record is in the hub's log exactly once, in per-key order.

The child announces each committed batch on stdout and then pauses briefly, so each kill lands in the
window that matters (published, not marked). The next child finds those records claimed under an expired
lease, requeues and publishes them again: the hub deduplicates them by event id (= record id).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pytest

from outboxhub.model import Event
from outboxhub.store import open_store
from test_outbox_support import OutboxDB, postgres_db, sqlite_db

KILLS = 4
RECORDS = 1_200
STUCK_S = 60.0
"""Safety net: a child that makes no progress for this long is killed and the test fails."""

WORKER = r"""
import asyncio, sys
from outboxhub import outbox
from outboxhub.store import open_store

class Announcing:
    def __init__(self, hub):
        self.hub = hub

    async def publish_batch(self, events):
        results = await self.hub.publish_batch(events)
        print("PUBLISHED", len(events), flush=True)  # committed in the hub, not yet marked sent
        await asyncio.sleep(0.05)
        return results

async def main():
    store = await outbox.open_outbox(sys.argv[1])
    hub = await open_store(sys.argv[2])
    settings = outbox.DrainerSettings(
        batch_size=60, lease_ms=200, requeue_interval_ms=50, idle_wait_ms=20,
        ordered_by_key=True, max_attempts=1_000,
    )
    drainer = outbox.Drainer(store, Announcing(hub), settings)
    await drainer.run_until_idle()
    print("DONE", drainer.published, drainer.duplicates, flush=True)
    await store.close()
    await hub.close()

asyncio.run(main())
"""


def _records() -> list[dict[str, object]]:
    # Keys k1..k9 but k5 (ordering requested); every fifth record has no key.
    return [
        {"topic": f"crash.t{i % 3}", "payload": {"n": i}, "key": None if i % 5 == 0 else f"k{i % 10}"}
        for i in range(RECORDS)
    ]


def _start(db: OutboxDB, hub_url: str, stderr: Path) -> subprocess.Popen[str]:
    with stderr.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, db.url, hub_url], stdout=subprocess.PIPE, stderr=err, text=True
        )


def _kill_after_publishes(db: OutboxDB, hub_url: str, stderr: Path, publishes: int) -> None:
    child = _start(db, hub_url, stderr)
    assert child.stdout is not None
    watchdog = threading.Timer(STUCK_S, child.kill)  # a stuck child must not hang the suite
    watchdog.start()
    seen = 0
    try:
        for line in child.stdout:
            if line.startswith("PUBLISHED"):
                seen += 1
                if seen == publishes:
                    break
    finally:
        watchdog.cancel()
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    if seen < publishes:
        pytest.fail(f"drainer child ended before publishing {publishes} batches:\n{stderr.read_text()}")
    assert child.returncode == -signal.SIGKILL


def _final_run(db: OutboxDB, hub_url: str, stderr: Path) -> tuple[int, int]:
    child = _start(db, hub_url, stderr)
    try:
        out, _ = child.communicate(timeout=STUCK_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail(f"final drainer run did not finish in {STUCK_S} s:\n{stderr.read_text()}")
    done = [line.split() for line in out.splitlines() if line.startswith("DONE")]
    if child.returncode != 0 or not done:
        pytest.fail(f"final drainer run failed ({child.returncode}):\n{stderr.read_text()}")
    return int(done[0][1]), int(done[0][2])


async def _hub_log(hub_url: str) -> list[Event]:
    hub = await open_store(hub_url)
    try:
        events: list[Event] = []
        while True:
            page = await hub.scan("**", after_seq=events[-1].seq if events else 0, limit=1_000)
            if not page:
                return events
            events.extend(page)
    finally:
        await hub.close()


async def _crash_test(db: OutboxDB, tmp_path: Path) -> None:
    ids = db.add_many(_records())
    hub_url = f"sqlite:///{tmp_path / 'hub.db'}"
    stderr = tmp_path / "drainer.stderr"
    for kill in range(KILLS):
        await asyncio.to_thread(_kill_after_publishes, db, hub_url, stderr, 1 + kill % 2)
    assert db.count("status = 'sent'") < RECORDS  # the kills left work behind
    _, duplicates = await asyncio.to_thread(_final_run, db, hub_url, stderr)
    # The last kill struck between the hub's commit and mark-sent: that batch went out twice.
    assert duplicates > 0

    log = await _hub_log(hub_url)
    assert len(log) == len({e.id for e in log}), "an outbox record is in the hub's log more than once"
    assert sorted(e.id for e in log) == sorted(ids), "an outbox record is missing from the hub's log"
    by_key: dict[str, list[int]] = defaultdict(list)
    for event in log:  # scan returns seq order
        if event.key is not None:
            by_key[event.key].append(event.payload["n"])
    assert len(by_key) == 8  # k1..k9 without k5 (multiples of five have no key)
    for key, numbers in by_key.items():
        assert numbers == sorted(numbers), f"key {key} out of order in the hub: {numbers}"
    assert db.count("status = 'sent'") == RECORDS


async def test_sigkilled_sqlite_drainer_publishes_everything_exactly_once(tmp_path: Path) -> None:
    await _crash_test(sqlite_db(tmp_path), tmp_path)


@pytest.mark.postgres
async def test_sigkilled_postgres_drainer_publishes_everything_exactly_once(tmp_path: Path) -> None:
    async with postgres_db() as db:
        await _crash_test(db, tmp_path)
