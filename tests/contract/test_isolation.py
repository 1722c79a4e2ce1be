"""Contract: one caller's bad write or pattern cannot hurt another caller of the same store (issue #14).

* a publish the database refuses fails alone, whatever it was batched with (group commit mixes the
  publishes of every connection), and finding it costs a few statements, not one per batched job;
* a pattern built to make a backtracking regular expression engine explode (``**.a.**.a.**...``) is
  answered correctly, and on MongoDB no regular expression is sent to the database at all;
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from outboxhub.model import PublishResult
from outboxhub.store import Store

from . import ev

_TOO_BIG = 2**63
"""A ts no backend can store (64-bit signed columns): the database refuses the row."""


def _split_runs(store: Store) -> int | None:
    """How many failed batches the store split to find a bad job (None: the backend does not count)."""
    stats = getattr(store, "writer_stats", None)
    if stats is not None:
        runs = getattr(stats, "split_runs", None)
        return None if runs is None else int(runs)
    writer: Any = getattr(store, "_writer", None)
    runs = getattr(writer, "split_runs", None)
    return None if runs is None else int(runs)


async def test_a_bad_publish_fails_alone_in_a_shared_batch(store: Store) -> None:
    good = 200
    bad_every = 50
    calls = []
    for n in range(good):
        calls.append(store.publish(ev("victim.orders", {"n": n})))
        if n % bad_every == bad_every // 2:
            calls.append(store.publish(ev("attacker.x", {"n": n}, ts=_TOO_BIG)))
    before = _split_runs(store)
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    results = [o for o in outcomes if isinstance(o, PublishResult)]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(results) == good, f"good publishes failed: {errors[:3]!r}"
    assert len(errors) == good // bad_every
    assert [e.payload["n"] for e in await store.scan("victim.*", limit=1000)] == list(range(good))
    assert await store.scan("attacker.*") == []
    after = _split_runs(store)
    if before is not None and after is not None:
        # bisection: each bad job costs at most ~log2(batch) splits, never one staging per batched job
        assert after - before <= len(errors) * math.ceil(math.log2(len(calls))) + 1


@pytest.mark.parametrize("bad_first", [True, False])
async def test_a_bad_publish_batch_fails_only_its_caller(store: Store, bad_first: bool) -> None:
    bad = store.publish_batch([ev("attacker.x", 1), ev("attacker.x", 2, ts=_TOO_BIG)])
    good = store.publish_batch([ev("victim.a", 1), ev("victim.a", 2)])
    calls = [bad, good] if bad_first else [good, bad]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    bad_outcome, good_outcome = outcomes if bad_first else outcomes[::-1]
    assert isinstance(bad_outcome, BaseException)
    assert isinstance(good_outcome, list) and len(good_outcome) == 2
    assert await store.scan("attacker.*") == []  # a batch is atomic: the good half of the bad one is gone


_EXPLOSIVE = ".".join(["**", "a"] * 15) + ".b"
"""``**.a.**.a. ... .b``: a backtracking regex of it takes exponential time on a long topic of ``a``s."""


def _regex_spy() -> Any:
    """A pymongo command listener counting commands that carry a ``$regex`` (while ``active``)."""
    from pymongo import monitoring

    class RegexSpy(monitoring.CommandListener):
        def __init__(self) -> None:
            self.active = True
            self.regex_commands = 0
            self.commands = 0

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if self.active:
                self.commands += 1
                if "$regex" in repr(event.command):
                    self.regex_commands += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    return RegexSpy()


async def test_a_backtracking_pattern_is_answered_without_a_database_regex(store_factory: Any) -> None:
    spy: Any = None
    if store_factory.backend == "mongo":
        from pymongo import monitoring

        spy = _regex_spy()
        monitoring.register(spy)  # global: applies to clients created from now on
    try:
        store = await store_factory()
        long_topic = ".".join(["a"] * 30) + ".c"  # almost matches: the worst case for backtracking
        await store.publish_batch([ev(long_topic, 1), ev("a.a.b", 2), ev("x.a.y.a.b", 3)])
        matched = await store.scan(_EXPLOSIVE)
        assert matched == []  # needs 15 a segments before the b
        assert await store.count(".".join(["**", "a"] * 2) + ".b") == 2
        assert [e.payload for e in await store.scan("**.a.**.b")] == [2, 3]
        assert await store.tail("**.a.**.b") is not None
        if spy is not None:
            assert spy.commands > 0
            assert spy.regex_commands == 0
    finally:
        if spy is not None:
            spy.active = False
