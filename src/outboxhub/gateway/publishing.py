"""PUBLISH on a connection: the ACL and quota checks, the read burst's batch, the durable answer.

A mixin of :class:`~outboxhub.gateway.connection.Connection` (cut out of it by concept, like
:mod:`outboxhub.gateway.settle`). A PUBLISH takes its place in the reply order at once and joins the
connection's batch; the PUBLISHes of one read burst reach the bus as one batch, and each is answered only
after the store's durable commit. The batch is handed over when the socket has nothing more received
(``WebSocket.caught_up()``, or picows' end of a read for the frames it hands over directly, see
:meth:`~outboxhub.gateway.connection.Connection.take_now`); on a socket that cannot tell (aiohttp), or
when the reader must await something first, a ``call_soon`` does it after the burst.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any, Final

from outboxhub.auth import acl
from outboxhub.errors import StoreUnavailable
from outboxhub.gateway.context import GatewayContext
from outboxhub.gateway.publishquota import ConnectionLimits
from outboxhub.gateway.sendqueue import ReplySlot, SendQueue
from outboxhub.gateway.transport import WebSocket
from outboxhub.model import NewEvent, PublishResult
from outboxhub.protocol.codec import Publish, Rid, encode_published
from outboxhub.protocol.codes import FORBIDDEN, INTERNAL, RATE_LIMITED, UNAVAILABLE, ErrorCode

__all__ = ["Publishing"]

log = logging.getLogger("outboxhub.gateway.connection")

_ACL_CACHE_MAX: Final = 1024
_MAX_PUBLISH_BATCH: Final = 512

_Pending = tuple[NewEvent, ReplySlot, Rid]


class Publishing:
    """PUBLISH of :class:`~outboxhub.gateway.connection.Connection` (its attributes and reply helpers are
    set and defined there)."""

    gateway: GatewayContext
    ws: WebSocket
    out: SendQueue
    member: str
    policy: acl.Policy | None
    published: int
    _stopping: bool
    _loop: asyncio.AbstractEventLoop
    _limits: ConnectionLimits
    _tasks: dict[asyncio.Future[Any], None]  # an ordered set
    _may_publish: dict[str, bool]
    _batch: list[_Pending]

    def _err_bytes(self, rid: Rid, code: ErrorCode, msg: str, *, retry_after_ms: int | None = None) -> bytes:
        raise NotImplementedError

    def _err(self, rid: Rid, code: ErrorCode, msg: str) -> None:
        raise NotImplementedError

    def _publish(self, frame: Publish) -> None:
        if self._stopping:
            self._err(frame.rid, UNAVAILABLE, "hub is shutting down; publish again on another connection")
            return
        policy = self.policy
        assert policy is not None
        topic = frame.topic
        # The policy is fixed until the next AUTH and clients publish to few topics: remember decisions.
        allowed = self._may_publish.get(topic)
        if allowed is None:
            allowed = acl.is_allowed(policy, "publish", topic)
            if len(self._may_publish) >= _ACL_CACHE_MAX:
                self._may_publish.clear()
            self._may_publish[topic] = allowed
        if not allowed:
            self._err(frame.rid, FORBIDDEN, acl.explain(policy, "publish", topic, None))
            return
        limits = self._limits
        if limits.limited and (refused := limits.check(topic, self._loop.time())) is not None:
            err = self._err_bytes(frame.rid, RATE_LIMITED, refused.msg, retry_after_ms=refused.retry_after_ms)
            self.out.reply(err)
            return
        batch = self._batch
        batch.append((frame.to_new_event(), self.out.reserve(), frame.rid))
        if len(batch) == 1:
            # Caught up, the batch is complete and the reader (or picows' end of read) hands it over before
            # anything can await; else (aiohttp, or more frames to read) this callback does, after the burst.
            if not self.ws.caught_up():
                self._loop.call_soon(self._flush_batch)
        elif len(batch) >= _MAX_PUBLISH_BATCH:
            self._flush_batch()

    def _flush_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        # The store's future, not a task: on SQLite a lone publish commits right here (inline), and is
        # then answered at once, not by a done callback one loop iteration later.
        events = [batch[0][0]] if len(batch) == 1 else [event for event, _, _ in batch]
        done = self.gateway.bus.publish_batch_soon(events)
        if done.done():
            self._published(batch, done)
            return
        self._tasks[done] = None
        done.add_done_callback(functools.partial(self._published, batch))

    def _published(self, batch: list[_Pending], task: asyncio.Future[list[PublishResult]]) -> None:
        self._tasks.pop(task, None)
        out = self.out
        exc = None if task.cancelled() else task.exception()
        if exc is None and not task.cancelled():
            results = task.result()
            self.gateway.stats.publishes += len(results)
            self.published += len(results)
            if len(batch) == 1:  # one at a time: its reply may leave right here (SendQueue.fill)
                (_, slot, rid), (result,) = batch[0], results
                out.fill(slot, encode_published(rid, result))
                return
            out.fill_all(
                (slot, encode_published(rid, result))
                for (_, slot, rid), result in zip(batch, results, strict=True)
            )
            return
        code: ErrorCode
        if isinstance(exc, StoreUnavailable):
            code, msg = UNAVAILABLE, f"store unavailable: {exc}"
        elif exc is None:
            code, msg = UNAVAILABLE, "publish was cancelled; it had no effect"
        else:
            log.error("connection %s: publish of %d events failed", self.member, len(batch), exc_info=exc)
            code, msg = INTERNAL, "internal error; the publish may have failed"
        out.fill_all((slot, self._err_bytes(rid, code, msg)) for _, slot, rid in batch)
