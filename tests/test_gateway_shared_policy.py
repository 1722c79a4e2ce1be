"""Issue #16, idle memory: one compiled policy per distinct policy, shared by the gateway's connections.

Real hub, real sockets: tokens with equal policies share one :class:`Decider` (and its decision cache), other
policies get their own, a re-AUTH switches, the map is bounded and weak (no token can evict a decider that
others use), and the shared decision cache stays right and bounded under concurrent heavy SUBSCRIBEs.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

from outboxhub.app import Hub
from outboxhub.auth.acl import Action, is_allowed, parse_policy, scopes_to_policy
from outboxhub.auth.decide import DECISION_CACHE_MAX, Decider, SharedDeciders
from outboxhub.gateway.connection import Connection


def _connection(hub: Hub, sub: str) -> Connection:
    (conn,) = [c for c in hub.gateway.connections if c.principal is not None and c.principal.sub == sub]
    return conn


async def test_tokens_with_the_same_policy_share_one_compiled_decider(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    scopes = ["publish:a.*", "subscribe:a.**"]
    await ws_connect(hub.ws_url, token=token(sub="alice", scopes=scopes))
    await ws_connect(hub.ws_url, token=token(sub="bob", scopes=scopes, ttl_s=600))
    carol = await ws_connect(hub.ws_url, token=token(sub="carol", scopes=["subscribe:b.*"]))
    alice, bob, other = _connection(hub, "alice"), _connection(hub, "bob"), _connection(hub, "carol")
    assert alice.decider is not None and alice.decider is bob.decider
    assert alice.policy is bob.policy is alice.decider.policy
    assert other.decider is not None and other.decider is not alice.decider
    assert len(hub.gateway.deciders) == 2
    # the decoded claims are not kept for the life of the connection; what the ops API shows is
    assert alice.principal is not None and dict(alice.principal.claims) == {}
    assert alice.principal.sub == "alice" and bob.principal is not None
    assert bob.principal.exp > alice.principal.exp
    # the rights are each token's own
    assert (await carol.request("SUBSCRIBE", topic="a.*"))["code"] == "forbidden"


async def test_a_re_auth_with_another_policy_switches_and_the_unused_one_is_dropped(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    c = await ws_connect(hub.ws_url, token=token(sub="dave", scopes=["subscribe:x.*"]))
    await ws_connect(hub.ws_url, token=token(sub="erin", scopes=["subscribe:y.*"]))
    dave, erin = _connection(hub, "dave"), _connection(hub, "erin")
    first = dave.decider
    assert first is not None and len(hub.gateway.deciders) == 2
    await c.auth(token(sub="dave", scopes=["subscribe:y.*"]))
    assert dave.decider is erin.decider and dave.decider is not first
    assert (await c.request("SUBSCRIBE", topic="x.*"))["code"] == "forbidden"
    assert (await c.request("SUBSCRIBE", topic="y.*"))["op"] == "OK"
    del first
    gc.collect()
    assert len(hub.gateway.deciders) == 1  # nobody holds x.*'s decider any more


def test_the_map_is_bounded_and_holds_only_deciders_in_use() -> None:
    shared = SharedDeciders(max_entries=2)
    a = shared.get(scopes_to_policy(["publish:a"]))
    b = shared.get(scopes_to_policy(["publish:b"]))
    assert shared.get(scopes_to_policy(["publish:a"])) is a
    # full: a third policy is compiled unshared (as before sharing) and decides all the same
    c1, c2 = shared.get(scopes_to_policy(["publish:c"])), shared.get(scopes_to_policy(["publish:c"]))
    assert c1 is not c2 and c1.allowed("publish", "c") and not c1.allowed("publish", "a")
    assert len(shared) == 2
    # entries live exactly as long as someone holds the decider: nothing to evict, nothing to grow
    del a
    gc.collect()
    assert len(shared) == 1
    c3 = shared.get(scopes_to_policy(["publish:c"]))  # room again: this one is shared now
    assert c3 is not c1 and shared.get(scopes_to_policy(["publish:c"])) is c3
    assert len(shared) == 2 and b.allowed("publish", "b")


class _Recording(Decider):
    """A decider that records the thread every cache write runs on."""

    __slots__ = ("threads",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.threads: set[int] = set()

    def _remember(self, key: tuple[str, str, str | None], allowed: bool) -> bool:
        self.threads.add(threading.get_ident())
        return super()._remember(key, allowed)


async def test_the_shared_cache_stays_right_and_bounded_under_concurrent_heavy_subscribes() -> None:
    rules = [{"effect": "allow", "action": "subscribe", "topics": [f"**.r{n}.**.x"]} for n in range(40)]
    pol = parse_policy({"rules": [*rules, {"effect": "deny", "action": "*", "topics": ["r3.**"]}]})
    decider = _Recording(pol)
    assert decider.heavy
    # many connections' SUBSCRIBEs at once, more distinct requests than the cache holds, each twice
    requests: list[tuple[Action, str, str | None]] = [
        ("subscribe", f"{'r3' if n % 7 == 0 else 'a'}.r{n % 45}.b{n}.x", f"g{n % 3}")
        for n in range(DECISION_CACHE_MAX + 200)
    ]
    answers = await asyncio.gather(*(decider.allowed_async(*req) for req in requests * 2))
    assert answers == [is_allowed(pol, *req) for req in requests * 2]
    assert any(answers) and not all(answers)
    assert len(decider._cache) <= DECISION_CACHE_MAX
    assert decider.threads == {threading.get_ident()}  # the cache is written on the loop only


async def test_idle_connections_hold_no_writer_task_and_no_send_deque(
    hub: Hub, ws_connect: Any, token: Any
) -> None:
    """What memprobe measures, as a count: once the AUTH reply is out, an idle connection's send queue has
    no task and no deque (before issue #16 every connection kept a writer task waiting)."""
    for n in range(10):
        await ws_connect(hub.ws_url, token=token(sub=f"idle{n}"))
    conns = list(hub.gateway.connections)
    assert len(conns) == 10
    for _ in range(100):  # the writer ends in the loop iteration after its last send
        if not any(c.out.writing for c in conns):
            break
        await asyncio.sleep(0.01)
    assert [c.out.writing for c in conns] == [False] * 10
    assert all(c.out._items is None for c in conns)
    assert len({id(c.decider) for c in conns}) == 1
