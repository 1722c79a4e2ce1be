"""A policy compiled once per token into a decision structure, with a bounded cache of its decisions.

:func:`outboxhub.auth.acl.is_allowed` re-reads every rule on every call. A connection (or an ops request)
instead builds one :class:`Decider` when its token is verified and asks it:

* rules are split once by action and effect, and indexed by their first segment: a rule whose pattern
  starts with a literal segment can only cover or overlap a request that starts with the same segment
  (or, for overlaps, with a wildcard), so most rules of a large policy are never looked at;
* a SUBSCRIBE allow pattern can only cover a request pattern that contains every literal segment it has
  (a topic of the request without that literal would escape it), so allow rules are also indexed by their
  rarest literal, and only those whose literals all occur in the request are tried;
* decisions are remembered in a bounded LRU (:data:`DECISION_CACHE_MAX` entries per decider), so a
  client repeating a request costs one dictionary lookup;
* the gateway compiles each distinct policy once (:class:`SharedDeciders`): every connection whose token
  carries an equal policy shares one decider, its index and its decision cache (decisions depend only on
  the policy, so sharing them is correct);
* :attr:`Decider.heavy` tells the caller when an uncached SUBSCRIBE decision may be expensive (many rule
  patterns), so the gateway can run it off the event loop (:meth:`Decider.allowed_async`).

Dead letters (:func:`may_read`): an event on ``dlq.<group>.<topic>`` may be read only by a principal that
may subscribe to ``<topic>`` for ``<group>`` (recursively, for a dead letter of a dead letter), whatever
pattern it subscribed with. The gateway applies this at delivery time and the ops API on ``/replay`` and
``/latest-by-key``; it is the one place the rule lives.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from typing import Final

from outboxhub.auth.acl import Action, Policy, Rule, explain
from outboxhub.topics import compile_pattern, covers, overlaps

__all__ = [
    "DECISION_CACHE_MAX",
    "HEAVY_PATTERNS",
    "SHARED_POLICIES_MAX",
    "Decider",
    "SharedDeciders",
    "dlq_original",
    "may_read",
    "rule_count",
]

DECISION_CACHE_MAX: Final = 1024
"""Decisions remembered per decider (one per distinct policy in use on a gateway, or per ops request)."""

SHARED_POLICIES_MAX: Final = 10_000
"""Distinct policies a :class:`SharedDeciders` map holds at most; past it a policy is compiled unshared."""

HEAVY_PATTERNS: Final = 16
"""From this many rule patterns on, an uncached SUBSCRIBE decision runs in a worker thread."""

_WILD: Final = ""  # index key of rules whose pattern starts with a wildcard

_Entry = tuple[Rule, str, tuple[str, ...]]  # (rule, pattern, normalised tokens)
_Key = tuple[str, str, str | None]


def rule_count(policy: Policy) -> int:
    """The size of a policy as the limit counts it: one per topic pattern of every rule."""
    return sum(len(rule.topics) for rule in policy.rules)


def dlq_original(topic: str) -> tuple[str, str] | None:
    """``(group, original topic)`` of a dead-letter topic ``dlq.<group>.<topic>``, else None."""
    if not topic.startswith("dlq."):
        return None
    parts = topic.split(".", 2)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def _literals(tokens: tuple[str, ...]) -> frozenset[str]:
    return frozenset(tok for tok in tokens if tok not in ("*", "**"))


def _first(tokens: tuple[str, ...]) -> str:
    head = tokens[0]
    return _WILD if head in ("*", "**") else head


class Decider:
    """The decisions of one :class:`Policy`, compiled once and cached (bounded)."""

    __slots__ = ("__weakref__", "_by_literal", "_cache", "_index", "_no_literal", "heavy", "policy")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.heavy = rule_count(policy) >= HEAVY_PATTERNS
        # (action, effect) -> first segment (or _WILD) -> entries
        self._index: dict[tuple[str, str], dict[str, list[_Entry]]] = {}
        for rule in policy.rules:
            actions = ("publish", "subscribe") if rule.action == "*" else (rule.action,)
            for pattern in rule.topics:
                tokens = compile_pattern(pattern).tokens
                for action in actions:
                    by_first = self._index.setdefault((action, rule.effect), {})
                    by_first.setdefault(_first(tokens), []).append((rule, pattern, tokens))
        # SUBSCRIBE allow entries by their rarest literal (with their literal set), or literal-free
        allows = [e for entries in self._index.get(("subscribe", "allow"), {}).values() for e in entries]
        seen: dict[str, int] = {}
        for _, _, tokens in allows:
            for lit in _literals(tokens):
                seen[lit] = seen.get(lit, 0) + 1
        self._by_literal: dict[str, list[tuple[frozenset[str], _Entry]]] = {}
        self._no_literal: list[_Entry] = []
        for entry in allows:
            lits = _literals(entry[2])
            if not lits:
                self._no_literal.append(entry)
            else:
                key = min(lits, key=lambda lit: (seen[lit], lit))
                self._by_literal.setdefault(key, []).append((lits, entry))
        self._cache: OrderedDict[_Key, bool] = OrderedDict()

    def _subscribe_allows(self, tokens: tuple[str, ...]) -> list[_Entry]:
        """The allow entries that may cover a request with these tokens (literal-subset pre-filter)."""
        lits = _literals(tokens)
        found = list(self._no_literal)
        for lit in lits:
            for rule_lits, entry in self._by_literal.get(lit, ()):
                if rule_lits <= lits:
                    found.append(entry)
        return found

    def _candidates(self, action: str, effect: str, first: str) -> list[_Entry]:
        by_first = self._index.get((action, effect))
        if not by_first:
            return []
        wild = by_first.get(_WILD, [])
        if first != _WILD:
            return by_first.get(first, []) + wild
        if effect == "allow" and action == "subscribe":
            return wild  # a literal first segment cannot cover a wildcard one
        return [entry for entries in by_first.values() for entry in entries]

    def _compute(self, action: Action, topic: str, group: str | None) -> bool:
        """The decision without the cache (pure; safe to run in a worker thread)."""
        matcher = compile_pattern(topic)  # validates the request (TopicError on a bad one)
        first = _first(matcher.tokens)
        for rule, pattern, _ in self._candidates(action, "deny", first):
            if rule.applies(action, group) and (
                compile_pattern(pattern).match(topic) if action == "publish" else overlaps(pattern, topic)
            ):
                return False
        allows = (
            self._candidates(action, "allow", first)
            if action == "publish"
            else self._subscribe_allows(matcher.tokens)
        )
        for rule, pattern, _ in allows:
            if rule.applies(action, group) and (
                compile_pattern(pattern).match(topic) if action == "publish" else covers(pattern, topic)
            ):
                return True
        return False

    def cached(self, action: Action, topic: str, group: str | None = None) -> bool | None:
        """The remembered decision, or None."""
        key = (action, topic, group)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
        return found

    def _remember(self, key: _Key, allowed: bool) -> bool:
        self._cache[key] = allowed
        if len(self._cache) > DECISION_CACHE_MAX:
            self._cache.popitem(last=False)
        return allowed

    def allowed(self, action: Action, topic: str, group: str | None = None) -> bool:
        """Default deny, exactly as :func:`outboxhub.auth.acl.is_allowed` (which the tests hold it to).

        A publish ``topic`` must be concrete and valid; a subscribe one is a pattern. An invalid one raises
        :class:`~outboxhub.errors.TopicError`."""
        found = self.cached(action, topic, group)
        if found is not None:
            return found
        if action == "publish" and not compile_pattern(topic).concrete:
            raise ValueError(f"publish needs a concrete topic, got pattern {topic!r}")
        return self._remember((action, topic, group), self._compute(action, topic, group))

    async def allowed_async(self, action: Action, topic: str, group: str | None = None) -> bool:
        """:meth:`allowed`, computed in a worker thread when the policy is :attr:`heavy` and the decision is
        not cached, so a large policy never holds the event loop for other connections.

        Only the pure :meth:`_compute` runs in the thread; the cache is read and written on the loop alone,
        which is what lets the connections of one loop share a decider without a lock."""
        found = self.cached(action, topic, group)
        if found is not None:
            return found
        if not self.heavy:
            return self.allowed(action, topic, group)
        compile_pattern(topic)  # a bad request fails here, on the loop, with its TopicError
        allowed = await asyncio.to_thread(self._compute, action, topic, group)
        return self._remember((action, topic, group), allowed)

    def explain(self, action: Action, topic: str, group: str | None = None) -> str:
        """Why: the one-line reason of :func:`outboxhub.auth.acl.explain` (only called on a refusal)."""
        return explain(self.policy, action, topic, group)

    def may_read(self, topic: str) -> bool:
        """May an event on the concrete ``topic`` be delivered to this principal? See :func:`may_read`."""
        key = (
            "read",
            topic,
            None,
        )  # the subscriber's group was checked at SUBSCRIBE; the rule reads the topic
        found = self._cache.get(key)
        if found is not None:
            return found
        return self._remember(key, may_read(self, topic))


class SharedDeciders:
    """One compiled :class:`Decider` per distinct policy, shared by every connection that carries it.

    Keyed by the policy's value (its rules in order, ops scopes and quotas: equal policies decide, explain
    and limit alike), so two tokens with the same scopes or ``policy`` claim share one decider, its index
    and its decision cache. The entries are weak: a decider lives exactly as long as a connection holds it,
    so the map never holds more than the distinct policies in use, and no token can evict a decider other
    connections use (there is no eviction at all). At ``max_entries`` distinct policies in use, a new one
    is compiled unshared, as every connection did before sharing, so the map itself stays bounded.

    Use it from the event loop thread only (every connection of a gateway runs on one loop).
    """

    __slots__ = ("_deciders", "_max")

    def __init__(self, max_entries: int = SHARED_POLICIES_MAX) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max = max_entries
        self._deciders: weakref.WeakValueDictionary[Policy, Decider] = weakref.WeakValueDictionary()

    def __len__(self) -> int:
        return len(self._deciders)

    def get(self, policy: Policy) -> Decider:
        """The decider of ``policy``: the shared one if an equal policy is in use, else a new one (shared
        from now on while the map has room). Its :attr:`Decider.policy` may be an equal, older object."""
        found = self._deciders.get(policy)
        if found is not None:
            return found
        decider = Decider(policy)
        if len(self._deciders) < self._max:
            self._deciders[policy] = decider
        return decider


def may_read(decider: Decider, topic: str) -> bool:
    """The dead-letter rule: every event is readable, except a dead letter ``dlq.<group>.<topic>`` whose
    ``<topic>`` this principal may not subscribe to for ``<group>`` (checked recursively).

    The subscription's own pattern was checked at SUBSCRIBE; this adds the original topic's rules, so
    ``allow subscribe **`` + ``deny * secret.**`` never reads ``dlq.g.secret.x`` through ``dlq.**``.
    """
    found = dlq_original(topic)
    while found is not None:
        group, original = found
        try:
            if not decider.allowed("subscribe", original, group):
                return False
        except (ValueError, LookupError):  # not a valid topic: no rule can grant it
            return False
        found = dlq_original(original)
    return True
