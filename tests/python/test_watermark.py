"""test_watermark.py: the WATERMARK never passes a record still in flight.

A record's ts is read by `ts = _mono()` and the record appended by the
next statement; a thread the GIL leaves between the two holds a record
older than the queue's newest.  watermark_bound finds such a thread in
the stacks of the others: below its ts when it has kept it, no watermark
at all when its clock reading is not yet in a variable.  Here a thread is
stopped (by a line trace) at each of those points while the test asks."""

import inspect
import os
import sys
import threading
import time
import unittest

from harness import PACKAGE

sys.path.insert(0, PACKAGE)
import ctxleak  # noqa: E402
from ctxleak import _core  # noqa: E402


def line_of(fn, text):
    lines, first = inspect.getsourcelines(fn)
    (i,) = [i for i, ln in enumerate(lines) if ln.strip().startswith(text)]
    return first + i


class InFlight(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.environ["CTXLEAK_QUIET"] = "1"
        ctxleak.init(socket="/nonexistent/ctxleak.sock", backend="thread",
                     flush_interval=3600)

    @classmethod
    def tearDownClass(cls):
        ctxleak.shutdown()

    def stop_thread_at(self, line):
        """A thread calling event(), stopped before `line` of _note runs;
        returns (thread, release, its frame's locals at the stop)."""
        reached, release, seen = threading.Event(), threading.Event(), {}
        code = _core._note.__code__

        def trace(frame, what, arg):
            if frame.f_code is not code:
                return None
            if what == "line" and frame.f_lineno == line:
                seen.update(frame.f_locals)
                reached.set()
                release.wait(10)
            return trace

        def run():
            sys.settrace(trace)
            ctxleak.event("in flight")
            sys.settrace(None)
        t = threading.Thread(target=run)
        t.start()
        self.assertTrue(reached.wait(10))
        return t, release, seen

    def test_kept_ts_lowers_the_watermark(self):
        t, release, seen = self.stop_thread_at(
            line_of(_core._note, "_q.append("))
        try:
            ts = seen["ts"]
            time.sleep(0.01)
            now = time.monotonic_ns()
            self.assertGreater(now - 1, ts - 1)
            self.assertEqual(_core.watermark_bound(now - 1,
                                                   threading.get_ident()),
                             ts - 1)
        finally:
            release.set()
            t.join()
        # Gone: nothing holds the watermark back any more.
        now = time.monotonic_ns()
        self.assertEqual(_core.watermark_bound(now, threading.get_ident()),
                         now)

    def test_clock_being_read_means_no_watermark(self):
        t, release, seen = self.stop_thread_at(
            line_of(_core._note, "ts = _mono()"))
        try:
            self.assertNotIn("ts", seen)
            self.assertIsNone(_core.watermark_bound(time.monotonic_ns(),
                                                    threading.get_ident()))
        finally:
            release.set()
            t.join()

    def test_before_the_clock_nothing_to_wait_for(self):
        t, release, _ = self.stop_thread_at(
            line_of(_core._note, "if len(_q) >= _limit:"))
        try:
            now = time.monotonic_ns()
            self.assertEqual(_core.watermark_bound(now,
                                                   threading.get_ident()),
                             now)
        finally:
            release.set()
            t.join()


if __name__ == "__main__":
    unittest.main()
