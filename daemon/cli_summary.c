/*
 * cli_summary.c: `ctxleak summary`, the overview of a selection: counts by
 * class, application, request name and site; each process's inferred
 * concurrency model and the backend that would isolate its requests; and,
 * stated plainly, the windows in which clients dropped records, because a
 * count over data that never arrived is a lower bound, not a result.
 */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

#define TOP 10

static const char leaks_from[] =
    " FROM leaks l JOIN processes p ON p.id = l.process_id"
    " LEFT JOIN sites s ON s.id = l.site_id WHERE 1";

/* A breakdown of the selection's findings by one expression. */
struct breakdown {
	const char *title; /* table header */
	const char *json;  /* JSON member */
	const char *key;   /* JSON item key */
	const char *expr;  /* SQL over l, p, s */
};

static const struct breakdown breakdowns[] = {
    {"CLASS", "by_class", "class", "l.class"},
    {"APP", "by_app", "app", "p.app"},
    {"REQUEST", "by_request", "request", "l.victim_name"},
    {"SITE", "by_site", "site",
     "s.file || ':' || s.line || coalesce(' ' || s.func, '')"},
};

/* SELECT what over the selection's findings, then tail (GROUP BY...). */
static sqlite3_stmt *prepare_filtered(struct cli *c, const char *what,
				      const char *where, const char *tail)
{
	char sql[2048];
	sqlite3_stmt *st;

	snprintf(sql, sizeof(sql), "SELECT %s%s%s%s", what, leaks_from, where,
		 tail);
	st = cli_db_prepare(c, sql);
	if (st)
		cli_db_bind_filter(st, &c->filter);
	return st;
}

static int print_breakdown(struct cli *c, struct cli_json *j,
			   const struct breakdown *b, const char *where)
{
	const struct cli_col cols[] = {{b->title, CLI_COL_SHRINK},
				       {"FINDINGS", CLI_COL_RIGHT}};
	char what[256], tail[256];
	struct cli_table *t = NULL;
	sqlite3_stmt *st;
	int rc;

	snprintf(what, sizeof(what), "%s, count(*)", b->expr);
	snprintf(tail, sizeof(tail), " GROUP BY %s ORDER BY 2 DESC, 1 LIMIT %d",
		 b->expr, TOP);
	if ((st = prepare_filtered(c, what, where, tail)) == NULL)
		return CLI_EXIT_DB;
	if (j) {
		cli_json_key(j, b->json);
		cli_json_array(j);
	} else {
		t = cli_table_new(c, cols, 2);
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (j) {
			cli_json_object(j);
			cli_json_kcol(j, b->key, st, 0);
			cli_json_kcol(j, "count", st, 1);
			cli_json_end(j);
		} else {
			cli_table_cell_styled(
			    t,
			    b == breakdowns ? cli_class_style(cli_db_str(st, 0))
					    : CLI_STYLE_NONE,
			    cli_db_str(st, 0));
			cli_table_cell(t, cli_db_str(st, 1));
		}
	}
	sqlite3_finalize(st);
	if (j) {
		cli_json_end(j);
	} else {
		cli_table_print(t);
		cli_table_free(t);
		fputc('\n', c->out);
	}
	return cli_db_done(c, rc);
}

static long long count_of(struct cli *c, const char *what, const char *where)
{
	sqlite3_stmt *st = prepare_filtered(c, what, where, "");
	long long n = -1;

	if (st && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* ------------------------------------------------------------ models */

static const char models_sql[] =
    "SELECT p.pid, p.app, p.backend, p.model, p.recommend,"
    " p.model_evidence FROM processes p WHERE 1%s"
    " ORDER BY p.connected_at, p.id";

static void model_line(struct cli *c, sqlite3_stmt *st)
{
	const char *app = cli_db_str(st, 1);
	const char *backend = cli_db_str(st, 2);
	const char *model = cli_db_str(st, 3);
	const char *recommend = cli_db_str(st, 4);
	const char *evidence = cli_db_str(st, 5);
	int wrong = recommend && backend && strcmp(recommend, backend);
	char line[1024];

	snprintf(
	    line, sizeof(line), "pid %lld (%s): backend %s, model %s%s%s%s",
	    sqlite3_column_int64(st, 0), app ? app : "-",
	    backend ? backend : "unknown", model ? model : "not inferred yet",
	    recommend ? (wrong ? ": use " : ": ") : "",
	    recommend ? recommend : "", recommend && !wrong ? " is right" : "");
	cli_print_wrapped(c, wrong ? CLI_STYLE_RED : CLI_STYLE_NONE, 0, line);
	if (evidence && *evidence)
		cli_print_wrapped(c, CLI_STYLE_NONE, 2, evidence);
}

static void model_json(struct cli_json *j, sqlite3_stmt *st)
{
	static const char *const keys[] = {"pid",   "app",	 "backend",
					   "model", "recommend", "evidence"};

	cli_json_object(j);
	for (int i = 0; i < 6; i++)
		cli_json_kcol(j, keys[i], st, i);
	cli_json_end(j);
}

static int print_models(struct cli *c, struct cli_json *j, const char *where)
{
	char sql[sizeof(models_sql) + 512];
	sqlite3_stmt *st;
	int rc, n = 0;

	snprintf(sql, sizeof(sql), models_sql, where);
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	if (j) {
		cli_json_key(j, "processes");
		cli_json_array(j);
	}
	for (; (rc = sqlite3_step(st)) == SQLITE_ROW; n++) {
		if (j)
			model_json(j, st);
		else
			model_line(c, st);
	}
	sqlite3_finalize(st);
	if (j)
		cli_json_end(j);
	else if (n == 0)
		fputs("no processes\n", c->out);
	return cli_db_done(c, rc);
}

/* ------------------------------------------------------------ drops */

/* Windows that overlap the selection's time range. */
static const char drops_sql[] =
    "SELECT p.pid, p.app, d.count, d.since_ts, d.until_ts"
    " FROM drops d JOIN processes p ON p.id = d.process_id WHERE 1%s"
    " AND (:since = 0 OR d.until_ts >= :since)"
    " AND (:until = 0 OR d.since_ts <= :until)"
    " ORDER BY d.since_ts";

static void drop_line(struct cli *c, sqlite3_stmt *st)
{
	char since[64], until[64], line[256];

	snprintf(line, sizeof(line),
		 "pid %lld dropped %lld records between %s and %s: counts "
		 "may be incomplete",
		 sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 2),
		 cli_time_rfc3339(sqlite3_column_int64(st, 3), since, 64),
		 cli_time_rfc3339(sqlite3_column_int64(st, 4), until, 64));
	cli_print_wrapped(c, CLI_STYLE_YELLOW, 0, line);
}

static void drop_json(struct cli_json *j, sqlite3_stmt *st)
{
	cli_json_object(j);
	cli_json_kcol(j, "pid", st, 0);
	cli_json_kcol(j, "app", st, 1);
	cli_json_kcol(j, "dropped", st, 2);
	cli_json_kts(j, "since", sqlite3_column_int64(st, 3));
	cli_json_kts(j, "until", sqlite3_column_int64(st, 4));
	cli_json_end(j);
}

/* Prints the windows; *n is how many there were. */
static int print_drops(struct cli *c, struct cli_json *j, const char *where,
		       int *n)
{
	char sql[sizeof(drops_sql) + 512];
	sqlite3_stmt *st;
	int rc;

	snprintf(sql, sizeof(sql), drops_sql, where);
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	if (j) {
		cli_json_key(j, "incomplete");
		cli_json_array(j);
	}
	for (*n = 0; (rc = sqlite3_step(st)) == SQLITE_ROW; ++*n) {
		if (j)
			drop_json(j, st);
		else
			drop_line(c, st);
	}
	sqlite3_finalize(st);
	if (j)
		cli_json_end(j);
	return cli_db_done(c, rc);
}

/* ------------------------------------------------------------ summary */

static void headline(struct cli *c, long long findings, long long requests)
{
	fprintf(c->out, "%s%lld finding%s%s",
		cli_style_start(c, CLI_STYLE_BOLD), findings,
		findings == 1 ? "" : "s", cli_style_end(c, CLI_STYLE_BOLD));
	if (findings)
		fprintf(c->out, " with %lld victim request%s", requests,
			requests == 1 ? "" : "s");
	fputs("\n\n", c->out);
}

static int summary_body(struct cli *c, struct cli_json *j, const char *where)
{
	char pwhere[512];
	long long findings = count_of(c, "count(*)", where);
	long long victims =
	    count_of(c, "count(DISTINCT l.victim_request_id)", where);
	int rc = 0, ndrops = 0;

	if (findings < 0 || victims < 0)
		return CLI_EXIT_DB;
	if (j) {
		cli_json_kint(j, "findings", findings);
		cli_json_kint(j, "victim_requests", victims);
	} else {
		headline(c, findings, victims);
	}
	for (size_t i = 0; i < 4 && rc == 0 && (j || findings); i++)
		rc = print_breakdown(c, j, &breakdowns[i], where);
	cli_db_process_sql(&c->filter, pwhere, sizeof(pwhere));
	if (rc == 0)
		rc = print_models(c, j, pwhere);
	if (rc == 0 && !j)
		fputc('\n', c->out);
	if (rc == 0)
		rc = print_drops(c, j, pwhere, &ndrops);
	if (rc == 0 && !j && ndrops == 0)
		fputs("no records were dropped: the counts are complete\n",
		      c->out);
	return rc;
}

int cli_summary(struct cli *c)
{
	char where[1024];
	struct cli_json *j = NULL;
	int rc;

	cli_db_filter_sql(&c->filter, where, sizeof(where));
	if (c->json) {
		j = cli_json_new(c->out);
		cli_json_object(j);
	}
	rc = summary_body(c, j, where);
	if (j) {
		cli_json_end(j);
		cli_json_free(j);
	}
	return rc ? rc : cli_db_fail_exit(c, where);
}
