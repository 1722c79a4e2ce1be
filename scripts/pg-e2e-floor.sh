#!/bin/bash
# The floor under the PostgreSQL e2e row on this machine: what the server alone takes for the least an
# e2e event needs, at the benchmark's rate, on one connection (a hub's publishes commit one at a time).
#
# Cases (pgbench -M prepared -c 1 -R RATE -T SECONDS, each transaction logged; percentiles in µs of the
# transaction's own time ("service") and of its time plus pgbench's schedule lag, the wait behind the
# previous transaction, since -R draws Poisson arrivals):
#   select   SELECT 1: the round trip, nothing written;
#   ins      one durable commit: the counter row's seq + 1 and the event row in one statement (the
#            seq-order = commit-order lock that publish_events takes, and its row), synchronous_commit = on;
#   ins_off  the same with synchronous_commit = off: the commit without its WAL flush;
#   e2e      the least one e2e event costs the server when ACKs ride on the publish (schema version 8):
#            counter, event row, the claim's pending row and the previous event's ACK (its pending row
#            deleted), one durable statement.
# Uses a throwaway schema (dropped at the end) in the database of PGURL.
#
# Usage: scripts/pg-e2e-floor.sh [RATE] [SECONDS]   (1000, 10; PGURL=postgresql://127.0.0.1:5432/test)
set -euo pipefail
RATE=${1:-1000}
SECONDS_PER_CASE=${2:-10}
PGURL=${PGURL:-postgresql://postgres@127.0.0.1:5432/test}
S=e2e_floor_$$
WORK=$(mktemp -d)
trap 'psql "$PGURL" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $S CASCADE" >/dev/null; rm -rf "$WORK"' EXIT

psql "$PGURL" -q <<SQL
CREATE SCHEMA $S;
CREATE TABLE $S.counter (id int PRIMARY KEY, seq bigint NOT NULL);
INSERT INTO $S.counter VALUES (1, 0);
CREATE TABLE $S.events (seq bigint PRIMARY KEY, payload text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE $S.pending (seq bigint PRIMARY KEY);
SQL
NEXT_SEQ="c AS (UPDATE $S.counter SET seq = seq + 1 WHERE id = 1 RETURNING seq)"
echo 'SELECT 1;' >"$WORK/select.sql"
echo "WITH $NEXT_SEQ INSERT INTO $S.events (seq, payload) SELECT seq, repeat('x', 100) FROM c;" >"$WORK/ins.sql"
cp "$WORK/ins.sql" "$WORK/ins_off.sql"
echo "WITH $NEXT_SEQ, acked AS (DELETE FROM $S.pending WHERE seq = (SELECT seq - 1 FROM c)), claimed AS (INSERT INTO $S.pending (seq) SELECT seq FROM c) INSERT INTO $S.events (seq, payload) SELECT seq, repeat('x', 100) FROM c;" >"$WORK/e2e.sql"

percentiles() { # stdin: one number per line → "p50 p90 p99 max"
    sort -n | awk '{v[NR] = $1} END {
        n = NR; split("50 90 99", p, " ");
        for (i = 1; i <= 3; i++) { k = int(p[i] / 100 * (n - 1) + 0.5) + 1; printf "%s ", v[k] }
        print v[n] }'
}
printf '%-8s %6s  %-26s  %-26s\n' case n 'service p50/p90/p99/max' '+ schedule lag p50/p90/p99/max'
for case in select ins ins_off e2e; do
    options=""
    [ "$case" = ins_off ] && options="-c synchronous_commit=off"
    PGOPTIONS="$options" pgbench "$PGURL" -n -M prepared -c 1 -R "$RATE" -T "$SECONDS_PER_CASE" \
        -f "$WORK/$case.sql" -l --log-prefix="$WORK/log_$case" >/dev/null 2>&1
    # log columns: client, transaction, time µs, script, epoch s, epoch µs, schedule lag µs
    service=$(cat "$WORK"/log_"$case".* | awk '{print $3}' | percentiles)
    lagged=$(cat "$WORK"/log_"$case".* | awk '{print $3 + $7}' | percentiles)
    n=$(cat "$WORK"/log_"$case".* | wc -l)
    printf '%-8s %6s  %-26s  %-26s\n' "$case" "$n" "${service// //}" "${lagged// //}"
done
