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
 * the pages in use under the limit holds the file there too.  It deletes
 * the oldest rows of the bulkiest tables first: records; then the sites no
 * row names and no live process holds (store_sites.c); then the counts
 * (request_stats) and drop windows; then requests with their tags, and
 * findings, but never the newest LEAKS_KEPT findings: they are what the
 * database is for, and whatever else holds the space (a flood of sites
 * that live processes hold, the processes) must not take them all.
 *
 * Each pass logs what it deleted, per table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/* Rows per table per step, by age.  By size, smaller chunks, the size
 * measured between them: a chunk of requests with their tags may be a
 * good part of a small database. */
#define AGE_CHUNK   5000
#define SIZE_CHUNK  1000
#define SIZE_CHUNKS 5
/* Findings that retention by size never deletes (about 300 KB). */
#define LEAKS_KEPT 1000

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
	SIZE_SITES,
	SIZE_STATS,
	SIZE_DROPS,
	SIZE_TAGS,
	SIZE_REQUESTS,
	SIZE_LEAKS,
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
    /* A site no row names, or let go before the cutoff by the last
     * process that held it: its rows are gone too.  The highest id stays,
     * so that ids are not handed out again after a restart. */
    [AGE_SITES] = "DELETE FROM sites WHERE id IN (SELECT id FROM sites "
		  "WHERE (used = 0 OR released_at < ?1) AND NOT "
		  "site_held(id) AND id < (SELECT max(id) FROM sites) "
		  "LIMIT ?2)",
    [AGE_WHAT_IF] = "DELETE FROM what_if WHERE process_id IN (SELECT id "
		    "FROM processes WHERE disconnected_at < ?1)",
    [AGE_PROCESSES] = "DELETE FROM processes WHERE disconnected_at < ?1",
    [SIZE_RECORDS] = "DELETE FROM records WHERE id IN (SELECT id FROM "
		     "records ORDER BY id LIMIT ?2)",
    [SIZE_SITES] = "DELETE FROM sites WHERE id IN (SELECT id FROM sites "
		   "WHERE used = 0 AND NOT site_held(id) AND id < (SELECT "
		   "max(id) FROM sites) ORDER BY id LIMIT ?2)",
    [SIZE_TAGS] = "DELETE FROM tags WHERE request_id IN (SELECT id FROM "
		  "requests ORDER BY id LIMIT ?2)",
    [SIZE_REQUESTS] = "DELETE FROM requests WHERE id IN (SELECT id FROM "
		      "requests ORDER BY id LIMIT ?2)",
    /* Below the LEAKS_KEPT-th newest (none when there are fewer). */
    [SIZE_LEAKS] = "DELETE FROM leaks WHERE id IN (SELECT id FROM leaks "
		   "WHERE id < (SELECT id FROM leaks ORDER BY id DESC LIMIT 1 "
		   "OFFSET ?3) ORDER BY id LIMIT ?2)",
    [SIZE_DROPS] = "DELETE FROM drops WHERE rowid IN (SELECT rowid FROM "
		   "drops ORDER BY rowid LIMIT ?2)",
    [SIZE_STATS] = "DELETE FROM request_stats WHERE rowid IN (SELECT rowid "
		   "FROM request_stats ORDER BY rowid LIMIT ?2)",
    [PAGES_USED] = "SELECT (SELECT page_count FROM pragma_page_count) - "
		   "(SELECT freelist_count FROM pragma_freelist_count)",
    [PAGE_SIZE] = "PRAGMA page_size",
};

/* The table each DELETE deletes from, for the log. */
static const char *const table_of[NSTMT] = {
    [AGE_TAGS] = "tags",	 [AGE_REQUESTS] = "requests",
    [AGE_RECORDS] = "records",	 [AGE_LEAKS] = "leaks",
    [AGE_DROPS] = "drops",	 [AGE_STATS] = "request_stats",
    [AGE_SITES] = "sites",	 [AGE_PROCESSES] = "processes",
    [SIZE_RECORDS] = "records",	 [SIZE_SITES] = "sites",
    [SIZE_STATS] = "request_stats", [SIZE_DROPS] = "drops",
    [SIZE_TAGS] = "tags",	 [SIZE_REQUESTS] = "requests",
    [SIZE_LEAKS] = "leaks",
};

struct retention {
	sqlite3 *db;
	sqlite3_stmt *st[NSTMT];
	int trimming;	  /* over the size limit, not yet back under 90% */
	int stuck_logged; /* over it with nothing left to delete: said */
	uint64_t deleted[NSTMT]; /* rows per DELETE since the last report */
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
	if (sqlite3_bind_parameter_count(st) >= 3)
		sqlite3_bind_int(st, 3, LEAKS_KEPT - 1);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return -rc;
	r->deleted[which] += (uint64_t)sqlite3_changes(r->db);
	return sqlite3_changes(r->db);
}

int retention_report(struct retention *r, const char *why)
{
	static const char *const tables[] = {
	    "records", "requests", "tags",	"leaks",
	    "drops",   "request_stats", "sites", "processes",
	};
	char line[512];
	size_t off = 0;
	uint64_t n;

	for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++) {
		n = 0;
		for (int i = 0; i < NSTMT; i++)
			if (table_of[i] != NULL &&
			    strcmp(table_of[i], tables[t]) == 0)
				n += r->deleted[i];
		if (n > 0 && off < sizeof line)
			off += (size_t)snprintf(line + off, sizeof line - off,
						"%s%llu %s", off ? ", " : "",
						(unsigned long long)n,
						tables[t]);
	}
	memset(r->deleted, 0, sizeof r->deleted);
	if (off > 0)
		log_info("retention %s deleted %s", why, line);
	return off > 0;
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
 * has no rows left either; only then are processes deleted, and the
 * sites that no row names or that were let go before the cutoff.
 */
static int age_step(struct retention *r, int64_t cutoff, uint64_t *deleted)
{
	uint64_t before = *deleted;
	int rc = run_range(r, AGE_TAGS, AGE_STATS, cutoff, AGE_CHUNK, deleted);

	if (rc < 0)
		return rc;
	if (*deleted != before)
		return 1;
	/* Sites go a chunk at a time too (a flood of them may wait). */
	rc = run_range(r, AGE_SITES, AGE_PROCESSES, cutoff, AGE_CHUNK,
		       deleted);
	return rc < 0 ? rc : *deleted != before;
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

/* One chunk of the first tier that has rows to delete: records (the bulk
 * of any database), sites, the counts and drop windows, then requests with
 * their tags and the older findings together. */
static int size_chunk(struct retention *r, uint64_t *deleted)
{
	static const int tiers[][2] = {
	    {SIZE_RECORDS, SIZE_RECORDS},
	    {SIZE_SITES, SIZE_SITES},
	    {SIZE_STATS, SIZE_DROPS},
	    {SIZE_TAGS, SIZE_LEAKS},
	};
	uint64_t before = *deleted;
	int rc;

	for (size_t t = 0; t < sizeof tiers / sizeof tiers[0]; t++) {
		rc = run_range(r, tiers[t][0], tiers[t][1], 0, SIZE_CHUNK,
			       deleted);
		if (rc < 0 || *deleted != before)
			return rc;
	}
	return 0;
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
			r->trimming = r->stuck_logged = 0;
		if (!r->trimming)
			return 0;
		if ((rc = size_chunk(r, deleted)) < 0)
			return rc;
	}
	if (*deleted != before)
		return 1;
	/* Nothing left that may go: said once, until back under. */
	if (!r->stuck_logged)
		log_warn("retention: %lld bytes in use, over the limit of "
			 "%llu, and nothing more may be deleted: the newest "
			 "%d findings, the sites live processes hold and the "
			 "processes stay",
			 (long long)used, (unsigned long long)max_bytes,
			 LEAKS_KEPT);
	r->stuck_logged = 1;
	return 0;
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
