"""Stores: the ``Store`` protocol (``base``) and ``open_store(url)``, which picks the backend by URL scheme.

* ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` — embedded, the default (``.sqlite``);
* ``postgresql://…`` — ``outboxhub.store.postgres.store``;
* ``mongodb://…`` / ``mongodb+srv://…`` — ``outboxhub.store.mongo.store``;
* ``nats://host:port[,host:port…]?stream=…`` — ``outboxhub.store.nats.store`` (JetStream, docs/jetstream.md).

Each backend module exposes ``async def open_store(url: str, **options: Any) -> Store`` and is imported only
when its scheme is used, so a missing driver only matters to whoever asks for that backend: without psycopg
``open_store("postgresql://…")`` raises ``StoreURLError: the PostgreSQL store needs the 'postgres' extra: pip
install 'outboxhub[postgres]'`` (``mongo`` for pymongo), see ``outboxhub._extras``.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from outboxhub._extras import missing_extra, needs_extra
from outboxhub.errors import StoreURLError
from outboxhub.store.base import CommitListener, Store, dlq_topic, mask_url

__all__ = ["CommitListener", "Store", "dlq_topic", "mask_url", "open_store"]

_BACKENDS: dict[str, tuple[str, str]] = {
    "sqlite": ("outboxhub.store.sqlite.store", "SQLite"),
    "postgresql": ("outboxhub.store.postgres.store", "PostgreSQL"),
    "postgres": ("outboxhub.store.postgres.store", "PostgreSQL"),
    "mongodb": ("outboxhub.store.mongo.store", "MongoDB"),
    "mongodb+srv": ("outboxhub.store.mongo.store", "MongoDB"),
    "nats": ("outboxhub.store.nats.store", "NATS JetStream"),
}


async def open_store(url: str, **options: Any) -> Store:
    """Open the store at ``url`` (see the module docstring); ``options`` are backend-specific settings.

    Raises ``StoreURLError`` for an unknown scheme, a malformed URL or an unavailable backend, and
    ``StoreUnavailable`` when the database cannot be reached or opened. Messages mask any password.
    """
    if not isinstance(url, str) or not url.strip():
        raise StoreURLError(
            "store URL is empty; expected sqlite:///path.db, postgresql://…, mongodb://… or nats://…"
        )
    shown = mask_url(url)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise StoreURLError(f"malformed store URL {shown}: {exc}") from exc
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise StoreURLError(
            f"unknown store URL scheme {scheme!r} in {shown}: expected sqlite:///path.db, postgresql://…,"
            " mongodb://… or nats://…"
        )
    module_name, label = backend
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is not None:
            raise StoreURLError(f"{needs_extra(f'the {label} store', extra)} (for {shown})") from exc
        raise StoreURLError(f"the {label} store backend is not available for {shown} ({exc})") from exc
    store: Store = await module.open_store(url, **options)
    return store
