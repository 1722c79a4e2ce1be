"""Topic patterns as anchored regular expressions, for backends that match topic names in the database
with a non-backtracking engine (PostgreSQL's ``~`` operator; MongoDB's ``$regex`` backtracks, so the MongoDB
store matches topic names in Python instead). Backend-neutral: no driver is imported here.
"""

from __future__ import annotations

from outboxhub.topics import compile_pattern

__all__ = ["matches_every_topic", "pattern_regex"]

_ANY = "**"
_ONE = "*"
_SEGMENT = "[^.]+"


def _literal(segment: str) -> str:
    # Valid segments hold only [A-Za-z0-9_:-]; escape anything else anyway (in an ARE, a backslash before a
    # non-alphanumeric character makes it literal).
    return "".join(ch if ch.isalnum() or ch == "_" else "\\" + ch for ch in segment)


def matches_every_topic(pattern: str) -> bool:
    """Whether ``pattern`` matches every topic: "one or more segments" (``**``, ``*.**``, ``**.*``)."""
    tokens = compile_pattern(pattern).tokens
    return _ANY in tokens and tokens.count(_ONE) <= 1 and all(tok in (_ONE, _ANY) for tok in tokens)


def pattern_regex(pattern: str) -> str | None:
    """A POSIX regular expression (PostgreSQL ARE, also valid for Python's ``re``) that matches exactly the
    topics ``pattern`` matches; None when the pattern matches every topic (``**``).

    ``*`` is one segment; ``**`` is zero or more segments, so it owns the dot on one side of it.
    """
    tokens = compile_pattern(pattern).tokens  # validated, runs of wildcards normalised
    if matches_every_topic(pattern):
        return None  # every topic has at least one segment
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
