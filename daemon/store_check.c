/*
 * store_check.c: a look for damage when the database opens.
 *
 * A file with corrupt pages (a disk error, a copy taken mid-write, a
 * crash of the machine with the disk cache lying about syncs) would
 * otherwise be written to in silence until a query or an insert runs into
 * the damage.  PRAGMA quick_check reads every page of every table (it
 * skips only the cross-check of indexes against their tables that
 * integrity_check adds), which on a large file takes longer than a start
 * may: a progress handler stops it at QUICK_CHECK_MS, and the log says
 * then that the check did not finish.  Damage is a warning, not a reason
 * not to start: the daemon that refuses to run loses every record the
 * workers send meanwhile, and the operator decides about the file.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/* About 1 GB of pages read from a warm cache on a small VM. */
#define QUICK_CHECK_MS 2000
/* Problems listed; the first is logged, the count says the rest. */
#define QUICK_CHECK_MAX 100
/* VM instructions between looks at the clock. */
#define PROGRESS_OPS 10000

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Nonzero interrupts the statement: the deadline has passed. */
static int past_deadline(void *arg)
{
	return now_ms() >= *(const uint64_t *)arg;
}

void store_quick_check(sqlite3 *db, const char *path)
{
	char sql[64], first[512] = "";
	uint64_t deadline = now_ms() + QUICK_CHECK_MS;
	sqlite3_stmt *st;
	unsigned problems = 0;
	const char *row;
	int rc;

	snprintf(sql, sizeof sql, "PRAGMA quick_check(%d)", QUICK_CHECK_MAX);
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		log_warn("database %s: cannot check it for damage: %s", path,
			 sqlite3_errmsg(db));
		return;
	}
	sqlite3_progress_handler(db, PROGRESS_OPS, past_deadline, &deadline);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row = (const char *)sqlite3_column_text(st, 0);
		if (row == NULL || (problems == 0 && strcmp(row, "ok") == 0))
			continue;
		if (problems++ == 0)
			snprintf(first, sizeof first, "%s", row);
	}
	sqlite3_progress_handler(db, 0, NULL, NULL);
	sqlite3_finalize(st);
	if (problems > 0)
		log_warn("database %s is damaged: PRAGMA quick_check found "
			 "%u%s problem(s), the first: %s; ctxleakd goes on, "
			 "but rows on the damaged pages may be lost: stop it "
			 "and recover the file (sqlite3 .recover)",
			 path, problems,
			 problems >= QUICK_CHECK_MAX ? " or more" : "", first);
	else if ((rc & 0xff) == SQLITE_INTERRUPT)
		log_info("database %s: check for damage not finished within "
			 "%d ms; the part read was sound",
			 path, QUICK_CHECK_MS);
	else if (rc != SQLITE_DONE)
		log_warn("database %s is damaged: PRAGMA quick_check failed: "
			 "%s; ctxleakd goes on, but rows on the damaged pages "
			 "may be lost: stop it and recover the file (sqlite3 "
			 ".recover)",
			 path, sqlite3_errstr(rc));
}
