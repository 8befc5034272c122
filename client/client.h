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

/* Emits one record; fills ts and tid. */
void cl_emit(struct proto_record *r);
/* The thread's first record: allocates and registers its buffer. */
struct cl_buf *cl_buf_attach(struct cl_thread *t);
/* Appends every thread's published records to out, passes each
 * thread's drops not yet reported to note_drops, and frees the buffers of
 * threads that exited once they are drained; returns the watermark W
 * (ship.c).  Sets *complete to 0 when out of memory left some behind. */
uint64_t cl_buf_collect_all(struct proto_bytes *out, int *complete,
			    void (*note_drops)(uint64_t n, uint64_t since));
void cl_buf_give_back(size_t bytes); /* committed: back to the budget */
/* While a consumer runs, exiting threads leave their buffer to it and
 * call wake; cl_buf_consumer_stop frees what it left. */
void cl_buf_consumer_start(void (*wake)(void));
void cl_buf_consumer_stop(void);
void cl_buf_reset_thread(struct cl_thread *t);
void cl_buf_init_process(size_t limit); /* limit: bytes buffered at most */
void cl_buf_after_fork(void); /* discard every inherited buffer */
int cl_buf_all_empty(void);
/* Fills records, dropped (of the threads) and truncated. */
void cl_buf_stats(struct ctxleak_stats *out);
void cl_buf_fork_prepare(void);
void cl_buf_fork_release(void);
/* Strings longer than CTXLEAK_MAX_STRING are cut; counts the cut. */
struct proto_str cl_str(const char *s);

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
unsigned cl_site_encode(struct proto_bytes *out, unsigned from);
void cl_site_fork_prepare(void);
void cl_site_fork_release(void);

/* ------------------------------------------------------------ ship.c */

int cl_ship_start(void);
void cl_ship_stop(void);	 /* flush while the daemon takes it, stop */
void cl_ship_wake(void);	 /* a root scope ended: flush soon */
int cl_ship_flush(void);	 /* ctxleak_flush */
void cl_ship_fork_prepare(void); /* takes the locks fork must not split */
void cl_ship_fork_release(void); /* and gives them back, in both */
int cl_ship_after_fork(void);	 /* in the child; as cl_ship_start */
void cl_ship_stats(struct ctxleak_stats *out); /* adds to the buffers' */
extern uint64_t cl_instance;

#endif /* CTXLEAK_CLIENT_H */
