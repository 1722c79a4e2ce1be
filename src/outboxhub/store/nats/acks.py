"""Confirmed ACKs of JetStream messages, a batch of them without a task or coroutine of their own.

``Msg.ack_sync`` is a request, a coroutine per message: acking a flush's messages together with
``asyncio.gather`` started a task for each (a flush of nine ACKs started ten tasks with the store's own).
``ConfirmedAcks`` sends each ``+ACK`` itself, with a reply subject under one wildcard subscription of its
own (made by ``prepare`` when the store opens its first group; the client renews it after a reconnect),
and counts JetStream's confirmations (its reply once the consumer has applied the ACK) down on one future
per batch, with a ``call_later`` for the timeout. ``start`` sends from the caller's frame:
``Client.publish`` is a coroutine that on nats-py 2.x returns without suspending (it appends to the
pending buffer and kicks the flusher), so it is stepped in place (``_send``); should it suspend (an
outbound buffer over its limit), it is resumed from the future it waits on, and the batch's later
publishes follow it in order, still without a task. So a store's ACK, awaited or a bus ACK flush
(``StoreBackend.ack_soon``), runs without a task (``Groups.ack_soon``). Errors are those of
``ack_sync``: a timeout, no responders, a closed or reconnecting connection (``conn.TRANSIENT``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import Header

__all__ = ["ConfirmedAcks", "counted"]

_NO_RESPONDERS = "503"


class _Batch:
    """The confirmations one ``start`` waits for."""

    __slots__ = ("done", "left", "no_responders", "timer", "tokens")

    def __init__(self, done: asyncio.Future[None], tokens: list[str]) -> None:
        self.done = done
        self.tokens = tokens
        self.left = len(tokens)
        self.no_responders = False
        self.timer: asyncio.TimerHandle | None = None


class ConfirmedAcks:
    """The ACKs of one store's connection (see the module docstring)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._prefix: str | None = None
        self._subscribing = asyncio.Lock()
        self._waiting: dict[str, _Batch] = {}
        self._tokens = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def ack(self, msgs: Sequence[Msg], timeout_s: float, kind: bytes = Msg.Ack.Ack) -> None:
        """ACK ``msgs`` (or send them another acknowledgement ``kind``, e.g. ``Msg.Ack.Nak``) and return
        once JetStream has confirmed every one, within ``timeout_s``: it answers after it has applied it."""
        await self.prepare()
        await self.start(msgs, timeout_s, kind)

    def start(self, msgs: Sequence[Msg], timeout_s: float, kind: bytes = Msg.Ack.Ack) -> asyncio.Future[None]:
        """:meth:`ack` as a future, sending from the caller's frame; only after :meth:`prepare`. Must run
        on the event loop thread."""
        prefix = self._prefix
        assert prefix is not None, "ConfirmedAcks.start before the reply subscription"
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), [str(next(self._tokens)) for _ in msgs])
        if not msgs:
            batch.done.set_result(None)
            return batch.done
        for token in batch.tokens:
            self._waiting[token] = batch
        batch.timer = loop.call_later(timeout_s, self._expire, batch)
        publish = self._nc.publish
        sends = iter(
            [(msg.reply, f"{prefix}.{token}") for msg, token in zip(msgs, batch.tokens, strict=True)]
        )

        def next_send(error: BaseException | None = None) -> None:
            if error is not None:
                self._finish(batch, error)
                return
            for subject, reply in sends:
                if batch.done.done():
                    return  # timed out meanwhile
                if _send(publish(subject, kind, reply=reply), next_send):
                    return  # suspended: ``next_send`` goes on once that publish has returned

        next_send()
        return batch.done

    async def prepare(self) -> None:
        """Make the reply subscription unless it exists (then :meth:`start` may be called)."""
        if self._prefix is not None:
            return
        async with self._subscribing:
            if self._prefix is None:
                prefix = self._nc.new_inbox()
                await self._nc.subscribe(f"{prefix}.*", cb=self._reply)
                self._prefix = prefix

    async def _reply(self, msg: Msg) -> None:
        batch = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if batch is None or batch.done.done():
            return
        if msg.headers and msg.headers.get(Header.STATUS) == _NO_RESPONDERS:
            batch.no_responders = True
        batch.left -= 1
        if not batch.left:
            self._finish(batch, nats.errors.NoRespondersError() if batch.no_responders else None)

    def _expire(self, batch: _Batch) -> None:
        self._finish(batch, TimeoutError())

    def _finish(self, batch: _Batch, error: BaseException | None) -> None:
        if batch.done.done():
            return
        if batch.timer is not None:
            batch.timer.cancel()
        for token in batch.tokens:
            self._waiting.pop(token, None)
        if error is None:
            batch.done.set_result(None)
        else:
            batch.done.set_exception(error)


def counted(
    confirmed: asyncio.Future[None],
    count: int,
    handled: tuple[type[BaseException], ...],
    on_error: Callable[[BaseException], Awaitable[int]],
) -> asyncio.Future[int]:
    """``count`` once ``confirmed`` is answered; on an error of a ``handled`` kind, what ``on_error`` makes
    of it (a coroutine: a task on that path only); other errors as they are."""
    out: asyncio.Future[int] = confirmed.get_loop().create_future()

    def answer(done: asyncio.Future[Any]) -> None:
        if out.done():
            return
        if done.cancelled():
            out.cancel()
        elif done.exception() is None:
            out.set_result(count if done is confirmed else done.result())
        elif done is confirmed and isinstance(done.exception(), handled):
            asyncio.ensure_future(on_error(done.exception())).add_done_callback(answer)  # type: ignore[arg-type]
        else:
            out.set_exception(done.exception())  # type: ignore[arg-type]

    confirmed.add_done_callback(answer)
    return out


def _send(coro: Coroutine[Any, Any, None], then: Callable[[BaseException | None], None]) -> bool:
    """Step ``coro`` (a ``Client.publish``) in place: False when it returned; True when it raised (the
    error goes to ``then``) or suspended (it is stepped again from the future it waits on, and ``then``
    is called once it has returned or raised)."""
    try:
        waited = coro.send(None)
    except StopIteration:
        return False
    except BaseException as exc:  # handed to the batch, as an awaited publish would have raised it
        then(exc)
        return True
    _resume_after(coro, waited, then)
    return True


def _resume_after(
    coro: Coroutine[Any, Any, None], waited: Any, then: Callable[[BaseException | None], None]
) -> None:
    """What ``asyncio.Task`` does with a coroutine that yielded ``waited``: step it again once that future
    is done (a bare yield: on the next loop iteration)."""

    def step(_: object = None) -> None:
        try:
            again = coro.send(None)
        except StopIteration:
            then(None)
        except BaseException as exc:  # as above
            then(exc)
        else:
            _resume_after(coro, again, then)

    if getattr(waited, "_asyncio_future_blocking", None):
        waited._asyncio_future_blocking = False
        waited.add_done_callback(step)
    else:
        asyncio.get_running_loop().call_soon(step)
