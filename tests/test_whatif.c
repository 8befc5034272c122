/*
 * test_whatif.c: the daemon's what-if (daemon/whatif.c) against what the
 * backends really give.  Its contract (docs/DESIGN.md "What-if"): for any
 * program, the counts the replay gives for backend X equal, class by class,
 * the findings of the same program run under CTXLEAK_BACKEND=X.
 *
 * - Random programs of begin, child, end (on any thread, also of scopes
 *   begun on another, and of scopes already ended), tag, event, capture,
 *   resume and suspend over up to three threads:
 *   . without sockets: each backend's record stream made from DESIGN's
 *     per-call table by a model of the library written here, the rules
 *     engine's findings on it, against the replay of every stream (the
 *     engine wired to the replay as process.c wires them); per class and
 *     per site, hundreds of programs;
 *   . with the real client library and the real daemon: each program run
 *     once under each backend, its threads taking turns with a baton so
 *     that ts order is call order, the what_if rows of every run against
 *     the leaks rows of the run under that backend.
 * - A stream one record off (one TAG under the wrong ctx) fails the
 *   comparison: it can tell.
 * - The worked example of docs/DESIGN.md and the example workers
 *   (examples/), each run under thread, global and task.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "cli_run.h"
#include "ctxleakd.h"
#include "harness.h"

#define NB WHATIF_BACKENDS

static const char *const backends[NB] = {"thread", "global", "task"};
static const enum ctxleak_backend client_backends[NB] = {
    CTXLEAK_BACKEND_THREAD, CTXLEAK_BACKEND_GLOBAL, CTXLEAK_BACKEND_TASK};

/* ------------------------------------------------------------ programs */

enum op_type {
	OP_BEGIN,
	OP_CHILD,
	OP_END,
	OP_TAG,
	OP_EVENT,
	OP_CAPTURE,
	OP_RESUME,
	OP_SUSPEND,
	OP_TYPES
};

#define MAX_OPS	    3072
#define RANDOM_OPS  96 /* a random program's most */
#define MAX_THREADS 3

struct op {
	uint8_t type;
	uint8_t thread;
	uint16_t arg; /* END: the scope, in begin order; RESUME: the token,
			 in capture order */
};

struct program {
	int nthreads, nops;
	struct op ops[MAX_OPS];
};

static uint64_t rnd_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static unsigned rnd(uint64_t *s, unsigned n)
{
	return (unsigned)(rnd_next(s) % n);
}

/* A random program: mostly work under open scopes, with every call that
 * moves context; an END names an open scope of any thread, now and then
 * one already ended. */
static void make_program(uint64_t seed, struct program *p)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
	int begun = 0, captured = 0, open[MAX_OPS], nopen = 0;

	p->nthreads = 1 + (int)rnd(&s, MAX_THREADS);
	p->nops = RANDOM_OPS / 2 + (int)rnd(&s, RANDOM_OPS / 2);
	for (int i = 0; i < p->nops; i++) {
		struct op *o = &p->ops[i];
		unsigned r = rnd(&s, 100);

		o->thread = (uint8_t)rnd(&s, (unsigned)p->nthreads);
		o->arg = 0;
		if (r < 12)
			o->type = OP_BEGIN;
		else if (r < 24)
			o->type = OP_CHILD;
		else if (r < 42)
			o->type = (nopen || begun) ? OP_END : OP_BEGIN;
		else if (r < 56)
			o->type = OP_TAG;
		else if (r < 66)
			o->type = OP_EVENT;
		else if (r < 76)
			o->type = OP_CAPTURE;
		else if (r < 88)
			o->type = captured ? OP_RESUME : OP_CAPTURE;
		else
			o->type = OP_SUSPEND;
		switch (o->type) {
		case OP_BEGIN:
		case OP_CHILD:
			open[nopen++] = begun++;
			break;
		case OP_END:
			if (nopen == 0 || rnd(&s, 10) == 0) {
				o->arg = (uint16_t)rnd(&s, (unsigned)begun);
			} else {
				unsigned k = rnd(&s, (unsigned)nopen);

				o->arg = (uint16_t)open[k];
				open[k] = open[--nopen];
			}
			break;
		case OP_CAPTURE:
			captured++;
			break;
		case OP_RESUME:
			o->arg = (uint16_t)rnd(&s, (unsigned)captured);
			break;
		default:
			break;
		}
	}
}

/* ------------------------------------------ the library, as DESIGN says */

/*
 * DESIGN's per-call table for backend b, written here apart from the
 * daemon's replay so that the two check each other: the record stream the
 * library sends under b for program p.  Scope i's ctx is i + 1; ts is the
 * op's index + 1, tid the thread + 100, site the op's type + 1.
 */
struct sim_thread {
	uint64_t c, b;
	uint64_t stack_c[MAX_OPS], stack_b[MAX_OPS];
	int depth;
};

static size_t simulate(const struct program *p, int b, struct proto_record *out)
{
	struct sim_thread th[MAX_THREADS];
	uint64_t global = 0, saved_b[MAX_OPS], saved_c[MAX_OPS];
	uint64_t tokens[MAX_OPS];
	int known[MAX_OPS], begun = 0, captured = 0;
	size_t n = 0;

	memset(th, 0, sizeof(th));
	memset(known, 0, sizeof(known));
	for (int i = 0; i < p->nops; i++) {
		const struct op *o = &p->ops[i];
		struct sim_thread *t = &th[o->thread];
		uint64_t *slot = b == WHATIF_GLOBAL ? &global : &t->b;
		struct proto_record r;
		uint64_t x;

		memset(&r, 0, sizeof(r));
		r.ts = (uint64_t)i + 1;
		r.tid = o->thread + 100u;
		r.site = o->type + 1u;
		r.cause = t->c;
		r.ctx = *slot;
		switch (o->type) {
		case OP_BEGIN:
		case OP_CHILD:
			x = (uint64_t)begun + 1;
			r.type = PROTO_BEGIN;
			r.kind = o->type == OP_BEGIN ? PROTO_KIND_REQUEST
						     : PROTO_KIND_CHILD;
			r.prev = *slot;
			r.ctx = x;
			r.name = (struct proto_str){"scope", 5};
			saved_b[begun] = *slot;
			saved_c[begun] = t->c;
			known[begun++] = 1;
			*slot = t->c = x;
			break;
		case OP_END:
			r.type = PROTO_END;
			r.ctx = (uint64_t)o->arg + 1;
			r.cur = *slot;
			if (known[o->arg]) {
				*slot = saved_b[o->arg];
				t->c = saved_c[o->arg];
				known[o->arg] = 0;
			}
			break;
		case OP_TAG:
			r.type = PROTO_TAG;
			r.key = (struct proto_str){"k", 1};
			r.value = (struct proto_str){"v", 1};
			break;
		case OP_EVENT:
			r.type = PROTO_EVENT;
			r.name = (struct proto_str){"e", 1};
			break;
		case OP_CAPTURE:
			tokens[captured++] = t->c;
			continue;
		case OP_RESUME:
			r.type = PROTO_RESUME;
			r.cause = tokens[o->arg];
			t->stack_c[t->depth] = t->c;
			t->stack_b[t->depth++] = *slot;
			t->c = tokens[o->arg];
			if (b == WHATIF_TASK)
				t->b = tokens[o->arg];
			break;
		case OP_SUSPEND:
			r.type = PROTO_SUSPEND;
			if (t->depth > 0) {
				t->depth--;
				t->c = t->stack_c[t->depth];
				if (b == WHATIF_TASK)
					t->b = t->stack_b[t->depth];
			}
			break;
		}
		out[n++] = r;
	}
	return n;
}

/* ------------------------------------------------- engine and replay */

/* Findings per class and site (sites are op types + 1). */
struct counts {
	uint64_t n[LEAK_CLASS_COUNT][OP_TYPES + 1];
};

struct wiring {
	struct rules *rules;
	struct whatif *whatif; /* NULL: the engine alone */
	struct counts found;   /* the engine's findings */
};

static void on_finding(void *arg, const struct rules_finding *f)
{
	struct wiring *w = arg;

	w->found.n[f->leak][f->rec->site]++;
	if (f->leak == LEAK_UNCLOSED && w->whatif != NULL)
		whatif_unclosed(w->whatif, f->rec);
}

static void on_judged(void *arg, const struct proto_record *rec)
{
	struct wiring *w = arg;

	whatif_record(w->whatif, rec);
}

/* Ended scopes the engine and the replay remember; tests lower it so
 * that both forget. */
static uint32_t max_ended = 1u << 14;

/* The stream through a rules engine (and the replay, when w->whatif),
 * wired as process.c wires them. */
static void judge_stream(struct wiring *w, const struct proto_record *recs,
			 size_t n)
{
	struct rules_config cfg;
	struct rules_sink sink = {.finding = on_finding, .arg = w};

	rules_config_default(&cfg);
	cfg.max_ended_scopes = max_ended;
	w->rules = rules_new(&cfg, &sink);
	ck_assert_ptr_nonnull(w->rules);
	if (w->whatif != NULL)
		rules_on_judged(w->rules, on_judged, w);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(rules_add(w->rules, &recs[i]), 0);
	rules_finish(w->rules);
	rules_free(w->rules);
}

struct replayed {
	struct counts of[NB];
	uint64_t totals[NB][LEAK_CLASS_COUNT];
};

static void on_row(void *arg, int b, enum leak_class c, uint32_t site,
		   uint64_t count)
{
	struct replayed *r = arg;

	ck_assert_uint_le(site, OP_TYPES);
	r->of[b].n[c][site] += count;
}

static void replay_stream(const struct proto_record *recs, size_t n,
			  struct replayed *out)
{
	struct wiring w;

	memset(&w, 0, sizeof(w));
	memset(out, 0, sizeof(*out));
	w.whatif = whatif_new(max_ended, 0);
	ck_assert_ptr_nonnull(w.whatif);
	judge_stream(&w, recs, n);
	whatif_rows(w.whatif, on_row, out);
	whatif_totals(w.whatif, out->totals);
	ck_assert_uint_eq(whatif_approximate(w.whatif), 0);
	whatif_free(w.whatif);
}

static struct counts engine_counts(const struct proto_record *recs, size_t n)
{
	struct wiring w;

	memset(&w, 0, sizeof(w));
	judge_stream(&w, recs, n);
	return w.found;
}

/* "" when equal, else the first class and site that differ, for the
 * assertion's message. */
static const char *differ(const struct counts *want, const struct counts *got,
			  char *buf, size_t len)
{
	for (int c = 1; c < LEAK_CLASS_COUNT; c++)
		for (int s = 0; s <= OP_TYPES; s++)
			if (want->n[c][s] != got->n[c][s]) {
				snprintf(buf, len,
					 "%s at site %d: engine %llu, replay "
					 "%llu",
					 leak_class_name((enum leak_class)c), s,
					 (unsigned long long)want->n[c][s],
					 (unsigned long long)got->n[c][s]);
				return buf;
			}
	return "";
}

/* --------------------------------------------------- without sockets */

#define PROGRAMS 400

/* The program's engine findings under each backend against the replay of
 * each backend's stream; the replay's findings, all backends together. */
static uint64_t compare_program(const struct program *p, const char *what)
{
	static struct proto_record recs[NB][MAX_OPS];
	struct counts real[NB];
	struct replayed rep;
	size_t n[NB];
	uint64_t findings = 0;
	char why[128];

	for (int b = 0; b < NB; b++) {
		n[b] = simulate(p, b, recs[b]);
		real[b] = engine_counts(recs[b], n[b]);
	}
	/* Whichever backend the program ran under, the replay gives every
	 * backend's findings. */
	for (int ran = 0; ran < NB; ran++) {
		replay_stream(recs[ran], n[ran], &rep);
		for (int b = 0; b < NB; b++)
			ck_assert_msg(
			    !*differ(&real[b], &rep.of[b], why, sizeof(why)),
			    "%s run under %s, what-if %s: %s", what,
			    backends[ran], backends[b], why);
	}
	for (int b = 0; b < NB; b++)
		for (int c = 1; c < LEAK_CLASS_COUNT; c++)
			findings += rep.totals[b][c];
	return findings;
}

START_TEST(test_random_programs_model)
{
	static struct program p;
	uint64_t findings = 0;
	char what[64];

	for (uint64_t seed = 1; seed <= PROGRAMS; seed++) {
		make_program(seed, &p);
		snprintf(what, sizeof(what), "program %llu",
			 (unsigned long long)seed);
		findings += compare_program(&p, what);
	}
	/* The programs exercise the rules, not only the empty case. */
	ck_assert_uint_gt(findings, 10 * PROGRAMS);
}
END_TEST

/*
 * A thousand requests, each begun on one thread and ended on another,
 * then a tag on the first, whose slot still names the request: stale
 * under thread.  With room for 2 ended scopes, the replay forgets as the
 * engine does, and finds the scope that just ended among the ones its
 * table no longer names.
 */
START_TEST(test_forgetting)
{
	static struct program p;
	int i = 0;

	p.nthreads = 2;
	for (int k = 0; k < 1000; k++) {
		p.ops[i++] = (struct op){OP_BEGIN, 0, 0};
		p.ops[i++] = (struct op){OP_END, 1, (uint16_t)k};
		p.ops[i++] = (struct op){OP_TAG, 0, 0};
	}
	p.nops = i;
	max_ended = 2;
	ck_assert_uint_gt(compare_program(&p, "1000 requests"), 1000);
}
END_TEST

/* One TAG under another ctx in one backend's stream: that backend's
 * engine counts differ from the replay, so a replay off by one record
 * cannot pass the comparison above. */
START_TEST(test_one_record_off_is_caught)
{
	static struct proto_record recs[MAX_OPS];
	struct counts real;
	struct replayed rep;
	struct program p;
	int tried = 0;
	char why[128];

	for (uint64_t seed = 1; seed <= 50; seed++) {
		make_program(seed, &p);
		for (int b = 0; b < NB; b++) {
			size_t n = simulate(&p, b, recs);
			size_t i = 0;

			replay_stream(recs, n, &rep);
			while (i < n && !(recs[i].type == PROTO_TAG &&
					  recs[i].cause != 0))
				i++;
			if (i == n)
				continue;
			/* Lost when it was not, or no longer lost. */
			recs[i].ctx = recs[i].ctx ? 0 : recs[i].cause;
			real = engine_counts(recs, n);
			ck_assert_msg(
			    *differ(&real, &rep.of[b], why, sizeof(why)),
			    "program %llu: one record off under %s "
			    "went unnoticed",
			    (unsigned long long)seed, backends[b]);
			tried++;
		}
	}
	ck_assert_int_gt(tried, 100);
}
END_TEST

/* DESIGN's worked example, as the task backend records it: the replay
 * gives the table's counts for thread and global, nothing for task. */
START_TEST(test_worked_example_replayed)
{
	enum { A = 0xa, B = 0xb, C = 0xc };
	const struct proto_record recs[] = {
	    {.type = PROTO_RESUME, .ts = 1, .tid = 1},
	    {.type = PROTO_BEGIN,
	     .ts = 2,
	     .tid = 1,
	     .ctx = A,
	     .name = {"a", 1}},
	    {.type = PROTO_TAG,
	     .ts = 3,
	     .tid = 1,
	     .ctx = A,
	     .cause = A,
	     .key = {"user", 4}},
	    {.type = PROTO_SUSPEND, .ts = 4, .tid = 1, .ctx = A, .cause = A},
	    {.type = PROTO_RESUME, .ts = 5, .tid = 1},
	    {.type = PROTO_BEGIN,
	     .ts = 6,
	     .tid = 1,
	     .ctx = B,
	     .name = {"b", 1}},
	    {.type = PROTO_TAG,
	     .ts = 7,
	     .tid = 1,
	     .ctx = B,
	     .cause = B,
	     .key = {"user", 4}},
	    {.type = PROTO_SUSPEND, .ts = 8, .tid = 1, .ctx = B, .cause = B},
	    {.type = PROTO_RESUME, .ts = 9, .tid = 1, .ctx = 0, .cause = A},
	    {.type = PROTO_EVENT,
	     .ts = 10,
	     .tid = 1,
	     .ctx = A,
	     .cause = A,
	     .name = {"db.done", 7}},
	    {.type = PROTO_TAG,
	     .ts = 11,
	     .tid = 1,
	     .ctx = A,
	     .cause = A,
	     .key = {"status", 6}},
	    {.type = PROTO_END,
	     .ts = 12,
	     .tid = 1,
	     .ctx = A,
	     .cause = A,
	     .cur = A},
	    {.type = PROTO_SUSPEND, .ts = 13, .tid = 1},
	    {.type = PROTO_RESUME, .ts = 14, .tid = 1, .cause = B},
	    {.type = PROTO_EVENT,
	     .ts = 15,
	     .tid = 1,
	     .ctx = B,
	     .cause = B,
	     .name = {"db.done", 7}},
	    {.type = PROTO_END,
	     .ts = 16,
	     .tid = 1,
	     .ctx = B,
	     .cause = B,
	     .cur = B},
	    {.type = PROTO_SUSPEND, .ts = 17, .tid = 1},
	    {.type = PROTO_RESUME, .ts = 18, .tid = 1},
	    {.type = PROTO_BEGIN,
	     .ts = 19,
	     .tid = 1,
	     .ctx = C,
	     .name = {"c", 1}},
	    {.type = PROTO_END,
	     .ts = 20,
	     .tid = 1,
	     .ctx = C,
	     .cause = C,
	     .cur = C},
	    {.type = PROTO_SUSPEND, .ts = 21, .tid = 1},
	};
	const uint64_t want[LEAK_CLASS_COUNT] = {
	    [LEAK_OVERLAP] = 1, [LEAK_BLEED] = 2, [LEAK_MISNEST] = 2,
	    [LEAK_LOST] = 1,	[LEAK_STALE] = 1,
	};
	struct replayed rep;

	replay_stream(recs, sizeof(recs) / sizeof(recs[0]), &rep);
	for (int c = 1; c < LEAK_CLASS_COUNT; c++) {
		ck_assert_uint_eq(rep.totals[WHATIF_THREAD][c], want[c]);
		ck_assert_uint_eq(rep.totals[WHATIF_GLOBAL][c], want[c]);
		ck_assert_uint_eq(rep.totals[WHATIF_TASK][c], 0);
	}
}
END_TEST

/* Work a request left running on another thread, judged after the
 * request retired, still counts it as handed between threads: the model
 * explains the findings it gives under thread (here a lost event). */
START_TEST(test_model_counts_late_hand_off)
{
	enum { A = 0xa };
	const struct proto_record recs[] = {
	    {.type = PROTO_BEGIN, .ts = 1, .tid = 1, .ctx = A, .name = {"a", 1}},
	    {.type = PROTO_END, .ts = 2, .tid = 1, .ctx = A, .cause = A,
	     .cur = A},
	    {.type = PROTO_RESUME, .ts = 3, .tid = 2, .cause = A},
	    {.type = PROTO_EVENT, .ts = 4, .tid = 2, .cause = A,
	     .name = {"e", 1}},
	    {.type = PROTO_SUSPEND, .ts = 5, .tid = 2, .cause = A},
	};
	struct rules_config cfg;
	struct rules_model m;
	struct rules *r;

	rules_config_default(&cfg);
	r = rules_new(&cfg, NULL);
	ck_assert_ptr_nonnull(r);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(rules_add(r, &recs[i]), 0);
	rules_advance(r, 2); /* A retires */
	for (int i = 2; i < 5; i++)
		ck_assert_int_eq(rules_add(r, &recs[i]), 0);
	rules_finish(r);
	rules_model(r, &m);
	ck_assert_uint_eq(m.requests, 1);
	ck_assert_uint_eq(m.handed_off, 1);
	ck_assert_str_eq(m.model, "thread-pool");
	rules_free(r);
}
END_TEST

/* ------------------------------------- the real library and daemon */

/* A program run by the real client library: its threads take turns, so
 * that each call happens, and takes its ts, in the program's order. */
struct baton {
	const struct program *p;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int next;
	uint64_t scopes[MAX_OPS], tokens[MAX_OPS];
	int begun, captured;
};

struct turn {
	struct baton *bt;
	int thread;
};

static void run_op(struct baton *bt, const struct op *o)
{
	switch (o->type) {
	case OP_BEGIN:
		bt->scopes[bt->begun++] = ctxleak_begin("scope");
		break;
	case OP_CHILD:
		bt->scopes[bt->begun++] = ctxleak_begin_child("scope");
		break;
	case OP_END:
		ctxleak_end(bt->scopes[o->arg]);
		break;
	case OP_TAG:
		ctxleak_tag("k", "v");
		break;
	case OP_EVENT:
		ctxleak_event("e", NULL);
		break;
	case OP_CAPTURE:
		bt->tokens[bt->captured++] = ctxleak_capture();
		break;
	case OP_RESUME:
		ctxleak_resume(bt->tokens[o->arg]);
		break;
	case OP_SUSPEND:
		ctxleak_suspend();
		break;
	}
}

static void *take_turns(void *arg)
{
	struct turn *t = arg;
	struct baton *bt = t->bt;

	pthread_mutex_lock(&bt->mu);
	for (;;) {
		while (bt->next < bt->p->nops &&
		       bt->p->ops[bt->next].thread != t->thread)
			pthread_cond_wait(&bt->cv, &bt->mu);
		if (bt->next == bt->p->nops)
			break;
		run_op(bt, &bt->p->ops[bt->next]);
		bt->next++;
		pthread_cond_broadcast(&bt->cv);
	}
	pthread_mutex_unlock(&bt->mu);
	return NULL;
}

static int run_program(void *arg)
{
	struct baton bt = {.p = arg,
			   .mu = PTHREAD_MUTEX_INITIALIZER,
			   .cv = PTHREAD_COND_INITIALIZER};
	struct turn turns[MAX_THREADS];
	pthread_t th[MAX_THREADS];

	for (int i = 0; i < bt.p->nthreads; i++) {
		turns[i] = (struct turn){&bt, i};
		if (pthread_create(&th[i], NULL, take_turns, &turns[i]) != 0)
			return 1;
	}
	for (int i = 0; i < bt.p->nthreads; i++)
		pthread_join(th[i], NULL);
	return 0;
}

/*
 * Findings per class and site line, as one string, "class:line=n ...":
 * of the leaks of the process that ran under backend ran (what NULL), or
 * of its what-if for backend what.  The site's line, not its id: each
 * process defines its own sites.  By backend, not by row: the daemon may
 * read the HELLO of one client before the last bytes of the one before.
 */
static char *findings_of(const struct harness_daemon *d, const char *ran,
			 const char *what)
{
	char sql[768];
	char *s;

	if (what == NULL)
		snprintf(sql, sizeof(sql),
			 "SELECT coalesce(group_concat(k, ' '), '') FROM "
			 "(SELECT l.class || ':' || coalesce(s.line, 0) || "
			 "'=' || count(*) AS k FROM leaks l LEFT JOIN sites s "
			 "ON s.id = l.site_id WHERE l.process_id = (SELECT id "
			 "FROM processes WHERE backend = '%s') "
			 "GROUP BY l.class, s.line ORDER BY 1)",
			 ran);
	else
		snprintf(
		    sql, sizeof(sql),
		    "SELECT coalesce(group_concat(k, ' '), '') FROM "
		    "(SELECT w.class || ':' || coalesce(s.line, 0) || "
		    "'=' || sum(w.count) AS k FROM what_if w LEFT JOIN "
		    "sites s ON s.id = w.site_id WHERE w.process_id = "
		    "(SELECT id FROM processes WHERE backend = '%s') AND "
		    "w.backend = '%s' GROUP BY w.class, s.line ORDER BY 1)",
		    ran, what);
	s = harness_query_str(d, sql);
	return s ? s : strdup("(error)");
}

/* The runs of one daemon, one under each backend: each run's what-if for
 * each backend equals what the run under that backend found, per class
 * and site. */
static void assert_runs_agree(const struct harness_daemon *d, const char *what)
{
	ck_assert_int_eq(
	    harness_query_int(d, "SELECT count(*) FROM processes WHERE "
				 "what_if = 1 AND dropped = 0"),
	    NB);
	for (int b = 0; b < NB; b++) {
		char *real = findings_of(d, backends[b], NULL);

		for (int ran = 0; ran < NB; ran++) {
			char *replayed =
			    findings_of(d, backends[ran], backends[b]);

			ck_assert_msg(strcmp(real, replayed) == 0,
				      "%s: under %s \"%s\"; what-if of the run "
				      "under %s \"%s\"",
				      what, backends[b], real, backends[ran],
				      replayed);
			free(replayed);
		}
		free(real);
	}
}

#define LIVE_PROGRAMS 8

START_TEST(test_random_programs_live)
{
	uint64_t seed = 1000 + (uint64_t)_i;
	struct harness_daemon d;
	struct program p;
	char what[64];

	make_program(seed, &p);
	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	for (int b = 0; b < NB; b++)
		ck_assert_int_eq(
		    harness_client(&d, client_backends[b], run_program, &p), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	snprintf(what, sizeof(what), "program %llu", (unsigned long long)seed);
	assert_runs_agree(&d, what);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_worked_example_live)
{
	struct harness_daemon d;
	char *recommend;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	for (int b = 0; b < NB; b++)
		ck_assert_int_eq(harness_client(&d, client_backends[b],
						harness_worked_example, NULL),
				 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	assert_runs_agree(&d, "worked example");
	/* The table of docs/DESIGN.md: 7 findings under thread and global. */
	ck_assert_int_eq(harness_query_int(&d, "SELECT sum(count) FROM what_if "
					       "WHERE backend = 'thread'"),
			 7 * NB);
	recommend = harness_query_str(&d, "SELECT group_concat(DISTINCT "
					  "recommend) FROM processes");
	ck_assert_str_eq(recommend ? recommend : "(none)", "task");
	free(recommend);
	harness_cleanup(&d);
}
END_TEST

/* `ctxleak summary` over d's database, with arg after "summary" unless it
 * is NULL; its output, which the caller frees. */
static char *summary(const struct harness_daemon *d, const char *arg)
{
	static const char *const env[] = {"NO_COLOR=1", NULL};
	struct run r = run_env(env, "--db", d->db, "summary", arg, NULL);

	ck_assert_msg(r.status == 0, "%s", r.err);
	free(r.err);
	return r.out;
}

/* Runs of blanks to one, so that a table reads independently of its
 * column widths. */
static void squeeze(char *s)
{
	char *out = s, *start = s;

	for (; *s; s++)
		if (*s != ' ' || out == start || out[-1] != ' ')
			*out++ = *s;
	*out = '\0';
}

/* The worked example run under thread: the summary's table says what
 * each backend finds, and task, the only clean one, is recommended. */
START_TEST(test_summary)
{
	static const char *const want[] = {
	    "\"observed\":{\"bleed\":2,\"stale\":1,\"overlap\":1,\"lost\":1,"
	    "\"misnest\":2,\"unclosed\":0}",
	    "\"what_if\":{\"thread\":{\"bleed\":2,\"stale\":1,\"overlap\":1,"
	    "\"lost\":1,\"misnest\":2,\"unclosed\":0},\"global\":{\"bleed\":2,"
	    "\"stale\":1,\"overlap\":1,\"lost\":1,\"misnest\":2,\"unclosed\":0}"
	    ","
	    "\"task\":{\"bleed\":0,\"stale\":0,\"overlap\":0,\"lost\":0,"
	    "\"misnest\":0,\"unclosed\":0}}",
	    "\"recommend\":[\"task\"]",
	};
	struct harness_daemon d;
	char *json, *text;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, NULL),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	json = summary(&d, "--json");
	text = summary(&d, NULL);
	harness_cleanup(&d);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		ck_assert_msg(strstr(json, want[i]) != NULL, "no %s in %s",
			      want[i], json);
	squeeze(text);
	ck_assert_msg(strstr(text, "\nthread (ran) 2 1 1 1 2 0\n") != NULL &&
			  strstr(text, "\nglobal 2 1 1 1 2 0\n") != NULL &&
			  strstr(text, "\ntask 0 0 0 0 0 0\n") != NULL &&
			  strstr(text, "use task: no findings under it") !=
			      NULL,
		      "%s", text);
	free(json);
	free(text);
}
END_TEST

/* No replay: no rows, and processes say so. */
START_TEST(test_off)
{
	const char *args[] = {"--no-what-if", NULL};
	struct harness_daemon d;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, NULL),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM what_if"),
			 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT what_if FROM processes"),
			 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM leaks"),
			 7);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------- the examples */

#define EXAMPLE_REQUESTS    100
#define EXAMPLE_TIMEOUT_SEC 60

static const char *examples_dir(void)
{
	const char *dir = getenv("CTXLEAK_EXAMPLES");

	return dir && *dir ? dir : "build/examples";
}

/* The example's exit status under backend; -1 past the timeout. */
static int run_example(const struct harness_daemon *d, const char *example,
		       const char *backend)
{
	struct timespec tick = {0, 10 * 1000 * 1000};
	char path[512], count[16];
	int status;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		snprintf(path, sizeof(path), "%s/%s", examples_dir(), example);
		snprintf(count, sizeof(count), "%d", EXAMPLE_REQUESTS);
		setenv("CTXLEAK_SOCKET", d->socket, 1);
		setenv("CTXLEAK_BACKEND", backend, 1);
		setenv("CTXLEAK_APP", example, 1);
		unsetenv("CTXLEAK_DISABLE");
		execl(path, example, count, (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < EXAMPLE_TIMEOUT_SEC * 100; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		nanosleep(&tick, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/*
 * Which what-ifs are exact for an example.  The replay orders records by
 * ts; where two threads race for the one global slot, the order in which
 * they really read and wrote it is not the ts order of their records, so
 * global is exact only where one thread runs requests (the event loop,
 * the coroutines).  thread and task keep a slot per thread: exact always.
 * The coroutines are deterministic (no timing), so every run's what-if
 * equals every other run's findings.
 */
struct example {
	const char *name;
	int global_exact;
	int deterministic;
};

static const struct example examples[] = {
    {"thread_per_request", 0, 0}, {"thread_pool", 0, 0}, {"auth_pool", 0, 0},
    {"event_loop", 1, 0},	  {"coroutines", 1, 1},
};

START_TEST(test_examples)
{
	const struct example *ex = &examples[_i];
	struct harness_daemon d;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	for (int b = 0; b < NB; b++)
		ck_assert_int_eq(run_example(&d, ex->name, backends[b]), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	if (ex->deterministic) {
		assert_runs_agree(&d, ex->name);
	} else {
		ck_assert_int_eq(harness_query_int(
				     &d, "SELECT count(*) FROM processes WHERE "
					 "what_if = 1 AND dropped = 0"),
				 NB);
		for (int b = 0; b < NB; b++) {
			char *real, *replayed;

			if (b == WHATIF_GLOBAL && !ex->global_exact)
				continue;
			real = findings_of(&d, backends[b], NULL);
			replayed = findings_of(&d, backends[b], backends[b]);
			ck_assert_msg(strcmp(real, replayed) == 0,
				      "%s under %s: \"%s\", its what-if "
				      "\"%s\"",
				      ex->name, backends[b], real, replayed);
			free(real);
			free(replayed);
		}
	}
	/* Each example keeps its requests apart under task: every run's
	 * what-if says so, and recommends it. */
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM what_if "
					       "WHERE backend = 'task'"),
			 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM "
					       "processes WHERE recommend "
					       "LIKE '%task'"),
			 NB);
	harness_cleanup(&d);
}
END_TEST

static Suite *whatif_suite(void)
{
	Suite *s = suite_create("whatif");
	TCase *tc;

	suite_add_tcase(s, check_tcase("model", 0, test_random_programs_model,
				       test_forgetting,
				       test_one_record_off_is_caught,
				       test_worked_example_replayed,
				       test_model_counts_late_hand_off, NULL));
	tc = check_tcase("live", 60, NULL);
	tcase_add_loop_test(tc, test_random_programs_live, 0, LIVE_PROGRAMS);
	tcase_add_test(tc, test_worked_example_live);
	tcase_add_test(tc, test_off);
	tcase_add_test(tc, test_summary);
	suite_add_tcase(s, tc);
	tc = check_tcase("examples", 120, NULL);
	tcase_add_loop_test(tc, test_examples, 0,
			    sizeof(examples) / sizeof(examples[0]));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(whatif_suite(), NULL);
}
