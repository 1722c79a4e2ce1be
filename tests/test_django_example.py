"""The example project under examples/django, run as a user would: ``manage.py migrate``, ``manage.py pay``
(the order and its event in one transaction), then ``manage.py outboxhub_drain --store`` into a hub store
until SIGTERM, which stops it gracefully (exit status 0, nothing left claimed). On SQLite, and on MariaDB
(``SHOP_DATABASE=mysql://…``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("django", reason="the 'django' extra is not installed")

from outboxhub import outbox
from outboxhub.store import open_store
from outboxhub.testing.mysql import throwaway_database

EXAMPLE = Path(__file__).parent.parent / "examples" / "django"
SRC = Path(__file__).parent.parent / "src"
WAIT_S = 60.0
"""Safety net for the drainer child to publish; never the thing measured."""


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def _hub_ids(hub_url: str) -> list[str]:
    hub = await open_store(hub_url)
    try:
        return [e.id for e in await hub.scan("**", after_seq=0, limit=100)]
    finally:
        await hub.close()


async def _run_example(database: str, outbox_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{EXAMPLE}{os.pathsep}{SRC}", "SHOP_DATABASE": database}
    _manage(env, "migrate", "--verbosity", "0")
    ids = [_manage(env, "pay", str(order), "1999") for order in (1, 2, 3)]
    hub_url = f"sqlite:///{tmp_path / 'hub.db'}"
    drain = await asyncio.create_subprocess_exec(
        sys.executable,
        "manage.py",
        "outboxhub_drain",
        "--store",
        hub_url,
        "--ordered-by-key",
        cwd=EXAMPLE,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT_S
        while sorted(await _hub_ids(hub_url) if (tmp_path / "hub.db").exists() else []) != sorted(ids):
            assert drain.returncode is None, await drain.communicate()
            assert time.monotonic() < deadline, "the drainer did not publish the example's events"
            await asyncio.sleep(0.1)
        drain.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(drain.communicate(), WAIT_S)
        assert drain.returncode == 0, err
    finally:
        if drain.returncode is None:
            drain.kill()
            await drain.communicate()
    store = await outbox.open_outbox(outbox_url)
    try:
        stats = await store.stats()
        assert (stats.pending, stats.claimed, stats.dead) == (0, 0, 0)
    finally:
        await store.close()


async def test_example_project_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite3"
    await _run_example(f"sqlite:///{db}", f"sqlite:///{db}?table=outboxhub_outbox", tmp_path)


@pytest.mark.mysql
async def test_example_project_on_mariadb(tmp_path: Path) -> None:
    with throwaway_database("shop") as url:
        await _run_example(url, f"{url}?table=outboxhub_outbox", tmp_path)
