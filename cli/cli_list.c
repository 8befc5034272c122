/*
 * cli_list.c: `ctxleak processes` and `ctxleak sites`, the two plain
 * listings of what the daemon has seen.
 */
#include <string.h>

#include "cli.h"

/* A listing: one query filtered by --app/--pid, one row per line. */
struct listing {
	const char *sql; /* with a %s for the filter's conditions, then may
			    take %2$s, the host's name (cli_db_host_sql) */
	const struct cli_col *cols; /* a HOST column is shown on the central
				       database only */
	int ncols;
	void (*json_row)(struct cli *c, struct cli_json *j,
			 struct cli_stmt *st);
	void (*table_row)(struct cli *c, struct cli_table *t,
			  struct cli_stmt *st);
	const char *empty;
};

/* The listing's table; cols holds its columns (16 at most). */
static struct cli_table *listing_table(struct cli *c, const struct listing *l,
				       struct cli_col *cols)
{
	int n = 0;

	for (int i = 0; i < l->ncols && n < 16; i++)
		if (strcmp(l->cols[i].header, "HOST") != 0 || cli_db_is_pg(c))
			cols[n++] = l->cols[i];
	return cli_table_new(c, cols, n);
}

static int run_listing(struct cli *c, const struct listing *l)
{
	char where[512], sql[2048];
	struct cli_col cols[16];
	struct cli_table *t = NULL;
	struct cli_json *j = NULL;
	struct cli_stmt *st;
	int rc, n = 0;

	cli_db_filter_sql(&c->filter, where, sizeof(where));
	snprintf(sql, sizeof(sql), l->sql, where, cli_db_host_sql(c));
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	if (c->json)
		j = cli_json_new(c->out);
	else
		t = listing_table(c, l, cols);
	for (; (rc = cli_stmt_step(st)) == CLI_STEP_ROW; n++) {
		if (j)
			l->json_row(c, j, st);
		else
			l->table_row(c, t, st);
	}
	cli_stmt_finalize(st);
	cli_json_free(j);
	if (n == 0)
		cli_db_say_where(c);
	if (t) {
		if (n)
			cli_table_print(t);
		else
			fprintf(c->out, "%s\n", l->empty);
		cli_table_free(t);
	}
	if (cli_db_done(c, rc))
		return CLI_EXIT_DB;
	return cli_db_fail_exit(c, where);
}

/* ------------------------------------------------------------ processes */

enum {
	P_PID,
	P_APP,
	P_BACKEND,
	P_MODEL,
	P_RECOMMEND,
	P_RECORDS,
	P_DROPPED,
	P_LEAKS,
	P_CONNECTED,
	P_DISCONNECTED,
	/* JSON only from here on. */
	P_ID,
	P_INSTANCE,
	P_HELLO_PID,
	P_UID,
	P_GID,
	P_REASON,
	P_CLIENT,
	P_CONNECTIONS,
	P_UNKNOWN,
	P_ERROR,
	P_EVIDENCE,
	P_REQUESTS,
	P_HOST, /* NULL on a host's own database */
};

static const char processes_sql[] =
    "SELECT p.pid, p.app, p.backend, p.model, p.recommend, p.records,"
    " p.dropped, (SELECT count(*) FROM leaks l WHERE l.process_id ="
    " p.id), p.connected_at, p.disconnected_at, p.id, p.instance,"
    " p.hello_pid, p.uid, p.gid, p.backend_reason, p.client,"
    " p.connections, p.unknown_skipped, p.error, p.model_evidence,"
    " (SELECT count(*) FROM requests r WHERE r.process_id = p.id) +"
    " (SELECT coalesce(sum(requests), 0) FROM request_stats s"
    " WHERE s.process_id = p.id), %2$s"
    " FROM processes p WHERE 1 = 1%1$s ORDER BY p.connected_at DESC, p.id DESC";

static void json_process(struct cli *c, struct cli_json *j, struct cli_stmt *st)
{
	static const struct {
		const char *key;
		int col;
	} cols[] = {
	    {"id", P_ID},
	    {"pid", P_PID},
	    {"hello_pid", P_HELLO_PID},
	    {"uid", P_UID},
	    {"gid", P_GID},
	    {"app", P_APP},
	    {"backend", P_BACKEND},
	    {"backend_reason", P_REASON},
	    {"client", P_CLIENT},
	    {"connections", P_CONNECTIONS},
	    {"records", P_RECORDS},
	    {"dropped", P_DROPPED},
	    {"unknown_skipped", P_UNKNOWN},
	    {"error", P_ERROR},
	    {"model", P_MODEL},
	    {"recommend", P_RECOMMEND},
	    {"model_evidence", P_EVIDENCE},
	    {"requests", P_REQUESTS},
	    {"leaks", P_LEAKS},
	};

	cli_json_object(j);
	if (cli_db_is_pg(c))
		cli_json_kcol(j, "host", st, P_HOST);
	for (size_t i = 0; i < sizeof(cols) / sizeof(cols[0]); i++)
		cli_json_kcol(j, cols[i].key, st, cols[i].col);
	cli_json_kctx(j, "instance", cli_stmt_int(st, P_INSTANCE));
	cli_json_kts(j, "connected_at", cli_stmt_int(st, P_CONNECTED));
	cli_json_kts(j, "disconnected_at", cli_stmt_int(st, P_DISCONNECTED));
	cli_json_end(j);
}

static const struct cli_col process_cols[] = {
    {"HOST", 0},
    {"PID", CLI_COL_RIGHT},
    {"APP", CLI_COL_SHRINK},
    {"BACKEND", 0},
    {"MODEL", CLI_COL_SHRINK},
    {"USE", 0},
    {"RECORDS", CLI_COL_RIGHT},
    {"DROPPED", CLI_COL_RIGHT},
    {"LEAKS", CLI_COL_RIGHT},
    {"CONNECTED", 0},
};

static void table_process(struct cli *c, struct cli_table *t,
			  struct cli_stmt *st)
{
	char buf[32];
	const char *recommend = cli_db_str(st, P_RECOMMEND);
	const char *backend = cli_db_str(st, P_BACKEND);

	if (cli_db_is_pg(c))
		cli_table_cell(t, cli_db_str(st, P_HOST));
	for (int col = P_PID; col <= P_MODEL; col++)
		cli_table_cell(t, cli_db_str(st, col));
	/* The advice stands out when it differs from what is in use. */
	cli_table_cell_styled(t,
			      recommend && backend && strcmp(recommend, backend)
				  ? CLI_STYLE_RED
				  : CLI_STYLE_NONE,
			      recommend);
	for (int col = P_RECORDS; col <= P_LEAKS; col++)
		cli_table_cell(t, cli_db_str(st, col));
	cli_table_cell(
	    t, cli_time_short(cli_stmt_int(st, P_CONNECTED), buf, sizeof(buf)));
}

int cli_processes(struct cli *c)
{
	static const struct listing processes = {
	    processes_sql, process_cols,  10,
	    json_process,  table_process, "no processes",
	};

	return run_listing(c, &processes);
}

/* ------------------------------------------------------------ sites */

enum { S_FILE, S_LINE, S_FUNC, S_PROCS, S_LEAKS, S_CLASS0 };

/* The findings of each class in the group, in cli_class_names order (a
 * comparison is no number in PostgreSQL: CASE, not sum(l.class = ...)). */
#define CLASS_COUNT(cls)                                                       \
	", sum(CASE WHEN l.class = '" cls "' THEN 1 ELSE 0 END)"
#define CLASS_COUNTS                                                           \
	CLASS_COUNT("bleed")                                                   \
	CLASS_COUNT("stale")                                                   \
	CLASS_COUNT("overlap")                                                 \
	CLASS_COUNT("lost") CLASS_COUNT("misnest") CLASS_COUNT("unclosed")

/* Per-class counts follow S_LEAKS.  A site row
 * is shared by every process that defines it (sites.process_id is the
 * first): the processes counted and filtered are those of its findings,
 * or that first one when it has none. */
static const char sites_sql[] =
    "SELECT s.file, s.line, s.func, count(DISTINCT p.id), "
    "count(l.id)" CLASS_COUNTS
    " FROM sites s LEFT JOIN leaks l ON l.site_id = s.id"
    " JOIN processes p ON p.id = coalesce(l.process_id, s.process_id)"
    " WHERE 1 = 1%s"
    " GROUP BY s.file, s.line, s.func"
    " ORDER BY count(l.id) DESC, s.file COLLATE BINARY, s.line,"
    " s.func IS NOT NULL, s.func COLLATE BINARY";

static void json_site(struct cli *c, struct cli_json *j, struct cli_stmt *st)
{
	(void)c;
	cli_json_object(j);
	cli_json_kcol(j, "file", st, S_FILE);
	cli_json_kcol(j, "line", st, S_LINE);
	cli_json_kcol(j, "func", st, S_FUNC);
	cli_json_kcol(j, "processes", st, S_PROCS);
	cli_json_kcol(j, "leaks", st, S_LEAKS);
	cli_json_key(j, "classes");
	cli_json_object(j);
	for (int i = 0; i < CLI_CLASS_COUNT; i++)
		cli_json_kint(j, cli_class_names[i],
			      cli_stmt_int(st, S_CLASS0 + i));
	cli_json_end(j);
	cli_json_end(j);
}

static const struct cli_col site_cols[] = {
    {"SITE", CLI_COL_SHRINK},	 {"FUNCTION", CLI_COL_SHRINK},
    {"PROCS", CLI_COL_RIGHT},	 {"LEAKS", CLI_COL_RIGHT},
    {"CLASSES", CLI_COL_SHRINK},
};

static void table_site(struct cli *c, struct cli_table *t, struct cli_stmt *st)
{
	char classes[256] = "";
	size_t n = 0;

	(void)c;
	cli_table_cellf(t, "%s:%d", cli_db_str(st, S_FILE),
			(int)cli_stmt_int(st, S_LINE));
	cli_table_cell(t, cli_db_str(st, S_FUNC));
	cli_table_cell(t, cli_db_str(st, S_PROCS));
	cli_table_cell(t, cli_db_str(st, S_LEAKS));
	for (int i = 0; i < CLI_CLASS_COUNT; i++) {
		long long k = cli_stmt_int(st, S_CLASS0 + i);

		if (k && n < sizeof(classes))
			n += snprintf(classes + n, sizeof(classes) - n,
				      "%s%s %lld", n ? ", " : "",
				      cli_class_names[i], k);
	}
	cli_table_cell(t, classes);
}

int cli_sites(struct cli *c)
{
	static const struct listing sites = {
	    sites_sql, site_cols, 5, json_site, table_site, "no sites",
	};

	return run_listing(c, &sites);
}
