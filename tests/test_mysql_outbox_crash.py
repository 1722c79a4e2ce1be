"""Crash test on MariaDB (like tests/test_outbox_crash.py): a drainer child is SIGKILLed again and again
right after the hub committed a batch and before the batch was marked sent. Every committed outbox record
ends up in the hub's log exactly once, in per-key order; records whose application transaction rolled
back are never published."""

from __future__ import annotations

from pathlib import Path

import pytest

from mysql_support import mysql_db
from outboxhub import outbox
from test_outbox_crash import RECORDS, _records
from test_outbox_support import crash_drain

pytestmark = pytest.mark.mysql


async def test_sigkilled_mysql_drainer_publishes_every_committed_record_exactly_once(tmp_path: Path) -> None:
    with mysql_db() as db:
        records = _records()
        ids: list[str] = []
        conn = db.connect()
        try:
            # Committed and rolled-back transactions interleave, so rolled-back records sit between
            # committed ones of the same keys (their seq numbers are never used).
            for start in range(0, RECORDS, 100):
                ids += [
                    outbox.add(conn, r["topic"], r["payload"], key=r["key"])  # type: ignore[arg-type]
                    for r in records[start : start + 100]
                ]
                conn.commit()
                for r in records[start : start + 10]:
                    outbox.add(conn, "crash.rolled_back", r["payload"], key=r["key"])  # type: ignore[arg-type]
                conn.rollback()
        finally:
            conn.close()
        assert db.count() == RECORDS
        await crash_drain(
            outbox_url=db.url,
            hub_url=f"sqlite:///{tmp_path / 'hub.db'}",
            tmp_path=tmp_path,
            ids=ids,
            count_sent=lambda: db.count("status = 'sent'"),
            batch_size=60,
            lease_ms=200,
        )
