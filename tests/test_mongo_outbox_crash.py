"""Crash test on MongoDB: a drainer in a child process drains a MongoDB outbox into a MongoDB hub store and
is killed with SIGKILL again and again, right after the hub committed a batch and before the batch was
marked sent. After a final run, every outbox record is in the hub's log exactly once, in per-key order.

As tests/test_outbox_crash.py (SQLite, PostgreSQL), with both sides on MongoDB (the nx-27017 stand-in, or
``OUTBOXHUB_TEST_MONGO_URL``). The hub store runs with a short allocation lease, so a kill that lands
while a seq range is open is recovered within the test (holes fill the range; see store/_mongo_seq.py).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pymongo
import pytest

from mongo_server import mongo_database
from outboxhub import outbox
from outboxhub.model import Event
from outboxhub.store import open_store

pytestmark = pytest.mark.mongo

KILLS = 4
RECORDS = 600

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
        batch_size=40, lease_ms=300, requeue_interval_ms=50, idle_wait_ms=20,
        ordered_by_key=True, max_attempts=1_000,
    )
    drainer = outbox.Drainer(store, Announcing(hub), settings)
    await drainer.run_until_idle()
    print("DONE", drainer.published, drainer.duplicates, flush=True)
    await store.close()
    await hub.close()

asyncio.run(main())
"""


def _start(outbox_url: str, hub_url: str, stderr: Path) -> subprocess.Popen[str]:
    with stderr.open("a") as err:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, outbox_url, hub_url], stdout=subprocess.PIPE, stderr=err, text=True
        )


def _kill_after_publishes(outbox_url: str, hub_url: str, stderr: Path, publishes: int) -> None:
    child = _start(outbox_url, hub_url, stderr)
    assert child.stdout is not None
    seen = 0
    for line in child.stdout:
        if line.startswith("PUBLISHED"):
            seen += 1
            if seen == publishes:
                break
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    if seen < publishes:
        pytest.fail(f"drainer child ended before publishing {publishes} batches:\n{stderr.read_text()}")
    assert child.returncode == -signal.SIGKILL


def _final_run(outbox_url: str, hub_url: str, stderr: Path) -> tuple[int, int]:
    child = _start(outbox_url, hub_url, stderr)
    out, _ = child.communicate(timeout=120)
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


async def test_sigkilled_mongo_drainer_publishes_everything_exactly_once(tmp_path: Path) -> None:
    async with mongo_database(prefix="app") as app_url, mongo_database(prefix="hub") as hub_base:
        hub_url = f"{hub_base}?lease_ms=1000&poll_interval_s=0.1"
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(app_url)
        app = client.get_default_database()
        try:
            ids = [
                outbox.add(app, f"crash.t{i % 3}", {"n": i}, key=None if i % 5 == 0 else f"k{i % 10}")
                for i in range(RECORDS)
            ]
            stderr = tmp_path / "drainer.stderr"
            for kill in range(KILLS):
                await asyncio.to_thread(_kill_after_publishes, app_url, hub_url, stderr, 1 + kill % 2)
            assert app["outbox"].count_documents({"status": "sent"}) < RECORDS  # the kills left work
            _, duplicates = await asyncio.to_thread(_final_run, app_url, hub_url, stderr)
            # The last kill struck between the hub's commit and mark-sent: that batch went out twice.
            assert duplicates > 0

            log = await _hub_log(hub_url)
            assert len(log) == len({e.id for e in log}), "an outbox record is in the hub's log more than once"
            assert sorted(e.id for e in log) == sorted(ids), "an outbox record is missing from the hub's log"
            by_key: dict[str, list[int]] = defaultdict(list)
            for event in log:  # scan returns seq order
                if event.key is not None:
                    by_key[event.key].append(event.payload["n"])
            assert len(by_key) == 8  # k1..k4, k6..k9 (every fifth record has no key)
            for key, numbers in by_key.items():
                assert numbers == sorted(numbers), f"key {key} out of order in the hub: {numbers}"
            assert app["outbox"].count_documents({"status": "sent"}) == RECORDS
        finally:
            client.close()
