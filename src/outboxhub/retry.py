"""Exponential backoff: the one rule every retry loop of outboxhub follows. Pure; randomness is injected.

A :class:`BackoffPolicy` says how long to wait after ``failures`` consecutive failures (0-based: the
first retry waits ``base``)::

    raw(n)   = min(cap, base * factor ** n)
    spread:  raw(n) * (1 + jitter * (2 * rand - 1)), capped again   # in [raw(1-j), raw(1+j)]
    shave:   raw(n) - floor(raw(n) * jitter * rand)                 # in [raw(1-j), raw], whole units

``rand`` is a uniform number in ``[0, 1)`` the caller passes (``random.random()`` or a seeded generator),
so every function here is deterministic. The unit is the caller's: seconds for the reconnect loops,
milliseconds for NACK redelivery and the outbox. With the default ``factor`` of 2 and integer ``base`` and
``cap`` the raw delays are exact integers.

:class:`Retries` is the stateful helper for a loop: ``next()`` after each failure, ``reset()`` after a
success. The policy also carries the give-up rule (``max_attempts``) where a caller has one.

Users: ``bus.wakeup.Backoff`` (the bus's loops), ``client.Backoff`` (reconnects),
``model.nack_backoff_ms`` (NACK redelivery), ``outbox.backoff`` (the outbox retry verdict and the
drainer's pauses), and the reconnect loops of ``store.postgres.listen`` and ``store.mongo.watch``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["BackoffPolicy", "JitterMode", "Retries"]

JitterMode = Literal["spread", "shave"]
"""``spread``: scale by a random factor in ``[1 - jitter, 1 + jitter]`` (reconnecting clients do not come
back in lockstep); ``shave``: remove a random whole number of units, up to ``jitter`` of the delay (never
waits longer than the raw delay; integer delays stay integers)."""

_MAX_EXPONENT = 64
"""Exponents above this are clamped: ``factor ** 64`` is beyond any cap and avoids huge numbers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffPolicy:
    """Capped exponential backoff with optional jitter and an optional attempt limit.

    ``base`` may exceed ``cap`` (every delay is then ``cap``); ``max_attempts`` None means never give up.
    """

    base: float
    cap: float
    factor: float = 2
    jitter: float = 0.0
    jitter_mode: JitterMode = "spread"
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.base < 0:
            raise ValueError(f"backoff base must be >= 0, got {self.base}")
        if self.cap < 0:
            raise ValueError(f"backoff cap must be >= 0, got {self.cap}")
        if self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, got {self.jitter}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def raw(self, failures: int) -> float:
        """The delay after ``failures`` (0-based) consecutive failures, without jitter."""
        exponent = min(max(0, failures), _MAX_EXPONENT)
        return min(self.cap, self.base * self.factor**exponent)

    def delay(self, failures: int, rand: float) -> float:
        """The jittered delay after ``failures`` (0-based) failures; ``rand`` must be in ``[0, 1)``."""
        raw = self.raw(failures)
        if not self.jitter:
            return raw
        if self.jitter_mode == "shave":
            return raw - math.floor(raw * self.jitter * rand)
        # The same arithmetic as random.uniform(-jitter, jitter), so a seeded generator gives the same delays.
        return min(self.cap, raw * (1 + (-self.jitter + 2 * self.jitter * rand)))

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The endless sequence of delays after 0, 1, 2, … failures (``rand`` is called only with jitter)."""
        failures = 0
        while True:
            yield self.delay(failures, rand() if self.jitter else 0.0)
            failures += 1

    def gives_up(self, attempts: int) -> bool:
        """Whether ``attempts`` (1-based: the attempt that just failed) reached ``max_attempts``."""
        return self.max_attempts is not None and attempts >= self.max_attempts


class Retries:
    """Consecutive failures of one loop under a policy: ``next()`` after a failure, ``reset()`` after a
    success."""

    __slots__ = ("_failures", "_policy", "_rand")

    def __init__(self, policy: BackoffPolicy, *, rand: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._rand = rand
        self._failures = 0

    @property
    def policy(self) -> BackoffPolicy:
        return self._policy

    @property
    def failures(self) -> int:
        """Failures since the last ``reset()``."""
        return self._failures

    def next(self) -> float:
        """The delay before the next retry; counts one more failure."""
        policy = self._policy
        delay = policy.delay(self._failures, self._rand() if policy.jitter else 0.0)
        self._failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures (call after a success)."""
        self._failures = 0
