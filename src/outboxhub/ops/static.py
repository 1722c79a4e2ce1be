"""The dashboard page (``outboxhub/ops/static/``) and the browser client (``outboxhub/ops/jsclient/``).

The client is the build output of the npm package in ``clients/js`` (``npm run build`` writes
``clients/js/dist``, committed; ``ops/jsclient`` is a link to it, and the wheel carries its files), so the
hub serves the very ES modules Node services install: ``/outboxhub.js`` and ``/outboxhub.d.ts``, which
import ``/outboxhub/<module>.js``. Files are read once when the routes are installed.

The page gets a Content-Security-Policy that allows only same-origin scripts, styles, fetches and
WebSockets, so a payload shown in the dashboard can never run as script (the page also only ever writes
it with ``textContent``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from aiohttp import web

from outboxhub.ops.context import Handler, RouteSpec

__all__ = ["JS_CLIENT_DIR", "STATIC_DIR", "STATIC_FILES", "static_routes"]

STATIC_DIR: Final = Path(__file__).with_name("static")
JS_CLIENT_DIR: Final = Path(__file__).with_name("jsclient")
"""The browser build of ``clients/js`` (``dist/``): ``outboxhub.js``, ``outboxhub.d.ts``, ``outboxhub/*``."""

_JS: Final = "text/javascript; charset=utf-8"
_TS: Final = "application/typescript; charset=utf-8"


def _client_files() -> dict[str, tuple[Path, str]]:
    files = sorted(p for p in JS_CLIENT_DIR.rglob("*") if p.is_file() and p.name.endswith((".js", ".d.ts")))
    if not any(p.name == "outboxhub.js" for p in files):
        raise RuntimeError(f"the browser client's build is missing from {JS_CLIENT_DIR} (clients/js/dist)")
    return {
        "/" + p.relative_to(JS_CLIENT_DIR).as_posix(): (p, _TS if p.name.endswith(".d.ts") else _JS)
        for p in files
    }


STATIC_FILES: Final[dict[str, tuple[Path, str]]] = {
    "/": (STATIC_DIR / "index.html", "text/html; charset=utf-8"),
    "/dashboard.js": (STATIC_DIR / "dashboard.js", _JS),
    "/dashboard.css": (STATIC_DIR / "dashboard.css", "text/css; charset=utf-8"),
    "/operators.js": (STATIC_DIR / "operators.js", _JS),
    "/uPlot.iife.min.js": (STATIC_DIR / "uPlot.iife.min.js", _JS),
    "/uPlot.min.css": (STATIC_DIR / "uPlot.min.css", "text/css; charset=utf-8"),
    "/uPlot.LICENSE": (STATIC_DIR / "uPlot.LICENSE", "text/plain; charset=utf-8"),
    **_client_files(),
}
"""URL path -> (file, Content-Type): the dashboard's files and every module of the browser client.
``uPlot.*`` is uPlot 1.6.32 (MIT, its licence served next to it), the dashboard's chart library, vendored
unchanged from the npm package's ``dist/``."""


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
    for path, (file, content_type) in STATIC_FILES.items():
        body = file.read_bytes()
        handler = _handler(body, content_type, page=file.name.endswith(".html"))
        routes.append(RouteSpec(method="GET", path=path, access="open", handler=handler))
    return routes
