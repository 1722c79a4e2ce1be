"""The hub's frame decoder (``protocol/hubframes.py``) against the typed one: the same frames accepted, the
same errors, the same payload values; a long PUBLISH keeps its payload as the JSON text it came in."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outboxhub.errors import ProtocolError
from outboxhub.protocol.codec import Publish, decode_client_frame
from outboxhub.protocol.hubframes import RAW_FROM, RawPublish, decode_hub_frame
from outboxhub.protocol.limits import MAX_DEPTH
from outboxhub.store.codec import prepare

PAD = "p" * RAW_FROM


def _outcome(decode: Any, text: str) -> tuple[str, Any]:
    """What a decoder makes of ``text``: the error's (code, msg, rid), or the frame with its payload's
    value as a store reads it back."""
    try:
        frame = decode(text)
    except ProtocolError as exc:
        return ("error", (exc.code, exc.msg, exc.rid))
    if not isinstance(frame, Publish):
        return ("frame", frame)
    stored = prepare(frame.to_new_event())[4]
    fields = {f: getattr(frame, f) for f in ("rid", "topic", "opts")}
    return ("publish", (fields, msgspec.json.decode(stored)))


def _same(text: str) -> tuple[str, Any]:
    new, old = _outcome(decode_hub_frame, text), _outcome(decode_client_frame, text)
    assert new == old, text[:300]
    return new


def _frame(payload_text: str, *, rid: str = "r1", topic: str = "t.a") -> str:
    return f'{{"op":"PUBLISH","rid":"{rid}","topic":"{topic}","pad":"{PAD}","payload": {payload_text} }}'


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(value=json_values, indent=st.sampled_from([None, 1]), ascii_only=st.booleans())
def test_any_json_payload_decodes_to_the_same_value(value: Any, indent: int | None, ascii_only: bool) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only)  # escapes, whitespace, spellings
    kind, _ = _same(_frame(text))
    assert kind == "publish"


# JSON text spelled with escapes, numbers and structure that a payload may get wrong or right.
_pieces = st.sampled_from(
    [
        '"',
        "\\",
        "\\u",
        "\\ud800",
        "\\udc00",
        "\\ud83d\\ude00",
        "\\u00e9",
        "\\n",
        "\\x",
        "\x01",
        "\x7f",
        "é",
        "😀",
        "1e400",
        "-1e400",
        "1e308",
        "123456789012345678901234567890",
        "0.5",
        "-0",
        "01",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        " ",
        "null",
        "tru",
        "x",
    ]
)


@settings(max_examples=500)
@given(pieces=st.lists(_pieces, max_size=12), quoted=st.booleans())
def test_a_malformed_payload_is_refused_with_the_same_error(pieces: list[str], quoted: bool) -> None:
    body = "".join(pieces)
    _same(_frame(f'"{body}"' if quoted else body))


@pytest.mark.parametrize(
    "payload",
    [
        "1e400",
        '"\\ud800"',
        '"\\udc00\\ud800"',
        '"a\x01b"',
        '"\\q"',
        "[1, 2,]",
        '{"a": 1,}',
        '{"a" 1}',
        "[" * MAX_DEPTH + "]" * MAX_DEPTH,
        "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1),
        "[" * 2000 + "]" * 2000,
        '"' + "x" * 3000,
    ],
)
def test_long_frames_that_must_fail_fail_alike(payload: str) -> None:
    _same(_frame(payload))


def test_other_frames_and_errors_are_the_typed_decoders() -> None:
    for text in [
        _frame('"x"', topic="a.*"),  # a PUBLISH to a pattern
        '{"op":"ACK","topic":"t.a","group":"g","id":"e1","rid":"' + PAD + '"}',
        '{"op":"AUTH","token":"' + PAD + '"}',
        '{"op":"NOPE","x":"' + PAD + '"}',
        '{"op":"PUBLISH","topic":"t.a","pad":"' + PAD + '"}',  # no payload: null
        _frame('"x"')[:-3],  # truncated
    ]:
        _same(text)


def test_a_long_publish_keeps_its_payload_text() -> None:
    payload = '{"b": 1.50, "s": "\\u00e9\\ud83d\\ude00", "n": 12345678901234567890123, "a": [ 1 , {} ]}'
    frame = decode_hub_frame(_frame(payload))
    assert type(frame) is RawPublish
    assert prepare(frame.to_new_event())[4] == payload.encode()
    string = '"' + "\\u0041" * RAW_FROM + '"'
    frame = decode_hub_frame(_frame(string))
    assert type(frame) is RawPublish and prepare(frame.to_new_event())[4] == string.encode()


def test_a_short_publish_is_decoded_as_before() -> None:
    frame = decode_hub_frame('{"op":"PUBLISH","topic":"t.a","payload": {"b": 1.50}}')
    assert type(frame) is Publish and frame.payload == {"b": 1.5}
