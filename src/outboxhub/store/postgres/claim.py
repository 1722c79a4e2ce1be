"""The common claim in one round trip: ``claim_new`` (a PL/pgSQL function, schema version 3).

Most claims hand out new events only: no pending event of the group is due (no redelivery, no dead letter)
and the group is not key-ordered. ``claim_new`` does such a claim in one statement, run in autocommit mode
(the statement is its own transaction, committed without waiting for the WAL flush like every claim,
``groups.py``): it locks the group row, reads the next page above the frontier in a snapshot taken after
the lock, inserts it into ``pending``, moves the frontier as ``ClaimPlan.frontier`` would, and returns the
page. When it finds a pending event due, or no such group, it changes nothing and answers ``fallback``;
the caller then runs the general claim (``groups.claim``, the planner of ``store/lifecycle.py``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from outboxhub.model import Delivery
from outboxhub.store.lifecycle import ClaimRequest
from outboxhub.store.postgres.events import PgConn, decode_rows
from outboxhub.store.postgres.topics import TopicFilter, topic_filter

__all__ = ["claim_new", "filter_args", "filter_args_of", "handles"]

_CLAIM_NEW = "SELECT * FROM claim_new(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"


def handles(request: ClaimRequest) -> bool:
    """Whether ``claim_new`` may take ``request`` (it may still answer ``fallback``)."""
    return request.limit > 0 and not request.ordered


def filter_args(where: TopicFilter) -> tuple[int, str | None, str | None, str | None]:
    """``claim_new``'s ``(p_kind, p_a, p_b, p_c)`` for a topic filter: 0 every topic, 1 one concrete topic
    (``p_a``), 2 a regular expression (``p_c``), 3 a literal prefix (``p_a`` itself, ``p_b`` a LIKE below
    it) and a regular expression (``p_c``); the shapes of ``topics.topic_filter``."""
    if where.everything:
        return 0, None, None, None
    if where.concrete:
        return 1, where.params[0], None, None
    if len(where.params) == 1:
        return 2, None, None, where.params[0]
    prefix, like, regex = where.params
    return 3, prefix, like, regex


def _seq(row: tuple[Any, ...]) -> int:
    return int(row[1])


@lru_cache(maxsize=1024)
def filter_args_of(pattern: str) -> tuple[int, str | None, str | None, str | None]:
    """``filter_args`` of a pattern's topic filter (cached)."""
    return filter_args(topic_filter(pattern))


async def claim_new(conn: PgConn, request: ClaimRequest) -> list[Delivery] | None:
    """The claim, or None when ``claim_new`` fell back (nothing was changed). ``conn`` must be in
    autocommit mode with no transaction open."""
    plan = request.plan()
    cur = await conn.execute(
        _CLAIM_NEW,
        (
            request.pattern,
            request.group,
            request.member,
            request.now,
            plan.deadline,
            request.limit,
            *filter_args_of(request.pattern),
        ),
    )
    rows = await cur.fetchall()
    if rows and rows[0][0]:
        return None
    rows.sort(key=_seq)  # the page's order (no ORDER BY on the page, whose plan is a sort-free index range)
    return [
        Delivery(event=event, attempt=1, deadline=plan.deadline)
        for event in decode_rows([r[1:] for r in rows])
    ]
