/*
 * rules_feed.c: the collecting sink and the stream helpers of the rules
 * engine's tests (see rules_feed.h).
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "rules_feed.h"

struct got got;

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
uint64_t seq;

struct rules *engine(void (*tune)(struct rules_config *))
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

void hold(struct rules_config *cfg)
{
	cfg->hold_records = 1;
}

void add_all(struct rules *r, const struct proto_record *recs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(rules_add(r, &recs[i]), 0);
}

void run(struct rules *r, const struct proto_record *recs, size_t n)
{
	add_all(r, recs, n);
	rules_finish(r);
}

void judge(const struct proto_record *recs, size_t n)
{
	struct rules *r = engine(NULL);

	run(r, recs, n);
	rules_free(r);
}

size_t count(enum leak_class leak)
{
	size_t n = 0;

	for (size_t i = 0; i < got.nfindings; i++)
		n += got.findings[i].leak == leak;
	return n;
}

const struct got_request *request_of(uint64_t ctx)
{
	for (size_t i = 0; i < got.nrequests; i++)
		if (got.requests[i].ctx == ctx)
			return &got.requests[i];
	ck_abort_msg("request of ctx %#llx not retired",
		     (unsigned long long)ctx);
	return NULL;
}

const struct got_tag *tag_of(const struct got_request *rq, const char *key)
{
	for (uint32_t i = 0; i < rq->ntags; i++)
		if (strcmp(rq->tags[i].key, key) == 0)
			return &rq->tags[i];
	ck_abort_msg("request #%llu has no tag %s", (unsigned long long)rq->rid,
		     key);
	return NULL;
}

void check_finding(size_t i, enum leak_class leak, uint64_t victim_ctx,
		   uint64_t source_ctx)
{
	const struct got_finding *f = &got.findings[i];

	ck_assert_uint_lt(i, got.nfindings);
	ck_assert_msg(f->leak == leak, "finding %zu: %s, expected %s", i,
		      leak_class_name(f->leak), leak_class_name(leak));
	ck_assert_uint_eq(f->victim_ctx, victim_ctx);
	ck_assert_uint_eq(f->source_ctx, source_ctx);
}

size_t late_verdicts(void)
{
	size_t n = 0;

	for (size_t i = 0; i < got.nverdicts && i < MAX_VERDICTS; i++)
		n += got.verdicts[i].late != 0;
	return n;
}

const struct got_update *update_of(uint64_t rid, int nth)
{
	for (size_t i = 0; i < got.nupdates; i++)
		if (got.updates[i].rid == rid && nth-- == 0)
			return &got.updates[i];
	ck_abort_msg("no update of request #%llu", (unsigned long long)rid);
	return NULL;
}

const struct got_verdict *verdict_at(uint64_t ts)
{
	for (size_t i = 0; i < got.nverdicts && i < MAX_VERDICTS; i++)
		if (got.verdicts[i].ts == ts)
			return &got.verdicts[i];
	ck_abort_msg("no verdict at ts %llu", (unsigned long long)ts);
	return NULL;
}
