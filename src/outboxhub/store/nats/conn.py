"""The NATS connection of one store: connecting with the URL's credentials and TLS, creating (or checking)
the stream, confirmed publishing with retries, and the commit notifications between hubs.

Publishing: every event is one JetStream publish with ``Nats-Msg-Id`` set, awaited for its ack, which the
stream leader sends once the write is on a quorum of the replicas. A publish that times out or finds no
responder (a node died, a leader election is under way) is retried with the same ``Nats-Msg-Id`` until
``timeout_s`` ends: the duplicate window makes the retry safe, so a confirmed event is stored once.

Commit notifications: after a publish a store sends the new last seq on the core subject
``_OUTBOXHUB.<stream>.commit`` (outside the stream); every store on the stream listens there, so members on
other hubs wake up without polling. Only a hint: a lost notification costs a poll interval. A hub that
reset a group sends ``reset <consumer name>`` there too (``announce_reset``; earlier versions ignore it), so
the other hubs check that group's consumer before their next pull instead of after a pull's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, PubAck, RetentionPolicy, StorageType, StreamConfig

from outboxhub.errors import StoreError, StoreUnavailable
from outboxhub.retry import BackoffPolicy, Retries
from outboxhub.store.nats.url import NatsOptions

__all__ = ["NatsConn", "connect", "unavailable"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_PUBLISH_RETRY = BackoffPolicy(base=0.05, cap=1.0)
TRANSIENT: tuple[type[BaseException], ...] = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


def unavailable(shown: str, exc: BaseException) -> StoreUnavailable:
    """The error a store call raises when NATS does not answer."""
    return StoreUnavailable(f"NATS store {shown}: {type(exc).__name__}: {exc or 'no answer'}")


def _tls(options: NatsOptions) -> ssl.SSLContext | None:
    if not options.tls:
        return None
    context = ssl.create_default_context(cafile=options.tls_ca)
    if options.tls_cert is not None and options.tls_key is not None:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


class NatsConn:
    """One connection, its JetStream context and the stream (see the module docstring)."""

    def __init__(self, nc: Client, options: NatsOptions, shown: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=options.timeout_s)
        self.options = options
        self.shown = shown
        self.stream = options.stream
        self.prefix = options.prefix
        self._notify_subject = f"_OUTBOXHUB.{options.stream}.commit"
        self._notify_sub: Any = None
        self._notify_seq = 0
        self._try_s = min(options.timeout_s, max(2.0, options.timeout_s / 3))
        self._notify_scheduled = False

    async def call(self, what: str, make: Callable[[], Awaitable[_T]]) -> _T:
        """Run one JetStream API request, retried while NATS does not answer (a request lost in a leader
        election) until ``timeout_s`` ends; then ``StoreUnavailable``. Each try waits a third of
        ``timeout_s`` (at least 2 s): creating a replicated consumer on a busy cluster takes seconds."""
        deadline = time.monotonic() + self.options.timeout_s
        retries: Retries | None = None
        while True:
            try:
                return await asyncio.wait_for(make(), timeout=self._try_s)
            except TRANSIENT as exc:
                if time.monotonic() >= deadline:
                    raise unavailable(self.shown, exc) from exc
            except nats.js.errors.APIError as exc:
                raise StoreError(f"NATS store {self.shown}: {what}: {exc}") from exc
            retries = retries or Retries(_PUBLISH_RETRY)
            await asyncio.sleep(min(retries.next(), max(0.0, deadline - time.monotonic())))

    async def ensure_stream(self) -> None:
        """Create the stream, or check that the existing one is usable; errors name the difference."""
        o = self.options
        try:
            info = await self.js.stream_info(o.stream)
        except nats.js.errors.NotFoundError:
            info = None
        except TRANSIENT as exc:
            raise unavailable(self.shown, exc) from exc
        if info is None:
            config = StreamConfig(
                name=o.stream,
                subjects=[f"{o.prefix}.>"],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=o.replicas,
                duplicate_window=o.dedup_window_s,
                discard=DiscardPolicy.OLD,
                allow_direct=True,
                description="outboxhub event log",
            )
            try:
                await self.js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if "already in use" not in str(exc):  # another hub created it meanwhile
                    raise StoreError(
                        f"NATS store {self.shown}: cannot create stream {o.stream}: {exc}"
                    ) from exc
            except TRANSIENT as exc:
                raise unavailable(self.shown, exc) from exc
            return
        subjects = list(info.config.subjects or [])
        if subjects != [f"{o.prefix}.>"]:
            raise StoreError(
                f"NATS store {self.shown}: stream {o.stream} has subjects {subjects}, expected"
                f" ['{o.prefix}.>'] (another application's stream, or a different prefix=)"
            )
        if info.config.retention not in (None, RetentionPolicy.LIMITS):
            raise StoreError(
                f"NATS store {self.shown}: stream {o.stream} has retention {info.config.retention}; the event"
                " log needs limits retention (consumer groups must not delete events)"
            )
        if info.config.num_replicas != o.replicas:
            _log.warning(
                "NATS store %s: stream %s has %s replicas, the URL asks for %s; using the stream as it is",
                self.shown,
                o.stream,
                info.config.num_replicas,
                o.replicas,
            )

    async def publish(self, subject: str, body: bytes, msg_id: str) -> PubAck:
        """Publish one message and wait for its ack, retrying transient failures with the same
        ``Nats-Msg-Id`` until ``timeout_s`` ends (see the module docstring)."""
        headers = {"Nats-Msg-Id": msg_id}
        started = time.monotonic()
        first_timeout = min(self.options.timeout_s, 2.0)
        try:
            return await self.js.publish(
                subject, body, timeout=first_timeout, stream=self.stream, headers=headers
            )
        except TRANSIENT:
            pass  # retried below (the state of a retry loop costs nothing on the way that needs none)
        except nats.js.errors.APIError as exc:
            raise StoreError(f"NATS store {self.shown}: publish to {subject}: {exc}") from exc
        deadline = started + self.options.timeout_s
        retries = Retries(_PUBLISH_RETRY)
        while True:
            await asyncio.sleep(min(retries.next(), max(0.0, deadline - time.monotonic())))
            left = deadline - time.monotonic()
            try:
                return await self.js.publish(
                    subject, body, timeout=max(0.05, min(left, 2.0)), stream=self.stream, headers=headers
                )
            except TRANSIENT as exc:
                if time.monotonic() >= deadline:
                    raise unavailable(self.shown, exc) from exc
            except nats.js.errors.APIError as exc:
                raise StoreError(f"NATS store {self.shown}: publish to {subject}: {exc}") from exc

    def notify(self, last_seq: int) -> None:
        """Tell every store on the stream that ``last_seq`` is committed (best effort). Coalesced: one
        notification per event-loop turn, however many publishes completed in it."""
        if last_seq <= self._notify_seq:
            return
        self._notify_seq = last_seq
        if not self._notify_scheduled:
            self._notify_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_notify)

    def _send_notify(self) -> None:
        self._notify_scheduled = False
        if self.nc.is_closed or self.nc.is_draining:
            return
        task = asyncio.ensure_future(self.nc.publish(self._notify_subject, str(self._notify_seq).encode()))
        task.add_done_callback(_quiet)

    def announce_reset(self, base: str) -> None:
        """Tell every store on the stream that the group with consumer name ``base`` was reset (a hint)."""
        if self.nc.is_closed or self.nc.is_draining:
            return
        task = asyncio.ensure_future(self.nc.publish(self._notify_subject, f"reset {base}".encode()))
        task.add_done_callback(_quiet)

    async def listen(self, callback: Callable[[int], None], on_reset: Callable[[str], None]) -> None:
        """Call ``callback`` with the seq of every commit notification on the stream, ``on_reset`` with the
        consumer name of every reset announced."""

        async def on_msg(msg: Msg) -> None:
            if msg.data.startswith(b"reset "):
                on_reset(msg.data[6:].decode(errors="replace"))
                return
            try:
                seq = int(msg.data)
            except ValueError:
                return
            callback(seq)

        self._notify_sub = await self.nc.subscribe(self._notify_subject, cb=on_msg)

    async def close(self) -> None:
        try:
            await self.nc.drain()
        except Exception:  # closing a broken connection (reconnecting: the driver refuses to drain)
            with contextlib.suppress(OSError):  # the transport of a lost connection, as it is torn down
                await self.nc.close()


def _quiet(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:  # a hint only: the members poll anyway
        _log.debug("commit notification not sent: %s", task.exception())


async def connect(options: NatsOptions, shown: str) -> NatsConn:
    """Connect to the URL's servers (reconnecting forever afterwards) and make sure the stream exists."""
    kwargs: dict[str, Any] = {
        "servers": list(options.servers),
        "connect_timeout": options.timeout_s,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.25,
        "allow_reconnect": True,
        "name": "outboxhub",
        "drain_timeout": options.timeout_s,
    }
    if options.user is not None:
        kwargs["user"] = options.user
        kwargs["password"] = options.password
    if options.token is not None:
        kwargs["token"] = options.token
    if options.creds is not None:
        kwargs["user_credentials"] = options.creds
    tls = _tls(options)
    if tls is not None:
        kwargs["tls"] = tls

    async def quiet(exc: Exception) -> None:
        _log.debug("NATS store %s: %s: %s", shown, type(exc).__name__, exc)

    kwargs["error_cb"] = quiet
    try:
        # The driver retries the first connection as often as a reconnect (forever): bound it.
        nc = await asyncio.wait_for(nats.connect(**kwargs), timeout=options.timeout_s * 2)
    except (OSError, nats.errors.NoServersError, *TRANSIENT) as exc:  # type: ignore[misc]
        raise StoreUnavailable(f"NATS store {shown}: cannot connect: {type(exc).__name__}: {exc}") from exc
    except nats.errors.Error as exc:
        raise StoreUnavailable(f"NATS store {shown}: cannot connect: {exc}") from exc
    conn = NatsConn(nc, options, shown)
    try:
        await conn.ensure_stream()
    except BaseException:
        await nc.close()
        raise
    return conn
