/*
 * rules_int.h: the private structures of the rules engine, shared by
 * rules.c (judging, reassembly, retirement), rules_scope.c (the scope and
 * ended tables, interned names, arenas), rules_detail.c (the human line of
 * each finding) and rules_model.c (concurrency-model inference).  Nothing
 * outside daemon/rules*.c includes it.
 *
 * Memory is laid out for 100k open scopes in under 200 bytes each: a child
 * scope is a 64-byte slab slot plus one pointer slot of the hash table; a
 * root scope is embedded in its request, which keeps everything that is
 * not needed by a quiet request (tags, extra threads, finding counts, held
 * records) in a separately allocated `more` part.
 */
#ifndef CTXLEAKD_RULES_INT_H
#define CTXLEAKD_RULES_INT_H

#include <stddef.h>
#include <stdint.h>

#include "rules.h"

/* A scope name, shared by every scope of the same name in a process. */
struct iname {
	struct iname *next; /* hash chain */
	uint32_t refs;
	uint32_t len;
	uint32_t hash;
	char s[];
};

/*
 * A scope.  Every structure kept in a struct ptab starts with its ctx:
 * the tables store pointers and read the key through them.
 */
struct scope {
	uint64_t ctx;
	uint64_t begin_ts;
	uint64_t tid;
	struct iname *name;
	struct req *req;   /* request(ctx), fixed at BEGIN; children hold
			      it */
	struct req *truth; /* held: the request whose code began it, for
			      the model; NULL for a child of no request's
			      code, and for a root that is its own */
	struct scope *older, *newer; /* open scopes in judging order */
	uint32_t site;
	uint8_t is_root; /* embedded in its request */
};

/* An open-addressing hash of pointers to structs that start with a ctx
 * (rules_scope.c says how it is laid out). */
struct ptab {
	uint64_t **slot;
	uint32_t *hash; /* each slot's hash, in the same allocation */
	uint64_t seed;	/* rules_config.hash_seed */
	uint32_t bits;	/* capacity is 1 << bits (0: no array yet) */
	uint32_t count;
	uint32_t load; /* eighths full before it grows */
};
#define PTAB_DENSE  7 /* searched mostly for keys it holds */
#define PTAB_SPARSE 4 /* searched mostly for keys it lacks */

/* Bump allocation for a request's held strings, freed all at once. */
struct arena {
	struct arena_chunk *head;
};

enum req_state {
	REQ_LIVE = 0, /* begun, not yet retired: its context is rebuilt */
	REQ_RETIRED,  /* delivered; kept while ended entries refer to it */
	REQ_UNKNOWN,  /* pseudo request of a ctx never seen begin */
};

/* A record kept compactly: queued until judged (rules.c's struct pnode),
 * or held for its request under hold_records. */
struct hrec {
	uint64_t ts, tid, ctx, cause;
	uint64_t other; /* BEGIN: prev; END: cur */
	uint64_t rid_ctx;
	const char *s; /* name or key, then value or message, each with a
			  NUL, in the request's arena */
	uint32_t l1, l2;
	uint32_t site;
	uint8_t type, kind, leak;
	uint8_t flags; /* HREC_NIL1, HREC_NIL2, HREC_LATE */
};
#define HREC_NIL1 1 /* the first string is nil */
#define HREC_NIL2 2 /* the second string is nil */
#define HREC_LATE 4 /* late work (rules_verdict.late) */

struct rtag {
	char *kv; /* key, NUL, value, NUL */
	uint32_t klen, vlen;
	uint8_t nil; /* the value is nil */
	uint64_t ts, tid;
	uint32_t site;
	uint64_t setter_rid, setter_ctx;
};

/* What a request needs only once it does more than begin. */
struct req_more {
	uint32_t victim_of[LEAK_CLASS_COUNT];
	uint32_t source_of;
	uint32_t ntags, tags_cap, tags_dropped;
	struct rtag *tags;
	uint64_t *threads; /* RULES_MAX_THREADS of them, once a second
			      thread (or a first that is not the root's)
			      ran its code */
	uint32_t nkept;
	/* LIVE: its records of late work.  RETIRED, like victim_of and
	 * source_of: those judged since its last rules_update, which
	 * `records` counts too.  Each fills a hole the alignment left. */
	uint32_t late;
	uint64_t last_unkept; /* past RULES_MAX_THREADS */
	uint32_t nheld, held_cap, held_dropped;
	uint32_t records;
	uint64_t held_bytes; /* counted against max_held_bytes */
	struct hrec *held;
	struct arena strings;
};

struct req {
	struct scope root; /* first: a req is found through its root ctx */
	uint64_t rid;
	uint64_t end_ts;   /* first END of the root; 0 while open */
	uint64_t last_ts;  /* latest END of any of its scopes */
	uint64_t nrecords; /* frozen when it retires (req_more.records) */
	union {
		uint64_t last_tid; /* LIVE: thread of its latest record
				      (model) */
		struct {
			uint32_t tags, late;
		} counted; /* RETIRED with no row: what the counts of
			      clean requests hold of it besides nrecords */
	};
	struct req_more *more;
	struct req *next_done; /* LIVE: the queue of requests with no open
				  scope; RETIRED: the list of those to
				  update (rules.c's dirty_head) */
	uint32_t nopen, nscopes;
	uint32_t refs; /* 1 while LIVE, one per ended-table entry, one
			  per judgement in progress that uses it */
	uint32_t nthreads;
	uint8_t state;	    /* enum req_state */
	uint8_t ended;	    /* the root has ended */
	uint8_t in_done;    /* on the done queue */
	uint8_t begin_held; /* its BEGIN (cause 0, prev 0, no finding) is
			       rebuilt on retirement, not stored */
	uint8_t interleaved, handed_off;
	uint8_t row;   /* enum req_row, once RETIRED */
	uint8_t dirty; /* RETIRED, on the list of those to update */
};

/* Whether a retired request has a row (rules_update says why it may get
 * one late). */
enum req_row {
	ROW_NONE = 0, /* retired clean under hold_records: only counted */
	ROW_DUE,      /* a finding named it since: its row goes with the
			 next update */
	ROW_DONE,     /* delivered with it when it retired, or since */
};

/* The ended table: ctx -> request, for stale and for misnest of a second
 * END.  A ring gives the eviction order. */
struct ended {
	uint64_t ctx;
	struct req *req;
	struct req *truth; /* scope_truth() when it ended */
};

/* A thread, for the model: which request's code ran on it last. */
struct model_thread {
	uint64_t tid;
	uint64_t last_rid;
	uint64_t interleaved; /* requests found interleaved on it */
};

struct pnode; /* a queued record (rules.c) */

/* Size classes of the block cache: malloc's own chunk sizes, 24, 40, ...
 * up to 1016 bytes, so that rounding up to a class costs no memory. */
#define RULES_CACHE_CLASSES 64

struct pending {
	uint64_t ts, seq;
	struct pnode *n;
};

struct rules {
	struct rules_config cfg;
	struct rules_sink sink;
	void (*on_judged)(void *arg, const struct proto_record *rec);
	void *on_judged_arg; /* rules_on_judged's */

	/* pending records, in (ts, arrival) order: those that arrive in
	 * that order wait in a FIFO ring (the run), the others in a 4-ary
	 * min-heap, and judging takes the earlier of the two heads */
	struct pending *heap;
	size_t npending, nheap, heap_cap;
	struct pending *run;
	size_t run_head, nrun, run_cap; /* run_cap: a power of 2 */
	uint64_t seq;

	/* open scopes */
	struct ptab open;
	struct scope *oldest, *newest;
	struct scope *free_scopes; /* slab free list, through ->newer */
	void **slabs;
	size_t nslabs;

	/* ended scopes and unknown requests */
	struct ptab ended_tab;
	struct ended *ring;
	uint32_t ring_cap, ring_head, ring_count;

	/* interned names */
	struct iname **names;
	uint32_t names_bits, nnames;

	struct req *done_head, *done_tail;
	struct req *dirty_head; /* retired requests to update, pinned */

	/* model inference */
	struct ptab threads; /* of struct model_thread */
	uint64_t model_requests, model_interleaved, model_handed_off;

	/* freed small blocks by size class, for reuse (rules_scope.c) */
	void *cache[RULES_CACHE_CLASSES];
	size_t cache_bytes;

	uint64_t own_seq;     /* when the config gives no request_seq */
	uint64_t own_held;    /* when the config gives no held_bytes */
	uint64_t own_pending; /* when the config gives no pending_bytes */
	uint64_t own_open;    /* when the config gives no open_scopes_total */
	uint64_t own_ended;   /* ... nor ended_scopes_total */
	void *scratch;	      /* see scratch() in rules.c */
	size_t scratch_cap;
	struct rules_stats stats;
	char detail[512];
};

/* Bytes the engine allocated and still holds, for stats.bytes_used. */
void rules_mem_add(struct rules *r, size_t n);
void rules_mem_sub(struct rules *r, size_t n);
/* What requests hold (names, tags, held records) against max_held_bytes,
 * counted daemon-wide in *held_bytes: held_take counts n and returns 0,
 * or -1 when n more, less `freeing` about to be given back, would pass the
 * limit.  Inline: held_take is on the path of every held record. */
static inline int held_take(struct rules *r, uint64_t n, uint64_t freeing)
{
	if (r->cfg.max_held_bytes != 0 &&
	    *r->cfg.held_bytes - freeing + n > r->cfg.max_held_bytes)
		return -1;
	*r->cfg.held_bytes += n;
	return 0;
}

static inline void held_give(struct rules *r, uint64_t n)
{
	*r->cfg.held_bytes -= n;
}
void *rules_alloc(struct rules *r, size_t n);	  /* zeroed; NULL: no memory */
void *rules_alloc_raw(struct rules *r, size_t n); /* not zeroed */
/* p's n bytes moved to a new block of size m (> n); p released. */
void *rules_grow(struct rules *r, void *p, size_t n, size_t m);
void rules_release(struct rules *r, void *p, size_t n); /* n as allocated */
void rules_cache_free(struct rules *r);

/* rules_scope.c */
uint64_t **ptab_find(const struct ptab *t, uint64_t ctx);
int ptab_insert(struct rules *r, struct ptab *t, uint64_t *entry);
void ptab_remove(struct ptab *t, uint64_t ctx);
void ptab_free(struct rules *r, struct ptab *t);

struct scope *scope_alloc(struct rules *r);
void scope_free(struct rules *r, struct scope *s);
void scopes_free_slabs(struct rules *r);
int scope_open(struct rules *r, struct scope *s);
void scope_close(struct rules *r, struct scope *s);
struct scope *scope_find(const struct rules *r, uint64_t ctx);
struct req *scope_truth(const struct scope *s);

struct iname *iname_get(struct rules *r, struct proto_str s);
void iname_put(struct rules *r, struct iname *n);
void inames_free(struct rules *r);
struct proto_str iname_str(const struct iname *n);

struct ended *ended_find(const struct rules *r, uint64_t ctx);
int ended_insert(struct rules *r, uint64_t ctx, struct req *q,
		 struct req *truth);
void ended_free(struct rules *r);

char *arena_alloc(struct rules *r, struct arena *a, size_t size);
void arena_free(struct rules *r, struct arena *a);

void req_put(struct rules *r, struct req *q);

/* Why an END is misnest, for its detail line. */
enum misnest_why {
	MISNEST_CUR = 1, /* cur != x */
	MISNEST_THREAD,	 /* another thread, another request's code */
	MISNEST_ENDED,	 /* x already ended */
	MISNEST_UNKNOWN, /* x never begun (or forgotten) */
};

struct misnest_info {
	enum misnest_why why;
	struct proto_str scope_name;
	uint64_t begin_tid;
};

/* rules_detail.c: fills r->detail; mn only for misnest */
const char *detail_finding(struct rules *r, const struct rules_finding *f,
			   const struct req *victim, const struct req *source,
			   const struct misnest_info *mn);

/* rules_model.c */
void model_note(struct rules *r, struct req *q, uint64_t tid);
/* A record of retired q: work it left running, maybe on another thread. */
void model_note_late(struct rules *r, struct req *q, uint64_t tid);
void model_free(struct rules *r);

#endif /* CTXLEAKD_RULES_INT_H */
