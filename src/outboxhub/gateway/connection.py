"""One WebSocket connection of the gateway: its auth state, policy and subscriptions.

:class:`~outboxhub.gateway.server.Gateway` upgrades the socket and hands it to a :class:`Connection`. The
handler is a short loop around the pure codec in :mod:`outboxhub.protocol.codec`: read a frame, decode it,
dispatch it, repeat. What keeps it fast and fair:

* **Pipelining.** PUBLISH, ACK, NACK and EXTEND do not block the reader: each takes its place in the
  reply order (:class:`~outboxhub.gateway.sendqueue.SendQueue`) and runs in the background; the writer
  sends replies in request order as their slots fill. The PUBLISHes of one read burst go to the bus as one
  batch, each answered only after the store's durable commit. AUTH, SUBSCRIBE and UNSUBSCRIBE change the
  connection's state, so the reader awaits them in place. PUBLISH lives in
  :mod:`outboxhub.gateway.publishing`, ACK/NACK/EXTEND in :mod:`outboxhub.gateway.settle`; publish
  quotas in :mod:`outboxhub.gateway.publishquota`. On picows, a frame that arrives while the reader waits
  is offered to :meth:`Connection.take_now` in the socket's callback first (no wake-up of the reader).
* **Bounded memory.** Too many unanswered requests stop the reader (replies are never dropped); too many
  queued EVENTs make ``deliver`` refuse, the bus pauses that member until the queue drains to half, and
  its unacked claims time out and move on. One slow consumer never blocks another connection.
* **Never crash on input.** Every bad frame gets ``ERR`` with a ``docs/protocol.md`` code naming the
  problem; an unexpected exception answers ``ERR internal`` (and is logged) and the connection stays up.
  Only a failed AUTH or no AUTH within ``auth_timeout_s`` (4001), an expired token (4003), a frame beyond
  the hard size limit or, before AUTH, beyond ``max_auth_frame_bytes`` (1009) and shutdown (1001) close
  the socket.
* **Bounded per principal.** Subscriptions and consumer groups are counted per token subject over all its
  connections (:mod:`outboxhub.gateway.quota`); a re-AUTH that revokes a subscription also takes back the
  EVENT frames of it still queued.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from outboxhub.auth import acl
from outboxhub.auth.decide import Decider
from outboxhub.auth.jwt import Principal
from outboxhub.errors import AuthError, ProtocolError, StoreUnavailable, StoreUnsupported
from outboxhub.gateway.context import GatewayContext, not_subscribed, utf8_size
from outboxhub.gateway.delivery import SocketSub
from outboxhub.gateway.publishing import Publishing
from outboxhub.gateway.publishquota import ConnectionLimits
from outboxhub.gateway.ratelimit import TokenBucket
from outboxhub.gateway.sendqueue import ReplySlot, SendQueue
from outboxhub.gateway.settle import Settlement
from outboxhub.gateway.transport import BINARY, ERROR, TEXT, Message, WebSocket
from outboxhub.ids import new_id
from outboxhub.model import Delivery, NewEvent
from outboxhub.protocol.codec import (
    Ack,
    Auth,
    ClientFrame,
    Extend,
    Nack,
    Publish,
    Rid,
    Subscribe,
    Unsubscribe,
    encode_err,
    encode_ok,
)
from outboxhub.protocol.codes import (
    BAD_REQUEST,
    CLOSE_AUTH_FAILED,
    CLOSE_GOING_AWAY,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_TOKEN_EXPIRED,
    FORBIDDEN,
    INTERNAL,
    JWT_INVALID,
    NO_TOKEN,
    NOT_AUTHENTICATED,
    NOT_SUBSCRIBED,
    RATE_LIMITED,
    TOKEN_EXPIRED,
    TOO_LARGE,
    UNAVAILABLE,
    ErrorCode,
    close_code_for,
    is_error_code,
)
from outboxhub.protocol.hubframes import decode_hub_frame

__all__ = ["CLOSE_AUTH_FAILED", "CLOSE_GOING_AWAY", "CLOSE_TOKEN_EXPIRED", "Connection"]

log = logging.getLogger("outboxhub.gateway.connection")


_MAX_PENDING_REPLIES: Final = 4096
_AUTH_RECHECK_S: Final = 1.0
_SHUTDOWN_WAIT_S: Final = 10.0

_SubKey = tuple[str, str | None]


class Connection(Publishing, Settlement):
    """One WebSocket client: its principal and policy, its subscriptions, its ordered send queue.

    PUBLISH is handled by :class:`~outboxhub.gateway.publishing.Publishing`, ACK, NACK and EXTEND by
    :class:`~outboxhub.gateway.settle.Settlement`."""

    # slots: past 30 attributes an instance __dict__ loses CPython's key sharing (≈ 1.6 KB per connection)
    __slots__ = (
        "_auth_generation", "_auth_timeout_s", "_auth_timer", "_authenticating", "_batch", "_bucket",
        "_closed", "_expiry", "_leeway_s", "_loop", "_max_auth_frame", "_max_frame", "_max_subs",
        "_may_publish", "_quota_owner", "_stopping", "_tasks", "_undecodable", "connected_at", "decider",
        "gateway", "member", "out", "paused", "peer", "policy", "principal", "published", "subs", "ws",
    )  # fmt: skip

    def __init__(
        self,
        gateway: GatewayContext,
        ws: WebSocket,
        *,
        peer: str | None = None,
    ) -> None:
        settings = gateway.settings
        self.gateway = gateway
        self.ws = ws
        self.peer = peer
        self.member = f"conn-{new_id()}"
        self.principal: Principal | None = None
        self.policy: acl.Policy | None = None
        self.decider: Decider | None = None  # the policy compiled (shared with equal policies), its decisions
        self.subs: dict[_SubKey, SocketSub] = {}
        self.paused: dict[SocketSub, None] = {}  # an ordered set: an empty dict is 64 B, a set 216
        self.out = SendQueue(
            ws.send_text,
            max_events=settings.send_queue_max,
            max_replies=_MAX_PENDING_REPLIES,
            on_drain=self._resume_paused,
            max_bytes=settings.send_queue_max_bytes,
            send_now=ws.send_now,
            send_all_now=ws.send_all_now,
        )
        self._max_frame = settings.max_frame_bytes
        self._max_auth_frame = settings.max_auth_frame_bytes
        self._quota_owner: dict[_SubKey, str] = {}  # principal each subscription is counted for
        self._max_subs = settings.max_subscriptions
        self._leeway_s = settings.jwt_leeway_s
        self._auth_timeout_s = settings.auth_timeout_s
        self._loop = asyncio.get_running_loop()
        self._limits = ConnectionLimits(  # publish rate of this connection and the hub's publish quotas
            TokenBucket(settings.publish_rate, settings.publish_burst, now=self._loop.time()),
            gateway.publish_quotas,
        )
        self._tasks: dict[asyncio.Future[Any], None] = {}  # an ordered set (64 B empty)
        self._may_publish: dict[str, bool] = {}  # publish ACL decisions under the current policy
        self._batch: list[tuple[NewEvent, ReplySlot, Rid]] = []  # publishes not yet handed to the bus
        self._expiry: asyncio.TimerHandle | None = None
        self._auth_timer: asyncio.TimerHandle | None = None  # until the first successful AUTH
        self._authenticating = False
        self._auth_generation = 0
        self._stopping = False  # shutdown: finish in-flight requests, refuse new ones
        self._closed = False
        self._undecodable: tuple[str, ProtocolError] | None = None  # take_now's bad frame, for the reader
        self.connected_at = int(time.time() * 1000)  # for the ops API's connection list
        self.published = 0  # events this connection published (durably), for the ops API

    # -- loop -------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch frames until the socket closes, then release everything."""
        if self._auth_timeout_s > 0:
            self._auth_timer = self._loop.call_later(self._auth_timeout_s, self._on_auth_timeout)
        ws = self.ws
        ws.set_direct(self)
        try:
            while not self._closed:
                kind, data = msg = await ws.receive()
                if not self.out.has_reply_room():  # too many unanswered requests: hold this one back
                    await self.out.wait_reply_room()
                if self.principal is None and _too_large_before_auth(msg, self._max_auth_frame):
                    await self._refuse_large_before_auth(utf8_size(data))
                    break
                if kind == TEXT:
                    self.gateway.stats.frames_in += 1
                    await self._on_text(data)
                    if self._batch and ws.caught_up():  # the batch is complete: no call_soon's iteration
                        self._flush_batch()
                elif kind == BINARY:
                    self.gateway.stats.frames_in += 1
                    self._err(None, BAD_REQUEST, "binary frames are not accepted; send JSON text frames")
                else:  # closed, or ERROR (e.g. a frame beyond the hard limit: 1009)
                    if kind == ERROR:
                        log.info("connection %s: %s", self.member, data)
                    break
                del msg, data  # not kept while waiting: an idle connection would hold its AUTH frame
        finally:
            self._closed = True
            ws.set_direct(None)
            await self._release()
            try:  # the send queue's writer runs only while there is something to send
                await asyncio.wait_for(self.out.finish(), self.gateway.close_timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                self.out.abort()
            await self._close_ws(CLOSE_GOING_AWAY if self._stopping else CLOSE_NORMAL, "")

    async def _refuse_large_before_auth(self, size: int) -> None:
        self.gateway.stats.frames_in += 1
        log.warning(
            "connection %s from %s: %d-byte frame before AUTH (max_auth_frame_bytes %d); closing",
            self.member,
            self.peer,
            size,
            self._max_auth_frame,
        )
        self._err(
            None,
            TOO_LARGE,
            f"frame is {size} bytes; before AUTH the limit is {self._max_auth_frame} bytes "
            "(max_auth_frame_bytes)",
        )
        await self._close(CLOSE_MESSAGE_TOO_BIG, TOO_LARGE)

    async def _on_text(self, data: str) -> None:
        try:
            undecodable = self._undecodable
            if undecodable is not None:  # the frame take_now could not decode: not decoded again
                self._undecodable = None
                if undecodable[0] is data:
                    raise undecodable[1]
            frame = decode_hub_frame(data, max_size=self._max_frame)
        except ProtocolError as exc:
            self._err(exc.rid, exc.code, exc.msg)
            if close_code_for(exc.code) is not None:  # an AUTH without a (string) token
                await self._close(close_code_for(exc.code) or CLOSE_AUTH_FAILED, exc.code)
            return
        try:
            await self._dispatch(frame)
        except Exception:
            self._failed_unexpectedly(frame)

    def _failed_unexpectedly(self, frame: ClientFrame) -> None:
        """Log a bug met handling ``frame`` and tell the client; the connection goes on."""
        log.exception("connection %s: unexpected error handling %s", self.member, type(frame).__name__)
        self._err(frame.rid, INTERNAL, "internal error; the request may not have been carried out")

    async def _dispatch(self, frame: ClientFrame) -> None:
        if type(frame) is Auth:
            await self._auth(frame)
            return
        if self.policy is None:
            self._err(frame.rid, NOT_AUTHENTICATED, "send AUTH with a token first")
            return
        if self._handle_now(frame):
            return
        match frame:
            case Subscribe():
                await self._subscribe(frame)
            case Unsubscribe():
                await self._unsubscribe(frame)
            case _:  # pragma: no cover - the codec returns only the frames above
                self._err(frame.rid, BAD_REQUEST, f"unsupported frame {type(frame).__name__}")

    def _handle_now(self, frame: ClientFrame) -> bool:
        """Handle a frame that needs no await (it runs in the background, in the reply order); False for
        the others (AUTH, SUBSCRIBE, UNSUBSCRIBE)."""
        if isinstance(frame, Publish):
            self._publish(frame)
        elif isinstance(frame, Ack):
            self._ack(frame)
        elif isinstance(frame, Nack):
            self._nack(frame)
        elif isinstance(frame, Extend):
            self._extend(frame)
        else:
            return False
        return True

    # -- frames handed over by the socket directly --------------------------------------------------------

    def take_now(self, text: str) -> bool:
        """A text message that arrived while the reader waits for one and nothing is queued before it
        (picows calls this from its frame callback): handle it here, as the reader would in its next step,
        when that needs no await — a PUBLISH, ACK, NACK or EXTEND of an authenticated connection with
        reply room — and save the reader's wake-up. False: the reader takes it (decoding it again unless
        it is a bad frame: then with the error found here)."""
        if self.policy is None or self._stopping or self._closed or not self.out.has_reply_room():
            return False
        try:
            frame = decode_hub_frame(text, max_size=self._max_frame)
        except ProtocolError as exc:
            self._undecodable = (text, exc)  # the reader answers it, and closes when its code says so
            return False
        try:
            if isinstance(frame, Publish):  # a RawPublish too
                self._publish(frame)
            elif not self._handle_now(frame):
                return False
        except Exception:
            self._failed_unexpectedly(frame)
        self.gateway.stats.frames_in += 1
        return True

    def read_done(self) -> None:
        """The end of a socket read in which :meth:`take_now` took frames: the read burst is complete."""
        if self._batch:
            try:
                self._flush_batch()
            except Exception:  # as when the reader's own flush fails: the connection ends
                log.exception("connection %s: handing a publish batch to the bus failed", self.member)
                self._abort()

    # -- AUTH -------------------------------------------------------------------------------------------

    async def _auth(self, frame: Auth) -> None:
        slot = self.out.reserve()
        self._authenticating = True
        try:
            principal = await self.gateway.verifier.verify(frame.token)
            decider = self.gateway.deciders.get(principal.policy)  # shared by every equal policy
            principal = principal.for_session(decider.policy)  # the claims are not kept
        except Exception as exc:
            # The reserved slot must be filled whatever happens, or every later reply waits behind it.
            if not isinstance(exc, AuthError):
                log.exception("connection %s: AUTH failed unexpectedly", self.member)
                exc = AuthError(JWT_INVALID, "token could not be verified")
            self.gateway.stats.errors[exc.code] += 1
            code = exc.code if is_error_code(exc.code) else JWT_INVALID
            self.out.fill(slot, encode_err(frame.rid, code, exc.msg))
            await self._close(close_code_for(exc.code) or CLOSE_AUTH_FAILED, exc.code)
            return
        finally:
            self._authenticating = False
        self._cancel_auth_timer()
        self.principal = principal
        self.policy = principal.policy
        self.decider = decider
        self._may_publish = {}
        self._limits.authenticated(principal.sub, principal.policy.quotas)
        self._auth_generation += 1
        self._schedule_expiry(principal.exp)
        await self._drop_forbidden_subscriptions()
        self.out.fill(
            slot, encode_ok(frame.rid, sub=principal.sub, exp=principal.exp, scopes=list(principal.scopes))
        )

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def _on_auth_timeout(self) -> None:
        self._auth_timer = None
        if self._closed or self._stopping or self.principal is not None:
            return
        if self._authenticating:  # an AUTH is being verified (bounded by the JWKS timeout): let it finish
            self._auth_timer = self._loop.call_later(_AUTH_RECHECK_S, self._on_auth_timeout)
            return
        self._err(None, NO_TOKEN, f"no AUTH within {self._auth_timeout_s:g}s; send AUTH with a token first")
        self._spawn(self._close(CLOSE_AUTH_FAILED, NO_TOKEN))

    def _schedule_expiry(self, exp: int) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        delay = max(0.0, exp + self._leeway_s - time.time())
        generation = self._auth_generation
        self._expiry = self._loop.call_later(delay, self._on_expired, generation)

    def _on_expired(self, generation: int) -> None:
        if generation != self._auth_generation or self._closed:
            return
        self._expiry = None
        self.policy = None  # nothing more is allowed while the close goes out
        self.decider = None
        self._err(None, TOKEN_EXPIRED, "token expired; send AUTH with a fresh token before it expires")
        self._spawn(self._close(CLOSE_TOKEN_EXPIRED, TOKEN_EXPIRED))

    async def _drop_forbidden_subscriptions(self) -> None:
        """After a re-AUTH, end the subscriptions the new policy no longer allows."""
        decider = self.decider
        assert decider is not None
        revoked: set[SocketSub] = set()
        for key, sub in list(self.subs.items()):
            if not await decider.allowed_async("subscribe", sub.pattern, sub.group):
                log.info("connection %s: re-AUTH revoked subscription %s %s", self.member, *key)
                del self.subs[key]
                revoked.add(sub)
        if revoked:
            # EVENTs of those subscriptions still queued are not sent: the token may no longer read them
            # (a group's claims are released by the close below and go to another member).
            dropped = self.out.drop_events(revoked.__contains__)
            if dropped:
                log.info("connection %s: re-AUTH dropped %d queued events", self.member, dropped)
            for sub in revoked:
                await self._close_sub(sub)

    # -- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------------------------

    async def _subscribe(self, frame: Subscribe) -> None:
        if self._stopping:
            self._err(frame.rid, UNAVAILABLE, "hub is shutting down; subscribe on another connection")
            return
        decider = self.decider
        assert decider is not None
        pattern, group = frame.topic, frame.group
        # A large policy decides in a worker thread: the loop keeps serving other connections meanwhile.
        allowed = await decider.allowed_async("subscribe", pattern, group)
        if self.decider is not decider or self.policy is None:  # expired or closed while deciding
            self._err(frame.rid, TOKEN_EXPIRED if not self._closed else UNAVAILABLE, "the token ended")
            return
        if not allowed:
            self._err(frame.rid, FORBIDDEN, decider.explain("subscribe", pattern, group))
            return
        key = (pattern, group)
        if key in self.subs:  # idempotent: already subscribed on this connection
            self.out.reply(encode_ok(frame.rid, topic=pattern, group=group))
            return
        if len(self.subs) >= self._max_subs:
            self._err(
                frame.rid,
                RATE_LIMITED,
                f"too many subscriptions: this connection has {len(self.subs)}, "
                f"the limit is {self._max_subs} (max_subscriptions)",
            )
            return
        try:
            options = frame.group_options()
        except ValueError as exc:  # the codec checks opts already; keep a clear answer all the same
            self._err(frame.rid, BAD_REQUEST, f"SUBSCRIBE.opts: {exc}")
            return
        assert self.principal is not None
        owner = self.principal.sub or ""  # tokens without a sub share one count
        refused = self.gateway.quota.acquire(owner, pattern, group)
        if refused is not None:
            log.info("connection %s: SUBSCRIBE %s %s refused: %s", self.member, pattern, group, refused)
            self._err(frame.rid, RATE_LIMITED, refused)
            return
        self._quota_owner[key] = owner
        # The slot goes first so that the OK precedes this subscription's first EVENT.
        slot = self.out.reserve()
        sub = SocketSub(self.out, self.paused, self.gateway.stats, pattern, group)
        sub.withhold = self._withhold
        self.subs[key] = sub
        try:
            sub.subscription = await self.gateway.bus.subscribe(
                pattern, group, sub.deliver, options=options, member=self.member, hold=self.out.hold
            )
        except Exception as exc:
            self.subs.pop(key, None)
            self.paused.pop(sub, None)
            self._release_quota(key)
            if isinstance(exc, StoreUnavailable):
                self.out.fill(slot, self._err_bytes(frame.rid, UNAVAILABLE, f"store unavailable: {exc}"))
            elif isinstance(exc, StoreUnsupported):
                self.out.fill(slot, self._err_bytes(frame.rid, BAD_REQUEST, f"SUBSCRIBE.opts: {exc}"))
            else:
                log.error("connection %s: subscribe %s %s failed", self.member, pattern, group, exc_info=exc)
                self.out.fill(slot, self._err_bytes(frame.rid, INTERNAL, "internal error; not subscribed"))
            return
        if self._closed:  # the socket went away while the store answered
            await self._close_sub(sub)
        self.out.fill(slot, encode_ok(frame.rid, topic=pattern, group=group))

    def _withhold(self, sub: SocketSub, delivery: Delivery) -> bool:
        """The dead-letter rule at delivery time: True (and the event settled for a group, so it does not
        come back) when this principal may not read the dead letter's original topic."""
        decider = self.decider
        if decider is None:  # the token ended: nothing readable is decided any more (claims time out)
            return True
        if decider.may_read(delivery.event.topic):
            return False
        self.gateway.stats.events_withheld += 1
        if sub.group is not None:
            ev = delivery.event
            self._spawn(self.gateway.bus.ack(sub.pattern, sub.group, ev.id, seq=ev.seq, member=self.member))
        return True

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        sub = self.subs.pop((frame.topic, frame.group), None)
        if sub is None:
            self._err(frame.rid, NOT_SUBSCRIBED, not_subscribed("UNSUBSCRIBE", frame.topic, frame.group))
            return
        slot = self.out.reserve()
        await self._close_sub(sub)
        self.out.fill(slot, encode_ok(frame.rid))

    def _release_quota(self, key: _SubKey) -> None:
        owner = self._quota_owner.pop(key, None)
        if owner is not None:
            self.gateway.quota.release(owner, *key)

    async def _close_sub(self, sub: SocketSub) -> None:
        self._release_quota((sub.pattern, sub.group))
        self.paused.pop(sub, None)
        subscription, sub.subscription = sub.subscription, None
        if subscription is None:
            return
        try:
            await subscription.close()
        except Exception:
            log.exception(
                "connection %s: closing subscription %s %s failed", self.member, sub.pattern, sub.group
            )

    def _resume_paused(self) -> None:
        paused = list(self.paused)
        self.paused.clear()  # the same dict is shared with every SocketSub of this connection
        for sub in paused:
            if sub.subscription is not None:
                sub.subscription.resume()

    # -- replies, closing -------------------------------------------------------------------------------

    def _err_bytes(self, rid: Rid, code: ErrorCode, msg: str, *, retry_after_ms: int | None = None) -> bytes:
        self.gateway.stats.errors[code] += 1
        return encode_err(rid, code, msg, retry_after_ms=retry_after_ms)

    def _err(self, rid: Rid, code: ErrorCode, msg: str) -> None:
        self.out.reply(self._err_bytes(rid, code, msg))

    def _spawn(self, coro: Any) -> None:
        task = self._loop.create_task(coro)
        self._tasks[task] = None
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.pop(task, None)

    async def _close(self, code: int, reason: str) -> None:
        """Send what is queued (the ERR explaining why, the replies to in-flight requests), then close the
        socket with ``code``. Both steps are bounded: a peer that does not read is cut off.

        On shutdown the policy stays in place: PUBLISH and SUBSCRIBE are refused with ``unavailable``
        (``_stopping``), while ACK/NACK frames still in flight are applied rather than lost."""
        if not self._stopping:
            self.policy = None
            self.decider = None
        try:
            await asyncio.wait_for(self.out.flush(), self.gateway.close_timeout_s)
        except TimeoutError:
            log.info("connection %s: peer is not reading; dropping the connection", self.member)
            self._closed = True
            self._abort()
            return
        self._closed = True
        await self._close_ws(code, reason)

    async def _close_ws(self, code: int, reason: str) -> None:
        if self.ws.closed:
            return
        try:
            await asyncio.wait_for(self.ws.close(code, reason.encode()[:120]), self.gateway.close_timeout_s)
        except TimeoutError:
            self._abort()

    def _abort(self) -> None:
        self.ws.abort()

    async def shutdown(self) -> None:
        """Refuse new requests, let in-flight publishes and acks finish, send their replies, then close
        with 1001 (going away)."""
        self._stopping = True
        self._flush_batch()  # publishes read but not yet handed over still get their durable answer
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=_SHUTDOWN_WAIT_S)
        await self._close(CLOSE_GOING_AWAY, "hub is shutting down")

    async def close_by_operator(self, code: int, reason: str) -> None:
        """An operator closed this connection (``POST /connections/{id}/close``): like :meth:`shutdown`
        (in-flight requests finish and are answered), then close with ``code`` and ``reason``."""
        self._stopping = True
        self._flush_batch()
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=_SHUTDOWN_WAIT_S)
        await self._close(code, reason)

    async def _release(self) -> None:
        """Disconnect: stop the timers and close every subscription (its claims are released for
        redelivery to other members)."""
        self._cancel_auth_timer()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        subs, self.subs = list(self.subs.values()), {}
        for sub in subs:
            await self._close_sub(sub)


def _too_large_before_auth(msg: Message, limit: int) -> bool:
    return (msg[0] == TEXT or msg[0] == BINARY) and utf8_size(msg[1]) > limit
