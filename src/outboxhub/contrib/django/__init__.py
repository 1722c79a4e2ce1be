"""The transactional outbox for Django (the ``django`` extra): see docs/django.md.

Add ``"outboxhub.contrib.django"`` to ``INSTALLED_APPS`` and run ``python manage.py migrate``: the app's
model ``OutboxEntry`` is the table ``outboxhub_outbox``, with the same columns as the DDL in docs/outbox.md,
so outboxhub's drainers read it by URL. Then, in the application's own transaction::

    from django.db import transaction
    from outboxhub.contrib.django import outbox

    with transaction.atomic():
        order.save()
        outbox.add("orders.paid", {"order": order.pk}, key=str(order.pk))

Drain it with ``python manage.py outboxhub_drain`` (or ``outboxhub drain --outbox <outbox_url()>``).
Works on Django's SQLite, PostgreSQL and MySQL/MariaDB backends. The model is imported lazily (Django's
app registry must be ready), so this package can be imported from settings and app modules alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from outboxhub.contrib.django import outbox
from outboxhub.contrib.django.outbox import TABLE, add, outbox_url

if TYPE_CHECKING:
    from outboxhub.contrib.django.models import OutboxEntry

__all__ = ["TABLE", "OutboxEntry", "add", "outbox", "outbox_url"]


def __getattr__(name: str) -> Any:
    """``OutboxEntry``, imported on first use (after Django's apps are loaded)."""
    if name == "OutboxEntry":
        from outboxhub.contrib.django.models import OutboxEntry

        return OutboxEntry
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
