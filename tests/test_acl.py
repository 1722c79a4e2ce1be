"""Tests for outboxhub.auth.acl: policy parsing, scopes, and the allow/deny decision."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from outboxhub import errors
from outboxhub.auth.acl import (
    Action,
    Policy,
    Rule,
    explain,
    filter_foreign_scopes,
    is_allowed,
    parse_policy,
    scopes_to_policy,
    split_scopes,
)
from outboxhub.auth.decide import DECISION_CACHE_MAX, Decider, dlq_original, rule_count
from outboxhub.errors import PolicyError, TopicError
from outboxhub.topics import covers, match_topic, overlaps


def rule(effect: str, action: str, *topics: str, groups: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"effect": effect, "action": action, "topics": list(topics)}
    if groups is not None:
        out["groups"] = groups
    return out


def policy(*rules: dict[str, Any]) -> Policy:
    return parse_policy({"rules": list(rules)})


# --------------------------------------------------------------------------- decisions

OPEN_BUT_SECRET = policy(rule("allow", "subscribe", "**"), rule("deny", "subscribe", "secret.*"))
ORDERS = policy(rule("allow", "publish", "orders.*"), rule("allow", "subscribe", "process.**"))
EVERYTHING_BUT = policy(rule("allow", "*", "**"), rule("deny", "publish", "secret.*"))
GROUPS = policy(
    rule("allow", "subscribe", "a.**", groups=["ops"]),
    rule("allow", "subscribe", "any.**", groups=["*"]),
    rule("allow", "*", "b.**"),
    rule("deny", "subscribe", "b.private.**", groups=["guests"]),
    rule("allow", "publish", "p.*", groups=["ops"]),
)


@pytest.mark.parametrize(
    ("pol", "action", "topic", "group", "expected"),
    [
        # wildcard subscribe is refused when a deny overlaps it
        (OPEN_BUT_SECRET, "subscribe", "**", None, False),
        (OPEN_BUT_SECRET, "subscribe", "public.**", None, True),
        (OPEN_BUT_SECRET, "subscribe", "secret.x", None, False),
        (OPEN_BUT_SECRET, "subscribe", "secret.**", "g", False),
        (OPEN_BUT_SECRET, "subscribe", "*.x", None, False),
        (OPEN_BUT_SECRET, "subscribe", "secret.x.y", None, True),  # secret.* is one segment deep
        (OPEN_BUT_SECRET, "subscribe", "secret", None, True),
        (OPEN_BUT_SECRET, "publish", "public.x", None, False),  # nothing allows publish
        # publish matches concrete topics; subscribe needs the whole pattern covered
        (ORDERS, "publish", "orders.new", None, True),
        (ORDERS, "publish", "orders.eu.new", None, False),
        (ORDERS, "subscribe", "orders.new", None, False),
        (ORDERS, "subscribe", "process.*.state", None, True),
        (ORDERS, "subscribe", "process", None, True),
        (ORDERS, "subscribe", "process.**", "ops", True),
        (ORDERS, "subscribe", "**", None, False),
        (ORDERS, "subscribe", "proc.**", None, False),
        # "*" action, deny scoped to one action
        (EVERYTHING_BUT, "publish", "secret.x", None, False),
        (EVERYTHING_BUT, "publish", "public.x", None, True),
        (EVERYTHING_BUT, "subscribe", "secret.x", None, True),
        (EVERYTHING_BUT, "subscribe", "**", None, True),
        # groups restrict subscribe only; "*" lists every group and the group-less subscription
        (GROUPS, "subscribe", "a.x", "ops", True),
        (GROUPS, "subscribe", "a.x", "other", False),
        (GROUPS, "subscribe", "a.x", None, False),
        (GROUPS, "subscribe", "any.x", "whatever", True),
        (GROUPS, "subscribe", "any.x", None, True),
        (GROUPS, "subscribe", "b.private.x", "guests", False),
        (GROUPS, "subscribe", "b.private.x", "ops", True),
        (GROUPS, "subscribe", "b.private.x", None, True),
        (GROUPS, "subscribe", "b.**", "guests", False),
        (GROUPS, "publish", "p.x", None, True),
        (GROUPS, "publish", "p.x", "someone", True),
        (GROUPS, "publish", "b.private.x", None, True),
    ],
)
def test_decisions(pol: Policy, action: Action, topic: str, group: str | None, expected: bool) -> None:
    assert is_allowed(pol, action, topic, group) is expected
    assert explain(pol, action, topic, group).startswith("allowed") is expected


@pytest.mark.parametrize(
    ("pol", "action", "topic", "group", "reason"),
    [
        (OPEN_BUT_SECRET, "subscribe", "**", None, "denied by rule 2 (deny subscribe secret.*)"),
        (OPEN_BUT_SECRET, "subscribe", "public.**", None, "allowed by rule 1 (allow subscribe **)"),
        (ORDERS, "subscribe", "a.**", None, "no allow rule covers subscribe on 'a.**'"),
        (ORDERS, "subscribe", "a.**", "ops", "no allow rule covers subscribe on 'a.**' for group 'ops'"),
        (ORDERS, "publish", "billing.new", None, "no allow rule matches publish on 'billing.new'"),
        (
            GROUPS,
            "subscribe",
            "b.**",
            "guests",
            "denied by rule 4 (deny subscribe b.private.** groups=guests)",
        ),
        (Policy(), "publish", "a", None, "the policy grants no rights, so publish on 'a' is denied"),
    ],
)
def test_explain_gives_a_one_line_reason(
    pol: Policy, action: Action, topic: str, group: str | None, reason: str
) -> None:
    assert explain(pol, action, topic, group) == reason


def test_requests_are_validated() -> None:
    with pytest.raises(TopicError, match="segment 2 '\\*' is a wildcard; publish topics must be concrete"):
        is_allowed(EVERYTHING_BUT, "publish", "a.*")
    with pytest.raises(TopicError, match="segment 2 is empty"):
        is_allowed(EVERYTHING_BUT, "subscribe", "a..b")
    with pytest.raises(ValueError, match="action must be 'publish' or 'subscribe', got 'read'"):
        is_allowed(EVERYTHING_BUT, "read", "a")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="action must be"):
        explain(EVERYTHING_BUT, "*", "a")  # type: ignore[arg-type]


def test_dead_letter_topics_are_decided_too() -> None:
    dlq = ".".join(["dlq", "ops", *["s"] * 32])
    assert is_allowed(policy(rule("allow", "*", "dlq.**")), "publish", dlq)
    assert is_allowed(policy(rule("allow", "*", "dlq.**")), "subscribe", dlq)


# --------------------------------------------------------------------------- parse_policy


def test_parse_policy_builds_rules_and_ops() -> None:
    pol = parse_policy(
        {
            "rules": [
                {"effect": "allow", "action": "publish", "topics": ["heartbeat.*", "orders.**"]},
                {"effect": "deny", "action": "*", "topics": ["secret.**"], "groups": ["ops", "*"]},
                {"effect": "allow", "action": "subscribe", "topics": ["a"], "groups": None},
            ],
            "ops": ["read", "write", "read"],
        }
    )
    assert pol == Policy(
        rules=(
            Rule(effect="allow", action="publish", topics=("heartbeat.*", "orders.**")),
            Rule(effect="deny", action="*", topics=("secret.**",), groups=("ops", "*")),
            Rule(effect="allow", action="subscribe", topics=("a",)),
        ),
        ops=frozenset({"read", "write"}),
    )
    assert hash(pol) == hash(parse_policy({"rules": pol_rules_json(pol), "ops": ["write", "read"]}))
    assert parse_policy({"rules": []}) == Policy()


def pol_rules_json(pol: Policy) -> list[dict[str, Any]]:
    out = []
    for r in pol.rules:
        d: dict[str, Any] = {"effect": r.effect, "action": r.action, "topics": list(r.topics)}
        if r.groups is not None:
            d["groups"] = list(r.groups)
        out.append(d)
    return out


GOOD = {"effect": "allow", "action": "publish", "topics": ["a"]}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "policy: must be an object with a 'rules' list, got list"),
        ({"rules": [], "x": 1}, "policy: unknown key(s) 'x'; expected 'rules' and optionally 'ops'"),
        ({"allow": [{"action": "publish", "topic": "a.**"}]}, "policy: unknown key(s) 'allow'"),
        ({}, "policy: missing key 'rules'"),
        ({"rules": {}}, "rules: must be a list of rules, got dict"),
        ({"rules": [5]}, "rules[0]: must be an object, got int"),
        ({"rules": [GOOD, {**GOOD, "topic": "a"}]}, "rules[1]: unknown key(s) 'topic'"),
        ({"rules": [{"action": "publish", "topics": ["a"]}]}, "rules[0]: missing key(s) 'effect'"),
        (
            {"rules": [{**GOOD, "effect": "permit"}]},
            "rules[0].effect: must be 'allow' or 'deny', got 'permit'",
        ),
        ({"rules": [{**GOOD, "action": "read"}]}, "rules[0].action: must be 'publish', 'subscribe' or '*'"),
        ({"rules": [{**GOOD, "topics": "a.b"}]}, "rules[0].topics: must be a list of patterns, got str"),
        ({"rules": [{**GOOD, "topics": []}]}, "rules[0].topics: must list at least one pattern"),
        (
            {"rules": [GOOD, GOOD, {**GOOD, "topics": ["ok.**", "a b"]}]},
            "rules[2].topics[1]: pattern 'a b': segment 1 'a b' has invalid characters: ' '",
        ),
        ({"rules": [{**GOOD, "topics": ["a*"]}]}, "rules[0].topics[0]: pattern 'a*': segment 1 'a*' mixes"),
        ({"rules": [{**GOOD, "topics": [5]}]}, "rules[0].topics[0]: pattern must be a string, got int"),
        ({"rules": [{**GOOD, "groups": "ops"}]}, "rules[0].groups: must be a list of group names, got str"),
        ({"rules": [{**GOOD, "groups": []}]}, "rules[0].groups: must list at least one group"),
        ({"rules": [{**GOOD, "groups": ["a.b"]}]}, "rules[0].groups[0]: 'a.b' is not a group name"),
        ({"rules": [{**GOOD, "groups": ["**"]}]}, "rules[0].groups[0]: '**' is not a group name"),
        ({"rules": [{**GOOD, "groups": [1]}]}, "rules[0].groups[0]: must be a string, got int"),
        ({"rules": [], "ops": ["admin"]}, "ops[0]: must be 'read' or 'write', got 'admin'"),
        ({"rules": [], "ops": "read"}, "ops: must be a list of 'read'/'write', got str"),
    ],
)
def test_parse_policy_names_the_bad_field(obj: object, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(obj)
    assert message in str(info.value)


def test_policy_error_is_the_shared_value_error() -> None:
    assert issubclass(PolicyError, ValueError) and issubclass(PolicyError, errors.OutboxhubError)


def test_rules_and_policies_check_themselves() -> None:
    with pytest.raises(PolicyError, match="topics\\[0\\]: pattern 'a b'"):
        Rule(effect="allow", action="publish", topics=("a b",))
    with pytest.raises(PolicyError, match="effect"):
        Rule(effect="maybe", action="publish", topics=("a",))  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match="ops: unknown scope\\(s\\) 'admin'"):
        Policy(ops=frozenset({"admin"}))
    with pytest.raises(PolicyError, match="rules: must be a sequence of Rule"):
        Policy(rules=({"effect": "allow"},))  # type: ignore[arg-type]
    r = Rule(effect="allow", action="publish", topics=["a", "b.*"], groups=["ops"])  # type: ignore[arg-type]
    assert r.topics == ("a", "b.*") and r.groups == ("ops",)
    assert r.describe() == "allow publish a b.* groups=ops"
    assert {r, Rule(effect="allow", action="publish", topics=("a", "b.*"), groups=("ops",))} == {r}


# --------------------------------------------------------------------------- scopes


def test_scopes_become_allow_rules_and_ops() -> None:
    pol = scopes_to_policy("publish:heartbeat.* subscribe:process.** *:shared.** ops:read ops:read")
    assert pol == Policy(
        rules=(
            Rule(effect="allow", action="publish", topics=("heartbeat.*",)),
            Rule(effect="allow", action="subscribe", topics=("process.**",)),
            Rule(effect="allow", action="*", topics=("shared.**",)),
        ),
        ops=frozenset({"read"}),
    )
    assert is_allowed(pol, "publish", "heartbeat.x") and not is_allowed(pol, "subscribe", "heartbeat.x")
    assert is_allowed(pol, "subscribe", "process.*.state", "g")
    assert is_allowed(pol, "publish", "shared.a") and is_allowed(pol, "subscribe", "shared.**")
    assert scopes_to_policy(["ops:write"]).ops == frozenset({"write"})


def test_empty_scopes_give_no_rights() -> None:
    empties: list[str | list[str] | tuple[str, ...]] = ["", "   ", [], ()]
    for empty in empties:
        pol = scopes_to_policy(empty)
        assert pol == Policy()
        assert not is_allowed(pol, "publish", "a") and not is_allowed(pol, "subscribe", "a")


@pytest.mark.parametrize(
    ("scopes", "message"),
    [
        ("publish", "scope 'publish': missing the topic pattern after 'publish:'"),
        (["subscribe:"], "scope 'subscribe:': missing the topic pattern after 'subscribe:'"),
        ("admin:x", "scope 'admin:x': unknown action 'admin' (expected publish, subscribe, * or ops)"),
        ("openid", "scope 'openid': not of the form '<action>:<pattern>'"),
        ("publish:a..b", "scope 'publish:a..b': pattern 'a..b': segment 2 is empty"),
        (["subscribe:a b"], "scope 'subscribe:a b': pattern 'a b': segment 1 'a b' has invalid characters"),
        ("ops:admin", "scope 'ops:admin': the ops scopes are 'ops:read' and 'ops:write'"),
        ([""], "scope '' is empty"),
        ([5], "scope 5: must be a string, got int"),
        (5, "scopes: must be a list of strings or a space-separated string, got int"),
    ],
)
def test_scopes_are_strict(scopes: Any, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        scopes_to_policy(scopes)
    assert message in str(info.value)


def test_foreign_scopes_are_dropped() -> None:
    raw = "openid profile read:user publish:orders.* email subscribe:orders.** ops:read *:x publish ops:bad"
    kept = ["publish:orders.*", "subscribe:orders.**", "ops:read", "*:x", "publish", "ops:bad"]
    assert filter_foreign_scopes(raw) == kept
    assert filter_foreign_scopes(raw.split()) == kept
    assert filter_foreign_scopes(["openid", 3, None, "subscribe:a"]) == ["subscribe:a"]  # type: ignore[list-item]
    assert filter_foreign_scopes("") == []
    # ours but malformed stays, so the strict parser can refuse it
    with pytest.raises(PolicyError, match="'publish'"):
        scopes_to_policy(filter_foreign_scopes("openid publish"))
    assert scopes_to_policy(filter_foreign_scopes("openid read:user")) == Policy()


# --------------------------------------------------------------------------- properties

_pattern = st.lists(st.sampled_from(["a", "b", "*", "**"]), min_size=1, max_size=4).map(".".join)
_topic = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=5).map(".".join)
_group = st.sampled_from([None, "g1", "g2", "g3"])

rules = st.builds(
    Rule,
    effect=st.sampled_from(["allow", "deny"]),
    action=st.sampled_from(["publish", "subscribe", "*"]),
    topics=st.lists(_pattern, min_size=1, max_size=2).map(tuple),
    groups=st.none() | st.lists(st.sampled_from(["g1", "g2", "*"]), min_size=1, max_size=2).map(tuple),
)
policies = st.lists(rules, max_size=5).map(lambda rs: Policy(rules=tuple(rs)))


@st.composite
def requests(draw: st.DrawFn) -> tuple[Action, str, str | None]:
    action: Action = draw(st.sampled_from(["publish", "subscribe"]))
    topic = draw(_topic if action == "publish" else _topic | _pattern)
    return action, topic, draw(_group)


def ref_allowed(pol: Policy, action: Action, topic: str, group: str | None) -> bool:
    """The decision rule restated directly from ARCHITECTURE.md."""

    def applies(r: Rule) -> bool:
        if r.action not in (action, "*"):
            return False
        if action == "publish" or r.groups is None:
            return True
        return "*" in r.groups or group in r.groups

    def hit(r: Rule) -> bool:
        if action == "publish":
            return any(match_topic(p, topic) for p in r.topics)
        rel = covers if r.effect == "allow" else overlaps
        return any(rel(p, topic) for p in r.topics)

    allows = [r for r in pol.rules if r.effect == "allow" and applies(r) and hit(r)]
    denies = [r for r in pol.rules if r.effect == "deny" and applies(r) and hit(r)]
    return bool(allows) and not denies


@given(policies, requests())
def test_decision_follows_the_definition(pol: Policy, req: tuple[Action, str, str | None]) -> None:
    assert is_allowed(pol, *req) is ref_allowed(pol, *req)
    assert explain(pol, *req).startswith("allowed") is is_allowed(pol, *req)


@given(st.lists(rules, max_size=6), requests(), st.randoms(use_true_random=False))
def test_rule_order_never_matters(rs: list[Rule], req: tuple[Action, str, str | None], rnd: Any) -> None:
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert is_allowed(Policy(rules=tuple(rs)), *req) is is_allowed(Policy(rules=tuple(shuffled)), *req)


@given(st.lists(rules, max_size=5), requests(), st.integers(min_value=0), st.booleans(), st.booleans())
def test_a_deny_anywhere_wins(
    rs: list[Rule], req: tuple[Action, str, str | None], where: int, any_action: bool, all_groups: bool
) -> None:
    action, topic, group = req
    deny = Rule(
        effect="deny",
        action="*" if any_action else action,
        topics=(topic,),  # a pattern overlaps itself; a topic matches itself
        groups=("*",) if all_groups else None,
    )
    at = where % (len(rs) + 1)
    assert not is_allowed(Policy(rules=(*rs[:at], deny, *rs[at:])), action, topic, group)
    # and an extra deny never turns a refusal into a grant
    other = Rule(effect="deny", action="*", topics=("b.**",))
    if not is_allowed(Policy(rules=tuple(rs)), *req):
        assert not is_allowed(Policy(rules=(*rs, other)), *req)


@given(requests())
def test_empty_policy_denies_everything(req: tuple[Action, str, str | None]) -> None:
    assert not is_allowed(Policy(), *req)
    assert not is_allowed(parse_policy({"rules": []}), *req)


@given(policies, _pattern, _pattern, _group)
def test_narrower_subscriptions_stay_allowed(pol: Policy, wide: str, narrow: str, group: str | None) -> None:
    if covers(wide, narrow) and is_allowed(pol, "subscribe", wide, group):
        assert is_allowed(pol, "subscribe", narrow, group)


_scope = st.builds(
    lambda action, pattern: f"{action}:{pattern}",
    st.sampled_from(["publish", "subscribe", "*"]),
    _pattern,
) | st.sampled_from(["ops:read", "ops:write"])


@given(st.lists(_scope, max_size=6))
def test_scope_list_equals_scope_string(scopes: list[str]) -> None:
    pol = scopes_to_policy(scopes)
    assert pol == scopes_to_policy(" ".join(scopes))
    assert pol == scopes_to_policy(filter_foreign_scopes(["openid", *scopes, "read:user"]))
    assert all(r.effect == "allow" for r in pol.rules)


# --------------------------------------------------------------------------- issue #14: the Decider, scopes


@given(policies, requests())
def test_the_compiled_decider_decides_like_the_definition(
    pol: Policy, req: tuple[Action, str, str | None]
) -> None:
    """The first-segment index may only skip rules that cannot match: every decision, cached or not, equals
    the rule-by-rule one."""
    decider = Decider(pol)
    expected = ref_allowed(pol, *req)
    assert decider.allowed(*req) is expected
    assert decider.allowed(*req) is expected  # from the cache


@given(policies, st.lists(requests(), min_size=1, max_size=30))
def test_the_decision_cache_is_bounded_and_stays_right(
    pol: Policy, reqs: list[tuple[Action, str, str | None]]
) -> None:
    decider = Decider(pol)
    for req in reqs * 3:
        assert decider.allowed(*req) is ref_allowed(pol, *req)
    assert len(decider._cache) <= DECISION_CACHE_MAX


def test_the_decision_cache_never_outgrows_its_bound() -> None:
    decider = Decider(scopes_to_policy(["subscribe:**"]))
    for n in range(DECISION_CACHE_MAX + 50):
        assert decider.allowed("subscribe", f"t{n}.*")
    assert len(decider._cache) == DECISION_CACHE_MAX


async def test_a_heavy_policy_decides_off_the_loop_with_the_same_answer() -> None:
    rules = [{"effect": "allow", "action": "subscribe", "topics": [f"**.r{n}.**.x"]} for n in range(40)]
    pol = parse_policy({"rules": [*rules, {"effect": "deny", "action": "*", "topics": ["secret.**"]}]})
    decider = Decider(pol)
    assert decider.heavy and rule_count(pol) == 41
    for pattern in ("a.r7.b.x", "**.r39.x", "secret.r1.x", "**"):
        assert await decider.allowed_async("subscribe", pattern) is is_allowed(pol, "subscribe", pattern)


@given(st.sampled_from(["subscribe", "*"]), _pattern, st.lists(st.sampled_from(["g1", "g2"]), min_size=1))
def test_a_group_suffix_restricts_a_scope_to_those_groups(
    action: str, pattern: str, groups: list[str]
) -> None:
    pol = scopes_to_policy([f"{action}:{pattern}@{','.join(groups)}"])
    assert is_allowed(pol, "subscribe", pattern, groups[0])
    assert not is_allowed(pol, "subscribe", pattern, "g3")
    assert not is_allowed(pol, "subscribe", pattern, None)  # nor the group-less live tail
    assert pol.rules[0].groups == tuple(groups)


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("publish:a.*@g", "restricts subscribe scopes only"),
        ("subscribe:a.*@", "groups[0]"),
        ("subscribe:a.*@a.b", "groups[0]"),
        ("subscribe:@g", "missing the topic pattern"),
    ],
)
def test_bad_group_suffixes_are_refused_naming_the_scope(scope: str, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)) as info:
        scopes_to_policy([scope])
    assert repr(scope) in str(info.value)


@given(st.sampled_from(["\u00a0", "\u2003", "\u3000", "\u2028", "\x85"]))
def test_only_ascii_whitespace_separates_scopes(space: str) -> None:
    """``openid<NBSP>publish:**`` is one foreign scope, never ``publish:**``."""
    assert split_scopes(f"openid{space}publish:**") == [f"openid{space}publish:**"]
    assert filter_foreign_scopes(f"openid{space}publish:**") == []
    assert split_scopes("a:b \t\nc:d") == ["a:b", "c:d"]


def test_dead_letters_follow_the_rules_of_their_original_topic_and_group() -> None:
    pol = parse_policy(
        {
            "rules": [
                {"effect": "allow", "action": "subscribe", "topics": ["**"]},
                {"effect": "deny", "action": "*", "topics": ["secret.**"]},
                {"effect": "deny", "action": "subscribe", "topics": ["pay.*"], "groups": ["audit"]},
            ]
        }
    )
    decider = Decider(pol)
    assert decider.allowed("subscribe", "dlq.**")  # the pattern itself overlaps no deny rule...
    assert not decider.may_read("dlq.payroll.secret.salaries")  # ...but this dead letter is denied
    assert not decider.may_read("dlq.g2.dlq.g1.secret.x")  # a dead letter of a dead letter too
    assert not decider.may_read("dlq.audit.pay.in")  # the original group's rules apply
    assert decider.may_read("dlq.settle.pay.in")
    assert decider.may_read("payroll.public")
    assert dlq_original("dlq.g.a.b") == ("g", "a.b") and dlq_original("dlqx.g.a") is None
