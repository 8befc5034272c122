/*
 * emitter.c: client children that emit until told to stop (see
 * emitter.h).
 */
#include <check.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emitter.h"
#include "harness_check.h"

struct emitters *emitters_new(int n, int pause_us, int hold)
{
	struct emitters *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(s, MAP_FAILED);
	ck_assert_int_le(n, EMITTERS_MAX);
	memset(s, 0, sizeof *s);
	s->hold = hold;
	s->pause_us = getenv("CTXLEAK_TEST_SLOW") ? 10 * pause_us : pause_us;
	s->test = getpid();
	s->n = n;
	for (int i = 0; i < n; i++)
		s->e[i].set = s;
	return s;
}

void emitters_free(struct emitters *s)
{
	munmap(s, sizeof *s);
}

struct emitter *emitter_new(int pause_us)
{
	return &emitters_new(1, pause_us, 0)->e[0];
}

pid_t emitters_spawn(const struct harness_daemon *d, struct emitters *s, int i,
		     enum ctxleak_backend backend)
{
	pid_t pid =
	    harness_client_spawn(d, backend, emit_until_stopped, &s->e[i]);

	ck_assert_msg(pid > 0, "%s", harness_error());
	return pid;
}

static int told(const struct emitters *s, const _Atomic int *flag)
{
	return atomic_load(flag) || getppid() != s->test;
}

/* One correct request (no finding under any backend). */
static void one_request(struct emitter *e)
{
	struct ctxleak_stats st;
	uint64_t ctx = ctxleak_begin("GET /emit");

	ctxleak_tag("k", "v");
	ctxleak_event("e", NULL);
	ctxleak_end(ctx);
	atomic_fetch_add(&e->produced, EMITTER_RECORDS);
	ctxleak_stats(&st);
	atomic_store(&e->sent_bytes, st.sent_bytes);
}

static void report(struct emitter *e)
{
	ctxleak_shutdown();
	ctxleak_stats(&e->st);
	e->pid = getpid();
}

int emit_until_stopped(void *arg)
{
	struct emitter *e = arg;
	struct emitters *s = e->set;

	while (!told(s, &s->stop)) {
		one_request(e);
		usleep((useconds_t)s->pause_us);
	}
	if (s->hold) {
		ctxleak_flush();
		atomic_store(&e->idle, 1);
		while (!told(s, &s->quit))
			harness_sleep_ms(1);
	}
	report(e);
	return 0;
}

int emit_batch(void *arg)
{
	for (int i = 0; i < 10; i++)
		one_request(arg);
	report(arg);
	return 0;
}

void emitter_wait_produced(struct emitter *e, uint64_t want)
{
	for (int i = 0; i < HARNESS_TIMEOUT_SEC * 100; i++) {
		if (atomic_load(&e->produced) >= want)
			return;
		harness_sleep_ms(10);
	}
	ck_abort_msg("the client produced %llu records, not %llu",
		     (unsigned long long)atomic_load(&e->produced),
		     (unsigned long long)want);
}

int64_t emitter_process(const struct harness_daemon *d, const struct emitter *e,
			const char *column)
{
	return query_int(d, "SELECT %s FROM processes WHERE pid = %d", column,
			 (int)e->pid);
}

int64_t emitter_stored(const struct harness_daemon *d, const struct emitter *e)
{
	return query_int(d,
			 "SELECT count(*) FROM records WHERE process_id = "
			 "(SELECT id FROM processes WHERE pid = %d)",
			 (int)e->pid);
}
