"""JSON responses and the error every ops handler may raise to answer ``{"error": ...}`` with a status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

__all__ = ["JSON_CONTENT_TYPE", "HTTPProblem", "json_error", "json_response"]

JSON_CONTENT_TYPE: Final = "application/json"
_encoder = msgspec.json.Encoder()


class HTTPProblem(Exception):
    """Answer the request with ``status`` and ``{"error": message}`` (plus ``headers``)."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``body`` (builtins or msgspec Structs) encoded with msgspec as ``application/json``."""
    response = web.Response(body=_encoder.encode(body), status=status, content_type=JSON_CONTENT_TYPE)
    if headers:
        response.headers.update(headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def json_error(status: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """``{"error": message}`` with ``status``."""
    return json_response({"error": message}, status=status, headers=headers)
