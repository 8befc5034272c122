"""test_seed.py: the seed's cases, each a Python program run against the
real ctxleakd, with the exact findings per class and the daemon's
recommendation: which storage is right for which concurrency model,
measured by the daemon's what-if (the backends with no findings).

  thread per request, threading.local         clean; thread and task
  asyncio, threading.local                    leaks; task
  asyncio, contextvars                        clean; task
  gevent without monkey-patching, threading.local   leaks; task
  gevent with patch_all(), threading.local    clean (a local per greenlet)
  thread pool, storage not carried            lost; global and task (the
                                              requests come one at a time)
  thread pool, context carried                clean

The interleaved cases replay docs/DESIGN.md's worked example: requests a and b
interleave on one thread (a yields after its begin, b begins, then a
records an event and a tag and ends, then b does), and c begins after
both: with a storage shared by the two, 1 overlap (b begins over a),
2 bleed (a's event and tag land in b), 2 misnest (a ends while b is
current; b ends while nothing is), 2 lost (b's event and tag find
nothing) and 1 stale (c begins over a, which ended).  Each process sends
3 requests x 4 records = 12 records.
"""

import unittest

from harness import STATS, Daemon, run_client

WORKED_LEAKS = {"overlap": 1, "bleed": 2, "misnest": 2, "lost": 2,
                "stale": 1}

ASYNCIO = """
import asyncio, ctxleak
ctxleak.init(backend=BACKEND, app="asyncio")

async def handle(name):
    x = ctxleak.begin(name)
    await asyncio.sleep(0)
    ctxleak.event("db.done")
    ctxleak.tag("status", "200")
    ctxleak.end(x)

async def main():
    await asyncio.gather(handle("GET /a"), handle("GET /b"))
    await handle("GET /c")

asyncio.run(main())
"""

GEVENT = """
import gevent, ctxleak
ctxleak.init(backend="thread", app="gevent")

def handle(name):
    x = ctxleak.begin(name)
    gevent.sleep(0)
    ctxleak.event("db.done")
    ctxleak.tag("status", "200")
    ctxleak.end(x)

gevent.joinall([gevent.spawn(handle, "GET /a"),
                gevent.spawn(handle, "GET /b")])
gevent.spawn(handle, "GET /c").join()
"""

THREADS = """
import threading, ctxleak
ctxleak.init(backend="thread", app="threads")

def handle(name):
    with ctxleak.request(name):
        ctxleak.tag("user", name)
        ctxleak.event("db.done")

for i in range(4):
    t = threading.Thread(target=handle, args=(f"GET /{i}",))
    t.start()
    t.join() if i % 2 else None
for t in threading.enumerate():
    if t is not threading.current_thread():
        t.join()
"""

# The handler thread begins each request and hands two pieces of work to
# a pool; SUBMIT says how.  The service keeps its request in its own
# ContextVar, which ctxleak observes.
POOL = """
import concurrent.futures, contextvars, ctxleak
current_request = contextvars.ContextVar("current_request", default=0)
ctxleak.init(backend=BACKEND,
             observe=current_request.get if OBSERVE else None,
             app="pool")

def work(i):
    ctxleak.tag("part", str(i))
    ctxleak.event("work.done")

with concurrent.futures.ThreadPoolExecutor(2) as pool:
    for name in ("GET /a", "GET /b", "GET /c"):
        ctx = ctxleak.begin(name)
        token = current_request.set(ctx)
        futures = [SUBMIT for i in range(2)]
        for f in futures:
            f.result()
        ctxleak.end(ctx)
        current_request.reset(token)
"""


class Seed(unittest.TestCase):
    def run_case(self, script, records, leaks, model, recommend,
                 backend, env=None):
        with Daemon("--keep", "all") as d:
            st = run_client(d, script + STATS, env)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.leaks(), leaks)
            p = d.process()
            self.assertEqual(st["records"], records)
            self.assertEqual(st["dropped"], 0)
            self.assertEqual(p["records"], st["records"] - st["dropped"])
            self.assertEqual(p["backend"], backend)
            self.assertEqual(p["model"], model, p["model_evidence"])
            # A tuple: what the scheduling decides (whether two
            # threads' requests happened to be open at once).
            self.assertIn(p["recommend"], recommend
                          if isinstance(recommend, tuple) else (recommend,))
            return p

    def test_thread_per_request_threading_local_clean(self):
        p = self.run_case(THREADS, 16, {}, "thread-per-request",
                          ("thread,task", "thread,global,task"), "thread")
        self.assertIn("findings under thread 0,", p["model_evidence"])

    def test_asyncio_threading_local_leaks(self):
        p = self.run_case('BACKEND = "thread"' + ASYNCIO, 12, WORKED_LEAKS,
                          "event-loop", "task", "thread")
        self.assertIn("task keeps them apart", p["model_evidence"])

    def test_asyncio_contextvars_clean(self):
        p = self.run_case('BACKEND = "task"' + ASYNCIO, 12, {},
                          "event-loop", "task", "task")
        self.assertIn("task keeps them apart", p["model_evidence"])

    def test_gevent_unpatched_threading_local_leaks(self):
        self.run_case(GEVENT, 12, WORKED_LEAKS, "event-loop", "task",
                      "thread")

    def test_gevent_patch_all_clean(self):
        p = self.run_case("from gevent import monkey; monkey.patch_all()\n"
                          + GEVENT, 12, {}, "event-loop", "task", "thread")
        self.assertIn("task keeps them apart", p["model_evidence"])

    # Per request: BEGIN, END, and in each of two pieces of work RESUME,
    # TAG, EVENT, SUSPEND: 10 records, 30 in all.
    def test_pool_threading_local_lost(self):
        self.run_case(POOL.replace("BACKEND", '"thread"')
                      .replace("OBSERVE", "False")
                      .replace("SUBMIT", "ctxleak.submit(pool, work, i)"),
                      30, {"lost": 12}, "thread-pool", "global,task",
                      "thread")

    def test_pool_contextvar_not_carried_lost(self):
        # executor.submit as the service writes it: its ContextVar stays
        # behind; only ctxleak's truth goes with the work.
        self.run_case(POOL.replace("BACKEND", "None")
                      .replace("OBSERVE", "True")
                      .replace("SUBMIT", "pool.submit(ctxleak.carry(work, "
                               "copy_context=False), i)"),
                      30, {"lost": 12}, "thread-pool", "global,task",
                      "observe")

    def test_pool_context_carried_clean(self):
        p = self.run_case(POOL.replace("BACKEND", "None")
                          .replace("OBSERVE", "True")
                          .replace("SUBMIT", "ctxleak.submit(pool, work, i)"),
                          30, {}, "thread-pool", "global,task", "observe")
        self.assertIn("global and task keep them apart",
                      p["model_evidence"])

    def test_pool_task_backend_clean(self):
        self.run_case(POOL.replace("BACKEND", '"task"')
                      .replace("OBSERVE", "False")
                      .replace("SUBMIT", "ctxleak.submit(pool, work, i)"),
                      30, {}, "thread-pool", "global,task", "task")


if __name__ == "__main__":
    unittest.main()
