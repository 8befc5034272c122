"""ASGI middleware: one ctxleak request per HTTP or WebSocket connection.

    from ctxleak.asgi import Middleware
    app = Middleware(app)                         # Starlette, FastAPI, ...

Each request is named "METHOD /path" ("WS /path" for a WebSocket), carries
the tags http.method and http.path, begins before the application is
awaited and ends when it returns or raises.  The request's truth is a
ContextVar, so it follows the task that serves it; lifespan and other
scope types pass through untouched.
"""

import sys

from . import _core
from ._wire import KIND_REQUEST

_getframe = sys._getframe


class Middleware:
    """Wraps an ASGI application; tags=False leaves out the tags."""

    def __init__(self, app, tags=True):
        self.app = app
        self.tags = tags

    async def __call__(self, scope, receive, send):
        kind = scope.get("type")
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        method = scope.get("method", "GET") if kind == "http" else "WS"
        path = scope.get("path", "") or "/"
        ctx = _core._begin(f"{method} {path}", KIND_REQUEST, _getframe())
        if self.tags:
            _core.tag("http.method", method)
            _core.tag("http.path", path)
        try:
            return await self.app(scope, receive, send)
        finally:
            _core._end(ctx, _getframe())
