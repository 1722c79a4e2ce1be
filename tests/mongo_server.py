"""The MongoDB server of the tests: :mod:`outboxhub.testing.mongo` (``OUTBOXHUB_TEST_MONGO_URL`` or the
``nx-27017`` stand-in), re-exported so that test modules keep importing ``from mongo_server import …``.

No code of its own: the launcher is shared with the bench; skip-or-fail is ``tests/conftest.py``'s.
"""

from __future__ import annotations

from outboxhub.testing.mongo import (
    ENV,
    MongoServer,
    database_url,
    mongo_database,
    require_mongo,
    server,
    supports_transactions,
)

__all__ = [
    "ENV",
    "MongoServer",
    "database_url",
    "mongo_database",
    "require_mongo",
    "server",
    "supports_transactions",
]
