/*
 * cli_show.c: `ctxleak show REQUEST`, one request's rebuilt context: its
 * header, its final tags and whose code set each, its records by thread
 * with each finding marked where it happened, the findings it is part of,
 * and the other requests involved.
 *
 * Records exist only for requests the daemon chose to keep (--keep=leaky:
 * those involved in a finding); the timeline says so when there are none
 * rather than looking like a request that did nothing.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* The request being shown. */
struct shown {
	struct cli *c;
	int64_t id;
	int64_t begin_ts; /* offsets in the timeline are from here */
};

static struct cli_stmt *prepare_id(struct cli *c, const char *sql, int64_t id)
{
	struct cli_stmt *st = cli_db_prepare(c, sql);

	if (st)
		cli_stmt_bind_int(st, 1, id);
	return st;
}

/* ------------------------------------------------------------ lookup */

/* The first id sql (with a %s for --host's condition) gives for arg, or
 * for num when arg is NULL. */
static int64_t first_id(struct cli *c, const char *fmt, const char *arg,
			int64_t num)
{
	struct cli_filter hf = {.host = c->filter.host};
	char where[512], in_hosts[768], sql[1024];
	struct cli_stmt *st;
	int64_t id = 0;

	cli_db_filter_sql(&hf, where, sizeof(where));
	snprintf(in_hosts, sizeof(in_hosts),
		 hf.host ? " AND process_id IN (SELECT p.id FROM processes p"
			   " WHERE 1 = 1%s)"
			 : "%.0s",
		 where);
	snprintf(sql, sizeof(sql), fmt, in_hosts);
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return -1;
	cli_db_bind_filter(st, &c->filter);
	if (arg)
		cli_stmt_bind_text(st, 1, arg);
	else
		cli_stmt_bind_int(st, 1, num);
	if (cli_stmt_step(st) == CLI_STEP_ROW)
		id = cli_stmt_int(st, 0);
	cli_stmt_finalize(st);
	return id;
}

/* A request that has records or findings but no row yet: it was still
 * open when the daemon last wrote (SCHEMA.md: ids are assigned at BEGIN,
 * rows written when requests retire). */
static const char unretired_sql[] =
    "SELECT ?1 WHERE EXISTS (SELECT 1 FROM records WHERE request_id = ?1)"
    " OR EXISTS (SELECT 1 FROM leaks WHERE victim_request_id = ?1"
    " OR source_request_id = ?1)";

/* A number that is no id is a ctx: the bits of the unsigned value. */
int64_t cli_show_resolve(struct cli *c, const char *arg)
{
	const char *digits = arg[0] == '#' ? arg + 1 : arg;
	int numeric = *digits && strspn(digits, "0123456789") == strlen(digits);
	uint64_t n = numeric ? strtoull(digits, NULL, 10) : 0;
	int64_t id;

	if (!numeric)
		return first_id(c,
				"SELECT id FROM requests WHERE name = ?1%s"
				" ORDER BY begin_ts DESC, id DESC LIMIT 1",
				arg, 0);
	id = first_id(c, "SELECT id FROM requests WHERE id = ?1%s", NULL,
		      (int64_t)n);
	if (id == 0)
		id = first_id(c, unretired_sql, NULL, (int64_t)n);
	if (id != 0 || arg[0] == '#')
		return id;
	return first_id(c,
			"SELECT id FROM requests WHERE ctx = ?1%s"
			" ORDER BY begin_ts DESC, id DESC LIMIT 1",
			NULL, (int64_t)n);
}

/* ------------------------------------------------------------ header */

enum {
	H_ID,
	H_CTX,
	H_NAME,
	H_BEGIN,
	H_END,
	H_TID,
	H_THREADS,
	H_SCOPES,
	H_RECORDS,
	H_LEAKS,
	H_SOURCE_OF,
	H_LATE,
	H_PID,
	H_APP,
	H_BACKEND,
	H_FILE,
	H_LINE,
	H_FUNC,
	H_CLASS0, /* then one per class, in cli_class_names order */
};

static const char header_sql[] =
    "SELECT r.id, r.ctx, r.name, r.begin_ts, r.end_ts, r.begin_tid,"
    " r.threads, r.scopes, r.records, r.leaks, r.source_of, r.late, p.pid,"
    " p.app, p.backend, s.file, s.line, s.func, r.bleed, r.stale, r.overlap,"
    " r.lost, r.misnest, r.unclosed"
    " FROM requests r JOIN processes p ON p.id = r.process_id"
    " LEFT JOIN sites s ON s.id = r.site_id WHERE r.id = ?";

static void header_json(struct cli_json *j, struct cli_stmt *st)
{
	char site[1024];

	cli_json_kint(j, "id", cli_stmt_int(st, H_ID));
	cli_json_kctx(j, "ctx", cli_stmt_int(st, H_CTX));
	cli_json_kcol(j, "name", st, H_NAME);
	cli_json_kcol(j, "pid", st, H_PID);
	cli_json_kcol(j, "app", st, H_APP);
	cli_json_kcol(j, "backend", st, H_BACKEND);
	cli_json_kts(j, "begin", cli_stmt_int(st, H_BEGIN));
	cli_json_kts(j, "end", cli_stmt_int(st, H_END));
	cli_json_kcol(j, "begin_tid", st, H_TID);
	cli_json_kcol(j, "threads", st, H_THREADS);
	snprintf(site, sizeof(site), "%s:%d %s", cli_db_str(st, H_FILE),
		 (int)cli_stmt_int(st, H_LINE),
		 cli_db_str(st, H_FUNC) ? cli_db_str(st, H_FUNC) : "");
	cli_json_kstr(j, "site", cli_db_str(st, H_FILE) ? site : NULL);
	cli_json_kcol(j, "scopes", st, H_SCOPES);
	cli_json_kcol(j, "records", st, H_RECORDS);
	cli_json_kcol(j, "leaks", st, H_LEAKS);
	cli_json_kcol(j, "source_of", st, H_SOURCE_OF);
	cli_json_kcol(j, "late", st, H_LATE);
	cli_json_kbool(j, "retired", 1);
	cli_json_key(j, "classes");
	cli_json_object(j);
	for (int i = 0; i < CLI_CLASS_COUNT; i++)
		cli_json_kint(j, cli_class_names[i],
			      cli_stmt_int(st, H_CLASS0 + i));
	cli_json_end(j);
}

static void header_field(struct cli *c, const char *label)
{
	fprintf(c->out, "%s%-9s%s", cli_style_start(c, CLI_STYLE_BOLD), label,
		cli_style_end(c, CLI_STYLE_BOLD));
}

static void header_times(struct cli *c, struct cli_stmt *st)
{
	char a[64], b[64];
	int64_t begin = cli_stmt_int(st, H_BEGIN);

	header_field(c, "begin");
	fprintf(c->out, "%s on thread %lld\n", cli_time_rfc3339(begin, a, 64),
		cli_stmt_int(st, H_TID));
	if (cli_db_str(st, H_FILE)) {
		header_field(c, "site");
		snprintf(b, sizeof(b), ":%d ", (int)cli_stmt_int(st, H_LINE));
		cli_print_safe(c->out, cli_db_str(st, H_FILE),
			       strlen(cli_db_str(st, H_FILE)));
		fputs(b, c->out);
		if (cli_db_str(st, H_FUNC))
			cli_print_safe(c->out, cli_db_str(st, H_FUNC),
				       strlen(cli_db_str(st, H_FUNC)));
		fputc('\n', c->out);
	}
	header_field(c, "end");
	if (cli_stmt_type(st, H_END) == CLI_TYPE_NULL)
		fprintf(c->out, "%snever (unclosed)%s\n",
			cli_style_start(c, CLI_STYLE_RED),
			cli_style_end(c, CLI_STYLE_RED));
	else
		fprintf(
		    c->out, "%s, after %s\n",
		    cli_time_rfc3339(cli_stmt_int(st, H_END), a, 64),
		    cli_time_duration(cli_stmt_int(st, H_END) - begin, b, 64));
}

static void header_findings(struct cli *c, struct cli_stmt *st)
{
	const char *sep = " (";

	header_field(c, "findings");
	fprintf(c->out, "%lld as victim", cli_stmt_int(st, H_LEAKS));
	for (int i = 0; i < CLI_CLASS_COUNT; i++) {
		long long n = cli_stmt_int(st, H_CLASS0 + i);

		if (n == 0)
			continue;
		fprintf(c->out, "%s%s%s %lld%s", sep,
			cli_style_start(c, cli_class_style(cli_class_names[i])),
			cli_class_names[i], n,
			cli_style_end(c, cli_class_style(cli_class_names[i])));
		sep = ", ";
	}
	fprintf(c->out, "%s, %lld as source\n", *sep == ',' ? ")" : "",
		cli_stmt_int(st, H_SOURCE_OF));
}

static void header_text(struct cli *c, struct cli_stmt *st)
{
	char ctx[24];
	int len;
	const char *s = cli_db_text(st, H_NAME, &len);

	fprintf(c->out, "%srequest #%lld ", cli_style_start(c, CLI_STYLE_BOLD),
		cli_stmt_int(st, H_ID));
	cli_print_safe(c->out, s ? s : "(unnamed)", s ? (size_t)len : 9);
	fprintf(c->out, "%s  ctx %s\n", cli_style_end(c, CLI_STYLE_BOLD),
		cli_ctx_str(cli_stmt_int(st, H_CTX), ctx, sizeof(ctx)));
	header_field(c, "process");
	fprintf(c->out, "pid %lld, app ", cli_stmt_int(st, H_PID));
	s = cli_db_text(st, H_APP, &len);
	cli_print_safe(c->out, s ? s : "-", s ? (size_t)len : 1);
	fprintf(c->out, ", backend %s\n",
		cli_db_str(st, H_BACKEND) ? cli_db_str(st, H_BACKEND) : "-");
	header_times(c, st);
	header_field(c, "threads");
	cli_print_safe(c->out, cli_db_str(st, H_THREADS),
		       strlen(cli_db_str(st, H_THREADS)));
	fprintf(c->out, "\n");
	header_field(c, "scopes");
	fprintf(c->out, "%lld, %lld records", cli_stmt_int(st, H_SCOPES),
		cli_stmt_int(st, H_RECORDS));
	if (cli_stmt_int(st, H_LATE) != 0)
		fprintf(c->out, " (%lld late work)", cli_stmt_int(st, H_LATE));
	fputc('\n', c->out);
	header_findings(c, st);
}

/* The header of a request without a row: what its records say. */
static int unretired_header(struct cli *c, struct cli_json *j, struct shown *r)
{
	struct cli_stmt *st = prepare_id(
	    c,
	    "SELECT min(ts) FROM (SELECT ts FROM records WHERE"
	    " request_id = ?1 UNION ALL SELECT ts FROM leaks WHERE"
	    " victim_request_id = ?1 OR source_request_id = ?1) AS u",
	    r->id);
	char ts[64];

	if (st == NULL)
		return CLI_EXIT_DB;
	if (cli_stmt_step(st) == CLI_STEP_ROW)
		r->begin_ts = cli_stmt_int(st, 0);
	cli_stmt_finalize(st);
	if (j) {
		cli_json_key(j, "request");
		cli_json_object(j);
		cli_json_kint(j, "id", r->id);
		cli_json_kts(j, "first_seen", r->begin_ts);
		cli_json_kbool(j, "retired", 0);
		cli_json_end(j);
		return 0;
	}
	fprintf(c->out,
		"%srequest #%lld%s  first seen %s\n"
		"not retired: still open, or the daemon stopped before it "
		"ended\n",
		cli_style_start(c, CLI_STYLE_BOLD), (long long)r->id,
		cli_style_end(c, CLI_STYLE_BOLD),
		cli_time_rfc3339(r->begin_ts, ts, sizeof(ts)));
	return 0;
}

static int show_header(struct cli *c, struct cli_json *j, struct shown *r)
{
	struct cli_stmt *st = prepare_id(c, header_sql, r->id);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	if ((rc = cli_stmt_step(st)) == CLI_STEP_DONE) {
		cli_stmt_finalize(st);
		return unretired_header(c, j, r);
	}
	if (rc == CLI_STEP_ROW) {
		r->begin_ts = cli_stmt_int(st, H_BEGIN);
		if (j) {
			cli_json_key(j, "request");
			cli_json_object(j);
			header_json(j, st);
			cli_json_end(j);
		} else {
			header_text(c, st);
		}
		rc = CLI_STEP_DONE;
	}
	cli_stmt_finalize(st);
	return cli_db_done(c, rc);
}

/* ------------------------------------------------------------ sections */

/* One part of the request below its header: a query on the request id,
 * then a row each as JSON or into a table. */
struct section {
	const char *title; /* table heading */
	const char *json;  /* JSON member */
	const char *sql;   /* ? is the request id */
	const struct cli_col *cols;
	int ncols;
	void (*json_row)(struct cli_json *j, struct cli_stmt *st,
			 const struct shown *r);
	/* Puts the row in the table; returns 0 when it folded it instead. */
	int (*table_row)(struct cli *c, struct cli_table *t,
			 struct cli_stmt *st, const struct shown *r);
	/* Without cols: prints the row as a paragraph of its own. */
	void (*text_row)(struct cli *c, struct cli_stmt *st,
			 const struct shown *r);
	const char *empty;  /* said in a table when there are no rows */
	const char *folded; /* printf format of the note on folded rows */
};

static int show_section(struct cli *c, struct cli_json *j,
			const struct shown *r, const struct section *s)
{
	struct cli_stmt *st = prepare_id(c, s->sql, r->id);
	struct cli_table *t = NULL;
	int rc, n = 0, shown = 0;

	if (st == NULL)
		return CLI_EXIT_DB;
	if (j) {
		cli_json_key(j, s->json);
		cli_json_array(j);
	} else {
		fprintf(c->out, "\n%s%s%s\n",
			cli_style_start(c, CLI_STYLE_BOLD), s->title,
			cli_style_end(c, CLI_STYLE_BOLD));
		if (s->cols)
			t = cli_table_new(c, s->cols, s->ncols);
	}
	for (; (rc = cli_stmt_step(st)) == CLI_STEP_ROW; n++) {
		if (j)
			s->json_row(j, st, r);
		else if (t)
			shown += s->table_row(c, t, st, r);
		else
			s->text_row(c, st, r);
	}
	cli_stmt_finalize(st);
	if (j) {
		cli_json_end(j);
	} else {
		if (shown)
			cli_table_print(t);
		if (n == 0)
			fprintf(c->out, "%s\n", s->empty);
		else if (t && shown < n)
			fprintf(c->out, s->folded, n - shown);
		if (t)
			cli_table_free(t);
	}
	return cli_db_done(c, rc);
}

/* "#3 GET /a" from an id column followed by its name column. */
static void request_cell(struct cli_table *t, struct cli_stmt *st, int col,
			 enum cli_style style)
{
	char buf[512];
	int len;
	const char *name = cli_db_text(st, col + 1, &len);

	cli_table_cell_styled(t, style,
			      cli_request_label(cli_stmt_int(st, col), name,
						len, buf, sizeof(buf)));
}

/* Time since the request began: "+1.25ms". */
static void offset_cell(struct cli_table *t, int64_t ts, const struct shown *r)
{
	char buf[32];

	if (ts < r->begin_ts)
		cli_table_cellf(t, "-%s",
				cli_time_duration(r->begin_ts - ts, buf, 32));
	else
		cli_table_cellf(t, "+%s",
				cli_time_duration(ts - r->begin_ts, buf, 32));
}

/* ------------------------------------------------------------ tags */

enum {
	T_KEY,
	T_VALUE,
	T_TS,
	T_TID,
	T_SETTER,
	T_SETTER_NAME,
	T_SETTER_CTX,
	T_FILE,
	T_LINE
};

static const char tags_sql[] =
    "SELECT t.key, t.value, t.ts, t.tid, t.setter_request_id, sr.name,"
    " t.setter_ctx, s.file, s.line FROM tags t"
    " LEFT JOIN requests sr ON sr.id = t.setter_request_id"
    " LEFT JOIN sites s ON s.id = t.site_id"
    " WHERE t.request_id = ? ORDER BY t.ts, t.key COLLATE BINARY";

static int foreign_setter(struct cli_stmt *st, const struct shown *r)
{
	return cli_stmt_int(st, T_SETTER) != r->id;
}

static void tag_json(struct cli_json *j, struct cli_stmt *st,
		     const struct shown *r)
{
	cli_json_object(j);
	cli_json_kcol(j, "key", st, T_KEY);
	cli_json_kcol(j, "value", st, T_VALUE);
	cli_json_kts(j, "ts", cli_stmt_int(st, T_TS));
	cli_json_kcol(j, "tid", st, T_TID);
	cli_json_kcol(j, "setter_request", st, T_SETTER);
	cli_json_kcol(j, "setter_name", st, T_SETTER_NAME);
	cli_json_kctx(j, "setter_ctx", cli_stmt_int(st, T_SETTER_CTX));
	cli_json_kbool(j, "foreign", foreign_setter(st, r));
	cli_json_kcol(j, "file", st, T_FILE);
	cli_json_kcol(j, "line", st, T_LINE);
	cli_json_end(j);
}

static const struct cli_col tag_cols[] = {
    {"KEY", CLI_COL_SHRINK},
    {"VALUE", CLI_COL_SHRINK},
    {"SET BY", CLI_COL_SHRINK},
    {"SITE", CLI_COL_SHRINK},
};

static int tag_row(struct cli *c, struct cli_table *t, struct cli_stmt *st,
		   const struct shown *r)
{
	(void)c;
	cli_table_cell(t, cli_db_str(st, T_KEY));
	cli_table_cell(t, cli_db_str(st, T_VALUE));
	if (cli_stmt_type(st, T_SETTER) == CLI_TYPE_NULL)
		cli_table_cell_styled(t, CLI_STYLE_RED, "no request");
	else if (!foreign_setter(st, r))
		cli_table_cell(t, "this request");
	else
		request_cell(t, st, T_SETTER, CLI_STYLE_RED);
	if (cli_db_str(st, T_FILE))
		cli_table_cellf(t, "%s:%d", cli_db_str(st, T_FILE),
				(int)cli_stmt_int(st, T_LINE));
	else
		cli_table_cell(t, NULL);
	return 1;
}

static const struct section tags_section = {
    .title = "tags",
    .json = "tags",
    .sql = tags_sql,
    .cols = tag_cols,
    .ncols = 4,
    .json_row = tag_json,
    .table_row = tag_row,
    .empty = "no tags",
};

/* ------------------------------------------------------------ records */

enum {
	R_ID,
	R_TYPE,
	R_TS,
	R_TID,
	R_CTX,
	R_CAUSE,
	R_OTHER,
	R_NAME,
	R_VALUE,
	R_LEAK,
	R_TRUE,
	R_TRUE_NAME,
	R_SAID,
	R_SAID_NAME,
	R_FILE,
	R_LINE,
	R_PROCESS,
	R_HELD,
	R_HELD_NAME,
	R_LATE,
};

/* The records of the request in truth, and those the backend wrongly
 * attributed to it: both are its story.  The second test is written as
 * the partial index records_ctx_request is, so that SQLite uses it
 * instead of scanning every record. */
static const char records_sql[] =
    "WITH inv(id) AS (" CLI_INVOLVED_SQL ")"
    " SELECT d.id, d.type, d.ts, d.tid, d.ctx, d.cause, d.other, d.name,"
    " d.value, d.leak, d.request_id, tr.name, d.ctx_request_id, cr.name,"
    " s.file, s.line, d.process_id, h.id, h.name, d.late FROM records d"

    " LEFT JOIN requests tr ON tr.id = d.request_id"
    " LEFT JOIN requests cr ON cr.id = d.ctx_request_id"
    " LEFT JOIN sites s ON s.id = d.site_id"
    /* What the backend held at an END: its cur, a scope of one of the
     * requests involved (or none). */
    " LEFT JOIN requests h ON d.type = 'END' AND h.id = (SELECT"
    " b.request_id FROM records b WHERE b.request_id IN (SELECT id FROM"
    " inv) AND b.ctx = d.other AND b.type = 'BEGIN' LIMIT 1)"
    " WHERE d.request_id = ?1 OR (d.ctx_request_id = ?1 AND"
    " d.ctx_request_id IS NOT d.request_id)"
    " ORDER BY d.tid, d.ts, d.id";

static int is_end(struct cli_stmt *st)
{
	return cli_db_str(st, R_TYPE) && !strcmp(cli_db_str(st, R_TYPE), "END");
}

static void record_json(struct cli_json *j, struct cli_stmt *st,
			const struct shown *r)
{
	(void)r;
	cli_json_object(j);
	cli_json_kcol(j, "id", st, R_ID);
	cli_json_kcol(j, "type", st, R_TYPE);
	cli_json_kts(j, "ts", cli_stmt_int(st, R_TS));
	cli_json_kcol(j, "tid", st, R_TID);
	cli_json_kctx(j, "ctx", cli_stmt_int(st, R_CTX));
	cli_json_kctx(j, "cause", cli_stmt_int(st, R_CAUSE));
	cli_json_kctx(j, "other", cli_stmt_int(st, R_OTHER));
	cli_json_kcol(j, "name", st, R_NAME);
	cli_json_kcol(j, "value", st, R_VALUE);
	cli_json_kcol(j, "request", st, R_TRUE);
	cli_json_kcol(j, "ctx_request", st, R_SAID);
	if (is_end(st))
		cli_json_kcol(j, "cur_request", st, R_HELD);
	cli_json_kcol(j, "leak", st, R_LEAK);
	cli_json_kbool(j, "late", (int)cli_stmt_int(st, R_LATE) != 0);
	cli_json_kcol(j, "file", st, R_FILE);
	cli_json_kcol(j, "line", st, R_LINE);
	cli_json_end(j);
}

static const struct cli_col record_cols[] = {
    {"TID", CLI_COL_RIGHT},	{"AT", CLI_COL_RIGHT},
    {"RECORD", CLI_COL_SHRINK}, {"BACKEND SAID", CLI_COL_SHRINK},
    {"TRULY", CLI_COL_SHRINK},	{"FINDING", 0},
};

/* An END's BACKEND SAID: what the backend held then (its cur), which is
 * not the scope being ended (that is the record's ctx). */
static void held_cell(struct cli *c, struct cli_table *t, struct cli_stmt *st)
{
	int64_t cur = cli_stmt_int(st, R_OTHER);
	int64_t held = cli_stmt_int(st, R_HELD);
	enum cli_style style =
	    held == cli_stmt_int(st, R_TRUE) ? CLI_STYLE_NONE : CLI_STYLE_RED;
	char buf[512];

	if (cur == 0) {
		cli_table_cell_styled(t, CLI_STYLE_RED, "nothing");
		return;
	}
	if (held == 0)
		held = cli_db_ctx_request(c, cli_stmt_int(st, R_PROCESS),
					  cli_stmt_int(st, R_TRUE), cur);
	if (held == 0) {
		cli_table_cell_styled(t, CLI_STYLE_RED,
				      cli_ctx_str(cur, buf, sizeof(buf)));
		return;
	}
	if (cli_stmt_int(st, R_HELD) == held) {
		request_cell(t, st, R_HELD, style);
		return;
	}
	snprintf(buf, sizeof(buf), "#%lld", (long long)held);
	cli_table_cell_styled(t, style, buf);
}

/* RESUME and SUSPEND wrap every callback: about half the rows, and only
 * the ones that carry a finding say anything unless --all. */
static int folded(const struct cli *c, struct cli_stmt *st)
{
	const char *type = cli_db_str(st, R_TYPE);

	return !c->all && cli_stmt_type(st, R_LEAK) == CLI_TYPE_NULL && type &&
	       (!strcmp(type, "RESUME") || !strcmp(type, "SUSPEND"));
}

static int record_row(struct cli *c, struct cli_table *t, struct cli_stmt *st,
		      const struct shown *r)
{
	const char *leak = cli_db_str(st, R_LEAK);
	char what[512];

	if (folded(c, st))
		return 0;
	cli_table_cell(t, cli_db_str(st, R_TID));
	offset_cell(t, cli_stmt_int(st, R_TS), r);
	cli_table_cell(
	    t, cli_record_str(cli_db_str(st, R_TYPE), cli_db_str(st, R_NAME),
			      cli_db_str(st, R_VALUE), what, sizeof(what)));
	if (is_end(st))
		held_cell(c, t, st);
	else
		request_cell(t, st, R_SAID,
			     cli_stmt_int(st, R_SAID) !=
				     cli_stmt_int(st, R_TRUE)
				 ? CLI_STYLE_RED
				 : CLI_STYLE_NONE);
	request_cell(t, st, R_TRUE, CLI_STYLE_NONE);
	/* Late work is no finding: said, so that it is not taken for a
	 * stale storage. */
	if (leak == NULL && (int)cli_stmt_int(st, R_LATE) != 0) {
		cli_table_cell(t, "late work");
		return 1;
	}
	snprintf(what, sizeof(what), "%s%s", leak ? "<- " : "",
		 leak ? leak : "");
	cli_table_cell_styled(t, cli_class_style(leak), what);
	return 1;
}

static const struct section records_section = {
    .title = "timeline",
    .json = "timeline",
    .sql = records_sql,
    .cols = record_cols,
    .ncols = 6,
    .json_row = record_json,
    .table_row = record_row,
    .empty = "no records kept (ctxleakd --keep=leaky keeps those of "
	     "requests involved in a finding, --keep=all every one)",
    .folded = "(%d RESUME/SUSPEND rows without a finding folded: --all "
	      "shows them)\n",
};

/* ------------------------------------------------------------ findings */

enum {
	F_ID,
	F_CLASS,
	F_TS,
	F_TID,
	F_VICTIM,
	F_VICTIM_NAME,
	F_SOURCE,
	F_SOURCE_NAME,
	F_RECORD,
	F_NAME,
	F_DETAIL,
	F_PROCESS,
};

static const char findings_sql[] =
    "SELECT l.id, l.class, l.ts, l.tid, l.victim_request_id,"
    " l.victim_name, l.source_request_id, l.source_name, l.record, l.name,"
    " l.detail, l.process_id FROM leaks l"
    " WHERE l.victim_request_id = ?1 OR l.source_request_id = ?1"
    " ORDER BY l.ts, l.id";

static void finding_json(struct cli_json *j, struct cli_stmt *st,
			 const struct shown *r)
{
	char detail[2048];

	cli_json_object(j);
	cli_json_kcol(j, "id", st, F_ID);
	cli_json_kcol(j, "class", st, F_CLASS);
	cli_json_kstr(j, "role",
		      cli_stmt_int(st, F_VICTIM) == r->id ? "victim"
							  : "source");
	cli_json_kts(j, "ts", cli_stmt_int(st, F_TS));
	cli_json_kcol(j, "tid", st, F_TID);
	cli_json_kcol(j, "victim_request", st, F_VICTIM);
	cli_json_kcol(j, "victim_name", st, F_VICTIM_NAME);
	cli_json_kcol(j, "source_request", st, F_SOURCE);
	cli_json_kcol(j, "source_name", st, F_SOURCE_NAME);
	cli_json_kcol(j, "record", st, F_RECORD);
	cli_json_kcol(j, "name", st, F_NAME);
	cli_json_kstr(j, "detail",
		      cli_db_str(st, F_DETAIL)
			  ? cli_detail(r->c, cli_stmt_int(st, F_PROCESS),
				       cli_stmt_int(st, F_VICTIM),
				       cli_db_str(st, F_DETAIL), detail,
				       sizeof(detail))
			  : NULL);
	cli_json_kstr(j, "fix", cli_class_fix(cli_db_str(st, F_CLASS)));
	cli_json_end(j);
}

/* A paragraph each, not a table row: the detail and the fix are
 * sentences, which a table would cut. */
static void finding_text(struct cli *c, struct cli_stmt *st,
			 const struct shown *r)
{
	int victim = cli_stmt_int(st, F_VICTIM) == r->id;
	const char *cls = cli_db_str(st, F_CLASS);
	int other = victim ? F_SOURCE : F_VICTIM, len;
	const char *name = cli_db_text(st, other + 1, &len);
	char at[40], who[512], detail[2048], fix[1024];

	if (cli_stmt_int(st, F_TS) < r->begin_ts)
		snprintf(at, 8, "-");
	else
		at[0] = '+';
	cli_time_duration(cli_stmt_int(st, F_TS) - r->begin_ts, at + 1,
			  sizeof(at) - 1);
	fprintf(c->out, "%s  %s%s%s  as %s", at,
		cli_style_start(c, cli_class_style(cls)), cls ? cls : "?",
		cli_style_end(c, cli_class_style(cls)),
		victim ? "victim" : "source");
	if (cli_stmt_type(st, other) != CLI_TYPE_NULL) {
		cli_request_label(cli_stmt_int(st, other), name, len, who,
				  sizeof(who));
		fprintf(c->out, ", %s ", victim ? "source" : "victim");
		cli_print_safe(c->out, who, strlen(who));
	}
	fprintf(c->out, ", thread %lld\n", cli_stmt_int(st, F_TID));
	if (cli_db_str(st, F_DETAIL))
		cli_print_wrapped(c, CLI_STYLE_NONE, 4,
				  cli_detail(c, cli_stmt_int(st, F_PROCESS),
					     cli_stmt_int(st, F_VICTIM),
					     cli_db_str(st, F_DETAIL), detail,
					     sizeof(detail)));
	if (cli_class_fix(cls)) {
		snprintf(fix, sizeof(fix), "fix: %s", cli_class_fix(cls));
		cli_print_wrapped(c, CLI_STYLE_GREEN, 4, fix);
	}
}

static const struct section findings_section = {
    .title = "findings",
    .json = "findings",
    .sql = findings_sql,
    .json_row = finding_json,
    .text_row = finding_text,
    .empty = "no findings",
};

/* ------------------------------------------------------------ related */

static const char related_sql[] =
    "SELECT r.id, r.name, r.ctx, r.begin_ts, r.end_ts FROM requests r"
    " WHERE r.id <> ?1 AND r.id IN (" CLI_INVOLVED_SQL ")"
    " ORDER BY r.begin_ts, r.id";

static void related_json(struct cli_json *j, struct cli_stmt *st,
			 const struct shown *r)
{
	(void)r;
	cli_json_object(j);
	cli_json_kcol(j, "id", st, 0);
	cli_json_kcol(j, "name", st, 1);
	cli_json_kctx(j, "ctx", cli_stmt_int(st, 2));
	cli_json_kts(j, "begin", cli_stmt_int(st, 3));
	cli_json_kts(j, "end", cli_stmt_int(st, 4));
	cli_json_end(j);
}

static const struct cli_col related_cols[] = {
    {"REQUEST", CLI_COL_SHRINK},
    {"BEGAN", CLI_COL_RIGHT},
    {"ENDED", CLI_COL_RIGHT},
    {"CTX", 0},
};

static int related_row(struct cli *c, struct cli_table *t, struct cli_stmt *st,
		       const struct shown *r)
{
	char ctx[24];

	(void)c;
	request_cell(t, st, 0, CLI_STYLE_NONE);
	offset_cell(t, cli_stmt_int(st, 3), r);
	if (cli_stmt_type(st, 4) == CLI_TYPE_NULL)
		cli_table_cell(t, "never");
	else
		offset_cell(t, cli_stmt_int(st, 4), r);
	cli_table_cell(t, cli_ctx_str(cli_stmt_int(st, 2), ctx, 24));
	return 1;
}

static const struct section related_section = {
    .title = "other requests involved",
    .json = "related",
    .sql = related_sql,
    .cols = related_cols,
    .ncols = 4,
    .json_row = related_json,
    .table_row = related_row,
    .empty = "none",
};

/* ------------------------------------------------------------ elsewhere */

/* The host and the local database of a central request id: its source's
 * (docs/CENTRAL.md), with the id there. */
static const char elsewhere_sql[] =
    "SELECT h.name, so.path, ?1 % " CLI_ID_SPAN_SQL " FROM sources so"
    " JOIN hosts h ON h.id = so.host_id WHERE so.id = ?1 / " CLI_ID_SPAN_SQL;

/* On the central database, instead of a timeline: records never leave
 * their host, so say once where they are rather than show none. */
static int records_elsewhere(struct cli *c, struct cli_json *j,
			     const struct shown *r)
{
	struct cli_stmt *st = prepare_id(c, elsewhere_sql, r->id);
	int rc;

	if (st == NULL)
		return CLI_EXIT_DB;
	rc = cli_stmt_step(st);
	if (j) {
		cli_json_key(j, "timeline");
		cli_json_null(j);
		cli_json_key(j, "records");
		cli_json_object(j);
		cli_json_kstr(j, "host", cli_db_str(st, 0));
		cli_json_kstr(j, "db", cli_db_str(st, 1));
		cli_json_kcol(j, "id", st, 2);
		cli_json_end(j);
	} else if (rc == CLI_STEP_ROW) {
		fprintf(c->out, "\n%stimeline%s\n",
			cli_style_start(c, CLI_STYLE_BOLD),
			cli_style_end(c, CLI_STYLE_BOLD));
		fputs("records stay on their host: on ", c->out);
		cli_print_safe(c->out, cli_db_str(st, 0),
			       strlen(cli_db_str(st, 0)));
		fputs(", ctxleak --db ", c->out);
		cli_print_safe(c->out, cli_db_str(st, 1),
			       strlen(cli_db_str(st, 1)));
		fprintf(c->out, " show '#%lld'\n", cli_stmt_int(st, 2));
	}
	if (rc == CLI_STEP_ROW)
		rc = CLI_STEP_DONE;
	cli_stmt_finalize(st);
	return cli_db_done(c, rc);
}

/* ------------------------------------------------------------ show */

static int show_sections(struct cli *c, struct cli_json *j, struct shown *r)
{
	static const struct section *const sections[] = {
	    &tags_section,
	    &records_section,
	    &findings_section,
	    &related_section,
	};
	int rc = show_header(c, j, r);

	for (size_t i = 0; i < 4 && rc == 0; i++)
		rc = sections[i] == &records_section && cli_db_is_pg(c)
			 ? records_elsewhere(c, j, r)
			 : show_section(c, j, r, sections[i]);
	return rc;
}

/* The request as a table, as one JSON object, or as a picture. */
static int show(struct cli *c, struct shown *r)
{
	struct cli_json *j;
	int rc;

	if (c->html && cli_db_is_pg(c))
		return cli_error(CLI_EXIT_USAGE,
				 "show --html draws a request's records, which "
				 "stay on their host: run it there");
	if (c->html)
		return cli_html(c, r->id);
	if (!c->json)
		return show_sections(c, NULL, r);
	j = cli_json_new(c->out);
	cli_json_object(j);
	rc = show_sections(c, j, r);
	cli_json_end(j);
	cli_json_free(j);
	return rc;
}

int cli_show_not_found(struct cli *c, const char *arg)
{
	cli_error(CLI_EXIT_NOT_FOUND,
		  "no request matches '%s' (ctxleakd --keep=leaky, the "
		  "default, keeps only requests involved in a finding; the "
		  "others are counted in request_stats; 'ctxleak leaks' lists "
		  "the ids kept)",
		  arg);
	cli_db_say_where(c);
	return CLI_EXIT_NOT_FOUND;
}

int cli_show(struct cli *c)
{
	struct shown r = {.c = c};
	char where[128];
	int rc;

	r.id = cli_show_resolve(c, c->args[0]);
	if (r.id < 0)
		return CLI_EXIT_DB;
	if (r.id == 0)
		return cli_show_not_found(c, c->args[0]);
	rc = show(c, &r);
	if (rc)
		return rc;
	snprintf(where, sizeof(where),
		 " AND (l.victim_request_id = %" PRId64
		 " OR l.source_request_id = %" PRId64 ")",
		 r.id, r.id);
	return cli_db_fail_exit(c, where);
}
