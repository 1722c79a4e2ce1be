"""Operator views and actions: ``POST /groups/reset``, ``GET /connections``,
``POST /connections/{id}/close`` and ``GET /series`` (the dashboard's charts).

* **reset** moves a group's cursor (``Store.reset_group``): ``to`` is ``"earliest"``, ``"latest"``, a seq
  (the group re-reads the events after it), ``"seq:N"`` or ``"ts:MS"`` (from the first event at or after
  that time). Its pending set is dropped: in-flight deliveries are released (late ACKs are no-ops), and this
  hub's members of the group are woken to claim from the new position. It needs subscribe rights on the
  pattern for the group, as a member joining it would.
* **connections** lists the gateway's live connections: id, the token's ``sub``, remote address, connected
  since, subscriptions, send-queue depth, and publish/deliver rates (per second, over the last sampling
  interval of :mod:`outboxhub.ops.series`) with their totals. A subscription whose pattern the caller may
  not subscribe to is not shown (``hiddenSubscriptions`` counts them).
* **series** returns the ring of :mod:`outboxhub.ops.series`: publish and delivery rates, each topic's
  rate and each group's lag over the last 15 minutes; topics and groups the caller may not subscribe to are
  left out.
* **close** closes one connection with 1008 ``closed_by_operator`` after its in-flight requests are answered.

Each action writes an audit line (``outboxhub.ops`` logger) naming the caller's ``sub``.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from aiohttp import web

from outboxhub.auth.decide import Decider
from outboxhub.model import StartPosition
from outboxhub.ops._http import HTTPProblem, json_response
from outboxhub.ops.context import OPS, RouteSpec
from outboxhub.ops.params import BadParameter, Query
from outboxhub.ops.security import current_principal
from outboxhub.ops.writes import json_body, who
from outboxhub.topics import DLQ_MAX_SEGMENTS, validate_group, validate_pattern

__all__ = ["ACTION_ROUTES", "parse_to"]

log = logging.getLogger("outboxhub.ops")

_TO_HINT: Final = 'must be "earliest", "latest", a seq number, "seq:N" or "ts:MS"'


def parse_to(raw: Any) -> StartPosition:
    """The ``to`` field of a reset; :class:`BadParameter` naming ``to`` otherwise."""
    if raw is None:
        raise BadParameter("to", f"required; {_TO_HINT}")
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise BadParameter("to", f"{_TO_HINT}, got {type(raw).__name__}")
    try:
        return StartPosition.parse(raw)
    except ValueError as exc:
        raise BadParameter("to", f"{_TO_HINT} ({exc})") from None


def _str_field(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise BadParameter(name, "required (a non-empty string)")
    return value


async def _reset(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    body = await json_body(request, ("pattern", "group", "to"))
    pattern = _str_field(body, "pattern")
    try:
        validate_pattern(pattern, max_segments=DLQ_MAX_SEGMENTS)
    except ValueError as exc:
        raise BadParameter("pattern", str(exc)) from None
    group = _str_field(body, "group")
    try:
        validate_group(group)
    except ValueError as exc:
        raise BadParameter("group", str(exc).removeprefix("group ")) from None
    to = parse_to(body.get("to"))
    decider = Decider(current_principal().policy)
    if not decider.allowed("subscribe", pattern, group):
        reason = decider.explain("subscribe", pattern, group)
        raise HTTPProblem(403, f"reset needs subscribe rights on {pattern!r} for group {group!r}: {reason}")
    hub = request.app[OPS].hub
    info = await hub.store.reset_group(pattern, group, to)
    if info is None:
        raise HTTPProblem(404, f"no consumer group {group!r} on {pattern!r}")
    hub.bus.wake_group(pattern, group)
    shown = to.kind if to.kind in ("earliest", "latest") else f"{to.kind}:{to.value}"
    log.info("ops: %s reset group %r on %r to %s (frontier %d)", who(), group, pattern, shown, info.frontier)
    return json_response(
        {
            "pattern": pattern,
            "group": group,
            "to": shown,
            "ackFloor": info.ack_floor,
            "frontier": info.frontier,
            "inFlight": info.in_flight,
        }
    )


def _visible(decider: Decider, pattern: str, group: str | None) -> bool:
    try:
        return decider.allowed("subscribe", pattern, group)
    except ValueError:
        return False


async def _connections(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    ctx = request.app[OPS]
    decider = Decider(current_principal().policy)
    rates = ctx.series.connection_rates()
    rows = []
    for info in ctx.hub.gateway.snapshot():
        subs = [(p, g) for p, g in info.subscriptions if _visible(decider, p, g)]
        publish_rate, deliver_rate = rates.get(info.id, (None, None))
        rows.append(
            {
                "id": info.id,
                "sub": info.sub,
                "remote": info.remote,
                "connectedAt": info.connected_at,
                "subscriptions": [{"pattern": p, "group": g} for p, g in subs],
                "hiddenSubscriptions": len(info.subscriptions) - len(subs),
                "queueDepth": info.queue_depth,
                "published": info.published,
                "delivered": info.delivered,
                "publishRate": publish_rate,
                "deliverRate": deliver_rate,
            }
        )
    return json_response({"connections": rows})


async def _close(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    conn_id = request.match_info["id"]
    if not conn_id.startswith("conn-") or len(conn_id) > 64:
        raise BadParameter("id", f"not a connection id (see GET /connections), got {conn_id[:64]!r}")
    closed = await request.app[OPS].hub.gateway.close_connection(conn_id)
    if not closed:
        raise HTTPProblem(404, f"no open connection {conn_id!r}")
    log.info("ops: %s closed connection %s", who(), conn_id)
    return json_response({"id": conn_id, "closed": True})


def _may_chart(decider: Decider, pattern: str, group: str | None) -> bool:
    try:
        return decider.allowed("subscribe", pattern, group) and (
            group is not None or not pattern.startswith("dlq.") or decider.may_read(pattern)
        )
    except ValueError:
        return False


async def _series(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    sampler = request.app[OPS].series
    data = sampler.ring.series()
    decider = Decider(current_principal().policy)
    data["topics"] = {t: v for t, v in data["topics"].items() if _may_chart(decider, t, None)}
    data["groups"] = {k: v for k, v in data["groups"].items() if _may_chart(decider, *k.split(" ", 1))}
    data["intervalS"] = sampler.interval_s
    return json_response(data)


ACTION_ROUTES: Final = (
    RouteSpec(method="POST", path="/groups/reset", access="write", handler=_reset),
    RouteSpec(method="GET", path="/connections", access="read", handler=_connections),
    RouteSpec(method="POST", path="/connections/{id}/close", access="write", handler=_close),
    RouteSpec(method="GET", path="/series", access="read", handler=_series),
)
