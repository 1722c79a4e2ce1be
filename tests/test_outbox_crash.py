"""Crash test: a drainer in a child process publishes an outbox into a hub store (an SQLite store file) and
is killed with SIGKILL again and again, right after the hub committed a batch and before the batch was
marked sent. After a final run, every outbox record is in the hub's log exactly once, in per-key order.

The child announces each committed batch on stdout and then pauses briefly, so each kill lands in the
window that matters (published, not marked). The next child finds those records claimed under an expired
lease, requeues and publishes them again: the hub deduplicates them by event id (= record id).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_outbox_support import OutboxDB, crash_drain, postgres_db, sqlite_db

RECORDS = 1_200


def _records() -> list[dict[str, object]]:
    # Keys k1..k9 but k5 (ordering requested); every fifth record has no key.
    return [
        {"topic": f"crash.t{i % 3}", "payload": {"n": i}, "key": None if i % 5 == 0 else f"k{i % 10}"}
        for i in range(RECORDS)
    ]


async def _crash_test(db: OutboxDB, tmp_path: Path) -> None:
    ids = db.add_many(_records())
    await crash_drain(
        outbox_url=db.url,
        hub_url=f"sqlite:///{tmp_path / 'hub.db'}",
        tmp_path=tmp_path,
        ids=ids,
        count_sent=lambda: db.count("status = 'sent'"),
        batch_size=60,
        lease_ms=200,
    )


async def test_sigkilled_sqlite_drainer_publishes_everything_exactly_once(tmp_path: Path) -> None:
    await _crash_test(sqlite_db(tmp_path), tmp_path)


@pytest.mark.postgres
async def test_sigkilled_postgres_drainer_publishes_everything_exactly_once(tmp_path: Path) -> None:
    async with postgres_db() as db:
        await _crash_test(db, tmp_path)
