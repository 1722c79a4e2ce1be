"""A confirmed publish survives SIGKILL of the publishing process (SQLite, default ``synchronous=normal``).

A child process publishes pipelined (many publishes in flight) and prints each id once its publish is
confirmed. The test kills it with SIGKILL mid-stream, reopens the database and checks that every confirmed
id is in the log exactly once, with unique, increasing seqs, and that the store carries on normally.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from outboxhub.model import NewEvent
from outboxhub.store import open_store

CONFIRMED_BEFORE_KILL = 3_000

CHILD = r"""
import asyncio, sys
from outboxhub.model import NewEvent
from outboxhub.store import open_store

async def worker(store, n):
    i = 0
    while True:
        result = await store.publish(NewEvent(topic=f"crash.w{n}", payload={"n": n, "i": i}))
        sys.stdout.write(result.id + "\n")
        sys.stdout.flush()
        i += 1

async def main():
    store = await open_store(sys.argv[1])
    await asyncio.gather(*(worker(store, n) for n in range(32)))

asyncio.run(main())
"""


def test_confirmed_publishes_survive_sigkill(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    errors = tmp_path / "child.stderr"
    with errors.open("w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    assert child.stdout is not None
    confirmed: list[str] = []
    try:
        while len(confirmed) < CONFIRMED_BEFORE_KILL:
            line = child.stdout.readline()
            if not line:
                child.wait(timeout=10)
                raise AssertionError(
                    f"the publisher exited early (rc={child.returncode}): {errors.read_text()}"
                )
            confirmed.append(line.rstrip("\n"))
        os.kill(child.pid, signal.SIGKILL)
        # Read the rest through the same buffered stream (its read-ahead holds lines already printed).
        rest = child.stdout.read()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # Lines printed before the kill are confirmations too; a torn last line is not.
    confirmed += [line for line in rest.split("\n")[:-1] if line]
    assert len(set(confirmed)) == len(confirmed)

    asyncio.run(_check(url, confirmed))


async def _check(url: str, confirmed: list[str]) -> None:
    store = await open_store(url)
    try:
        events = []
        after = 0
        while page := await store.scan("crash.*", after_seq=after, limit=5_000):
            events.extend(page)
            after = page[-1].seq
        seqs = [e.seq for e in events]
        assert seqs == sorted(set(seqs)), "seqs must be unique and increasing"
        ids = [e.id for e in events]
        assert len(ids) == len(set(ids)), "an event id is stored twice"
        missing = set(confirmed) - set(ids)
        assert not missing, f"{len(missing)} confirmed publishes were lost, e.g. {sorted(missing)[:3]}"
        assert await store.count("crash.*") == len(events)
        # The store carries on: new seqs follow the recovered log, and re-publishing is idempotent.
        fresh = await store.publish(NewEvent(topic="crash.after"))
        assert fresh.seq > seqs[-1]
        again = await store.publish(NewEvent(topic="crash.w0", id=confirmed[0]))
        assert again.duplicate
    finally:
        await store.close()
