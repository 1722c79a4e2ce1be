"""The ops app's one middleware: access check, JSON errors, request latency.

For each request it finds the route's access level (:mod:`outboxhub.ops.security`), checks the bearer
token when the level asks for one (the principal is then in :data:`~outboxhub.ops.security.PRINCIPAL`),
runs the handler, turns the errors handlers raise into ``{"error": ...}`` answers, and observes the
latency under the route template (``/lag``, not ``/lag?topic=…``). ``/ws`` passes straight through:
a WebSocket authenticates in its own protocol and its "latency" is the connection's lifetime.

A request body is read whole before the handler runs, within ``ops_body_timeout_s``: the header timeout
ends with the request head, so without it a client trickling a body byte by byte would hold a handler
(and its connection slot) for as long as it likes. Too slow: ``408`` and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from aiohttp import web

from outboxhub.errors import StoreError, StoreUnavailable
from outboxhub.ops._http import HTTPProblem, json_error
from outboxhub.ops.context import OPS, Handler
from outboxhub.ops.params import BadParameter
from outboxhub.ops.security import PRINCIPAL, authorize, effective_access

__all__ = ["PASS_THROUGH", "ops_middleware"]

log = logging.getLogger("outboxhub.ops")

PASS_THROUGH: Final = frozenset({"/ws"})
"""Route templates the middleware leaves alone (WebSocket upgrades)."""

_UNMATCHED: Final = "(unmatched)"


@web.middleware
async def ops_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """See the module docstring."""
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else _UNMATCHED
    if template in PASS_THROUGH:
        return await handler(request)
    ctx = request.app[OPS]
    started = time.perf_counter()
    status = 500
    try:
        response = await _handle(request, handler, template)
        status = response.status
        return response
    finally:
        if request.match_info.http_exception is not None:
            template = _UNMATCHED
        ctx.metrics.observe_request(template, request.method, status, time.perf_counter() - started)


async def _handle(request: web.Request, handler: Handler, template: str) -> web.StreamResponse:
    ctx = request.app[OPS]
    try:
        if request.match_info.http_exception is None:
            access = effective_access(
                ctx.access_for(request.method, template), open_metrics=ctx.hub.settings.ops_open_metrics
            )
            if access in ("read", "write"):
                principal = await authorize(ctx.hub.verifier, request.headers.get("Authorization"), access)
                token = PRINCIPAL.set(principal)
                try:
                    return await _with_body(request, handler, ctx.hub.settings.ops_body_timeout_s)
                finally:
                    PRINCIPAL.reset(token)
        return await _with_body(request, handler, ctx.hub.settings.ops_body_timeout_s)
    except HTTPProblem as exc:
        return json_error(exc.status, exc.message, headers=exc.headers)
    except BadParameter as exc:
        return json_error(400, str(exc))
    except StoreUnavailable as exc:
        return json_error(503, f"store unavailable: {exc}")
    except StoreError as exc:
        log.error("ops %s %s: store error: %s", request.method, request.path, exc)
        return json_error(503, f"store error: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_error(exc.status, _explain(request, exc), headers=_allow(exc))


async def _with_body(request: web.Request, handler: Handler, timeout_s: float) -> web.StreamResponse:
    """Run ``handler`` once the whole body is in (aiohttp keeps it for ``json()`` and ``read()``)."""
    if request.body_exists:
        try:
            async with asyncio.timeout(timeout_s):
                await request.read()
        except TimeoutError:
            log.info(
                "ops %s %s from %s: body not received within %gs (ops_body_timeout_s); closing",
                request.method,
                request.path,
                request.remote,
                timeout_s,
            )
            response = json_error(
                408, f"the request body did not arrive within {timeout_s:g}s (ops_body_timeout_s)"
            )
            response.force_close()
            return response
    return await handler(request)


def _explain(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"no route {request.method} {request.path} (the routes are listed in /openapi.json)"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    return exc.text.strip() if exc.text else exc.reason


def _allow(exc: web.HTTPException) -> dict[str, str]:
    allow = exc.headers.get("Allow")
    return {"Allow": allow} if allow else {}
