/*
 * coroutines.c: cooperative coroutines on one thread (ucontext), each
 * serving one request and yielding while it waits, the C counterpart of
 * green threads.
 *
 * The application keeps "the current coroutine's request" in its own
 * storage, and libctxleak checks that storage through the custom backend's
 * hooks (CTXLEAK_BACKEND=custom).  By default the scheduler forgets to
 * switch that storage, so every coroutine sees the request of whichever
 * ran last; with --fixed it saves and restores it at each switch, like a
 * contextvar per task, and the requests keep to themselves.  Under the
 * thread, global and task backends the hooks are unused and the example
 * behaves as those backends do.
 *
 * Whatever the storage does, the scheduler carries the truth: it captures
 * each coroutine's context when it yields and resumes it when it runs.
 *
 * usage: coroutines [--fixed] [REQUESTS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "example.h"

#define BATCH	   16
#define STACK_SIZE (256 * 1024)

struct coroutine {
	ucontext_t context;
	unsigned id;
	int done;
	uint64_t token;	  /* its true context while it is switched out */
	uint64_t request; /* its saved storage (--fixed) */
	void *stack;
};

struct scheduler {
	ucontext_t context;
	int fixed;
	struct coroutine *running;
	struct coroutine batch[BATCH];
};

static struct scheduler sched;

/* The application's storage for "the current coroutine's request". */
static uint64_t current_request;

static uint64_t storage_get(void *user)
{
	return *(uint64_t *)user;
}

static void storage_set(void *user, uint64_t ctx)
{
	*(uint64_t *)user = ctx;
}

static void yield(void)
{
	swapcontext(&sched.running->context, &sched.context);
}

static void serve(void)
{
	struct coroutine *co = sched.running;
	char item[32];
	uint64_t request, query;

	snprintf(item, sizeof(item), "item-%u", co->id);
	request = ctxleak_begin("GET /item");
	ctxleak_tag("item", item);
	yield();
	query = ctxleak_begin_child("db.query");
	ctxleak_event("db.rows", "1 row");
	yield();
	ctxleak_end(query);
	ctxleak_tag("status", "200");
	ctxleak_end(request);
	co->done = 1;
}

static void spawn(struct coroutine *co, unsigned id)
{
	co->id = id;
	co->done = 0;
	co->request = 0;
	co->token = ctxleak_capture();
	getcontext(&co->context);
	co->context.uc_stack.ss_sp = co->stack;
	co->context.uc_stack.ss_size = STACK_SIZE;
	co->context.uc_link = &sched.context;
	makecontext(&co->context, serve, 0);
}

static void run(struct coroutine *co)
{
	if (sched.fixed)
		current_request = co->request;
	sched.running = co;
	ctxleak_resume(co->token);
	swapcontext(&sched.context, &co->context);
	co->token = ctxleak_capture();
	ctxleak_suspend();
	sched.running = NULL;
	if (sched.fixed) {
		co->request = current_request;
		current_request = 0;
	}
}

/* Round robin until every coroutine of the batch has finished. */
static void run_batch(unsigned first, unsigned count)
{
	unsigned i, live = count;

	for (i = 0; i < count; i++)
		spawn(&sched.batch[i], first + i);
	while (live) {
		for (i = 0; i < count; i++) {
			if (sched.batch[i].done)
				continue;
			run(&sched.batch[i]);
			live -= sched.batch[i].done;
		}
	}
}

int main(int argc, char **argv)
{
	unsigned requests = example_requests(argc, argv, 1000);
	struct ctxleak_options opt;
	unsigned i, done;

	sched.fixed = argc > 1 && strcmp(argv[1], "--fixed") == 0;
	for (i = 0; i < BATCH; i++)
		if (!(sched.batch[i].stack = malloc(STACK_SIZE)))
			example_fail("malloc");
	ctxleak_options_init(&opt);
	opt.custom_get = storage_get;
	opt.custom_set = storage_set;
	opt.custom_user = &current_request;
	ctxleak_set_scheduler("ucontext");
	example_start("coroutines", &opt);

	for (done = 0; done < requests; done += BATCH)
		run_batch(done,
			  requests - done < BATCH ? requests - done : BATCH);
	printf("coroutines: %u requests, %u at a time on one thread, "
	       "backend %s, storage %s\n",
	       requests, BATCH, ctxleak_backend_name(),
	       sched.fixed ? "switched per coroutine" : "one variable");
	for (i = 0; i < BATCH; i++)
		free(sched.batch[i].stack);
	ctxleak_shutdown();
	return 0;
}
