"""The ops API's JSON routes: topics, groups, cursors, lag, latest-by-key, outboxes (and their operator
actions), metrics.

Response field names follow the legacy ops dashboard of the PromClient protocol (``lastId``, ``lastTs``,
``lagMs``: camelCase); inputs (query parameters, JSON bodies) are snake_case like the rest of outboxhub
(``from_seq``, ``older_than_ms``). Every bad input is a ``400 {"error": "<parameter>: <problem>"}``. The
shapes are written down in :mod:`outboxhub.ops.openapi`, and a test holds both to each other.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from outboxhub.auth.decide import Decider
from outboxhub.errors import OutboxhubError, StoreError
from outboxhub.model import Cursor, GroupInfo, Lag
from outboxhub.ops._http import HTTPProblem, json_response
from outboxhub.ops.context import OPS, OpsContext, RouteSpec
from outboxhub.ops.dlq import PURGE_GROUP
from outboxhub.ops.metrics import CONTENT_TYPE, GroupSample, OutboxSample
from outboxhub.ops.outboxes import OutboxHandle, describe_error
from outboxhub.ops.params import BadParameter, Query
from outboxhub.ops.security import current_principal, dead_letter_refusal, require_subscribe
from outboxhub.ops.writes import MAX_IDS, ids_field, json_body, who
from outboxhub.outbox import OutboxRecord, OutboxStore
from outboxhub.protocol.codec import wire_event
from outboxhub.store.base import GroupsWithLag, Store, groups_with_lag

__all__ = ["API_ROUTES", "MAX_IDS", "refresh_metrics"]

log = logging.getLogger("outboxhub.ops")

_DEFAULT_DEAD_LIMIT: Final = 50
_MAX_DEAD_LIMIT: Final = 1_000


def _ctx(request: web.Request) -> OpsContext:
    return request.app[OPS]


# -- shapes -------------------------------------------------------------------------------------------------


def _cursor_json(cursor: Cursor) -> dict[str, Any]:
    return {
        "topic": cursor.pattern,
        "group": cursor.group,
        "seq": cursor.seq,
        "lastId": cursor.last_id,
        "lastTs": cursor.last_ts,
    }


def _group_json(info: GroupInfo, lag: Lag | None, members: int) -> dict[str, Any]:
    return {
        "pattern": info.pattern,
        "group": info.group,
        "members": members,
        "inFlight": info.in_flight,
        "ackFloor": info.ack_floor,
        "frontier": info.frontier,
        "deadLetters": info.dead_letters,
        "lagCount": lag.lag_count if lag is not None else None,
        "lagMs": lag.lag_ms if lag is not None else None,
        "tail": lag.tail_id if lag is not None else None,
        "tailSeq": lag.tail_seq if lag is not None else None,
    }


def _record_json(record: OutboxRecord, decider: Decider) -> dict[str, Any]:
    """A dead record; its payload and headers only for a token that may subscribe to its topic (and read
    it, for a dead letter), else ``null`` with ``"redacted": true``."""
    readable = _may_see(decider, record.topic)
    return {
        "id": record.id,
        "topic": record.topic,
        "key": record.key,
        "payload": record.payload if readable else None,
        "headers": record.headers if readable else None,
        "redacted": not readable,
        "attempts": record.attempts,
        "lastErr": record.last_err,
        "ts": record.ts,
        "seq": record.seq,
    }


# -- store reads --------------------------------------------------------------------------------------------


async def _groups_with_lag(ctx: OpsContext) -> list[tuple[GroupInfo, Lag | None, int]]:
    rows = await groups_with_lag(ctx.hub.store, lambda g: g.group != PURGE_GROUP)  # the hidden purge marks
    members = ctx.hub.bus.members()
    return [(g, lag, members.get((g.pattern, g.group), 0)) for g, lag in rows]


async def _cursors_of(store: Store, topic: str) -> list[Cursor]:
    """The cursors of the groups subscribed to exactly the pattern ``topic``: from the batched overview
    where the store has one (its lag costs no count there), else one ``cursor`` each (a ``lag`` would also
    count every event above each group's floor)."""
    if isinstance(store, GroupsWithLag):
        rows = await store.groups_with_lag(lambda g: g.pattern == topic)
        return [lag.cursor for _, lag in rows if lag is not None]
    names = [g.group for g in await store.groups() if g.pattern == topic]
    found = await asyncio.gather(*(store.cursor(topic, name) for name in names))
    return [c for c in found if c is not None]


async def _topics(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    store = _ctx(request).hub.store
    topics, last_seq = await asyncio.gather(store.topics(), store.last_seq())
    return json_response(
        {
            "lastSeq": last_seq,
            "topics": [
                {"topic": t.topic, "count": t.count, "lastSeq": t.last_seq, "lastTs": t.last_ts}
                for t in topics
            ],
        }
    )


async def _groups(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    rows = await _groups_with_lag(_ctx(request))
    return json_response({"groups": [_group_json(g, lag, members) for g, lag, members in rows]})


async def _cursors(request: web.Request) -> web.StreamResponse:
    query = Query(request.query, ("topic",))
    topic = query.pattern("topic")
    found = await _cursors_of(_ctx(request).hub.store, topic)
    cursors = [{"group": c.group, "lastId": c.last_id, "lastTs": c.last_ts, "seq": c.seq} for c in found]
    return json_response({"topic": topic, "cursors": cursors})


async def _lag(request: web.Request) -> web.StreamResponse:
    query = Query(request.query, ("topic", "group"))
    topic = query.pattern("topic")
    group = query.group("group")
    store = _ctx(request).hub.store
    lag = await store.lag(topic, group)
    if lag is None:  # no such group: the legacy shape with nothing to compare
        tail = await store.tail(topic)
        return json_response(
            {
                "topic": topic,
                "group": group,
                "lastCursor": None,
                "tail": tail.id if tail else None,
                "tailSeq": tail.seq if tail else None,
                "tailTs": tail.ts if tail else None,
                "lagMs": None,
                "lagCount": None,
            }
        )
    return json_response(
        {
            "topic": topic,
            "group": group,
            "lastCursor": _cursor_json(lag.cursor),
            "tail": lag.tail_id,
            "tailSeq": lag.tail_seq,
            "tailTs": lag.tail_ts,
            "lagMs": lag.lag_ms,
            "lagCount": lag.lag_count,
        }
    )


async def _latest_by_key(request: web.Request) -> web.StreamResponse:
    query = Query(request.query, ("topic", "key"))
    topic = query.topic("topic")
    key = query.required("key")
    decider = require_subscribe(topic, what="latest-by-key")
    if not decider.may_read(topic):
        raise HTTPProblem(403, f"latest-by-key: {dead_letter_refusal(topic)}")
    found = (await _ctx(request).hub.store.latest_by_key(topic, [key])).get(key)
    return json_response(None if found is None else wire_event(found))


# -- outboxes -----------------------------------------------------------------------------------------------


def _may_see(decider: Decider, topic: str) -> bool:
    try:
        return decider.allowed("subscribe", topic, None) and decider.may_read(topic)
    except ValueError:  # not a valid topic (a record the drainer will refuse): no rule grants it
        return False


async def _outbox_state(handle: OutboxHandle, dead_limit: int, decider: Decider | None) -> dict[str, Any]:
    state: dict[str, Any] = {"name": handle.name}
    try:
        store = await handle.store()
        stats = await store.stats()
        dead = await store.list_dead(dead_limit) if dead_limit else []
    except (OutboxhubError, OSError) as exc:
        # The URL may be quoted in the message: show it masked, like the name.
        state.update(up=False, error=describe_error(exc).replace(handle.url, handle.name))
        return state
    state.update(
        up=True,
        table=store.table,
        pending=stats.pending,
        claimed=stats.claimed,
        dead=stats.dead,
        oldestPendingAgeMs=stats.oldest_pending_age_ms,
        nextRetryAt=stats.next_retry_at,
        deadRecords=[_record_json(r, decider) for r in dead] if decider is not None else [],
    )
    return state


async def _outbox(request: web.Request) -> web.StreamResponse:
    query = Query(request.query, ("dead_limit",))
    limit = query.integer("dead_limit", default=_DEFAULT_DEAD_LIMIT, maximum=_MAX_DEAD_LIMIT)
    assert limit is not None
    handles = _ctx(request).outboxes.handles
    decider = Decider(current_principal().policy)
    states = await asyncio.gather(*(_outbox_state(h, limit, decider) for h in handles))
    return json_response({"outboxes": states})


def _outbox_handle(ctx: OpsContext, body: Mapping[str, Any]) -> OutboxHandle:
    name = body.get("outbox")
    if name is not None and not isinstance(name, str):
        raise BadParameter("outbox", f"must be an outbox name (string), got {type(name).__name__}")
    try:
        return ctx.outboxes.find(name)
    except LookupError as exc:
        raise BadParameter("outbox", str(exc.args[0])) from None


async def _open(handle: OutboxHandle) -> OutboxStore:
    try:
        return await handle.store()
    except (OutboxhubError, OSError) as exc:
        reason = describe_error(exc).replace(handle.url, handle.name)
        raise HTTPProblem(503, f"outbox {handle.name!r} cannot be opened: {reason}") from None


async def _outbox_retry(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    ctx = _ctx(request)
    body = await json_body(request, ("outbox", "ids"))
    ids = ids_field(body, allow_all=True)
    if ids is None:
        raise BadParameter("ids", 'required: a list of dead record ids, or "all"')
    handle = _outbox_handle(ctx, body)
    store = await _open(handle)
    retried = await store.retry(ids)
    log.info("ops: %s retried %d dead record(s) of outbox %s", who(), retried, handle.name)
    return json_response({"outbox": handle.name, "retried": retried})


async def _outbox_purge(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    ctx = _ctx(request)
    body = await json_body(request, ("outbox", "ids", "older_than_ms"))
    ids = ids_field(body, allow_all=False)
    older = body.get("older_than_ms")
    if older is not None and (isinstance(older, bool) or not isinstance(older, int) or older < 0):
        raise BadParameter("older_than_ms", f"must be a whole number of milliseconds >= 0, got {older!r}")
    if (ids is None) == (older is None):
        raise BadParameter("ids", "give exactly one of ids (dead record ids) or older_than_ms")
    handle = _outbox_handle(ctx, body)
    store = await _open(handle)
    purged = await store.purge(ids if isinstance(ids, list) else None, older_than_ms=older)
    log.info("ops: %s purged %d dead record(s) of outbox %s", who(), purged, handle.name)
    return json_response({"outbox": handle.name, "purged": purged})


# -- metrics ------------------------------------------------------------------------------------------------


async def refresh_metrics(ctx: OpsContext) -> None:
    """Read groups, lag and outbox counts into the hub's metrics (before a scrape)."""
    store_up = True
    last_seq = 0
    groups: list[GroupSample] = []
    try:
        last_seq = await ctx.hub.store.last_seq()
        for info, lag, members in await _groups_with_lag(ctx):
            groups.append(
                GroupSample(
                    pattern=info.pattern,
                    group=info.group,
                    members=members,
                    in_flight=info.in_flight,
                    dead_letters=info.dead_letters,
                    lag_count=lag.lag_count if lag is not None else 0,
                    lag_ms=lag.lag_ms if lag is not None else None,
                )
            )
    except StoreError as exc:
        log.warning("metrics: store unavailable: %s", exc)
        store_up = False
    states = await asyncio.gather(*(_outbox_state(h, 0, None) for h in ctx.outboxes.handles))
    outboxes = [
        OutboxSample(
            outbox=s["name"],
            up=bool(s["up"]),
            pending=s.get("pending", 0),
            claimed=s.get("claimed", 0),
            dead=s.get("dead", 0),
            oldest_pending_age_ms=s.get("oldestPendingAgeMs"),
        )
        for s in states
    ]
    ctx.metrics.update(store_up=store_up, last_seq=last_seq, groups=groups, outboxes=outboxes)


async def _metrics(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    ctx = _ctx(request)
    await refresh_metrics(ctx)
    return web.Response(body=ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


API_ROUTES: Final[tuple[RouteSpec, ...]] = (
    RouteSpec(method="GET", path="/topics", access="read", handler=_topics),
    RouteSpec(method="GET", path="/groups", access="read", handler=_groups),
    RouteSpec(method="GET", path="/cursors", access="read", handler=_cursors),
    RouteSpec(method="GET", path="/lag", access="read", handler=_lag),
    RouteSpec(method="GET", path="/latest-by-key", access="read", handler=_latest_by_key),
    RouteSpec(method="GET", path="/outbox", access="read", handler=_outbox),
    RouteSpec(method="POST", path="/outbox/retry", access="write", handler=_outbox_retry),
    RouteSpec(method="POST", path="/outbox/purge", access="write", handler=_outbox_purge),
    RouteSpec(method="GET", path="/metrics", access="metrics", handler=_metrics),
)
"""The JSON routes with their access levels (``/replay``, static files and ``/openapi.json`` live in their
own modules)."""
