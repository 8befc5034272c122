/*
 * test_rules_example.c: the rules engine on hand-written record streams
 * (see rules_feed.h): the worked example of docs/DESIGN.md under each backend, as
 * the client sends it (21 records), and the engine's counters over it.
 */
#include <check.h>

#include "check_main.h"
#include "rules_feed.h"

/*
 * docs/DESIGN.md's worked example under `thread`, derived call by call from the
 * client's per-call table (B = backend slot, C = cause slot).  Every
 * callback is wrapped in resume(token)/suspend.  With one thread the
 * `global` backend's one slot per process is the same slot as the thread's,
 * so it sends exactly these records too.
 */
static const struct proto_record example_thread[] = {
    /* 1 accept (token 0): begin GET /a, tag user=alice, capture A */
    RESUME(10, T, 0, 0),
    BEGIN(11, T, A, 0, 0, "GET /a"),
    TAG(12, T, A, A, "user", "alice"),
    SUSPEND(13, T, A, A), /* pops C = 0; thread keeps B = A */
    /* 2 accept (token 0): begin GET /b with B = A: overlap */
    RESUME(20, T, A, 0),
    BEGIN(21, T, B, 0, A, "GET /b"),
    TAG(22, T, B, B, "user", "bob"),
    SUSPEND(23, T, B, B),
    /* 3 DB callback of A: B is still GET /b */
    RESUME(30, T, B, A),
    EVENT(31, T, B, A, "db.done"),     /* bleed */
    TAG(32, T, B, A, "status", "200"), /* bleed */
    END(33, T, A, A, B),	       /* misnest; B, C = A's pair 0, 0 */
    SUSPEND(34, T, 0, 0),
    /* 4 DB callback of B: B is 0 */
    RESUME(40, T, 0, B),
    EVENT(41, T, 0, B, "db.done"), /* lost */
    END(42, T, B, B, 0),	   /* misnest; B, C = B's pair A, 0 */
    SUSPEND(43, T, A, 0),
    /* 5 accept (token 0): begin GET /c with B = ended A: stale */
    RESUME(50, T, A, 0),
    BEGIN(51, T, C, 0, A, "GET /c"),
    END(52, T, C, C, C),
    SUSPEND(53, T, A, 0),
};

/* The same program under `task`: resume sets B to the token. */
static const struct proto_record example_task[] = {
    RESUME(10, T, 0, 0),
    BEGIN(11, T, A, 0, 0, "GET /a"),
    TAG(12, T, A, A, "user", "alice"),
    SUSPEND(13, T, A, A),
    RESUME(20, T, 0, 0),
    BEGIN(21, T, B, 0, 0, "GET /b"),
    TAG(22, T, B, B, "user", "bob"),
    SUSPEND(23, T, B, B),
    RESUME(30, T, 0, A),
    EVENT(31, T, A, A, "db.done"),
    TAG(32, T, A, A, "status", "200"),
    END(33, T, A, A, A),
    SUSPEND(34, T, 0, 0),
    RESUME(40, T, 0, B),
    EVENT(41, T, B, B, "db.done"),
    END(42, T, B, B, B),
    SUSPEND(43, T, 0, 0),
    RESUME(50, T, 0, 0),
    BEGIN(51, T, C, 0, 0, "GET /c"),
    END(52, T, C, C, C),
    SUSPEND(53, T, 0, 0),
};

static void check_example_leaky(void)
{
	const struct got_request *a, *b;

	ck_assert_uint_eq(got.nfindings, 7);
	ck_assert_uint_eq(count(LEAK_OVERLAP), 1);
	ck_assert_uint_eq(count(LEAK_BLEED), 2);
	ck_assert_uint_eq(count(LEAK_MISNEST), 2);
	ck_assert_uint_eq(count(LEAK_LOST), 1);
	ck_assert_uint_eq(count(LEAK_STALE), 1);
	check_finding(0, LEAK_OVERLAP, B, A);
	check_finding(1, LEAK_BLEED, A, B);
	check_finding(2, LEAK_BLEED, A, B);
	check_finding(3, LEAK_MISNEST, A, 0);
	check_finding(4, LEAK_LOST, B, 0);
	check_finding(5, LEAK_MISNEST, B, 0);
	check_finding(6, LEAK_STALE, C, A);
	ck_assert_str_eq(got.findings[2].detail,
			 "tag status=200 of request #1 'GET /a' was recorded "
			 "under request #2 'GET /b' (backend ctx of another "
			 "request)");
	ck_assert_str_eq(got.findings[1].victim_name, "GET /a");
	ck_assert_str_eq(got.findings[1].source_name, "GET /b");

	ck_assert_uint_eq(got.nrequests, 3);
	a = request_of(A);
	b = request_of(B);
	/* B's context holds status=200, set by A's code. */
	ck_assert_str_eq(tag_of(b, "status")->value, "200");
	ck_assert_uint_eq(tag_of(b, "status")->setter_rid, a->rid);
	ck_assert_uint_eq(tag_of(b, "status")->setter_ctx, A);
	ck_assert_str_eq(tag_of(b, "user")->value, "bob");
	ck_assert_uint_eq(tag_of(b, "user")->setter_rid, b->rid);
	ck_assert_uint_eq(a->ntags, 1);
	ck_assert_uint_eq(a->victim_of[LEAK_BLEED], 2);
	ck_assert_uint_eq(a->victim_of[LEAK_MISNEST], 1);
	ck_assert_uint_eq(a->source_of, 2); /* overlap of B, stale of C */
	ck_assert_uint_eq(b->source_of, 2);
	ck_assert_uint_eq(b->victim_of[LEAK_OVERLAP], 1);
	ck_assert_uint_eq(b->victim_of[LEAK_LOST], 1);
}

static void check_example_model(struct rules *r, const char *evidence)
{
	struct rules_model m;

	rules_model(r, &m);
	ck_assert_str_eq(m.model, "event-loop");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_uint_eq(m.requests, 3);
	ck_assert_uint_eq(m.interleaved, 2);
	ck_assert_uint_eq(m.max_interleave_tid, T);
	ck_assert_str_eq(m.evidence, evidence);
}

START_TEST(test_example_thread)
{
	struct rules *r = engine(NULL);

	RUN(r, example_thread);
	check_example_leaky();
	check_example_model(r, "2 requests interleaved on thread 100; "
			       "thread backend cannot isolate them; use task");
	rules_free(r);
}
END_TEST

START_TEST(test_example_global)
{
	struct rules *r = engine(hold);

	/* Same records (see example_thread), judged with records held. */
	RUN(r, example_thread);
	check_example_leaky();
	rules_free(r);
}
END_TEST

START_TEST(test_example_task)
{
	struct rules *r = engine(NULL);
	const struct got_request *b;

	RUN(r, example_task);
	ck_assert_uint_eq(got.nfindings, 0);
	ck_assert_uint_eq(got.nrequests, 3);
	b = request_of(B);
	ck_assert_uint_eq(b->ntags, 1);
	ck_assert_str_eq(tag_of(request_of(A), "status")->value, "200");
	ck_assert_uint_eq(b->end_ts, 42);
	ck_assert_uint_eq(b->nthreads, 1);
	ck_assert_uint_eq(b->threads[0], T);
	check_example_model(r, "2 requests interleaved on thread 100; the "
			       "current backend already isolates them (task "
			       "is the recommended backend for this model)");
	rules_free(r);
}
END_TEST

/* Held records go out with a request a finding names; a clean request's
 * are only counted. */
START_TEST(test_held_only_when_involved)
{
	struct rules *r = engine(hold);

	RUN(r, example_task);
	ck_assert_uint_eq(got.nfindings, 0);
	ck_assert_uint_eq(got.nrequests, 3);
	for (size_t i = 0; i < got.nrequests; i++) {
		ck_assert_uint_gt(got.requests[i].nheld, 0);
		ck_assert_int_eq(got.requests[i].held_delivered, 0);
	}
	rules_free(r);
	r = engine(hold);
	RUN(r, example_thread);
	ck_assert_int_eq(request_of(A)->held_delivered, 1);
	rules_free(r);
}
END_TEST

START_TEST(test_stats_and_names)
{
	struct rules *r = engine(NULL);
	struct rules_stats st;

	ck_assert_str_eq(leak_class_name(LEAK_BLEED), "bleed");
	ck_assert_str_eq(leak_class_name(LEAK_NONE), "");
	ck_assert_int_eq(leak_class_from_name("unclosed"), LEAK_UNCLOSED);
	ck_assert_int_eq(leak_class_from_name("nope"), -1);
	RUN(r, example_thread);
	rules_stats(r, &st);
	ck_assert_uint_eq(st.added, 21);
	ck_assert_uint_eq(st.judged, 21);
	ck_assert_uint_eq(st.findings[LEAK_BLEED], 2);
	ck_assert_uint_eq(st.open_scopes, 0);
	ck_assert_uint_eq(st.requests_live, 0);
	rules_free(r);
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite("rules_example",
			check_tcase("example", 0, test_example_thread,
				    test_example_global, test_example_task,
				    test_held_only_when_involved,
				    test_stats_and_names, NULL),
			NULL),
	    NULL);
}
