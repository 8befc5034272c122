/*
 * test_cli_pg.c: the ctxleak CLI on a fleet's central PostgreSQL database
 * (docs/CENTRAL.md) says what it says on each host's own database.
 *
 * Two hosts, each a real ctxleakd with real clients (the auth pool and
 * event loop examples, and the worked example of docs/DESIGN.md under the
 * thread backend: known findings), each forwarded with the real `ctxleak
 * forward --once` to one real PostgreSQL (tests/pg.h).  Then every report
 * runs on a host's file and on the central database with --host: the
 * outputs must be the same once the central ids are mapped back to local
 * ones (source s: local id n is s * 10^12 + n) and the central HOST column,
 * "host" member and "on host" words are taken out.  The comparison is by
 * line, with runs of blanks as one (a wider id widens a column): order,
 * NULLs, counts and exit codes must all agree, so that a dialect
 * difference fails it.
 */
#include <check.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "cli_run.h"
#include "ctxleak.h"
#include "harness.h"
#include "pg.h"

#define REQUESTS "200" /* per example run */
#define ID_SPAN	 1000000000000ll

/* A host of the fleet: its daemon, its database, its central source. */
struct host {
	const char *name;
	struct harness_daemon d;
	long long source; /* sources.id of its database */
};

static struct pg_server pg;
/* The central database: in a collation that is not bytewise (ICU's
 * en-US puts "get" before "GET"), as a server's default often is, so that
 * an order that depends on it shows. */
static char fleet_url[512];
static struct host hosts[2] = {{.name = "fleet-a"}, {.name = "fleet-b"}};

/* ------------------------------------------------------------ fixture */

static const char *examples_dir(void)
{
	const char *dir = getenv("CTXLEAK_EXAMPLES");

	return dir && *dir ? dir : "build/examples";
}

/* One example worker against d under backend, as examples/demo.sh runs
 * it; its exit status. */
static int run_example(const struct harness_daemon *d, const char *example,
		       const char *backend, const char *app)
{
	char path[512];
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		snprintf(path, sizeof(path), "%s/%s", examples_dir(), example);
		setenv("CTXLEAK_SOCKET", d->socket, 1);
		setenv("CTXLEAK_BACKEND", backend, 1);
		setenv("CTXLEAK_APP", app, 1);
		if (freopen("/dev/null", "w", stdout) == NULL)
			_exit(126);
		execl(path, example, REQUESTS, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Three requests never ended: one unnamed and without a site, two named
 * with: NULL and names that differ in case tie in the reports' orders
 * (SQLite puts NULL first, PostgreSQL last unless told; SQLite compares
 * bytes, PostgreSQL by the database's collation unless told). */
static int unclosed_three(void *arg)
{
	(void)arg;
	ctxleak_resume(0);
	(ctxleak_begin)(NULL);
	ctxleak_suspend();
	ctxleak_resume(0);
	ctxleak_begin("GET /z");
	ctxleak_suspend();
	ctxleak_resume(0);
	ctxleak_begin("get /y");
	ctxleak_suspend();
	return 0;
}

static void fill_host(struct host *h, const char *example, const char *backend,
		      const char *app)
{
	ck_assert_msg(harness_start(&h->d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(run_example(&h->d, example, backend, app), 0);
	ck_assert_int_eq(harness_client(&h->d, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, NULL),
			 0);
	ck_assert_int_eq(
	    harness_client(&h->d, CTXLEAK_BACKEND_THREAD, unclosed_three, NULL),
	    0);
	ck_assert_int_eq(harness_stop(&h->d), 0);
	ck_assert_int_eq(harness_query_int(
			     &h->d, "SELECT count(*) FROM leaks WHERE"
				    " victim_name IS NULL AND site_id IS NULL"),
			 1);
	ck_assert_int_gt(harness_query_int(&h->d, "SELECT count(*) FROM leaks"),
			 7);
}

/* The central source id of host h's database. */
static long long source_of(const struct host *h)
{
	const char *params[] = {h->name};
	PGconn *conn = PQconnectdb(fleet_url);
	PGresult *r;
	long long id = -1;

	ck_assert_msg(PQstatus(conn) == CONNECTION_OK, "%s",
		      PQerrorMessage(conn));
	r = PQexecParams(conn,
			 "SELECT s.id FROM sources s JOIN hosts h ON h.id ="
			 " s.host_id WHERE h.name = $1",
			 1, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		id = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(conn);
	return id;
}

static void fleet_setup(void)
{
	PGconn *conn;
	PGresult *r;

	ck_assert_msg(pg_start(&pg) == 0, "%s", pg_error());
	conn = PQconnectdb(pg.url);
	ck_assert_msg(PQstatus(conn) == CONNECTION_OK, "%s",
		      PQerrorMessage(conn));
	r = PQexec(conn, "CREATE DATABASE fleet LOCALE_PROVIDER icu"
			 " ICU_LOCALE 'en-US' TEMPLATE template0");
	ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK, "%s",
		      PQerrorMessage(conn));
	PQclear(r);
	PQfinish(conn);
	snprintf(fleet_url, sizeof(fleet_url), "postgresql:///fleet?%s",
		 strchr(pg.url, '?') + 1);
	fill_host(&hosts[0], "auth_pool", "observe", "auth_pool/observe");
	fill_host(&hosts[1], "event_loop", "thread", "event_loop/thread");
	for (int i = 0; i < 2; i++) {
		struct run r =
		    run("--db", hosts[i].d.db, "forward", "--to", fleet_url,
			"--once", "--host", hosts[i].name);

		ck_assert_msg(r.status == 0, "forward %s: %s", hosts[i].name,
			      r.err);
		run_free(&r);
		hosts[i].source = source_of(&hosts[i]);
		ck_assert_int_gt(hosts[i].source, 0);
	}
}

static void fleet_teardown(void)
{
	for (int i = 0; i < 2; i++)
		harness_cleanup(&hosts[i].d);
	pg_cleanup(&pg);
}

/* ------------------------------------------------------------ normalising */

/* A growing string. */
struct buf {
	char *s;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->s = realloc(b->s, b->cap);
		ck_assert_ptr_nonnull(b->s);
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static int is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* The JSON value at p, skipped: its end. */
static const char *skip_json(const char *p)
{
	struct json j = {.p = p, .end = p + strlen(p)};

	ck_assert_int_eq(json_parse_value(&j), 0);
	return j.p;
}

/* Drops from a show --json line the members that differ by design: its
 * timeline (records stay on their host; the central database says where
 * they are instead). */
static void drop_member(char *s, const char *key)
{
	char *at = strstr(s, key), *end;

	if (at == NULL)
		return;
	/* The value starts after the key's colon. */
	end = (char *)skip_json(strchr(at + 1, '"') + 2);
	if (at[-1] == ',')
		at--;
	else if (*end == ',')
		end++;
	memmove(at, end, strlen(end) + 1);
}

/* Takes the first blank-separated word w out of line s. */
static void drop_word(char *s, const char *w)
{
	size_t n = strlen(w);

	for (char *p = s; (p = strstr(p, w)) != NULL; p += n) {
		if ((p == s || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) {
			memmove(p, p + n + (p[n] == ' '),
				strlen(p + n + (p[n] == ' ')) + 1);
			return;
		}
	}
}

/* The first line where a and b differ, both shown, in buf. */
static const char *first_difference(const char *a, const char *b, char *buf,
				    size_t len)
{
	int line = 1;
	size_t i = 0, start = 0;

	while (a[i] && a[i] == b[i]) {
		if (a[i] == '\n') {
			line++;
			start = i + 1;
		}
		i++;
	}
	/* From a little before the difference, to the end of the line. */
	start = i - start > 80 ? i - 80 : start;
	snprintf(buf, len, "line %d:\n  local:   %.400s\n  central: %.400s",
		 line, a + start, b + start);
	return buf;
}

/*
 * One line of output as comparable: every central id of source (a run of
 * exactly 13 digits from source * 10^12 on: no timestamp or ctx is that
 * short) as the local id, the host's words and column gone, blanks as one.
 */
static void normal_line(struct buf *out, const char *line, size_t n,
			const struct host *h)
{
	char host_member[96], on_host[96], *s = strndup(line, n);
	struct buf b = {0};
	size_t i = 0;

	ck_assert_ptr_nonnull(s);
	snprintf(host_member, sizeof(host_member), "\"host\":\"%s\",",
		 h ? h->name : "");
	snprintf(on_host, sizeof(on_host), " on host %s", h ? h->name : "");
	drop_member(s, "\"timeline\":");
	drop_member(s, "\"records\":{\"host\"");
	while (s[i]) {
		size_t k = i;

		if (h && !strncmp(s + i, host_member, strlen(host_member))) {
			i += strlen(host_member);
			continue;
		}
		if (h && !strncmp(s + i, on_host, strlen(on_host))) {
			i += strlen(on_host);
			continue;
		}
		if (s[i] == ' ' || s[i] == '\t') {
			while (s[i] == ' ' || s[i] == '\t')
				i++;
			put(&b, " ", 1);
			continue;
		}
		while (is_digit(s[k]))
			k++;
		if (k - i == 13 && (i == 0 || !is_digit(s[i - 1]))) {
			long long v = atoll(s + i);
			char local[24];

			if (h && v / ID_SPAN == h->source) {
				snprintf(local, sizeof(local), "%lld",
					 v % ID_SPAN);
				put(&b, local, strlen(local));
				i = k;
				continue;
			}
		}
		if (k > i) {
			put(&b, s + i, k - i);
			i = k;
			continue;
		}
		put(&b, s + i, 1);
		i++;
	}
	/* The HOST column: its header and the host's cell. */
	if (h && b.s) {
		drop_word(b.s, "HOST");
		drop_word(b.s, h->name);
	}
	if (b.s) {
		size_t len = strlen(b.s), lead = strspn(b.s, " ");

		while (len > lead && b.s[len - 1] == ' ')
			b.s[--len] = '\0';
		put(out, b.s + lead, len - lead);
	}
	put(out, "\n", 1);
	free(b.s);
	free(s);
}

/* Output as comparable (h: the host whose central ids to map, NULL for a
 * local output).  A text timeline (its lines up to the next blank one)
 * goes, as in drop_member. */
static char *normal(const char *text, const struct host *h)
{
	struct buf out = {0};
	int in_timeline = 0;

	put(&out, "", 0);
	for (const char *p = text; *p;) {
		size_t n = strcspn(p, "\n");

		if (in_timeline && n == 0)
			in_timeline = 0;
		if (n == 8 && !strncmp(p, "timeline", 8))
			in_timeline = 1;
		else if (!in_timeline)
			normal_line(&out, p, n, h);
		p += n + (p[n] == '\n');
	}
	return out.s;
}

/* ------------------------------------------------------------ comparing */

#define MAX_ARGS 16

/* Runs the CLI on host h's file with args, and on the central database
 * with --host h and central_args (NULL: args, with ids mapped), and asserts
 * the same output and exit code; returns the local exit code. */
static int same_vargs(const struct host *h, char **local_args,
		      char **central_args)
{
	char *largv[MAX_ARGS + 8] = {"ctxleak", "--wide", "--color=never",
				     "--db", (char *)h->d.db};
	char *cargv[MAX_ARGS + 8] = {"ctxleak", "--wide", "--color=never",
				     "--db", fleet_url};
	int nl = 5, nc = 5, code;
	struct run l, c;
	char *ln, *cn, diff[2048];

	for (int i = 0; local_args[i]; i++)
		largv[nl++] = local_args[i];
	for (int i = 0; central_args[i]; i++)
		cargv[nc++] = central_args[i];
	cargv[nc++] = "--host";
	cargv[nc++] = (char *)h->name;
	l = run_argv(NULL, largv, 0);
	c = run_argv(NULL, cargv, 0);
	ln = normal(l.out, NULL);
	cn = normal(c.out, h);
	ck_assert_msg(l.status == c.status,
		      "%s %s: exit %d locally, %d centrally (%s)", h->name,
		      local_args[0], l.status, c.status, c.err);
	ck_assert_msg(strcmp(ln, cn) == 0,
		      "%s %s %s: local and central differ, %s", h->name,
		      local_args[0], local_args[1] ? local_args[1] : "",
		      first_difference(ln, cn, diff, sizeof(diff)));
	ck_assert_msg(strlen(ln) > 0 || l.status != 0, "%s: no output",
		      local_args[0]);
	code = l.status;
	free(ln);
	free(cn);
	run_free(&l);
	run_free(&c);
	return code;
}

/* same(h, "leaks", "--json", NULL): the same arguments on both. */
static int same_env(const struct host *h, ...)
{
	char *args[MAX_ARGS + 1];
	va_list ap;
	int n = 0;

	va_start(ap, h);
	while (n < MAX_ARGS && (args[n] = va_arg(ap, char *)) != NULL)
		n++;
	va_end(ap);
	args[n] = NULL;
	return same_vargs(h, args, args);
}
#define same(h, ...) same_env(h, __VA_ARGS__, NULL)

START_TEST(test_reports_equal)
{
	for (int i = 0; i < 2; i++) {
		const struct host *h = &hosts[i];

		ck_assert_int_eq(same(h, "leaks", "--limit", "0"), 0);
		ck_assert_int_eq(same(h, "leaks"), 0);
		ck_assert_int_eq(same(h, "leaks", "--json"), 0);
		ck_assert_int_eq(same(h, "summary"), 0);
		ck_assert_int_eq(same(h, "summary", "--json"), 0);
		ck_assert_int_eq(same(h, "processes"), 0);
		ck_assert_int_eq(same(h, "processes", "--json"), 0);
		ck_assert_int_eq(same(h, "sites"), 0);
		ck_assert_int_eq(same(h, "sites", "--json"), 0);
	}
}
END_TEST

START_TEST(test_filters_equal)
{
	for (int i = 0; i < 2; i++) {
		const struct host *h = &hosts[i];
		char pid[32];

		snprintf(pid, sizeof(pid), "%lld",
			 (long long)harness_query_int(
			     &h->d, "SELECT pid FROM processes ORDER BY id"
				    " LIMIT 1"));
		ck_assert_int_eq(same(h, "leaks", "--class", "bleed"), 0);
		ck_assert_int_eq(
		    same(h, "leaks", "--class", "lost,stale", "--json"), 0);
		ck_assert_int_eq(same(h, "leaks", "--app", "harness"), 0);
		ck_assert_int_eq(same(h, "leaks", "--pid", pid, "--json"), 0);
		ck_assert_int_eq(same(h, "leaks", "--request", "GET /a"), 0);
		ck_assert_int_eq(
		    same(h, "leaks", "--site", "harness.c", "--json"), 0);
		ck_assert_int_eq(same(h, "leaks", "--site", "no_such.c"), 0);
		ck_assert_int_eq(same(h, "leaks", "--since", "1h", "--until",
				      "0s", "--limit", "3"),
				 0);
		ck_assert_int_eq(same(h, "summary", "--class", "misnest"), 0);
		ck_assert_int_eq(
		    same(h, "summary", "--app", "harness", "--json"), 0);
		ck_assert_int_eq(same(h, "processes", "--pid", pid), 0);
		ck_assert_int_eq(same(h, "sites", "--app", "harness"), 0);
		ck_assert_int_eq(same(h, "--fail-on", "any", "leaks"), 1);
		ck_assert_int_eq(same(h, "--fail-on", "unclosed", "summary",
				      "--class", "bleed"),
				 0);
		ck_assert_int_eq(
		    same(h, "--fail-on", "bleed", "leaks", "--app", "harness"),
		    1);
	}
}
END_TEST

START_TEST(test_show_equal)
{
	for (int i = 0; i < 2; i++) {
		const struct host *h = &hosts[i];
		long long victim = harness_query_int(
		    &h->d,
		    "SELECT victim_request_id FROM leaks WHERE"
		    " victim_request_id IS NOT NULL ORDER BY id LIMIT 1");
		char local[32], central[32];
		char *largs[] = {"show", local, NULL};
		char *cargs[] = {"show", central, NULL};
		char *ljson[] = {"show", local, "--json", NULL};
		char *cjson[] = {"show", central, "--json", NULL};

		snprintf(local, sizeof(local), "#%lld", victim);
		snprintf(central, sizeof(central), "#%lld",
			 h->source * ID_SPAN + victim);
		ck_assert_int_eq(same_vargs(h, largs, cargs), 0);
		ck_assert_int_eq(same_vargs(h, ljson, cjson), 0);
		ck_assert_int_eq(same(h, "show", "#999999"), 4);
	}
	/* By name: the newest of that name, on the central database that of
	 * the host that ran last. */
	ck_assert_int_eq(same(&hosts[1], "show", "GET /b"), 0);
	ck_assert_int_eq(same(&hosts[1], "show", "GET /b", "--json"), 0);
	ck_assert_int_eq(same(&hosts[1], "show", "no such request"), 4);
}
END_TEST

/* The central timeline names where the records are, once. */
START_TEST(test_show_points_at_host)
{
	char id[32], want[256];
	struct run r;

	snprintf(
	    id, sizeof(id), "#%lld",
	    hosts[0].source * ID_SPAN +
		(long long)harness_query_int(
		    &hosts[0].d, "SELECT min(victim_request_id) FROM leaks"));
	r = run("--db", fleet_url, "show", id);
	ck_assert_int_eq(r.status, 0);
	snprintf(want, sizeof(want), "records stay on their host: on %s,",
		 hosts[0].name);
	ck_assert_msg(strstr(r.out, want) != NULL, "%s", r.out);
	run_free(&r);
	r = run("--db", fleet_url, "show", id, "--html", "/dev/null");
	ck_assert_int_eq(r.status, 2);
	run_free(&r);
	r = run("--db", fleet_url, "export", "--format", "chrome-trace");
	ck_assert_int_eq(r.status, 2);
	run_free(&r);
}
END_TEST

/* Lines of out that are JSON objects. */
static int json_lines(const char *out)
{
	return out && *out ? count_lines(out) : 0;
}

/* Each host's part, exactly: both together are the whole. */
START_TEST(test_host_filter_parts)
{
	struct run all = run("--db", fleet_url, "leaks", "--json");
	struct run both = run("--db", fleet_url, "leaks", "--json", "--host",
			      "fleet-a,fleet-b");
	struct run twice = run("--db", fleet_url, "leaks", "--json", "--host",
			       "fleet-b", "--host", "fleet-a");
	struct run none =
	    run("--db", fleet_url, "leaks", "--json", "--host", "no-such-host");
	long long total = 0;

	for (int i = 0; i < 2; i++)
		total += harness_query_int(&hosts[i].d,
					   "SELECT count(*) FROM leaks");
	ck_assert_int_eq(all.status, 0);
	ck_assert_int_eq(json_lines(all.out), total);
	ck_assert_str_eq(both.out, all.out);
	ck_assert_str_eq(twice.out, all.out);
	ck_assert_int_eq(json_lines(none.out), 0);
	run_free(&all);
	run_free(&both);
	run_free(&twice);
	run_free(&none);
}
END_TEST

static void hosts_line(const struct json *j, void *arg)
{
	int *seen = arg;
	char buf[256], want[256];

	for (int i = 0; i < 2; i++) {
		const struct host *h = &hosts[i];

		snprintf(want, sizeof(want), "\"%s\"", h->name);
		if (strcmp(member(j, "host", buf, sizeof(buf)), want) != 0)
			continue;
		seen[i]++;
		snprintf(want, sizeof(want), "%lld",
			 (long long)harness_query_int(
			     &h->d, "SELECT count(*) FROM leaks"));
		assert_member(j, "findings", want);
		snprintf(want, sizeof(want), "%lld",
			 (long long)harness_query_int(
			     &h->d, "SELECT count(*) FROM processes"));
		assert_member(j, "processes", want);
		assert_member(j, "sources", "1");
		snprintf(want, sizeof(want), "%lld",
			 (long long)harness_query_int(
			     &h->d, "SELECT (SELECT count(*) FROM drops) +"
				    " (SELECT count(*) FROM runs WHERE"
				    " unclean = 1) + (SELECT count(*) FROM"
				    " processes WHERE vanished = 1)"));
		assert_member(j, "incomplete", want);
		snprintf(
		    want, sizeof(want),
		    "{\"bleed\":%lld,\"stale\":%lld,\"overlap\":%lld,"
		    "\"lost\":%lld,\"misnest\":%lld,\"unclosed\":%lld}",
		    (long long)harness_query_int(
			&h->d,
			"SELECT count(*) FROM leaks WHERE class = 'bleed'"),
		    (long long)harness_query_int(
			&h->d,
			"SELECT count(*) FROM leaks WHERE class = 'stale'"),
		    (long long)harness_query_int(
			&h->d, "SELECT count(*) FROM leaks WHERE class ="
			       " 'overlap'"),
		    (long long)harness_query_int(
			&h->d,
			"SELECT count(*) FROM leaks WHERE class = 'lost'"),
		    (long long)harness_query_int(
			&h->d, "SELECT count(*) FROM leaks WHERE class ="
			       " 'misnest'"),
		    (long long)harness_query_int(
			&h->d, "SELECT count(*) FROM leaks WHERE class ="
			       " 'unclosed'"));
		assert_member(j, "classes", want);
	}
}

START_TEST(test_hosts)
{
	struct run r = run("--db", fleet_url, "hosts", "--json");
	int seen[2] = {0, 0};

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_int_eq(each_json_line(r.out, hosts_line, seen), 2);
	ck_assert_int_eq(seen[0], 1);
	ck_assert_int_eq(seen[1], 1);
	run_free(&r);
	r = run("--db", fleet_url, "hosts", "--host", "fleet-b");
	ck_assert_int_eq(r.status, 0);
	ck_assert_int_eq(count_lines(r.out), 2);
	ck_assert_ptr_nonnull(strstr(r.out, "fleet-b"));
	ck_assert_ptr_null(strstr(r.out, "fleet-a"));
	run_free(&r);
	/* A host's own file has no hosts. */
	r = run("--db", hosts[0].d.db, "hosts");
	ck_assert_int_eq(r.status, 2);
	run_free(&r);
	r = run("--db", hosts[0].d.db, "leaks", "--host", "fleet-a");
	ck_assert_int_eq(r.status, 2);
	run_free(&r);
}
END_TEST

/* Another central schema version is refused as another local one is. */
START_TEST(test_schema_version)
{
	PGconn *conn = PQconnectdb(fleet_url);
	struct run r;

	ck_assert_int_eq(PQstatus(conn), CONNECTION_OK);
	PQclear(PQexec(conn, "UPDATE meta SET value = value + 1 WHERE key ="
			     " 'schema_version'"));
	r = run("--db", fleet_url, "leaks");
	PQclear(PQexec(conn, "UPDATE meta SET value = value - 1 WHERE key ="
			     " 'schema_version'"));
	PQfinish(conn);
	ck_assert_int_eq(r.status, 3);
	ck_assert_msg(strstr(r.err, "newer") != NULL, "%s", r.err);
	run_free(&r);
}
END_TEST

static Suite *fleet_suite(void)
{
	Suite *s = suite_create("cli_pg");
	TCase *tc = check_tcase(
	    "fleet", 300, test_reports_equal, test_filters_equal,
	    test_show_equal, test_show_points_at_host, test_host_filter_parts,
	    test_hosts, test_schema_version, NULL);

	tcase_add_unchecked_fixture(tc, fleet_setup, fleet_teardown);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(fleet_suite(), NULL);
}
