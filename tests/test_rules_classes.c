/*
 * test_rules_classes.c: the rules engine on hand-written record streams
 * (see rules_feed.h): every leak class on its own, then their precedence: which
 * class a record gets when several rules apply.
 */
#include <check.h>
#include <string.h>

#include "check_main.h"
#include "rules_feed.h"

/* ------------------------------------------------------------ classes */

START_TEST(test_lost)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    EVENT(2, 2, 0, A, "on worker"),
	    END(3, 1, A, A, A),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_LOST, A, 0);
	ck_assert_uint_eq(got.findings[0].source_rid, 0);
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail, "no backend ctx"));
}
END_TEST

START_TEST(test_stale)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    BEGIN(3, 1, B, 0, 0, "b"),
	    TAG(4, 1, A, B, "k", "v"), /* the slot still says A */
	    END(5, 1, B, B, B),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_STALE, B, A);
}
END_TEST

START_TEST(test_bleed)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), BEGIN(2, 2, B, 0, 0, "b"),
	    EVENT(3, 2, A, B, "x"),    END(4, 1, A, A, A),
	    END(5, 2, B, B, B),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_BLEED, B, A);
	ck_assert_uint_eq(got.findings[0].type, PROTO_EVENT);
}
END_TEST

START_TEST(test_bleed_background)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 1, A, 0, "cache", "warm"), /* no true request */
	    TAG(3, 1, 0, 0, "idle", "1"),     /* nothing at all */
	    END(4, 1, A, A, A),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_BLEED, 0, A);
	ck_assert_uint_eq(got.findings[0].victim_rid, 0);
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail,
				     "with no request was recorded under "
				     "request #1 'a' (background"));
	/* The tag still lands in A's context, set by no request. */
	ck_assert_uint_eq(tag_of(request_of(A), "cache")->setter_rid, 0);
}
END_TEST

START_TEST(test_overlap)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    BEGIN(2, 1, B, 0, A, "b"),
	    END(3, 1, B, B, B),
	    END(4, 1, A, A, A),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_OVERLAP, B, A);
	ck_assert_str_eq(got.findings[0].detail,
			 "request #2 'b' began while request #1 'a' was still "
			 "current (it would inherit its context)");
}
END_TEST

START_TEST(test_unclosed_at_finish)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 7, A, 0, 0, "a"),
	    CHILD(2, 7, 0xa2, A, A, "db"),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_UNCLOSED, A, 0);
	check_finding(1, LEAK_UNCLOSED, A, 0);
	ck_assert_uint_eq(got.findings[0].ctx, A);
	ck_assert_uint_eq(got.findings[1].ctx, 0xa2);
	ck_assert_uint_eq(got.findings[1].type, PROTO_BEGIN);
	ck_assert_uint_eq(got.findings[1].ts, 2);
	ck_assert_int_eq(got.findings[0].reason, RULES_UNCLOSED_DISCONNECT);
	ck_assert_str_eq(got.findings[1].detail,
			 "scope 'db' of request #1 'a' begun on thread 7 never "
			 "ended (its process went away)");
	ck_assert_uint_eq(got.nrequests, 1);
	ck_assert_uint_eq(got.requests[0].end_ts, 0);
	ck_assert_uint_eq(got.requests[0].nscopes, 2);
	ck_assert_uint_eq(got.requests[0].victim_of[LEAK_UNCLOSED], 2);
}
END_TEST

static void max_age_10(struct rules_config *cfg)
{
	cfg->max_request_age = 10;
}

START_TEST(test_unclosed_at_age)
{
	struct rules *r = engine(max_age_10);
	struct proto_record a = BEGIN(100, 1, A, 0, 0, "slow");
	struct proto_record b = BEGIN(105, 1, B, 0, 0, "fast");
	struct proto_record end_b = END(106, 1, B, B, B);
	struct proto_record end_a = END(200, 1, A, A, A);

	add_all(r, &a, 1);
	add_all(r, &b, 1);
	add_all(r, &end_b, 1);
	rules_advance(r, 110); /* A is 10 old: not yet over */
	ck_assert_uint_eq(got.nfindings, 0);
	ck_assert_uint_eq(got.nrequests, 1); /* B retired */
	rules_advance(r, 111);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_UNCLOSED, A, 0);
	ck_assert_int_eq(got.findings[0].reason, RULES_UNCLOSED_AGE);
	ck_assert_uint_eq(got.nrequests, 2);
	ck_assert_uint_eq(got.requests[1].end_ts, 0);
	/* Forgotten: its late END is misnest. */
	add_all(r, &end_a, 1);
	rules_finish(r);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(1, LEAK_MISNEST, A, 0);
	rules_free(r);
}
END_TEST

static void max_open_3(struct rules_config *cfg)
{
	cfg->max_open_scopes = 3;
}

START_TEST(test_unclosed_at_limit)
{
	struct rules *r = engine(max_open_3);
	struct rules_stats st;
	const struct proto_record recs[] = {
	    BEGIN(1, 1, 0x1, 0, 0, "r1"), BEGIN(2, 2, 0x2, 0, 0, "r2"),
	    BEGIN(3, 3, 0x3, 0, 0, "r3"), BEGIN(4, 4, 0x4, 0, 0, "r4"),
	    BEGIN(5, 5, 0x5, 0, 0, "r5"),
	};

	add_all(r, recs, 5);
	rules_advance(r, 5);
	rules_stats(r, &st);
	ck_assert_uint_eq(st.open_scopes, 3);
	ck_assert_uint_eq(st.evicted, 2);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_UNCLOSED, 0x1, 0);
	check_finding(1, LEAK_UNCLOSED, 0x2, 0);
	ck_assert_int_eq(got.findings[0].reason, RULES_UNCLOSED_LIMIT);
	ck_assert_uint_eq(got.nrequests, 2);
	rules_free(r);
}
END_TEST

/* ------------------------------------------------------------ precedence */

START_TEST(test_precedence_work)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    BEGIN(3, 1, B, 0, 0, "b"),
	    /* ctx 0 with a cause: lost, though nothing is current */
	    TAG(4, 1, 0, B, "k", "1"),
	    /* ended A under B's code: stale, not bleed */
	    TAG(5, 1, A, B, "k", "2"),
	    /* ended A under A's own code: late work, no finding */
	    TAG(6, 1, A, A, "k", "3"),
	    /* a child attached to ended A: stale */
	    CHILD(7, 1, 0xb2, B, A, "db"),
	    /* a child attached to open B from A's code: bleed */
	    CHILD(8, 1, 0xb3, A, B, "db2"),
	    /* a child begun with nothing current in B's code: lost */
	    CHILD(9, 1, 0xb4, B, 0, "db3"),
	    END(10, 1, 0xb2, B, 0xb2),
	    END(11, 1, 0xb3, A, 0xb3),
	    END(12, 1, 0xb4, B, 0xb4),
	    END(13, 1, B, B, B),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 5);
	check_finding(0, LEAK_LOST, B, 0);
	check_finding(1, LEAK_STALE, B, A);
	check_finding(2, LEAK_STALE, B, A);
	check_finding(3, LEAK_BLEED, A, B);
	check_finding(4, LEAK_LOST, B, 0);
	ck_assert_ptr_nonnull(strstr(got.findings[3].detail,
				     "child scope 'db2' of request #1 'a' was "
				     "begun under request #2 'b'"));
}
END_TEST

START_TEST(test_precedence_request_begin)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    BEGIN(3, 1, B, 0, A, "b"), /* A ended at 2: stale */
	    BEGIN(4, 2, C, 0, B, "c"), /* B open: overlap */
	    /* ended at the very same ts is not "before": overlap */
	    END(5, 1, B, B, B),
	    BEGIN(5, 3, 0xd1, 0, B, "d"),
	    END(6, 2, C, C, C),
	    END(7, 3, 0xd1, 0xd1, 0xd1),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 3);
	check_finding(0, LEAK_STALE, B, A);
	check_finding(1, LEAK_OVERLAP, C, B);
	check_finding(2, LEAK_OVERLAP, 0xd1, B);
	ck_assert_ptr_nonnull(
	    strstr(got.findings[0].detail, "began while ended request #1 'a'"));
}
END_TEST

START_TEST(test_misnest_conditions)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    BEGIN(2, 2, B, 0, 0, "b"),
	    BEGIN(3, 3, C, 0, 0, "c"),
	    /* cur != x */
	    END(4, 1, A, A, 0),
	    /* another thread, B's own code (handed off): fine */
	    END(5, 9, B, B, B),
	    /* another thread, A's code ends C: misnest */
	    END(6, 9, C, A, C),
	    /* twice */
	    END(7, 1, A, A, A),
	    /* never begun */
	    END(8, 1, 0xee, B, 0xee),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 4);
	check_finding(0, LEAK_MISNEST, A, 0);
	check_finding(1, LEAK_MISNEST, C, 0);
	check_finding(2, LEAK_MISNEST, A, 0); /* victim request(t) = A */
	check_finding(3, LEAK_MISNEST, B, 0); /* victim request(t) = B */
	ck_assert_ptr_nonnull(
	    strstr(got.findings[0].detail, "backend's current ctx was 0"));
	ck_assert_ptr_nonnull(strstr(got.findings[1].detail,
				     "on thread 9 by another request's code; "
				     "it began on thread 3"));
	ck_assert_ptr_nonnull(
	    strstr(got.findings[2].detail, "had already ended"));
	ck_assert_ptr_nonnull(
	    strstr(got.findings[3].detail, "was never begun"));
	/* A's first END still ended it. */
	ck_assert_uint_eq(request_of(A)->end_ts, 4);
}
END_TEST

/*
 * An END of a scope already ended names the scope's request as victim,
 * whatever code ended it again: its first END restored the cause (0
 * here), and another request's code may hold the stale ctx.  One never
 * begun has no request: request(t) stands in.
 */
START_TEST(test_end_twice_victim)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    END(3, 1, A, 0, 0), /* again, in no request */
	    BEGIN(4, 1, B, 0, 0, "b"),
	    END(5, 1, A, B, B),	   /* again, in B's code */
	    END(6, 1, 0xee, B, B), /* never begun */
	    END(7, 1, B, B, B),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 3);
	check_finding(0, LEAK_MISNEST, A, 0);
	check_finding(1, LEAK_MISNEST, A, 0);
	check_finding(2, LEAK_MISNEST, B, 0);
	rules_free(r);
}
END_TEST

START_TEST(test_end_unknown_without_cause)
{
	const struct proto_record recs[] = {
	    END(1, 1, 0xee, 0, 0xee),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_MISNEST, 0, 0);
	ck_assert_uint_eq(got.findings[0].victim_rid, 0);
	/* Its record still resolves to a stable pseudo request. */
	ck_assert_uint_eq(got.nverdicts, 1);
	ck_assert_uint_ne(got.verdicts[0].rid, 0);
}
END_TEST

START_TEST(test_unknown_ctx_is_stable)
{
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 1, 0x5eed, A, "k", "1"),	 /* bleed from unknown */
	    TAG(3, 1, 0x5eed, A, "k", "2"),	 /* same pseudo request */
	    TAG(4, 1, 0x5eed, 0x5eed, "k", "3"), /* its own: nothing */
	    END(5, 1, A, A, A),
	};

	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_BLEED, A, 0x5eed);
	check_finding(1, LEAK_BLEED, A, 0x5eed);
	ck_assert_uint_eq(got.findings[0].source_rid,
			  got.findings[1].source_rid);
	ck_assert_uint_ne(got.findings[0].source_rid, 0);
	ck_assert_int_eq(got.findings[0].source_named, 0);
	ck_assert_ptr_nonnull(
	    strstr(got.findings[0].detail, "unknown request #2 (ctx 0x5eed"));
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite(
		"rules_classes",
		check_tcase("classes", 0, test_lost, test_stale, test_bleed,
			    test_bleed_background, test_overlap,
			    test_unclosed_at_finish, test_unclosed_at_age,
			    test_unclosed_at_limit, NULL),
		check_tcase("precedence", 0, test_precedence_work,
			    test_precedence_request_begin,
			    test_misnest_conditions, test_end_twice_victim,
			    test_end_unknown_without_cause,
			    test_unknown_ctx_is_stable, NULL),
		NULL),
	    NULL);
}
