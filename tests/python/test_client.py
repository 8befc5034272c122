"""test_client.py: what the Python client promises, against the real
ctxleakd: no exception and no hang without a daemon or with a hostile one,
drops counted and shipped as DROPPED, the same instance after a daemon
restart, a new one after fork(), nothing a killed daemon lost left
uncounted (tests/python/test_delivery.py: sent again), watermarks that let the daemon judge while the process runs,
the caller's call sites, and the per-call table's corner cases (end from
another thread, suspend without resume)."""

import os
import socket
import threading
import time
import unittest

from harness import STATS, Client, Daemon, run_client

LEAKY = """
import asyncio, ctxleak
ctxleak.init(backend="thread", app="leaky")

async def handle(name):
    x = ctxleak.begin(name)                # line 6
    await asyncio.sleep(0)
    ctxleak.event("db.done")               # line 8
    ctxleak.tag("status", "200")           # line 9
    ctxleak.end(x)                         # line 10

async def main():
    await asyncio.gather(handle("GET /a"), handle("GET /b"))
    await handle("GET /c")

asyncio.run(main())
"""


class NoDaemon(unittest.TestCase):
    def test_every_call_without_a_daemon(self):
        t0 = time.monotonic()
        st = run_client(None, """
            import asyncio, ctxleak
            assert ctxleak.init(backend="task")
            assert not ctxleak.init(backend="task")   # once per process
            with ctxleak.request("GET /a") as a:
                with ctxleak.scope("db"):
                    ctxleak.tag("user", "alice")
                    ctxleak.event("db.done", "x" * 10000)
                token = ctxleak.capture()
                assert token == a == ctxleak.current()
            ctxleak.resume(token)
            ctxleak.suspend()
            assert ctxleak.flush()
            """ + STATS)
        # BEGIN, BEGIN, TAG, EVENT, END, END, RESUME, SUSPEND: none sent.
        self.assertEqual(st["records"], 8)
        self.assertEqual(st["dropped"], 8)
        self.assertEqual(st["connects"], 0)
        # Shutdown gives the daemon 1 s to appear; flush 1 s at most.
        self.assertLess(time.monotonic() - t0, 10)

    def test_disabled(self):
        st = run_client(None, """
            import ctxleak
            assert ctxleak.init() is False
            assert ctxleak.begin("GET /a") == 0
            ctxleak.tag("k", "v")
            assert ctxleak.capture() == 0 and ctxleak.current() == 0
            """ + STATS, env={"CTXLEAK_DISABLE": "1"})
        self.assertEqual(st["records"], 0)

    def test_bad_arguments_raise_at_init_only(self):
        run_client(None, """
            import ctxleak
            for kw in ({"backend": "fibre"}, {"backend": "observe"},
                       {"observe": 42}, {"max_buffered": 0}):
                try:
                    ctxleak.init(**kw)
                except (ValueError, TypeError):
                    continue
                raise SystemExit(f"{kw} accepted")
            """)

    def test_hostile_daemon(self):
        """A peer that sends garbage and hangs up, again and again: the
        host sees nothing of it."""
        with Daemon() as d:  # only for its directory
            d.kill()
            os.unlink(d.socket)
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(d.socket)
            srv.listen(16)
            srv.settimeout(0.1)
            stop = []

            def serve():
                while not stop:
                    try:
                        c, _ = srv.accept()
                    except OSError:
                        continue
                    c.sendall(b"\xc1\x93\x01\xff" * 64)
                    c.close()
            t = threading.Thread(target=serve)
            t.start()
            try:
                st = run_client(d, """
                    import ctxleak
                    ctxleak.init(backend="thread", flush_interval=0.001)
                    for i in range(2000):
                        with ctxleak.request("GET /a"):
                            ctxleak.tag("i", str(i))
                    ctxleak.flush()
                    """ + STATS)
            finally:
                stop.append(1)
                t.join()
                srv.close()
            self.assertEqual(st["records"], 6000)
            self.assertGreater(st["connects"], 1)


class WithDaemon(unittest.TestCase):
    def test_drops_counted_and_shipped(self):
        with Daemon("--keep", "all") as d:
            d.kill()  # the client starts while nobody listens
            c = Client(d, """
                import ctxleak
                ctxleak.init(backend="thread", max_buffered=10)
                x = ctxleak.begin("GET /a")
                for i in range(50):
                    ctxleak.event("e", str(i))
                ctxleak.end(x)
                step("buffered")
                """ + STATS)
            c.expect("buffered")
            d.start()
            c.go()
            st = c.finish()
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["records"], 52)
            self.assertEqual(st["dropped"], 42)
            p = d.process()
            self.assertEqual(p["records"], 10)
            self.assertEqual(p["dropped"], 42)
            self.assertEqual(d.scalar("SELECT sum(count) FROM drops"), 42)
            # The END was dropped: the daemon cannot know, and says so.
            self.assertEqual(d.leaks(), {"unclosed": 1})

    def test_reconnect_continues_the_instance(self):
        with Daemon("--keep", "all") as d:
            c = Client(d, """
                import ctxleak
                ctxleak.init(backend="thread")
                with ctxleak.request("GET /a"):
                    ctxleak.tag("user", "alice")
                    ctxleak.event("db.done")
                ctxleak.flush()
                step("sent")
                with ctxleak.request("GET /b"):
                    ctxleak.tag("user", "bob")
                    ctxleak.event("db.done")
                """ + STATS)
            c.expect("sent")
            d.wait_scalar("SELECT records FROM processes", 4)
            self.assertEqual(d.stop(), 0)
            d.start()
            c.go()
            st = c.finish()
            self.assertEqual(d.stop(), 0)
            p = d.process()
            self.assertEqual(p["connections"], 2)
            self.assertEqual(st["connects"], 2)
            self.assertEqual(st["records"], 8)
            self.assertEqual(st["dropped"], 0)
            self.assertEqual(p["records"], 8)
            self.assertEqual(d.leaks(), {})

    def test_killed_daemon_loss_counted_from_receipt(self):
        """Whatever a SIGKILL takes with it, records produced = records
        stored + drops reported, on both sides."""
        with Daemon("--keep", "all") as d:
            c = Client(d, """
                import ctxleak
                ctxleak.init(backend="thread")
                for i in range(200):
                    with ctxleak.request("GET /a"):
                        ctxleak.tag("i", str(i))
                ctxleak.flush()
                step("sent")
                with ctxleak.request("GET /b"):
                    pass
                """ + STATS)
            c.expect("sent")
            d.wait_scalar("SELECT count(*) FROM processes", 1)
            d.kill()
            d.start()
            c.go()
            st = c.finish()
            self.assertEqual(d.stop(), 0)
            p = d.process()
            self.assertEqual(st["records"], 602)
            self.assertEqual(p["records"], st["records"] - st["dropped"])
            self.assertEqual(p["dropped"], st["dropped"])

    def test_fork_is_a_new_process(self):
        with Daemon("--keep", "all") as d:
            st = run_client(d, """
                import os, json, ctxleak
                ctxleak.init(backend="thread")
                with ctxleak.request("GET /parent"):
                    ctxleak.tag("who", "parent")
                pid = os.fork()
                if pid == 0:
                    with ctxleak.request("GET /child"):
                        ctxleak.tag("who", "child")
                    ctxleak.shutdown()
                    os._exit(0 if ctxleak.stats()["dropped"] == 0 else 1)
                _, status = os.waitpid(pid, 0)
                assert status == 0, status
                """ + STATS)
            self.assertEqual(d.stop(), 0)
            rows = d.query("SELECT instance, pid, records FROM processes")
            self.assertEqual(len(rows), 2)
            self.assertNotEqual(rows[0][0], rows[1][0])
            self.assertNotEqual(rows[0][1], rows[1][1])
            self.assertEqual([r[2] for r in rows], [3, 3])
            self.assertEqual(st["records"], 3)
            self.assertEqual(
                d.scalar("SELECT count(DISTINCT process_id) FROM requests "
                         "WHERE name IN ('GET /parent', 'GET /child')"), 2)

    def test_watermark_lets_the_daemon_judge_a_live_process(self):
        with Daemon("--keep", "all") as d:
            c = Client(d, LEAKY + "ctxleak.flush()\nstep('sent')\n" + STATS)
            c.expect("sent")
            # Judged at a watermark while the process is still connected:
            # without one the daemon would wait for 65536 records.
            self.assertEqual(d.wait_scalar("SELECT count(*) FROM leaks", 8),
                             8)
            self.assertIsNone(d.scalar("SELECT disconnected_at FROM "
                                       "processes"))
            c.go()
            c.finish()

    def test_sites_are_the_callers(self):
        with Daemon("--keep", "all") as d:
            path = os.path.join(d.dir, "leaky.py")
            with open(path, "w") as f:
                f.write(LEAKY.lstrip("\n"))
            run_client(d, f"exec(compile(open({path!r}).read(), {path!r}, "
                          "'exec'))")
            self.assertEqual(d.stop(), 0)
            got = d.query("SELECT l.class, l.record, s.file, s.line, s.func"
                          " FROM leaks l JOIN sites s ON s.id = l.site_id "
                          "ORDER BY l.ts")
            self.assertEqual(got, [
                ("overlap", "BEGIN", path, 5, "handle"),
                ("bleed", "EVENT", path, 7, "handle"),
                ("bleed", "TAG", path, 8, "handle"),
                ("misnest", "END", path, 9, "handle"),
                ("lost", "EVENT", path, 7, "handle"),
                ("lost", "TAG", path, 8, "handle"),
                ("misnest", "END", path, 9, "handle"),
                ("stale", "BEGIN", path, 5, "handle"),
            ])
            # One SITE per call site, not per call.
            self.assertEqual(d.scalar("SELECT count(*) FROM sites"), 4)

    def test_end_restores_on_any_thread_of_the_process(self):
        """end(x) from a thread that did not begin x restores x's saved
        pair into that thread's slots (docs/DESIGN.md: known to the
        process)."""
        with Daemon("--keep", "all") as d:
            st = run_client(d, """
                import threading, ctxleak
                ctxleak.init(backend="thread")
                out = {}
                def dispatcher():
                    out["x"] = ctxleak.begin("GET /x")
                t = threading.Thread(target=dispatcher); t.start(); t.join()
                y = ctxleak.begin("job")
                ctxleak.end(out["x"])      # ends x here: restores (0, 0)
                assert ctxleak.current() == 0, ctxleak.current()
                assert ctxleak.capture() == 0
                ctxleak.end(out["x"])      # unknown now: restores nothing
                ctxleak.end(y)
                """ + STATS)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["records"], 5)
            # cur = y for x's END; then x again, already ended; y's END
            # finds the slot holding 0.
            self.assertEqual(d.leaks(), {"misnest": 3})

    def test_long_strings_cut_and_counted(self):
        with Daemon("--keep", "all") as d:
            st = run_client(d, """
                import ctxleak
                ctxleak.init(backend="thread")
                with ctxleak.request("GET /" + "a" * 5000):
                    ctxleak.event("e", "\u00e9" * 3000)
                """ + STATS)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(st["truncated"], 2)
            self.assertEqual(
                d.query("SELECT length(CAST(name AS BLOB)), "
                        "length(CAST(value AS BLOB)) FROM records "
                        "WHERE type = 'EVENT'"), [(1, 4096)])

    def test_suspend_without_resume_is_reported_and_restores_nothing(self):
        with Daemon("--keep", "all") as d:
            run_client(d, """
                import ctxleak
                ctxleak.init(backend="task")
                with ctxleak.request("GET /a") as a:
                    ctxleak.suspend()
                    assert ctxleak.capture() == a == ctxleak.current()
                    ctxleak.resume(a)
                    ctxleak.suspend()
                    ctxleak.suspend()
                    assert ctxleak.capture() == a == ctxleak.current()
                """)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.scalar("SELECT count(*) FROM records WHERE "
                                      "type = 'SUSPEND'"), 3)
            self.assertEqual(d.leaks(), {})


if __name__ == "__main__":
    unittest.main()
