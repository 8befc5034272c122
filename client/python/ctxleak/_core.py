"""The calls of the Python client: docs/DESIGN.md's table "Exact effect of each
call", with B = the backend's slot and C = the true (causal) ctx.

C and the resume stack live in ContextVars, so the truth follows the
execution context: an OS thread, an asyncio task, a greenlet (greenlet 1.0
and later give each greenlet a context of its own).  B is what the chosen
backend says:

  thread   a threading.local made at init(): per OS thread, or per greenlet
           once gevent's patch_all() replaced threading.local
  global   one slot for the process
  task     a ContextVar: it follows every task switch, and resume/suspend
           switch it too
  observe  the service's own storage, read through a callable, never
           written

A call never blocks and never raises into the host: it builds one tuple and
appends it to a bounded deque (the append is atomic under the GIL); the
shipping thread (_ship.py) encodes and sends it.  When the deque is full
the record is dropped and counted, and the count reaches the daemon as a
DROPPED record.

The record's ts is read by the last statement but one of every recording
function, `ts = _mono()`, and the last statement appends the record.  The
shipper uses that shape to find, in the stacks of the other threads, a
record whose clock was read but which is not yet appended, so that its
WATERMARK never passes it (see watermark_bound).
"""

import atexit
import collections
import contextvars
import dis
import functools
import itertools
import operator
import os
import sys
import threading
import time

from ._wire import (BEGIN, END, EVENT, KIND_CHILD, KIND_REQUEST, RESUME,
                    SUSPEND, TAG)

__version__ = "0.1.0"

_mono = time.monotonic_ns
_getframe = sys._getframe
_M64 = (1 << 64) - 1
BACKENDS = ("thread", "global", "task", "observe")


def _original(module, name):
    """module.name as it was before gevent's monkey-patching, if any: the
    shipper is a real OS thread that must not run on a gevent hub."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


# Real locks, even when gevent patched threading before this import: the
# shipper, an OS thread, takes them too, and no call blocks inside one.
_lock = _original("_thread", "allocate_lock")


# ------------------------------------------------------------ the truth

# C: the true ctx of the execution context.
_cause = contextvars.ContextVar("ctxleak.cause", default=0)
# The resume stack: None, or (C, B, the rest) pushed by resume().
_stack = contextvars.ContextVar("ctxleak.resume_stack", default=None)
# B of the task backend.
_task_b = contextvars.ContextVar("ctxleak.task", default=0)

# ------------------------------------------------------- process state

_on = False  # between init() and shutdown(): the one test every call makes
_started = False  # once per process, as libctxleak: init after shutdown
#                   is refused
_backend = None  # one of BACKENDS while on
_reason = ""  # why, for HELLO
_observe = None  # observe mode's getter
_slot = None  # the thread backend's threading.local (its class attribute
#               b = 0 is the default)
_global_b = [0]  # the global backend's one slot
_q = collections.deque()  # the records not yet taken by the shipper
_limit = 65536  # records the deque holds before dropping
_ship = None  # the _ship.Shipper

# Drops are the slow path: a lock keeps count and since exact.
_drop_lock = _lock()
_drops = 0  # dropped at the limit, not yet taken by the shipper
_drop_since = 0  # ts of the first of those
_drops_total = 0  # dropped at the limit since init
_evicted = 0  # scopes forgotten at MAX_SCOPES

# Each scope begun by this process and not ended yet, on whichever thread:
# ctx -> (saved B, saved C, is a root).  "x is known" of docs/DESIGN.md.
MAX_SCOPES = 1 << 16
_scopes = {}
_scopes_lock = _lock()  # eviction only

# ctx numbers: a counter (next() is atomic under the GIL) mixed with a
# per-process key into IDs unique in the process.
_ids = itertools.count(1)
_key = 0

# Per OS thread (gevent's patch_all() left aside): the native thread id,
# cached because threading.get_native_id is a system call.
_Tls = None
_tls = None
_native_id = None


def _mix64(x):
    """proto_mix64 of proto/proto.h, so that ctx values look alike in
    both clients."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _random64():
    return int.from_bytes(os.urandom(8), "little") or 1


def _new_ctx():
    while True:
        x = _mix64((_key + next(_ids)) & _M64)
        if x:
            return x


def _tid():
    """The caller's OS thread id, first time on this thread."""
    t = _native_id()
    _tls.tid = t
    return t


# ------------------------------------------------------------ sites

# (code, instruction offset) -> site ID: an offset is one call in the
# code, so the hot path needs no line number (f_lineno costs more than the
# rest of a call).
_sites = {}
_site_ids = {}  # (file, line, function) -> site ID
site_table = []  # site ID - 1 -> (file, line, function); append-only
_site_lock = _lock()


def _site(f):
    """The site ID of frame f's current call, registered on first use."""
    code = f.f_code
    loc = (code.co_filename, f.f_lineno or 0,
           getattr(code, "co_qualname", code.co_name))
    with _site_lock:
        sid = _site_ids.get(loc)
        if sid is None:
            site_table.append(loc)
            sid = _site_ids[loc] = len(site_table)
        _sites[(code, f.f_lasti)] = sid
    return sid


def site_of(frame):
    """The site ID of the call frame is making (for adapters that record
    on their caller's behalf)."""
    return _sites.get((frame.f_code, frame.f_lasti)) or _site(frame)


# ------------------------------------------------------------ backends

def _observed():
    """The service's storage, through its getter: 0 when it holds nothing
    a ctx can be (or the getter fails: the host's error, not ours to
    raise here)."""
    try:
        v = _observe()
    except Exception:
        return 0
    return v if type(v) is int and 0 <= v <= _M64 else 0


def _getter(backend):
    """B's getter for backend: a C callable where one does (no Python
    frame: a third of what a call costs)."""
    if backend == "task":
        return _task_b.get
    if backend == "thread":
        return functools.partial(getattr, _slot, "b")
    if backend == "global":
        return functools.partial(operator.getitem, _global_b, 0)
    return _observed


_get_b = None  # B's getter, set by init()


def _set_b(x):
    k = _backend
    if k == "task":
        _task_b.set(x)
    elif k == "thread":
        _slot.b = x
    elif k == "global":
        _global_b[0] = x
    # observe: the service's storage, not ours


def _drop():
    global _drops, _drop_since, _drops_total
    with _drop_lock:
        if not _drops:
            _drop_since = _mono()
        _drops += 1
        _drops_total += 1


def take_drops():
    """(count, since) of the drops not yet reported; for the shipper."""
    global _drops
    with _drop_lock:
        n, since = _drops, _drop_since
        _drops = 0
    return n, since


# ------------------------------------------------------------ the calls
#
# Each recording function ends with `ts = _mono()` and the append (see the
# module's docstring); the drop path reads no clock for its record.

def _begin(name, kind, f):
    if not _on:
        return 0
    s = _sites.get((f.f_code, f.f_lasti)) or _site(f)
    b = _get_b()
    c = _cause.get()
    try:
        tid = _tls.tid
    except AttributeError:
        tid = _tid()
    x = _new_ctx()
    _scopes[x] = (b, c, kind == KIND_REQUEST or not b)
    if len(_scopes) > MAX_SCOPES:
        _evict()
    _set_b(x)
    _cause.set(x)
    if len(_q) >= _limit:
        _drop()
        return x
    ts = _mono()
    _q.append((BEGIN, ts, tid, x, c, s, b, kind, name))
    return x


def _evict():
    """The oldest open scope goes: a bound on scopes that never end."""
    global _evicted
    with _scopes_lock:
        while len(_scopes) > MAX_SCOPES:
            try:
                del _scopes[next(iter(_scopes))]
            except (KeyError, RuntimeError, StopIteration):
                continue
            _evicted += 1


def _end(x, f):
    if not _on or not x or type(x) is not int or not 0 < x <= _M64:
        return
    s = _sites.get((f.f_code, f.f_lasti)) or _site(f)
    b = _get_b()
    c = _cause.get()
    try:
        tid = _tls.tid
    except AttributeError:
        tid = _tid()
    pair = _scopes.pop(x, None)
    if pair is not None:
        _set_b(pair[0])
        _cause.set(pair[1])
        if pair[2]:
            _ship.wake()
    if len(_q) >= _limit:
        _drop()
        return
    ts = _mono()
    _q.append((END, ts, tid, x, c, s, b))


def _resume(token, s):
    if not _on:
        return
    if type(token) is not int or not 0 <= token <= _M64:
        token = 0
    b = _get_b()
    c = _cause.get()
    try:
        tid = _tls.tid
    except AttributeError:
        tid = _tid()
    _stack.set((c, b, _stack.get()))
    _cause.set(token)
    if _backend == "task":
        _task_b.set(token)
    if len(_q) >= _limit:
        _drop()
        return
    ts = _mono()
    _q.append((RESUME, ts, tid, b, token, s))


def _suspend(s):
    if not _on:
        return
    b = _get_b()
    c = _cause.get()
    try:
        tid = _tls.tid
    except AttributeError:
        tid = _tid()
    top = _stack.get()
    if top is not None:  # without a resume: reported, nothing restored
        _stack.set(top[2])
        _cause.set(top[0])
        if _backend == "task":
            _task_b.set(top[1])
    if len(_q) >= _limit:
        _drop()
        return
    ts = _mono()
    _q.append((SUSPEND, ts, tid, b, c, s))


def begin(name):
    """Begin a request (a root scope); it becomes current.  Returns its
    ctx, or 0 when the library is off."""
    return _begin(name, KIND_REQUEST, _getframe(1))


def begin_child(name):
    """Begin a child scope of the current one (a request of its own when
    nothing is current).  Returns its ctx, or 0 when off."""
    return _begin(name, KIND_CHILD, _getframe(1))


def end(ctx):
    """End scope ctx and restore what was current before it, even when
    it is not current, from whichever thread, as long as this process
    began it and has not ended it yet.  Any other ctx is still reported
    (the daemon calls it misnest) and restores nothing; 0 is ignored."""
    _end(ctx, _getframe(1))


def _note(kind, f, a, v):
    """A TAG or EVENT from frame f's call: key and value, or name and
    message."""
    s = _sites.get((f.f_code, f.f_lasti)) or _site(f)
    b = _get_b()
    c = _cause.get()
    try:
        tid = _tls.tid
    except AttributeError:
        tid = _tid()
    if len(_q) >= _limit:
        _drop()
        return
    ts = _mono()
    _q.append((kind, ts, tid, b, c, s, a, v))


def tag(key, value):
    """Set tag key = value on the current scope (value None: no value)."""
    if _on and key is not None:
        _note(TAG, _getframe(1), key, value)


def event(name, message=None):
    """Record event name (with an optional message) in the current
    scope."""
    if _on and name is not None:
        _note(EVENT, _getframe(1), name, message)


def capture():
    """The true ctx, as a token to carry across a boundary (a callback, a
    queue, a thread) and resume() there; 0 when off or none."""
    return _cause.get() if _on else 0


def resume(token):
    """Enter a continuation of token (from capture()); leave it with
    suspend().  Nests."""
    f = _getframe(1)
    _resume(token, _sites.get((f.f_code, f.f_lasti)) or _site(f))


def suspend():
    """Leave the continuation the last resume() entered, restoring what
    was current before it.  Without one in this execution context it is
    still reported, and restores nothing."""
    f = _getframe(1)
    _suspend(_sites.get((f.f_code, f.f_lasti)) or _site(f))


def current():
    """The backend's current ctx (0: none, or off)."""
    return _get_b() if _on else 0


# ------------------------------------------------------- the watermark

def _window(fn):
    """(offset of `_mono` being loaded, offset of `ts` being stored) in
    fn's code: the clock is read between the two."""
    load = store = None
    for ins in dis.get_instructions(fn):
        if ins.opname == "LOAD_GLOBAL" and ins.argval == "_mono":
            load = ins.offset
        elif ins.opname == "STORE_FAST" and ins.argval == "ts" \
                and load is not None:
            store = ins.offset
    assert load is not None and store is not None, fn
    return load, store


_WINDOWS = {fn.__code__: _window(fn)
            for fn in (_begin, _end, _resume, _suspend, _note)}


def watermark_bound(limit, me):
    """The highest watermark <= limit that no record still in flight on
    another thread can fall below: limit itself, lower when a thread
    holds a record whose ts it read but has not appended yet, or None
    when a thread is between reading the clock and keeping the value
    (its ts is unknown: no watermark this time).  Called by the shipper
    (thread ident me) after reading the clock and before taking the
    queue.  Only OS threads can be in flight: greenlets and asyncio
    tasks do not switch inside a call."""
    w = limit
    for ident, f in sys._current_frames().items():
        if ident == me:
            continue
        while f is not None:
            window = _WINDOWS.get(f.f_code)
            if window is not None:
                lasti = f.f_lasti
                if lasti >= window[1]:
                    ts = f.f_locals.get("ts")
                    if ts is not None and ts - 1 < w:
                        w = ts - 1
                elif lasti >= window[0]:
                    return None
            f = f.f_back
    return w


# ---------------------------------------------------------- life cycle

def _default_socket():
    """The daemon's default, by the rule of proto/common.h (a relative
    XDG_RUNTIME_DIR is ignored, as the XDG specification says)."""
    if os.geteuid() == 0:
        return "/run/ctxleak/ctxleak.sock"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and xdg.startswith("/"):
        return os.path.join(xdg, "ctxleak", "ctxleak.sock")
    return f"/tmp/ctxleak-{os.getuid()}/ctxleak.sock"


def _choose_backend(backend, observe):
    """(backend, reason) as HELLO says them."""
    if observe is not None:
        if backend not in (None, "observe", "auto"):
            raise ValueError("observe= goes with backend None or "
                             "'observe'")
        if not callable(observe):
            raise TypeError("observe must be a callable returning the "
                            "current ctx")
        return "observe", "chosen by the application: the service's " \
            "own storage, read through a getter"
    reason = "chosen by the application"
    if backend in (None, "auto"):
        env = os.environ.get("CTXLEAK_BACKEND")
        if env and env != "auto":
            backend, reason = env, f"CTXLEAK_BACKEND={env}"
        else:
            return "task", "auto: contextvars follow threads, asyncio " \
                "tasks and greenlets"
    if backend == "observe":
        raise ValueError("the observe backend needs observe=, a getter")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of "
                         "thread, global, task, observe")
    return backend, reason


def _app_name(app):
    if app:
        return app
    env = os.environ.get("CTXLEAK_APP")
    if env:
        return env
    argv = getattr(sys, "argv", None)  # embedded interpreters: none
    return os.path.basename(argv[0]) if argv and argv[0] else "python"


def init(socket=None, app=None, backend=None, observe=None, *,
         max_buffered=65536, buffer_limit=4 * 1024 * 1024,
         flush_interval=0.1):
    """Start the library; returns True, or False when CTXLEAK_DISABLE=1
    or it already started in this process (it starts once: after
    shutdown() it stays off, as libctxleak does).

    socket: the daemon's socket (default $CTXLEAK_SOCKET, else
    /run/ctxleak/ctxleak.sock as root, $XDG_RUNTIME_DIR/ctxleak/
    ctxleak.sock, else /tmp/ctxleak-UID/ctxleak.sock).  app: the
    application's name (default $CTXLEAK_APP, else the program's).
    backend: "thread", "global", "task" or None ($CTXLEAK_BACKEND, else
    task).  observe: a callable that returns the ctx the service's own
    storage names (0 or None: none); the main mode, which checks the
    service's own code.  max_buffered: records held while the daemon is
    slow or away before they are dropped (and counted).  buffer_limit:
    bytes of encoded records kept until the daemon acknowledges them
    (sent again to a restarted daemon), 4 MiB as libctxleak's
    ctxleak_options.buffer_limit; a record past it is dropped (and
    counted).  flush_interval: seconds between batches.

    Under gevent, call it after monkey.patch_all(): the thread backend
    then models the per-greenlet threading.local the service gets.

    Bad arguments raise ValueError or TypeError; nothing the daemon does
    ever raises."""
    global _on, _started, _backend, _reason, _observe, _slot, _limit
    global _ship, _key, _Tls, _tls, _native_id, _get_b
    if os.environ.get("CTXLEAK_DISABLE") == "1":
        return False
    backend, reason = _choose_backend(backend, observe)
    if not (isinstance(max_buffered, int) and max_buffered > 0):
        raise ValueError("max_buffered must be a positive int")
    if not (isinstance(buffer_limit, int) and buffer_limit > 0):
        raise ValueError("buffer_limit must be a positive int")
    if not flush_interval > 0:
        raise ValueError("flush_interval must be positive")
    path = socket or os.environ.get("CTXLEAK_SOCKET") or _default_socket()
    if len(os.fsencode(path)) >= 108:
        raise ValueError("socket path too long for AF_UNIX")
    from . import _ship as ship_mod
    with _site_lock:
        if _started:
            return False
        _started = True
    _backend, _reason, _observe = backend, reason, observe
    # Made now, not at import: under gevent's patch_all() this is the
    # per-greenlet local, which is the storage the thread backend models.
    _slot = type("ThreadSlot", (threading.local,), {"b": 0})()
    _get_b = _getter(backend)
    _Tls = _original("_thread", "_local")
    _tls = _Tls()
    _native_id = _original("_thread", "get_native_id")
    _limit = max_buffered
    _key = _random64()
    _ship = ship_mod.Shipper(path, _app_name(app), backend, reason,
                             flush_interval, buffer_limit)
    _on = True
    try:
        _ship.start()
    except RuntimeError:  # no thread to be had: stay off
        _on = False
        return False
    os.register_at_fork(after_in_child=_after_fork)
    atexit.register(shutdown)
    return True


def flush():
    """Ship what is buffered now: returns once the shipping thread has
    taken it into a batch and offered it to the socket (or found no
    daemon), or after 1 s.  It never waits for the daemon to read or to
    acknowledge.  Returns False when the library is off."""
    if not _on:
        return False
    _ship.flush()
    return True


def shutdown():
    """Ship what is buffered with a CLOSE (the daemon then knows the
    process ended in order, not vanished), wait until the daemon
    acknowledges it all (giving up after 1 s without progress: what no
    live daemon took then counts as dropped), close, stop the shipping
    thread.  Idempotent; also run at exit."""
    global _on
    if not _on:
        return
    _on = False
    _ship.stop()


def stats():
    """Counters since init: records (produced), dropped (at max_buffered
    or buffer_limit, or given up at shutdown with no live daemon to take
    them: records - dropped is what the daemon stores for this process),
    buffered (records not yet taken by the shipping thread), kept_bytes
    (bytes of records kept until the daemon acknowledges them, at most
    buffer_limit), sent_bytes, connects, connected, truncated (strings
    cut to 4096 bytes), evicted (open scopes forgotten at the bound on
    scopes that never end), backend, instance."""
    if _ship is None:
        return {"records": 0, "dropped": 0, "buffered": 0, "kept_bytes": 0,
                "sent_bytes": 0,
                "connects": 0, "connected": 0, "truncated": 0,
                "evicted": 0, "backend": "none", "instance": 0}
    out = _ship.stats()
    out["buffered"] = len(_q)
    out["records"] += out["buffered"] + _drops_total
    out["dropped"] += _drops_total
    out["evicted"] = _evicted
    out["backend"] = _backend if _on else "none"
    return out


def _after_fork():
    """A child of fork() is a new process (docs/DESIGN.md): a new instance on
    a connection of its own, new ctx numbers, none of the parent's
    records; its threads' truth stays as it was."""
    global _q, _drops, _drop_since, _drops_total, _key, _tls, _ship
    global _drop_lock, _site_lock, _scopes_lock, _evicted, _on
    if not _on:
        return
    _drop_lock = _lock()
    _site_lock = _lock()
    _scopes_lock = _lock()
    _q = collections.deque()
    _drops = _drop_since = _drops_total = _evicted = 0
    _key = _random64()
    _tls = _Tls()
    _ship = _ship.forked()
    try:
        _ship.start()
    except RuntimeError:
        _on = False
