/*
 * auth_pool.c: a thread pool whose own thread-local says which request a
 * worker is serving, with the bug such storage gets: set on one path and
 * not on another.  ctxleak checks it in observe mode, its main use.
 *
 * The service keeps `__thread struct request *cur_req`, and its logging
 * helper prefixes every line with cur_req's user.  Authentication sets it
 * for a signed-in request and, the bug, does nothing for an anonymous one
 * (`if (r->user) cur_req = r;` with no else): an anonymous request runs
 * with the pointer of the last signed-in request its worker served, and
 * its log line names that request's user.  The requests live in one array
 * for the whole run, so the stale pointer still points at valid memory:
 * nothing crashes, nothing looks wrong.  With --fixed the else branch sets
 * cur_req too, and every request logs under itself.
 *
 * ctxleak reads that storage through a getter (cur_req's ctx, 0 when it is
 * NULL) and is given no setter: observe mode, the default here.  Each
 * request is marked with ctxleak_begin/ctxleak_end on its worker, which is
 * also how the library knows the truth; every record carries what cur_req
 * said at that moment, and the library never writes cur_req.  Under a
 * library-kept backend (CTXLEAK_BACKEND=thread) the same program gives no
 * findings, fixed or not: the library's own slot follows begin and end
 * and never reads cur_req.
 *
 * The findings are exact, whatever the scheduling.  The dispatcher deals
 * request i to worker i % WORKERS, each worker having a queue of its own
 * (as memcached deals connections), and request i is anonymous when
 * i % ANON_EVERY == ANON_EVERY - 1.  Since ANON_EVERY > WORKERS, each
 * worker's first request is signed in, so every anonymous request finds
 * cur_req holding a request that has already ended (p, the last signed-in
 * one of its worker) and gives exactly:
 *   - stale on its BEGIN: the storage still held p when it began;
 *   - stale on its log event: recorded under p, ended;
 *   - misnest on its END: the storage says p is current, not the request.
 * So with REQUESTS n: 2 * (n / ANON_EVERY) stale, n / ANON_EVERY misnest,
 * nothing else; 0 findings with --fixed.  Every signed-in request sets
 * cur_req to itself before it begins (its ctx still 0, so it begins over
 * nothing) and is clean.
 *
 * usage: auth_pool [--fixed] [REQUESTS]
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example.h"

#define WORKERS	   4
#define ANON_EVERY 5 /* one request in 5 is anonymous */

_Static_assert(ANON_EVERY > WORKERS,
	       "each worker's first request must be signed in");

struct request {
	struct example_link link; /* in its worker's queue; first */
	unsigned id;
	const char *user; /* NULL: anonymous */
	uint64_t ctx;	  /* ctxleak's ID, 0 until it begins */
};

struct worker {
	pthread_t thread;
	struct example_queue queue; /* its requests, in dealing order */
};

/* The service's own storage: the request this thread is serving. */
static __thread struct request *cur_req;
static int fixed;

/* Observe mode: what the service's storage says, in ctxleak's terms. */
static uint64_t observe_cur_req(void *user)
{
	(void)user;
	return cur_req ? cur_req->ctx : 0;
}

/*
 * The service's logging helper: every line says whose request it is, from
 * cur_req.  It takes the caller's site, so that ctxleak files each line
 * under the line that logged it, not under this function (see my_log).
 */
__attribute__((format(printf, 2, 3))) static void
my_log_at(struct ctxleak_site *site, const char *fmt, ...)
{
	char line[128];
	int n;
	va_list ap;

	n = snprintf(line, sizeof(line),
		     "%s: ", cur_req && cur_req->user ? cur_req->user : "-");
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	va_end(ap);
	ctxleak_event_at(site, "log", line);
}

#define my_log(...) my_log_at(CTXLEAK_SITE_HERE, __VA_ARGS__)

static void authenticate(struct request *r)
{
	if (r->user)
		cur_req = r; /* signed in: its log lines carry its user */
	else if (fixed)
		cur_req = r; /* anonymous, but this request all the same */
	/* else (the bug): cur_req keeps the last signed-in request */
}

static void serve(struct request *r)
{
	authenticate(r);
	r->ctx = ctxleak_begin("GET /item");
	my_log("GET /item/%u", r->id);
	ctxleak_end(r->ctx);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct request *r;

	while ((r = (struct request *)example_queue_pop(&w->queue)))
		serve(r);
	return NULL;
}

int main(int argc, char **argv)
{
	static const char *const users[] = {"alice", "bob", "carol"};
	unsigned requests = example_requests(argc, argv, 1000);
	struct worker pool[WORKERS];
	struct ctxleak_options opt;
	const char *env = getenv("CTXLEAK_BACKEND");
	struct request *req;
	unsigned i;
	int rc;

	fixed = argc > 1 && strcmp(argv[1], "--fixed") == 0;
	ctxleak_options_init(&opt);
	opt.custom_get = observe_cur_req;
	/* Observe unless CTXLEAK_BACKEND names another backend to compare. */
	if (!env || !*env)
		opt.backend = CTXLEAK_BACKEND_OBSERVE;
	example_start("auth_pool", &opt);

	/* Whole for the run: a stale cur_req still points at a request. */
	req = calloc(requests, sizeof(*req));
	if (!req)
		example_fail("calloc");
	for (i = 0; i < WORKERS; i++) {
		example_queue_init(&pool[i].queue);
		rc = pthread_create(&pool[i].thread, NULL, worker_main,
				    &pool[i]);
		if (rc) {
			errno = rc;
			example_fail("pthread_create");
		}
	}
	for (i = 0; i < requests; i++) {
		req[i].id = i;
		if (i % ANON_EVERY != ANON_EVERY - 1)
			req[i].user = users[i % 3];
		example_queue_push(&pool[i % WORKERS].queue, &req[i].link);
	}
	for (i = 0; i < WORKERS; i++)
		example_queue_close(&pool[i].queue);
	for (i = 0; i < WORKERS; i++)
		pthread_join(pool[i].thread, NULL);
	printf("auth_pool: %u requests (%u anonymous), %u workers, backend "
	       "%s, cur_req %s\n",
	       requests, requests / ANON_EVERY, WORKERS, ctxleak_backend_name(),
	       fixed ? "set on every path" : "set for signed-in requests only");
	ctxleak_shutdown();
	free(req);
	return 0;
}
