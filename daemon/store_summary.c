/*
 * store_summary.c: under --keep=leaky, the requests that no finding
 * involves, counted per process, minute, site and name (the request_stats
 * table) instead of a requests row each.
 *
 * Why counts and not rows: a clean request is what almost every request
 * is, and its row and tags would be almost everything the daemon writes.
 * At a service's rates (tens of thousands of requests a second) that is
 * gigabytes a day that nobody reads, and SQLite's insert rate, not the
 * rules, would bound ingestion.  Requests in a finding keep their full
 * row, tags and records; --keep=all keeps a row for every request.
 *
 * Counts are gathered in memory between commits, keyed by what a summary
 * row is keyed by, and written by the store just before it commits: an
 * UPDATE adding to the row of that minute, or an INSERT when there is none
 * yet.  A commit interval's distinct keys are few (processes x request
 * names x sites, over at most two minutes), so this is a few statements a
 * commit however many requests there were.
 *
 * A clean request can stop being clean after it retired, when a later
 * finding names it (a callback of it that ran under another request's
 * storage, a storage that still held it): it then gets its row, and is
 * taken back from these counts, so that every request is counted in
 * exactly one of the two.  Counts are kept modulo 2^64 and written as
 * signed deltas, so a take-back of a request counted in an earlier commit
 * subtracts from that commit's row.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/* Distinct keys between two flushes; a full table asks for a flush.
 * Half the slots, so that probes stay short. */
#define MAX_KEYS 4096
#define SLOTS	 (2 * MAX_KEYS)
#define MINUTE	 60000000000ll

struct summary {
	uint64_t hash;
	int64_t process_id, minute;
	uint32_t site;
	uint32_t name_len;
	char *name; /* NULL: the request had no name */
	/* modulo 2^64: a take-back may make one negative until flushed */
	uint64_t requests, records, scopes, tags, handed_off, late;
	uint64_t duration_sum, duration_max;
};

enum { ST_ADD, ST_NEW, NSTMT };

/* The same ?1..?12 are bound for both. */
static const char *const sql[NSTMT] = {
    [ST_ADD] = "UPDATE request_stats SET requests = requests + ?5, "
	       "records = records + ?6, scopes = scopes + ?7, "
	       "tags = tags + ?8, handed_off = handed_off + ?9, "
	       "duration_sum = duration_sum + ?10, "
	       "duration_max = max(duration_max, ?11), late = late + ?12 "
	       "WHERE process_id = ?1 AND minute = ?2 AND name IS ?3 AND "
	       "site_id IS ?4",
    [ST_NEW] = "INSERT INTO request_stats(process_id, minute, name, "
	       "site_id, requests, records, scopes, tags, handed_off, "
	       "duration_sum, duration_max, late) "
	       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
};

struct summaries {
	sqlite3 *db;
	sqlite3_stmt *st[NSTMT];
	struct summary *slot[SLOTS];
	struct summary *used[MAX_KEYS]; /* in the order first seen */
	unsigned nused;
};

void summaries_free(struct summaries *sm)
{
	if (sm == NULL)
		return;
	summaries_clear(sm);
	for (int i = 0; i < NSTMT; i++)
		sqlite3_finalize(sm->st[i]);
	free(sm);
}

struct summaries *summaries_new(sqlite3 *db)
{
	struct summaries *sm = calloc(1, sizeof *sm);

	if (sm == NULL)
		return NULL;
	sm->db = db;
	for (int i = 0; i < NSTMT; i++) {
		if (sqlite3_prepare_v3(db, sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &sm->st[i],
				       NULL) != SQLITE_OK) {
			summaries_free(sm);
			return NULL;
		}
	}
	return sm;
}

void summaries_clear(struct summaries *sm)
{
	for (unsigned i = 0; i < sm->nused; i++) {
		free(sm->used[i]->name);
		free(sm->used[i]);
	}
	memset(sm->slot, 0, sizeof sm->slot);
	sm->nused = 0;
}

static uint64_t key_hash(int64_t process_id, int64_t minute, uint32_t site,
			 struct proto_str name)
{
	uint64_t words[3] = {(uint64_t)process_id, (uint64_t)minute, site};
	uint64_t h = rules_hash(words, sizeof words, name.ptr == NULL);

	return name.ptr != NULL ? rules_hash(name.ptr, name.len, h) : h;
}

static int same_key(const struct summary *e, uint64_t hash, int64_t process_id,
		    int64_t minute, uint32_t site, struct proto_str name)
{
	if (e->hash != hash || e->process_id != process_id ||
	    e->minute != minute || e->site != site)
		return 0;
	if (e->name == NULL || name.ptr == NULL)
		return e->name == NULL && name.ptr == NULL;
	return e->name_len == name.len &&
	       memcmp(e->name, name.ptr, name.len) == 0;
}

static struct summary *summary_new(uint64_t hash, int64_t process_id,
				   int64_t minute, uint32_t site,
				   struct proto_str name)
{
	struct summary *e = calloc(1, sizeof *e);

	if (e == NULL)
		return NULL;
	if (name.ptr != NULL) {
		/* +1: an empty name is still a name, not NULL. */
		if ((e->name = malloc(name.len + 1)) == NULL) {
			free(e);
			return NULL;
		}
		memcpy(e->name, name.ptr, name.len);
		e->name_len = name.len;
	}
	e->hash = hash;
	e->process_id = process_id;
	e->minute = minute;
	e->site = site;
	return e;
}

/* The summary of the key, made when new; NULL when the table is full or
 * memory is out. */
static struct summary *lookup(struct summaries *sm, int64_t process_id,
			      int64_t minute, uint32_t site,
			      struct proto_str name)
{
	uint64_t hash = key_hash(process_id, minute, site, name);
	size_t i = hash & (SLOTS - 1);
	struct summary *e;

	for (; (e = sm->slot[i]) != NULL; i = (i + 1) & (SLOTS - 1))
		if (same_key(e, hash, process_id, minute, site, name))
			return e;
	if (sm->nused == MAX_KEYS ||
	    (e = summary_new(hash, process_id, minute, site, name)) == NULL)
		return NULL;
	sm->slot[i] = e;
	sm->used[sm->nused++] = e;
	return e;
}

int summaries_add(struct summaries *sm, int64_t process_id, int64_t begin_wall,
		  const struct rules_request *rq, int sign)
{
	/* Floor, also before 1970 (a client's clock may say anything). */
	int64_t minute = begin_wall / MINUTE * MINUTE -
			 (begin_wall % MINUTE < 0 ? MINUTE : 0);
	uint64_t duration =
	    rq->end_ts > rq->begin_ts ? rq->end_ts - rq->begin_ts : 0;
	struct summary *e = lookup(sm, process_id, minute, rq->site, rq->name);

	/* Unsigned: -1 adds 2^64 - 1, a subtraction modulo 2^64. */
	uint64_t k = sign < 0 ? UINT64_MAX : 1;

	if (e == NULL)
		return sm->nused == MAX_KEYS ? 1 : -1;
	e->records += k * rq->nrecords;
	e->late += k * rq->late;
	if (sign == 0)
		return 0;
	e->requests += k;
	e->scopes += k * rq->nscopes;
	e->tags += k * rq->ntags;
	e->handed_off += k * (rq->nthreads > 1);
	e->duration_sum += k * duration;
	if (sign > 0 && duration > e->duration_max)
		e->duration_max = duration;
	return 0;
}

static void bind_summary(sqlite3_stmt *st, const struct summary *e)
{
	sqlite3_bind_int64(st, 1, e->process_id);
	sqlite3_bind_int64(st, 2, e->minute);
	if (e->name == NULL)
		sqlite3_bind_null(st, 3);
	else
		sqlite3_bind_text(st, 3, e->name, (int)e->name_len,
				  SQLITE_STATIC);
	if (e->site == 0)
		sqlite3_bind_null(st, 4);
	else
		sqlite3_bind_int64(st, 4, e->site);
	sqlite3_bind_int64(st, 5, (int64_t)e->requests);
	sqlite3_bind_int64(st, 6, (int64_t)e->records);
	sqlite3_bind_int64(st, 7, (int64_t)e->scopes);
	sqlite3_bind_int64(st, 8, (int64_t)e->tags);
	sqlite3_bind_int64(st, 9, (int64_t)e->handed_off);
	sqlite3_bind_int64(st, 10, (int64_t)e->duration_sum);
	sqlite3_bind_int64(st, 11, (int64_t)e->duration_max);
	sqlite3_bind_int64(st, 12, (int64_t)e->late);
}

static int step(sqlite3_stmt *st, const struct summary *e)
{
	int rc;

	bind_summary(st, e);
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int64_t summaries_flush(struct summaries *sm)
{
	int64_t written = 0;
	int rc = SQLITE_OK;

	for (unsigned i = 0; i < sm->nused && rc == SQLITE_OK; i++) {
		rc = step(sm->st[ST_ADD], sm->used[i]);
		/* No row to take back from or add late records to (gone by
		 * retention): nothing to write. */
		if (rc == SQLITE_OK && sqlite3_changes(sm->db) == 0 &&
		    (int64_t)sm->used[i]->requests > 0)
			rc = step(sm->st[ST_NEW], sm->used[i]);
		written++;
	}
	summaries_clear(sm);
	return rc == SQLITE_OK ? written : -rc;
}

unsigned summaries_pending(const struct summaries *sm)
{
	return sm->nused;
}
