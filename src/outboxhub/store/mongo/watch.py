"""Wake-ups from MongoDB: a change stream when the deployment offers one, polling otherwise.

Change streams need a replica set or a sharded cluster; a standalone ``mongod`` refuses ``$changeStream``
(code 40573). The store and the outbox do not guess from the topology: ``Watcher`` opens the stream and
looks at the answer. If the server refuses it, the watcher logs that once and stops, and the owner's
polling loop is the wake-up. A stream that breaks later (network, failover) is reopened with backoff;
missed changes are covered by the owner's poll, which runs in every mode as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from outboxhub.retry import BackoffPolicy, Retries

__all__ = ["WatchMode", "Watcher"]

log = logging.getLogger("outboxhub.store.mongo.store")

WatchMode = Literal["starting", "change stream", "polling"]

Doc = dict[str, Any]

_BACKOFF = BackoffPolicy(base=0.1, cap=5.0)


class Watcher:
    """Follow a collection's change stream, calling ``on_change(change)`` for each change."""

    def __init__(
        self,
        collection: AsyncCollection[Doc],
        pipeline: Sequence[Doc],
        on_change: Callable[[Doc], None],
        *,
        label: str,
        full_document: str | None = None,
    ) -> None:
        self._collection = collection
        self._pipeline = list(pipeline)
        self._on_change = on_change
        self._label = label
        self._full_document = full_document
        self.mode: WatchMode = "starting"
        self.detected = asyncio.Event()
        """Set once the mode is known (the stream opened, or the server refused it)."""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"watch:{self._label}")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        backoff = Retries(_BACKOFF)
        while True:
            try:
                async with await self._collection.watch(
                    self._pipeline, full_document=self._full_document
                ) as stream:
                    if self.mode != "change stream":
                        log.info("%s: waking up through a change stream", self._label)
                    self.mode = "change stream"
                    self.detected.set()
                    backoff.reset()
                    async for change in stream:
                        self._on_change(change)
            except OperationFailure as exc:
                if self.mode == "change stream":  # it worked before: a transient failure (failover, ...)
                    log.debug("%s: change stream failed (%s); reopening", self._label, exc)
                else:
                    log.warning(
                        "%s: change streams are not available on this deployment (%s: %s); polling instead "
                        "(change streams need a replica set or a sharded cluster)",
                        self._label,
                        exc.code,
                        str(exc).split(", full error")[0],
                    )
                    self.mode = "polling"
                    self.detected.set()
                    return
            except PyMongoError as exc:
                log.debug(
                    "%s: change stream interrupted (%s); reopening in %.1fs",
                    self._label,
                    exc,
                    backoff.policy.raw(backoff.failures),
                )
            await asyncio.sleep(backoff.next())
