"""test_delivery.py: protocol version 2 as the Python client speaks it
(PROTOCOL.md 2.3), against the real ctxleakd: what a daemon killed with
SIGKILL had not committed is sent again to its successor, what a cut
connection carried is not stored twice, an orderly exit says CLOSE (a
killed process is vanished), and the records kept for the daemon's ACK
stay within buffer_limit, the rest counted as dropped.

Every request of a worker here is a BEGIN, a TAG i=N with N unique and an
END, so the database shows a record stored twice (a TAG value twice) or
lost (stored + dropped below produced)."""

import json
import os
import re
import signal
import socket
import threading
import time
import unittest

from harness import PACKAGE, STATS, Client, Daemon, run_client
import sys
sys.path.insert(0, PACKAGE)
from ctxleak import _wire  # noqa: E402

# A worker that keeps producing in a thread of its own, a request (three
# records) a millisecond at most, until the test lets its main thread go
# on.
PRODUCER = """
import json, threading, time, ctxleak
ctxleak.init(backend="thread", flush_interval=0.005)
done = threading.Event()
count = [0]

def produce():
    while not done.is_set():
        i = count[0]
        with ctxleak.request("GET /work"):
            ctxleak.tag("i", str(i))
        count[0] = i + 1
        time.sleep(0.001)

t = threading.Thread(target=produce)
t.start()
step("producing")
done.set()
t.join()
print(json.dumps({"requests": count[0]}), flush=True)
""" + STATS


def stored_once(test, d, st, requests):
    """Every record produced is stored exactly once, or counted as
    dropped by the client."""
    test.assertEqual(st["records"], 3 * requests)
    tags = d.query("SELECT value, count(*) FROM records WHERE type = 'TAG'"
                   " GROUP BY value HAVING count(*) > 1")
    test.assertEqual(tags, [], "records stored twice")
    rows = d.scalar("SELECT count(*) FROM records")
    p = d.process()
    test.assertEqual(rows, p["records"])
    test.assertEqual(rows, st["records"] - st["dropped"],
                     "records lost and not counted")
    test.assertEqual(p["dropped"], st["dropped"])


def stopped_line(d):
    """The counts of the daemon's log line at stop."""
    m = re.search(r"stopped: .* (\d+) records received again", d.read_log())
    return int(m.group(1))


class Proxy:
    """A socket between the client and the daemon that the test can cut,
    and whose daemon-to-client direction it can hold back (the ACKs are
    then lost, as a connection that breaks loses them)."""

    def __init__(self, path, target):
        self.target = target  # the daemon's socket
        self.hold = False  # discard what the daemon sends
        self.conns = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.srv.settimeout(0.1)
        self.closed = False
        self.thread = threading.Thread(target=self._accept)
        self.thread.start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            d = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            d.connect(self.target)
            self.conns += [c, d]
            for a, b, back in ((c, d, False), (d, c, True)):
                threading.Thread(target=self._pump, args=(a, b, back),
                                 daemon=True).start()

    def _pump(self, a, b, back):
        while True:
            try:
                data = a.recv(65536)
                if not data:
                    break
                if not (back and self.hold):
                    b.sendall(data)
            except OSError:
                break
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        """Both ends of every connection so far close."""
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.conns = []

    def close(self):
        self.closed = True
        self.thread.join()
        self.cut()
        self.srv.close()


class Delivery(unittest.TestCase):
    def test_ack_covers_only_what_is_stored(self):
        """One watermark over more records than the daemon commits at once
        (10000 rows): a commit made while it judges them must not
        acknowledge the watermark.  Killed right after its first ACK, the
        daemon has stored every record that ACK covers."""
        requests = 4000  # 12000 records
        with Daemon("--keep", "all") as d:
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            out = [_wire.hello(0x5EED, os.getpid(), "ack", "thread", None,
                               0, "test_delivery", seq=0)]
            ts, sent = time.monotonic_ns(), []
            for i in range(requests):
                x = i + 1
                out += [_wire.begin(ts, 1, x, 0, 0, 0, 0, "GET /r"),
                        _wire.tag(ts + 1, 1, x, x, 0, "i", str(i)),
                        _wire.end(ts + 2, 1, x, x, 0, x)]
                sent += [ts, ts + 1, ts + 2]
                ts += 10
            out.append(_wire.watermark(ts, 1))
            s.sendall(b"".join(out))
            s.settimeout(20)
            acked, buf = 0, b""
            while not acked:
                buf += s.recv(4096)
                pos = 0
                while True:
                    try:
                        kind, f, pos = _wire.parse_reply(buf, pos)
                    except _wire.Incomplete:
                        break
                    if kind == _wire.ACK:
                        acked = f[0]
                buf = buf[pos:]
            d.kill()
            s.close()
            d.start()
            d.stop()
            covered = sum(1 for t in sent if t <= acked)
            self.assertGreater(covered, 0)
            self.assertEqual(
                d.scalar("SELECT count(*) FROM records WHERE ts <= ?",
                         acked), covered,
                "the first ACK covered records the daemon had not stored")

    def test_daemon_killed_twice_while_producing(self):
        """SIGKILL loses what the daemon had not committed; the client
        kept it and sends it to the next daemon, which drops what the
        dead one had committed: stored once each, nothing dropped."""
        with Daemon("--keep", "all") as d:
            c = Client(d, PRODUCER)
            c.expect("producing")
            had = 0
            for _ in range(2):
                # This daemon has the worker's new records.
                had = d.wait_scalar("SELECT records FROM processes",
                                    had + 300)
                time.sleep(0.15)  # records received since the last commit
                d.kill()
                time.sleep(0.1)  # the worker produces with no daemon
                d.start()
                had = d.scalar("SELECT records FROM processes")
            d.wait_scalar("SELECT records FROM processes", had + 300)
            c.go()
            requests = json.loads(c.proc.stdout.readline())["requests"]
            st = c.finish()
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["connects"], 3)
            self.assertEqual(st["dropped"], 0)
            stored_once(self, d, st, requests)
            self.assertEqual(d.process()["vanished"], 0)

    def test_cut_connection_resent_from_its_position(self):
        """The connection breaks with the daemon alive and ACKs lost: the
        client sends again everything it kept, the HELLO's seq says from
        which position, and the daemon drops the records it has."""
        with Daemon("--keep", "all", "--linger", "10s") as d:
            path = os.path.join(d.dir, "proxy.sock")
            proxy = Proxy(path, d.socket)
            try:
                c = Client(d, """
                    import json, ctxleak
                    ctxleak.init(backend="thread")
                    def produce(first):
                        for i in range(first, first + 300):
                            with ctxleak.request("GET /work"):
                                ctxleak.tag("i", str(i))
                        ctxleak.flush()
                    produce(0)
                    step("acknowledged")
                    produce(300)
                    step("held")
                    produce(600)
                    """ + STATS, env={"CTXLEAK_SOCKET": path})
                c.expect("acknowledged")
                d.wait_scalar("SELECT records FROM processes", 900)
                time.sleep(0.5)  # the ACK of those reaches the client
                proxy.hold = True
                c.go()
                c.expect("held")
                # Committed, but the client does not know it.
                d.wait_scalar("SELECT records FROM processes", 1800)
                time.sleep(0.3)
                proxy.cut()
                proxy.hold = False
                c.go()
                st = c.finish()
            finally:
                proxy.close()
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["connects"], 2)
            self.assertEqual(st["dropped"], 0)
            self.assertEqual(d.process()["connections"], 2)
            stored_once(self, d, st, 900)
            # What was held back went again, and was dropped as such.
            self.assertGreaterEqual(stopped_line(d), 600)

    def test_orderly_exit_closes_a_killed_one_vanished(self):
        with Daemon("--keep", "all") as d:
            # No shutdown(): the one atexit runs says CLOSE.
            run_client(d, """
                import ctxleak
                ctxleak.init(backend="thread")
                with ctxleak.request("GET /a"):
                    ctxleak.tag("i", "1")
                """)
            d.wait_scalar("SELECT count(*) FROM processes WHERE "
                          "disconnected_at IS NOT NULL", 1)
            c = Client(d, """
                import ctxleak
                ctxleak.init(backend="thread")
                with ctxleak.request("GET /b"):
                    ctxleak.tag("i", "2")
                ctxleak.flush()
                step("sent")
                """)
            c.expect("sent")
            d.wait_scalar("SELECT count(*) FROM records", 6)
            c.proc.kill()
            c.proc.wait()
            d.wait_scalar("SELECT count(*) FROM processes WHERE "
                          "disconnected_at IS NOT NULL", 2)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(
                d.query("SELECT r.name, p.vanished FROM processes p JOIN "
                        "requests r ON r.process_id = p.id ORDER BY r.name"),
                [("GET /a", 0), ("GET /b", 1)])

    def test_kept_records_within_the_budget(self):
        """While the daemon acknowledges nothing (stopped), the records
        kept for it stay within buffer_limit and the rest are dropped and
        counted; once it acknowledges, the budget is free again."""
        with Daemon("--keep", "all") as d:
            c = Client(d, """
                import json, time, ctxleak
                ctxleak.init(backend="thread", buffer_limit=20000)
                def produce(phase, n):
                    for i in range(n):
                        with ctxleak.request("GET /" + phase):
                            ctxleak.tag("i", phase + str(i))
                    ctxleak.flush()
                def acknowledged():
                    deadline = time.monotonic() + 20
                    while ctxleak.stats()["kept_bytes"] and \\
                            time.monotonic() < deadline:
                        time.sleep(0.01)
                produce("before", 10)
                acknowledged()
                step("ready")
                produce("stalled", 1000)
                print(json.dumps(ctxleak.stats()), flush=True)
                step("stalled")
                acknowledged()
                produce("after", 10)
                """ + STATS)
            c.expect("ready")
            d.proc.send_signal(signal.SIGSTOP)
            try:
                c.go()
                mid = json.loads(c.proc.stdout.readline())
                c.expect("stalled")
            finally:
                d.proc.send_signal(signal.SIGCONT)
            c.go()
            st = c.finish()
            self.assertEqual(d.stop(), 0)
            # 3000 records of about 40 bytes: a sixth of them fit.
            self.assertLessEqual(mid["kept_bytes"], 20000)
            self.assertGreater(mid["kept_bytes"], 20000 - 100)
            self.assertGreater(mid["dropped"], 2000)
            self.assertEqual(st["dropped"], mid["dropped"])
            self.assertEqual(st["kept_bytes"], 0)
            stored_once(self, d, st, 1020)
            self.assertEqual(d.scalar("SELECT sum(count) FROM drops"),
                             st["dropped"])
            # Before and after the stall, nothing was dropped.
            self.assertEqual(
                d.scalar("SELECT count(*) FROM records WHERE type = 'TAG' "
                         "AND (value LIKE 'before%' OR value LIKE 'after%')"),
                20)

    def test_shutdown_counts_only_what_no_live_daemon_took(self):
        """Shutdown gives up after 1 s without an ACK.  Records the
        kernel took for a daemon that is alive (stopped here: busy) are
        its own, not dropped; records kept for a daemon that died are
        dropped, and counted."""
        script = """
            import ctxleak
            ctxleak.init(backend="thread")
            with ctxleak.request("GET /a"):
                ctxleak.flush()
                step("sent")
                for i in range(100):
                    ctxleak.tag("i", str(i))
            """ + STATS
        with Daemon("--keep", "all") as d:
            c = Client(d, script)
            c.expect("sent")
            d.proc.send_signal(signal.SIGSTOP)
            try:
                c.go()
                st = c.finish()
            finally:
                d.proc.send_signal(signal.SIGCONT)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["records"], 102)
            self.assertEqual(st["dropped"], 0)
            self.assertEqual(d.scalar("SELECT count(*) FROM records"), 102)
        with Daemon("--keep", "all") as d:
            c = Client(d, script)
            c.expect("sent")
            d.wait_scalar("SELECT count(*) FROM processes", 1)
            d.kill()
            c.go()
            st = c.finish()
            d.start()
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["records"], 102)
            # The BEGIN, or nothing, was committed before the kill.
            self.assertGreaterEqual(st["dropped"], 101)
            self.assertEqual(d.scalar("SELECT count(*) FROM records"),
                             st["records"] - st["dropped"])


if __name__ == "__main__":
    unittest.main()
