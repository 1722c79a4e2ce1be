"""Publish quotas: token buckets per (principal, pattern) and per (pattern, topic), in bounded memory.

The quotas themselves (``PATTERN=RATE/s[:BURST]``) are parsed by :mod:`outboxhub.quotas`. A PUBLISH is
checked against every bucket that applies to it:

* each hub per-principal quota (``--quota``) whose pattern matches the topic: the bucket of
  ``(principal, pattern)``, the principal being the token's ``sub``;
* each hub per-topic quota (``--topic-quota``) whose pattern matches: the bucket of ``(pattern, topic)``,
  shared by every publisher;
* each quota of the token's own ``policy`` claim whose pattern matches, clamped to the hub's
  (:func:`outboxhub.quotas.clamp_to`): the bucket of ``(principal, pattern, rate, burst)``.

The publish passes only when every one of them holds a token, and then takes one from each; otherwise it
is refused with the time until it would pass (``retry_after_ms``) and nothing is taken. A refusal only
affects the buckets it touched: other topics and other principals go on.

State is per hub process (two hub processes each allow the full rate). Memory is bounded: the buckets
live in one LRU map of at most ``quota_max_buckets`` entries; an idle bucket that has refilled is dropped
first (a new one would start full, so nothing changes), and past the cap the least recently used one goes
(which can only let its owner publish sooner, never refuse anyone else).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Final

from outboxhub.gateway.ratelimit import TokenBucket
from outboxhub.gateway.stats import GatewayStats
from outboxhub.quotas import Quota, clamp_to
from outboxhub.topics import Matcher, compile_pattern

__all__ = ["ConnectionLimits", "PublishQuotas", "QuotaRefusal"]

_TOPIC_CACHE_MAX: Final = 4096
_SWEEP: Final = 4
"""Buckets at the LRU end looked at per new bucket, dropped when refilled (idle for burst/rate)."""
MAX_REFUSAL_LABELS: Final = 1000
"""Distinct (kind, pattern) refusal counters kept; more (token patterns) count as pattern ``"_other"``."""

_Compiled = tuple[Quota, Matcher]


class QuotaRefusal:
    """Why a publish was refused: the message for ``ERR rate_limited`` and ``retry_after_ms``."""

    __slots__ = ("msg", "retry_after_ms")

    def __init__(self, msg: str, retry_after_ms: int) -> None:
        self.msg = msg
        self.retry_after_ms = retry_after_ms


class PublishQuotas:
    """Every quota bucket of the hub process; :meth:`check` once per PUBLISH."""

    def __init__(
        self,
        principal: Sequence[Quota],
        topic: Sequence[Quota],
        *,
        max_buckets: int,
        stats: GatewayStats,
    ) -> None:
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be >= 1, got {max_buckets}")
        self.principal = tuple(principal)
        self.topic = tuple(topic)
        self.max_buckets = max_buckets
        self._stats = stats
        self._principal = [(q, compile_pattern(q.pattern)) for q in self.principal]
        self._topic = [(q, compile_pattern(q.pattern)) for q in self.topic]
        self.hub_wide = bool(self.principal or self.topic)
        """Whether the hub has quotas of its own (``--quota``, ``--topic-quota``), fixed for its life."""
        self._by_topic: dict[str, tuple[list[_Compiled], list[_Compiled]]] = {}
        self._buckets: OrderedDict[Hashable, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        """Buckets held."""
        return len(self._buckets)

    def clamped(self, token_quotas: Sequence[Quota]) -> tuple[Quota, ...]:
        """A token's quotas, each capped by the hub's per-principal quota on the same pattern."""
        return tuple(clamp_to(q, self.principal) for q in token_quotas)

    def check(
        self, principal: str, topic: str, token_quotas: Sequence[Quota], now: float
    ) -> QuotaRefusal | None:
        """Take one token from every bucket that applies to a publish of ``principal`` on ``topic``;
        None when it passes, else why not (nothing taken). ``token_quotas``: already :meth:`clamped`."""
        if not token_quotas and not self._principal and not self._topic:
            return None
        self._sweep(now)
        by_principal, by_topic = self._matching(topic)
        applied: list[tuple[str, Quota, TokenBucket]] = []
        for quota, _ in by_principal:
            applied.append(("principal", quota, self._bucket(("p", principal, quota.pattern), quota, now)))
        for quota, _ in by_topic:
            applied.append(("topic", quota, self._bucket(("t", quota.pattern, topic), quota, now)))
        for quota in token_quotas:
            if compile_pattern(quota.pattern).match(topic):
                key = ("k", principal, quota.pattern, quota.rate, quota.burst)
                applied.append(("token", quota, self._bucket(key, quota, now)))
        if not applied:
            return None
        refused = [(kind, quota, wait) for kind, quota, bucket in applied if (wait := bucket.wait_s(now)) > 0]
        if not refused:
            for _, _, bucket in applied:
                bucket.take(now)
            return None
        for kind, quota, _ in refused:
            self._count(kind, quota.pattern)
        kind, quota, wait = max(refused, key=lambda r: r[2])
        retry_after_ms = max(1, math.ceil(wait * 1000))
        whose = f"of {principal!r} " if kind != "topic" else f"of topic {topic!r} "
        return QuotaRefusal(
            f"publish quota {whose}exceeded: {quota} ({_KIND_TEXT[kind]}); retry in {retry_after_ms} ms",
            retry_after_ms,
        )

    # -- internals ----------------------------------------------------------------------------------------

    def _matching(self, topic: str) -> tuple[list[_Compiled], list[_Compiled]]:
        found = self._by_topic.get(topic)
        if found is None:
            found = (
                [c for c in self._principal if c[1].match(topic)],
                [c for c in self._topic if c[1].match(topic)],
            )
            if len(self._by_topic) >= _TOPIC_CACHE_MAX:
                self._by_topic.clear()
            self._by_topic[topic] = found
        return found

    def _sweep(self, now: float) -> None:
        """Drop a few least recently used buckets that have refilled (before this check takes any)."""
        buckets = self._buckets
        for _ in range(_SWEEP):
            if not buckets:
                return
            oldest_key, oldest = next(iter(buckets.items()))
            if not oldest.idle_full(now):
                return
            del buckets[oldest_key]

    def _bucket(self, key: Hashable, quota: Quota, now: float) -> TokenBucket:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is not None:
            buckets.move_to_end(key)
            return bucket
        while len(buckets) >= self.max_buckets:
            buckets.popitem(last=False)
        bucket = buckets[key] = TokenBucket(quota.rate, quota.burst, now=now)
        return bucket

    def _count(self, kind: str, pattern: str) -> None:
        refusals = self._stats.quota_refusals
        label = (kind, pattern)
        if label not in refusals and len(refusals) >= MAX_REFUSAL_LABELS:
            label = (kind, "_other")
        refusals[label] += 1


class ConnectionLimits:
    """The publish limits of one connection: its own token bucket (``publish_rate``/``publish_burst``)
    and the hub's quotas for its principal, set on each AUTH."""

    __slots__ = ("_bucket", "_principal", "_quotas", "_quotas_apply", "_token_quotas", "limited")

    def __init__(self, bucket: TokenBucket, quotas: PublishQuotas) -> None:
        self._bucket = bucket
        self._quotas = quotas
        self._principal = ""
        self._token_quotas: tuple[Quota, ...] = ()
        self._quotas_apply = False
        self.limited = False
        """False when nothing limits this connection's publishes (no rate, no quota): :meth:`check` would
        always pass and take nothing, so the caller may skip it."""
        self._set_token_quotas(())

    def authenticated(self, sub: str | None, token_quotas: Sequence[Quota]) -> None:
        """A (re-)AUTH: the principal (tokens without a ``sub`` share one) and its token's quotas."""
        self._principal = sub or ""
        self._set_token_quotas(self._quotas.clamped(token_quotas))

    def _set_token_quotas(self, token_quotas: tuple[Quota, ...]) -> None:
        """The token's quotas, and what they decide: whether any quota applies, whether anything limits."""
        self._token_quotas = token_quotas
        self._quotas_apply = self._quotas.hub_wide or bool(token_quotas)
        self.limited = self._bucket.rate != 0 or self._quotas_apply

    def check(self, topic: str, now: float) -> QuotaRefusal | None:
        """Take what a publish on ``topic`` costs, or say why it is refused (nothing taken then)."""
        bucket = self._bucket
        if not self._quotas_apply:  # the connection's own bucket alone: refill and take in one step
            wait_s = bucket.take_or_wait(now)
            return None if wait_s == 0 else self._rate_refusal(wait_s)
        wait_s = bucket.wait_s(now)
        if wait_s > 0:
            return self._rate_refusal(wait_s)
        refused = self._quotas.check(self._principal, topic, self._token_quotas, now)
        if refused is None:
            bucket.take(now)
        return refused

    def _rate_refusal(self, wait_s: float) -> QuotaRefusal:
        bucket = self._bucket
        return QuotaRefusal(
            f"publish rate limit of this connection exceeded ({bucket.rate:g}/s, burst {bucket.burst})",
            max(1, math.ceil(wait_s * 1000)),
        )


_KIND_TEXT: Final = {
    "principal": "per principal, --quota",
    "topic": "per topic, all publishers, --topic-quota",
    "token": "the token's own quota",
}
