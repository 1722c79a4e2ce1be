"""The SQLite topic catalog: bounded pattern cache, and a new topic's cost independent of the patterns
ever asked about (issue #14 item 3: a reader asking about thousands of patterns must not slow publishes)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from outboxhub.model import NewEvent
from outboxhub.store import open_store
from outboxhub.store.sqlite.store import SQLiteStore
from outboxhub.store.sqlite.topics import TopicCatalog
from outboxhub.topics import compile_pattern

_SEGMENTS = st.sampled_from(["a", "b", "c"])
_PATTERN_SEGMENTS = st.sampled_from(["a", "b", "c", "*", "**"])
_TOPICS = st.lists(_SEGMENTS, min_size=1, max_size=4).map(".".join)
_PATTERNS = st.lists(_PATTERN_SEGMENTS, min_size=1, max_size=4).map(".".join)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.one_of(st.tuples(st.just("topic"), _TOPICS), st.tuples(st.just("ask"), _PATTERNS))),
    cache_max=st.integers(min_value=1, max_value=4),
)
def test_resolve_always_equals_matching_every_known_topic(
    steps: list[tuple[str, str]], cache_max: int
) -> None:
    catalog = TopicCatalog(cache_max=cache_max)
    known: dict[str, int] = {}
    for kind, text in steps:
        if kind == "topic":
            if text not in known:
                known[text] = len(known) + 1
                catalog.merge([(known[text], text)])
        else:
            matcher = compile_pattern(text)
            expected = sorted(tid for name, tid in known.items() if matcher.match(name))
            assert sorted(catalog.resolve(text)) == expected
            assert catalog.cached_patterns <= cache_max


def test_the_pattern_cache_is_bounded_and_least_recently_used_goes_first() -> None:
    catalog = TopicCatalog(cache_max=3)
    catalog.merge([(1, "a.x")])
    for pattern in ("a.*", "b.*", "c.*"):
        catalog.resolve(pattern)
    catalog.resolve("a.*")  # a.* is now the most recently used
    catalog.resolve("d.*")  # evicts b.*
    assert catalog.cached_patterns == 3
    before = catalog.matches
    catalog.resolve("a.*")
    assert catalog.matches == before  # still cached: no match run
    catalog.resolve("b.*")
    assert catalog.matches == before + 1  # evicted: resolved again over the one topic


def test_a_new_topic_costs_no_match_per_cached_pattern() -> None:
    catalog = TopicCatalog()
    catalog.merge([(1, "victim.orders")])
    for n in range(4000):
        catalog.resolve(f"zz{n}.*")
    before = catalog.matches
    catalog.merge([(2, "victim.new")])
    assert catalog.matches == before  # merge walks no pattern
    assert catalog.resolve("zz7.*") == ()
    assert catalog.matches - before == 1  # a cached pattern is matched against the one new topic only
    assert catalog.resolve("victim.*") == (1, 2)


async def test_patterns_asked_by_readers_do_not_add_work_to_new_topic_publishes(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'catalog.db'}")
    try:
        assert isinstance(store, SQLiteStore)
        await store.publish(NewEvent(topic="victim.orders", payload=1))
        for n in range(3000):  # what 3,000 /lag?topic=zzN.* calls do
            await store.count(f"zz{n}.*")
        catalog = store.topic_catalog
        assert catalog.cached_patterns <= 4096
        before = catalog.matches
        for n in range(50):
            await store.publish(NewEvent(topic=f"victim.t{n}", payload=n))
        assert catalog.matches == before  # publishing new topics ran no pattern match at all
        assert await store.count("victim.*") == 51
    finally:
        await store.close()
