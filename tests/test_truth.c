/*
 * test_truth.c: findings from the real daemon for programs whose scopes
 * end on another thread than the one that began them.
 *
 * docs/DESIGN.md: "x is known" is process-wide, and end(x) restores x's saved
 * pair into the slots of the thread that calls end.  A dispatcher that
 * begins each request and hands it to a worker that ends it is correct
 * under a process global (the worker's end clears the one slot), and
 * wrong under a thread-local (the dispatcher's own slot still holds the
 * finished request when it begins the next).  The client library's own
 * semantics are checked call by call against a model in test_client.c
 * (test_truth_random); here the daemon's findings for the same shape are
 * checked exactly, class by class.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "ctxleak.h"
#include "harness.h"

#define HANDOFFS 200

/* One request at a time, from a dispatcher thread to a worker thread. */
struct handoff {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	uint64_t token; /* the request handed over; 0: none waiting */
	int stop;
};

static void *handoff_worker(void *arg)
{
	struct handoff *h = arg;

	pthread_mutex_lock(&h->mu);
	for (;;) {
		uint64_t token;

		while (!h->token && !h->stop)
			pthread_cond_wait(&h->cond, &h->mu);
		if (!h->token)
			break;
		token = h->token;
		pthread_mutex_unlock(&h->mu);
		ctxleak_resume(token);
		ctxleak_tag("worker", "done");
		ctxleak_end(token);
		ctxleak_suspend();
		pthread_mutex_lock(&h->mu);
		h->token = 0;
		pthread_cond_broadcast(&h->cond);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* The dispatcher begins each request, hands it over and waits until the
 * worker has ended it. */
static int dispatch(void *arg)
{
	struct handoff h = {.mu = PTHREAD_MUTEX_INITIALIZER,
			    .cond = PTHREAD_COND_INITIALIZER};
	pthread_t worker;

	(void)arg;
	pthread_create(&worker, NULL, handoff_worker, &h);
	for (int i = 0; i < HANDOFFS; i++) {
		uint64_t x = ctxleak_begin("GET /job");

		ctxleak_tag("dispatcher", "queued");
		pthread_mutex_lock(&h.mu);
		h.token = x;
		pthread_cond_broadcast(&h.cond);
		while (h.token)
			pthread_cond_wait(&h.cond, &h.mu);
		pthread_mutex_unlock(&h.mu);
	}
	pthread_mutex_lock(&h.mu);
	h.stop = 1;
	pthread_cond_broadcast(&h.cond);
	pthread_mutex_unlock(&h.mu);
	pthread_join(worker, NULL);
	return 0;
}

static int64_t count_class(const struct harness_daemon *d, const char *cls)
{
	char sql[128];

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM leaks WHERE class = '%s'", cls);
	return harness_query_int(d, sql);
}

static void run_handoff(enum ctxleak_backend backend,
			const int64_t want[6])
{
	static const char *const classes[] = {"lost",	 "stale",
					      "bleed",	 "overlap",
					      "misnest", "unclosed"};
	struct harness_daemon d;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, backend, dispatch, NULL), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	for (int c = 0; c < 6; c++)
		ck_assert_msg(count_class(&d, classes[c]) == want[c],
			      "%s: %lld, want %lld", classes[c],
			      (long long)count_class(&d, classes[c]),
			      (long long)want[c]);
	harness_cleanup(&d);
}

/* The worker's end clears the one slot: nothing to find.  (When the
 * ending thread restored nothing, every next BEGIN was stale.) */
START_TEST(test_handoff_global)
{
	static const int64_t want[6] = {0, 0, 0, 0, 0, 0};

	run_handoff(CTXLEAK_BACKEND_GLOBAL, want);
}
END_TEST

/* The dispatcher's thread-local still holds the ended request when the
 * next begins: each BEGIN but the first is stale.  The worker's END of
 * request k restores k's saved pair into the worker's slot: what the
 * dispatcher's held at k's begin, request k-1.  So the worker's tag is
 * lost for the first two requests (its slot is empty) and stale after
 * (request k-2), and every END sees another request, or none, current
 * (misnest). */
START_TEST(test_handoff_thread)
{
	static const int64_t want[6] = {
	    2, (HANDOFFS - 1) + (HANDOFFS - 2), 0, 0, HANDOFFS, 0};

	run_handoff(CTXLEAK_BACKEND_THREAD, want);
}
END_TEST

/* The worker's slot follows the resume; the dispatcher's own still holds
 * the request it handed over, as under thread. */
START_TEST(test_handoff_task)
{
	static const int64_t want[6] = {0, HANDOFFS - 1, 0, 0, 0, 0};

	run_handoff(CTXLEAK_BACKEND_TASK, want);
}
END_TEST

static Suite *truth_suite(void)
{
	Suite *s = suite_create("truth");

	suite_add_tcase(s, check_tcase("hand-off", 60, test_handoff_global,
				       test_handoff_thread, test_handoff_task,
				       NULL));
	return s;
}

int main(void)
{
	return check_main(truth_suite(), NULL);
}
