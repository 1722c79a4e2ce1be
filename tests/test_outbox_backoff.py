"""The retry verdict is a pure function: properties checked with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub.errors import ConfigError
from outboxhub.outbox import RetryPolicy, Verdict, backoff_ms, retry_verdict

policies = st.builds(
    lambda attempts, base, extra, jitter: RetryPolicy(
        max_attempts=attempts, base_ms=base, max_ms=base + extra, jitter=jitter
    ),
    st.integers(1, 50),
    st.integers(0, 10_000),
    st.integers(0, 1_000_000),
    st.floats(0.0, 1.0),
)
rands = st.floats(0.0, 1.0, exclude_max=True)


@given(policy=policies, attempts=st.integers(1, 200), rand=rands)
def test_dead_exactly_at_max_attempts(policy: RetryPolicy, attempts: int, rand: float) -> None:
    verdict = retry_verdict(attempts, policy, rand)
    assert verdict.dead == (attempts >= policy.max_attempts)
    if verdict.dead:
        assert verdict == Verdict(dead=True)


@given(policy=policies, attempts=st.integers(1, 200), rand=rands)
def test_delay_is_the_capped_doubling_minus_at_most_the_jitter(
    policy: RetryPolicy, attempts: int, rand: float
) -> None:
    verdict = retry_verdict(attempts, policy, rand)
    if verdict.dead:
        return
    raw = min(policy.max_ms, policy.base_ms * 2 ** (attempts - 1))
    assert backoff_ms(attempts, base_ms=policy.base_ms, max_ms=policy.max_ms) == raw
    assert raw * (1 - policy.jitter) - 1 <= verdict.delay_ms <= raw
    assert 0 <= verdict.delay_ms <= policy.max_ms


@given(base=st.integers(0, 10_000), extra=st.integers(0, 10**7), attempts=st.integers(1, 500))
def test_backoff_never_shrinks_as_attempts_grow(base: int, extra: int, attempts: int) -> None:
    here = backoff_ms(attempts, base_ms=base, max_ms=base + extra)
    assert here <= backoff_ms(attempts + 1, base_ms=base, max_ms=base + extra)


@given(policy=policies, attempts=st.integers(1, 200), rand=rands)
def test_the_verdict_is_deterministic(policy: RetryPolicy, attempts: int, rand: float) -> None:
    assert retry_verdict(attempts, policy, rand) == retry_verdict(attempts, policy, rand)


def test_examples() -> None:
    policy = RetryPolicy(max_attempts=4, base_ms=500, max_ms=1_500, jitter=0.5)
    assert [retry_verdict(n, policy, 0.0).delay_ms for n in (1, 2, 3)] == [500, 1_000, 1_500]
    assert retry_verdict(2, policy, 0.999).delay_ms == 501
    assert retry_verdict(4, policy, 0.0).dead


def test_bad_policies_and_rand_are_refused() -> None:
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="max_ms"):
        RetryPolicy(base_ms=10, max_ms=5)
    with pytest.raises(ConfigError, match="base_ms"):
        RetryPolicy(base_ms=-1)
    with pytest.raises(ConfigError, match="jitter"):
        RetryPolicy(jitter=-0.1)
    with pytest.raises(ValueError, match="rand"):
        retry_verdict(1, RetryPolicy(), 1.0)
