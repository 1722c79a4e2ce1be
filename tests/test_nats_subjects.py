"""The pure layout of the NATS store (``store/nats/subjects.py``), checked by property: a pattern's subject
filter covers every topic the pattern matches, and is exactly the pattern when no hub-side matching is
left; subjects, keys and message ids round-trip; the body envelope keeps every field. No server needed."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from outboxhub.model import NewEvent
from outboxhub.store.codec import prepare
from outboxhub.store.nats.subjects import (
    decode_body,
    encode_body,
    key_token,
    msg_id,
    pattern_filter,
    subject_of,
    topic_of,
)
from outboxhub.topics import match_topic

PREFIX = "OB.x"
patterns = st.lists(st.sampled_from(["a", "b", "*", "**"]), min_size=1, max_size=6).map(".".join)
topics = st.lists(st.sampled_from(["a", "b", "c", "_", "k1"]), min_size=1, max_size=7).map(".".join)
keys = st.none() | st.text(max_size=20)


def nats_match(subject_filter: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` (last) one or more."""
    f, s = subject_filter.split("."), subject.split(".")
    for i, tok in enumerate(f):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(f) == len(s)


@given(patterns, topics, keys)
def test_the_filter_covers_the_pattern_and_is_exact_without_a_matcher(
    pattern: str, topic: str, key: str | None
) -> None:
    flt = pattern_filter(PREFIX, pattern)
    subject = subject_of(PREFIX, topic, key)
    if match_topic(pattern, topic):
        assert nats_match(flt.subject, subject)
        assert flt.matches(topic)
    if flt.matcher is None:  # exact: JetStream's filter alone decides, no event is matched in the hub
        assert nats_match(flt.subject, subject) == match_topic(pattern, topic)


@given(topics, keys)
def test_subjects_give_back_the_topic(topic: str, key: str | None) -> None:
    subject = subject_of(PREFIX, topic, key)
    assert topic_of(PREFIX, subject) == topic
    assert subject.rsplit(".", 1)[1] == key_token(key)
    assert all(tok and not set(tok) & set("*> ") for tok in subject.split("."))


@given(topics, topics, st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_message_ids_are_per_topic(topic_a: str, topic_b: str, id_a: str, id_b: str) -> None:
    assert (msg_id(topic_a, id_a) == msg_id(topic_b, id_b)) == ((topic_a, id_a) == (topic_b, id_b))


@given(
    st.builds(
        NewEvent,
        topic=topics,
        payload=st.none() | st.integers() | st.text() | st.dictionaries(st.text(max_size=5), st.integers()),
        id=st.text(min_size=1, max_size=30),
        key=keys,
        headers=st.none() | st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), min_size=1),
        tags=st.none() | st.lists(st.text(max_size=5), min_size=1),
        sid=st.none() | st.text(max_size=5),
        ts=st.integers(0, 2**53),
    )
)
def test_the_body_keeps_every_field(event: NewEvent) -> None:
    got = decode_body(7, encode_body(prepare(event)))
    assert (got.id, got.topic, got.seq, got.ts, got.payload, got.key) == (
        event.id,
        event.topic,
        7,
        event.ts,
        event.payload,
        event.key,
    )
    assert (got.headers, got.tags, got.sid) == (event.headers, event.tags, event.sid)


def test_without_nats_py_the_store_names_its_extra() -> None:
    code = (
        "import sys, asyncio\nsys.modules['nats'] = None\n"
        "from outboxhub.store import open_store\n"
        "try:\n    asyncio.run(open_store('nats://127.0.0.1:4222'))\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=None)
    assert (
        "StoreURLError the NATS JetStream store needs the 'nats' extra: pip install 'outboxhub[nats]'"
        in out.stdout
    )
