"""The dashboard page and the browser client, served from ``outboxhub/ops/static/`` (no build step).

Files are read once when the routes are installed. The page gets a Content-Security-Policy that allows
only same-origin scripts, styles, fetches and WebSockets, so a payload shown in the dashboard can never
run as script (the page also only ever writes it with ``textContent``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from outboxhub.ops.context import Handler, RouteSpec

__all__ = ["STATIC_DIR", "STATIC_FILES", "static_routes"]

STATIC_DIR: Final = Path(__file__).with_name("static")

STATIC_FILES: Final[dict[str, tuple[str, str]]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/operators.js": ("operators.js", "text/javascript; charset=utf-8"),
    "/uPlot.iife.min.js": ("uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/uPlot.min.css": ("uPlot.min.css", "text/css; charset=utf-8"),
    "/uPlot.LICENSE": ("uPlot.LICENSE", "text/plain; charset=utf-8"),
    "/outboxhub.js": ("outboxhub.js", "text/javascript; charset=utf-8"),
    "/outboxhub.d.ts": ("outboxhub.d.ts", "application/typescript; charset=utf-8"),
}
"""URL path -> (file in :data:`STATIC_DIR`, Content-Type). ``uPlot.*`` is uPlot 1.6.32 (MIT, its licence
served next to it), the dashboard's chart library, vendored unchanged from the npm package's ``dist/``."""


def _csp(host: str) -> str:
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _handler(body: bytes, content_type: str, *, page: bool) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        response = web.Response(body=body, headers={"Content-Type": content_type})
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"
        if page:
            response.headers["Content-Security-Policy"] = _csp(request.host)
            response.headers["Referrer-Policy"] = "no-referrer"
        else:
            response.headers["Access-Control-Allow-Origin"] = "*"  # the client may be imported cross-origin
        return response

    return serve


def static_routes() -> list[RouteSpec]:
    """One open GET route per file of :data:`STATIC_FILES` (read now)."""
    routes = []
    for path, (name, content_type) in STATIC_FILES.items():
        body = (STATIC_DIR / name).read_bytes()
        handler = _handler(body, content_type, page=name.endswith(".html"))
        routes.append(RouteSpec(method="GET", path=path, access="open", handler=handler))
    return routes
