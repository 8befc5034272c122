/*
 * cli_summary.c: `ctxleak summary`, the overview of a selection: counts by
 * class, application, request name and site; per process, its storage's
 * findings beside what thread, global and task would have found (the
 * daemon's what-if), the backends that keep its requests apart, and its
 * concurrency model as the reason why; and,
 * stated plainly, the windows in which clients dropped records, because a
 * count over data that never arrived is a lower bound, not a result.
 */
#include <inttypes.h>
#include <string.h>

#include "cli.h"

#define TOP 10

static const char leaks_from[] =
    " FROM leaks l JOIN processes p ON p.id = l.process_id"
    " LEFT JOIN sites s ON s.id = l.site_id WHERE 1 = 1";

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
static struct cli_stmt *prepare_filtered(struct cli *c, const char *what,
					 const char *where, const char *tail)
{
	char sql[2048];
	struct cli_stmt *st;

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
	char what[256], tail[512];
	struct cli_table *t = NULL;
	struct cli_stmt *st;
	int rc;

	snprintf(what, sizeof(what), "%s, count(*)", b->expr);
	/* NULL first and bytewise, as SQLite orders (PostgreSQL's default
	 * puts NULL last and follows the locale). */
	snprintf(tail, sizeof(tail),
		 " GROUP BY %s ORDER BY count(*) DESC, (%s) IS NOT NULL,"
		 " (%s) COLLATE BINARY LIMIT %d",
		 b->expr, b->expr, b->expr, TOP);
	if ((st = prepare_filtered(c, what, where, tail)) == NULL)
		return CLI_EXIT_DB;
	if (j) {
		cli_json_key(j, b->json);
		cli_json_array(j);
	} else {
		t = cli_table_new(c, cols, 2);
	}
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW) {
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
	cli_stmt_finalize(st);
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
	struct cli_stmt *st = prepare_filtered(c, what, where, "");
	long long n = -1;

	if (st && cli_stmt_step(st) == CLI_STEP_ROW)
		n = cli_stmt_int(st, 0);
	cli_stmt_finalize(st);
	return n;
}

/* ------------------------------------------------------------ storage */

/*
 * Per process: the table that answers "which storage keeps this program's
 * requests apart", measured from its one run.  Its own storage's findings
 * (what it ran with: a library backend, or the service's storage observed)
 * beside the daemon's what-if for thread, global and task (daemon/SCHEMA.md
 * what_if); the recommendation is the backends with no finding (unclosed
 * aside, the same under all), and the concurrency model explains it.
 */

#define BACKENDS 3

static const char *const backend_names[BACKENDS] = {"thread", "global", "task"};

static const char models_sql[] =
    "SELECT p.id, p.pid, p.app, p.backend, p.model, p.recommend,"
    " p.model_evidence, p.what_if, %s FROM processes p WHERE 1 = 1%s"
    " ORDER BY p.connected_at, p.id";

/* Findings of one storage: its own (backend NULL) or a what-if's. */
struct storage {
	long long n[CLI_CLASS_COUNT];
	char sites[256]; /* its two top sites, "file.c:12 fn (n), ..." */
};

/* " on host NAME" for a host column, "" where there are no hosts (a
 * host's own database), in buf. */
static const char *on_host(struct cli_stmt *st, int col, char *buf, size_t len)
{
	const char *host = cli_db_str(st, col);

	snprintf(buf, len, "%s%s", host ? " on host " : "", host ? host : "");
	return buf;
}

/* The host member, on the central database only. */
static void json_host(struct cli *c, struct cli_json *j, struct cli_stmt *st,
		      int col)
{
	if (cli_db_is_pg(c))
		cli_json_kcol(j, "host", st, col);
}

static int class_index(const char *name)
{
	for (int i = 0; name && i < CLI_CLASS_COUNT; i++)
		if (strcmp(cli_class_names[i], name) == 0)
			return i;
	return -1;
}

/* A site as file:line function, the file without its directories. */
#define SITE_NAME                                                              \
	"replace(s.file, rtrim(s.file, replace(s.file, '/', '')), '') || ':' " \
	"|| s.line || coalesce(' ' || s.func, '')"

static const char counts_sql[] =
    "SELECT class, count(*) FROM leaks WHERE process_id = ?1 GROUP BY 1";
static const char what_if_sql[] =
    "SELECT class, sum(count) FROM what_if WHERE process_id = ?1"
    " AND backend = ?2 GROUP BY 1";
/* The top two sites of a process's findings or of a what-if's: grouped
 * by site id, with the site's columns that name it. */
#define TOP_SITES(from, where, count)                                          \
	"SELECT name, n FROM (SELECT coalesce(" SITE_NAME ", '(no site)')"     \
	" AS name, " count " AS n FROM " from " LEFT JOIN sites s ON s.id ="   \
	" site_id WHERE " where " GROUP BY site_id, s.file, s.line, s.func)"   \
	" AS g ORDER BY n DESC, name COLLATE BINARY LIMIT 2"
static const char sites_sql[] =
    TOP_SITES("leaks l", "l.process_id = ?1 AND ?2 IS NULL", "count(*)");
static const char what_if_sites_sql[] = TOP_SITES(
    "what_if w", "w.process_id = ?1 AND w.backend = ?2", "sum(w.count)");

static struct cli_stmt *prepare_storage(struct cli *c, const char *sql,
					long long id, const char *backend)
{
	struct cli_stmt *st = cli_db_prepare(c, sql);

	if (st == NULL)
		return NULL;
	cli_stmt_bind_int(st, 1, id);
	if (backend)
		cli_stmt_bind_text(st, 2, backend);
	return st;
}

/* The findings of process id under backend (NULL: its own storage). */
static int read_storage(struct cli *c, long long id, const char *backend,
			struct storage *out)
{
	struct cli_stmt *st =
	    prepare_storage(c, backend ? what_if_sql : counts_sql, id, backend);
	size_t len = 0;
	int rc, k;

	memset(out, 0, sizeof(*out));
	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW)
		if ((k = class_index(cli_db_str(st, 0))) >= 0)
			out->n[k] = cli_stmt_int(st, 1);
	cli_stmt_finalize(st);
	if ((rc = cli_db_done(c, rc)) != 0)
		return rc;
	st = prepare_storage(c, backend ? what_if_sites_sql : sites_sql, id,
			     backend);
	if (st == NULL)
		return CLI_EXIT_DB;
	while ((rc = cli_stmt_step(st)) == CLI_STEP_ROW &&
	       len < sizeof(out->sites))
		len += (size_t)snprintf(
		    out->sites + len, sizeof(out->sites) - len, "%s%s (%lld)",
		    len ? ", " : "", cli_db_str(st, 0), cli_stmt_int(st, 1));
	cli_stmt_finalize(st);
	return cli_db_done(c, rc == CLI_STEP_ROW ? CLI_STEP_DONE : rc);
}

static void storage_row(struct cli_table *t, const char *name,
			const struct storage *sg)
{
	cli_table_cell(t, name);
	for (int k = 0; k < CLI_CLASS_COUNT; k++)
		cli_table_cellf(t, "%lld", sg->n[k]);
}

/* Whether backend is one of the comma-separated list. */
static int listed(const char *list, const char *backend)
{
	size_t n = strlen(backend);

	while (list && *list) {
		size_t len = strcspn(list, ",");

		if (len == n && strncmp(list, backend, n) == 0)
			return 1;
		list += len + (list[len] == ',');
	}
	return 0;
}

/* The storages' top sites under the table, one line per list of sites,
 * naming the storages that share it. */
static void sites_lines(struct cli *c, const char names[][32],
			const struct storage *sg, int n)
{
	char line[512];

	for (int i = 0; i < n; i++) {
		size_t len = 0;
		int seen = 0;

		for (int k = 0; k < i && !seen; k++)
			seen = strcmp(sg[k].sites, sg[i].sites) == 0;
		if (seen || sg[i].sites[0] == '\0')
			continue;
		for (int k = i; k < n; k++)
			if (strcmp(sg[k].sites, sg[i].sites) == 0)
				len += (size_t)snprintf(
				    line + len, sizeof(line) - len, "%s%s",
				    len ? ", " : "top sites under ", names[k]);
		snprintf(line + len, sizeof(line) - len, ": %s", sg[i].sites);
		cli_print_wrapped(c, CLI_STYLE_NONE, 2, line);
	}
}

static int storage_table(struct cli *c, long long id, const char *ran,
			 int what_if)
{
	static const struct cli_col cols[] = {
	    {"STORAGE", 0},
	    {"BLEED", CLI_COL_RIGHT},
	    {"STALE", CLI_COL_RIGHT},
	    {"OVERLAP", CLI_COL_RIGHT},
	    {"LOST", CLI_COL_RIGHT},
	    {"MISNEST", CLI_COL_RIGHT},
	    {"UNCLOSED", CLI_COL_RIGHT},
	};
	struct cli_table *t = cli_table_new(c, cols, 7);
	struct storage sg[1 + BACKENDS];
	char names[1 + BACKENDS][32];
	int rc, n = 0;

	snprintf(names[0], sizeof(names[0]), "%s (ran)", ran ? ran : "?");
	if ((rc = read_storage(c, id, NULL, &sg[n++])) != 0)
		goto out;
	for (int b = 0; what_if && b < BACKENDS; b++) {
		snprintf(names[n], sizeof(names[n]), "%s", backend_names[b]);
		if ((rc = read_storage(c, id, backend_names[b], &sg[n++])) != 0)
			goto out;
	}
	for (int i = 0; i < n; i++)
		storage_row(t, names[i], &sg[i]);
	cli_table_print(t);
	sites_lines(c, names, sg, n);
out:
	cli_table_free(t);
	return rc;
}

/* backend names of a comma-separated list, "thread or task", in buf. */
static const char *either(const char *list, char *buf, size_t len)
{
	size_t n = 0;
	int k = 0, total = 0;

	for (int b = 0; b < BACKENDS; b++)
		total += listed(list, backend_names[b]);
	buf[0] = '\0';
	for (int b = 0; b < BACKENDS && n < len; b++)
		if (listed(list, backend_names[b]))
			n += (size_t)snprintf(buf + n, len - n, "%s%s",
					      k++ == 0	   ? ""
					      : k == total ? " or "
							   : ", ",
					      backend_names[b]);
	return buf;
}

static long long storage_findings(const struct storage *sg)
{
	long long n = 0;

	for (int k = 0; k < CLI_CLASS_COUNT; k++)
		if (strcmp(cli_class_names[k], "unclosed") != 0)
			n += sg->n[k];
	return n;
}

/* The recommendation, measured: the backends with no findings.  Where
 * the process's own storage has none either, it needs no change. */
static void recommend_line(struct cli *c, const char *ran,
			   const char *recommend, const struct storage *own)
{
	int several = recommend && strchr(recommend, ',') != NULL;
	int clean = storage_findings(own) == 0;
	char names[64], line[256];

	if (recommend == NULL) {
		cli_print_wrapped(c, CLI_STYLE_YELLOW, 2,
				  "no library-kept backend is clean: what "
				  "they all find is in how the application "
				  "carries its context");
		return;
	}
	if (!clean) {
		snprintf(line, sizeof(line), "use %s: no findings under %s",
			 either(recommend, names, sizeof(names)),
			 several ? "them" : "it");
	} else if (ran != NULL && listed(recommend, ran)) {
		char others[64];
		size_t k = 0;

		/* The list without ran. */
		for (int b = 0; b < BACKENDS; b++)
			if (listed(recommend, backend_names[b]) &&
			    strcmp(backend_names[b], ran) != 0)
				k += (size_t)snprintf(
				    others + k, sizeof(others) - k, "%s%s",
				    k ? "," : "", backend_names[b]);
		others[k] = '\0';
		snprintf(line, sizeof(line),
			 "%s keeps the requests apart%s%s: no findings", ran,
			 k ? ", as would " : "",
			 k ? either(others, names, sizeof(names)) : "");
	} else {
		snprintf(line, sizeof(line),
			 "%s keeps the requests apart; of the library's "
			 "backends, so would %s",
			 ran ? ran : "its storage",
			 either(recommend, names, sizeof(names)));
	}
	cli_print_wrapped(c, clean ? CLI_STYLE_GREEN : CLI_STYLE_RED, 2, line);
}

static int model_lines(struct cli *c, struct cli_stmt *st)
{
	long long id = cli_stmt_int(st, 0);
	const char *app = cli_db_str(st, 2);
	const char *backend = cli_db_str(st, 3);
	const char *model = cli_db_str(st, 4);
	const char *recommend = cli_db_str(st, 5);
	const char *evidence = cli_db_str(st, 6);
	int what_if = (int)cli_stmt_int(st, 7);
	struct storage own;
	char line[512], host[256];
	int rc;

	snprintf(line, sizeof(line), "pid %lld (%s)%s: ran with %s, model %s",
		 cli_stmt_int(st, 1), app ? app : "-",
		 on_host(st, 8, host, sizeof(host)),
		 backend ? backend : "unknown",
		 model ? model : "not inferred yet");
	cli_print_wrapped(c, CLI_STYLE_BOLD, 0, line);
	if ((rc = storage_table(c, id, backend, what_if)) != 0 ||
	    (rc = read_storage(c, id, NULL, &own)) != 0)
		return rc;
	if (what_if)
		recommend_line(c, backend, recommend, &own);
	else
		cli_print_wrapped(c, CLI_STYLE_DIM, 2,
				  "no what-if: ctxleakd ran with --no-what-if, "
				  "or the process has not ended");
	if (evidence && *evidence)
		cli_print_wrapped(c, CLI_STYLE_NONE, 2, evidence);
	fputc('\n', c->out);
	return 0;
}

static void json_classes(struct cli_json *j, const char *key,
			 const struct storage *sg)
{
	cli_json_key(j, key);
	cli_json_object(j);
	for (int k = 0; k < CLI_CLASS_COUNT; k++)
		cli_json_kint(j, cli_class_names[k], sg->n[k]);
	cli_json_end(j);
}

static int model_json(struct cli *c, struct cli_json *j, struct cli_stmt *st)
{
	static const char *const keys[] = {"pid", "app", "backend", "model"};
	long long id = cli_stmt_int(st, 0);
	const char *recommend = cli_db_str(st, 5);
	struct storage sg;
	int rc;

	cli_json_object(j);
	json_host(c, j, st, 8);
	for (int i = 0; i < 4; i++)
		cli_json_kcol(j, keys[i], st, i + 1);
	if ((rc = read_storage(c, id, NULL, &sg)) != 0)
		return rc;
	json_classes(j, "observed", &sg);
	cli_json_key(j, "what_if");
	if ((int)cli_stmt_int(st, 7)) {
		cli_json_object(j);
		for (int b = 0; b < BACKENDS; b++) {
			if ((rc = read_storage(c, id, backend_names[b], &sg)) !=
			    0)
				return rc;
			json_classes(j, backend_names[b], &sg);
		}
		cli_json_end(j);
	} else {
		cli_json_null(j);
	}
	cli_json_key(j, "recommend");
	cli_json_array(j);
	for (int b = 0; b < BACKENDS; b++)
		if (recommend && listed(recommend, backend_names[b]))
			cli_json_str(j, backend_names[b],
				     strlen(backend_names[b]));
	cli_json_end(j);
	cli_json_kcol(j, "evidence", st, 6);
	cli_json_end(j);
	return 0;
}

static int print_models(struct cli *c, struct cli_json *j, const char *where)
{
	char sql[sizeof(models_sql) + 512];
	struct cli_stmt *st;
	int rc, n = 0, err = 0;

	snprintf(sql, sizeof(sql), models_sql, cli_db_host_sql(c), where);
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	if (j) {
		cli_json_key(j, "processes");
		cli_json_array(j);
	}
	for (; !err && (rc = cli_stmt_step(st)) == CLI_STEP_ROW; n++)
		err = j ? model_json(c, j, st) : model_lines(c, st);
	cli_stmt_finalize(st);
	if (err)
		return err;
	if (j)
		cli_json_end(j);
	else if (n == 0)
		fputs("no processes\n\n", c->out);
	return cli_db_done(c, rc);
}

/* ------------------------------------------------------------ drops */

/* Windows that overlap the selection's time range. */
static const char drops_sql[] =
    "SELECT p.pid, p.app, d.count, d.since_ts, d.until_ts, %s"
    " FROM drops d JOIN processes p ON p.id = d.process_id WHERE 1 = 1%s"
    " AND (:since = 0 OR d.until_ts >= :since)"
    " AND (:until = 0 OR d.since_ts <= :until)"
    " ORDER BY d.since_ts, d.process_id";

static void drop_line(struct cli *c, struct cli_stmt *st)
{
	char since[64], until[64], line[512], host[256];

	snprintf(line, sizeof(line),
		 "pid %lld%s dropped %lld records between %s and %s: counts "
		 "may be incomplete",
		 cli_stmt_int(st, 0), on_host(st, 5, host, sizeof(host)),
		 cli_stmt_int(st, 2),
		 cli_time_rfc3339(cli_stmt_int(st, 3), since, 64),
		 cli_time_rfc3339(cli_stmt_int(st, 4), until, 64));
	cli_print_wrapped(c, CLI_STYLE_YELLOW, 0, line);
}

static void drop_json(struct cli *c, struct cli_json *j, struct cli_stmt *st)
{
	cli_json_object(j);
	json_host(c, j, st, 5);
	cli_json_kcol(j, "pid", st, 0);
	cli_json_kcol(j, "app", st, 1);
	cli_json_kcol(j, "dropped", st, 2);
	cli_json_kts(j, "since", cli_stmt_int(st, 3));
	cli_json_kts(j, "until", cli_stmt_int(st, 4));
	cli_json_end(j);
}

/* The windows of a daemon that died (daemon/store_runs.c): from its last
 * commit to its successor's start (or now), overlapping the selection's
 * time range.  Clients that ended then could report nothing.  Its
 * successor is the next run of the same database (source). */
#define NEXT_RUN_START                                                         \
	"coalesce((SELECT min(n.started_at) FROM runs n WHERE n.id > r.id"     \
	" AND n.id < " CLI_SOURCE_END_SQL("r.id") "), 0)"
static const char outages_sql[] =
    "SELECT pid, stopped_at, until_ts, host FROM (SELECT r.id, r.pid,"
    " r.stopped_at, %s AS host, " NEXT_RUN_START " AS until_ts"
    " FROM runs r WHERE r.unclean = 1%s) AS o"
    " WHERE (:since = 0 OR until_ts = 0 OR until_ts >= :since)"
    " AND (:until = 0 OR stopped_at <= :until)"
    " ORDER BY stopped_at, id";

static void outage_line(struct cli *c, struct cli_stmt *st)
{
	char since[64], until[64], line[512], host[256];

	snprintf(line, sizeof(line),
		 "ctxleakd (pid %lld)%s died after its commit of %s and no "
		 "daemon listened until %s: clients that ended then may have "
		 "lost records and drops uncounted, so counts may be "
		 "incomplete",
		 cli_stmt_int(st, 0), on_host(st, 3, host, sizeof(host)),
		 cli_time_rfc3339(cli_stmt_int(st, 1), since, 64),
		 cli_time_rfc3339(cli_stmt_int(st, 2), until, 64));
	cli_print_wrapped(c, CLI_STYLE_YELLOW, 0, line);
}

static void outage_json(struct cli *c, struct cli_json *j, struct cli_stmt *st)
{
	cli_json_object(j);
	json_host(c, j, st, 3);
	cli_json_kcol(j, "daemon_pid", st, 0);
	cli_json_kts(j, "since", cli_stmt_int(st, 1));
	cli_json_kts(j, "until", cli_stmt_int(st, 2));
	cli_json_end(j);
}

/* Version 2 processes that ended without CLOSE, among the selected. */
static const char vanished_sql[] =
    "SELECT p.pid, p.app, p.disconnected_at, %s FROM processes p"
    " WHERE p.vanished = 1%s"
    " AND (:since = 0 OR p.disconnected_at >= :since)"
    " AND (:until = 0 OR p.connected_at <= :until) ORDER BY p.id";

static void vanished_line(struct cli *c, struct cli_stmt *st)
{
	char at[64], line[512], host[256];

	snprintf(line, sizeof(line),
		 "pid %lld (%s)%s ended without closing the library (killed?) "
		 "at %s: records and drops it still held are lost uncounted, "
		 "so counts may be incomplete",
		 cli_stmt_int(st, 0),
		 cli_db_str(st, 1) ? (const char *)cli_db_str(st, 1) : "?",
		 on_host(st, 3, host, sizeof(host)),
		 cli_time_rfc3339(cli_stmt_int(st, 2), at, 64));
	cli_print_wrapped(c, CLI_STYLE_YELLOW, 0, line);
}

static void vanished_json(struct cli *c, struct cli_json *j,
			  struct cli_stmt *st)
{
	cli_json_object(j);
	json_host(c, j, st, 3);
	cli_json_kcol(j, "pid", st, 0);
	cli_json_kcol(j, "app", st, 1);
	cli_json_kbool(j, "vanished", 1);
	cli_json_kts(j, "until", cli_stmt_int(st, 2));
	cli_json_end(j);
}

/* Prints them into the open "incomplete" list; adds them to *n. */
static int print_vanished(struct cli *c, struct cli_json *j, const char *where,
			  int *n)
{
	char sql[sizeof(vanished_sql) + 512];
	struct cli_stmt *st;
	int rc;

	snprintf(sql, sizeof(sql), vanished_sql, cli_db_host_sql(c), where);
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	for (; (rc = cli_stmt_step(st)) == CLI_STEP_ROW; ++*n) {
		if (j)
			vanished_json(c, j, st);
		else
			vanished_line(c, st);
	}
	cli_stmt_finalize(st);
	return cli_db_done(c, rc);
}

/* Prints the outages into the open "incomplete" list; adds them to *n. */
static int print_outages(struct cli *c, struct cli_json *j, int *n)
{
	char sql[sizeof(outages_sql) + 512];
	struct cli_stmt *st;
	int rc;

	/* runs have no process: their host is their source's. */
	snprintf(sql, sizeof(sql), outages_sql,
		 cli_db_is_pg(c)
		     ? "(SELECT hh.name FROM sources hs JOIN hosts hh"
		       " ON hh.id = hs.host_id WHERE hs.id ="
		       " r.source_id)"
		     : "NULL",
		 c->filter.host ? CLI_HOST_SOURCES("r.source_id") : "");
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	for (; (rc = cli_stmt_step(st)) == CLI_STEP_ROW; ++*n) {
		if (j)
			outage_json(c, j, st);
		else
			outage_line(c, st);
	}
	cli_stmt_finalize(st);
	return cli_db_done(c, rc);
}

/* Prints the windows; *n is how many there were. */
static int print_drops(struct cli *c, struct cli_json *j, const char *where,
		       int *n)
{
	char sql[sizeof(drops_sql) + 512];
	struct cli_stmt *st;
	int rc;

	snprintf(sql, sizeof(sql), drops_sql, cli_db_host_sql(c), where);
	if ((st = cli_db_prepare(c, sql)) == NULL)
		return CLI_EXIT_DB;
	cli_db_bind_filter(st, &c->filter);
	if (j) {
		cli_json_key(j, "incomplete");
		cli_json_array(j);
	}
	for (*n = 0; (rc = cli_stmt_step(st)) == CLI_STEP_ROW; ++*n) {
		if (j)
			drop_json(c, j, st);
		else
			drop_line(c, st);
	}
	cli_stmt_finalize(st);
	rc = cli_db_done(c, rc);
	if (rc == 0)
		rc = print_outages(c, j, n);
	if (rc == 0)
		rc = print_vanished(c, j, where, n);
	if (j)
		cli_json_end(j);
	return rc;
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
	if (rc == 0)
		rc = print_drops(c, j, pwhere, &ndrops);
	if (rc == 0 && !j && ndrops == 0)
		fputs("nothing dropped, no daemon died, no process vanished: "
		      "the counts are complete\n",
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
