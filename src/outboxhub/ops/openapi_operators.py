"""The OpenAPI schemas of the operator routes (dead letters, group reset, connections, series), merged into
the document by :mod:`outboxhub.ops.openapi`. Pure data."""

from __future__ import annotations

from typing import Any, Final

__all__ = ["OPERATOR_SCHEMAS"]

_Schema = dict[str, Any]

_INT: Final[_Schema] = {"type": "integer"}
_STR: Final[_Schema] = {"type": "string"}
_INT_OR_NULL: Final[_Schema] = {"type": ["integer", "null"]}
_STR_OR_NULL: Final[_Schema] = {"type": ["string", "null"]}
_NUM_OR_NULL: Final[_Schema] = {"type": ["number", "null"]}
_SERIES: Final[_Schema] = {"type": "array", "items": {"type": ["number", "null"]}}


def _ref(name: str) -> _Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], properties: dict[str, _Schema]) -> _Schema:
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


_LETTER_FIELDS: Final = {
    "id": {**_STR, "description": "the dead letter's event id"},
    "seq": _INT,
    "ts": _INT,
    "topic": {**_STR_OR_NULL, "description": "the original topic (null if the event is not a dead letter)"},
    "dlqTopic": _STR,
    "originalId": {**_STR_OR_NULL, "description": "x-original-id"},
    "attempts": {**_INT_OR_NULL, "description": "x-attempts"},
    "lastError": {**_STR_OR_NULL, "description": "x-reason: why it died"},
    "key": _STR_OR_NULL,
    "preview": {**_STR, "description": "the payload as JSON, cut at 200 characters"},
    "redriven": {"type": "boolean", "description": "a redrive of it is in the log"},
}

OPERATOR_SCHEMAS: Final[dict[str, _Schema]] = {
    "DeadLetter": _obj(list(_LETTER_FIELDS), _LETTER_FIELDS),
    "DeadLetters": _obj(
        ["group", "pattern", "purgedThrough", "deadLetters", "hidden", "nextAfterSeq"],
        {
            "group": _STR,
            "pattern": _STR_OR_NULL,
            "purgedThrough": {**_INT, "description": "dead letters up to this seq are purged (not listed)"},
            "deadLetters": {"type": "array", "items": _ref("DeadLetter")},
            "hidden": {**_INT, "description": "dead letters this token may not read, left out"},
            "nextAfterSeq": {**_INT_OR_NULL, "description": "after_seq of the next page (null: no more)"},
        },
    ),
    "RedriveRequest": _obj(
        ["group", "ids"],
        {
            "group": _STR,
            "ids": {"anyOf": [{"type": "array", "items": _STR, "minItems": 1}, {"const": "all"}]},
            "pattern": {**_STR, "description": 'original topics to redrive, only with ids "all"'},
        },
    ),
    "Redriven": _obj(
        ["group", "redriven", "published", "duplicates"],
        {
            "group": _STR,
            "redriven": {
                "type": "array",
                "items": _obj(
                    ["id", "topic", "eventId", "seq", "duplicate"],
                    {
                        "id": _STR,
                        "topic": _STR,
                        "eventId": _STR,
                        "seq": _INT,
                        "duplicate": {"type": "boolean"},
                    },
                ),
            },
            "published": {**_INT, "description": "new events published"},
            "duplicates": {**_INT, "description": "dead letters that were already redriven"},
        },
    ),
    "DlqPurgeRequest": _obj(
        ["group"],
        {"group": _STR, "through_seq": {**_INT, "minimum": 0, "description": "default: the newest seq"}},
    ),
    "DlqPurged": _obj(
        ["group", "purged", "purgedThrough"], {"group": _STR, "purged": _INT, "purgedThrough": _INT}
    ),
    "ResetRequest": _obj(
        ["pattern", "group", "to"],
        {
            "pattern": _STR,
            "group": _STR,
            "to": {
                "anyOf": [{**_INT, "minimum": 0}, _STR],
                "description": '"earliest", "latest", a seq, "seq:N" or "ts:MS"',
            },
        },
    ),
    "Reset": _obj(
        ["pattern", "group", "to", "ackFloor", "frontier", "inFlight"],
        {"pattern": _STR, "group": _STR, "to": _STR, "ackFloor": _INT, "frontier": _INT, "inFlight": _INT},
    ),
    "Connection": _obj(
        [
            "id",
            "sub",
            "remote",
            "connectedAt",
            "subscriptions",
            "hiddenSubscriptions",
            "queueDepth",
            "published",
            "delivered",
            "publishRate",
            "deliverRate",
        ],
        {
            "id": _STR,
            "sub": {**_STR_OR_NULL, "description": "the token's subject (null before AUTH)"},
            "remote": _STR_OR_NULL,
            "connectedAt": {**_INT, "description": "ms since the epoch"},
            "subscriptions": {
                "type": "array",
                "items": _obj(["pattern", "group"], {"pattern": _STR, "group": _STR_OR_NULL}),
            },
            "hiddenSubscriptions": {**_INT, "description": "subscriptions this token may not see"},
            "queueDepth": {**_INT, "description": "frames queued, not yet sent"},
            "published": _INT,
            "delivered": _INT,
            "publishRate": {**_NUM_OR_NULL, "description": "events/s over the last sampling interval"},
            "deliverRate": _NUM_OR_NULL,
        },
    ),
    "Connections": _obj(["connections"], {"connections": {"type": "array", "items": _ref("Connection")}}),
    "Closed": _obj(["id", "closed"], {"id": _STR, "closed": {"const": True}}),
    "Series": _obj(
        ["ts", "publishRate", "deliverRate", "topics", "lagTs", "groups", "intervalS"],
        {
            "ts": {"type": "array", "items": _INT, "description": "sample times (ms) of the rates"},
            "publishRate": _SERIES,
            "deliverRate": _SERIES,
            "topics": {"type": "object", "additionalProperties": _SERIES, "description": "events/s"},
            "lagTs": {"type": "array", "items": _INT, "description": "sample times (ms) of the lag"},
            "groups": {
                "type": "object",
                "additionalProperties": _SERIES,
                "description": 'lag (events) by "<pattern> <group>"',
            },
            "intervalS": {"type": "number"},
        },
    ),
}
