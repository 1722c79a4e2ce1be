"""Dead letters of a consumer group: ``GET /dlq``, ``POST /dlq/redrive``, ``POST /dlq/purge``.

A dead letter is an event on ``dlq.<group>.<topic>`` written by the store when an event exhausted its
deliveries (headers ``x-original-topic``, ``x-original-id``, ``x-attempts``, ``x-reason``; see
``store/base.py``). The log is append-only, so neither action deletes anything:

* **redrive** publishes a new event on the original topic with the dead letter's payload, key, tags and
  original headers, plus ``x-redriven-from: <dead letter id>``; its ``caused_by`` names the dead letter. Its
  id is derived from the dead letter's (:func:`redrive_id`), so redriving the same dead letter twice stores
  one event (the second answer counts it under ``duplicates``). If the redriven event dies again, its new
  dead letter has a new id and can be redriven in turn.
* **purge** moves the group's *purge mark* (a cursor kept in the store as the hidden consumer group
  :data:`PURGE_GROUP` on ``dlq.<group>.**``, never claimed from) up to a seq: ``GET /dlq`` lists only the
  dead letters above it. Purging is for "we looked at these, stop showing them"; the events stay in the log
  (``/replay`` still returns them).

Access: a dead letter is shown, redriven or purged only for a token that may subscribe to its
``dlq.<group>.<topic>`` and, by the dead-letter rule of docs/security.md, to ``<topic>`` for ``<group>``.
Others are left out of the list (``hidden`` counts them); a redrive naming one, or a purge over a range
holding one, is refused with 403 (a hostile operator cannot redrive or hide another tenant's dead letters).
Redrive is a publish, so it also needs publish rights on the original topic.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from outboxhub.auth.decide import Decider, dlq_original
from outboxhub.model import MAX_EVENT_ID, Event, NewEvent, StartPosition
from outboxhub.ops._http import HTTPProblem, json_response
from outboxhub.ops.context import OPS, RouteSpec
from outboxhub.ops.params import MAX_INT, BadParameter, Query
from outboxhub.ops.security import current_principal
from outboxhub.ops.writes import ids_field, json_body, who
from outboxhub.topics import DLQ_MAX_SEGMENTS, validate_group, validate_pattern

__all__ = ["DLQ_ROUTES", "PREVIEW_CHARS", "PURGE_GROUP", "dlq_pattern", "redrive_id"]

log = logging.getLogger("outboxhub.ops")

PURGE_GROUP: Final = "~ops-purged"
"""The hidden group that keeps a purge mark (a name no client can use: ``~`` is not allowed in groups)."""

PREVIEW_CHARS: Final = 200
"""Characters of the JSON payload shown in a listing."""

_DEFAULT_LIMIT: Final = 100
_MAX_LIMIT: Final = 1_000
_PAGE: Final = 1_000
_REDRIVE_HEADER: Final = "x-redriven-from"
_DLQ_HEADERS: Final = ("x-original-topic", "x-original-id", "x-group", "x-attempts", "x-reason")
_encoder = msgspec.json.Encoder()


def dlq_pattern(group: str, pattern: str | None) -> str:
    """The pattern of ``group``'s dead letters (of original topics matching ``pattern``, default all)."""
    return f"dlq.{group}.{pattern or '**'}"


def redrive_id(dead_letter_id: str) -> str:
    """The id of the event a redrive of ``dead_letter_id`` publishes: deterministic, so a second redrive is
    a duplicate. ``<id>:redrive`` when that fits in ``MAX_EVENT_ID``, else a digest."""
    readable = f"{dead_letter_id}:redrive"
    if len(readable) <= MAX_EVENT_ID:
        return readable
    return "redrive:" + hashlib.blake2b(dead_letter_id.encode(), digest_size=16).hexdigest()


def _may_see(decider: Decider, topic: str) -> bool:
    try:
        return decider.allowed("subscribe", topic, None) and decider.may_read(topic)
    except ValueError:
        return False


def _preview(payload: Any) -> str:
    text = _encoder.encode(payload).decode()
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


def _original(event: Event, group: str) -> str | None:
    """The original topic of a dead letter of ``group``, from its topic (the header must agree: a hand-
    published ``dlq.*`` event with a forged header is not redriven anywhere else)."""
    found = dlq_original(event.topic)
    if found is None or found[0] != group:
        return None
    header = (event.headers or {}).get("x-original-topic")
    return found[1] if header in (None, found[1]) else None


def _letter_json(event: Event, group: str, redriven: bool) -> dict[str, Any]:
    headers = event.headers or {}
    attempts = headers.get("x-attempts", "")
    return {
        "id": event.id,
        "seq": event.seq,
        "ts": event.ts,
        "topic": _original(event, group),
        "dlqTopic": event.topic,
        "originalId": headers.get("x-original-id"),
        "attempts": int(attempts) if attempts.isdigit() else None,
        "lastError": headers.get("x-reason"),
        "key": event.key,
        "preview": _preview(event.payload),
        "redriven": redriven,
    }


async def _purge_mark(request: web.Request, group: str) -> int:
    cursor = await request.app[OPS].hub.store.cursor(dlq_pattern(group, None), PURGE_GROUP)
    return 0 if cursor is None else cursor.seq


def _group_and_pattern(group: Any, pattern: Any) -> tuple[str, str | None]:
    if not isinstance(group, str):
        raise BadParameter("group", "required: the consumer group whose dead letters to act on")
    try:
        validate_group(group)
    except ValueError as exc:
        raise BadParameter("group", str(exc).removeprefix("group ")) from None
    if pattern is not None:
        if not isinstance(pattern, str) or not pattern:
            raise BadParameter("pattern", "must be a topic pattern of the original topics")
        try:
            validate_pattern(dlq_pattern(group, pattern), max_segments=DLQ_MAX_SEGMENTS)
        except ValueError as exc:
            raise BadParameter("pattern", str(exc)) from None
    return group, pattern


async def _list(request: web.Request) -> web.StreamResponse:
    query = Query(request.query, ("group", "pattern", "after_seq", "limit"))
    group, pattern = _group_and_pattern(
        query.text("group", required=False) or None, query.text("pattern", required=False)
    )
    after = query.integer("after_seq", default=0)
    limit = query.integer("limit", default=_DEFAULT_LIMIT, minimum=1, maximum=_MAX_LIMIT)
    assert after is not None and limit is not None
    store = request.app[OPS].hub.store
    decider = Decider(current_principal().policy)
    mark = await _purge_mark(request, group)
    cursor = max(after, mark)
    shown: list[Event] = []
    hidden = 0
    more = False
    while len(shown) < limit:
        page = await store.scan(dlq_pattern(group, pattern), after_seq=cursor, limit=_PAGE)
        for event in page:
            cursor = event.seq
            if not _may_see(decider, event.topic):
                hidden += 1
            elif len(shown) < limit:
                shown.append(event)
            else:
                more = True
                break
        if more or len(page) < _PAGE:
            break
    found = [await store.get_event(redrive_id(e.id)) for e in shown]
    letters = [_letter_json(e, group, f is not None) for e, f in zip(shown, found, strict=True)]
    return json_response(
        {
            "group": group,
            "pattern": pattern,
            "purgedThrough": mark,
            "deadLetters": letters,
            "hidden": hidden,
            "nextAfterSeq": shown[-1].seq if more and shown else None,
        }
    )


def _refuse(event: Event, group: str, decider: Decider) -> str | None:
    """Why this token may not redrive ``event``, or None."""
    if not _may_see(decider, event.topic):
        return f"dead letter {event.id!r} ({event.topic!r}) is not readable with this token"
    original = _original(event, group)
    if original is None:
        return f"event {event.id!r} on {event.topic!r} is not a dead letter of group {group!r}"
    try:
        if not decider.allowed("publish", original, None):
            return f"redriving {event.id!r} publishes to {original!r}, which this token may not publish to"
    except ValueError:
        return f"dead letter {event.id!r} names an invalid original topic {original!r}"
    return None


def _redriven(event: Event, original: str) -> NewEvent:
    headers = {k: v for k, v in (event.headers or {}).items() if k not in _DLQ_HEADERS}
    headers[_REDRIVE_HEADER] = event.id
    return NewEvent(
        topic=original,
        payload=event.payload,
        id=redrive_id(event.id),
        key=event.key,
        headers=headers,
        tags=event.tags,
        caused_by=[event.id],
        sid=event.sid,
    )


async def _all_letters(
    request: web.Request, group: str, pattern: str | None, upto: int | None
) -> list[Event]:
    store = request.app[OPS].hub.store
    cursor = await _purge_mark(request, group)
    events: list[Event] = []
    while True:
        page = await store.scan(dlq_pattern(group, pattern), after_seq=cursor, limit=_PAGE)
        events.extend(e for e in page if upto is None or e.seq <= upto)
        if len(page) < _PAGE or (upto is not None and page[-1].seq >= upto):
            return events
        if len(events) > 10_000:
            raise BadParameter("ids", "more than 10000 dead letters: redrive them by id, page by page")
        cursor = page[-1].seq


async def _redrive(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    body = await json_body(request, ("group", "pattern", "ids"))
    group, pattern = _group_and_pattern(body.get("group"), body.get("pattern"))
    ids = ids_field(body, allow_all=True, what="dead letter")
    if ids is None:
        raise BadParameter("ids", 'required: a list of dead letter ids or "all"')
    store = request.app[OPS].hub.store
    decider = Decider(current_principal().policy)
    if ids == "all":
        letters = [e for e in await _all_letters(request, group, pattern, None) if _may_see(decider, e.topic)]
    else:
        if pattern is not None:
            raise BadParameter("pattern", 'only with ids "all"')
        letters = []
        for index, event_id in enumerate(ids):
            event = await store.get_event(event_id)
            if event is None:
                raise BadParameter(f"ids[{index}]", f"no event {event_id!r}")
            letters.append(event)
    for event in letters:
        problem = _refuse(event, group, decider)
        if problem is not None:
            raise HTTPProblem(403, f"redrive: {problem}")
    fresh = [_redriven(e, _original(e, group) or "") for e in letters]
    results = await request.app[OPS].hub.bus.publish_batch(fresh) if fresh else []
    published = sum(1 for r in results if not r.duplicate)
    log.info(
        "ops: %s redrove %d dead letter(s) of group %r (%d new, %d already redriven)",
        who(),
        len(results),
        group,
        published,
        len(results) - published,
    )
    return json_response(
        {
            "group": group,
            "redriven": [
                {"id": e.id, "topic": n.topic, "eventId": n.id, "seq": r.seq, "duplicate": r.duplicate}
                for e, n, r in zip(letters, fresh, results, strict=True)
            ],
            "published": published,
            "duplicates": len(results) - published,
        }
    )


def _upto(body: Mapping[str, Any]) -> int | None:
    value = body.get("through_seq")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise BadParameter("through_seq", f"must be a seq number >= 0, got {value!r}")
    return value


async def _purge(request: web.Request) -> web.StreamResponse:
    Query(request.query, ())
    body = await json_body(request, ("group", "through_seq"))
    group, _ = _group_and_pattern(body.get("group"), None)
    upto = _upto(body)
    store = request.app[OPS].hub.store
    if upto is None:
        upto = await store.last_seq()
    decider = Decider(current_principal().policy)
    letters = await _all_letters(request, group, None, upto)
    for event in letters:
        if not _may_see(decider, event.topic):
            raise HTTPProblem(
                403,
                f"purge: dead letter {event.id!r} ({event.topic!r}) up to seq {upto} is not readable"
                " with this token; purge through an earlier seq",
            )
    mark = await _purge_mark(request, group)
    pattern = dlq_pattern(group, None)
    through = max(mark, upto)
    await store.ensure_group(pattern, PURGE_GROUP, StartPosition(kind="seq", value=through))
    await store.reset_group(pattern, PURGE_GROUP, StartPosition(kind="seq", value=through))
    log.info(
        "ops: %s purged %d dead letter(s) of group %r through seq %d", who(), len(letters), group, through
    )
    return json_response({"group": group, "purged": len(letters), "purgedThrough": through})


DLQ_ROUTES: Final = (
    RouteSpec(method="GET", path="/dlq", access="read", handler=_list),
    RouteSpec(method="POST", path="/dlq/redrive", access="write", handler=_redrive),
    RouteSpec(method="POST", path="/dlq/purge", access="write", handler=_purge),
)
