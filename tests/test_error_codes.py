"""The error and close codes have one home, ``outboxhub.protocol.codes``; every copy is held to it.

The copies that cannot import it, the JS client (``clients/js/src/outboxhub/codes.ts``, whose build the hub
serves and whose build is held to it by tests/test_ops_js_client.py) and docs/protocol.md, are parsed
here, so none of them can drift from the Python list.
"""

from __future__ import annotations

import re
from pathlib import Path

import outboxhub.errors
import outboxhub.gateway.connection
import outboxhub.protocol.codec
from outboxhub.client import HubError, error_from_code
from outboxhub.protocol import codes
from outboxhub.protocol.codes import CLOSE_CODES, ERROR_CODES, ErrorCode, close_code_for, is_error_code

ROOT = Path(__file__).parents[1]
JS_CODES = ROOT / "clients" / "js" / "src" / "outboxhub" / "codes.ts"
JS_ERRORS = ROOT / "clients" / "js" / "src" / "outboxhub" / "errors.ts"
_QUOTED = re.compile(r'"([a-z_]+)"')


def _between(text: str, start: str, end: str) -> str:
    head = text.index(start) + len(start)
    return text[head : text.index(end, head)]


def test_the_js_client_lists_the_same_error_codes() -> None:
    ts = JS_CODES.read_text()
    listed = _QUOTED.findall(_between(ts, "export const ERROR_CODES = Object.freeze([", "] as const);"))
    assert len(listed) == len(set(listed))
    assert set(listed) == ERROR_CODES
    assert "export type ErrorCode = (typeof ERROR_CODES)[number];" in ts


def test_the_js_client_uses_the_same_close_codes() -> None:
    ts = JS_CODES.read_text()
    consts = {
        name: int(value)
        for name, value in re.findall(r"^export const (CLOSE_\w+) = (\d+);", ts, re.MULTILINE)
    }
    assert consts == {
        "CLOSE_AUTH_FAILED": codes.CLOSE_AUTH_FAILED,
        "CLOSE_TOKEN_EXPIRED": codes.CLOSE_TOKEN_EXPIRED,
    }
    closing = dict(re.findall(r"^  ([a-z_]+): (CLOSE_\w+),$", _between(ts, "CLOSE_CODES", "});"), re.M))
    assert {code: consts[name] for code, name in closing.items()} == dict(CLOSE_CODES)


def test_the_js_client_has_an_error_class_per_code_like_the_python_sdk() -> None:
    ts = JS_ERRORS.read_text()
    mapping = dict(re.findall(r"^  ([a-z_]+): (\w+),$", _between(ts, "const BY_CODE", "});"), re.M))
    assert mapping == {code: type(error_from_code(code, "m")).__name__ for code in ERROR_CODES}


def test_the_protocol_document_lists_the_same_codes() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    rows = re.findall(
        r"^\| `([a-z_]+)` \|.*\| (open|closed, (\d+)) \|$", _between(doc, "## Error codes", "## "), re.M
    )
    assert {code for code, _, _ in rows} == ERROR_CODES
    assert {code: int(close) for code, _, close in rows if close} == dict(CLOSE_CODES)
    closes = {
        int(c) for c in re.findall(r"^\| (\d{4}) \|", _between(doc, "## Close codes", "Before closing"), re.M)
    }
    assert {
        codes.CLOSE_AUTH_FAILED,
        codes.CLOSE_TOKEN_EXPIRED,
        codes.CLOSE_GOING_AWAY,
        codes.CLOSE_NORMAL,
    } <= closes


def test_python_names_for_the_codes_are_the_same_objects() -> None:
    assert outboxhub.errors.ErrorCode is ErrorCode
    assert outboxhub.errors.is_error_code is is_error_code
    assert outboxhub.protocol.codec.ERROR_CODES is ERROR_CODES
    assert outboxhub.protocol.codec.close_code_for is close_code_for
    assert outboxhub.gateway.connection.CLOSE_AUTH_FAILED == codes.CLOSE_AUTH_FAILED
    for code in ERROR_CODES:
        name = code.upper()
        assert getattr(codes, name) == code
        assert getattr(outboxhub.protocol.codec, name) == code


def test_every_code_maps_to_a_specific_client_exception() -> None:
    for code in ERROR_CODES:
        assert type(error_from_code(code, "m")) is not HubError, code
    assert type(error_from_code("from_the_future", "m")) is HubError


def test_close_codes() -> None:
    assert close_code_for("no_token") == close_code_for("jwt_invalid") == 4001
    assert close_code_for("token_expired") == 4003
    assert close_code_for("bad_request") is None
    assert close_code_for("nonsense") is None
