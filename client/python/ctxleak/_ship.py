"""The connection to ctxleakd and the OS thread that feeds it, as
libctxleak's client/ship.c does it (PROTOCOL.md sections 2, 2.2 and 2.3,
protocol version 2).

What goes out on a connection: HELLO and the SITE of every site registered
so far; then batches, each made of the SITEs registered since, a DROPPED
record when records were dropped, the records taken from the queue, and a
WATERMARK.  The socket is non-blocking and written with MSG_NOSIGNAL; this
thread is a real OS thread even under gevent's patch_all() (it uses the
unpatched socket, select and locks), so that the host's threads, tasks and
greenlets never wait for the daemon.  It also reads what the daemon sends
back, here and nowhere else.

Nothing the kernel took is known to be stored: a daemon killed before its
next commit loses it.  So a batch's records (and its WATERMARK, and the
CLOSE of a shutdown), once encoded, are kept until the daemon's ACK says
they are committed: it names a watermark W, and the kept records are freed
from the first up to the first one of a later ts.  The encoded bytes of the
kept records count against buffer_limit (4 MiB, as libctxleak's): a record
that does not fit is dropped and counted, and reported in a DROPPED record.
After a reconnection everything kept goes out again, first, with the
HELLO's seq saying at which stream position it starts; the daemon drops
what it already has.  A connection that closes before its RECEIPT was
refused (over the daemon's connection limit, say): it held nothing, and
the next one comes after a backoff.

Right after each HELLO the daemon says, once, what it holds of this
process from before the connection (its RECEIPT).  Of it this thread uses
the drops: DROPPED counts a daemon crash lost go out again, so that for
every process the records stored plus the drops reported make the records
produced.  Shutting down, it sends CLOSE in its first batch (a process
that ends without one vanished) and waits, within STOP_STALL of the last
progress, for the ACK of its last records; what stays unacknowledged then
and no live daemon took is counted as dropped (_count_unsent).
"""

import array
import bisect
import collections
import fcntl
import itertools
import os
import socket
import struct
import sys
import termios
import time

from . import _core, _wire
from ._wire import ACK, RECEIPT

_mono = time.monotonic_ns
MS = 1000000
BACKOFF_MIN = 10 * MS
BACKOFF_MAX = 1000 * MS
# At shutdown, the longest the daemon may take no byte (or stay away)
# before the rest is given up and counted as dropped.
STOP_STALL = 1000 * MS
WAKE_MIN_GAP = 1 * MS  # between batches woken by request ends
# After a failed send, how long the connection is still read: a daemon
# that stops in order stops reading first, then acknowledges what it
# read, then closes.
SEND_DEAD_WAIT = 1000 * MS
SEND_CHUNK = 256 * 1024  # bytes offered to one send()
# What the daemon sent that is not parsed yet never needs more: its
# messages are a few bytes each.
REPLY_MAX = 4096
_MAX = (1 << 64) - 1
_INT = struct.Struct("i")


class _Batch:
    """One batch's records, then its marks (WATERMARK, CLOSE), encoded
    and kept until the daemon acknowledges them.  Kept per batch, not per
    record: a record costs its bytes and 16 more, and an ACK that covers
    a batch frees it at once."""

    __slots__ = ("data", "ends", "ts", "nrec", "max_ts", "start")

    def __init__(self, data, ends, ts):
        self.data = data  # the items' bytes, one after the other
        self.ends = ends  # array('Q'): where each item ends in data
        self.ts = ts  # array('Q'): each record's ts (the marks have none)
        self.nrec = len(ts)  # records: the first nrec items
        self.max_ts = max(ts, default=0)
        self.start = 0  # items freed at the front (records only: the
        #                 marks go with the batch)

    def offset(self, i):
        """Where item i starts in data."""
        return self.ends[i - 1] if i else 0

    def record_bytes(self, i):
        """Bytes of the records from item i on."""
        return self.offset(self.nrec) - self.offset(i) if i < self.nrec \
            else 0


def _clock_offset():
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns, for HELLO."""
    return time.clock_gettime_ns(time.CLOCK_REALTIME) - _mono()


class Shipper:
    """The shipping thread and everything it owns."""

    def __init__(self, path, app, backend, reason, interval, budget):
        self.path = path  # the daemon's socket
        self.app = app
        self.backend = backend
        self.reason = reason
        self.interval = int(interval * 1e9)  # ns between batches
        self.budget = budget  # bytes of encoded records kept at most
        self.instance = _core._random64()  # the same on every connection
        self.sock = None
        # The records (and WATERMARKs, CLOSE) encoded and not yet
        # acknowledged, in stream order: _Batch each.
        self.kept = collections.deque()
        self.kept_pos = 0  # stream position of the first record kept
        self.kept_records = 0  # records in kept (marks aside)
        self.held = 0  # bytes of the records in kept: the budget's account
        # Batches at the front of kept that went out whole on this
        # connection; while `wire` is being sent, the index in kept of
        # its first batch.
        self.kept_out = 0
        self.acked = 0  # the highest ACK of this connection
        # The outgoing bytes: `wire`, of which the kernel took `off`;
        # HELLO, SITEs and a DROPPED take its first `wire_pre` bytes, the
        # kept batches from kept_out on the rest.  The DROPPED (ending at
        # `drop_end`) reports `wire_drops` since `wire_drop_since`.
        self.wire = b""
        self.off = 0
        self.wire_pre = 0
        self.drop_end = 0
        self.wire_drops = 0
        self.wire_drop_since = 0
        self.drops = 0  # known dropped, not yet in a DROPPED record
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
        self.send_dead = 0  # when a send failed (0: none): the
        #                     connection is only read, until it ends or
        #                     SEND_DEAD_WAIT
        self.outq = 0  # bytes sent the daemon had not read, last looked
        # The counts of whole DROPPED records the kernel took for the
        # daemon, less what receipts showed lost.
        self.drops_handed = 0
        # The smallest `since` of those handed and not confirmed by a
        # receipt, on earlier connections and on this one.
        self.since_old = self.since_conn = _MAX
        # This connection's RECEIPT: the drops the daemon should hold
        # from before it (and their since), and whether it came.
        self.receipt_due = False
        self.receipt_want = (0, _MAX)
        self.replies = b""  # what the daemon said, not parsed yet
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
        self.over = 0  # records dropped at the budget
        self.unsent = 0  # records shutdown gave up on
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
                       self.interval / 1e9, self.budget)

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
            "dropped": self.unsent + self.over,
            "kept_bytes": self.held,
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
        if self.send_dead and now >= self.send_dead + SEND_DEAD_WAIT:
            self._disconnect(now)
        if self.sock is None and (now >= self.next_connect or
                                  self.stopping):
            self._connect(now)
        if self.sock is not None and not self.send_dead and \
                self._pending():
            self._send()
        if self.sock is None or self.send_dead:
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

    def _ack_awaited(self):
        """Shutting down: records sent and not acknowledged yet, or a
        receipt that may show lost drops."""
        return self.sock is not None and (
            self.kept_records > 0 or
            (self.receipt_due and self.receipt_want[0] > 0))

    def _note_peer_reading(self):
        """The daemon reading what the kernel holds for it is progress
        too: the ACK of the last batch comes only once it read all of
        it."""
        try:
            n = _INT.unpack(fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ,
                                        b"\0" * 4))[0]
        except (OSError, AttributeError):
            return
        if n < self.outq and not self.receipt_due:
            self.last_progress = _mono()
        self.outq = n

    def _finished(self):
        """Stopping, this thread waits as long as the daemon takes bytes,
        reads them or acknowledges them: under load a slow daemon is
        still a working one.  Bytes count only on a connection the
        daemon accepted (its RECEIPT came): a peer that takes them and
        hangs up, again and again, is no progress."""
        if not self.stopping:
            return False
        self._note_peer_reading()
        if not self._pending() and not self.drops and not _core._drops \
                and not _core._q and not self._ack_awaited():
            return self.final_collected or self.sock is None
        since = max(self.last_progress, self.stop_at)
        return _mono() >= since + STOP_STALL

    def _timeout(self, now):
        """Seconds to sleep; None: until the socket or a wakeup."""
        if self.stopping:
            return 0.01
        if self.send_dead:
            return max(self.send_dead + SEND_DEAD_WAIT - now, 0) / 1e9
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
            if self._pending() and not self.send_dead:
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
                            "ctxleak-python " + _core.__version__,
                            seq=self.kept_pos)
        # HELLO, every SITE, then everything kept, in the order first
        # sent: the daemon drops what it already has.
        self.conn_sites = 0
        self.kept_out = 0
        self.acked = 0
        self.outq = 0
        self._set_wire([hello] + self._new_sites())
        self._expect_receipt()

    def _retry_later(self, now, err):
        if self.connects == 0:
            self._say_unreachable(err.strerror or err)
        self.next_connect = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _disconnect(self, now):
        """The connection is gone.  A DROPPED it did not take whole goes
        out again on the next one, as everything kept does."""
        if self.wire_drops:
            if self.off >= self.drop_end:
                self._hand_drops()
            else:
                self._note_drops(self.wire_drops, self.wire_drop_since)
                self.wire_drops = 0
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.send_dead = 0
        self.receipt_due = False
        self.replies = b""
        self.wire = b""
        self.off = 0
        self.next_connect = now + self.backoff
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)

    def _peer_closed(self):
        """Reads what the daemon said; returns whether the connection is
        gone."""
        try:
            data = self.sock.recv(REPLY_MAX)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        if not data:
            return True
        self.replies += data
        self._read_replies()
        return False

    # ------------------------------------------------ receipt and acks

    def _expect_receipt(self):
        self.since_old = min(self.since_old, self.since_conn)
        self.since_conn = _MAX
        self.receipt_want = (self.drops_handed, self.since_old)
        self.receipt_due = True
        self.replies = b""

    def _read_replies(self):
        """A RECEIPT, then ACKs; kinds this client does not know are
        skipped, and bytes that are no message discarded."""
        buf, pos = self.replies, 0
        while pos < len(buf):
            try:
                kind, fields, end = _wire.parse_reply(buf, pos)
            except _wire.Incomplete:
                if len(buf) - pos >= REPLY_MAX:
                    pos = len(buf)
                break
            except ValueError:
                pos = len(buf)
                break
            pos = end
            if kind == RECEIPT and self.receipt_due:
                self._take_receipt(fields[1])
            elif kind == ACK:
                self._take_ack(fields[0])
        self.replies = buf[pos:]

    def _take_receipt(self, dropped):
        """DROPPED counts the daemon lacks died with it: they go out
        again.  (Its count of records matters to version 1 clients only:
        this one sends again what is not acknowledged.)  The daemon took
        the connection: reconnections are quick again."""
        self.receipt_due = False
        want, since = self.receipt_want
        lost = max(want - dropped, 0)
        self.drops_handed -= lost
        self._note_drops(lost, since if since != _MAX else _mono())
        self.since_old = _MAX
        self.backoff = BACKOFF_MIN
        self.last_progress = _mono()

    def _take_ack(self, w):
        """Every record of ts <= w is committed: the kept records that
        went out whole on this connection are freed from the first up to
        the first of a later ts (the marks among them with them), and
        their bytes go back to the budget.  The others wait for the wire
        they are in, then the highest ACK is taken again."""
        if w > self.acked:
            self.acked = w
        kept = self.kept
        records = nbytes = 0
        while self.kept_out:
            b = kept[0]
            if b.max_ts <= w:
                records += b.nrec - b.start
                nbytes += b.record_bytes(b.start)
                kept.popleft()
                self.kept_out -= 1
                continue
            # A record of this batch is later than w: up to it.
            i, ts, nrec = b.start, b.ts, b.nrec
            while i < nrec and ts[i] <= w:
                i += 1
            records += i - b.start
            nbytes += b.record_bytes(b.start) - b.record_bytes(i)
            b.start = i
            break
        self.kept_pos += records
        self.kept_records -= records
        self.held -= nbytes
        if records:
            self.last_progress = _mono()

    # ------------------------------------------------------ sending

    def _set_wire(self, pre, drops=0, drop_since=0):
        """The next bytes out: pre (HELLO, SITEs, a DROPPED of `drops`
        last), then what is kept from batch kept_out on."""
        self.wire_pre = sum(map(len, pre))
        self.drop_end = self.wire_pre if drops else 0
        self.wire_drops = drops
        self.wire_drop_since = drop_since
        rest = [memoryview(b.data)[b.offset(b.start):] if b.start else b.data
                for b in itertools.islice(self.kept, self.kept_out, None)]
        if not pre and len(rest) == 1:
            self.wire = rest[0]
        else:
            self.wire = b"".join(pre + rest)
        self.off = 0

    def _pending(self):
        return self.off < len(self.wire)

    def _note_drops(self, n, since):
        if n and (not self.drops or since < self.drop_since):
            self.drop_since = since
        self.drops += n

    def _hand_drops(self):
        """The DROPPED of the wire went out whole."""
        self.drops_handed += self.wire_drops
        self.wire_drops = 0

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
                # The daemon may still acknowledge what it read.
                self.send_dead = _mono()
                return
            self.off += n
            self.sent_bytes += n
            if not self.receipt_due:
                self.last_progress = _mono()
        if not self._pending():
            self.kept_out = len(self.kept)
            if self.wire_drops:
                self._hand_drops()
            if self.acked:
                self._take_ack(self.acked)

    def _whole_out(self):
        """Records kept that the kernel took whole on this connection."""
        if self.sock is None:
            return 0
        kept = self.kept
        if not self._pending():
            return self.kept_records
        n = sum(b.nrec - b.start for b in
                itertools.islice(kept, self.kept_out))
        end = self.wire_pre
        for b in itertools.islice(kept, self.kept_out, None):
            first = b.offset(b.start)
            size = len(b.data) - first
            if end + size > self.off:
                # Items of b that end within what the kernel took.
                whole = bisect.bisect_right(b.ends, first + self.off - end)
                return n + max(min(whole, b.nrec) - b.start, 0)
            n += b.nrec - b.start
            end += size
        return n

    # ------------------------------------------------------ batches

    def _new_sites(self):
        """SITE records for the sites registered since the last."""
        table = _core.site_table
        out = []
        now = _mono()
        while self.conn_sites < len(table):
            file, line, func = table[self.conn_sites]
            self.conn_sites += 1
            out.append(_wire.site(now, 0, self.conn_sites, file, line,
                                  func))
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
        pre = self._new_sites()
        encode = self.enc.record
        data = [encode(r) for r in recs]
        size = sum(map(len, data))
        if self.held + size <= self.budget:
            ts = [r[1] for r in recs]
        else:
            data, ts, size = self._fit(recs, data)
        self.held += size
        self.kept_records += len(data)
        count, since = _core.take_drops()
        self._note_drops(count, since)
        drops = self.drops
        if drops:
            pre.append(_wire.dropped(now, 0, drops, self.drop_since))
            self.since_conn = min(self.since_conn, self.drop_since)
            self.drops = 0
        if w is not None and w > self.last_wm:
            data.append(_wire.watermark(w, 0))
            self.last_wm = w
        # The first batch of a shutdown says so: a process that ends
        # without CLOSE vanished, and the daemon cannot vouch for what it
        # still held.  Kept and sent again like a record, it reaches a
        # restarted daemon too.
        if stopping and not self.final_collected:
            data.append(_wire.close(now, 0))
        if data:
            self.kept.append(_Batch(
                b"".join(data),
                array.array("Q", itertools.accumulate(map(len, data))),
                array.array("Q", ts)))
        self._set_wire(pre, drops, self.drop_since)
        self.last_batch = now
        self.next_batch = now + self.interval
        if stopping:
            self.final_collected = True

    def _fit(self, recs, data):
        """The records that fit the budget (their bytes, their ts, the
        sum of their sizes); the others are dropped and counted (their
        DROPPED goes out with this batch)."""
        room = self.budget - self.held
        kept, ts, size = [], [], 0
        for r, b in zip(recs, data):
            if size + len(b) > room:
                self.over += 1
                self._note_drops(1, r[1])
                continue
            size += len(b)
            kept.append(b)
            ts.append(r[1])
        return kept, ts, size

    def _count_unsent(self):
        """The thread gave up, or records came after its last batch: what
        no daemon can have is counted as dropped, so that stored + dropped
        = recorded.  That is every record not yet acknowledged, but for
        those the kernel took on a connection still open when the thread
        gave up: a live daemon has them, busy as it may be, and counting
        them too would count them twice (should it die before it commits
        them, its successor marks the window incomplete).  The thread is
        gone; its state is ours."""
        q = _core._q
        late = len(q)
        q.clear()
        self.taken += late
        self.unsent += self.kept_records - self._whole_out() + late
