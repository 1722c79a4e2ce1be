"""The outbox table as a Django model: the columns of the DDL in docs/outbox.md, so outboxhub's drainers
(``SqliteOutbox``, ``PostgresOutbox``, ``MysqlOutbox``) read and update it like a table they created.

``payload`` and ``headers`` hold JSON text (written by ``outbox.add``, which encodes them); the record id
is the column ``id`` (the model field ``record_id``: Django reserves the field name ``id`` for primary
keys), ``seq`` is the primary key. Records are written with ``outboxhub.contrib.django.outbox.add``, and
changed only by drainers and operators (``outboxhub outbox …``, the ops API), not by the ORM.
"""

from __future__ import annotations

from django.db import models

from outboxhub.outbox.add import MAX_ID_LENGTH
from outboxhub.outbox.mysql_sql import MAX_KEY_LENGTH

__all__ = ["OutboxEntry"]


class OutboxEntry(models.Model):
    """One outbox record (see ``outboxhub.outbox.model.OutboxRecord`` for the meaning of each column)."""

    seq = models.BigAutoField(primary_key=True)
    record_id = models.CharField(max_length=MAX_ID_LENGTH, unique=True, db_column="id")
    topic = models.TextField()
    payload = models.TextField(default="null")
    key = models.CharField(max_length=MAX_KEY_LENGTH, null=True, blank=True)
    headers = models.TextField(null=True, blank=True)
    status = models.CharField(max_length=8, default="pending", db_default="pending")
    ts = models.BigIntegerField()
    available_at = models.BigIntegerField()
    attempts = models.IntegerField(default=0, db_default=0)
    claimed_by = models.TextField(null=True, blank=True)
    claim_token = models.CharField(max_length=64, null=True, blank=True)
    lease_until = models.BigIntegerField(null=True, blank=True)
    last_err = models.TextField(null=True, blank=True)
    sent_at = models.BigIntegerField(null=True, blank=True)

    class Meta:
        db_table = "outboxhub_outbox"
        indexes = [  # noqa: RUF012 - Django's Meta convention
            models.Index(fields=["status", "seq"], name="outboxhub_st_seq"),
            models.Index(fields=["status", "lease_until"], name="outboxhub_st_lease"),
            models.Index(fields=["status", "sent_at"], name="outboxhub_st_sent"),
            models.Index(fields=["key", "status", "seq"], name="outboxhub_key_st"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.record_id} ({self.status})"
