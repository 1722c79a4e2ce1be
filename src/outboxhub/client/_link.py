"""The link to the hub under a :class:`HubClient`: sockets come and go, requests and subscriptions stay.

How it works:

* **One reader task** reads every frame: ``OK``/``ERR`` are matched to their request by ``rid`` (a
  per-client counter, never reused, so a request re-sent on a new socket keeps its rid), ``EVENT`` goes to
  the queue of its subscription. Publishing never waits for the reader: each publish sends its frame and
  awaits its own future, so many are in flight at once.
* **Publishes survive reconnects.** Every publish carries an id (a UUIDv7 made by the client when not
  given) and stays in ``_publishes`` until the hub confirms it. After a reconnect the link re-AUTHs
  (asking the token provider again), re-SUBSCRIBEs, and re-sends every unconfirmed publish with the same
  id, so the hub stores each event once whether or not the first copy had arrived (the reply then says
  ``duplicate=True``).
* **Publish order.** Publishes go out in call order and retries keep it; how is in
  :mod:`outboxhub.client._publish_order` (the publish side of :class:`Link`).
* **Token refresh.** With a provider, the link sends ``AUTH`` again on the open socket a while before the
  ``exp`` the hub returned (a third of the remaining lifetime, at most a minute early).
* **Failure.** When reconnecting cannot help (reconnect is off, attempts ran out, a fixed token was
  refused or expired) the link fails for good: every waiting call and every subscription gets the error.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import WSMsgType

from outboxhub.client._backoff import Backoff
from outboxhub.client._exceptions import (
    AuthFailed,
    ClientClosed,
    HubConnectionError,
    HubError,
    NotAuthenticated,
    TokenExpired,
    error_from_code,
)
from outboxhub.client._messages import SubscribeContext
from outboxhub.client._publish_order import Flow, PendingPublish, PublishOrder
from outboxhub.client._subscription import Subscription
from outboxhub.client._token import TokenSource, get_token, refresh_delay
from outboxhub.errors import ProtocolError
from outboxhub.protocol.codec import (
    Auth,
    ClientFrame,
    ErrFrame,
    EventFrame,
    OkFrame,
    decode_server_frame,
    encode_client_frame,
)
from outboxhub.protocol.codes import CLOSE_AUTH_FAILED, CLOSE_TOKEN_EXPIRED

__all__ = ["Link"]

log = logging.getLogger("outboxhub.client")

_MAX_MSG_SIZE: Final = 64 * 1024 * 1024
_REFRESH_RETRY_S: Final = 1.0


class Link(PublishOrder):
    """The client's connection state machine (see the module docstring). Internal to :class:`HubClient`."""

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        reconnect: bool,
        backoff: Backoff,
        max_reconnect_attempts: int | None,
        connect_timeout_s: float,
        retry_unavailable: bool,
        heartbeat_s: float | None,
    ) -> None:
        self.url = url
        self._token = token
        self._reconnect = reconnect
        self._backoff = backoff
        self._max_reconnect_attempts = max_reconnect_attempts
        self._connect_timeout_s = connect_timeout_s
        self._retry_unavailable = retry_unavailable
        self._heartbeat_s = heartbeat_s
        self._rids = itertools.count(1)
        self._publishes: dict[int, PendingPublish] = {}  # by rid, in the order first sent
        self._flow = Flow.SENDING
        self._hold_timer: asyncio.TimerHandle | None = None
        self._hold_over = False  # the shared delay of the current hold has passed
        self._holds = 0  # holds since a publish was last confirmed outside one: the backoff attempt
        self._requests: dict[int, asyncio.Future[OkFrame]] = {}
        self.subs: dict[tuple[str, str | None], Subscription[Any]] = {}
        """Active subscriptions by ``(pattern, group)``: EVENTs are routed here, and re-subscribed."""
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._gen = 0
        self.ready = False
        """True while a socket is up, authenticated and resumed."""
        self._ready_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._refresh_handle: asyncio.TimerHandle | None = None
        self._notice: ErrFrame | None = None  # the last ERR without rid (token_expired before a close)
        self._fatal: HubError | None = None
        self.closing = False
        self.exp: int | None = None
        self.subject: str | None = None
        self.reconnects = 0
        self.token_refreshes = 0

    @property
    def backoff(self) -> Backoff:
        return self._backoff

    @property
    def can_retry(self) -> bool:
        """A request that lost its socket may be asked again on the next one."""
        return self._reconnect and not self.closing and self._fatal is None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None or self.closing:
            raise RuntimeError("HubClient.connect() can be called once; make a new client to connect again")
        self._session = aiohttp.ClientSession()
        try:
            await self._open()
        except BaseException:
            await self._session.close()
            self.closing = True
            raise
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outboxhub-client")
        await self.wait_ready()

    async def close(self) -> None:
        if self.closing and self._task is None:
            return
        self.closing = True
        self._cancel_refresh()
        self._cancel_hold()
        self._fail_pending(ClientClosed("the client was closed before the hub confirmed the request"))
        self.ready = False
        self._ready_event.set()
        if self._ws is not None:
            await self._ws.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- publishing and settling ----------------------------------------------------------------------

    def next_rid(self) -> int:
        return next(self._rids)

    async def fire(self, frame: ClientFrame) -> None:
        """Send ``frame`` now if a socket is up, without waiting; a refusal is logged."""
        if not self.ready:
            return
        rid = next(self._rids)
        future: asyncio.Future[OkFrame] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_log_refusal)
        self._requests[rid] = future
        if not await self._send(encode_client_frame(msgspec.structs.replace(frame, rid=rid))):
            self._requests.pop(rid, None)
            future.cancel()

    def check_usable(self) -> None:
        if self._fatal is not None:
            raise error_from_code(self._fatal.code, self._fatal.msg) from self._fatal
        if self.closing:
            raise ClientClosed()
        if self._task is None and self._ws is None:
            raise RuntimeError(
                "HubClient is not connected: use `async with HubClient(...)` or `await client.connect()`"
            )

    async def wait_ready(self) -> None:
        while not self.ready:
            self.check_usable()
            await self._ready_event.wait()
        self.check_usable()

    async def request(self, frame: ClientFrame) -> OkFrame:
        await self.wait_ready()
        return await self.request_now(frame)

    async def request_now(self, frame: ClientFrame) -> OkFrame:
        """Send ``frame`` with a new rid on the current connection and wait for its reply."""
        rid = next(self._rids)
        future: asyncio.Future[OkFrame] = asyncio.get_running_loop().create_future()
        self._requests[rid] = future
        try:
            if not await self._send(encode_client_frame(msgspec.structs.replace(frame, rid=rid))):
                raise HubConnectionError("the connection dropped before the request could be sent")
            return await future
        finally:
            self._requests.pop(rid, None)

    async def _send(self, data: bytes) -> bool:
        ws = self._ws
        if ws is None or ws.closed:
            return False
        try:
            await ws.send_frame(data, WSMsgType.TEXT)
        except (ConnectionError, aiohttp.ClientError) as exc:
            log.debug("send failed: %s", exc)
            return False
        return True

    # -- connection -----------------------------------------------------------------------------------

    async def _open(self) -> None:
        """Open a socket and AUTH on it; on success it becomes the current connection (``_gen`` + 1)."""
        assert self._session is not None
        token = await get_token(self._token)
        rid = next(self._rids)
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await self._session.ws_connect(
                    self.url,
                    heartbeat=self._heartbeat_s,
                    max_msg_size=_MAX_MSG_SIZE,
                    autoclose=True,
                    autoping=True,
                )
                try:
                    await ws.send_frame(encode_client_frame(Auth(rid=rid, token=token)), WSMsgType.TEXT)
                    reply = await self._auth_reply(ws, rid)
                except BaseException:
                    await ws.close()
                    raise
        except TimeoutError:
            raise HubConnectionError(
                f"no answer from {self.url} within {self._connect_timeout_s:g} s (connect and AUTH)"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise HubConnectionError(f"cannot connect to {self.url}: {exc}") from exc
        if isinstance(reply, ErrFrame):
            await ws.close()
            raise error_from_code(reply.code, reply.msg)
        exp = reply.fields.get("exp")
        self.exp = exp if isinstance(exp, int) else None
        sub = reply.fields.get("sub")
        self.subject = sub if isinstance(sub, str) else None
        self._notice = None
        self._ws = ws
        self._gen += 1

    async def _auth_reply(self, ws: aiohttp.ClientWebSocketResponse, rid: int) -> OkFrame | ErrFrame:
        while True:
            msg = await ws.receive()
            if msg.type is not WSMsgType.TEXT:
                raise HubConnectionError(
                    f"the hub closed the connection before answering AUTH (close code {ws.close_code})"
                )
            try:
                frame = decode_server_frame(msg.data)
            except ProtocolError as exc:
                raise HubConnectionError(f"the hub sent a malformed frame: {exc}") from exc
            if isinstance(frame, (OkFrame, ErrFrame)) and frame.rid == rid:
                return frame

    async def _run(self) -> None:
        """The reader, reconnecting as needed, until close() or a failure that reconnecting cannot fix."""
        while True:
            ws, gen = self._ws, self._gen
            assert ws is not None
            resume = asyncio.get_running_loop().create_task(self._resume(gen), name="outboxhub-resume")
            self._schedule_refresh()
            try:
                await self._read_loop(ws)
            finally:
                resume.cancel()
                self._cancel_refresh()
                self.ready = False
                self._ready_event.clear()
                self._fail_requests(HubConnectionError("the connection dropped before the hub answered"))
                for sub in self.subs.values():
                    sub._forget_unsettled()  # the hub releases them and redelivers them
                if not ws.closed:
                    await ws.close()
            if self.closing:
                return
            error = self._final_error(ws.close_code)
            if error is None and not self._reconnect:
                error = HubConnectionError(
                    f"the connection to {self.url} closed (code {ws.close_code}) and reconnect is off"
                )
            if error is None:
                log.info("connection to %s lost (close code %s); reconnecting", self.url, ws.close_code)
                try:
                    await self._reconnect_loop()
                except HubError as exc:
                    error = exc
            if error is not None:
                self._fail(error)
                return
            self.reconnects += 1

    def _final_error(self, close_code: int | None) -> HubError | None:
        """The error that ends the client when the hub closed for an auth reason a fixed token can't fix."""
        if close_code not in (CLOSE_AUTH_FAILED, CLOSE_TOKEN_EXPIRED) or not isinstance(self._token, str):
            return None
        if self._notice is not None:
            return error_from_code(self._notice.code, self._notice.msg)
        if close_code == CLOSE_TOKEN_EXPIRED:
            return TokenExpired("token_expired", "the token expired; use a token provider to refresh it")
        return AuthFailed("jwt_invalid", "the hub refused the token and closed the connection")

    async def _reconnect_loop(self) -> None:
        last: Exception | None = None
        for attempt, delay in enumerate(self._backoff.delays()):
            if self._max_reconnect_attempts is not None and attempt >= self._max_reconnect_attempts:
                raise HubConnectionError(
                    f"gave up reconnecting to {self.url} after {attempt} attempts; last error: {last}"
                )
            await asyncio.sleep(delay)
            if self.closing:
                raise ClientClosed()
            try:
                await self._open()
                return
            except AuthFailed as exc:
                if isinstance(self._token, str):
                    raise
                last = exc
                log.warning("reconnect: the hub refused the provider's token: %s", exc)
            except HubConnectionError as exc:
                last = exc
                log.info("reconnect attempt %d to %s failed: %s", attempt + 1, self.url, exc.msg)
            except Exception as exc:  # the token provider failed
                last = exc
                log.warning("reconnect: the token provider failed: %r", exc)

    async def _resume(self, gen: int) -> None:
        """On a fresh connection: re-SUBSCRIBE, re-send unconfirmed publishes, then mark the client ready."""
        for sub in list(self.subs.values()):
            if self.subs.get(sub.key) is not sub:
                continue
            try:
                await self.request_now(sub.subscribe_frame())
            except HubConnectionError:
                return  # dropped again; the next connection resumes
            except HubError as exc:  # e.g. the new token no longer allows it
                log.error("re-subscribing %r group %r failed: %s", sub.pattern, sub.group, exc)
                if self.subs.get(sub.key) is sub:
                    del self.subs[sub.key]
                sub._end(exc)
        self._cancel_hold()  # the reconnect has waited already: re-send everything now
        if not await self._send_unsent(gen):
            return
        # No await since _send_unsent's last check: nothing published meanwhile is left unsent (or, if a
        # re-sent publish was refused meanwhile, the hold that began then sends the rest).
        self.ready = True
        self._ready_event.set()
        self._end_hold()  # in case that hold's delay ran out (and its replies came) before we were ready

    async def _read_loop(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                self._on_frame(msg.data)
            elif msg.type is WSMsgType.BINARY:
                log.warning("ignoring a binary frame from the hub")
            else:
                if msg.type is WSMsgType.ERROR:
                    log.info("connection error: %s", msg.data)
                return

    def _on_frame(self, data: str) -> None:
        try:
            frame = decode_server_frame(data)
        except ProtocolError as exc:
            log.warning("ignoring a malformed frame from the hub: %s", exc)
            return
        if isinstance(frame, EventFrame):
            sub = self.subs.get((frame.topic, frame.group))
            if sub is not None:
                sub._deliver(
                    SubscribeContext(
                        event=frame.event, pattern=frame.topic, group=frame.group, attempt=frame.ctx.attempt
                    )
                )
            return
        rid = frame.rid
        if not isinstance(rid, int):  # our rids are ints; anything else is not an answer to us
            if isinstance(frame, ErrFrame):
                self._notice = frame
                log.warning("hub: %s: %s", frame.code, frame.msg)
            return
        pending = self._publishes.get(rid)
        if pending is not None:
            self._on_published(rid, pending, frame)
            if self._flow is Flow.HOLDING and self._hold_over:
                self._end_hold()  # this may have been the last reply the hold was waiting for
            return
        future = self._requests.pop(rid, None)
        if future is None or future.done():
            return
        if isinstance(frame, ErrFrame):
            future.set_exception(error_from_code(frame.code, frame.msg))
        else:
            future.set_result(frame)

    # -- token refresh --------------------------------------------------------------------------------

    def _schedule_refresh(self, delay: float | None = None) -> None:
        self._cancel_refresh()
        if isinstance(self._token, str) or self.exp is None or self.closing:
            return
        if delay is None:
            delay = refresh_delay(self.exp, time.time())
        self._refresh_handle = asyncio.get_running_loop().call_later(delay, self._start_refresh, self._gen)

    def _start_refresh(self, gen: int) -> None:
        self._refresh_handle = None
        self._spawn(self._refresh(gen))

    def _cancel_refresh(self) -> None:
        if self._refresh_handle is not None:
            self._refresh_handle.cancel()
            self._refresh_handle = None

    async def _refresh(self, gen: int) -> None:
        try:
            token = await get_token(self._token)
            reply = await self.request_now(Auth(token=token))
        except HubError as exc:  # a refused token makes the hub close; the reconnect asks the provider again
            log.warning("token refresh failed: %s", exc)
            return
        except Exception as exc:
            log.warning("token provider failed: %r; retrying in %.0f s", exc, _REFRESH_RETRY_S)
            if gen == self._gen:
                self._schedule_refresh(_REFRESH_RETRY_S)
            return
        if gen != self._gen:
            return
        exp = reply.fields.get("exp")
        self.exp = exp if isinstance(exp, int) else None
        self.token_refreshes += 1
        self._schedule_refresh()

    # -- failure --------------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _fail_requests(self, error: HubError) -> None:
        requests, self._requests = self._requests, {}
        for future in requests.values():
            if not future.done():
                future.set_exception(error_from_code(error.code, error.msg))

    def _fail_pending(self, error: HubError) -> None:
        self._cancel_hold()
        for pending in self._publishes.values():
            if not pending.future.done():
                pending.future.set_exception(error_from_code(error.code, error.msg))
        self._fail_requests(error)

    def _fail(self, error: HubError) -> None:
        """The client cannot go on: every waiting call and every subscription ends with ``error``."""
        log.error("hub client for %s stopped: %s", self.url, error)
        self._fatal = error
        self._fail_pending(error)
        for sub in list(self.subs.values()):
            sub._end(error)
        self.ready = False
        self._ready_event.set()


def _log_refusal(future: asyncio.Future[OkFrame]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if isinstance(exc, HubConnectionError | NotAuthenticated):
        log.debug("ACK/NACK not confirmed: %s (the event will be redelivered)", exc)
    elif exc is not None:
        log.warning("the hub refused an ACK/NACK: %s", exc)
