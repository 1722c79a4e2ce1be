"""Payloads through the hub: a long PUBLISH's payload is stored as the JSON text it came in (one pass over
it on the loop, ``protocol/hubframes.py``), every payload is read back as the same value, and a malformed
long frame gets the error it got before."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from outboxhub.app import Hub
from outboxhub.errors import ProtocolError
from outboxhub.protocol.codec import decode_client_frame
from outboxhub.protocol.hubframes import RAW_FROM
from outboxhub.store.sqlite.store import SQLiteStore

BOTH_WS_SERVERS = True

PAD = "p" * RAW_FROM
ODD_PAYLOADS = [
    '{"b": 1.50, "e": 1e308, "z": -0.0, "n": 123456789012345678901234567890, "a": [ 1 , {"x": null} ]}',
    '"\\u00e9\\ud83d\\ude00 \\"quoted\\" \\\\ \\n \\u0000 é😀"',
    '[[[[[[["deep"]]]]]]]',
    '{"k": "v", "k": "last"}',
    "  -12.5e-3  ",
    '""',
    "{}",
    "null",
]


def _stored_payload(hub: Hub, seq: int) -> bytes:
    store = hub.store
    assert isinstance(store, SQLiteStore)
    with sqlite3.connect(f"file:{store._path}?mode=ro", uri=True) as conn:
        (payload,) = conn.execute("SELECT payload FROM events WHERE seq = ?", (seq,)).fetchone()
    return bytes(payload)


@pytest.mark.parametrize("long", [True, False])
async def test_odd_payloads_come_back_as_the_values_sent(
    hub: Hub, ws_connect: Any, token: Any, long: bool
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    reply = await c.request("SUBSCRIBE", topic="odd.*", group="g", opts={"start": "earliest"})
    assert reply["op"] == "OK"
    pad = PAD if long else ""
    seqs = []
    for i, text in enumerate(ODD_PAYLOADS):
        await c.send(f'{{"op":"PUBLISH","rid":"p{i}","topic":"odd.t","pad":"{pad}","payload":{text}}}')
        reply = await c.recv()
        assert (reply["op"], reply["rid"]) == ("OK", f"p{i}"), reply
        seqs.append(reply["seq"])
        if long:  # the client's own JSON text, not a re-encoding of its values
            assert _stored_payload(hub, reply["seq"]) == text.strip().encode()
    for text, seq in zip(ODD_PAYLOADS, seqs, strict=True):
        event = await c.next_event()
        assert event["event"]["seq"] == seq
        assert event["event"]["payload"] == json.loads(text)
        await c.send(json.dumps({"op": "ACK", "topic": "odd.*", "group": "g", "id": event["event"]["id"]}))


@pytest.mark.parametrize(
    "payload", ["1e400", '"\\ud800"', '"a\x01b"', "[1, 2,]", "[" * 64 + "]" * 64, '{"a": 1e999}']
)
async def test_a_malformed_long_publish_gets_the_error_it_got_before(
    hub: Hub, ws_connect: Any, token: Any, payload: str
) -> None:
    c = await ws_connect(hub.ws_url, token=token())
    text = f'{{"op":"PUBLISH","rid":"bad","topic":"odd.t","pad":"{PAD}","payload":{payload}}}'
    with pytest.raises(ProtocolError) as expected:
        decode_client_frame(text)
    await c.send(text)
    reply = await c.recv()
    assert (reply["op"], reply["code"], reply["msg"], reply.get("rid")) == (
        "ERR",
        expected.value.code,
        expected.value.msg,
        expected.value.rid,
    )
    assert (await c.request("PUBLISH", topic="odd.t", payload=PAD))["op"] == "OK"  # the connection goes on
