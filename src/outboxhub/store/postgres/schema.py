"""PostgreSQL schema, migrations and the publish function.

Everything lives in one schema (``?schema=NAME`` in the store URL, default ``outboxhub``), so several
stores (or test runs) can share a database. The version lives in ``schema_version`` (one row).
``MIGRATIONS[n]`` moves a schema from version ``n`` to ``n + 1``; a schema change is one more entry appended
to the list, never an edit of an existing one. ``migrate`` runs every pending step in one transaction under
an advisory lock keyed by the schema name, so two hub processes starting at once do not both create it.

Tables:

* ``counter``: one row holding the last assigned seq. ``publish_events`` locks it (``FOR UPDATE``) before
  assigning seqs and holds the lock until commit, so publishing transactions are serialised and seq order
  is commit order (see the gap-safety note in ``postgres.py``).
* ``events``: the log, unique by ``(id, topic_id)`` (version 2; by id alone before). ``payload`` is the
  JSON text of the payload, ``meta`` JSON of headers/tags/caused_by/sid (NULL when none is set), both in
  the layout of ``_codec``.
* ``topics``: one row per concrete topic (``COLLATE "C"``: byte order, prefix ``LIKE`` on the index) with
  its event count, last seq and last ts, updated by ``publish_events`` in the same transaction.
* ``groups``: one row per ``(pattern, name)``: frontier and dead-letter count. Claims and nacks lock this
  row, which serialises them per group across hub processes. The ack floor is not stored: it is computed
  from the frontier and the oldest pending seq when read (``groups.py``).
* ``pending``: a group's deliveries not yet acked. ``member`` NULL with ``attempts`` 0 marks an event held
  back by key ordering; ``deadline`` is when it becomes deliverable (again).
* ``listeners`` (version 6): one row per node (hub process's store) whose LISTEN connection is up;
  ``publish_events`` notifies only when another node than its own is listed (``registry.py``).

Functions: ``publish_events`` (every append), from version 3 ``claim_new`` (the common claim), from
version 5 ``claim_parked`` and ``publish_claim`` (a group commit with the parked claims, ``parked.py``).
From version 6 ``publish_events`` skips its NOTIFY when no other node listens; from version 7 the two
claim functions plan the page of kinds 0 and 1 once per connection, like ``publish_events``; from version 8
``publish_claim_acks`` (``publish_claim`` with the ACKs riding on it, ``ackride.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import psycopg

from outboxhub.errors import StoreError
from outboxhub.store.lifecycle import SETTLE_SQL
from outboxhub.store.postgres.registry import LISTENERS_TABLE, NOTIFY_CONDITION

__all__ = ["DEFAULT_SCHEMA", "MIGRATIONS", "SCHEMA_VERSION", "channel_name", "migrate", "quote_ident"]

DEFAULT_SCHEMA = "outboxhub"

_PUBLISH_FUNCTION = """
CREATE OR REPLACE FUNCTION publish_events(
    p_ids text[], p_topics text[], p_ts bigint[], p_keys text[], p_payloads text[], p_metas text[],
    p_channel text
) RETURNS TABLE (ord bigint, seq bigint, duplicate boolean)
LANGUAGE plpgsql
SET search_path FROM CURRENT
-- One plan for every batch size: custom plans cost more to build than the statement costs to run.
SET plan_cache_mode = force_generic_plan
AS $fn$
DECLARE
    v_last bigint;
    v_new bigint;
BEGIN
    -- The row lock serialises publishers until commit: seq order is commit order.
    SELECT c.last_seq INTO v_last FROM counter c WHERE c.id = 1 FOR UPDATE;
    -- NOT EXISTS first: ON CONFLICT alone would burn an identity value per known topic per batch.
    INSERT INTO topics (topic)
    SELECT DISTINCT t FROM unnest(p_topics) AS t
    WHERE NOT EXISTS (SELECT 1 FROM topics x WHERE x.topic = t)
    ON CONFLICT (topic) DO NOTHING;
    RETURN QUERY
    WITH input AS (
        SELECT u.* FROM unnest(p_ids, p_topics, p_ts, p_keys, p_payloads, p_metas)
            WITH ORDINALITY AS u (eid, topic, ts, key, payload, meta, ord)
    ), old AS (
        SELECT i.ord, e.seq FROM input i JOIN events e ON e.id = i.eid
    ), fresh AS (
        SELECT i.*, v_last + row_number() OVER (ORDER BY i.ord) AS nseq
        FROM input i WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.ord = i.ord)
    ), ins AS (
        INSERT INTO events AS e (seq, id, topic_id, ts, key, payload, meta)
        SELECT f.nseq, f.eid, t.topic_id, f.ts, f.key, f.payload::json, f.meta::json
        FROM fresh f JOIN topics t ON t.topic = f.topic
        RETURNING e.seq AS s, e.topic_id AS tid, e.ts AS tts
    ), stats AS (
        UPDATE topics t
        SET count = t.count + g.n, last_seq = g.m, last_ts = g.lts
        FROM (
            SELECT tid, count(*) AS n, max(s) AS m, (array_agg(tts ORDER BY s DESC))[1] AS lts
            FROM ins GROUP BY tid
        ) g
        WHERE t.topic_id = g.tid
    ), bump AS (
        UPDATE counter c SET last_seq = g.m
        FROM (SELECT max(s) AS m FROM ins) g
        WHERE c.id = 1 AND g.m IS NOT NULL
    )
    SELECT o.ord, o.seq, true FROM old o
    UNION ALL
    SELECT f.ord, f.nseq, false FROM fresh f
    ORDER BY 1;
    SELECT c.last_seq INTO v_new FROM counter c WHERE c.id = 1;
    IF v_new > v_last THEN
        PERFORM pg_notify(p_channel, v_new::text);
    END IF;
END
$fn$
"""


def _v1() -> list[str]:
    return [
        "CREATE TABLE counter (id smallint PRIMARY KEY CHECK (id = 1), last_seq bigint NOT NULL)",
        "INSERT INTO counter (id, last_seq) VALUES (1, 0)",
        """CREATE TABLE topics (
            topic_id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            topic text COLLATE "C" NOT NULL UNIQUE,
            count bigint NOT NULL DEFAULT 0,
            last_seq bigint NOT NULL DEFAULT 0,
            last_ts bigint NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE events (
            seq bigint PRIMARY KEY,
            id text COLLATE "C" NOT NULL UNIQUE,
            topic_id integer NOT NULL,
            ts bigint NOT NULL,
            key text COLLATE "C",
            payload json NOT NULL,
            meta json
        )""",
        "CREATE INDEX events_topic_seq ON events (topic_id, seq)",
        "CREATE INDEX events_topic_key_seq ON events (topic_id, key, seq) WHERE key IS NOT NULL",
        """CREATE TABLE groups (
            gid integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            pattern text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            frontier bigint NOT NULL,
            dead_letters bigint NOT NULL DEFAULT 0,
            created_ts bigint NOT NULL,
            UNIQUE (pattern, name)
        )""",
        """CREATE TABLE pending (
            gid integer NOT NULL,
            seq bigint NOT NULL,
            event_id text COLLATE "C" NOT NULL,
            key text COLLATE "C",
            member text COLLATE "C",
            deadline bigint NOT NULL,
            attempts integer NOT NULL,
            last_reason text,
            PRIMARY KEY (gid, seq)
        )""",
        "CREATE INDEX pending_deadline ON pending (gid, deadline)",
        "CREATE INDEX pending_member ON pending (gid, member) WHERE member IS NOT NULL",
        "CREATE INDEX pending_key ON pending (gid, key, seq) WHERE key IS NOT NULL",
        _PUBLISH_FUNCTION,
    ]


NOTIFY_TOPICS_MAX_BYTES = 7900
"""A NOTIFY payload of version 2 is ``<seq>`` followed by the committed topics, one per line, when that
fits in this many bytes (PostgreSQL's limit is 8000); otherwise ``<seq>`` alone, which wakes every group."""


def _v2() -> list[str]:
    """Event ids are unique per topic (issue #14): ``UNIQUE (id, topic_id)`` replaces ``UNIQUE (id)`` (whose
    index also serves look-ups by id alone); ``publish_events`` dedupes by ``(topic, id)`` and names the
    committed topics in its NOTIFY payload (``listen.py``)."""
    function = (
        _PUBLISH_FUNCTION.replace(
            "SELECT i.ord, e.seq FROM input i JOIN events e ON e.id = i.eid",
            "SELECT i.ord, e.seq FROM input i JOIN topics t ON t.topic = i.topic"
            " JOIN events e ON e.id = i.eid AND e.topic_id = t.topic_id",
        )
        .replace("    v_new bigint;\n", "    v_new bigint;\n    v_note text;\n")
        .replace(
            "        PERFORM pg_notify(p_channel, v_new::text);",
            "        v_note := v_new::text || E'\\n'"
            " || array_to_string(ARRAY(SELECT DISTINCT x FROM unnest(p_topics) AS x), E'\\n');\n"
            f"        IF octet_length(v_note) > {NOTIFY_TOPICS_MAX_BYTES} THEN\n"
            "            v_note := v_new::text;\n"
            "        END IF;\n"
            "        PERFORM pg_notify(p_channel, v_note);",
        )
    )
    return [
        "ALTER TABLE events DROP CONSTRAINT events_id_key",
        "ALTER TABLE events ADD CONSTRAINT events_id_topic_key UNIQUE (id, topic_id)",
        function,
    ]


_CLAIM_COLUMNS = "e.seq, e.id, e.topic_id, e.ts, e.key, e.payload, e.meta"

_CLAIM_SCANS = {
    # The statements of ``events.scan_query``, one per kind of topic filter (``claim.FILTER_KINDS``), with
    # the frontier and the limit as variables: each keeps its own cached plan.
    0: f"SELECT {_CLAIM_COLUMNS}, t.topic FROM events e JOIN topics t ON t.topic_id = e.topic_id"
    " WHERE e.seq > v_frontier ORDER BY e.seq LIMIT p_limit",
    1: f"SELECT {_CLAIM_COLUMNS}, p_a FROM events e"
    " WHERE e.topic_id = ANY(ARRAY[(SELECT t.topic_id FROM topics t WHERE t.topic = p_a)])"
    " AND e.seq > v_frontier ORDER BY e.topic_id, e.seq LIMIT p_limit",
    2: f"SELECT {_CLAIM_COLUMNS}, t.topic FROM topics t CROSS JOIN LATERAL ("
    " SELECT e.* FROM events e WHERE e.topic_id = ANY(ARRAY[t.topic_id]) AND e.seq > v_frontier"
    " ORDER BY e.topic_id, e.seq LIMIT p_limit) e"
    " WHERE t.topic ~ p_c AND t.last_seq > v_frontier ORDER BY e.seq LIMIT p_limit",
    3: f"SELECT {_CLAIM_COLUMNS}, t.topic FROM topics t CROSS JOIN LATERAL ("
    " SELECT e.* FROM events e WHERE e.topic_id = ANY(ARRAY[t.topic_id]) AND e.seq > v_frontier"
    " ORDER BY e.topic_id, e.seq LIMIT p_limit) e"
    " WHERE (t.topic = p_a OR t.topic LIKE p_b) AND t.topic ~ p_c AND t.last_seq > v_frontier"
    " ORDER BY e.seq LIMIT p_limit",
}


def _claim_branch(kind: int) -> str:
    return f"""
        RETURN QUERY
        WITH page AS MATERIALIZED ({_CLAIM_SCANS[kind]}),
        ins AS (
            INSERT INTO pending (gid, seq, event_id, key, member, deadline, attempts)
            SELECT v_gid, pg.seq, pg.id, pg.key, p_member, p_deadline, 1 FROM page pg
        ), moved AS (
            UPDATE groups g SET frontier = f.frontier
            FROM (
                SELECT CASE WHEN count(*) < p_limit THEN GREATEST(coalesce(max(pg.seq), v_frontier), v_last)
                            ELSE max(pg.seq) END AS frontier
                FROM page pg
            ) f
            WHERE g.gid = v_gid AND f.frontier <> v_frontier
        )
        SELECT false, pg.* FROM page pg;"""


_CLAIM_FUNCTION = f"""
CREATE OR REPLACE FUNCTION claim_new(
    p_pattern text, p_name text, p_member text, p_now bigint, p_deadline bigint, p_limit integer,
    p_kind integer, p_a text, p_b text, p_c text
) RETURNS TABLE (
    fallback boolean, seq bigint, id text, topic_id integer, ts bigint, key text, payload json, meta json,
    topic text
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
#variable_conflict use_column
DECLARE
    v_gid integer;
    v_frontier bigint;
    v_last bigint;
BEGIN
    -- Group state only, never events: the commit need not wait for the WAL flush (groups.py).
    PERFORM set_config('synchronous_commit', 'off', true);
    -- The lock serialises the group's claims; the statements after it take snapshots that see every commit
    -- that preceded it (READ COMMITTED, a volatile function). last_seq is read no later than the lock.
    SELECT g.gid, g.frontier, c.last_seq INTO v_gid, v_frontier, v_last
    FROM groups g CROSS JOIN counter c
    WHERE g.pattern = p_pattern AND g.name = p_name AND c.id = 1 FOR UPDATE OF g;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM pending p WHERE p.gid = v_gid AND p.deadline <= p_now) THEN
        -- An unknown group, or a pending event due (a redelivery, a dead letter): the caller's planner.
        RETURN QUERY SELECT true, NULL::bigint, NULL::text, NULL::integer, NULL::bigint, NULL::text,
            NULL::json, NULL::json, NULL::text;
        RETURN;
    END IF;
    IF p_kind = 0 THEN{_claim_branch(0)}
    ELSIF p_kind = 1 THEN{_claim_branch(1)}
    ELSIF p_kind = 2 THEN{_claim_branch(2)}
    ELSE{_claim_branch(3)}
    END IF;
END
$fn$
"""


def _v3() -> list[str]:
    """``claim_new``: the common claim (no pending event due, not key-ordered) in one statement, one round
    trip (``claim.py``)."""
    return [_CLAIM_FUNCTION]


_DEDUPE_V2 = " JOIN events e ON e.id = i.eid AND e.topic_id = t.topic_id"
_DEDUPE_V4 = " JOIN events e ON e.id = i.eid AND e.topic_id + 0 = t.topic_id"


def _v4() -> list[str]:
    """``publish_events`` looks a published id up through ``UNIQUE (id, topic_id)`` by ``id`` whatever the
    statistics say. With the version 2 join the planner, on statistics taken while ``events`` was small
    (a new database: autovacuum had not analysed it yet), walked ``events_topic_seq`` over every event of
    the topic for each published event, and the function keeps its generic plan for the life of the
    connection: 330 ms for a batch of 1,024 into a 23,000-event topic instead of 3 ms. ``+ 0`` makes the
    ``topic_id`` comparison useless to an index, so only the ``id`` look-up remains."""
    v2 = _v2()[-1]
    assert _DEDUPE_V2 in v2
    return [v2.replace(_DEDUPE_V2, _DEDUPE_V4)]


_CLAIM_SYNC = (
    "    -- Group state only, never events: the commit need not wait for the WAL flush (groups.py).\n"
    "    PERFORM set_config('synchronous_commit', 'off', true);\n"
)
_CLAIM_LOCK = "c.id = 1 FOR UPDATE OF g;"

_PUBLISH_CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION publish_claim(
    p_ids text[], p_topics text[], p_ts bigint[], p_keys text[], p_payloads text[], p_metas text[],
    p_channel text, c_patterns text[], c_names text[], c_members text[], c_now bigint, c_deadlines bigint[],
    c_limits integer[], c_kinds integer[], c_a text[], c_b text[], c_c text[]
) RETURNS TABLE (
    claim integer, fallback boolean, seq bigint, duplicate boolean, id text, topic_id integer, ts bigint,
    key text, payload json, meta json, topic text
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $fn$
#variable_conflict use_column
DECLARE
    i integer;
BEGIN
    -- Claim 0: the publish's results in order, then the counter the claims see (a row of its own).
    RETURN QUERY SELECT 0, false, p.seq, p.duplicate, NULL::text, NULL::integer, NULL::bigint, NULL::text,
        NULL::json, NULL::json, NULL::text
    FROM publish_events(p_ids, p_topics, p_ts, p_keys, p_payloads, p_metas, p_channel) p ORDER BY p.ord;
    RETURN QUERY SELECT 0, true, c.last_seq, NULL::boolean, NULL::text, NULL::integer, NULL::bigint,
        NULL::text, NULL::json, NULL::json, NULL::text FROM counter c WHERE c.id = 1;
    FOR i IN 1 .. coalesce(array_length(c_patterns, 1), 0) LOOP
        RETURN QUERY SELECT i, c.fallback, c.seq, NULL::boolean, c.id, c.topic_id, c.ts, c.key, c.payload,
            c.meta, c.topic
        FROM claim_parked(c_patterns[i], c_names[i], c_members[i], c_now, c_deadlines[i], c_limits[i],
            c_kinds[i], c_a[i], c_b[i], c_c[i]) c;
    END LOOP;
END
$fn$
"""


def _v5() -> list[str]:
    """``publish_claim``: a group commit that also runs the claims parked by this process's waiting
    members (``parked.py``), in the publish's transaction, so its commit stays synchronous. Each claim is
    ``claim_parked``, ``claim_new`` that skips a group row another transaction holds (``SKIP LOCKED``) and
    answers ``fallback``: the publish holds the counter and never waits for a group row, while a claim that
    dead-letters holds its group row and then waits for the counter, so the two cannot deadlock."""
    assert _CLAIM_SYNC in _CLAIM_FUNCTION and _CLAIM_LOCK in _CLAIM_FUNCTION
    parked = (
        _CLAIM_FUNCTION.replace("FUNCTION claim_new(", "FUNCTION claim_parked(", 1)
        .replace(_CLAIM_SYNC, "")
        .replace(_CLAIM_LOCK, "c.id = 1 FOR UPDATE OF g SKIP LOCKED;")
    )
    return [parked, _PUBLISH_CLAIM_FUNCTION]


_NOTIFY_IF = "    IF v_new > v_last THEN\n"


def _v6() -> list[str]:
    """``listeners``: the nodes whose LISTEN connection is up (``registry.py``); ``publish_events`` sends
    its NOTIFY only when a node other than the publishing connection's is registered, so a lone hub is not
    woken by its own commits."""
    v4 = _v4()[0]
    assert _NOTIFY_IF in v4
    return [LISTENERS_TABLE, v4.replace(_NOTIFY_IF, f"    {NOTIFY_CONDITION}\n")]


_KIND_DISPATCH = "    IF p_kind = 0 THEN"
_GENERIC_KINDS = """\
    -- Kinds 0 and 1 (every topic, one topic) read one index range in seq order whatever the values: one
    -- plan per connection. Kinds 2 and 3 keep a plan per call: a literal LIKE prefix reads topics by range.
    IF p_kind <= 1 THEN
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;
"""
_SEARCH_PATH = "SET search_path FROM CURRENT\n"


def _v7() -> list[str]:
    """``claim_new`` and ``claim_parked`` plan the page statement of kinds 0 and 1 once per connection
    (``plan_cache_mode = force_generic_plan`` for the rest of the call; the function's own ``SET`` clause
    restores the session's value on return). Under the default it never settled on its generic plan: the
    planner priced ``seq > frontier`` at a third of the table, far above a custom plan, so every claim
    planned the three-CTE statement again, ≈ 100–200 µs of server CPU on each ``publish_claim`` with a
    parked claim. Those two scans have one plan whatever the parameters (``_CLAIM_SCANS``: an index range
    in seq order), also on an empty schema; kinds 2 and 3 do not (a generic ``LIKE $n`` cannot read the
    topics index by prefix), so they keep custom plans."""
    parked = _v5()[0]
    functions = []
    for body in (_CLAIM_FUNCTION, parked):
        assert body.count(_KIND_DISPATCH) == 1 and body.count(_SEARCH_PATH) == 1
        functions.append(
            body.replace(_SEARCH_PATH, _SEARCH_PATH + "SET plan_cache_mode = auto\n").replace(
                _KIND_DISPATCH, _GENERIC_KINDS + _KIND_DISPATCH
            )
        )
    return functions


_ACK_RIDERS = f"""\
    -- The riding ACKs first, before publish_events takes the counter lock, so their work does not lengthen
    -- the lock every publisher waits for. Each is a subtransaction of its own that waits at most 1 ms for a
    -- row lock: one that fails changes nothing and answers fallback (the hub sends it alone), and neither
    -- its failure nor a lock it waits for holds the publish back.
    PERFORM set_config('lock_timeout', '1ms', true);
    FOR i IN 1 .. coalesce(array_length(a_patterns, 1), 0) LOOP
        BEGIN
            DELETE FROM pending p USING groups g, unnest(a_jobs, a_seqs, a_ids) AS r (job, seq, id)
            WHERE r.job = i AND g.pattern = a_patterns[i] AND g.name = a_names[i] AND p.gid = g.gid
                AND p.seq = r.seq AND p.event_id = r.id
                AND (a_members[i] IS NULL OR (true{SETTLE_SQL.format(p="p.", param="a_members[i]")}));
            GET DIAGNOSTICS v_acked = ROW_COUNT;
            RETURN QUERY SELECT -i, false, v_acked, NULL::boolean, NULL::text, NULL::integer, NULL::bigint,
                NULL::text, NULL::json, NULL::json, NULL::text;
        EXCEPTION WHEN OTHERS THEN
            RETURN QUERY SELECT -i, true, 0::bigint, NULL::boolean, NULL::text, NULL::integer, NULL::bigint,
                NULL::text, NULL::json, NULL::json, NULL::text;
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', v_lock_timeout, true);
"""
_CLAIM_PARAMS = "c_limits integer[], c_kinds integer[], c_a text[], c_b text[], c_c text[]\n"
_CLAIM_LOOP_VAR = "    i integer;\nBEGIN\n"


def _v8() -> list[str]:
    """``publish_claim_acks``: ``publish_claim`` that first runs the ACKs riding on it (``ackride.py``),
    each in a subtransaction of its own, before the publish takes the counter lock. ``publish_claim`` is
    kept unchanged, so a hub of version 7 still works on a version 8 schema."""
    assert _CLAIM_PARAMS in _PUBLISH_CLAIM_FUNCTION and _CLAIM_LOOP_VAR in _PUBLISH_CLAIM_FUNCTION
    function = (
        _PUBLISH_CLAIM_FUNCTION.replace("FUNCTION publish_claim(", "FUNCTION publish_claim_acks(", 1)
        .replace(
            _CLAIM_PARAMS,
            _CLAIM_PARAMS.rstrip("\n") + ",\n    a_patterns text[], a_names text[], a_members text[],"
            " a_jobs integer[], a_seqs bigint[], a_ids text[]\n",
        )
        .replace(
            _CLAIM_LOOP_VAR,
            "    i integer;\n    v_acked bigint;\n"
            "    v_lock_timeout text := current_setting('lock_timeout');\nBEGIN\n" + _ACK_RIDERS,
        )
    )
    return [function]


_TOPIC_INSERT = """\
    -- NOT EXISTS first: ON CONFLICT alone would burn an identity value per known topic per batch.
    INSERT INTO topics (topic)
    SELECT DISTINCT t FROM unnest(p_topics) AS t
    WHERE NOT EXISTS (SELECT 1 FROM topics x WHERE x.topic = t)
    ON CONFLICT (topic) DO NOTHING;
"""
PROBE_EVENTS = 16
"""``publish_events`` (version 9) probes the topics of a batch of at most this many events one by one."""
TOPIC_PROBES = 2
"""… and of at most this many runs of equal topics; a larger batch goes to the set-based insert."""
_TOPIC_PROBE = f"""\
    -- The topics exist in the steady state. The set-based INSERT costs ≈ 12 µs of server CPU even when it
    -- inserts nothing (the executor start and end of its anti-join, sort and ModifyTable), an index probe
    -- ≈ 3: a small batch of one or two runs of topics probes, the rest (and a probe that misses) inserts.
    v_missing := cardinality(p_topics) > {PROBE_EVENTS};
    IF NOT v_missing THEN
        FOREACH v_topic IN ARRAY p_topics LOOP
            CONTINUE WHEN v_topic = v_prev;
            v_prev := v_topic;
            v_probes := v_probes + 1;
            v_missing := v_probes > {TOPIC_PROBES};
            EXIT WHEN v_missing;
            PERFORM FROM topics x WHERE x.topic = v_topic;
            v_missing := NOT FOUND;
            EXIT WHEN v_missing;
        END LOOP;
    END IF;
    IF v_missing THEN
{"".join("    " + line + chr(10) for line in _TOPIC_INSERT.splitlines())}    END IF;
"""
_PUBLISH_VARS = "    v_new bigint;\n"


def _v9() -> list[str]:
    """``publish_events`` of a small batch (``PROBE_EVENTS``, ``TOPIC_PROBES``) probes the topics index
    once per run of equal topics and runs its topics ``INSERT … WHERE NOT EXISTS … ON CONFLICT DO NOTHING``
    only when a probe misses: in the steady state that statement inserts nothing and costs ≈ 12 µs of
    server CPU per call, a probe ≈ 3. Same name and signature, so a hub of version 8 gains too."""
    v6 = _v6()[1]
    assert v6.count(_TOPIC_INSERT) == 1 and v6.count(_PUBLISH_VARS) == 1
    return [
        v6.replace(_TOPIC_INSERT, _TOPIC_PROBE).replace(
            _PUBLISH_VARS,
            _PUBLISH_VARS + "    v_topic text;\n    v_prev text;\n    v_probes integer := 0;\n"
            "    v_missing boolean;\n",
        )
    ]


MIGRATIONS: list[Callable[[], list[str]]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9]
"""``MIGRATIONS[n]()`` is the list of statements that upgrade a schema at version ``n`` to ``n + 1``. They
run with ``search_path`` set to the store's schema, so they name tables without a schema."""

SCHEMA_VERSION = len(MIGRATIONS)


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def channel_name(schema: str) -> str:
    """The NOTIFY channel of a schema: ``outboxhub.<schema>``, hashed when that exceeds 63 bytes."""
    name = f"outboxhub.{schema}"
    if len(name.encode()) <= 63:
        return name
    return "outboxhub." + hashlib.sha256(schema.encode()).hexdigest()[:40]


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"outboxhub.migrate.{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(conn: psycopg.AsyncConnection[tuple[object, ...]], schema: str) -> int:
    """Create ``schema`` if needed and bring it to ``SCHEMA_VERSION``; return the version found before.

    ``conn`` must be in autocommit mode; the work runs in one transaction of its own.
    """
    ident = quote_ident(schema)
    async with conn.transaction():
        # Serialise concurrent starters before touching the catalog: CREATE SCHEMA IF NOT EXISTS and
        # CREATE TABLE IF NOT EXISTS are not safe against a concurrent creator.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {ident}")
        await conn.execute(f"SET LOCAL search_path = {ident}")
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        cur = await conn.execute("SELECT version FROM schema_version")
        row = await cur.fetchone()
        found = 0 if row is None else int(str(row[0]))
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"schema {schema!r} is at version {found}, newer than this outboxhub supports "
                f"({SCHEMA_VERSION}); upgrade outboxhub"
            )
        for step in MIGRATIONS[found:]:
            for statement in step():
                await conn.execute(statement)
        if row is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif found != SCHEMA_VERSION:
            await conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return found
