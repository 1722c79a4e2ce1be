"""The embedded SQLite store (the default backend): ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``.

Design (options and durability for users: ``docs/stores.md``):

* WAL journal; one writer thread owns the only write connection and commits everything queued in one
  transaction (group commit, ``writer.py``). A publish is confirmed only after its COMMIT. ``seq`` is the
  rowid, assigned as max + 1 under the write lock, so it is strictly increasing in commit order.
* Reads run on a small pool of reader threads, each with its own connection, each query in one snapshot.
* Pattern scans resolve the pattern to topic ids once (``topics.py``) and walk the ``(topic_id, seq)``
  index; nothing is evaluated in Python per row, and no in-memory structure grows with the log.
* Consumer-group state lives only in the database, so a restarted hub carries on where it stopped; group
  mutations run in the writer's transaction, so they are atomic (also against other processes sharing the
  file, which serialize on SQLite's write lock).

Durability. ``synchronous=normal`` (the default) fsyncs the WAL at checkpoints, not at every commit: a
confirmed publish survives the process crashing or being killed (SIGKILL included, see
tests/test_crash_durability.py), but the last commits before a power loss or OS crash may be lost: those
since the last checkpoint, which a background thread runs within about 0.1 s of a commit
(``checkpoint.py``).
``?synchronous=full`` fsyncs every commit (power-loss durable, at several times the cost per commit; group
commit amortizes it over a batch).

URL query parameters (or keyword options of ``open_store``, which win):

* ``synchronous``: ``normal`` (default), ``full``, ``extra`` or ``off``;
* ``busy_timeout_ms``: how long to wait for another process's write lock (default 5000);
* ``readers``: reader threads/connections (default 4);
* ``max_batch``: most jobs per group commit (default 4096);
* ``inline_claims``: most parked claims with which a lone publish still commits on the event loop thread,
  running them in that commit (default 4; 0: a publish to a waiting member goes to the writer thread);
* ``checkpoint_interval_ms``: most time between a commit and the checkpoint that covers it (default 100).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from outboxhub.errors import StoreUnavailable, StoreURLError
from outboxhub.ids import now_ms
from outboxhub.model import (
    Cursor,
    Delivery,
    Event,
    GroupInfo,
    Lag,
    PublishResult,
    StartPosition,
    TopicInfo,
)
from outboxhub.store.backend import StoreBackend
from outboxhub.store.base import EventRef, mask_url
from outboxhub.store.codec import Prepared
from outboxhub.store.lifecycle import ClaimRequest, ExtendRequest, NackRequest
from outboxhub.store.parkedclaim import ClaimParkingStore
from outboxhub.store.sqlite import groups as groups_ops
from outboxhub.store.sqlite import reads
from outboxhub.store.sqlite.errors import translate
from outboxhub.store.sqlite.parking import ParkedClaim
from outboxhub.store.sqlite.schema import configure
from outboxhub.store.sqlite.topics import TopicCatalog
from outboxhub.store.sqlite.tx import WriteTx
from outboxhub.store.sqlite.writer import JobFn, Writer, WriterStats

__all__ = ["SQLiteOptions", "SQLiteStore", "open_store", "parse_sqlite_url"]


_T = TypeVar("_T")

_SYNCHRONOUS = ("off", "normal", "full", "extra")

INLINE_ACK_MAX = 16
"""Most events of one ACK batch committed on the event loop thread; larger batches (a consumer acking a
burst) go to the writer thread, so the loop is never held by a large delete."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SQLiteOptions:
    """Tuning of a SQLite store (see the module docstring)."""

    synchronous: str = "normal"
    busy_timeout_ms: int = 5000
    readers: int = 4
    max_batch: int = 4096
    inline_claims: int = 4
    checkpoint_interval_ms: int = 100


_INT_OPTIONS: dict[str, tuple[int, int]] = {
    "busy_timeout_ms": (0, 3_600_000),
    "readers": (1, 64),
    "max_batch": (1, 1_000_000),
    "inline_claims": (0, 64),
    "checkpoint_interval_ms": (1, 3_600_000),
}


def parse_sqlite_url(url: str, options: Mapping[str, object] | None = None) -> tuple[str, SQLiteOptions]:
    """The database file path and options of a ``sqlite:///`` URL; ``StoreURLError`` names what is wrong."""
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise StoreURLError(f"malformed store URL {shown}: {exc}") from exc
    if parts.scheme.lower() != "sqlite":
        raise StoreURLError(f"store URL {shown} is not a sqlite:// URL")
    if parts.netloc:
        raise StoreURLError(
            f"store URL {shown}: a sqlite URL has no host; write sqlite:///relative/path.db or"
            " sqlite:////absolute/path.db"
        )
    raw = unquote(parts.path)
    if not raw.startswith("/") or len(raw) < 2 or raw.endswith("/"):
        raise StoreURLError(
            f"store URL {shown} names no database file; write sqlite:///relative/path.db or"
            " sqlite:////absolute/path.db"
        )
    path = raw[1:]
    if path == ":memory:" or path.startswith("file:"):
        raise StoreURLError(
            f"store URL {shown}: in-memory and file: URI databases are not supported (readers need their own"
            " connections to a WAL file); give a file path"
        )
    settings: dict[str, object] = {}
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise StoreURLError(f"store URL {shown}: malformed query string: {exc}") from exc
    settings.update(query)
    settings.update(options or {})
    return path, _options(shown, settings)


def _options(shown: str, settings: Mapping[str, object]) -> SQLiteOptions:
    values: dict[str, Any] = {}
    for name, raw in settings.items():
        if name == "synchronous":
            level = str(raw).strip().lower()
            if level not in _SYNCHRONOUS:
                raise StoreURLError(
                    f"store URL {shown}: synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {raw!r}"
                )
            values[name] = level
        elif name in _INT_OPTIONS:
            low, high = _INT_OPTIONS[name]
            try:
                number = int(str(raw)) if not isinstance(raw, bool) else None
            except ValueError:
                number = None
            if number is None or not low <= number <= high:
                raise StoreURLError(
                    f"store URL {shown}: {name} must be an integer from {low} to {high}, not {raw!r}"
                )
            values[name] = number
        else:
            known = ", ".join(["synchronous", *_INT_OPTIONS])
            raise StoreURLError(f"store URL {shown}: unknown option {name!r} (known: {known})")
    return SQLiteOptions(**values)


async def open_store(url: str, **options: Any) -> SQLiteStore:
    """Open (creating or migrating as needed) the SQLite store at ``url``."""
    return await SQLiteStore.open(url, **options)


class SQLiteStore(ClaimParkingStore, StoreBackend):
    """The ``Store`` protocol over one SQLite file. Open with ``await SQLiteStore.open(url)``; use it from
    the event loop that opened it."""

    label = "sqlite store"

    def __init__(self, path: str, url: str, options: SQLiteOptions) -> None:
        super().__init__(mask_url(url), newer_only=False)
        self._path = path
        self._options = options
        self._catalog = TopicCatalog()
        self._writer = Writer(
            path,
            url=self._url,
            catalog=self._catalog,
            synchronous=options.synchronous,
            busy_timeout_ms=options.busy_timeout_ms,
            max_batch=options.max_batch,
            inline_claims=options.inline_claims,
            checkpoint_interval_s=options.checkpoint_interval_ms / 1000,
            on_commit=self._committed,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=options.readers, thread_name_prefix="outboxhub-sqlite-reader"
        )
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    @classmethod
    async def open(cls, url: str, **options: Any) -> SQLiteStore:
        path, parsed = parse_sqlite_url(url, options)
        store = cls(path, url, parsed)
        try:
            await store._writer.start()
        except BaseException:
            store._closed = True
            store._pool.shutdown(wait=False)
            raise
        return store

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    @property
    def writer_stats(self) -> WriterStats:
        """Commit/job/event counters of the writer (group commit shows as many jobs per commit)."""
        return self._writer.stats

    @property
    def topic_catalog(self) -> TopicCatalog:
        """The committed topics and the bounded pattern cache (its ``matches`` counter counts work)."""
        return self._catalog

    @property
    def parked_claims(self) -> int:
        """Group members' claims parked with the writer right now (see ``parking.py``)."""
        return self._writer.parked

    async def _shutdown(self) -> None:
        try:
            await self._writer.stop()
        finally:
            await asyncio.to_thread(self._pool.shutdown, True)
            with self._conns_lock:
                conns, self._reader_conns = self._reader_conns, []
            for conn in conns:
                conn.close()

    async def ping(self) -> None:
        self._check_open()
        if not self._writer.alive:
            raise StoreUnavailable(f"sqlite store {self._url}: the writer thread is not running")
        await self._read(_ping)

    # -- plumbing -----------------------------------------------------------------------------------------

    async def _write(self, fn: JobFn, *args: Any, inline: bool = False) -> Any:
        self._check_open()
        return await self._writer.submit(fn, *args, inline=inline)

    async def _read(self, fn: Callable[..., _T], *args: Any) -> _T:
        self._check_open()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._in_reader, fn, args)

    def _in_reader(self, fn: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        try:
            conn = self._reader_conn()
            conn.execute("BEGIN")
            try:
                self._catalog.sync(conn)
                return fn(conn, *args)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise translate(exc, self._url) from exc

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            configure(
                conn,
                synchronous=self._options.synchronous,
                busy_timeout_ms=self._options.busy_timeout_ms,
                writer=False,
            )
            with self._conns_lock:
                self._reader_conns.append(conn)
            self._local.conn = conn
        return conn

    # -- events -------------------------------------------------------------------------------------------

    async def _append(self, rows: list[Prepared]) -> list[PublishResult]:
        return await self._writer.publish(rows)

    def _append_soon(self, rows: list[Prepared]) -> asyncio.Future[list[PublishResult]]:
        """The writer's own future (resolved after the COMMIT): no coroutine nor task per publish."""
        return self._writer.publish(rows)

    async def get_event(self, event_id: str, topic: str | None = None) -> Event | None:
        return await self._read(reads.get_event, self._catalog, event_id, topic)

    async def _scan(
        self, pattern: str, after_seq: int, since_ts: int | None, until_ts: int | None, limit: int
    ) -> list[Event]:
        return await self._read(reads.scan, self._catalog, pattern, after_seq, since_ts, until_ts, limit)

    async def _latest_by_key(self, topic: str, keys: list[str]) -> dict[str, Event]:
        return await self._read(reads.latest_by_key, self._catalog, topic, keys)

    async def tail(self, pattern: str) -> Event | None:
        return await self._read(reads.tail, self._catalog, pattern)

    async def count(self, pattern: str, *, after_seq: int = 0) -> int:
        return await self._read(reads.count, self._catalog, pattern, after_seq)

    async def last_seq(self) -> int:
        return await self._read(reads.last_seq)

    async def topics(self) -> list[TopicInfo]:
        return await self._read(reads.topics)

    # -- consumer groups ----------------------------------------------------------------------------------

    async def ensure_group(self, pattern: str, group: str, start: StartPosition) -> GroupInfo:
        info: GroupInfo = await self._write(groups_ops.ensure_group, pattern, group, start, now_ms())
        return info

    async def groups(self) -> list[GroupInfo]:
        return await self._read(reads.groups)

    async def _claim(self, request: ClaimRequest) -> list[Delivery]:
        """A small claim without key ordering (a member catching up on an event or two committed just after
        its parked claim ran) commits on the loop thread when the writer thread is idle, like a small ACK:
        at most ``INLINE_ACK_MAX`` events decoded and inserted, found through the index on the frontier."""
        inline = request.limit <= INLINE_ACK_MAX and not request.ordered
        deliveries: list[Delivery] = await self._write(groups_ops.claim, request, inline=inline)
        return deliveries

    def _park(self, request: ClaimRequest, matches: Callable[[str], object]) -> ParkedClaim:
        """Park with the writer: the claim runs in the first write batch that appends a matching event, in
        that batch's transaction (see ``parking.py``)."""
        self._check_open()
        return self._writer.park(_parked_claim, (request,), matches)

    async def _ack(self, pattern: str, group: str, refs: list[EventRef], member: str | None) -> int:
        self._check_open()
        return await self._ack_soon(pattern, group, refs, member)

    def _ack_soon(
        self, pattern: str, group: str, refs: list[EventRef], member: str | None
    ) -> asyncio.Future[int]:
        """The writer's own future (resolved after the COMMIT): no coroutine nor task per ACK. A small ACK
        commits on the loop thread when the writer thread is idle (``Writer.submit``): it deletes a few
        pending rows, and under synchronous=normal its WAL commit does not fsync. While a member waits with
        a parked claim it rides on the next loop-thread batch (the next publish's) instead (``riders.py``)."""
        inline = len(refs) <= INLINE_ACK_MAX
        done: asyncio.Future[int] = self._writer.submit(
            groups_ops.ack, pattern, group, refs, member, inline=inline, ride=inline
        )
        return done

    async def _nack(self, request: NackRequest) -> bool:
        found: bool = await self._write(groups_ops.nack, request)
        return found

    async def _extend(self, request: ExtendRequest) -> bool:
        found: bool = await self._write(groups_ops.extend, request)
        return found

    async def release(self, pattern: str, group: str, member: str) -> int:
        count: int = await self._write(groups_ops.release, pattern, group, member)
        return count

    async def reset_group(self, pattern: str, group: str, to: StartPosition) -> GroupInfo | None:
        info: GroupInfo | None = await self._write(groups_ops.reset_group, pattern, group, to)
        return info

    async def next_deadline(self, pattern: str, group: str) -> int | None:
        return await self._read(reads.next_deadline, pattern, group)

    async def cursor(self, pattern: str, group: str) -> Cursor | None:
        return await self._read(reads.cursor, self._catalog, pattern, group)

    async def lag(self, pattern: str, group: str) -> Lag | None:
        return await self._read(reads.lag, self._catalog, pattern, group)


def _parked_claim(tx: WriteTx, request: ClaimRequest) -> list[Delivery]:
    return groups_ops.claim(tx, request.at(now_ms()))


def _ping(conn: sqlite3.Connection) -> None:
    conn.execute("SELECT 1").fetchone()
