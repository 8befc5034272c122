/*
 * client.h: the internal header of libctxleak.  Every client source file
 * includes it, and only it, for the declarations of the other files.  One
 * section per file.  Internal names start with cl_; only ctxleak_* leaves
 * the shared library.
 */
#ifndef CTXLEAK_CLIENT_H
#define CTXLEAK_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The build hides every symbol; the public API is the exception. */
#pragma GCC visibility push(default)
#include "ctxleak.h"
#pragma GCC visibility pop
#include "proto.h"

#define CL_LIKELY(x)   __builtin_expect(!!(x), 1)
#define CL_UNLIKELY(x) __builtin_expect(!!(x), 0)
/* Hot thread-local state: initial-exec, so that an access is one
 * %fs-relative load even from the shared library. */
#define CL_TLS __thread __attribute__((tls_model("initial-exec")))

/* ------------------------------------------------------------ api.c */

/* The library's settings, fixed at init (the child of a fork keeps them). */
struct cl_config {
	char socket_path[108]; /* sizeof sun_path */
	char app[256];
	char reason[160]; /* why the backend was chosen, for HELLO */
	size_t buffer_limit;
	uint32_t flush_interval_ms;
};
extern struct cl_config cl_config;

/* 1 between init and shutdown: the one branch every call takes first. */
extern _Atomic int cl_enabled;

/* ------------------------------------------------------------ backend.c */

extern enum ctxleak_backend cl_backend;
extern _Atomic uint64_t cl_global_slot;
extern uint64_t (*cl_custom_get)(void *user);
extern void (*cl_custom_set)(void *user, uint64_t ctx);
extern void *cl_custom_user;
extern char cl_scheduler[64]; /* set by ctxleak_set_scheduler, "" if not */

/* Resolves AUTO, checks the custom hooks, says why in `why`. */
int cl_backend_choose(const struct ctxleak_options *opt, char *why, size_t len);
const char *cl_backend_str(enum ctxleak_backend b);

/* ------------------------------------------------------------ buffer.c */

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
	struct cl_buf *next; /* registry, under cl_registry_mu */
};

struct cl_frame {
	uint64_t c, b;
};

/* Per-thread library state (the thread's half of DESIGN.md's table). */
struct cl_thread {
	struct cl_buf *buf; /* NULL until the thread's first record */
	uint64_t tid;
	uint64_t cause;		  /* C */
	uint64_t slot;		  /* B of the thread and task backends */
	uint64_t id_next, id_end; /* a block of ctx numbers (scope.c) */
	struct cl_frame *stack;	  /* the resume stack */
	uint32_t depth, stack_cap;
};
extern CL_TLS struct cl_thread cl_self;

/* The backend's slot: B of DESIGN.md's table. */
static inline uint64_t cl_backend_get(void)
{
	switch (cl_backend) {
	case CTXLEAK_BACKEND_GLOBAL:
		return atomic_load_explicit(&cl_global_slot,
					    memory_order_relaxed);
	case CTXLEAK_BACKEND_CUSTOM:
	case CTXLEAK_BACKEND_OBSERVE:
		return cl_custom_get(cl_custom_user);
	default:
		return cl_self.slot;
	}
}

static inline void cl_backend_set(uint64_t ctx)
{
	switch (cl_backend) {
	case CTXLEAK_BACKEND_GLOBAL:
		atomic_store_explicit(&cl_global_slot, ctx,
				      memory_order_relaxed);
		break;
	case CTXLEAK_BACKEND_CUSTOM:
		cl_custom_set(cl_custom_user, ctx);
		break;
	case CTXLEAK_BACKEND_OBSERVE: /* the service's storage, not ours */
		break;
	default:
		cl_self.slot = ctx;
	}
}

uint64_t cl_now(void); /* CLOCK_MONOTONIC, ns */
extern pthread_mutex_t cl_registry_mu;
extern struct cl_buf *cl_registry; /* every thread's buffer */
extern _Atomic int64_t cl_budget;  /* bytes of buffer_limit not granted */

/* Emits one record; fills ts and tid. */
void cl_emit(struct proto_record *r);
/* The thread's first record: allocates and registers its buffer. */
struct cl_buf *cl_buf_attach(struct cl_thread *t);
/* Collects what b's thread has published into out; returns the bytes
 * taken; sets *complete to 0 when out of memory left some behind. */
struct cl_bytes;
size_t cl_buf_collect(struct cl_buf *b, struct cl_bytes *out, int *complete);
/* Takes the drops not yet reported; returns their count. */
uint64_t cl_buf_take_drops(struct cl_buf *b, uint64_t *since);
void cl_buf_free(struct cl_buf *b);
void cl_buf_reset_thread(struct cl_thread *t);
void cl_buf_init_process(void);
void cl_buf_after_fork(void);  /* discard every inherited buffer */
void cl_buf_fence(void);       /* the shipper's half of the busy handshake */
void cl_buf_forget_self(void); /* shutdown freed this thread's buffer */
int cl_buf_all_empty(void);
extern _Atomic uint64_t cl_truncated;
extern _Atomic uint64_t cl_gone_records, cl_gone_dropped; /* freed bufs */
/* Strings longer than CTXLEAK_MAX_STRING are cut; counts the cut. */
struct proto_str cl_str(const char *s);
/* Whether the producer needs a full fence (membarrier unavailable). */
extern int cl_fence_producer;

/* ------------------------------------------------------------ scope.c */

/* What end(x) restores: B and C when x began. */
struct cl_pair {
	uint64_t b, c;
	int root; /* x was a request: its end may complete a batch */
};
uint64_t cl_scope_new_ctx(void); /* unique in the process, never 0 */
/* Remembers x's pair for whichever thread ends x. */
void cl_scope_open(uint64_t x, uint64_t b, uint64_t c, int root);
/* Forgets x's pair into *out: 1 if this process began x and had not
 * ended it (nor evicted it), else 0. */
int cl_scope_close(uint64_t x, struct cl_pair *out);
void cl_scope_new_process(void); /* init, and the child of a fork */
void cl_scope_fork_prepare(void);
void cl_scope_fork_release(void);
extern _Atomic uint64_t cl_scopes_evicted;

/* ------------------------------------------------------------ site.c */

struct cl_site {
	char *file, *func;
	unsigned line;
};
extern pthread_mutex_t cl_site_mu;
unsigned cl_site_register(struct ctxleak_site *s);
static inline unsigned cl_site_id(struct ctxleak_site *s)
{
	unsigned id;

	if (!s)
		return 0;
	/* Acquire: the shipper learns of the site under the site mutex;
	 * this orders its table entry before our record. */
	id = __atomic_load_n(&s->id, __ATOMIC_ACQUIRE);
	return CL_LIKELY(id) ? id : cl_site_register(s);
}
/* Appends SITE records for sites [from, count) to out; returns count. */
unsigned cl_site_encode(struct cl_bytes *out, unsigned from);

/* ------------------------------------------------------------ ship.c */

/* A growable byte array owned by the shipping thread. */
struct cl_bytes {
	unsigned char *p;
	size_t len, cap;
};
int cl_bytes_reserve(struct cl_bytes *b, size_t more);
/* Encodes one record at the end of b; -1 on out of memory. */
int cl_bytes_record(struct cl_bytes *b, const struct proto_record *r);
/* Records in p[0..n) (whole ones, watermarks aside). */
uint64_t cl_records_in(const unsigned char *p, size_t n);

int cl_ship_start(void);
void cl_ship_stop(void);	 /* flush while the daemon takes it, stop */
void cl_ship_wake(void);	 /* a root scope ended: flush soon */
int cl_ship_flush(void);	 /* ctxleak_flush */
void cl_ship_fork_prepare(void); /* takes the locks fork must not split */
void cl_ship_fork_release(void); /* and gives them back, in both */
void cl_ship_after_fork(void);	 /* in the child */
extern int cl_ship_running;	 /* under cl_registry_mu */
void cl_ship_stats(struct ctxleak_stats *out);
extern uint64_t cl_instance;

#endif /* CTXLEAK_CLIENT_H */
