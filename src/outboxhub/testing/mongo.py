"""For tests and benchmarks (not the hub): the MongoDB test server, and a throwaway database on it.

* ``OUTBOXHUB_TEST_MONGO_URL`` set (``mongodb://host:27017/?replicaSet=rs0``): that server is used;
* otherwise the wire-compatible stand-in ``nx-27017`` (PyPI; the ``dev`` extra installs it) is started in
  memory on a free port of 127.0.0.1, with its own temporary directory for pid and log files, once per
  process (:func:`server`) or for a ``with`` block (:func:`stand_in`); it is told to die with the process
  that started it, so a killed test run or bench leaves nothing running.

:func:`mongo_database` yields a URL naming a fresh database (``t_<random>``) and drops it afterwards. When
no server can be had, :func:`require_mongo` calls :func:`outboxhub.testing.unavailable` (under pytest,
``tests/conftest.py`` makes that a skip, a failure under ``CI=true``). The stand-in speaks MongoDB's wire
protocol over SQLite: benchmark numbers measured on it are not a real MongoDB's. Needs the ``mongo``
extra (pymongo), imported when a database is dropped or inspected.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from outboxhub.testing import unavailable
from outboxhub.urls import join_url

__all__ = [
    "ENV",
    "MongoServer",
    "database_url",
    "mongo_database",
    "require_mongo",
    "server",
    "stand_in",
    "start_stand_in",
    "supports_transactions",
]

ENV = "OUTBOXHUB_TEST_MONGO_URL"
START_TIMEOUT_S = 30.0


class MongoServer:
    """A MongoDB server: ``base_url`` (no database), and the stand-in's process if this one started it."""

    def __init__(self, base_url: str, process: subprocess.Popen[bytes] | None, workdir: Path | None) -> None:
        self.base_url = base_url
        self.process = process
        self.workdir = workdir

    @property
    def stand_in(self) -> bool:
        """True for the nx-27017 stand-in, False for a real deployment (``OUTBOXHUB_TEST_MONGO_URL``)."""
        return self.process is not None

    def stop(self) -> None:
        """Stop the stand-in and remove its directory (nothing for an external server)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _executable() -> str:
    beside = Path(sys.executable).parent / "nx-27017"
    found = str(beside) if beside.exists() else shutil.which("nx-27017")
    if found is None:
        raise RuntimeError("the nx-27017 MongoDB stand-in is not installed (pip install nx-27017)")
    return found


def start_stand_in() -> MongoServer:
    """Start nx-27017 in memory on a free port and wait until it listens (``RuntimeError`` if it cannot);
    the caller stops it (:meth:`MongoServer.stop`)."""
    exe = _executable()
    workdir = Path(tempfile.mkdtemp(prefix="outboxhub-nx27017-"))
    port = _free_port()
    args = [exe, "--db", "memory", "--host", "127.0.0.1", "-p", str(port)]
    args += ["--pid-file", str(workdir / "nx-27017.pid"), "--log-file", str(workdir / "nx-27017.log")]
    with (workdir / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
    started = MongoServer(f"mongodb://127.0.0.1:{port}/", process, workdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            output = (workdir / "stdout.log").read_text(errors="replace")[-2000:]
            started.stop()
            raise RuntimeError(f"nx-27017 exited with code {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return started
        except OSError:
            if time.monotonic() > deadline:
                started.stop()
                raise RuntimeError(
                    f"nx-27017 did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f}s"
                ) from None
            time.sleep(0.05)


@contextlib.contextmanager
def stand_in() -> Iterator[str]:
    """Run the stand-in for the ``with`` block; yield its base URL (``mongodb://127.0.0.1:PORT/``)."""
    started = start_stand_in()
    try:
        yield started.base_url
    finally:
        started.stop()


_server: MongoServer | None = None
_problem: str | None = None


def server() -> MongoServer:
    """This process's server, started on first use and stopped at exit (``RuntimeError`` naming the
    problem if impossible; the problem is remembered, so the stand-in is tried once)."""
    global _server, _problem
    if _server is not None:
        return _server
    if _problem is not None:
        raise RuntimeError(_problem)
    external = os.environ.get(ENV)
    if external:
        _server = MongoServer(external, None, None)
        return _server
    try:
        _server = start_stand_in()
    except (OSError, RuntimeError) as exc:
        _problem = f"cannot start the nx-27017 MongoDB stand-in: {exc}"
        raise RuntimeError(_problem) from exc
    atexit.register(_server.stop)
    return _server


def require_mongo() -> MongoServer:
    """The server; :func:`~outboxhub.testing.unavailable` when there is none."""
    try:
        return server()
    except RuntimeError as exc:
        unavailable(f"{exc} (or set {ENV}=mongodb://…)")


def database_url(base_url: str, database: str) -> str:
    """``base_url`` with its path set to ``/database`` (query kept: ``replicaSet`` and the like)."""
    parts = urlsplit(base_url)
    return join_url(parts._replace(path=f"/{database}"))


@asynccontextmanager
async def mongo_database(_tmp_path: Path | None = None, *, prefix: str = "t") -> AsyncIterator[str]:
    """A URL naming a fresh database on the test server; the database is dropped afterwards."""
    from pymongo import AsyncMongoClient

    base = require_mongo().base_url
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    try:
        yield database_url(base, name)
    finally:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(base, serverSelectionTimeoutMS=5000)
        try:
            await client.drop_database(name)
        finally:
            await client.close()


def supports_transactions(url: str) -> bool:
    """Whether the server runs multi-document transactions (a replica set or mongos)."""
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        hello = client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
