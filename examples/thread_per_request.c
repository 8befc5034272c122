/*
 * thread_per_request.c: a server that runs each request on a thread of its
 * own, the model that thread-local context storage was made for.
 *
 * Requests arrive in bursts of BURST.  Each handler begins its request,
 * tags it, then waits for its upstream, which answers the whole burst at
 * once (a barrier), so that the requests of a burst are really in flight
 * together, as they are in a loaded server.  Under the thread and task
 * backends every request keeps to itself; under global the burst shares
 * one process-wide slot and each request sees the others' context.
 *
 * usage: thread_per_request [REQUESTS]
 */
#include <pthread.h>
#include <stdio.h>

#include "example.h"

#define BURST 8

struct request {
	unsigned id;
	pthread_barrier_t *upstream;
};

static void *serve(void *arg)
{
	const struct request *rq = arg;
	char item[32];
	uint64_t request, query;

	snprintf(item, sizeof(item), "item-%u", rq->id);
	request = ctxleak_begin("GET /item");
	ctxleak_tag("item", item);
	pthread_barrier_wait(rq->upstream);

	query = ctxleak_begin_child("db.query");
	ctxleak_event("db.rows", "1 row");
	ctxleak_end(query);
	ctxleak_tag("status", "200");
	ctxleak_event("response", item);
	ctxleak_end(request);
	return NULL;
}

/* One thread per request of the burst, all joined before the next. */
static void serve_burst(unsigned first, unsigned count)
{
	struct request rq[BURST];
	pthread_t thread[BURST];
	pthread_barrier_t upstream;
	unsigned i;
	int rc;

	pthread_barrier_init(&upstream, NULL, count);
	for (i = 0; i < count; i++) {
		rq[i] = (struct request){first + i, &upstream};
		rc = pthread_create(&thread[i], NULL, serve, &rq[i]);
		if (rc) {
			errno = rc;
			example_fail("pthread_create");
		}
	}
	for (i = 0; i < count; i++)
		pthread_join(thread[i], NULL);
	pthread_barrier_destroy(&upstream);
}

int main(int argc, char **argv)
{
	unsigned requests = example_requests(argc, argv, 1000);
	unsigned done;

	example_start("thread_per_request", NULL);
	for (done = 0; done < requests; done += BURST)
		serve_burst(done,
			    requests - done < BURST ? requests - done : BURST);
	printf("thread_per_request: %u requests, one thread each, %u in "
	       "flight at once, backend %s\n",
	       requests, BURST, ctxleak_backend_name());
	ctxleak_shutdown();
	return 0;
}
