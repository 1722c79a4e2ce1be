"""The ops API's input readers (pure): every bad input raises BadParameter naming the parameter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from outboxhub.ops.params import MAX_INT, BadParameter, Query, parse_int


@given(st.integers(min_value=0, max_value=MAX_INT))
def test_parse_int_reads_every_integer_in_range(value: int) -> None:
    assert parse_int("n", str(value)) == value
    assert parse_int("n", f" {value} ") == value


@given(
    st.integers(), st.integers(min_value=-(2**40), max_value=2**40), st.integers(min_value=0, max_value=2**40)
)
def test_parse_int_enforces_bounds(value: int, low: int, width: int) -> None:
    high = low + width
    if low <= value <= high and abs(value) <= MAX_INT:
        assert parse_int("n", str(value), minimum=low, maximum=high) == value
    else:
        with pytest.raises(BadParameter) as info:
            parse_int("n", str(value), minimum=low, maximum=high)
        assert info.value.name == "n"


@given(st.text().filter(lambda t: not t.strip().lstrip("-").isdigit() or not t.strip().isascii()))
def test_parse_int_refuses_anything_else(text: str) -> None:
    with pytest.raises(BadParameter) as info:
        parse_int("from_seq", text)
    assert str(info.value).startswith("from_seq: ")


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.text(max_size=5)))
def test_query_refuses_unknown_names_and_keeps_known_ones(params: dict[str, str]) -> None:
    known = ("a", "b")
    unknown = sorted(set(params) - set(known))
    if unknown:
        with pytest.raises(BadParameter) as info:
            Query(params, known)
        assert info.value.name == unknown[0]
    else:
        query = Query(params, known)
        for name in known:
            assert query.has(name) == (name in params)


def test_query_refuses_a_repeated_parameter() -> None:
    with pytest.raises(BadParameter, match=r"^limit: given more than once"):
        Query(MultiDict([("limit", "1"), ("limit", "2")]), ("limit",))


def test_query_typed_readers() -> None:
    q = Query({"t": "a.b", "p": "a.**", "g": "grp:1", "e": "", "n": "7"}, ("t", "p", "g", "e", "n", "m"))
    assert (q.topic("t"), q.pattern("p"), q.group("g"), q.integer("n"), q.integer("m", default=3)) == (
        "a.b",
        "a.**",
        "grp:1",
        7,
        3,
    )
    assert q.text("e", required=False) is None
    checks: list[tuple[Callable[[], object], str]] = [
        (lambda: q.required("e"), "e"),
        (lambda: q.required("m"), "m"),
        (lambda: q.topic("p"), "p"),
        (lambda: q.group("p"), "p"),
        (lambda: q.pattern("g") and q.topic("e"), "e"),
    ]
    for call, name in checks:
        with pytest.raises(BadParameter) as info:
            call()
        assert info.value.name == name
