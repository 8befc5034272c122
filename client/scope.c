/*
 * scope.c: ctx numbers and the process-wide table of open scopes' saved
 * pairs: what docs/DESIGN.md's end(x) restores "if x is known", that is, if
 * this process began x and has not ended it yet, on whichever thread.
 *
 * A ctx is a counter through a per-process key and proto_mix64, which is
 * a bijection: so end(x) recovers x's counter from x alone, and the
 * counter names x's slot in a ring (RING_SIZE slots, one per counter
 * modulo its size).  Begin and end each touch one slot with one atomic
 * read-modify-write and take no lock, whichever thread ends the scope.
 * Threads take counters a block at a time, so each fills slots of its
 * own and they rarely share a cache line.
 *
 * A scope still open when the counter has come round to its slot again
 * (a long request while RING_SIZE others began) keeps the slot; the new
 * scope's pair then goes to the overflow table, a hash under a mutex.
 * That is the only path that locks.  The overflow holds at most
 * OVERFLOW_MAX pairs: past it, the oldest one there is forgotten and
 * counted (ctxleak_stats.evicted); its end then restores nothing.  So
 * memory stays bounded when scopes never end, and no open scope is
 * forgotten for any other reason.
 *
 * Slot states, each transition one atomic operation on slot.ctx:
 *   0 (free) --begin: CAS 0->BUSY--> BUSY --fill, store x--> x (open)
 *   x --end(x): read pair, CAS x->0--> 0
 * The pair is written only while the slot is BUSY and read only while it
 * holds x, so a reader that lost the CAS (x ended twice at once) drops
 * what it read.
 */
#include <stdlib.h>
#include <string.h>

#include "client.h"

/* 16,384 slots of 32 bytes: 512 KiB of address space, touched as the
 * counter moves through it.  A request that stays open while 16k others
 * begin is rare, and then costs a lock, not a loss. */
#define RING_SIZE (1u << 14)
#define RING_MASK (RING_SIZE - 1)
/* Pairs kept beyond the ring: scopes that end late or never. */
#define OVERFLOW_MAX (1u << 16)
#define ID_BLOCK     1024
#define SLOT_BUSY    UINT64_MAX /* never a ctx: see new_ctx */

struct slot {
	_Atomic uint64_t ctx; /* 0 free, SLOT_BUSY being filled, else open */
	_Atomic uint64_t b, c; /* B and C when the scope began */
	_Atomic uint64_t root; /* whether its end ends a request */
};

/* An overflow entry: open addressing on ctx, with the order of arrival
 * for evicting the oldest. */
struct spill {
	uint64_t ctx; /* 0: free */
	uint64_t b, c, root;
};

static struct slot ring[RING_SIZE];
static uint64_t id_key;
static _Atomic uint64_t id_counter;
/* The thread's block of counters: next to use, and the end. */
static CL_TLS struct {
	uint64_t next, end;
} ids;

static struct {
	pthread_mutex_t mu;
	_Atomic uint32_t count; /* read without the lock by every end */
	struct spill *tab;	/* 2 * OVERFLOW_MAX slots once needed */
	uint64_t *fifo;		/* ctx in arrival order, some ended */
	uint32_t head, len;	/* of fifo, 2 * OVERFLOW_MAX long */
} spill = {.mu = PTHREAD_MUTEX_INITIALIZER};

_Atomic uint64_t cl_scopes_evicted;

/* ------------------------------------------------------------ ids */

/* proto_mix64's inverse: each step of splitmix64's finaliser undone. */
static uint64_t unmix64(uint64_t x)
{
	x ^= x >> 31 ^ x >> 62;
	x *= 0x319642b2d24d8ec3u;
	x ^= x >> 27 ^ x >> 54;
	x *= 0x96de1b173f119089u;
	x ^= x >> 30 ^ x >> 60;
	return x;
}

uint64_t cl_scope_new_ctx(void)
{
	uint64_t x;

	do {
		if (ids.next == ids.end) {
			ids.next = atomic_fetch_add(&id_counter, ID_BLOCK);
			ids.end = ids.next + ID_BLOCK;
		}
		x = proto_mix64(id_key + ids.next++);
	} while (x == 0 || x == SLOT_BUSY);
	return x;
}

static struct slot *slot_of(uint64_t ctx)
{
	return &ring[(unmix64(ctx) - id_key) & RING_MASK];
}

/* ------------------------------------------------------------ overflow */

#define SPILL_CAP (2 * OVERFLOW_MAX)
#define SPILL_MASK (SPILL_CAP - 1)

static struct spill *spill_slot(uint64_t ctx)
{
	uint32_t i = (uint32_t)proto_mix64(ctx) & SPILL_MASK;

	while (spill.tab[i].ctx && spill.tab[i].ctx != ctx)
		i = (i + 1) & SPILL_MASK;
	return &spill.tab[i];
}

/* Linear probing: close the gap so that later entries stay findable. */
static void spill_delete(struct spill *s)
{
	uint32_t hole = (uint32_t)(s - spill.tab), i = hole, home;

	for (;;) {
		i = (i + 1) & SPILL_MASK;
		if (!spill.tab[i].ctx)
			break;
		home = (uint32_t)proto_mix64(spill.tab[i].ctx) & SPILL_MASK;
		/* Move entry i into the hole unless its home lies
		 * cyclically in (hole, i]. */
		if (((i - home) & SPILL_MASK) >= ((i - hole) & SPILL_MASK)) {
			spill.tab[hole] = spill.tab[i];
			hole = i;
		}
	}
	spill.tab[hole].ctx = 0;
	atomic_fetch_sub(&spill.count, 1);
}

/* The fifo is full of ctx values, some ended: keep the open ones.  It is
 * twice the table, so at least half goes and the cost is amortised. */
static void fifo_compact(void)
{
	uint32_t kept = 0;

	for (uint32_t k = 0; k < spill.len; k++) {
		uint64_t ctx = spill.fifo[(spill.head + k) & SPILL_MASK];

		if (spill_slot(ctx)->ctx)
			spill.fifo[kept++] = ctx;
	}
	spill.head = 0;
	spill.len = kept;
}

/* Forgets the oldest pair still open in the overflow. */
static void evict_oldest(void)
{
	while (spill.len) {
		uint64_t ctx = spill.fifo[spill.head];
		struct spill *s = spill_slot(ctx);

		spill.head = (spill.head + 1) & SPILL_MASK;
		spill.len--;
		if (s->ctx) {
			spill_delete(s);
			atomic_fetch_add(&cl_scopes_evicted, 1);
			return;
		}
	}
}

static void spill_put(uint64_t x, uint64_t b, uint64_t c, int root)
{
	pthread_mutex_lock(&spill.mu);
	if (!spill.tab) {
		spill.tab = calloc(SPILL_CAP, sizeof(*spill.tab));
		spill.fifo = malloc(SPILL_CAP * sizeof(*spill.fifo));
		if (!spill.tab || !spill.fifo) {
			free(spill.tab);
			free(spill.fifo);
			spill.tab = NULL;
			spill.fifo = NULL;
			/* Not kept: its end will restore nothing. */
			atomic_fetch_add(&cl_scopes_evicted, 1);
			pthread_mutex_unlock(&spill.mu);
			return;
		}
	}
	if (atomic_load(&spill.count) >= OVERFLOW_MAX)
		evict_oldest();
	if (spill.len == SPILL_CAP)
		fifo_compact();
	*spill_slot(x) = (struct spill){x, b, c, (uint64_t)root};
	spill.fifo[(spill.head + spill.len++) & SPILL_MASK] = x;
	atomic_fetch_add(&spill.count, 1);
	pthread_mutex_unlock(&spill.mu);
}

static int spill_take(uint64_t x, struct cl_pair *out)
{
	struct spill *s;
	int found = 0;

	pthread_mutex_lock(&spill.mu);
	if (spill.tab && (s = spill_slot(x))->ctx) {
		*out = (struct cl_pair){s->b, s->c, (int)s->root};
		spill_delete(s);
		found = 1;
	}
	pthread_mutex_unlock(&spill.mu);
	return found;
}

/* ------------------------------------------------------------ the table */

void cl_scope_open(uint64_t x, uint64_t b, uint64_t c, int root)
{
	struct slot *s = slot_of(x);
	uint64_t expect = 0;

	if (CL_UNLIKELY(!atomic_compare_exchange_strong_explicit(
		&s->ctx, &expect, SLOT_BUSY, memory_order_acquire,
		memory_order_relaxed))) {
		spill_put(x, b, c, root);
		return;
	}
	atomic_store_explicit(&s->b, b, memory_order_relaxed);
	atomic_store_explicit(&s->c, c, memory_order_relaxed);
	atomic_store_explicit(&s->root, (uint64_t)root, memory_order_relaxed);
	atomic_store_explicit(&s->ctx, x, memory_order_release);
}

int cl_scope_close(uint64_t x, struct cl_pair *out)
{
	struct slot *s = slot_of(x);
	uint64_t seen = x;

	if (CL_LIKELY(atomic_load_explicit(&s->ctx, memory_order_acquire) ==
		      x)) {
		out->b = atomic_load_explicit(&s->b, memory_order_relaxed);
		out->c = atomic_load_explicit(&s->c, memory_order_relaxed);
		out->root =
		    (int)atomic_load_explicit(&s->root, memory_order_relaxed);
		if (atomic_compare_exchange_strong_explicit(
			&s->ctx, &seen, 0, memory_order_acq_rel,
			memory_order_relaxed))
			return 1;
	}
	if (!atomic_load_explicit(&spill.count, memory_order_relaxed))
		return 0;
	return spill_take(x, out);
}

/* fork() must not split the overflow's lock from its table. */
void cl_scope_fork_prepare(void)
{
	pthread_mutex_lock(&spill.mu);
}

void cl_scope_fork_release(void)
{
	pthread_mutex_unlock(&spill.mu);
}

/* A new process (init, or the child of a fork): new ctx numbers, and no
 * pair of the parent's is known. */
void cl_scope_new_process(void)
{
	id_key = proto_random64();
	if (atomic_load(&id_counter))
		memset(ring, 0, sizeof(ring));
	atomic_store(&id_counter, 0);
	pthread_mutex_lock(&spill.mu);
	free(spill.tab);
	free(spill.fifo);
	spill.tab = NULL;
	spill.fifo = NULL;
	spill.head = spill.len = 0;
	atomic_store(&spill.count, 0);
	pthread_mutex_unlock(&spill.mu);
	atomic_store(&cl_scopes_evicted, 0);
	ids.next = ids.end = 0;
}
