"""A model, measured and not shipped: ``publish_claim`` and ``publish_claim_acks`` with their parked claims
inline (built as schema version 10 on branch pg-claim10, 2026-12-08; ``docs/benchmarks.md``, twelfth round).

The wrappers of schema versions 8 and 9 call ``claim_parked`` once per parked claim (``RETURN QUERY SELECT …
FROM claim_parked(…)``): per claim one more PL/pgSQL call with its ``SET`` clauses saved and restored, its
result type built from the catalog, and its rows copied through two tuplestores. This model re-creates both
wrappers under their names and signatures with the body of ``claim_parked`` in their claim loop: ≈ 4–8 µs
less backend CPU per e2e event of ≈ 370 (``scripts/pg-event-cpu.py`` cases ``v10`` and ``v10_*``). It was not
landed: a second copy of the claim's SQL to keep in step with ``store/postgres/schema.py`` for 1–2 % of the
server's CPU per event, which the e2e benchmark cannot see.

Every property of the claim stays: the group row is locked ``SKIP LOCKED`` (never waited for) after the
publish took the counter; a group with a pending event due, or no such group, answers ``fallback`` and
changes nothing; the statements after the lock take snapshots that see every commit before it; the page of
kinds 0 and 1 keeps one generic plan per connection while kinds 2 and 3 plan per call (``plan_cache_mode``
switched around the page statement only; the function's ``SET`` clause restores the session's value).
"""

from __future__ import annotations

__all__ = ["v10"]

_NULLS = "NULL::text, NULL::integer, NULL::bigint, NULL::text, NULL::json, NULL::json, NULL::text"

_SCANS = {
    # ``schema._CLAIM_SCANS`` with the claim's values in the loop's variables (the same statements and plans).
    0: "SELECT e.seq, e.id, e.topic_id, e.ts, e.key, e.payload, e.meta, t.topic"
    " FROM events e JOIN topics t ON t.topic_id = e.topic_id"
    " WHERE e.seq > v_frontier ORDER BY e.seq LIMIT v_limit",
    1: "SELECT e.seq, e.id, e.topic_id, e.ts, e.key, e.payload, e.meta, v_a FROM events e"
    " WHERE e.topic_id = ANY(ARRAY[(SELECT t.topic_id FROM topics t WHERE t.topic = v_a)])"
    " AND e.seq > v_frontier ORDER BY e.topic_id, e.seq LIMIT v_limit",
    2: "SELECT e.seq, e.id, e.topic_id, e.ts, e.key, e.payload, e.meta, t.topic FROM topics t CROSS JOIN"
    " LATERAL (SELECT e.* FROM events e WHERE e.topic_id = ANY(ARRAY[t.topic_id]) AND e.seq > v_frontier"
    " ORDER BY e.topic_id, e.seq LIMIT v_limit) e"
    " WHERE t.topic ~ v_c AND t.last_seq > v_frontier ORDER BY e.seq LIMIT v_limit",
    3: "SELECT e.seq, e.id, e.topic_id, e.ts, e.key, e.payload, e.meta, t.topic FROM topics t CROSS JOIN"
    " LATERAL (SELECT e.* FROM events e WHERE e.topic_id = ANY(ARRAY[t.topic_id]) AND e.seq > v_frontier"
    " ORDER BY e.topic_id, e.seq LIMIT v_limit) e"
    " WHERE (t.topic = v_a OR t.topic LIKE v_b) AND t.topic ~ v_c AND t.last_seq > v_frontier"
    " ORDER BY e.seq LIMIT v_limit",
}


def _page(kind: int) -> str:
    return f"""
            RETURN QUERY
            WITH page (seq, id, topic_id, ts, key, payload, meta, topic) AS MATERIALIZED ({_SCANS[kind]}),
            ins AS (
                INSERT INTO pending (gid, seq, event_id, key, member, deadline, attempts)
                SELECT v_gid, pg.seq, pg.id, pg.key, c_members[i], c_deadlines[i], 1 FROM page pg
            ), moved AS (
                UPDATE groups g SET frontier = f.frontier
                FROM (
                    SELECT CASE WHEN count(*) < v_limit
                                THEN GREATEST(coalesce(max(pg.seq), v_frontier), v_last)
                                ELSE max(pg.seq) END AS frontier
                    FROM page pg
                ) f
                WHERE g.gid = v_gid AND f.frontier <> v_frontier
            )
            SELECT i, false, pg.seq, NULL::boolean, pg.id, pg.topic_id, pg.ts, pg.key, pg.payload, pg.meta,
                pg.topic
            FROM page pg;"""


_CLAIMS = f"""\
    -- Claim 0: the publish's results in order, then the counter the claims see (a row of its own).
    RETURN QUERY SELECT 0, false, p.seq, p.duplicate, {_NULLS}
    FROM publish_events(p_ids, p_topics, p_ts, p_keys, p_payloads, p_metas, p_channel) p ORDER BY p.ord;
    RETURN QUERY SELECT 0, true, c.last_seq, NULL::boolean, {_NULLS} FROM counter c WHERE c.id = 1;
    FOR i IN 1 .. coalesce(array_length(c_patterns, 1), 0) LOOP
        -- claim_parked's body: never waits for a group row (the publish holds the counter, a claim that
        -- dead-letters holds its group row and then waits for the counter), and the statements after the
        -- lock take snapshots that see every commit that preceded it.
        SELECT g.gid, g.frontier, c.last_seq INTO v_gid, v_frontier, v_last
        FROM groups g CROSS JOIN counter c
        WHERE g.pattern = c_patterns[i] AND g.name = c_names[i] AND c.id = 1 FOR UPDATE OF g SKIP LOCKED;
        IF NOT FOUND OR EXISTS (SELECT 1 FROM pending p WHERE p.gid = v_gid AND p.deadline <= c_now) THEN
            RETURN QUERY SELECT i, true, NULL::bigint, NULL::boolean, {_NULLS};
            CONTINUE;
        END IF;
        v_kind := c_kinds[i];
        v_limit := c_limits[i];
        v_a := c_a[i];
        v_b := c_b[i];
        v_c := c_c[i];
        -- Kinds 0 and 1 read one index range in seq order whatever the values: one plan per connection.
        -- Kinds 2 and 3 plan per call (a literal LIKE prefix reads topics by range): the SET clause's auto.
        IF v_kind <= 1 THEN
            PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
        END IF;
        IF v_kind = 0 THEN{_page(0)}
        ELSIF v_kind = 1 THEN{_page(1)}
        ELSIF v_kind = 2 THEN{_page(2)}
        ELSE{_page(3)}
        END IF;
        IF v_kind <= 1 THEN
            PERFORM set_config('plan_cache_mode', 'auto', true);
        END IF;
    END LOOP;
"""

_CLAIM_PARAMS = """\
    p_ids text[], p_topics text[], p_ts bigint[], p_keys text[], p_payloads text[], p_metas text[],
    p_channel text, c_patterns text[], c_names text[], c_members text[], c_now bigint, c_deadlines bigint[],
    c_limits integer[], c_kinds integer[], c_a text[], c_b text[], c_c text[]"""
_ACK_PARAMS = """,
    a_patterns text[], a_names text[], a_members text[], a_jobs integer[], a_seqs bigint[], a_ids text[]"""


def function(ack_riders: str | None) -> str:
    """``publish_claim``, or with ``ack_riders`` (version 8's riding ACKs, the SQL that runs them first)
    ``publish_claim_acks``, of version 10."""
    acks = ack_riders is not None
    name = "publish_claim_acks" if acks else "publish_claim"
    ack_vars = ""
    if acks:
        ack_vars = "    v_acked bigint;\n    v_lock_timeout text := current_setting('lock_timeout');\n"
    return f"""
CREATE OR REPLACE FUNCTION {name}(
{_CLAIM_PARAMS}{_ACK_PARAMS if acks else ""}
) RETURNS TABLE (
    claim integer, fallback boolean, seq bigint, duplicate boolean, id text, topic_id integer, ts bigint,
    key text, payload json, meta json, topic text
)
LANGUAGE plpgsql
SET search_path FROM CURRENT
SET plan_cache_mode = auto
AS $fn$
#variable_conflict use_column
DECLARE
    i integer;
    v_gid integer;
    v_frontier bigint;
    v_last bigint;
    v_kind integer;
    v_limit integer;
    v_a text;
    v_b text;
    v_c text;
{ack_vars}BEGIN
{ack_riders or ""}{_CLAIMS}END
$fn$
"""


def v10(ack_riders: str) -> list[str]:
    """The statements that re-create both wrappers with inline claims (``ack_riders`` as for ``function``)."""
    return [function(None), function(ack_riders)]
