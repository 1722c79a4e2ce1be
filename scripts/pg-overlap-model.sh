#!/bin/bash
# A server-side model of "overlapping commits" for the PostgreSQL e2e row: does a publish that does not
# wait for the previous publish's WAL flush lower the tail of "publish → durable", against today's design?
#
# Every case runs pgbench -M prepared -R RATE -T SECONDS on a throwaway schema, every transaction logged;
# one pgbench transaction = one event from arrival to "durable, may be confirmed". Cases:
#   present    the e2e statement of scripts/pg-e2e-floor.sh (counter lock, event row, the claim's pending
#              row, the previous event's ACK) committed durably, as a hub does today (-c 1: the hub's
#              writer; -c 4: the same with the queueing in PostgreSQL's row lock instead of the client);
#   overlap    the same statement committed with synchronous_commit = off (the counter lock is released
#              at the commit record, before any flush), then a durable "mark" transaction on the same
#              connection recording "everything up to seq N is durable" (its flush covers the publish's
#              commit record, which is earlier in the WAL). One mark row per client, so marks do not
#              wait for each other's flush (-c 1: the extra round trip's cost; -c 4: statements overlap).
# Reported per case, µs: the transaction's own time ("service") and + pgbench's schedule lag (the wait
# behind the client's previous transaction; -R draws Poisson arrivals), p50/p90/p99/max; WAL syncs per
# transaction (pg_stat_wal) and PostgreSQL CPU per transaction (/proc: every postgres process, the
# postmaster's reaped children included; other sessions' work counts too).
# Cases alternate within a round; ROUNDS rounds. Run it under the heavy lock on a shared machine.
# BURN=F (0 < F < 1) adds a process that keeps one core busy a fraction F of each millisecond, a
# stand-in for the hub and the benchmark client that share the cores with the server in a real run.
#
# Usage: scripts/pg-overlap-model.sh [RATE] [SECONDS] [ROUNDS]   (1000, 10, 2; PGURL as pg-e2e-floor.sh)
set -euo pipefail
RATE=${1:-1000}
SECONDS_PER_CASE=${2:-10}
ROUNDS=${3:-2}
CASES=${CASES:-"present:1 overlap:4 present:4 overlap:1"}
BURN=${BURN:-0}
PGURL=${PGURL:-postgresql://postgres@127.0.0.1:5432/test}
S=overlap_model_$$
WORK=$(mktemp -d)
BURNER=""
trap '[ -n "$BURNER" ] && kill "$BURNER"; psql "$PGURL" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null; rm -rf "$WORK"' EXIT
if [ "$BURN" != 0 ]; then
    python3 -c "
import time
busy, period = $BURN * 1e-3, 1e-3
while True:
    start = time.perf_counter()
    while time.perf_counter() - start < busy:
        pass
    time.sleep(period - busy)
" &
    BURNER=$!
fi

psql "$PGURL" -q <<SQL
CREATE SCHEMA $S;
CREATE TABLE $S.counter (id int PRIMARY KEY, seq bigint NOT NULL);
INSERT INTO $S.counter VALUES (1, 0);
CREATE TABLE $S.events (seq bigint PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE $S.pending (seq bigint PRIMARY KEY);
CREATE TABLE $S.marks (slot int PRIMARY KEY, seq bigint NOT NULL);
INSERT INTO $S.marks SELECT slot, 0 FROM generate_series(0, 63) AS slot;
SQL
NEXT_SEQ="c AS (UPDATE $S.counter SET seq = seq + 1 WHERE id = 1 RETURNING seq)"
ROWS="acked AS (DELETE FROM $S.pending WHERE seq = (SELECT seq - 1 FROM c)), claimed AS (INSERT INTO $S.pending (seq) SELECT seq FROM c)"
echo "WITH $NEXT_SEQ, $ROWS INSERT INTO $S.events (seq, payload) SELECT seq, repeat('x', 100) FROM c;" >"$WORK/present.sql"
cat >"$WORK/overlap.sql" <<SQL
WITH async AS (SELECT set_config('synchronous_commit', 'off', true) AS setting), $NEXT_SEQ, $ROWS INSERT INTO $S.events (seq, payload) SELECT seq, repeat('x', 100) FROM c, async RETURNING seq AS published \gset
UPDATE $S.marks SET seq = :published WHERE slot = :client_id;
SQL

percentiles() { # stdin: one number per line → "p50 p90 p99 max"
    sort -n | awk '{v[NR] = $1} END {
        n = NR; split("50 90 99", p, " ");
        for (i = 1; i <= 3; i++) { k = int(p[i] / 100 * (n - 1) + 0.5) + 1; printf "%s ", v[k] }
        print v[n] }'
}
postgres_cpu_ticks() { # every postgres process's utime + stime, plus the postmaster's reaped children
    local postmaster total=0 pid
    postmaster=$(pgrep -o -x postgres)
    for pid in $(pgrep -x postgres); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo $((total + $(awk '{print $16 + $17}' "/proc/$postmaster/stat")))
}
wal_syncs() { psql "$PGURL" -Atc "SELECT wal_sync FROM pg_stat_wal"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg); rate $RATE/s, ${SECONDS_PER_CASE} s per case, burn $BURN"
printf '%-5s %-10s %6s  %-26s  %-28s  %6s  %6s\n' round case n 'service p50/p90/p99/max' \
    '+ schedule lag p50/p90/p99/max' 'syncs' 'cpu µs'
for round in $(seq 1 "$ROUNDS"); do
    for spec in $CASES; do
        case=${spec%%:*}
        clients=${spec##*:}
        rm -f "$WORK"/log.*
        syncs_before=$(wal_syncs)
        ticks_before=$(postgres_cpu_ticks)
        pgbench "$PGURL" -n -M prepared -c "$clients" -j 1 -R "$RATE" -T "$SECONDS_PER_CASE" \
            -f "$WORK/$case.sql" -l --log-prefix="$WORK/log" >/dev/null 2>&1
        ticks=$(($(postgres_cpu_ticks) - ticks_before))
        syncs=$(($(wal_syncs) - syncs_before))
        # log columns: client, transaction, time µs, script, epoch s, epoch µs, schedule lag µs
        n=$(cat "$WORK"/log.* | wc -l)
        service=$(cat "$WORK"/log.* | awk '{print $3}' | percentiles)
        lagged=$(cat "$WORK"/log.* | awk '{print $3 + $7}' | percentiles)
        printf '%-5s %-10s %6s  %-26s  %-28s  %6.3f  %6d\n' "$round" "$case/c$clients" "$n" \
            "${service// //}" "${lagged// //}" "$(echo "$syncs / $n" | bc -l)" $((ticks * TICK_US / n))
    done
done
