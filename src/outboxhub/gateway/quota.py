"""Subscriptions and consumer groups per principal (the token's ``sub``), over all its connections.

``max_subscriptions`` bounds one connection; a principal could still open many connections. Each live
subscription costs the hub work on every commit (its member is woken, claims, computes deadlines), so one
token must not be able to hold an unbounded number of them: :class:`PrincipalQuota` counts the live
subscriptions of each principal, and the distinct consumer groups ``(pattern, group)`` they are in, against
``max_subscriptions_per_principal`` and ``max_groups_per_principal``.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["PrincipalQuota"]

_GroupKey = tuple[str, str]


class PrincipalQuota:
    """Live subscriptions and groups per principal; :meth:`acquire` before subscribing, :meth:`release`
    when the subscription ends (whatever the reason)."""

    def __init__(self, *, max_subscriptions: int, max_groups: int) -> None:
        self.max_subscriptions = max_subscriptions
        self.max_groups = max_groups
        self._subs: Counter[str] = Counter()
        self._groups: dict[str, Counter[_GroupKey]] = {}

    def subscriptions(self, principal: str) -> int:
        """Live subscriptions of ``principal``."""
        return self._subs[principal]

    def groups(self, principal: str) -> int:
        """Distinct consumer groups ``principal`` has live subscriptions in."""
        return len(self._groups.get(principal, ()))

    def acquire(self, principal: str, pattern: str, group: str | None) -> str | None:
        """Count one more subscription of ``principal``; None when allowed, else why not (nothing is
        counted then)."""
        if self._subs[principal] >= self.max_subscriptions:
            return (
                f"too many subscriptions for {principal!r}: it has {self._subs[principal]} over all its "
                f"connections, the limit is {self.max_subscriptions} (max_subscriptions_per_principal)"
            )
        if group is not None:
            groups = self._groups.setdefault(principal, Counter())
            if (pattern, group) not in groups and len(groups) >= self.max_groups:
                if not groups:
                    del self._groups[principal]
                return (
                    f"too many consumer groups for {principal!r}: it is in {len(groups)} over all its "
                    f"connections, the limit is {self.max_groups} (max_groups_per_principal)"
                )
            groups[(pattern, group)] += 1
        self._subs[principal] += 1
        return None

    def release(self, principal: str, pattern: str, group: str | None) -> None:
        """Forget one subscription counted by :meth:`acquire`."""
        self._subs[principal] -= 1
        if self._subs[principal] <= 0:
            del self._subs[principal]
        if group is not None:
            groups = self._groups.get(principal)
            if groups is not None:
                groups[(pattern, group)] -= 1
                if groups[(pattern, group)] <= 0:
                    del groups[(pattern, group)]
                if not groups:
                    del self._groups[principal]
