"""test_spec.py: what PROTOCOL.md says the daemon does where a client
breaks a rule without an error, checked on a raw stream written with the
Python client's encoder: a record that names an undefined site, a SITE
that redefines an ID, a record at or below a watermark already sent; and
the two counts of records (the log line at stop, processes.records), and
processes.hello_pid NULL unless HELLO's pid differs."""

import os
import re
import socket
import sys
import unittest

from harness import PACKAGE, Daemon

sys.path.insert(0, PACKAGE)
from ctxleak import _wire  # noqa: E402

A = 0x9C2F11D0A4B3E871
T = 5000000000


class Spec(unittest.TestCase):
    def stream(self, d, pid, *records):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.socket)
        s.sendall(_wire.hello(0x5EED, pid, "raw", "thread") +
                  b"".join(records))
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):  # the RECEIPT, then the daemon's close
            pass
        s.close()

    def test_rule_breaking_records_are_not_errors(self):
        with Daemon("--keep", "all") as d:
            self.stream(
                d, os.getpid(),
                _wire.site(T, 1, 1, "a.c", 10, "f"),
                _wire.begin(T + 1, 1, A, 0, 1, 0, 0, "GET /a"),
                _wire.tag(T + 2, 1, A, A, 7, "k", "undefined site"),
                _wire.site(T + 3, 1, 1, "b.c", 20, "g"),
                _wire.event(T + 4, 1, A, A, 1, "redefined", None),
                _wire.watermark(T + 100, 1),
                _wire.event(T + 50, 1, A, A, 1, "below the watermark",
                            None),
                _wire.end(T + 200, 1, A, A, 1, A),
                _wire.watermark(T + 300, 1))
            self.assertEqual(d.stop(), 0)
            p = d.process()
            self.assertIsNone(p["error"])
            self.assertEqual(p["connections"], 1)
            # BEGIN, TAG, EVENT, EVENT, END; no SITE or WATERMARK.
            self.assertEqual(p["records"], 5)
            self.assertIsNone(p["hello_pid"])
            self.assertEqual(d.query(
                "SELECT r.type, r.name, s.file FROM records r LEFT JOIN "
                "sites s ON s.id = r.site_id ORDER BY r.ts"), [
                ("BEGIN", "GET /a", "a.c"), ("TAG", "k", None),
                ("EVENT", "redefined", "b.c"),
                ("EVENT", "below the watermark", "b.c"),
                ("END", None, "b.c")])
            self.assertEqual(d.scalar("SELECT count(*) FROM sites"), 2)
            self.assertEqual(d.leaks(), {})
            # The log line counts every record, SITE and WATERMARK too.
            m = re.search(r"stopped: .* (\d+) records,", d.read_log())
            self.assertEqual(int(m.group(1)), 9)

    def test_hello_pid_kept_when_it_differs(self):
        with Daemon() as d:
            self.stream(d, 1, _wire.begin(T, 1, A, 0, 0, 0, 0, "x"))
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.process()["hello_pid"], 1)
            self.assertEqual(d.process()["pid"], os.getpid())


if __name__ == "__main__":
    unittest.main()
