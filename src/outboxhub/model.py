"""Value objects shared by every layer: events, publish results, group options and state.

All are frozen msgspec Structs: cheap to build, checked by mypy, and encoded to JSON without a detour
through dicts on the hot path.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from outboxhub.retry import BackoffPolicy

__all__ = [
    "DEFAULT_ACK_TIMEOUT_MS",
    "DEFAULT_MAX_DELIVER",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_NACK_DELAY_MS",
    "MAX_EVENT_ID",
    "MAX_NACK_DELAY_MS",
    "Cursor",
    "Delivery",
    "Event",
    "GroupInfo",
    "GroupOptions",
    "Lag",
    "NewEvent",
    "PublishResult",
    "StartPosition",
    "TopicInfo",
    "nack_backoff_ms",
]

DEFAULT_ACK_TIMEOUT_MS = 30_000
DEFAULT_MAX_DELIVER = 5
DEFAULT_MAX_IN_FLIGHT = 1_000
DEFAULT_NACK_DELAY_MS = 500
MAX_NACK_DELAY_MS = 30_000
MAX_EVENT_ID = 256
"""The longest event id the wire protocol accepts (PUBLISH, ACK, NACK)."""


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One stored event. ``seq`` is store-wide and strictly increasing in commit order."""

    id: str
    topic: str
    seq: int
    ts: int
    payload: Any = None
    key: str | None = None
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None


class NewEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An event to publish. ``id`` and ``ts`` are filled in by the hub when absent.

    The topic must already be validated (concrete, no wildcards): the store does not re-check it.
    """

    topic: str
    payload: Any = None
    id: str | None = None
    key: str | None = None
    headers: dict[str, str] | None = None
    tags: list[str] | None = None
    caused_by: list[str] | None = None
    sid: str | None = None
    ts: int | None = None


class PublishResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a publish returns once durable. ``duplicate`` is true when the id already existed; ``seq`` is
    then the original event's seq."""

    id: str
    seq: int
    duplicate: bool = False


class StartPosition(msgspec.Struct, frozen=True, kw_only=True):
    """Where a new group starts: ``earliest``, ``latest`` (default), after a ``seq``, or at a ``ts``.

    ``seq`` means "deliver events with seq > value"; ``ts`` means "deliver events with ts >= value".
    The position only matters when the group is created; an existing group keeps its cursor.
    """

    kind: Literal["earliest", "latest", "seq", "ts"] = "latest"
    value: int = 0

    @classmethod
    def parse(cls, raw: str | int | None) -> StartPosition:
        """Read the wire form: ``"earliest"``, ``"latest"``, an int seq, ``"seq:N"`` or ``"ts:MS"``."""
        if raw is None or raw == "latest":
            return cls(kind="latest")
        if raw == "earliest":
            return cls(kind="earliest")
        if isinstance(raw, bool):
            raise ValueError("start must be earliest, latest, a seq number, 'seq:N' or 'ts:MS'")
        if isinstance(raw, int):
            if raw < 0:
                raise ValueError("start seq must be >= 0")
            return cls(kind="seq", value=raw)
        for prefix in ("seq:", "ts:"):
            if raw.startswith(prefix):
                number = raw[len(prefix) :]
                if not number.isdigit():
                    raise ValueError(f"start {raw!r}: {prefix[:-1]} must be a non-negative integer")
                return cls(kind="seq" if prefix == "seq:" else "ts", value=int(number))
        raise ValueError(f"start {raw!r} must be earliest, latest, a seq number, 'seq:N' or 'ts:MS'")


class GroupOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Delivery options of a consumer group subscription (docs/protocol.md, SUBSCRIBE ``opts``)."""

    start: StartPosition = StartPosition()
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ack_timeout_ms: int = DEFAULT_ACK_TIMEOUT_MS
    max_deliver: int = DEFAULT_MAX_DELIVER
    ordered_by_key: bool = False


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """An event handed to one member of a group. ``attempt`` starts at 1."""

    event: Event
    attempt: int
    deadline: int

    @property
    def redelivered(self) -> bool:
        return self.attempt > 1


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    """A group's ack floor: every matching event with seq <= ``seq`` is acked or was before the group's
    start.

    ``last_id``/``last_ts`` describe the newest matching event at or below the floor: for a group that
    started at ``latest`` (or at a seq) that is the last matching event before its start, so its lag is
    measured from there; they are None when no matching event is at or below the floor.
    """

    pattern: str
    group: str
    seq: int
    last_id: str | None = None
    last_ts: int | None = None


class Lag(msgspec.Struct, frozen=True, kw_only=True):
    """How far a group is behind its pattern's tail.

    ``lag_ms`` follows the legacy PromClient protocol: tail.ts - cursor.last_ts, None when either side is
    missing.
    ``lag_count`` is the number of matching events above the ack floor.
    """

    cursor: Cursor
    tail_id: str | None
    tail_seq: int | None
    tail_ts: int | None
    lag_ms: int | None
    lag_count: int

    @classmethod
    def behind(cls, cursor: Cursor, tail: Event | None, lag_count: int) -> Lag:
        """The lag of a group at ``cursor`` behind its pattern's newest event ``tail`` (None: no event)."""
        return cls(
            cursor=cursor,
            tail_id=None if tail is None else tail.id,
            tail_seq=None if tail is None else tail.seq,
            tail_ts=None if tail is None else tail.ts,
            lag_ms=None if tail is None or cursor.last_ts is None else tail.ts - cursor.last_ts,
            lag_count=lag_count,
        )


class TopicInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Per-topic summary for ``/topics``."""

    topic: str
    count: int
    last_seq: int
    last_ts: int


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """Per-group summary for ``/groups`` (members are added by the bus, which knows who is connected)."""

    pattern: str
    group: str
    ack_floor: int
    frontier: int
    in_flight: int
    dead_letters: int


def nack_backoff_ms(attempt: int, delay_ms: int | None = None) -> int:
    """Delay before redelivering a NACKed event: ``delay_ms`` when given (capped at 300 s, ten times
    ``MAX_NACK_DELAY_MS``), else 500 ms doubling per attempt (attempt 1 → 500 ms), capped at 30 s."""
    if delay_ms is not None:
        return max(0, min(delay_ms, MAX_NACK_DELAY_MS * 10))
    return int(_NACK_BACKOFF.raw(attempt - 1))


_NACK_BACKOFF = BackoffPolicy(base=DEFAULT_NACK_DELAY_MS, cap=MAX_NACK_DELAY_MS)
