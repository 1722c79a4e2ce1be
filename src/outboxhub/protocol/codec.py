"""The outboxhub wire protocol (docs/protocol.md): frames and their JSON codec.

The error and close codes live in :mod:`outboxhub.protocol.codes`; they are re-exported here.

Ground rules, in the spirit of h11:

* This module is pure. It turns text/bytes into frame objects and frame objects into bytes; it never
  touches a socket and imports nothing with I/O. The aiohttp gateway and the Python SDK both sit on it.
* Frames are frozen, keyword-only msgspec Structs. Client frames check their own semantics (topic and
  pattern syntax, group names, start positions) in ``__post_init__``, which msgspec runs on decode as
  well as on construction, so a frame object that exists is a valid frame.
* The happy path is one typed msgspec decode straight into the frame Struct, selected by the ``op`` tag.
  Only when that fails do we decode a second time, as plain JSON, to recover the ``rid`` and to name the
  field at fault: errors are rare, so they may be slow; valid frames must not be.
* A frame the peer got wrong raises :class:`~outboxhub.errors.ProtocolError` carrying an error code
  (:mod:`outboxhub.protocol.codes`), a message of the form ``"<OP>.<field path>: <problem>"`` and the
  request's ``rid`` when it could be read. Misuse by the local caller (encoding something that is not
  JSON) raises ``TypeError``.
* Unknown extra fields are ignored everywhere (forward compatibility); unknown ops are not.

Compatibility with the legacy PromClient protocol: its frames carry no ``rid``, and ``opts`` is either
absent (``JSON.stringify`` drops ``undefined``) or ``null``; both decode. An ``EVENT`` frame always carries
``group`` (``null`` for ephemeral subscriptions), because PromClient keys handlers by ``topic::group``, and
PromClient echoes that ``group`` back in ``ACK``/``NACK``, so those accept a ``null`` group too. Its event
always carries ``payload`` (``null`` when null; see :func:`wire_event`), while the other optional event
fields are left out when unset.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeAlias

import msgspec

from outboxhub.errors import ProtocolError, TopicError
from outboxhub.model import MAX_EVENT_ID, Event, GroupOptions, NewEvent, PublishResult, StartPosition
from outboxhub.protocol.codes import (
    BAD_REQUEST,
    CLOSE_CODES,
    ERROR_CODES,
    FORBIDDEN,
    INTERNAL,
    JWT_INVALID,
    NO_TOKEN,
    NOT_AUTHENTICATED,
    NOT_SUBSCRIBED,
    RATE_LIMITED,
    TOKEN_EXPIRED,
    TOO_LARGE,
    UNAVAILABLE,
    ErrorCode,
    close_code_for,
)
from outboxhub.protocol.explain import explain
from outboxhub.protocol.limits import (
    MAX_DURATION_MS,
    MAX_IN_FLIGHT,
    MAX_MAX_DELIVER,
    MAX_REASON,
    MAX_SEQ,
    MAX_STRING,
    MAX_TS,
    Rid,
    check_depth,
    check_headers,
    check_text,
    check_texts,
    headers_ok,
    texts_ok,
)
from outboxhub.topics import validate_group, validate_pattern, validate_topic

__all__ = [
    "BAD_REQUEST",
    "CLIENT_OPS",
    "CLOSE_CODES",
    "ERROR_CODES",
    "FORBIDDEN",
    "INTERNAL",
    "JWT_INVALID",
    "MAX_FRAME_SIZE",
    "NOT_AUTHENTICATED",
    "NOT_SUBSCRIBED",
    "NO_TOKEN",
    "RATE_LIMITED",
    "TOKEN_EXPIRED",
    "TOO_LARGE",
    "UNAVAILABLE",
    "Ack",
    "Auth",
    "ClientFrame",
    "Ctx",
    "ErrFrame",
    "ErrorCode",
    "EventFrame",
    "Extend",
    "Nack",
    "OkFrame",
    "Publish",
    "PublishOpts",
    "Rid",
    "ServerFrame",
    "Subscribe",
    "SubscribeOpts",
    "Unsubscribe",
    "WireEvent",
    "check_frame_size",
    "close_code_for",
    "decode_client_frame",
    "decode_server_frame",
    "encode_client_frame",
    "encode_err",
    "encode_event",
    "encode_ok",
    "encode_published",
    "wire_event",
]

# --------------------------------------------------------------------------------------------------
MAX_FRAME_SIZE: Final = 1_048_576
"""Default maximum frame size in bytes (1 MiB), checked before any parsing."""

CLIENT_OPS: Final = ("AUTH", "PUBLISH", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "EXTEND")
_SERVER_OPS: Final = ("OK", "ERR", "EVENT")

# --------------------------------------------------------------------------------------------------
# Field types

# Every integer field has a range (protocol/limits.py): nothing beyond a signed 64-bit integer reaches a
# store, and durations stay within what a timer and a JavaScript client handle.
_Ts: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_TS)]
_InFlight: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=MAX_IN_FLIGHT)]
_DurationMs: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=MAX_DURATION_MS)]
_DelayMs: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_MS)]
_MaxDeliver: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=MAX_MAX_DELIVER)]
_EventId: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)]
_AckSeq: TypeAlias = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
"""ACK/NACK/EXTEND ``seq``: a stored seq (1 .. 2^63 - 1, what every store can hold)."""

# Topics and patterns repeat constantly (every ACK carries its subscription pattern), so remember the
# ones that passed. Failures raise and are not cached; a flood of distinct valid names only churns the LRU.
_checked_topic = functools.lru_cache(maxsize=4096)(validate_topic)
_checked_pattern = functools.lru_cache(maxsize=4096)(validate_pattern)


# __post_init__ raises ValueError("<field>: <problem>"); msgspec turns that into a ValidationError located
# at the Struct, and explain() (protocol/explain.py) moves the field name into the path.
# topics.py says "topic 'a.*': segment 2 ..."; the field path already says it is a topic.
def _check_topic(topic: str) -> None:
    try:
        _checked_topic(topic)
    except TopicError as exc:
        raise TopicError(f"topic: {str(exc).removeprefix('topic ')}") from None


def _check_pattern(pattern: str) -> None:
    try:
        _checked_pattern(pattern)
    except TopicError as exc:
        raise TopicError(f"topic: {str(exc).removeprefix('pattern ')}") from None


def _check_group(group: str | None) -> None:
    if group is not None:
        try:
            validate_group(group)
        except TopicError as exc:
            raise TopicError(f"group: {str(exc).removeprefix('group ')}") from None


# --------------------------------------------------------------------------------------------------
# Client → hub frames


class _ClientFrame(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="op"):
    rid: Rid = None


class Auth(_ClientFrame, frozen=True, kw_only=True, tag="AUTH"):
    """``AUTH``: present a JWT. Must be the first frame; may be sent again to refresh the token."""

    token: str

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("token: must not be empty")


class PublishOpts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Optional ``PUBLISH`` fields. ``id`` makes the publish idempotent; ``ts`` defaults to hub time.

    Strings hold no NUL and are bounded; header keys are ``[A-Za-z0-9_-]{1,128}`` (protocol/limits.py).
    """

    id: _EventId | None = None
    key: str | None = None
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None
    ts: _Ts | None = None

    def __post_init__(self) -> None:
        # Hot path: one cheap test per field; the check_* functions word the error when one fails.
        try:
            if self.id is not None and "\x00" in self.id:
                check_text("id", self.id)
            key = self.key
            if key is not None and (len(key) > MAX_STRING or "\x00" in key):
                check_text("key", key)
            sid = self.sid
            if sid is not None and (len(sid) > MAX_STRING or "\x00" in sid):
                check_text("sid", sid)
            if self.headers and not headers_ok(self.headers):
                check_headers(self.headers)
            if self.tags and not texts_ok(self.tags):
                check_texts("tags", self.tags)
            if self.caused_by and not texts_ok(self.caused_by):
                check_texts("caused_by", self.caused_by)
        except TypeError:  # built locally with wrong types (never on decode): the hub's decoder reports them
            pass


class Publish(_ClientFrame, frozen=True, kw_only=True, tag="PUBLISH"):
    """``PUBLISH``: store one event on a concrete topic; answered ``OK {id, seq, duplicate}`` once durable."""

    topic: str
    payload: Any = None
    opts: PublishOpts | None = None

    def __post_init__(self) -> None:
        try:
            _checked_topic(self.topic)
        except TopicError:
            _check_topic(self.topic)  # words the error

    def to_new_event(self) -> NewEvent:
        """The event to hand to the store."""
        o = self.opts
        if o is None:
            return NewEvent(topic=self.topic, payload=self.payload)
        return NewEvent(
            topic=self.topic,
            payload=self.payload,
            id=o.id,
            key=o.key,
            headers=o.headers,
            tags=o.tags,
            caused_by=o.caused_by,
            sid=o.sid,
            ts=o.ts,
        )


class SubscribeOpts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Optional ``SUBSCRIBE`` fields; absent ones take the defaults of :class:`~outboxhub.model.GroupOptions`.

    ``start`` is ``"earliest"``, ``"latest"``, a seq number, ``"seq:N"`` or ``"ts:MS"``.
    """

    start: str | int | None = None
    max_in_flight: _InFlight | None = None
    ack_timeout_ms: _DurationMs | None = None
    max_deliver: _MaxDeliver | None = None
    ordered_by_key: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.start, str) and len(self.start) > 64:
            raise ValueError("start: longer than 64 characters")
        try:
            start = StartPosition.parse(self.start)
        except ValueError as exc:
            raise ValueError(f"start: {exc}") from None
        limit = MAX_TS if start.kind == "ts" else MAX_SEQ
        if start.value > limit:
            raise ValueError(f"start: {start.kind} must be <= {limit}")

    def group_options(self) -> GroupOptions:
        """These options over the defaults."""
        d = GroupOptions()
        return GroupOptions(
            start=StartPosition.parse(self.start),
            max_in_flight=d.max_in_flight if self.max_in_flight is None else self.max_in_flight,
            ack_timeout_ms=d.ack_timeout_ms if self.ack_timeout_ms is None else self.ack_timeout_ms,
            max_deliver=d.max_deliver if self.max_deliver is None else self.max_deliver,
            ordered_by_key=bool(self.ordered_by_key),
        )


class Subscribe(_ClientFrame, frozen=True, kw_only=True, tag="SUBSCRIBE"):
    """``SUBSCRIBE``: receive events matching a pattern, in a consumer ``group`` or ephemerally (None)."""

    topic: str
    group: str | None = None
    opts: SubscribeOpts | None = None

    def __post_init__(self) -> None:
        _check_pattern(self.topic)
        _check_group(self.group)

    def group_options(self) -> GroupOptions:
        """The delivery options asked for, over the defaults."""
        return GroupOptions() if self.opts is None else self.opts.group_options()


class Unsubscribe(_ClientFrame, frozen=True, kw_only=True, tag="UNSUBSCRIBE"):
    """``UNSUBSCRIBE``: end the subscription ``(topic, group)`` of this connection."""

    topic: str
    group: str | None = None

    def __post_init__(self) -> None:
        _check_pattern(self.topic)
        _check_group(self.group)


class Ack(_ClientFrame, frozen=True, kw_only=True, tag="ACK"):
    """``ACK``: event ``id`` delivered on subscription ``(topic, group)`` is done.

    ``topic`` is the subscription pattern, as in the ``EVENT`` frame. ``group`` may be None because a legacy
    PromClient echoes the EVENT's ``group`` whatever it was; acking an ephemeral delivery is then a no-op.
    """

    topic: str
    group: str | None = None
    id: _EventId
    seq: _AckSeq | None = None
    """The EVENT's ``event.seq``: names the delivery when two topics under the pattern share the id."""

    def __post_init__(self) -> None:
        _check_pattern(self.topic)
        _check_group(self.group)


class Nack(_ClientFrame, frozen=True, kw_only=True, tag="NACK"):
    """``NACK``: redeliver event ``id`` after ``delay_ms`` (default: the group's backoff).

    With ``terminal`` true the event is dead-lettered at once (``reason`` goes into the dead letter's
    headers) whatever its attempt count: no more attempts, ``delay_ms`` is ignored.
    """

    topic: str
    group: str | None = None
    id: _EventId
    seq: _AckSeq | None = None
    reason: str | None = None
    delay_ms: _DelayMs | None = None
    terminal: bool = False

    def __post_init__(self) -> None:
        _check_pattern(self.topic)
        _check_group(self.group)
        check_text("reason", self.reason, MAX_REASON)


class Extend(_ClientFrame, frozen=True, kw_only=True, tag="EXTEND"):
    """``EXTEND``: still working on event ``id`` of subscription ``(topic, group)``: push its ack deadline
    to now + the subscription's ``ack_timeout_ms``. Only the connection holding the delivery may.
    ``seq`` as for ``ACK``."""

    topic: str
    group: str
    id: _EventId
    seq: _AckSeq | None = None
    """The EVENT's ``event.seq``: names the delivery when two topics under the pattern share the id."""

    def __post_init__(self) -> None:
        _check_pattern(self.topic)
        _check_group(self.group)


ClientFrame: TypeAlias = Auth | Publish | Subscribe | Unsubscribe | Ack | Nack | Extend

# --------------------------------------------------------------------------------------------------
# Hub → client frames


class Ctx(msgspec.Struct, frozen=True, kw_only=True):
    """Delivery context of an ``EVENT``: ``attempt`` starts at 1; ``redelivered`` is ``attempt > 1``."""

    attempt: int
    redelivered: bool


class EventFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="EVENT"):
    """``EVENT``: one delivery. ``topic`` is the subscription pattern, ``event.topic`` the concrete topic.

    Not ``omit_defaults``: ``group`` is always on the wire, ``null`` for an ephemeral subscription.
    """

    topic: str
    group: str | None = None
    event: Event
    ctx: Ctx


class WireEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An :class:`~outboxhub.model.Event` whose ``payload`` is null, as clients must see it.

    ``Event`` leaves out every field at its default, ``payload`` included, but docs/protocol.md makes
    ``payload`` a required member of an event: here it has no default, so it is always encoded.
    """

    id: str
    topic: str
    seq: int
    ts: int
    payload: Any
    key: str | None = None
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None


def wire_event(event: Event) -> Event | WireEvent:
    """``event`` ready to encode for a client (EVENT frames, the ops API): ``payload`` always present.

    An event with a payload encodes as it is; only a null payload needs the :class:`WireEvent` copy.
    """
    if event.payload is not None:
        return event
    return WireEvent(**msgspec.structs.asdict(event))


# What encode_event writes: EventFrame with the event as wire_event makes it (never decoded).
class _EventOut(msgspec.Struct, frozen=True, kw_only=True, tag_field="op", tag="EVENT"):
    topic: str
    group: str | None
    event: Event | WireEvent
    ctx: Ctx


class ErrFrame(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="op", tag="ERR"):
    """``ERR``: the request ``rid`` failed. ``code`` is kept as a plain str so newer codes still decode.

    ``retry_after_ms`` comes with ``rate_limited`` refusals of a PUBLISH: when the request may succeed.
    """

    rid: Rid = None
    code: str
    msg: str
    retry_after_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


class OkFrame(msgspec.Struct, frozen=True, kw_only=True):
    """``OK``: the request ``rid`` succeeded; ``fields`` are the reply's other members (op-specific)."""

    rid: Rid = None
    fields: dict[str, Any] = {}


ServerFrame: TypeAlias = OkFrame | ErrFrame | EventFrame


# Wire shapes of OK: the head is what the typed decoder reads (the rest is op-specific and read only when
# asked for); _PublishedOk is the confirmed-publish reply, encoded without building a dict.
class _OkHead(msgspec.Struct, frozen=True, tag_field="op", tag="OK"):
    rid: Rid = None


class _PublishedOk(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="op", tag="OK"):
    rid: Rid = None
    id: str
    seq: int
    duplicate: bool


# --------------------------------------------------------------------------------------------------
# Codec

_encoder: Final = msgspec.json.Encoder()
_client_decoder: Final[msgspec.json.Decoder[ClientFrame]] = msgspec.json.Decoder(ClientFrame)
_server_decoder: Final[msgspec.json.Decoder[_OkHead | ErrFrame | EventFrame]] = msgspec.json.Decoder(
    _OkHead | ErrFrame | EventFrame
)
_any_decoder: Final = msgspec.json.Decoder()


_CONTAINERS: Final = (dict, list)


def check_frame_size(data: str | bytes, max_size: int) -> None:
    """Raise :class:`ProtocolError` ``too_large`` when ``data`` is over ``max_size`` bytes as UTF-8."""
    n = len(data)
    # A str's UTF-8 size is between len and 4*len; encode only when the cheap bounds cannot decide.
    if isinstance(data, str) and n <= max_size < 4 * n and not data.isascii():
        n = len(data.encode("utf-8", "surrogatepass"))
    if n > max_size:
        raise ProtocolError(TOO_LARGE, f"frame is {n} bytes; the limit is {max_size} bytes")


def decode_client_frame(data: str | bytes, *, max_size: int = MAX_FRAME_SIZE) -> ClientFrame:
    """Read one client frame (a WebSocket text or binary message).

    Raises :class:`ProtocolError`: ``too_large`` when ``data`` exceeds ``max_size`` bytes (checked before
    parsing), ``no_token`` for an ``AUTH`` whose token is missing, empty or not a string, else
    ``bad_request`` naming the field at fault.
    The error carries the frame's ``rid`` whenever it could be read.
    """
    if len(data) > max_size >> 2:  # else within the limit even at 4 UTF-8 bytes per character
        check_frame_size(data, max_size)
    try:
        frame = _client_decoder.decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise explain(data, exc, CLIENT_OPS) from exc
    except RecursionError as exc:
        raise ProtocolError(BAD_REQUEST, "frame is nested too deeply") from exc
    except UnicodeError as exc:
        raise ProtocolError(BAD_REQUEST, "frame is not valid UTF-8 text") from exc
    # Only a PUBLISH payload is free-form JSON; the rest of every frame has a fixed, shallow shape.
    if type(frame) is Publish and type(frame.payload) in _CONTAINERS:
        try:
            check_depth(data, frame)
        except ValueError as exc:
            raise ProtocolError(BAD_REQUEST, f"PUBLISH.payload: {exc}", rid=frame.rid) from None
    return frame


def decode_server_frame(data: str | bytes) -> ServerFrame:
    """Read one hub frame (client side, for the SDK). Raises :class:`ProtocolError` on anything else."""
    try:
        frame = _server_decoder.decode(data)
        if not isinstance(frame, _OkHead):
            return frame
        fields = _any_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise explain(data, exc, _SERVER_OPS) from exc
    except RecursionError as exc:
        raise ProtocolError(BAD_REQUEST, "frame is nested too deeply") from exc
    except UnicodeError as exc:
        raise ProtocolError(BAD_REQUEST, "frame is not valid UTF-8 text") from exc
    del fields["op"]
    fields.pop("rid", None)
    return OkFrame(rid=frame.rid, fields=fields)


def encode_client_frame(frame: ClientFrame) -> bytes:
    """The JSON text of a client frame. ``None`` fields are left out, as the legacy PromClient does."""
    try:
        return _encoder.encode(frame)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"{type(frame).__name__.upper()}: cannot encode frame as JSON: {exc}") from exc


def encode_ok(rid: Rid, fields: Mapping[str, Any] | None = None, /, **more: Any) -> bytes:
    """``{"op":"OK","rid":rid, **fields, **more}``; ``rid`` is left out when None."""
    body: dict[str, Any] = {"op": "OK"}
    if rid is not None:
        body["rid"] = rid
    for extra in (fields, more):
        if extra:
            if "op" in extra or "rid" in extra:
                raise ValueError("encode_ok: 'op' and 'rid' are reserved and cannot be reply fields")
            body.update(extra)
    try:
        return _encoder.encode(body)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"OK: cannot encode reply as JSON: {exc}") from exc


def encode_published(rid: Rid, result: PublishResult) -> bytes:
    """The reply to a confirmed ``PUBLISH``: ``OK {id, seq, duplicate}`` (hot path: no dict is built)."""
    return _encoder.encode(_PublishedOk(rid=rid, id=result.id, seq=result.seq, duplicate=result.duplicate))


def encode_err(rid: Rid, code: ErrorCode, msg: str, *, retry_after_ms: int | None = None) -> bytes:
    """``{"op":"ERR","rid":rid,"code":code,"msg":msg}``; ``rid`` (and ``retry_after_ms``) left out when
    None."""
    return _encoder.encode(ErrFrame(rid=rid, code=code, msg=msg, retry_after_ms=retry_after_ms))


def encode_event(pattern: str, group: str | None, event: Event, attempt: int) -> bytes:
    """One ``EVENT`` delivery of ``event`` on subscription ``(pattern, group)`` (delivery hot path).

    The event carries ``payload`` even when it is null (:func:`wire_event`)."""
    return _encoder.encode(
        _EventOut(
            topic=pattern,
            group=group,
            event=wire_event(event),
            ctx=Ctx(attempt=attempt, redelivered=attempt > 1),
        )
    )
