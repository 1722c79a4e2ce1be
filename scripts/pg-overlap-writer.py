"""A writer-shaped model of "overlapping commits" on PostgreSQL: the hub's group commit, without the hub.

``scripts/pg-overlap-model.sh`` models each event as its own pgbench transaction; a hub instead takes every
publish queued while a statement is in flight into the next statement (one batch). This script keeps that
shape, in one asyncio process (uvloop, psycopg, prepared statements, autocommit), events paced at RATE/s:

* ``present``: one writer connection; each batch is one statement (the counter row's ``seq + n``, the
  batch's event rows and claim rows, the ACKs of the events confirmed before it deleted) committed
  durably; a batch's events are confirmed when its statement returns.
* ``overlap/K``: the same statement committed with ``synchronous_commit = off`` (the counter lock is
  released at the commit record, before the flush), so the writer takes the next batch at once; K marker
  connections each send a durable mark transaction (``UPDATE marks SET seq = N`` on a row of its own, N =
  the highest seq published when it starts; its flush covers every earlier commit record) whenever one is
  idle and something is unmarked, and every event up to the highest returned mark is confirmed. K = 1: one
  mark in flight, marks coalesce; K = 3: marks overlap too, and their flushes may share one WAL sync.

Latency = confirmation - the moment the event was queued (the producer is paced on the loop's timer, whose
ms grain would otherwise count as latency). Reported per case: p50 / p90 / p99 / max µs, events per
statement, marks and WAL syncs (``pg_stat_wal``, cluster-wide) per event, the backends' CPU per event
(/proc) and this process's CPU per event. Cases alternate, ROUNDS rounds. Uses a throwaway schema
(``bench_overlap_*``) in OUTBOXHUB_TEST_PG_URL's database; run it under the heavy lock. BURN=F adds the
CPU burner of ``scripts/pg-overlap-model.sh``.

Usage: PYTHONPATH=src python scripts/pg-overlap-writer.py [RATE] [SECONDS] [ROUNDS]   (1000, 10, 2)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import psycopg
import uvloop

from outboxhub.testing.postgres import base_url, fresh_schema

PUBLISH = """
WITH {async_cte} c AS (UPDATE {s}.counter SET seq = seq + %(n)s WHERE id = 1 RETURNING seq),
rows AS (SELECT c.seq - %(n)s + g AS seq FROM c, generate_series(1, %(n)s) AS g),
acked AS (DELETE FROM {s}.pending WHERE seq = ANY(%(acks)s)),
claimed AS (INSERT INTO {s}.pending (seq) SELECT seq FROM rows),
inserted AS (INSERT INTO {s}.events (seq, payload) SELECT seq, repeat('x', 100) FROM rows)
SELECT c.seq FROM c {async_from}
"""
ASYNC_CTE = "async AS (SELECT set_config('synchronous_commit', 'off', true) AS setting),"
MARK = "UPDATE {s}.marks SET seq = %(seq)s WHERE slot = %(slot)s"
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
BURNER = """
import sys, time
busy, period = float(sys.argv[1]) * 1e-3, 1e-3
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(period - busy)
"""


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def _wal_syncs(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT wal_sync FROM pg_stat_wal")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    n = len(values)
    picks = [values[min(n - 1, int(p * (n - 1) + 0.5))] for p in (0.5, 0.9, 0.99)] + [values[-1]]
    return "/".join(f"{v:.0f}" for v in picks)


class Run:
    def __init__(self, url: str, schema: str, markers: int, rate: int, seconds: float) -> None:
        self.url, self.schema, self.markers = url, schema, markers
        self.overlap = markers > 0
        self.rate, self.seconds = rate, seconds
        self.queue: list[float] = []  # when each event not yet in a statement was queued
        self.wake = asyncio.Event()
        self.published: list[tuple[int, list[float]]] = []  # (last seq, queue times) awaiting a mark
        self.published_seq = 0
        self.mark_wake = asyncio.Event()
        self.latencies: list[float] = []
        self.acks: list[int] = []
        self.statements = 0
        self.marks = 0
        self.done = False
        self.writer_done = False

    async def produce(self) -> None:
        start = time.perf_counter() + 0.05
        for i in range(int(self.rate * self.seconds)):
            due = start + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            self.queue.append(time.perf_counter())
            self.wake.set()
        self.done = True
        self.wake.set()

    def confirm(self, arrivals: list[float], last_seq: int) -> None:
        now = time.perf_counter()
        self.latencies.extend((now - queued) * 1e6 for queued in arrivals)
        self.acks.extend(range(last_seq - len(arrivals) + 1, last_seq + 1))

    async def write(self, conn: psycopg.AsyncConnection[Any]) -> None:
        s = self.schema
        sql = PUBLISH.format(
            s=s,
            async_cte=ASYNC_CTE if self.overlap else "",
            async_from=", async" if self.overlap else "",
        )
        while True:
            if not self.queue:
                if self.done:
                    break
                await self.wake.wait()
                self.wake.clear()
                continue
            batch, self.queue = self.queue, []
            acks, self.acks = self.acks, []
            cur = await conn.execute(sql, {"n": len(batch), "acks": acks}, prepare=True)
            row = await cur.fetchone()
            assert row is not None
            self.statements += 1
            if self.overlap:
                self.published.append((row[0], batch))
                self.published_seq = row[0]
                self.mark_wake.set()
            else:
                self.confirm(batch, row[0])
        self.mark_wake.set()

    async def mark(self, conns: list[psycopg.AsyncConnection[Any]]) -> None:
        """Send a mark for the highest published seq on every idle marker connection; confirm up to the
        highest mark returned (it covers every commit record before its own)."""
        sql = MARK.format(s=self.schema)
        idle = list(enumerate(conns))
        requested = marked = 0
        in_flight: set[asyncio.Task[None]] = set()

        async def one(slot: int, conn: psycopg.AsyncConnection[Any], target: int) -> None:
            nonlocal marked
            await conn.execute(sql, {"seq": target, "slot": slot}, prepare=True)
            self.marks += 1
            marked = max(marked, target)
            while self.published and self.published[0][0] <= marked:
                last_seq, arrivals = self.published.pop(0)
                self.confirm(arrivals, last_seq)
            idle.append((slot, conn))
            self.mark_wake.set()

        while True:
            await self.mark_wake.wait()
            self.mark_wake.clear()
            while idle and self.published_seq > requested:
                slot, conn = idle.pop()
                requested = self.published_seq
                task = asyncio.ensure_future(one(slot, conn, requested))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if self.writer_done and marked == self.published_seq:
                break
        await asyncio.gather(*in_flight)

    async def run(self) -> str:
        connect = psycopg.AsyncConnection.connect
        writer = await connect(self.url, autocommit=True)
        markers = [await connect(self.url, autocommit=True) for _ in range(self.markers)]
        try:
            pids = [conn.info.backend_pid for conn in [writer, *markers]]
            syncs_before = await _wal_syncs(writer)
            backend_before = sum(_ticks(pid) for pid in pids)
            own_before = time.process_time()
            tasks = [asyncio.ensure_future(self.produce())]
            if self.markers:
                tasks.append(asyncio.ensure_future(self.mark(markers)))
            await self.write(writer)
            self.writer_done = True
            self.mark_wake.set()
            await asyncio.gather(*tasks)
            backend_us = (sum(_ticks(pid) for pid in pids) - backend_before) * TICK_US
            own_us = (time.process_time() - own_before) * 1e6
            syncs = await _wal_syncs(writer) - syncs_before
        finally:
            for conn in [writer, *markers]:
                await conn.close()
        n = len(self.latencies)
        return (
            f"{n:6d}  {_percentiles(self.latencies):<26}  {n / self.statements:5.2f}  "
            f"{self.marks / n:5.2f}  {syncs / n:5.2f}  {backend_us / n:7.0f}  {own_us / n:6.0f}"
        )


async def main(rate: int, seconds: float, rounds: int) -> None:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load at start: {load}; rate {rate}/s, {seconds:g} s per case, burn {os.environ.get('BURN', '0')}")
    columns = "ev/st  mk/ev  sy/ev  pg µs/ev  py µs/ev"
    print(f"{'round':<5} {'case':<9} {'n':>6}  {'p50/p90/p99/max µs':<26}  {columns}")
    url = base_url()
    async with fresh_schema("bench_overlap") as schema:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"""
                CREATE TABLE {schema}.counter (id int PRIMARY KEY, seq bigint NOT NULL);
                INSERT INTO {schema}.counter VALUES (1, 0);
                CREATE TABLE {schema}.events (seq bigint PRIMARY KEY, payload text NOT NULL,
                                              at timestamptz NOT NULL DEFAULT now());
                CREATE TABLE {schema}.pending (seq bigint PRIMARY KEY);
                CREATE TABLE {schema}.marks (slot int PRIMARY KEY, seq bigint NOT NULL);
                INSERT INTO {schema}.marks SELECT slot, 0 FROM generate_series(0, 7) AS slot;
            """)
        cases = [0, 1, 3]  # marker connections: 0 = present, 1 = one mark in flight, 3 = up to three
        for round_number in range(1, rounds + 1):
            for markers in cases if round_number % 2 else cases[::-1]:
                result = await Run(url, schema, markers, rate, seconds).run()
                name = f"overlap/{markers}" if markers else "present"
                print(f"{round_number:<5} {name:<9} {result}", flush=True)


if __name__ == "__main__":
    defaults = ["1000", "10", "2"]
    arguments = [*sys.argv[1:4], *defaults[len(sys.argv[1:4]) :]]
    burn = os.environ.get("BURN", "0")
    burner = subprocess.Popen([sys.executable, "-c", BURNER, burn]) if float(burn) > 0 else None
    try:
        uvloop.run(main(int(arguments[0]), float(arguments[1]), int(arguments[2])))
    finally:
        if burner is not None:
            burner.kill()
