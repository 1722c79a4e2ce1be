"""The outbox in an application's MongoDB database (pymongo, sync or async); see ``docs/mongodb.md``.

Records in the original TypeScript outbox's shape are drained as they are (:mod:`.records` defines that
shape and the one outboxhub writes).

* ``records`` — the document of a record: ``record_doc`` and ``next_ord`` (writing), ``decode_record``;
* ``add`` — ``insert_mongo`` / ``insert_mongo_async``: ``outbox.add`` inside the caller's transaction;
* ``schema`` — the collection's indexes and ``ensure_schema_mongo`` / ``ensure_schema_mongo_async``;
* ``store`` — ``MongoOutbox``, the drainer's ``OutboxStore``, and ``open_mongo_outbox``.

``outboxhub.outbox`` imports this package only when a MongoDB target is used, so pymongo stays optional.
"""

from outboxhub.outbox.mongo.add import deployment_supports_transactions, insert_mongo, insert_mongo_async
from outboxhub.outbox.mongo.records import next_ord, record_doc
from outboxhub.outbox.mongo.schema import ensure_schema_mongo, ensure_schema_mongo_async, outbox_indexes
from outboxhub.outbox.mongo.store import DEFAULT_POLL_INTERVAL_MS, MongoOutbox, open_mongo_outbox

__all__ = [
    "DEFAULT_POLL_INTERVAL_MS",
    "MongoOutbox",
    "deployment_supports_transactions",
    "ensure_schema_mongo",
    "ensure_schema_mongo_async",
    "insert_mongo",
    "insert_mongo_async",
    "next_ord",
    "open_mongo_outbox",
    "outbox_indexes",
    "record_doc",
]
