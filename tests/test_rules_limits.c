/*
 * test_rules_limits.c: the rules engine on hand-written record streams
 * (see rules_feed.h): the engine's memory bounds: held records, tags and names
 * against their byte budget, open and ended scopes, pending records,
 * bytes per scope, and the spread of its hash tables.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "check_main.h"
#include "rules_feed.h"
#include "rules_int.h" /* the hash table's layout, for test_table_spread */

/* Held records are bounded by max_held_bytes, counted across every engine
 * that shares the counter; what does not fit is counted, and the budget
 * comes back when the request retires. */
static uint64_t shared_held;

static void hold_small(struct rules_config *cfg)
{
	cfg->hold_records = 1;
	cfg->max_held_bytes = 4096;
	cfg->held_bytes = &shared_held;
}

static uint64_t rules_stats_held_dropped(const struct rules *r)
{
	struct rules_stats st;

	rules_stats(r, &st);
	return st.held_dropped;
}

START_TEST(test_held_bounded)
{
	struct rules *r = engine(hold_small), *other;
	const struct proto_record begin = BEGIN(1, 1, A, 0, 0, "a");
	struct proto_record tag = TAG(2, 1, A, A, "user", "alice");
	const struct proto_record end = END(100000, 1, A, A, A);
	const struct got_request *a;
	size_t tags = 1000;

	shared_held = 0;
	ck_assert_int_eq(rules_add(r, &begin), 0);
	for (size_t i = 0; i < tags; i++) {
		tag.ts = 2 + i;
		ck_assert_int_eq(rules_add(r, &tag), 0);
	}
	rules_advance(r, 1 + tags);
	ck_assert_uint_le(shared_held, 4096);
	ck_assert_uint_gt(shared_held, 0);
	/* A second engine on the same budget holds nothing now. */
	other = engine(hold_small);
	ck_assert_int_eq(rules_add(other, &begin), 0);
	tag.ts = 3;
	ck_assert_int_eq(rules_add(other, &tag), 0);
	rules_advance(other, 3);
	ck_assert_uint_eq(rules_stats_held_dropped(other), 1);
	rules_free(other);
	memset(&got, 0, sizeof(got));
	ck_assert_int_eq(rules_add(r, &end), 0);
	rules_finish(r);
	a = request_of(A);
	ck_assert_uint_gt(a->held_dropped, 0);
	/* Every record of it, BEGIN and END included, is held or counted. */
	ck_assert_uint_eq(a->nheld + a->held_dropped, tags + 2);
	/* Its records' budget came back; its name's, a few bytes, comes back
	 * when its ended scope is forgotten. */
	ck_assert_uint_lt(shared_held, 64);
	rules_free(r);
	ck_assert_uint_eq(shared_held, 0);
}
END_TEST

/* Tags count against the same budget, in both modes: many open requests
 * with long tags cannot hold memory without bound either. */
static void tags_small(struct rules_config *cfg)
{
	cfg->max_held_bytes = 4096;
	cfg->held_bytes = &shared_held;
}

START_TEST(test_tags_bounded)
{
	static char value[1000];
	struct rules *r = engine(tags_small);
	struct proto_record tag = TAG(0, 1, 0, 0, "k", "");
	char key[8];
	const struct got_request *a;

	memset(value, 'v', sizeof value);
	tag.value = (struct proto_str){value, sizeof value};
	shared_held = 0;
	for (uint64_t q = 0; q < 3; q++) {
		const struct proto_record begin =
		    BEGIN(1 + q, 1, A + q, 0, 0, "a");

		ck_assert_int_eq(rules_add(r, &begin), 0);
	}
	/* Ten distinct keys on each of the three open requests. */
	for (uint64_t i = 0; i < 30; i++) {
		snprintf(key, sizeof key, "k%llu", (unsigned long long)i % 10);
		tag.ts = 10 + i;
		tag.ctx = tag.cause = A + i / 10;
		tag.key = (struct proto_str){key, (uint32_t)strlen(key)};
		ck_assert_int_eq(rules_add(r, &tag), 0);
	}
	rules_advance(r, 100);
	ck_assert_uint_le(shared_held, 4096);
	ck_assert_uint_gt(shared_held, 3000);
	rules_finish(r);
	/* Four fit; the first request had them, the others none. */
	a = request_of(A);
	ck_assert_uint_eq(a->ntags, 4);
	ck_assert_uint_eq(a->tags_dropped, 6);
	ck_assert_uint_eq(request_of(A + 1)->tags_dropped, 10);
	ck_assert_uint_eq(request_of(A + 2)->tags_dropped, 10);
	/* The ended scopes keep their names until the engine goes. */
	rules_free(r);
	ck_assert_uint_eq(shared_held, 0);
}
END_TEST

/* Names too: past the budget a scope is kept without its name. */
START_TEST(test_names_bounded)
{
	static char name[1000];
	struct rules *r = engine(tags_small);
	struct proto_record begin = BEGIN(0, 1, 0, 0, 0, "");
	struct rules_stats st;

	memset(name, 'n', sizeof name);
	begin.name = (struct proto_str){name, sizeof name};
	shared_held = 0;
	for (uint64_t q = 0; q < 10; q++) {
		snprintf(name, 16, "%015llu", (unsigned long long)q);
		begin.ts = 1 + q;
		begin.ctx = A + q;
		ck_assert_int_eq(rules_add(r, &begin), 0);
	}
	rules_advance(r, 100);
	ck_assert_uint_le(shared_held, 4096);
	rules_stats(r, &st);
	ck_assert_uint_eq(st.names_dropped, 7);
	ck_assert_uint_eq(st.open_scopes, 10);
	rules_finish(r);
	/* Three fit, the first three. */
	ck_assert_int_eq(
	    strncmp(request_of(A + 2)->name, "000000000000002", 15), 0);
	ck_assert_str_eq(request_of(A + 3)->name, "");
	/* The ended scopes keep their names until the engine goes. */
	rules_free(r);
	ck_assert_uint_eq(shared_held, 0);
}
END_TEST

/* Engines sharing open_scopes_total count their open scopes there, and
 * rules_forget_open forgets the oldest as the per-engine limit would. */
static uint64_t shared_open;

static void open_shared(struct rules_config *cfg)
{
	cfg->open_scopes_total = &shared_open;
}

START_TEST(test_forget_open)
{
	struct rules *r = engine(open_shared), *other;
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    BEGIN(2, 1, B, 0, 0, "b"),
	};
	const struct proto_record c = BEGIN(3, 1, C, 0, 0, "c");

	shared_open = 0;
	add_all(r, recs, 2);
	rules_advance(r, 2);
	other = engine(open_shared);
	ck_assert_int_eq(rules_add(other, &c), 0);
	rules_advance(other, 3);
	ck_assert_uint_eq(shared_open, 3);
	memset(&got, 0, sizeof(got));
	ck_assert_uint_eq(rules_forget_open(r, 1), 1);
	ck_assert_uint_eq(shared_open, 2);
	ck_assert_uint_eq(got.nfindings, 1);
	ck_assert_int_eq(got.findings[0].leak, LEAK_UNCLOSED);
	ck_assert_uint_eq(got.findings[0].ctx, A);
	ck_assert_int_eq(got.findings[0].reason, RULES_UNCLOSED_LIMIT);
	ck_assert_uint_eq(rules_forget_open(r, 5), 1);
	ck_assert_uint_eq(shared_open, 1);
	rules_free(other);
	ck_assert_uint_eq(shared_open, 0);
	rules_free(r);
}
END_TEST

/* Likewise ended scopes: forgotten, their ctx is then of an unknown
 * request (a bleed, no longer stale), and the ring shrinks back. */
static uint64_t shared_ended;

static void ended_shared(struct rules_config *cfg)
{
	cfg->ended_scopes_total = &shared_ended;
}

START_TEST(test_forget_ended)
{
	struct rules *r = engine(ended_shared);
	struct proto_record begin = BEGIN(0, 1, 0, 0, 0, "a");
	struct proto_record end = END(0, 1, 0, 0, 0);
	const struct proto_record probe[] = {
	    BEGIN(5000, 1, 0x7777, 0, 0, "p"),
	    TAG(5001, 1, 0x1000, 0x7777, "k", "v"),
	    TAG(5002, 1, 0x1000 + 999, 0x7777, "k", "v"),
	};
	struct rules_stats st;

	shared_ended = 0;
	for (uint64_t i = 0; i < 1000; i++) {
		begin.ts = 10 + 2 * i;
		end.ts = 11 + 2 * i;
		begin.ctx = end.ctx = end.cause = end.cur = 0x1000 + i;
		ck_assert_int_eq(rules_add(r, &begin), 0);
		ck_assert_int_eq(rules_add(r, &end), 0);
	}
	rules_advance(r, 3000);
	ck_assert_uint_eq(shared_ended, 1000);
	rules_stats(r, &st);
	ck_assert_uint_eq(st.ended_scopes, 1000);
	ck_assert_uint_eq(rules_forget_ended(r, 990), 990);
	ck_assert_uint_eq(shared_ended, 10);
	memset(&got, 0, sizeof(got));
	add_all(r, probe, 3);
	rules_advance(r, 6000);
	ck_assert_uint_eq(got.nfindings, 2);
	ck_assert_int_eq(got.findings[0].leak, LEAK_BLEED);
	ck_assert_int_eq(got.findings[1].leak, LEAK_STALE);
	rules_free(r);
	ck_assert_uint_eq(shared_ended, 0);
}
END_TEST

/* ------------------------------------------------------------ limits */

#define MANY 100000

static void many_open(struct rules_config *cfg)
{
	cfg->max_open_scopes = MANY + 1;
	cfg->hold_records = 1;
}

static void check_bytes_per_scope(struct rules *r, const char *what)
{
	struct rules_stats st;
	double per;

	rules_stats(r, &st);
	ck_assert_uint_eq(st.pending, 0);
	ck_assert_uint_ge(st.open_scopes, MANY);
	per = (double)st.bytes_used / (double)st.open_scopes;
	printf("rules: %s: %llu open scopes, %llu bytes, %.1f bytes each\n",
	       what, (unsigned long long)st.open_scopes,
	       (unsigned long long)st.bytes_used, per);
	ck_assert_msg(per < 200, "%s: %.1f bytes per open scope", what, per);
}

START_TEST(test_memory_open_requests)
{
	struct rules *r = engine(many_open);

	/* Requests begun and never ended, as under a correct backend (prev
	 * 0), with records held: the worst case of --keep=leaky. */
	for (uint64_t i = 0; i < MANY; i++) {
		struct proto_record rec =
		    BEGIN(i + 1, 1 + i % 8, 0x9e3779b97f4a7c15ull * (i + 1), 0,
			  0, "GET /item");

		ck_assert_int_eq(rules_add(r, &rec), 0);
		if (i % 1000 == 999)
			rules_advance(r, i + 1);
	}
	check_bytes_per_scope(r, "open requests");
	rules_free(r);
}
END_TEST

/* Requests that come and go, as a busy service's do: what each one
 * allocates is reused by the ones after it, so that after the bounded
 * tables have filled, the engine's memory does not grow with the number
 * of requests it has retired. */
static uint64_t churn_retired, churn_held;

static void churn_request(void *arg, const struct rules_request *rq)
{
	(void)arg;
	churn_retired++;
	churn_held += rq->nheld;
}

static uint64_t churn(struct rules *r, uint64_t from, uint64_t to)
{
	struct rules_stats st;
	char user[32];

	for (uint64_t i = from; i < to; i++) {
		uint64_t ts = 4 * i + 1, ctx = 0x9e3779b97f4a7c15ull * (i + 1);
		struct proto_record recs[] = {
		    BEGIN(ts, 1, ctx, 0, 0, "GET /churn"),
		    TAG(ts + 1, 1, ctx, ctx, "user", ""),
		    EVENT(ts + 2, 1, ctx, ctx, "db.query"),
		    END(ts + 3, 1, ctx, ctx, ctx),
		};

		/* Values of many lengths, so that blocks of many sizes
		 * come and go. */
		snprintf(user, sizeof user, "user-%llu",
			 (unsigned long long)(i * 7919 % 1000003));
		recs[1].value =
		    (struct proto_str){user, (uint32_t)strlen(user)};
		for (size_t k = 0; k < sizeof recs / sizeof recs[0]; k++)
			ck_assert_int_eq(rules_add(r, &recs[k]), 0);
		if (i % 1000 == 999)
			rules_advance(r, ts + 3);
	}
	rules_stats(r, &st);
	return st.bytes_used;
}

START_TEST(test_memory_steady_state)
{
	struct rules_sink counting = {NULL, NULL, churn_request, NULL, NULL};
	struct rules_config cfg;
	struct rules *r;
	uint64_t warm, later;

	rules_config_default(&cfg);
	cfg.hold_records = 1;
	r = rules_new(&cfg, &counting);
	ck_assert_ptr_nonnull(r);
	churn_retired = churn_held = 0;
	warm = churn(r, 0, 2 * cfg.max_ended_scopes);
	later = churn(r, 2 * cfg.max_ended_scopes, 6 * cfg.max_ended_scopes);
	rules_finish(r);
	ck_assert_uint_eq(churn_retired, 6 * cfg.max_ended_scopes);
	ck_assert_uint_eq(churn_held, 4 * churn_retired);
	printf("rules: steady state: %llu bytes after %u requests, %llu "
	       "after %u\n",
	       (unsigned long long)warm, 2 * cfg.max_ended_scopes,
	       (unsigned long long)later, 6 * cfg.max_ended_scopes);
	ck_assert_uint_le(later, warm + 64 * 1024);
	rules_free(r);
}
END_TEST

START_TEST(test_memory_open_children)
{
	struct rules *r = engine(many_open);
	struct proto_record rec = BEGIN(1, 1, A, 0, 0, "GET /fanout");

	ck_assert_int_eq(rules_add(r, &rec), 0);
	for (uint64_t i = 0; i < MANY; i++) {
		rec = AS CHILD(i + 2, 1, 0x9e3779b97f4a7c15ull * (i + 7), A, A,
			       "fetch");
		ck_assert_int_eq(rules_add(r, &rec), 0);
		if (i % 1000 == 999)
			rules_advance(r, i + 2);
	}
	rules_advance(r, MANY + 1);
	check_bytes_per_scope(r, "open children, held");
	rules_free(r);
}
END_TEST

static void pending_4(struct rules_config *cfg)
{
	cfg->max_pending = 4;
}

START_TEST(test_max_pending)
{
	struct rules *r = engine(pending_4);
	struct rules_stats st;

	for (uint64_t i = 0; i < 10; i++) {
		struct proto_record rec = EVENT(100 - i, 1, 0, 0, "e");

		ck_assert_int_eq(rules_add(r, &rec), 0);
	}
	rules_stats(r, &st);
	ck_assert_uint_eq(st.forced, 6);
	ck_assert_uint_eq(st.pending, 4);
	ck_assert_uint_eq(got.nverdicts, 6);
	/* The oldest queued at each moment went first: 96 was the oldest of
	 * the first five. */
	ck_assert_uint_eq(got.verdicts[0].ts, 96);
	ck_assert_uint_eq(got.verdicts[5].ts, 91);
	rules_finish(r);
	ck_assert_uint_eq(got.nverdicts, 10);
	rules_stats(r, &st);
	ck_assert_uint_eq(st.judged, 10);
	rules_free(r);
}
END_TEST

/* Queued bytes are bounded by max_pending_bytes across every engine that
 * shares the counter: an engine over it judges its own oldest at once, and
 * whatever is judged gives its bytes back. */
static uint64_t shared_pending;

static void pending_small(struct rules_config *cfg)
{
	cfg->max_pending_bytes = 8192;
	cfg->pending_bytes = &shared_pending;
}

START_TEST(test_max_pending_bytes)
{
	static char text[1000];
	struct rules *r = engine(pending_small), *other;
	struct proto_record rec = EVENT(0, 1, 0, 0, "e");
	struct rules_stats st;

	memset(text, 'x', sizeof text);
	rec.message = (struct proto_str){text, sizeof text};
	shared_pending = 0;
	for (uint64_t i = 0; i < 100; i++) {
		rec.ts = 1000 - i;
		ck_assert_int_eq(rules_add(r, &rec), 0);
		ck_assert_uint_le(shared_pending, 8192);
	}
	rules_stats(r, &st);
	ck_assert_uint_gt(st.pending, 4);
	ck_assert_uint_lt(st.pending, 9);
	ck_assert_uint_eq(st.forced, 100 - st.pending);
	ck_assert_uint_eq(got.nverdicts, st.forced);
	/* A second engine on the same budget: its record is judged at once,
	 * the first engine's queue stays as it was. */
	other = engine(pending_small);
	ck_assert_int_eq(rules_add(other, &rec), 0);
	ck_assert_uint_eq(got.nverdicts, 1);
	rules_stats(other, &st);
	ck_assert_uint_eq(st.pending, 0);
	ck_assert_uint_eq(st.forced, 1);
	rules_free(other);
	rules_finish(r);
	ck_assert_uint_eq(shared_pending, 0);
	rules_free(r);
}
END_TEST

/* A client that never sends a watermark still has its requests retired
 * once forced judging passes them. */
START_TEST(test_max_pending_retires)
{
	struct rules *r = engine(pending_4);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), END(2, 1, A, A, A),
	    BEGIN(3, 1, B, 0, 0, "b"), END(4, 1, B, B, B),
	    BEGIN(5, 1, C, 0, 0, "c"), END(6, 1, C, C, C),
	};

	add_all(r, recs, 6);
	ck_assert_uint_eq(got.nrequests, 1); /* A; B's END is queued */
	ck_assert_uint_eq(got.requests[0].ctx, A);
	rules_finish(r);
	ck_assert_uint_eq(got.nrequests, 3);
	rules_free(r);
}
END_TEST

/* ------------------------------------------------------------ tables */

/* Mean distance of the entries of t from their home slots. */
static double mean_displacement(const struct ptab *t)
{
	uint32_t mask = (1u << t->bits) - 1;
	uint64_t sum = 0;

	for (uint32_t i = 0; i <= mask; i++)
		if (t->hash[i] != 0)
			sum += (i - (t->hash[i] >> (32 - t->bits))) & mask;
	return (double)sum / t->count;
}

/*
 * Structured keys spread in the ctx tables as random ones do: counters, a
 * custom backend's pointers, and multiples of the Fibonacci constant,
 * which with a multiplicative hash sat 6.5 slots from home on average (a
 * random key: 0.5) and made every lookup of the ended table walk them.
 */
START_TEST(test_table_spread)
{
	static uint64_t keys[16384];
	const uint64_t stride[] = {1, 64, 0x9e3779b97f4a7c15ull};
	struct rules *r = engine(NULL);

	for (size_t k = 0; k < sizeof stride / sizeof stride[0]; k++) {
		struct ptab t = {.load = PTAB_SPARSE};

		for (size_t i = 0; i < 16384; i++) {
			keys[i] = stride[k] * (i + 1);
			ck_assert_int_eq(ptab_insert(r, &t, &keys[i]), 0);
		}
		ck_assert_double_lt(mean_displacement(&t), 1.5);
		for (size_t i = 0; i < 16384; i++)
			ck_assert_ptr_eq(*ptab_find(&t, keys[i]), &keys[i]);
		ptab_free(r, &t);
	}
	rules_free(r);
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite(
		"rules_limits",
		check_tcase("limits", 60, test_held_bounded,
			    test_memory_open_requests,
			    test_memory_open_children, test_memory_steady_state,
			    test_max_pending, test_max_pending_retires,
			    test_max_pending_bytes, test_tags_bounded,
			    test_names_bounded, test_forget_open,
			    test_forget_ended, NULL),
		check_tcase("tables", 0, test_table_spread, NULL), NULL),
	    NULL);
}
