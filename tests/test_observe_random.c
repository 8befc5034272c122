/*
 * test_observe_random.c: observe mode end to end, on random services,
 * against a reference model of docs/DESIGN.md's rules.
 *
 * A seeded generator writes a service: 2 to 4 threads, a few dozen
 * requests, each begun on one thread and ended there or handed to another
 * (a pool), with child scopes, tags, events, callbacks that run later on
 * another thread resumed in their request's context (late work when the
 * request has ended by then), background jobs of no request, and requests
 * left unclosed.  The service keeps its own storage, a __thread pointer or
 * one process global chosen per program, which it sets and clears around
 * its work: correctly, or with the bugs real services have (not cleared
 * after a request, not restored after a callback, set on some paths only
 * as in examples/auth_pool.c, set to the wrong request, a global shared by
 * concurrent threads, a worker that ends a request without its context).
 *
 * The service runs for real in a forked child under the library in observe
 * mode (the getter reads the storage, no setter) against the real daemon,
 * which judges while it runs (a flush interval of 1 ms, or explicit
 * flushes) or mostly at its end (100 ms), as the seed says.
 * Its threads interleave freely between calls, but each library call (and
 * each write of the storage) runs under one mutex together with its log
 * entry, after the clock has moved past the previous call: the log is the
 * exact order, and ts order, the daemon sees.  The test checks that: the
 * daemon's records (--keep all), in ts order, are the model's records.
 *
 * The model takes the log (per call: type, thread, the value the storage
 * held, the new or ended ctx, the token) and derives, from docs/DESIGN.md
 * alone, first the records (the per-call table: C per thread, the resume
 * stack, saved pairs process-wide), then the findings (class, victim,
 * source, record, site) and each request's late work.  It is written
 * apart from the daemon's engine (daemon/rules*.c) so that each checks the
 * other: the daemon's leaks table must equal the model's findings as a
 * multiset, and each request's `late` the model's count.
 *
 * Seeds: 1..30 by default.  OBSERVE_RANDOM_SEED=N starts at N (alone
 * unless OBSERVE_RANDOM_SEEDS says how many), OBSERVE_RANDOM_SEEDS=M runs
 * M seeds.  A failure names the seed and the first difference, and writes
 * the run's log to /tmp/ctxleak-observe-random-SEED.txt.
 *
 * One program in four is written correctly (a thread-local set and
 * cleared around every piece of work, every callback resumed): there the
 * daemon must find nothing at all, which is what a user fixing a real bug
 * needs to see.
 *
 * The comparison can fail: the same runs judged by the model with one rule
 * changed (each of FLIP_*) must disagree with the daemon on some seed.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check_main.h"
#include "ctxleak.h"
#include "harness.h"
#include "proto.h"

#define MAX_THREADS   4
#define MAX_REQS      40
#define MAX_CHILDREN  2
#define MAX_CBS	      2
#define MAX_LOG	      4096
#define QUEUE_LEN     256 /* > MAX_REQS * (1 + MAX_CBS + 1): every job */
#define DEFAULT_SEEDS 30
#define CHUNK	      60 /* seeds run against one daemon */
#define BATCH	      6	 /* clients run at once */
/* Ends of a ctx never begun name BOGUS_CTX + the request: no ctx the
 * library makes is one of them but by a 2^-50 chance. */
#define BOGUS_CTX 0xbad0bad0bad00000ull

/* ------------------------------------------------------------ random */

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

/* 1 with probability pct percent. */
static int chance(uint64_t *s, unsigned pct)
{
	return rnd(s, 100) < pct;
}

/* ------------------------------------------------------------ programs */

/* How a handler sets the storage for its request. */
enum set_mode {
	SET_AFTER,  /* storage = the request, once begun */
	SET_BEFORE, /* storage = the request's struct before the begin, whose
		       ctx is still 0 then (auth_pool's authenticate) */
	SET_NONE,   /* bug: set on some paths only; this one does not */
	SET_WRONG,  /* bug: storage = another request */
};

/* How the thread that ends a request leaves the storage. */
enum clear_mode {
	CLEAR_AFTER,   /* cleared after the end */
	CLEAR_BEFORE,  /* cleared before the end (cur = 0 at END) */
	CLEAR_RESTORE, /* put back what it held when the job began */
	CLEAR_NONE,    /* bug: left as it is */
};

struct child_plan {
	uint8_t span;		/* the storage names the child while it runs */
	uint8_t restore_before; /* span: the parent is put back before the
				   child's end (else after) */
	uint8_t unclosed;	/* never ended */
	uint8_t after_parent;	/* ended after its request ended */
	uint8_t nwork;		/* tags and events inside */
};

struct cb_plan {
	uint8_t thread;	  /* where it runs */
	uint8_t resumed;  /* resumed in the request's context (else a
			     background job of no request) */
	uint8_t sets;	  /* sets the storage to the request */
	uint8_t restores; /* sets: puts back what was there (else bug) */
	uint8_t child;	  /* opens a child scope (a span of its own) */
	uint8_t nwork;
};

struct req_plan {
	uint8_t arrive;		/* the thread that begins it */
	uint8_t handoff;	/* ended by a continuation queued to worker
				   (a pool's worker, or the same thread's
				   event loop later), else in the handler */
	uint8_t worker;		/* handoff: where the continuation runs */
	uint8_t set;		/* enum set_mode, on the arriving thread */
	uint8_t clear;		/* enum clear_mode, on the ending thread */
	uint8_t wrong;		/* SET_WRONG: the request it names */
	uint8_t dispatch_clear; /* handed off: the arriving thread clears
				   its storage after the hand-off */
	uint8_t worker_resumes; /* handed off: the worker resumes the token
				   (else bug: context not carried) */
	uint8_t worker_sets;	/* handed off: the worker sets its storage */
	uint8_t unclosed;	/* never ended */
	uint8_t end_twice;	/* ended twice */
	uint8_t end_wrong;	/* bug: ends request `wrong` instead (a
				   stale pointer), leaving itself open */
	uint8_t end_bogus;	/* bug: ends a ctx never begun first */
	uint8_t nwork;		/* tags and events in the handler */
	uint8_t nchildren, ncbs;
	struct child_plan child[MAX_CHILDREN];
	struct cb_plan cb[MAX_CBS];
};

struct program {
	uint64_t seed;	    /* what made it, and its process's app name */
	int nthreads;	    /* 2 to MAX_THREADS */
	int nreqs;	    /* requests, in the order they may arrive */
	int global;	    /* the storage: one process global, else __thread */
	int correct;	    /* written without the bugs: a thread-local, set
			       and cleared around every piece of work */
	unsigned flush_ms;  /* the library's flush interval: 1 ms makes the
			       daemon judge and retire requests while the
			       service runs, 100 (the default) mostly at
			       its end */
	unsigned flush_pct; /* jobs after which the thread calls
			       ctxleak_flush(), in percent */
	struct req_plan req[MAX_REQS];
};

/* How often a program's code takes each path, in percent: the bugs
 * (0 in a correct program) and the hand-offs. */
struct rates {
	unsigned set_none;	   /* SET_NONE */
	unsigned wrong;		   /* SET_WRONG */
	unsigned clear_none;	   /* CLEAR_NONE */
	unsigned no_restore;	   /* a callback leaves its request set */
	unsigned no_resume;	   /* a worker runs without the token */
	unsigned unclosed;	   /* a request or child never ended */
	unsigned end_twice;	   /* ended twice; a child after its parent */
	unsigned end_wrong;	   /* ends another request, or a ctx never
				      begun */
	unsigned handoff;	   /* ended by a continuation */
	unsigned dispatch_forgets; /* the dispatcher keeps its storage set */
};

static void make_program(uint64_t seed, struct program *p)
{
	uint64_t s = seed * 0x9e3779b97f4a7c15ull + 0x5eed;
	struct rates r = {0};
	/* One program in four is written correctly, with a thread-local:
	 * the daemon must find nothing in it. */
	int correct = rnd(&s, 4) == 0;

	memset(p, 0, sizeof(*p));
	p->seed = seed;
	p->correct = correct;
	p->nthreads = 2 + (int)rnd(&s, MAX_THREADS - 1);
	p->nreqs = 16 + (int)rnd(&s, MAX_REQS - 15);
	p->global = !correct && chance(&s, 35);
	p->flush_ms = (unsigned[]){1, 5, 100}[rnd(&s, 3)];
	p->flush_pct = rnd(&s, 3) * 5;
	r.handoff = 10 + rnd(&s, 50);
	if (!correct) {
		static const unsigned level[] = {0, 0, 10, 30};

		r.set_none = level[rnd(&s, 4)];
		r.wrong = level[rnd(&s, 4)] / 2;
		r.clear_none = level[rnd(&s, 4)];
		r.no_restore = level[rnd(&s, 4)];
		r.no_resume = level[rnd(&s, 4)] / 3;
		r.unclosed = level[rnd(&s, 4)] / 3;
		r.end_twice = level[rnd(&s, 4)] / 3;
		r.end_wrong = level[rnd(&s, 4)] / 3;
		r.dispatch_forgets = level[rnd(&s, 4)];
	}
	for (int i = 0; i < p->nreqs; i++) {
		struct req_plan *q = &p->req[i];

		q->arrive = (uint8_t)rnd(&s, (unsigned)p->nthreads);
		q->handoff = chance(&s, r.handoff);
		q->worker = (uint8_t)rnd(&s, (unsigned)p->nthreads);
		q->set = chance(&s, r.set_none) ? SET_NONE
			 : chance(&s, r.wrong)	? SET_WRONG
			 : chance(&s, 30)	? SET_BEFORE
						: SET_AFTER;
		q->wrong = (uint8_t)rnd(&s, (unsigned)p->nreqs);
		q->clear =
		    chance(&s, r.clear_none) ? CLEAR_NONE : (uint8_t)rnd(&s, 3);
		q->dispatch_clear = !chance(&s, r.dispatch_forgets);
		q->worker_resumes = !chance(&s, r.no_resume);
		q->worker_sets = q->set != SET_NONE || chance(&s, 50);
		q->unclosed = chance(&s, r.unclosed);
		q->end_twice = !q->unclosed && chance(&s, r.end_twice);
		q->end_wrong = chance(&s, r.end_wrong);
		q->end_bogus = chance(&s, r.end_wrong);
		q->nwork = (uint8_t)rnd(&s, 4);
		q->nchildren = (uint8_t)rnd(&s, MAX_CHILDREN + 1);
		for (int k = 0; k < q->nchildren; k++) {
			struct child_plan *c = &q->child[k];

			c->span = chance(&s, 50);
			c->restore_before = chance(&s, 50);
			c->unclosed = chance(&s, r.unclosed);
			c->after_parent =
			    !c->unclosed && chance(&s, r.end_twice);
			c->nwork = (uint8_t)rnd(&s, 3);
		}
		q->ncbs = (uint8_t)rnd(&s, MAX_CBS + 1);
		for (int k = 0; k < q->ncbs; k++) {
			struct cb_plan *c = &q->cb[k];

			c->thread = (uint8_t)rnd(&s, (unsigned)p->nthreads);
			c->resumed = correct || chance(&s, 85);
			c->sets = c->resumed && !chance(&s, r.set_none);
			c->restores = !chance(&s, r.no_restore);
			c->child = chance(&s, 30);
			c->nwork = 1 + (uint8_t)rnd(&s, 3);
		}
	}
}

/* ------------------------------------------------------------- sites */

/* The service's call sites; a finding names one by its line. */
enum site {
	S_JOB_RESUME,
	S_JOB_SUSPEND,
	S_BEGIN,
	S_TAG,
	S_EVENT,
	S_CHILD,
	S_CHILD_EVENT,
	S_CHILD_END,
	S_END,
	S_END_AGAIN,
	S_END_BOGUS,
	S_WORKER_TAG,
	S_CB_TAG,
	S_CB_EVENT,
	S_CB_CHILD,
	S_CB_CHILD_END,
	S_BG_EVENT,
	S_COUNT
};

#define SITE_LINE(s) (1000 + (s))

static struct ctxleak_site sites[S_COUNT] = {
#define SITE(s, fn) [s] = {"observe_random_service.c", fn, SITE_LINE(s), 0}
    SITE(S_JOB_RESUME, "run_job"),  SITE(S_JOB_SUSPEND, "run_job"),
    SITE(S_BEGIN, "handler"),	    SITE(S_TAG, "handler"),
    SITE(S_EVENT, "handler"),	    SITE(S_CHILD, "child"),
    SITE(S_CHILD_EVENT, "child"),   SITE(S_CHILD_END, "child"),
    SITE(S_END, "finish"),	    SITE(S_END_AGAIN, "finish"),
    SITE(S_END_BOGUS, "finish"),    SITE(S_WORKER_TAG, "worker"),
    SITE(S_CB_TAG, "callback"),	    SITE(S_CB_EVENT, "callback"),
    SITE(S_CB_CHILD, "callback"),   SITE(S_CB_CHILD_END, "callback"),
    SITE(S_BG_EVENT, "background"),
#undef SITE
};

/* ------------------------------------------------------------ the log */

enum op {
	OP_BEGIN,
	OP_CHILD,
	OP_END,
	OP_TAG,
	OP_EVENT,
	OP_RESUME,
	OP_SUSPEND,
	OP_STORE, /* the service wrote its storage: no record */
};

static const char *const op_names[] = {"BEGIN", "CHILD",  "END",     "TAG",
				       "EVENT", "RESUME", "SUSPEND", "store"};

struct entry {
	uint8_t op;	  /* enum op */
	uint8_t thread;	  /* the program's thread */
	uint8_t site;	  /* enum site */
	uint16_t req;	  /* the request whose code made it */
	uint64_t arg;	  /* BEGIN, CHILD: the new ctx; END: the ctx ended;
			     RESUME: the token; store: what it names now */
	uint64_t storage; /* what the storage said as the call began */
	uint64_t cause;	  /* ctxleak_capture() after it: the library's C */
};

/* The child's log, shared with the parent that models it. */
struct shared {
	uint64_t tid[MAX_THREADS]; /* each thread's OS tid */
	int nlog;		   /* entries in log */
	int overflow;		   /* the log was too short */
	int getter_mismatch; /* calls where the getter was not read once, or
				returned other than the storage held */
	uint64_t dropped;    /* ctxleak_stats at the end */
	struct entry log[MAX_LOG];
};

/* ---------------------------------------------------- the service */

/* What a thread runs: a request's handler, its continuation after a
 * hand-off, or one of its callbacks. */
enum { JOB_ARRIVE, JOB_CONTINUE, JOB_CB };

struct job {
	uint8_t kind;	/* JOB_* */
	uint8_t cb;	/* JOB_CB: which callback of the request */
	uint16_t req;	/* the request */
	uint64_t token; /* resumed around the job (0: none) */
};

/* A thread's jobs, first in first out; under svc.mu. */
struct queue {
	struct job j[QUEUE_LEN];
	int head, tail; /* taken, and queued, so far */
};

/* Per request, what the running service knows of it. */
struct req_state {
	uint64_t ctx;			  /* 0 until begun */
	uint64_t child_ctx[MAX_CHILDREN]; /* 0 until begun */
	uint64_t cb_child_ctx[MAX_CBS];	  /* a callback's child, the same */
};

/* The child process's service: one per process, read by the getter. */
static struct {
	const struct program *p; /* what it runs */
	struct shared *sh;	 /* where it logs */
	pthread_mutex_t mu; /* every call, store and log entry; the queues */
	pthread_cond_t cv;  /* a job was queued or finished */
	struct queue q[MAX_THREADS];
	int pending; /* jobs queued or running, arrivals not yet taken */
	struct timespec last;	       /* the clock after the last call */
	struct req_state rs[MAX_REQS]; /* by request */
} svc = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* The service's storage: a pointer to the ctx of what it thinks is
 * current (a request's, or a child's for span storage), NULL for none. */
static __thread const uint64_t *thread_slot;
static const uint64_t *global_slot;

/* What the getter returned last on this thread, and how often it ran. */
static __thread uint64_t getter_said;
static __thread int getter_reads;

static const uint64_t **storage(void)
{
	return svc.p->global ? &global_slot : &thread_slot;
}

static uint64_t storage_value(void)
{
	const uint64_t *s = *storage();

	return s ? *s : 0;
}

/* Observe mode's getter: the storage as ctxleak's ctx. */
static uint64_t observe_storage(void *user)
{
	(void)user;
	getter_said = storage_value();
	getter_reads++;
	return getter_said;
}

/* Wait, holding the mutex, until the clock has passed the last call's:
 * the next record's ts is then above every earlier one. */
static void clock_moves_on(void)
{
	struct timespec now;

	do
		clock_gettime(CLOCK_MONOTONIC, &now);
	while (
	    now.tv_sec < svc.last.tv_sec ||
	    (now.tv_sec == svc.last.tv_sec && now.tv_nsec <= svc.last.tv_nsec));
}

/* Lets another thread in now and then, so that interleavings vary. */
static void maybe_yield(uint64_t *s)
{
	unsigned r = rnd(s, 16);

	if (r == 0) {
		struct timespec ts = {0, 20000};

		nanosleep(&ts, NULL);
	} else if (r < 4) {
		sched_yield();
	}
}

/* An entry for the log, under svc.mu. */
static void log_entry(int thread, enum op op, enum site site, int req,
		      uint64_t arg, uint64_t storage_before)
{
	struct shared *sh = svc.sh;

	if (sh->nlog == MAX_LOG) {
		sh->overflow = 1;
		return;
	}
	sh->log[sh->nlog++] = (struct entry){
	    .op = (uint8_t)op,
	    .thread = (uint8_t)thread,
	    .site = (uint8_t)site,
	    .req = (uint16_t)req,
	    .arg = arg,
	    .storage = storage_before,
	    .cause = ctxleak_capture(),
	};
}

/* One library call and its log entry under the mutex.  BEGIN and CHILD
 * write the new ctx to *out under the mutex too, so that a storage that
 * points at it reads it from the next call on. */
static void call(uint64_t *s, int thread, enum op op, enum site site, int req,
		 uint64_t arg, uint64_t *out)
{
	struct ctxleak_site *at = &sites[site];
	uint64_t before, x = arg;
	char name[32];

	pthread_mutex_lock(&svc.mu);
	clock_moves_on();
	before = storage_value();
	getter_reads = 0;
	switch (op) {
	case OP_BEGIN:
		snprintf(name, sizeof(name), "GET /r%d", req);
		x = *out = ctxleak_begin_at(at, name);
		break;
	case OP_CHILD:
		x = *out = ctxleak_begin_child_at(at, "db");
		break;
	case OP_END:
		ctxleak_end_at(at, arg);
		break;
	case OP_TAG:
		ctxleak_tag_at(at, "k", "v");
		break;
	case OP_EVENT:
		ctxleak_event_at(at, "log", "line");
		break;
	case OP_RESUME:
		ctxleak_resume_at(at, arg);
		break;
	case OP_SUSPEND:
		ctxleak_suspend_at(at);
		break;
	default: /* a store goes through store() */
		break;
	}
	clock_gettime(CLOCK_MONOTONIC, &svc.last);
	if (getter_reads != 1 || getter_said != before)
		svc.sh->getter_mismatch++;
	log_entry(thread, op, site, req, x, before);
	pthread_mutex_unlock(&svc.mu);
	maybe_yield(s);
}

/* The service writes its storage (under the mutex: a global's readers
 * are other threads' calls). */
static void store(int thread, int req, const uint64_t *to)
{
	pthread_mutex_lock(&svc.mu);
	*storage() = to;
	log_entry(thread, OP_STORE, S_COUNT, req, to ? *to : 0, 0);
	pthread_mutex_unlock(&svc.mu);
}

/* A ctx another thread may be writing (a request's, as it begins). */
static uint64_t ctx_now(const uint64_t *ctx)
{
	uint64_t v;

	pthread_mutex_lock(&svc.mu);
	v = *ctx;
	pthread_mutex_unlock(&svc.mu);
	return v;
}

/* What the storage holds now, to put back later. */
static const uint64_t *storage_now(void)
{
	const uint64_t *v;

	pthread_mutex_lock(&svc.mu);
	v = *storage();
	pthread_mutex_unlock(&svc.mu);
	return v;
}

/* Queues j to thread: a callback registered, a request handed off. */
static void enqueue(int thread, struct job j)
{
	struct queue *q = &svc.q[thread];

	pthread_mutex_lock(&svc.mu);
	q->j[q->tail++ % QUEUE_LEN] = j;
	svc.pending++;
	pthread_cond_broadcast(&svc.cv);
	pthread_mutex_unlock(&svc.mu);
}

/* n tags or events, at the sites given. */
static void work(uint64_t *s, int t, int req, int n, enum site tag,
		 enum site event)
{
	for (int i = 0; i < n; i++)
		call(s, t, rnd(s, 2) ? OP_TAG : OP_EVENT,
		     rnd(s, 2) ? tag : event, req, 0, NULL);
}

/* The end of request i on thread t, as its plan says; children ended
 * after their parent end here too. */
static void finish(uint64_t *s, int t, int i, const uint64_t *at_start)
{
	const struct req_plan *q = &svc.p->req[i];
	struct req_state *rs = &svc.rs[i];

	if (q->clear == CLEAR_BEFORE)
		store(t, i, NULL);
	if (q->end_bogus)
		call(s, t, OP_END, S_END_BOGUS, i, BOGUS_CTX + (uint64_t)i,
		     NULL);
	if (!q->unclosed) {
		uint64_t x = rs->ctx;

		/* end(0) records nothing: a request not begun yet is no
		 * wrong one to end. */
		if (q->end_wrong && ctx_now(&svc.rs[q->wrong].ctx))
			x = ctx_now(&svc.rs[q->wrong].ctx);
		call(s, t, OP_END, S_END, i, x, NULL);
		if (q->end_twice)
			call(s, t, OP_END, S_END_AGAIN, i, x, NULL);
	}
	for (int k = 0; k < q->nchildren; k++)
		if (q->child[k].after_parent)
			call(s, t, OP_END, S_CHILD_END, i, rs->child_ctx[k],
			     NULL);
	if (q->clear == CLEAR_AFTER)
		store(t, i, NULL);
	else if (q->clear == CLEAR_RESTORE)
		store(t, i, at_start);
}

/* Child k of request i: a span, the storage naming it or not. */
static void child_block(uint64_t *s, int t, int i, int k)
{
	const struct child_plan *c = &svc.p->req[i].child[k];
	struct req_state *rs = &svc.rs[i];
	const uint64_t *parent = storage_now();

	call(s, t, OP_CHILD, S_CHILD, i, 0, &rs->child_ctx[k]);
	if (c->span)
		store(t, i, &rs->child_ctx[k]);
	work(s, t, i, c->nwork, S_CHILD_EVENT, S_CHILD_EVENT);
	if (c->span && c->restore_before)
		store(t, i, parent);
	if (!c->unclosed && !c->after_parent)
		call(s, t, OP_END, S_CHILD_END, i, rs->child_ctx[k], NULL);
	if (c->span && !c->restore_before)
		store(t, i, parent);
}

/* Request i arrives on thread t: the handler. */
static void arrive(uint64_t *s, int t, int i)
{
	const struct req_plan *q = &svc.p->req[i];
	struct req_state *rs = &svc.rs[i];
	const uint64_t *at_start = storage_now();

	if (q->set == SET_BEFORE)
		store(t, i, &rs->ctx);
	call(s, t, OP_BEGIN, S_BEGIN, i, 0, &rs->ctx);
	if (q->set == SET_AFTER)
		store(t, i, &rs->ctx);
	else if (q->set == SET_WRONG)
		store(t, i, &svc.rs[q->wrong].ctx);
	work(s, t, i, q->nwork, S_TAG, S_EVENT);
	for (int k = 0; k < q->nchildren; k++)
		child_block(s, t, i, k);
	for (int k = 0; k < q->ncbs; k++)
		enqueue(q->cb[k].thread,
			(struct job){JOB_CB, (uint8_t)k, (uint16_t)i,
				     q->cb[k].resumed ? ctxleak_capture() : 0});
	if (q->handoff) {
		enqueue(
		    q->worker,
		    (struct job){JOB_CONTINUE, 0, (uint16_t)i,
				 q->worker_resumes ? ctxleak_capture() : 0});
		if (q->dispatch_clear)
			store(t, i, at_start);
	} else {
		finish(s, t, i, at_start);
	}
}

/* Request i's hand-off, on its worker t (resumed by run_job). */
static void continue_request(uint64_t *s, int t, int i)
{
	const struct req_plan *q = &svc.p->req[i];
	const uint64_t *at_start = storage_now();

	if (q->worker_sets)
		store(t, i, &svc.rs[i].ctx);
	work(s, t, i, 1 + rnd(s, 2), S_WORKER_TAG, S_WORKER_TAG);
	finish(s, t, i, at_start);
}

/* Callback k of request i: resumed in its token (or a background job
 * of none), run whenever its thread gets to it, before or after the
 * request ended. */
static void callback(uint64_t *s, int t, int i, int k)
{
	const struct cb_plan *c = &svc.p->req[i].cb[k];
	const uint64_t *saved = storage_now();

	if (!c->resumed) {
		work(s, t, i, c->nwork, S_BG_EVENT, S_BG_EVENT);
		return;
	}
	if (c->sets)
		store(t, i, &svc.rs[i].ctx);
	work(s, t, i, c->nwork, S_CB_TAG, S_CB_EVENT);
	if (c->child) {
		call(s, t, OP_CHILD, S_CB_CHILD, i, 0,
		     &svc.rs[i].cb_child_ctx[k]);
		work(s, t, i, 1, S_CB_TAG, S_CB_EVENT);
		call(s, t, OP_END, S_CB_CHILD_END, i, svc.rs[i].cb_child_ctx[k],
		     NULL);
	}
	if (c->sets && c->restores)
		store(t, i, saved);
}

/* Every job runs resumed, as an event loop or pool wraps its callbacks:
 * in the token it carries, or in none (0). */
static void run_job(uint64_t *s, int t, const struct job *j)
{
	call(s, t, OP_RESUME, S_JOB_RESUME, j->req, j->token, NULL);
	if (j->kind == JOB_ARRIVE)
		arrive(s, t, j->req);
	else if (j->kind == JOB_CONTINUE)
		continue_request(s, t, j->req);
	else
		callback(s, t, j->req, j->cb);
	call(s, t, OP_SUSPEND, S_JOB_SUSPEND, j->req, 0, NULL);
}

/* A thread of the service: the requests that arrive on it and the jobs
 * queued to it, mixed at random, until no job is left anywhere. */
static void *thread_main(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint64_t s = svc.p->seed * 7919 + (uint64_t)t + 1;
	int next = 0; /* the next request that may arrive here */

	svc.sh->tid[t] = (uint64_t)gettid();
	pthread_mutex_lock(&svc.mu);
	for (;;) {
		struct queue *q = &svc.q[t];
		struct job j;

		while (next < svc.p->nreqs && svc.p->req[next].arrive != t)
			next++;
		if (q->head != q->tail &&
		    (next == svc.p->nreqs || rnd(&s, 2))) {
			j = q->j[q->head++ % QUEUE_LEN];
		} else if (next < svc.p->nreqs) {
			j = (struct job){JOB_ARRIVE, 0, (uint16_t)next++, 0};
		} else if (svc.pending == 0) {
			break;
		} else {
			pthread_cond_wait(&svc.cv, &svc.mu);
			continue;
		}
		pthread_mutex_unlock(&svc.mu);
		run_job(&s, t, &j);
		if (chance(&s, svc.p->flush_pct))
			ctxleak_flush();
		pthread_mutex_lock(&svc.mu);
		svc.pending--;
		pthread_cond_broadcast(&svc.cv);
	}
	pthread_mutex_unlock(&svc.mu);
	return NULL;
}

/* The forked client: the service under observe mode, then exit. */
static void service_main(const struct harness_daemon *d,
			 const struct program *p, struct shared *sh)
{
	pthread_t th[MAX_THREADS];
	struct ctxleak_options opt;
	struct ctxleak_stats st;
	char app[32];

	svc.p = p;
	svc.sh = sh;
	svc.pending = p->nreqs;
	snprintf(app, sizeof(app), "obsrand-%" PRIu64, p->seed);
	ctxleak_options_init(&opt);
	opt.socket_path = d->socket;
	opt.backend = CTXLEAK_BACKEND_OBSERVE;
	opt.custom_get = observe_storage;
	opt.app = app;
	opt.flush_interval_ms = p->flush_ms;
	if (ctxleak_init(&opt) != CTXLEAK_OK)
		_exit(125);
	for (int t = 0; t < p->nthreads; t++)
		if (pthread_create(&th[t], NULL, thread_main,
				   (void *)(intptr_t)t) != 0)
			_exit(124);
	for (int t = 0; t < p->nthreads; t++)
		pthread_join(th[t], NULL);
	ctxleak_shutdown();
	ctxleak_stats(&st);
	sh->dropped = st.dropped;
	_exit(0);
}

/* ------------------------------------------------------------ model */

/*
 * What the model derives from the log, section by section of
 * docs/DESIGN.md: the records (2.1, the per-call table under observe: the
 * library never writes the storage, so a record's ctx, prev or cur is the
 * value the storage held), then the findings (4).
 */
struct mrec {
	uint8_t type;	/* PROTO_* */
	uint8_t kind;	/* BEGIN: PROTO_KIND_* */
	uint8_t thread; /* the program's thread */
	int line;	/* its site's line */
	uint64_t tid;	/* as the daemon stored it (the model's: 0) */
	uint64_t ctx, cause, other; /* other: BEGIN prev, END cur */
	int entry;		    /* its log entry */
};

/* Rules the model can be told to get wrong, to show that the comparison
 * notices. */
enum flip {
	FLIP_NONE,
	FLIP_OBSERVE_END,      /* END with cur 0 is misnest under observe too */
	FLIP_LATE_IS_STALE,    /* late work is stale */
	FLIP_NO_THREAD_RULE,   /* END on another thread is never misnest */
	FLIP_OVERLAP_IS_STALE, /* a BEGIN over an open request is stale */
	FLIP_OWN_REQUEST_END,  /* END with a scope of its own request
				  current is misnest under observe */
	FLIP_COUNT
};

/* As "the model with its ... rule changed" says them. */
static const char *const flip_names[] = {"no",	      "cleared-storage END",
					 "late work", "END thread",
					 "overlap",   "own request's END"};

enum cls {
	C_LOST,
	C_STALE,
	C_BLEED,
	C_OVERLAP,
	C_MISNEST,
	C_UNCLOSED,
	C_COUNT
};

static const char *const cls_names[] = {"lost",	   "stale",   "bleed",
					"overlap", "misnest", "unclosed"};

/* A finding as both sides give it. */
struct finding {
	uint8_t cls;  /* enum cls */
	uint8_t type; /* the evidence record's type; unclosed: BEGIN */
	int rec;      /* the evidence record, by its place in ts order;
			 unclosed: the scope's BEGIN */
	int line;     /* its site's line */
	uint64_t victim, source; /* root ctx of each request, 0: none */
};

#define MAX_RECS     MAX_LOG
#define MAX_FINDINGS MAX_LOG

struct late {
	uint64_t ctx; /* a request's root ctx */
	int late;     /* its records of late work */
};

/* One side's account of a run: the model's, or what the daemon stored. */
struct result {
	int nrecs; /* records, in ts order */
	struct mrec recs[MAX_RECS];
	int nfindings; /* findings, in no order */
	struct finding findings[MAX_FINDINGS];
	int nlate;		    /* requests */
	struct late late[MAX_RECS]; /* every request's late work */
	char error[256]; /* the library disagreed with the per-call table */
};

/* The per-call table, from the log: the records the library must send
 * under observe.  The library's own C after each call (ctxleak_capture)
 * must be the table's: else the run says so in r->error. */
static void model_records(const struct shared *sh, struct result *r)
{
	struct {
		uint64_t c;
		uint64_t stack[MAX_LOG];
		int depth;
	} *th = calloc(MAX_THREADS, sizeof(*th));
	/* Open scopes' saved C, process-wide (the saved B is the storage's,
	 * which the library never writes under observe). */
	uint64_t *open = calloc(MAX_LOG, sizeof(uint64_t));
	uint64_t *saved_c = calloc(MAX_LOG, sizeof(uint64_t));
	int nopen = 0;

	ck_assert(th && open && saved_c);
	r->nrecs = 0;
	r->error[0] = 0;
	for (int i = 0; i < sh->nlog; i++) {
		const struct entry *e = &sh->log[i];
		struct mrec m = {.thread = e->thread,
				 .line = SITE_LINE(e->site),
				 .ctx = e->storage,
				 .cause = th[e->thread].c,
				 .entry = i};
		uint64_t *c = &th[e->thread].c;
		int k;

		switch (e->op) {
		case OP_BEGIN:
		case OP_CHILD:
			m.type = PROTO_BEGIN;
			m.kind = e->op == OP_BEGIN ? PROTO_KIND_REQUEST
						   : PROTO_KIND_CHILD;
			m.ctx = e->arg;
			m.other = e->storage;
			open[nopen] = e->arg;
			saved_c[nopen++] = *c;
			*c = e->arg;
			break;
		case OP_END:
			m.type = PROTO_END;
			m.ctx = e->arg;
			m.other = e->storage;
			for (k = 0; k < nopen && open[k] != e->arg; k++)
				;
			if (k < nopen) { /* known: its saved C comes back */
				*c = saved_c[k];
				open[k] = open[--nopen];
				saved_c[k] = saved_c[nopen];
			}
			break;
		case OP_TAG:
		case OP_EVENT:
			m.type = e->op == OP_TAG ? PROTO_TAG : PROTO_EVENT;
			break;
		case OP_RESUME:
			m.type = PROTO_RESUME;
			m.cause = e->arg;
			th[e->thread].stack[th[e->thread].depth++] = *c;
			*c = e->arg;
			break;
		case OP_SUSPEND:
			m.type = PROTO_SUSPEND;
			if (th[e->thread].depth > 0)
				*c = th[e->thread].stack[--th[e->thread].depth];
			break;
		default: /* a store: no record */
			continue;
		}
		if (e->cause != *c && !r->error[0])
			snprintf(r->error, sizeof(r->error),
				 "log entry %d (%s on thread %d): the "
				 "library's C is %#" PRIx64
				 ", the per-call table's %#" PRIx64,
				 i, op_names[e->op], e->thread, e->cause, *c);
		r->recs[r->nrecs++] = m;
	}
	free(th);
	free(open);
	free(saved_c);
}

/* A scope as the rules see it. */
struct mscope {
	uint64_t ctx, root; /* root: request(ctx) */
	uint8_t thread;	    /* where it began */
	int ended;	    /* its END was judged */
	int begin;	    /* its BEGIN record */
};

struct rules_state {
	struct mscope s[MAX_RECS];
	int n;
};

static struct mscope *scope_of(struct rules_state *st, uint64_t ctx)
{
	for (int i = 0; i < st->n; i++)
		if (st->s[i].ctx == ctx)
			return &st->s[i];
	return NULL;
}

/* request(x): the root ancestor; 0 for none (x = 0).  Every nonzero
 * ctx the storage can name was begun before (the service stores a
 * request's ctx only once it is known). */
static uint64_t request_of(struct rules_state *st, uint64_t x)
{
	struct mscope *sc = x ? scope_of(st, x) : NULL;

	ck_assert_msg(!x || sc, "ctx %#" PRIx64 " named before its BEGIN", x);
	return sc ? sc->root : 0;
}

/* A request has ended from its root's first END on. */
static int request_ended(struct rules_state *st, uint64_t root)
{
	return root && scope_of(st, root)->ended;
}

static void add_finding(struct result *r, enum cls cls, int rec,
			uint64_t victim, uint64_t source)
{
	ck_assert_int_lt(r->nfindings, MAX_FINDINGS);
	r->findings[r->nfindings++] = (struct finding){
	    .cls = (uint8_t)cls,
	    .type = r->recs[rec].type,
	    .rec = rec,
	    .line = r->recs[rec].line,
	    .victim = victim,
	    .source = source,
	};
}

static void count_late(struct result *r, uint64_t root)
{
	for (int i = 0; i < r->nlate; i++)
		if (r->late[i].ctx == root) {
			r->late[i].late++;
			return;
		}
	ck_abort_msg("late work of an unknown request");
}

/* A TAG, EVENT or child BEGIN, with c its ctx (prev for the BEGIN) and
 * t its cause: the first rule that applies, or late work, or nothing. */
static void judge_work(struct rules_state *st, struct result *r, int rec,
		       uint64_t c, uint64_t t, enum flip flip)
{
	uint64_t rc = request_of(st, c), rt = request_of(st, t);

	if (t && !c)
		add_finding(r, C_LOST, rec, rt, 0);
	else if (c && rc == rt && request_ended(st, rc) &&
		 flip != FLIP_LATE_IS_STALE)
		count_late(r, rc);
	else if (c && request_ended(st, rc))
		add_finding(r, C_STALE, rec, rt, rc);
	else if (c && rc != rt)
		add_finding(r, C_BLEED, rec, rt, rc);
}

static void model_rules(struct result *r, enum flip flip)
{
	static struct rules_state st;

	st.n = 0;
	r->nfindings = 0;
	r->nlate = 0;
	for (int i = 0; i < r->nrecs; i++) {
		const struct mrec *m = &r->recs[i];
		struct mscope *sc;

		switch (m->type) {
		case PROTO_BEGIN: {
			/* A child with nothing current is a request of its
			 * own; its parent is its BEGIN's prev. */
			int root = m->kind == PROTO_KIND_REQUEST || !m->other;
			uint64_t rp = request_of(&st, m->other);

			if (m->kind == PROTO_KIND_CHILD)
				judge_work(&st, r, i, m->other, m->cause, flip);
			else if (m->other && request_ended(&st, rp))
				add_finding(r, C_STALE, i, m->ctx, rp);
			else if (m->other)
				add_finding(r,
					    flip == FLIP_OVERLAP_IS_STALE
						? C_STALE
						: C_OVERLAP,
					    i, m->ctx, rp);
			st.s[st.n++] = (struct mscope){
			    .ctx = m->ctx,
			    .root = root ? m->ctx : rp,
			    .thread = m->thread,
			    .begin = i,
			};
			if (root)
				r->late[r->nlate++] = (struct late){m->ctx, 0};
			break;
		}
		case PROTO_END:
			sc = scope_of(&st, m->ctx);
			/* The victim of an END is its scope's request; a
			 * ctx never begun has none, so the request whose
			 * code ended it stands in (docs/DESIGN.md 4). */
			if (!sc || sc->ended) {
				add_finding(r, C_MISNEST, i,
					    sc ? sc->root
					       : request_of(&st, m->cause),
					    0);
				break;
			}
			/* Under observe an END over a cleared storage
			 * (cur 0), or over one that names a scope of its
			 * own request, is no misnest. */
			if ((m->other != m->ctx &&
			     (m->other || flip == FLIP_OBSERVE_END) &&
			     (request_of(&st, m->other) != sc->root ||
			      flip == FLIP_OWN_REQUEST_END)) ||
			    (flip != FLIP_NO_THREAD_RULE &&
			     m->thread != sc->thread &&
			     request_of(&st, m->cause) != sc->root))
				add_finding(r, C_MISNEST, i, sc->root, 0);
			sc->ended = 1;
			break;
		case PROTO_TAG:
		case PROTO_EVENT:
			judge_work(&st, r, i, m->ctx, m->cause, flip);
			break;
		default: /* RESUME, SUSPEND: no rule */
			break;
		}
	}
	/* At disconnect every scope with no END is unclosed. */
	for (int i = 0; i < st.n; i++)
		if (!st.s[i].ended)
			add_finding(r, C_UNCLOSED, st.s[i].begin, st.s[i].root,
				    0);
}

/* ------------------------------------------------------------ daemon */

/* Record types as the database writes them (index: PROTO_*). */
static const char *const type_names[] = {
    [PROTO_BEGIN] = "BEGIN",   [PROTO_END] = "END",
    [PROTO_TAG] = "TAG",       [PROTO_EVENT] = "EVENT",
    [PROTO_RESUME] = "RESUME", [PROTO_SUSPEND] = "SUSPEND"};

#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

static int type_of(const char *s)
{
	for (size_t i = 0; i < NTYPES; i++)
		if (type_names[i] && s && strcmp(type_names[i], s) == 0)
			return (int)i;
	return 0;
}

static const char *type_name(uint8_t type)
{
	return type < NTYPES && type_names[type] ? type_names[type] : "?";
}

static int cls_of(const char *s)
{
	for (int i = 0; i < C_COUNT; i++)
		if (s && strcmp(cls_names[i], s) == 0)
			return i;
	return -1;
}

static sqlite3_stmt *prepare(sqlite3 *db, const char *sql, int64_t pid)
{
	sqlite3_stmt *st;

	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK,
		      "%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_bind_int64(st, 1, pid);
	return st;
}

static uint64_t col_u64(sqlite3_stmt *st, int i)
{
	return (uint64_t)sqlite3_column_int64(st, i);
}

/* What the daemon stored of one process: its records in ts order (and
 * their ts), its findings, its requests' late work.  "" or why not. */
static void daemon_result(sqlite3 *db, uint64_t seed, struct result *r,
			  uint64_t *ts, char *why, size_t len)
{
	char app[32];
	sqlite3_stmt *st;
	int64_t pid = -1;

	snprintf(app, sizeof(app), "obsrand-%" PRIu64, seed);
	ck_assert(sqlite3_prepare_v2(db,
				     "SELECT id FROM processes WHERE app = ?",
				     -1, &st, NULL) == SQLITE_OK);
	sqlite3_bind_text(st, 1, app, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		pid = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	why[0] = 0;
	if (pid < 0) {
		snprintf(why, len, "no process %s in the database", app);
		return;
	}
	r->nrecs = 0;
	st = prepare(db,
		     "SELECT type, tid, ctx, cause, coalesce(other, 0), ts "
		     "FROM records WHERE process_id = ? ORDER BY ts, id",
		     pid);
	while (sqlite3_step(st) == SQLITE_ROW && r->nrecs < MAX_RECS) {
		struct mrec *m = &r->recs[r->nrecs];

		m->type =
		    (uint8_t)type_of((const char *)sqlite3_column_text(st, 0));
		m->tid = col_u64(st, 1);
		m->ctx = col_u64(st, 2);
		m->cause = col_u64(st, 3);
		m->other = col_u64(st, 4);
		ts[r->nrecs++] = col_u64(st, 5);
	}
	sqlite3_finalize(st);
	r->nfindings = 0;
	st = prepare(db,
		     "SELECT l.class, coalesce(l.victim_ctx, 0), "
		     "coalesce(l.source_ctx, 0), l.record, coalesce(s.line, "
		     "0), l.ts, coalesce(l.ctx, 0) FROM leaks l LEFT JOIN "
		     "sites s ON s.id = l.site_id WHERE l.process_id = ?",
		     pid);
	while (sqlite3_step(st) == SQLITE_ROW && r->nfindings < MAX_FINDINGS) {
		struct finding *f = &r->findings[r->nfindings++];
		uint64_t at = col_u64(st, 5), ctx = col_u64(st, 6);

		f->cls =
		    (uint8_t)cls_of((const char *)sqlite3_column_text(st, 0));
		f->victim = col_u64(st, 1);
		f->source = col_u64(st, 2);
		f->type =
		    (uint8_t)type_of((const char *)sqlite3_column_text(st, 3));
		f->line = (int)sqlite3_column_int64(st, 4);
		f->rec = -1;
		for (int i = 0; i < r->nrecs; i++)
			if (f->cls == C_UNCLOSED
				? r->recs[i].type == PROTO_BEGIN &&
				      r->recs[i].ctx == ctx
				: ts[i] == at)
				f->rec = i;
	}
	sqlite3_finalize(st);
	r->nlate = 0;
	st = prepare(db,
		     "SELECT ctx, late FROM requests WHERE process_id = ? "
		     "ORDER BY begin_ts",
		     pid);
	while (sqlite3_step(st) == SQLITE_ROW && r->nlate < MAX_RECS)
		r->late[r->nlate++] = (struct late){
		    col_u64(st, 0), (int)sqlite3_column_int64(st, 1)};
	sqlite3_finalize(st);
}

/* ------------------------------------------------------------ compare */

static int finding_cmp(const void *a, const void *b)
{
	const struct finding *x = a, *y = b;

	if (x->rec != y->rec)
		return x->rec < y->rec ? -1 : 1;
	if (x->cls != y->cls)
		return x->cls < y->cls ? -1 : 1;
	if (x->victim != y->victim)
		return x->victim < y->victim ? -1 : 1;
	if (x->source != y->source)
		return x->source < y->source ? -1 : 1;
	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	return x->line - y->line;
}

static int describe_finding(char *buf, size_t len, const char *who,
			    const struct finding *f, const struct result *m)
{
	const struct mrec *rec = f->rec >= 0 ? &m->recs[f->rec] : NULL;

	return snprintf(
	    buf, len,
	    "%s: %s victim %#" PRIx64 " source %#" PRIx64
	    " on %s at line %d, record %d (log entry %d: thread "
	    "%d ctx %#" PRIx64 " cause %#" PRIx64 " other %#" PRIx64 ")",
	    who, f->cls < C_COUNT ? cls_names[f->cls] : "?", f->victim,
	    f->source, type_name(f->type), f->line, f->rec,
	    rec ? rec->entry : -1, rec ? rec->thread : -1, rec ? rec->ctx : 0,
	    rec ? rec->cause : 0, rec ? rec->other : 0);
}

/* "" when the daemon's result equals the model's, else the first
 * difference.  The records first: ts order must be the log's order. */
static void compare(const struct shared *sh, struct result *model,
		    struct result *got, const uint64_t *ts, char *why,
		    size_t len)
{
	why[0] = 0;
	if (got->nrecs != model->nrecs) {
		snprintf(why, len,
			 "the daemon stored %d records, the log made %d",
			 got->nrecs, model->nrecs);
		return;
	}
	for (int i = 0; i < model->nrecs; i++) {
		const struct mrec *m = &model->recs[i], *g = &got->recs[i];

		if (i > 0 && ts[i] <= ts[i - 1]) {
			snprintf(why, len,
				 "records %d and %d share ts %" PRIu64, i - 1,
				 i, ts[i]);
			return;
		}
		if (g->type != m->type || g->tid != sh->tid[m->thread] ||
		    g->ctx != m->ctx || g->cause != m->cause ||
		    g->other != m->other) {
			snprintf(
			    why, len,
			    "record %d (log entry %d, %s on thread %d): "
			    "the daemon has %s tid %" PRIu64 " ctx %#" PRIx64
			    " cause %#" PRIx64 " other %#" PRIx64
			    ", the model %s tid %" PRIu64 " ctx %#" PRIx64
			    " cause %#" PRIx64 " other %#" PRIx64,
			    i, m->entry, op_names[sh->log[m->entry].op],
			    m->thread, type_name(g->type), g->tid, g->ctx,
			    g->cause, g->other, type_name(m->type),
			    sh->tid[m->thread], m->ctx, m->cause, m->other);
			return;
		}
	}
	qsort(model->findings, (size_t)model->nfindings, sizeof(struct finding),
	      finding_cmp);
	qsort(got->findings, (size_t)got->nfindings, sizeof(struct finding),
	      finding_cmp);
	for (int i = 0; i < model->nfindings || i < got->nfindings; i++) {
		const struct finding *m =
		    i < model->nfindings ? &model->findings[i] : NULL;
		const struct finding *g =
		    i < got->nfindings ? &got->findings[i] : NULL;
		int n;

		if (m && g && finding_cmp(m, g) == 0)
			continue;
		/* The one that sorts first is the one the other lacks. */
		if (m && (!g || finding_cmp(m, g) < 0))
			n = describe_finding(why, len, "the model only", m,
					     model);
		else
			n = describe_finding(why, len, "the daemon only", g,
					     model);
		snprintf(why + n, len - (size_t)n,
			 " (%d findings by the model, %d by the daemon)",
			 model->nfindings, got->nfindings);
		return;
	}
	if (got->nlate != model->nlate) {
		snprintf(why, len, "the daemon has %d requests, the model %d",
			 got->nlate, model->nlate);
		return;
	}
	for (int i = 0; i < model->nlate; i++) {
		int k;

		for (k = 0;
		     k < got->nlate && got->late[k].ctx != model->late[i].ctx;
		     k++)
			;
		if (k == got->nlate ||
		    got->late[k].late != model->late[i].late) {
			snprintf(why, len,
				 "request %#" PRIx64 ": late %d by the daemon, "
				 "%d by the model",
				 model->late[i].ctx,
				 k < got->nlate ? got->late[k].late : -1,
				 model->late[i].late);
			return;
		}
	}
}

/* The whole log of a run, for a failure's reader. */
static void dump_log(const struct shared *sh, const struct result *model,
		     uint64_t seed, const char *why, char *path, size_t len)
{
	FILE *f;
	int rec = 0;

	snprintf(path, len, "/tmp/ctxleak-observe-random-%" PRIu64 ".txt",
		 seed);
	if ((f = fopen(path, "w")) == NULL) {
		snprintf(path, len, "(not written: %s)", strerror(errno));
		return;
	}
	fprintf(f, "seed %" PRIu64 ": %s\n", seed, why);
	fprintf(f, "entry record thread op site req arg storage cause\n");
	for (int i = 0; i < sh->nlog; i++) {
		const struct entry *e = &sh->log[i];
		int is_rec = rec < model->nrecs && model->recs[rec].entry == i;

		fprintf(f,
			"%4d %4d t%d %-7s %4d r%-2d %#18" PRIx64 " %#18" PRIx64
			" %#18" PRIx64 "\n",
			i, is_rec ? rec : -1, e->thread, op_names[e->op],
			e->op == OP_STORE ? 0 : SITE_LINE(e->site), e->req,
			e->arg, e->storage, e->cause);
		rec += is_rec;
	}
	fprintf(f, "findings by the model:\n");
	for (int i = 0; i < model->nfindings; i++) {
		char line[512];

		describe_finding(line, sizeof(line), "  ", &model->findings[i],
				 model);
		fprintf(f, "%s\n", line);
	}
	fclose(f);
}

/* ------------------------------------------------------------ runs */

/* One seed's run: its program, its log, the model's and the daemon's
 * results. */
struct run {
	struct program p;
	struct shared *sh; /* mmap'ed, shared with the client */
	pid_t pid;
	struct result model, got;
	uint64_t ts[MAX_RECS];
};

/* The seeds the environment asks for (see the top of this file); a
 * count that is not a positive number is the default. */
static void seeds_to_run(uint64_t *first, int *count)
{
	const char *one = getenv("OBSERVE_RANDOM_SEED");
	const char *many = getenv("OBSERVE_RANDOM_SEEDS");

	*first = one && *one ? strtoull(one, NULL, 10) : 1;
	*count = many && *many ? atoi(many) : one && *one ? 1 : DEFAULT_SEEDS;
	if (*count <= 0)
		*count = DEFAULT_SEEDS;
}

/* Runs seeds first .. first + n - 1 against one daemon (BATCH clients
 * at a time), each its own process, and reads each back. */
static struct run *run_seeds(uint64_t first, int n)
{
	struct run *runs = calloc((size_t)n, sizeof(*runs));
	const char *args[] = {"--keep", "all", NULL};
	struct harness_daemon d;
	sqlite3 *db;

	ck_assert_ptr_nonnull(runs);
	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	for (int b = 0; b < n; b += BATCH) {
		for (int i = b; i < n && i < b + BATCH; i++) {
			struct run *r = &runs[i];

			make_program(first + (uint64_t)i, &r->p);
			r->sh = mmap(NULL, sizeof(struct shared),
				     PROT_READ | PROT_WRITE,
				     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
			ck_assert(r->sh != MAP_FAILED);
			r->pid = fork();
			ck_assert_int_ne(r->pid, -1);
			if (r->pid == 0)
				service_main(&d, &r->p, r->sh);
		}
		for (int i = b; i < n && i < b + BATCH; i++)
			ck_assert_msg(harness_client_wait(runs[i].pid) == 0,
				      "seed %" PRIu64 ": the client failed",
				      runs[i].p.seed);
	}
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(sqlite3_open_v2(d.db, &db, SQLITE_OPEN_READONLY, NULL),
			 SQLITE_OK);
	for (int i = 0; i < n; i++) {
		struct run *r = &runs[i];
		char why[512];

		ck_assert_msg(!r->sh->overflow && !r->sh->getter_mismatch &&
				  !r->sh->dropped,
			      "seed %" PRIu64 ": log overflow %d, getter "
			      "mismatches %d, dropped %" PRIu64,
			      r->p.seed, r->sh->overflow,
			      r->sh->getter_mismatch, r->sh->dropped);
		model_records(r->sh, &r->model);
		ck_assert_msg(!r->model.error[0], "seed %" PRIu64 ": %s",
			      r->p.seed, r->model.error);
		daemon_result(db, r->p.seed, &r->got, r->ts, why, sizeof(why));
		ck_assert_msg(!why[0], "seed %" PRIu64 ": %s", r->p.seed, why);
	}
	sqlite3_close(db);
	harness_cleanup(&d);
	return runs;
}

static void free_runs(struct run *runs, int n)
{
	for (int i = 0; i < n; i++)
		munmap(runs[i].sh, sizeof(struct shared));
	free(runs);
}

/* The daemon's findings for every seed equal the model's; CHUNK seeds
 * to a daemon, so that memory stays bounded however many are asked. */
START_TEST(test_random_services)
{
	uint64_t first;
	int n, findings = 0, classes[C_COUNT] = {0}, late = 0, clean = 0;
	int failed = 0;
	uint64_t first_failed = 0;
	struct run *runs = NULL;

	seeds_to_run(&first, &n);
	for (int i = 0; i < n; i++) {
		struct run *r;
		char why[1024], path[128];

		if (i % CHUNK == 0) {
			if (runs)
				free_runs(runs, CHUNK);
			runs = run_seeds(first + (uint64_t)i,
					 n - i < CHUNK ? n - i : CHUNK);
		}
		r = &runs[i % CHUNK];

		model_rules(&r->model, FLIP_NONE);
		compare(r->sh, &r->model, &r->got, r->ts, why, sizeof(why));
		if (why[0]) {
			/* Every failing seed is named, the first in the
			 * assertion below. */
			dump_log(r->sh, &r->model, r->p.seed, why, path,
				 sizeof(path));
			printf("seed %" PRIu64 ": %s; log in %s\n", r->p.seed,
			       why, path);
			if (!failed++)
				first_failed = r->p.seed;
			continue;
		}
		/* A correct service gives no finding: nothing to fix. */
		if (r->p.correct && r->got.nfindings) {
			describe_finding(why, sizeof(why), "a correct service",
					 &r->got.findings[0], &r->model);
			printf("seed %" PRIu64 ": %s\n", r->p.seed, why);
			if (!failed++)
				first_failed = r->p.seed;
		}
		findings += r->model.nfindings;
		clean += r->model.nfindings == 0;
		for (int k = 0; k < r->model.nfindings; k++)
			classes[r->model.findings[k].cls]++;
		for (int k = 0; k < r->model.nlate; k++)
			late += r->model.late[k].late;
	}
	printf("observe_random: seeds %" PRIu64 "..%" PRIu64
	       ": %d findings (lost %d, stale %d, bleed %d, overlap %d, "
	       "misnest %d, unclosed %d), %d late, %d runs clean\n",
	       first, first + (uint64_t)n - 1, findings, classes[C_LOST],
	       classes[C_STALE], classes[C_BLEED], classes[C_OVERLAP],
	       classes[C_MISNEST], classes[C_UNCLOSED], late, clean);
	free_runs(runs, (n - 1) % CHUNK + 1);
	ck_assert_msg(!failed,
		      "%d of %d seeds differ from the model, the first %" PRIu64
		      " (printed above)",
		      failed, n, first_failed);
}
END_TEST

/* The same kind of runs, judged by the model with one rule changed: each
 * change must disagree with the daemon on some seed, so the comparison
 * above would notice a daemon with that rule wrong. */
START_TEST(test_flipped_rule_is_caught)
{
	const uint64_t first = 1000;
	const int n = 12;
	struct run *runs = run_seeds(first, n);

	for (int flip = FLIP_NONE + 1; flip < FLIP_COUNT; flip++) {
		int caught = 0;

		for (int i = 0; i < n && !caught; i++) {
			struct run *r = &runs[i];
			char why[1024];

			model_rules(&r->model, (enum flip)flip);
			compare(r->sh, &r->model, &r->got, r->ts, why,
				sizeof(why));
			caught = why[0] != 0;
		}
		ck_assert_msg(caught,
			      "the model with its %s rule changed agrees with "
			      "the daemon on seeds %" PRIu64 "..%" PRIu64,
			      flip_names[flip], first, first + (uint64_t)n - 1);
	}
	free_runs(runs, n);
}
END_TEST

static Suite *observe_random_suite(void)
{
	Suite *s = suite_create("observe_random");
	uint64_t first;
	int n;

	/* A second a seed at the most (about 0.1 s each here), and a
	 * minute to spare. */
	seeds_to_run(&first, &n);
	suite_add_tcase(s, check_tcase("observe_random", 60 + n,
				       test_random_services,
				       test_flipped_rule_is_caught, NULL));
	return s;
}

int main(void)
{
	return check_main(observe_random_suite(), NULL);
}
