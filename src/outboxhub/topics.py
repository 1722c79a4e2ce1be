"""Topics and patterns: validation, matching, and the ``covers`` / ``overlaps`` relations. Pure, no I/O.

A topic is 1–32 dot-separated segments of 1–128 characters from ``[A-Za-z0-9_:-]``. A pattern may also use
the whole-segment wildcards ``*`` (exactly one segment) and ``**`` (zero or more segments), anywhere and
any number of times: ``a.**`` matches ``a``, ``a.b`` and ``a.b.c``.

Everything here treats a pattern as a regular language over segments: a literal segment is a symbol,
``*`` is any one symbol, ``**`` any sequence. Segment limits belong to validation only; the relations are
exact over topics of any length. All algorithms are polynomial (no backtracking):

- matching simulates the pattern's NFA over the topic's segments with a bit set of positions;
- ``overlaps`` searches the product of the two NFAs for a common word;
- ``covers`` is a dynamic programme over pairs of positions, justified in ``_covers_tokens``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from outboxhub.errors import TopicError

__all__ = [
    "DLQ_MAX_SEGMENTS",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_LENGTH",
    "Matcher",
    "TopicError",
    "compile_pattern",
    "covers",
    "is_concrete",
    "literal_prefix",
    "match_topic",
    "overlaps",
    "validate_group",
    "validate_pattern",
    "validate_topic",
]

MAX_SEGMENTS: Final = 32
"""Most segments in a topic or pattern that a client may use."""

DLQ_MAX_SEGMENTS: Final = MAX_SEGMENTS + 2
"""Most segments in a dead-letter topic ``dlq.<group>.<topic>``: the internal ceiling."""

MAX_SEGMENT_LENGTH: Final = 128

_ONE: Final = "*"
_ANY: Final = "**"

_SEGMENT: Final = rf"[A-Za-z0-9_:-]{{1,{MAX_SEGMENT_LENGTH}}}"
_SEGMENT_RE: Final = re.compile(_SEGMENT)
_BAD_CHAR_RE: Final = re.compile(r"[^A-Za-z0-9_:-]")
_ALLOWED: Final = "allowed: letters, digits, '_', ':', '-'"
_SHOWN_MAX: Final = 80


@functools.lru_cache(maxsize=16)
def _whole_re(max_segments: int, wildcards: bool) -> re.Pattern[str]:
    seg = rf"(?:{_SEGMENT}|\*\*?)" if wildcards else _SEGMENT
    return re.compile(rf"{seg}(?:\.{seg}){{0,{max_segments - 1}}}")


def _show(text: str) -> str:
    """Quote user input for an error message, cut short so a huge input cannot flood a log line."""
    if len(text) > _SHOWN_MAX:
        return repr(text[:_SHOWN_MAX]) + "…"
    return repr(text)


def _problem(text: str, *, wildcards: bool, max_segments: int) -> str:
    """Explain why ``text`` failed the fast full-string check (called only on failure)."""
    if text == "":
        return "it is empty"
    segments = text.split(".")
    if len(segments) > max_segments:
        return f"it has {len(segments)} segments; at most {max_segments} are allowed"
    for index, seg in enumerate(segments, start=1):
        if seg == "":
            return f"segment {index} is empty"
        if seg in (_ONE, _ANY):
            if wildcards:
                continue
            return f"segment {index} {seg!r} is a wildcard; publish topics must be concrete"
        if len(seg) > MAX_SEGMENT_LENGTH:
            return (
                f"segment {index} {_show(seg)} is {len(seg)} characters long; "
                f"at most {MAX_SEGMENT_LENGTH} are allowed"
            )
        if wildcards and "*" in seg:
            return (
                f"segment {index} {_show(seg)} mixes '*' with other characters; "
                "'*' and '**' must be whole segments"
            )
        bad = _BAD_CHAR_RE.search(seg)
        if bad is not None:
            return f"segment {index} {_show(seg)} has invalid characters: {bad.group()!r} ({_ALLOWED})"
    raise AssertionError(f"no problem found in {text!r}")  # pragma: no cover - the regex and this disagree


def _validate(text: object, *, kind: str, wildcards: bool, max_segments: int) -> str:
    if not isinstance(text, str):
        raise TopicError(f"{kind} must be a string, got {type(text).__name__}")
    if isinstance(max_segments, bool) or not isinstance(max_segments, int) or max_segments < 1:
        raise ValueError(f"max_segments must be a positive int, got {max_segments!r}")
    if _whole_re(max_segments, wildcards).fullmatch(text) is None:
        problem = _problem(text, wildcards=wildcards, max_segments=max_segments)
        raise TopicError(f"{kind} {_show(text)}: {problem}")
    return text


def validate_topic(topic: str, *, max_segments: int = MAX_SEGMENTS) -> str:
    """Return ``topic`` if it is a valid concrete topic, else raise :class:`TopicError` naming the segment.

    ``max_segments`` defaults to the client limit (32); dead-letter topics need ``DLQ_MAX_SEGMENTS``.
    """
    return _validate(topic, kind="topic", wildcards=False, max_segments=max_segments)


def validate_pattern(pattern: str, *, max_segments: int = MAX_SEGMENTS) -> str:
    """Return ``pattern`` if valid (wildcards only as whole segments), else raise :class:`TopicError`."""
    return _validate(pattern, kind="pattern", wildcards=True, max_segments=max_segments)


def validate_group(group: str) -> str:
    """Return ``group`` if it is a valid consumer group name, else raise :class:`TopicError`.

    A group name is one topic segment (1-128 of ``A-Z a-z 0-9 _ : -``), because it becomes one in the
    dead-letter topic ``dlq.<group>.<topic>``. The message starts with ``group <name>``.
    """
    if not isinstance(group, str):
        raise TopicError(f"group must be a string, got {type(group).__name__}")
    if _SEGMENT_RE.fullmatch(group) is None:
        raise TopicError(
            f"group {_show(group)} is not a valid group name: use 1-{MAX_SEGMENT_LENGTH} characters of "
            "A-Z a-z 0-9 _ : - (it becomes a segment of the dead-letter topic dlq.<group>.<topic>)"
        )
    return group


def _tokens(pattern: str) -> tuple[str, ...]:
    """Validate (up to the internal ceiling) and split, normalising runs of wildcards.

    A run of wildcards with k ``*`` and at least one ``**`` means "at least k segments", so it is rewritten
    as k ``*`` followed by a single ``**``. Afterwards every ``**`` is followed by a literal or by the end,
    which both the matcher (one-step closure) and the ``covers`` proof rely on. Finally ``**`` alone
    becomes ``*.**``, so no normalised pattern matches the empty sequence of segments.
    """
    validate_pattern(pattern, max_segments=DLQ_MAX_SEGMENTS)
    out: list[str] = []
    stars = 0
    any_run = False
    for seg in pattern.split("."):
        if seg == _ONE:
            stars += 1
        elif seg == _ANY:
            any_run = True
        else:
            out.extend([_ONE] * stars)
            if any_run:
                out.append(_ANY)
            stars, any_run = 0, False
            out.append(seg)
    out.extend([_ONE] * stars)
    if any_run:
        out.append(_ANY)
    if out == [_ANY]:
        # Only an all-``**`` pattern would match the empty topic, which does not exist: over real topics
        # it means "at least one segment". Saying so keeps the relations exact (``*.**`` covers ``**``).
        return (_ONE, _ANY)
    return tuple(out)


def is_concrete(pattern: str) -> bool:
    """True when ``pattern`` (which must be valid) has no wildcard segment."""
    validate_pattern(pattern, max_segments=DLQ_MAX_SEGMENTS)
    return not any(seg in (_ONE, _ANY) for seg in pattern.split("."))


def literal_prefix(pattern: str) -> str:
    """The leading literal segments of ``pattern``, dot-joined: ``"a.b"`` for ``a.b.*.c``, ``""`` for ``*.x``.

    Every topic the pattern matches equals this prefix or starts with it followed by a dot, which lets a
    store narrow a query. A concrete pattern is its own prefix.
    """
    return compile_pattern(pattern).prefix


@dataclass(frozen=True, slots=True)
class Matcher:
    """A compiled pattern. ``match`` runs in O(segments x pattern length) with no backtracking.

    Build it with :func:`compile_pattern` (cached). ``tokens`` is the normalised pattern.
    """

    pattern: str
    tokens: tuple[str, ...]
    prefix: str
    concrete: bool
    _literal_bits: dict[str, int] = field(repr=False, compare=False)
    _one_bits: int = field(repr=False, compare=False)
    _any_bits: int = field(repr=False, compare=False)
    _accept: int = field(repr=False, compare=False)
    _min_len: int = field(repr=False, compare=False)
    _bounded: bool = field(repr=False, compare=False)

    def match(self, topic: str | Sequence[str]) -> bool:
        """Does the pattern match ``topic`` (a dotted string or its list of segments)?

        The topic is assumed to be a valid concrete topic (validate at the edge); no check is made here.
        """
        if self.concrete:
            return topic == self.pattern if isinstance(topic, str) else tuple(topic) == self.tokens
        segments = topic.split(".") if isinstance(topic, str) else topic
        count = len(segments)
        if count < self._min_len or (self._bounded and count != self._min_len):
            return False
        # NFA simulation: bit i set = "about to match token i"; bit len(tokens) = accepted.
        any_bits = self._any_bits
        one_bits = self._one_bits
        literal_bits = self._literal_bits
        state = 1 | ((1 & any_bits) << 1)
        for seg in segments:
            moved = state & (one_bits | literal_bits.get(seg, 0))
            state = (moved << 1) | (state & any_bits)
            if not state:
                return False
            # After normalisation a ``**`` is never followed by another, so one step closes the set.
            state |= (state & any_bits) << 1
        return bool(state & self._accept)


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Matcher:
    """Validate ``pattern`` (up to ``DLQ_MAX_SEGMENTS`` segments) and compile it into a cached Matcher."""
    tokens = _tokens(pattern)
    literal_bits: dict[str, int] = {}
    one_bits = any_bits = 0
    prefix: list[str] = []
    in_prefix = True
    for i, tok in enumerate(tokens):
        if tok == _ONE:
            one_bits |= 1 << i
            in_prefix = False
        elif tok == _ANY:
            any_bits |= 1 << i
            in_prefix = False
        else:
            literal_bits[tok] = literal_bits.get(tok, 0) | (1 << i)
            if in_prefix:
                prefix.append(tok)
    return Matcher(
        pattern=pattern,
        tokens=tokens,
        prefix=".".join(prefix),
        concrete=len(prefix) == len(tokens),
        _literal_bits=literal_bits,
        _one_bits=one_bits,
        _any_bits=any_bits,
        _accept=1 << len(tokens),
        _min_len=sum(1 for tok in tokens if tok != _ANY),
        _bounded=not any_bits,
    )


def match_topic(pattern: str, topic: str) -> bool:
    """Does ``pattern`` match the concrete ``topic``? (``a.**.c.d`` matches ``a.c.x.c.d``.)"""
    return compile_pattern(pattern).match(topic)


def covers(p: str, q: str) -> bool:
    """True when every topic matched by ``q`` is matched by ``p`` (language containment; reflexive)."""
    return _covers_tokens(compile_pattern(p).tokens, compile_pattern(q).tokens)


def overlaps(p: str, q: str) -> bool:
    """True when some topic is matched by both ``p`` and ``q`` (symmetric)."""
    return _overlaps_tokens(compile_pattern(p).tokens, compile_pattern(q).tokens)


@functools.lru_cache(maxsize=4096)
def _covers_tokens(p: tuple[str, ...], q: tuple[str, ...]) -> bool:
    """Containment L(q) ⊆ L(p) of two normalised patterns, as a DP over (i, j): L(q[j:]) ⊆ L(p[i:]).

    No normalised pattern matches the empty word (see ``_tokens``), so comparing the languages compares
    the sets of topics exactly. Reduction to generic words: let ⊥ stand for a fresh segment equal to no
    literal of p. p cannot tell two non-literals apart, and a ⊥ in a match is consumed by ``*`` or ``**``
    (which accept anything), so L(q) ⊆ L(p) iff p matches every *generic* word of q: q's literals kept,
    each ``*`` a ⊥, each ``**`` a run of any number of ⊥. Write G(j) for the generic words of q[j:] and
    P(i) for L(p[i:]).

    - p exhausted: P(n) = {ε} contains G(j) iff q[j:] is empty (a non-empty suffix has non-empty words).
    - q exhausted: G(m) = {ε} ⊆ P(i) iff p[i:] is all ``**``.
    - p[i] literal a: every word of G(j) must start with a, i.e. q[j] = a (a ``*`` or ``**`` yields
      words starting with ⊥), and then G(j+1) ⊆ P(i+1).
    - p[i] ``*``: if q[j] consumes one symbol, G(j+1) ⊆ P(i+1). If q[j] is ``**``,
      G(j) = G(j+1) ∪ ⊥·G(j), so both G(j+1) ⊆ P(i) and G(j) ⊆ P(i+1).
    - p[i] ``**`` at the end: P(i) is everything.
    - p[i] ``**`` followed (normalisation) by a literal a; P(i) = Σ*·a·X with X = P(i+2), and P(i) is
      closed under prepending. If q[j] is ``**``: ⊥*·G(j+1) ⊆ P(i) iff G(j+1) ⊆ P(i). If q[j] yields a
      first symbol s ≠ a (⊥ or another literal), s·y ∈ P(i) iff y ∈ P(i), so G(j+1) ⊆ P(i).
      If q[j] = a: a·y ∈ P(i) iff y ∈ X or y ∈ P(i), so the condition is G(j+1) ⊆ X ∪ P(i).

    The last case is a union, and the DP takes "G(j+1) ⊆ X or G(j+1) ⊆ P(i)". That is exact because
    G ⊆ X ∪ Σ*aX implies one side (G = generic words of a pattern Q). If Q has no ``**``, G is a single
    word up to renaming ⊥s. Otherwise split X = E·T, E the ``**``-free prefix of length d.
    (1) T empty: X has fixed length d; words longer than d (they exist) lie in Σ*aE, so with the last
    ⊥-run of Q made long, the suffix S of Q after its last ``**`` has length ≥ d+1 and its generic last
    d+1 symbols match aE: every word (all have length ≥ d+1) is in Σ*aX.
    (2) T starts with ``**``, so L(T) is closed under prepending: y ∈ X iff y[:d] fits E and y[d:] ∈ T,
    and y ∈ Σ*aX implies y[d:] ∈ T too. Hence every word of G has y[d:] ∈ T, and the words outside
    Σ*aX are exactly those that need the "fits E at the start" branch. Suppose some y ∈ G is not in
    Σ*aX (so y fits E at the start); we show all of G fits E at the start, hence G ⊆ X. Write
    Q = F·``**``·R with F ``**``-free, c = |F|. If c ≥ d the start window is F for every word: done.
    If E's symbols past c are all ``*``, every word fits at the start (words are ≥ d long): done.
    Otherwise let ŷ be y with the first ⊥-run made longer than d: ŷ does not fit E at the start (a
    literal of E faces ⊥), so ŷ ∈ Σ*aX via an occurrence of aE starting at a literal a. It cannot start
    inside F (aE would then reach past c only through ``*``s of E, whereas E has a literal past c), so
    it lies wholly in the part after the run, which y shares, occurrence and tail alike: y ∈ Σ*aX,
    a contradiction.
    """
    n, m = len(p), len(q)
    # r[i][j] for i in 0..n+1 (row n+1 only read as padding for i+2), j in 0..m.
    r = [[False] * (m + 1) for _ in range(n + 2)]
    r[n][m] = True
    for i in range(n - 1, -1, -1):
        r[i][m] = p[i] == _ANY and r[i + 1][m]
    for i in range(n - 1, -1, -1):
        a = p[i]
        row, below = r[i], r[i + 1]
        for j in range(m - 1, -1, -1):
            b = q[j]
            if a == _ANY:
                if i + 1 == n:
                    row[j] = True
                elif b == p[i + 1]:
                    row[j] = r[i + 2][j + 1] or row[j + 1]
                else:
                    row[j] = row[j + 1]
            elif a == _ONE:
                row[j] = (row[j + 1] and below[j]) if b == _ANY else below[j + 1]
            else:
                row[j] = b == a and below[j + 1]
    return r[0][0]


@functools.lru_cache(maxsize=4096)
def _overlaps_tokens(p: tuple[str, ...], q: tuple[str, ...]) -> bool:
    """Non-empty intersection, by a DP over the product automaton: o[i][j] = P(i) ∩ Q(j) ≠ ∅.

    A shortest common word never has a symbol consumed by ``**`` on both sides (drop it), so each symbol
    advances at least one side, and each move below increases i + j.
    """
    n, m = len(p), len(q)
    o = [[False] * (m + 1) for _ in range(n + 1)]
    o[n][m] = True
    for i in range(n, -1, -1):
        for j in range(m, -1, -1):
            if i == n and j == m:
                continue
            a = p[i] if i < n else None
            b = q[j] if j < m else None
            found = False
            if a == _ANY:
                # leave the ``**``, or let it absorb the symbol q's token consumes
                found = o[i + 1][j] or (b is not None and b != _ANY and o[i][j + 1])
            if not found and b == _ANY:
                found = o[i][j + 1] or (a is not None and a != _ANY and o[i + 1][j])
            if not found and a is not None and b is not None and a != _ANY and b != _ANY:
                # two literals must agree; a ``*`` on either side takes any symbol
                found = (a == b or _ONE in (a, b)) and o[i + 1][j + 1]
            o[i][j] = found
    return o[0][0]
