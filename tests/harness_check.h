/*
 * harness_check.h: the harness seen from a Check test.  harness.h never
 * calls Check (benchmarks use it too); these wrappers turn its failures
 * into test failures with the harness's message.
 */
#ifndef CTXLEAK_HARNESS_CHECK_H
#define CTXLEAK_HARNESS_CHECK_H

#include <check.h>
#include <stdarg.h>
#include <stdio.h>

#include "harness.h"

/* START(&d, "--keep", "all"): the daemon with these arguments, or fail. */
#define START(d, ...)                                                          \
	do {                                                                   \
		const char *args_[] = {__VA_ARGS__, NULL};                     \
		ck_assert_msg(harness_start((d), args_) == 0, "%s",            \
			      harness_error());                                \
	} while (0)

/* The one integer a printf-formed query returns, or fail. */
static inline int64_t query_int(const struct harness_daemon *d, const char *fmt,
				...) __attribute__((format(printf, 2, 3)));

static inline int64_t query_int(const struct harness_daemon *d, const char *fmt,
				...)
{
	char sql[1024];
	va_list ap;
	int64_t v;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof sql, fmt, ap);
	va_end(ap);
	v = harness_query_int(d, sql);
	ck_assert_msg(v != INT64_MIN, "%s", harness_error());
	return v;
}

/* The daemon's open descriptors, or fail: it is gone. */
static inline int daemon_fds(pid_t pid)
{
	int n = harness_fd_count(pid);

	ck_assert_msg(n >= 0, "%s: the daemon is gone", harness_error());
	return n;
}

/* A "kB" field of the daemon's /proc status (VmRSS, VmHWM), or fail. */
static inline long daemon_status_kb(pid_t pid, const char *field)
{
	long kb = harness_status_kb(pid, field);

	ck_assert_msg(kb >= 0, "%s: no %s", harness_error(), field);
	return kb;
}

#endif /* CTXLEAK_HARNESS_CHECK_H */
