"""SQLite-specific behaviour: URLs and options, WAL, schema versions, group commit, stores sharing a file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import outboxhub.store as store_package
from outboxhub.errors import StoreError, StoreUnavailable, StoreURLError
from outboxhub.model import NewEvent, StartPosition
from outboxhub.store import Store, open_store
from outboxhub.store.sqlite import schema as _sqlite_schema
from outboxhub.store.sqlite.store import SQLiteOptions, SQLiteStore, parse_sqlite_url
from sqlite_support import QUIET, writer_settled

EARLIEST = StartPosition(kind="earliest")


def url_for(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(url_for(tmp_path / "hub.db"))
    yield store
    await store.close()


@pytest.fixture
async def quiet_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store whose lone writes commit on the loop thread once :func:`writer_settled` returns."""
    store = await SQLiteStore.open(url_for(tmp_path / "quiet.db", QUIET))
    yield store
    await store.close()


# -- URLs and options ---------------------------------------------------------------------------------------


def test_parse_absolute_and_relative_paths() -> None:
    assert parse_sqlite_url("sqlite:////var/lib/hub.db") == ("/var/lib/hub.db", SQLiteOptions())
    assert parse_sqlite_url("sqlite:///data/hub.db")[0] == "data/hub.db"
    assert parse_sqlite_url("sqlite:///with%20space.db")[0] == "with space.db"


def test_parse_options_from_query_and_keywords() -> None:
    _, options = parse_sqlite_url(
        "sqlite:///h.db?synchronous=FULL&busy_timeout_ms=250&readers=2&inline_claims=4"
    )
    assert options == SQLiteOptions(synchronous="full", busy_timeout_ms=250, readers=2, inline_claims=4)
    _, options = parse_sqlite_url(
        "sqlite:///h.db?synchronous=full", {"synchronous": "normal", "max_batch": 10}
    )
    assert (options.synchronous, options.max_batch) == ("normal", 10)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/x.db", "no host"),
        ("sqlite://", "names no database file"),
        ("sqlite:///", "names no database file"),
        ("sqlite:relative.db", "names no database file"),
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite:///x.db?synchronous=sometimes", "synchronous must be one of"),
        ("sqlite:///x.db?readers=0", "readers must be an integer from 1"),
        ("sqlite:///x.db?busy_timeout_ms=soon", "busy_timeout_ms must be an integer"),
        ("sqlite:///x.db?inline_claims=65", "inline_claims must be an integer from 0 to 64"),
        ("sqlite:///x.db?checkpoint_interval_ms=0", "checkpoint_interval_ms must be an integer from 1 to"),
        ("sqlite:///x.db?checkpoint_interval_ms=soon", "checkpoint_interval_ms must be an integer"),
        ("sqlite:///x.db?journal=delete", "unknown option 'journal'"),
        ("sqlite:///x.db?synchronous", "malformed query string"),
    ],
)
async def test_bad_sqlite_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(StoreURLError, match=message) as raised:
        await open_store(url)
    assert url.split("?")[0] in str(raised.value) or url == "sqlite:relative.db"


@pytest.mark.parametrize(
    "url",
    ["mysql://user:hunter2@db.example/x", "redis://:hunter2@cache:6379/0", "nope", "http://[::1/x"],
)
async def test_unknown_or_malformed_urls_name_the_url_with_the_password_masked(url: str) -> None:
    with pytest.raises(StoreURLError) as raised:
        await open_store(url)
    text = str(raised.value)
    assert "hunter2" not in text
    if "hunter2" in url:
        assert "***" in text and "unknown store URL scheme" in text


async def test_a_backend_that_cannot_be_imported_is_not_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(store_package._BACKENDS, "fancydb", ("outboxhub.store.no_such_backend", "FancyDB"))
    with pytest.raises(StoreURLError, match="FancyDB store backend is not available") as raised:
        await open_store("fancydb://admin:hunter2@db.example/x")
    assert "hunter2" not in str(raised.value) and "admin:***@db.example" in str(raised.value)


async def test_empty_url_is_refused() -> None:
    with pytest.raises(StoreURLError, match="empty"):
        await open_store("  ")


async def test_unknown_option_keyword_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreURLError, match="unknown option 'colour'"):
        await open_store(url_for(tmp_path / "x.db"), colour="blue")


async def test_missing_directory_is_unavailable_and_names_the_url(tmp_path: Path) -> None:
    url = url_for(tmp_path / "no" / "such" / "dir" / "hub.db")
    with pytest.raises(StoreUnavailable, match="does not exist") as raised:
        await open_store(url)
    assert url in str(raised.value)
    assert not (tmp_path / "no").exists()


async def test_unopenable_paths_are_unavailable(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()
    with pytest.raises(StoreUnavailable, match=r"adir\.db"):
        await open_store(url_for(tmp_path / "adir.db"))
    (tmp_path / "junk.db").write_bytes(b"this is not a database file at all" * 200)
    with pytest.raises(StoreUnavailable, match=r"junk\.db"):
        await open_store(url_for(tmp_path / "junk.db"))


async def test_relative_path_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///rel.db?synchronous=full")
    try:
        await store.publish(NewEvent(topic="a.b"))
    finally:
        await store.close()
    assert (tmp_path / "rel.db").exists()


# -- file format ---------------------------------------------------------------------------------------------


async def test_database_is_in_wal_mode_with_the_current_schema_version(sqlite_store: SQLiteStore) -> None:
    assert isinstance(sqlite_store, Store)
    await sqlite_store.publish(NewEvent(topic="a.b"))
    conn = sqlite3.connect(sqlite_store.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [
            (_sqlite_schema.SCHEMA_VERSION,)
        ]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"events", "topics", "groups", "pending", "schema_version"} <= tables
    finally:
        conn.close()


async def test_migrations_run_in_order_from_the_stored_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_for(tmp_path / "m.db")
    store = await open_store(url)
    await store.publish(NewEvent(topic="a.b", payload=1))
    await store.close()

    def v2(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE extra (x INTEGER)")

    newer = _sqlite_schema.SCHEMA_VERSION + 1
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", [*_sqlite_schema.MIGRATIONS, v2])
    monkeypatch.setattr(_sqlite_schema, "SCHEMA_VERSION", newer)
    store = await open_store(url)
    try:
        assert [e.payload for e in await store.scan("**")] == [1]
    finally:
        await store.close()
    conn = sqlite3.connect(tmp_path / "m.db")
    try:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(newer,)]
        assert conn.execute("SELECT count(*) FROM extra").fetchone() == (0,)
    finally:
        conn.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    url = url_for(tmp_path / "new.db")
    await (await open_store(url)).close()
    conn = sqlite3.connect(tmp_path / "new.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        await open_store(url)


# -- the writer ----------------------------------------------------------------------------------------------


async def test_group_commit_puts_queued_publishes_in_one_transaction(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    before = sqlite_store.writer_stats.commits
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer waits for this lock while publishes queue up
    try:
        tasks = [
            asyncio.ensure_future(sqlite_store.publish(NewEvent(topic="gc.t", payload=i))) for i in range(500)
        ]
        for _ in range(5):
            await asyncio.sleep(0)
        assert not any(t.done() for t in tasks)  # nothing is confirmed before its commit
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    results = await asyncio.gather(*tasks)
    assert sorted(r.seq for r in results) == [r.seq for r in results]
    commits = sqlite_store.writer_stats.commits - before
    assert 1 <= commits <= 2, f"500 queued publishes took {commits} commits"
    assert await sqlite_store.count("gc.t") == 500


async def test_a_lone_publish_commits_on_the_loop_thread_and_a_burst_still_shares_commits(
    quiet_store: SQLiteStore,
) -> None:
    sqlite_store = quiet_store
    await sqlite_store.publish(NewEvent(topic="warm.up"))
    stats = sqlite_store.writer_stats
    await writer_settled(sqlite_store)  # and a new loop iteration: the warm-up's inline turn is over
    inline, commits = stats.inline_commits, stats.commits
    result = await sqlite_store.publish(NewEvent(topic="lone.t"))
    assert (stats.inline_commits, stats.commits) == (inline + 1, commits + 1)
    assert (await sqlite_store.get_event(result.id, topic="lone.t")) is not None  # committed when confirmed
    await asyncio.sleep(0)
    inline, commits = stats.inline_commits, stats.commits
    results = await asyncio.gather(
        *(sqlite_store.publish(NewEvent(topic="burst.t", payload=i)) for i in range(200))
    )
    assert [r.seq for r in results] == sorted(r.seq for r in results)  # submission order kept
    assert stats.inline_commits == inline + 1  # only the first of the iteration; the rest went to the thread
    assert stats.commits - commits <= 3, (
        f"200 publishes of one loop iteration took {stats.commits - commits} commits"
    )


async def test_an_inline_publish_commits_in_four_statements(quiet_store: SQLiteStore) -> None:
    """The hot path of a one-at-a-time publish: no busy_timeout PRAGMA around its BEGIN (left at 0 until the
    writer thread needs it back), no SAVEPOINT around the batch's lone publish or its one-row INSERT, no
    read of the last seq or the topics while no other connection committed (``PRAGMA data_version``;
    test_sqlite_shared_file.py has the other connections), and no topic UPDATE (the count is folded once
    per ``FOLD_EVERY`` appends, schema version 3)."""
    sqlite_store = quiet_store
    await sqlite_store.publish(NewEvent(topic="six.t", payload=0))  # the topic exists
    await writer_settled(sqlite_store)
    await sqlite_store.publish(NewEvent(topic="six.t", payload=0.5))  # inline: busy_timeout is 0
    await asyncio.sleep(0)
    conn = sqlite_store._writer._conn
    assert conn is not None
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        inline = sqlite_store.writer_stats.inline_commits
        await sqlite_store.publish(NewEvent(topic="six.t", payload=1))
        assert sqlite_store.writer_stats.inline_commits == inline + 1
    finally:
        conn.set_trace_callback(None)
    words = [statement.split()[0].upper() for statement in statements]
    assert words == ["BEGIN", "PRAGMA", "INSERT", "COMMIT"], statements
    assert [e.payload for e in await sqlite_store.scan("six.t")] == [0, 0.5, 1]


async def test_a_failing_inline_publish_rolls_back_alone_and_the_next_one_commits(tmp_path: Path) -> None:
    path = tmp_path / "refuse.db"
    store = await SQLiteStore.open(url_for(path, QUIET))
    try:
        await store.publish(NewEvent(topic="ok.t", payload=0))
        await writer_settled(store)
        refuser = sqlite3.connect(path, isolation_level=None)
        refuser.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.key = 'refused' "
            "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
        refuser.close()
        await asyncio.sleep(0)
        inline = store.writer_stats.inline_commits
        with pytest.raises(StoreError, match="refused by the test"):
            await store.publish(NewEvent(topic="new.t", payload=1, key="refused"))
        assert store.writer_stats.inline_commits == inline + 1  # it ran on the loop thread
        await asyncio.sleep(0)
        result = await store.publish(NewEvent(topic="ok.t", payload=2))
        assert [e.payload for e in await store.scan("ok.t")] == [0, 2]
        assert result.seq == 2  # the refused publish took no seq
        assert [t.topic for t in await store.topics()] == ["ok.t"]  # nor created its topic
    finally:
        await store.close()


async def test_with_synchronous_full_no_commit_runs_on_the_loop_thread(tmp_path: Path) -> None:
    store = await SQLiteStore.open(url_for(tmp_path / "full.db") + "?synchronous=full")
    try:
        for i in range(3):
            await store.publish(NewEvent(topic="full.t", payload=i))
            await asyncio.sleep(0)
        assert store.writer_stats.inline_commits == 0  # each would wait for an fsync on the loop
        assert store.writer_stats.commits >= 3
    finally:
        await store.close()


async def test_a_failing_job_does_not_poison_its_batch(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.ensure_group("ok.*", "g", EARLIEST)
    before = sqlite_store.writer_stats.commits
    blocker = sqlite3.connect(sqlite_store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.ensure_future(sqlite_store.publish(NewEvent(topic="ok.a", payload=1)))
        bad = asyncio.ensure_future(
            sqlite_store.claim("ok.*", "missing", "m", limit=5, ack_timeout_ms=1000, max_deliver=3)
        )
        claim = asyncio.ensure_future(
            sqlite_store.claim("ok.*", "g", "m", limit=5, ack_timeout_ms=1000, max_deliver=3)
        )
        second = asyncio.ensure_future(sqlite_store.publish(NewEvent(topic="ok.b", payload=2)))
        for _ in range(5):
            await asyncio.sleep(0)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    with pytest.raises(StoreError, match="does not exist"):
        await bad
    assert [d.event.payload for d in await claim] == [1]
    assert (await first).seq < (await second).seq
    assert sqlite_store.writer_stats.commits - before <= 2
    assert [e.payload for e in await sqlite_store.scan("ok.*")] == [1, 2]


async def test_a_locked_database_is_unavailable_and_the_store_recovers(tmp_path: Path) -> None:
    store = await open_store(url_for(tmp_path / "l.db", "busy_timeout_ms=0"))
    assert isinstance(store, SQLiteStore)
    try:
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreUnavailable, match="locked"):
                await store.publish(NewEvent(topic="l.t", payload="lost"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await store.publish(NewEvent(topic="l.t", payload="kept"))
        assert [e.payload for e in await store.scan("l.t")] == ["kept"]
    finally:
        await store.close()


async def test_a_payload_that_is_not_json_is_refused_before_anything_is_written(
    sqlite_store: SQLiteStore,
) -> None:
    with pytest.raises(StoreError, match="not JSON-encodable"):
        await sqlite_store.publish(NewEvent(topic="j.t", payload={"when": object()}))
    with pytest.raises(StoreError, match="not JSON-encodable"):
        await sqlite_store.publish_batch(
            [NewEvent(topic="j.t", payload=1), NewEvent(topic="j.t", payload=object())]
        )
    assert await sqlite_store.last_seq() == 0


async def test_readers_answer_concurrently_with_writes(sqlite_store: SQLiteStore) -> None:
    await sqlite_store.publish_batch([NewEvent(topic=f"r.t{i % 4}", payload=i) for i in range(200)])
    writes = [sqlite_store.publish(NewEvent(topic="r.t0", payload=-1)) for _ in range(50)]
    reads = [sqlite_store.scan("r.*", limit=500) for _ in range(20)]
    results = await asyncio.gather(*writes, *reads)
    for scanned in results[50:]:
        assert isinstance(scanned, list)
        seqs = [e.seq for e in scanned]
        assert seqs == sorted(seqs) and len(seqs) >= 200


# -- several store objects on one file (as several hub processes would) -------------------------------------


async def test_two_stores_on_one_file_see_each_others_topics_and_share_groups(tmp_path: Path) -> None:
    url = url_for(tmp_path / "shared.db")
    one = await open_store(url)
    two = await open_store(url)
    try:
        await one.publish(NewEvent(topic="s.first", payload=1))
        await one.ensure_group("s.*", "g", EARLIEST)
        assert [e.payload for e in await two.scan("s.*")] == [1]
        await two.publish(NewEvent(topic="s.second", payload=2))  # a topic `one` has never seen
        await one.publish(NewEvent(topic="s.first", payload=3))
        assert [e.payload for e in await one.scan("s.*")] == [1, 2, 3]
        got_one = await one.claim("s.*", "g", "m1", limit=2, ack_timeout_ms=10_000, max_deliver=3)
        got_two = await two.claim("s.*", "g", "m2", limit=5, ack_timeout_ms=10_000, max_deliver=3)
        assert [d.event.payload for d in got_one] == [1, 2]
        assert [d.event.payload for d in got_two] == [3]
        await two.ack("s.*", "g", [d.event.id for d in got_one + got_two])
        lag = await one.lag("s.*", "g")
        assert lag is not None and lag.lag_count == 0
        seqs = [e.seq for e in await two.scan("**")]
        assert seqs == sorted(set(seqs))
    finally:
        await one.close()
        await two.close()


async def test_checkpoints_run_on_their_own_thread_and_stop_with_the_store(tmp_path: Path) -> None:
    """A few small commits, far below SQLite's own 1,000-page checkpoint threshold, are checkpointed by
    the checkpointer thread (the writer no longer stalls for it); closing the store ends that thread."""
    before = set(threading.enumerate())
    store = await open_store(url_for(tmp_path / "ckpt.db"))
    assert isinstance(store, SQLiteStore)
    try:
        for i in range(3):
            await store.publish(NewEvent(topic="ckpt.t", payload=i))
        async with asyncio.timeout(20):  # a safety net: the checkpoint follows within about 0.1 s
            while store.writer_stats.checkpoints == 0:  # noqa: ASYNC110 - a counter of another thread
                await asyncio.sleep(0.01)
    finally:
        await store.close()
    assert not [t for t in set(threading.enumerate()) - before if t.name == "outboxhub-sqlite-checkpoint"]
    conn = sqlite3.connect(tmp_path / "ckpt.db")
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (3,)
    finally:
        conn.close()
