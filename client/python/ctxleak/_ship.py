"""The connection to ctxleakd and the OS thread that feeds it, as
libctxleak's client/ship.c does it (PROTOCOL.md sections 2 and 2.2).

What goes out on a connection: HELLO and the SITE of every site registered
so far; then batches, each made of the SITEs registered since, a DROPPED
record when records were dropped, the records taken from the queue, and a
WATERMARK.  The socket is non-blocking and written with MSG_NOSIGNAL; this
thread is a real OS thread even under gevent's patch_all() (it uses the
unpatched socket, select and locks), so that the host's threads, tasks and
greenlets never wait for the daemon.

A batch cut by a broken connection continues on the next one at the start
of the record it broke in (the daemon discards the half it got), after
that connection's own HELLO and SITEs, and with the same instance.

Nothing the kernel took is known to be stored: this thread counts what the
kernel took (whole records, and the counts of whole DROPPED records), and
after each HELLO the daemon says what it holds of this instance from
before the connection (its RECEIPT).  What it lacks died with a daemon
that was killed: lost records are counted as dropped, in stats() and in a
DROPPED record, and lost DROPPED counts go out again, so that for every
process the records stored plus the drops reported make the records
produced.
"""

import operator
import os
import socket
import sys
import time

from . import _core, _wire
from ._wire import (BEGIN, DROPPED, END, EVENT, RESUME, SITE, SUSPEND, TAG,
                    WATERMARK)

_mono = time.monotonic_ns
MS = 1000000
BACKOFF_MIN = 10 * MS
BACKOFF_MAX = 1000 * MS
# At shutdown, the longest the daemon may take no byte (or stay away)
# before the rest is given up and counted as dropped.
STOP_STALL = 1000 * MS
WAKE_MIN_GAP = 1 * MS  # between batches woken by request ends
SEND_CHUNK = 256 * 1024  # bytes offered to one send()
HELLO = 0  # the item type of the HELLO in the outgoing list
_RECORDS = (BEGIN, END, TAG, EVENT, RESUME, SUSPEND)
_ts_of = operator.itemgetter(1)
_MAX = (1 << 64) - 1


def _clock_offset():
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns, for HELLO."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - _mono()


class Shipper:
    """The shipping thread and everything it owns."""

    def __init__(self, path, app, backend, reason, interval):
        self.path = path  # the daemon's socket
        self.app = app
        self.backend = backend
        self.reason = reason
        self.interval = int(interval * 1e9)  # ns between batches
        self.instance = _core._random64()  # the same on every connection
        self.sock = None
        # The outgoing bytes: items (type, bytes, ts or count), their
        # concatenation `wire`, `off`, the bytes of wire the kernel took,
        # and `totals` of the items: (records, DROPPED counts, smallest
        # ts of the records).
        self.items = []
        self.wire = b""
        self.off = 0
        self.totals = (0, 0, _MAX)
        self.drops = 0  # known dropped, not yet in a DROPPED item
        self.drop_since = 0
        self.conn_sites = 0  # sites whose SITE went out on this connection
        self.backoff = BACKOFF_MIN
        self.next_connect = 0
        self.next_batch = _mono() + self.interval
        self.last_batch = 0
        self.last_wm = 0
        self.final_collected = False
        self.stopping = False
        self.stop_at = 0
        self.last_progress = 0
        # What the kernel took for the daemon: whole records and whole
        # DROPPED counts, less what receipts showed lost.
        self.handed = 0
        self.drops_handed = 0
        # The smallest ts handed and not confirmed by a receipt, on
        # earlier connections and on this one: where a loss may start.
        self.since_old = self.since_conn = _MAX
        # This connection's RECEIPT: what the daemon should hold from
        # before it, and the bytes of it read so far.
        self.receipt_due = False
        self.receipt_want = (0, 0, _MAX)
        self.receipt_buf = b""
        self.flush_req = 0
        self.flush_done = 0
        self.flush_lock = _core._original("_thread", "allocate_lock")()
        self.wake_pending = False
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.done = _core._original("_thread", "allocate_lock")()
        self.running = False
        self.ident = None
        # Counters for stats().
        self.taken = 0  # records taken from the queue
        self.unsent = 0  # records shutdown gave up on
        self.lost = 0  # records a killed daemon lost
        self.sent_bytes = 0
        self.connects = 0
        self.enc = _wire.Encoder()
        self.said_unreachable = False
        self._socket = _core._original("socket", "socket")
        self._select = _core._original("select", "select")

    def forked(self):
        """A fresh shipper for the child of fork(): a new instance, none
        of the parent's bytes."""
        os.close(self.rfd)
        os.close(self.wfd)
        if self.sock is not None:
            self.sock.close()
        return Shipper(self.path, self.app, self.backend, self.reason,
                       self.interval / 1e9)

    # ------------------------------------------------------ control

    def start(self):
        """Starts the thread; RuntimeError when there is none to be had."""
        self.done.acquire()
        self.running = True
        try:
            _core._original("_thread", "start_new_thread")(self._main, ())
        except RuntimeError:
            self.running = False
            self.done.release()
            raise

    def kick(self):
        try:
            os.write(self.wfd, b"\0")
        except OSError:
            pass  # the pipe is full: a wakeup is pending anyway

    def wake(self):
        """A request ended: a batch soon, one wakeup however many end."""
        if not self.wake_pending:
            self.wake_pending = True
            self.kick()

    def flush(self):
        with self.flush_lock:
            self.flush_req += 1
            mine = self.flush_req
        self.kick()
        deadline = _mono() + 1000 * MS
        # The caller's sleep: gevent's under patch_all, so that other
        # greenlets run meanwhile.
        sleep = time.sleep
        while self.flush_done < mine and self.running and \
                _mono() < deadline:
            sleep(0.0005)

    def stop(self):
        self.stop_at = _mono()
        self.stopping = True
        self.kick()
        # The thread gives up by itself after STOP_STALL without
        # progress; this bound only guards against a wedged host.
        if self.done.acquire(True, 30):
            self.done.release()
        self._count_unsent()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for fd in (self.rfd, self.wfd):
            try:
                os.close(fd)
            except OSError:
                pass

    def stats(self):
        return {
            "records": self.taken,
            "dropped": self.unsent + self.lost,
            "sent_bytes": self.sent_bytes,
            "connects": self.connects,
            "connected": int(self.sock is not None and self.running),
            "truncated": self.enc.truncated,
            "instance": self.instance,
        }

    # ------------------------------------------------------ the thread

    def _main(self):
        self.ident = _core._original("_thread", "get_ident")()
        try:
            while True:
                now = _mono()
                req = self.flush_req
                try:
                    served = self._once(now, req)
                except Exception:
                    # Never into the host: drop the connection and
                    # start over on a new one.
                    self._disconnect(_mono())
                    served = True
                if served and req > self.flush_done:
                    self.flush_done = req
                if self._finished():
                    break
                try:
                    self._wait(now)
                except Exception:
                    self._disconnect(_mono())
        finally:
            self.running = False
            self.done.release()

    def _once(self, now, req):
        """One round; returns whether flush request req is served."""
        if self.sock is None and (now >= self.next_connect or
                                  self.stopping):
            self._connect(now)
        if self.sock is not None and self._pending():
            self._send()
        if self.sock is None:
            return True  # nothing can be shipped now
        if self._pending() or not self._batch_due(now, req):
            return req <= self.flush_done
        self._build(now)
        self._send()
        return True

    def _batch_due(self, now, req):
        if self.stopping:
            return not self.final_collected or len(_core._q) > 0 or \
                self.drops > 0 or _core._drops > 0
        if req > self.flush_done or now >= self.next_batch:
            return True
        return self.wake_pending and now >= self.last_batch + WAKE_MIN_GAP

    def _finished(self):
        if not self.stopping:
            return False
        if not self._pending() and not self.drops and not _core._drops \
                and not _core._q and not self._receipt_awaited():
            return self.final_collected or self.sock is None
        since = max(self.last_progress, self.stop_at)
        return _mono() >= since + STOP_STALL

    def _timeout(self, now):
        """Seconds to sleep; None: until the socket or a wakeup."""
        if self.stopping:
            return 0.01
        if self.sock is not None and self._pending():
            return None
        t = self.next_batch
        if self.sock is None:
            t = min(t, self.next_connect)
        if self.wake_pending:
            t = min(t, self.last_batch + WAKE_MIN_GAP)
        return max(t - now, 0) / 1e9

    def _wait(self, now):
        rd = [self.rfd]
        wr = []
        if self.sock is not None:
            rd.append(self.sock)
            if self._pending():
                wr.append(self.sock)
        try:
            r, _, _ = self._select(rd, wr, [], self._timeout(now))
        except (OSError, ValueError):
            return
        if self.rfd in r:
            try:
                os.read(self.rfd, 4096)
            except OSError:
                pass
        if self.sock is not None and self.sock in r and self._peer_closed():
            self._disconnect(_mono())

    # ------------------------------------------------------ connection

    def _say_unreachable(self, err):
        """A worker whose records go nowhere says so, once, unless told
        not to: a silent library looks like a clean service."""
        if self.said_unreachable or os.environ.get("CTXLEAK_QUIET") == "1":
            return
        self.said_unreachable = True
        try:
            sys.stderr.write(
                f"ctxleak: no daemon at {self.path} ({err}); records are "
                f"kept, up to {_core._limit}, until one listens "
                "(CTXLEAK_QUIET=1 silences this)\n")
        except Exception:
            pass

    def _connect(self, now):
        try:
            s = self._socket(socket.AF_UNIX, socket.SOCK_STREAM |
                             socket.SOCK_NONBLOCK |
                             socket.SOCK_CLOEXEC)
        except OSError as e:
            self._retry_later(now, e)
            return
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            self._retry_later(now, e)
            return
        self.sock = s
        self.connects += 1
        hello = _wire.hello(self.instance, os.getpid(), self.app,
                            self.backend, self.reason, _clock_offset(),
                            "ctxleak-python " + _core.__version__)
        head = [(HELLO, hello, 0)]
        self.conn_sites = 0
        head += self._new_sites()
        # The item the last connection broke in starts over here; the
        # SITEs of the cut batch are in the head now, and its HELLO was
        # that connection's.
        rest = [it for it in self.items if it[0] != SITE and it[0] != HELLO]
        self._set_items(head + rest)
        self._expect_receipt()

    def _retry_later(self, now, err):
        if self.connects == 0:
            self._say_unreachable(err.strerror or err)
        self.next_connect = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _disconnect(self, now):
        self._count_sent()
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.receipt_due = False
        self.next_connect = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _peer_closed(self):
        """The daemon sends only its RECEIPT: after it, readable means
        closed (what else it sends is discarded)."""
        try:
            data = self.sock.recv(256)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if not data:
            return True
        if self.receipt_due:
            self.receipt_buf += data
            self._read_receipt()
        return False

    # ------------------------------------------------------ receipt

    def _expect_receipt(self):
        self.since_old = min(self.since_old, self.since_conn)
        self.since_conn = _MAX
        self.receipt_want = (self.handed, self.drops_handed, self.since_old)
        self.receipt_due = True
        self.receipt_buf = b""

    def _read_receipt(self):
        try:
            records, dropped, _ = _wire.parse_receipt(self.receipt_buf)
        except _wire.Incomplete:
            if len(self.receipt_buf) < 64:
                return  # the rest is on its way
            self.receipt_due = False
            return
        except ValueError:
            self.receipt_due = False
            return
        self.receipt_due = False
        want_records, want_drops, since = self.receipt_want
        lost = max(want_records - records, 0)
        lost_drops = max(want_drops - dropped, 0)
        self.handed -= lost
        self.drops_handed -= lost_drops
        self._note_drops(lost + lost_drops,
                         since if since != _MAX else _mono())
        self.lost += lost
        self.since_old = _MAX

    def _receipt_awaited(self):
        """Shutting down, wait for a receipt that may show a loss."""
        return self.sock is not None and self.receipt_due and \
            (self.receipt_want[0] or self.receipt_want[1])

    # ------------------------------------------------------ sending

    def _set_items(self, items, totals=None):
        """items go out next; totals as self.totals, counted here when
        not given."""
        self.items = items
        self.wire = b"".join([it[1] for it in items])
        self.off = 0
        if totals is None:
            ts = [it[2] for it in items if it[0] in _RECORDS]
            totals = (len(ts), sum(it[2] for it in items
                                   if it[0] == DROPPED), min(ts, default=_MAX))
        self.totals = totals

    def _pending(self):
        return self.off < len(self.wire)

    def _note_drops(self, n, since):
        if n and (not self.drops or since < self.drop_since):
            self.drop_since = since
        self.drops += n

    def _count(self, totals):
        records, drops, since = totals
        self.handed += records
        self.drops_handed += drops
        if since < self.since_conn:
            self.since_conn = since

    def _count_sent(self):
        """Counts the items the kernel took whole, and keeps the others:
        the one a broken connection cut starts over."""
        if not self._pending():
            self._count(self.totals)
            self._set_items([], (0, 0, _MAX))
            return
        end = 0
        for i, it in enumerate(self.items):
            end += len(it[1])
            if end > self.off:
                break
        rest = self.items[i:]
        self._set_items(self.items[:i])
        self._count(self.totals)
        self._set_items(rest)

    def _send(self):
        view = memoryview(self.wire)
        while self.off < len(self.wire):
            try:
                n = self.sock.send(view[self.off:self.off + SEND_CHUNK],
                                   socket.MSG_NOSIGNAL)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            except OSError:
                self._disconnect(_mono())
                return
            self.off += n
            self.sent_bytes += n
            self.last_progress = _mono()
        if not self._pending():
            self._count_sent()
            self.backoff = BACKOFF_MIN

    # ------------------------------------------------------ batches

    def _new_sites(self):
        """SITE items for the sites registered since the last."""
        table = _core.site_table
        out = []
        now = _mono()
        while self.conn_sites < len(table):
            file, line, func = table[self.conn_sites]
            self.conn_sites += 1
            out.append((SITE, _wire.site(now, 0, self.conn_sites, file,
                                         line, func), 0))
        return out

    def _build(self, now):
        # Read before taking the queue: a stop that comes meanwhile may
        # follow records this batch does not see.
        stopping = self.stopping
        self.wake_pending = False
        t = _mono()
        w = _core.watermark_bound(t - 1, self.ident)
        q = _core._q
        n = len(q)
        popleft = q.popleft
        recs = [popleft() for _ in range(n)]
        self.taken += n
        # After taking the records: a record names a site only once it
        # is registered, so every site they name is in the table now.
        items = self._new_sites()
        count, since = _core.take_drops()
        self._note_drops(count, since)
        if self.drops:
            items.append((DROPPED, _wire.dropped(now, 0, self.drops,
                                                 self.drop_since),
                          self.drops))
            self.drops = 0
        drops = items[-1][2] if items and items[-1][0] == DROPPED else 0
        encode = self.enc.record
        items += [(r[0], encode(r), r[1]) for r in recs]
        if w is not None and w > self.last_wm:
            items.append((WATERMARK, _wire.watermark(w, 0), 0))
            self.last_wm = w
        self._set_items(items, (n, drops, min(map(_ts_of, recs),
                                              default=_MAX)))
        self.last_batch = now
        self.next_batch = now + self.interval
        if stopping:
            self.final_collected = True

    def _count_unsent(self):
        """The thread gave up, or records came after its last batch: what
        was never sent counts as dropped, so that the daemon's records
        plus the drops make the records produced."""
        self._count_sent()
        n = self.totals[0]
        q = _core._q
        taken = len(q)
        q.clear()
        self.taken += taken
        self.unsent += n + taken
