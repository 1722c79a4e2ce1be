"""Retry maths for failed outbox records: pure functions, no clock and no randomness of their own.

The drainer passes the record's ``attempts`` (already bumped by the claim, so the first failure has
``attempts == 1``) and a uniform random number in ``[0, 1)``; the verdict is dead once ``attempts``
reaches ``max_attempts``, else a retry after an exponential delay with jitter::

    raw   = min(max_ms, base_ms * 2 ** (attempts - 1))
    delay = raw - floor(raw * jitter * rand)          # in [raw * (1 - jitter), raw]

That is :class:`outboxhub.retry.BackoffPolicy` with ``shave`` jitter (``RetryPolicy.backoff``), in ms.
"""

from __future__ import annotations

import msgspec

from outboxhub.errors import ConfigError
from outboxhub.outbox.model import Verdict
from outboxhub.retry import BackoffPolicy

__all__ = ["RetryPolicy", "backoff_ms", "retry_verdict"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How failed records are retried. ``jitter`` is the fraction of the delay that may be removed at
    random (0: none, 1: anywhere between 0 and the full delay)."""

    max_attempts: int = 10
    base_ms: int = 500
    max_ms: int = 300_000
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.base_ms < 0:
            raise ConfigError(f"backoff base_ms must be >= 0, got {self.base_ms}")
        if self.max_ms < self.base_ms:
            raise ConfigError(f"backoff max_ms ({self.max_ms}) must be >= base_ms ({self.base_ms})")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"backoff jitter must be between 0 and 1, got {self.jitter}")

    @property
    def backoff(self) -> BackoffPolicy:
        """This policy as the shared backoff rule (milliseconds, ``shave`` jitter, ``max_attempts``)."""
        return BackoffPolicy(
            base=self.base_ms,
            cap=self.max_ms,
            jitter=self.jitter,
            jitter_mode="shave",
            max_attempts=self.max_attempts,
        )


def backoff_ms(attempts: int, *, base_ms: int, max_ms: int) -> int:
    """The delay before retry number ``attempts`` (1-based) without jitter: doubling, capped."""
    return int(BackoffPolicy(base=base_ms, cap=max_ms).raw(attempts - 1))


def retry_verdict(attempts: int, policy: RetryPolicy, rand: float) -> Verdict:
    """Dead when ``attempts >= policy.max_attempts``; otherwise retry after a jittered backoff.

    ``rand`` must be in ``[0, 1)`` (pass ``random.random()``); the function itself is deterministic.
    """
    if not 0.0 <= rand < 1.0:
        raise ValueError(f"rand must be in [0, 1), got {rand}")
    backoff = policy.backoff
    if backoff.gives_up(attempts):
        return Verdict(dead=True)
    return Verdict(dead=False, delay_ms=int(backoff.delay(attempts - 1, rand)))
