"""The gallery's ASGI application: server-rendered pages over a :class:`Catalog`.

Everything shown is escaped by Jinja2's autoescaping (labels and paths are data, possibly
hostile), and a strict Content-Security-Policy allows only the gallery's own script, style and
images, so even a missed escape could not run injected script. Nothing is fetched from the
network: the CSS and JavaScript ship in the package. Every response carries those headers, an
unexpected failure's 500 included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from vgi_vision.gallery.catalog import ORDERS, Catalog, Filter, StoreChanged, Tile
from vgi_vision.gallery.export import as_csv, as_json
from vgi_vision.gallery.facts import FilePolicy
from vgi_vision.loopback import is_loopback_host
from vgi_vision.protocol.bearer import bearer_matches, checked_token

NEIGHBOURS = 8
TOKEN_COOKIE = "vgi_gallery_token"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
                               "script-src 'self'; form-action 'self'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: How a value the store lacks (a NULL inside a stored list) is shown.
MISSING = "missing"

_templates = Environment(loader=PackageLoader("vgi_vision.gallery", "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True))
_templates.filters["percent"] = lambda value: MISSING if value is None else f"{100 * value:.1f}%"
_templates.globals["missing"] = MISSING


def local_target(path: str, query: str) -> str:
    """A redirect target on this site: ``path`` percent-encoded, starting with exactly one
    ``/`` (a browser takes ``//host`` or ``/\\host`` for another site), then ``query``."""
    return "/" + quote(path.lstrip("/"), safe="/") + (f"?{query}" if query else "")


class SecurityHeaders:
    """The outermost layer: adds :data:`SECURITY_HEADERS` to every response the app sends,
    including the 500 Starlette answers for an unexpected exception, which no middleware
    inside it ever sees."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Guard(BaseHTTPMiddleware):
    """Bearer token (header, cookie, or ``?token=`` once) and loopback Host check.

    A browser cannot send a bearer header on a plain navigation, so ``?token=`` is accepted
    once, answered with an HttpOnly SameSite=Strict cookie and a redirect that drops the token
    from the address bar. On a loopback bind only loopback Host names are served: a web page
    elsewhere cannot read the gallery by rebinding its own DNS name to 127.0.0.1.
    """

    def __init__(self, app: Any, token: str | None, loopback_only: bool) -> None:
        super().__init__(app)
        self.token = None if token is None else checked_token(token)
        self.loopback_only = loopback_only

    async def dispatch(self, request: Request,
                       call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if self.loopback_only and not is_loopback_host(request.headers.get("host", "")):
            return PlainTextResponse("this gallery answers only to localhost", 421)
        if self.token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        if given is not None and self.matches(given):
            rest = urlencode([(k, v) for k, v in request.query_params.multi_items()
                              if k != "token"])
            response = RedirectResponse(local_target(request.url.path, rest), 303)
            response.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            return response
        if bearer_matches(request.headers.get("authorization", ""), self.token) \
                or self.matches(request.cookies.get(TOKEN_COOKIE, "")):
            return await call_next(request)
        return PlainTextResponse("unauthorized: open the gallery with ?token=<token>", 401,
                                 headers={"WWW-Authenticate": "Bearer"})

    def matches(self, given: str) -> bool:
        assert self.token is not None
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())


def make_app(catalog: Catalog, files: FilePolicy, token: str | None = None,
             loopback_only: bool = True) -> SecurityHeaders:
    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(_templates.get_template(name).render(**context), status)

    async def grid(request: Request) -> Response:
        flt = Filter.from_query(request.query_params)
        count, tiles = await catalog.page(flt)
        pages = max(1, math.ceil(count / flt.per_page))
        histogram = await catalog.histogram(flt)
        return render("grid.html", flt=flt, count=count, tiles=tiles, pages=pages,
                      total=(await catalog.snapshot()).total,
                      labels=await catalog.label_facet(flt), runs=await catalog.run_facet(flt),
                      categories=await catalog.category_facet(flt),
                      objects=await catalog.object_facet(flt),
                      faces=await catalog.face_facet(flt),
                      with_copies=await catalog.copies_facet(flt),
                      copies=await catalog.copies(tiles),
                      histogram=histogram, most=max((n for _, n in histogram), default=1),
                      orders=ORDERS, shown_path=files.shown_path)

    async def detail(request: Request) -> Response:
        tile = await catalog.tile(request.path_params["key"], request.query_params.get("run", ""))
        if tile is None:
            return render("missing.html", 404)
        # The grid this came from, re-parsed: only a valid filter ever reaches the back link.
        came_from = Filter.from_query(dict(parse_qsl(request.query_params.get("from", ""))))
        back = came_from.link(page=came_from.page)
        before, after = await catalog.around(came_from, tile)
        size, boxes = await catalog.boxes(tile)
        return render("detail.html", tile=tile, top_k=await catalog.top_k(tile), back=back,
                      before=before, after=after, size=size, boxes=boxes,
                      paths=[files.shown_path(p) for p, _, _ in await catalog.paths(tile)],
                      neighbours=await catalog.neighbours(tile, NEIGHBOURS),
                      facts=await asyncio.to_thread(files.facts, tile.path),
                      path=files.shown_path(tile.path))

    async def export(request: Request) -> Response:
        """The current view (every page of it) as CSV or JSON, paths as the page shows them
        (see :mod:`.export` for what CSV escapes)."""
        flt = Filter.from_query(request.query_params)
        rows = [{**dataclasses.asdict(tile), "path": files.shown_path(tile.path),
                 "created_at": None if tile.created_at is None else tile.created_at.isoformat()}
                for tile in await catalog.view(flt)]
        fmt = "json" if request.url.path.endswith(".json") else "csv"
        headers = {"Content-Disposition": f'attachment; filename="gallery.{fmt}"'}
        if fmt == "json":
            return Response(as_json(rows), media_type="application/json", headers=headers)
        return Response(as_csv(rows, [f.name for f in dataclasses.fields(Tile)]),
                        media_type="text/csv", headers=headers)

    async def original(request: Request) -> Response:
        """The image's file, full size, when it is under ``--data-root`` and unchanged; else
        its stored thumbnail."""
        key = request.path_params["key"]
        tile = await catalog.tile(key, request.query_params.get("run", ""))
        if tile is None:
            return PlainTextResponse("no such stored image", 404)
        found = await asyncio.to_thread(files.original, tile.path, tile.image_key)
        if found is None:
            return RedirectResponse(local_target(f"/thumb/{tile.image_key}", ""), 303)
        return Response(found[0], media_type=found[1], headers={"Cache-Control": "private"})

    async def thumbnail(request: Request) -> Response:
        jpeg = await catalog.thumbnail(request.path_params["key"])
        if jpeg is None:
            return PlainTextResponse("no thumbnail stored for this image", 404)
        # The key is the sha256 of the image: its thumbnail never changes.
        return Response(jpeg, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=86400, immutable"})

    async def store_changed(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("the store changed while reading it; reload the page", 503)

    static = Path(__file__).resolve().parent / "static"
    return SecurityHeaders(Starlette(
        routes=[Route("/", grid), Route("/image/{key}", detail), Route("/thumb/{key}", thumbnail),
                Route("/export.csv", export), Route("/export.json", export),
                Route("/full/{key}", original),
                Mount("/static", StaticFiles(directory=static), name="static")],
        middleware=[Middleware(Guard, token=token, loopback_only=loopback_only)],
        exception_handlers={StoreChanged: store_changed},
    ))
