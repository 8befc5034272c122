/*
 * test_rules.c: the rules engine (daemon/rules*.c) on hand-written record
 * streams: every leak class and its precedence, the worked example of
 * DESIGN.md under each backend, arrival-order independence, unclosed
 * scopes, request reassembly and retirement, the concurrency model, and
 * the engine's memory bounds.  No sockets, no SQLite: records in, findings
 * out.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "rules_int.h" /* the hash table's layout, for test_table_spread */

/* ------------------------------------------------------------ collector */

#define MAX_FINDINGS 4096
#define MAX_VERDICTS 4096
#define MAX_REQUESTS 4096
#define MAX_HELD     32
#define MAX_TAGS     8
#define MAX_UPDATES  64

struct got_finding {
	enum leak_class leak;
	uint64_t victim_rid, victim_ctx, source_rid, source_ctx;
	char victim_name[80], source_name[80];
	int victim_named, source_named;
	uint8_t type;
	uint64_t ts, ctx;
	enum rules_unclosed_reason reason;
	char detail[512];
};

struct got_verdict {
	uint8_t type;
	uint64_t ts, ctx, rid, rid_ctx;
	enum leak_class leak;
	int late, keep;
};

struct got_tag {
	char key[32], value[32];
	int value_nil;
	uint64_t setter_rid, setter_ctx;
};

struct got_request {
	uint64_t rid, ctx, begin_ts, end_ts;
	char name[80];
	uint32_t nthreads, nscopes, ntags;
	uint64_t threads[RULES_MAX_THREADS];
	uint64_t nrecords, late;
	struct got_tag tags[MAX_TAGS];
	uint32_t victim_of[LEAK_CLASS_COUNT], source_of;
	size_t nheld;
	uint32_t held_dropped, tags_dropped;
	int held_delivered; /* rq->held was not NULL */
	struct got_verdict held[MAX_HELD];
};

/* A rules_update; its row and counted parts, when given, as requests. */
struct got_update {
	uint64_t rid;
	uint32_t victim_of[LEAK_CLASS_COUNT], source_of;
	uint64_t records, late;
	int has_row, has_counted;
	struct got_request row, counted;
};

static struct {
	size_t nfindings, nverdicts, nrequests, nupdates;
	struct got_finding findings[MAX_FINDINGS];
	struct got_verdict verdicts[MAX_VERDICTS];
	struct got_request requests[MAX_REQUESTS];
	struct got_update updates[MAX_UPDATES];
} got;

static void copy_str(char *dst, size_t cap, struct proto_str s)
{
	size_t n = s.len < cap - 1 ? s.len : cap - 1;

	if (s.ptr != NULL)
		memcpy(dst, s.ptr, n);
	dst[s.ptr ? n : 0] = '\0';
}

static void to_verdict(struct got_verdict *g, const struct rules_verdict *v)
{
	g->type = v->rec->type;
	g->ts = v->rec->ts;
	g->ctx = v->rec->ctx;
	g->rid = v->rid;
	g->rid_ctx = v->rid_ctx;
	g->leak = v->leak;
	g->late = v->late;
	g->keep = v->keep;
}

static void on_verdict(void *arg, const struct rules_verdict *v)
{
	(void)arg;
	if (got.nverdicts < MAX_VERDICTS)
		to_verdict(&got.verdicts[got.nverdicts], v);
	got.nverdicts++;
}

static void on_finding(void *arg, const struct rules_finding *f)
{
	struct got_finding *g = &got.findings[got.nfindings];

	(void)arg;
	ck_assert_uint_lt(got.nfindings, MAX_FINDINGS);
	got.nfindings++;
	g->leak = f->leak;
	g->victim_rid = f->victim_rid;
	g->victim_ctx = f->victim_ctx;
	g->source_rid = f->source_rid;
	g->source_ctx = f->source_ctx;
	copy_str(g->victim_name, sizeof(g->victim_name), f->victim_name);
	copy_str(g->source_name, sizeof(g->source_name), f->source_name);
	g->victim_named = f->victim_name.ptr != NULL;
	g->source_named = f->source_name.ptr != NULL;
	g->type = f->rec->type;
	g->ts = f->rec->ts;
	g->ctx = f->rec->ctx;
	g->reason = f->reason;
	ck_assert_ptr_nonnull(f->detail);
	snprintf(g->detail, sizeof(g->detail), "%s", f->detail);
}

static void to_request(struct got_request *g, const struct rules_request *rq)
{
	memset(g, 0, sizeof(*g));
	g->rid = rq->rid;
	g->ctx = rq->ctx;
	g->begin_ts = rq->begin_ts;
	g->end_ts = rq->end_ts;
	copy_str(g->name, sizeof(g->name), rq->name);
	g->nthreads = rq->nthreads;
	for (uint32_t i = 0; i < rq->nthreads && i < RULES_MAX_THREADS; i++)
		g->threads[i] = rq->threads[i];
	g->nscopes = rq->nscopes;
	g->nrecords = rq->nrecords;
	g->late = rq->late;
	g->ntags = rq->ntags;
	for (uint32_t i = 0; i < rq->ntags && i < MAX_TAGS; i++) {
		copy_str(g->tags[i].key, sizeof(g->tags[i].key),
			 rq->tags[i].key);
		copy_str(g->tags[i].value, sizeof(g->tags[i].value),
			 rq->tags[i].value);
		g->tags[i].value_nil = rq->tags[i].value.ptr == NULL;
		g->tags[i].setter_rid = rq->tags[i].setter_rid;
		g->tags[i].setter_ctx = rq->tags[i].setter_ctx;
	}
	memcpy(g->victim_of, rq->victim_of, sizeof(g->victim_of));
	g->source_of = rq->source_of;
	g->nheld = rq->nheld;
	g->held_dropped = rq->held_dropped;
	g->tags_dropped = rq->tags_dropped;
	g->held_delivered = rq->held != NULL;
	for (size_t i = 0; g->held_delivered && i < rq->nheld && i < MAX_HELD;
	     i++)
		to_verdict(&g->held[i], &rq->held[i]);
}

static void on_request(void *arg, const struct rules_request *rq)
{
	(void)arg;
	ck_assert_uint_lt(got.nrequests, MAX_REQUESTS);
	to_request(&got.requests[got.nrequests++], rq);
}

static void on_update(void *arg, const struct rules_update *u)
{
	struct got_update *g = &got.updates[got.nupdates];

	(void)arg;
	ck_assert_uint_lt(got.nupdates, MAX_UPDATES);
	got.nupdates++;
	memset(g, 0, sizeof(*g));
	g->rid = u->rid;
	memcpy(g->victim_of, u->victim_of, sizeof(g->victim_of));
	g->source_of = u->source_of;
	g->records = u->records;
	g->late = u->late;
	g->has_row = u->row != NULL;
	g->has_counted = u->counted != NULL;
	if (u->row != NULL)
		to_request(&g->row, u->row);
	if (u->counted != NULL)
		to_request(&g->counted, u->counted);
}

static const struct rules_sink sink = {on_verdict, on_finding, on_request,
				       on_update, NULL};
static uint64_t seq;

static struct rules *engine(void (*tune)(struct rules_config *))
{
	struct rules_config cfg;
	struct rules *r;

	memset(&got, 0, sizeof(got));
	seq = 0;
	rules_config_default(&cfg);
	cfg.request_seq = &seq;
	if (tune != NULL)
		tune(&cfg);
	r = rules_new(&cfg, &sink);
	ck_assert_ptr_nonnull(r);
	return r;
}

static void hold(struct rules_config *cfg)
{
	cfg->hold_records = 1;
}

static uint64_t rules_stats_held_dropped(const struct rules *r)
{
	struct rules_stats st;

	rules_stats(r, &st);
	return st.held_dropped;
}

/* ------------------------------------------------------------ records */

/*
 * Record builders.  They expand to initializers so that streams can be
 * static tables; a record assigned at run time is cast to a compound
 * literal, e.g. rec = (struct proto_record)END(3, 1, A, A, A).
 */
#define S(s)                                                                   \
	{                                                                      \
		(s), (uint32_t)__builtin_strlen(s)                             \
	}
#define REC(ty, ts_, tid_, ctx_, cause_)                                       \
	.type = (ty), .ts = (ts_), .tid = (tid_), .ctx = (ctx_),               \
	.cause = (cause_)
#define BEGIN(ts, tid, ctx, cause, prev_, name_)                               \
	{                                                                      \
		REC(PROTO_BEGIN, ts, tid, ctx, cause),                         \
		    .prev = (prev_), .kind = PROTO_KIND_REQUEST,               \
		    .name = S(name_)                                           \
	}
#define CHILD(ts, tid, ctx, cause, prev_, name_)                               \
	{                                                                      \
		REC(PROTO_BEGIN, ts, tid, ctx, cause),                         \
		    .prev = (prev_), .kind = PROTO_KIND_CHILD,                 \
		    .name = S(name_)                                           \
	}
#define END(ts, tid, ctx, cause, cur_)                                         \
	{                                                                      \
		REC(PROTO_END, ts, tid, ctx, cause), .cur = (cur_)             \
	}
#define TAG(ts, tid, ctx, cause, key_, value_)                                 \
	{                                                                      \
		REC(PROTO_TAG, ts, tid, ctx, cause), .key = S(key_),           \
						     .value = S(value_)        \
	}
#define EVENT(ts, tid, ctx, cause, name_)                                      \
	{                                                                      \
		REC(PROTO_EVENT, ts, tid, ctx, cause), .name = S(name_)        \
	}
#define RESUME(ts, tid, ctx, cause)                                            \
	{                                                                      \
		REC(PROTO_RESUME, ts, tid, ctx, cause)                         \
	}
#define SUSPEND(ts, tid, ctx, cause)                                           \
	{                                                                      \
		REC(PROTO_SUSPEND, ts, tid, ctx, cause)                        \
	}
#define AS (struct proto_record)

static void add_all(struct rules *r, const struct proto_record *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(rules_add(r, &recs[i]), 0);
}

/* Judge a whole stream and let the process go. */
static void run(struct rules *r, const struct proto_record *recs, size_t n)
{
	add_all(r, recs, n);
	rules_finish(r);
}

#define RUN(r, recs) run(r, recs, sizeof(recs) / sizeof(recs[0]))

static size_t count(enum leak_class leak)
{
	size_t n = 0;

	for (size_t i = 0; i < got.nfindings; i++)
		n += got.findings[i].leak == leak;
	return n;
}

static const struct got_request *request_of(uint64_t ctx)
{
	for (size_t i = 0; i < got.nrequests; i++)
		if (got.requests[i].ctx == ctx)
			return &got.requests[i];
	ck_abort_msg("request of ctx %#llx not retired",
		     (unsigned long long)ctx);
	return NULL;
}

static const struct got_tag *tag_of(const struct got_request *rq,
				    const char *key)
{
	for (uint32_t i = 0; i < rq->ntags; i++)
		if (strcmp(rq->tags[i].key, key) == 0)
			return &rq->tags[i];
	ck_abort_msg("request #%llu has no tag %s", (unsigned long long)rq->rid,
		     key);
	return NULL;
}

static void check_finding(size_t i, enum leak_class leak, uint64_t victim_ctx,
			  uint64_t source_ctx)
{
	const struct got_finding *f = &got.findings[i];

	ck_assert_uint_lt(i, got.nfindings);
	ck_assert_msg(f->leak == leak, "finding %zu: %s, expected %s", i,
		      leak_class_name(f->leak), leak_class_name(leak));
	ck_assert_uint_eq(f->victim_ctx, victim_ctx);
	ck_assert_uint_eq(f->source_ctx, source_ctx);
}

/* ------------------------------------------------------------ worked example
 */

#define T 100 /* the event loop's thread */
#define A 0xa1
#define B 0xb1
#define C 0xc1

/*
 * DESIGN.md's worked example under `thread`, derived call by call from the
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

/* ------------------------------------------------------------ classes */

START_TEST(test_lost)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    EVENT(2, 2, 0, A, "on worker"),
	    END(3, 1, A, A, A),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_LOST, A, 0);
	ck_assert_uint_eq(got.findings[0].source_rid, 0);
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail, "no backend ctx"));
	rules_free(r);
}
END_TEST

START_TEST(test_stale)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    END(2, 1, A, A, A),
	    BEGIN(3, 1, B, 0, 0, "b"),
	    TAG(4, 1, A, B, "k", "v"), /* the slot still says A */
	    END(5, 1, B, B, B),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_STALE, B, A);
	rules_free(r);
}
END_TEST

START_TEST(test_bleed)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), BEGIN(2, 2, B, 0, 0, "b"),
	    EVENT(3, 2, A, B, "x"),    END(4, 1, A, A, A),
	    END(5, 2, B, B, B),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_BLEED, B, A);
	ck_assert_uint_eq(got.findings[0].type, PROTO_EVENT);
	rules_free(r);
}
END_TEST

START_TEST(test_bleed_background)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 1, A, 0, "cache", "warm"), /* no true request */
	    TAG(3, 1, 0, 0, "idle", "1"),     /* nothing at all */
	    END(4, 1, A, A, A),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_BLEED, 0, A);
	ck_assert_uint_eq(got.findings[0].victim_rid, 0);
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail,
				     "with no request was recorded under "
				     "request #1 'a' (background"));
	/* The tag still lands in A's context, set by no request. */
	ck_assert_uint_eq(tag_of(request_of(A), "cache")->setter_rid, 0);
	rules_free(r);
}
END_TEST

START_TEST(test_overlap)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    BEGIN(2, 1, B, 0, A, "b"),
	    END(3, 1, B, B, B),
	    END(4, 1, A, A, A),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_OVERLAP, B, A);
	ck_assert_str_eq(got.findings[0].detail,
			 "request #2 'b' began while request #1 'a' was still "
			 "current (it would inherit its context)");
	rules_free(r);
}
END_TEST

START_TEST(test_unclosed_at_finish)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 7, A, 0, 0, "a"),
	    CHILD(2, 7, 0xa2, A, A, "db"),
	};

	RUN(r, recs);
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
	rules_free(r);
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
	struct rules *r = engine(NULL);
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

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 5);
	check_finding(0, LEAK_LOST, B, 0);
	check_finding(1, LEAK_STALE, B, A);
	check_finding(2, LEAK_STALE, B, A);
	check_finding(3, LEAK_BLEED, A, B);
	check_finding(4, LEAK_LOST, B, 0);
	ck_assert_ptr_nonnull(strstr(got.findings[3].detail,
				     "child scope 'db2' of request #1 'a' was "
				     "begun under request #2 'b'"));
	rules_free(r);
}
END_TEST

START_TEST(test_precedence_request_begin)
{
	struct rules *r = engine(NULL);
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

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 3);
	check_finding(0, LEAK_STALE, B, A);
	check_finding(1, LEAK_OVERLAP, C, B);
	check_finding(2, LEAK_OVERLAP, 0xd1, B);
	ck_assert_ptr_nonnull(
	    strstr(got.findings[0].detail, "began while ended request #1 'a'"));
	rules_free(r);
}
END_TEST

START_TEST(test_misnest_conditions)
{
	struct rules *r = engine(NULL);
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

	RUN(r, recs);
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
	rules_free(r);
}
END_TEST

START_TEST(test_end_unknown_without_cause)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    END(1, 1, 0xee, 0, 0xee),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	check_finding(0, LEAK_MISNEST, 0, 0);
	ck_assert_uint_eq(got.findings[0].victim_rid, 0);
	/* Its record still resolves to a stable pseudo request. */
	ck_assert_uint_eq(got.nverdicts, 1);
	ck_assert_uint_ne(got.verdicts[0].rid, 0);
	rules_free(r);
}
END_TEST

START_TEST(test_unknown_ctx_is_stable)
{
	struct rules *r = engine(NULL);
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"),
	    TAG(2, 1, 0x5eed, A, "k", "1"),	 /* bleed from unknown */
	    TAG(3, 1, 0x5eed, A, "k", "2"),	 /* same pseudo request */
	    TAG(4, 1, 0x5eed, 0x5eed, "k", "3"), /* its own: nothing */
	    END(5, 1, A, A, A),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 2);
	check_finding(0, LEAK_BLEED, A, 0x5eed);
	check_finding(1, LEAK_BLEED, A, 0x5eed);
	ck_assert_uint_eq(got.findings[0].source_rid,
			  got.findings[1].source_rid);
	ck_assert_uint_ne(got.findings[0].source_rid, 0);
	ck_assert_int_eq(got.findings[0].source_named, 0);
	ck_assert_ptr_nonnull(
	    strstr(got.findings[0].detail, "unknown request #2 (ctx 0x5eed"));
	rules_free(r);
}
END_TEST

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
	struct rules *r = engine(NULL);
	char value[200];
	struct proto_record recs[3];

	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	value[3] = '\n';
	recs[0] = AS BEGIN(1, 1, A, 0, 0, "a");
	recs[1] = AS TAG(2, 1, 0, A, "k", value);
	recs[2] = AS END(3, 1, A, A, A);
	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 1);
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail, "tag k=vvv?vvvv"));
	ck_assert_ptr_null(strchr(got.findings[0].detail, '\n'));
	/* 64 bytes of the value, then an ellipsis. */
	ck_assert_ptr_nonnull(strstr(got.findings[0].detail, "v... of"));
	ck_assert_uint_lt(strlen(got.findings[0].detail), 200);
	rules_free(r);
}
END_TEST

/* ------------------------------------------------------------ model */

START_TEST(test_model_thread_per_request)
{
	struct rules *r = engine(NULL);
	struct rules_model m;
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), TAG(2, 1, A, A, "k", "v"),
	    END(3, 1, A, A, A),	       BEGIN(4, 1, B, 0, 0, "b"),
	    BEGIN(5, 2, C, 0, 0, "c"), EVENT(6, 2, C, C, "e"),
	    EVENT(7, 1, B, B, "e"),    END(8, 1, B, B, B),
	    END(9, 2, C, C, C),
	};

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 0);
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "thread-per-request");
	ck_assert_str_eq(m.recommend, "thread");
	ck_assert_uint_eq(m.requests, 3);
	ck_assert_uint_eq(m.interleaved, 0);
	ck_assert_uint_eq(m.handed_off, 0);
	rules_free(r);
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
	struct rules *r = engine(NULL);
	struct rules_model m;
	const struct proto_record recs[] = {
	    BEGIN(1, 5, A, 0, 0, "a"), BEGIN(2, 5, B, 0, 0, "b"),
	    BEGIN(3, 5, C, 0, 0, "c"), EVENT(4, 5, A, A, "e"),
	    EVENT(5, 5, B, B, "e"),    EVENT(6, 5, C, C, "e"),
	    END(7, 5, A, A, A),	       END(8, 5, B, B, B),
	    END(9, 5, C, C, C),
	};

	RUN(r, recs);
	rules_model(r, &m);
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
	rules_free(r);
}
END_TEST

START_TEST(test_model_thread_pool)
{
	struct rules *r = engine(NULL);
	struct rules_model m;
	/* An acceptor (thread 1) hands each request to a worker. */
	const struct proto_record recs[] = {
	    BEGIN(1, 1, A, 0, 0, "a"), BEGIN(2, 1, B, 0, 0, "b"),
	    RESUME(3, 2, 0, A),	       EVENT(4, 2, A, A, "work"),
	    END(5, 2, A, A, A),	       RESUME(6, 3, 0, B),
	    EVENT(7, 3, B, B, "work"), END(8, 3, B, B, B),
	};

	RUN(r, recs);
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_uint_eq(m.handed_off, 2);
	ck_assert_uint_eq(m.interleaved, 0);
	ck_assert_str_eq(m.evidence, "2 of 2 requests handed between threads; "
				     "the current backend already isolates "
				     "them (task is the recommended backend "
				     "for this model)");
	ck_assert_uint_eq(request_of(A)->nthreads, 2);
	rules_free(r);
}
END_TEST

/* Under `global`, a child begun by A's code is attached to B, the request
 * the slot held; the model still follows the true owner, so it sees
 * thread-per-request, not B handed between threads. */
START_TEST(test_model_ignores_backend)
{
	struct rules *r = engine(NULL);
	struct rules_model m;
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

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 2);
	/* The rules follow the backend's tree: db's records are B's. */
	ck_assert_uint_eq(request_of(B)->nthreads, 2);
	ck_assert_str_eq(tag_of(request_of(B), "rows")->value, "1");
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "thread-per-request");
	ck_assert_str_eq(m.recommend, "thread");
	ck_assert_uint_eq(m.handed_off, 0);
	rules_free(r);
}
END_TEST

/* A worker whose thread-local slot is empty begins a child for A's job:
 * the child is a request of its own by the rules (and lost), but the
 * model still sees one request handed to the worker, not two
 * interleaving. */
START_TEST(test_model_child_without_backend)
{
	struct rules *r = engine(NULL);
	struct rules_model m;
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

	RUN(r, recs);
	ck_assert_uint_eq(got.nfindings, 3);
	check_finding(0, LEAK_LOST, A, 0);
	check_finding(1, LEAK_LOST, A, 0);
	check_finding(2, LEAK_MISNEST, A, 0);
	ck_assert_uint_eq(got.nrequests, 2);
	ck_assert_str_eq(request_of(0xa2)->name, "db");
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_uint_eq(m.requests, 1);
	ck_assert_uint_eq(m.interleaved, 0);
	ck_assert_uint_eq(m.handed_off, 1);
	rules_free(r);
}
END_TEST

START_TEST(test_model_unknown)
{
	struct rules *r = engine(NULL);
	struct rules_model m;

	rules_finish(r);
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "unknown");
	ck_assert_uint_eq(m.requests, 0);
	rules_free(r);
}
END_TEST

/* With no requests there is no evidence for any backend. */
START_TEST(test_model_no_requests_no_advice)
{
	struct rules *r = engine(NULL);
	struct rules_model m;

	rules_finish(r);
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "unknown");
	ck_assert_ptr_null(m.recommend);
	ck_assert_str_eq(m.evidence, "no requests seen; nothing to recommend");
	rules_free(r);
}
END_TEST

/* A thread pool whose backend lost A's context on the hand-off is told to
 * use task; the same pool whose backend carried it (a custom backend the
 * application switches, or task) is told it already isolates them. */
START_TEST(test_model_backend_already_isolates)
{
	struct rules *r = engine(NULL);
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

	RUN(r, lossy);
	ck_assert_uint_eq(got.nfindings, 1);
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_str_eq(m.evidence, "1 of 1 requests handed between threads; "
				     "thread backend loses them on hand-off; "
				     "use task");
	rules_free(r);

	r = engine(NULL);
	RUN(r, carried);
	ck_assert_uint_eq(got.nfindings, 0);
	rules_model(r, &m);
	ck_assert_str_eq(m.model, "thread-pool");
	ck_assert_str_eq(m.recommend, "task");
	ck_assert_ptr_nonnull(strstr(m.evidence, "already isolates them"));
	rules_free(r);
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

/* ------------------------------------------------------------ late */

static size_t late_verdicts(void)
{
	size_t n = 0;

	for (size_t i = 0; i < got.nverdicts && i < MAX_VERDICTS; i++)
		n += got.verdicts[i].late != 0;
	return n;
}

/* The update of request rid, the nth of them (0 first). */
static const struct got_update *update_of(uint64_t rid, int nth)
{
	for (size_t i = 0; i < got.nupdates; i++)
		if (got.updates[i].rid == rid && nth-- == 0)
			return &got.updates[i];
	ck_abort_msg("no update of request #%llu", (unsigned long long)rid);
	return NULL;
}

/* The verdict of the record at ts. */
static const struct got_verdict *verdict_at(uint64_t ts)
{
	for (size_t i = 0; i < got.nverdicts && i < MAX_VERDICTS; i++)
		if (got.verdicts[i].ts == ts)
			return &got.verdicts[i];
	ck_abort_msg("no verdict at ts %llu", (unsigned long long)ts);
	return NULL;
}

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

static Suite *rules_suite(void)
{
	Suite *s = suite_create("rules");
	TCase *tc;

	tc = tcase_create("example");
	tcase_add_test(tc, test_example_thread);
	tcase_add_test(tc, test_example_global);
	tcase_add_test(tc, test_example_task);
	tcase_add_test(tc, test_held_only_when_involved);
	tcase_add_test(tc, test_held_bounded);
	suite_add_tcase(s, tc);

	tc = tcase_create("classes");
	tcase_add_test(tc, test_lost);
	tcase_add_test(tc, test_stale);
	tcase_add_test(tc, test_bleed);
	tcase_add_test(tc, test_bleed_background);
	tcase_add_test(tc, test_overlap);
	tcase_add_test(tc, test_unclosed_at_finish);
	tcase_add_test(tc, test_unclosed_at_age);
	tcase_add_test(tc, test_unclosed_at_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("precedence");
	tcase_add_test(tc, test_precedence_work);
	tcase_add_test(tc, test_precedence_request_begin);
	tcase_add_test(tc, test_misnest_conditions);
	tcase_add_test(tc, test_end_unknown_without_cause);
	tcase_add_test(tc, test_unknown_ctx_is_stable);
	suite_add_tcase(s, tc);

	tc = tcase_create("order");
	tcase_add_test(tc, test_arrival_order);
	tcase_add_test(tc, test_random_streams);
	tcase_add_test(tc, test_random_limits);
	tcase_add_test(tc, test_reversed_batch);
	tcase_add_test(tc, test_watermark_holds_back);
	suite_add_tcase(s, tc);

	tc = tcase_create("reassembly");
	tcase_add_test(tc, test_verdict_rids);
	tcase_add_test(tc, test_request_seq);
	tcase_add_test(tc, test_request_context);
	tcase_add_test(tc, test_retire_after_watermark);
	tcase_add_test(tc, test_hold_records);
	tcase_add_test(tc, test_hold_copies_strings);
	tcase_add_test(tc, test_stale_after_retirement);
	tcase_add_test(tc, test_ended_table_bound);
	tcase_add_test(tc, test_detail_quotes_user_data);
	suite_add_tcase(s, tc);

	tc = tcase_create("late");
	tcase_add_test(tc, test_late_work);
	tcase_add_loop_test(tc, test_observe_end, 0, 2);
	tcase_add_test(tc, test_late_findings_update_rows);
	suite_add_tcase(s, tc);

	tc = tcase_create("model");
	tcase_add_test(tc, test_model_thread_per_request);
	tcase_add_test(tc, test_model_event_loop);
	tcase_add_test(tc, test_model_thread_pool);
	tcase_add_test(tc, test_model_ignores_backend);
	tcase_add_test(tc, test_model_child_without_backend);
	tcase_add_test(tc, test_model_unknown);
	tcase_add_test(tc, test_model_no_requests_no_advice);
	tcase_add_test(tc, test_model_backend_already_isolates);
	tcase_add_test(tc, test_model_tie_lowest_tid);
	suite_add_tcase(s, tc);

	tc = tcase_create("tables");
	tcase_add_test(tc, test_table_spread);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_memory_open_requests);
	tcase_add_test(tc, test_memory_open_children);
	tcase_add_test(tc, test_memory_steady_state);
	tcase_add_test(tc, test_max_pending);
	tcase_add_test(tc, test_max_pending_retires);
	tcase_add_test(tc, test_max_pending_bytes);
	tcase_add_test(tc, test_tags_bounded);
	tcase_add_test(tc, test_names_bounded);
	tcase_add_test(tc, test_forget_open);
	tcase_add_test(tc, test_forget_ended);
	tcase_add_test(tc, test_stats_and_names);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(rules_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
