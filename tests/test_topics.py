"""Tests for outboxhub.topics: validation messages, matching, covers and overlaps.

Two references, independent of the module's algorithms:

- ``_regex``: a pattern translated to a regular expression over the dotted topic (matching).
- ``_product``: the textbook construction for containment and intersection. A pattern cannot tell apart
  two segments that are not among its literals, so over the finite alphabet A = literals(p) ∪
  literals(q) ∪ {"z"} (z standing for every other segment) both relations are unchanged. Determinise
  both NFAs by subsets and walk their product over A: ``covers(p, q)`` fails iff some reachable pair
  accepts for q but not for p; ``overlaps`` holds iff some pair accepts for both. Exact, no length bound.

Plus an exhaustive check over a small universe whose length bound is proved in ``test_small_universe``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub import errors
from outboxhub.topics import (
    DLQ_MAX_SEGMENTS,
    MAX_SEGMENTS,
    Matcher,
    TopicError,
    compile_pattern,
    covers,
    is_concrete,
    literal_prefix,
    match_topic,
    overlaps,
    validate_pattern,
    validate_topic,
)

# --------------------------------------------------------------------------- references


def _regex(pattern: str) -> re.Pattern[str]:
    """Each segment of the topic is written as '.seg'; match the whole string."""
    parts = []
    for seg in pattern.split("."):
        if seg == "**":
            parts.append(r"(?:\.[^.]+)*")
        elif seg == "*":
            parts.append(r"\.[^.]+")
        else:
            parts.append(r"\." + re.escape(seg))
    return re.compile("".join(parts))


def ref_match(pattern: str, topic: str) -> bool:
    return _regex(pattern).fullmatch("." + topic) is not None


def _closure(tokens: list[str], states: frozenset[int]) -> frozenset[int]:
    out = set(states)
    todo = list(states)
    while todo:
        i = todo.pop()
        if i < len(tokens) and tokens[i] == "**" and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return frozenset(out)


def _step(tokens: list[str], states: frozenset[int], symbol: str) -> frozenset[int]:
    nxt = set()
    for i in states:
        if i == len(tokens):
            continue
        tok = tokens[i]
        if tok == "**":
            nxt.add(i)
        elif tok == "*" or tok == symbol:
            nxt.add(i + 1)
    return _closure(tokens, frozenset(nxt))


def _product(p: str, q: str) -> set[tuple[bool, bool]]:
    """Acceptance flags (p accepts, q accepts) of every pair of the two subset automata reachable by a
    non-empty word (a topic has at least one segment)."""
    pt, qt = p.split("."), q.split(".")
    alphabet = sorted({s for s in pt + qt if s not in ("*", "**")} | {"z"})
    todo = [(_closure(pt, frozenset({0})), _closure(qt, frozenset({0})))]
    seen: set[tuple[frozenset[int], frozenset[int]]] = set()
    while todo:
        sp, sq = todo.pop()
        for symbol in alphabet:
            nxt = (_step(pt, sp, symbol), _step(qt, sq, symbol))
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return {(len(pt) in sp, len(qt) in sq) for sp, sq in seen}


def ref_covers(p: str, q: str) -> bool:
    return (False, True) not in _product(p, q)


def ref_overlaps(p: str, q: str) -> bool:
    return (True, True) in _product(p, q)


# --------------------------------------------------------------------------- strategies

literal = st.sampled_from(["a", "b"])
token = st.sampled_from(["a", "b", "*", "**"])
patterns = st.lists(token, min_size=1, max_size=6).map(".".join)
topics = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=9).map(".".join)


@st.composite
def pattern_and_topic(draw: st.DrawFn) -> tuple[str, str]:
    """A pattern and a topic that is often (not always) one of its instances."""
    pattern = draw(patterns)
    if draw(st.booleans()):
        return pattern, draw(topics)
    return pattern, draw(instance_of(pattern))


def instance_of(pattern: str) -> st.SearchStrategy[str]:
    """Topics matched by ``pattern`` (by construction), over a small alphabet."""
    pieces = []
    for seg in pattern.split("."):
        if seg == "*":
            pieces.append(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=1))
        elif seg == "**":
            pieces.append(st.lists(st.sampled_from(["a", "b", "c"]), max_size=4))
        else:
            pieces.append(st.just([seg]))
    return (
        st.tuples(*pieces)
        .map(lambda parts: [s for part in parts for s in part])
        .filter(bool)  # `**` alone may produce the empty word, which is not a topic
        .map(".".join)
    )


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "topic",
    ["a", "process.state", "A-Z_a:z-0.9", "x" * 128, ".".join(["s"] * MAX_SEGMENTS), "dlq.ops.a"],
)
def test_valid_topics_are_returned(topic: str) -> None:
    assert validate_topic(topic) == topic
    assert validate_pattern(topic) == topic


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("a..b", "topic 'a..b': segment 2 is empty"),
        (".a", "topic '.a': segment 1 is empty"),
        ("a.", "topic 'a.': segment 2 is empty"),
        ("", "topic '': it is empty"),
        ("*.b", "topic '*.b': segment 1 '*' is a wildcard; publish topics must be concrete"),
        ("a.**", "topic 'a.**': segment 2 '**' is a wildcard; publish topics must be concrete"),
        ("a b", "topic 'a b': segment 1 'a b' has invalid characters: ' '"),
        ("a.b/c", "segment 2 'b/c' has invalid characters: '/'"),
        ("a.é", "segment 2 'é' has invalid characters: 'é'"),
        ("a\n", "segment 1 'a\\n' has invalid characters: '\\n'"),
        ("a.b*", "segment 2 'b*' has invalid characters: '*'"),
        ("a." + "x" * 129, "segment 2 'xxx"),
        ("a." + "x" * 129, "is 129 characters long; at most 128 are allowed"),
        (".".join(["s"] * 33), "it has 33 segments; at most 32 are allowed"),
    ],
)
def test_invalid_topics_name_the_problem(topic: str, message: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_topic(topic)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a*", "pattern 'a*': segment 1 'a*' mixes '*' with other characters"),
        ("a.***", "segment 2 '***' mixes '*' with other characters; '*' and '**' must be whole segments"),
        ("*a.b", "segment 1 '*a' mixes"),
        ("a..*", "pattern 'a..*': segment 2 is empty"),
        ("a.b c.**", "segment 2 'b c' has invalid characters: ' '"),
        (".".join(["*"] * 33), "it has 33 segments; at most 32 are allowed"),
    ],
)
def test_invalid_patterns_name_the_problem(pattern: str, message: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_pattern(pattern)
    assert message in str(info.value)


@pytest.mark.parametrize("value", [None, 5, b"a.b", ["a", "b"]])
def test_non_strings_are_topic_errors(value: object) -> None:
    with pytest.raises(TopicError, match=f"topic must be a string, got {type(value).__name__}"):
        validate_topic(value)  # type: ignore[arg-type]
    with pytest.raises(TopicError, match="pattern must be a string"):
        validate_pattern(value)  # type: ignore[arg-type]


def test_topic_error_is_the_shared_value_error() -> None:
    assert TopicError is errors.TopicError
    assert issubclass(TopicError, ValueError)
    assert issubclass(TopicError, errors.OutboxhubError)


def test_dead_letter_topics_may_be_two_segments_longer() -> None:
    longest = ".".join(["dlq", "ops", *["s"] * MAX_SEGMENTS])
    assert validate_topic(longest, max_segments=DLQ_MAX_SEGMENTS) == longest
    with pytest.raises(TopicError, match="34 segments; at most 32"):
        validate_topic(longest)
    with pytest.raises(TopicError, match="35 segments; at most 34"):
        validate_topic(longest + ".x", max_segments=DLQ_MAX_SEGMENTS)
    # the internal operations accept dead-letter topics and patterns over them
    assert match_topic("dlq.ops.**", longest)
    assert compile_pattern(longest).concrete


def test_max_segments_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_segments"):
        validate_topic("a", max_segments=0)


def test_huge_input_gives_a_short_message() -> None:
    with pytest.raises(TopicError) as info:
        validate_topic("a b" * 100_000)
    assert len(str(info.value)) < 400


def test_operations_validate_their_patterns() -> None:
    for call in (
        lambda: match_topic("a..b", "a"),
        lambda: covers("a", "a*"),
        lambda: overlaps("", "a"),
        lambda: literal_prefix("a b"),
        lambda: is_concrete("a.*b"),
    ):
        with pytest.raises(TopicError):
            call()


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a.**.c.d", "a.c.x.c.d", True),  # the seed's greedy matcher says no
        ("a.**.c.d", "a.c.d", True),
        ("a.**.c.d", "a.c.d.x", False),
        ("a.**", "a", True),
        ("a.**", "a.b.c", True),
        ("a.**", "b", False),
        ("a.**", "ab", False),
        ("**", "x", True),
        ("**", "a.b.c.d", True),
        ("*", "a", True),
        ("*", "a.b", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),
        ("**.x", "x", True),
        ("**.x", "a.x.b", False),
        ("a.**.b.**.c", "a.b.c", True),
        ("a.**.b.**.c", "a.c.b", False),
        ("a.**.b", "a.b.b", True),
        ("*.**", "a", True),
        ("**.*", "a", True),
        ("**.*.**", "a.b", True),
        ("*.*.**", "a", False),
        ("a.**.**.b", "a.b", True),
        ("a.b", "a.b", True),
        ("a.b", "a.bc", False),
        ("a.b", "a", False),
        ("process.*", "process.state", True),
    ],
)
def test_named_matches(pattern: str, topic: str, expected: bool) -> None:
    assert match_topic(pattern, topic) is expected
    assert ref_match(pattern, topic) is expected  # the reference agrees on the named cases


def test_matcher_takes_segments_and_is_cached() -> None:
    m = compile_pattern("a.**.c")
    assert isinstance(m, Matcher)
    assert compile_pattern("a.**.c") is m
    assert m.match(["a", "b", "c"]) and m.match(("a", "c")) and not m.match(["a", "b"])
    concrete = compile_pattern("a.b")
    assert concrete.concrete and concrete.match(["a", "b"]) and not concrete.match(["a", "b", "c"])


def test_pathological_patterns_are_polynomial() -> None:
    # Exponential backtracking would take ~C(32+5, 5) steps per attempt; the NFA takes 32 x 7.
    topic = ".".join(f"s{i}" for i in range(MAX_SEGMENTS))
    assert not match_topic("**.**.**.**.**.x", topic)
    assert match_topic("**.**.**.**.**.s31", topic)
    many = ".".join(["**", "*"] * 15 + ["x"])
    assert not match_topic(many, topic)
    assert not covers(many, "**")
    assert not overlaps(many, ".".join(["*"] * 31 + ["y"]))


@given(pattern_and_topic())
def test_match_agrees_with_the_regex_reference(case: tuple[str, str]) -> None:
    pattern, topic = case
    assert match_topic(pattern, topic) is ref_match(pattern, topic)
    assert compile_pattern(pattern).match(topic.split(".")) is ref_match(pattern, topic)


@given(st.data())
def test_instances_match_and_share_the_literal_prefix(data: st.DataObject) -> None:
    pattern = data.draw(patterns)
    topic = data.draw(instance_of(pattern))
    assert match_topic(pattern, topic)
    prefix = literal_prefix(pattern)
    assert prefix == "" or topic == prefix or topic.startswith(prefix + ".")


@pytest.mark.parametrize(
    ("pattern", "prefix", "concrete"),
    [
        ("a.b.*.c", "a.b", False),
        ("a.b", "a.b", True),
        ("*.x", "", False),
        ("**", "", False),
        ("a.**", "a", False),
        ("a.**.*.b", "a", False),
    ],
)
def test_literal_prefix_and_concreteness(pattern: str, prefix: str, concrete: bool) -> None:
    assert literal_prefix(pattern) == prefix
    assert is_concrete(pattern) is concrete


# --------------------------------------------------------------------------- covers / overlaps


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.**", False),
        ("a.*.c", "a.*.c", True),
        ("**", "a.*.**.b", True),
        ("a.**", "a", True),
        ("a", "a.**", False),
        ("a.**", "a.*.**", True),
        ("a.*.**", "a.**", False),
        ("*.**", "**.*", True),  # both mean "at least one segment"
        ("**.*", "*.**", True),
        ("*.**", "**", True),  # so does `**`: there is no empty topic
        ("*.**", "**.**", True),
        ("*.**.a", "a.**.a", True),  # needs a case split on the length of q's `**`
        ("**.a.*.**", "a.**.a.*", True),
        ("**.a.b.**", "a.b.**", True),
        ("**.a.b.**", "a.**.b", False),
        ("*", "**", False),
        ("*.*", "*.**", False),
        ("**.x.**", "**", False),
        ("a.**.b", "a.**.b.**.b", True),
    ],
)
def test_named_covers(p: str, q: str, expected: bool) -> None:
    assert covers(p, q) is expected
    assert ref_covers(p, q) is expected


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ("a.*", "*.b", True),
        ("a.*", "b.*", False),
        ("a.**", "**.b", True),
        ("a.*.c", "a.**.d", False),
        ("*", "a.b", False),
        ("**", "x", True),
        ("a.**.b", "a", False),
        ("*.*", "**.a.**.b.**", True),
        ("*.*", "a.**.a.**.a", False),
        ("*.*.*", "a.**.a.**.a", True),
        ("secret.*", "**", True),
        ("secret.*", "public.**", False),
    ],
)
def test_named_overlaps(p: str, q: str, expected: bool) -> None:
    assert overlaps(p, q) is expected
    assert overlaps(q, p) is expected
    assert ref_overlaps(p, q) is expected


def _words(alphabet: str, max_len: int) -> Iterator[str]:
    for n in range(1, max_len + 1):
        for word in itertools.product(alphabet, repeat=n):
            yield ".".join(word)


def test_small_universe_exhaustively() -> None:
    """Every pattern of 1-3 tokens over {a, *, **} against every topic over {a, z} of length <= 9.

    Why these topics suffice. Alphabet: p and q only tell "a" from "not a", so z stands for every other
    segment. Length, overlaps: in a shortest common topic no segment is consumed by ``**`` on both sides
    (drop it), so its length is at most m_p + m_q <= 6 (m = number of non-``**`` tokens). Length, covers:
    in a topic of q, a run of r segments taken by one ``**`` of q can be shrunk or grown by one without
    changing whether p matches once r >= m_p + 1 (p's non-``**`` tokens take at most m_p segments, so a
    ``**`` of p takes one of the run, which it can give back or double). So a shortest topic in
    L(q) - L(p) has runs <= m_p + 1 = 4, length <= m_q + k_q * 4 with k_q ``**`` runs in q, and for q of
    at most 3 tokens that is at most max(1 + 2 * 4, 2 + 4, 3) = 9.
    """
    pats = [".".join(t) for n in (1, 2, 3) for t in itertools.product(["a", "*", "**"], repeat=n)]
    universe = list(_words("az", 9))
    matched = {p: frozenset(t for t in universe if ref_match(p, t)) for p in pats}
    for p in pats:
        m = compile_pattern(p)
        assert matched[p] == frozenset(t for t in universe if m.match(t)), p
    for p, q in itertools.product(pats, repeat=2):
        assert covers(p, q) is (matched[q] <= matched[p]), (p, q)
        assert overlaps(p, q) is bool(matched[q] & matched[p]), (p, q)


@given(patterns, patterns)
def test_covers_agrees_with_the_product_reference(p: str, q: str) -> None:
    assert covers(p, q) is ref_covers(p, q)


@given(patterns, patterns)
def test_overlaps_agrees_with_the_product_reference(p: str, q: str) -> None:
    assert overlaps(p, q) is ref_overlaps(p, q)


@given(patterns, patterns, st.data())
def test_covers_means_every_instance_matches(p: str, q: str, data: st.DataObject) -> None:
    t = data.draw(instance_of(q))
    if covers(p, q):
        assert match_topic(p, t)
    if match_topic(p, t):
        assert overlaps(p, q)


@given(patterns, patterns)
def test_relation_properties(p: str, q: str) -> None:
    assert covers(p, p) and covers("**", p) and overlaps(p, p)
    assert overlaps(p, q) is overlaps(q, p)
    if covers(p, q):
        assert overlaps(p, q)  # every valid pattern matches some topic
    if covers(p, q) and covers(q, p):
        assert compile_pattern(p).tokens == compile_pattern(q).tokens  # equal languages, same normal form


@given(patterns, patterns, patterns)
def test_covers_is_transitive(p: str, q: str, r: str) -> None:
    if covers(p, q) and covers(q, r):
        assert covers(p, r)


@given(patterns, topics)
def test_relations_on_a_concrete_topic_are_matching(p: str, t: str) -> None:
    assert covers(p, t) is match_topic(p, t)
    assert overlaps(p, t) is match_topic(p, t)
    assert covers(t, p) is (p == t)
