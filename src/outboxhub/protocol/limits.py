"""The fixed limits of the wire protocol (docs/protocol.md, "Limits"), checked by the codec.

Everything a client sends that reaches a store, a timer or another client is bounded here, so that no
frame can carry a value the store cannot hold (an integer beyond a signed 64-bit column poisons the
whole write batch it lands in), a timer cannot schedule, or a JavaScript client cannot read exactly:

* integers: each field has its own range (:data:`MAX_SEQ`, :data:`MAX_TS`, :data:`MAX_DURATION_MS`, …);
* strings that become store columns or keys (event id, key, sid, tags, caused_by, header keys and
  values, NACK reason): no NUL character, bounded length; header keys from a small charset, because a
  store may use them as document keys;
* ``rid``: a string of at most :data:`MAX_RID_LENGTH` characters or a safe integer/finite number,
  because every reply echoes it;
* nesting: at most :data:`MAX_DEPTH` levels of arrays/objects in a frame, checked by our own code rather
  than left to where (or whether) the interpreter raises ``RecursionError``.

This module is pure and imports nothing from outboxhub but the codes: the codec and its tests use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, TypeAlias

import msgspec

__all__ = [
    "MAX_DEPTH",
    "MAX_DURATION_MS",
    "MAX_HEADERS",
    "MAX_HEADER_KEY",
    "MAX_HEADER_VALUE",
    "MAX_INT64",
    "MAX_IN_FLIGHT",
    "MAX_LIST_ITEMS",
    "MAX_MAX_DELIVER",
    "MAX_REASON",
    "MAX_RID_LENGTH",
    "MAX_SAFE_INT",
    "MAX_SEQ",
    "MAX_STRING",
    "MAX_TS",
    "Rid",
    "check_depth",
    "check_headers",
    "check_text",
    "check_texts",
    "headers_ok",
    "texts_ok",
]

MAX_INT64: Final = 2**63 - 1
"""The largest signed 64-bit integer: what every store column holds."""
MAX_SAFE_INT: Final = 2**53 - 1
"""The largest integer a JavaScript number holds exactly (``Number.MAX_SAFE_INTEGER``)."""

MAX_SEQ: Final = MAX_INT64
"""``SUBSCRIBE opts.start`` as a seq (a number or ``"seq:N"``)."""
MAX_TS: Final = MAX_SAFE_INT
"""``PUBLISH opts.ts`` and ``SUBSCRIBE opts.start`` ``"ts:MS"``: milliseconds since the epoch (year
287396), so that every client, JavaScript included, reads an event's ``ts`` exactly."""
MAX_DURATION_MS: Final = 86_400_000
"""``SUBSCRIBE opts.ack_timeout_ms`` and ``NACK delay_ms``: one day."""
MAX_IN_FLIGHT: Final = 100_000
"""``SUBSCRIBE opts.max_in_flight``."""
MAX_MAX_DELIVER: Final = 10_000
"""``SUBSCRIBE opts.max_deliver``."""

MAX_RID_LENGTH: Final = 128
"""Characters of a string ``rid`` (every reply echoes it)."""
MAX_STRING: Final = 1024
"""Characters of ``opts.key``, ``opts.sid`` and each item of ``opts.tags`` / ``opts.caused_by``."""
MAX_LIST_ITEMS: Final = 64
"""Items of ``opts.tags`` and of ``opts.caused_by``."""
MAX_HEADERS: Final = 64
"""Entries of ``opts.headers``."""
MAX_HEADER_KEY: Final = 128
"""Characters of a header key (``A-Z a-z 0-9 _ -``)."""
MAX_HEADER_VALUE: Final = 4096
"""Characters of a header value."""
MAX_REASON: Final = 1024
"""Characters of ``NACK reason``."""
MAX_DEPTH: Final = 64
"""Levels of arrays/objects in a frame, the frame object itself being level 1 (so a ``payload`` may be
63 levels deep, its own outermost array/object included)."""

Rid: TypeAlias = (
    Annotated[str, msgspec.Meta(max_length=MAX_RID_LENGTH)]
    | Annotated[int, msgspec.Meta(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)]
    | float
    | None
)
"""A request id chosen by the client, echoed unchanged in the reply: a string of at most
:data:`MAX_RID_LENGTH` characters, a safe integer or a finite number. Absent (None) in frames of the
legacy PromClient protocol."""

_HEADER_KEY: Final = re.compile(f"[A-Za-z0-9_-]{{1,{MAX_HEADER_KEY}}}")


# Header keys already found valid: a set lookup instead of a regex match per header on every publish.
# Bounded; once full, further keys are simply matched each time.
_good_keys: set[str] = set()
_GOOD_KEYS_MAX: Final = 4096


def headers_ok(headers: Mapping[str, str]) -> bool:
    """Whether a headers map is valid: the fast test; :func:`check_headers` says what is wrong."""
    if len(headers) > MAX_HEADERS:
        return False
    good = _good_keys
    for key, value in headers.items():
        if key not in good:
            if _HEADER_KEY.fullmatch(key) is None:
                return False
            if len(good) < _GOOD_KEYS_MAX:
                good.add(key)
        if len(value) > MAX_HEADER_VALUE or "\x00" in value:
            return False
    return True


def texts_ok(values: Sequence[str]) -> bool:
    """Whether a list of strings is valid: the fast test; :func:`check_texts` says what is wrong."""
    for value in values:
        if len(value) > MAX_STRING or "\x00" in value:
            return False
    return len(values) <= MAX_LIST_ITEMS


def check_text(field: str, value: str | None, max_length: int = MAX_STRING) -> None:
    """Raise ``ValueError("<field>: …")`` when ``value`` holds a NUL or is longer than ``max_length``."""
    if value is None:
        return
    if len(value) > max_length:
        raise ValueError(f"{field}: longer than {max_length} characters ({len(value)})")
    if "\x00" in value:
        raise ValueError(f"{field}: must not contain a NUL character")


def check_texts(field: str, values: Sequence[str] | None) -> None:
    """:func:`check_text` for each item of a list of at most :data:`MAX_LIST_ITEMS` strings."""
    if values is None:
        return
    if len(values) > MAX_LIST_ITEMS:
        raise ValueError(f"{field}: more than {MAX_LIST_ITEMS} items ({len(values)})")
    for i, value in enumerate(values):
        try:
            check_text(field, value)
        except ValueError as exc:
            raise ValueError(f"{field}: item {i} {str(exc).removeprefix(field + ': ')}") from None


def check_headers(headers: Mapping[str, str] | None) -> None:
    """Raise ``ValueError("headers: …")`` naming the first bad header: too many, a key outside
    ``[A-Za-z0-9_-]{1,128}``, or a value with a NUL or longer than :data:`MAX_HEADER_VALUE`."""
    if not headers:
        return
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"headers: more than {MAX_HEADERS} entries ({len(headers)})")
    for key, value in headers.items():
        if _HEADER_KEY.fullmatch(key) is None:
            shown = key if len(key) <= 40 else key[:39] + "…"
            raise ValueError(
                f"headers: key {shown!r} must be 1 to {MAX_HEADER_KEY} characters of A-Z a-z 0-9 _ -"
            )
        if len(value) > MAX_HEADER_VALUE:
            raise ValueError(f"headers: value of {key!r} is longer than {MAX_HEADER_VALUE} characters")
        if "\x00" in value:
            raise ValueError(f"headers: value of {key!r} must not contain a NUL character")


def check_depth(data: str | bytes, value: Any) -> None:
    """Raise ``ValueError`` when the decoded frame ``value`` (decoded from ``data``) nests deeper than
    :data:`MAX_DEPTH` levels.

    Cheap for ordinary frames: a frame with fewer than :data:`MAX_DEPTH` brackets cannot nest that deep,
    and counting them runs at C speed; only frames with many brackets are walked (iteratively).
    """
    if len(data) < 2 * MAX_DEPTH:  # too short to hold that many brackets
        return
    if isinstance(data, bytes):
        brackets = data.count(b"[") + data.count(b"{")
    else:
        brackets = data.count("[") + data.count("{")
    if brackets < MAX_DEPTH:
        return
    if depth_of(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")


def depth_of(value: Any) -> int:
    """Levels of lists/dicts (and msgspec Structs) in ``value``: 0 for a scalar. Iterative, so any depth
    is measured without recursion; stops early once beyond :data:`MAX_DEPTH`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        elif isinstance(item, msgspec.Struct):
            children = [getattr(item, f) for f in item.__struct_fields__]
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
