#!/usr/bin/env python
"""The example shop's manage.py: ``python manage.py migrate``, ``python manage.py pay 42``,
``python manage.py outboxhub_drain --store sqlite:///hub.db`` (see README.md)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
