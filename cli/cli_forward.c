/*
 * cli_forward.c: ctxleak forward: copies what a fleet needs from the
 * host's database into the central PostgreSQL one (docs/CENTRAL.md),
 * exactly once per row whatever stops it.
 *
 * How each local table is followed (the cursors are rows of the central
 * table cursors, written in the same transaction as the rows they cover,
 * so that a batch and its cursor commit together or not at all):
 *
 *   leaks           append-only, by id: cursor = the highest id sent
 *   sites           new ones by id as leaks (cursor = the highest id
 *                   sent); those sent before again each pass, upserted
 *                   (used and released_at change; a site table is small)
 *   drops           append-only, by rowid: cursor = the highest rowid
 *   processes       updated until finalised (committed_position set),
 *                   and again when a client reconnects after that (the
 *                   daemon reopens the row): every row is read each pass
 *                   and a digest of its COPY text compared with the one
 *                   last committed; a row whose digest differs (or that
 *                   this forwarder has not sent yet) is sent, upserted
 *                   (a row that did not change is not written); cursor =
 *                   the lowest id not final, for request_stats
 *   what_if         written when its process is finalised: sent in the
 *                   pass whose upsert saw the process become final
 *   request_stats   added to and taken back from while its process runs:
 *                   the rows of unfinished processes from 10 minutes
 *                   before the newest minute are sent each pass (cursor
 *                   = that minute), and all of a process's rows when it
 *                   becomes final
 *   requests, tags  a request's id is assigned when it begins, its row
 *                   written when it retires (after the findings that name
 *                   it, often) and updated as later findings name it:
 *                   each batch sends the rows of the requests its
 *                   findings name (the tags too, the first time: they do
 *                   not change); a named request with no row yet goes
 *                   into the central pending_requests, in the findings'
 *                   transaction, and each batch sends (and drops) the
 *                   pending ones whose row has come, and drops those of
 *                   a final process that never got one.  When a process
 *                   is finalised every request of it that is central is
 *                   sent once more (late work changes counts without a
 *                   finding)
 *   runs            few rows: all of them each pass, upserted
 *
 * Each pass reads the local database in one read transaction, a
 * consistent snapshot while the daemon writes.  Rows the central database
 * cannot have yet go by COPY straight into their table; the others by
 * COPY into a temporary table and from there by INSERT ... ON CONFLICT,
 * so that a batch replayed after a crash writes nothing twice even
 * without its cursor (two forwarders of one source also take turns on
 * an advisory lock).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* Rows of an append-only table per batch (one transaction): big enough
 * that a transaction's cost is spread (about 0.4 s at 50,000 findings/s),
 * small enough that a replay after a cut is short. */
#define BATCH_ROWS 20000
/* Findings reach the fleet within seconds; an idle pass costs the server
 * a few index reads and one small transaction. */
#define DEFAULT_INTERVAL_SEC 5
/* Bytes of COPY text a streamed COPY is given at a time. */
#define STREAM_CHUNK (256 * 1024)
/* The longest wait between attempts while the server is away. */
#define BACKOFF_MAX_SEC 60
/* How far back the daemon may still take requests back from a minute of
 * request_stats while their process runs; final processes are sent whole
 * anyway. */
#define STATS_SETTLE_NS (10ll * 60 * 1000000000)
/* pg_advisory_xact_lock(class, source): "cxlk" + 1, one past the
 * migration's lock. */
#define SOURCE_LOCK_CLASS 1668836460

/* A forwarded table: the same name and columns locally and centrally. */
struct table {
	const char *name;
	const char *cols; /* the local columns, in the central order */
	const char *key;  /* the central unique key ON CONFLICT names */
	int update;	  /* 1: a changed row is updated; 0: kept */
};

enum {
	T_PROCESSES,
	T_SITES,
	T_RUNS,
	T_LEAKS,
	T_REQUESTS,
	T_TAGS,
	T_DROPS,
	T_STATS,
	T_WHAT_IF,
	NTABLES
};

static const struct table tables[NTABLES] = {
    [T_PROCESSES] = {"processes",
		     "id, instance, pid, hello_pid, uid, gid, app, backend, "
		     "backend_reason, client, connected_at, disconnected_at, "
		     "connections, records, dropped, unknown_skipped, error, "
		     "model, recommend, model_evidence, committed_watermark, "
		     "committed_position, what_if, vanished",
		     "id", 1},
    [T_SITES] = {"sites", "id, process_id, file, line, func, used, released_at",
		 "id", 1},
    [T_RUNS] = {"runs",
		"id, pid, started_at, last_commit_at, stopped_at, unclean",
		"id", 1},
    [T_LEAKS] = {"leaks",
		 "id, process_id, class, ts, tid, victim_request_id, "
		 "victim_ctx, victim_name, source_request_id, source_ctx, "
		 "source_name, record, ctx, cause, other, name, value, "
		 "site_id, detail",
		 "id", 0},
    [T_REQUESTS] = {"requests",
		    "id, process_id, ctx, name, site_id, begin_ts, end_ts, "
		    "begin_tid, threads, scopes, records, leaks, lost, stale, "
		    "bleed, overlap, misnest, unclosed, source_of, "
		    "tags_dropped, records_not_kept, late",
		    "id", 1},
    [T_TAGS] = {"tags",
		"request_id, key, value, ts, tid, site_id, setter_request_id, "
		"setter_ctx",
		"request_id, key", 0},
    [T_DROPS] = {"drops", "process_id, since_ts, until_ts, count",
		 "process_id, since_ts, until_ts", 0},
    [T_STATS] = {"request_stats",
		 "process_id, minute, name, site_id, requests, records, "
		 "scopes, tags, handed_off, duration_sum, duration_max, late",
		 "process_id, minute, name, site_id", 1},
    [T_WHAT_IF] = {"what_if", "process_id, backend, class, site_id, count",
		   "process_id, backend, class, site_id", 0},
};

/* The columns that hold a local id, translated to central ones. */
static int is_id_column(const char *name)
{
	static const char *const ids[] = {"id",
					  "process_id",
					  "request_id",
					  "ctx_request_id",
					  "victim_request_id",
					  "source_request_id",
					  "setter_request_id",
					  "site_id",
					  NULL};

	for (int i = 0; ids[i]; i++)
		if (strcmp(name, ids[i]) == 0)
			return 1;
	return 0;
}

/* A growable list of local ids. */
struct ids {
	int64_t *v;
	size_t n, cap;
};

static void ids_add(struct ids *l, int64_t id)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->v = realloc(l->v, l->cap * sizeof *l->v);
		if (l->v == NULL)
			abort();
	}
	l->v[l->n++] = id;
}

/* A process row as last sent: its local id and a digest of its text. */
struct row_digest {
	int64_t id;
	uint64_t digest; /* FNV-1a 64 of the row's COPY text */
};

/* Digests of process rows, ascending by id (rows are read ORDER BY id). */
struct digests {
	struct row_digest *v;
	size_t n, cap;
};

static void digests_add(struct digests *l, int64_t id, uint64_t digest)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->v = realloc(l->v, l->cap * sizeof *l->v);
		if (l->v == NULL)
			abort();
	}
	l->v[l->n++] = (struct row_digest){id, digest};
}

/* The digest committed for id, or 0 (taken as "not sent": a text whose
 * FNV-1a is 0 is sent each pass, which costs nothing but the upsert). */
static uint64_t digests_find(const struct digests *l, int64_t id)
{
	size_t lo = 0, hi = l->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->v[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->v[lo].id == id ? l->v[lo].digest : 0;
}

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 14695981039346656037ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
	return h;
}

/* The forwarder's state over its passes. */
struct fwd {
	struct cli *c;
	PGconn *pg;	     /* NULL: not connected */
	int away;	     /* the server was unreachable; said once */
	int said_start;	     /* the first success was logged */
	char host[256];	     /* the name this host forwards under */
	char machine_id[64]; /* "" when there is none */
	char path[4096];     /* the local database, as an absolute path */
	dev_t dev;	     /* the local file open now: a file made anew */
	ino_t ino;	     /* is opened again */
	int64_t created_at;  /* the source's first run's started_at */
	int64_t host_id;
	int64_t source_id; /* 0: not known for this connection */
	int64_t span;	   /* source_id * CLI_PG_ID_SPAN */
	/* Cursors, read under the source's lock at each batch. */
	int64_t cur_sites, cur_leaks, cur_drops, cur_processes, cur_stats;
	struct ids finals; /* processes that became final in this pass */
	/* Process rows as committed centrally by this forwarder since it
	 * connected (sent), and as read in this pass (read): read becomes
	 * sent when the pass's first batch commits. */
	struct digests sent, read;
	char *buf; /* COPY text of the rows to send */
	size_t len, cap;
	int streaming;	 /* a COPY straight into a table is under way */
	size_t pushed;	 /* of buf, what that COPY has */
	int local_error; /* the failure was the local database's */
	char err[1200];	 /* why the last pass failed */
	char upsert[NTABLES][8192]; /* INSERT ... ON CONFLICT per table */
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int __attribute__((format(printf, 2, 3)))
fail(struct fwd *f, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f->err, sizeof f->err, fmt, ap);
	va_end(ap);
	return -1;
}

static int pg_fail(struct fwd *f, const char *what)
{
	return fail(f, "%s: %s", what, cli_pg_message(f->pg));
}

static int local_fail(struct fwd *f, const char *what)
{
	f->local_error = 1;
	return fail(f, "%s: %s: %s", f->path, what, sqlite3_errmsg(f->c->db));
}

/* ------------------------------------------------------------ COPY text */

static void put(struct fwd *f, const char *s, size_t n)
{
	if (f->len + n + 1 > f->cap) {
		while (f->len + n + 1 > f->cap)
			f->cap = f->cap ? 2 * f->cap : 1 << 20;
		f->buf = realloc(f->buf, f->cap);
		if (f->buf == NULL)
			abort();
	}
	memcpy(f->buf + f->len, s, n);
	f->len += n;
}

static void put_int(struct fwd *f, int64_t v)
{
	char s[24];

	put(f, s, (size_t)snprintf(s, sizeof s, "%" PRId64, v));
}

/* Text as COPY's text format wants it: backslash, tab, newline and
 * carriage return escaped; a NUL (which text cannot hold) ends it. */
static void put_text(struct fwd *f, const unsigned char *s, int n)
{
	for (int i = 0; i < n && s[i]; i++) {
		const char *esc = s[i] == '\\'	 ? "\\\\"
				  : s[i] == '\t' ? "\\t"
				  : s[i] == '\n' ? "\\n"
				  : s[i] == '\r' ? "\\r"
						 : NULL;

		if (esc)
			put(f, esc, 2);
		else
			put(f, (const char *)s + i, 1);
	}
}

/* Gives the COPY under way what the buffer gained since last time. */
static int stream_push(struct fwd *f)
{
	if (f->len > f->pushed && PQputCopyData(f->pg, f->buf + f->pushed,
						(int)(f->len - f->pushed)) != 1)
		return pg_fail(f, "COPY");
	f->pushed = f->len;
	return 0;
}

/*
 * Steps st to the end, appending each row to the COPY text: its columns
 * from skip on, ids translated, then source_id (and host_id for
 * processes).  Column 0 of the last row goes to *last (when not NULL).
 * The number of rows, or -1.
 */
static long copy_rows(struct fwd *f, sqlite3_stmt *st, int t, int skip,
		      int64_t *last)
{
	int n = sqlite3_column_count(st), rc;
	int id[64];
	long rows = 0;

	for (int i = 0; i < n && i < 64; i++)
		id[i] = is_id_column(sqlite3_column_name(st, i));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		size_t start = f->len;

		for (int i = skip; i < n; i++) {
			int type = sqlite3_column_type(st, i);
			int64_t v;

			if (i > skip)
				put(f, "\t", 1);
			if (type == SQLITE_NULL) {
				put(f, "\\N", 2);
			} else if (type == SQLITE_INTEGER) {
				v = sqlite3_column_int64(st, i);
				if (id[i] && v >= CLI_PG_ID_SPAN)
					return fail(f,
						    "%s.%s %" PRId64
						    " is past the central "
						    "ids' 10^12 per source",
						    tables[t].name,
						    sqlite3_column_name(st, i),
						    v);
				put_int(f, id[i] && v > 0 ? f->span + v : v);
			} else {
				const unsigned char *s =
				    sqlite3_column_text(st, i);

				put_text(f, s, sqlite3_column_bytes(st, i));
			}
		}
		put(f, "\t", 1);
		put_int(f, f->source_id);
		if (t == T_PROCESSES) {
			put(f, "\t", 1);
			put_int(f, f->host_id);
		}
		put(f, "\n", 1);
		if (t == T_PROCESSES) {
			/* A row as sent before is not sent again. */
			int64_t id = sqlite3_column_int64(st, 0);
			uint64_t d = fnv1a(f->buf + start, f->len - start);

			digests_add(&f->read, id, d);
			if (digests_find(&f->sent, id) == d) {
				f->len = start;
				continue;
			}
		}
		if (last)
			*last = sqlite3_column_int64(st, 0);
		rows++;
		if (f->streaming && f->len - f->pushed >= STREAM_CHUNK &&
		    stream_push(f) == -1)
			return -1;
	}
	if (rc != SQLITE_DONE)
		return local_fail(f, tables[t].name);
	return rows;
}

/* The local statement "SELECT cols FROM table " + tail, or NULL. */
static sqlite3_stmt *select_rows(struct fwd *f, int t, const char *head,
				 const char *tail)
{
	char sql[2048];
	sqlite3_stmt *st;

	snprintf(sql, sizeof sql, "SELECT %s%s FROM %s %s", head,
		 tables[t].cols, tables[t].name, tail);
	if (sqlite3_prepare_v2(f->c->db, sql, -1, &st, NULL) != SQLITE_OK) {
		local_fail(f, "unexpected schema");
		return NULL;
	}
	return st;
}

/* INSERT INTO t SELECT * FROM fw_t ON CONFLICT (key) DO NOTHING, or
 * DO UPDATE of the columns that are not the key, only where they differ
 * (an unchanged row is not written again). */
static void build_upsert(struct fwd *f, int t)
{
	const struct table *tb = &tables[t];
	char *s = f->upsert[t], sets[3072] = "", olds[2048] = "",
	     news[2048] = "";
	size_t cap = sizeof f->upsert[t];
	const char *p = tb->cols;

	while (*p) {
		size_t n = strcspn(p, ",");
		char col[64], key[256];

		snprintf(col, sizeof col, "%.*s", (int)n, p);
		snprintf(key, sizeof key, ", %s,", tb->key);
		p += n;
		p += strspn(p, ", ");
		{
			char needle[80];

			snprintf(needle, sizeof needle, " %s,", col);
			if (strstr(key, needle))
				continue;
		}
		snprintf(sets + strlen(sets), sizeof sets - strlen(sets),
			 "%s%s = EXCLUDED.%s", *sets ? ", " : "", col, col);
		snprintf(olds + strlen(olds), sizeof olds - strlen(olds),
			 "%s%s.%s", *olds ? ", " : "", tb->name, col);
		snprintf(news + strlen(news), sizeof news - strlen(news),
			 "%sEXCLUDED.%s", *news ? ", " : "", col);
	}
	if (tb->update)
		snprintf(s, cap,
			 "INSERT INTO %s SELECT * FROM fw_%s ON CONFLICT "
			 "(%s) DO UPDATE SET %s WHERE (%s) IS DISTINCT FROM "
			 "(%s)%s",
			 tb->name, tb->name, tb->key, sets, olds, news,
			 t == T_PROCESSES
			     ? " RETURNING id, committed_position IS NOT NULL"
			     : "");
	else
		snprintf(s, cap,
			 "INSERT INTO %s SELECT * FROM fw_%s ON CONFLICT "
			 "(%s) DO NOTHING",
			 tb->name, tb->name, tb->key);
}

/*
 * The outcome of a COPY whose end was sent: 0; or -1 (pg_fail naming
 * what) with the failure's SQLSTATE in state (8 bytes).
 */
static int copy_result(struct fwd *f, const char *what, char *state)
{
	PGresult *r = PQgetResult(f->pg);
	int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok && PQresultErrorField(r, PG_DIAG_SQLSTATE))
		snprintf(state, 8, "%s",
			 PQresultErrorField(r, PG_DIAG_SQLSTATE));
	PQclear(r);
	while ((r = PQgetResult(f->pg)) != NULL)
		PQclear(r);
	return ok ? 0 : pg_fail(f, what);
}

/*
 * COPY of the gathered text into table (t's columns).  0; or -1 with the
 * failure's SQLSTATE in state (8 bytes), the text kept.
 */
static int copy_in(struct fwd *f, int t, const char *table, char *state)
{
	char sql[2200];
	PGresult *r;
	int ok;

	snprintf(state, 8, "%s", "");
	snprintf(sql, sizeof sql, "COPY %s (%s, source_id%s) FROM STDIN", table,
		 tables[t].cols, t == T_PROCESSES ? ", host_id" : "");
	r = PQexec(f->pg, sql);
	ok = PQresultStatus(r) == PGRES_COPY_IN;
	PQclear(r);
	if (!ok || PQputCopyData(f->pg, f->buf, (int)f->len) != 1 ||
	    PQputCopyEnd(f->pg, NULL) != 1)
		return pg_fail(f, "COPY");
	return copy_result(f, table, state);
}

/*
 * Sends the COPY text gathered for table t: COPY into its temporary
 * table, then the upsert, then empties it.  The upsert's result
 * (RETURNING), or NULL on failure; an empty text sends nothing and gives
 * an empty result.
 */
static PGresult *send_rows(struct fwd *f, int t)
{
	char tmp[64], sql[128], state[8];
	PGresult *r;

	if (f->len == 0)
		return PQmakeEmptyPGresult(f->pg, PGRES_TUPLES_OK);
	snprintf(tmp, sizeof tmp, "fw_%s", tables[t].name);
	if (copy_in(f, t, tmp, state) == -1)
		return NULL;
	f->len = 0;
	r = cli_pg_query(f->pg, f->upsert[t], 0, NULL);
	snprintf(sql, sizeof sql, "TRUNCATE %s", tmp);
	if (r == NULL || cli_pg_exec(f->pg, sql) == -1) {
		PQclear(r);
		pg_fail(f, tables[t].name);
		return NULL;
	}
	return r;
}

/* send_rows without a result to look at: 0 or -1. */
static int send_plain(struct fwd *f, int t)
{
	PGresult *r = send_rows(f, t);

	PQclear(r);
	return r ? 0 : -1;
}

/*
 * Rows that the central table should not have yet (findings after the
 * cursor, requests it has no row of, their tags) go by COPY straight into
 * it, several times faster than through the temporary table (COPY inserts
 * rows in bulk, INSERT ... SELECT one at a time), and streamed: the COPY
 * is begun before the rows are read from SQLite and takes them a chunk
 * at a time, so that the server inserts while the next are read.  Should
 * one be there after all (a unique key violated), the COPY is undone to a
 * savepoint and the rows, all still in the buffer, go the upsert's way.
 */
static int stream_begin(struct fwd *f, int t)
{
	char sql[2200];
	PGresult *r;
	int ok;

	f->len = f->pushed = 0;
	if (cli_pg_exec(f->pg, "SAVEPOINT fw_new") == -1)
		return pg_fail(f, "SAVEPOINT");
	snprintf(sql, sizeof sql, "COPY %s (%s, source_id%s) FROM STDIN",
		 tables[t].name, tables[t].cols,
		 t == T_PROCESSES ? ", host_id" : "");
	r = PQexec(f->pg, sql);
	ok = PQresultStatus(r) == PGRES_COPY_IN;
	PQclear(r);
	if (!ok)
		return pg_fail(f, "COPY");
	f->streaming = 1;
	return 0;
}

/* Ends the COPY under way, or aborts it when why is not NULL.  0; or -1
 * with the failure's SQLSTATE in state (8 bytes). */
static int stream_finish(struct fwd *f, const char *why, char *state)
{
	f->streaming = 0;
	state[0] = '\0';
	if (PQputCopyEnd(f->pg, why) != 1)
		return pg_fail(f, "COPY");
	return copy_result(f, "COPY", state);
}

static int stream_end(struct fwd *f, int t)
{
	char state[8];

	if (stream_push(f) == -1)
		return -1;
	if (stream_finish(f, NULL, state) == 0) {
		f->len = 0;
		return cli_pg_exec(f->pg, "RELEASE SAVEPOINT fw_new") == -1
			   ? pg_fail(f, "RELEASE SAVEPOINT")
			   : 0;
	}
	if (strcmp(state, "23505") != 0)
		return -1;
	if (cli_pg_exec(f->pg, "ROLLBACK TO SAVEPOINT fw_new") == -1)
		return pg_fail(f, "ROLLBACK TO SAVEPOINT");
	return send_plain(f, t);
}

/* Binds v to ?1 (and w to ?2 when st has it) and copies the rows. */
static long copy_bound(struct fwd *f, sqlite3_stmt *st, int t, int skip,
		       int64_t v, int64_t w, int64_t *last)
{
	long n;

	sqlite3_reset(st);
	sqlite3_bind_int64(st, 1, v);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, w);
	n = copy_rows(f, st, t, skip, last);
	return n;
}

/* One integer from the local database; dflt when NULL or no row. */
static int local_int(struct fwd *f, const char *sql, int64_t arg, int64_t dflt,
		     int64_t *out)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(f->c->db, sql, -1, &st, NULL) != SQLITE_OK)
		return local_fail(f, "unexpected schema");
	if (sqlite3_bind_parameter_count(st) >= 1)
		sqlite3_bind_int64(st, 1, arg);
	rc = sqlite3_step(st);
	*out = rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL
		   ? sqlite3_column_int64(st, 0)
		   : dflt;
	sqlite3_finalize(st);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return local_fail(f, "read");
	return 0;
}

/* ------------------------------------------------------------ central */

/* "{a,b,c}": central ids (local + span) as a bigint[] literal. */
static char *id_array(const struct ids *l, int64_t span)
{
	size_t cap = 2 + l->n * 21 + 1, n = 0;
	char *s = malloc(cap);

	if (s == NULL)
		abort();
	s[n++] = '{';
	for (size_t i = 0; i < l->n; i++)
		n += (size_t)snprintf(s + n, cap - n, "%s%" PRId64,
				      i ? "," : "", l->v[i] + span);
	snprintf(s + n, cap - n, "}");
	return s;
}

static int connect_central(struct fwd *f, int *fatal)
{
	char err[1024];

	*fatal = 0;
	f->pg = cli_pg_connect(f->c->to, "ctxleak forward");
	if (PQstatus(f->pg) != CONNECTION_OK)
		return pg_fail(f, "cannot connect");
	if (cli_pg_migrate(f->pg, err, sizeof err) == -1) {
		*fatal = PQstatus(f->pg) == CONNECTION_OK;
		return fail(f, "%s", err);
	}
	for (int t = 0; t < NTABLES; t++) {
		char sql[256];

		snprintf(sql, sizeof sql,
			 "CREATE TEMP TABLE fw_%s (LIKE %s) ON COMMIT DELETE "
			 "ROWS",
			 tables[t].name, tables[t].name);
		if (cli_pg_exec(f->pg, sql) == -1)
			return pg_fail(f, "temporary tables");
	}
	f->source_id = 0;
	return 0;
}

/* The host's and the source's rows, and their ids. */
static int register_source(struct fwd *f)
{
	char now[24], created[24], host_id[24];
	const char *hp[] = {f->host, *f->machine_id ? f->machine_id : NULL,
			    now};
	const char *sp[] = {host_id, f->path, created, "ctxleak " CLI_VERSION};
	PGresult *r;

	snprintf(now, sizeof now, "%" PRId64, now_ns());
	snprintf(created, sizeof created, "%" PRId64, f->created_at);
	r = cli_pg_query(f->pg,
			 "INSERT INTO hosts (name, machine_id, first_seen, "
			 "last_seen) VALUES ($1, $2, $3, $3) ON CONFLICT "
			 "(name) DO UPDATE SET machine_id = "
			 "coalesce(EXCLUDED.machine_id, hosts.machine_id) "
			 "RETURNING id",
			 3, hp);
	if (r == NULL)
		return pg_fail(f, "hosts");
	f->host_id = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	snprintf(host_id, sizeof host_id, "%" PRId64, f->host_id);
	r = cli_pg_query(f->pg,
			 "INSERT INTO sources (host_id, path, created_at, "
			 "forwarder) VALUES ($1, $2, $3, $4) ON CONFLICT "
			 "(host_id, path, created_at) DO UPDATE SET forwarder "
			 "= EXCLUDED.forwarder RETURNING id",
			 4, sp);
	if (r == NULL)
		return pg_fail(f, "sources");
	f->source_id = atoll(PQgetvalue(r, 0, 0));
	f->span = f->source_id * CLI_PG_ID_SPAN;
	PQclear(r);
	/* Another connection, perhaps another database: nothing is known
	 * to be there. */
	f->sent.n = 0;
	return 0;
}

/* Under the source's lock, the cursors as committed. */
static int read_cursors(struct fwd *f)
{
	char sid[24], lock[96];
	const char *p[] = {sid};
	PGresult *r;

	snprintf(sid, sizeof sid, "%" PRId64, f->source_id);
	snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%d, %d)",
		 SOURCE_LOCK_CLASS, (int)f->source_id);
	if (cli_pg_exec(f->pg, lock) == -1)
		return pg_fail(f, "lock");
	r = cli_pg_query(f->pg,
			 "SELECT tbl, position FROM cursors WHERE source_id "
			 "= $1",
			 1, p);
	if (r == NULL)
		return pg_fail(f, "cursors");
	f->cur_sites = f->cur_leaks = f->cur_drops = f->cur_processes = 0;
	f->cur_stats = 0;
	for (int i = 0; i < PQntuples(r); i++) {
		const char *tbl = PQgetvalue(r, i, 0);
		int64_t v = atoll(PQgetvalue(r, i, 1));

		if (strcmp(tbl, "sites") == 0)
			f->cur_sites = v;
		else if (strcmp(tbl, "leaks") == 0)
			f->cur_leaks = v;
		else if (strcmp(tbl, "drops") == 0)
			f->cur_drops = v;
		else if (strcmp(tbl, "processes") == 0)
			f->cur_processes = v;
		else if (strcmp(tbl, "request_stats") == 0)
			f->cur_stats = v;
	}
	PQclear(r);
	return 0;
}

/* The cursors, the source's last_forward and the host's last_seen, in
 * the batch's transaction. */
static int write_cursors(struct fwd *f)
{
	char sid[24], hid[24], now[24], v[5][24];
	const char *p[] = {sid, v[0], v[1], v[2], v[3], v[4], now, hid};
	PGresult *r;

	snprintf(sid, sizeof sid, "%" PRId64, f->source_id);
	snprintf(hid, sizeof hid, "%" PRId64, f->host_id);
	snprintf(now, sizeof now, "%" PRId64, now_ns());
	snprintf(v[0], 24, "%" PRId64, f->cur_sites);
	snprintf(v[1], 24, "%" PRId64, f->cur_leaks);
	snprintf(v[2], 24, "%" PRId64, f->cur_drops);
	snprintf(v[3], 24, "%" PRId64, f->cur_processes);
	snprintf(v[4], 24, "%" PRId64, f->cur_stats);
	r = cli_pg_query(
	    f->pg,
	    "WITH c AS (INSERT INTO cursors VALUES ($1, 'sites', $2),"
	    " ($1, 'leaks', $3), ($1, 'drops', $4), ($1, 'processes', $5),"
	    " ($1, 'request_stats', $6) ON CONFLICT (source_id, tbl) DO UPDATE"
	    " SET position = EXCLUDED.position),"
	    " s AS (UPDATE sources SET last_forward = $7 WHERE id = $1)"
	    " UPDATE hosts SET last_seen = $7 WHERE id = $8",
	    8, p);
	if (r == NULL)
		return pg_fail(f, "cursors");
	PQclear(r);
	return 0;
}

/* ------------------------------------------------------------ a batch */

/*
 * What changes in place (processes, runs, sites sent before,
 * request_stats, what_if, the requests of processes just finalised): once
 * per pass, in its first batch.
 */
static int forward_mutable(struct fwd *f)
{
	sqlite3_stmt *st;
	PGresult *r;
	int64_t low, newest;
	long n;

	/* processes: all of them, each one that changed (a table of
	 * hundreds to thousands of rows: a pass of 5,000 that sends none
	 * costs about 10 ms of CPU) */
	if ((st = select_rows(f, T_PROCESSES, "", "ORDER BY id")) == NULL)
		return -1;
	f->read.n = 0;
	n = copy_rows(f, st, T_PROCESSES, 0, NULL);
	sqlite3_finalize(st);
	if (n < 0 || (r = send_rows(f, T_PROCESSES)) == NULL)
		return -1;
	f->finals.n = 0;
	for (int i = 0; i < PQntuples(r); i++)
		if (strcmp(PQgetvalue(r, i, 1), "t") == 0)
			ids_add(&f->finals,
				atoll(PQgetvalue(r, i, 0)) - f->span);
	PQclear(r);
	/* Below the cursor too: a reopened row is not final again. */
	if (local_int(f,
		      "SELECT coalesce((SELECT min(id) FROM processes WHERE "
		      "committed_position IS NULL), (SELECT max(id) + 1 FROM "
		      "processes))",
		      f->cur_processes, f->cur_processes, &low) == -1)
		return -1;

	/* what_if, and the request_stats of the finalised */
	if ((st = select_rows(f, T_WHAT_IF, "", "WHERE process_id = ?1")) ==
	    NULL)
		return -1;
	for (size_t i = 0; i < f->finals.n; i++)
		if (copy_bound(f, st, T_WHAT_IF, 0, f->finals.v[i], 0, NULL) <
		    0) {
			sqlite3_finalize(st);
			return -1;
		}
	sqlite3_finalize(st);
	if (send_plain(f, T_WHAT_IF) == -1)
		return -1;
	/* Rows from cur_stats on of every unfinished process, and the older
	 * rows of those just finalised: no row twice. */
	if ((st = select_rows(f, T_STATS, "",
			      "WHERE process_id >= ?1 AND minute >= ?2")) ==
	    NULL)
		return -1;
	n = copy_bound(f, st, T_STATS, 0, f->cur_processes, f->cur_stats, NULL);
	sqlite3_finalize(st);
	if (n < 0 || (st = select_rows(f, T_STATS, "",
				       "WHERE process_id = ?1 AND "
				       "minute < ?2")) == NULL)
		return -1;
	for (size_t i = 0; i < f->finals.n; i++)
		if (copy_bound(f, st, T_STATS, 0, f->finals.v[i], f->cur_stats,
			       NULL) < 0) {
			sqlite3_finalize(st);
			return -1;
		}
	sqlite3_finalize(st);
	if (send_plain(f, T_STATS) == -1)
		return -1;
	if (local_int(f, "SELECT max(minute) FROM request_stats", 0, 0,
		      &newest) == -1)
		return -1;
	if (newest - STATS_SETTLE_NS > f->cur_stats)
		f->cur_stats = newest - STATS_SETTLE_NS;
	f->cur_processes = low;

	/* the central requests of the finalised, once more */
	if (f->finals.n) {
		char *arr = id_array(&f->finals, f->span);
		const char *p[] = {arr};

		r = cli_pg_query(f->pg,
				 "SELECT id FROM requests WHERE process_id = "
				 "ANY($1::bigint[])",
				 1, p);
		free(arr);
		if (r == NULL)
			return pg_fail(f, "requests");
		if ((st = select_rows(f, T_REQUESTS, "", "WHERE id = ?1")) ==
		    NULL) {
			PQclear(r);
			return -1;
		}
		for (int i = 0; i < PQntuples(r); i++)
			if (copy_bound(f, st, T_REQUESTS, 0,
				       atoll(PQgetvalue(r, i, 0)) - f->span, 0,
				       NULL) < 0) {
				sqlite3_finalize(st);
				PQclear(r);
				return -1;
			}
		sqlite3_finalize(st);
		PQclear(r);
		if (send_plain(f, T_REQUESTS) == -1)
			return -1;
	}

	/* sites already sent: used and released_at change */
	if ((st = select_rows(f, T_SITES, "", "WHERE id <= ?1")) == NULL)
		return -1;
	n = copy_bound(f, st, T_SITES, 0, f->cur_sites, 0, NULL);
	sqlite3_finalize(st);
	if (n < 0 || send_plain(f, T_SITES) == -1)
		return -1;

	/* runs */
	if ((st = select_rows(f, T_RUNS, "", "")) == NULL)
		return -1;
	n = copy_rows(f, st, T_RUNS, 0, NULL);
	sqlite3_finalize(st);
	return n < 0 ? -1 : send_plain(f, T_RUNS);
}

/* An append-only table from its cursor: rows after it, at most a batch.
 * The number of rows, or -1. */
static long forward_appended(struct fwd *f, int t, int64_t *cursor)
{
	char tail[128];
	sqlite3_stmt *st;
	int by_rowid = t == T_DROPS;
	long n;

	snprintf(tail, sizeof tail, "WHERE %s > ?1 ORDER BY %s LIMIT %d",
		 by_rowid ? "rowid" : "id", by_rowid ? "rowid" : "id",
		 BATCH_ROWS);
	if ((st = select_rows(f, t, by_rowid ? "rowid, " : "", tail)) == NULL ||
	    (t != T_SITES && stream_begin(f, t) == -1)) {
		sqlite3_finalize(st);
		return -1;
	}
	n = copy_bound(f, st, t, by_rowid, *cursor, 0, cursor);
	sqlite3_finalize(st);
	if (n < 0 || (t == T_SITES ? send_plain(f, t) : stream_end(f, t)) == -1)
		return -1;
	return n;
}

/* A request a finding names: its local id and process. */
struct named {
	int64_t id, process;
	int pending; /* it is a row of the central pending_requests */
	int known;   /* the central requests has its row */
};

/* Named requests, gathered from the central pending ones and from the
 * findings of the batch. */
struct named_set {
	struct named *v;
	size_t n, cap;
};

static void named_add(struct named_set *s, int64_t id, int64_t process,
		      int pending)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 1024;
		s->v = realloc(s->v, s->cap * sizeof *s->v);
		if (s->v == NULL)
			abort();
	}
	s->v[s->n++] = (struct named){id, process, pending, 0};
}

static int by_id(const void *a, const void *b)
{
	const struct named *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return y->pending - x->pending; /* the pending one first */
}

/* Sorted by id, one entry per id (the pending one where there are two):
 * an upsert may not meet a row twice. */
static void named_unique(struct named_set *s)
{
	size_t out = 0;

	if (s->n == 0)
		return;
	qsort(s->v, s->n, sizeof *s->v, by_id);
	for (size_t i = 0; i < s->n; i++)
		if (out == 0 || s->v[out - 1].id != s->v[i].id)
			s->v[out++] = s->v[i];
	s->n = out;
}

/* The central pending requests of the source. */
static int gather_pending(struct fwd *f, struct named_set *s)
{
	char sid[24], span[24];
	const char *p[] = {sid, span};
	PGresult *r;

	snprintf(sid, sizeof sid, "%" PRId64, f->source_id);
	snprintf(span, sizeof span, "%" PRId64, f->span);
	r = cli_pg_query(f->pg,
			 "SELECT request_id - $2, process_id - $2 FROM "
			 "pending_requests WHERE source_id = $1",
			 2, p);
	if (r == NULL)
		return pg_fail(f, "pending_requests");
	for (int i = 0; i < PQntuples(r); i++)
		named_add(s, atoll(PQgetvalue(r, i, 0)),
			  atoll(PQgetvalue(r, i, 1)), 1);
	PQclear(r);
	return 0;
}

/* The requests the findings after id from, up to to, name. */
static int gather_named(struct fwd *f, int64_t from, int64_t to,
			struct named_set *s)
{
	sqlite3_stmt *st;
	int rc;

	if (to <= from)
		return 0;
	if (sqlite3_prepare_v2(
		f->c->db,
		"SELECT victim_request_id, process_id FROM leaks "
		"WHERE id > ?1 AND id <= ?2 AND "
		"victim_request_id IS NOT NULL UNION "
		"SELECT source_request_id, process_id FROM leaks "
		"WHERE id > ?1 AND id <= ?2 AND "
		"source_request_id IS NOT NULL",
		-1, &st, NULL) != SQLITE_OK)
		return local_fail(f, "unexpected schema");
	sqlite3_bind_int64(st, 1, from);
	sqlite3_bind_int64(st, 2, to);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		named_add(s, sqlite3_column_int64(st, 0),
			  sqlite3_column_int64(st, 1), 0);
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? 0 : local_fail(f, "leaks");
}

/* Runs sql with $1 the source and $2, $3 central id arrays of a and b
 * (b may be NULL). */
static int pending_change(struct fwd *f, const char *sql, const struct ids *a,
			  const struct ids *b)
{
	char sid[24], *x = id_array(a, f->span),
		      *y = b ? id_array(b, f->span) : NULL;
	const char *p[] = {sid, x, y};
	PGresult *r;

	snprintf(sid, sizeof sid, "%" PRId64, f->source_id);
	r = cli_pg_query(f->pg, sql, b ? 3 : 2, p);
	free(x);
	free(y);
	if (r == NULL)
		return pg_fail(f, "pending_requests");
	PQclear(r);
	return 0;
}

/* Marks the named requests whose row the central database has. */
static int mark_known(struct fwd *f, struct named_set *s)
{
	struct ids asked = {0};
	char *arr, span[24], end[24];
	const char *p[] = {span, end};
	PGresult *r;
	int64_t highest;
	size_t j = 0;

	if (s->n == 0)
		return 0;
	/* Request ids grow: those above the highest the central database
	 * has of this source are not there, and need no lookup (in a
	 * backlog, nearly all). */
	snprintf(span, sizeof span, "%" PRId64, f->span);
	snprintf(end, sizeof end, "%" PRId64,
		 f->span + (int64_t)CLI_PG_ID_SPAN);
	r = cli_pg_query(f->pg,
			 "SELECT coalesce(max(id) - $1, 0) FROM requests WHERE "
			 "id > $1 AND id < $2",
			 2, p);
	if (r == NULL)
		return pg_fail(f, "requests");
	highest = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	for (size_t i = 0; i < s->n && s->v[i].id <= highest; i++)
		ids_add(&asked, s->v[i].id);
	if (asked.n == 0)
		return 0;
	arr = id_array(&asked, f->span);
	free(asked.v);
	p[0] = arr;
	p[1] = span;
	r = cli_pg_query(f->pg,
			 "SELECT id - $2 FROM requests WHERE id = "
			 "ANY($1::bigint[]) ORDER BY id",
			 2, p);
	free(arr);
	if (r == NULL)
		return pg_fail(f, "requests");
	for (int i = 0; i < PQntuples(r); i++) {
		int64_t id = atoll(PQgetvalue(r, i, 0));

		while (j < s->n && s->v[j].id < id)
			j++;
		if (j < s->n && s->v[j].id == id)
			s->v[j].known = 1;
	}
	PQclear(r);
	return 0;
}

/* The lists forward_requests fills. */
struct request_lists {
	struct ids sent_new; /* rows sent that were not central: tags too */
	struct ids gone;     /* pending ones to drop */
	struct ids absent;   /* named, no row yet, process running */
	struct ids absent_proc;
};

/*
 * Gathers the rows of the named requests whose known is as given, and
 * files each request in lists.  0 or -1.
 */
static int gather_requests(struct fwd *f, const struct named_set *s, int known,
			   sqlite3_stmt *req, sqlite3_stmt *running,
			   struct request_lists *l)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct named *q = &s->v[i];
		long n;
		int step;

		if (q->known != known)
			continue;
		if ((n = copy_bound(f, req, T_REQUESTS, 0, q->id, 0, NULL)) < 0)
			return -1;
		if (n && !known)
			ids_add(&l->sent_new, q->id);
		if (n || known) { /* known, no row: retention took it */
			if (q->pending)
				ids_add(&l->gone, q->id);
			continue;
		}
		sqlite3_reset(running);
		sqlite3_bind_int64(running, 1, q->process);
		step = sqlite3_step(running);
		if (step != SQLITE_ROW && step != SQLITE_DONE)
			return local_fail(f, "processes");
		if (step == SQLITE_DONE && q->pending)
			ids_add(&l->gone, q->id);
		else if (step == SQLITE_ROW && !q->pending) {
			ids_add(&l->absent, q->id);
			ids_add(&l->absent_proc, q->process);
		}
	}
	return 0;
}

/*
 * The requests that the batch's findings (ids from, to] and the pending
 * ones name: each whose row is there is sent (with its tags the first
 * time: they do not change); one whose row is not is pending (until a
 * batch finds it), unless its process is final (it never will be).
 */
static int forward_requests(struct fwd *f, int64_t from, int64_t to)
{
	struct named_set s = {0};
	struct request_lists l = {0};
	sqlite3_stmt *req = NULL, *tags = NULL, *running = NULL;
	int rc = -1;

	if (gather_pending(f, &s) == -1 || gather_named(f, from, to, &s) == -1)
		goto out;
	named_unique(&s);
	if (mark_known(f, &s) == -1 ||
	    (req = select_rows(f, T_REQUESTS, "", "WHERE id = ?1")) == NULL ||
	    (tags = select_rows(f, T_TAGS, "", "WHERE request_id = ?1")) ==
		NULL ||
	    sqlite3_prepare_v2(f->c->db,
			       "SELECT 1 FROM processes WHERE id = ?1 AND "
			       "committed_position IS NULL",
			       -1, &running, NULL) != SQLITE_OK)
		goto out;
	if (stream_begin(f, T_REQUESTS) == -1 ||
	    gather_requests(f, &s, 0, req, running, &l) == -1 ||
	    stream_end(f, T_REQUESTS) == -1 ||
	    gather_requests(f, &s, 1, req, running, &l) == -1 ||
	    send_plain(f, T_REQUESTS) == -1 || stream_begin(f, T_TAGS) == -1)
		goto out;
	for (size_t i = 0; i < l.sent_new.n; i++)
		if (copy_bound(f, tags, T_TAGS, 0, l.sent_new.v[i], 0, NULL) <
		    0)
			goto out;
	if (stream_end(f, T_TAGS) == -1 ||
	    (l.gone.n && pending_change(f,
					"DELETE FROM pending_requests WHERE "
					"source_id = $1 AND request_id = "
					"ANY($2::bigint[])",
					&l.gone, NULL) == -1) ||
	    (l.absent.n &&
	     pending_change(f,
			    "INSERT INTO pending_requests SELECT $1, "
			    "unnest($2::bigint[]), unnest($3::bigint[])",
			    &l.absent, &l.absent_proc) == -1))
		goto out;
	rc = 0;
out:
	sqlite3_finalize(req);
	sqlite3_finalize(tags);
	sqlite3_finalize(running);
	free(s.v);
	free(l.sent_new.v);
	free(l.gone.v);
	free(l.absent.v);
	free(l.absent_proc.v);
	return rc;
}

/*
 * One batch in one central transaction: the mutable tables when first,
 * then at most BATCH_ROWS of each append-only table, the pending
 * requests, and the cursors.  1: there is more; 0: caught up; -1.
 */
static int batch(struct fwd *f, int first)
{
	long sites, leaks, drops;
	int64_t leaks_from;

	f->len = 0;
	if (cli_pg_exec(f->pg, "BEGIN") == -1)
		return pg_fail(f, "BEGIN");
	if (read_cursors(f) == -1 || (first && forward_mutable(f) == -1))
		goto failed;
	leaks_from = f->cur_leaks;
	if ((sites = forward_appended(f, T_SITES, &f->cur_sites)) < 0 ||
	    (leaks = forward_appended(f, T_LEAKS, &f->cur_leaks)) < 0 ||
	    (drops = forward_appended(f, T_DROPS, &f->cur_drops)) < 0 ||
	    forward_requests(f, leaks_from, f->cur_leaks) == -1 ||
	    write_cursors(f) == -1)
		goto failed;
	if (cli_pg_exec(f->pg, "COMMIT") == -1) {
		pg_fail(f, "COMMIT");
		goto failed;
	}
	if (first) { /* the process rows read are central now */
		struct digests t = f->sent;

		f->sent = f->read;
		f->read = t;
	}
	return sites == BATCH_ROWS || leaks == BATCH_ROWS ||
	       drops == BATCH_ROWS;
failed:
	if (f->streaming) {
		char state[8];

		stream_finish(f, "the batch failed", state);
	}
	cli_pg_exec(f->pg, "ROLLBACK");
	return -1;
}

/* ------------------------------------------------------------ passes */

/* A database file made anew is opened anew (and is a new source). */
static int reopen_if_replaced(struct fwd *f)
{
	struct stat st;
	int rc;

	if (stat(f->c->db_path, &st) == -1 ||
	    (st.st_dev == f->dev && st.st_ino == f->ino))
		return 0;
	cli_db_close(f->c);
	rc = cli_db_open(f->c);
	if (rc) {
		f->local_error = 1;
		return fail(f, "cannot open %s again", f->c->db_path);
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	return 0;
}

/*
 * One pass: everything the local snapshot holds, batch after batch.
 * 0, or -1 (f->err says why; f->local_error when the local database
 * failed).
 */
static int pass(struct fwd *f)
{
	int64_t created;
	int rc = 0, fatal;

	f->local_error = 0;
	if (reopen_if_replaced(f) == -1)
		return -1;
	if (sqlite3_exec(f->c->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return local_fail(f, "BEGIN");
	if (local_int(f, "SELECT started_at FROM runs ORDER BY id LIMIT 1", 0,
		      0, &created) == -1) {
		rc = -1;
		goto out;
	}
	if (created == 0) /* no daemon has written it yet: nothing to do */
		goto out;
	if (f->pg == NULL && connect_central(f, &fatal) == -1) {
		rc = fatal ? -2 : -1;
		goto out;
	}
	if (f->source_id == 0 || created != f->created_at) {
		f->created_at = created;
		if (register_source(f) == -1) {
			rc = -1;
			goto out;
		}
	}
	for (int first = 1;; first = 0) {
		rc = batch(f, first);
		if (rc <= 0)
			break;
	}
out:
	sqlite3_exec(f->c->db, "COMMIT", NULL, NULL, NULL);
	return rc;
}

static void sleep_sec(int sec)
{
	struct timespec ts = {sec, 0};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* The central connection is dropped after a failure: the next attempt
 * connects afresh (a restarted server, a new address). */
static void disconnect(struct fwd *f)
{
	PQfinish(f->pg);
	f->pg = NULL;
	f->source_id = 0;
}

static int setup(struct fwd *f, struct cli *c)
{
	struct stat st;

	f->c = c;
	if (c->filter.host)
		snprintf(f->host, sizeof f->host, "%s", c->filter.host);
	else if (common_host_name(f->host, sizeof f->host) == -1)
		return cli_error(CLI_EXIT_USAGE,
				 "forward: this host has no name: give one "
				 "with --host NAME");
	if (common_machine_id(f->machine_id, sizeof f->machine_id) == -1)
		f->machine_id[0] = '\0';
	if (realpath(c->db_path, f->path) == NULL)
		snprintf(f->path, sizeof f->path, "%s", c->db_path);
	if (stat(c->db_path, &st) == 0) {
		f->dev = st.st_dev;
		f->ino = st.st_ino;
	}
	for (int t = 0; t < NTABLES; t++)
		build_upsert(f, t);
	return 0;
}

int cli_forward(struct cli *c)
{
	struct fwd f = {0};
	int interval = c->interval ? c->interval : DEFAULT_INTERVAL_SEC;
	int wait = interval, rc;

	if (c->to == NULL)
		return cli_error(CLI_EXIT_USAGE,
				 "forward: --to URL is required (see 'ctxleak "
				 "forward --help')");
	if (!cli_pg_is_url(c->to))
		return cli_error(CLI_EXIT_USAGE,
				 "forward: --to '%s' is not a PostgreSQL "
				 "database (postgresql://... or \"key=value "
				 "...\")",
				 c->to);
	if ((rc = setup(&f, c)) != 0)
		return rc;
	for (;;) {
		f.err[0] = '\0';
		rc = pass(&f);
		if (rc == 0) {
			if (f.away)
				cli_error(0, "forward: the central database is "
					     "back; forwarding again");
			else if (!f.said_start && !c->once)
				cli_error(0,
					  "forward: %s to the central "
					  "database as host %s",
					  f.path, f.host);
			f.away = 0;
			f.said_start = 1;
			wait = interval;
			if (c->once)
				break;
		} else if (rc == -2 || f.local_error || c->once) {
			rc = cli_error(CLI_EXIT_DB, "forward: %s", f.err);
			break;
		} else {
			if (!f.away)
				cli_error(0,
					  "forward: the central database is "
					  "away (%s); nothing is lost, "
					  "trying again until it is back",
					  f.err);
			f.away = 1;
			disconnect(&f);
			wait = wait * 2 > BACKOFF_MAX_SEC ? BACKOFF_MAX_SEC
							  : wait * 2;
		}
		sleep_sec(f.away ? wait : interval);
	}
	disconnect(&f);
	free(f.buf);
	free(f.finals.v);
	free(f.sent.v);
	free(f.read.v);
	return rc;
}
