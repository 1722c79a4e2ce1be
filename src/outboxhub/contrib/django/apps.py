"""The Django app configuration of ``outboxhub.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig


class OutboxhubConfig(AppConfig):
    """``INSTALLED_APPS += ["outboxhub.contrib.django"]``: the outbox table and ``outboxhub_drain``."""

    name = "outboxhub.contrib.django"
    label = "outboxhub"
    verbose_name = "outboxhub outbox"
    default_auto_field = "django.db.models.BigAutoField"
