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

from outboxhub.topics import compile_pattern

__all__ = ["TopicFilter", "pattern_regex", "topic_filter"]

_ANY = "**"
_ONE = "*"
_SEGMENT = "[^.]+"


def _literal(segment: str) -> str:
    # Valid segments hold only [A-Za-z0-9_:-]; escape anything else anyway (in an ARE, a backslash before a
    # non-alphanumeric character makes it literal).
    return "".join(ch if ch.isalnum() or ch == "_" else "\\" + ch for ch in segment)


def pattern_regex(pattern: str) -> str | None:
    """A POSIX regular expression (PostgreSQL ARE, also valid for Python's ``re``) that matches exactly the
    topics ``pattern`` matches; None when the pattern matches every topic (``**``).

    ``*`` is one segment; ``**`` is zero or more segments, so it owns the dot on one side of it.
    """
    tokens = compile_pattern(pattern).tokens  # validated, runs of wildcards normalised
    if _ANY in tokens and tokens.count(_ONE) <= 1 and all(tok in (_ONE, _ANY) for tok in tokens):
        return None  # "one or more segments" (``**``, ``*.**``, ...): every topic has at least one
    out = ["^"]
    started = False
    any_pending = False
    for tok in tokens:
        if tok == _ANY:
            any_pending = True
            continue
        seg = _SEGMENT if tok == _ONE else _literal(tok)
        if not started:
            if any_pending:
                out.append(rf"(?:{_SEGMENT}\.)*")
            out.append(seg)
            started = True
        else:
            if any_pending:
                out.append(rf"(?:\.{_SEGMENT})*")
            out.append(r"\." + seg)
        any_pending = False
    if any_pending:
        out.append(rf"(?:\.{_SEGMENT})*")
    out.append("$")
    return "".join(out)


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
