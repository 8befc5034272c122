/*
 * test_rules_model.c: the rules engine on hand-written record streams
 * (see rules_feed.h): the concurrency model inferred from a process's records
 * and the backend advised for it.
 */
#include <check.h>
#include <string.h>

#include "check_main.h"
#include "rules_feed.h"

/* ------------------------------------------------------------ model */

/* The model a fresh engine infers from recs, judged whole; what the
 * engine's sink was given stays in got. */
static struct rules_model model_of(const struct proto_record *recs, size_t n)
{
	struct rules *r = engine(NULL);
	struct rules_model m;

	run(r, recs, n);
	rules_model(r, &m);
	rules_free(r);
	return m;
}

#define MODEL_OF(recs) model_of(recs, sizeof(recs) / sizeof(recs[0]))

START_TEST(test_model_thread_per_request)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), TAG(2, 1, A, A, "k", "v"),
	    END(3, 1, A, A, A),	       BEGIN(4, 1, B, 0, 0, "b"),
	    BEGIN(5, 2, C, 0, 0, "c"), EVENT(6, 2, C, C, "e"),
	    EVENT(7, 1, B, B, "e"),    END(8, 1, B, B, B),
	    END(9, 2, C, C, C),
	};
	struct rules_model m = MODEL_OF(recs);

	ck_assert_uint_eq(got.nfindings, 0);
	ck_assert_str_eq(m.model, "thread-per-request");
	ck_assert_str_eq(m.recommend, "thread");
	ck_assert_uint_eq(m.requests, 3);
	ck_assert_uint_eq(m.interleaved, 0);
	ck_assert_uint_eq(m.handed_off, 0);
}
END_TEST

/* Two event loops with as many interleaved requests each: the model names
 * the lower tid, whatever order the engine's hash seed gives its table. */
static uint64_t tie_seed;

static void seeded(struct rules_config *cfg)
{
	cfg->hash_seed = tie_seed;
}

START_TEST(test_model_tie_lowest_tid)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 9, A, 0, 0, "a"), BEGIN(2, 9, B, 0, 0, "b"),
	    BEGIN(3, 7, C, 0, 0, "c"), BEGIN(4, 7, 0xd1, 0, 0, "d"),
	    EVENT(5, 9, A, A, "e"),    EVENT(6, 9, B, B, "e"),
	    EVENT(7, 7, C, C, "e"),    EVENT(8, 7, 0xd1, 0xd1, "e"),
	    END(9, 9, A, A, A),	       END(10, 9, B, B, B),
	    END(11, 7, C, C, C),       END(12, 7, 0xd1, 0xd1, 0xd1),
	};

	for (tie_seed = 0; tie_seed < 64; tie_seed++) {
		struct rules *r = engine(seeded);
		struct rules_model m;

		RUN(r, recs);
		rules_model(r, &m);
		ck_assert_uint_eq(m.max_interleave, 2);
		ck_assert_uint_eq(m.max_interleave_tid, 7);
		rules_free(r);
	}
}
END_TEST

START_TEST(test_model_event_loop)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 5, A, 0, 0, "a"), BEGIN(2, 5, B, 0, 0, "b"),
	    BEGIN(3, 5, C, 0, 0, "c"), EVENT(4, 5, A, A, "e"),
	    EVENT(5, 5, B, B, "e"),    EVENT(6, 5, C, C, "e"),
	    END(7, 5, A, A, A),	       END(8, 5, B, B, B),
	    END(9, 5, C, C, C),
	};
	struct rules_model m = MODEL_OF(recs);

	ck_assert_str_eq(m.model, "event-loop");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_uint_eq(m.interleaved, 3);
	ck_assert_uint_eq(m.max_interleave, 3);
	ck_assert_uint_eq(m.max_interleave_tid, 5);
	/* ctx = cause throughout: whatever the backend, it isolated them. */
	ck_assert_str_eq(m.evidence, "3 requests interleaved on thread 5; "
				     "the current backend already isolates "
				     "them (task is the recommended backend "
				     "for this model)");
}
END_TEST

START_TEST(test_model_thread_pool)
{
	/* An acceptor (thread 1) hands each request to a worker. */
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), BEGIN(2, 1, B, 0, 0, "b"),
	    RESUME(3, 2, 0, A),	       EVENT(4, 2, A, A, "work"),
	    END(5, 2, A, A, A),	       RESUME(6, 3, 0, B),
	    EVENT(7, 3, B, B, "work"), END(8, 3, B, B, B),
	};
	struct rules_model m = MODEL_OF(recs);

	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_uint_eq(m.handed_off, 2);
	ck_assert_uint_eq(m.interleaved, 0);
	ck_assert_str_eq(m.evidence, "2 of 2 requests handed between threads; "
				     "the current backend already isolates "
				     "them (task is the recommended backend "
				     "for this model)");
	ck_assert_uint_eq(request_of(A)->nthreads, 2);
}
END_TEST

/* Under `global`, a child begun by A's code is attached to B, the request
 * the slot held; the model still follows the true owner, so it sees
 * thread-per-request, not B handed between threads. */
START_TEST(test_model_ignores_backend)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    BEGIN(2, 2, B, 0, A, "b"),	   /* overlap */
	    CHILD(3, 1, 0xa2, A, B, "db"), /* bleed */
	    TAG(4, 1, 0xa2, 0xa2, "rows", "1"),
	    END(5, 1, 0xa2, 0xa2, 0xa2),
	    EVENT(6, 2, B, B, "e"),
	    END(7, 2, B, B, B),
	    END(8, 1, A, A, A),
	};
	struct rules_model m = MODEL_OF(recs);

	ck_assert_uint_eq(got.nfindings, 2);
	/* The rules follow the backend's tree: db's records are B's. */
	ck_assert_uint_eq(request_of(B)->nthreads, 2);
	ck_assert_str_eq(tag_of(request_of(B), "rows")->value, "1");
	ck_assert_str_eq(m.model, "thread-per-request");
	ck_assert_str_eq(m.recommend, "thread");
	ck_assert_uint_eq(m.handed_off, 0);
}
END_TEST

/* A worker whose thread-local slot is empty begins a child for A's job:
 * the child is a request of its own by the rules (and lost), but the
 * model still sees one request handed to the worker, not two
 * interleaving. */
START_TEST(test_model_child_without_backend)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    RESUME(2, 2, 0, A),
	    CHILD(3, 2, 0xa2, A, 0, "db"), /* lost */
	    EVENT(4, 2, 0xa2, 0xa2, "rows"),
	    END(5, 2, 0xa2, 0xa2, 0xa2),
	    TAG(6, 2, 0, A, "status", "200"), /* lost */
	    END(7, 2, A, A, 0),		      /* misnest */
	    SUSPEND(8, 2, 0, A),
	};
	struct rules_model m = MODEL_OF(recs);

	ck_assert_uint_eq(got.nfindings, 3);
	check_finding(0, LEAK_LOST, A, 0);
	check_finding(1, LEAK_LOST, A, 0);
	check_finding(2, LEAK_MISNEST, A, 0);
	ck_assert_uint_eq(got.nrequests, 2);
	ck_assert_str_eq(request_of(0xa2)->name, "db");
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_uint_eq(m.requests, 1);
	ck_assert_uint_eq(m.interleaved, 0);
	ck_assert_uint_eq(m.handed_off, 1);
}
END_TEST

START_TEST(test_model_unknown)
{
	struct rules_model m = model_of(NULL, 0);

	ck_assert_str_eq(m.model, "unknown");
	ck_assert_uint_eq(m.requests, 0);
}
END_TEST

/* With no requests there is no evidence for any backend. */
START_TEST(test_model_no_requests_no_advice)
{
	struct rules_model m = model_of(NULL, 0);

	ck_assert_str_eq(m.model, "unknown");
	ck_assert_ptr_null(m.recommend);
	ck_assert_str_eq(m.evidence, "no requests seen; nothing to recommend");
}
END_TEST

/* A thread pool whose backend lost A's context on the hand-off is told to
 * use task; the same pool whose backend carried it (a custom backend the
 * application switches, or task) is told it already isolates them. */
START_TEST(test_model_backend_already_isolates)
{
	struct rules_model m;
	const struct proto_record lossy[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), RESUME(2, 2, 0, A),
	    EVENT(3, 2, 0, A, "work"), /* lost */
	    SUSPEND(4, 2, 0, A),       END(5, 1, A, A, A),
	};
	const struct proto_record carried[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), RESUME(2, 2, 0, A),
	    EVENT(3, 2, A, A, "work"), SUSPEND(4, 2, A, A),
	    END(5, 1, A, A, A),
	};

	m = MODEL_OF(lossy);
	ck_assert_uint_eq(got.nfindings, 1);
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_str_eq(m.evidence, "1 of 1 requests handed between threads; "
				     "thread backend loses them on hand-off; "
				     "use task");

	m = MODEL_OF(carried);
	ck_assert_uint_eq(got.nfindings, 0);
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_ptr_nonnull(strstr(m.evidence, "already isolates them"));
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite("rules_model",
			check_tcase("model", 0, test_model_thread_per_request,
				    test_model_event_loop,
				    test_model_thread_pool,
				    test_model_ignores_backend,
				    test_model_child_without_backend,
				    test_model_unknown,
				    test_model_no_requests_no_advice,
				    test_model_backend_already_isolates,
				    test_model_tie_lowest_tid, NULL),
			NULL),
	    NULL);
}
