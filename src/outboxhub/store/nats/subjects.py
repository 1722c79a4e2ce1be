"""How outboxhub's model is laid out on one JetStream stream: subjects, message ids, consumer names and the
message body. Pure: no I/O, no driver import.

* An event of topic ``a.b`` is stored on the subject ``<prefix>.a.b.<keytok>``: the last token is ``_`` for
  an event without a key and ``k`` + a 128-bit digest of the key otherwise. Every subject has exactly one
  token after the topic, so ``<prefix>.a.b.*`` is the topic ``a.b`` exactly and ``<prefix>.a.b.k…`` is one key
  of it (``latest_by_key`` is one direct get of the last message on that subject).
* ``Nats-Msg-Id`` is a digest of ``(topic, id)``: JetStream's duplicate window then deduplicates an event id
  per topic.
* The body is a JSON envelope ``{"id", "topic", "ts", "key", "meta", "payload"}``; ``payload`` and ``meta``
  are the JSON bytes ``store.codec.prepare`` made, embedded as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from outboxhub.model import Event
from outboxhub.store.codec import Prepared
from outboxhub.topics import Matcher, compile_pattern

__all__ = [
    "NO_KEY",
    "Filter",
    "consumer_name",
    "decode_body",
    "encode_body",
    "key_token",
    "msg_id",
    "pattern_filter",
    "subject_of",
    "topic_of",
]

NO_KEY = "_"
_ANY = "**"
_ONE = "*"


def key_token(key: str | None) -> str:
    """The subject's last token for ``key``."""
    if key is None:
        return NO_KEY
    return "k" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def subject_of(prefix: str, topic: str, key: str | None) -> str:
    """The subject an event of ``topic`` with ``key`` is stored on."""
    return f"{prefix}.{topic}.{key_token(key)}"


def topic_of(prefix: str, subject: str) -> str:
    """The topic of a stored subject (``subject_of`` inverted)."""
    return subject[len(prefix) + 1 : subject.rindex(".")]


def msg_id(topic: str, event_id: str) -> str:
    """The ``Nats-Msg-Id`` of an event: one digest of (topic, id), so ids are deduplicated per topic."""
    return hashlib.blake2b(f"{topic}\0{event_id}".encode(), digest_size=20).hexdigest()


def consumer_name(pattern: str, group: str) -> str:
    """The durable consumer name of the group ``(pattern, group)`` (a digest: names exclude ``.``/``*``)."""
    return "g" + hashlib.blake2b(f"{pattern}\0{group}".encode(), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class Filter:
    """A pattern as JetStream sees it: the narrowest subject filter covering it, and whether that filter is
    exact (``matcher`` is None) or the hub must still match the topic (``matcher`` set)."""

    subject: str
    matcher: Matcher | None

    def matches(self, topic: str) -> bool:
        return self.matcher is None or self.matcher.match(topic)


def pattern_filter(prefix: str, pattern: str) -> Filter:
    """The subject filter of ``pattern``.

    ``*`` is a NATS ``*``. A ``**`` that is the pattern's last token is a NATS ``>`` (which also covers the
    key token, so ``a.**`` still matches the topic ``a``): exact. A ``**`` anywhere else has no NATS form;
    the filter stops at the literal prefix before it (``a.**.b`` -> ``<prefix>.a.>``) and the hub matches.
    """
    matcher = compile_pattern(pattern)
    tokens = list(matcher.tokens)
    if _ANY not in tokens:
        return Filter(".".join([prefix, *tokens, _ONE]), None)
    first = tokens.index(_ANY)
    head = [prefix, *tokens[:first], ">"]
    exact = first == len(tokens) - 1
    return Filter(".".join(head), None if exact else matcher)


class _Body(msgspec.Struct, omit_defaults=True):
    id: str
    topic: str
    ts: int
    payload: msgspec.Raw
    key: str | None = None
    meta: msgspec.Raw | None = None


class _Meta(msgspec.Struct, omit_defaults=True):
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None


class _BodyIn(msgspec.Struct):
    id: str
    topic: str
    ts: int
    payload: msgspec.Raw
    key: str | None = None
    meta: _Meta | None = None


_encode = msgspec.json.Encoder().encode
_decode_body = msgspec.json.Decoder(_BodyIn).decode
_decode_payload = msgspec.json.Decoder().decode


def encode_body(row: Prepared) -> bytes:
    """The message body of a prepared event."""
    event_id, topic, ts, key, payload, meta = row
    return _encode(
        _Body(
            id=event_id,
            topic=topic,
            ts=ts,
            payload=msgspec.Raw(payload),
            key=key,
            meta=None if meta is None else msgspec.Raw(meta),
        )
    )


def decode_body(seq: int, data: bytes) -> Event:
    """The event stored at ``seq`` with body ``data``; ``ValueError`` for a body that is no envelope."""
    try:
        body = _decode_body(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"message {seq} is not an outboxhub event: {exc}") from exc
    payload: Any = _decode_payload(body.payload)
    if body.meta is None:
        return Event(id=body.id, topic=body.topic, seq=seq, ts=body.ts, payload=payload, key=body.key)
    meta = body.meta
    return Event(
        id=body.id,
        topic=body.topic,
        seq=seq,
        ts=body.ts,
        payload=payload,
        key=body.key,
        headers=meta.headers,
        tags=meta.tags,
        caused_by=meta.caused_by,
        sid=meta.sid,
    )
