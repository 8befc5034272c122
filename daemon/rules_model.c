/*
 * rules_model.c: infers a process's concurrency model from its judged
 * records, and the backend that would isolate its requests.
 *
 * A request is interleaved when its code returns to a thread after another
 * request's code ran there while it was still open: an event loop or
 * coroutines, where a thread-local or global backend cannot tell requests
 * apart.  A request is handed off when its code ran on more than one
 * thread (rules.c counts that): a thread pool, where a thread-local
 * backend loses it.  Neither, with requests on several threads, is
 * thread-per-request, the one model the `thread` backend fits; on one
 * thread, one request at a time, it is single-thread, which every backend
 * fits.
 *
 * With the what-if's counts (rules_model_measured) the recommendation is
 * no longer inferred but measured: the backends under which the replay
 * found nothing, and the model only explains why, so that the two can
 * never disagree.
 */
#include <stdio.h>
#include <string.h>

#include "rules_int.h"

/* Threads tracked per process; more than this is not a model question. */
#define MODEL_MAX_THREADS 65536

static struct model_thread *thread_get(struct rules *r, uint64_t tid)
{
	uint64_t **hit = ptab_find(&r->threads, tid);
	struct model_thread *t;

	if (hit != NULL)
		return (struct model_thread *)*hit;
	if (r->threads.count >= MODEL_MAX_THREADS)
		return NULL;
	t = rules_alloc(r, sizeof(*t));
	if (t == NULL)
		return NULL;
	t->tid = tid;
	if (ptab_insert(r, &r->threads, &t->tid) == -1) {
		rules_release(r, t, sizeof(*t));
		return NULL;
	}
	return t;
}

void model_note(struct rules *r, struct req *q, uint64_t tid)
{
	struct model_thread *t = thread_get(r, tid);

	if (t == NULL)
		return;
	if (q->last_tid != 0 && q->last_tid != tid && !q->handed_off) {
		q->handed_off = 1;
		r->model_handed_off++;
	}
	if (t->last_rid != q->rid) {
		t->last_rid = q->rid;
		/* Back on a thread where another request ran since. */
		if (q->last_tid == tid && !q->ended && !q->interleaved) {
			q->interleaved = 1;
			t->interleaved++;
			r->model_interleaved++;
		}
	}
	q->last_tid = tid;
}

/* Work a request left running on another thread after it ended was
 * handed off all the same (the thread backend loses it there).  Its last
 * thread is gone with its retirement: its first one tells. */
void model_note_late(struct rules *r, struct req *q, uint64_t tid)
{
	if (!q->handed_off && tid != q->root.tid) {
		q->handed_off = 1;
		r->model_handed_off++;
	}
}

void model_free(struct rules *r)
{
	for (size_t i = 0; r->threads.bits && i < (1u << r->threads.bits); i++)
		if (r->threads.hash[i] != 0)
			rules_release(r, r->threads.slot[i],
				      sizeof(struct model_thread));
	ptab_free(r, &r->threads);
}

/* The thread with the most interleaved requests, the lowest tid of those
 * tied: the table's order depends on the daemon's hash seed, the answer
 * must not. */
static void worst_thread(const struct rules *r, struct rules_model *out)
{
	for (size_t i = 0; r->threads.bits && i < (1u << r->threads.bits);
	     i++) {
		const struct model_thread *t =
		    (const struct model_thread *)r->threads.slot[i];

		if (t == NULL || t->interleaved == 0 ||
		    t->interleaved < out->max_interleave ||
		    (t->interleaved == out->max_interleave &&
		     t->tid > out->max_interleave_tid))
			continue;
		out->max_interleave = t->interleaved;
		out->max_interleave_tid = t->tid;
	}
}

/* Findings that mean the backend let one request's context reach another
 * (misnest and unclosed are the application's scoping, not storage). */
static uint64_t isolation_findings(const struct rules *r)
{
	return r->stats.findings[LEAK_BLEED] + r->stats.findings[LEAK_STALE] +
	       r->stats.findings[LEAK_OVERLAP] + r->stats.findings[LEAK_LOST];
}

/* A model the thread backend cannot serve: task is the library's answer,
 * but a backend that already isolated every request (task itself, or a
 * custom one switched per coroutine) needs no change, and saying "use
 * task" would send its users chasing a problem they do not have. */
static void recommend_task(const struct rules *r, struct rules_model *out,
			   const char *why, const char *flaw)
{
	out->recommend = "task";
	if (isolation_findings(r) == 0)
		snprintf(out->evidence, sizeof(out->evidence),
			 "%s; the current backend already isolates them "
			 "(task is the recommended backend for this model)",
			 why);
	else
		snprintf(out->evidence, sizeof(out->evidence),
			 "%s; thread backend %s; use task", why, flaw);
}

void rules_model(const struct rules *r, struct rules_model *out)
{
	unsigned long long n = r->model_requests, il = r->model_interleaved,
			   ho = r->model_handed_off;
	char why[160];

	memset(out, 0, sizeof(*out));
	out->requests = n;
	out->interleaved = il;
	out->handed_off = ho;
	worst_thread(r, out);
	if (n == 0) {
		/* No evidence either way: recommending would be a guess. */
		out->model = "unknown";
		snprintf(out->evidence, sizeof(out->evidence),
			 "no requests seen; nothing to recommend");
	} else if (il > 0 && ho > 0) {
		out->model = "mixed";
		snprintf(why, sizeof(why),
			 "%llu requests interleaved (%llu on thread %llu) and "
			 "%llu handed between threads",
			 il, (unsigned long long)out->max_interleave,
			 (unsigned long long)out->max_interleave_tid, ho);
		recommend_task(r, out, why, "cannot isolate them");
	} else if (il > 0) {
		out->model = "event-loop";
		snprintf(why, sizeof(why),
			 "%llu requests interleaved on thread %llu",
			 (unsigned long long)out->max_interleave,
			 (unsigned long long)out->max_interleave_tid);
		recommend_task(r, out, why, "cannot isolate them");
	} else if (ho > 0) {
		out->model = "thread-pool";
		snprintf(why, sizeof(why),
			 "%llu of %llu requests handed between threads", ho, n);
		recommend_task(r, out, why, "loses them on hand-off");
	} else if (r->threads.count == 1) {
		out->model = "single-thread";
		out->recommend = "thread";
		snprintf(out->evidence, sizeof(out->evidence),
			 "%llu requests, one at a time on one thread; any "
			 "backend isolates them",
			 n);
	} else {
		out->model = "thread-per-request";
		out->recommend = "thread";
		snprintf(out->evidence, sizeof(out->evidence),
			 "%llu requests, each on one thread, none "
			 "interleaved; thread backend isolates them",
			 n);
	}
}

/* The backends of a mask (bit b: WHATIF's backend b), in that order. */
static const char *const backend_sets[8] = {
    NULL,	   "thread",	  "global",	 "thread,global",
    "task",	   "thread,task", "global,task", "thread,global,task",
};
static const char *const backend_said[8] = {
    NULL,   "thread",	       "global",	  "thread and global",
    "task", "thread and task", "global and task", "thread, global and task",
};
static const char *const backend_names[3] = {"thread", "global", "task"};

/* Findings that depend on the backend: all but unclosed, which is the
 * same under every one (the scopes the application never ends). */
static uint64_t backend_findings(const uint64_t f[LEAK_CLASS_COUNT])
{
	uint64_t n = 0;

	for (int c = LEAK_NONE + 1; c < LEAK_CLASS_COUNT; c++)
		if (c != LEAK_UNCLOSED)
			n += f[c];
	return n;
}

/* What the model saw, in words with its counts: why the backends fare as
 * they do. */
static void model_facts(const struct rules_model *m, char *buf, size_t len)
{
	unsigned long long n = m->requests, il = m->interleaved,
			   ho = m->handed_off;

	if (il > 0 && ho > 0)
		snprintf(buf, len,
			 "%llu of %llu requests interleaved (%llu on thread "
			 "%llu), %llu handed between threads",
			 il, n, (unsigned long long)m->max_interleave,
			 (unsigned long long)m->max_interleave_tid, ho);
	else if (il > 0)
		snprintf(buf, len,
			 "%llu of %llu requests interleaved on thread %llu "
			 "(%llu there)",
			 il, n, (unsigned long long)m->max_interleave_tid,
			 (unsigned long long)m->max_interleave);
	else if (ho > 0)
		snprintf(buf, len,
			 "%llu of %llu requests handed between threads", ho,
			 n);
	else
		snprintf(buf, len, "%llu requests, none interleaved or handed "
			 "between threads", n);
}

void rules_model_measured(const struct rules *r,
			  const uint64_t findings[3][LEAK_CLASS_COUNT],
			  struct rules_model *out)
{
	char facts[136], counts[72];
	unsigned zero = 0;
	int fewest = 0;

	rules_model(r, out);
	if (out->requests == 0)
		return;
	for (int b = 0; b < 3; b++) {
		if (backend_findings(findings[b]) == 0)
			zero |= 1u << b;
		if (backend_findings(findings[b]) <
		    backend_findings(findings[fewest]))
			fewest = b;
	}
	/* The model's name must not claim what the counts deny: requests
	 * that stay on their thread and never interleave, with findings
	 * under thread all the same, fit no model seen. */
	if ((strcmp(out->model, "thread-per-request") == 0 ||
	     strcmp(out->model, "single-thread") == 0) &&
	    !(zero & 1u))
		out->model = "unknown";
	out->recommend = backend_sets[zero];
	model_facts(out, facts, sizeof(facts));
	snprintf(counts, sizeof(counts),
		 "findings under thread %llu, global %llu, task %llu",
		 (unsigned long long)backend_findings(findings[0]),
		 (unsigned long long)backend_findings(findings[1]),
		 (unsigned long long)backend_findings(findings[2]));
	if (zero != 0)
		snprintf(out->evidence, sizeof(out->evidence),
			 "%s; %s: %s keep%s them apart", facts, counts,
			 backend_said[zero], zero & (zero - 1) ? "" : "s");
	else
		snprintf(out->evidence, sizeof(out->evidence),
			 "%s; %s: none keeps them apart (fewest: %s)",
			 facts, counts, backend_names[fewest]);
}
