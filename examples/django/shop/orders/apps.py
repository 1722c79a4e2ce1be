from __future__ import annotations

from django.apps import AppConfig


class OrdersConfig(AppConfig):  # type: ignore[misc]
    name = "shop.orders"
    default_auto_field = "django.db.models.BigAutoField"
