"""The MongoDB server of the tests (no tests here): the ``nx-27017`` stand-in, or a real deployment.

* ``OUTBOXHUB_TEST_MONGO_URL`` set (``mongodb://host:27017/?replicaSet=rs0``): that server is used.
* Otherwise the wire-compatible stand-in ``nx-27017`` (PyPI, installed in the virtualenv) is started once
  per test session, in memory, on a free port, with its own pid and log files, and killed at the end (it
  is also told to die with the test process, so a killed pytest leaves nothing running).

``mongo_database()`` yields a URL naming a fresh database (``t_<random>``) and drops it afterwards, so
every test has its own. When no server can be had, tests are skipped with a message naming the problem,
except under ``CI=true``, where they fail with it.
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
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
from pymongo import AsyncMongoClient

__all__ = [
    "ENV",
    "MongoServer",
    "database_url",
    "mongo_database",
    "mongo_server",
    "require_mongo",
    "server",
    "supports_transactions",
]

ENV = "OUTBOXHUB_TEST_MONGO_URL"
START_TIMEOUT_S = 30.0


class MongoServer:
    """A MongoDB server for the tests: ``base_url`` (no database), and the stand-in's process if started."""

    def __init__(self, base_url: str, process: subprocess.Popen[bytes] | None, workdir: Path | None) -> None:
        self.base_url = base_url
        self.process = process
        self.workdir = workdir

    @property
    def stand_in(self) -> bool:
        """True for the nx-27017 stand-in, False for a real deployment (``OUTBOXHUB_TEST_MONGO_URL``)."""
        return self.process is not None

    def stop(self) -> None:
        """Kill the stand-in (nothing for an external server)."""
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


def _executable() -> str | None:
    beside = Path(sys.executable).parent / "nx-27017"
    return str(beside) if beside.exists() else shutil.which("nx-27017")


def _start_stand_in() -> MongoServer:
    exe = _executable()
    if exe is None:
        raise RuntimeError("the nx-27017 MongoDB stand-in is not installed (pip install nx-27017)")
    workdir = Path(tempfile.mkdtemp(prefix="outboxhub-nx27017-"))
    port = _free_port()
    log_file = workdir / "nx-27017.log"
    with (workdir / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            [
                exe,
                "--db",
                "memory",
                "--host",
                "127.0.0.1",
                "-p",
                str(port),
                "--pid-file",
                str(workdir / "nx-27017.pid"),
                "--log-file",
                str(log_file),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    started = MongoServer(f"mongodb://127.0.0.1:{port}/", process, workdir)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (workdir / "stdout.log").read_text(errors="replace")[-2000:]
            started.stop()
            raise RuntimeError(f"nx-27017 exited with code {process.returncode}: {output}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.05)
    else:
        started.stop()
        raise RuntimeError(f"nx-27017 did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f}s")
    return started


_server: MongoServer | None = None
_problem: str | None = None


def server() -> MongoServer:
    """The session's server, started on first use (``RuntimeError`` naming the problem if impossible)."""
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
        _server = _start_stand_in()
    except (OSError, RuntimeError) as exc:
        _problem = f"cannot start the nx-27017 MongoDB stand-in: {exc}"
        raise RuntimeError(_problem) from exc
    atexit.register(_server.stop)
    return _server


def require_mongo() -> MongoServer:
    """The server; skip the test when there is none (fail under ``CI=true``)."""
    try:
        return server()
    except RuntimeError as exc:
        message = f"{exc} (or set {ENV}=mongodb://…)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)


def database_url(base_url: str, database: str) -> str:
    """``base_url`` with its path set to ``/database`` (query kept: ``replicaSet`` and the like)."""
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@asynccontextmanager
async def mongo_database(_tmp_path: Path | None = None, *, prefix: str = "t") -> AsyncIterator[str]:
    """A URL naming a fresh database on the test server; the database is dropped afterwards."""
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
    """Whether the test server runs multi-document transactions (a replica set or mongos)."""
    client: pymongo.MongoClient[dict[str, Any]]
    with pymongo.MongoClient(url, serverSelectionTimeoutMS=5000) as client:
        hello = client.admin.command("hello")
    return bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    """The session's server (see the module docstring)."""
    yield require_mongo()
