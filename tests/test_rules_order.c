/*
 * test_rules_order.c: the rules engine on hand-written record streams
 * (see rules_feed.h): arrival-order independence: the same records judged in
 * any order, random streams, and what the watermark holds back.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "rules_feed.h"

/* ------------------------------------------------------------ order */

/* A thread pool: three workers serve four requests; request 2's code
 * leaks onto a worker that still holds request 1. */
static const struct proto_record pool_stream[] = {
    BEGIN(10, 1, 0x11, 0, 0, "r1"),
    BEGIN(11, 2, 0x21, 0, 0, "r2"),
    TAG(12, 1, 0x11, 0x11, "user", "u1"),
    RESUME(13, 3, 0, 0x21),
    EVENT(14, 3, 0, 0x21, "job"), /* lost */
    CHILD(15, 2, 0x22, 0x21, 0x21, "db"),
    TAG(16, 1, 0x11, 0x21, "status", "500"), /* bleed */
    END(17, 2, 0x22, 0x21, 0x22),
    SUSPEND(18, 3, 0, 0x21),
    END(19, 1, 0x11, 0x11, 0x11),
    BEGIN(20, 3, 0x31, 0, 0x21, "r3"), /* overlap: r2 open */
    END(21, 2, 0x21, 0x21, 0x21),
    TAG(22, 1, 0x11, 0x31, "late", "1"), /* stale */
    END(23, 3, 0x31, 0x31, 0x31),
    BEGIN(24, 1, 0x41, 0, 0, "r4"),
    END(25, 3, 0x41, 0x31, 0x41),   /* misnest: other thread, r3's code */
    BEGIN(26, 2, 0x51, 0, 0, "r5"), /* unclosed */
};

#define NPOOL (sizeof(pool_stream) / sizeof(pool_stream[0]))

static void snapshot(struct got_finding *out, size_t *n)
{
	*n = got.nfindings;
	memcpy(out, got.findings, got.nfindings * sizeof(*out));
}

/* Add records one thread's batch at a time, in an order drawn from seed,
 * advancing the watermark after each window of time, as a flushing client
 * would. */
static void run_shuffled(struct rules *r, unsigned seed)
{
	static const uint64_t windows[] = {15, 20, 26};
	uint64_t lo = 0;

	for (size_t w = 0; w < 3; w++) {
		uint64_t tids[] = {1, 2, 3};

		for (int i = 2; i > 0; i--) {
			int j = rand_r(&seed) % (i + 1);
			uint64_t tmp = tids[i];

			tids[i] = tids[j];
			tids[j] = tmp;
		}
		for (size_t t = 0; t < 3; t++)
			for (size_t i = 0; i < NPOOL; i++)
				if (pool_stream[i].tid == tids[t] &&
				    pool_stream[i].ts > lo &&
				    pool_stream[i].ts <= windows[w])
					add_all(r, &pool_stream[i], 1);
		rules_advance(r, windows[w]);
		lo = windows[w];
	}
	rules_finish(r);
}

START_TEST(test_arrival_order)
{
	static struct got_finding base[MAX_FINDINGS];
	size_t nbase, n;
	struct rules *r = engine(NULL);

	RUN(r, pool_stream);
	rules_free(r);
	snapshot(base, &nbase);
	ck_assert_uint_eq(nbase, 6);
	ck_assert_uint_eq(count(LEAK_LOST), 1);
	ck_assert_uint_eq(count(LEAK_BLEED), 1);
	ck_assert_uint_eq(count(LEAK_OVERLAP), 1);
	ck_assert_uint_eq(count(LEAK_STALE), 1);
	ck_assert_uint_eq(count(LEAK_MISNEST), 1);
	ck_assert_uint_eq(count(LEAK_UNCLOSED), 1);
	for (unsigned seed = 1; seed <= 12; seed++) {
		r = engine(NULL);
		run_shuffled(r, seed * 7919);
		rules_free(r);
		n = got.nfindings;
		ck_assert_uint_eq(n, nbase);
		for (size_t i = 0; i < n; i++) {
			ck_assert_int_eq(got.findings[i].leak, base[i].leak);
			ck_assert_uint_eq(got.findings[i].ts, base[i].ts);
			ck_assert_uint_eq(got.findings[i].victim_rid,
					  base[i].victim_rid);
			ck_assert_uint_eq(got.findings[i].source_rid,
					  base[i].source_rid);
			ck_assert_str_eq(got.findings[i].detail,
					 base[i].detail);
		}
	}
}
END_TEST

/*
 * Random streams over a few ctx values and threads, with every record
 * type, exercise every path (unknown ctx, double END, BEGIN of an open
 * ctx, children of ended requests...).  Whatever the order in which the
 * threads' batches arrive within each watermark window, the findings,
 * verdicts and rebuilt requests are the same.
 */
#define RANDOM_RECORDS 3000

static void random_stream(struct proto_record *recs, unsigned seed)
{
	static const char *const names[] = {"a", "b", "c", "d"};

	for (size_t i = 0; i < RANDOM_RECORDS; i++) {
		struct proto_record *rec = &recs[i];
		unsigned x = (unsigned)rand_r(&seed);

		memset(rec, 0, sizeof(*rec));
		rec->type = PROTO_BEGIN + x % 6;
		rec->ts = i + 1;
		rec->tid = 1 + (x >> 3) % 4;
		rec->ctx = (unsigned)rand_r(&seed) % 24;
		rec->cause = (unsigned)rand_r(&seed) % 24;
		rec->prev = (unsigned)rand_r(&seed) % 24;
		rec->cur = rand_r(&seed) % 2 ? rec->ctx : rec->prev;
		rec->kind = (x >> 6) % 2;
		rec->site = (x >> 7) % 5;
		rec->name = (struct proto_str)S(names[(x >> 9) % 4]);
		rec->key = (struct proto_str)S(names[(x >> 11) % 4]);
		rec->value = (struct proto_str)S(names[(x >> 13) % 4]);
	}
}

struct digest {
	uint64_t sum, n;
};

static void digest_add(struct digest *d, uint64_t v)
{
	d->sum = d->sum * 1000003u + v;
	d->n++;
}

/* Everything the sinks saw, in order. */
static struct digest digest_got(void)
{
	struct digest d = {0, 0};

	for (size_t i = 0; i < got.nfindings; i++) {
		const struct got_finding *f = &got.findings[i];

		digest_add(&d, f->leak);
		digest_add(&d, f->ts);
		digest_add(&d, f->victim_rid);
		digest_add(&d, f->source_rid);
		for (const char *c = f->detail; *c; c++)
			digest_add(&d, (unsigned char)*c);
	}
	for (size_t i = 0; i < got.nverdicts && i < MAX_VERDICTS; i++) {
		digest_add(&d, got.verdicts[i].ts);
		digest_add(&d, got.verdicts[i].rid);
		digest_add(&d, got.verdicts[i].rid_ctx);
		digest_add(&d, got.verdicts[i].leak);
	}
	for (size_t i = 0; i < got.nrequests; i++) {
		const struct got_request *q = &got.requests[i];

		digest_add(&d, q->rid);
		digest_add(&d, q->end_ts);
		digest_add(&d, q->nrecords);
		digest_add(&d, q->ntags);
		digest_add(&d, q->nheld);
		digest_add(&d, q->source_of);
	}
	return d;
}

static void random_requests(struct rules_config *cfg)
{
	cfg->hold_records = 1;
	cfg->max_open_scopes = 16;
	cfg->max_ended_scopes = 8;
	cfg->max_request_age = 200;
}

START_TEST(test_random_streams)
{
	static struct proto_record recs[RANDOM_RECORDS];

	for (unsigned seed = 1; seed <= 4; seed++) {
		struct digest base, d;
		struct rules_stats st;
		struct rules *r;

		random_stream(recs, seed * 104729);
		r = engine(random_requests);
		for (size_t i = 0; i < RANDOM_RECORDS; i++) {
			add_all(r, &recs[i], 1);
			if (i % 100 == 99)
				rules_advance(r, recs[i].ts);
		}
		rules_finish(r);
		rules_stats(r, &st);
		ck_assert_uint_eq(st.open_scopes, 0);
		ck_assert_uint_eq(st.requests_live, 0);
		ck_assert_uint_eq(st.pending, 0);
		ck_assert_uint_le(st.ended_scopes, 8);
		rules_free(r);
		ck_assert_uint_gt(got.nfindings, 0);
		base = digest_got();
		/* Each window of 100 added thread by thread, in a shuffled
		 * order of threads. */
		r = engine(random_requests);
		for (size_t w = 0; w < RANDOM_RECORDS; w += 100) {
			unsigned order = seed + (unsigned)w;
			uint64_t first = 1 + (unsigned)rand_r(&order) % 4;

			for (uint64_t k = 0; k < 4; k++)
				for (size_t i = w; i < w + 100; i++)
					if (recs[i].tid ==
					    1 + (first - 1 + k) % 4)
						add_all(r, &recs[i], 1);
			rules_advance(r, recs[w + 99].ts);
		}
		rules_finish(r);
		rules_free(r);
		d = digest_got();
		ck_assert_uint_eq(d.n, base.n);
		ck_assert_uint_eq(d.sum, base.sum);
	}
}
END_TEST

static void tight_limits(struct rules_config *cfg)
{
	cfg->max_pending = 7;
	cfg->max_open_scopes = 4;
	cfg->max_ended_scopes = 3;
	cfg->max_tags = 2;
	cfg->max_request_age = 50;
}

/* The same streams against limits that force every early path: what
 * comes out is bounded and everything is accounted for at the end. */
START_TEST(test_random_limits)
{
	static struct proto_record recs[RANDOM_RECORDS];

	for (unsigned seed = 1; seed <= 4; seed++) {
		struct rules *r = engine(tight_limits);
		struct rules_stats st;

		random_stream(recs, seed * 7727);
		for (size_t i = RANDOM_RECORDS; i-- > 0;) /* backwards */
			add_all(r, &recs[i], 1);
		rules_stats(r, &st);
		ck_assert_uint_eq(st.pending, 7);
		ck_assert_uint_eq(st.forced, RANDOM_RECORDS - 7);
		ck_assert_uint_le(st.open_scopes, 4);
		rules_finish(r);
		rules_stats(r, &st);
		ck_assert_uint_eq(st.judged, RANDOM_RECORDS);
		ck_assert_uint_eq(got.nverdicts, RANDOM_RECORDS);
		ck_assert_uint_eq(st.open_scopes, 0);
		ck_assert_uint_eq(st.requests_live, 0);
		ck_assert_uint_gt(st.evicted, 0);
		for (size_t i = 0; i < got.nrequests; i++)
			ck_assert_uint_le(got.requests[i].ntags, 2);
		rules_free(r);
	}
}
END_TEST

START_TEST(test_reversed_batch)
{
	struct rules *r = engine(NULL);

	/* Everything backwards, then one watermark. */
	for (size_t i = NPOOL; i-- > 0;)
		add_all(r, &pool_stream[i], 1);
	rules_advance(r, 1000);
	ck_assert_uint_eq(got.nfindings, 5);
	ck_assert_uint_eq(got.nverdicts, NPOOL);
	for (size_t i = 1; i < got.nverdicts; i++)
		ck_assert_uint_lt(got.verdicts[i - 1].ts, got.verdicts[i].ts);
	rules_finish(r);
	ck_assert_uint_eq(got.nfindings, 6);
	rules_free(r);
}
END_TEST

START_TEST(test_watermark_holds_back)
{
	struct rules *r = engine(NULL);
	struct proto_record late = EVENT(5, 2, 0, A, "late");
	const struct proto_record early[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(9, 1, A, A, A),
	};

	add_all(r, early, 2);
	rules_advance(r, 4);
	ck_assert_uint_eq(got.nverdicts, 1);
	/* Thread 2's batch arrives late but before the watermark passes
	 * it: judged while A is still open, so lost, not stale. */
	add_all(r, &late, 1);
	rules_advance(r, 9);
	ck_assert_uint_eq(got.nverdicts, 3);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_LOST, A, 0);
	ck_assert_uint_eq(got.nrequests, 1);
	rules_free(r);
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite("rules_order",
			check_tcase("order", 0, test_arrival_order,
				    test_random_streams, test_random_limits,
				    test_reversed_batch,
				    test_watermark_holds_back, NULL),
			NULL),
	    NULL);
}
