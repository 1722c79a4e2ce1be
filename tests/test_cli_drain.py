"""``outboxhub drain``: a subprocess drains an SQLite outbox into a running hub over WebSocket."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from outboxhub import outbox
from outboxhub.server import Hub


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
