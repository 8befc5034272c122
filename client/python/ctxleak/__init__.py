"""ctxleak: find request context that leaks, in Python services.

Per-request data kept in a threading.local or a module global is right in a
thread-per-request server and wrong under asyncio, gevent or a thread pool,
where one thread serves many requests in turn.  ctxleak records every
request scope, tag and event with two ctx values: the one the service's
storage says is current, and the true one, which the library tracks itself
and which follows the execution context (contextvars: threads, asyncio
tasks, greenlets).  It ships them to ctxleakd, which rebuilds each request
and reports where one request's context showed up in another (bleed),
outlived its request (stale), went missing (lost), or was never closed.

This package is the Python client of the wire protocol in
proto/PROTOCOL.md: pure Python, standard library only, Python 3.9+.

Quick start, observing the service's own storage (the main use)::

    import ctxleak
    ctxleak.init(app="shop", observe=lambda: my_request_local.ctx)

    with ctxleak.request("GET /cart") as ctx:
        my_request_local.ctx = ctx      # the service's own bookkeeping
        ctxleak.tag("user", user.name)
        ctxleak.event("db.done")

Or let the library keep the storage and compare backends:
``init(backend="thread")`` (threading.local), ``"global"`` or ``"task"``
(a ContextVar).  ``init()`` reads CTXLEAK_SOCKET, CTXLEAK_APP,
CTXLEAK_BACKEND; CTXLEAK_DISABLE=1 turns every call into a no-op.

Every call is cheap (it appends one tuple to a bounded buffer), never
blocks on the daemon and never raises because of it: a background OS
thread batches the records to the daemon's socket (protocol version 2),
keeps what the daemon has not acknowledged as committed (up to
``buffer_limit`` bytes, 4 MiB) and sends it again after a reconnection,
with the same process instance, to a restarted daemon; it counts what it
had to drop and tells the daemon, and at shutdown (or exit) it says the
process ended in order.  A child of fork() reports as a new process.  Call
sites (file, line, function of the caller) group the findings.

Adapters: ``ctxleak.wsgi.Middleware`` and ``ctxleak.asgi.Middleware`` (a
request per HTTP request, tagged with method and path), and ``carry``,
``submit`` and ``run_in_executor`` below for work handed to a thread pool.
"""

import contextvars
import functools
import sys

from . import _core
from ._core import (__version__, begin, begin_child, capture, current, end,
                    event, flush, init, resume, shutdown, stats, suspend,
                    tag)
from ._wire import KIND_CHILD, KIND_REQUEST

__all__ = [
    "init", "shutdown", "begin", "begin_child", "end", "tag", "event",
    "capture", "resume", "suspend", "current", "flush", "stats",
    "request", "scope", "carry", "submit", "run_in_executor",
    "__version__",
]

_getframe = sys._getframe


class _Scope:
    """``with``: begin on entry, end on exit (also when the body raises);
    the site is the ``with`` line.  ``as`` gives the ctx.  One ``with``
    at a time per object."""

    __slots__ = ("name", "ctx")
    _kind = KIND_REQUEST

    def __init__(self, name):
        self.name = name
        self.ctx = 0

    def __enter__(self):
        self.ctx = _core._begin(self.name, self._kind, _getframe(1))
        return self.ctx

    def __exit__(self, exc_type, exc, tb):
        _core._end(self.ctx, _getframe(1))
        return False


class request(_Scope):
    """``with ctxleak.request("GET /a"):`` a request (root scope)."""

    __slots__ = ()


class scope(_Scope):
    """``with ctxleak.scope("db"):`` a child scope of the current one."""

    __slots__ = ()
    _kind = KIND_CHILD


def _resumed(token, site, fn, args, kwargs):
    _core._resume(token, site)
    try:
        return fn(*args, **kwargs)
    finally:
        _core._suspend(site)


def carry(fn, copy_context=True):
    """fn, wrapped to run as a continuation of the caller's context,
    wherever it runs later (a pool thread, a callback): resumed in the
    caller's true ctx (capture() now, resume/suspend around each call),
    and, with copy_context, in a copy of the caller's contextvars context,
    as asyncio.to_thread does, so that storage kept in ContextVars
    follows.  copy_context=False carries the truth only: the work then
    sees the storage of the thread it runs on, which is what a plain
    executor.submit() gives the service.  RESUME and SUSPEND are recorded
    at the site that called carry()."""
    return _carry(fn, copy_context, _getframe(1))


def _carry(fn, copy_context, frame):
    token = capture()
    site = _core.site_of(frame) if _core._on else 0
    context = contextvars.copy_context() if copy_context else None

    @functools.wraps(fn)
    def carried(*args, **kwargs):
        if context is None:
            return _resumed(token, site, fn, args, kwargs)
        return context.copy().run(_resumed, token, site, fn, args, kwargs)

    return carried


def submit(executor, fn, *args, **kwargs):
    """executor.submit(fn, ...) with the caller's context carried (see
    carry) into the work."""
    return executor.submit(_carry(fn, True, _getframe(1)), *args, **kwargs)


def run_in_executor(loop, executor, fn, *args):
    """loop.run_in_executor(executor, fn, ...) with the caller's context
    carried (see carry) into the work."""
    return loop.run_in_executor(executor, _carry(fn, True, _getframe(1)),
                                *args)
