/*
 * example.h: what every example worker shares: reading the request count
 * from the command line, starting libctxleak, and the rule that an example
 * exits 0 whether or not a daemon is listening (the library never makes
 * its host fail).
 */
#ifndef CTXLEAK_EXAMPLE_H
#define CTXLEAK_EXAMPLE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxleak.h"

/* The last argument, when it is a number, is how many requests to serve. */
static inline unsigned example_requests(int argc, char **argv, unsigned def)
{
	char *end;
	unsigned long n;

	if (argc < 2 || argv[argc - 1][0] == '-')
		return def;
	errno = 0;
	n = strtoul(argv[argc - 1], &end, 10);
	if (errno || *end || n == 0 || n > 10000000) {
		fprintf(stderr, "%s: bad request count '%s'\n", argv[0],
			argv[argc - 1]);
		exit(2);
	}
	return (unsigned)n;
}

/* opt NULL: everything from the environment (CTXLEAK_SOCKET,
 * CTXLEAK_BACKEND, CTXLEAK_APP).  A library that cannot start is reported
 * and the example serves its requests anyway, as a real service would. */
static inline void example_start(const char *prog,
				 const struct ctxleak_options *opt)
{
	int rc = ctxleak_init(opt);

	if (rc != CTXLEAK_OK && rc != CTXLEAK_EDISABLED)
		fprintf(stderr, "%s: ctxleak_init: %s\n", prog,
			ctxleak_strerror(rc));
}

static inline void example_fail(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

#endif /* CTXLEAK_EXAMPLE_H */
