"""Backend CPU per e2e event on PostgreSQL: what one ``publish_claim_acks`` of the hub costs the server.

One script = what the hub sends per event in ``bench e2e``: ``publish_claim_acks`` of one event (100 B) on
topic ``t``, with the member's parked claim on group ``g`` (kind 1, one topic; it claims that event) and
the previous script's delivery ACK riding. Each case runs in a throwaway schema of its own, migrated to the
current version, populated (EVENTS events, the group at the head, a listener row of another node so the
NOTIFY test reads ``listeners``, topics ``t`` and ``t0``…``t63`` present) and only then changed by one
variant that drops one part of the work (``v8``: the ``publish_events`` of versions 6–8, with its topics
INSERT on every call; installed before the population, a variant without the INSERT published nothing). The
number is the backend's CPU (``/proc/PID/schedstat``: the connection's server process's time on a CPU) over N
scripts, so the client and the machine's load hardly enter it. Prepared statements, as the hub sends them.
Cases ``wrap9``…: the wrappers of versions 8 and 9 (each parked claim a call of ``claim_parked``; the same
as ``full``); ``v10``…: the inline claims modelled in ``pg_inline_claims.py`` (not shipped) and variants.

Usage: PYTHONPATH=src python scripts/pg-event-cpu.py [N] [ROUNDS] [CASE...]
(PGURL=postgresql://127.0.0.1:5432/test; N=3000 scripts per case and round, ROUNDS=2; cases alternate, or
with INTERLEAVE=K every case's connection is open at once and they take turns K scripts at a time.)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import pg_inline_claims  # scripts/, the model of the inline claims
import psycopg

from outboxhub.store.postgres import schema
from outboxhub.store.postgres.registry import NOTIFY_CONDITION

PGURL = os.environ.get("PGURL", "postgresql://127.0.0.1:5432/test")
EVENTS = 20_000
PAYLOAD = '{"x": "' + "x" * 90 + '"}'

_ACK_BLOCK_START = "        BEGIN\n            DELETE FROM pending p"
_ACK_BLOCK_END = (
    "        EXCEPTION WHEN OTHERS THEN\n"
    "            RETURN QUERY SELECT -i, true, 0::bigint, NULL::boolean, NULL::text, NULL::integer,"
    " NULL::bigint,\n"
    "                NULL::text, NULL::json, NULL::json, NULL::text;\n"
    "        END;\n"
)


def _publish_events() -> str:
    return schema._v9()[0]


def _publish_events_v8() -> str:
    """``publish_events`` of versions 6 to 8: the topics INSERT on every call."""
    return schema._v6()[1]


def _publish_claim_acks() -> str:
    return schema._v8()[0]


def _replace(body: str, old: str, new: str) -> str:
    assert old in body, old
    return body.replace(old, new)


def _no_notify() -> list[str]:
    return [_replace(_publish_events(), NOTIFY_CONDITION, "IF false THEN")]


def _no_stats() -> list[str]:
    stats = _publish_events()
    start = stats.index("    ), stats AS (")
    end = stats.index("    ), bump AS (")
    return [stats[:start] + stats[end:]]


def _no_dedupe() -> list[str]:
    return [
        _replace(
            _publish_events(),
            "SELECT i.ord, e.seq FROM input i JOIN topics t ON t.topic = i.topic"
            " JOIN events e ON e.id = i.eid AND e.topic_id + 0 = t.topic_id",
            "SELECT i.ord, NULL::bigint AS seq FROM input i WHERE false",
        )
    ]


def _v8() -> list[str]:
    return [_publish_events_v8()]


def _no_topic_insert() -> list[str]:
    body = _publish_events_v8()
    start = body.index("    -- NOT EXISTS first")
    end = body.index("    RETURN QUERY\n")
    return [body[:start] + body[end:]]


_TOPIC_INSERT = schema._TOPIC_INSERT  # the statement as versions 1-8 run it on every call
_TOPIC_GUARD = (
    "    IF EXISTS (SELECT 1 FROM unnest(p_topics) AS t"
    " WHERE NOT EXISTS (SELECT 1 FROM topics x WHERE x.topic = t)) THEN\n"
)


def _guard_topic_insert() -> list[str]:
    return [_replace(_publish_events_v8(), _TOPIC_INSERT, _TOPIC_GUARD + _TOPIC_INSERT + "    END IF;\n")]


def _no_subxact() -> list[str]:
    body = _replace(_publish_claim_acks(), _ACK_BLOCK_START, "            DELETE FROM pending p")
    return [_replace(body, _ACK_BLOCK_END, "")]


def _no_lock_timeout() -> list[str]:
    body = _replace(_publish_claim_acks(), "    PERFORM set_config('lock_timeout', '1ms', true);\n", "")
    return [_replace(body, "    PERFORM set_config('lock_timeout', v_lock_timeout, true);\n", "")]


def _wrap9() -> list[str]:
    """The wrappers of versions 8 and 9: each parked claim a call of ``claim_parked``."""
    return [schema._v7()[1], schema._PUBLISH_CLAIM_FUNCTION, schema._v8()[0]]


def _wrap9_assign() -> list[str]:
    """Those of version 9 with ``PERFORM set_config(…)`` as assignments (no executor per call)."""
    parked = _replace(schema._v7()[1], "DECLARE\n", "DECLARE\n    v_set text;\n")
    acks = _replace(schema._v8()[0], "    v_acked bigint;\n", "    v_acked bigint;\n    v_set text;\n")
    return [x.replace("PERFORM set_config(", "v_set := set_config(") for x in (parked, acks)]


_V10_ACK = pg_inline_claims.function(schema._ACK_RIDERS)


def _v10() -> list[str]:
    """The wrappers with their parked claims inline (``pg_inline_claims.py``, not shipped)."""
    return pg_inline_claims.v10(schema._ACK_RIDERS)


def _v10_assign() -> list[str]:
    """Version 10 with its ``PERFORM set_config(…)`` statements as assignments (no executor per call)."""
    body = _replace(_V10_ACK, "    v_acked bigint;\n", "    v_acked bigint;\n    v_set text;\n")
    return [body.replace("PERFORM set_config(", "v_set := set_config(")]


def _v10_ack_fold() -> list[str]:
    """Version 10 with a riding ACK as one statement: the ``DELETE`` in a CTE, its count the result."""
    start = _V10_ACK.index("            DELETE FROM pending p")
    end = _V10_ACK.index("        EXCEPTION WHEN OTHERS")
    delete = _V10_ACK[start : _V10_ACK.index(";\n", start)]
    fold = (
        "            RETURN QUERY WITH d AS (\n    "
        + delete.replace("\n", "\n    ")
        + "\n                RETURNING 1)\n            SELECT -i, false, count(*), NULL::boolean, NULL::text,"
        " NULL::integer, NULL::bigint, NULL::text, NULL::json, NULL::json, NULL::text FROM d;\n"
    )
    return [_V10_ACK[:start] + fold + _V10_ACK[end:]]


_COUNTER_ROW = "    RETURN QUERY SELECT 0, true, c.last_seq, NULL::boolean, "


def _v10_counter_next() -> list[str]:
    """Version 10 with the counter row from the first claim's lock (``RETURN NEXT``), not a statement."""
    start = _V10_ACK.index(_COUNTER_ROW)
    end = _V10_ACK.index("\n", _V10_ACK.index("FROM counter c WHERE c.id = 1;", start)) + 1
    body = _V10_ACK[:start] + _V10_ACK[end:]
    body = _replace(body, "    v_acked bigint;\n", "    v_acked bigint;\n    v_told boolean := false;\n")
    return [
        _replace(
            body,
            "        v_kind := c_kinds[i];\n",
            "        IF NOT v_told THEN\n            claim := 0; fallback := true; seq := v_last;\n"
            "            RETURN NEXT;\n            v_told := true;\n"
            "            fallback := NULL; seq := NULL;\n"
            "        END IF;\n        v_kind := c_kinds[i];\n",
        )
    ]


def _v10_no_sort() -> list[str]:
    """Version 10 without the ``ORDER BY`` over ``publish_events``' rows (already in order)."""
    return [_replace(_V10_ACK, " p ORDER BY p.ord;", " p;")]


VARIANTS: dict[str, Callable[[], list[str]]] = {
    "full": list,
    "v8": _v8,
    "wrap9": _wrap9,
    "wrap9_assign": _wrap9_assign,
    "v10": _v10,
    "v10_assign": _v10_assign,
    "v10_ack_fold": _v10_ack_fold,
    "v10_counter_next": _v10_counter_next,
    "v10_no_sort": _v10_no_sort,
    "no_notify": _no_notify,
    "no_stats": _no_stats,
    "no_dedupe": _no_dedupe,
    "no_topic_insert": _no_topic_insert,
    "guard_topic_insert": _guard_topic_insert,
    "no_subxact": _no_subxact,
    "no_lock_timeout": _no_lock_timeout,
}
# Cases that change what is sent rather than the functions: (variant, statement kind).
CASES = {
    **{name: (name, "pca") for name in VARIANTS},
    "no_ack": ("full", "pca_no_ack"),  # publish_claim_acks with the claim, no ACK riding
    "no_claim": ("full", "pca_no_claim"),  # the ACK rides, no claim (the ACK then finds no row)
    "wrapper_only": ("full", "pca_bare"),  # publish_claim_acks with one event, no claim, no ACK
    "publish_events": ("full", "pe"),  # publish_events alone: the PL/pgSQL wrapper's cost is the difference
    "v8_publish_events": ("v8", "pe"),
    # Batches of 256 events (µs per call, not per event): one topic; 64 topics, each in 4 runs of one event.
    "pe256": ("full", "pe256"),
    "v8_pe256": ("v8", "pe256"),
    "pe256x64": ("full", "pe256x64"),
    "v8_pe256x64": ("v8", "pe256x64"),
}
TOPICS_64 = [f"t{i}" for i in range(64)]

_PCA = "SELECT * FROM publish_claim_acks(" + ", ".join("%s" for _ in range(23)) + ")"
_PE = "SELECT * FROM publish_events(%s, %s, %s, %s, %s, %s, %s)"


def _params(kind: str, channel: str, prev: tuple[int, str] | None) -> tuple[str, tuple[object, ...]]:
    event = ([uuid.uuid4().hex], ["t"], [time.time_ns() // 1_000_000], [None], [PAYLOAD], [None], channel)
    if kind == "pe":
        return _PE, event
    if kind.startswith("pe256"):
        topics = ["t"] * 256 if kind == "pe256" else TOPICS_64 * 4
        ms = time.time_ns() // 1_000_000
        batch = ([uuid.uuid4().hex for _ in topics], topics, [ms] * 256, [None] * 256, [PAYLOAD] * 256)
        return _PE, (*batch, [None] * 256, channel)
    now = time.time_ns() // 1_000_000
    claim = (["t"], ["g"], ["m1"], now, [now + 30_000], [64], [1], ["t"], [None], [None])
    no_claim: tuple[object, ...] = ([], [], [], now, [], [], [], [], [], [])
    seq, eid = prev or (0, "")
    ack = (["t"], ["g"], ["m1"], [1], [seq], [eid])
    no_ack: tuple[object, ...] = ([], [], [], [], [], [])
    if kind == "pca":
        return _PCA, (*event, *claim, *ack)
    if kind == "pca_no_ack":
        return _PCA, (*event, *claim, *no_ack)
    if kind == "pca_no_claim":
        return _PCA, (*event, *no_claim, *ack)
    return _PCA, (*event, *no_claim, *no_ack)


def _cpu_ns(pid: int) -> int:
    """The process's time on a CPU so far (ns; the scheduler's account, finer than utime + stime)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


async def _setup(name: str, variant: str) -> None:
    async with await psycopg.AsyncConnection.connect(PGURL, autocommit=True) as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        await schema.migrate(conn, name)
        await conn.execute(f"SET search_path = {name}")
        n = EVENTS
        await conn.execute(
            _PE,
            (
                [uuid.uuid4().hex for _ in range(n)],
                ["t"] * n,
                [1] * n,
                [None] * n,
                [PAYLOAD] * n,
                [None] * n,
                "none",
            ),
        )
        await conn.execute(
            _PE,
            (
                [uuid.uuid4().hex for _ in TOPICS_64],
                TOPICS_64,
                [1] * 64,
                [None] * 64,
                [PAYLOAD] * 64,
                [None] * 64,
                "none",
            ),
        )
        await conn.execute(
            "INSERT INTO groups (pattern, name, frontier, created_ts)"
            " SELECT 't', 'g', last_seq, 0 FROM counter"
        )
        await conn.execute("INSERT INTO listeners (node, pid, since) VALUES ('other', 0, 0)")
        await conn.execute("VACUUM ANALYZE events")
        # The variant last: one that leaves the topics INSERT out must find the topics there, as a running
        # hub does (installed before the population, it published no event at all: see benchmarks.md).
        for statement in VARIANTS[variant]():
            await conn.execute(statement)


class Runner:
    """One case's schema and connection: ``run(k)`` sends k more scripts and adds their backend CPU."""

    def __init__(self, case: str) -> None:
        variant, self.kind = CASES[case]
        self.case, self.name = case, f"bench_evcpu_{os.getpid()}_{case}"
        asyncio.run(_setup(self.name, variant))
        options = f"-c search_path={self.name} -c outboxhub.node=me"
        self.conn = psycopg.connect(PGURL, autocommit=True, options=options)
        self.channel = f"outboxhub.{self.name}"
        self.pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        self.prev: tuple[int, str] | None = None
        self.cpu_ns = self.wall_ns = self.scripts = 0
        self.run(300)  # warm-up: plans cached, as in a running hub
        self.cpu_ns = self.wall_ns = self.scripts = 0

    def run(self, k: int) -> None:
        conn, kind = self.conn, self.kind
        cpu, start = _cpu_ns(self.pid), time.perf_counter_ns()
        for _ in range(k):
            query, params = _params(kind, self.channel, self.prev)
            rows = conn.execute(query, params, prepare=True).fetchall()
            claimed = [r for r in rows if kind in ("pca", "pca_no_ack") and r[0] == 1 and not r[1]]
            if claimed:
                self.prev = (claimed[-1][2], claimed[-1][4])
            elif kind == "pca":
                self.prev = None
        self.cpu_ns += _cpu_ns(self.pid) - cpu
        self.wall_ns += time.perf_counter_ns() - start
        self.scripts += k

    def result(self) -> tuple[float, float]:
        """Backend CPU and wall µs per script so far; checks that the riding ACKs deleted their rows."""
        check = self.conn.execute("SELECT count(*) FROM pending").fetchone()[0]  # type: ignore[index]
        if self.kind == "pca" and check > 2:
            raise SystemExit(f"{self.case}: ACKs did not delete ({check} pending rows)")
        last = self.conn.execute("SELECT last_seq FROM counter").fetchone()[0]  # type: ignore[index]
        if last < EVENTS + len(TOPICS_64) + self.scripts + 300:
            raise SystemExit(f"{self.case}: the scripts did not publish (last seq {last})")
        return self.cpu_ns / 1000 / self.scripts, self.wall_ns / 1000 / self.scripts

    def close(self) -> None:
        self.conn.close()
        with psycopg.connect(PGURL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")


def run_cases(cases: list[str], n: int, block: int) -> dict[str, tuple[float, float]]:
    """Each case's CPU and wall per script over ``n`` scripts: one case after the other (``block`` 0), or
    all cases' connections open at once, taking turns ``block`` scripts at a time (what the machine does
    meanwhile then falls on every case alike)."""
    if not block:
        out = {}
        for case in cases:
            runner = Runner(case)
            try:
                runner.run(n)
                out[case] = runner.result()
            finally:
                runner.close()
        return out
    runners: list[Runner] = []
    try:
        for case in cases:
            runners.append(Runner(case))
        for _ in range(0, n, block):
            for runner in runners:
                runner.run(block)
        return {runner.case: runner.result() for runner in runners}
    finally:
        for runner in runners:
            runner.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    cases = sys.argv[3:] or list(CASES)
    block = int(os.environ.get("INTERLEAVE", "0"))
    results: dict[str, list[float]] = {c: [] for c in cases}
    order = f"interleaved {block} at a time" if block else "cases alternate"
    print(f"load {os.getloadavg()[0]:.2f}; {n} scripts per case and round, {order}", flush=True)
    for r in range(rounds):
        for case, (cpu, wall) in run_cases(cases, n, block).items():
            results[case].append(cpu)
            line = f"round {r + 1} {case:16s} backend CPU {cpu:6.0f} µs/script, wall {wall:6.0f} µs"
            print(line, flush=True)
    print("median backend CPU µs per script:")
    for case, values in results.items():
        print(f"  {case:16s} {statistics.median(values):6.0f}  ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
