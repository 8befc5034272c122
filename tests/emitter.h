/*
 * emitter.h: client children that emit requests steadily until the test
 * tells them to stop, and report what they produced.  Their figures live
 * in memory shared with the test (mmap), so the test reads them while
 * they run and after they exit.
 */
#ifndef CTXLEAK_EMITTER_H
#define CTXLEAK_EMITTER_H

#include <stdint.h>
#include <sys/types.h>

#include "ctxleak.h"
#include "harness.h"

/* Records of one request: BEGIN, TAG, EVENT, END. */
#define EMITTER_RECORDS 4
#define EMITTERS_MAX	8

struct emitters;

/* What one client saw. */
struct emitter {
	struct emitters *set; /* its set, for the flags */
	pid_t pid;	      /* the client, once it shut down */
	/* Records made; the library's own count leaves out what it
	 * dropped. */
	_Atomic uint64_t produced;
	_Atomic uint64_t sent_bytes; /* the library's, published as it goes */
	_Atomic int idle;	     /* stopped emitting and flushed (hold) */
	struct ctxleak_stats st;     /* after shutdown */
};

/* Clients that stop together.  With hold, a client that stopped emitting
 * flushes and waits for quit before it shuts down: in between, the test
 * can wait for the daemon to have what they sent, so that no shutdown
 * gives up on a daemon that is only slow. */
struct emitters {
	_Atomic int stop, quit; /* set by the test */
	int hold;
	int pause_us; /* between requests; ten times that under valgrind
			 (CTXLEAK_TEST_SLOW), at a pace its daemon keeps up
			 with */
	pid_t test;   /* a client whose test died stops too */
	int n;
	struct emitter e[EMITTERS_MAX];
};

/* n clients' worth of shared memory, none started; fails the test when
 * there is none.  emitters_free unmaps it. */
struct emitters *emitters_new(int n, int pause_us, int hold);
void emitters_free(struct emitters *s);
/* A set of one, without hold: its client; emitters_free(e->set). */
struct emitter *emitter_new(int pause_us);

/* Start client i of s under backend (harness_client_spawn); its pid. */
pid_t emitters_spawn(const struct harness_daemon *d, struct emitters *s, int i,
		     enum ctxleak_backend backend);

/* A harness_client_fn on a struct emitter: 'GET /emit' requests every
 * pause_us until stop, then shut down (after quit, with hold) and report
 * the library's counters. */
int emit_until_stopped(void *arg);
/* A harness_client_fn on a struct emitter: ten requests (40 records),
 * shipped, and the report. */
int emit_batch(void *arg);

/* Until e produced want records, or fail. */
void emitter_wait_produced(struct emitter *e, uint64_t want);

/* What the daemon of d says of e's process, found by its pid (once it
 * shut down), or the test fails: a column of its processes row (records,
 * dropped, connections), and the rows of the records table it stored. */
int64_t emitter_process(const struct harness_daemon *d, const struct emitter *e,
			const char *column);
int64_t emitter_stored(const struct harness_daemon *d, const struct emitter *e);

#endif /* CTXLEAK_EMITTER_H */
