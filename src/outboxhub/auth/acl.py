"""Access control: rules, policies, scopes, and the allow/deny decision. Pure, no I/O.

A policy is a list of rules. The decision is default deny: a request is allowed when at least one allow
rule matches it and no deny rule does, whatever the order of the rules.

- PUBLISH names a concrete topic; a rule matches when one of its patterns matches the topic.
- SUBSCRIBE names a pattern; an allow rule matches when one of its patterns *covers* the whole pattern,
  a deny rule when one of its patterns *overlaps* it (so ``**`` is refused if anything is denied).
- A rule with ``groups`` applies to SUBSCRIBE only for the listed groups; ``*`` lists every group and
  the group-less (ephemeral) subscription too. ``groups`` does not restrict PUBLISH.

Policies come from a token's ``policy`` claim (:func:`parse_policy`, the JSON shape
``{"rules": [{"effect", "action", "topics", "groups"?}], "ops"?: ["read", "write"]}``) or from its scopes
(:func:`scopes_to_policy`: ``publish:<pattern>``, ``subscribe:<pattern>``, ``*:<pattern>``, ``ops:read``,
``ops:write``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, get_args

from outboxhub.errors import PolicyError, TopicError
from outboxhub.quotas import Quota, QuotaError, quotas_from_claim
from outboxhub.topics import (
    DLQ_MAX_SEGMENTS,
    Matcher,
    compile_pattern,
    covers,
    overlaps,
    validate_pattern,
    validate_topic,
)

__all__ = [
    "Action",
    "Effect",
    "Policy",
    "Rule",
    "RuleAction",
    "explain",
    "filter_foreign_scopes",
    "is_allowed",
    "parse_policy",
    "scopes_to_policy",
    "split_scopes",
]

Effect = Literal["allow", "deny"]
RuleAction = Literal["publish", "subscribe", "*"]
Action = Literal["publish", "subscribe"]

_EFFECTS: Final[tuple[str, ...]] = get_args(Effect)
_RULE_ACTIONS: Final[tuple[str, ...]] = get_args(RuleAction)
_ACTIONS: Final[tuple[str, ...]] = get_args(Action)
_OPS: Final = ("read", "write")
_SCOPE_ACTIONS: Final = frozenset({*_RULE_ACTIONS, "ops"})
_RULE_KEYS: Final = ("effect", "action", "topics", "groups")
_REQUIRED_RULE_KEYS: Final = ("effect", "action", "topics")
_POLICY_KEYS: Final = ("rules", "ops", "quotas")
_ALL_GROUPS: Final = "*"


def _quote_all(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _check_group(group: object) -> str | None:
    """Why ``group`` is not a valid group entry, or None. A group is one topic segment (it becomes one in
    ``dlq.<group>.<topic>``) or ``*``."""
    if not isinstance(group, str):
        return f"must be a string, got {type(group).__name__}"
    if group == _ALL_GROUPS:
        return None
    try:
        validate_pattern(group, max_segments=1)
    except TopicError:
        return f"{group[:80]!r} is not a group name (1–128 of A-Z a-z 0-9 _ : -, or '*' for every group)"
    if group == "**":
        return "'**' is not a group name; use '*' for every group"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One rule of a policy. Checks itself when built, raising :class:`PolicyError` naming the field.

    ``topics`` are patterns; ``groups`` (None = every group) restricts the rule to those consumer groups
    for SUBSCRIBE only.
    """

    effect: Effect
    action: RuleAction
    topics: tuple[str, ...]
    groups: tuple[str, ...] | None = None
    _matchers: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.effect not in _EFFECTS:
            raise PolicyError(f"effect: must be 'allow' or 'deny', got {self.effect!r}")
        if self.action not in _RULE_ACTIONS:
            raise PolicyError(f"action: must be 'publish', 'subscribe' or '*', got {self.action!r}")
        topics: object = self.topics
        if isinstance(topics, str) or not isinstance(topics, Sequence):
            raise PolicyError(f"topics: must be a list of patterns, got {type(topics).__name__}")
        if not topics:
            raise PolicyError("topics: must list at least one pattern")
        matchers = []
        for index, pattern in enumerate(topics):
            try:
                matchers.append(compile_pattern(validate_pattern(pattern, max_segments=DLQ_MAX_SEGMENTS)))
            except TopicError as exc:
                raise PolicyError(f"topics[{index}]: {exc}") from None
        object.__setattr__(self, "topics", tuple(topics))
        object.__setattr__(self, "_matchers", tuple(matchers))
        groups: object = self.groups
        if groups is not None:
            if isinstance(groups, str) or not isinstance(groups, Sequence):
                raise PolicyError(f"groups: must be a list of group names, got {type(groups).__name__}")
            if not groups:
                raise PolicyError("groups: must list at least one group (leave it out for every group)")
            for index, group in enumerate(groups):
                problem = _check_group(group)
                if problem is not None:
                    raise PolicyError(f"groups[{index}]: {problem}")
            object.__setattr__(self, "groups", tuple(groups))

    def describe(self) -> str:
        """A short human form, e.g. ``deny subscribe a.b.* groups=ops``."""
        text = f"{self.effect} {self.action} {' '.join(self.topics)}"
        return text if self.groups is None else f"{text} groups={','.join(self.groups)}"

    def applies(self, action: Action, group: str | None) -> bool:
        """Does this rule take part in deciding ``action`` for ``group``?"""
        if self.action != "*" and self.action != action:
            return False
        if action == "publish" or self.groups is None:
            return True
        return _ALL_GROUPS in self.groups or (group is not None and group in self.groups)

    def matches(self, action: Action, topic: str) -> bool:
        """Does a pattern of this rule match the request? (``topic`` already validated for ``action``.)

        PUBLISH: a pattern matches the topic. SUBSCRIBE: an allow pattern covers ``topic``, a deny pattern
        overlaps it.
        """
        if action == "publish":
            return any(m.match(topic) for m in self._matchers)
        relation = covers if self.effect == "allow" else overlaps
        return any(relation(pattern, topic) for pattern in self.topics)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """An ordered set of rules (order never changes a decision) plus the ops scopes ("read", "write")
    and the token's own publish quotas (``"quotas"`` of the policy claim; outboxhub/quotas.py)."""

    rules: tuple[Rule, ...] = ()
    ops: frozenset[str] = frozenset()
    quotas: tuple[Quota, ...] = ()

    def __post_init__(self) -> None:
        rules: object = self.rules
        if not isinstance(rules, Sequence) or not all(isinstance(r, Rule) for r in rules):
            raise PolicyError("rules: must be a sequence of Rule")
        object.__setattr__(self, "rules", tuple(rules))
        bad = sorted(str(op) for op in self.ops if op not in _OPS)
        if bad:
            raise PolicyError(f"ops: unknown scope(s) {_quote_all(bad)}; expected 'read' and/or 'write'")
        object.__setattr__(self, "ops", frozenset(self.ops))


def _check_request(action: str, topic: str) -> None:
    if action == "publish":
        # Dead-letter topics (two segments longer) are legal topics inside the hub.
        validate_topic(topic, max_segments=DLQ_MAX_SEGMENTS)
    elif action == "subscribe":
        compile_pattern(topic)
    else:
        raise ValueError(f"action must be 'publish' or 'subscribe', got {action!r}")


def _decide(policy: Policy, action: Action, topic: str, group: str | None) -> tuple[int | None, int | None]:
    """(index of the first deny rule that matches, index of the first allow rule that matches)."""
    _check_request(action, topic)
    deny = allow = None
    for index, rule in enumerate(policy.rules):
        if rule.effect == "deny":
            if deny is None and rule.applies(action, group) and rule.matches(action, topic):
                deny = index
                break  # a deny decides; no need to look further
        elif allow is None and rule.applies(action, group) and rule.matches(action, topic):
            allow = index
    return deny, allow


def is_allowed(policy: Policy, action: Action, topic: str, group: str | None = None) -> bool:
    """Default deny: True when an allow rule matches and no deny rule does, whatever their order.

    ``topic`` is a concrete topic for ``publish`` and a pattern for ``subscribe``; an invalid one raises
    :class:`TopicError`, an unknown action ``ValueError``. ``group`` matters for ``subscribe`` only.
    """
    deny, allow = _decide(policy, action, topic, group)
    return deny is None and allow is not None


def explain(policy: Policy, action: Action, topic: str, group: str | None = None) -> str:
    """A one-line reason for the decision, for ``ERR forbidden`` messages and logs.

    Rules are numbered from 1 in policy order, e.g. ``denied by rule 3 (deny subscribe a.b.*)``.
    """
    deny, allow = _decide(policy, action, topic, group)
    if deny is not None:
        return f"denied by rule {deny + 1} ({policy.rules[deny].describe()})"
    if allow is not None:
        return f"allowed by rule {allow + 1} ({policy.rules[allow].describe()})"
    relation = "matches" if action == "publish" else "covers"
    where = f" for group {group!r}" if action == "subscribe" and group is not None else ""
    if not policy.rules:
        return f"the policy grants no rights, so {action} on {topic!r} is denied"
    return f"no allow rule {relation} {action} on {topic!r}{where}"


def _rule_from(obj: object, path: str) -> Rule:
    if not isinstance(obj, Mapping):
        raise PolicyError(f"{path}: must be an object, got {type(obj).__name__}")
    unknown = [str(k) for k in obj if k not in _RULE_KEYS]
    if unknown:
        raise PolicyError(f"{path}: unknown key(s) {_quote_all(unknown)}; expected {_quote_all(_RULE_KEYS)}")
    missing = [k for k in _REQUIRED_RULE_KEYS if k not in obj]
    if missing:
        raise PolicyError(f"{path}: missing key(s) {_quote_all(missing)}")
    topics, groups = obj["topics"], obj.get("groups")
    if not isinstance(topics, list | tuple):
        raise PolicyError(f"{path}.topics: must be a list of patterns, got {type(topics).__name__}")
    if groups is not None and not isinstance(groups, list | tuple):
        raise PolicyError(f"{path}.groups: must be a list of group names, got {type(groups).__name__}")
    try:
        return Rule(
            effect=obj["effect"],
            action=obj["action"],
            topics=tuple(topics),
            groups=None if groups is None else tuple(groups),
        )
    except PolicyError as exc:
        raise PolicyError(f"{path}.{exc}") from None


def parse_policy(obj: object) -> Policy:
    """Build a :class:`Policy` from its JSON shape, raising :class:`PolicyError` with the path of the bad
    field, e.g. ``rules[2].topics[0]: pattern 'a b': segment 1 'a b' has invalid characters: ' ' (…)``.

    Shape: ``{"rules": [{"effect": "allow"|"deny", "action": "publish"|"subscribe"|"*",
    "topics": [pattern, ...], "groups"?: [group, ...]}], "ops"?: ["read", "write"],
    "quotas"?: {pattern: "RATE/s[:BURST]", ...}}``.
    Unknown keys are errors.
    """
    if not isinstance(obj, Mapping):
        raise PolicyError(f"policy: must be an object with a 'rules' list, got {type(obj).__name__}")
    unknown = [str(k) for k in obj if k not in _POLICY_KEYS]
    if unknown:
        raise PolicyError(
            f"policy: unknown key(s) {_quote_all(unknown)}; expected 'rules' and optionally 'ops' and "
            "'quotas'"
        )
    if "rules" not in obj:
        raise PolicyError("policy: missing key 'rules' (a list of rules, possibly empty)")
    rules_obj = obj["rules"]
    if not isinstance(rules_obj, list | tuple):
        raise PolicyError(f"rules: must be a list of rules, got {type(rules_obj).__name__}")
    rules = tuple(_rule_from(rule, f"rules[{index}]") for index, rule in enumerate(rules_obj))
    ops_obj = obj.get("ops", [])
    if not isinstance(ops_obj, list | tuple):
        raise PolicyError(f"ops: must be a list of 'read'/'write', got {type(ops_obj).__name__}")
    for index, op in enumerate(ops_obj):
        if op not in _OPS:
            raise PolicyError(f"ops[{index}]: must be 'read' or 'write', got {op!r}")
    quotas: tuple[Quota, ...] = ()
    if "quotas" in obj:
        try:
            quotas = quotas_from_claim(obj["quotas"])
        except QuotaError as exc:
            raise PolicyError(str(exc)) from None
    return Policy(rules=rules, ops=frozenset(ops_obj), quotas=quotas)


_ASCII_SPACE: Final = re.compile(r"[ \t\n\r\f\v]+")


def split_scopes(text: str) -> list[str]:
    """Split an OAuth scope string on ASCII whitespace only (RFC 6749 §3.3 separates scopes with
    spaces): a no-break space or another Unicode space is part of a scope, never a separator, so
    ``"openid\u00a0publish:**"`` stays one (foreign) scope."""
    return [part for part in _ASCII_SPACE.split(text) if part]


def _scope_list(scopes: object) -> list[object]:
    if isinstance(scopes, str):
        return list(split_scopes(scopes))
    if isinstance(scopes, Sequence):
        return list(scopes)
    raise PolicyError(
        f"scopes: must be a list of strings or a space-separated string, got {type(scopes).__name__}"
    )


def scopes_to_policy(scopes: str | Sequence[str]) -> Policy:
    """Turn scopes into a policy of allow rules (one per scope) plus ops scopes. Strict.

    ``publish:<pattern>``, ``subscribe:<pattern>`` and ``*:<pattern>`` become allow rules; ``ops:read`` and
    ``ops:write`` go to :attr:`Policy.ops`. A string is an OAuth space-separated list. Anything else (an
    unknown action, a missing or invalid pattern) raises :class:`PolicyError` naming the scope. Empty
    scopes give no rights. Use :func:`filter_foreign_scopes` first to drop other services' scopes.
    """
    rules: list[Rule] = []
    ops: set[str] = set()
    for scope in dict.fromkeys(_scope_list(scopes)):  # drop repeats, keep order
        if not isinstance(scope, str):
            raise PolicyError(f"scope {scope!r}: must be a string, got {type(scope).__name__}")
        if not scope or scope.isspace():
            raise PolicyError("scope '' is empty")
        action, sep, pattern = scope.partition(":")
        if action == "ops":
            if pattern not in _OPS:
                raise PolicyError(f"scope {scope!r}: the ops scopes are 'ops:read' and 'ops:write'")
            ops.add(pattern)
        elif action in _RULE_ACTIONS:
            pattern, at, group_list = pattern.partition("@")
            if not pattern:
                raise PolicyError(f"scope {scope!r}: missing the topic pattern after {action + ':'!r}")
            groups: tuple[str, ...] | None = None
            if at:
                if action == "publish":
                    raise PolicyError(f"scope {scope!r}: '@<group>' restricts subscribe scopes only")
                groups = tuple(group_list.split(","))
            try:
                rules.append(Rule(effect="allow", action=action, topics=(pattern,), groups=groups))  # type: ignore[arg-type]
            except PolicyError as exc:
                text = str(exc).removeprefix("topics[0]: ")
                raise PolicyError(f"scope {scope!r}: {text}") from None
        else:
            what = f"unknown action {action!r}" if sep else "not of the form '<action>:<pattern>'"
            raise PolicyError(f"scope {scope!r}: {what} (expected publish, subscribe, * or ops)")
    return Policy(rules=tuple(rules), ops=frozenset(ops))


def filter_foreign_scopes(scopes: str | Sequence[str]) -> list[str]:
    """Keep the scopes whose action is ours (``publish``, ``subscribe``, ``*``, ``ops``) and drop the rest.

    Tokens from a shared identity provider carry scopes such as ``openid``, ``email`` or ``read:user``;
    those are ignored, while a scope of ours that is malformed is kept so :func:`scopes_to_policy` can
    refuse it. Non-string entries are foreign by definition and dropped.
    """
    return [s for s in _scope_list(scopes) if isinstance(s, str) and s.partition(":")[0] in _SCOPE_ACTIONS]
