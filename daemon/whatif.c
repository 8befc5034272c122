/*
 * whatif.c: docs/DESIGN.md's what-if.  For one process, whatever storage it ran
 * with, what each library-kept backend (thread, global, task) would have
 * recorded, and what the rules of rules.c find in that: the question "which
 * storage keeps this program's requests apart" answered with counts, from
 * one run.
 *
 * The truth of a record (cause, tid, ts, and the BEGIN, END, RESUME and
 * SUSPEND calls) is the same under every backend; only B, the backend's
 * slot, differs.  Fed every judged record in ts order (rules_on_judged),
 * the replay keeps B for the three backends side by side as DESIGN's
 * per-call table does (per thread for thread, one per process for
 * global, the cause itself for task: see struct wthread; an END restores
 * the scope's saved B into the ending thread's slots, whichever thread
 * began it), and judges each record once per backend with B in place of
 * its ctx (prev for a BEGIN, cur for an END).  It counts findings per
 * backend, class and site; it keeps no record, tag or request.
 *
 * Why a counting engine of its own rather than three more rules engines:
 * memory.  The daemon holds under 200 bytes per open scope, and three
 * engines would triple that; here one 40-byte entry holds an open scope
 * for all three backends: its saved B under thread and global and, for a
 * child, its request in each backend.  The rules below must
 * stay those of rules.c (judge_work, judge_request_begin, judge_end):
 * tests/test_whatif.c runs programs under each backend and requires the
 * counts of both to agree class by class.
 *
 * Which scopes are open does not depend on B, so unclosed findings are
 * the main engine's, counted for every backend (whatif_unclosed); the
 * scope is then forgotten here as it is there.
 */
#include <stdlib.h>
#include <string.h>

#include "ctxleakd.h"

#define NB WHATIF_BACKENDS

/* Memory bounds of the replay itself, per process: threads (as
 * rules_model.c's), and (site, backend, class) counters; past the last,
 * counts go to site 0. */
#define MAX_THREADS (1u << 16)
#define MAX_COUNTS  (1u << 14)

/* Table values: an index + 1 into scopes, or, with ENDED_BIT, into the
 * ended ring, and in the high bits 7 bits of the key's hash, so that a
 * probe past another key rarely reads that key (a cache miss: the ended
 * ring alone is 768 KiB); 0 is an empty slot.  Hence at most 2^24 - 2
 * scopes open and as many ended remembered per process. */
#define INDEX_MASK ((1u << 24) - 1)
#define ENDED_BIT  (1u << 24)
#define TAG_SHIFT  25
#define TAG_MASK   (0x7fu << TAG_SHIFT)
#define VALUE(v)   ((v) & ~TAG_MASK)

/* An open addressing table of uint32 values whose keys are the uint64
 * that starts each element of an array (base, stride), linear probing;
 * in front of it, the values of keys looked up lately, because a record
 * names the same few ctx values as the one before (its cause, the
 * backends' slots) and the table is too big to stay in the cache. */
#define NEAR 64
struct wnear {
	uint64_t key;
	uint32_t v; /* 0: none */
};
struct wtab {
	uint32_t *slot;
	uint32_t mask;	 /* capacity - 1; no array while count is 0 */
	uint32_t count;	 /* keys */
	uint32_t ghosts; /* slots of keys gone (scope_close) */
	struct wnear near[NEAR];
};

/* Backends with a slot to restore: thread and global (task's B is the
 * cause). */
#define NSLOTS 2

/* An open scope. */
struct wscope {
	uint64_t ctx;	       /* 0: a free slot */
	uint64_t tid;	       /* began on it (misnest's thread rule); free:
				  the next free index + 1 */
	uint64_t prev[NSLOTS]; /* B at its BEGIN under thread and global:
				  what its END restores */
	uint32_t roots;	       /* index + 1 of its requests in w->roots when
				  some backend makes it part of another
				  request; 0: a request of its own in all */
};

/* An ended (or forgotten) scope, for stale and for the requests of ctx
 * values still in some slot. */
struct wended {
	uint64_t ctx;
	uint64_t end_ts;
	uint64_t root[NB]; /* its request (root ctx) per backend */
	uint8_t ended;	   /* 0: reported unclosed, never ended */
};

/* A thread's slot under the thread backend.  The task backend needs
 * none: DESIGN's table moves its B with C, the cause, at every call
 * (both x at a begin, both the saved pair at an end, both k at a resume,
 * both popped at a suspend, from 0 and 0), so under task B is always the
 * record's cause, which also follows the execution contexts of runtimes
 * that have their own (asyncio tasks, greenlets) where a thread's calls
 * alone could not. */
struct wthread {
	uint64_t tid;
	uint64_t b_thread;
};

/* Findings of one backend and class at one site. */
struct wcount {
	uint64_t key; /* site << 8 | backend << 4 | class */
	uint64_t n;
};

struct whatif {
	uint64_t seed;	       /* mixed into every hash: clients pick ctx
				  values */
	struct wtab ctxs;      /* ctx -> open scope or ended ring entry */
	struct wscope *scopes; /* open scopes, and free ones */
	uint32_t nscopes, scopes_cap;	/* in use or free, allocated */
	uint32_t free_scope;		/* first free: index + 1 */
	uint64_t (*roots)[NB];		/* children's requests */
	uint32_t roots_cap, free_roots; /* allocated; first free: index + 1,
					   the next kept in roots[i][0] */
	struct wended *ring;		/* ended scopes, oldest at ring_head
					   once ring_count is ring_max */
	uint32_t ring_cap, ring_max;	/* allocated; the most kept */
	uint32_t ring_head, ring_count; /* the oldest; kept */

	struct wtab threads_tab;	/* tid -> threads */
	struct wthread *threads;	/* every thread seen */
	uint32_t nthreads, threads_cap; /* seen; allocated */
	struct wthread spare;		/* for threads past MAX_THREADS */
	uint64_t b_global;		/* B of the global backend */

	struct wtab counts_tab;		       /* count key -> counts */
	struct wcount *counts;		       /* per backend, class and site */
	uint32_t ncounts, counts_cap;	       /* in use; allocated */
	uint64_t totals[NB][LEAK_CLASS_COUNT]; /* the same per class */
	uint64_t approximate;		       /* calls past the bounds above */
};

static const char *const backend_names[NB] = {"thread", "global", "task"};

const char *whatif_backend_name(int backend)
{
	return backend >= 0 && backend < NB ? backend_names[backend] : "";
}

/* ------------------------------------------------------------ tables */

static uint64_t key_at(const void *base, size_t stride, uint32_t v)
{
	v &= INDEX_MASK;
	return *(const uint64_t *)((const char *)base +
				   (size_t)(v - 1) * stride);
}

static uint64_t hash(const struct whatif *w, uint64_t k)
{
	return proto_mix64(k ^ w->seed);
}

static uint32_t home(const struct whatif *w, const struct wtab *t, uint64_t k)
{
	return (uint32_t)hash(w, k) & t->mask;
}

static uint32_t tag_of(uint64_t h)
{
	return (uint32_t)(h >> 57) << TAG_SHIFT;
}

/* The slot of key (its value 0 when absent).  The open and ended arrays
 * share the table of ctx values: base2 is the ended one. */
struct wkeys {
	const void *base, *base2;
	size_t stride, stride2;
};

static uint64_t key_of(const struct wkeys *k, uint32_t v)
{
	return v & ENDED_BIT ? key_at(k->base2, k->stride2, v)
			     : key_at(k->base, k->stride, v);
}

static uint32_t *tab_slot(const struct whatif *w, const struct wtab *t,
			  const struct wkeys *k, uint64_t key)
{
	uint64_t h = hash(w, key);
	uint32_t i = (uint32_t)h & t->mask, tag = tag_of(h);

	while (t->slot[i] != 0 &&
	       ((t->slot[i] & TAG_MASK) != tag || key_of(k, t->slot[i]) != key))
		i = (i + 1) & t->mask;
	return &t->slot[i];
}

static struct wnear *near_of(struct wtab *t, uint64_t key)
{
	return &t->near[(key ^ key >> 17) & (NEAR - 1)];
}

/* key's value without its tag, or 0. */
static uint32_t tab_find(const struct whatif *w, struct wtab *t,
			 const struct wkeys *k, uint64_t key)
{
	struct wnear *n = near_of(t, key);

	if (n->v != 0 && n->key == key)
		return n->v;
	if (t->count == 0)
		return 0;
	n->key = key;
	n->v = VALUE(*tab_slot(w, t, k, key));
	return n->v;
}

/* Sets the value of the slot tab_slot found for key. */
static void slot_set(const struct whatif *w, struct wtab *t, uint32_t *s,
		     uint64_t key, uint32_t v)
{
	struct wnear *n = near_of(t, key);

	*s = tag_of(hash(w, key)) | v;
	n->key = key;
	n->v = v;
}

/* key's value v, at s when the caller has found key's slot (NULL: not
 * yet).  Half full at most, ghosts included: a miss costs a probe or two.
 * The slots are 4 bytes: 8 to 16 per key. */
static int tab_put(const struct whatif *w, struct wtab *t,
		   const struct wkeys *k, uint32_t *s, uint64_t key, uint32_t v)
{
	if (t->slot == NULL || (t->count + t->ghosts + 1) * 2 > t->mask + 1) {
		uint32_t cap = t->slot ? (t->mask + 1) * 2 : 64;
		uint32_t *old = t->slot, old_mask = t->mask;

		if ((t->slot = calloc(cap, sizeof(uint32_t))) == NULL) {
			t->slot = old;
			return -1;
		}
		t->mask = cap - 1;
		for (uint32_t i = 0; old && i <= old_mask; i++)
			if (old[i] != 0)
				*tab_slot(w, t, k, key_of(k, old[i])) = old[i];
		free(old);
		s = NULL;
	}
	if (s == NULL)
		s = tab_slot(w, t, k, key);
	t->count += *s == 0;
	slot_set(w, t, s, key, v);
	return 0;
}

/* Linear probing: close the gap so that later keys stay findable. */
static void tab_remove(const struct whatif *w, struct wtab *t,
		       const struct wkeys *k, uint32_t *s)
{
	uint32_t hole = (uint32_t)(s - t->slot), i = hole;
	near_of(t, key_of(k, *s))->v = 0;
	for (;;) {
		uint32_t h;

		i = (i + 1) & t->mask;
		if (t->slot[i] == 0)
			break;
		h = home(w, t, key_of(k, t->slot[i]));
		if (((i - h) & t->mask) >= ((i - hole) & t->mask)) {
			t->slot[hole] = t->slot[i];
			hole = i;
		}
	}
	t->slot[hole] = 0;
	t->count--;
}

static struct wkeys ctx_keys(const struct whatif *w)
{
	return (struct wkeys){w->scopes, w->ring, sizeof(*w->scopes),
			      sizeof(*w->ring)};
}

/* p (cap elements of size) with room for n, or NULL when out of memory
 * (p is then still valid). */
static void *grow(void *p, uint32_t *cap, uint32_t n, size_t size)
{
	uint32_t c = *cap ? *cap : 16;

	if (n <= *cap)
		return p;
	while (c < n)
		c *= 2;
	p = realloc(p, (size_t)c * size);
	if (p != NULL)
		*cap = c;
	return p;
}

/* ------------------------------------------------------------ scopes */

static struct wscope *scope_of(struct whatif *w, uint32_t v)
{
	return v != 0 && !(v & ENDED_BIT) ? &w->scopes[(v & INDEX_MASK) - 1]
					  : NULL;
}

static struct wended *ended_of(struct whatif *w, uint32_t v)
{
	return v & ENDED_BIT ? &w->ring[(v & INDEX_MASK) - 1] : NULL;
}

/* request(ctx) in each backend, and whether it ended, where that is
 * known without another lookup: most records are written under a
 * request's root, whose own entry says. */
struct wres {
	uint64_t root[NB];   /* root ctx; 0: none */
	uint64_t end_ts[NB]; /* ROOT_ENDED: when */
	uint8_t state[NB];   /* ROOT_* */
};
enum { ROOT_UNKNOWN, ROOT_OPEN, ROOT_ENDED };

/* A ctx never begun is a request of its own, never ended; ctx 0 none. */
static void resolve(struct whatif *w, uint64_t ctx, struct wres *r)
{
	struct wkeys k = ctx_keys(w);
	uint32_t v = ctx ? tab_find(w, &w->ctxs, &k, ctx) : 0;
	struct wscope *s = scope_of(w, v);
	struct wended *e = ended_of(w, v);

	for (int b = 0; b < NB; b++) {
		if (e != NULL) {
			r->root[b] = e->root[b];
			r->end_ts[b] = e->end_ts;
			r->state[b] = e->root[b] != ctx ? ROOT_UNKNOWN
				      : e->ended	? ROOT_ENDED
							: ROOT_OPEN;
		} else {
			r->root[b] =
			    s && s->roots ? w->roots[s->roots - 1][b] : ctx;
			r->state[b] =
			    r->root[b] == ctx ? ROOT_OPEN : ROOT_UNKNOWN;
		}
	}
}

/* Whether backend b's request of r ended before ts. */
static int ended_before(struct whatif *w, const struct wres *r, int b,
			uint64_t ts)
{
	struct wkeys k = ctx_keys(w);
	struct wended *e;

	if (r->state[b] != ROOT_UNKNOWN)
		return r->state[b] == ROOT_ENDED && r->end_ts[b] < ts;
	e = ended_of(w, tab_find(w, &w->ctxs, &k, r->root[b]));
	return e != NULL && e->ended && e->end_ts < ts;
}

static void roots_free(struct whatif *w, uint32_t r)
{
	if (r == 0)
		return;
	w->roots[r - 1][0] = w->free_roots;
	w->free_roots = r;
}

/* Room for a child's requests: index + 1, or 0 when out of memory. */
static uint32_t roots_alloc(struct whatif *w)
{
	uint32_t r;

	if (w->free_roots == 0) {
		uint32_t n = w->roots_cap;
		uint64_t(*roots)[NB] =
		    grow(w->roots, &w->roots_cap, n + 1, sizeof(*w->roots));

		if (roots == NULL)
			return 0;
		w->roots = roots;
		for (r = w->roots_cap; r > n; r--)
			roots_free(w, r);
	}
	r = w->free_roots;
	w->free_roots = (uint32_t)w->roots[r - 1][0];
	return r;
}

/* A free scope: index + 1, or 0 when out of memory. */
static uint32_t scope_alloc(struct whatif *w)
{
	struct wscope *scopes;
	uint32_t v = w->free_scope;

	if (v != 0) {
		w->free_scope = (uint32_t)w->scopes[v - 1].tid;
		return v;
	}
	if (w->nscopes >= INDEX_MASK - 1)
		return 0;
	scopes =
	    grow(w->scopes, &w->scopes_cap, w->nscopes + 1, sizeof(*w->scopes));
	if (scopes == NULL)
		return 0;
	w->scopes = scopes;
	return ++w->nscopes;
}

static void scope_free(struct whatif *w, uint32_t v)
{
	struct wscope *s = &w->scopes[v - 1];

	roots_free(w, s->roots);
	s->ctx = 0;
	s->tid = w->free_scope;
	w->free_scope = v;
}

/* Opens ctx with the slots of its BEGIN and its request per backend. */
static void scope_open(struct whatif *w, uint32_t *slot, uint64_t ctx,
		       uint64_t tid, const uint64_t prev[NB],
		       const uint64_t root[NB])
{
	uint32_t v = scope_alloc(w), r = 0;
	struct wscope *s;
	struct wkeys k;

	if (v == 0) {
		w->approximate++;
		return;
	}
	for (int b = 0; b < NB; b++)
		if (root[b] != ctx && r == 0 && (r = roots_alloc(w)) == 0)
			w->approximate++;
	if (r != 0)
		memcpy(w->roots[r - 1], root, sizeof(w->roots[0]));
	s = &w->scopes[v - 1];
	s->ctx = ctx;
	s->tid = tid;
	memcpy(s->prev, prev, sizeof(s->prev)); /* thread's and global's */
	s->roots = r;
	k = ctx_keys(w);
	if (tab_put(w, &w->ctxs, &k, slot, ctx, v) == -1) {
		scope_free(w, v);
		w->approximate++;
	}
}

/* The table of ctx values made anew from the ring and the open scopes,
 * without its ghosts: when they outnumber the keys, so that it costs
 * O(1) an END. */
static void ctx_rebuild(struct whatif *w)
{
	struct wkeys k = ctx_keys(w);
	struct wtab *t = &w->ctxs;

	memset(t->slot, 0, ((size_t)t->mask + 1) * sizeof(*t->slot));
	memset(t->near, 0, sizeof(t->near));
	t->count = t->ghosts = 0;
	/* Oldest first, and open scopes last: a ctx begun again after it
	 * ended is the open one. */
	for (uint32_t n = 0; n < w->ring_count; n++) {
		uint32_t i = (w->ring_head + n) % w->ring_count;
		uint32_t *s = tab_slot(w, t, &k, w->ring[i].ctx);

		t->count += *s == 0;
		slot_set(w, t, s, w->ring[i].ctx, (i + 1) | ENDED_BIT);
	}
	for (uint32_t i = 0; i < w->nscopes; i++) {
		uint32_t *s;

		if (w->scopes[i].ctx == 0)
			continue;
		s = tab_slot(w, t, &k, w->scopes[i].ctx);
		t->count += *s == 0;
		slot_set(w, t, s, w->scopes[i].ctx, i + 1);
	}
}

/* An open scope's requests per backend. */
static void scope_roots(const struct whatif *w, const struct wscope *s,
			uint64_t root[NB])
{
	for (int b = 0; b < NB; b++)
		root[b] = s->roots ? w->roots[s->roots - 1][b] : s->ctx;
}

/*
 * The open scope in *slot ends at ts (ended 0: reported unclosed, and
 * forgotten): it moves to the ended ring, which keeps the last ring_max of
 * them as the rules engine's ended table does, the oldest making room.
 */
static void scope_close(struct whatif *w, uint32_t *slot, uint64_t ts,
			int ended)
{
	uint32_t v = VALUE(*slot), i;
	struct wscope *s = &w->scopes[v - 1];
	struct wended e = {
	    .ctx = s->ctx, .end_ts = ts, .ended = (uint8_t)ended};
	struct wended *ring;
	struct wkeys k = ctx_keys(w);

	scope_roots(w, s, e.root);
	if (w->ring_count < w->ring_max &&
	    (ring = grow(w->ring, &w->ring_cap, w->ring_count + 1,
			 sizeof(*w->ring))) != NULL) {
		w->ring = ring;
		i = w->ring_count++;
	} else if (w->ring_count > 0) {
		/* The oldest makes room.  Its slot stays, a ghost: it names
		 * ring[i], whose key is now another, so that no lookup of
		 * the old key finds it, and a lookup of the new one that
		 * does gets the right value.  Removing it instead cost a
		 * tenth of the daemon's time (shifting the keys after it). */
		i = w->ring_head;
		w->ring_head = (i + 1) % w->ring_count;
		near_of(&w->ctxs, w->ring[i].ctx)->v = 0;
		w->ctxs.ghosts++;
	} else {
		tab_remove(w, &w->ctxs, &k, slot);
		scope_free(w, v);
		return;
	}
	w->ring[i] = e;
	slot_set(w, &w->ctxs, slot, e.ctx, (i + 1) | ENDED_BIT);
	scope_free(w, v);
	if (w->ctxs.ghosts > w->ctxs.count)
		ctx_rebuild(w);
}

/* ------------------------------------------------------------ threads */

static struct wthread *thread_of(struct whatif *w, uint64_t tid)
{
	struct wkeys k = {w->threads, NULL, sizeof(*w->threads), 0};
	struct wthread *threads;
	uint32_t v;

	v = tab_find(w, &w->threads_tab, &k, tid);
	if (v == 0) {
		threads = w->nthreads < MAX_THREADS
			      ? grow(w->threads, &w->threads_cap,
				     w->nthreads + 1, sizeof(*w->threads))
			      : NULL;
		if (threads == NULL) {
			w->approximate++;
			return &w->spare;
		}
		w->threads = threads;
		memset(&threads[w->nthreads], 0, sizeof(*threads));
		threads[w->nthreads].tid = tid;
		k.base = threads;
		if (tab_put(w, &w->threads_tab, &k, NULL, tid,
			    w->nthreads + 1)) {
			w->approximate++;
			return &w->spare;
		}
		v = ++w->nthreads;
	}
	return &w->threads[v - 1];
}

/* ------------------------------------------------------------ counting */

static uint64_t count_key(uint32_t site, int b, enum leak_class c)
{
	return (uint64_t)site << 8 | (uint64_t)b << 4 | (uint64_t)c;
}

static void count(struct whatif *w, int b, enum leak_class c, uint32_t site)
{
	struct wkeys k = {w->counts, NULL, sizeof(*w->counts), 0};
	uint64_t key = count_key(site, b, c);
	struct wcount *counts;
	uint32_t v;

	if (c == LEAK_NONE)
		return;
	w->totals[b][c]++;
	v = tab_find(w, &w->counts_tab, &k, key);
	/* A client that defines sites without end: the rest go to site 0,
	 * for which room is kept. */
	if (v == 0 && w->ncounts >= MAX_COUNTS - NB * LEAK_CLASS_COUNT) {
		key = count_key(0, b, c);
		v = tab_find(w, &w->counts_tab, &k, key);
	}
	if (v == 0) {
		counts = grow(w->counts, &w->counts_cap, w->ncounts + 1,
			      sizeof(*w->counts));
		if (counts == NULL)
			return;
		w->counts = counts;
		k.base = counts;
		counts[w->ncounts] = (struct wcount){key, 0};
		if (tab_put(w, &w->counts_tab, &k, NULL, key, w->ncounts + 1))
			return;
		v = ++w->ncounts;
	}
	w->counts[v - 1].n++;
}

/* ------------------------------------------------------------ the rules */

/* rules.c's judge_work for backend b: TAG, EVENT and child BEGIN with
 * c = the backend's ctx (prev), rc = request(c), rt = request(cause). */
static enum leak_class judge_work(struct whatif *w, uint64_t ts, int b,
				  uint64_t c, const struct wres *rc, uint64_t t,
				  const struct wres *rt)
{
	if (t != 0 && c == 0)
		return LEAK_LOST;
	if (c == 0)
		return LEAK_NONE;
	/* Late work (the storage names the request whose code runs, over)
	 * is no finding. */
	if (ended_before(w, rc, b, ts))
		return rc->root[b] != rt->root[b] ? LEAK_STALE : LEAK_NONE;
	return rc->root[b] != rt->root[b] ? LEAK_BLEED : LEAK_NONE;
}

/* request(bs[b]) in backend b, into rc's b, resolving each value once;
 * the cause's is rt. */
static void resolve_slots(struct whatif *w, const uint64_t bs[NB], uint64_t t,
			  const struct wres *rt, struct wres *rc)
{
	struct wres got[NB];

	for (int b = 0; b < NB; b++) {
		const struct wres *from = rt;
		int j = 0;

		if (bs[b] != t) {
			while (j < b && bs[j] != bs[b])
				j++;
			if (j == b)
				resolve(w, bs[b], &got[b]);
			from = &got[j];
		}
		rc->root[b] = from->root[b];
		rc->end_ts[b] = from->end_ts[b];
		rc->state[b] = from->state[b];
	}
}

static void replay_begin(struct whatif *w, const struct proto_record *rec,
			 const uint64_t bs[NB], const struct wres *rt)
{
	struct wkeys k = ctx_keys(w);
	uint32_t *slot = rec->ctx && w->ctxs.count
			     ? tab_slot(w, &w->ctxs, &k, rec->ctx)
			     : NULL;
	int opens = rec->ctx != 0 && !(slot && scope_of(w, VALUE(*slot)));
	uint64_t root[NB];
	struct wres rc;

	resolve_slots(w, bs, rec->cause, rt, &rc);
	for (int b = 0; b < NB; b++) {
		enum leak_class c = LEAK_NONE;

		if (rec->kind == PROTO_KIND_CHILD)
			c = judge_work(w, rec->ts, b, bs[b], &rc, rec->cause,
				       rt);
		else if (opens && bs[b] != 0) /* rules.c's
						 judge_request_begin */
			c = ended_before(w, &rc, b, rec->ts) ? LEAK_STALE
							     : LEAK_OVERLAP;
		count(w, b, c, rec->site);
		/* A child begun with nothing current is a request of its
		 * own. */
		root[b] = rec->kind == PROTO_KIND_REQUEST || bs[b] == 0
			      ? rec->ctx
			      : rc.root[b];
	}
	/* Nothing above changed the table: slot is still the ctx's. */
	if (opens)
		scope_open(w, slot, rec->ctx, rec->tid, bs, root);
}

/* rules.c's judge_end, then DESIGN's "end(x)": when x is known, its saved
 * B goes into the ending thread's slots, whichever thread began it. */
static void replay_end(struct whatif *w, const struct proto_record *rec,
		       const uint64_t bs[NB], const struct wres *rt,
		       struct wthread *t)
{
	struct wkeys k = ctx_keys(w);
	uint32_t *slot = rec->ctx && w->ctxs.count
			     ? tab_slot(w, &w->ctxs, &k, rec->ctx)
			     : NULL;
	struct wscope *s = slot ? scope_of(w, VALUE(*slot)) : NULL;
	uint64_t rx[NB];

	if (s == NULL) { /* already ended, or never begun */
		for (int b = 0; b < NB; b++)
			count(w, b, LEAK_MISNEST, rec->site);
		return;
	}
	scope_roots(w, s, rx);
	for (int b = 0; b < NB; b++)
		count(w, b,
		      bs[b] != rec->ctx ||
			      (rec->tid != s->tid && rt->root[b] != rx[b])
			  ? LEAK_MISNEST
			  : LEAK_NONE,
		      rec->site);
	t->b_thread = s->prev[WHATIF_THREAD];
	w->b_global = s->prev[WHATIF_GLOBAL];
	scope_close(w, slot, rec->ts, 1);
}

void whatif_record(struct whatif *w, const struct proto_record *rec)
{
	struct wthread *t = thread_of(w, rec->tid);
	uint64_t bs[NB] = {t->b_thread, w->b_global, rec->cause};
	struct wres rt, rc;

	switch (rec->type) {
	case PROTO_BEGIN:
		resolve(w, rec->cause, &rt);
		replay_begin(w, rec, bs, &rt);
		t->b_thread = w->b_global = rec->ctx;
		break;
	case PROTO_END:
		resolve(w, rec->cause, &rt);
		replay_end(w, rec, bs, &rt, t);
		break;
	case PROTO_TAG:
	case PROTO_EVENT:
		resolve(w, rec->cause, &rt);
		resolve_slots(w, bs, rec->cause, &rt, &rc);
		for (int b = 0; b < NB; b++)
			count(w, b,
			      judge_work(w, rec->ts, b, bs[b], &rc, rec->cause,
					 &rt),
			      rec->site);
		break;
	default:
		break;
	}
}

void whatif_unclosed(struct whatif *w, const struct proto_record *begin)
{
	struct wkeys k = ctx_keys(w);

	uint32_t *slot;

	for (int b = 0; b < NB; b++)
		count(w, b, LEAK_UNCLOSED, begin->site);
	if (begin->ctx == 0 || w->ctxs.count == 0)
		return;
	slot = tab_slot(w, &w->ctxs, &k, begin->ctx);
	if (scope_of(w, VALUE(*slot)) != NULL)
		scope_close(w, slot, 0, 0);
}

/* ------------------------------------------------------------ results */

void whatif_totals(const struct whatif *w,
		   uint64_t out[WHATIF_BACKENDS][LEAK_CLASS_COUNT])
{
	memcpy(out, w->totals, sizeof(w->totals));
}

void whatif_rows(const struct whatif *w, whatif_row_fn fn, void *arg)
{
	for (uint32_t i = 0; i < w->ncounts; i++) {
		uint64_t key = w->counts[i].key;

		fn(arg, (int)(key >> 4 & 0xf), (enum leak_class)(key & 0xf),
		   (uint32_t)(key >> 8), w->counts[i].n);
	}
}

uint64_t whatif_approximate(const struct whatif *w)
{
	return w->approximate;
}

struct whatif *whatif_new(uint32_t max_ended_scopes, uint64_t hash_seed)
{
	struct whatif *w = calloc(1, sizeof(*w));

	if (w == NULL)
		return NULL;
	w->seed = hash_seed;
	w->ring_max = max_ended_scopes < INDEX_MASK - 1 ? max_ended_scopes
							: INDEX_MASK - 1;
	return w;
}

void whatif_free(struct whatif *w)
{
	if (w == NULL)
		return;
	free(w->ctxs.slot);
	free(w->scopes);
	free(w->roots);
	free(w->ring);
	free(w->threads);
	free(w->threads_tab.slot);
	free(w->counts);
	free(w->counts_tab.slot);
	free(w);
}
