"""Backend CPU per e2e event on PostgreSQL: what one ``publish_claim_acks`` of the hub costs the server.

One script = what the hub sends per event in ``bench e2e``: ``publish_claim_acks`` of one event (100 B) on
topic ``t``, with the member's parked claim on group ``g`` (kind 1, one topic; it claims that event) and
the previous script's delivery ACK riding. Each case runs in a throwaway schema of its own, migrated to the
current version, populated (EVENTS events, the group at the head, a listener row of another node so the
NOTIFY test reads ``listeners``, topics ``t`` and ``t0``…``t63`` present) and only then changed by one
variant that drops one part of the work (``v8``: the ``publish_events`` of versions 6–8, with its topics
INSERT on every call; installed before the population, a variant without the INSERT published nothing). The
number is the backend's CPU (``/proc/PID/stat`` utime + stime of the connection's server process) over N
scripts, so the client and the machine's load hardly enter it. Prepared statements, as the hub sends them.

Usage: PYTHONPATH=src python scripts/pg-event-cpu.py [N] [ROUNDS] [CASE...]
(PGURL=postgresql://127.0.0.1:5432/test; N=3000 scripts per case and round, ROUNDS=2; cases alternate.)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable

import psycopg

from outboxhub.store.postgres import schema
from outboxhub.store.postgres.registry import NOTIFY_CONDITION

PGURL = os.environ.get("PGURL", "postgresql://127.0.0.1:5432/test")
EVENTS = 20_000
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
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


_TOPIC_INSERT = (
    "    INSERT INTO topics (topic)\n"
    "    SELECT DISTINCT t FROM unnest(p_topics) AS t\n"
    "    WHERE NOT EXISTS (SELECT 1 FROM topics x WHERE x.topic = t)\n"
    "    ON CONFLICT (topic) DO NOTHING;\n"
)
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


VARIANTS: dict[str, Callable[[], list[str]]] = {
    "full": list,
    "v8": _v8,
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


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


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


def run_case(case: str, n: int) -> tuple[float, float]:
    variant, kind = CASES[case]
    name = f"bench_evcpu_{os.getpid()}_{case}"
    asyncio.run(_setup(name, variant))
    try:
        options = f"-c search_path={name} -c outboxhub.node=me"
        with psycopg.connect(PGURL, autocommit=True, options=options) as conn:
            channel = f"outboxhub.{name}"
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            prev: tuple[int, str] | None = None
            for i in range(n + 300):  # 300 warm-up scripts: plans cached, as in a running hub
                if i == 300:
                    ticks, start = _cpu_ticks(pid), time.perf_counter()
                query, params = _params(kind, channel, prev)
                rows = conn.execute(query, params, prepare=True).fetchall()
                claimed = [r for r in rows if kind in ("pca", "pca_no_ack") and r[0] == 1 and not r[1]]
                if claimed:
                    prev = (claimed[-1][2], claimed[-1][4])
                elif kind in ("pca", "pca_no_claim"):
                    prev = None if kind == "pca" else prev
            cpu_us = (_cpu_ticks(pid) - ticks) * TICK_US / n
            wall_us = (time.perf_counter() - start) * 1e6 / n
            check = conn.execute("SELECT count(*) FROM pending").fetchone()[0]  # type: ignore[index]
            if kind == "pca" and check > 2:
                raise SystemExit(f"{case}: ACKs did not delete ({check} pending rows)")
            last = conn.execute("SELECT last_seq FROM counter").fetchone()[0]  # type: ignore[index]
            if last < EVENTS + len(TOPICS_64) + n + 300:
                raise SystemExit(f"{case}: the scripts did not publish (last seq {last})")
    finally:
        with psycopg.connect(PGURL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    return cpu_us, wall_us


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    cases = sys.argv[3:] or list(CASES)
    results: dict[str, list[float]] = {c: [] for c in cases}
    print(f"load {os.getloadavg()[0]:.2f}; {n} scripts per case and round", flush=True)
    for r in range(rounds):
        for case in cases:
            cpu, wall = run_case(case, n)
            results[case].append(cpu)
            line = f"round {r + 1} {case:16s} backend CPU {cpu:6.0f} µs/script, wall {wall:6.0f} µs"
            print(line, flush=True)
    print("median backend CPU µs per script:")
    for case, values in results.items():
        print(f"  {case:16s} {statistics.median(values):6.0f}  ({', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
