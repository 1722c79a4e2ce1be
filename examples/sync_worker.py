"""A blocking worker: consume typed events in a consumer group without asyncio, applying each exactly once
through the inbox in a SQLite transaction. ``python examples/sync_worker.py`` (Ctrl-C to stop).

export OUTBOXHUB_TOKEN=$(outboxhub token --sub ops --scope 'subscribe:process.**')
"""

from __future__ import annotations

import os
import sqlite3

from process_state import PROCESS_STATE, ProcessState

from outboxhub import inbox
from outboxhub.client import DEFAULT_URL, connect_sync


def apply(conn: sqlite3.Connection, state: ProcessState) -> None:
    conn.execute(
        "INSERT INTO process_state (name, state) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET state = excluded.state",
        (state.name, state.state),
    )


def main() -> None:
    conn = sqlite3.connect("worker.db")
    conn.execute("CREATE TABLE IF NOT EXISTS process_state (name TEXT PRIMARY KEY, state TEXT NOT NULL)")
    inbox.ensure_schema(conn)
    url = os.environ.get("OUTBOXHUB_URL", DEFAULT_URL)
    hub = connect_sync(url, os.environ["OUTBOXHUB_TOKEN"])
    with hub, hub.messages(PROCESS_STATE, "ops-worker", start="earliest", max_in_flight=10) as stream:
        for msg in stream:  # blocks until the next event; at most 10 wait here while we work
            with conn:  # one transaction: the record of the delivery and the work
                if inbox.claim(conn, "ops-worker", msg.event.topic, msg.event.id):
                    apply(conn, msg.payload)
            msg.ack()  # after the commit, in both cases


if __name__ == "__main__":
    main()
