"""WSGI middleware: one ctxleak request per HTTP request.

    from ctxleak.wsgi import Middleware
    app.wsgi_app = Middleware(app.wsgi_app)      # Flask
    application = Middleware(application)        # any WSGI app

Each request begins before the application is called, is named
"METHOD /path", carries the tags http.method and http.path, and ends when
the server closes the response (PEP 3333: after the last chunk is sent),
or at once when the application raises.  Call sites are those of this
module: the findings under it are the application's own tags and events.
"""

import sys

from . import _core
from ._wire import KIND_REQUEST

_getframe = sys._getframe


class Middleware:
    """Wraps a WSGI application; tags=False leaves out the tags."""

    def __init__(self, app, tags=True):
        self.app = app
        self.tags = tags

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        ctx = _core._begin(f"{method} {path}", KIND_REQUEST, _getframe())
        if self.tags:
            _core.tag("http.method", method)
            _core.tag("http.path", path)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            _core._end(ctx, _getframe())
            raise
        return _Body(body, ctx)


class _Body:
    """The application's response iterable, ending the request when the
    server closes it."""

    def __init__(self, body, ctx):
        self.body = body
        self.ctx = ctx

    def __iter__(self):
        return iter(self.body)

    def close(self):
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            ctx, self.ctx = self.ctx, 0
            _core._end(ctx, _getframe())
