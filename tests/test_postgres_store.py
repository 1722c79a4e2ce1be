"""PostgreSQL store beyond the contract suite: gap safety, two nodes on one schema, cross-node wake-up,
connection loss and recovery, URL parsing, the pattern → regular expression translation, and the plans
of event scans.

Every test gets its own throwaway schema on the test server (``OUTBOXHUB_TEST_PG_URL``, default
127.0.0.1:5432/test). Without the server the tests skip, naming it; under ``CI=true`` they fail instead.
Connection loss is produced with a real TCP proxy between the store and the server (closing it cuts every
connection), so the shared server itself is never disturbed here (see test_postgres_restart.py for that).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.pq import TransactionStatus

from outboxhub.errors import StoreError, StoreUnavailable, StoreURLError, TopicError
from outboxhub.model import Delivery, NewEvent, StartPosition
from outboxhub.store import open_store
from outboxhub.store.codec import prepare
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.store.patterns import pattern_regex
from outboxhub.store.postgres import events as pg_events
from outboxhub.store.postgres import groups as pg_groups
from outboxhub.store.postgres.conn import configure_connection, parse_url, pipelined_transaction
from outboxhub.store.postgres.events import append
from outboxhub.store.postgres.schema import channel_name, quote_ident
from outboxhub.store.postgres.store import PostgresStore
from outboxhub.testing.postgres import base_url, require_postgres, schema_url, throwaway_schema
from outboxhub.topics import match_topic

pg = pytest.mark.postgres

EARLIEST = StartPosition(kind="earliest")
WAIT_S = 20.0
"""Upper bound for anything that should happen "soon" (a safety net, never the thing being measured)."""


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with throwaway_schema() as url:
        yield url


async def _open(url: str, **options: Any) -> PostgresStore:
    store = await open_store(url, **options)
    assert isinstance(store, PostgresStore)
    return store


async def _until(condition: Any, what: str) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``WAIT_S``."""
    try:
        async with asyncio.timeout(WAIT_S):
            while not await condition():  # noqa: ASYNC110 - polling a database condition, no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


# -- gap safety -----------------------------------------------------------------------------------------


async def _blocked_by(pid: int) -> bool:
    """Is some session waiting for a lock that the session ``pid`` holds?"""
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
        )
        row = await cur.fetchone()
        return row is not None and row[0] > 0


@pg
async def test_a_later_commit_never_hides_an_earlier_open_publish(pg_url: str) -> None:
    """Hold one publishing transaction open while a later publish tries to commit and a consumer reads: the
    consumer must get both events, in seq order, with the held one first."""
    store = await _open(pg_url)
    schema = store.schema
    try:
        await store.ensure_group("gap.**", "g", EARLIEST)
        held = await psycopg.AsyncConnection.connect(base_url())
        try:
            await held.execute(f"SET search_path = {quote_ident(schema)}")
            # The store's own append, in a transaction we keep open: it has taken its seq.
            results, _ = await append(
                held, channel_name(schema), [prepare(NewEvent(topic="gap.a", id="held"))]
            )
            held_seq = results[0].seq
            later = asyncio.create_task(store.publish(NewEvent(topic="gap.b", id="later")))

            async def later_committed_or_queued() -> bool:
                return later.done() or await _blocked_by(held.info.backend_pid)

            await _until(later_committed_or_queued, "the later publish commits or queues")
            got: list[Delivery] = []
            got += await store.claim("gap.**", "g", "m", limit=10, ack_timeout_ms=60_000, max_deliver=5)
            await held.commit()
        finally:
            await held.close()
        later_result = await asyncio.wait_for(later, WAIT_S)
        got += await store.claim("gap.**", "g", "m", limit=10, ack_timeout_ms=60_000, max_deliver=5)
        assert [d.event.id for d in got] == ["held", "later"]
        assert [d.event.seq for d in got] == [held_seq, later_result.seq]
        assert held_seq < later_result.seq
        assert [e.id for e in await store.scan("gap.**")] == ["held", "later"]
    finally:
        await store.close()


@pg
async def test_group_commit_keeps_submission_order_and_isolates_a_bad_event(pg_url: str) -> None:
    """Publishes queued together commit in several overlapping transactions, yet take seqs in the order
    they were submitted; an event PostgreSQL refuses (a NUL in its key) fails only its own publish."""
    store = await _open(pg_url, max_batch=50)
    try:
        events = [NewEvent(topic="gc.t", payload=i) for i in range(600)]
        results = await asyncio.gather(*(store.publish(e) for e in events))
        seqs = [r.seq for r in results]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        outcomes = await asyncio.gather(
            store.publish(NewEvent(topic="gc.u", payload="ok-1")),
            store.publish(NewEvent(topic="gc.u", key="bad\x00key")),
            store.publish_batch(
                [NewEvent(topic="gc.u", payload="ok-2"), NewEvent(topic="gc.u", payload="ok-3")]
            ),
            return_exceptions=True,
        )
        assert isinstance(outcomes[1], StoreError) and not isinstance(outcomes[1], StoreUnavailable)
        assert [e.payload for e in await store.scan("gc.u")] == ["ok-1", "ok-2", "ok-3"]
    finally:
        await store.close()


# -- two nodes on one schema ----------------------------------------------------------------------------


@pg
async def test_two_nodes_share_groups_without_double_claims(pg_url: str) -> None:
    node_a = await _open(pg_url)
    node_b = await _open(pg_url)
    nodes = (node_a, node_b)
    try:
        await node_a.ensure_group("mn.**", "work", EARLIEST)
        await node_b.ensure_group("mn.**", "audit", EARLIEST)
        per_publisher = 60
        publishers = 3
        total = 2 * publishers * per_publisher
        published: list[str] = []
        in_flight: dict[str, str] = {}  # event id -> member currently holding it (all nodes)
        acked: Counter[str] = Counter()
        audit: Counter[str] = Counter()
        overlaps: list[str] = []
        done = asyncio.Event()

        async def publisher(node: PostgresStore, p: int) -> None:
            for i in range(0, per_publisher, 4):
                batch = [NewEvent(topic=f"mn.p{p}.{i % 3}", payload=[p, j]) for j in range(i, i + 4)]
                if i % 8:
                    results = await node.publish_batch(batch)
                else:
                    results = list(await asyncio.gather(*(node.publish(e) for e in batch)))
                published.extend(r.id for r in results)

        async def member(node: PostgresStore, group: str, name: str, seen: Counter[str]) -> None:
            while not done.is_set():
                got = await node.claim("mn.**", group, name, limit=5, ack_timeout_ms=600_000, max_deliver=5)
                for d in got:
                    if group == "work":
                        holder = in_flight.get(d.event.id)
                        if holder is not None:
                            overlaps.append(f"{d.event.id} held by {holder}, handed to {name}")
                        in_flight[d.event.id] = name
                await asyncio.sleep(0)  # let the others run while these are "being processed"
                if got:
                    ids = [d.event.id for d in got]
                    assert await node.ack("mn.**", group, ids) == len(ids)
                    for event_id in ids:
                        if group == "work":
                            in_flight.pop(event_id, None)
                        seen[event_id] += 1
                else:
                    await asyncio.sleep(0.002)
                if sum(acked.values()) >= total and sum(audit.values()) >= total:
                    done.set()

        members = [
            asyncio.create_task(member(node, "work", f"{tag}{i}", acked))
            for node, tag in ((node_a, "a"), (node_b, "b"))
            for i in range(3)
        ]
        members.append(asyncio.create_task(member(node_b, "audit", "x", audit)))
        await asyncio.gather(*(publisher(node, p) for node in nodes for p in range(publishers)))
        async with asyncio.timeout(60):
            await done.wait()
        await asyncio.gather(*members)
        assert overlaps == []
        assert len(published) == len(set(published)) == total
        assert set(acked) == set(published) and max(acked.values()) == 1
        assert set(audit) == set(published) and max(audit.values()) == 1
        for node in nodes:
            for group in ("work", "audit"):
                lag = await node.lag("mn.**", group)
                assert lag is not None and lag.lag_count == 0 and lag.cursor.seq == await node.last_seq()
        seqs = [e.seq for e in await node_b.scan("mn.**", limit=10_000)]
        assert seqs == sorted(seqs) and len(seqs) == total
    finally:
        for node in nodes:
            await node.close()


@pg
async def test_concurrent_group_creation_on_two_nodes_yields_one_group(pg_url: str) -> None:
    node_a = await _open(pg_url)
    node_b = await _open(pg_url)
    try:
        await node_a.publish_batch([NewEvent(topic="cg.t", payload=i) for i in range(3)])
        infos = await asyncio.gather(
            *(node.ensure_group("cg.*", "g", StartPosition(kind="latest")) for node in (node_a, node_b) * 4)
        )
        assert len({(i.pattern, i.group, i.frontier) for i in infos}) == 1
        assert [(g.pattern, g.group) for g in await node_b.groups()] == [("cg.*", "g")]
    finally:
        await node_a.close()
        await node_b.close()


# -- wake-up --------------------------------------------------------------------------------------------


@pg
async def test_a_commit_on_one_node_wakes_listeners_on_the_other(pg_url: str) -> None:
    node_a = await _open(pg_url)
    # A poll interval of an hour: only NOTIFY can deliver the wake-up in time.
    node_b = await _open(pg_url, poll_interval_s=3600)
    try:
        await asyncio.wait_for(node_b.listener.connected.wait(), WAIT_S)
        woken: asyncio.Queue[int] = asyncio.Queue()
        node_b.add_commit_listener(woken.put_nowait)
        result = await node_a.publish(NewEvent(topic="wake.t", payload=1))
        assert await asyncio.wait_for(woken.get(), WAIT_S) == result.seq

        # The LISTEN connection is cut (as by a server-side disconnect): it comes back and still wakes B.
        pid = node_b.listener.backend_pid
        async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        async def reconnected() -> bool:
            return node_b.listener.reconnects >= 1 and node_b.listener.connected.is_set()

        await _until(reconnected, "the listener reconnects")
        result = await node_a.publish(NewEvent(topic="wake.t", payload=2))
        while (seq := await asyncio.wait_for(woken.get(), WAIT_S)) < result.seq:
            pass
        assert seq == result.seq
    finally:
        await node_a.close()
        await node_b.close()


@pg
async def test_local_commits_call_listeners_once_per_new_seq(pg_url: str) -> None:
    store = await _open(pg_url)
    other = await _open(pg_url)  # a second node listening: the commits are NOTIFYed to this store too
    try:
        await asyncio.wait_for(other.listener.connected.wait(), WAIT_S)
        seen: list[int] = []
        store.add_commit_listener(seen.append)
        first = await store.publish(NewEvent(topic="l.t"))
        again = await store.publish(NewEvent(topic="l.t", id=first.id))
        assert again.duplicate and again.seq == first.seq
        second = await store.publish(NewEvent(topic="l.t"))
        await asyncio.sleep(0.05)  # let the NOTIFY of our own commits arrive too: no repeat calls
        assert seen == [first.seq, second.seq]
        store.remove_commit_listener(seen.append)
        await store.publish(NewEvent(topic="l.t"))
        assert len(seen) == 2
    finally:
        await store.close()
        await other.close()


# -- connection loss ------------------------------------------------------------------------------------


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the test server; ``stop`` cuts every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))


def _via(url: str, port: int, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@127.0.0.1:{port}"))


@pg
async def test_connection_loss_raises_unavailable_and_the_store_recovers(pg_url: str) -> None:
    target = urlsplit(base_url())
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    url = _via(pg_url, proxy.port, "s3cret-pw")
    store = await _open(url, pool_timeout_s=0.5, poll_interval_s=0.2, connect_timeout_s=1)
    confirmed: list[str] = []
    try:
        # Listening (LISTEN and its registration done) before the cut, so that coming back is a reconnect.
        await asyncio.wait_for(store.listener.connected.wait(), WAIT_S)
        confirmed.append((await store.publish(NewEvent(topic="loss.t", payload=0))).id)
        await store.ensure_group("loss.*", "g", EARLIEST)
        await proxy.stop()
        with pytest.raises(StoreUnavailable) as caught:
            await store.publish(NewEvent(topic="loss.t", payload=1))
        message = str(caught.value)
        assert "s3cret-pw" not in message and "***" in message and str(proxy.port) in message
        assert "\n" not in message
        for call in (store.scan("loss.*"), store.ping(), store.ack("loss.*", "g", ["x"])):
            with pytest.raises(StoreUnavailable):
                await call
        await proxy.start()  # the server is back, on the same address

        async def publishes() -> bool:
            try:
                confirmed.append((await store.publish(NewEvent(topic="loss.t", payload=2))).id)
            except StoreUnavailable:
                return False
            return True

        await _until(publishes, "the store publishes again")
        await store.ping()
        assert [e.id for e in await store.scan("loss.*")] == confirmed

        async def listening_again() -> bool:
            return store.listener.reconnects >= 1 and store.listener.connected.is_set()

        await _until(listening_again, "the listener is back")
    finally:
        await store.close()
        await proxy.stop()


@pg
async def test_an_unreachable_server_is_unavailable_with_the_password_masked() -> None:
    await require_postgres()  # only to keep this file's skip/fail rule uniform
    with pytest.raises(StoreUnavailable) as caught:
        await open_store("postgresql://postgres:hunter2@127.0.0.1:1/test?schema=x", connect_timeout_s=1)
    assert "hunter2" not in str(caught.value)
    assert "postgresql://postgres:***@127.0.0.1:1/test" in str(caught.value)


@pg
async def test_a_newer_schema_version_is_refused(pg_url: str) -> None:
    store = await _open(pg_url)
    await store.close()
    schema = parse_url(pg_url).schema
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
        await conn.execute(f"UPDATE {quote_ident(schema)}.schema_version SET version = 999")
    with pytest.raises(StoreError, match="version 999"):
        await open_store(pg_url)


@pg
async def test_two_nodes_starting_at_once_migrate_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(_open(pg_url) for _ in range(4)))
    try:
        results = await asyncio.gather(*(s.publish(NewEvent(topic="m.t")) for s in stores))
        assert sorted(r.seq for r in results) == [1, 2, 3, 4]
    finally:
        for s in stores:
            await s.close()


# -- URL parsing (pure) ---------------------------------------------------------------------------------


def test_url_options_are_read_and_stripped_from_the_dsn() -> None:
    settings = parse_url(
        "postgresql://u:pw@db:5433/app?schema=hub_1&pool_max=3&sslmode=disable&max_batch=10",
        {"poll_interval_s": 0.5},
    )
    assert settings.schema == "hub_1" and settings.pool_max == 3 and settings.max_batch == 10
    assert settings.poll_interval_s == 0.5
    assert settings.dsn == "postgresql://u:pw@db:5433/app?sslmode=disable"
    assert (
        settings.url == "postgresql://u:***@db:5433/app?schema=hub_1&pool_max=3&sslmode=disable&max_batch=10"
    )
    assert parse_url("postgres://h/db").schema == "outboxhub"


@pytest.mark.parametrize(
    ("url", "options", "problem"),
    [
        ("postgresql://h/db?schema=1bad", {}, "schema '1bad'"),
        ("postgresql://h/db?schema=a-b", {}, "schema 'a-b'"),
        ("postgresql://h/db", {"pool_max": 0}, "pool_max"),
        ("postgresql://h/db?pool_timeout_s=soon", {}, "pool_timeout_s"),
        ("postgresql://h/db", {"nonsense": 1}, "unknown option 'nonsense'"),
        ("postgresql://u:pw@h:notaport/db", {}, "port"),
        ("mysql://h/db", {}, "scheme"),
    ],
)
def test_bad_urls_are_refused_naming_the_problem(url: str, options: dict[str, Any], problem: str) -> None:
    with pytest.raises(StoreURLError, match=re.escape(problem)) as caught:
        parse_url(url, options)
    assert "pw@" not in str(caught.value)


def test_schema_url_replaces_the_schema() -> None:
    assert schema_url("postgresql://h/db?schema=a&x=1", "b") == "postgresql://h/db?x=1&schema=b"


# -- pattern → regular expression (pure) ----------------------------------------------------------------

_SEGMENTS = st.sampled_from(["a", "b", "c", "x-1", "k:v"])
_TOKENS = st.sampled_from(["a", "b", "c", "x-1", "k:v", "*", "**"])


@given(st.lists(_TOKENS, min_size=1, max_size=6), st.lists(_SEGMENTS, min_size=1, max_size=7))
def test_pattern_regex_agrees_with_match_topic(pattern_tokens: list[str], topic_segments: list[str]) -> None:
    pattern = ".".join(pattern_tokens)
    topic = ".".join(topic_segments)
    regex = pattern_regex(pattern)
    matched = True if regex is None else re.search(regex, topic) is not None
    assert matched == match_topic(pattern, topic), (pattern, regex, topic)


def test_pattern_regex_rejects_invalid_patterns() -> None:
    with pytest.raises(TopicError):
        pattern_regex("a..b")
    assert pattern_regex("**") is None and pattern_regex("**.**") is None and pattern_regex("*.**") is None
    assert pattern_regex("*.*.**") == r"^[^.]+\.[^.]+(?:\.[^.]+)*$"
    assert pattern_regex("a.**.c.d") == r"^a(?:\.[^.]+)*\.c\.d$"


@pg
async def test_server_side_regex_matches_like_python(pg_url: str) -> None:
    """The same expressions under PostgreSQL's ``~`` (what the store runs) as under Python's ``re``."""
    patterns = ["a.**.c.d", "**.d", "*.*", "a.*.**", "**.k:v.**", "x-1", "*"]
    topics = ["a.c.x.c.d", "a.c.d", "a", "a.b", "b.d", "q.k:v", "x-1", "a.b.c"]
    async with await psycopg.AsyncConnection.connect(base_url(), autocommit=True) as conn:
        for pattern in patterns:
            regex = pattern_regex(pattern)
            assert regex is not None
            cur = await conn.execute("SELECT t FROM unnest(%s::text[]) t WHERE t ~ %s", (topics, regex))
            assert sorted(r[0] for r in await cur.fetchall()) == sorted(
                t for t in topics if match_topic(pattern, t)
            ), pattern


@pg
async def test_claiming_an_unknown_group_is_an_error(pg_url: str) -> None:
    store = await _open(pg_url)
    try:
        with pytest.raises(StoreError, match="does not exist"):
            await store.claim("nope.*", "g", "m", limit=1, ack_timeout_ms=1000, max_deliver=1)
    finally:
        await store.close()


# -- query plans and transactions -----------------------------------------------------------------------


async def _raw_connection(store: PostgresStore) -> psycopg.AsyncConnection[Any]:
    """A connection set up as the store sets up its pooled ones, on the store's schema."""
    conn = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    await configure_connection(conn)
    await conn.execute(f"SET search_path = {quote_ident(store.schema)}")
    return conn


async def _explain_everything(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """From now on, the plan of every statement ``conn`` runs (as executed) is appended to the list."""
    plans: list[str] = []
    conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
    try:
        await conn.execute("LOAD 'auto_explain'")
    except psycopg.Error as exc:  # the module ships with PostgreSQL; loading it needs a superuser
        pytest.fail(f"cannot load auto_explain on the test server ({exc}); connect as a superuser")
    await conn.execute("SET auto_explain.log_min_duration = 0")
    await conn.execute("SET auto_explain.log_nested_statements = on")  # claim_new's statements
    await conn.execute("SET client_min_messages = log")
    return plans


def _event_scans(plans: list[str]) -> list[str]:
    """The plans of statements that read events by topic (a page of a scan or of a claim's new events)."""
    return [p for p in plans if "e.payload" in p and "FROM pending" not in p and "topic" in p]


def _assert_index_ranges(plan: str, *, concrete: bool) -> None:
    assert "Bitmap" not in plan and "Seq Scan" not in plan, plan
    reads = [line for line in plan.splitlines() if " on events " in line]
    assert reads and all("Index Scan using events_topic_seq on events" in line for line in reads), plan
    assert not any("Sort Key" in line and "topic_id" in line for line in plan.splitlines()), plan
    if concrete:  # the index order is the answer's order
        assert "Sort" not in plan, plan


@pg
@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_every_event_scan_reads_one_index_range_per_topic(pg_url: str, analyzed: bool) -> None:
    """Replay pages (a concrete topic and a pattern) and a claim's page of new events read each topic's
    ``(topic_id, seq)`` index range from the cursor and stop at the limit: no bitmap or sequential scan of
    events, no walk of the primary key filtered by topic, no sort of a topic's events. Checked on the
    plans PostgreSQL ran (auto_explain), on a fresh table without statistics and after ANALYZE, with the
    three topics' events interleaved; the old plans failed both (a sort of every remaining row per page)."""
    store = await _open(pg_url)
    try:
        for i in range(400):
            await store.publish_batch([NewEvent(topic=f"plan.t{j}", payload=i) for j in range(3)])
        for pattern in ("plan.t2", "plan.*"):
            await store.ensure_group(pattern, "g", EARLIEST)
    finally:
        await store.close()
    conn = await _raw_connection(store)
    try:
        if analyzed:
            await conn.execute("ANALYZE events")
        plans = await _explain_everything(conn)
        for pattern, concrete in (("plan.t2", True), ("plan.*", False)):
            for _ in range(6):  # past psycopg's prepare threshold: the prepared statement's plans too
                plans.clear()
                rows = await pg_events.scan_rows(conn, pattern, after_seq=300, limit=50)
                assert len(rows) == 50 and [r[0] for r in rows] == sorted(r[0] for r in rows)
                assert all(r[7] == "plan.t2" for r in rows) if concrete else rows[0][0] == 301
                (plan,) = _event_scans(plans)
                _assert_index_ranges(plan, concrete=concrete)
            plans.clear()
            got = await pg_groups.claim(
                conn,
                pg_groups.ClaimContext(channel_name(store.schema)),
                ClaimRequest(
                    pattern=pattern,
                    group="g",
                    member="m",
                    limit=20,
                    ack_timeout_ms=60_000,
                    max_deliver=5,
                    ordered=False,
                    now=1,
                ),
            )
            assert len(got) == 20
            (plan,) = _event_scans(plans)
            _assert_index_ranges(plan, concrete=concrete)
    finally:
        await conn.close()


@pg
async def test_a_failing_pipelined_transaction_is_rolled_back(pg_url: str) -> None:
    """Statements before the failing one are not committed, and the connection is left idle."""
    store = await _open(pg_url)
    await store.close()
    conn = await _raw_connection(store)
    try:
        await conn.execute("CREATE TABLE probe (a integer PRIMARY KEY)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            async with pipelined_transaction(conn):
                await conn.execute("INSERT INTO probe VALUES (1)")
                await conn.execute("INSERT INTO probe VALUES (1)")
        assert conn.info.transaction_status == TransactionStatus.IDLE
        async with pipelined_transaction(conn):
            await conn.execute("INSERT INTO probe VALUES (2)")
            cur = await conn.execute("SELECT count(*) FROM probe")
            assert await cur.fetchone() == (1,)  # a fetch inside the block sees the block's own writes
        async with await _raw_connection(store) as other:
            cur = await other.execute("SELECT array_agg(a) FROM probe")
            assert await cur.fetchone() == ([2],)
    finally:
        await conn.close()


async def test_a_store_url_without_a_host_connects_over_the_unix_socket(pg_url: str) -> None:
    """libpq's socket form, ``postgresql:///db?host=/socket/dir``: the URL the hub hands to psycopg keeps
    its ``//`` (``urlunsplit`` alone wrote ``postgresql:/db…``, which libpq refuses)."""
    parts = urlsplit(pg_url)
    if parts.hostname not in {"127.0.0.1", "localhost", "::1"}:
        pytest.skip(f"the test server {parts.hostname} is not on this machine: no Unix socket to reach")
    async with await psycopg.AsyncConnection.connect(base_url()) as conn:
        cur = await conn.execute("SHOW unix_socket_directories")
        row = await cur.fetchone()
    assert row is not None and row[0], "the local PostgreSQL server listens on no Unix socket"
    socket_dir = str(row[0]).split(",")[0].strip()
    user = f"user={parts.username}&" if parts.username else ""
    url = f"postgresql://{parts.path}?host={socket_dir}&{user}{parts.query}"  # no host before the path
    store = await _open(url)
    try:
        published = await store.publish(NewEvent(topic="socket.t", payload={"n": 1}))
        tail = await store.tail("socket.t")
        assert tail is not None and tail.seq == published.seq
    finally:
        await store.close()
