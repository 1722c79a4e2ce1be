"""Crash test on MongoDB: a drainer in a child process drains a MongoDB outbox into a MongoDB hub store and
is killed with SIGKILL again and again, right after the hub committed a batch and before the batch was
marked sent. After a final run, every outbox record is in the hub's log exactly once, in per-key order.

As tests/test_outbox_crash.py (SQLite, PostgreSQL), with both sides on MongoDB (the nx-27017 stand-in, or
``OUTBOXHUB_TEST_MONGO_URL``). The hub store runs with a short allocation lease, so a kill that lands
while a seq range is open is recovered within the test (holes fill the range; see store/_mongo_seq.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pymongo
import pytest

from mongo_server import mongo_database
from outboxhub import outbox
from test_outbox_support import crash_drain

pytestmark = pytest.mark.mongo

RECORDS = 600


async def test_sigkilled_mongo_drainer_publishes_everything_exactly_once(tmp_path: Path) -> None:
    async with mongo_database(prefix="app") as app_url, mongo_database(prefix="hub") as hub_base:
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(app_url)
        app = client.get_default_database()
        try:
            ids = [
                outbox.add(app, f"crash.t{i % 3}", {"n": i}, key=None if i % 5 == 0 else f"k{i % 10}")
                for i in range(RECORDS)
            ]
            await crash_drain(
                outbox_url=app_url,
                hub_url=f"{hub_base}?lease_ms=1000&poll_interval_s=0.1",
                tmp_path=tmp_path,
                ids=ids,
                count_sent=lambda: app["outbox"].count_documents({"status": "sent"}),
                batch_size=40,
                lease_ms=300,
                final_timeout_s=120,
            )
        finally:
            client.close()
