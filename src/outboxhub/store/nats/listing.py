"""The stream's consumers, listed through JetStream's paged API (``$JS.API.CONSUMER.NAMES`` /
``$JS.API.CONSUMER.LIST``), for the group listings (``Groups.all``) and the incarnation lookups
(``Incarnations.names``).

One pager serves both. A request names an offset; the answer carries the page (at most the server's
limit: 1,024 names or 256 infos on nats-server 2.9), the listing's ``total`` and, on a cluster, the
consumers whose leader did not answer in time (``missing``, ``offline``): those occupy places in the
listing too, so the next offset moves past them. The listing ends when the offset reaches ``total``, not
at a short page (a cluster's page is short when a consumer leader is slow).

Offsets index a list that changes as consumers come and go (a scan's throwaway consumer, a reset's new
incarnation and the deletion of its old one, on any hub): a consumer deleted before the offset between two
pages shifts the later ones down by one, and the next page would skip one; one created there, up by one,
and the next page would repeat one. ``total`` does not tell: a deletion before the offset and a creation
after it leave it as it was. The server sorts the consumers by name before it takes a page (nats-server's
handlers of both requests, single server and cluster, 2.2 to 2.11), so every page after the first
asks from one place earlier and must start with the previous page's last name (the greatest name that
page covered, ``missing`` and ``offline`` included). When it does, exactly ``offset - 1`` names sort below
that name now, so the page lists exactly the consumers above it: each consumer that existed throughout
is listed once, whatever changed before or after the boundary. When it does not, the listing starts again
(``_TRIES`` times, then ``StoreUnavailable``). A consumer created or deleted during the listing may or may
not be in it, as with any listing.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Literal

from outboxhub.errors import StoreError, StoreUnavailable
from outboxhub.store.nats.conn import NatsConn

__all__ = ["consumer_listing", "one_pass"]

_TRIES = 5


async def consumer_listing(conn: NatsConn, kind: Literal["NAMES", "LIST"]) -> list[object]:
    """Every entry of the stream's consumer listing ``kind`` (names, or consumer info dicts), each once."""

    async def fetch(offset: int) -> dict[str, object]:
        return await _page(conn, kind, offset)

    for _ in range(_TRIES):
        entries = await one_pass(conn.shown, fetch)
        if entries is not None:
            return entries
    raise StoreUnavailable(
        f"NATS store {conn.shown}: the stream's consumers changed under {_TRIES} listings in a row"
    )


async def one_pass(shown: str, fetch: Callable[[int], Awaitable[dict[str, object]]]) -> list[object] | None:
    """One listing from offset 0 through ``fetch`` (the answer of the page at an offset); None when a page
    did not start where the previous one ended."""
    entries: list[object] = []
    offset = 0
    boundary: str | None = None
    """The name at ``offset - 1`` when the previous page was answered: the next page starts with it."""
    while True:
        start = offset if boundary is None else offset - 1
        answer = await fetch(start)
        total = answer.get("total")
        if not isinstance(total, int):
            raise StoreError(f"NATS store {shown}: consumer listing without a total: {answer!r:.200}")
        page = answer.get("consumers") or []
        skipped = answer.get("missing") or []
        offline = answer.get("offline") or {}
        if not isinstance(page, list) or not isinstance(skipped, list) or not isinstance(offline, dict):
            raise StoreError(f"NATS store {shown}: unexpected consumer listing: {answer!r:.200}")
        listed = [(_name(shown, entry), entry) for entry in page]
        names = (
            [name for name, _ in listed] + [str(name) for name in skipped] + [str(name) for name in offline]
        )
        if boundary is not None:
            if not names or min(names) != boundary:
                return None  # consumers before the boundary came or went: this page is shifted
            listed = [(name, entry) for name, entry in listed if name != boundary]
        entries += [entry for _, entry in listed]
        covered = len(names)
        if start + covered >= total or not covered:
            return entries
        if boundary is not None and covered == 1:
            return None  # a page of the boundary alone cannot move on (pages are 256 or 1,024 long)
        offset = start + covered
        boundary = max(names)


def _name(shown: str, entry: object) -> str:
    """The consumer name of a listing entry: a name (``NAMES``) or a consumer info (``LIST``)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return str(entry["name"])
    raise StoreError(f"NATS store {shown}: consumer listing entry without a name: {entry!r:.200}")


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
