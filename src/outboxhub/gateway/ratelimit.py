"""A token bucket: the per-connection publish rate limit of the gateway, and each publish quota's bucket
(:mod:`outboxhub.gateway.publishquota`).

Pure: the caller passes the clock reading (monotonic seconds), so tests need no sleeping.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows ``rate`` operations per second on average and bursts of up to ``burst``.

    The bucket starts full. ``rate == 0`` means no limit (every :meth:`take` succeeds).
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, *, now: float) -> None:
        if rate < 0:
            raise ValueError(f"rate must be >= 0 per second, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float, n: int = 1) -> bool:
        """Take ``n`` tokens if the bucket holds them at time ``now``; return whether it did."""
        if self.rate == 0:
            return True
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def take_or_wait(self, now: float, n: int = 1) -> float:
        """Take ``n`` tokens if the bucket holds them at time ``now`` and return 0.0; else take nothing and
        return the seconds until it does (``wait_s`` then ``take`` in one call)."""
        if self.rate == 0:
            return 0.0
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return 0.0
        return (n - self._tokens) / self.rate

    def wait_s(self, now: float, n: int = 1) -> float:
        """Seconds until the bucket holds ``n`` tokens (0.0: it does now); refills, takes nothing."""
        if self.rate == 0:
            return 0.0
        self._refill(now)
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._last = now

    def idle_full(self, now: float) -> bool:
        """Whether the bucket would be full at ``now``: dropping it then changes nothing (a new bucket
        starts full)."""
        return self.rate == 0 or self._tokens + (now - self._last) * self.rate >= self.burst

    @property
    def tokens(self) -> float:
        """Tokens left after the last :meth:`take` (without refilling)."""
        return self._tokens
