"""The bus: routes committed events to subscriptions.

* ``core`` — ``Bus``, the front the gateway and the outbox sink talk to;
* ``member`` — one consumer-group member: claims, redelivery timers, ack batching (``acks``);
* ``live`` — group-less live fan-out from one shared reader;
* ``wakeup`` — commit-listener wake-ups with a safety poll;
* ``subscription`` — what a subscriber hands the bus (pattern, deliver callback, flow control).
"""

from outboxhub.bus.core import AmbiguousSettle, Bus

__all__ = ["AmbiguousSettle", "Bus"]
