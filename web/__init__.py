"""The browser client: a few static ES modules served by ``omni-agent serve`` at ``/``.

No build step: ``web/static`` holds the files as they are served. ``web_router()`` returns the routes;
the page itself talks to the same server's ``/v1/realtime``, ``/v1/files`` and ``/v1/artifacts``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8"}
# The page loads only its own files; media it shows are data: or blob: URLs it made itself.
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob: data:; "
       "connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'")


def _file(name: str) -> FileResponse:
    path = STATIC / name
    if "/" in name or path.suffix not in MEDIA_TYPES or not path.is_file():
        raise HTTPException(status_code=404, detail=f"no page file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix],
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


def web_router() -> APIRouter:
    """``GET /`` (the page) and ``GET /web/{name}`` (its modules and styles)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return _file("index.html")

    @router.get("/web/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        return _file(name)

    return router
