"""The stream's consumers, listed through JetStream's paged API (``$JS.API.CONSUMER.NAMES`` /
``$JS.API.CONSUMER.LIST``), for the group listings (``Groups.all``) and the incarnation lookups
(``Incarnations.names``).

One pager serves both. A request names an offset; the answer carries the page (at most the server's
limit: 1,024 names or 256 infos on nats-server 2.9), the listing's ``total`` and, on a cluster, the
consumers whose leader did not answer in time (``missing``, ``offline``): those occupy places in the
listing too, so the next offset moves past them. The listing ends when the offset reaches ``total``, not
at a short page (a cluster's page is short when a consumer leader is slow).

Offsets index a list that changes as consumers come and go (a scan's throwaway consumer, a reset's new
incarnation and the deletion of its old one, on any hub): a consumer deleted between two pages shifts
the later ones down by one, and the next page would skip one. So every page must report the ``total``
of the first; when it changes, the listing starts again (``_TRIES`` times, then ``StoreUnavailable``).
"""

from __future__ import annotations

import json
from typing import Literal

from outboxhub.errors import StoreError, StoreUnavailable
from outboxhub.store.nats.conn import NatsConn

__all__ = ["consumer_listing"]

_TRIES = 5


async def consumer_listing(conn: NatsConn, kind: Literal["NAMES", "LIST"]) -> list[object]:
    """Every entry of the stream's consumer listing ``kind`` (names, or consumer info dicts), each once."""
    for _ in range(_TRIES):
        entries = await _one_pass(conn, kind)
        if entries is not None:
            return entries
    raise StoreUnavailable(
        f"NATS store {conn.shown}: the stream's consumers changed under {_TRIES} listings in a row"
    )


async def _one_pass(conn: NatsConn, kind: str) -> list[object] | None:
    """One listing from offset 0; None when ``total`` changed between its pages."""
    entries: list[object] = []
    offset = 0
    first_total: int | None = None
    while True:
        answer = await _page(conn, kind, offset)
        total = answer.get("total")
        if not isinstance(total, int):
            raise StoreError(f"NATS store {conn.shown}: consumer listing without a total: {answer!r:.200}")
        if first_total is None:
            first_total = total
        elif total != first_total:
            return None
        page = answer.get("consumers") or []
        skipped = answer.get("missing") or []
        offline = answer.get("offline") or {}
        if not isinstance(page, list) or not isinstance(skipped, list) or not isinstance(offline, dict):
            raise StoreError(f"NATS store {conn.shown}: unexpected consumer listing: {answer!r:.200}")
        entries += page
        covered = len(page) + len(skipped) + len(offline)
        offset += covered
        if offset >= total or not covered:
            return entries


async def _page(conn: NatsConn, kind: str, offset: int) -> dict[str, object]:
    async def request() -> dict[str, object]:
        msg = await conn.nc.request(
            f"$JS.API.CONSUMER.{kind}.{conn.stream}",
            json.dumps({"offset": offset}).encode(),
            timeout=conn.options.timeout_s,
        )
        answer: dict[str, object] = json.loads(msg.data)
        return answer

    answer = await conn.call(f"consumer {kind.lower()}", request)
    if "error" in answer:
        raise StoreError(f"NATS store {conn.shown}: consumer {kind.lower()}: {answer['error']}")
    return answer
