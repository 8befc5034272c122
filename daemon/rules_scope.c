/*
 * rules_scope.c: the rules engine's memory: the open-scope table (an
 * open-addressing hash of pointers keyed by ctx, a slab of compact scope
 * structs, and a list in judging order for age and limit eviction), the
 * bounded table of ended scopes, interned scope names, the per-request
 * string arenas, and the block cache under all of them.  Every byte
 * allocated here is counted in stats.bytes_used.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "rules_int.h"

#define PTAB_MIN_BITS 4
#define SLAB_SCOPES   1024
#define ARENA_MIN     64
#define ARENA_MAX     (64 * 1024)

void rules_mem_add(struct rules *r, size_t n)
{
	r->stats.bytes_used += n;
}

void rules_mem_sub(struct rules *r, size_t n)
{
	assert(r->stats.bytes_used >= n); /* given back what was added */
	r->stats.bytes_used -= n;
}

/*
 * The block cache.  Nearly everything a request allocates (the request,
 * its tags, held records and string arena, each queued record) is freed
 * when it retires and allocated again, the same sizes, for the requests
 * that follow: freed blocks of up to 1016 bytes wait on a free list per
 * size class for the next allocation of that class, so that in the steady
 * state judging and retiring call malloc and free not at all.  A class is
 * one of malloc's chunk sizes (16k + 8 usable bytes), so a block takes
 * the memory it took before, and bytes_used counts the class size.  The
 * cache holds at most CACHE_BYTES per engine, about what one watermark's
 * worth of requests and queued records needs; cached blocks stay counted
 * in bytes_used, since the engine holds them.
 */
#define CACHE_BYTES (2u << 20)

struct cached {
	struct cached *next;
};

/* The class of an n-byte block, 0 when it is not cached. */
static size_t cache_class(size_t n)
{
	size_t c = (n + 8 + 15) / 16 - 1;

	if (n == 0 || c >= RULES_CACHE_CLASSES)
		return 0;
	return c == 0 ? 1 : c;
}

static size_t class_size(size_t c)
{
	return c * 16 + 8;
}

/* The bytes an n-byte block is counted for. */
static size_t block_size(size_t n)
{
	size_t c = cache_class(n);

	return c ? class_size(c) : n;
}

void *rules_alloc_raw(struct rules *r, size_t n)
{
	size_t c = cache_class(n);
	struct cached *b = c ? r->cache[c] : NULL;

	if (b != NULL) {
		r->cache[c] = b->next;
		r->cache_bytes -= class_size(c);
		return b;
	}
	b = malloc(block_size(n));
	if (b != NULL)
		rules_mem_add(r, block_size(n));
	return b;
}

void *rules_alloc(struct rules *r, size_t n)
{
	void *p = rules_alloc_raw(r, n);

	if (p != NULL)
		memset(p, 0, n);
	return p;
}

void *rules_grow(struct rules *r, void *p, size_t n, size_t m)
{
	void *q = rules_alloc_raw(r, m);

	if (q == NULL)
		return NULL;
	if (n > 0)
		memcpy(q, p, n);
	rules_release(r, p, n);
	return q;
}

void rules_release(struct rules *r, void *p, size_t n)
{
	size_t c = cache_class(n);
	struct cached *b = p;

	if (p == NULL)
		return;
	if (c != 0 && r->cache_bytes + class_size(c) <= CACHE_BYTES) {
		b->next = r->cache[c];
		r->cache[c] = b;
		r->cache_bytes += class_size(c);
		return;
	}
	rules_mem_sub(r, block_size(n));
	free(p);
}

void rules_cache_free(struct rules *r)
{
	for (size_t c = 1; c < RULES_CACHE_CLASSES; c++) {
		while (r->cache[c] != NULL) {
			struct cached *b = r->cache[c];

			r->cache[c] = b->next;
			rules_mem_sub(r, class_size(c));
			free(b);
		}
	}
	r->cache_bytes = 0;
}

/* ------------------------------------------------------------ ptab */

/*
 * Each slot's 32-bit hash (never 0: 0 marks an empty slot) sits in a
 * parallel array, so that probing and deletion read that dense array and
 * dereference an entry only when its hash matches: the entries themselves
 * are scattered over the heap.  A table that is mostly searched for keys
 * it holds (open scopes) fills to 7/8, about 16 bytes per entry; one that
 * is mostly searched for keys it lacks (ended scopes) stops at 1/2, where
 * a miss costs a few probes rather than dozens.
 */
#define PTAB_LOAD_DEN 8

/*
 * The library's ctx values are random, but a custom backend's, tids and a
 * hostile client's need not be.  A multiply alone (Fibonacci hashing) let
 * structured keys cluster: ctx values that are multiples of its own
 * constant took 14 probes per operation instead of 1.6.  So the key, with
 * the engine's secret seed, goes through a full mixer, and a client that
 * cannot learn the seed cannot choose keys that collide.
 */
static uint32_t ptab_hash(const struct ptab *t, uint64_t key)
{
	return (uint32_t)(proto_mix64(key ^ t->seed) >> 32) | 1;
}

static uint32_t ptab_home(const struct ptab *t, uint32_t hash)
{
	return hash >> (32 - t->bits);
}

static size_t ptab_bytes(uint32_t bits)
{
	return ((size_t)1 << bits) * (sizeof(uint64_t *) + sizeof(uint32_t));
}

uint64_t **ptab_find(const struct ptab *t, uint64_t ctx)
{
	uint32_t mask, i, h = ptab_hash(t, ctx);

	if (t->bits == 0)
		return NULL;
	mask = (1u << t->bits) - 1;
	for (i = ptab_home(t, h); t->hash[i] != 0; i = (i + 1) & mask)
		if (t->hash[i] == h && *t->slot[i] == ctx)
			return &t->slot[i];
	return NULL;
}

static void ptab_place(struct ptab *t, uint64_t *entry, uint32_t h)
{
	uint32_t mask = (1u << t->bits) - 1;
	uint32_t i = ptab_home(t, h);

	/* A hash is never 0 (an empty slot), and a free slot is left. */
	assert(h != 0 && t->count < (1u << t->bits));
	while (t->hash[i] != 0)
		i = (i + 1) & mask;
	t->slot[i] = entry;
	t->hash[i] = h;
}

static int ptab_resize(struct rules *r, struct ptab *t, uint32_t bits)
{
	struct ptab old = *t;
	size_t cap = (size_t)1 << bits;

	t->slot = rules_alloc(r, ptab_bytes(bits));
	if (t->slot == NULL) {
		*t = old;
		return -1;
	}
	t->hash = (uint32_t *)(t->slot + cap);
	t->bits = bits;
	for (size_t i = 0; old.bits && i < ((size_t)1 << old.bits); i++)
		if (old.hash[i] != 0)
			ptab_place(t, old.slot[i], old.hash[i]);
	if (old.bits)
		rules_release(r, old.slot, ptab_bytes(old.bits));
	return 0;
}

/* The caller guarantees that the key is not in the table yet. */
int ptab_insert(struct rules *r, struct ptab *t, uint64_t *entry)
{
	assert(ptab_find(t, *entry) == NULL);
	if (t->bits == 0 || ((uint64_t)t->count + 1) * PTAB_LOAD_DEN >
				((uint64_t)t->load << t->bits)) {
		uint32_t bits = t->bits ? t->bits + 1 : PTAB_MIN_BITS;

		if (ptab_resize(r, t, bits) == -1)
			return -1;
	}
	ptab_place(t, entry, ptab_hash(t, *entry));
	t->count++;
	return 0;
}

/* Backward-shift deletion: no tombstones, so lookups never slow down. */
void ptab_remove(struct ptab *t, uint64_t ctx)
{
	uint64_t **hit = ptab_find(t, ctx);
	uint32_t mask, i, j, home;

	if (hit == NULL)
		return;
	assert(t->count > 0);
	mask = (1u << t->bits) - 1;
	i = (uint32_t)(hit - t->slot);
	for (j = (i + 1) & mask; t->hash[j] != 0; j = (j + 1) & mask) {
		home = ptab_home(t, t->hash[j]);
		/* Move j into the hole i unless its home lies in (i, j]. */
		if (i <= j ? (home <= i || home > j)
			   : (home <= i && home > j)) {
			t->slot[i] = t->slot[j];
			t->hash[i] = t->hash[j];
			i = j;
		}
	}
	t->slot[i] = NULL;
	t->hash[i] = 0;
	t->count--;
}

void ptab_free(struct rules *r, struct ptab *t)
{
	if (t->bits)
		rules_release(r, t->slot, ptab_bytes(t->bits));
	t->slot = NULL;
	t->hash = NULL;
	t->bits = t->count = 0;
}

/* ------------------------------------------------------------ scopes */

struct scope *scope_alloc(struct rules *r)
{
	struct scope *s;

	if (r->free_scopes == NULL) {
		void **slabs =
		    realloc(r->slabs, (r->nslabs + 1) * sizeof(*slabs));
		struct scope *slab;

		if (slabs == NULL)
			return NULL;
		r->slabs = slabs;
		slab = rules_alloc(r, SLAB_SCOPES * sizeof(*slab));
		if (slab == NULL)
			return NULL;
		rules_mem_add(r, sizeof(*slabs));
		slabs[r->nslabs++] = slab;
		for (size_t i = 0; i < SLAB_SCOPES; i++) {
			slab[i].newer = r->free_scopes;
			r->free_scopes = &slab[i];
		}
	}
	s = r->free_scopes;
	r->free_scopes = s->newer;
	memset(s, 0, sizeof(*s));
	return s;
}

void scope_free(struct rules *r, struct scope *s)
{
	iname_put(r, s->name);
	s->name = NULL;
	if (s->truth != NULL)
		req_put(r, s->truth);
	s->truth = NULL;
	if (s->req != NULL)
		req_put(r, s->req);
	s->req = NULL;
	s->newer = r->free_scopes;
	r->free_scopes = s;
}

void scopes_free_slabs(struct rules *r)
{
	for (size_t i = 0; i < r->nslabs; i++)
		rules_release(r, r->slabs[i],
			      SLAB_SCOPES * sizeof(struct scope));
	rules_mem_sub(r, r->nslabs * sizeof(*r->slabs));
	free(r->slabs);
	r->slabs = NULL;
	r->nslabs = 0;
	r->free_scopes = NULL;
}

int scope_open(struct rules *r, struct scope *s)
{
	if (ptab_insert(r, &r->open, &s->ctx) == -1)
		return -1;
	s->older = r->newest;
	s->newer = NULL;
	if (r->newest != NULL)
		r->newest->newer = s;
	else
		r->oldest = s;
	r->newest = s;
	r->stats.open_scopes++;
	(*r->cfg.open_scopes_total)++;
	return 0;
}

void scope_close(struct rules *r, struct scope *s)
{
	ptab_remove(&r->open, s->ctx);
	if (s->older != NULL)
		s->older->newer = s->newer;
	else
		r->oldest = s->newer;
	if (s->newer != NULL)
		s->newer->older = s->older;
	else
		r->newest = s->older;
	s->older = s->newer = NULL;
	assert(r->stats.open_scopes > 0 && *r->cfg.open_scopes_total > 0);
	r->stats.open_scopes--;
	(*r->cfg.open_scopes_total)--;
}

struct scope *scope_find(const struct rules *r, uint64_t ctx)
{
	uint64_t **hit = ptab_find(&r->open, ctx);

	return hit ? (struct scope *)*hit : NULL;
}

struct req *scope_truth(const struct scope *s)
{
	return s->truth != NULL || !s->is_root ? s->truth : s->req;
}

/* ------------------------------------------------------------ names */

/* Each step multiplies by the golden ratio, odd, and folds the high half,
 * where the product's mixing is, into the low bits that index tables. */
#define HASH_MUL 0x9e3779b97f4a7c15ull

static uint64_t hash_step(uint64_t h, uint64_t w)
{
	h = (h ^ w) * HASH_MUL;
	return h ^ (h >> 29);
}

uint64_t rules_hash(const void *p, size_t n, uint64_t seed)
{
	const unsigned char *b = p;
	uint64_t h = hash_step(seed, n), w;

	for (; n >= 8; b += 8, n -= 8) {
		memcpy(&w, b, 8);
		h = hash_step(h, w);
	}
	if (n > 0) {
		w = 0;
		for (size_t i = 0; i < n; i++)
			w |= (uint64_t)b[i] << (8 * i);
		h = hash_step(h, w);
	}
	return hash_step(h, h >> 32);
}

static int names_grow(struct rules *r)
{
	uint32_t bits = r->names_bits ? r->names_bits + 1 : PTAB_MIN_BITS;
	size_t cap = (size_t)1 << bits;
	struct iname **names = rules_alloc(r, cap * sizeof(*names));

	if (names == NULL)
		return -1;
	for (size_t i = 0; r->names_bits && i < ((size_t)1 << r->names_bits);
	     i++) {
		struct iname *n, *next;

		for (n = r->names[i]; n != NULL; n = next) {
			next = n->next;
			n->next = names[n->hash & (cap - 1)];
			names[n->hash & (cap - 1)] = n;
		}
	}
	if (r->names_bits)
		rules_release(r, r->names,
			      ((size_t)1 << r->names_bits) * sizeof(*names));
	r->names = names;
	r->names_bits = bits;
	return 0;
}

/* A name's block, counted against max_held_bytes: open and ended scopes
 * hold their names, and each may be a distinct one at the string limit. */
static size_t iname_size(uint32_t len)
{
	return sizeof(struct iname) + len + 1;
}

/* NULL for a nil name, or when out of memory or over max_held_bytes: the
 * scope is then nameless rather than lost. */
struct iname *iname_get(struct rules *r, struct proto_str s)
{
	uint32_t h;
	struct iname *n;

	if (s.ptr == NULL)
		return NULL;
	if ((r->names_bits == 0 || r->nnames >= (1u << r->names_bits)) &&
	    names_grow(r) == -1)
		return NULL;
	h = (uint32_t)rules_hash(s.ptr, s.len, r->cfg.hash_seed);
	for (n = r->names[h & ((1u << r->names_bits) - 1)]; n; n = n->next)
		if (n->hash == h && n->len == s.len &&
		    memcmp(n->s, s.ptr, s.len) == 0) {
			n->refs++;
			return n;
		}
	if (held_take(r, iname_size(s.len), 0) == -1) {
		r->stats.names_dropped++;
		return NULL;
	}
	n = rules_alloc(r, iname_size(s.len));
	if (n == NULL) {
		held_give(r, iname_size(s.len));
		return NULL;
	}
	memcpy(n->s, s.ptr, s.len);
	n->len = s.len;
	n->hash = h;
	n->refs = 1;
	n->next = r->names[h & ((1u << r->names_bits) - 1)];
	r->names[h & ((1u << r->names_bits) - 1)] = n;
	r->nnames++;
	return n;
}

void iname_put(struct rules *r, struct iname *n)
{
	struct iname **pp;

	assert(n == NULL || n->refs > 0);
	if (n == NULL || --n->refs > 0)
		return;
	pp = &r->names[n->hash & ((1u << r->names_bits) - 1)];
	while (*pp != n)
		pp = &(*pp)->next;
	*pp = n->next;
	r->nnames--;
	held_give(r, iname_size(n->len));
	rules_release(r, n, iname_size(n->len));
}

void inames_free(struct rules *r)
{
	if (r->names_bits)
		rules_release(r, r->names,
			      ((size_t)1 << r->names_bits) * sizeof(*r->names));
	r->names = NULL;
	r->names_bits = 0;
}

struct proto_str iname_str(const struct iname *n)
{
	struct proto_str s = {NULL, 0};

	if (n != NULL) {
		s.ptr = n->s;
		s.len = n->len;
	}
	return s;
}

/* ------------------------------------------------------------ ended */

void req_put(struct rules *r, struct req *q)
{
	assert(q->refs > 0);
	if (--q->refs > 0)
		return;
	iname_put(r, q->root.name);
	if (q->root.truth != NULL)
		req_put(r, q->root.truth);
	rules_release(r, q, sizeof(*q));
}

struct ended *ended_find(const struct rules *r, uint64_t ctx)
{
	uint64_t **hit = ptab_find(&r->ended_tab, ctx);

	return hit ? (struct ended *)*hit : NULL;
}

#define RING_MIN 64

/* The table points into the ring, so a new ring, larger or smaller (cap >=
 * ring_count), is indexed anew. */
static int ring_resize(struct rules *r, uint32_t cap)
{
	struct ptab tab = {.seed = r->ended_tab.seed, .load = PTAB_SPARSE};
	struct ended *ring;

	ring = rules_alloc(r, (size_t)cap * sizeof(*ring));
	if (ring == NULL)
		return -1;
	for (uint32_t i = 0; i < r->ring_count; i++) {
		ring[i] = r->ring[(r->ring_head + i) % r->ring_cap];
		if (ptab_insert(r, &tab, &ring[i].ctx) == -1) {
			ptab_free(r, &tab);
			rules_release(r, ring, (size_t)cap * sizeof(*ring));
			return -1;
		}
	}
	ptab_free(r, &r->ended_tab);
	r->ended_tab = tab;
	rules_release(r, r->ring, (size_t)r->ring_cap * sizeof(*ring));
	r->ring = ring;
	r->ring_cap = cap;
	r->ring_head = 0;
	return 0;
}

static int ring_grow(struct rules *r)
{
	uint32_t cap = r->ring_cap ? r->ring_cap * 2 : RING_MIN;

	if (cap > r->cfg.max_ended_scopes)
		cap = r->cfg.max_ended_scopes;
	return ring_resize(r, cap);
}

static void ended_evict_oldest(struct rules *r)
{
	struct ended *e = &r->ring[r->ring_head];

	assert(r->ring_count > 0);
	ptab_remove(&r->ended_tab, e->ctx);
	req_put(r, e->req);
	if (e->truth != NULL)
		req_put(r, e->truth);
	r->ring_head = (r->ring_head + 1) % r->ring_cap;
	r->ring_count--;
	r->stats.ended_scopes--;
	(*r->cfg.ended_scopes_total)--;
}

/* The ring goes back to half its size while a quarter would hold it: it
 * grows again by doubling, so a ring at the edge does not flap. */
uint64_t rules_forget_ended(struct rules *r, uint64_t n)
{
	uint64_t done = 0;
	uint32_t cap = r->ring_cap;

	for (; done < n && r->ring_count > 0; done++)
		ended_evict_oldest(r);
	while (cap > RING_MIN && r->ring_count < cap / 4)
		cap /= 2;
	/* On failure the larger ring stays: it costs only memory. */
	if (cap != r->ring_cap)
		(void)ring_resize(r, cap);
	return done;
}

static void ended_set(struct rules *r, struct ended *e, struct req *q,
		      struct req *truth)
{
	struct req *old = e->req, *old_truth = e->truth;

	e->req = q;
	e->truth = truth;
	q->refs++;
	if (truth != NULL)
		truth->refs++;
	if (old != NULL)
		req_put(r, old);
	if (old_truth != NULL)
		req_put(r, old_truth);
}

int ended_insert(struct rules *r, uint64_t ctx, struct req *q,
		 struct req *truth)
{
	struct ended *e = ended_find(r, ctx);

	if (r->cfg.max_ended_scopes == 0)
		return 0;
	if (e != NULL) {
		ended_set(r, e, q, truth);
		return 0;
	}
	if (r->ring_count == r->ring_cap) {
		if (r->ring_cap < r->cfg.max_ended_scopes) {
			if (ring_grow(r) == -1)
				return -1;
		} else {
			ended_evict_oldest(r);
		}
	}
	e = &r->ring[(r->ring_head + r->ring_count) % r->ring_cap];
	e->ctx = ctx;
	if (ptab_insert(r, &r->ended_tab, &e->ctx) == -1)
		return -1;
	e->req = e->truth = NULL;
	ended_set(r, e, q, truth);
	r->ring_count++;
	r->stats.ended_scopes++;
	(*r->cfg.ended_scopes_total)++;
	return 0;
}

void ended_free(struct rules *r)
{
	while (r->ring_count > 0)
		ended_evict_oldest(r);
	ptab_free(r, &r->ended_tab);
	rules_release(r, r->ring, (size_t)r->ring_cap * sizeof(*r->ring));
	r->ring = NULL;
	r->ring_cap = 0;
}

/* ------------------------------------------------------------ arena */

struct arena_chunk {
	struct arena_chunk *next;
	size_t size, used;
	char data[];
};

/* Chunks double up to ARENA_MAX so that a request with many records
 * wastes little, and a quiet one costs one small chunk. */
char *arena_alloc(struct rules *r, struct arena *a, size_t size)
{
	struct arena_chunk *c = a->head;
	char *p;

	if (c == NULL || c->size - c->used < size) {
		size_t cap = c ? c->size * 2 : ARENA_MIN;

		if (cap > ARENA_MAX)
			cap = ARENA_MAX;
		while (cap < size)
			cap *= 2;
		c = rules_alloc(r, sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->size = cap;
		c->next = a->head;
		a->head = c;
	}
	p = c->data + c->used;
	c->used += size;
	return p;
}

void arena_free(struct rules *r, struct arena *a)
{
	struct arena_chunk *c, *next;

	for (c = a->head; c != NULL; c = next) {
		next = c->next;
		rules_release(r, c, sizeof(*c) + c->size);
	}
	a->head = NULL;
}
