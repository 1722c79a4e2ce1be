"""What the SQL outbox backends share: table-name checks, the column list, row decoding and the
statements that differ only in their placeholder (``?`` for SQLite, ``%s`` for PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec

from outboxhub.errors import OutboxError
from outboxhub.outbox.model import OutboxRecord, PreparedRecord, Status

__all__ = [
    "COLUMNS",
    "claim_params",
    "decode_claimed",
    "decode_row",
    "delete_sent_sql",
    "insert_values",
    "missing_table_error",
    "seqs_by_token",
    "split_table",
    "stats_sql",
]

COLUMNS = (
    "seq, id, topic, payload, key, headers, status, ts, attempts, available_at, "
    "claimed_by, claim_token, lease_until, last_err, sent_at"
)
"""Column order every SELECT/RETURNING of a record uses (``decode_row`` reads it positionally)."""

# 48 leaves room for the longest derived index name suffix within PostgreSQL's 63-byte limit.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
_payload_decoder = msgspec.json.Decoder()
_headers_decoder = msgspec.json.Decoder(dict[str, str] | None)


def split_table(table: object, *, allow_schema: bool) -> tuple[str | None, str]:
    """``(schema, name)`` of a table name, or ``OutboxError`` naming what is wrong with it."""
    if not isinstance(table, str):
        raise OutboxError(f"table must be a string, got {type(table).__name__}")
    parts = table.split(".")
    if len(parts) > (2 if allow_schema else 1) or not all(_IDENT.fullmatch(p) for p in parts):
        shape = "name or schema.name" if allow_schema else "name"
        raise OutboxError(
            f"table {table!r} must be a {shape} of letters, digits and underscores "
            "(not starting with a digit, at most 48 characters each)"
        )
    if len(parts) == 2:
        return parts[0], parts[1]
    return None, parts[0]


def insert_values(record: PreparedRecord) -> tuple[Any, ...]:
    """The positional parameters of an ``insert_statement``: id, topic, payload, key, headers, ts and
    ``available_at`` (= ts: a new record is claimable at once)."""
    return (
        record.id,
        record.topic,
        record.payload_json,
        record.key,
        record.headers_json,
        record.ts,
        record.ts,
    )


def missing_table_error(table: str) -> OutboxError:
    """What ``add`` raises when the outbox table has not been created."""
    return OutboxError(
        f"outbox table {table!r} does not exist; create it with ensure_schema() or the DDL in docs/outbox.md"
    )


def decode_row(row: tuple[Any, ...], *, lenient: bool = False) -> OutboxRecord | str:
    """An ``OutboxRecord`` from a row in ``COLUMNS`` order, or the reason it cannot be read.

    Payload and headers arrive as JSON text. A row written by another tool with invalid JSON yields an
    error string, so the caller can mark that one record dead instead of failing the whole batch; with
    ``lenient`` (listing for operators) the raw text is kept as the payload instead.
    """
    (seq, id_, topic, payload, key, headers, status, ts, attempts, available_at) = row[:10]
    try:
        payload_value = _payload_decoder.decode(payload) if payload is not None else None
    except msgspec.DecodeError as exc:
        if not lenient:
            return f"payload is not valid JSON: {exc}"
        payload_value = payload
    try:
        headers_value = _headers_decoder.decode(headers) if headers is not None else None
    except msgspec.DecodeError as exc:
        if not lenient:
            return f"headers are not a JSON object of strings: {exc}"
        headers_value = None
    status_value: Status = status
    return OutboxRecord(
        seq=seq,
        id=id_,
        topic=topic,
        payload=payload_value,
        key=key,
        headers=headers_value,
        status=status_value,
        ts=ts,
        attempts=attempts,
        available_at=available_at,
        claimed_by=row[10],
        claim_token=row[11],
        lease_until=row[12],
        last_err=row[13],
        sent_at=row[14],
    )


def decode_claimed(
    rows: list[tuple[Any, ...]], token: str
) -> tuple[list[OutboxRecord], list[tuple[str, int, str]]]:
    """The claimed ``rows`` as records in ``seq`` order, and ``(error, seq, token)`` for each row that
    cannot be read (the caller marks those dead)."""
    records: list[OutboxRecord] = []
    bad: list[tuple[str, int, str]] = []
    for row in rows:
        decoded = decode_row(row)
        if isinstance(decoded, str):
            bad.append((decoded, row[0], token))
        else:
            records.append(decoded)
    records.sort(key=lambda r: r.seq)
    return records, bad


def seqs_by_token(records: Sequence[OutboxRecord]) -> dict[str | None, list[int]]:
    """The ``seq`` of each record grouped by its claim token (a fenced update runs once per token; a
    drainer's batch has one)."""
    groups: dict[str | None, list[int]] = {}
    for record in records:
        groups.setdefault(record.claim_token, []).append(record.seq)
    return groups


def claim_params(*, worker_id: str, token: str, lease_ms: int, now: int, limit: int) -> dict[str, Any]:
    """The named parameters of the claim statements."""
    return {
        "worker": worker_id,
        "token": token,
        "lease_until": now + lease_ms,
        "now": now,
        "limit": limit,
    }


def stats_sql(table: str, placeholder: str) -> str:
    """Pending, claimed and dead counts, the oldest pending ``ts`` and the next retry time after the one
    parameter (now), in one row."""
    t = table
    return (
        f"SELECT (SELECT count(*) FROM {t} WHERE status = 'pending'), "
        f"(SELECT count(*) FROM {t} WHERE status = 'claimed'), "
        f"(SELECT count(*) FROM {t} WHERE status = 'dead'), "
        f"(SELECT ts FROM {t} WHERE status = 'pending' ORDER BY seq LIMIT 1), "
        f"(SELECT min(available_at) FROM {t} WHERE status = 'pending' AND available_at > {placeholder})"
    )


def delete_sent_sql(table: str, placeholder: str) -> str:
    """Delete one batch of records sent before a cutoff; parameters (cutoff, batch size)."""
    t, p = table, placeholder
    return (
        f"DELETE FROM {t} WHERE seq IN "
        f"(SELECT seq FROM {t} WHERE status = 'sent' AND sent_at < {p} LIMIT {p})"
    )
