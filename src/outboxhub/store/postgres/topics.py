"""Pattern scans on PostgreSQL: a pattern becomes a filter on the small ``topics`` table, never on events.

A pattern resolves, inside the query, to the topics it matches (``topic = $1`` for a concrete pattern, a
POSIX regular expression otherwise, narrowed by the pattern's literal prefix through the ``COLLATE "C"``
unique index); the events of each matched topic are then read by the ``(topic_id, seq)`` index in a
``LATERAL`` subquery and merged by seq. Topics whose ``last_seq`` is not above the lower bound are skipped
without touching ``events``. No Python runs per row, and no topic cache can go stale when another hub
process creates a topic: the catalog is read in the query's own snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass

from outboxhub.store.patterns import pattern_regex
from outboxhub.topics import compile_pattern

__all__ = ["TopicFilter", "topic_filter"]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True)
class TopicFilter:
    """A SQL condition on ``topics`` (alias ``t``) selecting the topics of a pattern, with its parameters.

    ``everything`` is true when the pattern matches every topic (the condition is then ``TRUE``).
    """

    sql: str
    params: tuple[str, ...]
    everything: bool = False
    concrete: bool = False


def topic_filter(pattern: str) -> TopicFilter:
    """The ``topics`` condition for ``pattern`` (validated here: raises ``TopicError`` when invalid)."""
    matcher = compile_pattern(pattern)
    if matcher.concrete:
        return TopicFilter("t.topic = %s", (pattern,), concrete=True)
    regex = pattern_regex(pattern)
    if regex is None:
        return TopicFilter("TRUE", (), everything=True)
    if not matcher.prefix:
        return TopicFilter("t.topic ~ %s", (regex,))
    # Every match equals the prefix or starts with "prefix."; the LIKE uses the unique index.
    return TopicFilter(
        "(t.topic = %s OR t.topic LIKE %s) AND t.topic ~ %s",
        (matcher.prefix, _like_escape(matcher.prefix + ".") + "%", regex),
    )
