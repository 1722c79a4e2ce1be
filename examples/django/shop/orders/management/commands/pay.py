"""``python manage.py pay ORDER_ID [TOTAL_CENTS]``: pay an order (writes the order and its event)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from shop.orders.models import pay


class Command(BaseCommand):  # type: ignore[misc]
    help = "Pay an order: the order row and its orders.paid outbox record commit together."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("order_id", type=int)
        parser.add_argument("total_cents", type=int, nargs="?", default=1000)

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(pay(options["order_id"], options["total_cents"]))
