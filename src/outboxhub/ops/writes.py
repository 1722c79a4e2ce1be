"""Reading the JSON body of an ops action (``POST``) with a 400 that names the bad field, and naming the
caller in the audit log line every ops:write action writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgspec
from aiohttp import web

from outboxhub.ops.params import BadParameter
from outboxhub.ops.security import current_principal

__all__ = ["MAX_IDS", "ids_field", "json_body", "who"]

MAX_IDS: Final = 10_000
"""Most ids one action request may name."""


async def json_body(request: web.Request, known: Sequence[str]) -> dict[str, Any]:
    """The request's JSON object; 400 naming the problem (missing, not JSON, not an object, unknown field)."""
    if not request.body_exists:  # (the ops middleware has read it already: ops_body_timeout_s)
        raise BadParameter("body", "missing; send a JSON object")
    raw = await request.read()
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadParameter("body", f"not valid JSON ({exc})") from None
    except RecursionError:
        raise BadParameter("body", "JSON nested too deeply; send a flat JSON object") from None
    if not isinstance(body, dict):
        raise BadParameter("body", f"must be a JSON object, got {type(body).__name__}")
    unknown = sorted(k for k in body if k not in known)
    if unknown:
        raise BadParameter(unknown[0], f"unknown field (this route takes: {', '.join(known)})")
    return body


def ids_field(
    body: Mapping[str, Any], *, allow_all: bool, what: str = "record"
) -> list[str] | Literal["all"] | None:
    """The ``ids`` field: a non-empty list of at most :data:`MAX_IDS` non-empty strings (or ``"all"`` when
    ``allow_all``); None when absent."""
    if "ids" not in body:
        return None
    ids = body["ids"]
    if allow_all and ids == "all":
        return "all"
    hint = f'a list of {what} ids or "all"' if allow_all else f"a list of {what} ids"
    if not isinstance(ids, list):
        raise BadParameter("ids", f"must be {hint}, got {type(ids).__name__}")
    if not ids:
        raise BadParameter("ids", f"must name at least one {what}")
    if len(ids) > MAX_IDS:
        raise BadParameter("ids", f"names {len(ids)} {what}s; at most {MAX_IDS} per request")
    for index, item in enumerate(ids):
        if not isinstance(item, str) or not item:
            raise BadParameter(f"ids[{index}]", f"must be a non-empty string, got {item!r}")
    return list(ids)


def who() -> str:
    """The caller, for the audit line: its token's ``sub`` (quoted)."""
    sub = current_principal().sub
    return repr(sub) if sub else "a token without sub"
