"""A PUBLISH payload kept raw (``RawPublish``): stored without being decoded and re-encoded, read back as the
same JSON, and every payload the old decode refused is refused with the same error (so nothing a client
sends can be stored raw and later break another client's EVENT frame or the hub's own decode)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from outboxhub.errors import ProtocolError
from outboxhub.protocol.codec import Publish, RawPublish, decode_client_frame, encode_event
from outboxhub.protocol.limits import MAX_DEPTH
from outboxhub.store.sqlite.store import SQLiteStore


def _frame(payload: bytes) -> bytes:
    return b'{"op":"PUBLISH","rid":"r","topic":"odd.t","payload":' + payload + b"}"


# (name, payload text, taken raw without decoding)
ODD = [
    ("whitespace", b' { "a" : [ 1 , 2 ] ,\n\t"b" : { } } ', True),
    ("unicode escapes", b'"\\u00c9\\ud83d\\ude00\\u0000\\n"', True),
    ("utf-8 text", '"été 😀"'.encode(), True),
    ("brackets inside strings", b'"' + b"[{" * 100 + b'"', False),
    ("integer beyond 64 bits", b"123456789012345678901234567890", False),
    ("float with exponent", b"1.5e300", False),
    ("negative zero", b"-0.0", True),
    ("deepest allowed nesting", b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1), False),
    ("null", b"null", True),
]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(f"sqlite:///{tmp_path}/hub.db")
    yield s
    await s.close()


@pytest.mark.parametrize(("name", "payload", "raw"), ODD, ids=[n for n, _, _ in ODD])
async def test_odd_json_round_trips_through_the_store(
    store: SQLiteStore, name: str, payload: bytes, raw: bool
) -> None:
    for data in (_frame(payload), _frame(payload).decode()):
        frame = decode_client_frame(data)
        assert isinstance(frame, Publish)
        assert isinstance(frame, RawPublish) is raw, f"{name}: raw path taken = {not raw}"
        if raw:  # kept byte-exact (surrounding whitespace is not part of the value)
            assert bytes(frame.payload) == payload.strip()
        result = await store.publish(frame.to_new_event())
        [event] = [e for e in await store.scan("odd.t") if e.seq == result.seq]
        assert event.payload == msgspec.json.decode(payload), name
        # The EVENT frame another client gets is the hub's own encoding of that value.
        wire = msgspec.json.decode(encode_event("odd.t", None, event, attempt=1))
        assert wire["event"]["payload"] == msgspec.json.decode(payload)


# What the hub answered before payloads were kept raw (same code, message and rid; checked against main).
HOSTILE = [
    ("invalid utf-8", b'{"s":"\xff"}', "malformed JSON: invalid UTF-8 encoded string", None),
    ("utf-8 encoded surrogate", b'"\xed\xa0\x80"', "malformed JSON: invalid UTF-8 encoded string", None),
    ("overlong utf-8", b'"\xc0\xaf"', "malformed JSON: invalid UTF-8 encoded string", None),
    ("float out of range", b"[1e400]", "invalid JSON: number out of range", None),
    ("digits out of range", b"9" * 400 + b".5", "invalid JSON: number out of range", None),
    ("trailing comma", b'{"a":1,}', "malformed JSON: trailing comma in object (byte 59)", None),
    ("lone surrogate escape", b'"\\udc00x"', "malformed JSON: invalid utf-16 surrogate pair (byte 59)", None),
    ("bad escape", b'"\\uZZZZ"', "malformed JSON: invalid character in unicode escape (byte 56)", None),
    (
        "too deep",
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        f"PUBLISH.payload: nested more than {MAX_DEPTH} levels deep",
        "r",
    ),
]


@pytest.mark.parametrize(("name", "payload", "msg", "rid"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_payload_refused_before_is_refused_alike(
    name: str, payload: bytes, msg: str, rid: str | None
) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(_frame(payload))
    assert (info.value.code, info.value.msg, info.value.rid) == ("bad_request", msg, rid), name
