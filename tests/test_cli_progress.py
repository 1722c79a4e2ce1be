"""``outboxhub drain``'s progress reporter against real SQLite outboxes and a real hub store: the live line
on a terminal, the log line otherwise, and the formatting (a hypothesis property)."""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from outboxhub import outbox
from outboxhub.cli.progress import DrainProgress, format_progress
from outboxhub.outbox import DrainerSettings, run_drainers


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@given(
    st.floats(min_value=0, max_value=1e9, allow_nan=False),
    st.integers(min_value=0, max_value=2**62),
    st.one_of(st.none(), st.integers(min_value=0, max_value=2**62)),
    st.integers(min_value=0, max_value=2**62),
)
def test_format_names_every_number(rate: float, published: int, pending: int | None, dead: int) -> None:
    text = format_progress(rate, published, pending, dead)
    assert f"{published} published" in text and f"{dead} dead" in text
    assert f"{'?' if pending is None else pending} pending" in text and "records/s" in text
    assert "\n" not in text


async def _drain_with(
    progress: DrainProgress, tmp_path: Path, hub: Any, n: int, *, stop_after_s: float = 0.0
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        outbox.ensure_schema(conn)
        for i in range(n):
            outbox.add(conn, "orders.new", {"i": i})
    task = asyncio.create_task(
        run_drainers(
            [f"sqlite:///{path}"], hub.store, DrainerSettings(idle_wait_ms=20), on_start=progress.on_start
        )
    )
    for _ in range(200):
        if await hub.store.count("orders.new") == n:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(progress.interval_s * 3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(stop_after_s)
    await progress.stop()


async def test_live_line_on_a_terminal(hub: Any, tmp_path: Path) -> None:
    stream = Tty()
    progress = DrainProgress(stream, interval_s=0.05)
    assert progress.live
    await _drain_with(progress, tmp_path, hub, 25)
    text = stream.getvalue()
    assert "\r\x1b[2K" in text and text.endswith("\n")
    assert "25 published, 0 pending, 0 dead" in text.split("\r\x1b[2K")[-1]


async def test_log_lines_otherwise(hub: Any, tmp_path: Path, caplog: Any) -> None:
    stream = io.StringIO()
    progress = DrainProgress(stream, interval_s=0.05)
    assert not progress.live
    with caplog.at_level(logging.INFO, logger="outboxhub.drain"):
        await _drain_with(progress, tmp_path, hub, 10)
    lines = [r.getMessage() for r in caplog.records if r.name == "outboxhub.drain"]
    assert lines and lines[-1].startswith("drain: ") and "10 published, 0 pending, 0 dead" in lines[-1]
    assert stream.getvalue() == ""


async def test_a_report_due_after_the_drainers_closed_their_outboxes_ends_quietly(
    hub: Any, tmp_path: Path, caplog: Any
) -> None:
    """``outboxhub drain`` stops its drainers (closing their outboxes) before the reporter; a report that
    falls due in between used to raise "SqliteOutbox is closed" out of ``stop()``."""
    progress = DrainProgress(io.StringIO(), interval_s=0.02)
    with caplog.at_level(logging.INFO, logger="outboxhub.drain"):
        await _drain_with(progress, tmp_path, hub, 3, stop_after_s=0.2)
    lines = [r.getMessage() for r in caplog.records if r.name == "outboxhub.drain"]
    assert lines and all("3 published, 0 pending, 0 dead" in line for line in lines[-2:])
