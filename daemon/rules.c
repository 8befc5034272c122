/*
 * rules.c: the leak rules engine: queueing records until a watermark,
 * judging them in timestamp order, rebuilding each request's context and
 * retiring it.  The tables it stands on are in rules_scope.c, the human
 * detail lines in rules_detail.c, the concurrency model in rules_model.c.
 *
 * The engine's spec (docs/DESIGN.md "Leak classes", made precise):
 *
 * request(x) is the root ancestor of scope x.  A request BEGIN (kind 0)
 * makes a root; a child BEGIN (kind 1) has parent = its prev, and with
 * prev = 0 it is a root of its own.  A ctx never seen begin is its own
 * "unknown" request: it gets a request id and an entry in the ended table
 * when first needed, so that every record naming it resolves to the same
 * pseudo request (its name is NULL and it never retires).  A request has
 * ended from the first END of its root on; "ended before ts" means end
 * ts < the record's ts.
 *
 * Records are queued by rules_add in any arrival order and judged in (ts,
 * arrival) order once rules_advance's watermark covers them, or all in
 * rules_finish; so findings do not depend on how batches from different
 * threads interleave on the wire.  Past max_pending records, or past
 * max_pending_bytes for all engines together, the oldest queued record is
 * judged at once (stats.forced).
 *
 * TAG, EVENT and child BEGIN: c = ctx (BEGIN: prev), t = cause; the first
 * rule that applies gives the record's finding:
 *   lost    t != 0, c == 0               victim request(t)
 *   stale   c != 0, request(c) ended     victim request(t), source request(c)
 *   bleed   c != 0, request(c) != request(t)   same; with t == 0 this is
 *           background work recorded under a request (victim none).
 * Except late work: c != 0 and request(c) = request(t) ended is no
 * finding; the verdict is marked late and the request counts it.
 * Request BEGIN with prev != 0: stale when request(prev) ended, else
 * overlap; victim the new request, source request(prev).
 * END(x): misnest when cur != x (under observe, not when cur = 0, the
 * service cleared its storage first, nor when cur is a scope of x's own
 * request: the service's storage names requests, or it put the parent
 * back first), or when it is on another thread than BEGIN(x) while
 * request(t) != request(x) (victim request(x)); or when x
 * already ended (victim request(x), whatever code ended it again) or was
 * never begun (victim request(t), if any: x has no request of its own).
 * unclosed: an open scope at rules_finish (DISCONNECT), older than
 * max_request_age at the watermark (AGE), or the oldest open scope when a
 * new one would exceed max_open_scopes (LIMIT); victim request(x), the
 * evidence a BEGIN rebuilt from the scope.  Such a scope is forgotten: a
 * later END of it is misnest.
 * A BEGIN whose ctx is 0 or already open opens no scope and finds nothing.
 *
 * Reassembly: every judged record belongs to request(cause) (a request
 * BEGIN to the new request, an END to request(x)), whose context counts
 * it, its thread and, as victim or source, its findings; a TAG lands in
 * request(ctx)'s context, the storage the backend used, with setter
 * request(cause).  A request retires when it has no open scope and the
 * watermark has passed its last END (or, without watermarks, once forced
 * judging has passed it); it is then remembered only through the ended
 * table (root ctx -> id, end ts, name), bounded by max_ended_scopes.
 * What is judged about a retired request meanwhile (its records, late
 * work, findings naming it) is gathered per request and delivered as one
 * rules_update per rules_advance; a request that retired clean under
 * hold_records and is named by a finding gets its row that way.
 *
 * Model: besides request(x), each scope remembers the request whose code
 * began it (request(cause) of its BEGIN), and the model attributes each
 * record to that true owner, so that the concurrency model inferred from
 * one program is the same under every backend (rules_model.c).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rules_int.h"

/* A queued record, kept as compactly as a held one, its strings after
 * it: under half the bytes of a struct proto_record, so that the records
 * between two watermarks stay in the cache until they are judged. */
struct pnode {
	struct hrec h;
	uint32_t size; /* as allocated */
	char strings[];
};

/* What judging one record found. */
struct judgement {
	struct req *owner; /* request(cause), the record's rid */
	struct req *truth; /* the same through true parents (model) */
	struct req *said;  /* request(ctx or prev), its rid_ctx */
	struct req *victim, *source;
	enum leak_class leak;
	int late; /* late work: no finding */
	struct misnest_info mn;
	struct iname *name_ref; /* keeps mn.scope_name alive */
};

/* The names the database stores (proto/common.h), by this enum. */
#define CLASS_NAME(tag, name) [LEAK_##tag] = name,
static const char *const class_names[LEAK_CLASS_COUNT] = {
    [LEAK_NONE] = "", COMMON_LEAK_CLASSES(CLASS_NAME)};
#undef CLASS_NAME
_Static_assert(LEAK_CLASS_COUNT == COMMON_CLASS_COUNT + 1,
	       "every leak class has its name in proto/common.h");

const char *leak_class_name(enum leak_class c)
{
	if ((unsigned)c >= LEAK_CLASS_COUNT)
		return "";
	return class_names[c];
}

int leak_class_from_name(const char *name)
{
	for (int c = 1; c < LEAK_CLASS_COUNT; c++)
		if (strcmp(name, class_names[c]) == 0)
			return c;
	return -1;
}

/* Per process: 256k open scopes is under 50 MB; 16k ended scopes keep
 * the ended table in cache while covering any stale ctx of recent
 * requests; an hour is longer than any request that is not a leak. */
void rules_config_default(struct rules_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->max_open_scopes = 1u << 18;
	cfg->max_ended_scopes = 1u << 14;
	cfg->max_pending = 1u << 16;
	cfg->max_tags = 64;
	cfg->max_request_age = 3600ull * 1000000000ull;
}

struct rules *rules_new(const struct rules_config *cfg,
			const struct rules_sink *sink)
{
	struct rules *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->cfg = *cfg;
	if (r->cfg.request_seq == NULL)
		r->cfg.request_seq = &r->own_seq;
	if (r->cfg.held_bytes == NULL)
		r->cfg.held_bytes = &r->own_held;
	if (r->cfg.pending_bytes == NULL)
		r->cfg.pending_bytes = &r->own_pending;
	if (r->cfg.open_scopes_total == NULL)
		r->cfg.open_scopes_total = &r->own_open;
	if (r->cfg.ended_scopes_total == NULL)
		r->cfg.ended_scopes_total = &r->own_ended;
	if (sink != NULL)
		r->sink = *sink;
	r->open.load = PTAB_DENSE;
	r->ended_tab.load = PTAB_SPARSE;
	r->threads.load = PTAB_SPARSE;
	r->open.seed = r->ended_tab.seed = r->threads.seed = cfg->hash_seed;
	rules_mem_add(r, sizeof(*r));
	return r;
}

void rules_on_judged(struct rules *r,
		     void (*fn)(void *arg, const struct proto_record *rec),
		     void *arg)
{
	r->on_judged = fn;
	r->on_judged_arg = arg;
}

/* ------------------------------------------------------------ queue */

/* The heap holds its keys, so that sifting does not touch the records. */
static int pending_before(const struct pending *a, const struct pending *b)
{
	if (a->ts != b->ts)
		return a->ts < b->ts;
	return a->seq < b->seq;
}

static void pending_swap(struct pending *a, struct pending *b)
{
	struct pending tmp = *a;

	*a = *b;
	*b = tmp;
}

/* A 4-ary heap: half the depth of a binary one, and a node's children
 * share a cache line or two, so a pop touches fewer lines. */
#define HEAP_ARITY 4

static void heap_up(struct pending *h, size_t i)
{
	while (i > 0 && pending_before(&h[i], &h[(i - 1) / HEAP_ARITY])) {
		pending_swap(&h[i], &h[(i - 1) / HEAP_ARITY]);
		i = (i - 1) / HEAP_ARITY;
	}
}

static void heap_down(struct pending *h, size_t n, size_t i)
{
	for (;;) {
		size_t first = HEAP_ARITY * i + 1, m = i;

		for (size_t c = first; c < first + HEAP_ARITY && c < n; c++)
			if (pending_before(&h[c], &h[m]))
				m = c;
		if (m == i)
			return;
		pending_swap(&h[i], &h[m]);
		i = m;
	}
}

static int heap_push(struct rules *r, struct pending p)
{
	if (r->nheap == r->heap_cap) {
		size_t cap = r->heap_cap ? r->heap_cap * 2 : 64;
		struct pending *heap = realloc(r->heap, cap * sizeof(*heap));

		if (heap == NULL)
			return -1;
		rules_mem_add(r, (cap - r->heap_cap) * sizeof(*heap));
		r->heap = heap;
		r->heap_cap = cap;
	}
	r->heap[r->nheap++] = p;
	heap_up(r->heap, r->nheap - 1);
	return 0;
}

/* A process's records arrive nearly in ts order (one thread's batch
 * after another's): those that come after everything in the run are
 * queued and dequeued in O(1), and only the others pay for the heap. */
static struct pending *run_at(const struct rules *r, size_t i)
{
	return &r->run[(r->run_head + i) & (r->run_cap - 1)];
}

static int run_push(struct rules *r, struct pending p)
{
	if (r->nrun == r->run_cap) {
		size_t cap = r->run_cap ? r->run_cap * 2 : 64;
		struct pending *run = malloc(cap * sizeof(*run));

		if (run == NULL)
			return -1;
		for (size_t i = 0; i < r->nrun; i++)
			run[i] = *run_at(r, i);
		free(r->run);
		rules_mem_add(r, (cap - r->run_cap) * sizeof(*run));
		r->run = run;
		r->run_cap = cap;
		r->run_head = 0;
	}
	*run_at(r, r->nrun++) = p;
	return 0;
}

static int pending_push(struct rules *r, struct pending p)
{
	int rc;

	if (r->nrun == 0 || !pending_before(&p, run_at(r, r->nrun - 1)))
		rc = run_push(r, p);
	else
		rc = heap_push(r, p);
	if (rc == 0)
		r->stats.pending = ++r->npending;
	return rc;
}

/* The record to judge next, or NULL. */
static const struct pending *pending_next(const struct rules *r)
{
	const struct pending *run = r->nrun ? run_at(r, 0) : NULL;

	if (r->nheap > 0 && (run == NULL || pending_before(&r->heap[0], run)))
		return &r->heap[0];
	return run;
}

static struct pnode *pending_pop(struct rules *r)
{
	const struct pending *next = pending_next(r);
	struct pnode *n = next->n;

	assert(r->npending > 0 && *r->cfg.pending_bytes >= n->size);
	if (r->nheap > 0 && next == &r->heap[0]) {
		r->heap[0] = r->heap[--r->nheap];
		heap_down(r->heap, r->nheap, 0);
	} else {
		r->run_head = (r->run_head + 1) & (r->run_cap - 1);
		r->nrun--;
	}
	r->stats.pending = --r->npending;
	*r->cfg.pending_bytes -= n->size;
	return n;
}

/* -------------------------------------------------------- compact records */

/* The two strings a record of rec's type carries. */
static void record_strings(const struct proto_record *rec, struct proto_str *s1,
			   struct proto_str *s2)
{
	*s1 = rec->type == PROTO_TAG ? rec->key : rec->name;
	*s2 = rec->type == PROTO_TAG ? rec->value : rec->message;
}

/* Bytes compact_record copies: both strings, each with a NUL. */
static size_t compact_strings_size(const struct proto_record *rec)
{
	struct proto_str s1, s2;

	record_strings(rec, &s1, &s2);
	return (size_t)s1.len + s2.len + 2;
}

/* rec into *h, its strings copied to `strings` (compact_strings_size
 * bytes); strings NULL: they are not kept, and read back as nil. */
static void compact_record(struct hrec *h, const struct proto_record *rec,
			   char *strings)
{
	struct proto_str s1, s2;

	record_strings(rec, &s1, &s2);
	*h = (struct hrec){
	    .ts = rec->ts,
	    .tid = rec->tid,
	    .ctx = rec->ctx,
	    .cause = rec->cause,
	    .other = rec->type == PROTO_BEGIN ? rec->prev : rec->cur,
	    .site = rec->site,
	    .type = rec->type,
	    .kind = rec->kind,
	    .flags = HREC_NIL1 | HREC_NIL2,
	};
	if (strings == NULL)
		return;
	h->flags = (s1.ptr ? 0 : HREC_NIL1) | (s2.ptr ? 0 : HREC_NIL2);
	h->s = strings;
	h->l1 = s1.len;
	h->l2 = s2.len;
	if (s1.len)
		memcpy(strings, s1.ptr, s1.len);
	strings[s1.len] = '\0';
	if (s2.len)
		memcpy(strings + s1.len + 1, s2.ptr, s2.len);
	strings[s1.len + 1 + s2.len] = '\0';
}

/* The record *h keeps, its strings pointing into h's. */
static void rebuild_record(struct proto_record *rec, const struct hrec *h)
{
	/* Cleared by copying a zero record: a memset of it compiles to a
	 * `rep stos`, slow to start, and this runs for every record. */
	static const struct proto_record zero_record;
	struct proto_str s1, s2;

	*rec = zero_record;
	rec->type = h->type;
	rec->ts = h->ts;
	rec->tid = h->tid;
	rec->ctx = h->ctx;
	rec->cause = h->cause;
	rec->site = h->site;
	rec->kind = h->kind;
	if (h->type == PROTO_BEGIN)
		rec->prev = h->other;
	else
		rec->cur = h->other;
	s1.ptr = h->flags & HREC_NIL1 ? NULL : h->s;
	s1.len = h->l1;
	s2.ptr = h->flags & HREC_NIL2 ? NULL : h->s + h->l1 + 1;
	s2.len = h->l2;
	if (h->type == PROTO_TAG) {
		rec->key = s1;
		rec->value = s2;
	} else {
		rec->name = s1;
		rec->message = s2;
	}
}

/* ------------------------------------------------------------ the queue */

/* Records with short strings, nearly all of them, reuse blocks from the
 * cache: queueing and judging allocate nothing in the steady state. */
static struct pnode *pnode_alloc(struct rules *r, size_t strings)
{
	size_t size = sizeof(struct pnode) + strings;
	struct pnode *n = rules_alloc_raw(r, size);

	if (n != NULL)
		n->size = size;
	return n;
}

static void pnode_free(struct rules *r, struct pnode *n)
{
	rules_release(r, n, n->size);
}

static struct pnode *pnode_new(struct rules *r, const struct proto_record *rec)
{
	struct pnode *n = pnode_alloc(r, compact_strings_size(rec));

	if (n != NULL)
		compact_record(&n->h, rec, n->strings);
	return n;
}

static void judge(struct rules *r, struct pnode *n);
static void retire_done(struct rules *r, uint64_t watermark, int all);

/* Past a limit of the queue: by count, this engine's; by bytes, all the
 * engines' together, of which this one gives back what it can. */
static int over_pending(const struct rules *r)
{
	return r->npending > r->cfg.max_pending ||
	       (r->cfg.max_pending_bytes != 0 && r->npending > 0 &&
		*r->cfg.pending_bytes > r->cfg.max_pending_bytes);
}

int rules_add(struct rules *r, const struct proto_record *rec)
{
	struct pnode *n;
	uint64_t forced_ts = 0;

	if (rec->type < PROTO_BEGIN || rec->type > PROTO_SUSPEND)
		return 0;
	n = pnode_new(r, rec);
	if (n == NULL)
		return -1;
	if (pending_push(r, (struct pending){n->h.ts, r->seq++, n}) == -1) {
		pnode_free(r, n);
		return -1;
	}
	*r->cfg.pending_bytes += n->size;
	r->stats.added++;
	if (!over_pending(r))
		return 0;
	/* Judging early treats the judged ts as a watermark: complete
	 * requests retire too, or a client that never sends watermarks
	 * would keep every request until it disconnects. */
	while (over_pending(r)) {
		n = pending_pop(r);
		forced_ts = n->h.ts;
		r->stats.forced++;
		judge(r, n);
	}
	retire_done(r, forced_ts, 0);
	return 0;
}

/* ------------------------------------------------------------ requests */

static struct req *pin(struct req *q)
{
	if (q != NULL)
		q->refs++;
	return q;
}

static void unpin(struct rules *r, struct req *q)
{
	if (q != NULL)
		req_put(r, q);
}

static uint64_t next_rid(struct rules *r)
{
	return ++*r->cfg.request_seq;
}

/* The pseudo request of a ctx never seen begin. */
static struct req *unknown_req(struct rules *r, uint64_t ctx)
{
	struct req *q = rules_alloc(r, sizeof(*q));

	if (q == NULL)
		return NULL;
	q->state = REQ_UNKNOWN;
	q->rid = next_rid(r);
	q->root.ctx = ctx;
	q->root.req = q;
	ended_insert(r, ctx, q, q);
	return q;
}

/* q, and t into *truth unless truth is NULL, pinned before anything can
 * drop their last reference. */
static struct req *pin_pair(struct req *q, struct req *t, struct req **truth)
{
	if (truth != NULL)
		*truth = pin(t);
	return pin(q);
}

/*
 * request(ctx), pinned for the judgement; NULL for ctx 0 or when out of
 * memory.  With truth, also the request whose code truly runs under ctx:
 * like request(ctx) but following the cause at each child's BEGIN rather
 * than its prev, so that the model does not depend on the backend.
 */
static struct req *resolve_pair(struct rules *r, uint64_t ctx,
				struct req **truth)
{
	struct scope *s;
	struct ended *e;
	struct req *q = NULL, *t = NULL;

	if (ctx != 0 && (s = scope_find(r, ctx)) != NULL) {
		q = s->req;
		t = scope_truth(s);
	} else if (ctx != 0 && (e = ended_find(r, ctx)) != NULL) {
		q = e->req;
		t = e->truth;
	} else if (ctx != 0) {
		q = t = unknown_req(r, ctx);
	}
	return pin_pair(q, t, truth);
}

static struct req *resolve(struct rules *r, uint64_t ctx)
{
	return resolve_pair(r, ctx, NULL);
}

static struct req_more *more(struct rules *r, struct req *q)
{
	if (q->more == NULL)
		q->more = rules_alloc(r, sizeof(*q->more));
	return q->more;
}

static void done_push(struct rules *r, struct req *q)
{
	if (q->in_done)
		return;
	q->in_done = 1;
	q->next_done = NULL;
	if (r->done_tail != NULL)
		r->done_tail->next_done = q;
	else
		r->done_head = q;
	r->done_tail = q;
}

static struct req *done_pop(struct rules *r)
{
	struct req *q = r->done_head;

	r->done_head = q->next_done;
	if (r->done_head == NULL)
		r->done_tail = NULL;
	q->in_done = 0;
	return q;
}

/* A scope of q stopped being open at ts (END, or reported unclosed). */
static void req_scope_gone(struct rules *r, struct req *q, uint64_t ts)
{
	if (q->state != REQ_LIVE)
		return;
	if (ts > q->last_ts)
		q->last_ts = ts;
	assert(q->nopen > 0); /* the scope that is gone was open */
	if (--q->nopen == 0)
		done_push(r, q);
}

static void fill_scope(struct scope *s, const struct proto_record *rec,
		       struct iname *name, struct req *q)
{
	s->ctx = rec->ctx;
	s->begin_ts = rec->ts;
	s->tid = rec->tid;
	s->site = rec->site;
	s->name = name;
	s->req = q;
}

static void report_unclosed(struct rules *r, struct scope *s,
			    enum rules_unclosed_reason reason);

uint64_t rules_forget_open(struct rules *r, uint64_t n)
{
	uint64_t done = 0;

	for (; done < n && r->oldest != NULL; done++) {
		r->stats.evicted++;
		report_unclosed(r, r->oldest, RULES_UNCLOSED_LIMIT);
	}
	return done;
}

/* Room for one more open scope: the oldest goes when the limit is hit. */
static void make_room(struct rules *r)
{
	if (r->cfg.max_open_scopes != 0 &&
	    r->stats.open_scopes >= r->cfg.max_open_scopes)
		rules_forget_open(r, 1);
}

/* A new request rooted at rec's BEGIN. */
static struct req *req_begin(struct rules *r, const struct proto_record *rec)
{
	struct req *q;

	make_room(r);
	q = rules_alloc(r, sizeof(*q));
	if (q == NULL)
		return NULL;
	fill_scope(&q->root, rec, iname_get(r, rec->name), q);
	q->root.is_root = 1;
	q->rid = next_rid(r);
	q->refs = 1;
	q->nopen = q->nscopes = 1;
	if (scope_open(r, &q->root) == -1) {
		req_put(r, q);
		return NULL;
	}
	r->stats.requests_live++;
	return q;
}

/* A child scope of request q (which may be retired or unknown), begun
 * by the code of request truth. */
static void child_begin(struct rules *r, const struct proto_record *rec,
			struct req *q, struct req *truth)
{
	struct scope *s;

	make_room(r);
	s = scope_alloc(r);
	if (s == NULL)
		return;
	/* Held: a retired or unknown request lives only as long as
	 * something refers to it. */
	fill_scope(s, rec, iname_get(r, rec->name), pin(q));
	s->truth = pin(truth);
	if (scope_open(r, s) == -1) {
		scope_free(r, s);
		return;
	}
	if (q->state == REQ_LIVE) {
		q->nopen++;
		q->nscopes++;
	}
}

/* ------------------------------------------------------------ context */

static void note_thread(struct rules *r, struct req *q, uint64_t tid)
{
	struct req_more *m = q->more;

	if (m == NULL || m->threads == NULL) {
		/* The common case costs nothing: one thread, the root's. */
		if (tid == q->root.tid && q->nthreads <= 1) {
			q->nthreads = 1;
			return;
		}
		m = more(r, q);
		if (m == NULL)
			return;
		m->threads =
		    rules_alloc(r, RULES_MAX_THREADS * sizeof(*m->threads));
		if (m->threads == NULL)
			return;
		if (q->nthreads == 1)
			m->threads[m->nkept++] = q->root.tid;
	}
	for (uint32_t i = 0; i < m->nkept; i++)
		if (m->threads[i] == tid)
			return;
	/* Past RULES_MAX_THREADS each move to a thread not kept counts. */
	if (m->nkept < RULES_MAX_THREADS)
		m->threads[m->nkept++] = tid;
	else if (tid == m->last_unkept)
		return;
	else
		m->last_unkept = tid;
	q->nthreads++;
}

/* The counts of retired q, which the next rules_update delivers. */
static struct req_more *retired_more(struct rules *r, struct req *q)
{
	struct req_more *m = more(r, q);

	if (m != NULL && !q->dirty) {
		q->dirty = 1;
		q->next_done = r->dirty_head;
		r->dirty_head = pin(q);
	}
	return m;
}

/* Where a finding that names q is counted; NULL for a pseudo request. */
static struct req_more *finding_counts(struct rules *r, struct req *q)
{
	if (q->state == REQ_LIVE)
		return more(r, q);
	if (q->state != REQ_RETIRED)
		return NULL;
	if (q->row == ROW_NONE)
		q->row = ROW_DUE;
	return retired_more(r, q);
}

static void note_record(struct rules *r, struct req *q, uint64_t tid, int late)
{
	struct req_more *m;

	if (q == NULL)
		return;
	if (q->state == REQ_LIVE) {
		q->nrecords++;
		note_thread(r, q, tid);
		if (late && (m = more(r, q)) != NULL)
			m->late++;
	} else if (q->state == REQ_RETIRED &&
		   (m = retired_more(r, q)) != NULL) {
		m->records++;
		m->late += (uint32_t)(late != 0);
	}
}

/* A tag's block, key and value each with a NUL, counted against
 * max_held_bytes like held records: a request has at most max_tags tags,
 * but a process may have max_open_scopes requests open, and their tags at
 * the string limit would otherwise be gigabytes. */
static size_t tag_size(uint32_t klen, uint32_t vlen)
{
	return (size_t)klen + vlen + 2;
}

static void tag_release(struct rules *r, struct rtag *t)
{
	if (t->kv != NULL) {
		rules_release(r, t->kv, tag_size(t->klen, t->vlen));
		held_give(r, tag_size(t->klen, t->vlen));
	}
	t->kv = NULL;
}

/* 0 when stored, 1 when over max_held_bytes, -1 when out of memory. */
static int tag_store(struct rules *r, struct rtag *t, struct proto_str key,
		     struct proto_str value)
{
	size_t size = tag_size(key.len, value.len);
	size_t old = t->kv != NULL ? tag_size(t->klen, t->vlen) : 0;
	char *kv;

	if (held_take(r, size, old) == -1)
		return 1;
	if ((kv = rules_alloc(r, size)) == NULL) {
		held_give(r, size);
		return -1;
	}
	memcpy(kv, key.ptr, key.len);
	if (value.ptr != NULL)
		memcpy(kv + key.len + 1, value.ptr, value.len);
	tag_release(r, t);
	t->kv = kv;
	t->klen = key.len;
	t->vlen = value.len;
	t->nil = value.ptr == NULL;
	return 0;
}

/* The tag of that key, or a fresh slot just past the last one. */
static struct rtag *tag_slot(struct rules *r, struct req_more *m,
			     struct proto_str key)
{
	for (uint32_t i = 0; i < m->ntags; i++)
		if (m->tags[i].klen == key.len &&
		    memcmp(m->tags[i].kv, key.ptr, key.len) == 0)
			return &m->tags[i];
	if (m->ntags >= r->cfg.max_tags) {
		m->tags_dropped++;
		return NULL;
	}
	if (m->ntags == m->tags_cap) {
		uint32_t cap = m->tags_cap ? m->tags_cap * 2 : 4;
		struct rtag *tags =
		    rules_grow(r, m->tags, m->tags_cap * sizeof(*tags),
			       cap * sizeof(*tags));

		if (tags == NULL)
			return NULL;
		m->tags = tags;
		m->tags_cap = cap;
	}
	memset(&m->tags[m->ntags], 0, sizeof(m->tags[0]));
	return &m->tags[m->ntags];
}

/* A TAG lands in the context of the request the backend said. */
static void tag_set(struct rules *r, struct req *q, struct req *setter,
		    const struct proto_record *rec)
{
	struct req_more *m;
	struct rtag *t;
	int rc;

	if (q == NULL || q->state != REQ_LIVE || rec->key.ptr == NULL)
		return;
	m = more(r, q);
	if (m == NULL || (t = tag_slot(r, m, rec->key)) == NULL)
		return;
	if ((rc = tag_store(r, t, rec->key, rec->value)) != 0) {
		m->tags_dropped += rc == 1;
		return;
	}
	if (t == &m->tags[m->ntags])
		m->ntags++;
	t->ts = rec->ts;
	t->tid = rec->tid;
	t->site = rec->site;
	t->setter_rid = setter ? setter->rid : 0;
	t->setter_ctx = setter ? setter->root.ctx : 0;
}

/* ------------------------------------------------------------ findings */

static void name_req(const struct req *q, uint64_t *rid, uint64_t *ctx,
		     struct proto_str *name)
{
	*rid = q ? q->rid : 0;
	*ctx = q ? q->root.ctx : 0;
	*name = q ? iname_str(q->root.name) : (struct proto_str){NULL, 0};
}

static void report(struct rules *r, enum leak_class leak,
		   const struct proto_record *rec, struct req *victim,
		   struct req *source, enum rules_unclosed_reason reason,
		   const struct misnest_info *mn)
{
	struct rules_finding f;
	struct req_more *m;

	memset(&f, 0, sizeof(f));
	f.leak = leak;
	f.rec = rec;
	f.reason = reason;
	name_req(victim, &f.victim_rid, &f.victim_ctx, &f.victim_name);
	name_req(source, &f.source_rid, &f.source_ctx, &f.source_name);
	f.detail = detail_finding(r, &f, victim, source, mn);
	r->stats.findings[leak]++;
	if (victim != NULL && (m = finding_counts(r, victim)) != NULL)
		m->victim_of[leak]++;
	if (source != NULL && (m = finding_counts(r, source)) != NULL)
		m->source_of++;
	if (r->sink.finding != NULL)
		r->sink.finding(r->sink.arg, &f);
}

static void report_unclosed(struct rules *r, struct scope *s,
			    enum rules_unclosed_reason reason)
{
	struct req *q = pin(s->req);
	struct proto_record rec;

	memset(&rec, 0, sizeof(rec));
	rec.type = PROTO_BEGIN;
	rec.ts = s->begin_ts;
	rec.tid = s->tid;
	rec.ctx = s->ctx;
	rec.site = s->site;
	rec.kind = s->is_root ? PROTO_KIND_REQUEST : PROTO_KIND_CHILD;
	rec.name = iname_str(s->name);
	report(r, LEAK_UNCLOSED, &rec, q, NULL, reason, NULL);
	scope_close(r, s);
	ended_insert(r, s->ctx, q, scope_truth(s));
	if (!s->is_root)
		scope_free(r, s);
	req_scope_gone(r, q, 0);
	unpin(r, q);
}

/* ------------------------------------------------------------ judging */

/* The lost / stale / bleed rules of TAG, EVENT and child BEGIN. */
static void judge_work(const struct proto_record *rec, uint64_t c,
		       struct judgement *j)
{
	if (rec->cause != 0 && c == 0) {
		j->leak = LEAK_LOST;
	} else if (c != 0 && j->said != NULL && j->said->ended &&
		   j->said->end_ts < rec->ts) {
		/* Work a request left running under its own context: the
		 * storage is right, the request merely over. */
		if (j->said == j->owner) {
			j->late = 1;
			return;
		}
		j->leak = LEAK_STALE;
	} else if (c != 0 && j->said != j->owner)
		j->leak = LEAK_BLEED;
	else
		return;
	j->victim = pin(j->owner);
	if (j->leak != LEAK_LOST)
		j->source = pin(j->said);
}

static void judge_request_begin(struct rules *r, const struct proto_record *rec,
				struct judgement *j)
{
	j->owner = pin(req_begin(r, rec));
	j->truth = pin(j->owner);
	if (j->owner != NULL)
		r->model_requests++;
	if (rec->prev == 0 || j->owner == NULL || j->said == NULL)
		return;
	if (j->said->ended && j->said->end_ts < rec->ts)
		j->leak = LEAK_STALE;
	else
		j->leak = LEAK_OVERLAP;
	j->victim = pin(j->owner);
	j->source = pin(j->said);
}

static void judge_begin(struct rules *r, const struct proto_record *rec,
			struct judgement *j)
{
	int opens = rec->ctx != 0 && scope_find(r, rec->ctx) == NULL;
	struct req *q;

	j->said = resolve(r, rec->prev);
	if (opens && rec->kind == PROTO_KIND_REQUEST) {
		judge_request_begin(r, rec, j);
		return;
	}
	j->owner = resolve_pair(r, rec->cause, &j->truth);
	if (rec->kind == PROTO_KIND_CHILD)
		judge_work(rec, rec->prev, j);
	if (!opens)
		return;
	if (rec->prev != 0) {
		if (j->said != NULL)
			child_begin(r, rec, j->said, j->truth);
		return;
	}
	/* A child begun with nothing current is a request of its own; it
	 * is also the true owner of its BEGIN when nothing was. */
	q = req_begin(r, rec);
	if (q == NULL)
		return;
	if (j->owner == NULL) {
		j->owner = pin(q);
		j->truth = pin(q);
		r->model_requests++;
	} else {
		/* In truth it is part of the request whose code began it. */
		q->root.truth = pin(j->truth);
	}
}

/*
 * Whether END(x) of request q is misnest by its cur.  An observed storage
 * is the service's own, set and cleared in its own order: holding nothing
 * (cleared before the END), or a scope of x's own request (a storage that
 * names requests, not their child scopes, or one that put the parent back
 * before the child's END) is no misnest; another request, live or ended,
 * is (docs/DESIGN.md 2.2).  A library-kept storage must hold x itself.
 */
static int end_cur_misnest(struct rules *r, const struct proto_record *rec,
			   struct req *q)
{
	struct req *held;
	int other;

	if (rec->cur == rec->ctx)
		return 0;
	if (!r->cfg.observe)
		return 1;
	if (rec->cur == 0)
		return 0;
	held = resolve(r, rec->cur);
	other = held != q;
	unpin(r, held);
	return other;
}

static void judge_end(struct rules *r, const struct proto_record *rec,
		      struct judgement *j)
{
	struct scope *s = scope_find(r, rec->ctx);
	struct ended *e = s ? NULL : ended_find(r, rec->ctx);
	struct req *q, *by;

	j->mn.scope_name = (struct proto_str){NULL, 0};
	if (s == NULL) {
		j->mn.why = e && e->req->state != REQ_UNKNOWN ? MISNEST_ENDED
							      : MISNEST_UNKNOWN;
		j->owner = resolve(r, rec->ctx);
		j->said = pin(j->owner);
		j->leak = LEAK_MISNEST;
		by = resolve_pair(r, rec->cause, &j->truth);
		/* The victim of an END is its scope's request; one never
		 * begun has none, and the code that ended it stands in. */
		if (j->mn.why == MISNEST_ENDED) {
			j->victim = pin(j->owner);
			unpin(r, by);
		} else {
			j->victim = by;
		}
		return;
	}
	q = s->req;
	j->owner = pin(q);
	j->said = pin(q);
	j->mn.scope_name = iname_str(s->name);
	j->mn.begin_tid = s->tid;
	/* request(t): most ENDs run under the scope they end, found once. */
	by = rec->cause == rec->ctx ? pin_pair(q, scope_truth(s), &j->truth)
				    : resolve_pair(r, rec->cause, &j->truth);
	if (end_cur_misnest(r, rec, q))
		j->mn.why = MISNEST_CUR;
	else if (rec->tid != s->tid && by != q)
		j->mn.why = MISNEST_THREAD;
	unpin(r, by);
	if (j->mn.why != 0) {
		j->leak = LEAK_MISNEST;
		j->victim = pin(q);
	}
	scope_close(r, s);
	if (s->is_root && !q->ended) {
		q->ended = 1;
		q->end_ts = rec->ts;
	}
	ended_insert(r, s->ctx, q, scope_truth(s));
	req_scope_gone(r, q, rec->ts);
	/* The name outlives the scope: the detail is written later. */
	if (!s->is_root) {
		j->mn.scope_name = (struct proto_str){NULL, 0};
		if (j->leak != LEAK_NONE && s->name != NULL) {
			j->name_ref = s->name;
			s->name = NULL;
			j->mn.scope_name = iname_str(j->name_ref);
		}
		scope_free(r, s);
	}
}

/* Room for one more held record: doubling, then by an eighth, so that a
 * request with many records wastes little. */
static struct hrec *held_slot(struct rules *r, struct req_more *m)
{
	if (m->nheld == m->held_cap) {
		uint32_t cap = m->held_cap < 1024
				   ? (m->held_cap ? m->held_cap * 2 : 8)
				   : m->held_cap + m->held_cap / 8;
		struct hrec *held =
		    rules_grow(r, m->held, m->held_cap * sizeof(*held),
			       cap * sizeof(*held));

		if (held == NULL)
			return NULL;
		m->held = held;
		m->held_cap = cap;
	}
	return &m->held[m->nheld++];
}

/* What holding rec costs, counted against max_held_bytes: the slot and
 * its strings.  0 when it may be held, and then it is counted. */
static int over_held_limit(struct rules *r, struct req_more *m,
			   const struct proto_record *rec)
{
	uint64_t cost = sizeof(struct hrec) + 2;

	cost += rec->type == PROTO_TAG
		    ? (uint64_t)rec->key.len + rec->value.len
		    : (uint64_t)rec->name.len + rec->message.len;
	if (held_take(r, cost, 0) == -1)
		return 1;
	m->held_bytes += cost;
	return 0;
}

static void hold(struct rules *r, struct req *q, const struct proto_record *rec,
		 const struct rules_verdict *v)
{
	struct req_more *m;
	struct hrec *h;

	if (rec->type == PROTO_BEGIN && rec->kind == PROTO_KIND_REQUEST &&
	    rec->ctx == q->root.ctx && rec->cause == 0 && rec->prev == 0 &&
	    v->leak == LEAK_NONE && !q->begin_held && q->nrecords == 1) {
		q->begin_held = 1;
		return;
	}
	m = more(r, q);
	if (m == NULL)
		return;
	if (over_held_limit(r, m, rec)) {
		m->held_dropped++;
		r->stats.held_dropped++;
		return;
	}
	if ((h = held_slot(r, m)) == NULL)
		return;
	/* Out of memory for the strings: the record is held without them. */
	compact_record(h, rec,
		       arena_alloc(r, &m->strings, compact_strings_size(rec)));
	h->rid_ctx = v->rid_ctx;
	h->leak = (uint8_t)v->leak;
	if (v->late)
		h->flags |= HREC_LATE;
}

static void deliver(struct rules *r, const struct proto_record *rec,
		    const struct judgement *j)
{
	struct rules_verdict v = {.rec = rec, .leak = j->leak};

	v.rid = j->owner ? j->owner->rid : 0;
	v.rid_ctx = j->said ? j->said->rid : 0;
	v.late = (uint8_t)j->late;
	if (!r->cfg.hold_records || j->owner == NULL) {
		if (r->sink.verdict != NULL)
			r->sink.verdict(r->sink.arg, &v);
		return;
	}
	if (j->owner->state == REQ_LIVE) {
		hold(r, j->owner, rec, &v);
		return;
	}
	/* Judged after its request retired: kept if the request has a
	 * row, as its held records were. */
	v.keep = j->owner->state == REQ_RETIRED && j->owner->row != ROW_NONE;
	if (r->sink.verdict != NULL)
		r->sink.verdict(r->sink.arg, &v);
}

static void judge(struct rules *r, struct pnode *n)
{
	struct proto_record record;
	const struct proto_record *rec = &record;
	struct judgement j;

	rebuild_record(&record, &n->h);
	memset(&j, 0, sizeof(j));
	switch (rec->type) {
	case PROTO_BEGIN:
		judge_begin(r, rec, &j);
		break;
	case PROTO_END:
		judge_end(r, rec, &j);
		break;
	default:
		j.owner = resolve_pair(r, rec->cause, &j.truth);
		/* Most records are written under the request that runs them:
		 * one lookup then. */
		j.said = rec->ctx == rec->cause ? pin(j.owner)
						: resolve(r, rec->ctx);
		if (rec->type == PROTO_TAG || rec->type == PROTO_EVENT)
			judge_work(rec, rec->ctx, &j);
		if (rec->type == PROTO_TAG)
			tag_set(r, j.said, j.owner, rec);
		break;
	}
	note_record(r, j.owner, rec->tid, j.late);
	r->stats.late += (uint64_t)j.late;
	if (j.truth != NULL && j.truth->state == REQ_LIVE)
		model_note(r, j.truth, rec->tid);
	else if (j.truth != NULL && j.truth->state == REQ_RETIRED)
		model_note_late(r, j.truth, rec->tid);
	if (j.leak != LEAK_NONE)
		report(r, j.leak, rec, j.victim, j.source,
		       (enum rules_unclosed_reason)0, &j.mn);
	deliver(r, rec, &j);
	if (r->on_judged != NULL)
		r->on_judged(r->on_judged_arg, rec);
	unpin(r, j.owner);
	unpin(r, j.truth);
	unpin(r, j.said);
	unpin(r, j.victim);
	unpin(r, j.source);
	iname_put(r, j.name_ref);
	r->stats.judged++;
	pnode_free(r, n);
}

/* ------------------------------------------------------------ retiring */

/* The verdicts held for q into v (and their records into recs), its
 * rebuilt BEGIN first. */
static void held_verdicts(const struct req *q, struct rules_verdict *v,
			  struct proto_record *recs)
{
	const struct req_more *m = q->more;
	size_t k = 0;

	if (q->begin_held) {
		memset(&recs[0], 0, sizeof(recs[0]));
		recs[0].type = PROTO_BEGIN;
		recs[0].ts = q->root.begin_ts;
		recs[0].tid = q->root.tid;
		recs[0].ctx = q->root.ctx;
		recs[0].site = q->root.site;
		recs[0].name = iname_str(q->root.name);
		v[k++] = (struct rules_verdict){.rec = &recs[0], .rid = q->rid};
	}
	for (size_t i = 0; m != NULL && i < m->nheld; i++, k++) {
		rebuild_record(&recs[k], &m->held[i]);
		v[k] = (struct rules_verdict){
		    .rec = &recs[k],
		    .rid = q->rid,
		    .rid_ctx = m->held[i].rid_ctx,
		    .leak = m->held[i].leak,
		    .late = (m->held[i].flags & HREC_LATE) != 0,
		};
	}
}

static void final_tags(const struct req_more *m, struct rules_tag *tags)
{
	for (uint32_t i = 0; i < m->ntags; i++) {
		const struct rtag *t = &m->tags[i];

		tags[i].key = (struct proto_str){t->kv, t->klen};
		tags[i].value = (struct proto_str){
		    t->nil ? NULL : t->kv + t->klen + 1, t->vlen};
		tags[i].ts = t->ts;
		tags[i].tid = t->tid;
		tags[i].site = t->site;
		tags[i].setter_rid = t->setter_rid;
		tags[i].setter_ctx = t->setter_ctx;
	}
}

/* Memory for what a retiring request delivers, reused from one request
 * to the next while it stays under SCRATCH_KEEP bytes. */
#define SCRATCH_KEEP (256 * 1024)

static void *scratch(struct rules *r, size_t size)
{
	if (size > r->scratch_cap) {
		void *p = realloc(r->scratch, size);

		if (p == NULL)
			return NULL;
		rules_mem_add(r, size - r->scratch_cap);
		r->scratch = p;
		r->scratch_cap = size;
	}
	return r->scratch;
}

static void more_free(struct rules *r, struct req *q)
{
	struct req_more *m = q->more;

	if (m == NULL)
		return;
	for (uint32_t i = 0; i < m->ntags; i++)
		tag_release(r, &m->tags[i]);
	rules_release(r, m->tags, m->tags_cap * sizeof(*m->tags));
	rules_release(r, m->threads, RULES_MAX_THREADS * sizeof(*m->threads));
	rules_release(r, m->held, m->held_cap * sizeof(*m->held));
	held_give(r, m->held_bytes);
	arena_free(r, &m->strings);
	rules_release(r, m, sizeof(*m));
	q->more = NULL;
}

int rules_request_involved(const struct rules_request *rq)
{
	for (int c = LEAK_NONE + 1; c < LEAK_CLASS_COUNT; c++)
		if (rq->victim_of[c] != 0)
			return 1;
	return rq->source_of != 0;
}

static void retire(struct rules *r, struct req *q)
{
	struct rules_request rq;
	struct req_more *m = q->more;
	size_t ntags = m ? m->ntags : 0;
	size_t nheld =
	    r->cfg.hold_records ? (m ? m->nheld : 0) + q->begin_held : 0;
	struct rules_tag *tags = scratch(
	    r, ntags * sizeof(*tags) +
		   nheld * (sizeof(*rq.held) + sizeof(struct proto_record)));

	/* A request retires when it has no open scope, once. */
	assert(q->state == REQ_LIVE && q->nopen == 0);
	assert(r->stats.requests_live > 0);

	memset(&rq, 0, sizeof(rq));
	rq.rid = q->rid;
	rq.ctx = q->root.ctx;
	rq.name = iname_str(q->root.name);
	rq.site = q->root.site;
	rq.begin_ts = q->root.begin_ts;
	rq.end_ts = q->ended ? q->end_ts : 0;
	rq.begin_tid = q->root.tid;
	rq.nthreads = q->nthreads;
	rq.threads = m && m->threads ? m->threads : &q->root.tid;
	rq.nscopes = q->nscopes;
	rq.nrecords = q->nrecords;
	if (m != NULL) {
		rq.tags_dropped = m->tags_dropped;
		rq.held_dropped = m->held_dropped;
		memcpy(rq.victim_of, m->victim_of, sizeof(rq.victim_of));
		rq.source_of = m->source_of;
		rq.late = m->late;
	}
	/* Out of memory, the tags and records are not delivered (nheld
	 * still counts the records). */
	if (tags != NULL && ntags > 0) {
		final_tags(m, tags);
		rq.ntags = (uint32_t)ntags;
		rq.tags = tags;
	}
	rq.nheld = nheld;
	/* A clean request's records are of no use to anyone (they are held
	 * for the requests a finding involves), and rebuilding them was a
	 * tenth of the daemon's time under --keep=leaky. */
	if (tags != NULL && nheld > 0 && rules_request_involved(&rq)) {
		struct rules_verdict *v =
		    (struct rules_verdict *)(tags + ntags);

		held_verdicts(q, v, (struct proto_record *)(v + nheld));
		rq.held = v;
	}
	if (r->sink.request != NULL)
		r->sink.request(r->sink.arg, &rq);
	if (r->scratch_cap > SCRATCH_KEEP) { /* after a huge request */
		rules_mem_sub(r, r->scratch_cap);
		free(r->scratch);
		r->scratch = NULL;
		r->scratch_cap = 0;
	}
	more_free(r, q);
	q->state = REQ_RETIRED;
	if (!r->cfg.hold_records || rules_request_involved(&rq)) {
		q->row = ROW_DONE;
	} else {
		/* What a finding that names it later takes back. */
		q->row = ROW_NONE;
		q->counted.tags = rq.ntags;
		q->counted.late = (uint32_t)rq.late;
	}
	r->stats.requests_live--;
	req_put(r, q);
}

/* A retired request as the counts of clean ones hold it: what is left of
 * it once its tags, threads and records are gone. */
static void counted_request(const struct req *q, struct rules_request *rq)
{
	memset(rq, 0, sizeof(*rq));
	rq->rid = q->rid;
	rq->ctx = q->root.ctx;
	rq->name = iname_str(q->root.name);
	rq->site = q->root.site;
	rq->begin_ts = q->root.begin_ts;
	rq->end_ts = q->ended ? q->end_ts : 0;
	rq->begin_tid = q->root.tid;
	rq->nthreads = q->nthreads;
	rq->threads = &q->root.tid; /* the one thread still known */
	rq->nscopes = q->nscopes;
	rq->nrecords = q->nrecords;
	rq->late = q->counted.late;
	rq->ntags = q->counted.tags;
}

/* Deliver what was judged about retired q since its last update. */
static void update(struct rules *r, struct req *q, const struct req_more *m)
{
	struct rules_update u;
	struct rules_request counted, row;

	memset(&u, 0, sizeof(u));
	u.rid = q->rid;
	memcpy(u.victim_of, m->victim_of, sizeof(u.victim_of));
	u.source_of = m->source_of;
	u.records = m->records;
	u.late = m->late;
	if (q->row != ROW_DONE) {
		counted_request(q, &counted);
		u.counted = &counted;
	}
	if (q->row == ROW_DUE) {
		row = counted;
		row.ntags = 0;
		row.nthreads = 1;
		row.nrecords += m->records;
		row.late += m->late;
		memcpy(row.victim_of, m->victim_of, sizeof(row.victim_of));
		row.source_of = m->source_of;
		u.row = &row;
		q->row = ROW_DONE;
	} else if (q->row == ROW_NONE) {
		/* Still clean: its counts take these in. */
		q->nrecords += m->records;
		q->counted.late += m->late;
	}
	r->stats.updates++;
	if (r->sink.update != NULL)
		r->sink.update(r->sink.arg, &u);
}

/* The updates of the retired requests judged about (send 0: dropped,
 * when the engine is freed). */
static void flush_updates(struct rules *r, int send)
{
	while (r->dirty_head != NULL) {
		struct req *q = r->dirty_head;

		r->dirty_head = q->next_done;
		if (send)
			update(r, q, q->more);
		q->dirty = 0;
		more_free(r, q);
		req_put(r, q);
	}
}

/* Retire the complete requests whose last END is at or below watermark
 * (all of them when finishing), then update the retired ones judged
 * about: after their rows. */
static void retire_done(struct rules *r, uint64_t watermark, int all)
{
	while (r->done_head != NULL) {
		struct req *q = r->done_head;

		if (q->nopen > 0) { /* a child reopened it */
			done_pop(r);
			continue;
		}
		if (!all && q->last_ts > watermark)
			break;
		retire(r, done_pop(r));
	}
	flush_updates(r, 1);
}

static void expire_old(struct rules *r, uint64_t watermark)
{
	uint64_t age = r->cfg.max_request_age;

	while (age != 0 && r->oldest != NULL &&
	       watermark > r->oldest->begin_ts &&
	       watermark - r->oldest->begin_ts > age)
		report_unclosed(r, r->oldest, RULES_UNCLOSED_AGE);
}

void rules_advance(struct rules *r, uint64_t watermark)
{
	const struct pending *next;

	while ((next = pending_next(r)) != NULL && next->ts <= watermark)
		judge(r, pending_pop(r));
	expire_old(r, watermark);
	retire_done(r, watermark, 0);
}

void rules_finish(struct rules *r)
{
	while (r->npending > 0)
		judge(r, pending_pop(r));
	while (r->oldest != NULL)
		report_unclosed(r, r->oldest, RULES_UNCLOSED_DISCONNECT);
	retire_done(r, 0, 1);
}

uint64_t rules_held_since(const struct rules *r)
{
	uint64_t since = UINT64_MAX;
	const struct scope *s;
	const struct req *q;

	if (!r->cfg.hold_records)
		return since;
	/* A live request has an open scope, or waits on the done queue. */
	for (s = r->oldest; s != NULL; s = s->newer)
		if (s->req != NULL && s->req->state == REQ_LIVE &&
		    s->req->root.begin_ts < since)
			since = s->req->root.begin_ts;
	for (q = r->done_head; q != NULL; q = q->next_done)
		if (q->state == REQ_LIVE && q->root.begin_ts < since)
			since = q->root.begin_ts;
	return since;
}

void rules_stats(const struct rules *r, struct rules_stats *out)
{
	*out = r->stats;
}

void rules_free(struct rules *r)
{
	struct scope *s;

	if (r == NULL)
		return;
	flush_updates(r, 0);
	while (r->npending > 0)
		pnode_free(r, pending_pop(r));
	free(r->heap);
	free(r->run);
	/* Every live request has an open scope or is on the done queue. */
	while ((s = r->oldest) != NULL) {
		struct req *q = s->req;

		scope_close(r, s);
		if (q->state == REQ_LIVE)
			done_push(r, q);
		if (!s->is_root)
			scope_free(r, s);
	}
	while (r->done_head != NULL) {
		struct req *q = done_pop(r);

		more_free(r, q);
		q->state = REQ_RETIRED;
		req_put(r, q);
	}
	free(r->scratch);
	ended_free(r);
	ptab_free(r, &r->open);
	scopes_free_slabs(r);
	inames_free(r);
	model_free(r);
	rules_cache_free(r);
	free(r);
}
