/*
 * api.c: the public calls of libctxleak and the per-thread truth tracking
 * behind them: docs/DESIGN.md's table "Exact effect of each call", with
 * B = the backend's slot (backend.c) and C = self.cause.  Also init,
 * shutdown and fork, which set up the other files.
 *
 * Each scope's saved pair (B, C at its begin) is known to the whole
 * process (scope.c): a scope begun on one thread and ended on another
 * restores its pair into the ending thread's slots, as docs/DESIGN.md says.
 * A ctx this process did not begin, or already ended, is still reported,
 * and B and C are then left as they are.
 *
 * The thread's state is used by name (self.x), never through a pointer
 * to it.  Given `t = &self`, GCC 12 with -fsanitize=null tests t for
 * NULL with the flags of the `add x@gottpoff(%rip), %reg` that computes
 * it; linking an executable, ld relaxes that add to a `lea`, which sets no
 * flags, so the check read stale flags and reported a null thread state
 * where there was none (ctxleak_end after scopes ended in begin order).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "common.h"

/* The macros of ctxleak.h would rename the plain functions below. */
#undef ctxleak_begin
#undef ctxleak_begin_child
#undef ctxleak_end
#undef ctxleak_tag
#undef ctxleak_event
#undef ctxleak_resume
#undef ctxleak_suspend

/* Bound on a thread's resume stack, which resumes never suspended would
 * grow forever.  Past it the records still go out; see stack_push. */
#define MAX_DEPTH (1u << 16)

/* 1 between init and shutdown: the one branch every call takes first. */
static _Atomic int enabled;

/* A frame of the resume stack: C and B when the resume came. */
struct frame {
	uint64_t c, b;
};

/* Per-thread truth (the thread's half of docs/DESIGN.md's table, B aside). */
static CL_TLS struct {
	uint64_t cause;	     /* C */
	struct frame *stack; /* the resume stack */
	uint32_t depth, stack_cap;
} self;

static pthread_mutex_t init_mu = PTHREAD_MUTEX_INITIALIZER;
static int started; /* once per process: init after shutdown is refused */

/* ---------------------------------------------------- resume stack */

static void stack_push(uint64_t c, uint64_t b)
{
	if (self.depth == self.stack_cap) {
		uint32_t cap = self.stack_cap ? self.stack_cap * 2 : 16;
		struct frame *grown;

		if (cap > MAX_DEPTH)
			return;
		grown = realloc(self.stack, cap * sizeof(*grown));
		if (!grown)
			return;
		self.stack = grown;
		self.stack_cap = cap;
	}
	self.stack[self.depth++] = (struct frame){c, b};
}

/* The thread is gone (its buffer's exit), or shutdown or a fork's child
 * starts it afresh: what it held goes. */
static void thread_forget(void)
{
	free(self.stack);
	memset(&self, 0, sizeof(self));
	cl_backend_thread_reset();
}

/* ------------------------------------------------------ the calls */

#define RETURN_IF_OFF(v)                                                       \
	do {                                                                   \
		if (CL_UNLIKELY(!atomic_load_explicit(&enabled,                \
						      memory_order_relaxed)))  \
			return v;                                              \
	} while (0)

/*
 * The fields every record has.  The encoder reads only the fields of
 * r->type (proto.h), so the calls set those and leave the rest unset:
 * zeroing the whole struct first would cost more than encoding it.
 */
static inline void head(struct proto_record *r, uint8_t type, uint64_t ctx,
			uint64_t cause, struct ctxleak_site *site)
{
	r->type = type;
	r->ctx = ctx;
	r->cause = cause;
	r->site = cl_site_id(site);
}

static uint64_t begin(struct ctxleak_site *site, const char *name,
		      enum proto_kind kind)
{
	uint64_t x = cl_scope_new_ctx(), b = cl_backend_get();
	struct proto_record r;

	head(&r, PROTO_BEGIN, x, self.cause, site);
	r.prev = b;
	r.kind = (uint8_t)kind;
	r.name = cl_str(name);
	cl_emit(&r);
	cl_scope_open(x, b, self.cause, kind == PROTO_KIND_REQUEST || !b);
	cl_backend_set(x);
	self.cause = x;
	return x;
}

uint64_t ctxleak_begin_at(struct ctxleak_site *site, const char *name)
{
	RETURN_IF_OFF(0);
	return begin(site, name, PROTO_KIND_REQUEST);
}

uint64_t ctxleak_begin_child_at(struct ctxleak_site *site, const char *name)
{
	RETURN_IF_OFF(0);
	return begin(site, name, PROTO_KIND_CHILD);
}

void ctxleak_end_at(struct ctxleak_site *site, uint64_t ctx)
{
	struct proto_record r;
	struct cl_pair saved;

	RETURN_IF_OFF();
	if (!ctx)
		return;
	head(&r, PROTO_END, ctx, self.cause, site);
	r.cur = cl_backend_get();
	cl_emit(&r);
	if (!cl_scope_close(ctx, &saved))
		return;
	cl_backend_set(saved.b);
	self.cause = saved.c;
	if (saved.root)
		cl_ship_wake();
}

void ctxleak_tag_at(struct ctxleak_site *site, const char *key,
		    const char *value)
{
	struct proto_record r;

	RETURN_IF_OFF();
	if (!key)
		return;
	head(&r, PROTO_TAG, cl_backend_get(), self.cause, site);
	r.key = cl_str(key);
	r.value = cl_str(value);
	cl_emit(&r);
}

void ctxleak_event_at(struct ctxleak_site *site, const char *name,
		      const char *message)
{
	struct proto_record r;

	RETURN_IF_OFF();
	if (!name)
		return;
	head(&r, PROTO_EVENT, cl_backend_get(), self.cause, site);
	r.name = cl_str(name);
	r.message = cl_str(message);
	cl_emit(&r);
}

void ctxleak_resume_at(struct ctxleak_site *site, uint64_t token)
{
	struct proto_record r;

	RETURN_IF_OFF();
	head(&r, PROTO_RESUME, cl_backend_get(), token, site);
	cl_emit(&r);
	stack_push(self.cause, r.ctx);
	self.cause = token;
	cl_backend_task_switch(token);
}

/* Without a matching resume the record still goes out and B, C stay. */
void ctxleak_suspend_at(struct ctxleak_site *site)
{
	struct proto_record r;
	struct frame f;

	RETURN_IF_OFF();
	head(&r, PROTO_SUSPEND, cl_backend_get(), self.cause, site);
	cl_emit(&r);
	if (!self.depth)
		return;
	f = self.stack[--self.depth];
	self.cause = f.c;
	cl_backend_task_switch(f.b);
}

uint64_t ctxleak_capture(void)
{
	RETURN_IF_OFF(0);
	return self.cause;
}

uint64_t ctxleak_current(void)
{
	RETURN_IF_OFF(0);
	return cl_backend_get();
}

int ctxleak_flush(void)
{
	if (!atomic_load(&enabled))
		return CTXLEAK_ENOTINIT;
	return cl_ship_flush();
}

uint64_t ctxleak_begin(const char *name)
{
	return ctxleak_begin_at(NULL, name);
}

uint64_t ctxleak_begin_child(const char *name)
{
	return ctxleak_begin_child_at(NULL, name);
}

void ctxleak_end(uint64_t ctx)
{
	ctxleak_end_at(NULL, ctx);
}

void ctxleak_tag(const char *key, const char *value)
{
	ctxleak_tag_at(NULL, key, value);
}

void ctxleak_event(const char *name, const char *message)
{
	ctxleak_event_at(NULL, name, message);
}

void ctxleak_resume(uint64_t token)
{
	ctxleak_resume_at(NULL, token);
}

void ctxleak_suspend(void)
{
	ctxleak_suspend_at(NULL);
}

/* ------------------------------------------------ init and shutdown */

void ctxleak_options_init(struct ctxleak_options *opt)
{
	memset(opt, 0, sizeof(*opt));
	opt->size = sizeof(*opt);
}

static int copy_string(char *dst, size_t cap, const char *src)
{
	if (strlen(src) >= cap)
		return CTXLEAK_EINVAL;
	strcpy(dst, src);
	return CTXLEAK_OK;
}

static const char *option_or_env(const char *value, const char *env)
{
	const char *s = value ? value : getenv(env);

	return s && *s ? s : NULL;
}

static int configure(const struct ctxleak_options *o, struct cl_config *c)
{
	const char *sock = option_or_env(o->socket_path, "CTXLEAK_SOCKET");
	const char *app = option_or_env(o->app, "CTXLEAK_APP");
	int err;

	/* The daemon's default, by the rule of proto/common.h. */
	if (sock)
		err = copy_string(c->socket_path, sizeof(c->socket_path), sock);
	else if (common_default_path(COMMON_SOCKET, c->socket_path,
				     sizeof(c->socket_path)) == -1)
		err = CTXLEAK_EINVAL;
	else
		err = CTXLEAK_OK;
	if (err)
		return err;
	snprintf(c->app, sizeof(c->app), "%s",
		 app ? app : program_invocation_short_name);
	c->buffer_limit = o->buffer_limit ? o->buffer_limit : 4 * 1024 * 1024;
	c->flush_interval_ms =
	    o->flush_interval_ms ? o->flush_interval_ms : 100;
	return cl_backend_choose(o, c->reason, sizeof(c->reason));
}

/* A child of fork reports as a new process (docs/DESIGN.md): new instance,
 * new ctx numbers, and nothing of the parent's buffers. */
static void fork_prepare(void)
{
	pthread_mutex_lock(&init_mu);
	cl_ship_fork_prepare();
	cl_buf_fork_prepare();
	cl_site_fork_prepare();
	cl_scope_fork_prepare();
}

static void fork_release(void)
{
	cl_scope_fork_release();
	cl_site_fork_release();
	cl_buf_fork_release();
	cl_ship_fork_release();
}

static void fork_parent(void)
{
	fork_release();
	pthread_mutex_unlock(&init_mu);
}

static void fork_child(void)
{
	fork_release();
	if (atomic_load(&enabled)) {
		cl_scope_new_process();
		cl_buf_after_fork();
		thread_forget();
		if (cl_ship_after_fork())
			atomic_store(&enabled, 0);
	}
	pthread_mutex_unlock(&init_mu);
}

static void at_exit(void)
{
	ctxleak_shutdown();
}

static int disabled_by_env(void)
{
	const char *s = getenv("CTXLEAK_DISABLE");

	return s && !strcmp(s, "1");
}

int ctxleak_init(const struct ctxleak_options *opt)
{
	struct ctxleak_options o;
	struct cl_config config = {0};
	int err;

	if (disabled_by_env())
		return CTXLEAK_EDISABLED;
	ctxleak_options_init(&o);
	if (opt)
		memcpy(&o, opt,
		       opt->size && opt->size < sizeof(o) ? opt->size
							  : sizeof(o));
	pthread_mutex_lock(&init_mu);
	err = started ? CTXLEAK_EALREADY : configure(&o, &config);
	if (!err) {
		cl_scope_new_process();
		cl_buf_init_process(config.buffer_limit, thread_forget);
		err = cl_ship_start(&config);
	}
	if (!err) {
		started = 1;
		pthread_atfork(fork_prepare, fork_parent, fork_child);
		atexit(at_exit);
		atomic_store(&enabled, 1);
	}
	pthread_mutex_unlock(&init_mu);
	return err;
}

void ctxleak_shutdown(void)
{
	pthread_mutex_lock(&init_mu);
	if (atomic_load(&enabled)) {
		atomic_store(&enabled, 0);
		cl_ship_stop();
		thread_forget();
	}
	pthread_mutex_unlock(&init_mu);
}

void ctxleak_stats(struct ctxleak_stats *out)
{
	memset(out, 0, sizeof(*out));
	cl_buf_stats(out);
	cl_ship_stats(out);
	out->evicted = atomic_load(&cl_scopes_evicted);
}

int ctxleak_set_scheduler(const char *name)
{
	return cl_backend_set_scheduler(name, atomic_load(&enabled));
}

const char *ctxleak_backend_name(void)
{
	if (!atomic_load_explicit(&enabled, memory_order_relaxed))
		return "none";
	return cl_backend_str(cl_backend);
}

const char *ctxleak_version(void)
{
	return CTXLEAK_VERSION_STRING;
}

const char *ctxleak_strerror(int err)
{
	switch (err) {
	case CTXLEAK_OK:
		return "success";
	case CTXLEAK_EINVAL:
		return "invalid option or argument";
	case CTXLEAK_ENOMEM:
		return "out of memory";
	case CTXLEAK_EALREADY:
		return "already initialised";
	case CTXLEAK_EDISABLED:
		return "disabled by CTXLEAK_DISABLE";
	case CTXLEAK_ESYS:
		return "system call failed";
	case CTXLEAK_ENOTINIT:
		return "not initialised";
	}
	return "unknown error";
}
