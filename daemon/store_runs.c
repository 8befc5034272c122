/*
 * store_runs.c: the daemon's own life in its database, so that a report
 * can say which windows it cannot vouch for.
 *
 * Each ctxleakd that opens the database adds a row to `runs` and, with
 * every commit, notes when it last committed; an orderly stop sets
 * stopped_at.  A row found still running at start belongs to a daemon
 * that died (the lock of store_lock.c says no other one runs): its
 * successor marks it unclean and logs it.  Clients that were running
 * then send again what was not acknowledged (PROTOCOL.md 2.3), but a
 * client that ended while no daemon listened could report neither its
 * records nor its drops: so the window from the dead daemon's last
 * commit to its successor's start is incomplete, and `ctxleak summary`
 * says so instead of calling the counts complete.
 */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ctxleakd.h"

static int64_t wall_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Logs each run its predecessors left unfinished, and marks it. */
static void mark_unclean(sqlite3 *db)
{
	sqlite3_stmt *st;

	if (sqlite3_prepare_v2(db,
			       "SELECT id, pid, coalesce(last_commit_at, "
			       "started_at) FROM runs WHERE stopped_at IS NULL",
			       -1, &st, NULL) != SQLITE_OK)
		return;
	while (sqlite3_step(st) == SQLITE_ROW)
		log_warn("store: the ctxleakd of pid %lld stopped without "
			 "finishing (killed, or the machine went down) %.0f s "
			 "after its last commit was written: clients that "
			 "ended meanwhile may have lost records uncounted, "
			 "and reports say so",
			 (long long)sqlite3_column_int64(st, 1),
			 (double)(wall_ns() - sqlite3_column_int64(st, 2)) /
			     1e9);
	sqlite3_finalize(st);
	sqlite3_exec(db,
		     "UPDATE runs SET unclean = 1, stopped_at = "
		     "coalesce(last_commit_at, started_at) "
		     "WHERE stopped_at IS NULL",
		     NULL, NULL, NULL);
}

int64_t runs_open(sqlite3 *db)
{
	sqlite3_stmt *st;
	int64_t id = 0;

	mark_unclean(db);
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO runs (pid, started_at) "
			       "VALUES (?1, ?2)",
			       -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_int64(st, 1, (int64_t)getpid());
	sqlite3_bind_int64(st, 2, wall_ns());
	if (sqlite3_step(st) == SQLITE_DONE)
		id = sqlite3_last_insert_rowid(db);
	sqlite3_finalize(st);
	return id;
}

int runs_note_commit(sqlite3_stmt *st, int64_t id)
{
	int rc;

	if (id == 0)
		return SQLITE_OK;
	sqlite3_bind_int64(st, 1, wall_ns());
	sqlite3_bind_int64(st, 2, id);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

void runs_close(sqlite3 *db, int64_t id)
{
	char sql[128];

	if (id == 0)
		return;
	snprintf(sql, sizeof sql,
		 "UPDATE runs SET stopped_at = %lld WHERE id = %lld",
		 (long long)wall_ns(), (long long)id);
	sqlite3_exec(db, sql, NULL, NULL, NULL);
}
