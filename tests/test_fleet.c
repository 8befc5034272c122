/*
 * test_fleet.c: `ctxleak forward` into a real PostgreSQL (tests/pg.h),
 * from real daemons standing for hosts, fed by the real example workers.
 *
 * The central rows of each source are compared with the local rows they
 * come from, every column, ids translated back (docs/CENTRAL.md): every
 * process, site, run, finding, request_stats, what_if and drops row, and
 * the requests (with their tags) that findings name.  So "the union of
 * the hosts' findings, exactly" is: two sources, each equal to its file.
 *
 * - Two hosts forwarded once each: exact; forwarded again, and again with
 *   the cursors deleted (every row sent again): no central row is written
 *   again (the data tables' xmin do not move).
 * - A forwarder that runs while the workers run (rows that change after
 *   they were forwarded, request rows that come after their findings):
 *   exact once it has caught up.
 * - PostgreSQL stopped (immediately, as a crash) in the middle of a
 *   forwarder's backlog and started again: exact, and the forwarder said
 *   once that the server was away and once that it was back.
 * - A forwarder killed with SIGKILL in the middle of its backlog, then
 *   run again: exact.
 * - Findings forwarded while the requests they name are open (no row
 *   yet): pending, then forwarded once the requests retire.
 * - A process finalised without CLOSE (vanished), forwarded, whose client
 *   reconnects (the daemon reopens its row: running again, not vanished)
 *   and ends with CLOSE, forwarded while it runs and after: the central
 *   row follows the local one each time.
 * - A central schema newer than this ctxleak, and a server that is not
 *   there: --once fails with a message.  A database file made anew is a
 *   new source.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "check_main.h"
#include "cli_run.h"
#include "harness.h"
#include "harness_check.h"
#include "proto.h"
#include "pg.h"
#include "raw.h"

#define SPAN 1000000000000ll
/* Seconds a continuous forwarder gets to catch up. */
#define CATCH_UP_SEC 60

/* ------------------------------------------------------------ workload */

static const char *examples_dir(void)
{
	const char *dir = getenv("CTXLEAK_EXAMPLES");

	return dir && *dir ? dir : "build/examples";
}

/* Starts an example worker against d: its pid. */
static pid_t spawn_example(const struct harness_daemon *d, const char *example,
			   const char *backend, const char *flag, int requests)
{
	char path[512], count[16];
	pid_t pid = fork();
	int null;

	ck_assert_int_ge(pid, 0);
	if (pid != 0)
		return pid;
	null = open("/dev/null", O_WRONLY);
	if (null >= 0)
		dup2(null, STDOUT_FILENO);
	snprintf(path, sizeof path, "%s/%s", examples_dir(), example);
	snprintf(count, sizeof count, "%d", requests);
	setenv("CTXLEAK_SOCKET", d->socket, 1);
	setenv("CTXLEAK_BACKEND", backend, 1);
	setenv("CTXLEAK_APP", example, 1);
	if (flag)
		execl(path, example, flag, count, (char *)NULL);
	else
		execl(path, example, count, (char *)NULL);
	_exit(127);
}

static void wait_example(pid_t pid)
{
	ck_assert_int_eq(harness_client_wait(pid), 0);
}

static void run_example(const struct harness_daemon *d, const char *example,
			const char *backend, const char *flag, int requests)
{
	wait_example(spawn_example(d, example, backend, flag, requests));
}

/* A raw client that reports a drop window, then closes: a drops row. */
static void report_drop(const struct harness_daemon *d, uint64_t instance)
{
	struct proto_record dropped = {.type = PROTO_DROPPED,
				       .ts = 2000000000,
				       .since = 1000000000,
				       .count = 120};
	struct proto_record close_rec = {.type = PROTO_CLOSE, .ts = 2000000001};
	unsigned char buf[128];
	size_t n = proto_encode_record(buf, sizeof buf, &dropped);
	int fd = harness_connect(d);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(harness_send_hello(fd, instance, (uint32_t)getpid()),
			 0);
	n += proto_encode_record(buf + n, sizeof buf - n, &close_rec);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	close(fd);
}

/* ------------------------------------------------------------ forwarder */

static struct run forward_once(const struct harness_daemon *d,
			       const struct pg_server *pg, const char *host)
{
	return run("--db", d->db, "forward", "--to", pg->url, "--once",
		   "--host", host);
}

static void forward_once_ok(const struct harness_daemon *d,
			    const struct pg_server *pg, const char *host)
{
	struct run r = forward_once(d, pg, host);

	ck_assert_msg(r.status == 0, "forward --once: %d: %s", r.status, r.err);
	run_free(&r);
}

/* A continuous forwarder polling every second, its stderr in log. */
static pid_t spawn_forwarder(const struct harness_daemon *d,
			     const struct pg_server *pg, const char *host,
			     const char *log)
{
	pid_t pid = fork();
	int fd;

	ck_assert_int_ge(pid, 0);
	if (pid != 0)
		return pid;
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
	}
	execl(harness_cli_path(), "ctxleak", "--db", d->db, "forward", "--to",
	      pg->url, "--host", host, "--interval", "1", (char *)NULL);
	_exit(127);
}

static void stop_forwarder(pid_t pid)
{
	int st;

	kill(pid, SIGTERM);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
}

/* ------------------------------------------------------------ central */

static PGconn *central(const struct pg_server *pg)
{
	PGconn *c = PQconnectdb(pg->url);

	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	return c;
}

/* The one value a central query gives, as an integer, or fail. */
static long long central_int(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	long long v;

	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1,
		      "%s: %s", sql, PQerrorMessage(c));
	v = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static void central_exec(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);

	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK ||
			  PQresultStatus(r) == PGRES_TUPLES_OK,
		      "%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
}

/* The source id of host's forwarded file (the newest when several). */
static long long source_of(PGconn *c, const char *host)
{
	char sql[256];

	snprintf(sql, sizeof sql,
		 "SELECT coalesce(max(s.id), 0) FROM sources s JOIN hosts h ON "
		 "h.id = s.host_id WHERE h.name = '%s'",
		 host);
	return central_int(c, sql);
}

/* ------------------------------------------------------------ comparing */

/* A compared table: its columns, and which local rows are forwarded. */
struct compared {
	const char *name;
	const char *cols;
	const char *local_where; /* "" : every row */
};

#define NAMED_REQUESTS                                                         \
	"(SELECT victim_request_id FROM leaks UNION SELECT "                   \
	"source_request_id FROM leaks)"

static const struct compared compared[] = {
    {"processes",
     "id, instance, pid, hello_pid, uid, gid, app, backend, backend_reason, "
     "client, connected_at, disconnected_at, connections, records, dropped, "
     "unknown_skipped, error, model, recommend, model_evidence, "
     "committed_watermark, committed_position, what_if, vanished",
     ""},
    {"sites", "id, process_id, file, line, func, used, released_at", ""},
    {"runs", "id, pid, started_at, last_commit_at, stopped_at, unclean", ""},
    {"leaks",
     "id, process_id, class, ts, tid, victim_request_id, victim_ctx, "
     "victim_name, source_request_id, source_ctx, source_name, record, ctx, "
     "cause, other, name, value, site_id, detail",
     ""},
    {"requests",
     "id, process_id, ctx, name, site_id, begin_ts, end_ts, begin_tid, "
     "threads, scopes, records, leaks, lost, stale, bleed, overlap, misnest, "
     "unclosed, source_of, tags_dropped, records_not_kept, late",
     "WHERE id IN " NAMED_REQUESTS},
    {"tags",
     "request_id, key, value, ts, tid, site_id, setter_request_id, "
     "setter_ctx",
     "WHERE request_id IN " NAMED_REQUESTS},
    {"drops", "process_id, since_ts, until_ts, count", ""},
    {"request_stats",
     "process_id, minute, name, site_id, requests, records, scopes, tags, "
     "handed_off, duration_sum, duration_max, late",
     ""},
    {"what_if", "process_id, backend, class, site_id, count", ""},
};
#define NCOMPARED (sizeof compared / sizeof compared[0])

static int is_id(const char *col)
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
		if (strcmp(col, ids[i]) == 0)
			return 1;
	return 0;
}

/* Rows as lines "v|v|...", NULL as \N, ids local. */
struct lines {
	char **v;
	size_t n, cap;
};

static void lines_add(struct lines *l, const char *s)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 1024;
		l->v = realloc(l->v, l->cap * sizeof *l->v);
		ck_assert_ptr_nonnull(l->v);
	}
	l->v[l->n] = strdup(s);
	ck_assert_ptr_nonnull(l->v[l->n]);
	l->n++;
}

static void lines_free(struct lines *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
}

static int by_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One value onto a line being built. */
static void append_value(char *line, size_t len, int first, const char *v)
{
	size_t n = strlen(line);

	snprintf(line + n, len - n, "%s%s", first ? "" : "|", v ? v : "\\N");
}

static void local_lines(const char *db, const struct compared *t,
			struct lines *out)
{
	char sql[2048], line[65536];
	sqlite3 *s;
	sqlite3_stmt *st;

	ck_assert_int_eq(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL),
			 SQLITE_OK);
	snprintf(sql, sizeof sql, "SELECT %s FROM %s %s", t->cols, t->name,
		 t->local_where);
	ck_assert_msg(sqlite3_prepare_v2(s, sql, -1, &st, NULL) == SQLITE_OK,
		      "%s: %s", sql, sqlite3_errmsg(s));
	while (sqlite3_step(st) == SQLITE_ROW) {
		line[0] = '\0';
		for (int i = 0; i < sqlite3_column_count(st); i++)
			append_value(line, sizeof line, i == 0,
				     (const char *)sqlite3_column_text(st, i));
		lines_add(out, line);
	}
	sqlite3_finalize(st);
	sqlite3_close(s);
}

static void central_lines(PGconn *c, long long source, const struct compared *t,
			  struct lines *out)
{
	char sql[2048], line[65536], num[24];
	PGresult *r;

	snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE source_id = %lld",
		 t->cols, t->name, source);
	r = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
		      PQerrorMessage(c));
	for (int i = 0; i < PQntuples(r); i++) {
		line[0] = '\0';
		for (int j = 0; j < PQnfields(r); j++) {
			const char *v =
			    PQgetisnull(r, i, j) ? NULL : PQgetvalue(r, i, j);

			if (v && is_id(PQfname(r, j)) && atoll(v) > 0) {
				long long id = atoll(v);

				ck_assert_msg(id / SPAN == source,
					      "%s.%s %lld is not of source "
					      "%lld",
					      t->name, PQfname(r, j), id,
					      source);
				snprintf(num, sizeof num, "%lld", id % SPAN);
				v = num;
			}
			append_value(line, sizeof line, j == 0, v);
		}
		lines_add(out, line);
	}
	PQclear(r);
}

/* Every forwarded table of source equals the rows of the file db: the
 * same rows, every column, no more and no fewer. */
static void assert_exact(PGconn *c, long long source, const char *db)
{
	ck_assert_msg(source > 0, "no source forwarded for %s", db);
	for (size_t i = 0; i < NCOMPARED; i++) {
		struct lines local = {0}, cen = {0};

		local_lines(db, &compared[i], &local);
		central_lines(c, source, &compared[i], &cen);
		if (local.n)
			qsort(local.v, local.n, sizeof *local.v, by_str);
		if (cen.n)
			qsort(cen.v, cen.n, sizeof *cen.v, by_str);
		ck_assert_msg(local.n == cen.n,
			      "%s: %zu rows locally, %zu centrally (source "
			      "%lld)",
			      compared[i].name, local.n, cen.n, source);
		for (size_t j = 0; j < local.n; j++)
			ck_assert_msg(strcmp(local.v[j], cen.v[j]) == 0,
				      "%s: row differs:\n local   %s\n "
				      "central %s",
				      compared[i].name, local.v[j], cen.v[j]);
		lines_free(&local);
		lines_free(&cen);
	}
}

/* How many rows of table a local file has. */
static long long local_count(const struct harness_daemon *d, const char *tbl)
{
	char sql[128];

	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
	return query_int(d, "%s", sql);
}

/* Whether a continuous forwarder has caught up with the file of a
 * stopped daemon: every finding central, every process final centrally,
 * nothing pending. */
static int caught_up(PGconn *c, long long source, long long leaks)
{
	char sql[512];

	if (source == 0)
		return 0;
	snprintf(sql, sizeof sql,
		 "SELECT ((SELECT count(*) FROM leaks WHERE source_id = %lld) "
		 "= %lld AND NOT EXISTS (SELECT 1 FROM processes WHERE "
		 "source_id = %lld AND committed_position IS NULL) AND NOT "
		 "EXISTS (SELECT 1 FROM pending_requests WHERE source_id = "
		 "%lld))::int",
		 source, leaks, source, source);
	return central_int(c, sql) == 1;
}

/* Polls until the forwarder fw (its stderr in log) has caught up. */
static void wait_caught_up(PGconn *c, const char *host,
			   const struct harness_daemon *d, pid_t fw,
			   const char *log)
{
	long long leaks = local_count(d, "leaks");

	for (int i = 0; i < CATCH_UP_SEC * 20; i++) {
		PGresult *r = PQexec(c, "SELECT 1");
		int ok = PQresultStatus(r) == PGRES_TUPLES_OK, st;

		PQclear(r);
		ck_assert_msg(ok, "central: %s", PQerrorMessage(c));
		ck_assert_msg(waitpid(fw, &st, WNOHANG) == 0,
			      "the forwarder exited (status 0x%x): %s", st,
			      read_file_at(log));
		if (caught_up(c, source_of(c, host), leaks))
			return;
		harness_sleep_ms(50);
	}
	ck_abort_msg("the forwarder did not catch up in %d s", CATCH_UP_SEC);
}

/* The data tables' row count and newest row version: an upsert that
 * wrote a row again would move it. */
static char *fingerprint(PGconn *c)
{
	static const char *const t[] = {
	    "processes", "sites",	  "runs",    "leaks", "requests",
	    "tags",	 "request_stats", "what_if", "drops", NULL};
	char *out = calloc(1, 4096), sql[256];

	ck_assert_ptr_nonnull(out);
	for (int i = 0; t[i]; i++) {
		snprintf(sql, sizeof sql,
			 "SELECT count(*) * 1000000000000 + coalesce(max("
			 "xmin::text::bigint), 0) FROM %s",
			 t[i]);
		snprintf(out + strlen(out), 4096 - strlen(out), "%s %lld\n",
			 t[i], central_int(c, sql));
	}
	return out;
}

/* A daemon with a backlog of findings (about 5 per request of the naive
 * coroutine scheduler), stopped. */
static void backlog(struct harness_daemon *d, int requests)
{
	START(d, "--log-level", "warn");
	run_example(d, "coroutines", "custom", NULL, requests);
	ck_assert_int_eq(harness_stop(d), 0);
}

/* Starts PostgreSQL, or fails with why. */
static void start_pg(struct pg_server *pg)
{
	ck_assert_msg(pg_start(pg) == 0, "%s", pg_error());
}

/* ------------------------------------------------------------ tests */

START_TEST(test_two_hosts)
{
	struct harness_daemon a, b;
	struct pg_server pg;
	char *before, *after;
	PGconn *c;

	start_pg(&pg);
	START(&a, "--log-level", "warn");
	START(&b, "--log-level", "warn");
	run_example(&a, "coroutines", "custom", NULL, 600);
	run_example(&a, "auth_pool", "observe", NULL, 600);
	report_drop(&a, 42);
	run_example(&b, "thread_pool", "thread", NULL, 400);
	run_example(&b, "auth_pool", "observe", NULL, 300);
	ck_assert_int_eq(harness_wait_int(&a, "SELECT count(*) FROM drops", 1),
			 0);
	ck_assert_int_eq(harness_stop(&a), 0);
	ck_assert_int_eq(harness_stop(&b), 0);
	ck_assert_int_gt(local_count(&a, "leaks"), 1000);
	ck_assert_int_gt(local_count(&b, "leaks"), 100);
	ck_assert_int_gt(local_count(&a, "what_if"), 0);
	ck_assert_int_gt(local_count(&b, "request_stats"), 0);

	forward_once_ok(&a, &pg, "a");
	forward_once_ok(&b, &pg, "b");
	c = central(&pg);
	ck_assert_int_eq(central_int(c, "SELECT count(*) FROM sources"), 2);
	ck_assert_int_eq(central_int(c,
				     "SELECT count(*) FROM hosts WHERE name IN "
				     "('a', 'b')"),
			 2);
	assert_exact(c, source_of(c, "a"), a.db);
	assert_exact(c, source_of(c, "b"), b.db);
	ck_assert_int_eq(central_int(c, "SELECT count(*) FROM leaks"),
			 local_count(&a, "leaks") + local_count(&b, "leaks"));
	ck_assert_int_eq(central_int(c, "SELECT count(*) FROM records"), 0);
	ck_assert_int_eq(
	    central_int(c, "SELECT count(*) FROM pending_requests"), 0);

	/* Again: nothing is written again. */
	before = fingerprint(c);
	forward_once_ok(&a, &pg, "a");
	forward_once_ok(&b, &pg, "b");
	after = fingerprint(c);
	ck_assert_str_eq(before, after);
	free(after);
	/* Cursors lost: every row is sent again, and still none is
	 * written twice or again. */
	central_exec(c, "DELETE FROM cursors");
	forward_once_ok(&a, &pg, "a");
	after = fingerprint(c);
	ck_assert_str_eq(before, after);
	free(before);
	free(after);
	assert_exact(c, source_of(c, "a"), a.db);
	PQfinish(c);
	harness_cleanup(&a);
	harness_cleanup(&b);
	pg_cleanup(&pg);
}
END_TEST

/* Forwarding while the workers run: processes that end later, request
 * rows written after the findings that name them, counts that grow. */
START_TEST(test_live)
{
	struct harness_daemon d;
	struct pg_server pg;
	char log[160];
	pid_t fw, w1, w2;
	PGconn *c;

	start_pg(&pg);
	START(&d, "--log-level", "warn");
	snprintf(log, sizeof log, "%s/forward.log", d.dir);
	fw = spawn_forwarder(&d, &pg, "live", log);
	w1 = spawn_example(&d, "coroutines", "custom", NULL, 3000);
	w2 = spawn_example(&d, "thread_pool", "thread", NULL, 2000);
	wait_example(w1);
	wait_example(w2);
	run_example(&d, "auth_pool", "observe", NULL, 1000);
	ck_assert_int_eq(harness_stop(&d), 0);
	c = central(&pg);
	wait_caught_up(c, "live", &d, fw, log);
	stop_forwarder(fw);
	assert_exact(c, source_of(c, "live"), d.db);
	PQfinish(c);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

/* Central findings of host so far (0 before its source exists). */
static long long central_leaks(PGconn *c, const char *host)
{
	char sql[256];

	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM leaks WHERE source_id = %lld",
		 source_of(c, host));
	return central_int(c, sql);
}

/* Polls until some but not all of total findings are central; 1 when it
 * saw that, 0 when the forwarder was faster than the polls. */
static int wait_mid_forward(const struct pg_server *pg, const char *host,
			    long long total)
{
	for (int i = 0; i < CATCH_UP_SEC * 500; i++) {
		PGconn *c = PQconnectdb(pg->url);
		long long n = -1;

		if (PQstatus(c) == CONNECTION_OK)
			n = central_int(c, "SELECT (to_regclass('leaks') IS "
					   "NULL)::int")
				? 0
				: central_leaks(c, host);
		PQfinish(c);
		if (n > 0)
			return n < total;
		harness_sleep_ms(2);
	}
	ck_abort_msg("nothing was forwarded in %d s", CATCH_UP_SEC);
	return 0;
}

static int count_in(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

START_TEST(test_server_away)
{
	struct harness_daemon d;
	struct pg_server pg;
	char log[160], *text;
	long long total;
	pid_t fw;
	PGconn *c;
	int mid;

	backlog(&d, 40000);
	total = local_count(&d, "leaks");
	ck_assert_int_gt(total, 20000);
	start_pg(&pg);
	snprintf(log, sizeof log, "%s/forward.log", d.dir);
	fw = spawn_forwarder(&d, &pg, "away", log);
	mid = wait_mid_forward(&pg, "away", total);
	ck_assert_msg(pg_stop(&pg, PG_STOP_IMMEDIATE) == 0, "%s", pg_error());
	/* The forwarder notices and says so, once. */
	for (int i = 0; i < CATCH_UP_SEC * 10; i++) {
		text = read_file_at(log);
		if (count_in(text, "database is away") != 0) {
			free(text);
			break;
		}
		free(text);
		harness_sleep_ms(100);
	}
	harness_sleep_ms(1500);
	ck_assert_msg(pg_restart(&pg) == 0, "%s", pg_error());
	c = central(&pg);
	wait_caught_up(c, "away", &d, fw, log);
	stop_forwarder(fw);
	assert_exact(c, source_of(c, "away"), d.db);
	text = read_file_at(log);
	ck_assert_msg(count_in(text, "database is away") == 1,
		      "not one 'away' line: %s", text);
	ck_assert_msg(count_in(text, "database is back") == 1,
		      "not one 'back' line: %s", text);
	ck_assert_msg(strstr(text, "WARNING") == NULL,
		      "the server's notices reached the log: %s", text);
	free(text);
	if (!mid)
		fprintf(stderr, "test_server_away: the backlog was forwarded "
				"before the server stopped\n");
	PQfinish(c);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

START_TEST(test_killed)
{
	struct harness_daemon d;
	struct pg_server pg;
	char log[160];
	long long total;
	pid_t fw;
	PGconn *c;
	int st;

	backlog(&d, 40000);
	total = local_count(&d, "leaks");
	start_pg(&pg);
	snprintf(log, sizeof log, "%s/forward.log", d.dir);
	fw = spawn_forwarder(&d, &pg, "killed", log);
	if (!wait_mid_forward(&pg, "killed", total))
		fprintf(stderr, "test_killed: the backlog was forwarded "
				"before the kill\n");
	kill(fw, SIGKILL);
	ck_assert_int_eq(waitpid(fw, &st, 0), fw);
	forward_once_ok(&d, &pg, "killed");
	c = central(&pg);
	assert_exact(c, source_of(c, "killed"), d.db);
	PQfinish(c);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

START_TEST(test_refusals)
{
	struct harness_daemon d;
	struct pg_server pg;
	struct run r;
	PGconn *c;

	start_pg(&pg);
	START(&d, "--log-level", "warn");
	run_example(&d, "auth_pool", "observe", NULL, 100);
	ck_assert_int_eq(harness_stop(&d), 0);
	forward_once_ok(&d, &pg, "h");

	/* A newer central schema. */
	c = central(&pg);
	central_exec(c, "UPDATE meta SET value = 99 WHERE key = "
			"'schema_version'");
	r = forward_once(&d, &pg, "h");
	ck_assert_int_eq(r.status, 3);
	ck_assert_msg(strstr(r.err, "version 99 is newer"), "%s", r.err);
	run_free(&r);
	central_exec(c, "UPDATE meta SET value = 1 WHERE key = "
			"'schema_version'");
	PQfinish(c);

	/* No server. */
	ck_assert_msg(pg_stop(&pg, PG_STOP_FAST) == 0, "%s", pg_error());
	r = forward_once(&d, &pg, "h");
	ck_assert_int_eq(r.status, 3);
	ck_assert_msg(strstr(r.err, "cannot connect"), "%s", r.err);
	run_free(&r);

	/* Not a database URL. */
	r = run("--db", d.db, "forward", "--to", "/tmp/x.db", "--once");
	ck_assert_int_eq(r.status, 2);
	run_free(&r);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

/* The daemon's file deleted and made anew: a second source of the host,
 * the first one's rows kept. */
START_TEST(test_new_file)
{
	const char *args[] = {"--log-level", "warn", NULL};
	struct harness_daemon d;
	struct pg_server pg;
	char path[256];
	long long first;
	PGconn *c;

	start_pg(&pg);
	START(&d, "--log-level", "warn");
	run_example(&d, "auth_pool", "observe", NULL, 200);
	ck_assert_int_eq(harness_stop(&d), 0);
	forward_once_ok(&d, &pg, "h");
	c = central(&pg);
	first = source_of(c, "h");
	assert_exact(c, first, d.db);
	ck_assert_int_eq(unlink(d.db), 0);
	snprintf(path, sizeof path, "%s-wal", d.db);
	unlink(path);
	snprintf(path, sizeof path, "%s-shm", d.db);
	unlink(path);
	harness_sleep_ms(20); /* a new started_at */
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_example(&d, "coroutines", "custom", NULL, 100);
	ck_assert_int_eq(harness_stop(&d), 0);
	forward_once_ok(&d, &pg, "h");
	ck_assert_int_eq(
	    central_int(c, "SELECT count(*) FROM sources s JOIN hosts h ON "
			   "h.id = s.host_id WHERE h.name = 'h'"),
	    2);
	ck_assert_int_gt(source_of(c, "h"), first);
	assert_exact(c, source_of(c, "h"), d.db);
	ck_assert_int_gt(
	    central_int(c, "SELECT count(*) FROM leaks WHERE source_id = 1"),
	    0);
	PQfinish(c);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

/* Two requests open on two threads under the process-global backend:
 * the first one's tag lands in the second (a finding that names both),
 * then both stay open until the parent closes the pipe. */
struct open_pair {
	int *pipefd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int step; /* 1: A begun; 2: B begun */
};

static void step_to(struct open_pair *p, int step)
{
	pthread_mutex_lock(&p->lock);
	p->step = step;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

static void wait_step(struct open_pair *p, int step)
{
	pthread_mutex_lock(&p->lock);
	while (p->step < step)
		pthread_cond_wait(&p->cond, &p->lock);
	pthread_mutex_unlock(&p->lock);
}

static void *second_request(void *arg)
{
	struct open_pair *p = arg;
	uint64_t b;
	char ch;

	wait_step(p, 1);
	b = ctxleak_begin("GET /b");
	step_to(p, 2);
	if (read(p->pipefd[0], &ch, 1) != 0)
		return (void *)1;
	ctxleak_end(b);
	return NULL;
}

static int open_pair(void *arg)
{
	struct open_pair p = {arg, PTHREAD_MUTEX_INITIALIZER,
			      PTHREAD_COND_INITIALIZER, 0};
	pthread_t t;
	void *rc;
	uint64_t a;

	close(p.pipefd[1]);
	if (pthread_create(&t, NULL, second_request, &p) != 0)
		return 1;
	a = ctxleak_begin("GET /a");
	step_to(&p, 1);
	wait_step(&p, 2);
	ctxleak_tag("user", "carol"); /* the global holds B now */
	ctxleak_flush();
	pthread_join(t, &rc);
	ctxleak_end(a);
	return rc != NULL;
}

/* Findings forwarded while the requests they name are still open (no
 * row yet): pending centrally, then forwarded once they retire. */
START_TEST(test_pending)
{
	struct harness_daemon d;
	struct pg_server pg;
	int pipefd[2];
	pid_t child;
	PGconn *c;

	ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
	start_pg(&pg);
	START(&d, "--log-level", "warn");
	child =
	    harness_client_spawn(&d, CTXLEAK_BACKEND_GLOBAL, open_pair, pipefd);
	ck_assert_int_gt(child, 0);
	close(pipefd[0]);
	ck_assert_int_eq(harness_wait_int(&d, "SELECT count(*) FROM leaks", 1),
			 0);
	ck_assert_int_eq(local_count(&d, "requests"), 0);
	forward_once_ok(&d, &pg, "p");
	c = central(&pg);
	ck_assert_int_eq(central_int(c, "SELECT count(*) FROM leaks"),
			 local_count(&d, "leaks"));
	ck_assert_int_eq(central_int(c, "SELECT count(*) FROM requests"), 0);
	ck_assert_int_ge(
	    central_int(c, "SELECT count(*) FROM pending_requests"), 1);
	close(pipefd[1]);
	ck_assert_int_eq(harness_client_wait(child), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_ge(local_count(&d, "requests"), 1);
	forward_once_ok(&d, &pg, "p");
	ck_assert_int_eq(
	    central_int(c, "SELECT count(*) FROM pending_requests"), 0);
	assert_exact(c, source_of(c, "p"), d.db);
	PQfinish(c);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

/* ------------------------------------------------------------ reopened */

/* The instance of the raw peer whose process is reopened. */
#define REOPENED 0x7a7b

/* A version 2 HELLO of REOPENED with seq (the records it has sent
 * before), its RECEIPT read; the connection. */
static int hello_reopened(const struct harness_daemon *d, uint64_t seq)
{
	struct proto_hello h = {.version = 2,
				.instance = REOPENED,
				.app = {"raw", 3},
				.has_seq = 1,
				.seq = seq};
	struct proto_receipt rc;
	unsigned char buf[256];
	size_t n = proto_encode_hello(buf, sizeof buf, &h);
	int fd = raw_connect(d);

	ck_assert_uint_gt(n, 0);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	ck_assert_msg(harness_read_receipt(fd, &rc) == 0, "%s",
		      harness_error());
	return fd;
}

/* Waits until the local row of REOPENED is as cond says. */
static void wait_reopened(const struct harness_daemon *d, const char *cond)
{
	char sql[256];

	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM processes WHERE instance = %d AND %s",
		 REOPENED, cond);
	ck_assert_msg(harness_wait_int(d, sql, 1) == 0, "%s: %s", cond,
		      harness_error());
}

/* A column of the central row of REOPENED. */
static long long central_reopened(PGconn *c, const char *col)
{
	char sql[160];

	snprintf(sql, sizeof sql,
		 "SELECT %s FROM processes WHERE instance = %d", col, REOPENED);
	return central_int(c, sql);
}

/*
 * A process ends without CLOSE (finalised, vanished) and is forwarded;
 * its client reconnects, the daemon reopens the row (connections 2,
 * disconnected_at NULL, vanished 0, committed_position NULL): forwarded,
 * the central row runs again; it ends with CLOSE: forwarded, the central
 * row is final, not vanished, with both connections' records.
 */
START_TEST(test_reopened)
{
	struct harness_daemon d;
	struct pg_server pg;
	struct proto_record wm = {.type = PROTO_WATERMARK, .ts = 1010};
	struct proto_record cl = {.type = PROTO_CLOSE, .ts = 2020};
	PGconn *c;
	int fd;

	start_pg(&pg);
	START(&d, "--keep", "all", "--linger", "0", "--log-level", "warn");
	fd = hello_reopened(&d, 0);
	raw_send_request(fd, 71, 1000);
	raw_send(fd, &wm);
	close(fd);
	wait_reopened(&d, "connections = 1 AND vanished = 1 AND "
			  "committed_position IS NOT NULL");
	forward_once_ok(&d, &pg, "r");
	c = central(&pg);
	ck_assert_int_eq(central_reopened(c, "vanished"), 1);
	assert_exact(c, source_of(c, "r"), d.db);

	fd = hello_reopened(&d, RAW_REQUEST_RECORDS);
	raw_send_request(fd, 72, 2000);
	wait_reopened(&d, "connections = 2 AND disconnected_at IS NULL AND "
			  "committed_position IS NULL");
	forward_once_ok(&d, &pg, "r");
	ck_assert_int_eq(central_reopened(c, "connections"), 2);
	ck_assert_int_eq(central_reopened(c, "(disconnected_at IS NULL)::int"),
			 1);
	raw_send(fd, &cl);
	close(fd);
	wait_reopened(&d, "connections = 2 AND vanished = 0 AND "
			  "committed_position IS NOT NULL");
	ck_assert_int_eq(harness_stop(&d), 0);
	forward_once_ok(&d, &pg, "r");
	ck_assert_int_eq(central_reopened(c, "vanished"), 0);
	ck_assert_int_eq(central_reopened(c, "connections"), 2);
	ck_assert_int_eq(central_reopened(c, "records"),
			 2 * RAW_REQUEST_RECORDS);
	assert_exact(c, source_of(c, "r"), d.db);
	PQfinish(c);
	harness_cleanup(&d);
	pg_cleanup(&pg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fleet");

	suite_add_tcase(s, check_tcase("forward", 240, test_two_hosts,
				       test_live, test_server_away, test_killed,
				       test_refusals, test_new_file,
				       test_pending, test_reopened, NULL));
	return check_main(s, NULL);
}
