"""Settings of the example shop. The database is SQLite by default; ``SHOP_DATABASE`` selects another:

* ``sqlite:///path.sqlite3`` (default ``sqlite:///shop.sqlite3`` next to manage.py);
* ``mysql://user:password@host:3306/name`` (Django's MySQL backend: mysqlclient, or PyMySQL standing in);
* ``postgresql://user:password@host:5432/name``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = os.environ.get("SHOP_SECRET_KEY", "example-only-not-secret")
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["outboxhub.contrib.django", "shop.orders"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": parts.path[1:] or str(BASE_DIR / "shop.sqlite3"),
        }
    engine = {"mysql": "django.db.backends.mysql", "postgresql": "django.db.backends.postgresql"}[
        parts.scheme
    ]
    if parts.scheme == "mysql":
        try:
            import MySQLdb  # noqa: F401  (mysqlclient)
        except ImportError:
            import pymysql

            pymysql.install_as_MySQLdb()
            pymysql.version_info = (2, 2, 1, "final", 0)
    return {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or ""),
        "OPTIONS": {"charset": "utf8mb4"} if parts.scheme == "mysql" else {},
    }


DATABASES = {"default": _database(os.environ.get("SHOP_DATABASE", f"sqlite:///{BASE_DIR / 'shop.sqlite3'}"))}
