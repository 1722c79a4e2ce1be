"""The chart ring (pure): bounded memory, one rate point per pair of samples, rates never negative (a
counter that went down counts from zero), a clock step back replaces the last sample."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from outboxhub.ops.series import Sample, SeriesRing

counts = st.integers(min_value=0, max_value=10**9)
samples = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),
        counts,
        counts,
        st.dictionaries(st.sampled_from(["a", "b", "c"]), counts, max_size=3),
        st.dictionaries(st.sampled_from([("p", "g"), ("q", "h")]), counts, max_size=2),
    ),
    max_size=40,
)


@given(st.integers(min_value=2, max_value=10), samples)
def test_ring_is_bounded_and_rates_are_sane(
    capacity: int, raw: list[tuple[int, int, int, dict[str, int], dict[tuple[str, str], int]]]
) -> None:
    ring = SeriesRing(capacity)
    for ts, pub, dlv, topics, lag in raw:
        ring.add(Sample(ts=ts, publishes=pub, delivered=dlv, topics=topics, lag=lag))
        assert len(ring) <= capacity
    data = ring.series()
    assert len(data["ts"]) == max(0, len(ring) - 1) == len(data["publishRate"]) == len(data["deliverRate"])
    assert data["ts"] == sorted(set(data["ts"]))  # strictly increasing
    assert all(r >= 0 for r in data["publishRate"] + data["deliverRate"])
    for values in data["topics"].values():
        assert len(values) == len(data["ts"]) and all(v is None or v >= 0 for v in values)
    for values in data["groups"].values():
        assert len(values) == len(data["lagTs"]) == len(ring)


def test_rates_per_second_and_counter_reset() -> None:
    ring = SeriesRing(3)
    ring.add(Sample(ts=1_000, publishes=100, delivered=0, topics={"a": 10}))
    ring.add(Sample(ts=3_000, publishes=300, delivered=50, topics={"a": 30}))
    ring.add(Sample(ts=4_000, publishes=20, delivered=60, topics={"a": 40}))  # the hub restarted: reset
    data = ring.series()
    assert data["publishRate"] == [100.0, 20.0] and data["deliverRate"] == [25.0, 10.0]
    assert data["topics"]["a"] == [10.0, 10.0]
    ring.add(Sample(ts=3_500, publishes=25, delivered=60))  # a clock step back replaces the last one
    assert ring.series()["ts"] == [3_000, 3_500]
