/*
 * store_feed.c: what ctxleakd's fleet outputs (fleet.c) read of the
 * database: the findings a commit stored, read back from the file after
 * the COMMIT, so that a log line never tells of a finding the file lost;
 * and the totals the metrics report.
 *
 * A finding is read as `ctxleak leaks --json` reads it (cli/cli_leaks.c):
 * the same join, the same site string, the same rewriting of contexts in
 * the detail line, so that a line of the findings log carries the CLI's
 * values.  The CLI cannot be linked into the daemon; tests/test_fleet_logs.c
 * compares the two outputs field by field.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/* The CLI's buffers, whose bounds its output shows: a longer site or
 * detail is cut there alike. */
#define SITE_MAX   1024
#define DETAIL_MAX 2048
/* A context the victim's own scopes do not explain is looked up among
 * the requests that began last (requests.id is assigned at begin): the
 * CLI scans every request, which would cost the daemon a scan of a large
 * table per commit; the contexts a detail names (the backend's current
 * request when a scope closed out of order) are of requests that ran at
 * the same time.  About 1.5 MB, read once per commit that needs it. */
#define RECENT_REQUESTS 65536

/* The columns of ST_FINDINGS: those of struct store_finding_row, then
 * what the site string and the detail are made of. */
enum { C_FILE = SF_COLS, C_LINE, C_FUNC, C_DETAIL };

enum {
	ST_FINDINGS,
	ST_VICTIM_SCOPE,
	ST_PROCESS_TOTALS,
	ST_DROP_WINDOWS,
	ST_UNCLEAN_RUNS,
	ST_CLASS_COUNTS,
	ST_RECENT_REQUESTS,
	NFEED
};

static const char *const feed_sql[NFEED] = {
    /* cli/cli_leaks.c's leaks_sql, by id: the commit's rows. */
    [ST_FINDINGS] =
	"SELECT l.id, l.class, p.app, p.pid, l.tid, l.ts, l.victim_request_id,"
	" l.victim_ctx, l.victim_name, l.source_request_id, l.source_ctx,"
	" l.source_name, l.record, l.name, l.value, l.ctx, l.cause, l.other,"
	" l.process_id, s.file, s.line, s.func, l.detail"
	" FROM leaks l JOIN processes p ON p.id = l.process_id"
	" LEFT JOIN sites s ON s.id = l.site_id WHERE l.id >= ?1"
	" ORDER BY l.id",
    /* cli_db_ctx_request's first guess, through records_request. */
    [ST_VICTIM_SCOPE] = "SELECT 1 FROM records WHERE request_id = ?1"
			" AND ctx = ?2 AND type = 'BEGIN'",
    [ST_PROCESS_TOTALS] = "SELECT coalesce(sum(records), 0),"
			  " coalesce(sum(dropped), 0),"
			  " coalesce(sum(vanished), 0) FROM processes",
    [ST_DROP_WINDOWS] = "SELECT count(*) FROM drops",
    [ST_UNCLEAN_RUNS] = "SELECT count(*) FROM runs WHERE unclean = 1",
    [ST_CLASS_COUNTS] = "SELECT class, count(*) FROM leaks GROUP BY class",
    [ST_RECENT_REQUESTS] = "SELECT process_id, ctx, id FROM requests"
			   " WHERE id > (SELECT max(id) FROM requests) - ?1",
};

/* A request row: which process, its root ctx, its id. */
struct root {
	int64_t process, ctx, id;
};

struct feed {
	sqlite3_stmt *st[NFEED];
	struct root *roots; /* the recent requests, sorted for bsearch */
	size_t nroots, cap;
	int roots_loaded; /* in this feed_findings call */
};

struct feed *feed_new(struct sqlite3 *db)
{
	struct feed *f = calloc(1, sizeof *f);

	if (f == NULL)
		return NULL;
	for (int i = 0; i < NFEED; i++)
		if (sqlite3_prepare_v3(db, feed_sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &f->st[i],
				       NULL) != SQLITE_OK) {
			feed_free(f);
			return NULL;
		}
	return f;
}

void feed_free(struct feed *f)
{
	if (f == NULL)
		return;
	for (int i = 0; i < NFEED; i++)
		sqlite3_finalize(f->st[i]);
	free(f->roots);
	free(f);
}

static struct store_value column(sqlite3_stmt *st, int col)
{
	struct store_value v = {STORE_NULL, 0, NULL, 0};

	switch (sqlite3_column_type(st, col)) {
	case SQLITE_NULL:
		break;
	case SQLITE_INTEGER:
		v.type = STORE_INT;
		v.i = sqlite3_column_int64(st, col);
		break;
	default:
		/* Text before bytes: sqlite3_column_bytes may convert. */
		v.type = STORE_TEXT;
		v.s = (const char *)sqlite3_column_text(st, col);
		v.len = (size_t)sqlite3_column_bytes(st, col);
		if (v.s == NULL)
			v.s = "";
	}
	return v;
}

/* "server.c:142 on_db_reply", as the CLI's site_str. */
static const char *site_str(sqlite3_stmt *st, char *buf, size_t len)
{
	const char *func = (const char *)sqlite3_column_text(st, C_FUNC);

	if (sqlite3_column_type(st, C_FILE) == SQLITE_NULL)
		return NULL;
	snprintf(buf, len, "%s:%d%s%s",
		 (const char *)sqlite3_column_text(st, C_FILE),
		 sqlite3_column_int(st, C_LINE), func != NULL ? " " : "",
		 func != NULL ? func : "");
	return buf;
}

static int cmp_root(const void *a, const void *b)
{
	const struct root *x = a, *y = b;

	if (x->process != y->process)
		return x->process < y->process ? -1 : 1;
	return x->ctx < y->ctx ? -1 : x->ctx > y->ctx;
}

static void load_roots(struct feed *f)
{
	sqlite3_stmt *st = f->st[ST_RECENT_REQUESTS];
	struct root *more;

	f->roots_loaded = 1;
	f->nroots = 0;
	sqlite3_bind_int64(st, 1, RECENT_REQUESTS);
	while (sqlite3_step(st) == SQLITE_ROW) {
		if (f->nroots == f->cap) {
			size_t cap = f->cap ? 2 * f->cap : 1024;

			if ((more = realloc(f->roots, cap * sizeof *more)) ==
			    NULL)
				break; /* the contexts stay numbers */
			f->roots = more;
			f->cap = cap;
		}
		f->roots[f->nroots++] = (struct root){
		    sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
		    sqlite3_column_int64(st, 2)};
	}
	sqlite3_reset(st);
	qsort(f->roots, f->nroots, sizeof *f->roots, cmp_root);
}

/* The request a ctx names, as cli_db_ctx_request finds it: the victim
 * when it is one of the victim's own scopes, else the request whose root
 * it is (among the recent ones); 0: none. */
static int64_t ctx_request(struct feed *f, int64_t process, int64_t victim,
			   uint64_t ctx)
{
	sqlite3_stmt *st = f->st[ST_VICTIM_SCOPE];
	struct root key = {process, (int64_t)ctx, 0}, *found;
	int mine = 0;

	if (ctx == 0)
		return 0;
	if (victim != 0) {
		sqlite3_bind_int64(st, 1, victim);
		sqlite3_bind_int64(st, 2, (int64_t)ctx);
		mine = sqlite3_step(st) == SQLITE_ROW;
		sqlite3_reset(st);
		if (mine)
			return victim;
	}
	if (!f->roots_loaded)
		load_roots(f);
	found = f->nroots
		    ? bsearch(&key, f->roots, f->nroots, sizeof key, cmp_root)
		    : NULL;
	return found != NULL ? found->id : 0;
}

/* The detail with each daemon-written hex ctx as "#ID" or decimal, as
 * the CLI's cli_detail writes it. */
static const char *detail_str(struct feed *f, const char *detail,
			      int64_t process, int64_t victim, char *buf,
			      size_t len)
{
	const char *p = detail;
	size_t n = 0;

	buf[0] = '\0';
	while (*p != '\0' && n + 1 < len) {
		char *end;
		uint64_t ctx;
		int64_t id;

		if (!common_detail_ctx_at(detail, p)) {
			buf[n++] = *p++;
			continue;
		}
		ctx = strtoull(p, &end, 16);
		p = end;
		id = ctx_request(f, process, victim, ctx);
		n += id ? (size_t)snprintf(buf + n, len - n, "#%" PRId64, id)
			: (size_t)snprintf(buf + n, len - n, "%" PRIu64, ctx);
		if (n >= len)
			n = len - 1;
	}
	buf[n] = '\0';
	return buf;
}

int feed_findings(struct feed *f, int64_t first, store_finding_fn fn, void *arg)
{
	sqlite3_stmt *st = f->st[ST_FINDINGS];
	struct store_finding_row row;
	char site[SITE_MAX], detail[DETAIL_MAX];
	const char *raw;
	int rc;

	f->roots_loaded = 0; /* requests rows may have come since */
	sqlite3_bind_int64(st, 1, first);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		for (int c = 0; c < SF_COLS; c++)
			row.col[c] = column(st, c);
		row.site = site_str(st, site, sizeof site);
		raw = (const char *)sqlite3_column_text(st, C_DETAIL);
		row.detail = raw != NULL
				 ? detail_str(f, raw, row.col[SF_PROCESS].i,
					      row.col[SF_VICTIM_ID].i, detail,
					      sizeof detail)
				 : NULL;
		fn(arg, &row);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int one_int(sqlite3_stmt *st, uint64_t *out)
{
	int rc = sqlite3_step(st);

	if (rc == SQLITE_ROW)
		*out = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int class_counts(struct feed *f, uint64_t *out)
{
	sqlite3_stmt *st = f->st[ST_CLASS_COUNTS];
	int rc;

	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *name = (const char *)sqlite3_column_text(st, 0);

		for (int c = 0; name != NULL && c < COMMON_CLASS_COUNT; c++)
			if (strcmp(name, common_class_names[c]) == 0)
				out[c] = (uint64_t)sqlite3_column_int64(st, 1);
	}
	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

int feed_totals(struct feed *f, struct store_totals *out, int with_findings)
{
	sqlite3_stmt *st = f->st[ST_PROCESS_TOTALS];
	int rc = sqlite3_step(st);

	memset(out, 0, sizeof *out);
	if (rc == SQLITE_ROW) {
		out->records_stored = (uint64_t)sqlite3_column_int64(st, 0);
		out->records_dropped = (uint64_t)sqlite3_column_int64(st, 1);
		out->vanished = (uint64_t)sqlite3_column_int64(st, 2);
		rc = SQLITE_OK;
	}
	sqlite3_reset(st);
	if (rc == SQLITE_OK)
		rc = one_int(f->st[ST_DROP_WINDOWS], &out->drop_windows);
	if (rc == SQLITE_OK)
		rc = one_int(f->st[ST_UNCLEAN_RUNS], &out->unclean_runs);
	if (rc == SQLITE_OK && with_findings)
		rc = class_counts(f, out->findings);
	return rc;
}
