"""``GET /replay``: the events matching a pattern, streamed as NDJSON (one event per line, seq order),
each shaped as in an EVENT frame (``payload`` always present, ``null`` when null).

``from_seq`` (first seq to include) or ``since`` (first ts, ms) picks the start, ``until`` (last ts, ms)
and ``limit`` the end. The stream reads the store in pages of :data:`PAGE_SIZE` and writes each page as
soon as it is encoded, so memory stays constant whatever the range. It ends at the store's newest event
at the time of the request (sent in the ``X-Replay-Last-Seq`` header): a replay of a busy topic ends.

Once the first line is out the status cannot change: a store failure mid-stream aborts the connection
without the final chunk, so a client sees a truncated transfer, never a stream that merely looks short.
"""

from __future__ import annotations

import logging
from typing import Final

import msgspec
from aiohttp import web

from outboxhub.errors import StoreError
from outboxhub.ops.context import OPS, RouteSpec
from outboxhub.ops.params import BadParameter, Query
from outboxhub.ops.security import require_subscribe
from outboxhub.protocol.codec import wire_event

__all__ = ["NDJSON_CONTENT_TYPE", "PAGE_SIZE", "REPLAY_ROUTE"]

log = logging.getLogger("outboxhub.ops")

PAGE_SIZE: Final = 5_000
NDJSON_CONTENT_TYPE: Final = "application/x-ndjson"
_encoder = msgspec.json.Encoder()


async def _replay(request: web.Request) -> web.StreamResponse:
    query = Query(request.query, ("pattern", "from_seq", "since", "until", "limit"))
    pattern = query.pattern("pattern")
    from_seq = query.integer("from_seq")
    since = query.integer("since")
    until = query.integer("until")
    limit = query.integer("limit", minimum=1)
    if from_seq is not None and since is not None:
        raise BadParameter("since", "give from_seq or since, not both")
    if since is not None and until is not None and until < since:
        raise BadParameter("until", f"must be >= since ({since}), got {until}")
    decider = require_subscribe(pattern, what="replay")

    store = request.app[OPS].hub.store
    end = await store.last_seq()
    after = max(0, (from_seq or 0) - 1)
    response = web.StreamResponse(
        headers={
            "Content-Type": NDJSON_CONTENT_TYPE,
            "Cache-Control": "no-store",
            "X-Replay-Last-Seq": str(end),
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    try:
        while after < end and (limit is None or sent < limit):
            page = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - sent)
            events = await store.scan(pattern, after_seq=after, since_ts=since, until_ts=until, limit=page)
            if events and events[-1].seq > end:
                events = [e for e in events if e.seq <= end]
            if not events:
                break
            after = events[-1].seq
            scanned = len(events)
            # The dead-letter rule: a dead letter whose original topic this token may not read is left out.
            events = [e for e in events if not e.topic.startswith("dlq.") or decider.may_read(e.topic)]
            if events:
                await response.write(_encoder.encode_lines([wire_event(e) for e in events]))
            sent += len(events)
            if scanned < page:
                break
    except ConnectionError as exc:  # the client went away
        log.debug("replay %s: client gone after %d events: %s", pattern, sent, exc)
        return response
    except StoreError as exc:
        log.warning("replay %s: store failed after %d events (%s); aborting the stream", pattern, sent, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


REPLAY_ROUTE: Final = RouteSpec(method="GET", path="/replay", access="read", handler=_replay)
