"""The hub keeps a PUBLISH string payload as its JSON text (``protocol/hubframes.py``): accepted and refused
exactly as ``decode_client_frame`` does, stored as sent, read back as the same value."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import msgspec
import pytest

from outboxhub.app import Hub
from outboxhub.bus.core import Bus
from outboxhub.errors import ProtocolError
from outboxhub.model import NewEvent, PublishResult
from outboxhub.protocol.codec import Publish, decode_client_frame
from outboxhub.protocol.hubframes import StringPublish, decode_hub_frame
from outboxhub.store import open_store
from outboxhub.store.base import Store
from outboxhub.store.codec import prepare

BOTH_WS_SERVERS = True


def _publish(payload_json: str, extra: str = "") -> str:
    return '{"op":"PUBLISH","rid":"r1","topic":"a.b"' + extra + ',"payload":' + payload_json + "}"


def _error(decode: Any, data: str | bytes, max_size: int = 1 << 20) -> tuple[str, str, Any]:
    with pytest.raises(ProtocolError) as info:
        decode(data, max_size=max_size)
    return (info.value.code, info.value.msg, info.value.rid)


@pytest.mark.parametrize(
    "text",
    ['"abc"', '"x\\u0041"', '"a\\/b\\"c\\\\"', '"é ☃ 𐀀"', '"\\ud800\\udc00"', '""', '"' + "x" * 4094 + '"'],
)
def test_a_string_payload_is_kept_as_its_json_text_and_reads_back_as_the_same_value(text: str) -> None:
    frame = decode_hub_frame(_publish(text))
    assert type(frame) is StringPublish
    assert bytes(frame.payload) == text.encode()
    stored = prepare(frame.to_new_event())[4]
    assert stored == text.encode()
    old = decode_client_frame(_publish(text))
    assert type(old) is Publish and msgspec.json.decode(stored) == old.payload


@pytest.mark.parametrize(
    ("data", "max_size"),
    [
        (_publish('"a\x01b"'), 1 << 20),  # a raw control character
        (_publish('"a\tb"'), 1 << 20),
        (_publish('"a\\xb"'), 1 << 20),  # no such escape
        (_publish('"\\u12"'), 1 << 20),
        (_publish('"\\uZZZZ"'), 1 << 20),
        (_publish('"\\ud800"'), 1 << 20),  # a lone high surrogate
        (_publish('"\\ud800\\u0041"'), 1 << 20),
        (_publish('"\\udc00"'), 1 << 20),  # a lone low surrogate
        (_publish('"abc'), 1 << 20),  # truncated
        ('{"op":"PUBLISH","rid":"r1","topic":"a.*","payload":"x"}', 1 << 20),  # a wildcard topic
        ('{"op":"PUBLISH","rid":"r1","topic":7,"payload":"x"}', 1 << 20),
        ('{"op":"PUBLISH","rid":"r1","payload":"x"}', 1 << 20),  # no topic
        (_publish('"x"', ',"opts":{"id":7}'), 1 << 20),
        (_publish('"x"', ',"opts":{"headers":{"k":1}}'), 1 << 20),
        (_publish('"' + "x" * 100 + '"'), 64),  # too large
        ('{"op":"NOPE","rid":"r1","payload":"x"}', 1 << 20),
    ],
)
def test_a_bad_frame_with_a_string_payload_is_refused_as_before(data: str, max_size: int) -> None:
    assert _error(decode_hub_frame, data, max_size) == _error(decode_client_frame, data, max_size)


@pytest.mark.parametrize(
    "data",
    [
        _publish('{"a":[1,2.5,"x"]}'),
        _publish("[1,2]"),
        _publish("12"),
        _publish("null"),
        _publish("true"),
        '{"op":"PUBLISH","rid":"r1","topic":"a.b"}',  # no payload at all
        # the key met elsewhere: the payload is absent, as the ordinary decode says
        '{"op":"PUBLISH","rid":"r1","topic":"a.b","opts":{"headers":{"payload":"x"}}}',
        '{"op":"PUBLISH","rid":"r1","topic":"a.b","opts":{"headers":{"payload":"x"}},"payload":{"n":1}}',
        '{"op":"PUBLISH", "rid":"r1", "topic":"a.b", "payload": "spaced"}',
        '{"op":"ACK","rid":"r1","topic":"a.b","group":"g","id":"e1","payload":"x"}',
    ],
)
def test_any_other_frame_decodes_as_decode_client_frame_does(data: str) -> None:
    assert decode_hub_frame(data) == decode_client_frame(data)
    assert type(decode_hub_frame(data)) is type(decode_client_frame(data))
    assert type(decode_hub_frame(data.encode())) is type(decode_client_frame(data))


def test_limits_on_other_payloads_still_hold() -> None:
    deep = _publish("[" * 100 + "]" * 100)
    huge = _publish('{"n":1e400}')
    for data in (deep, huge):
        assert _error(decode_hub_frame, data) == _error(decode_client_frame, data)


def test_a_bytes_frame_is_never_kept_raw() -> None:
    """UTF-8 inside a raw span is not checked: bytes (not a text frame's str) take the ordinary decode."""
    data = b'{"op":"PUBLISH","rid":"r1","topic":"a.b","payload":"\xff"}'
    assert _error(decode_hub_frame, data) == _error(decode_client_frame, data)
    frame = decode_hub_frame(_publish('"x"').encode())
    assert type(frame) is Publish and frame.payload == "x"


async def test_the_gateway_stores_a_string_payload_as_sent(hub: Hub, ws_connect: Any, token: Any) -> None:
    """Over a real socket into a real SQLite file: the escape the client wrote is what the row holds (the
    old decode and re-encode wrote ``"xA"``), and subscribers get the same value either way."""
    c = await ws_connect(hub.ws_url, token=token())
    await c.request("SUBSCRIBE", topic="raw.*", group="g")
    await c.send('{"op":"PUBLISH","rid":"p1","topic":"raw.t","payload":"x\\u0041"}')
    await c.send('{"op":"PUBLISH","rid":"p2","topic":"raw.t","payload":{"k":"x\\u0041"}}')
    replies: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    while len(replies) < 2 or len(events) < 2:
        msg = json.loads(await asyncio.wait_for(c.ws.receive_str(), 10))
        (events if msg["op"] == "EVENT" else replies).append(msg)
    assert [r["rid"] for r in replies] == ["p1", "p2"] and all(r["op"] == "OK" for r in replies)
    assert sorted((e["event"]["payload"] for e in events), key=str) == ["xA", {"k": "xA"}]
    path = str(hub.settings.store).removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT payload FROM events ORDER BY seq").fetchall()
    assert [bytes(r[0]) for r in rows] == [b'"x\\u0041"', b'{"k":"xA"}']


class _NotABackend:
    """A ``Store`` that is not a ``StoreBackend`` (a real SQLite store behind it): it records the payloads it
    is handed."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.payloads: list[Any] = []

    async def publish_batch(self, events: list[NewEvent]) -> list[PublishResult]:
        self.payloads.extend(e.payload for e in events)
        return await self.inner.publish_batch(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_store_that_is_not_a_backend_gets_raw_payloads_decoded(tmp_path: Any) -> None:
    inner = await open_store(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        store = _NotABackend(inner)
        bus = Bus(store)  # type: ignore[arg-type] # a Store by duck typing
        events = [
            NewEvent(topic="a.b", payload=msgspec.Raw(b'"x\\u0041"')),
            NewEvent(topic="a.b", payload={"n": 1}),
        ]
        results = await bus.publish_batch_soon(events)
        assert [r.seq for r in results] == [1, 2]
        assert store.payloads == ["xA", {"n": 1}]
        assert [e.payload for e in await inner.scan("a.b")] == ["xA", {"n": 1}]
    finally:
        await inner.close()
