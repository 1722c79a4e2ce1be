"""mypy checks typed topics: publish takes only the topic's payload type, handlers and messages get it;
with an inbox, the handler's third argument must take the inbox's connection type."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = """
from __future__ import annotations

import sqlite3

import msgspec

from outboxhub.client import HubClient, SubscribeContext, SyncHubClient, Topic
from outboxhub.inbox import SqliteInbox


class State(msgspec.Struct):
    up: bool


class Other(msgspec.Struct):
    n: int


STATE = Topic("process.state", State)


def on_state(state: State, ctx: SubscribeContext) -> None: ...
def on_other(other: Other, ctx: SubscribeContext) -> None: ...
def apply(state: State, ctx: SubscribeContext, conn: sqlite3.Connection) -> None: ...
def apply_other(other: Other, ctx: SubscribeContext, conn: sqlite3.Connection) -> None: ...
def apply_str(state: State, ctx: SubscribeContext, conn: str) -> None: ...


async def use(hub: HubClient, sync_hub: SyncHubClient) -> None:
    await hub.publish(STATE, State(up=True))
    await hub.publish("process.state", {"up": True})
    sync_hub.publish(STATE, State(up=True))
    await hub.subscribe(STATE, "ops", on_state)
    async for msg in hub.messages(STATE, "ops"):
        reveal_type(msg.payload)
    with sync_hub.messages(STATE, "ops") as stream:
        for sync_msg in stream:
            reveal_type(sync_msg.payload)
    await hub.publish(STATE, {"up": True})  # E1
    await hub.publish(STATE, Other(n=1))  # E2
    sync_hub.publish(STATE, Other(n=1))  # E3
    await hub.subscribe(STATE, "ops", on_other)  # E4
    await hub.subscribe(STATE, "ops", apply, inbox=SqliteInbox("app.db"))
    await hub.subscribe(STATE, "ops", apply_other, inbox=SqliteInbox("app.db"))  # E5
    await hub.subscribe(STATE, "ops", apply_str, inbox=SqliteInbox("app.db"))  # E6
"""


def test_mypy_accepts_matching_types_and_rejects_the_others(tmp_path: Path) -> None:
    path = tmp_path / "typed_use.py"
    path.write_text(SNIPPET)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "--hide-error-context", str(path)],
        cwd=ROOT,  # reuses the project's mypy cache
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = SNIPPET.splitlines()
    errors: set[str] = set()
    for out in proc.stdout.splitlines():
        # match the file name only: with a warm cache mypy may report the path of an identical earlier run
        m = re.search(r"typed_use\.py:(\d+): (error|note): (.*)", out)
        assert m is not None, out
        line, kind, text = int(m[1]), m[2], m[3]
        if kind == "note":
            assert "Revealed type is" in text and text.endswith('"typed_use.State"'), text
            continue
        marker = re.search(r"# (E\d)", lines[line - 1])
        assert marker is not None, f"unexpected mypy error on line {line}: {text}"
        errors.add(marker[1])
    assert errors == {"E1", "E2", "E3", "E4", "E5", "E6"}, proc.stdout + proc.stderr
