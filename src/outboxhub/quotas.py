"""Publish quotas: the ``PATTERN=RATE/s[:BURST]`` syntax, parsed and checked (pure; no state).

A quota is a token bucket on the topics a pattern matches: ``RATE`` publishes per second on average
(a decimal > 0) and bursts of up to ``BURST`` (a whole number >= 1; default: ``RATE`` rounded up, at least
1). ``outboxhub serve --quota`` gives one bucket per principal (the token's ``sub``) and pattern,
``--topic-quota`` one bucket per matching topic shared by every publisher, and a token's ``policy`` claim
may carry ``"quotas": {"orders.**": "100/s:200"}`` for its own principal (see :func:`clamp_to`). The
buckets live in :mod:`outboxhub.gateway.publishquota`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from outboxhub.errors import TopicError
from outboxhub.topics import compile_pattern

__all__ = [
    "Quota",
    "QuotaError",
    "clamp_to",
    "format_rate",
    "parse_quota",
    "parse_quotas",
    "parse_rate",
    "quotas_from_claim",
]

_RATE: Final = re.compile(
    r"^\s*(?P<rate>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*/\s*s\s*(?::\s*(?P<burst>[0-9]+)\s*)?$"
)
MAX_RATE: Final = 1_000_000_000.0
MAX_BURST: Final = 1_000_000_000


class QuotaError(ValueError):
    """A quota that cannot be parsed; the message names the quota and the problem."""


@dataclass(frozen=True, slots=True)
class Quota:
    """``rate`` publishes per second (bursts of ``burst``) on the topics ``pattern`` matches."""

    pattern: str
    rate: float
    burst: int

    def matches(self, topic: str) -> bool:
        return compile_pattern(self.pattern).match(topic)

    def __str__(self) -> str:
        return f"{self.pattern}={format_rate(self.rate)}/s:{self.burst}"


def format_rate(rate: float) -> str:
    """``rate`` as :func:`parse_rate` reads it back exactly: positional, no exponent."""
    text = format(Decimal(repr(rate)), "f")
    return text.removesuffix(".0") if text.endswith(".0") else text


def parse_rate(text: str, *, what: str) -> tuple[float, int]:
    """``RATE/s[:BURST]`` -> (rate, burst); :class:`QuotaError` naming ``what`` otherwise."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if m is None:
        raise QuotaError(
            f"{what}: {text!r} is not RATE/s[:BURST] (e.g. '100/s' or '0.5/s:10'; RATE a number > 0 per "
            "second, BURST a whole number >= 1)"
        )
    rate = float(m["rate"])
    if not rate > 0:
        raise QuotaError(f"{what}: rate must be > 0 per second, got {m['rate']}")
    if rate > MAX_RATE:
        raise QuotaError(f"{what}: rate must be <= {MAX_RATE:g} per second, got {m['rate']}")
    burst = int(m["burst"]) if m["burst"] is not None else max(1, math.ceil(rate))
    if not 1 <= burst <= MAX_BURST:
        raise QuotaError(f"{what}: burst must be between 1 and {MAX_BURST}, got {m['burst']}")
    return rate, burst


def _checked_pattern(pattern: str, what: str) -> str:
    try:
        compile_pattern(pattern)
    except TopicError as exc:
        raise QuotaError(f"{what}: {exc}") from None
    return pattern


def parse_quota(text: str) -> Quota:
    """``PATTERN=RATE/s[:BURST]`` -> :class:`Quota`; :class:`QuotaError` naming the quota otherwise."""
    if not isinstance(text, str) or "=" not in text:
        raise QuotaError(f"quota {text!r}: expected PATTERN=RATE/s[:BURST], e.g. 'orders.**=100/s:200'")
    pattern, _, rate_text = text.partition("=")
    pattern = _checked_pattern(pattern.strip(), f"quota {text!r}")
    rate, burst = parse_rate(rate_text, what=f"quota {text!r}")
    return Quota(pattern, rate, burst)


def parse_quotas(texts: Iterable[str]) -> tuple[Quota, ...]:
    """Every quota of ``texts`` (blank entries skipped); a pattern given twice is an error."""
    quotas: dict[str, Quota] = {}
    for text in texts:
        if not text.strip():
            continue
        quota = parse_quota(text)
        if quota.pattern in quotas:
            raise QuotaError(f"quota {text!r}: pattern {quota.pattern!r} has a quota already")
        quotas[quota.pattern] = quota
    return tuple(quotas.values())


def quotas_from_claim(obj: object, *, max_quotas: int = 64) -> tuple[Quota, ...]:
    """The ``quotas`` member of a token's ``policy`` claim: ``{"PATTERN": "RATE/s[:BURST]", ...}``."""
    if not isinstance(obj, Mapping):
        raise QuotaError(
            f"quotas: must be an object of pattern -> 'RATE/s[:BURST]', got {type(obj).__name__}"
        )
    if len(obj) > max_quotas:
        raise QuotaError(f"quotas: at most {max_quotas} patterns, got {len(obj)}")
    out: list[Quota] = []
    for pattern, rate_text in obj.items():
        what = f"quotas[{pattern!r}]"
        if not isinstance(pattern, str):
            raise QuotaError(f"{what}: pattern must be a string")
        if not isinstance(rate_text, str):
            raise QuotaError(f"{what}: must be a string 'RATE/s[:BURST]', got {type(rate_text).__name__}")
        rate, burst = parse_rate(rate_text, what=what)
        out.append(Quota(_checked_pattern(pattern, what), rate, burst))
    return tuple(out)


def clamp_to(token: Quota, hub: Iterable[Quota]) -> Quota:
    """A token's quota never above the hub's: a hub per-principal quota on the same pattern caps its rate
    and burst. (Hub quotas on other patterns still apply on their own, so a token can only tighten.)"""
    for quota in hub:
        if quota.pattern == token.pattern:
            return Quota(token.pattern, min(token.rate, quota.rate), min(token.burst, quota.burst))
    return token
