"""Confirmed ACKs of JetStream messages, a batch of them in one coroutine.

``Msg.ack_sync`` is a request, a coroutine per message: acking a flush's messages together with
``asyncio.gather`` started a task for each (a flush of nine ACKs started ten tasks with the store's own).
``ConfirmedAcks`` sends each ``+ACK`` itself, with a reply subject under one wildcard subscription of its
own (made on first use; the client renews it after a reconnect), and waits for JetStream's confirmations
(its reply once the consumer has applied the ACK) on plain futures: the caller's coroutine is the only one,
whatever the batch's size. Errors are those of ``ack_sync``: a timeout, no responders, a closed or
reconnecting connection (``conn.TRANSIENT``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header

__all__ = ["ConfirmedAcks"]

_NO_RESPONDERS = "503"


class ConfirmedAcks:
    """The ACKs of one store's connection (see the module docstring)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix: str | None = None
        self._subscribing = asyncio.Lock()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._tokens = itertools.count()

    async def ack(self, msgs: Sequence[Msg], timeout_s: float, kind: bytes = Msg.Ack.Ack) -> None:
        """ACK ``msgs`` (or send them another acknowledgement ``kind``, e.g. ``Msg.Ack.Nak``) and return
        once JetStream has confirmed every one, within ``timeout_s``: it answers after it has applied it."""
        prefix = self._prefix or await self._subscribe()
        loop = asyncio.get_running_loop()
        tokens: list[str] = []
        try:
            for msg in msgs:
                token = str(next(self._tokens))
                tokens.append(token)
                self._waiting[token] = loop.create_future()
                await self._nc.publish(msg.reply, kind, reply=f"{prefix}.{token}")
            replies = await asyncio.wait_for(asyncio.gather(*(self._waiting[t] for t in tokens)), timeout_s)
        finally:
            for token in tokens:
                self._waiting.pop(token, None)
        if any(reply.headers and reply.headers.get(Header.STATUS) == _NO_RESPONDERS for reply in replies):
            raise nats.errors.NoRespondersError

    async def _subscribe(self) -> str:
        async with self._subscribing:
            if self._prefix is None:
                prefix = self._nc.new_inbox()
                await self._nc.subscribe(f"{prefix}.*", cb=self._reply)
                self._prefix = prefix
            return self._prefix

    async def _reply(self, msg: Msg) -> None:
        waiting = self._waiting.get(msg.subject.rpartition(".")[2])
        if waiting is not None and not waiting.done():
            waiting.set_result(msg)
