"""An order and the one business operation of the example: paying it."""

from __future__ import annotations

from django.db import models, transaction

from outboxhub.contrib.django import outbox


class Order(models.Model):  # type: ignore[misc]
    state = models.CharField(max_length=16, default="new")
    total_cents = models.IntegerField(default=0)


def pay(order_id: int, total_cents: int) -> str:
    """Mark the order paid and record its event in the same transaction; return the event id.

    If anything in the block raises, neither the order nor the event is written."""
    with transaction.atomic():
        order, _ = Order.objects.select_for_update().get_or_create(pk=order_id)
        order.state = "paid"
        order.total_cents = total_cents
        order.save()
        return outbox.add(
            "orders.paid", {"order": order.pk, "total_cents": total_cents}, key=f"order-{order.pk}"
        )
