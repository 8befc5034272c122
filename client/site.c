/*
 * site.c: call sites.  Each struct ctxleak_site (one static per call site,
 * made by the macros of ctxleak.h) gets a process-lifetime ID on first use,
 * registered once into an append-only table under a mutex.  The table
 * keeps copies of the strings, so a site of an unloaded module stays
 * printable.  The shipper sends a site's SITE record on each connection
 * before the first batch that may refer to it (ship.c).
 */
#include <stdlib.h>
#include <string.h>

#include "client.h"

struct cl_site {
	char *file, *func;
	unsigned line;
};

static pthread_mutex_t site_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cl_site *sites; /* sites[id - 1] */
static unsigned nsites, sites_cap;

static int site_append(const struct ctxleak_site *s)
{
	struct cl_site *grown, *e;

	if (nsites == sites_cap) {
		unsigned cap = sites_cap ? sites_cap * 2 : 64;

		grown = realloc(sites, cap * sizeof(*sites));
		if (!grown)
			return -1;
		sites = grown;
		sites_cap = cap;
	}
	e = &sites[nsites];
	e->file = strdup(s->file ? s->file : "?");
	e->func = strdup(s->func ? s->func : "?");
	e->line = s->line;
	if (!e->file || !e->func) {
		free(e->file);
		free(e->func);
		return -1;
	}
	return (int)++nsites;
}

/* Out of memory: 0, the record goes out without a site. */
unsigned cl_site_register(struct ctxleak_site *s)
{
	unsigned id;
	int added;

	pthread_mutex_lock(&site_mu);
	id = __atomic_load_n(&s->id, __ATOMIC_RELAXED);
	if (!id && (added = site_append(s)) > 0) {
		id = (unsigned)added;
		__atomic_store_n(&s->id, id, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&site_mu);
	return id;
}

unsigned cl_site_encode(struct proto_bytes *out, unsigned from)
{
	struct proto_record r = {.type = PROTO_SITE};
	unsigned id;

	pthread_mutex_lock(&site_mu);
	r.ts = cl_now();
	for (id = from + 1; id <= nsites; id++) {
		r.site = id;
		r.file = cl_str(sites[id - 1].file);
		r.func = cl_str(sites[id - 1].func);
		r.line = sites[id - 1].line;
		if (proto_bytes_record(out, &r))
			break;
	}
	pthread_mutex_unlock(&site_mu);
	return id - 1;
}

/* fork() must not split the table's lock from the table. */
void cl_site_fork_prepare(void)
{
	pthread_mutex_lock(&site_mu);
}

void cl_site_fork_release(void)
{
	pthread_mutex_unlock(&site_mu);
}
