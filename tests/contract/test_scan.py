"""Contract: reading the log — scans by pattern and range, latest-by-key, tail, count, topics."""

from __future__ import annotations

import pytest

from outboxhub.errors import TopicError
from outboxhub.store import Store

from . import ev

TOPICS = ["a", "a.b", "a.c", "a.b.c", "a.c.d", "a.c.x.c.d", "a.x.y.c.d", "b.c.d", "a.b.c.d", "x.a.c.d"]


async def _publish_topics(store: Store) -> dict[str, int]:
    results = await store.publish_batch([ev(topic, topic) for topic in TOPICS])
    return {topic: r.seq for topic, r in zip(TOPICS, results, strict=True)}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("**", TOPICS),
        ("a.**", ["a", "a.b", "a.c", "a.b.c", "a.c.d", "a.c.x.c.d", "a.x.y.c.d", "a.b.c.d"]),
        ("*", ["a"]),
        ("a.*", ["a.b", "a.c"]),
        ("*.c.d", ["a.c.d", "b.c.d"]),
        ("a.**.c.d", ["a.c.d", "a.c.x.c.d", "a.x.y.c.d", "a.b.c.d"]),
        ("**.c.d", ["a.c.d", "a.c.x.c.d", "a.x.y.c.d", "b.c.d", "a.b.c.d", "x.a.c.d"]),
        ("a.*.*", ["a.b.c", "a.c.d"]),
        ("*.*.c.d", ["a.b.c.d", "x.a.c.d"]),
        ("a.b.c", ["a.b.c"]),
        ("nothing.here", []),
        ("nothing.*", []),
    ],
)
async def test_scan_by_pattern(store: Store, pattern: str, expected: list[str]) -> None:
    seqs = await _publish_topics(store)
    events = await store.scan(pattern)
    assert [e.topic for e in events] == expected
    assert [e.seq for e in events] == [seqs[t] for t in expected]
    assert await store.count(pattern) == len(expected)
    tail = await store.tail(pattern)
    if expected:
        assert tail is not None and tail.topic == expected[-1]
    else:
        assert tail is None


async def test_scan_merges_interleaved_topics_in_seq_order(store: Store) -> None:
    await store.publish_batch([ev(f"m.t{i % 7}", i) for i in range(140)])
    for pattern in ("m.*", "m.t3", "**"):
        events = await store.scan(pattern, limit=1000)
        assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert [e.payload for e in await store.scan("m.*", limit=1000)] == list(range(140))
    assert [e.payload for e in await store.scan("m.t3")] == list(range(3, 140, 7))


async def test_scan_over_many_topics(store: Store) -> None:
    # Enough topics that a backend may switch strategy (e.g. merge vs. walk); the answer must not change.
    await store.publish_batch([ev(f"w.t{i % 60}", i) for i in range(600)])
    await store.publish_batch([ev("other.topic", -1) for _ in range(20)])
    events = await store.scan("w.*", after_seq=0, limit=1000)
    assert [e.payload for e in events] == list(range(600))
    page = await store.scan("w.*", after_seq=events[99].seq, limit=50)
    assert [e.payload for e in page] == list(range(100, 150))
    assert await store.count("w.*") == 600
    assert await store.count("w.*", after_seq=events[549].seq) == 50
    tail = await store.tail("w.*")
    assert tail is not None and tail.payload == 599


async def test_after_seq_and_limit_page_through(store: Store) -> None:
    results = await store.publish_batch([ev("p.q", i) for i in range(25)])
    seen: list[int] = []
    after = 0
    while True:
        page = await store.scan("p.*", after_seq=after, limit=10)
        if not page:
            break
        assert len(page) <= 10
        seen.extend(e.payload for e in page)
        after = page[-1].seq
    assert seen == list(range(25))
    assert await store.scan("p.q", after_seq=results[-1].seq) == []
    assert await store.count("p.q", after_seq=results[19].seq) == 5
    assert [e.payload for e in await store.scan("p.q", after_seq=results[9].seq, limit=3)] == [10, 11, 12]


async def test_since_ts_and_until_ts_are_inclusive(store: Store) -> None:
    await store.publish_batch([ev("time.t", i, ts=1000 + 100 * i) for i in range(10)])
    got = await store.scan("time.*", since_ts=1200, until_ts=1500)
    assert [e.payload for e in got] == [2, 3, 4, 5]
    assert [e.payload for e in await store.scan("time.t", since_ts=1850)] == [9]
    assert [e.payload for e in await store.scan("time.t", until_ts=1000)] == [0]
    assert [e.payload for e in await store.scan("time.t", since_ts=1100, limit=2)] == [1, 2]
    first = await store.scan("time.t", limit=1)
    got = await store.scan("time.t", after_seq=first[0].seq, until_ts=1200)
    assert [e.payload for e in got] == [1, 2]


async def test_latest_by_key(store: Store) -> None:
    await store.publish_batch(
        [
            ev("state.proc", {"v": 1}, key="p1"),
            ev("state.proc", {"v": 1}, key="p2"),
            ev("state.proc", {"v": 2}, key="p1"),
            ev("state.other", {"v": 9}, key="p1"),
            ev("state.proc", {"v": 0}),
        ]
    )
    latest = await store.latest_by_key("state.proc", ["p1", "p2", "p3"])
    assert set(latest) == {"p1", "p2"}
    assert latest["p1"].payload == {"v": 2} and latest["p1"].topic == "state.proc"
    assert latest["p2"].payload == {"v": 1}
    assert await store.latest_by_key("state.proc", []) == {}
    assert await store.latest_by_key("state.none", ["p1"]) == {}
    other = await store.latest_by_key("state.other", ["p1", "p1"])
    assert list(other) == ["p1"] and other["p1"].payload == {"v": 9}


async def test_topics_summary(store: Store) -> None:
    await store.publish(ev("z.last", ts=5))
    first = await store.publish(ev("b.first", ts=10))
    second = await store.publish(ev("b.first", ts=20))
    infos = await store.topics()
    assert [i.topic for i in infos] == ["b.first", "z.last"]
    b = infos[0]
    assert (b.count, b.last_seq, b.last_ts) == (2, second.seq, 20)
    assert first.seq < b.last_seq
    assert infos[1].count == 1 and infos[1].last_ts == 5


async def test_a_pattern_sees_topics_created_after_its_first_use(store: Store) -> None:
    await store.publish(ev("late.a", 1))
    assert [e.payload for e in await store.scan("late.*")] == [1]
    assert await store.count("late.**") == 1
    await store.publish(ev("late.b", 2))
    await store.publish(ev("late.b.c", 3))
    assert [e.payload for e in await store.scan("late.*")] == [1, 2]
    assert [e.payload for e in await store.scan("late.**")] == [1, 2, 3]
    assert await store.count("late.**") == 3
    tail = await store.tail("late.*")
    assert tail is not None and tail.payload == 2


async def test_invalid_patterns_are_refused(store: Store) -> None:
    await store.publish(ev("a.b"))
    for bad in ("a..b", "a.b*", "", "a.*x"):
        with pytest.raises(TopicError):
            await store.scan(bad)
