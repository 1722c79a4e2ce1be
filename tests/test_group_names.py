"""One rule for consumer group names (``topics.validate_group``), with one message wherever it is checked."""

from __future__ import annotations

import pytest

from outboxhub.errors import ProtocolError, TopicError
from outboxhub.ops.params import BadParameter, Query
from outboxhub.protocol.codec import decode_client_frame
from outboxhub.topics import validate_group

GOOD = ["g", "billing", "a:b-c_d", "x" * 128, "0"]
BAD = ["", "a.b", "*", "**", "x" * 129, "no spaces", "é"]


@pytest.mark.parametrize("name", GOOD)
def test_good_group_names_pass(name: str) -> None:
    assert validate_group(name) == name


@pytest.mark.parametrize("name", BAD)
def test_bad_group_names_are_refused_with_the_rule(name: str) -> None:
    with pytest.raises(TopicError, match=r"^group .* is not a valid group name: use 1-128 characters"):
        validate_group(name)


def test_a_non_string_is_refused() -> None:
    with pytest.raises(TopicError, match="group must be a string"):
        validate_group(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["a.b", "x" * 200])
def test_protocol_and_ops_say_the_same_thing(name: str) -> None:
    with pytest.raises(TopicError) as rule:
        validate_group(name)
    problem = str(rule.value).removeprefix("group ")
    with pytest.raises(ProtocolError) as wire:
        decode_client_frame(f'{{"op":"SUBSCRIBE","topic":"a","group":"{name}"}}')
    assert wire.value.msg == f"SUBSCRIBE.group: {problem}"
    with pytest.raises(BadParameter) as http:
        Query({"g": name}, ("g",)).group("g")
    assert (http.value.name, http.value.problem) == ("g", problem)
