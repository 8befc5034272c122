/*
 * ctxleak.h: the public API of libctxleak.
 *
 * A worker process calls ctxleak_init() once, then marks its requests with
 * ctxleak_begin()/ctxleak_end(), tags and events with ctxleak_tag() and
 * ctxleak_event(), and carries the true context across callbacks and
 * threads with ctxleak_capture()/ctxleak_resume()/ctxleak_suspend().  Every
 * call is tagged with the context ID that the chosen propagation backend
 * says is current, and with the true one; ctxleakd compares the two.
 *
 * Every function is safe from any thread, never blocks on the daemon,
 * never raises SIGPIPE, and is a cheap no-op before ctxleak_init(), after
 * ctxleak_shutdown(), or with CTXLEAK_DISABLE=1.
 *
 * The call-site macros (ctxleak_begin, ctxleak_tag, ...) record file, line
 * and function so that findings are grouped by site.  The same names exist
 * as plain functions, without a site, for other languages and for taking
 * their address: write (ctxleak_begin)(name).
 */
#ifndef CTXLEAK_H
#define CTXLEAK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The Makefile's VERSION: the build stops when these two say otherwise. */
#define CTXLEAK_VERSION_STRING "0.1.0"
#define CTXLEAK_VERSION_NUMBER 0x000100 /* 0xMMmmpp */

/* Which storage says what the current ctx is. */
enum ctxleak_backend {
	CTXLEAK_BACKEND_AUTO = 0, /* task if a scheduler integration is
				     installed, else thread */
	CTXLEAK_BACKEND_THREAD,	  /* thread-local */
	CTXLEAK_BACKEND_GLOBAL,	  /* one per process */
	CTXLEAK_BACKEND_TASK,	  /* follows resume/suspend (correct) */
	CTXLEAK_BACKEND_CUSTOM,	  /* the application's own, via hooks */
	CTXLEAK_BACKEND_OBSERVE,  /* the application's own storage, read
				     through custom_get and never written:
				     the same as CUSTOM with custom_set
				     NULL (HELLO says "observe") */
};

/* Results of the functions that return int. */
enum ctxleak_error {
	CTXLEAK_OK = 0,
	CTXLEAK_EINVAL = -1,	/* a bad option or argument */
	CTXLEAK_ENOMEM = -2,	/* out of memory */
	CTXLEAK_EALREADY = -3,	/* already initialised */
	CTXLEAK_EDISABLED = -4, /* CTXLEAK_DISABLE=1: every call is a no-op */
	CTXLEAK_ESYS = -5,	/* a system call failed (see errno) */
	CTXLEAK_ENOTINIT = -6,	/* not initialised */
};

/*
 * Options for ctxleak_init().  Fill with ctxleak_options_init() first, so
 * that fields added in later versions get their defaults.  A field left at
 * its default takes the environment's value when there is one:
 * CTXLEAK_SOCKET, CTXLEAK_BACKEND (thread|global|task|custom|observe|auto;
 * custom and observe need custom_get), CTXLEAK_APP.
 *
 * Observe mode, the main use: set custom_get to a function that reads the
 * service's own storage (its thread-local, global, coroutine slot, another
 * SDK's scope) and leave custom_set NULL.  Every record then carries what
 * that storage says, the library never writes it, and the daemon checks
 * the service's own code.  With custom_set too, the library also writes
 * the storage on begin, end (and nothing else): a storage it keeps there.
 */
struct ctxleak_options {
	uint32_t size;		 /* sizeof(struct ctxleak_options) */
	const char *socket_path; /* NULL: $CTXLEAK_SOCKET, else the default
				    (/run/ctxleak/ctxleak.sock as root,
				    $XDG_RUNTIME_DIR/ctxleak/ctxleak.sock) */
	enum ctxleak_backend backend;
	const char *app;     /* NULL: $CTXLEAK_APP, else the program name */
	size_t buffer_limit; /* bytes buffered, all threads together,
				before records are dropped (and
				counted); 0: 4 MiB */
	uint32_t flush_interval_ms; /* 0: 100 ms */
	/* The custom and observe backends: the application's own storage.
	 * custom_get is required; custom_set NULL is observe mode. */
	uint64_t (*custom_get)(void *user);
	void (*custom_set)(void *user, uint64_t ctx);
	void *custom_user;
};

void ctxleak_options_init(struct ctxleak_options *opt);

/* Start the library.  opt NULL: defaults and environment.  Returns
 * CTXLEAK_OK (also when the daemon is not there yet: records are buffered
 * and sent once it is), CTXLEAK_EDISABLED, CTXLEAK_EALREADY, CTXLEAK_EINVAL
 * or CTXLEAK_ENOMEM.  The library starts once per process: after
 * ctxleak_shutdown() it stays off and ctxleak_init() returns
 * CTXLEAK_EALREADY. */
int ctxleak_init(const struct ctxleak_options *opt);

/* Flush what is buffered (waiting at most a short while for the daemon),
 * close, stop the background thread.  Idempotent.  Also run at exit. */
void ctxleak_shutdown(void);

/*
 * Declare that the application carries context across its scheduler with
 * capture/resume (for example through ctxleak_event.h): the `auto` backend
 * then picks `task`, and HELLO says why.  Call before ctxleak_init().
 * Returns CTXLEAK_OK, CTXLEAK_EINVAL (name NULL, empty or over 63 bytes)
 * or CTXLEAK_EALREADY (after init).
 */
int ctxleak_set_scheduler(const char *name);

const char *ctxleak_strerror(int err);
const char *ctxleak_version(void);
/* The backend in use ("thread", "observe", ...; "none" before init). */
const char *ctxleak_backend_name(void);

/* Counters since init, for tests and health checks. */
struct ctxleak_stats {
	uint64_t records;    /* records produced */
	uint64_t dropped;    /* at the buffer limit, unsent at shutdown, or
				lost when a daemon was killed */
	uint64_t sent_bytes; /* bytes the daemon's socket accepted */
	uint64_t connects;   /* connections made */
	uint64_t truncated;  /* strings cut to CTXLEAK_MAX_STRING */
	uint64_t connected;  /* 1 while a daemon has the connection */
	uint64_t evicted;    /* open scopes forgotten at the process-wide
				bound on scopes that never end: their end
				restores nothing */
};
void ctxleak_stats(struct ctxleak_stats *out);

/* Longer strings are cut to this many bytes (and counted). */
#define CTXLEAK_MAX_STRING 4096

/* ---------------------------------------------------------------- sites */

/* One per call site, made by the macros below; treat as opaque. */
struct ctxleak_site {
	const char *file;
	const char *func;
	unsigned line;
	unsigned id; /* assigned by the library on first use */
};

#if defined(__GNUC__) || defined(__clang__)
#define CTXLEAK_SITE_HERE                                                      \
	(__extension__({                                                       \
		static struct ctxleak_site ctxleak_site_ = {                   \
		    __FILE__, __func__, __LINE__, 0};                          \
		&ctxleak_site_;                                                \
	}))
#else
#define CTXLEAK_SITE_HERE ((struct ctxleak_site *)0)
#endif

/* ----------------------------------------------------------------- core */

/* A new request (root scope); it becomes current.  Returns its ctx
 * (nonzero), or 0 when the library is off. */
uint64_t ctxleak_begin_at(struct ctxleak_site *site, const char *name);
/* A child scope of the current one (a request of its own when there is
 * none). */
uint64_t ctxleak_begin_child_at(struct ctxleak_site *site, const char *name);
/* End a scope; what was current before it is restored.  An unknown ctx is
 * still reported (the daemon calls it misnest); 0 is ignored.  What to
 * restore is known to the whole process: a scope begun on one thread and
 * ended on another restores its pair (the backend's ctx and the true ctx
 * at its begin) into the ending thread's slots, as `cur = req->saved`
 * would.  A ctx this process did not begin, or already ended, leaves both
 * as they are. */
void ctxleak_end_at(struct ctxleak_site *site, uint64_t ctx);
/* A tag on the current scope.  key NULL: ignored; value NULL: nil. */
void ctxleak_tag_at(struct ctxleak_site *site, const char *key,
		    const char *value);
/* An event in the current scope.  name NULL: ignored; message NULL: nil. */
void ctxleak_event_at(struct ctxleak_site *site, const char *name,
		      const char *message);
/* Enter a continuation of token (from ctxleak_capture); leave it with
 * ctxleak_suspend.  Nest as deep as needed. */
void ctxleak_resume_at(struct ctxleak_site *site, uint64_t token);
/* Without a matching resume on this thread: reported, nothing restored. */
void ctxleak_suspend_at(struct ctxleak_site *site);

/* The true ctx, to carry across a boundary (callback, queue, thread). */
uint64_t ctxleak_capture(void);
/* The backend's current ctx (0: none). */
uint64_t ctxleak_current(void);
/* Ship what is buffered now: returns once the library's thread has taken
 * it into a batch and offered it to the socket (or found no daemon), or
 * after 1 s; it never waits for the daemon to read.  Returns CTXLEAK_OK,
 * or CTXLEAK_ENOTINIT. */
int ctxleak_flush(void);

/* Without a site, for FFI and function pointers. */
uint64_t ctxleak_begin(const char *name);
uint64_t ctxleak_begin_child(const char *name);
void ctxleak_end(uint64_t ctx);
void ctxleak_tag(const char *key, const char *value);
void ctxleak_event(const char *name, const char *message);
void ctxleak_resume(uint64_t token);
void ctxleak_suspend(void);

#ifndef CTXLEAK_NO_SITE_MACROS
#define ctxleak_begin(name) ctxleak_begin_at(CTXLEAK_SITE_HERE, (name))
#define ctxleak_begin_child(name)                                              \
	ctxleak_begin_child_at(CTXLEAK_SITE_HERE, (name))
#define ctxleak_end(ctx) ctxleak_end_at(CTXLEAK_SITE_HERE, (ctx))
#define ctxleak_tag(key, value)                                                \
	ctxleak_tag_at(CTXLEAK_SITE_HERE, (key), (value))
#define ctxleak_event(name, message)                                           \
	ctxleak_event_at(CTXLEAK_SITE_HERE, (name), (message))
#define ctxleak_resume(token) ctxleak_resume_at(CTXLEAK_SITE_HERE, (token))
#define ctxleak_suspend()     ctxleak_suspend_at(CTXLEAK_SITE_HERE)
#endif

#ifdef __cplusplus
}
#endif

#endif /* CTXLEAK_H */
