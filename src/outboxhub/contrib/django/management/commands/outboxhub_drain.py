"""``python manage.py outboxhub_drain``: ``outboxhub drain`` on this project's outbox table.

The outbox URL comes from ``DATABASES[--database]`` (``outbox_url``); the other options are those of
``outboxhub drain``: ``--url``/``--token`` (a remote hub, publishing with that token's rights; the token
may also come from ``OUTBOXHUB_TOKEN``) or ``--store`` (a hub store URL written directly), ``--batch-size``,
``--max-attempts``, ``--ordered-by-key``. SIGTERM or Ctrl-C stop it gracefully.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from outboxhub.cli.drain import drain_command
from outboxhub.contrib.django.outbox import outbox_url


class Command(BaseCommand):
    help = "Drain this project's outbox table (outboxhub.contrib.django) into an outboxhub hub."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default="default", help="The DATABASES alias of the outbox.")
        parser.add_argument("--url", default="ws://127.0.0.1:8090/", help="The hub's WebSocket URL.")
        parser.add_argument("--token", default=None, help="Hub token (default: $OUTBOXHUB_TOKEN).")
        parser.add_argument("--store", default=None, help="Publish straight into this hub store URL.")
        parser.add_argument("--batch-size", type=int, default=500, help="Records claimed per batch.")
        parser.add_argument("--max-attempts", type=int, default=10, help="Attempts before a record is dead.")
        parser.add_argument(
            "--ordered-by-key",
            action="store_true",
            help="Never publish a key's record while an earlier one is unsent.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        drain_command(
            outbox=[outbox_url(options["database"])],
            url=options["url"],
            token=options["token"] or os.environ.get("OUTBOXHUB_TOKEN"),
            store=options["store"],
            batch_size=options["batch_size"],
            max_attempts=options["max_attempts"],
            ordered_by_key=options["ordered_by_key"],
        )
