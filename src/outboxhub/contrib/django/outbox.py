"""``add``: write an outbox record in the current Django transaction; ``outbox_url``: the URL a drainer
opens the same table with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote

from django.db import connections

from outboxhub.errors import OutboxError
from outboxhub.outbox.add import prepare_record
from outboxhub.outbox.mysql_sql import check_record

__all__ = ["TABLE", "add", "outbox_url"]

TABLE: Final = "outboxhub_outbox"
"""The table of ``OutboxEntry`` (give it to drainers as ``?table=outboxhub_outbox``)."""

_SCHEMES: Final = {"sqlite": "sqlite", "postgresql": "postgresql", "mysql": "mysql"}


def add(
    topic: str,
    payload: Any,
    *,
    key: str | None = None,
    id: str | None = None,
    headers: Mapping[str, str] | None = None,
    using: str = "default",
) -> str:
    """Insert an outbox record with the database ``using``, inside its current ``transaction.atomic()``
    block; return the record id (the event id in the hub; default a new UUIDv7).

    Raises ``OutboxError`` before anything is written when the record is invalid (topic, payload not
    JSON-serialisable, id, key, headers) or when no atomic block is open on ``using``: outside one the
    record would commit on its own, apart from the business writes it belongs to. An id that exists
    already leaves the stored record unchanged (idempotent add).
    """
    connection = connections[using]
    if not connection.in_atomic_block:
        raise OutboxError(
            f"outbox.add must run inside transaction.atomic(using={using!r}); outside it the record "
            "would commit on its own"
        )
    record = prepare_record(topic, payload, id=id, key=key, headers=headers)
    if connection.vendor == "mysql":
        check_record(record)
    from outboxhub.contrib.django.models import OutboxEntry

    OutboxEntry.objects.using(using).bulk_create(
        [
            OutboxEntry(
                record_id=record.id,
                topic=record.topic,
                payload=record.payload_json,
                key=record.key,
                headers=record.headers_json,
                status="pending",
                ts=record.ts,
                available_at=record.ts,
                attempts=0,
            )
        ],
        ignore_conflicts=True,
    )
    return record.id


def outbox_url(using: str = "default", *, table: str = TABLE) -> str:
    """The outbox URL of the database ``using`` (``sqlite:///…``, ``postgresql://…``, ``mysql://…``) with
    ``?table=``, for ``outboxhub drain --outbox`` or ``serve --outbox``. It contains the password, if the
    settings have one: hand it to the drainer, do not log it."""
    connection = connections[using]
    scheme = _SCHEMES.get(connection.vendor)
    if scheme is None:
        raise OutboxError(
            f"database {using!r} uses Django's {connection.vendor!r} backend; the outbox supports "
            "sqlite, postgresql and mysql"
        )
    s = connection.settings_dict
    if scheme == "sqlite":
        name = str(s["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise OutboxError(f"database {using!r} is in memory: a drainer cannot open it")
        return f"sqlite:///{name}?table={table}"
    user = quote(str(s.get("USER") or ""), safe="")
    password = quote(str(s.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else f"{user}@" if user else ""
    host = s.get("HOST") or "127.0.0.1"
    port = f":{s['PORT']}" if s.get("PORT") else ""
    return f"{scheme}://{auth}{host}{port}/{quote(str(s['NAME']), safe='')}?table={table}"
