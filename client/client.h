/*
 * client.h: the internal header of libctxleak.  Every client source file
 * includes it, and only it, for the declarations of the other files.
 * Internal names start with cl_; only ctxleak_* leaves the shared library.
 *
 * The files form a stack, one section each below, from the top:
 *
 *     api.c                       the public calls, init, shutdown, fork
 *     ship.c                      the connection and the shipping thread
 *     site.c, buffer.c            call sites; per-thread record buffers
 *     scope.c, backend.c          saved pairs and ctx numbers; B's slots
 *     proto/                      the wire format (proto.h)
 *
 * A file calls only files below it (site.c beside buffer.c uses its two
 * leaf helpers, cl_now and cl_str), and owns the state it uses: the others
 * reach that state through its functions.  Where a lower file must
 * tell a higher one something (a thread exited), it calls a function the
 * higher one handed it, never the higher file by name.
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

/*
 * Layer 1, the top: the public calls (ctxleak.h) and the thread's truth
 * (C, the resume stack).  Calls every file below; none calls it.  It
 * declares nothing here.
 */

/* ------------------------------------------------------------ ship.c */

/*
 * Layer 2: the connection to ctxleakd and the shipping thread.  Called by
 * api.c; calls buffer.c, site.c, backend.c and proto/.
 */

/* The library's settings, fixed at init (the child of a fork keeps them). */
struct cl_config {
	char socket_path[108]; /* sizeof sun_path */
	char app[256];
	char reason[160]; /* why the backend was chosen, for HELLO */
	size_t buffer_limit;
	uint32_t flush_interval_ms;
};

int cl_ship_start(const struct cl_config *c); /* keeps a copy of *c */
void cl_ship_stop(void);	 /* flush while the daemon takes it, stop */
void cl_ship_wake(void);	 /* a root scope ended: flush soon */
int cl_ship_flush(void);	 /* ctxleak_flush */
void cl_ship_fork_prepare(void); /* takes the locks fork must not split */
void cl_ship_fork_release(void); /* and gives them back, in both */
int cl_ship_after_fork(void);	 /* in the child; as cl_ship_start */
void cl_ship_stats(struct ctxleak_stats *out); /* adds to the buffers' */

/* ------------------------------------------------------------ site.c */

/*
 * Layer 3, beside buffer.c: the call-site table.  Called by api.c (IDs)
 * and ship.c (SITE records); calls buffer.c's cl_now and cl_str, and
 * proto/.
 */

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

/* ------------------------------------------------------------ buffer.c */

/*
 * Layer 3: the per-thread record buffers (the hot path) and their
 * registry.  Called by api.c (records), ship.c (collection) and site.c
 * (cl_now, cl_str); calls proto/ only, and the layer above through the
 * functions it was handed: a thread's exit tells api.c (thread_gone of
 * cl_buf_init_process) and the shipper (wake of cl_buf_consumer_start).
 */

uint64_t cl_now(void); /* CLOCK_MONOTONIC, ns */
/* Strings longer than CTXLEAK_MAX_STRING are cut; counts the cut. */
struct proto_str cl_str(const char *s);
/* Emits one record; fills ts and tid. */
void cl_emit(struct proto_record *r);

/* At init: limit is the bytes buffered at most; thread_gone is called
 * on a thread whose buffer goes with it at its exit. */
void cl_buf_init_process(size_t limit, void (*thread_gone)(void));
void cl_buf_after_fork(void); /* discard every inherited buffer */
void cl_buf_fork_prepare(void);
void cl_buf_fork_release(void);

/* While a consumer runs, exiting threads leave their buffer to it and
 * call wake; cl_buf_consumer_stop frees what it left, and this thread's. */
void cl_buf_consumer_start(void (*wake)(void));
void cl_buf_consumer_stop(void);
/* Appends every thread's published records to out, passes each thread's
 * drops not yet reported to note_drops, and frees the buffers of threads
 * that exited once they are drained; returns the watermark W (ship.c).
 * Sets *complete to 0 when out of memory left some behind. */
uint64_t cl_buf_collect_all(struct proto_bytes *out, int *complete,
			    void (*note_drops)(uint64_t n, uint64_t since));
void cl_buf_give_back(size_t bytes); /* committed: back to the budget */
int cl_buf_all_empty(void);
/* Fills records, dropped (of the threads) and truncated. */
void cl_buf_stats(struct ctxleak_stats *out);

/* ------------------------------------------------------------ scope.c */

/*
 * Layer 4: ctx numbers and the process-wide saved pairs.  Called by
 * api.c; calls proto/ only.
 */

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

/* ------------------------------------------------------------ backend.c */

/*
 * Layer 4: the propagation backends, B of docs/DESIGN.md's table.  Called by
 * api.c (B, the choice) and ship.c (the name for HELLO); calls nothing.
 */

extern enum ctxleak_backend cl_backend;
extern _Atomic uint64_t cl_global_slot;
extern uint64_t (*cl_custom_get)(void *user);
extern void (*cl_custom_set)(void *user, uint64_t ctx);
extern void *cl_custom_user;
extern CL_TLS uint64_t cl_thread_slot; /* of the thread and task backends */

/* Resolves AUTO, checks the custom hooks, says why in `why`. */
int cl_backend_choose(const struct ctxleak_options *opt, char *why, size_t len);
const char *cl_backend_str(enum ctxleak_backend b);
/* ctxleak_set_scheduler; started: the library runs (choice made). */
int cl_backend_set_scheduler(const char *name, int started);

/* The backend's slot: B of docs/DESIGN.md's table. */
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
		return cl_thread_slot;
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
		cl_thread_slot = ctx;
	}
}

/* Resume and suspend switch the task backend's slot to ctx. */
static inline void cl_backend_task_switch(uint64_t ctx)
{
	if (cl_backend == CTXLEAK_BACKEND_TASK)
		cl_thread_slot = ctx;
}

/* The thread starts afresh: its slot too. */
static inline void cl_backend_thread_reset(void)
{
	cl_thread_slot = 0;
}

#endif /* CTXLEAK_CLIENT_H */
