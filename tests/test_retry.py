"""The one backoff rule (``outboxhub.retry``): the formulas its users relied on before it existed."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.retry import BackoffPolicy, Retries

rands = st.floats(0.0, 1.0, exclude_max=True)


@given(base=st.integers(0, 10_000), extra=st.integers(0, 1_000_000), failures=st.integers(0, 200))
def test_integer_delays_stay_exact_integers(base: int, extra: int, failures: int) -> None:
    raw = BackoffPolicy(base=base, cap=base + extra).raw(failures)
    assert isinstance(raw, int)
    assert raw == min(base + extra, base * 2 ** min(failures, 64))


@given(
    base=st.floats(0.001, 10),
    extra=st.floats(0, 100),
    factor=st.floats(1, 10),
    jitter=st.floats(0, 1),
    failures=st.integers(0, 1_000),
    rand=rands,
)
def test_spread_stays_within_its_bounds(
    base: float, extra: float, factor: float, jitter: float, failures: int, rand: float
) -> None:
    policy = BackoffPolicy(base=base, cap=base + extra, factor=factor, jitter=jitter)
    raw = policy.raw(failures)
    delay = policy.delay(failures, rand)
    assert raw * (1 - jitter) - 1e-9 <= delay <= min(policy.cap, raw * (1 + jitter)) + 1e-9


@given(seed=st.integers(0, 2**32), jitter=st.floats(0.01, 0.99), failures=st.integers(0, 70))
def test_spread_draws_like_random_uniform(seed: int, jitter: float, failures: int) -> None:
    policy = BackoffPolicy(base=0.1, cap=5.0, jitter=jitter)
    raw = min(5.0, 0.1 * 2.0 ** min(failures, 64))
    expected = min(5.0, raw * (1 + random.Random(seed).uniform(-jitter, jitter)))
    assert policy.delay(failures, random.Random(seed).random()) == expected


@given(raw_base=st.integers(1, 10_000), jitter=st.floats(0, 1), failures=st.integers(0, 40), rand=rands)
def test_shave_removes_whole_units_up_to_the_jitter(
    raw_base: int, jitter: float, failures: int, rand: float
) -> None:
    policy = BackoffPolicy(base=raw_base, cap=300_000, jitter=jitter, jitter_mode="shave")
    raw = policy.raw(failures)
    delay = policy.delay(failures, rand)
    assert delay == raw - math.floor(raw * jitter * rand)
    assert raw * (1 - jitter) - 1e-9 <= delay <= raw


def test_retries_count_failures_and_reset() -> None:
    retries = Retries(BackoffPolicy(base=0.05, cap=0.3))
    assert [retries.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    assert retries.failures == 5
    retries.reset()
    assert retries.next() == 0.05


def test_retries_take_their_randomness_from_the_caller() -> None:
    retries = Retries(BackoffPolicy(base=1.0, cap=10.0, jitter=0.5), rand=lambda: 0.0)
    assert [retries.next() for _ in range(3)] == [0.5, 1.0, 2.0]


def test_gives_up_at_max_attempts() -> None:
    assert not BackoffPolicy(base=1, cap=1).gives_up(10**9)
    policy = BackoffPolicy(base=1, cap=1, max_attempts=3)
    assert [policy.gives_up(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": -1, "cap": 1},
        {"base": 1, "cap": -1},
        {"base": 1, "cap": 1, "factor": 0.5},
        {"base": 1, "cap": 1, "jitter": 1.5},
        {"base": 1, "cap": 1, "max_attempts": 0},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)
