/*
 * store_schema.c: the database schema of ctxleakd and its migrations.
 *
 * The schema is versioned with PRAGMA user_version and marked as ours with
 * PRAGMA application_id.  A new file is migrated from version 0, so that
 * creating a database and upgrading one run the same steps; each step
 * brings the file from the version before it to its own, and all the steps
 * a file needs run in one transaction, so that a failed upgrade leaves the
 * file as it was.  daemon/SCHEMA.md documents the result for people who
 * query it; tests/test_store.c checks that the two agree.
 */
#include <stdio.h>
#include <string.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/*
 * Version 1.  The records table takes one row per record under --keep=all
 * and requests one per request, so they are kept small and indexed only on
 * ids the daemon assigns in sequence: an index on the clients' random ctx
 * values would cut the insert rate by about five times.  Looking a request
 * up by ctx (`ctxleak show CTX`) is one scan of requests, made by hand.
 */
static const char schema_v1[] =
    "CREATE TABLE processes ("
    " id INTEGER PRIMARY KEY,"
    " instance INTEGER NOT NULL,"
    " pid INTEGER NOT NULL,"
    " hello_pid INTEGER,"
    " uid INTEGER,"
    " gid INTEGER,"
    " app TEXT,"
    " backend TEXT,"
    " backend_reason TEXT,"
    " client TEXT,"
    " connected_at INTEGER NOT NULL,"
    " disconnected_at INTEGER,"
    " connections INTEGER NOT NULL DEFAULT 1,"
    " records INTEGER NOT NULL DEFAULT 0,"
    " dropped INTEGER NOT NULL DEFAULT 0,"
    " unknown_skipped INTEGER NOT NULL DEFAULT 0,"
    " error TEXT,"
    " model TEXT,"
    " recommend TEXT,"
    " model_evidence TEXT);"
    "CREATE INDEX processes_instance ON processes(instance);"
    "CREATE TABLE sites ("
    " id INTEGER PRIMARY KEY,"
    " process_id INTEGER NOT NULL,"
    " file TEXT NOT NULL,"
    " line INTEGER NOT NULL,"
    " func TEXT);"
    "CREATE TABLE requests ("
    " id INTEGER PRIMARY KEY,"
    " process_id INTEGER NOT NULL,"
    " ctx INTEGER NOT NULL,"
    " name TEXT,"
    " site_id INTEGER,"
    " begin_ts INTEGER NOT NULL,"
    " end_ts INTEGER,"
    " begin_tid INTEGER,"
    " threads TEXT NOT NULL,"
    " scopes INTEGER NOT NULL,"
    " records INTEGER NOT NULL,"
    " leaks INTEGER NOT NULL,"
    " lost INTEGER NOT NULL, stale INTEGER NOT NULL,"
    " bleed INTEGER NOT NULL, overlap INTEGER NOT NULL,"
    " misnest INTEGER NOT NULL, unclosed INTEGER NOT NULL,"
    " source_of INTEGER NOT NULL,"
    " tags_dropped INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE tags ("
    " request_id INTEGER NOT NULL,"
    " key TEXT NOT NULL,"
    " value TEXT,"
    " ts INTEGER NOT NULL,"
    " tid INTEGER,"
    " site_id INTEGER,"
    " setter_request_id INTEGER,"
    " setter_ctx INTEGER);"
    "CREATE INDEX tags_request ON tags(request_id);"
    "CREATE TABLE leaks ("
    " id INTEGER PRIMARY KEY,"
    " process_id INTEGER NOT NULL,"
    " class TEXT NOT NULL,"
    " ts INTEGER NOT NULL,"
    " tid INTEGER,"
    " victim_request_id INTEGER,"
    " victim_ctx INTEGER,"
    " victim_name TEXT,"
    " source_request_id INTEGER,"
    " source_ctx INTEGER,"
    " source_name TEXT,"
    " record TEXT NOT NULL,"
    " ctx INTEGER,"
    " cause INTEGER,"
    " other INTEGER,"
    " name TEXT,"
    " value TEXT,"
    " site_id INTEGER,"
    " detail TEXT);"
    "CREATE INDEX leaks_ts ON leaks(ts);"
    "CREATE TABLE records ("
    " id INTEGER PRIMARY KEY,"
    " process_id INTEGER NOT NULL,"
    " request_id INTEGER,"
    " ctx_request_id INTEGER,"
    " type TEXT NOT NULL,"
    " ts INTEGER NOT NULL,"
    " tid INTEGER NOT NULL,"
    " ctx INTEGER NOT NULL,"
    " cause INTEGER NOT NULL,"
    " other INTEGER,"
    " site_id INTEGER,"
    " name TEXT,"
    " value TEXT,"
    " leak TEXT);"
    "CREATE INDEX records_request ON records(request_id);"
    "CREATE TABLE drops ("
    " process_id INTEGER NOT NULL,"
    " since_ts INTEGER NOT NULL,"
    " until_ts INTEGER NOT NULL,"
    " count INTEGER NOT NULL);"
    "CREATE TABLE meta ("
    " key TEXT PRIMARY KEY,"
    " value INTEGER NOT NULL);";

/*
 * Version 2.  Under --keep=leaky a request that no finding involves is no
 * longer a requests row with its tags but a count in request_stats, per
 * process, minute, site and name (store_summary.c says why).  The daemon
 * adds to the row of the current minute, found through the index.
 * requests.records_not_kept counts the records of a request that --max-held
 * kept the daemon from holding until the request retired.
 * records_ctx_request finds the records a backend attributed to a request
 * they did not belong to (`ctxleak show` lists them); partial, because
 * those are the leaks, a handful among millions: a full index on the column
 * would cost every insert.
 */
static const char schema_v2[] =
    "CREATE TABLE request_stats ("
    " process_id INTEGER NOT NULL,"
    " minute INTEGER NOT NULL,"
    " name TEXT,"
    " site_id INTEGER,"
    " requests INTEGER NOT NULL,"
    " records INTEGER NOT NULL,"
    " scopes INTEGER NOT NULL,"
    " tags INTEGER NOT NULL,"
    " handed_off INTEGER NOT NULL,"
    " duration_sum INTEGER NOT NULL,"
    " duration_max INTEGER NOT NULL);"
    "CREATE INDEX request_stats_minute ON request_stats(process_id, minute);"
    "ALTER TABLE requests ADD COLUMN records_not_kept INTEGER NOT NULL "
    "DEFAULT 0;"
    "CREATE INDEX records_ctx_request ON records(ctx_request_id) "
    "WHERE ctx_request_id IS NOT request_id;";

/*
 * Version 3.  A site is stored once per (file, line, function), whichever
 * process defined it: the duplicates earlier versions wrote (a row for
 * every SITE record) are merged into the lowest id of their key, and the
 * rows naming them follow.  sites.process_id is now the process that
 * first defined the site.  used and released_at tell retention when
 * nothing names the site any more (store_sites.c); sites already in the
 * file count as used.  The SQL functions of this step are plain SQL so
 * that the step can run by itself.
 */
static const char schema_v3[] =
    "CREATE TEMP TABLE site_merge AS SELECT s.id AS old, k.keep AS keep "
    "FROM sites s JOIN (SELECT file, line, func, min(id) AS keep FROM sites "
    "GROUP BY file, line, func) k ON s.file = k.file AND s.line = k.line "
    "AND s.func IS k.func WHERE s.id <> k.keep;"
    "CREATE UNIQUE INDEX temp.site_merge_old ON site_merge(old);"
    "UPDATE records SET site_id = (SELECT keep FROM site_merge WHERE "
    "old = site_id) WHERE site_id IN (SELECT old FROM site_merge);"
    "UPDATE requests SET site_id = (SELECT keep FROM site_merge WHERE "
    "old = site_id) WHERE site_id IN (SELECT old FROM site_merge);"
    "UPDATE tags SET site_id = (SELECT keep FROM site_merge WHERE "
    "old = site_id) WHERE site_id IN (SELECT old FROM site_merge);"
    "UPDATE leaks SET site_id = (SELECT keep FROM site_merge WHERE "
    "old = site_id) WHERE site_id IN (SELECT old FROM site_merge);"
    "UPDATE request_stats SET site_id = (SELECT keep FROM site_merge WHERE "
    "old = site_id) WHERE site_id IN (SELECT old FROM site_merge);"
    "DELETE FROM sites WHERE id IN (SELECT old FROM site_merge);"
    "DROP TABLE temp.site_merge;"
    "CREATE UNIQUE INDEX sites_key ON sites(file, line, func);"
    "ALTER TABLE sites ADD COLUMN used INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE sites ADD COLUMN released_at INTEGER;"
    "UPDATE sites SET used = 1;";

/*
 * Version 4.  Late work, a record whose storage names its own request after
 * that request ended, is no finding: records.late marks it (1, else NULL,
 * which costs a row nothing), requests.late and request_stats.late count
 * it.  The rows of older files have none.
 */
static const char schema_v4[] =
    "ALTER TABLE records ADD COLUMN late INTEGER;"
    "ALTER TABLE requests ADD COLUMN late INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE request_stats ADD COLUMN late INTEGER NOT NULL DEFAULT 0;";

/*
 * Version 5.  processes.committed_watermark: every record of the process
 * with ts <= it is judged and committed (the daemon's ACK, PROTOCOL.md
 * 2.3); committed_position, set when the process is finalised: the
 * records of its stream before it are all stored.  With them a restarted
 * daemon drops the records a client sends again that its predecessor had
 * already stored: by position after an orderly stop, by ts after a crash.
 */
static const char schema_v5[] =
    "ALTER TABLE processes ADD COLUMN committed_watermark INTEGER NOT NULL "
    "DEFAULT 0;"
    "ALTER TABLE processes ADD COLUMN committed_position INTEGER;";

/*
 * Version 6.  The what-if (docs/DESIGN.md): per process, the findings that each
 * library-kept backend would have given, counted per backend, class and
 * site, written when the process is finalised; processes.what_if says
 * that they were (0: the daemon ran with --no-what-if, or the process is
 * still running), so that no row reads as zero findings.
 */
static const char schema_v6[] =
    "CREATE TABLE what_if ("
    " process_id INTEGER NOT NULL,"
    " backend TEXT NOT NULL,"
    " class TEXT NOT NULL,"
    " site_id INTEGER,"
    " count INTEGER NOT NULL);"
    "CREATE INDEX what_if_process ON what_if(process_id);"
    "ALTER TABLE processes ADD COLUMN what_if INTEGER NOT NULL DEFAULT 0;";

/*
 * Version 7.  runs: each daemon that opened the file, and whether it
 * finished (store_runs.c), so that a report can name the windows of a
 * daemon that died.
 */
static const char schema_v7[] =
    "CREATE TABLE runs ("
    " id INTEGER PRIMARY KEY,"
    " pid INTEGER NOT NULL,"
    " started_at INTEGER NOT NULL,"
    " last_commit_at INTEGER,"
    " stopped_at INTEGER,"
    " unclean INTEGER NOT NULL DEFAULT 0);";

/*
 * Version 8.  processes.vanished: a version 2 process that ended without
 * CLOSE (killed, or it never shut the library down); what it still held
 * is lost uncounted, and reports say so.
 */
static const char schema_v8[] =
    "ALTER TABLE processes ADD COLUMN vanished INTEGER NOT NULL DEFAULT 0;";

/* Pages of a new file.  Four times SQLite's default: the insert rate under
 * --keep=all goes up by about 45%, for about 4x the bytes of a 200 ms
 * commit when ingestion is slow (a few pages per table). */
#define PAGE_SIZE 16384

/* Step i brings a file from version i to version i + 1. */
static const char *const migrations[STORE_SCHEMA_VERSION] = {
    schema_v1,
    schema_v2,
    schema_v3,
    schema_v4,
    schema_v5,
    schema_v6,
    schema_v7,
    schema_v8,
};

static int pragma_int(sqlite3 *db, const char *sql, int64_t *out)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

static int migrate(sqlite3 *db, int64_t from, char *err, size_t errlen)
{
	char sql[128];
	int64_t v;

	if (from == 0) {
		snprintf(sql, sizeof sql, "PRAGMA page_size = %d", PAGE_SIZE);
		if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
			goto fail;
	}
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	for (v = from; v < STORE_SCHEMA_VERSION; v++)
		if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) !=
		    SQLITE_OK)
			goto fail;
	snprintf(sql, sizeof sql,
		 "PRAGMA application_id = %d; PRAGMA user_version = %d; "
		 "COMMIT",
		 STORE_APPLICATION_ID, STORE_SCHEMA_VERSION);
	if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "cannot migrate schema from version %lld: %s",
		 (long long)from, sqlite3_errmsg(db));
	if (!sqlite3_get_autocommit(db))
		sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

/* A file of version 0 is ours to create only when it is empty: any other
 * SQLite file belongs to someone else. */
static int check_ours(sqlite3 *db, const char *path, int64_t version, char *err,
		      size_t errlen)
{
	int64_t app_id, objects;
	int rc = pragma_int(db, "PRAGMA application_id", &app_id);

	if (rc == SQLITE_OK)
		rc = pragma_int(db, "SELECT count(*) FROM sqlite_master",
				&objects);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database %s: %s", path,
			 sqlite3_errstr(rc));
		return -1;
	}
	if (version == 0 && app_id == 0 && objects == 0)
		return 0;
	if (app_id != STORE_APPLICATION_ID) {
		snprintf(err, errlen,
			 "%s is not a ctxleak database (application_id %lld, "
			 "expected %d)",
			 path, (long long)app_id, STORE_APPLICATION_ID);
		return -1;
	}
	return 0;
}

int store_schema_open(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	int64_t version;
	int rc = pragma_int(db, "PRAGMA user_version", &version);

	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database %s: %s", path,
			 sqlite3_errstr(rc));
		return -1;
	}
	if (check_ours(db, path, version, err, errlen) == -1)
		return -1;
	if (version > STORE_SCHEMA_VERSION) {
		snprintf(err, errlen,
			 "database schema version %lld is newer than this "
			 "ctxleakd supports (%d)",
			 (long long)version, STORE_SCHEMA_VERSION);
		return -1;
	}
	if (version < STORE_SCHEMA_VERSION)
		return migrate(db, version, err, errlen);
	return 0;
}
