"""``outboxhub drain``: a subprocess drains an SQLite outbox into a running hub over WebSocket."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from outboxhub import outbox
from outboxhub.app import Hub


def _env(url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    env.update(OUTBOXHUB_URL=url, OUTBOXHUB_TOKEN=token)
    return env


def _write_outbox(path: Path, count: int) -> list[str]:
    conn = sqlite3.connect(path)
    outbox.ensure_schema(conn)
    ids = []
    with conn:  # one business transaction
        for i in range(count):
            ids.append(outbox.add(conn, "orders.created", {"n": i}, key=f"k{i % 7}"))
    conn.close()
    return ids


async def test_drain_publishes_every_record_once_into_a_remote_hub(
    hub: Hub, token: Callable[..., str], tmp_path: Path
) -> None:
    app_db = tmp_path / "app.db"
    ids = _write_outbox(app_db, 300)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli",
        "drain",
        "--outbox",
        f"sqlite:///{app_db}",
        env=_env(hub.ws_url, token(scopes=("publish:orders.**",))),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        for _ in range(300):
            if await hub.store.count("orders.created") >= len(ids):
                break
            await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    events = await hub.store.scan("orders.created", limit=1000)
    assert sorted(e.id for e in events) == sorted(ids), stderr.decode()
    conn = sqlite3.connect(app_db)
    pending = conn.execute("SELECT count(*) FROM outbox WHERE status != 'sent'").fetchone()[0]
    conn.close()
    assert pending == 0


async def test_sigterm_stops_the_drainers_gracefully_and_releases_every_claim(
    hub: Hub, token: Callable[..., str], tmp_path: Path
) -> None:
    app_db = tmp_path / "app.db"
    with sqlite3.connect(app_db) as conn:
        conn.execute("PRAGMA journal_mode = WAL")  # the test reads while the drainer writes
    ids = _write_outbox(app_db, 5000)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli",
        "drain",
        "--outbox",
        f"sqlite:///{app_db}",
        "--batch-size",
        "10",
        env=_env(hub.ws_url, token(scopes=("publish:orders.**",))),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    signalled = False
    try:
        for _ in range(6000):  # until the drainer is connected and publishing (safety net: 30 s)
            if hub.gateway.stats.publishes:
                break
            await asyncio.sleep(0.005)
        # The hub runs on this test's event loop: blocking it here leaves the drainer's next publish
        # unanswered, so it holds a claimed batch when SIGTERM arrives.
        assert _wait_until_claimed(app_db), "the drainer never held a claim"
        proc.send_signal(signal.SIGTERM)
        signalled = True
    finally:
        if not signalled:
            proc.kill()
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    assert "Traceback" not in stderr.decode()
    conn = sqlite3.connect(app_db)
    statuses = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
    conn.close()
    assert "claimed" not in statuses  # every claim was completed or released
    assert statuses.get("sent", 0) + statuses.get("pending", 0) == len(ids)
    events = await hub.store.scan("orders.created", limit=len(ids))
    assert len({e.id for e in events}) == len(events) == statuses.get("sent", 0)


def _wait_until_claimed(path: Path, timeout_s: float = 30.0) -> bool:
    """Poll (blocking: on purpose, see the caller) until some outbox record is claimed."""
    deadline = time.monotonic() + timeout_s
    conn = sqlite3.connect(path)
    try:
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM outbox WHERE status = 'claimed'").fetchone()[0]:
                return True
            time.sleep(0.005)
        return False
    finally:
        conn.close()


async def test_drain_without_a_token_is_one_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli",
        "drain",
        "--outbox",
        f"sqlite:///{tmp_path / 'app.db'}",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert "no token" in stderr.decode()


@pytest.mark.parametrize("bad_url", ["ftp://nowhere/outbox", "sqlite://"])
async def test_drain_with_a_bad_outbox_url_names_it(tmp_path: Path, bad_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outboxhub.cli",
        "drain",
        "--outbox",
        bad_url,
        "--store",
        f"sqlite:///{tmp_path / 'hub.db'}",
        env={k: v for k, v in os.environ.items() if not k.startswith("OUTBOXHUB_")},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    text = stderr.decode()
    assert "error:" in text
    assert "Traceback" not in text
