/*
 * backend.c: the propagation backends (B of docs/DESIGN.md's table) and the
 * choice between them.  The slot of the thread and task backends is
 * cl_thread_slot, one per thread; what tells them apart is that api.c
 * switches the task slot on resume and suspend (cl_backend_task_switch).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

enum ctxleak_backend cl_backend = CTXLEAK_BACKEND_THREAD;
_Atomic uint64_t cl_global_slot;
uint64_t (*cl_custom_get)(void *user);
void (*cl_custom_set)(void *user, uint64_t ctx);
void *cl_custom_user;
CL_TLS uint64_t cl_thread_slot;
static char scheduler[64]; /* set by ctxleak_set_scheduler, "" if not */

static const char *const backend_names[] = {
    [CTXLEAK_BACKEND_AUTO] = "auto",	 [CTXLEAK_BACKEND_THREAD] = "thread",
    [CTXLEAK_BACKEND_GLOBAL] = "global", [CTXLEAK_BACKEND_TASK] = "task",
    [CTXLEAK_BACKEND_CUSTOM] = "custom", [CTXLEAK_BACKEND_OBSERVE] = "observe",
};

const char *cl_backend_str(enum ctxleak_backend b)
{
	if ((unsigned)b > CTXLEAK_BACKEND_OBSERVE)
		return "?";
	return backend_names[b];
}

static int backend_parse(const char *s, enum ctxleak_backend *out)
{
	for (unsigned i = 0; i <= CTXLEAK_BACKEND_OBSERVE; i++) {
		if (!strcmp(s, backend_names[i])) {
			*out = (enum ctxleak_backend)i;
			return 0;
		}
	}
	return CTXLEAK_EINVAL;
}

/* Why AUTO became what it did: HELLO carries this to the daemon. */
static void resolve_auto(enum ctxleak_backend *b, char *why, size_t len)
{
	if (scheduler[0]) {
		*b = CTXLEAK_BACKEND_TASK;
		snprintf(why, len, "auto: scheduler integration '%s' installed",
			 scheduler);
	} else {
		*b = CTXLEAK_BACKEND_THREAD;
		snprintf(why, len,
			 "auto: no scheduler integration installed; "
			 "thread-local storage");
	}
}

int cl_backend_choose(const struct ctxleak_options *opt, char *why, size_t len)
{
	enum ctxleak_backend b = opt->backend;
	const char *env = getenv("CTXLEAK_BACKEND");

	if ((unsigned)b > CTXLEAK_BACKEND_OBSERVE)
		return CTXLEAK_EINVAL;
	snprintf(why, len, "chosen by the application");
	if (b == CTXLEAK_BACKEND_AUTO && env && *env) {
		if (backend_parse(env, &b))
			return CTXLEAK_EINVAL;
		snprintf(why, len, "CTXLEAK_BACKEND=%s", env);
	}
	if (b == CTXLEAK_BACKEND_AUTO)
		resolve_auto(&b, why, len);
	if (b == CTXLEAK_BACKEND_CUSTOM || b == CTXLEAK_BACKEND_OBSERVE) {
		if (!opt->custom_get)
			return CTXLEAK_EINVAL;
		cl_custom_get = opt->custom_get;
		cl_custom_user = opt->custom_user;
		/* A getter alone is observe mode: the library reads the
		 * service's storage and never writes it. */
		cl_custom_set =
		    b == CTXLEAK_BACKEND_CUSTOM ? opt->custom_set : NULL;
		if (!cl_custom_set)
			b = CTXLEAK_BACKEND_OBSERVE;
	}
	cl_backend = b;
	return CTXLEAK_OK;
}

int cl_backend_set_scheduler(const char *name, int started)
{
	if (!name || !*name || strlen(name) >= sizeof(scheduler))
		return CTXLEAK_EINVAL;
	if (started)
		return CTXLEAK_EALREADY;
	strcpy(scheduler, name);
	return CTXLEAK_OK;
}
