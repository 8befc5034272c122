/*
 * cli_export.c: `ctxleak export --format chrome-trace`, the selection as
 * the Trace Event Format JSON that Perfetto and chrome://tracing open:
 * one object, {"traceEvents": [...], "displayTimeUnit", "otherData"}.
 *
 * Each client process is a pid, each thread a tid.  A scope is a complete
 * event ("ph":"X") from its BEGIN to its END, on the thread it began on; a
 * TAG or EVENT record an instant event ("ph":"i", thread scope); a finding
 * an instant event on the thread of its evidence, with its class, the
 * requests, the detail and the fix in args.  ts and dur are microseconds
 * (the format's unit) since the earliest event, with the ns as three
 * decimals: a double holds that exactly, which epoch microseconds with ns
 * (19 digits) it would not.  otherData.epoch gives the origin.
 *
 * The selection: findings by the filters; records of the processes that
 * --app/--pid select, in the time range, and when a finding filter
 * (--class, --request, --site) is given only those of the requests the
 * selected findings involve.
 */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

/* Every query below is a printf format: %1$s the process conditions (on
 * p), %2$s the involved-requests condition (on b, or ""), %3$s the
 * findings' conditions (on l and p).  A scope's END e is the first END of
 * its ctx in its request after it. */
#define SCOPES_FROM                                                            \
	" FROM records b JOIN processes p ON p.id = b.process_id"              \
	" LEFT JOIN requests r ON r.id = b.request_id"                         \
	" LEFT JOIN records e ON e.id = (SELECT min(x.id) FROM records x"      \
	" WHERE x.request_id = b.request_id AND x.ctx = b.ctx AND"             \
	" x.type = 'END' AND x.id > b.id)"                                     \
	" WHERE b.type = 'BEGIN'%1$s%2$s"                                      \
	" AND (:until = 0 OR b.ts <= :until)"                                  \
	" AND (:since = 0 OR coalesce(e.ts, b.ts) >= :since)"
#define MARKS_FROM                                                             \
	" FROM records b JOIN processes p ON p.id = b.process_id"              \
	" LEFT JOIN requests r ON r.id = b.request_id"                         \
	" WHERE b.type IN ('TAG', 'EVENT')%1$s%2$s"                            \
	" AND (:until = 0 OR b.ts <= :until)"                                  \
	" AND (:since = 0 OR b.ts >= :since)"
#define FINDINGS_FROM                                                          \
	" FROM leaks l JOIN processes p ON p.id = l.process_id"                \
	" LEFT JOIN sites s ON s.id = l.site_id WHERE 1%3$s"

/* The requests the selected findings involve. */
#define INVOLVED                                                               \
	" AND b.request_id IN (SELECT l.victim_request_id FROM leaks l JOIN"   \
	" processes p ON p.id = l.process_id WHERE 1%s UNION SELECT"           \
	" l.source_request_id FROM leaks l JOIN processes p ON p.id ="         \
	" l.process_id WHERE 1%s)"

static const char bounds_sql[] =
    "SELECT min(t0), max(t1) FROM (SELECT b.ts AS t0,"
    " coalesce(e.ts, b.ts) AS t1" SCOPES_FROM
    " UNION ALL SELECT b.ts, b.ts" MARKS_FROM
    " UNION ALL SELECT l.ts, l.ts" FINDINGS_FROM ")";

/* Scopes and marks share their columns. */
enum {
	B_PID,
	B_TID,
	B_TS,
	B_TYPE,
	B_NAME,
	B_VALUE,
	B_CTX,
	B_REQ,
	B_REQ_NAME,
	B_END,
	B_END_TID
};

static const char scopes_sql[] =
    "SELECT p.pid, b.tid, b.ts, b.type, b.name, b.value, b.ctx,"
    " b.request_id, r.name, e.ts, e.tid" SCOPES_FROM " ORDER BY b.ts, b.id";

static const char marks_sql[] =
    "SELECT p.pid, b.tid, b.ts, b.type, b.name, b.value, b.ctx,"
    " b.request_id, r.name, NULL, NULL" MARKS_FROM " ORDER BY b.ts, b.id";

enum {
	F_ID,
	F_CLASS,
	F_TS,
	F_TID,
	F_PID,
	F_VICTIM,
	F_VICTIM_NAME,
	F_SOURCE,
	F_SOURCE_NAME,
	F_RECORD,
	F_NAME,
	F_VALUE,
	F_DETAIL,
	F_PROCESS,
	F_FILE,
	F_LINE
};

static const char findings_sql[] =
    "SELECT l.id, l.class, l.ts, l.tid, p.pid, l.victim_request_id,"
    " l.victim_name, l.source_request_id, l.source_name, l.record, l.name,"
    " l.value, l.detail, l.process_id, s.file, s.line" FINDINGS_FROM
    " ORDER BY l.ts, l.id";

static const char processes_sql[] =
    "SELECT DISTINCT p.pid, p.app, p.backend FROM processes p WHERE 1%1$s"
    " ORDER BY p.pid";

struct export
{
	struct cli *c;
	struct cli_json *j;
	char where[1024];    /* %3$s */
	char process[256];   /* %1$s */
	char involved[2600]; /* %2$s */
	int64_t first, last; /* wall-clock ns of the earliest and latest */
};

static struct cli_stmt *prepare(struct export *x, const char *fmt)
{
	char sql[16384];
	struct cli_stmt *st;

	snprintf(sql, sizeof(sql), fmt, x->process, x->involved, x->where);
	st = cli_db_prepare(x->c, sql);
	if (st)
		cli_db_bind_filter(st, &x->c->filter);
	return st;
}

/* ------------------------------------------------------------ events */

/* The members every event on a thread has. */
static void event_head(struct export *x, const char *name, const char *cat,
		       const char *ph, int64_t ts, struct cli_stmt *st, int pid,
		       int tid)
{
	cli_json_object(x->j);
	cli_json_kstr(x->j, "name", name);
	cli_json_kstr(x->j, "cat", cat);
	cli_json_kstr(x->j, "ph", ph);
	cli_json_kusec(x->j, "ts", ts - x->first);
	cli_json_kint(x->j, "pid", cli_stmt_int(st, pid));
	cli_json_kint(x->j, "tid", cli_stmt_int(st, tid));
}

static void request_args(struct export *x, struct cli_stmt *st)
{
	char label[512];
	int len;
	const char *name = cli_db_text(st, B_REQ_NAME, &len);

	cli_json_key(x->j, "args");
	cli_json_object(x->j);
	cli_json_kstr(x->j, "request",
		      cli_request_label(cli_stmt_int(st, B_REQ), name, len,
					label, sizeof(label)));
	cli_json_kcol(x->j, "request_id", st, B_REQ);
	cli_json_kctx(x->j, "ctx", cli_stmt_int(st, B_CTX));
}

/* A scope whose END was not kept (unclosed, or the daemon stopped first)
 * lasts to the end of the trace. */
static void scope_event(struct export *x, struct cli_stmt *st)
{
	int ended = cli_stmt_type(st, B_END) != CLI_TYPE_NULL;
	int64_t begin = cli_stmt_int(st, B_TS);
	int64_t end = ended ? cli_stmt_int(st, B_END) : x->last;
	const char *name = cli_db_str(st, B_NAME);

	event_head(x, name ? name : "(unnamed scope)", "scope", "X", begin, st,
		   B_PID, B_TID);
	/* An END stamped before its BEGIN (a clock step) is a point, not a
	 * negative span. */
	cli_json_kusec(x->j, "dur", end > begin ? end - begin : 0);
	request_args(x, st);
	cli_json_kbool(x->j, "ended", ended);
	if (ended && cli_stmt_int(st, B_END_TID) != cli_stmt_int(st, B_TID))
		cli_json_kcol(x->j, "end_tid", st, B_END_TID);
	cli_json_end(x->j);
	cli_json_end(x->j);
}

static void mark_event(struct export *x, struct cli_stmt *st)
{
	char what[1024];

	cli_record_str(cli_db_str(st, B_TYPE), cli_db_str(st, B_NAME),
		       cli_db_str(st, B_VALUE), what, sizeof(what));
	event_head(x, what, "record", "i", cli_stmt_int(st, B_TS), st, B_PID,
		   B_TID);
	cli_json_kstr(x->j, "s", "t");
	request_args(x, st);
	cli_json_end(x->j);
	cli_json_end(x->j);
}

static void request_member(struct export *x, const char *key,
			   struct cli_stmt *st, int col)
{
	char label[512], idkey[32];
	int len;
	const char *name = cli_db_text(st, col + 1, &len);

	if (cli_stmt_type(st, col) == CLI_TYPE_NULL && name == NULL) {
		cli_json_kstr(x->j, key, NULL);
	} else {
		cli_json_kstr(x->j, key,
			      cli_request_label(cli_stmt_int(st, col), name,
						len, label, sizeof(label)));
	}
	snprintf(idkey, sizeof(idkey), "%s_request", key);
	cli_json_kcol(x->j, idkey, st, col);
}

static void finding_event(struct export *x, struct cli_stmt *st)
{
	const char *cls = cli_db_str(st, F_CLASS);
	char what[1024], name[1100], detail[2048], site[1024];

	cli_record_str(cli_db_str(st, F_RECORD), cli_db_str(st, F_NAME),
		       cli_db_str(st, F_VALUE), what, sizeof(what));
	snprintf(name, sizeof(name), "%s: %s", cls ? cls : "?", what);
	event_head(x, name, "finding", "i", cli_stmt_int(st, F_TS), st, F_PID,
		   F_TID);
	/* Process scope: a finding is drawn across its whole process, so
	 * that it stands out among the scopes. */
	cli_json_kstr(x->j, "s", "p");
	cli_json_key(x->j, "args");
	cli_json_object(x->j);
	cli_json_kcol(x->j, "id", st, F_ID);
	cli_json_kstr(x->j, "class", cls);
	cli_json_kcol(x->j, "tid", st, F_TID);
	request_member(x, "victim", st, F_VICTIM);
	request_member(x, "source", st, F_SOURCE);
	cli_json_kstr(x->j, "record", what);
	snprintf(site, sizeof(site), "%s:%d", cli_db_str(st, F_FILE),
		 (int)cli_stmt_int(st, F_LINE));
	cli_json_kstr(x->j, "site", cli_db_str(st, F_FILE) ? site : NULL);
	cli_json_kstr(x->j, "detail",
		      cli_db_str(st, F_DETAIL)
			  ? cli_detail(x->c, cli_stmt_int(st, F_PROCESS),
				       cli_stmt_int(st, F_VICTIM),
				       cli_db_str(st, F_DETAIL), detail,
				       sizeof(detail))
			  : NULL);
	cli_json_kstr(x->j, "fix", cli_class_fix(cls));
	cli_json_end(x->j);
	cli_json_end(x->j);
}

/* process_name metadata: "app (backend)" in Perfetto's process list. */
static void process_event(struct export *x, struct cli_stmt *st)
{
	char name[512];

	snprintf(name, sizeof(name), "%s (%s)",
		 cli_db_str(st, 1) ? cli_db_str(st, 1) : "-",
		 cli_db_str(st, 2) ? cli_db_str(st, 2) : "-");
	cli_json_object(x->j);
	cli_json_kstr(x->j, "name", "process_name");
	cli_json_kstr(x->j, "ph", "M");
	cli_json_kint(x->j, "pid", cli_stmt_int(st, 0));
	cli_json_kint(x->j, "tid", 0);
	cli_json_key(x->j, "args");
	cli_json_object(x->j);
	cli_json_kstr(x->j, "name", name);
	cli_json_end(x->j);
	cli_json_end(x->j);
}

/* Runs one query and writes an event per row; the count in *n. */
static int events(struct export *x, const char *fmt,
		  void (*event)(struct export *x, struct cli_stmt *st), long *n)
{
	struct cli_stmt *st = prepare(x, fmt);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		event(x, st);
		if (n)
			(*n)++;
	}
	cli_stmt_finalize(st);
	return cli_db_done(x->c, rc);
}

static int bounds(struct export *x)
{
	struct cli_stmt *st = prepare(x, bounds_sql);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	if ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		x->first = cli_stmt_int(st, 0);
		x->last = cli_stmt_int(st, 1);
		rc = CLI_STEP_DONE;
	}
	cli_stmt_finalize(st);
	return cli_db_done(x->c, rc);
}

int cli_export(struct cli *c)
{
	const struct cli_filter *f = &c->filter;
	struct export x = {.c = c};
	char epoch[64], version[64];
	long found = 0, scopes = 0;
	int rc;

	/* Its scopes are records, which never leave their host. */
	if (cli_db_is_pg(c))
		return cli_error(CLI_EXIT_USAGE,
				 "export draws records, which stay on their "
				 "host: run it there, on its local database");
	cli_db_filter_sql(f, x.where, sizeof(x.where));
	cli_db_process_sql(f, x.process, sizeof(x.process));
	if (f->classes || f->request || f->site_file)
		snprintf(x.involved, sizeof(x.involved), INVOLVED, x.where,
			 x.where);
	rc = bounds(&x);
	if (rc)
		return rc;
	x.j = cli_json_new(c->out);
	cli_json_object(x.j);
	cli_json_kstr(x.j, "displayTimeUnit", "ns");
	cli_json_key(x.j, "otherData");
	cli_json_object(x.j);
	snprintf(version, sizeof(version), "ctxleak %s", CLI_VERSION);
	cli_json_kstr(x.j, "generator", version);
	cli_json_kstr(x.j, "database", c->db_path);
	cli_json_kstr(x.j, "epoch",
		      cli_time_rfc3339(x.first, epoch, sizeof(epoch)));
	cli_json_end(x.j);
	cli_json_key(x.j, "traceEvents");
	cli_json_array(x.j);
	rc = events(&x, processes_sql, process_event, NULL);
	if (rc == 0)
		rc = events(&x, scopes_sql, scope_event, &scopes);
	if (rc == 0)
		rc = events(&x, marks_sql, mark_event, NULL);
	if (rc == 0)
		rc = events(&x, findings_sql, finding_event, &found);
	cli_json_end(x.j);
	cli_json_end(x.j);
	cli_json_free(x.j);
	if (rc)
		return rc;
	if (found == 0 && scopes == 0)
		cli_db_say_where(c);
	return cli_db_fail_exit(c, x.where);
}
