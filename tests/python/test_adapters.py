"""test_adapters.py: the WSGI and ASGI middleware and the executor helpers
against the real ctxleakd: one request per HTTP request, named and tagged
with method and path, ended when the response is done (also when the
application raises), and work handed to a pool or run_in_executor carried
in the request's context."""

import unittest

from harness import STATS, Daemon, run_client


class Adapters(unittest.TestCase):
    def requests(self, d):
        return d.query("SELECT r.name, group_concat(t.key || '=' || "
                       "t.value, ' ') FROM requests r JOIN tags t ON "
                       "t.request_id = r.id GROUP BY r.id ORDER BY r.id")

    def test_wsgi(self):
        with Daemon("--keep", "all") as d:
            st = run_client(d, """
                import ctxleak
                from ctxleak.wsgi import Middleware
                ctxleak.init(backend="thread")

                def app(environ, start_response):
                    if environ["PATH_INFO"] == "/boom":
                        raise RuntimeError("boom")
                    ctxleak.tag("user", "alice")
                    start_response("200 OK", [])
                    return [b"hello"]

                wrapped = Middleware(app)
                body = wrapped({"REQUEST_METHOD": "GET",
                                "PATH_INFO": "/cart"}, lambda *a: None)
                assert ctxleak.current() != 0   # until the server closes
                assert b"".join(body) == b"hello"
                body.close()
                assert ctxleak.current() == 0
                try:
                    wrapped({"REQUEST_METHOD": "POST", "PATH_INFO": "/boom"},
                            lambda *a: None)
                except RuntimeError:
                    pass
                assert ctxleak.current() == 0
                """ + STATS)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.leaks(), {})
            self.assertEqual(st["records"], 9)
            self.assertEqual(self.requests(d), [
                ("GET /cart", "http.method=GET http.path=/cart user=alice"),
                ("POST /boom", "http.method=POST http.path=/boom"),
            ])

    def test_asgi_interleaved_requests(self):
        """Two requests served concurrently on one loop: each keeps its
        own context under the task backend."""
        with Daemon("--keep", "all") as d:
            st = run_client(d, """
                import asyncio, ctxleak
                from ctxleak.asgi import Middleware
                ctxleak.init(backend="task")

                async def app(scope, receive, send):
                    if scope["type"] != "http":
                        assert ctxleak.current() == 0
                        return
                    await asyncio.sleep(0)
                    ctxleak.tag("user", scope["path"][1:])
                    await send({"type": "http.response.start",
                                "status": 200})

                async def main():
                    wrapped = Middleware(app)
                    async def receive():
                        return {"type": "http.request"}
                    async def send(msg):
                        await asyncio.sleep(0)
                    await asyncio.gather(*(
                        wrapped({"type": "http", "method": "GET",
                                 "path": p}, receive, send)
                        for p in ("/alice", "/bob")))
                    await wrapped({"type": "lifespan"}, receive, send)

                asyncio.run(main())
                """ + STATS)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.leaks(), {})
            self.assertEqual(st["records"], 10)
            self.assertEqual(self.requests(d), [
                ("GET /alice",
                 "http.method=GET http.path=/alice user=alice"),
                ("GET /bob", "http.method=GET http.path=/bob user=bob"),
            ])

    def test_run_in_executor_carries_the_request(self):
        with Daemon("--keep", "all") as d:
            st = run_client(d, """
                import asyncio, concurrent.futures, ctxleak
                ctxleak.init(backend="task")

                def work(i):
                    ctxleak.tag("part", str(i))
                    return ctxleak.current()

                async def handle(name, pool):
                    with ctxleak.request(name) as x:
                        loop = asyncio.get_running_loop()
                        got = await ctxleak.run_in_executor(loop, pool,
                                                            work, 1)
                        assert got == x, (got, x)

                async def main():
                    with concurrent.futures.ThreadPoolExecutor(1) as pool:
                        await asyncio.gather(handle("GET /a", pool),
                                             handle("GET /b", pool))

                asyncio.run(main())
                """ + STATS)
            self.assertEqual(d.stop(), 0)
            self.assertEqual(d.leaks(), {})
            # BEGIN, RESUME, TAG, SUSPEND, END per request.
            self.assertEqual(st["records"], 10)
            self.assertEqual(
                d.query("SELECT s.func, count(*) FROM records r JOIN sites "
                        "s ON s.id = r.site_id WHERE r.type IN ('RESUME', "
                        "'SUSPEND') GROUP BY s.func"), [("handle", 4)])


if __name__ == "__main__":
    unittest.main()
