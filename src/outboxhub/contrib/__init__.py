"""Integrations with application frameworks: ``outboxhub.contrib.django`` (the ``django`` extra)."""
