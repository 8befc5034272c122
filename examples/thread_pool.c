/*
 * thread_pool.c: a dispatcher that accepts requests and a pool of worker
 * threads that serve them, the shape of most C job servers.
 *
 * The dispatcher begins each request and tags it, then hands it to the
 * pool as a work item carrying ctxleak_capture(); a worker resumes that
 * token, does the work, ends the request and suspends.  The dispatcher
 * serves each accepted request as a continuation of its listener, so the
 * request it just queued is no longer current when it accepts the next.
 *
 * With the task backend the context follows the work item and every record
 * lands in its own request.  With thread and global it does not: the worker
 * records its work under whatever its slot held (nothing, or a request the
 * dispatcher began earlier) and the dispatcher's slot still holds the
 * previous request when the next one begins.
 *
 * usage: thread_pool [REQUESTS]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "example.h"

#define WORKERS 4

struct job {
	struct example_link link; /* in the pool's queue; first */
	unsigned id;
	uint64_t request; /* to end it */
	uint64_t token;	  /* the context it runs in */
};

static void run_job(struct job *job)
{
	char item[32];
	uint64_t query;

	snprintf(item, sizeof(item), "item-%u", job->id);
	ctxleak_resume(job->token);
	ctxleak_event("dequeued", item);
	query = ctxleak_begin_child("db.query");
	ctxleak_event("db.rows", "1 row");
	ctxleak_end(query);
	ctxleak_tag("status", "200");
	ctxleak_end(job->request);
	ctxleak_suspend();
}

static void *worker(void *arg)
{
	struct example_queue *q = arg;
	struct job *job;

	while ((job = (struct job *)example_queue_pop(q))) {
		run_job(job);
		free(job);
	}
	return NULL;
}

static void accept_request(struct example_queue *q, uint64_t listener,
			   unsigned id)
{
	struct job *job = malloc(sizeof(*job));
	char item[32];

	if (!job)
		example_fail("malloc");
	snprintf(item, sizeof(item), "item-%u", id);
	ctxleak_resume(listener);
	job->id = id;
	job->request = ctxleak_begin("GET /item");
	ctxleak_tag("item", item);
	job->token = ctxleak_capture();
	example_queue_push(q, &job->link);
	ctxleak_suspend();
}

int main(int argc, char **argv)
{
	unsigned requests = example_requests(argc, argv, 1000);
	struct example_queue q;
	pthread_t pool[WORKERS];
	uint64_t listener;
	unsigned i;
	int rc;

	example_start("thread_pool", NULL);
	example_queue_init(&q);
	for (i = 0; i < WORKERS; i++) {
		rc = pthread_create(&pool[i], NULL, worker, &q);
		if (rc) {
			errno = rc;
			example_fail("pthread_create");
		}
	}
	listener = ctxleak_capture();
	for (i = 0; i < requests; i++)
		accept_request(&q, listener, i);
	example_queue_close(&q);
	for (i = 0; i < WORKERS; i++)
		pthread_join(pool[i], NULL);
	printf("thread_pool: %u requests, 1 dispatcher, %u workers, "
	       "backend %s\n",
	       requests, WORKERS, ctxleak_backend_name());
	ctxleak_shutdown();
	return 0;
}
