"""The codec's range and content checks (protocol/limits.py): every integer on the wire has a range that
fits the stores (signed 64-bit) or tighter, strings that reach a store hold no NUL, header keys have a
charset, a string rid is short, and nesting is bounded by our own check on any Python version."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.errors import ProtocolError
from outboxhub.protocol.codec import Nack, Publish, Subscribe, decode_client_frame
from outboxhub.protocol.limits import (
    MAX_DEPTH,
    MAX_DURATION_MS,
    MAX_HEADER_KEY,
    MAX_IN_FLIGHT,
    MAX_INT64,
    MAX_MAX_DELIVER,
    MAX_RID_LENGTH,
    MAX_SAFE_INT,
    MAX_SEQ,
    MAX_TS,
    depth_of,
)

# (frame with the value at `path`, field path named in the error, lowest valid, highest valid)
INT_FIELDS: list[tuple[str, str, int, int]] = [
    ('{"op":"PUBLISH","topic":"a","opts":{"ts":%s}}', "PUBLISH.opts.ts", 0, MAX_TS),
    ('{"op":"SUBSCRIBE","topic":"a","opts":{"start":%s}}', "SUBSCRIBE.opts.start", 0, MAX_SEQ),
    ('{"op":"SUBSCRIBE","topic":"a","opts":{"start":"seq:%s"}}', "SUBSCRIBE.opts.start", 0, MAX_SEQ),
    ('{"op":"SUBSCRIBE","topic":"a","opts":{"start":"ts:%s"}}', "SUBSCRIBE.opts.start", 0, MAX_TS),
    (
        '{"op":"SUBSCRIBE","topic":"a","opts":{"max_in_flight":%s}}',
        "SUBSCRIBE.opts.max_in_flight",
        1,
        MAX_IN_FLIGHT,
    ),
    (
        '{"op":"SUBSCRIBE","topic":"a","opts":{"ack_timeout_ms":%s}}',
        "SUBSCRIBE.opts.ack_timeout_ms",
        1,
        MAX_DURATION_MS,
    ),
    (
        '{"op":"SUBSCRIBE","topic":"a","opts":{"max_deliver":%s}}',
        "SUBSCRIBE.opts.max_deliver",
        1,
        MAX_MAX_DELIVER,
    ),
    ('{"op":"NACK","topic":"a","group":"g","id":"e","delay_ms":%s}', "NACK.delay_ms", 0, MAX_DURATION_MS),
    ('{"op":"ACK","topic":"a","group":"g","id":"e","rid":%s}', "", -MAX_SAFE_INT, MAX_SAFE_INT),
]


def test_every_bound_fits_a_signed_64_bit_store_column() -> None:
    assert all(high <= MAX_INT64 for _, _, _, high in INT_FIELDS)


@pytest.mark.parametrize(
    ("template", "field", "low", "high"), INT_FIELDS, ids=[f[1] or "rid" for f in INT_FIELDS]
)
@given(
    n=st.integers(min_value=-(2**70), max_value=2**70) | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64])
)
def test_integer_fields_decode_exactly_within_their_range(
    template: str, field: str, low: int, high: int, n: int
) -> None:
    if '"seq:' in template or '"ts:' in template:
        n = abs(n)  # the string forms have no sign
    frame = template % n
    if low <= n <= high:
        decoded = decode_client_frame(frame)
        assert decoded is not None
        return
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert info.value.code == "bad_request"
    assert info.value.msg.startswith(field or "ACK"), info.value.msg
    if not field:  # an unusable rid is never echoed
        assert info.value.rid is None


def test_the_bounds_themselves_are_accepted() -> None:
    frame = decode_client_frame('{"op":"PUBLISH","topic":"a","opts":{"ts":' + str(MAX_TS) + "}}")
    assert isinstance(frame, Publish) and frame.to_new_event().ts == MAX_TS
    sub = decode_client_frame('{"op":"SUBSCRIBE","topic":"a","opts":{"start":"seq:' + str(MAX_SEQ) + '"}}')
    assert isinstance(sub, Subscribe) and sub.group_options().start.value == MAX_SEQ


@given(rid=st.text(max_size=2 * MAX_RID_LENGTH))
def test_string_rids_are_bounded_and_long_ones_never_echoed(rid: str) -> None:
    frame = json.dumps({"op": "PUBLISH", "topic": "a.b", "rid": rid})
    if len(rid) <= MAX_RID_LENGTH and not any(0xD800 <= ord(c) <= 0xDFFF for c in rid):
        assert decode_client_frame(frame).rid == rid
    elif len(rid) > MAX_RID_LENGTH:
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(frame)
        assert info.value.code == "bad_request" and info.value.msg.startswith("PUBLISH.rid")
        assert info.value.rid is None


def test_a_megabyte_rid_is_refused_without_echo() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(json.dumps({"op": "AUTH", "token": "t", "rid": "r" * 1_000_000}))
    assert info.value.rid is None and len(info.value.msg) < 400


_key_chars = "ABCxyz019_-"


@given(key=st.text(max_size=MAX_HEADER_KEY + 4), value=st.text(max_size=50))
def test_headers_are_checked_and_named(key: str, value: str) -> None:
    frame = json.dumps({"op": "PUBLISH", "topic": "a", "opts": {"headers": {key: value}}})
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key + value):
        return  # not valid UTF-8: a different error
    key_ok = 1 <= len(key) <= MAX_HEADER_KEY and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    if key_ok and "\x00" not in value:
        assert decode_client_frame(frame).opts.headers == {key: value}  # type: ignore[union-attr]
        return
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert info.value.code == "bad_request"
    assert info.value.msg.startswith("PUBLISH.opts.headers: "), info.value.msg
    assert ("key" if not key_ok else "NUL") in info.value.msg


@pytest.mark.parametrize(
    ("opts", "field"),
    [
        ({"key": "a\x00b"}, "PUBLISH.opts.key"),
        ({"sid": "\x00"}, "PUBLISH.opts.sid"),
        ({"id": "e\x00"}, "PUBLISH.opts.id"),
        ({"tags": ["ok", "x\x00"]}, "PUBLISH.opts.tags"),
        ({"caused_by": ["e" * 2000]}, "PUBLISH.opts.caused_by"),
        ({"tags": ["t"] * 65}, "PUBLISH.opts.tags"),
        ({"headers": {f"h{i}": "v" for i in range(65)}}, "PUBLISH.opts.headers"),
        ({"headers": {"h": "v" * 5000}}, "PUBLISH.opts.headers"),
        ({"headers": {"$where": "v"}}, "PUBLISH.opts.headers"),
    ],
)
def test_store_bound_strings_are_checked(opts: dict[str, Any], field: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(json.dumps({"op": "PUBLISH", "topic": "a", "opts": opts, "rid": 3}))
    assert info.value.code == "bad_request" and info.value.msg.startswith(field + ": "), info.value.msg
    assert info.value.rid == 3


def test_nack_reason_is_checked() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"op":"NACK","topic":"a","group":"g","id":"e","reason":"x\\u0000"}')
    assert info.value.msg.startswith("NACK.reason: ")
    assert isinstance(
        decode_client_frame('{"op":"NACK","topic":"a","group":"g","id":"e","reason":"x"}'), Nack
    )


@given(depth=st.integers(min_value=1, max_value=3 * MAX_DEPTH), kind=st.sampled_from(["[]", "{}"]))
def test_nesting_limit_is_our_own(depth: int, kind: str) -> None:
    """A payload nested ``depth`` levels: the frame is ``depth + 1`` levels deep. Accepted up to
    MAX_DEPTH whatever the interpreter's recursion limit."""
    payload = "1"
    for _ in range(depth):
        payload = f"[{payload}]" if kind == "[]" else f'{{"k":{payload}}}'
    frame = '{"op":"PUBLISH","topic":"a","rid":"n","payload":' + payload + "}"
    if depth + 1 <= MAX_DEPTH:
        decoded = decode_client_frame(frame)
        assert depth_of(decoded) == depth + 1
        return
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert info.value.code == "bad_request" and "nested" in info.value.msg


def test_a_bad_frame_nested_too_deeply_is_refused_as_such_on_the_error_path_too() -> None:
    """The typed decode stops at the bad op before the deep part; the explanation checks the depth itself
    (on 3.12+ the interpreter no longer raises RecursionError there), so every version answers alike."""
    frame = '{"op":5,"rid":"d","payload":' + "[" * 100 + "]" * 100 + "}"
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert info.value.code == "bad_request" and "nested more than 64 levels" in info.value.msg
    assert info.value.rid is None
