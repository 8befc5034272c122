/*
 * cli_leaks.c: `ctxleak leaks`, the findings of the selection, newest
 * first, as a table or one JSON object per finding.
 */
#include <limits.h>
#include <string.h>

#include "cli.h"

#define DEFAULT_TABLE_LIMIT 50

enum {
	L_ID,
	L_CLASS,
	L_APP,
	L_PID,
	L_TID,
	L_TS,
	L_VICTIM_ID,
	L_VICTIM_CTX,
	L_VICTIM_NAME,
	L_SOURCE_ID,
	L_SOURCE_CTX,
	L_SOURCE_NAME,
	L_RECORD,
	L_NAME,
	L_VALUE,
	L_CTX,
	L_CAUSE,
	L_OTHER,
	L_FILE,
	L_LINE,
	L_FUNC,
	L_DETAIL,
	L_PROCESS,
	L_HOST, /* NULL on a host's own database */
};

static const char leaks_sql[] =
    "SELECT l.id, l.class, p.app, p.pid, l.tid, l.ts, l.victim_request_id,"
    " l.victim_ctx, l.victim_name, l.source_request_id, l.source_ctx,"
    " l.source_name, l.record, l.name, l.value, l.ctx, l.cause, l.other,"
    " s.file, s.line, s.func, l.detail, l.process_id, %s"
    " FROM leaks l JOIN processes p ON p.id = l.process_id"
    " LEFT JOIN sites s ON s.id = l.site_id WHERE 1 = 1%s"
    " ORDER BY l.ts DESC, l.id DESC LIMIT :limit";

/* "server.c:142 on_db_reply", or NULL without a site. */
static const char *site_str(struct cli_stmt *st, char *buf, size_t len)
{
	if (cli_stmt_type(st, L_FILE) == CLI_TYPE_NULL)
		return NULL;
	snprintf(buf, len, "%s:%d%s%s", cli_db_str(st, L_FILE),
		 (int)cli_stmt_int(st, L_LINE),
		 cli_stmt_type(st, L_FUNC) == CLI_TYPE_NULL ? "" : " ",
		 cli_stmt_type(st, L_FUNC) == CLI_TYPE_NULL
		     ? ""
		     : cli_db_str(st, L_FUNC));
	return buf;
}

static void json_request(struct cli_json *j, struct cli_stmt *st,
			 const char *side, int id_col, int ctx_col,
			 int name_col)
{
	char key[32];

	cli_json_kctx(j, side, cli_stmt_int(st, ctx_col));
	snprintf(key, sizeof(key), "%s_request", side);
	cli_json_kcol(j, key, st, id_col);
	snprintf(key, sizeof(key), "%s_name", side);
	cli_json_kcol(j, key, st, name_col);
}

static void json_leak(struct cli *c, struct cli_json *j, struct cli_stmt *st)
{
	const char *record = cli_db_str(st, L_RECORD);
	int is_tag = record && strcmp(record, "TAG") == 0;
	int is_event = record && strcmp(record, "EVENT") == 0;
	char site[1024], detail[2048];

	cli_json_object(j);
	cli_json_kint(j, "id", cli_stmt_int(st, L_ID));
	cli_json_kcol(j, "class", st, L_CLASS);
	cli_json_kcol(j, "app", st, L_APP);
	if (cli_db_is_pg(c))
		cli_json_kcol(j, "host", st, L_HOST);
	cli_json_kcol(j, "pid", st, L_PID);
	cli_json_kcol(j, "tid", st, L_TID);
	cli_json_kts(j, "ts", cli_stmt_int(st, L_TS));
	json_request(j, st, "victim", L_VICTIM_ID, L_VICTIM_CTX, L_VICTIM_NAME);
	json_request(j, st, "source", L_SOURCE_ID, L_SOURCE_CTX, L_SOURCE_NAME);
	cli_json_kcol(j, "record", st, L_RECORD);
	cli_json_kcol(j, is_tag ? "key" : "name", st, L_NAME);
	if (is_tag || is_event)
		cli_json_kcol(j, is_tag ? "value" : "message", st, L_VALUE);
	cli_json_kctx(j, "ctx", cli_stmt_int(st, L_CTX));
	cli_json_kctx(j, "cause", cli_stmt_int(st, L_CAUSE));
	if (record && !strcmp(record, "BEGIN"))
		cli_json_kctx(j, "prev", cli_stmt_int(st, L_OTHER));
	else if (record && !strcmp(record, "END"))
		cli_json_kctx(j, "cur", cli_stmt_int(st, L_OTHER));
	cli_json_kstr(j, "site", site_str(st, site, sizeof(site)));
	/* "detail" stays last: scripts take it to the end of the line. */
	cli_json_kstr(j, "fix", cli_class_fix(cli_db_str(st, L_CLASS)));
	cli_json_kstr(j, "detail",
		      cli_db_str(st, L_DETAIL)
			  ? cli_detail(c, cli_stmt_int(st, L_PROCESS),
				       cli_stmt_int(st, L_VICTIM_ID),
				       cli_db_str(st, L_DETAIL), detail,
				       sizeof(detail))
			  : NULL);
	cli_json_end(j);
}

static const struct cli_col leak_cols[] = {
    {"TIME", 0},
    {"CLASS", 0},
    {"HOST", 0}, /* on the central database only */
    {"PID", CLI_COL_RIGHT},
    {"VICTIM", CLI_COL_SHRINK},
    {"SOURCE", CLI_COL_SHRINK},
    {"RECORD", CLI_COL_SHRINK},
    {"SITE", CLI_COL_SHRINK},
};

static void table_leak(struct cli *c, struct cli_table *t, struct cli_stmt *st)
{
	char buf[1024], tbuf[32];
	int len;
	const char *s;

	cli_table_cell(
	    t, cli_time_short(cli_stmt_int(st, L_TS), tbuf, sizeof(tbuf)));
	cli_table_cell_styled(t, cli_class_style(cli_db_str(st, L_CLASS)),
			      cli_db_str(st, L_CLASS));
	if (cli_db_is_pg(c))
		cli_table_cell(t, cli_db_str(st, L_HOST));
	cli_table_cell(t, cli_db_str(st, L_PID));
	s = cli_db_text(st, L_VICTIM_NAME, &len);
	cli_table_cell(t, cli_request_label(cli_stmt_int(st, L_VICTIM_ID), s,
					    len, buf, sizeof(buf)));
	s = cli_db_text(st, L_SOURCE_NAME, &len);
	cli_table_cell(t, cli_request_label(cli_stmt_int(st, L_SOURCE_ID), s,
					    len, buf, sizeof(buf)));
	cli_table_cell(
	    t, cli_record_str(cli_db_str(st, L_RECORD), cli_db_str(st, L_NAME),
			      cli_db_str(st, L_VALUE), buf, sizeof(buf)));
	/* The file's name and line say where; the rest is in --json. */
	if (site_str(st, buf, sizeof(buf))) {
		*strchrnul(buf, ' ') = '\0';
		s = strrchr(buf, '/');
		cli_table_cell(t, s ? s + 1 : buf);
	} else {
		cli_table_cell(t, NULL);
	}
}

/* The table, with HOST only where there are hosts; cols holds its 8
 * columns at most. */
static struct cli_table *leak_table(struct cli *c, struct cli_col *cols)
{
	int n = 0;

	for (size_t i = 0; i < sizeof(leak_cols) / sizeof(leak_cols[0]); i++)
		if (strcmp(leak_cols[i].header, "HOST") != 0 || cli_db_is_pg(c))
			cols[n++] = leak_cols[i];
	return cli_table_new(c, cols, n);
}

static int filtered(const struct cli_filter *f)
{
	return f->classes || f->app || f->pid || f->request || f->site_file ||
	       f->since || f->until || f->host;
}

/* The footer of a table: why there are no more rows, and never a bare "no
 * findings" over records that clients dropped. */
static void table_footer(struct cli *c, long shown, int more, long limit)
{
	long long dropped;

	if (more)
		fprintf(c->out,
			"(the newest %ld shown: --limit N or --limit 0 for "
			"more)\n",
			limit);
	if (shown)
		return;
	fprintf(c->out, "no findings%s\n",
		filtered(&c->filter) ? " match the filters" : "");
	dropped = cli_db_dropped(c);
	if (dropped > 0)
		fprintf(c->out,
			"but clients dropped %lld records in this range: see "
			"'ctxleak summary'\n",
			dropped);
}

int cli_leaks(struct cli *c)
{
	char where[1024], sql[sizeof(leaks_sql) + sizeof(where) + 128];
	struct cli_col cols[8];
	long limit = c->filter.limit, shown = 0;
	struct cli_table *t = NULL;
	struct cli_json *j = NULL;
	struct cli_stmt *st;
	int more = 0, rc;

	if (limit < 0)
		limit = c->json ? 0 : DEFAULT_TABLE_LIMIT;
	cli_db_filter_sql(&c->filter, where, sizeof(where));
	snprintf(sql, sizeof(sql), leaks_sql, cli_db_host_sql(c), where);
	st = cli_db_prepare(c, sql);
	if (st == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	/* One more than shown, to know whether there are more (no limit: the
	 * largest, as PostgreSQL takes no negative LIMIT; past LONG_MAX - 1
	 * that many rows cannot exist anyway). */
	cli_stmt_bind_int(st, cli_stmt_param(st, ":limit"),
			  limit && limit < LONG_MAX ? limit + 1 : INT64_MAX);
	if (c->json)
		j = cli_json_new(c->out);
	else
		t = leak_table(c, cols);
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
		if (limit && shown == limit) {
			more = 1;
			rc = CLI_STEP_DONE;
			break;
		}
		shown++;
		if (j)
			json_leak(c, j, st);
		else
			table_leak(c, t, st);
	}
	cli_stmt_finalize(st);
	cli_json_free(j);
	if (shown == 0)
		cli_db_say_where(c);
	if (t) {
		if (shown)
			cli_table_print(t);
		cli_table_free(t);
		table_footer(c, shown, more, limit);
	}
	if (cli_db_done(c, rc))
		return CLI_EXIT_DB;
	return cli_db_fail_exit(c, where);
}
