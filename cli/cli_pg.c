/*
 * cli_pg.c: the CLI's side of the central PostgreSQL database
 * (docs/CENTRAL.md): telling a connection string from a file path,
 * connecting, and the schema: created and migrated by `ctxleak forward`
 * (one step per version, in one transaction), checked by readers.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* A key for pg_advisory_xact_lock: migrations of two forwarders that
 * start together take turns.  "cxlk", as the local application_id. */
#define MIGRATE_LOCK 1668836459

int cli_pg_is_url(const char *s)
{
	const char *p = s;

	if (s == NULL)
		return 0;
	if (strncmp(s, "postgresql://", 13) == 0 ||
	    strncmp(s, "postgres://", 11) == 0)
		return 1;
	/* key=value form, as libpq takes it: "host=/run/pg dbname=x" */
	while (isalpha((unsigned char)*p) || *p == '_')
		p++;
	while (*p == ' ')
		p++;
	return p != s && *p == '=';
}

/* The server's notices (a WARNING as it shuts down, a NOTICE of an
 * IF NOT EXISTS) are not the CLI's to print: its own messages say what
 * matters. */
static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

PGconn *cli_pg_connect(const char *conninfo, const char *application)
{
	/* libpq's defaults wait forever for a server that does not answer
	 * and notice a cut connection only when TCP gives up (minutes):
	 * these say so within a minute.  dbname comes last and is expanded,
	 * so that what the string says overrides them. */
	const char *const keys[] = {"connect_timeout",
				    "keepalives_idle",
				    "keepalives_interval",
				    "keepalives_count",
				    "application_name",
				    "dbname",
				    NULL};
	const char *const values[] = {"10",	   "30",     "10", "3",
				      application, conninfo, NULL};

	PGconn *pg = PQconnectdbParams(keys, values, 1);

	if (pg != NULL)
		PQsetNoticeProcessor(pg, ignore_notice, NULL);
	return pg;
}

int cli_pg_exec(PGconn *pg, const char *sql)
{
	PGresult *r = PQexec(pg, sql);
	ExecStatusType st = PQresultStatus(r);

	PQclear(r);
	return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}

PGresult *cli_pg_query(PGconn *pg, const char *sql, int n,
		       const char *const *params)
{
	PGresult *r = PQexecParams(pg, sql, n, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(r);

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return r;
	PQclear(r);
	return NULL;
}

const char *cli_pg_message(PGconn *pg)
{
	static char buf[1024];
	size_t len;

	snprintf(buf, sizeof buf, "%s", PQerrorMessage(pg));
	len = strlen(buf);
	while (len && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return *buf ? buf : "no connection";
}

/*
 * Version 1: the local tables of daemon/SCHEMA.md version 8 with
 * source_id (and host_id on processes), hosts, sources, the forwarder's
 * cursors and its pending requests.  Types: INTEGER is bigint, TEXT text.
 * Only hosts, sources, cursors and processes declare their references:
 * a foreign key check on every row of the tables that take a row per
 * finding would halve the forwarder's insert rate, and the forwarder is
 * the one writer of source_id.  The unique keys are the ones the
 * forwarder upserts on; NULLS NOT
 * DISTINCT (PostgreSQL 15) makes a NULL site or name one key value, as
 * the daemon's own "IS ?" matching does.
 */
static const char schema_v1[] =
    "CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);"
    "CREATE TABLE hosts (id bigserial PRIMARY KEY,"
    " name text NOT NULL UNIQUE, machine_id text,"
    " first_seen bigint NOT NULL, last_seen bigint NOT NULL);"
    "CREATE TABLE sources (id bigserial PRIMARY KEY,"
    " host_id bigint NOT NULL REFERENCES hosts(id), path text NOT NULL,"
    " created_at bigint NOT NULL, forwarder text, last_forward bigint,"
    " UNIQUE (host_id, path, created_at));"
    "CREATE TABLE cursors (source_id bigint NOT NULL REFERENCES"
    " sources(id), tbl text NOT NULL, position bigint NOT NULL,"
    " PRIMARY KEY (source_id, tbl));"
    "CREATE TABLE pending_requests (source_id bigint NOT NULL,"
    " request_id bigint NOT NULL, process_id bigint NOT NULL,"
    " PRIMARY KEY (source_id, request_id));"
    "CREATE TABLE processes (id bigint PRIMARY KEY,"
    " instance bigint NOT NULL, pid bigint NOT NULL, hello_pid bigint,"
    " uid bigint, gid bigint, app text, backend text,"
    " backend_reason text, client text, connected_at bigint NOT NULL,"
    " disconnected_at bigint, connections bigint NOT NULL DEFAULT 1,"
    " records bigint NOT NULL DEFAULT 0, dropped bigint NOT NULL DEFAULT 0,"
    " unknown_skipped bigint NOT NULL DEFAULT 0, error text, model text,"
    " recommend text, model_evidence text,"
    " committed_watermark bigint NOT NULL DEFAULT 0,"
    " committed_position bigint, what_if bigint NOT NULL DEFAULT 0,"
    " vanished bigint NOT NULL DEFAULT 0,"
    " source_id bigint NOT NULL REFERENCES sources(id),"
    " host_id bigint NOT NULL REFERENCES hosts(id));"
    "CREATE INDEX processes_host ON processes(host_id);"
    "CREATE TABLE sites (id bigint PRIMARY KEY,"
    " process_id bigint NOT NULL, file text NOT NULL,"
    " line bigint NOT NULL, func text, used bigint NOT NULL DEFAULT 0,"
    " released_at bigint,"
    " source_id bigint NOT NULL);"
    "CREATE TABLE requests (id bigint PRIMARY KEY,"
    " process_id bigint NOT NULL, ctx bigint NOT NULL, name text,"
    " site_id bigint, begin_ts bigint NOT NULL, end_ts bigint,"
    " begin_tid bigint, threads text NOT NULL, scopes bigint NOT NULL,"
    " records bigint NOT NULL, leaks bigint NOT NULL,"
    " lost bigint NOT NULL, stale bigint NOT NULL, bleed bigint NOT NULL,"
    " overlap bigint NOT NULL, misnest bigint NOT NULL,"
    " unclosed bigint NOT NULL, source_of bigint NOT NULL,"
    " tags_dropped bigint NOT NULL DEFAULT 0,"
    " records_not_kept bigint NOT NULL DEFAULT 0,"
    " late bigint NOT NULL DEFAULT 0,"
    " source_id bigint NOT NULL);"
    "CREATE INDEX requests_process ON requests(process_id);"
    "CREATE TABLE tags (request_id bigint NOT NULL, key text NOT NULL,"
    " value text, ts bigint NOT NULL, tid bigint, site_id bigint,"
    " setter_request_id bigint, setter_ctx bigint,"
    " source_id bigint NOT NULL,"
    " UNIQUE (request_id, key));"
    "CREATE TABLE leaks (id bigint PRIMARY KEY,"
    " process_id bigint NOT NULL, class text NOT NULL, ts bigint NOT NULL,"
    " tid bigint, victim_request_id bigint, victim_ctx bigint,"
    " victim_name text, source_request_id bigint, source_ctx bigint,"
    " source_name text, record text NOT NULL, ctx bigint, cause bigint,"
    " other bigint, name text, value text, site_id bigint, detail text,"
    " source_id bigint NOT NULL);"
    "CREATE INDEX leaks_ts ON leaks(ts);"
    "CREATE INDEX leaks_victim ON leaks(victim_request_id);"
    "CREATE INDEX leaks_source ON leaks(source_request_id);"
    "CREATE TABLE records (id bigint PRIMARY KEY,"
    " process_id bigint NOT NULL, request_id bigint,"
    " ctx_request_id bigint, type text NOT NULL, ts bigint NOT NULL,"
    " tid bigint NOT NULL, ctx bigint NOT NULL, cause bigint NOT NULL,"
    " other bigint, site_id bigint, name text, value text, leak text,"
    " late bigint,"
    " source_id bigint NOT NULL);"
    "CREATE INDEX records_request ON records(request_id);"
    "CREATE TABLE drops (process_id bigint NOT NULL,"
    " since_ts bigint NOT NULL, until_ts bigint NOT NULL,"
    " count bigint NOT NULL,"
    " source_id bigint NOT NULL,"
    " UNIQUE (process_id, since_ts, until_ts));"
    "CREATE TABLE request_stats (process_id bigint NOT NULL,"
    " minute bigint NOT NULL, name text, site_id bigint,"
    " requests bigint NOT NULL, records bigint NOT NULL,"
    " scopes bigint NOT NULL, tags bigint NOT NULL,"
    " handed_off bigint NOT NULL, duration_sum bigint NOT NULL,"
    " duration_max bigint NOT NULL, late bigint NOT NULL DEFAULT 0,"
    " source_id bigint NOT NULL,"
    " UNIQUE NULLS NOT DISTINCT (process_id, minute, name, site_id));"
    "CREATE TABLE what_if (process_id bigint NOT NULL,"
    " backend text NOT NULL, class text NOT NULL, site_id bigint,"
    " count bigint NOT NULL,"
    " source_id bigint NOT NULL,"
    " UNIQUE NULLS NOT DISTINCT (process_id, backend, class, site_id));"
    "CREATE TABLE runs (id bigint PRIMARY KEY, pid bigint NOT NULL,"
    " started_at bigint NOT NULL, last_commit_at bigint,"
    " stopped_at bigint, unclean bigint NOT NULL DEFAULT 0,"
    " source_id bigint NOT NULL);"
    "INSERT INTO meta VALUES ('schema_version', 1);";

/* migrations[v]: from version v - 1 to v; never changed once released. */
static const char *const migrations[] = {NULL, schema_v1};
#define LATEST ((int)(sizeof migrations / sizeof migrations[0]) - 1)

_Static_assert(LATEST == CLI_PG_SCHEMA_VERSION,
	       "a migration per central schema version");

/* The schema version of the database: 0 when it has none yet, -1 on
 * error. */
static long long schema_version(PGconn *pg)
{
	PGresult *r =
	    cli_pg_query(pg, "SELECT to_regclass('meta') IS NULL", 0, NULL);
	long long v = -1;

	if (r == NULL)
		return -1;
	if (strcmp(PQgetvalue(r, 0, 0), "t") == 0) {
		PQclear(r);
		return 0;
	}
	PQclear(r);
	r = cli_pg_query(
	    pg, "SELECT value FROM meta WHERE key = 'schema_version'", 0, NULL);
	if (r != NULL && PQntuples(r) == 1)
		v = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

int cli_pg_check_schema(PGconn *pg, const char *where)
{
	long long v = schema_version(pg);

	if (v < 0)
		return cli_error(CLI_EXIT_DB, "%s: cannot read its schema: %s",
				 where, cli_pg_message(pg));
	if (v == 0)
		return cli_error(CLI_EXIT_DB,
				 "%s has no ctxleak tables yet (nothing was "
				 "forwarded to it: ctxleak forward --to ...)",
				 where);
	if (v > CLI_PG_SCHEMA_VERSION)
		return cli_error(CLI_EXIT_DB,
				 "%s has central schema version %lld, newer "
				 "than this ctxleak reads (%d): upgrade "
				 "ctxleak",
				 where, v, CLI_PG_SCHEMA_VERSION);
	if (v < CLI_PG_SCHEMA_VERSION)
		return cli_error(CLI_EXIT_DB,
				 "%s has central schema version %lld, older "
				 "than this ctxleak reads (%d): a forwarder "
				 "of this version migrates it",
				 where, v, CLI_PG_SCHEMA_VERSION);
	return 0;
}

int cli_pg_migrate(PGconn *pg, char *err, size_t len)
{
	char lock[96];
	long long v;

	snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d)",
		 MIGRATE_LOCK);
	if (PQserverVersion(pg) < 150000) {
		snprintf(err, len,
			 "the server is PostgreSQL %d.%d; the central schema "
			 "needs 15 or later",
			 PQserverVersion(pg) / 10000,
			 PQserverVersion(pg) % 10000);
		return -1;
	}
	if (cli_pg_exec(pg, "BEGIN") == -1 || cli_pg_exec(pg, lock) == -1 ||
	    (v = schema_version(pg)) < 0)
		goto failed;
	if (v > CLI_PG_SCHEMA_VERSION) {
		cli_pg_exec(pg, "ROLLBACK");
		snprintf(err, len,
			 "central schema version %lld is newer than this "
			 "ctxleak writes (%d): upgrade ctxleak",
			 v, CLI_PG_SCHEMA_VERSION);
		return -1;
	}
	for (int next = (int)v + 1; next <= LATEST; next++)
		if (cli_pg_exec(pg, migrations[next]) == -1)
			goto failed;
	if (v < LATEST) {
		char sql[128];

		snprintf(sql, sizeof sql,
			 "UPDATE meta SET value = %d WHERE key = "
			 "'schema_version'",
			 LATEST);
		if (cli_pg_exec(pg, sql) == -1)
			goto failed;
	}
	if (cli_pg_exec(pg, "COMMIT") == -1)
		goto failed;
	return 0;
failed:
	snprintf(err, len, "cannot create or migrate the central schema: %s",
		 cli_pg_message(pg));
	cli_pg_exec(pg, "ROLLBACK");
	return -1;
}
