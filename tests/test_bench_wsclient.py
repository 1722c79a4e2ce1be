"""The bench's raw client (picows) against a real hub subprocess on a SQLite file: one-at-a-time and
windowed publishes are answered and timed, an ERR fails its request, EVENTs of a group reach the handler and
are ACKed, and a closed connection refuses new requests. No HTTP session is involved."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from outboxhub.bench.hubproc import start_hub_process
from outboxhub.bench.wsclient import connect_many
from outboxhub.protocol.codec import EventFrame, Publish, Subscribe, Unsubscribe, encode_client_frame
from waiting import until


def _pending_claims(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM pending").fetchone()
    return int(count)


async def test_the_bench_client_publishes_subscribes_and_acks_on_a_real_hub(tmp_path: Path) -> None:
    async with start_hub_process(f"sqlite:///{tmp_path}/hub.db", workdir=tmp_path) as target:
        pub, sub = await connect_many(target.ws_url, target.token, 2, window=4)
        seen: list[EventFrame] = []
        sub.on_event = lambda frame, _now: seen.append(frame)
        await sub.request(Subscribe(topic="bench.t", group="g"))
        frame = encode_client_frame(Publish(topic="bench.t", payload={"n": 1}))
        for _ in range(10):  # windowed: at most 4 in flight
            if pub.in_flight >= pub.window:
                await pub.wait_room()
            assert pub.in_flight < pub.window
            await pub.send(frame)
        await pub.drain()
        assert (pub.ok, pub.errors, pub.in_flight) == (10, [], 0)
        assert pub.latency.summary() is not None
        with pytest.raises(RuntimeError, match="not_subscribed"):
            await pub.request(Unsubscribe(topic="bench.t", group="nobody"))
        await until(lambda: len(seen) == 10, "the 10 EVENTs arrived")
        assert [e.event.payload for e in seen] == [{"n": 1}] * 10
        assert [e.group for e in seen] == ["g"] * 10
        await until(lambda: _pending_claims(tmp_path / "hub.db") == 0, "every EVENT was ACKed")
        await pub.close()
        await sub.close()
        with pytest.raises(ConnectionError):
            await pub.send(frame)
