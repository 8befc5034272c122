/*
 * test_rules_requests.c: the rules engine on hand-written record streams
 * (see rules_feed.h): request reassembly and retirement: verdicts' request IDs,
 * contexts and tags, held records, the ended-scope table, late work and
 * the updates that reach retired requests.
 */
#include <check.h>
#include <string.h>

#include "check_main.h"
#include "rules_feed.h"

/* ------------------------------------------------------------ reassembly */

START_TEST(test_verdict_rids)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), BEGIN(2, 2, B, 0, 0, "b"),
	    TAG(3, 2, A, B, "k", "v"), TAG(4, 2, 0, 0, "k", "v"),
	    BEGIN(5, 1, C, A, A, "c"), END(6, 1, A, A, C),
	};

	add_all(r, recs, 6);
	rules_advance(r, 6);
	ck_assert_uint_eq(got.nverdicts, 6);
	ck_assert_uint_eq(got.verdicts[0].rid, 1);
	ck_assert_uint_eq(got.verdicts[0].rid_ctx, 0);
	ck_assert_uint_eq(got.verdicts[1].rid, 2);
	ck_assert_uint_eq(got.verdicts[2].rid, 2);     /* request(cause) */
	ck_assert_uint_eq(got.verdicts[2].rid_ctx, 1); /* request(ctx) */
	ck_assert_int_eq(got.verdicts[2].leak, LEAK_BLEED);
	ck_assert_uint_eq(got.verdicts[3].rid, 0);
	ck_assert_uint_eq(got.verdicts[3].rid_ctx, 0);
	ck_assert_uint_eq(got.verdicts[4].rid, 3);     /* the new request */
	ck_assert_uint_eq(got.verdicts[4].rid_ctx, 1); /* request(prev) */
	ck_assert_int_eq(got.verdicts[4].leak, LEAK_OVERLAP);
	ck_assert_uint_eq(got.verdicts[5].rid, 1);
	ck_assert_int_eq(got.verdicts[5].leak, LEAK_MISNEST);
	rules_free(r);
}
END_TEST

static void seq_from_100(struct rules_config *cfg)
{
	(void)cfg;
	seq = 100;
}

START_TEST(test_request_seq)
{
	struct rules *r = engine(seq_from_100);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 1, 0x77, A, "k", "v"), /* unknown 0x77 */
	    BEGIN(3, 1, B, 0, 0, "b"),
	    END(4, 1, A, A, A),
	    END(5, 1, B, B, B),
	};

	RUN(r, recs);
	ck_assert_uint_eq(request_of(A)->rid, 101);
	ck_assert_uint_eq(got.findings[0].source_rid, 102);
	ck_assert_uint_eq(request_of(B)->rid, 103);
	ck_assert_uint_eq(seq, 103);
	rules_free(r);
}
END_TEST

START_TEST(test_request_context)
{
	struct rules *r = engine(NULL);
	const struct got_request *a;
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 1, A, A, "user", "alice"),
	    CHILD(3, 1, 0xa2, A, A, "db"),
	    RESUME(4, 2, 0, A),
	    TAG(5, 2, 0xa2, A, "rows", "3"),
	    TAG(6, 2, 0xa2, A, "user", "bob"), /* last value wins */
	    SUSPEND(7, 2, 0, A),
	    END(8, 1, 0xa2, A, 0xa2),
	    END(9, 1, A, A, A),
	};

	struct proto_record nil = AS TAG(10, 1, B, B, "gone", "x");
	struct proto_record b[] = {
	    BEGIN(9, 1, B, 0, 0, "b"),
	    END(11, 1, B, B, B),
	};

	nil.value = (struct proto_str){NULL, 0};
	add_all(r, recs, 9);
	add_all(r, &b[0], 1);
	add_all(r, &nil, 1);
	add_all(r, &b[1], 1);
	rules_finish(r);
	ck_assert_uint_eq(got.nfindings, 0);
	ck_assert_int_eq(tag_of(request_of(B), "gone")->value_nil, 1);
	ck_assert_int_eq(tag_of(request_of(A), "rows")->value_nil, 0);
	a = request_of(A);
	ck_assert_str_eq(a->name, "a");
	ck_assert_uint_eq(a->begin_ts, 1);
	ck_assert_uint_eq(a->end_ts, 9);
	ck_assert_uint_eq(a->nscopes, 2);
	ck_assert_uint_eq(a->nrecords, 9);
	ck_assert_uint_eq(a->nthreads, 2);
	ck_assert_uint_eq(a->threads[0], 1);
	ck_assert_uint_eq(a->threads[1], 2);
	ck_assert_uint_eq(a->ntags, 2);
	ck_assert_str_eq(a->tags[0].key, "user"); /* first set first */
	ck_assert_str_eq(a->tags[0].value, "bob");
	ck_assert_str_eq(a->tags[1].key, "rows");
	rules_free(r);
}
END_TEST

START_TEST(test_retire_after_watermark)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    CHILD(2, 1, 0xa2, A, A, "db"),
	    END(3, 1, A, A, 0xa2), /* misnest; the child stays open */
	    END(6, 2, 0xa2, A, 0xa2),
	};

	add_all(r, recs, 4);
	rules_advance(r, 5);
	ck_assert_uint_eq(got.nrequests, 0); /* its child is open */
	rules_advance(r, 6);
	ck_assert_uint_eq(got.nrequests, 1);
	ck_assert_uint_eq(got.requests[0].end_ts, 3);
	rules_finish(r);
	ck_assert_uint_eq(got.nrequests, 1);
	rules_free(r);
}
END_TEST

START_TEST(test_hold_records)
{
	struct rules *r = engine(hold);
	const struct got_request *a;
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 2, 0, 0, "bg", "1"), /* no request: passes through */
	    EVENT(5, 2, 0, A, "lost one"),
	    TAG(3, 1, A, A, "k", "v"),
	    END(6, 1, A, A, A),
	    EVENT(8, 1, 0, A, "after"), /* after retirement */
	};

	add_all(r, recs, 5);
	rules_advance(r, 7);
	ck_assert_uint_eq(got.nverdicts, 1);
	ck_assert_uint_eq(got.verdicts[0].ts, 2);
	ck_assert_uint_eq(got.nrequests, 1);
	a = &got.requests[0];
	ck_assert_uint_eq(a->nheld, 4);
	ck_assert_uint_eq(a->held[0].type, PROTO_BEGIN);
	ck_assert_uint_eq(a->held[0].ctx, A);
	ck_assert_uint_eq(a->held[1].type, PROTO_TAG);
	ck_assert_uint_eq(a->held[2].type, PROTO_EVENT);
	ck_assert_int_eq(a->held[2].leak, LEAK_LOST);
	ck_assert_uint_eq(a->held[3].type, PROTO_END);
	for (size_t i = 0; i < a->nheld; i++) {
		ck_assert_uint_eq(a->held[i].rid, a->rid);
		if (i > 0)
			ck_assert_uint_lt(a->held[i - 1].ts, a->held[i].ts);
	}
	add_all(r, &recs[5], 1);
	rules_finish(r);
	ck_assert_uint_eq(got.nrequests, 1); /* retired once */
	ck_assert_uint_eq(got.nverdicts, 2);
	ck_assert_uint_eq(got.verdicts[1].rid, a->rid);
	rules_free(r);
}
END_TEST

/* Held records keep their strings after the caller's buffers are gone. */
START_TEST(test_hold_copies_strings)
{
	struct rules *r = engine(hold);
	char key[8] = "key", value[8] = "value";
	struct proto_record rec = BEGIN(1, 1, A, 0, 0, "a");

	add_all(r, &rec, 1);
	rec = AS TAG(2, 1, A, A, key, value);
	add_all(r, &rec, 1);
	memset(key, 'X', sizeof(key) - 1);
	memset(value, 'X', sizeof(value) - 1);
	rules_advance(r, 2);
	rec = AS END(3, 1, A, A, A);
	add_all(r, &rec, 1);
	rules_finish(r);
	ck_assert_uint_eq(got.nrequests, 1);
	ck_assert_str_eq(got.requests[0].tags[0].key, "key");
	ck_assert_str_eq(got.requests[0].tags[0].value, "value");
	rules_free(r);
}
END_TEST

static void ended_2(struct rules_config *cfg)
{
	cfg->max_ended_scopes = 2;
}

START_TEST(test_stale_after_retirement)
{
	struct rules *r = engine(ended_2);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    BEGIN(3, 1, B, 0, 0, "b"),
	    END(4, 1, B, B, B),
	    BEGIN(5, 1, C, 0, 0, "c"),
	    TAG(6, 1, B, C, "k", "v"), /* B retired, still known */
	    END(7, 1, C, C, C),
	    BEGIN(8, 1, 0xd1, 0, 0, "d"),
	    TAG(9, 1, A, 0xd1, "k", "v"), /* A evicted: unknown */
	    END(10, 1, 0xd1, 0xd1, 0xd1),
	};

	for (size_t i = 0; i < 10; i++) {
		add_all(r, &recs[i], 1);
		rules_advance(r, recs[i].ts);
	}
	rules_finish(r);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_STALE, C, B);
	ck_assert_str_eq(got.findings[0].source_name, "b");
	ck_assert_uint_eq(got.findings[0].source_rid, request_of(B)->rid);
	check_finding(1, LEAK_BLEED, 0xd1, A);
	ck_assert_int_eq(got.findings[1].source_named, 0);
	rules_free(r);
}
END_TEST

static void ended_100(struct rules_config *cfg)
{
	cfg->max_ended_scopes = 100;
}

/* The ended table grows, wraps and evicts oldest first. */
START_TEST(test_ended_table_bound)
{
	struct rules *r = engine(ended_100);
	struct rules_stats st;
	uint64_t ts = 1;

	for (uint64_t i = 1; i <= 300; i++) {
		struct proto_record b = BEGIN(ts, 1, i, 0, 0, "r");
		struct proto_record e = END(ts + 1, 1, i, i, i);

		add_all(r, &b, 1);
		add_all(r, &e, 1);
		rules_advance(r, ts + 1);
		ts += 2;
	}
	rules_stats(r, &st);
	ck_assert_uint_eq(st.ended_scopes, 100);
	ck_assert_uint_eq(got.nrequests, 300);
	/* 201 is remembered and stale; 200 is forgotten: unknown. */
	{
		const struct proto_record recs[] = {
		    BEGIN(1000, 1, 0x1000, 0, 0, "new"),
		    TAG(1001, 1, 201, 0x1000, "k", "v"),
		    TAG(1002, 1, 200, 0x1000, "k", "v"),
		    END(1003, 1, 0x1000, 0x1000, 0x1000),
		};

		RUN(r, recs);
	}
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_STALE, 0x1000, 201);
	ck_assert_uint_eq(got.findings[0].source_rid, 201);
	check_finding(1, LEAK_BLEED, 0x1000, 200);
	ck_assert_uint_gt(got.findings[1].source_rid, 300);
	rules_free(r);
}
END_TEST

START_TEST(test_detail_quotes_user_data)
{
	char value[200];
	struct proto_record recs[3];

	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	value[3] = '\n';
	recs[0] = AS BEGIN(1, 1, A, 0, 0, "a");
	recs[1] = AS TAG(2, 1, 0, A, "k", value);
	recs[2] = AS END(3, 1, A, A, A);
	JUDGE(recs);
	ck_assert_uint_eq(got.nfindings, 1);
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail, "tag k=vvv?vvvv"));
	ck_assert_ptr_null(strchr(got.findings[0].detail, '\n'));
	/* 64 bytes of the value, then an ellipsis. */
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail, "v... of"));
	ck_assert_uint_lt(strlen(got.findings[0].detail), 200);
}
END_TEST

/* ------------------------------------------------------------ late */

/*
 * Under task, a request starts background work and ends; the work runs
 * later, resumed in the request's context, so its storage names the
 * request itself (ctx = cause): late work, no finding, counted on the
 * request whether it is judged before the request retires or after.
 */
START_TEST(test_late_work)
{
	struct rules *r = engine(NULL);
	struct rules_stats st;
	const struct proto_record before[] = {
	    BEGIN(1, 1, A, 0, 0, "job"),
	    TAG(2, 1, A, A, "user", "alice"),
	    END(3, 1, A, A, A),
	    /* ended, not yet retired */
	    RESUME(4, 2, 0, A),
	    EVENT(5, 2, A, A, "job.step"),
	    SUSPEND(6, 2, A, A),
	};
	const struct proto_record after[] = {
	    RESUME(7, 2, 0, A),
	    TAG(8, 2, A, A, "status", "done"),
	    CHILD(9, 2, 0xa2, A, A, "db"),
	    END(10, 2, 0xa2, A, 0xa2),
	    SUSPEND(11, 2, A, A),
	};
	const struct got_request *rq;
	const struct got_update *u;

	add_all(r, before, 6);
	rules_advance(r, 6);
	ck_assert_uint_eq(got.nrequests, 1);
	rq = request_of(A);
	ck_assert_uint_eq(rq->nrecords, 6);
	ck_assert_uint_eq(rq->late, 1);
	add_all(r, after, 5);
	rules_advance(r, 11);
	rules_finish(r);
	ck_assert_uint_eq(got.nfindings, 0);
	/* After it retired: one update, with every record and the late
	 * ones among them. */
	ck_assert_uint_eq(got.nupdates, 1);
	u = update_of(rq->rid, 0);
	ck_assert_uint_eq(u->records, 5);
	ck_assert_uint_eq(u->late, 2);
	ck_assert_int_eq(u->has_row, 0);
	ck_assert_int_eq(u->has_counted, 0); /* not hold_records */
	ck_assert_uint_eq(late_verdicts(), 3);
	ck_assert_int_eq(verdict_at(5)->late, 1);
	ck_assert_int_eq(verdict_at(5)->leak, LEAK_NONE);
	ck_assert_int_eq(verdict_at(9)->late, 1);
	ck_assert_int_eq(verdict_at(10)->late, 0); /* END: not work */
	rules_stats(r, &st);
	ck_assert_uint_eq(st.late, 3);
	ck_assert_uint_eq(st.updates, 1);
	for (int c = 0; c < LEAK_CLASS_COUNT; c++)
		ck_assert_uint_eq(st.findings[c], 0);
	rules_free(r);
}
END_TEST

static void observe(struct rules_config *cfg)
{
	cfg->observe = 1;
}

/*
 * An observed storage is cleared by the service, often before the END:
 * END with nothing current (cur 0) is no misnest under observe, while an
 * END with another live request current, or on another thread under
 * another request's code, still is.  Without observe all three are.
 */
START_TEST(test_observe_end)
{
	struct rules *r = engine(_i ? observe : NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, 0), /* the storage was cleared first */
	    BEGIN(3, 1, B, 0, 0, "b"),
	    BEGIN(4, 2, C, 0, 0, "c"),
	    END(5, 1, B, B, C), /* C, live, is current */
	    END(6, 2, C, C, C),
	    BEGIN(7, 1, 0xd1, 0, 0, "d"),
	    END(8, 2, 0xd1, C, 0), /* thread 2, in C's code */
	};
	size_t k = 0;

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, _i ? 2 : 3);
	ck_assert_uint_eq(count(LEAK_MISNEST), got.nfindings);
	if (!_i)
		check_finding(k++, LEAK_MISNEST, A, 0);
	check_finding(k++, LEAK_MISNEST, B, 0);
	check_finding(k++, LEAK_MISNEST, 0xd1, 0);
	/* under observe, by the thread rule; else already by cur */
	ck_assert_msg(strstr(got.findings[k - 1].detail,
			     _i ? "thread" : "current ctx was 0") != NULL,
		      "%s", got.findings[k - 1].detail);
	rules_free(r);
}
END_TEST

/*
 * An observed storage that names requests, not their child scopes, still
 * holds the parent when a child ends; one that tracks scopes may put the
 * parent back before the child's END.  Either way the storage names the
 * child's own request: no misnest under observe (every child END of a
 * correct service was one).  A scope of another request, live or ended,
 * current at the END still is; without observe cur must be x itself.
 */
START_TEST(test_observe_end_own_request)
{
	struct rules *r = engine(_i ? observe : NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    CHILD(2, 1, 0xa2, A, A, "db"),
	    END(3, 1, 0xa2, 0xa2, A), /* the storage names A */
	    CHILD(4, 1, 0xa3, A, A, "db"),
	    CHILD(5, 1, 0xa4, 0xa3, 0xa3, "row"),
	    END(6, 1, 0xa4, 0xa4, 0xa3), /* the parent put back first */
	    END(7, 1, 0xa3, 0xa3, 0xa3),
	    BEGIN(8, 2, B, 0, 0, "b"),
	    CHILD(9, 2, 0xb2, B, B, "db"),
	    END(10, 1, A, A, 0xb2),    /* a scope of B: misnest */
	    END(11, 2, 0xb2, 0xb2, A), /* A, ended: misnest */
	    END(12, 2, B, B, B),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, _i ? 2 : 4);
	ck_assert_uint_eq(count(LEAK_MISNEST), got.nfindings);
	check_finding(_i ? 0 : 2, LEAK_MISNEST, A, 0);
	check_finding(_i ? 1 : 3, LEAK_MISNEST, B, 0);
	if (!_i) {
		check_finding(0, LEAK_MISNEST, A, 0);
		check_finding(1, LEAK_MISNEST, A, 0);
	}
	rules_free(r);
}
END_TEST

/*
 * Findings and records judged after their request retired reach it: an
 * update of its counts, and, for a request that retired clean (counted,
 * no row, under hold_records), its row once a finding names it as victim
 * or as source, with what request_stats counted of it to take back.
 */
START_TEST(test_late_findings_update_rows)
{
	struct rules *r = engine(hold);
	const struct proto_record first[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    BEGIN(3, 1, C, 0, 0, "c"),
	    END(4, 1, C, C, C),
	};
	const struct proto_record second[] = {
	    BEGIN(5, 1, B, 0, 0, "b"),
	    /* a callback of retired A runs under B's storage */
	    EVENT(6, 1, B, A, "cb"),
	    /* the storage of thread 2 still holds retired C */
	    BEGIN(7, 2, 0xd1, 0, C, "d"),
	    END(8, 2, 0xd1, 0xd1, 0xd1),
	    END(9, 1, B, B, B),
	};
	const struct proto_record third[] = {
	    TAG(10, 1, 0, A, "k", "v"), /* lost */
	    EVENT(11, 1, A, A, "late"), /* late work */
	};
	const struct proto_record fourth[] = {
	    BEGIN(12, 1, 0xe1, 0, 0, "e"),
	    END(13, 1, 0xe1, 0xe1, 0xe1),
	};
	const struct proto_record fifth[] = {
	    EVENT(14, 1, 0xe1, 0xe1, "bg"),
	};
	const struct proto_record sixth[] = {
	    BEGIN(15, 1, 0xf1, 0, 0xe1, "f"),
	    END(16, 1, 0xf1, 0xf1, 0xf1),
	};
	uint64_t a, c, e;
	const struct got_update *u;

	add_all(r, first, 4);
	rules_advance(r, 4);
	ck_assert_uint_eq(got.nrequests, 2);
	a = request_of(A)->rid;
	c = request_of(C)->rid;
	ck_assert_int_eq(request_of(A)->held_delivered, 0); /* clean */

	add_all(r, second, 5);
	rules_advance(r, 9);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_BLEED, A, B);
	check_finding(1, LEAK_STALE, 0xd1, C);
	ck_assert_uint_eq(request_of(B)->source_of, 1);
	ck_assert_uint_eq(got.nupdates, 2);
	u = update_of(a, 0);
	ck_assert_int_eq(u->has_row, 1);
	ck_assert_uint_eq(u->row.rid, a);
	ck_assert_str_eq(u->row.name, "a");
	ck_assert_uint_eq(u->row.begin_ts, 1);
	ck_assert_uint_eq(u->row.end_ts, 2);
	ck_assert_uint_eq(u->row.victim_of[LEAK_BLEED], 1);
	ck_assert_uint_eq(u->row.source_of, 0);
	ck_assert_uint_eq(u->row.nrecords, 3);
	ck_assert_int_eq(u->has_counted, 1);
	ck_assert_uint_eq(u->counted.nrecords, 2);
	ck_assert_uint_eq(u->counted.nscopes, 1);
	u = update_of(c, 0);
	ck_assert_int_eq(u->has_row, 1);
	ck_assert_uint_eq(u->row.source_of, 1);
	ck_assert_uint_eq(u->row.victim_of[LEAK_STALE], 0);
	ck_assert_uint_eq(u->row.nrecords, 2);
	ck_assert_uint_eq(u->counted.nrecords, 2);
	/* The evidence is kept like the records held for a row. */
	ck_assert_int_eq(verdict_at(6)->keep, 1);
	ck_assert_uint_eq(verdict_at(6)->rid, a);

	/* A has its row now: plain updates, its records kept. */
	add_all(r, third, 2);
	rules_advance(r, 11);
	ck_assert_uint_eq(got.nupdates, 3);
	u = update_of(a, 1);
	ck_assert_int_eq(u->has_row, 0);
	ck_assert_int_eq(u->has_counted, 0);
	ck_assert_uint_eq(u->victim_of[LEAK_LOST], 1);
	ck_assert_uint_eq(u->records, 2);
	ck_assert_uint_eq(u->late, 1);
	ck_assert_int_eq(verdict_at(11)->keep, 1);
	ck_assert_int_eq(verdict_at(11)->late, 1);

	/* E retires clean; its late work is counted as clean requests are,
	 * until a finding names it. */
	add_all(r, fourth, 2);
	rules_advance(r, 13);
	e = request_of(0xe1)->rid;
	add_all(r, fifth, 1);
	rules_advance(r, 14);
	ck_assert_uint_eq(got.nupdates, 4);
	u = update_of(e, 0);
	ck_assert_int_eq(u->has_row, 0);
	ck_assert_int_eq(u->has_counted, 1);
	ck_assert_uint_eq(u->counted.nrecords, 2);
	ck_assert_uint_eq(u->counted.late, 0);
	ck_assert_uint_eq(u->records, 1);
	ck_assert_uint_eq(u->late, 1);
	ck_assert_int_eq(verdict_at(14)->keep, 0);
	add_all(r, sixth, 2);
	rules_advance(r, 16);
	ck_assert_uint_eq(got.nupdates, 5);
	u = update_of(e, 1);
	ck_assert_int_eq(u->has_row, 1);
	ck_assert_uint_eq(u->row.source_of, 1);
	ck_assert_uint_eq(u->row.nrecords, 3);
	ck_assert_uint_eq(u->row.late, 1);
	ck_assert_uint_eq(u->counted.nrecords, 3);
	ck_assert_uint_eq(u->counted.late, 1);
	rules_finish(r);
	ck_assert_uint_eq(got.nupdates, 5);
	rules_free(r);
}
END_TEST

int main(void)
{
	TCase *late = check_tcase("late", 0, test_late_work, NULL);

	tcase_add_loop_test(late, test_observe_end, 0, 2);
	tcase_add_loop_test(late, test_observe_end_own_request, 0, 2);
	tcase_add_test(late, test_late_findings_update_rows);
	return check_main(
	    check_suite("rules_requests",
			check_tcase("reassembly", 0, test_verdict_rids,
				    test_request_seq, test_request_context,
				    test_retire_after_watermark,
				    test_hold_records, test_hold_copies_strings,
				    test_stale_after_retirement,
				    test_ended_table_bound,
				    test_detail_quotes_user_data, NULL),
			late, NULL),
	    NULL);
}
