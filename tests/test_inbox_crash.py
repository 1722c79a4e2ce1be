"""Crash test of the inbox: a consumer (tests/inbox_child.py, a subprocess using the SDK) is SIGKILLed again
and again right after committing an event's transaction and before its ACK. The hub redelivers that event
to the next consumer; with the inbox, every event is applied exactly once in the consumer's table
``applied`` (which has no unique key, so a second application would show as a second row). On SQLite and
PostgreSQL. The control run without an inbox shows the test can fail: there, each such kill applies an
event twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from outboxhub import inbox
from outboxhub.app import Hub
from outboxhub.client import HubClient

CHILD = Path(__file__).with_name("inbox_child.py")
EVENTS = 40
KILLS = int(os.environ.get("INBOX_KILLS", "12"))
PAUSE_S = 0.4
TOPIC = "crash.inbox"


async def _publish(hub: Hub, token: str) -> set[str]:
    async with HubClient(hub.ws_url, token) as client:
        results = [await client.publish(TOPIC, {"n": i}) for i in range(EVENTS)]
    return {r.id for r in results}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


async def _spawn(
    hub: Hub, token: str, db: str, mode: str, pause_s: float, expected: int
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHILD),
        hub.ws_url,
        token,
        db,
        mode,
        str(pause_s),
        str(expected),
        stdout=asyncio.subprocess.PIPE,
        env=_env(),
    )


async def _crash_runs(hub: Hub, token: str, db: str, mode: str, kills: int) -> tuple[int, int]:
    """Kill ``kills`` consumers right after a commit; then run one to the end. Returns (kills that landed
    between a commit and its ACK, deliveries the inbox skipped as processed before)."""
    rng = random.Random(18)
    landed = skipped = 0
    for _ in range(kills):
        child = await _spawn(hub, token, db, mode, PAUSE_S, 0)
        assert child.stdout is not None
        target = rng.randint(1, 3)
        seen = 0
        async with asyncio.timeout(60):
            while seen < target:
                line = (await child.stdout.readline()).decode()
                assert line, "the consumer exited before it was killed"
                _, _, ran = line.split()
                skipped += ran == "0"
                seen += 1
            child.send_signal(signal.SIGKILL)  # the child is in its pause: committed, not ACKed
            await child.wait()
        landed += 1
    final = await _spawn(hub, token, db, mode, 0.0, EVENTS)
    assert final.stdout is not None
    async with asyncio.timeout(90):
        out = (await final.stdout.read()).decode()
        assert await final.wait() == 0
    skipped += sum(line.endswith(" 0") for line in out.splitlines())
    return landed, skipped


def _rows_sqlite(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM applied")]


async def test_sigkilled_sqlite_consumer_applies_every_event_exactly_once(
    hub: Hub, token: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "consumer.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE applied (event_id TEXT NOT NULL, n INTEGER NOT NULL)")
    conn.close()
    tok = token()
    ids = await _publish(hub, tok)
    landed, skipped = await _crash_runs(hub, tok, f"sqlite:{path}", "inbox", KILLS)
    rows = _rows_sqlite(path)
    assert sorted(rows) == sorted(ids), "every event applied exactly once"
    assert landed == KILLS
    assert skipped >= 1, "the redelivered, already committed events were recognised by the inbox"


async def test_without_the_inbox_the_same_crashes_apply_events_twice(
    hub: Hub, token: Callable[..., str], tmp_path: Path
) -> None:
    path = tmp_path / "consumer.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE applied (event_id TEXT NOT NULL, n INTEGER NOT NULL)")
    conn.close()
    tok = token()
    ids = await _publish(hub, tok)
    landed, _ = await _crash_runs(hub, tok, f"sqlite:{path}", "plain", 3)
    rows = _rows_sqlite(path)
    assert set(rows) == ids
    assert len(rows) == EVENTS + landed, "each kill between commit and ACK applied one event twice"


@asynccontextmanager
async def _pg_schema() -> AsyncIterator[str]:
    from outboxhub.testing.postgres import base_url, fresh_schema, search_path_url

    async with fresh_schema("inbox") as schema:
        yield search_path_url(base_url(), schema)


@pytest.mark.postgres
async def test_sigkilled_postgres_consumer_applies_every_event_exactly_once(
    hub: Hub, token: Callable[..., str]
) -> None:
    import psycopg

    async with _pg_schema() as url:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute("CREATE TABLE applied (event_id TEXT NOT NULL, n INTEGER NOT NULL)")
            await inbox.ensure_schema_async(conn)
        tok = token()
        ids = await _publish(hub, tok)
        landed, skipped = await _crash_runs(hub, tok, f"postgresql:{url}", "inbox", KILLS)
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute("SELECT event_id FROM applied")
            rows = [r[0] for r in await cur.fetchall()]
        assert sorted(rows) == sorted(ids), "every event applied exactly once"
        assert landed == KILLS and skipped >= 1
