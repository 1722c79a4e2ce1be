"""Tests of the pure wire codec (outboxhub.protocol.codec), driven partly by the shared frame corpus.

The corpus, ``tests/corpus/frames.json``, is a JSON array of entries replayed here against
``decode_client_frame`` and, by the gateway tests, over a real WebSocket. Each entry has:

* ``name``   unique, human-readable (used as the test id);
* ``frame``  the raw text of one client frame, sent as-is (a WebSocket text message);
* ``expect`` ``"ok"`` when the frame must be accepted, else the PROTOCOL.md error code of the ``ERR``;
* ``op``     (only with ``"ok"``) the op the frame decodes to;
* ``rid``    the rid the reply must carry (string or number); absent means the reply has no ``rid``;
* ``field``  (errors only, optional) the start of the error ``msg``: the op-qualified field path at
  fault, e.g. ``"PUBLISH.opts.headers"``, or ``"op"`` for a missing/unknown op.

Frames are small (well under the default 1 MiB limit); oversize frames are tested separately.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outboxhub.errors import ProtocolError
from outboxhub.model import Event, GroupOptions, NewEvent, PublishResult, StartPosition
from outboxhub.protocol.codec import (
    CLIENT_OPS,
    CLOSE_CODES,
    ERROR_CODES,
    MAX_FRAME_SIZE,
    Ack,
    Auth,
    ClientFrame,
    Ctx,
    ErrFrame,
    EventFrame,
    Nack,
    OkFrame,
    Publish,
    PublishOpts,
    Subscribe,
    SubscribeOpts,
    Unsubscribe,
    WireEvent,
    close_code_for,
    decode_client_frame,
    decode_server_frame,
    encode_client_frame,
    encode_err,
    encode_event,
    encode_ok,
    encode_published,
    wire_event,
)
from outboxhub.protocol.explain import echoable_rid
from outboxhub.protocol.limits import (
    MAX_DURATION_MS,
    MAX_IN_FLIGHT,
    MAX_MAX_DELIVER,
    MAX_SAFE_INT,
    MAX_SEQ,
    MAX_TS,
)
from outboxhub.topics import validate_pattern

CORPUS_PATH = Path(__file__).parent / "corpus" / "frames.json"
CORPUS: list[dict[str, Any]] = json.loads(CORPUS_PATH.read_text(encoding="utf-8"))
CLIENT_TYPES = (Auth, Publish, Subscribe, Unsubscribe, Ack, Nack)
OP_OF: dict[type, str] = {
    Auth: "AUTH",
    Publish: "PUBLISH",
    Subscribe: "SUBSCRIBE",
    Unsubscribe: "UNSUBSCRIBE",
    Ack: "ACK",
    Nack: "NACK",
}


# --------------------------------------------------------------------------------------------------
# The corpus


def test_corpus_is_well_formed() -> None:
    names = [entry["name"] for entry in CORPUS]
    assert len(names) == len(set(names)), "corpus names must be unique"
    allowed_keys = {"name", "frame", "expect", "op", "rid", "field"}
    for entry in CORPUS:
        assert set(entry) <= allowed_keys, entry["name"]
        assert isinstance(entry["frame"], str)
        assert entry["expect"] == "ok" or entry["expect"] in ERROR_CODES, entry["name"]
        assert ("op" in entry) == (entry["expect"] == "ok"), entry["name"]
        assert entry.get("op", "AUTH") in CLIENT_OPS
    # Both sides of the corpus are represented, including the seed's exact frames.
    assert sum(e["expect"] == "ok" for e in CORPUS) >= 30
    assert sum(e["expect"] != "ok" for e in CORPUS) >= 80
    assert sum(e["name"].startswith("seed ") for e in CORPUS) >= 6


@pytest.mark.parametrize("as_bytes", [False, True], ids=["text", "bytes"])
@pytest.mark.parametrize("entry", CORPUS, ids=[e["name"] for e in CORPUS])
def test_corpus_frame(entry: dict[str, Any], as_bytes: bool) -> None:
    data: str | bytes = entry["frame"].encode("utf-8") if as_bytes else entry["frame"]
    if entry["expect"] == "ok":
        frame = decode_client_frame(data)
        assert OP_OF[type(frame)] == entry["op"]
        assert frame.rid == entry.get("rid")
        # An accepted frame survives a round trip through our own encoder.
        assert decode_client_frame(encode_client_frame(frame)) == frame
    else:
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(data)
        err = info.value
        assert err.code == entry["expect"], err.msg
        assert err.rid == entry.get("rid"), err.msg
        assert err.msg and err.msg == err.msg.strip()
        if "field" in entry:
            assert err.msg.startswith(entry["field"] + (": " if entry["field"] == "op" else "")), err.msg


# --------------------------------------------------------------------------------------------------
# Client frames: what decodes into what, and the messages


def test_seed_publish_decodes_without_rid_or_opts() -> None:
    frame = decode_client_frame('{"op":"PUBLISH","topic":"process.state","payload":{"pid":1}}')
    assert frame == Publish(topic="process.state", payload={"pid": 1})
    assert frame.rid is None and frame.opts is None
    assert decode_client_frame('{"op":"PUBLISH","topic":"a.b","payload":1,"opts":null}') == Publish(
        topic="a.b", payload=1
    )


def test_publish_to_new_event_carries_every_option() -> None:
    frame = decode_client_frame(
        '{"op":"PUBLISH","rid":1,"topic":"a.b","payload":[1],"opts":{"id":"e1","key":"k","headers":{"h":"v"},'
        '"tags":["t"],"caused_by":["c"],"sid":"s","ts":5}}'
    )
    assert isinstance(frame, Publish)
    assert frame.to_new_event() == NewEvent(
        topic="a.b",
        payload=[1],
        id="e1",
        key="k",
        headers={"h": "v"},
        tags=["t"],
        caused_by=["c"],
        sid="s",
        ts=5,
    )
    assert Publish(topic="x", payload=None).to_new_event() == NewEvent(topic="x")


def test_subscribe_group_options() -> None:
    frame = decode_client_frame(
        '{"op":"SUBSCRIBE","topic":"a.**","group":"g","opts":{"start":"ts:10","max_in_flight":7,'
        '"ack_timeout_ms":100,"max_deliver":2,"ordered_by_key":true}}'
    )
    assert isinstance(frame, Subscribe)
    assert frame.group_options() == GroupOptions(
        start=StartPosition(kind="ts", value=10),
        max_in_flight=7,
        ack_timeout_ms=100,
        max_deliver=2,
        ordered_by_key=True,
    )
    assert Subscribe(topic="a").group_options() == GroupOptions()
    assert Subscribe(topic="a", opts=SubscribeOpts(start="earliest")).group_options() == GroupOptions(
        start=StartPosition(kind="earliest")
    )


@pytest.mark.parametrize(
    ("frame", "msg"),
    [
        (
            '{"op":"SUBSCRIBE","topic":"a","group":"g","opts":{"max_in_flight":0}}',
            "SUBSCRIBE.opts.max_in_flight: expected int >= 1",
        ),
        ('{"op":"NACK","topic":"a","group":"g","id":"e","delay_ms":-1}', "NACK.delay_ms: expected int >= 0"),
        ('{"op":"PUBLISH","payload":1}', "PUBLISH.topic: missing required field"),
        ('{"op":"PUBLISH","topic":7}', "PUBLISH.topic: expected str, got int"),
        (
            '{"op":"PUBLISH","topic":"a","opts":{"tags":"x"}}',
            "PUBLISH.opts.tags: expected array | null, got str",
        ),
        ("[1]", "a frame must be a JSON object, got array"),
        (
            '{"op":"NOPE"}',
            "op: unknown op 'NOPE'; expected one of AUTH, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, EXTEND",
        ),
    ],
)
def test_error_messages_name_the_field(frame: str, msg: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert info.value.msg == msg
    assert str(info.value) == f"bad_request: {msg}"


@pytest.mark.parametrize(
    ("frame", "msg"),
    [
        ('{"op":"AUTH"}', "AUTH.token: missing; AUTH needs a token"),
        ('{"op":"AUTH","token":null}', "AUTH.token: missing; AUTH needs a token"),
        ('{"op":"AUTH","token":""}', "AUTH.token: missing; AUTH needs a token"),
        ('{"op":"AUTH","token":12}', "AUTH.token: must be a string, got number; AUTH needs a token"),
        ('{"op":"AUTH","token":{"jwt":"x"}}', "AUTH.token: must be a string, got object; AUTH needs a token"),
        ('{"op":"AUTH","token":["x"]}', "AUTH.token: must be a string, got array; AUTH needs a token"),
        ('{"op":"AUTH","token":true}', "AUTH.token: must be a string, got boolean; AUTH needs a token"),
    ],
)
def test_auth_without_a_string_token_is_no_token(frame: str, msg: str) -> None:
    """Like the token verifier, the codec calls anything but a non-empty string no token, so the
    gateway answers ERR no_token and closes with 4001 (a failed AUTH)."""
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(frame)
    assert (info.value.code, info.value.msg) == ("no_token", msg)
    assert close_code_for(info.value.code) == 4001


def test_auth_with_a_string_token_but_a_bad_rid_is_a_bad_request() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"op":"AUTH","token":"t","rid":true}')
    assert info.value.code == "bad_request" and info.value.msg.startswith("AUTH.rid: ")


@pytest.mark.parametrize(("text", "rid"), [("1.5", 1.5), ("-0.25", -0.25), ("2.0", 2.0), ("1e3", 1000.0)])
def test_any_json_number_is_a_rid_and_is_echoed(text: str, rid: float) -> None:
    frame = decode_client_frame('{"op":"ACK","topic":"a.*","group":"g","id":"e","rid":' + text + "}")
    assert frame.rid == rid and type(frame.rid) is float
    assert json.loads(encode_ok(frame.rid)) == {"op": "OK", "rid": rid}
    assert json.loads(encode_err(frame.rid, "forbidden", "m"))["rid"] == rid
    assert json.loads(encode_published(frame.rid, PublishResult(id="e", seq=1)))["rid"] == rid
    # a frame that fails keeps its float rid too
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"op":"ACK","topic":"a.*","group":"g","rid":' + text + "}")
    assert info.value.rid == rid
    # and the SDK side reads it back
    assert decode_server_frame(encode_ok(rid)) == OkFrame(rid=rid)
    assert decode_server_frame(encode_err(rid, "forbidden", "m")) == ErrFrame(
        rid=rid, code="forbidden", msg="m"
    )


def test_wildcard_publish_message_names_segment() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"op":"PUBLISH","rid":"r","topic":"a.*.c","payload":1}')
    err = info.value
    assert (err.code, err.rid) == ("bad_request", "r")
    assert err.msg.startswith("PUBLISH.topic: ")
    assert "*" in err.msg and "2" in err.msg  # the segment and its position


def test_group_message_explains_the_rule() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame('{"op":"SUBSCRIBE","topic":"a","group":"a.b"}')
    assert info.value.msg.startswith("SUBSCRIBE.group: 'a.b' is not a valid group name")


def test_frames_check_themselves_when_built() -> None:
    with pytest.raises(ValueError, match=r"^topic: "):
        Publish(topic="a.*", payload=1)
    with pytest.raises(ValueError, match=r"^group: "):
        Subscribe(topic="a", group="x.y")
    with pytest.raises(ValueError, match=r"^start: "):
        SubscribeOpts(start="bogus")
    with pytest.raises(ValueError, match=r"^token: "):
        Auth(token="")
    with pytest.raises(ValueError, match=r"^topic: "):
        Ack(topic="a..b", group="g", id="e")


def test_encode_client_frame_matches_seed_shape() -> None:
    # None fields are left out, like JSON.stringify drops undefined.
    assert encode_client_frame(Publish(topic="a.b", payload={"x": 1})) == (
        b'{"op":"PUBLISH","topic":"a.b","payload":{"x":1}}'
    )
    assert encode_client_frame(Ack(topic="a.*", group="g", id="e1", rid=3)) == (
        b'{"op":"ACK","rid":3,"topic":"a.*","group":"g","id":"e1"}'
    )
    assert encode_client_frame(Publish(topic="a", payload=1, opts=PublishOpts(key="k"))) == (
        b'{"op":"PUBLISH","topic":"a","payload":1,"opts":{"key":"k"}}'
    )


def test_encode_client_frame_rejects_non_json_payload() -> None:
    with pytest.raises(TypeError, match=r"^PUBLISH: cannot encode"):
        encode_client_frame(Publish(topic="a", payload=object()))


# --------------------------------------------------------------------------------------------------
# Size limit


def test_oversize_frame_is_too_large_before_parsing() -> None:
    # Garbage that is too big is reported as too big, not as malformed: nothing was parsed.
    with pytest.raises(ProtocolError) as info:
        decode_client_frame("x" * (MAX_FRAME_SIZE + 1))
    assert (info.value.code, info.value.rid) == ("too_large", None)
    assert str(MAX_FRAME_SIZE) in info.value.msg


def test_size_limit_is_inclusive_and_counts_utf8_bytes() -> None:
    frame = '{"op":"PUBLISH","rid":1,"topic":"a","payload":"' + "é" * 20 + '"}'
    size = len(frame.encode())
    assert size == len(frame) + 20
    assert isinstance(decode_client_frame(frame, max_size=size), Publish)
    assert isinstance(decode_client_frame(frame.encode(), max_size=size), Publish)
    for data in (frame, frame.encode()):
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(data, max_size=size - 1)
        assert info.value.code == "too_large"
        assert info.value.rid is None
        assert f"frame is {size} bytes" in info.value.msg


# --------------------------------------------------------------------------------------------------
# Server frames


EVENT = Event(id="e1", topic="a.b", seq=3, ts=1700, payload={"k": [1, None]})


def test_encode_event_shape() -> None:
    assert json.loads(encode_event("a.*", None, EVENT, 1)) == {
        "op": "EVENT",
        "topic": "a.*",
        "group": None,
        "event": {"id": "e1", "topic": "a.b", "seq": 3, "ts": 1700, "payload": {"k": [1, None]}},
        "ctx": {"attempt": 1, "redelivered": False},
    }
    # PROTOCOL.md: payload is a required member of the event, so a null payload is sent as null (model.Event
    # alone would leave it out); the other optional members are left out when unset.
    full = Event(
        id="e2", topic="a.c", seq=4, ts=5, key="k", headers={"h": "v"}, tags=["t"], caused_by=["e1"], sid="s"
    )
    body = json.loads(encode_event("a.**", "ops", full, 3))
    assert body["group"] == "ops"
    assert body["ctx"] == {"attempt": 3, "redelivered": True}
    assert body["event"] == {
        "id": "e2",
        "topic": "a.c",
        "seq": 4,
        "ts": 5,
        "payload": None,
        "key": "k",
        "headers": {"h": "v"},
        "tags": ["t"],
        "caused_by": ["e1"],
        "sid": "s",
    }
    bare = Event(id="e3", topic="a.d", seq=5, ts=6)
    assert json.loads(encode_event("a.*", None, bare, 1))["event"] == {
        "id": "e3",
        "topic": "a.d",
        "seq": 5,
        "ts": 6,
        "payload": None,
    }
    for falsy in (0, False, "", [], {}):
        event = Event(id="e4", topic="a.e", seq=7, ts=8, payload=falsy)
        assert json.loads(encode_event("a.*", None, event, 1))["event"]["payload"] == falsy


def test_wire_event() -> None:
    assert wire_event(EVENT) is EVENT  # a payload: encoded as it is (the delivery hot path)
    bare = Event(id="e3", topic="a.d", seq=5, ts=6, key="k", tags=["t"])
    wired = wire_event(bare)
    assert isinstance(wired, WireEvent)
    assert (
        msgspec.json.encode(wired)
        == b'{"id":"e3","topic":"a.d","seq":5,"ts":6,"payload":null,"key":"k","tags":["t"]}'
    )
    assert msgspec.json.decode(msgspec.json.encode(wired), type=Event) == bare
    assert msgspec.structs.asdict(wired) == msgspec.structs.asdict(bare)  # no field left behind


def test_encode_ok_and_err_shapes() -> None:
    assert encode_ok(None) == b'{"op":"OK"}'
    assert encode_ok(1, {"topic": "a", "group": None}) == b'{"op":"OK","rid":1,"topic":"a","group":null}'
    assert encode_ok("r", sub="u", exp=5) == b'{"op":"OK","rid":"r","sub":"u","exp":5}'
    assert encode_published(None, PublishResult(id="e", seq=9)) == (
        b'{"op":"OK","id":"e","seq":9,"duplicate":false}'
    )
    assert encode_published(0, PublishResult(id="e", seq=9, duplicate=True)) == (
        b'{"op":"OK","rid":0,"id":"e","seq":9,"duplicate":true}'
    )
    assert encode_err(None, "forbidden", "no") == b'{"op":"ERR","code":"forbidden","msg":"no"}'
    assert encode_err("x", "bad_request", "m") == b'{"op":"ERR","rid":"x","code":"bad_request","msg":"m"}'
    for reserved in ({"op": 1}, {"rid": 2}):
        with pytest.raises(ValueError, match="reserved"):
            encode_ok(1, reserved)
    with pytest.raises(ValueError, match="reserved"):
        encode_ok(1, op="x")
    with pytest.raises(TypeError, match=r"^OK: cannot encode"):
        encode_ok(1, x=object())


def test_decode_server_frames() -> None:
    assert decode_server_frame(encode_ok(4, {"topic": "a", "group": "g"})) == OkFrame(
        rid=4, fields={"topic": "a", "group": "g"}
    )
    assert decode_server_frame(encode_published("p", PublishResult(id="e", seq=1))) == OkFrame(
        rid="p", fields={"id": "e", "seq": 1, "duplicate": False}
    )
    assert decode_server_frame(b'{"op":"ERR","code":"newer_code","msg":"m","extra":1}') == ErrFrame(
        code="newer_code", msg="m"
    )
    assert decode_server_frame(encode_event("a.*", None, EVENT, 2)) == EventFrame(
        topic="a.*", group=None, event=EVENT, ctx=Ctx(attempt=2, redelivered=True)
    )


@pytest.mark.parametrize(
    ("data", "start"),
    [
        ("nope", "malformed JSON"),
        ("[]", "a frame must be a JSON object"),
        ('{"op":"PUBLISH"}', "op: unknown op 'PUBLISH'; expected one of OK, ERR, EVENT"),
        ('{"op":"ERR","rid":5,"code":"x"}', "ERR.msg: missing required field"),
        ('{"op":"EVENT","topic":"a","group":null,"event":{"id":"e"},"ctx":{}}', "EVENT.event.topic: missing"),
        ('{"op":"OK","rid":true}', "OK.rid: expected"),
        ('{"op":"ERR","rid":[1],"code":"x","msg":"m"}', "ERR.rid: expected"),
    ],
)
def test_decode_server_frame_garbage(data: str, start: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_server_frame(data)
    assert info.value.code == "bad_request"
    assert info.value.msg.startswith(start), info.value.msg


def test_close_codes() -> None:
    assert close_code_for("no_token") == 4001
    assert close_code_for("jwt_invalid") == 4001
    assert close_code_for("token_expired") == 4003
    for code in ERROR_CODES - set(CLOSE_CODES):
        assert close_code_for(code) is None
    assert set(CLOSE_CODES) <= ERROR_CODES
    assert len(ERROR_CODES) == 11


# --------------------------------------------------------------------------------------------------
# Properties

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# JSON values without lone surrogates: what a well-behaved peer can actually send.
clean_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


def _is_valid_pattern(pattern: str) -> bool:
    try:
        validate_pattern(pattern)
    except ValueError:
        return False
    return True


_segment = st.from_regex(r"\A[A-Za-z0-9_:-]{1,12}\Z")
topics = st.lists(_segment, min_size=1, max_size=6).map(".".join)
patterns = (
    st.lists(_segment | st.sampled_from(["*", "**"]), min_size=1, max_size=6)
    .map(".".join)
    .filter(_is_valid_pattern)
)
groups = st.none() | _segment
rids = (
    st.none()
    | st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
)
# strings that may reach a store: no NUL (protocol/limits.py)
_store_text = _text.filter(lambda t: "\x00" not in t)
_header_keys = st.from_regex(r"\A[A-Za-z0-9_-]{1,20}\Z")
ids = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40)


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


publish_opts = st.builds(
    PublishOpts,
    id=_opt(ids),
    key=_opt(_store_text),
    headers=_opt(st.dictionaries(_header_keys, _store_text, max_size=3)),
    tags=_opt(st.lists(_store_text, max_size=3)),
    caused_by=_opt(st.lists(ids, max_size=3)),
    sid=_opt(_store_text),
    ts=_opt(st.integers(min_value=0, max_value=MAX_TS)),
)
subscribe_opts = st.builds(
    SubscribeOpts,
    start=_opt(
        st.sampled_from(["earliest", "latest"])
        | st.integers(min_value=0, max_value=MAX_SEQ)
        | st.integers(min_value=0, max_value=MAX_SEQ).map(lambda n: f"seq:{n}")
        | st.integers(min_value=0, max_value=MAX_TS).map(lambda n: f"ts:{n}")
    ),
    max_in_flight=_opt(st.integers(min_value=1, max_value=MAX_IN_FLIGHT)),
    ack_timeout_ms=_opt(st.integers(min_value=1, max_value=MAX_DURATION_MS)),
    max_deliver=_opt(st.integers(min_value=1, max_value=MAX_MAX_DELIVER)),
    ordered_by_key=_opt(st.booleans()),
)
client_frames: st.SearchStrategy[ClientFrame] = st.one_of(
    st.builds(Auth, token=_text.filter(bool), rid=rids),
    st.builds(Publish, topic=topics, payload=clean_json, opts=_opt(publish_opts), rid=rids),
    st.builds(Subscribe, topic=patterns, group=groups, opts=_opt(subscribe_opts), rid=rids),
    st.builds(Unsubscribe, topic=patterns, group=groups, rid=rids),
    st.builds(Ack, topic=patterns, group=groups, id=ids, rid=rids),
    st.builds(
        Nack,
        topic=patterns,
        group=groups,
        id=ids,
        reason=_opt(_store_text),
        delay_ms=_opt(st.integers(min_value=0, max_value=MAX_DURATION_MS)),
        rid=rids,
    ),
)

# Frame-shaped dicts: a known op and a mix of plausible and arbitrary field values, so the fuzzing gets
# past the op check into the field validation.
_plausible = st.sampled_from(["a.b", "a.*", "a.**", "", "g", "a.b.", 0, 1, -1, None, True, "earliest", "x.y"])
_field_value = _plausible | json_values
_OPT_KEYS = [
    "id",
    "key",
    "headers",
    "tags",
    "caused_by",
    "sid",
    "ts",
    "start",
    "max_in_flight",
    "max_deliver",
]
frame_dicts = st.fixed_dictionaries(
    {"op": st.sampled_from(CLIENT_OPS) | json_values},
    optional={
        "rid": st.integers() | _text | json_values,
        "token": _field_value,
        "topic": _field_value,
        "payload": json_values,
        "group": _field_value,
        "id": _field_value,
        "reason": _field_value,
        "delay_ms": _field_value,
        "opts": st.dictionaries(st.sampled_from(_OPT_KEYS), _field_value, max_size=4) | json_values,
    },
)


def _decodes_or_protocol_error(data: str | bytes) -> ClientFrame | ProtocolError:
    try:
        frame = decode_client_frame(data)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
        assert exc.msg
        return exc
    assert isinstance(frame, CLIENT_TYPES)
    return frame


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_value_decodes_or_is_a_protocol_error(value: Any, ascii_only: bool) -> None:
    _decodes_or_protocol_error(json.dumps(value, ensure_ascii=ascii_only))


@settings(max_examples=300)
@given(value=frame_dicts, ascii_only=st.booleans())
def test_frame_shaped_dicts_decode_or_fail_with_their_rid(value: dict[str, Any], ascii_only: bool) -> None:
    result = _decodes_or_protocol_error(json.dumps(value, ensure_ascii=ascii_only))
    rid = value.get("rid")
    valid_rid = echoable_rid(rid) is not None
    if isinstance(result, ProtocolError):
        # Whatever else is wrong, the ERR answers the right request, unless the text cannot be read as
        # JSON at all (a lone surrogate anywhere makes it invalid UTF-8 or invalid JSON).
        raw_text = json.dumps(value, ensure_ascii=False)
        if not any(0xD800 <= ord(c) <= 0xDFFF for c in raw_text):
            assert result.rid == (rid if valid_rid else None), result.msg
    else:
        assert valid_rid or rid is None
        assert result.rid == rid
        assert decode_client_frame(encode_client_frame(result)) == result


@settings(max_examples=200)
@given(data=st.text() | st.binary())
def test_any_text_or_bytes_decodes_or_is_a_protocol_error(data: str | bytes) -> None:
    _decodes_or_protocol_error(data)
    if len(data) > 8:
        with pytest.raises(ProtocolError) as info:
            decode_client_frame(data, max_size=8)
        assert info.value.code == "too_large"


@settings(max_examples=300)
@given(frame=client_frames)
def test_client_frames_round_trip(frame: ClientFrame) -> None:
    assert decode_client_frame(encode_client_frame(frame)) == frame
    assert decode_client_frame(encode_client_frame(frame).decode("utf-8")) == frame


events = st.builds(
    Event,
    id=ids,
    topic=topics,
    seq=st.integers(min_value=1, max_value=2**63 - 1),
    ts=st.integers(min_value=0, max_value=2**62),
    payload=clean_json,
    key=_opt(_text),
    headers=_opt(st.dictionaries(_text, _text, max_size=3)),
    tags=_opt(st.lists(_text, max_size=3)),
    caused_by=_opt(st.lists(ids, max_size=3)),
    sid=_opt(_text),
)


@settings(max_examples=200)
@given(pattern=patterns, group=groups, event=events, attempt=st.integers(min_value=1, max_value=1000))
def test_event_frames_round_trip(pattern: str, group: str | None, event: Event, attempt: int) -> None:
    data = encode_event(pattern, group, event, attempt)
    assert "payload" in msgspec.json.decode(data)["event"]
    frame = decode_server_frame(data)
    assert frame == EventFrame(
        topic=pattern, group=group, event=event, ctx=Ctx(attempt=attempt, redelivered=attempt > 1)
    )


@settings(max_examples=200)
@given(
    rid=rids,
    fields=st.dictionaries(_text.filter(lambda k: k not in ("op", "rid")), clean_json, max_size=5),
    code=st.sampled_from(sorted(ERROR_CODES)),
    msg=_text,
)
def test_ok_and_err_frames_round_trip(rid: Any, fields: dict[str, Any], code: Any, msg: str) -> None:
    assert decode_server_frame(encode_ok(rid, fields)) == OkFrame(rid=rid, fields=fields)
    assert decode_server_frame(encode_err(rid, code, msg)) == ErrFrame(rid=rid, code=code, msg=msg)


@settings(max_examples=200)
@given(data=st.text() | st.binary() | json_values.map(json.dumps))
def test_server_decoder_never_raises_anything_else(data: str | bytes) -> None:
    try:
        frame = decode_server_frame(data)
    except ProtocolError as exc:
        assert exc.code == "bad_request" and exc.msg
    else:
        assert isinstance(frame, OkFrame | ErrFrame | EventFrame)


def test_validation_errors_are_decode_errors() -> None:
    # The translation layer must catch every msgspec error class, including ValidationError subclasses.
    assert issubclass(msgspec.ValidationError, msgspec.DecodeError)
