"""The OpenAPI 3.1 document of the ops port, served at ``/openapi.json``.

Written by hand (it is the contract), with each operation's access level in ``x-outboxhub-access``.
``tests/test_ops_openapi.py`` holds it to the app: every registered route is documented, every documented
route exists with the documented access, undocumented query parameters are refused, and real responses
validate against the documented schemas.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from aiohttp import web

from outboxhub import __version__
from outboxhub.ops._http import json_response
from outboxhub.ops.context import RouteSpec
from outboxhub.ops.openapi_operators import OPERATOR_SCHEMAS
from outboxhub.ops.static import STATIC_FILES

__all__ = ["OPENAPI_ROUTE", "openapi_document"]

_Schema = dict[str, Any]


def _ref(name: str) -> _Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: _Schema) -> _Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_INT: Final[_Schema] = {"type": "integer"}
_STR: Final[_Schema] = {"type": "string"}
_INT_OR_NULL: Final[_Schema] = {"type": ["integer", "null"]}
_STR_OR_NULL: Final[_Schema] = {"type": ["string", "null"]}


def _obj(required: list[str], properties: dict[str, _Schema], *, extra: bool = False) -> _Schema:
    schema: _Schema = {"type": "object", "required": required, "properties": properties}
    if not extra:
        schema["additionalProperties"] = False
    return schema


_SCHEMAS: Final[dict[str, _Schema]] = {
    "Error": _obj(["error"], {"error": {**_STR, "description": "What is wrong, naming the parameter."}}),
    "Event": _obj(
        ["id", "topic", "seq", "ts", "payload"],
        {
            "id": _STR,
            "topic": _STR,
            "seq": {**_INT, "minimum": 1},
            "ts": {**_INT, "description": "ms since the epoch"},
            "payload": {"description": "any JSON value (null when the event has none)"},
            "key": _STR,
            "headers": {"type": "object", "additionalProperties": _STR},
            "tags": {"type": "array", "items": _STR},
            "caused_by": {"type": "array", "items": _STR},
            "sid": _STR,
        },
    ),
    "Topic": _obj(
        ["topic", "count", "lastSeq", "lastTs"],
        {"topic": _STR, "count": _INT, "lastSeq": _INT, "lastTs": _INT},
    ),
    "Topics": _obj(
        ["lastSeq", "topics"],
        {
            "lastSeq": {**_INT, "description": "the store's newest seq"},
            "topics": {"type": "array", "items": _ref("Topic")},
        },
    ),
    "Group": _obj(
        [
            "pattern",
            "group",
            "members",
            "inFlight",
            "ackFloor",
            "frontier",
            "deadLetters",
            "lagCount",
            "lagMs",
            "tail",
            "tailSeq",
        ],
        {
            "pattern": _STR,
            "group": _STR,
            "members": {**_INT, "description": "members connected to this hub"},
            "inFlight": {**_INT, "description": "delivered, not yet acked"},
            "ackFloor": _INT,
            "frontier": _INT,
            "deadLetters": _INT,
            "lagCount": _INT_OR_NULL,
            "lagMs": _INT_OR_NULL,
            "tail": _STR_OR_NULL,
            "tailSeq": _INT_OR_NULL,
        },
    ),
    "Groups": _obj(["groups"], {"groups": {"type": "array", "items": _ref("Group")}}),
    "CursorEntry": _obj(
        ["group", "lastId", "lastTs", "seq"],
        {
            "group": _STR,
            "lastId": _STR_OR_NULL,
            "lastTs": _INT_OR_NULL,
            "seq": {**_INT, "description": "ack floor"},
        },
    ),
    "Cursors": _obj(
        ["topic", "cursors"], {"topic": _STR, "cursors": {"type": "array", "items": _ref("CursorEntry")}}
    ),
    "Cursor": _obj(
        ["topic", "group", "seq", "lastId", "lastTs"],
        {"topic": _STR, "group": _STR, "seq": _INT, "lastId": _STR_OR_NULL, "lastTs": _INT_OR_NULL},
    ),
    "Lag": _obj(
        ["topic", "group", "lastCursor", "tail", "tailSeq", "tailTs", "lagMs", "lagCount"],
        {
            "topic": _STR,
            "group": _STR,
            "lastCursor": {**_nullable(_ref("Cursor")), "description": "null when the group does not exist"},
            "tail": {**_STR_OR_NULL, "description": "id of the newest matching event"},
            "tailSeq": _INT_OR_NULL,
            "tailTs": _INT_OR_NULL,
            "lagMs": {**_INT_OR_NULL, "description": "tail ts minus the cursor event's ts"},
            "lagCount": {**_INT_OR_NULL, "description": "matching events above the ack floor"},
        },
    ),
    "DeadRecord": _obj(
        ["id", "topic", "key", "payload", "headers", "redacted", "attempts", "lastErr", "ts", "seq"],
        {
            "id": _STR,
            "topic": _STR,
            "key": _STR_OR_NULL,
            "payload": {"description": "any JSON value; null when redacted"},
            "headers": {"type": ["object", "null"], "additionalProperties": _STR},
            "redacted": {
                "type": "boolean",
                "description": "true when the token may not subscribe to the record's topic: payload and "
                "headers are then null",
            },
            "attempts": _INT,
            "lastErr": _STR_OR_NULL,
            "ts": _INT,
            "seq": _INT,
        },
    ),
    "OutboxState": {
        "oneOf": [
            _obj(
                [
                    "name",
                    "up",
                    "table",
                    "pending",
                    "claimed",
                    "dead",
                    "oldestPendingAgeMs",
                    "nextRetryAt",
                    "deadRecords",
                ],
                {
                    "name": {**_STR, "description": "the outbox URL, password masked"},
                    "up": {"const": True},
                    "table": _STR,
                    "pending": _INT,
                    "claimed": _INT,
                    "dead": _INT,
                    "oldestPendingAgeMs": _INT_OR_NULL,
                    "nextRetryAt": _INT_OR_NULL,
                    "deadRecords": {"type": "array", "items": _ref("DeadRecord")},
                },
            ),
            _obj(["name", "up", "error"], {"name": _STR, "up": {"const": False}, "error": _STR}),
        ]
    },
    "Outboxes": _obj(["outboxes"], {"outboxes": {"type": "array", "items": _ref("OutboxState")}}),
    "RetryRequest": _obj(
        ["ids"],
        {
            "outbox": {**_STR, "description": "outbox name (or index); optional with one outbox"},
            "ids": {"anyOf": [{"type": "array", "items": _STR, "minItems": 1}, {"const": "all"}]},
        },
    ),
    "Retried": _obj(["outbox", "retried"], {"outbox": _STR, "retried": _INT}),
    "PurgeRequest": _obj(
        [],
        {
            "outbox": _STR,
            "ids": {"type": "array", "items": _STR, "minItems": 1},
            "older_than_ms": {**_INT, "minimum": 0},
        },
    ),
    "Purged": _obj(["outbox", "purged"], {"outbox": _STR, "purged": _INT}),
    "Health": _obj(["status"], {"status": {"enum": ["ok", "unavailable"]}, "error": _STR}),
}

_ERRORS: Final[dict[str, str]] = {
    "400": "a parameter is missing or invalid (the message names it)",
    "401": "no token, or the token was refused",
    "403": "the token lacks the scope (or subscribe rights on the pattern)",
    "503": "the store is unavailable",
    "404": "no such group or connection",
}


def _json(schema: _Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(
    name: str, description: str, *, required: bool = False, schema: _Schema | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema or _STR,
    }


def _op(
    summary: str,
    access: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: str | None = None,
    errors: tuple[str, ...] = ("400", "401", "403", "503"),
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok}
    for code in errors:
        responses[code] = _json(_ref("Error"), _ERRORS[code])
    op: dict[str, Any] = {"summary": summary, "x-outboxhub-access": access, "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if access in ("read", "write"):
        op["security"] = [{"bearer": []}]
    elif access == "metrics":
        op["security"] = [{}, {"bearer": []}]
    else:
        op["security"] = []
    return op


_TOPIC_PATTERN = _param("topic", "the group's pattern, e.g. process.** (as subscribed)", required=True)


def _operator_paths() -> dict[str, Any]:
    write_errors = ("400", "401", "403", "404", "503")
    return {
        "/dlq": {
            "get": _op(
                "A group's dead letters above its purge mark (those this token may read)",
                "read",
                _json(_ref("DeadLetters")),
                params=[
                    _param("group", "the consumer group", required=True),
                    _param("pattern", "original topics to list (default **)"),
                    _param("after_seq", "list dead letters after this seq", schema={**_INT, "minimum": 0}),
                    _param(
                        "limit", "most to list (default 100)", schema={**_INT, "minimum": 1, "maximum": 1000}
                    ),
                ],
            )
        },
        "/dlq/redrive": {
            "post": _op(
                "Republish dead letters to their original topic (x-redriven-from; twice publishes once)",
                "write",
                _json(_ref("Redriven")),
                body="RedriveRequest",
            )
        },
        "/dlq/purge": {
            "post": _op(
                "Move a group's purge mark: dead letters up to a seq are not listed (the log keeps them)",
                "write",
                _json(_ref("DlqPurged")),
                body="DlqPurgeRequest",
            )
        },
        "/groups/reset": {
            "post": _op(
                "Move a group's cursor; its in-flight deliveries are released",
                "write",
                _json(_ref("Reset")),
                body="ResetRequest",
                errors=write_errors,
            )
        },
        "/connections": {"get": _op("The live WebSocket connections", "read", _json(_ref("Connections")))},
        "/connections/{id}/close": {
            "post": {
                **_op(
                    "Close a connection (1008 closed_by_operator) after answering its in-flight requests",
                    "write",
                    _json(_ref("Closed")),
                    errors=write_errors,
                ),
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "from GET /connections",
                        "schema": _STR,
                    }
                ],
            }
        },
        "/series": {
            "get": _op(
                "15 minutes of publish/delivery rates, per-topic rates and per-group lag (dashboard charts)",
                "read",
                _json(_ref("Series")),
            )
        },
    }


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/topics": {
            "get": _op("Every topic with its count, last seq and last ts", "read", _json(_ref("Topics")))
        },
        "/groups": {
            "get": _op(
                "Every consumer group: members, in flight, lag, dead letters", "read", _json(_ref("Groups"))
            )
        },
        "/cursors": {
            "get": _op(
                "Cursors (ack floors) of the groups subscribed to a pattern",
                "read",
                _json(_ref("Cursors")),
                params=[_TOPIC_PATTERN],
            )
        },
        "/lag": {
            "get": _op(
                "How far a group is behind its pattern's newest event",
                "read",
                _json(_ref("Lag")),
                params=[_TOPIC_PATTERN, _param("group", "consumer group name", required=True)],
            )
        },
        "/latest-by-key": {
            "get": _op(
                "The newest event of a topic with a key, or null (needs subscribe rights on the topic)",
                "read",
                _json(_nullable(_ref("Event"))),
                params=[
                    _param("topic", "a concrete topic", required=True),
                    _param("key", "the event key", required=True),
                ],
            )
        },
        "/replay": {
            "get": _op(
                "Stream matching events as NDJSON, in seq order (needs subscribe rights on the pattern)",
                "read",
                {
                    "description": "one Event per line; ends at the newest event when the request arrived",
                    "headers": {
                        "X-Replay-Last-Seq": {"description": "the store's newest seq", "schema": _STR}
                    },
                    "content": {"application/x-ndjson": {"schema": _ref("Event")}},
                },
                params=[
                    _param("pattern", "topic pattern", required=True),
                    _param(
                        "from_seq", "first seq to include (not with since)", schema={**_INT, "minimum": 0}
                    ),
                    _param(
                        "since", "first ts to include, ms (not with from_seq)", schema={**_INT, "minimum": 0}
                    ),
                    _param("until", "last ts to include, ms", schema={**_INT, "minimum": 0}),
                    _param("limit", "most events to send", schema={**_INT, "minimum": 1}),
                ],
            )
        },
        "/outbox": {
            "get": _op(
                "The drained outboxes: pending, claimed, dead, oldest pending age, dead records",
                "read",
                _json(_ref("Outboxes")),
                params=[
                    _param(
                        "dead_limit",
                        "most dead records listed per outbox (default 50)",
                        schema={**_INT, "minimum": 0, "maximum": 1000},
                    )
                ],
            )
        },
        "/outbox/retry": {
            "post": _op(
                "Make dead outbox records pending again (attempts reset)",
                "write",
                _json(_ref("Retried")),
                body="RetryRequest",
            )
        },
        "/outbox/purge": {
            "post": _op(
                "Delete dead outbox records by id, or those older than older_than_ms",
                "write",
                _json(_ref("Purged")),
                body="PurgeRequest",
            )
        },
        **_operator_paths(),
        "/metrics": {
            "get": _op(
                "Prometheus metrics (open unless ops_open_metrics is false; then ops:read)",
                "metrics",
                {"description": "Prometheus text format", "content": {"text/plain": {"schema": _STR}}},
                errors=("401", "403"),
            )
        },
        "/healthz": {
            "get": {
                "summary": "200 when the store answers, else 503 (open unless ops_open_metrics is false)",
                "x-outboxhub-access": "metrics",
                "security": [{}, {"bearer": []}],
                "responses": {
                    "200": _json(_ref("Health")),
                    "401": _json(_ref("Error"), _ERRORS["401"]),
                    "403": _json(_ref("Error"), _ERRORS["403"]),
                    "503": _json(_ref("Health"), "the store does not answer"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "x-outboxhub-access": "open",
                "security": [],
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/ws": {
            "get": {
                "summary": "The WebSocket gateway for same-origin browsers (protocol: docs/protocol.md)",
                "x-outboxhub-access": "open",
                "security": [],
                "responses": {
                    "101": {"description": "switching to the WebSocket protocol; send AUTH first"},
                    "403": {"description": "the Origin is not allowed"},
                },
            }
        },
    }
    for path, (file, content_type) in STATIC_FILES.items():
        name = file.name
        media = content_type.split(";")[0]
        paths[path] = {
            "get": {
                "summary": "The dashboard page" if path == "/" else f"Static file {name}",
                "x-outboxhub-access": "open",
                "security": [],
                "responses": {"200": {"description": name, "content": {media: {"schema": _STR}}}},
            }
        }
    return paths


def openapi_document() -> dict[str, Any]:
    """The ops API's OpenAPI 3.1 document (a fresh dict each call)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "outboxhub ops API",
            "version": __version__,
            "description": (
                "Operations API of an outboxhub hub: topics, consumer groups, cursors, lag, outboxes, "
                "replay, dead letters, group reset, connections, chart series, metrics, health. Reads need a "
                "JWT with ops:read, actions ops:write."
            ),
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": copy.deepcopy({**_SCHEMAS, **OPERATOR_SCHEMAS}),
        },
        "paths": _paths(),
    }


async def _serve(request: web.Request) -> web.StreamResponse:
    return json_response(openapi_document())


OPENAPI_ROUTE: Final = RouteSpec(method="GET", path="/openapi.json", access="open", handler=_serve)
