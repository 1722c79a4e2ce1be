"""The error path of the codec: why a frame did not decode, as a :class:`ProtocolError` naming the field.

Only reached for bad frames, so clarity beats speed. The frame is decoded a second time as plain JSON to
recover its ``op`` and ``rid`` (echoed only when the rid is itself valid: see :func:`echoable_rid`), and
msgspec's message is turned into ``"<OP><field path>: <problem>"``.
"""

from __future__ import annotations

import math
import re
from typing import Final

import msgspec

from outboxhub.errors import ProtocolError
from outboxhub.protocol.codes import BAD_REQUEST, NO_TOKEN
from outboxhub.protocol.limits import MAX_RID_LENGTH, MAX_SAFE_INT, Rid, check_depth

__all__ = ["echoable_rid", "explain"]

_any_decoder: Final = msgspec.json.Decoder()

_AT_PATH: Final = re.compile(r"(?P<text>.*?) - at `\$(?P<path>[^`]*)`", re.DOTALL)
_MISSING: Final = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
# Messages raised by our own __post_init__ start with a lowercase field name; msgspec's own never do.
_POST_INIT: Final = re.compile(r"(?P<field>[a-z_]+): (?P<text>.*)", re.DOTALL)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def explain(data: str | bytes, exc: msgspec.DecodeError, ops: tuple[str, ...]) -> ProtocolError:
    try:
        raw = _any_decoder.decode(data)
    except msgspec.ValidationError as exc2:  # e.g. "Number out of range"
        _, text = _locate(str(exc2))
        return ProtocolError(BAD_REQUEST, f"invalid JSON: {text}")
    except msgspec.DecodeError as exc2:
        return ProtocolError(
            BAD_REQUEST, f"malformed JSON: {_lower_first(str(exc2).removeprefix('JSON is malformed: '))}"
        )
    except RecursionError:
        # The typed decode stopped early (at a bad op, say) before reaching the deep part; this one did not.
        return ProtocolError(BAD_REQUEST, "frame is nested too deeply")
    try:  # our own depth limit, whether or not this interpreter raised RecursionError above
        check_depth(data, raw)
    except ValueError as too_deep:
        return ProtocolError(BAD_REQUEST, f"frame is {too_deep}")
    if not isinstance(raw, dict):
        return ProtocolError(BAD_REQUEST, f"a frame must be a JSON object, got {_json_type(raw)}")

    rid = echoable_rid(raw.get("rid"))
    expected = ", ".join(ops)
    if "op" not in raw:
        return ProtocolError(BAD_REQUEST, f"op: missing; expected one of {expected}", rid=rid)
    op = raw["op"]
    if not isinstance(op, str):
        return ProtocolError(BAD_REQUEST, f"op: expected a string, got {_json_type(op)}", rid=rid)
    if op not in ops:
        return ProtocolError(BAD_REQUEST, f"op: unknown op {op!r}; expected one of {expected}", rid=rid)

    path, text = _locate(str(exc))
    if op == "AUTH" and path == ".token":
        # Like the token verifier, anything but a non-empty string is no token; the AUTH fails (close 4001).
        token = raw.get("token")
        if token is None or token == "":
            return ProtocolError(NO_TOKEN, "AUTH.token: missing; AUTH needs a token", rid=rid)
        return ProtocolError(
            NO_TOKEN, f"AUTH.token: must be a string, got {_json_type(token)}; AUTH needs a token", rid=rid
        )
    if len(text) > _MAX_MSG:  # messages may quote the offending value; keep ERR frames small
        text = text[: _MAX_MSG - 1] + "…"
    return ProtocolError(BAD_REQUEST, f"{op}{path}: {text}", rid=rid)


_MAX_MSG: Final = 300


def echoable_rid(rid: object) -> Rid:
    """The rid to echo in the ERR for a bad frame: only one that is itself valid (a long string or an
    unsafe integer is not echoed, so a bad frame can never make the hub repeat a large value)."""
    if isinstance(rid, bool):
        return None
    if isinstance(rid, str):
        return rid if len(rid) <= MAX_RID_LENGTH else None
    if isinstance(rid, int):
        return rid if -MAX_SAFE_INT <= rid <= MAX_SAFE_INT else None
    if isinstance(rid, float):
        return rid if math.isfinite(rid) else None
    return None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _locate(message: str) -> tuple[str, str]:
    """Split a msgspec error message into (field path below the frame, human problem)."""
    path = ""
    if (m := _AT_PATH.fullmatch(message)) is not None:
        message, path = m["text"], m["path"]
    if (m := _MISSING.fullmatch(message)) is not None:
        return f"{path}.{m['field']}", "missing required field"
    if (m := _POST_INIT.fullmatch(message)) is not None:
        return f"{path}.{m['field']}", m["text"]
    return path, _lower_first(message.replace("`", ""))
