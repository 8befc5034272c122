/*
 * store_retain.c: retention of the database by age and by size.
 *
 * Retention deletes inside the store's open transaction, a bounded chunk
 * per table per step, so that a step never holds up ingestion for long and
 * a big backlog is worked off over several ticks.
 *
 * The hot tables have no index on time (records) or none at all (requests,
 * drops; request_stats has one, but on process and minute), because every index
 * costs insert speed.  Their ids grow in roughly the order of their timestamps
 * (a request is numbered when it begins, a record when it is judged, held
 * records are late by at most a request's lifetime), so age retention looks at
 * the oldest CHUNK rows by id and deletes those older than the cutoff: the
 * oldest rows are always in that window, and a row that arrived late waits
 * until the window reaches it.
 *
 * Size retention counts the pages in use (page_count - freelist_count):
 * SQLite does not shrink the file, but it reuses freed pages, so holding
 * the pages in use under the limit holds the file there too.
 */
#include <stdlib.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/* Rows per table per step, by age.  By size, smaller chunks, the size
 * measured between them: a chunk of requests with their tags may be a
 * good part of a small database. */
#define AGE_CHUNK   5000
#define SIZE_CHUNK  1000
#define SIZE_CHUNKS 5

enum {
	AGE_TAGS,
	AGE_REQUESTS,
	AGE_RECORDS,
	AGE_LEAKS,
	AGE_DROPS,
	AGE_STATS,
	AGE_SITES,
	AGE_WHAT_IF,
	AGE_PROCESSES,
	SIZE_RECORDS,
	SIZE_TAGS,
	SIZE_REQUESTS,
	SIZE_LEAKS,
	SIZE_DROPS,
	SIZE_STATS,
	PAGES_USED,
	PAGE_SIZE,
	NSTMT
};

/* ?1: the cutoff (wall-clock ns), ?2: the chunk. */
static const char *const sql[NSTMT] = {
    /* Tags go with their request; both see the same window. */
    [AGE_TAGS] = "DELETE FROM tags WHERE request_id IN (SELECT id FROM "
		 "(SELECT id, begin_ts, end_ts FROM requests ORDER BY id "
		 "LIMIT ?2) WHERE coalesce(end_ts, begin_ts) < ?1)",
    [AGE_REQUESTS] = "DELETE FROM requests WHERE id IN (SELECT id FROM "
		     "requests ORDER BY id LIMIT ?2) AND "
		     "coalesce(end_ts, begin_ts) < ?1",
    [AGE_RECORDS] = "DELETE FROM records WHERE id IN (SELECT id FROM "
		    "records ORDER BY id LIMIT ?2) AND ts < ?1",
    [AGE_LEAKS] = "DELETE FROM leaks WHERE id IN (SELECT id FROM leaks "
		  "WHERE ts < ?1 LIMIT ?2)",
    [AGE_DROPS] = "DELETE FROM drops WHERE rowid IN (SELECT rowid FROM "
		  "drops WHERE until_ts < ?1 LIMIT ?2)",
    /* A minute's counts go once the whole minute is past the cutoff. */
    [AGE_STATS] = "DELETE FROM request_stats WHERE rowid IN (SELECT rowid "
		  "FROM request_stats ORDER BY rowid LIMIT ?2) AND "
		  "minute + 60000000000 <= ?1",
    [AGE_SITES] = "DELETE FROM sites WHERE process_id IN (SELECT id FROM "
		  "processes WHERE disconnected_at < ?1)",
    [AGE_WHAT_IF] = "DELETE FROM what_if WHERE process_id IN (SELECT id "
		    "FROM processes WHERE disconnected_at < ?1)",
    [AGE_PROCESSES] = "DELETE FROM processes WHERE disconnected_at < ?1",
    [SIZE_RECORDS] = "DELETE FROM records WHERE id IN (SELECT id FROM "
		     "records ORDER BY id LIMIT ?2)",
    [SIZE_TAGS] = "DELETE FROM tags WHERE request_id IN (SELECT id FROM "
		  "requests ORDER BY id LIMIT ?2)",
    [SIZE_REQUESTS] = "DELETE FROM requests WHERE id IN (SELECT id FROM "
		      "requests ORDER BY id LIMIT ?2)",
    [SIZE_LEAKS] = "DELETE FROM leaks WHERE id IN (SELECT id FROM leaks "
		   "ORDER BY id LIMIT ?2)",
    [SIZE_DROPS] = "DELETE FROM drops WHERE rowid IN (SELECT rowid FROM "
		   "drops ORDER BY rowid LIMIT ?2)",
    [SIZE_STATS] = "DELETE FROM request_stats WHERE rowid IN (SELECT rowid "
		   "FROM request_stats ORDER BY rowid LIMIT ?2)",
    [PAGES_USED] = "SELECT (SELECT page_count FROM pragma_page_count) - "
		   "(SELECT freelist_count FROM pragma_freelist_count)",
    [PAGE_SIZE] = "PRAGMA page_size",
};

struct retention {
	sqlite3 *db;
	sqlite3_stmt *st[NSTMT];
	int trimming; /* over the size limit, not yet back under 90% */
};

void retention_free(struct retention *r)
{
	if (r == NULL)
		return;
	for (int i = 0; i < NSTMT; i++)
		sqlite3_finalize(r->st[i]);
	free(r);
}

struct retention *retention_new(sqlite3 *db)
{
	struct retention *r = calloc(1, sizeof *r);

	if (r == NULL)
		return NULL;
	r->db = db;
	for (int i = 0; i < NSTMT; i++) {
		if (sqlite3_prepare_v3(db, sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &r->st[i],
				       NULL) != SQLITE_OK) {
			retention_free(r);
			return NULL;
		}
	}
	return r;
}

/* Runs one DELETE; returns the rows it deleted or -rc. */
static int64_t run(struct retention *r, int which, int64_t cutoff, int chunk)
{
	sqlite3_stmt *st = r->st[which];
	int rc;

	if (sqlite3_bind_parameter_count(st) >= 1)
		sqlite3_bind_int64(st, 1, cutoff);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int(st, 2, chunk);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return -rc;
	return sqlite3_changes(r->db);
}

static int64_t query(struct retention *r, int which)
{
	sqlite3_stmt *st = r->st[which];
	int64_t v = -SQLITE_ERROR;
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	else
		v = -rc;
	sqlite3_reset(st);
	return v;
}

/* Runs statements first..last in order; their deletions add to *deleted. */
static int run_range(struct retention *r, int first, int last, int64_t cutoff,
		     int chunk, uint64_t *deleted)
{
	int64_t n;

	for (int i = first; i <= last; i++) {
		if ((n = run(r, i, cutoff, chunk)) < 0)
			return (int)n;
		*deleted += (uint64_t)n;
	}
	return 0;
}

/*
 * A process's rows all come from before it disconnected, so once nothing
 * older than the cutoff is left, a process that disconnected before it
 * has no rows left either; only then are processes (and their sites)
 * deleted.
 */
static int age_step(struct retention *r, int64_t cutoff, uint64_t *deleted)
{
	uint64_t before = *deleted;
	int rc = run_range(r, AGE_TAGS, AGE_STATS, cutoff, AGE_CHUNK, deleted);

	if (rc < 0)
		return rc;
	if (*deleted != before)
		return 1;
	return run_range(r, AGE_SITES, AGE_PROCESSES, cutoff, AGE_CHUNK,
			 deleted);
}

/* Pages in use, in bytes, or -rc. */
static int64_t used_bytes(struct retention *r)
{
	int64_t page_size = query(r, PAGE_SIZE);
	int64_t used = query(r, PAGES_USED);

	if (page_size < 0)
		return page_size;
	if (used < 0)
		return used;
	return used * page_size;
}

/* Records are the bulk of any database, so they go first; the rest only
 * once no record is left. */
static int size_chunk(struct retention *r, uint64_t *deleted)
{
	int64_t n = run(r, SIZE_RECORDS, 0, SIZE_CHUNK);

	if (n < 0)
		return (int)n;
	*deleted += (uint64_t)n;
	if (n > 0)
		return 0;
	return run_range(r, SIZE_TAGS, SIZE_STATS, 0, SIZE_CHUNK, deleted);
}

static int size_step(struct retention *r, uint64_t max_bytes, uint64_t *deleted)
{
	uint64_t before = *deleted;
	int64_t used;
	int rc;

	for (int i = 0; i < SIZE_CHUNKS; i++) {
		if ((used = used_bytes(r)) < 0)
			return (int)used;
		if ((uint64_t)used > max_bytes)
			r->trimming = 1;
		else if ((uint64_t)used <= max_bytes / 10 * 9)
			r->trimming = 0;
		if (!r->trimming)
			return 0;
		if ((rc = size_chunk(r, deleted)) < 0)
			return rc;
	}
	/* Nothing left to delete: the schema alone is over the limit. */
	return *deleted != before;
}

int retention_step(struct retention *r, int64_t cutoff, uint64_t max_bytes,
		   uint64_t *deleted)
{
	int more = 0, rc;

	if (cutoff != 0) {
		if ((more = age_step(r, cutoff, deleted)) < 0)
			return more;
	}
	if (max_bytes != 0) {
		if ((rc = size_step(r, max_bytes, deleted)) < 0)
			return rc;
		more |= rc;
	}
	return more;
}
