"""The optional drivers and the extra that installs each (see ``[project.optional-dependencies]`` in
pyproject.toml): ``postgres`` (psycopg), ``mongo`` (pymongo), ``mysql`` (asyncmy, PyMySQL), ``django``,
``nats`` (nats-py), ``bench`` (hdrhistogram, psutil, nats-py).

``pip install outboxhub`` gives the hub on SQLite, the CLI and the SDK; the backends and the bench import
their driver only when used, and a missing driver is reported once, naming the extra to install.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DRIVERS", "missing_extra", "needs_extra"]

DRIVERS: Final[dict[str, tuple[str, ...]]] = {
    "postgres": ("psycopg", "psycopg_pool", "psycopg_binary"),
    "mongo": ("pymongo", "bson", "gridfs"),
    "mysql": ("asyncmy", "pymysql"),
    "django": ("django",),
    "nats": ("nats",),
    "bench": ("hdrh", "psutil", "nats"),
}
"""extra → the top-level modules it provides."""


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra whose driver ``exc`` failed to import, or None when the missing module is no driver."""
    top = (exc.name or "").partition(".")[0]
    for extra, modules in DRIVERS.items():
        if top in modules:
            return extra
    return None


def needs_extra(what: str, extra: str) -> str:
    """``"the PostgreSQL store needs the 'postgres' extra: pip install 'outboxhub[postgres]'"``."""
    return f"{what} needs the {extra!r} extra: pip install 'outboxhub[{extra}]'"
