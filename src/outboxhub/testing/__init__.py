"""Scaffolding for outboxhub's tests and benchmarks, in one place; the hub itself never imports it.

* ``outboxhub.testing.postgres`` — the PostgreSQL test server (``OUTBOXHUB_TEST_PG_URL``) and a throwaway
  schema per test or bench run (needs the ``postgres`` extra);
* ``outboxhub.testing.mysql`` — the MySQL/MariaDB test server (``OUTBOXHUB_TEST_MYSQL_URL``) and a
  throwaway database per test or bench run (needs the ``mysql`` extra);
* ``outboxhub.testing.mongo`` — the MongoDB test server: ``OUTBOXHUB_TEST_MONGO_URL``, or the ``nx-27017``
  stand-in started in memory on a free port, and a throwaway database per test or bench run (needs the
  ``mongo`` extra, and nx-27017 from the ``dev`` extra for the stand-in).

No pytest here. When a server cannot be had, these modules call :func:`unavailable`, which raises
:class:`ServiceUnavailable` unless a handler is installed: ``tests/conftest.py`` installs one that skips the
test, or fails it under ``CI=true`` (CI must never pass by skipping the database tests).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn

__all__ = ["ServiceUnavailable", "set_unavailable_handler", "unavailable"]


class ServiceUnavailable(RuntimeError):
    """A test server (PostgreSQL, MySQL, MongoDB) cannot be reached or started; the message says which and
    why."""


def _raise(message: str) -> NoReturn:
    raise ServiceUnavailable(message)


_handler: Callable[[str], NoReturn] = _raise


def set_unavailable_handler(handler: Callable[[str], NoReturn]) -> None:
    """Make :func:`unavailable` call ``handler`` (e.g. ``pytest.skip``) instead of raising."""
    global _handler
    _handler = handler


def unavailable(message: str) -> NoReturn:
    """Report that a test server cannot be had: :class:`ServiceUnavailable`, or the installed handler."""
    _handler(message)
