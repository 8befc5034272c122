/*
 * buffer.c: the per-thread record buffers, the hot path of the library.
 *
 * Each thread encodes its records straight into a chain of chunks that it
 * alone writes and that the shipping thread alone reads (ship.c): no lock,
 * no syscall, no allocation per record.  Chunks that the shipper drained
 * come back to the thread (up to MAX_SPARE), so a steady stream neither
 * allocates nor faults in fresh pages.
 *
 * The bytes buffered by all threads together are bounded by the limit
 * given at init (ctxleak_options.buffer_limit).  Each thread takes credit
 * from the global budget in grants (so the shared counter is touched once
 * per grant, not per record) and the shipper gives the bytes back once
 * they are sent.  A record that the thread's credit plus what is left of
 * the budget cannot hold is dropped and counted exactly; the slack is at
 * most one grant per thread.
 *
 * The registry of every thread's buffer is this file's: the shipper
 * (ship.c, the layer above) drains it through cl_buf_collect_all and
 * learns of a thread that exited through the wake callback it gave
 * cl_buf_consumer_start; nothing here calls up into it.
 *
 * The watermark (see ship.c) needs to know which threads are between
 * reading the clock and publishing their record: that is `busy`.  The
 * producer sets it with a plain store and a compiler barrier; the shipper
 * makes it visible with membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), an
 * asymmetric fence that costs the producer nothing.  Where membarrier is
 * missing the producer pays a full fence instead.
 */
#include <errno.h>
#include <linux/membarrier.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

/*
 * A thread's records: a chain of chunks written by the thread and read by
 * the shipping thread (single producer, single consumer, no lock).
 * A record never straddles two chunks.
 */
struct cl_chunk {
	_Atomic(struct cl_chunk *) next; /* set once the producer moved on */
	_Atomic uint32_t end;		 /* bytes published */
	uint32_t cap;
	unsigned char data[];
};

/* One thread's buffer: its chain, its credit, its drops. */
struct cl_buf {
	/* Producer side (its thread only, or the shipper after it exited). */
	struct cl_chunk *wchunk;
	struct cl_chunk *reuse;
	int64_t credit; /* bytes of the global budget this thread holds */

	/* Shared with the shipper. */
	_Atomic int busy;	  /* between clock read and publication */
	_Atomic uint64_t last_ts; /* ts of the last record kept or dropped */
	_Atomic int exited;	  /* the thread is gone; drain and free */
	_Atomic uint64_t records; /* written by the producer only */
	/* Drained chunks to reuse: the shipper pushes onto spare, the
	 * producer takes the whole list into its own `reuse`. */
	_Atomic(struct cl_chunk *) spare;
	_Atomic uint32_t nspare; /* in spare and reuse together */

	/* Drops are the slow path: a mutex keeps count and since exact. */
	pthread_mutex_t drop_mu;
	uint64_t drop_count; /* not yet reported */
	uint64_t drop_since;
	uint64_t drop_total;

	/* Consumer side (the shipper). */
	struct cl_chunk *rchunk;
	uint32_t rpos;
	struct cl_buf *next; /* registry, under registry_mu */
};

/* Large enough for the largest record: three strings at their limit. */
#define CHUNK_BYTES (16 * 1024)
#define CHUNK_CAP   (CHUNK_BYTES - sizeof(struct cl_chunk))
#define MAX_SPARE   16 /* per thread: 256 KiB kept for reuse at most */
_Static_assert(CHUNK_CAP >= PROTO_RECORD_SIZE_MAX(3 * CTXLEAK_MAX_STRING),
	       "a chunk holds any record");

/* The thread's own: its buffer (NULL until its first record) and id. */
static CL_TLS struct {
	struct cl_buf *buf;
	uint64_t tid;
} self;

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cl_buf *registry; /* every thread's buffer */
/* The shipper's wakeup while it runs (under registry_mu), else NULL:
 * then a thread that exits frees its own buffer. */
static void (*consumer_wake)(void);
static _Atomic int64_t budget; /* bytes of the limit not granted */
static _Atomic uint64_t truncated;
/* The counters of buffers freed, for the stats. */
static _Atomic uint64_t gone_records, gone_dropped;
/* Whether the producer needs a full fence (membarrier unavailable). */
static int fence_producer = 1;

static pthread_key_t exit_key;
static int have_exit_key;
static size_t buffer_limit; /* kept for the child of a fork */
/* The layer above forgets the thread too when its buffer goes at exit. */
static void (*_Atomic thread_gone)(void);
static int64_t grant_bytes;

uint64_t cl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int membarrier(int cmd)
{
	return (int)syscall(SYS_membarrier, cmd, 0, 0);
}

/* Called at init and in the child of a fork: membarrier registration
 * belongs to the address space. */
void cl_buf_init_process(size_t limit, void (*gone)(void))
{
	int cmds = membarrier(MEMBARRIER_CMD_QUERY);

	fence_producer = 1;
	if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
	    membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
		fence_producer = 0;
	buffer_limit = limit;
	atomic_store_explicit(&thread_gone, gone, memory_order_relaxed);
	atomic_store(&budget, (int64_t)limit);
	grant_bytes = (int64_t)limit / 64;
	if (grant_bytes > 16 * 1024)
		grant_bytes = 16 * 1024;
}

/* The shipper's side of the busy handshake.  Out of line: inlined into
 * its caller, GCC's -Wtsan (an error under make check-tsan) flags the
 * fence, which ThreadSanitizer does not model. */
static __attribute__((noinline)) void fence(void)
{
	if (fence_producer || membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED))
		atomic_thread_fence(memory_order_seq_cst);
}

struct proto_str cl_str(const char *s)
{
	size_t len;

	if (!s)
		return (struct proto_str){NULL, 0};
	len = strnlen(s, CTXLEAK_MAX_STRING + 1);
	if (CL_UNLIKELY(len > CTXLEAK_MAX_STRING)) {
		len = CTXLEAK_MAX_STRING;
		atomic_fetch_add_explicit(&truncated, 1, memory_order_relaxed);
	}
	return (struct proto_str){s, (uint32_t)len};
}

/* ------------------------------------------------------------ chunks */

/* Taking the whole list at once, never one node, leaves the shipper's
 * lock-free push without an ABA problem. */
static struct cl_chunk *chunk_new(struct cl_buf *b)
{
	struct cl_chunk *c;

	if (!b->reuse)
		b->reuse = atomic_exchange(&b->spare, NULL);
	if ((c = b->reuse)) {
		b->reuse = atomic_load_explicit(&c->next, memory_order_relaxed);
		atomic_store_explicit(&c->next, NULL, memory_order_relaxed);
		atomic_fetch_sub_explicit(&b->nspare, 1, memory_order_relaxed);
		return c;
	}
	c = malloc(CHUNK_BYTES);
	if (!c)
		return NULL;
	atomic_init(&c->next, NULL);
	atomic_init(&c->end, 0);
	c->cap = CHUNK_CAP;
	return c;
}

/* The shipper is done with c: give it back to the producer. */
static void chunk_recycle(struct cl_buf *b, struct cl_chunk *c)
{
	struct cl_chunk *head;

	if (atomic_load_explicit(&b->nspare, memory_order_relaxed) >=
	    MAX_SPARE) {
		free(c);
		return;
	}
	atomic_fetch_add_explicit(&b->nspare, 1, memory_order_relaxed);
	atomic_store_explicit(&c->end, 0, memory_order_relaxed);
	head = atomic_load_explicit(&b->spare, memory_order_relaxed);
	do
		atomic_store_explicit(&c->next, head, memory_order_relaxed);
	while (!atomic_compare_exchange_weak_explicit(
	    &b->spare, &head, c, memory_order_release, memory_order_relaxed));
}

static void chunks_free(struct cl_chunk *c)
{
	struct cl_chunk *next;

	for (; c; c = next) {
		next = atomic_load_explicit(&c->next, memory_order_relaxed);
		free(c);
	}
}

/* Records published and never collected: the thread emitted them after
 * the shipper's last batch, so they count as dropped. */
static uint64_t uncollected(struct cl_buf *b)
{
	uint64_t n = 0;
	uint32_t pos = b->rpos;

	for (struct cl_chunk *c = b->rchunk; c;
	     c = atomic_load_explicit(&c->next, memory_order_acquire)) {
		n += proto_frame_count(
		    c->data + pos,
		    atomic_load_explicit(&c->end, memory_order_acquire) - pos);
		pos = 0;
	}
	return n;
}

/* The thread is gone: its counters and unused credit go back. */
static void buf_free(struct cl_buf *b)
{
	atomic_fetch_add(&gone_records, atomic_load(&b->records));
	atomic_fetch_add(&gone_dropped, b->drop_total + uncollected(b));
	atomic_fetch_add(&budget, b->credit);
	chunks_free(b->rchunk);
	chunks_free(b->reuse);
	chunks_free(atomic_load_explicit(&b->spare, memory_order_acquire));
	pthread_mutex_destroy(&b->drop_mu);
	free(b);
}

/* -------------------------------------------------------- threads */

static void unlink_buf(struct cl_buf *b)
{
	struct cl_buf **pp = &registry;

	while (*pp != b)
		pp = &(*pp)->next;
	*pp = b->next;
}

static void thread_exit(void *p)
{
	struct cl_buf *b = p;
	void (*wake)(void), (*gone)(void);

	if (self.buf == b) {
		memset(&self, 0, sizeof(self));
		gone = atomic_load_explicit(&thread_gone, memory_order_relaxed);
		if (gone)
			gone();
	}
	pthread_mutex_lock(&registry_mu);
	wake = consumer_wake;
	if (wake)
		/* The shipper sends what is left, then frees it. */
		atomic_store_explicit(&b->exited, 1, memory_order_release);
	else
		unlink_buf(b);
	pthread_mutex_unlock(&registry_mu);
	if (wake)
		wake();
	else
		buf_free(b);
}

static void make_exit_key(void)
{
	if (pthread_key_create(&exit_key, thread_exit))
		abort();
	have_exit_key = 1;
}

/* The thread's first record: allocates and registers its buffer. */
static struct cl_buf *attach(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	struct cl_buf *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	pthread_mutex_init(&b->drop_mu, NULL);
	b->wchunk = b->rchunk = chunk_new(b);
	if (!b->wchunk) {
		free(b);
		return NULL;
	}
	pthread_once(&once, make_exit_key);
	pthread_setspecific(exit_key, b);
	self.tid = (uint64_t)gettid();
	pthread_mutex_lock(&registry_mu);
	b->next = registry;
	registry = b;
	pthread_mutex_unlock(&registry_mu);
	self.buf = b;
	return b;
}

/* Shutdown or the child of a fork freed this thread's buffer: not again
 * at its exit. */
static void forget_self(void)
{
	if (have_exit_key)
		pthread_setspecific(exit_key, NULL);
	memset(&self, 0, sizeof(self));
}

/* -------------------------------------------------------- producer */

static int take_credit(struct cl_buf *b, size_t need)
{
	int64_t want = (int64_t)need - b->credit, take;
	int64_t avail = atomic_load_explicit(&budget, memory_order_relaxed);

	if (want < grant_bytes)
		want = grant_bytes;
	do {
		if (avail + b->credit < (int64_t)need)
			return 0;
		take = avail < want ? avail : want;
	} while (!atomic_compare_exchange_weak(&budget, &avail, avail - take));
	b->credit += take;
	return 1;
}

static void drop(struct cl_buf *b, uint64_t ts)
{
	pthread_mutex_lock(&b->drop_mu);
	if (!b->drop_count)
		b->drop_since = ts;
	b->drop_count++;
	b->drop_total++;
	pthread_mutex_unlock(&b->drop_mu);
}

/* Takes the drops not yet reported; returns their count. */
static uint64_t take_drops(struct cl_buf *b, uint64_t *since)
{
	uint64_t n;

	pthread_mutex_lock(&b->drop_mu);
	n = b->drop_count;
	*since = b->drop_since;
	b->drop_count = 0;
	pthread_mutex_unlock(&b->drop_mu);
	return n;
}

/* The record did not fit the current chunk: move to a fresh one. */
static size_t encode_in_new_chunk(struct cl_buf *b,
				  const struct proto_record *r)
{
	struct cl_chunk *c = chunk_new(b);

	if (!c)
		return 0;
	/* Release: the shipper reads the old chunk's final end after it
	 * sees next. */
	atomic_store_explicit(&b->wchunk->next, c, memory_order_release);
	b->wchunk = c;
	return proto_encode_record(c->data, c->cap, r);
}

void cl_emit(struct proto_record *r)
{
	struct cl_buf *b = self.buf;
	struct cl_chunk *c;
	uint32_t pos;
	size_t n;

	if (CL_UNLIKELY(!b) && !(b = attach()))
		return;
	r->tid = self.tid;
	atomic_store_explicit(&b->busy, 1, memory_order_relaxed);
	if (CL_UNLIKELY(fence_producer))
		atomic_thread_fence(memory_order_seq_cst);
	else
		atomic_signal_fence(memory_order_seq_cst);
	r->ts = cl_now();

	c = b->wchunk;
	pos = atomic_load_explicit(&c->end, memory_order_relaxed);
	n = proto_encode_record(c->data + pos, c->cap - pos, r);
	if (CL_UNLIKELY(!n)) {
		n = encode_in_new_chunk(b, r);
		c = b->wchunk;
		pos = 0;
	}
	/* A dropped record is done with too: the watermark promises only
	 * what was not dropped, and DROPPED accounts for the rest. */
	atomic_store_explicit(&b->last_ts, r->ts, memory_order_relaxed);
	/* Every record counts, kept or dropped: stats say records produced,
	 * so that produced - dropped is what the daemon is owed. */
	atomic_store_explicit(
	    &b->records,
	    atomic_load_explicit(&b->records, memory_order_relaxed) + 1,
	    memory_order_relaxed);
	if (CL_UNLIKELY(!n || ((int64_t)n > b->credit && !take_credit(b, n)))) {
		drop(b, r->ts);
	} else {
		b->credit -= (int64_t)n;
		atomic_store_explicit(&c->end, pos + (uint32_t)n,
				      memory_order_release);
	}
	atomic_store_explicit(&b->busy, 0, memory_order_release);
}

/* -------------------------------------------------------- consumer */

/* Appends what b's thread has published to out; sets *complete to 0 when
 * out of memory left some behind. */
static void collect(struct cl_buf *b, struct proto_bytes *out, int *complete)
{
	struct cl_chunk *c, *next;
	uint32_t end;

	for (;;) {
		c = b->rchunk;
		/* next before end: once next is set, end is final. */
		next = atomic_load_explicit(&c->next, memory_order_acquire);
		end = atomic_load_explicit(&c->end, memory_order_acquire);
		if (end > b->rpos) {
			if (proto_bytes_reserve(out, end - b->rpos)) {
				*complete = 0;
				break;
			}
			memcpy(out->p + out->len, c->data + b->rpos,
			       end - b->rpos);
			out->len += end - b->rpos;
			b->rpos = end;
		}
		if (!next)
			break;
		b->rchunk = next;
		b->rpos = 0;
		chunk_recycle(b, c);
	}
}

uint64_t cl_buf_collect_all(struct proto_bytes *out, int *complete,
			    void (*note_drops)(uint64_t n, uint64_t since))
{
	uint64_t w, last, n, s;
	struct cl_buf **pp, *b;
	int exited;

	w = cl_now() - 1;
	fence();
	pthread_mutex_lock(&registry_mu);
	for (pp = &registry; (b = *pp);) {
		exited = atomic_load_explicit(&b->exited, memory_order_acquire);
		if (atomic_load_explicit(&b->busy, memory_order_acquire)) {
			last = atomic_load_explicit(&b->last_ts,
						    memory_order_relaxed);
			if (!last || last - 1 < w)
				w = last ? last - 1 : 0;
		}
		collect(b, out, complete);
		n = take_drops(b, &s);
		note_drops(n, s);
		if (exited && *complete) {
			*pp = b->next;
			buf_free(b);
		} else {
			pp = &b->next;
		}
	}
	pthread_mutex_unlock(&registry_mu);
	return w;
}

/* Bytes of sent records that the daemon committed: the budget has them
 * again. */
void cl_buf_give_back(size_t bytes)
{
	atomic_fetch_add(&budget, (int64_t)bytes);
}

void cl_buf_consumer_start(void (*wake)(void))
{
	pthread_mutex_lock(&registry_mu);
	consumer_wake = wake;
	pthread_mutex_unlock(&registry_mu);
}

/* The shipper is gone: buffers of exited threads, and this thread's,
 * are freed; live threads free their own when they exit. */
void cl_buf_consumer_stop(void)
{
	struct cl_buf **pp, *b;

	pthread_mutex_lock(&registry_mu);
	consumer_wake = NULL;
	for (pp = &registry; (b = *pp);) {
		if (atomic_load(&b->exited) || b == self.buf) {
			*pp = b->next;
			buf_free(b);
		} else {
			pp = &b->next;
		}
	}
	pthread_mutex_unlock(&registry_mu);
	forget_self();
}

/*
 * In the child of a fork, which runs only the forking thread: the
 * parent's records are the parent's to send, so every buffer is dropped
 * and this thread starts again with nothing (docs/DESIGN.md).
 */
void cl_buf_after_fork(void)
{
	struct cl_buf *b, *next;

	for (b = registry; b; b = next) {
		next = b->next;
		buf_free(b);
	}
	registry = NULL;
	consumer_wake = NULL;
	forget_self();
	atomic_store(&gone_records, 0);
	atomic_store(&gone_dropped, 0);
	atomic_store(&truncated, 0);
	cl_buf_init_process(buffer_limit, thread_gone);
}

/* Whether no thread has a record or a drop that is not collected yet. */
int cl_buf_all_empty(void)
{
	struct cl_buf *b;
	int empty = 1;

	pthread_mutex_lock(&registry_mu);
	for (b = registry; b && empty; b = b->next) {
		empty = !atomic_load(&b->rchunk->next) &&
			atomic_load(&b->rchunk->end) == b->rpos;
		pthread_mutex_lock(&b->drop_mu);
		empty = empty && !b->drop_count;
		pthread_mutex_unlock(&b->drop_mu);
	}
	pthread_mutex_unlock(&registry_mu);
	return empty;
}

void cl_buf_stats(struct ctxleak_stats *out)
{
	struct cl_buf *b;

	out->records = atomic_load(&gone_records);
	out->dropped = atomic_load(&gone_dropped);
	pthread_mutex_lock(&registry_mu);
	for (b = registry; b; b = b->next) {
		out->records += atomic_load(&b->records);
		pthread_mutex_lock(&b->drop_mu);
		out->dropped += b->drop_total;
		pthread_mutex_unlock(&b->drop_mu);
	}
	pthread_mutex_unlock(&registry_mu);
	out->truncated = atomic_load(&truncated);
}

/* fork() must not split the registry's lock from the list. */
void cl_buf_fork_prepare(void)
{
	pthread_mutex_lock(&registry_mu);
}

void cl_buf_fork_release(void)
{
	pthread_mutex_unlock(&registry_mu);
}
