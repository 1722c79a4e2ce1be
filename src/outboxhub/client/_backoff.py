"""Reconnect delays: exponential backoff with jitter (pure; no clock, no sleeping).

The rule is :class:`outboxhub.retry.BackoffPolicy` (``spread`` jitter); this is its public face in the SDK,
with the SDK's field names and errors.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from outboxhub.retry import BackoffPolicy

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """How long to wait between reconnect attempts.

    Attempt ``n`` (from 0) waits ``min(max_s, initial_s * multiplier**n)``, each delay scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` (then capped at ``max_s`` again) so that many clients
    dropped by one hub restart do not come back in lockstep.
    """

    initial_s: float = 0.1
    max_s: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ValueError(f"Backoff.initial_s must be > 0, got {self.initial_s}")
        if self.max_s < self.initial_s:
            raise ValueError(f"Backoff.max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        if self.multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff.jitter must be in [0, 1), got {self.jitter}")

    @property
    def policy(self) -> BackoffPolicy:
        """These settings as the shared backoff rule."""
        return BackoffPolicy(
            base=self.initial_s,
            cap=self.max_s,
            factor=self.multiplier,
            jitter=self.jitter,
            jitter_mode="spread",
        )

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before reconnect attempt ``attempt`` (0-based), in seconds."""
        return self.policy.delay(attempt, (rng or random).random() if self.jitter else 0.0)

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The endless sequence of delays for attempts 0, 1, 2, …"""
        return self.policy.delays((rng or random).random)
