/*
 * test_cli.c: the ctxleak CLI, run as a program ($CTXLEAK_BIN) on databases
 * that the real ctxleakd wrote from known client scenarios, and on files
 * that are not such databases.
 *
 * The "report" suite builds one database for all its tests: the worked
 * example of docs/DESIGN.md under the thread backend (1 overlap, 2 bleed,
 * 2 misnest, 1 lost, 1 stale) and again under the task backend (none), with
 * one tag of control characters and invalid UTF-8.  Every --json line is
 * checked by a strict JSON parser below, every table by its width.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check_main.h"
#include "ctxleak.h"
#include "cli_run.h"
#include "harness.h"
#include "proto.h"

/* A tag value that no output may pass on raw: ESC, a C0 control, an
 * invalid byte, a truncated sequence and an overlong NUL. */
#define NASTY_VALUE "\x1b[31mred\x01\xff|\xe2\x82|\xc0\x80"

/* Wider than any table: it must be cut with an ellipsis. */
#define LONG_VALUE                                                             \
	"0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij"         \
	"0123456789abcdefghij0123456789abcdefghij"

START_TEST(test_json_validator)
{
	static const char *const bad[] = {
	    "{\"a\":1,}",	"{\"a\":01}",		"{\"a\":\"\x01\"}",
	    "{\"a\":\"\xff\"}", "{\"a\":\"\\x\"}",	"{a:1}",
	    "{\"a\":1}x",	"{\"a\":\"\xc0\x80\"}", "{\"a\":[1,]}",
	    "{\"a\":tru}",
	};
	struct json j;

	json_line(
	    &j, "{\"a\":[1,-2.5e3,{\"b\":null}],\"c\":\"\\u00e9\xc3\xa9\"}",
	    strlen(
		"{\"a\":[1,-2.5e3,{\"b\":null}],\"c\":\"\\u00e9\xc3\xa9\"}"));
	assert_member(&j, "c", "\"\\u00e9\xc3\xa9\"");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&j, 0, sizeof(j));
		j.p = bad[i];
		j.end = bad[i] + strlen(bad[i]);
		ck_assert_msg(json_parse_value(&j) < 0 || j.p != j.end,
			      "accepted %s", bad[i]);
	}
}
END_TEST

/* ------------------------------------------------------------ fixture */

static struct harness_daemon daemon_;
static const char *db;

/* The worked example, with tags on A that the CLI must escape and cut. */
static void nasty_tags(void)
{
	ctxleak_tag("note", NASTY_VALUE);
	ctxleak_tag("long", LONG_VALUE);
}

static struct harness_example nasty_example = {.tag_a = nasty_tags};

/* Every test of the report reads this database: when the daemon did not
 * produce the oracle's findings, say what it produced instead, once. */
static void assert_worked_example_db(const struct harness_daemon *d)
{
	static char msg[16384];
	char *found = harness_query_str(
	    d, "SELECT group_concat(class || ' ' || coalesce(detail, ''), "
	       "'; ') FROM leaks");
	char *log = harness_log(d);

	snprintf(msg, sizeof(msg), "the daemon found: %s\nits log:\n%s",
		 found ? found : "nothing", log ? log : "");
	free(found);
	free(log);
	ck_assert_msg(harness_query_int(d, "SELECT count(*) FROM leaks") == 7,
		      "%s", msg);
}

static void report_setup(void)
{
	const char *args[] = {"--keep", "all", NULL};

	ck_assert_msg(harness_start(&daemon_, args) == 0, "%s",
		      harness_error());
	/* Task first: `show NAME` takes the newest request of that name. */
	ck_assert_int_eq(harness_client(&daemon_, CTXLEAK_BACKEND_TASK,
					harness_worked_example, &nasty_example),
			 0);
	ck_assert_int_eq(harness_client(&daemon_, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, &nasty_example),
			 0);
	ck_assert_int_eq(harness_stop(&daemon_), 0);
	db = daemon_.db;
	assert_worked_example_db(&daemon_);
}

static void report_teardown(void)
{
	harness_cleanup(&daemon_);
}

/* run() with --db of the fixture first. */
#define cli(...) run("--db", db, __VA_ARGS__)

/* ------------------------------------------------------------ leaks */

struct leak_counts {
	int cls[6];
	char last_ts[64];
	int descending;
};

static const char *const classes[] = {"\"overlap\"", "\"bleed\"",
				      "\"misnest\"", "\"lost\"",
				      "\"stale\"",   "\"unclosed\""};

static int is_ctx(const char *v)
{
	return strcmp(v, "null") == 0 ||
	       (v[0] == '"' && strspn(v + 1, "0123456789") == strlen(v) - 2 &&
		strlen(v) > 2);
}

static void check_leak(const struct json *j, void *arg)
{
	static const char *const fields[] = {
	    "class",  "app",	     "pid",	    "tid",    "ts",   "victim",
	    "source", "victim_name", "source_name", "record", "site", "detail",
	};
	struct leak_counts *lc = arg;
	char buf[4096], key[16];
	const char *v;

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		ck_assert_msg(member(j, fields[i], buf, sizeof(buf)),
			      "no \"%s\"", fields[i]);
	ck_assert(is_ctx(member(j, "victim", buf, sizeof(buf))));
	ck_assert(is_ctx(member(j, "source", buf, sizeof(buf))));
	ck_assert(member(j, "name", key, sizeof(key)) ||
		  member(j, "key", key, sizeof(key)));
	v = member(j, "record", buf, sizeof(buf));
	ck_assert_msg(strstr("\"BEGIN\" \"END\" \"TAG\" \"EVENT\"", v), "%s",
		      v);
	/* "2026-11-25T15:27:01.123456789Z" */
	v = member(j, "ts", buf, sizeof(buf));
	ck_assert_int_eq(strlen(v), 32);
	ck_assert(v[11] == 'T' && v[20] == '.' && v[30] == 'Z');
	if (lc->last_ts[0] && strcmp(v, lc->last_ts) > 0)
		lc->descending = 0;
	snprintf(lc->last_ts, sizeof(lc->last_ts), "%s", v);
	v = member(j, "class", buf, sizeof(buf));
	for (int i = 0; i < 6; i++)
		if (strcmp(v, classes[i]) == 0)
			lc->cls[i]++;
}

START_TEST(test_leaks_json)
{
	struct leak_counts lc = {.descending = 1};
	struct run r = cli("leaks", "--json");

	ck_assert_int_eq(r.status, 0);
	ck_assert_int_eq(each_json_line(r.out, check_leak, &lc), 7);
	ck_assert_int_eq(lc.cls[0], 1); /* overlap */
	ck_assert_int_eq(lc.cls[1], 2); /* bleed */
	ck_assert_int_eq(lc.cls[2], 2); /* misnest */
	ck_assert_int_eq(lc.cls[3], 1); /* lost */
	ck_assert_int_eq(lc.cls[4], 1); /* stale */
	ck_assert_int_eq(lc.cls[5], 0);
	ck_assert_msg(lc.descending, "not newest first:\n%s", r.out);
	run_free(&r);
}
END_TEST

static void check_bleed(const struct json *j, void *arg)
{
	char buf[256];

	(void)arg;
	assert_member(j, "class", "\"bleed\"");
	assert_member(j, "victim_name", "\"GET /a\"");
	assert_member(j, "source_name", "\"GET /b\"");
	assert_member(j, "app", "\"harness\"");
	ck_assert_str_ne(member(j, "victim", buf, sizeof(buf)), "null");
	ck_assert(strcmp(member(j, "record", buf, sizeof(buf)), "\"TAG\"")
		      ? member(j, "name", buf, sizeof(buf)) &&
			    !strcmp(buf, "\"db.done\"")
		      : member(j, "key", buf, sizeof(buf)) &&
			    !strcmp(buf, "\"status\""));
}

static void check_lost(const struct json *j, void *arg)
{
	(void)arg;
	assert_member(j, "class", "\"lost\"");
	assert_member(j, "source", "null");
	assert_member(j, "source_name", "null");
	assert_member(j, "victim_name", "\"GET /b\"");
}

static int json_count(struct run r)
{
	int n;

	ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
	n = each_json_line(r.out, NULL, NULL);
	run_free(&r);
	return n;
}

START_TEST(test_leaks_filters)
{
	struct run r = cli("leaks", "--json", "--class", "bleed");

	ck_assert_int_eq(r.status, 0);
	ck_assert_int_eq(each_json_line(r.out, check_bleed, NULL), 2);
	run_free(&r);
	r = cli("leaks", "--json", "--class", "lost");
	ck_assert_int_eq(each_json_line(r.out, check_lost, NULL), 1);
	run_free(&r);
	ck_assert_int_eq(
	    json_count(cli("leaks", "--json", "--class", "bleed,lost")), 3);
	ck_assert_int_eq(
	    json_count(cli("leaks", "--json", "--class", "unclosed")), 0);
	/* A request is selected as victim or as source. */
	ck_assert_int_eq(
	    json_count(cli("leaks", "--json", "--request", "GET /c")), 1);
	ck_assert_int_eq(
	    json_count(cli("leaks", "--json", "--request", "GET /a")), 5);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--request", "x")),
			 0);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--limit", "3")), 3);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--limit", "0")), 7);
	ck_assert_int_eq(
	    json_count(cli("leaks", "--json", "--site", "harness.c")), 7);
	ck_assert_int_eq(
	    json_count(cli("leaks", "--json", "--site", "tests/harness.c")), 7);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--site", "cli.c")),
			 0);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--app", "harness")),
			 7);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--app", "other")),
			 0);
}
END_TEST

START_TEST(test_leaks_time_filters)
{
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--since", "1h")),
			 7);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--until", "1h")),
			 0);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--since", "7d",
					"--until", "2099-01-01T00:00:00Z")),
			 7);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--since",
					"2000-01-01T00:00:00.5+02:00")),
			 7);
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--since",
					"2099-01-01T00:00:00Z")),
			 0);
}
END_TEST

/* Columns on screen of each line: code points, no line over 80, and no
 * blanks at the end of one. */
static void assert_fits(const char *out)
{
	int w = 0;

	for (const char *p = out; *p; p++) {
		ck_assert_msg(*p != '\033', "escape code in:\n%s", out);
		ck_assert_msg(!(*p == ' ' && p[1] == '\n'),
			      "trailing blank in:\n%s", out);
		if (*p == '\n') {
			ck_assert_msg(w <= 80, "line of %d columns:\n%s", w,
				      out);
			w = 0;
		} else {
			w += ((unsigned char)*p & 0xc0) != 0x80;
		}
	}
}

START_TEST(test_leaks_table)
{
	struct run r = cli("leaks");

	ck_assert_int_eq(r.status, 0);
	assert_fits(r.out);
	ck_assert_int_eq(count_lines(r.out), 8); /* header + 7 */
	ck_assert_ptr_nonnull(strstr(r.out, "CLASS"));
	ck_assert_ptr_nonnull(strstr(r.out, "overlap"));
	ck_assert_ptr_nonnull(strstr(r.out, "GET /b"));
	run_free(&r);
	r = cli("leaks", "--limit", "2");
	ck_assert_int_eq(count_lines(r.out), 4); /* + a line about more */
	ck_assert_ptr_nonnull(strstr(r.out, "--limit"));
	run_free(&r);
	r = cli("leaks", "--class", "unclosed");
	ck_assert_str_eq(r.out, "no findings match the filters\n");
	run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ show */

START_TEST(test_show_table)
{
	struct run r = cli("show", "GET /b");

	ck_assert_msg(r.status == 0, "%s", r.err);
	assert_fits(r.out);
	/* status=200 in B's context was set by A's code. */
	ck_assert_msg(strstr(r.out, "status") && strstr(r.out, "GET /a"), "%s",
		      r.out);
	ck_assert_ptr_nonnull(strstr(r.out, "<- overlap"));
	ck_assert_ptr_nonnull(strstr(r.out, "timeline"));
	ck_assert_ptr_nonnull(strstr(r.out, "other requests involved"));
	run_free(&r);
}
END_TEST

struct show_check {
	char id[32], ctx[32];
	int foreign_status;
};

static void check_show(const struct json *j, void *arg)
{
	struct show_check *sc = arg;
	char buf[16384];
	const char *tags = member(j, "tags", buf, sizeof(buf));

	ck_assert_ptr_nonnull(member(j, "request", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "\"name\":\"GET /b\""));
	sscanf(strstr(buf, "\"id\":"), "\"id\":%31[0-9]", sc->id);
	sscanf(strstr(buf, "\"ctx\":\""), "\"ctx\":\"%31[0-9]", sc->ctx);
	tags = member(j, "tags", buf, sizeof(buf));
	ck_assert_ptr_nonnull(tags);
	sc->foreign_status =
	    strstr(tags, "\"key\":\"status\",\"value\":\"200\"") &&
	    strstr(tags, "\"setter_name\":\"GET /a\"") &&
	    strstr(tags, "\"foreign\":true");
	ck_assert_ptr_nonnull(member(j, "timeline", buf, sizeof(buf)));
	ck_assert_str_ne(buf, "[]");
	ck_assert_ptr_nonnull(member(j, "findings", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "\"class\":\"overlap\""));
	ck_assert_ptr_nonnull(member(j, "related", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "\"name\":\"GET /a\""));
}

START_TEST(test_show_json_and_lookup)
{
	struct show_check sc = {0}, again = {0};
	struct run r = cli("show", "--json", "GET /b");
	char hash[40];

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_int_eq(each_json_line(r.out, check_show, &sc), 1);
	ck_assert(sc.foreign_status);
	run_free(&r);
	/* The same request by #id, id and ctx. */
	snprintf(hash, sizeof(hash), "#%s", sc.id);
	r = cli("show", "--json", hash);
	ck_assert_int_eq(each_json_line(r.out, check_show, &again), 1);
	run_free(&r);
	r = cli("show", "--json", sc.id);
	ck_assert_int_eq(each_json_line(r.out, check_show, &again), 1);
	run_free(&r);
	r = cli("show", "--json", sc.ctx);
	ck_assert_int_eq(each_json_line(r.out, check_show, &again), 1);
	ck_assert_str_eq(again.ctx, sc.ctx);
	run_free(&r);
	/* Not found is not a usage error: its own code, and which database
	 * was read. */
	r = cli("show", "no such request");
	ck_assert_int_eq(r.status, 4);
	ck_assert_ptr_nonnull(strstr(r.err, "no request matches"));
	snprintf(hash, sizeof(hash), "read %.30s", db);
	ck_assert_msg(strstr(r.err, hash), "%s", r.err);
	run_free(&r);
}
END_TEST

/* The nasty tag reaches JSON escaped and valid, a table sanitised. */
START_TEST(test_escaping)
{
	struct run r = cli("show", "--json", "GET /a");
	const char *want = "\"key\":\"note\",\"value\":\"\\u001b[31mred\\u0001"
			   "\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd|"
			   "\xef\xbf\xbd\xef\xbf\xbd\"";

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_int_eq(each_json_line(r.out, NULL, NULL), 1);
	ck_assert_msg(strstr(r.out, want), "%s", r.out);
	run_free(&r);
	r = cli("show", "GET /a");
	ck_assert_int_eq(r.status, 0);
	assert_fits(r.out); /* also: no ESC */
	ck_assert_ptr_null(strchr(r.out, '\x01'));
	ck_assert_ptr_nonnull(strstr(r.out, "?[31mred?\xef\xbf\xbd"));
	run_free(&r);
}
END_TEST

/* A value wider than its column is cut with an ellipsis in a table, whole
 * in JSON. */
START_TEST(test_truncation)
{
	struct run r = cli("show", "GET /a");
	const char *line = strstr(r.out, "\nlong ");

	ck_assert_int_eq(r.status, 0);
	assert_fits(r.out);
	ck_assert_ptr_null(strstr(r.out, LONG_VALUE));
	ck_assert_ptr_nonnull(line);
	ck_assert_ptr_nonnull(strstr(line, "\xe2\x80\xa6"));
	ck_assert(strstr(line, "\xe2\x80\xa6") < strchr(line + 1, '\n'));
	run_free(&r);
	r = cli("show", "--json", "GET /a");
	ck_assert_ptr_nonnull(strstr(r.out, "\"value\":\"" LONG_VALUE "\""));
	run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ summary */

START_TEST(test_summary)
{
	struct run r = cli("summary", "--json");
	struct json j;
	char buf[8192];

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_int_eq(count_lines(r.out), 1);
	json_line(&j, r.out, strlen(r.out) - 1);
	assert_member(&j, "findings", "7");
	ck_assert_ptr_nonnull(member(&j, "by_class", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "{\"class\":\"bleed\",\"count\":2}"));
	ck_assert_ptr_nonnull(strstr(buf, "{\"class\":\"stale\",\"count\":1}"));
	ck_assert_ptr_nonnull(member(&j, "by_request", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(
	    strstr(buf, "{\"request\":\"GET /b\",\"count\":3}"));
	ck_assert_ptr_nonnull(member(&j, "by_site", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "harness.c:"));
	ck_assert_ptr_nonnull(member(&j, "processes", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "\"backend\":\"thread\""));
	ck_assert_ptr_nonnull(strstr(buf, "\"backend\":\"task\""));
	assert_member(&j, "incomplete", "[]");
	run_free(&r);
	r = cli("summary");
	ck_assert_int_eq(r.status, 0);
	assert_fits(r.out);
	ck_assert_ptr_nonnull(strstr(r.out, "7 findings"));
	ck_assert_ptr_nonnull(strstr(r.out, "nothing dropped, no daemon died"));
	run_free(&r);
	r = cli("summary", "--json", "--class", "lost");
	json_line(&j, r.out, strlen(r.out) - 1);
	assert_member(&j, "findings", "1");
	run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ lists */

static void check_process(const struct json *j, void *arg)
{
	char buf[256];
	int *leaks = arg;

	ck_assert_ptr_nonnull(member(j, "pid", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(member(j, "model", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(member(j, "recommend", buf, sizeof(buf)));
	*leaks += atoi(member(j, "leaks", buf, sizeof(buf)));
}

static void sum_site_leaks(const struct json *j, void *arg)
{
	char buf[256];

	ck_assert_ptr_nonnull(member(j, "file", buf, sizeof(buf)));
	/* The worked example runs in the harness; the rest of the fixture
	 * here. */
	ck_assert_msg(!strcmp(buf, "\"tests/harness.c\"") ||
			  !strcmp(buf, "\"tests/test_cli.c\""),
		      "site file %s", buf);
	*(int *)arg += atoi(member(j, "leaks", buf, sizeof(buf)));
}

START_TEST(test_processes_and_sites)
{
	struct run r = cli("processes", "--json");
	int leaks = 0;

	ck_assert_int_eq(r.status, 0);
	ck_assert_int_eq(each_json_line(r.out, check_process, &leaks), 2);
	ck_assert_int_eq(leaks, 7);
	run_free(&r);
	r = cli("processes");
	assert_fits(r.out);
	ck_assert_int_eq(count_lines(r.out), 3);
	ck_assert_ptr_nonnull(strstr(r.out, "thread"));
	run_free(&r);
	leaks = 0;
	r = cli("sites", "--json");
	ck_assert_int_eq(r.status, 0);
	ck_assert_int_gt(each_json_line(r.out, sum_site_leaks, &leaks), 0);
	ck_assert_int_eq(leaks, 7);
	run_free(&r);
	r = cli("sites");
	assert_fits(r.out);
	ck_assert_ptr_nonnull(strstr(r.out, "harness.c:"));
	run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ exit codes */

static int status_of(struct run r)
{
	int s = r.status;

	run_free(&r);
	return s;
}

START_TEST(test_fail_on)
{
	ck_assert_int_eq(status_of(cli("leaks", "--fail-on", "bleed")), 1);
	ck_assert_int_eq(status_of(cli("--fail-on", "any", "leaks")), 1);
	ck_assert_int_eq(status_of(cli("leaks", "--fail-on", "unclosed")), 0);
	/* Only the selection counts. */
	ck_assert_int_eq(
	    status_of(cli("leaks", "--fail-on", "bleed", "--class", "lost")),
	    0);
	ck_assert_int_eq(status_of(cli("leaks", "--fail-on", "bleed,lost",
				       "--class", "lost")),
			 1);
	ck_assert_int_eq(
	    status_of(cli("leaks", "--limit", "1", "--fail-on", "overlap")), 1);
	ck_assert_int_eq(status_of(cli("summary", "--fail-on", "stale")), 1);
	ck_assert_int_eq(status_of(cli("show", "GET /c", "--fail-on", "stale")),
			 1);
	ck_assert_int_eq(status_of(cli("show", "GET /c", "--fail-on", "bleed")),
			 0);
	ck_assert_int_eq(status_of(cli("processes", "--fail-on", "any")), 1);
}
END_TEST

START_TEST(test_usage_errors)
{
	ck_assert_int_eq(status_of(run("--db", "/nonexistent")), 2);
	ck_assert_int_eq(status_of(run("frobnicate")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--bogus")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--class", "nope")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--since", "yesterday")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--since", "2026-13-01")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--limit", "-1")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--limit")), 2);
	ck_assert_int_eq(status_of(run("leaks", "extra")), 2);
	ck_assert_int_eq(
	    status_of(run("leaks", "--since", "1h", "--until", "2h")), 2);
	ck_assert_int_eq(status_of(run("show")), 2);
	ck_assert_int_eq(status_of(run("show", "a", "b")), 2);
	ck_assert_int_eq(status_of(run("processes", "--class", "bleed")), 2);
	ck_assert_int_eq(status_of(run("--color=maybe", "leaks")), 2);
	ck_assert_int_eq(status_of(run("--fail-on", "nope", "leaks")), 2);
	ck_assert_int_eq(status_of(run("show", "x", "--limit", "3")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--all")), 2);
	ck_assert_int_eq(status_of(run("leaks", "--html", "x.html")), 2);
}
END_TEST

/* A bad value is answered with the valid ones. */
START_TEST(test_valid_values_listed)
{
	static const char *const bad[][3] = {
	    {"--fail-on", "bogus", "leaks"},
	    {"leaks", "--class", "bleed,bogus"},
	    {"summary", "--class", "bogus"},
	};
	struct run r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = run(bad[i][0], bad[i][1], bad[i][2]);
		ck_assert_int_eq(r.status, 2);
		ck_assert_msg(strstr(r.err, "unknown class 'bogus'") &&
				  strstr(r.err, "valid: bleed, stale, overlap, "
						"lost, misnest, unclosed, or "
						"any"),
			      "%s", r.err);
		run_free(&r);
	}
	r = run("--color=maybe", "leaks");
	ck_assert_int_eq(r.status, 2);
	ck_assert_ptr_nonnull(strstr(r.err, "valid: auto, always, never"));
	run_free(&r);
	r = run("export", "--format", "svg");
	ck_assert_int_eq(r.status, 2);
	ck_assert_ptr_nonnull(strstr(r.err, "valid: chrome-trace"));
	run_free(&r);
	r = run("export");
	ck_assert_int_eq(r.status, 2);
	ck_assert_ptr_nonnull(strstr(r.err, "valid: chrome-trace"));
	run_free(&r);
}
END_TEST

/* Dates that do not exist are no times (timegm() would move them on). */
START_TEST(test_impossible_dates)
{
	static const char *const bad[] = {
	    "2026-02-30T00:00:00Z", "2026-02-29", "2100-02-29",
	    "2026-04-31T12:00:00Z", "2026-06-31",
	};
	static const char *const good[] = {"2024-02-29T00:00:00Z", "2000-02-29",
					   "2026-12-31"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(status_of(run("leaks", "--since", bad[i])) == 2,
			      "accepted %s", bad[i]);
	/* Good ones get as far as the database (missing: 3). */
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(status_of(run("--db", "/nonexistent", "leaks",
					    "--since", good[i])) == 3,
			      "refused %s", good[i]);
}
END_TEST

START_TEST(test_help_and_version)
{
	static const char *const cmds[] = {"leaks", "show", "summary",
					   "processes", "sites"};
	struct run r = run("--help");

	ck_assert_int_eq(r.status, 0);
	for (size_t i = 0; i < 5; i++)
		ck_assert_ptr_nonnull(strstr(r.out, cmds[i]));
	run_free(&r);
	for (size_t i = 0; i < 5; i++) {
		r = run(cmds[i], "--help");
		ck_assert_int_eq(r.status, 0);
		ck_assert_ptr_nonnull(strstr(r.out, "usage: ctxleak"));
		ck_assert_ptr_nonnull(strstr(r.out, cmds[i]));
		ck_assert_ptr_nonnull(strstr(r.out, "--db PATH"));
		run_free(&r);
	}
	r = run("--help");
	ck_assert_ptr_nonnull(strstr(r.out, "4 no request matches"));
	run_free(&r);
	r = run("--version");
	ck_assert_int_eq(r.status, 0);
	ck_assert_ptr_nonnull(strstr(r.out, CTXLEAK_VERSION_STRING));
	run_free(&r);
}
END_TEST

/* ------------------------------------------------------------ databases */

static char tmpdir[64];

static void db_setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ctxleak-cli-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void db_teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	ck_assert_int_eq(system(cmd), 0);
}

static void make_db(const char *path, const char *sql)
{
	sqlite3 *s;

	ck_assert_int_eq(sqlite3_open(path, &s), SQLITE_OK);
	ck_assert_msg(sqlite3_exec(s, sql, NULL, NULL, NULL) == SQLITE_OK, "%s",
		      sqlite3_errmsg(s));
	sqlite3_close(s);
}

/* Exit 3 and exactly one line on stderr that says what is wrong. */
static void assert_bad_db(const char *path, const char *says)
{
	struct run r = run("--db", path, "leaks");

	ck_assert_int_eq(r.status, 3);
	ck_assert_str_eq(r.out, "");
	ck_assert_int_eq(count_lines(r.err), 1);
	ck_assert_msg(strncmp(r.err, "ctxleak: ", 9) == 0 &&
			  strstr(r.err, says),
		      "%s", r.err);
	run_free(&r);
}

START_TEST(test_bad_databases)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/missing.db", tmpdir);
	assert_bad_db(path, "no database at");
	ck_assert_int_ne(access(path, F_OK), 0); /* not created */
	snprintf(path, sizeof(path), "%s/text.db", tmpdir);
	f = fopen(path, "w");
	fputs("this is not a database, but it is long enough to look like "
	      "one to a careless reader of its first hundred bytes.......\n",
	      f);
	fclose(f);
	assert_bad_db(path, "not a ctxleak database (not SQLite)");
	snprintf(path, sizeof(path), "%s/other.db", tmpdir);
	make_db(path, "CREATE TABLE processes (id INTEGER);");
	assert_bad_db(path, "not a ctxleak database");
	snprintf(path, sizeof(path), "%s/newer.db", tmpdir);
	make_db(path, "CREATE TABLE processes (id INTEGER);"
		      "CREATE TABLE leaks (id INTEGER);"
		      "PRAGMA application_id = 1668836459;"
		      "PRAGMA user_version = 99;");
	assert_bad_db(path, "newer");
	/* Read-only, the CLI cannot migrate: it says who can. */
	snprintf(path, sizeof(path), "%s/older.db", tmpdir);
	make_db(path, "CREATE TABLE processes (id INTEGER);"
		      "CREATE TABLE leaks (id INTEGER);"
		      "PRAGMA application_id = 1668836459;"
		      "PRAGMA user_version = 1;");
	assert_bad_db(path, "start ctxleakd once to migrate it");
	/* Our tables' names in someone else's file. */
	snprintf(path, sizeof(path), "%s/foreign.db", tmpdir);
	make_db(path, "CREATE TABLE processes (id INTEGER);"
		      "CREATE TABLE leaks (id INTEGER);");
	assert_bad_db(path, "not a ctxleak database (application_id");
	assert_bad_db(tmpdir, "not a file");
}
END_TEST

static void copy_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY);
	int out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0644);
	char buf[65536];
	ssize_t n;

	ck_assert_int_ge(in, 0);
	ck_assert_int_ge(out, 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
	ck_assert_int_eq(n, 0);
	close(in);
	close(out);
}

/* A user who may read the database but not write in its directory (a
 * member of group ctxleak once the daemon has stopped) cannot create the
 * -shm file that WAL readers use; the CLI must read it all the same, and
 * say plainly when it cannot. */
START_TEST(test_reader_without_write_access)
{
	char dir[] = "/tmp/ctxleak-cli-ro-XXXXXX", path[64], wal[80];
	char *argv[] = {NULL, "--db", path, "leaks", "--json", NULL};
	/* root may write anywhere: the test runs as nobody then. */
	uid_t uid = geteuid() == 0 ? 65534 : 0;
	struct run r;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/ctxleak.db", dir);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	copy_file(db, path);
	ck_assert_int_eq(chmod(dir, 0555), 0);
	r = run_argv(NULL, argv, uid);
	ck_assert_msg(r.status == 0, "exit %d: %s", r.status, r.err);
	ck_assert_int_eq(each_json_line(r.out, NULL, NULL), 7);
	run_free(&r);
	/* A log with data in it cannot be skipped. */
	ck_assert_int_eq(chmod(dir, 0755), 0);
	fd = open(wal, O_WRONLY | O_CREAT, 0600);
	ck_assert_int_eq(write(fd, "not empty", 9), 9);
	close(fd);
	ck_assert_int_eq(chmod(dir, 0555), 0);
	r = run_argv(NULL, argv, uid);
	ck_assert_int_eq(r.status, 3);
	ck_assert_int_eq(count_lines(r.err), 1);
	ck_assert_ptr_nonnull(strstr(r.err, "-wal"));
	run_free(&r);
	ck_assert_int_eq(chmod(dir, 0755), 0);
	unlink(wal);
	unlink(path);
	ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* ------------------------------------------------------------ reading */

/* Each line at most width columns; the widest one's width. */
static int widest_line(const char *out)
{
	int w = 0, max = 0;

	for (const char *p = out; *p; p++) {
		if (*p == '\n') {
			max = w > max ? w : max;
			w = 0;
		} else {
			w += ((unsigned char)*p & 0xc0) != 0x80;
		}
	}
	return max;
}

/* COLUMNS and --wide say how wide a table may be; nothing is cut when it
 * fits. */
START_TEST(test_columns_and_wide)
{
	static const char *const wide_env[] = {"COLUMNS=200", NULL};
	static const char *const narrow_env[] = {"COLUMNS=72", NULL};
	struct run r = run_env(wide_env, "--db", db, "show", "GET /a", NULL);

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_msg(strstr(r.out, LONG_VALUE), "%s", r.out);
	ck_assert_int_gt(widest_line(r.out), 80);
	ck_assert_int_le(widest_line(r.out), 200);
	run_free(&r);
	r = run_env(narrow_env, "--db", db, "show", "GET /a", NULL);
	ck_assert_int_eq(r.status, 0);
	ck_assert_int_le(widest_line(r.out), 72);
	ck_assert_ptr_null(strstr(r.out, LONG_VALUE));
	run_free(&r);
	r = cli("--wide", "show", "GET /a");
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.out, LONG_VALUE), "%s", r.out);
	ck_assert_ptr_null(strstr(r.out, "\xe2\x80\xa6"));
	run_free(&r);
	r = cli("leaks", "--wide");
	ck_assert_int_eq(r.status, 0);
	ck_assert_ptr_null(strstr(r.out, "\xe2\x80\xa6"));
	run_free(&r);
}
END_TEST

/* The id of request name, from show --json. */
static long long request_id(const char *name)
{
	struct run r = cli("show", "--json", name);
	const char *p = strstr(r.out, "\"request\":{\"id\":");
	long long id;

	ck_assert_ptr_nonnull(p);
	id = atoll(p + strlen("\"request\":{\"id\":"));
	run_free(&r);
	return id;
}

/* The table row of show's timeline that starts with record on one line. */
static const char *timeline_row(const char *out, const char *record, char *buf,
				size_t len)
{
	const char *p = strstr(out, "\ntimeline\n");

	ck_assert_ptr_nonnull(p);
	for (p = strchr(p + 1, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
		const char *nl = strchr(p + 1, '\n');
		const char *at = strstr(p + 1, record);

		if (at && at < nl) {
			snprintf(buf, len, "%.*s", (int)(nl - p - 1), p + 1);
			return buf;
		}
	}
	return NULL;
}

/* The row's BACKEND SAID cell holds said, its TRULY cell after it truly. */
static void assert_said_truly(const char *row, const char *said,
			      const char *truly)
{
	const char *p = strstr(row, said);

	ck_assert_msg(p && strstr(p + strlen(said), truly),
		      "END row: %s (want %s, then %s)", row, said, truly);
}

/*
 * A's END ran while the backend held B (thread storage does not follow
 * the callback): BACKEND SAID is B, not A, the scope being ended.  Then
 * B's END found the storage empty: "nothing".  JSON says the same with
 * cur_request.
 */
START_TEST(test_show_end_rows)
{
	long long a = request_id("GET /a"), b = request_id("GET /b");
	char row[512], want[64], said[64], truly[64];
	struct run r = cli("--wide", "show", "GET /a");

	ck_assert_msg(timeline_row(r.out, "  END ", row, sizeof(row)), "%s",
		      r.out);
	snprintf(said, sizeof(said), "#%lld GET /b", b);
	snprintf(truly, sizeof(truly), "#%lld GET /a", a);
	assert_said_truly(row, said, truly);
	run_free(&r);
	r = cli("--wide", "show", "GET /b");
	ck_assert_msg(timeline_row(r.out, "  END ", row, sizeof(row)), "%s",
		      r.out);
	snprintf(truly, sizeof(truly), "#%lld GET /b", b);
	assert_said_truly(row, "nothing", truly);
	run_free(&r);
	r = cli("show", "--json", "GET /a");
	snprintf(want, sizeof(want), "\"cur_request\":%lld", b);
	ck_assert_msg(strstr(r.out, want), "%s", r.out);
	run_free(&r);
}
END_TEST

/* No output gives a ctx in hex: the daemon's detail says "ctx 0x2a",
 * the CLI the request it belongs to. */
START_TEST(test_ctx_never_hex)
{
	static const char *const args[][4] = {
	    {"show", "GET /a", NULL},		{"show", "GET /b", NULL},
	    {"show", "--json", "GET /a", NULL}, {"leaks", "--json", NULL},
	    {"leaks", "--wide", NULL},
	};
	char want[64];
	struct run r;

	for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++) {
		r = run("--db", db, args[i][0], args[i][1], args[i][2]);
		ck_assert_int_eq(r.status, 0);
		ck_assert_msg(strstr(r.out, "0x") == NULL, "%s", r.out);
		run_free(&r);
	}
	r = cli("--wide", "show", "GET /a");
	snprintf(want, sizeof(want), "current ctx was #%lld",
		 request_id("GET /b"));
	ck_assert_msg(strstr(r.out, want), "%s", r.out);
	run_free(&r);
}
END_TEST

/* The evidence in leaks --json: a TAG's value, an EVENT's message, and
 * the fix. */
static void check_evidence(const struct json *j, void *arg)
{
	int *seen = arg;
	char buf[1024];

	if (!strcmp(member(j, "record", buf, sizeof(buf)), "\"TAG\"")) {
		assert_member(j, "key", "\"status\"");
		assert_member(j, "value", "\"200\"");
		seen[0]++;
	} else {
		assert_member(j, "name", "\"db.done\"");
		/* The worked example's events carry no message. */
		assert_member(j, "message", "null");
		seen[1]++;
	}
	ck_assert_ptr_nonnull(member(j, "fix", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr(buf, "carry the context across"));
}

START_TEST(test_leaks_json_evidence)
{
	struct run r = cli("leaks", "--json", "--class", "bleed");
	int seen[2] = {0, 0};

	ck_assert_int_eq(each_json_line(r.out, check_evidence, seen), 2);
	ck_assert_int_eq(seen[0], 1);
	ck_assert_int_eq(seen[1], 1);
	run_free(&r);
}
END_TEST

/* Lines of out that hold needle. */
static int lines_with(const char *out, const char *needle)
{
	int n = 0;

	for (const char *p = out; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

/* RESUME/SUSPEND rows without a finding are folded, and counted; --all
 * shows each. */
START_TEST(test_show_folds_resume)
{
	struct run r = cli("show", "--json", "GET /a");
	int wraps = lines_with(r.out, "\"type\":\"RESUME\"") +
		    lines_with(r.out, "\"type\":\"SUSPEND\"");
	char note[80];

	ck_assert_int_gt(wraps, 0);
	run_free(&r);
	r = cli("--wide", "show", "GET /a");
	ck_assert_int_eq(
	    lines_with(r.out, "  RESUME") + lines_with(r.out, "  SUSPEND"), 0);
	snprintf(note, sizeof(note),
		 "(%d RESUME/SUSPEND rows without a finding folded: --all "
		 "shows them)",
		 wraps);
	ck_assert_msg(strstr(r.out, note), "%s", r.out);
	run_free(&r);
	r = cli("--wide", "show", "GET /a", "--all");
	ck_assert_int_eq(lines_with(r.out, "  RESUME") +
			     lines_with(r.out, "  SUSPEND"),
			 wraps);
	ck_assert_ptr_null(strstr(r.out, "folded"));
	run_free(&r);
}
END_TEST

/* Under each finding of show, how to fix its class. */
START_TEST(test_show_fix_hints)
{
	struct run r = cli("--wide", "show", "GET /b");
	const char *overlap = strstr(r.out, "overlap  as ");

	ck_assert_msg(overlap, "%s", r.out);
	ck_assert_msg(strstr(overlap, "\n    fix: one storage slot is shared "
				      "by concurrent requests"),
		      "%s", r.out);
	ck_assert_int_eq(lines_with(r.out, "\n    fix: "),
			 lines_with(r.out, "  as victim") +
			     lines_with(r.out, "  as source"));
	run_free(&r);
	r = cli("show", "--json", "GET /b");
	ck_assert_ptr_nonnull(strstr(r.out, "\"fix\":\"one storage slot"));
	run_free(&r);
}
END_TEST

/* When nothing matches, stderr names the database read. */
START_TEST(test_says_which_database)
{
	struct run r = cli("leaks", "--class", "unclosed");
	char want[200];

	ck_assert_int_eq(r.status, 0);
	snprintf(want, sizeof(want), "ctxleak: read %s\n", db);
	ck_assert_str_eq(r.err, want);
	run_free(&r);
	r = cli("leaks", "--json", "--class", "unclosed");
	ck_assert_str_eq(r.out, "");
	ck_assert_str_eq(r.err, want);
	run_free(&r);
	r = cli("processes", "--app", "nobody");
	ck_assert_str_eq(r.out, "no processes\n");
	ck_assert_str_eq(r.err, want);
	run_free(&r);
	r = cli("leaks");
	ck_assert_str_eq(r.err, "");
	run_free(&r);
}
END_TEST

/* --limit's largest value is no overflow (UBSan stops the CLI on one). */
START_TEST(test_limit_max)
{
	ck_assert_int_eq(json_count(cli("leaks", "--json", "--limit",
					"9223372036854775807")),
			 7);
	ck_assert_int_eq(
	    status_of(cli("leaks", "--limit", "9223372036854775807")), 0);
	ck_assert_int_eq(
	    status_of(cli("leaks", "--limit", "9223372036854775808")), 2);
}
END_TEST

/*
 * Root reads the system database by default; a daemon run by hand wrote
 * the user's own.  When the system one is missing, or shows nothing, the
 * CLI points at the other.
 */
START_TEST(test_root_hint)
{
	char home[] = "/tmp/ctxleak-cli-home-XXXXXX", path[128], want[200];
	char env_home[160], cmd[200];
	const char *env[] = {env_home, "XDG_STATE_HOME", "SUDO_USER", NULL};
	struct run r;

	if (geteuid() != 0) {
		printf("test_root_hint: skipped, not root\n");
		return;
	}
	ck_assert_ptr_nonnull(mkdtemp(home));
	snprintf(env_home, sizeof(env_home), "HOME=%s", home);
	snprintf(path, sizeof(path), "%s/.local/state/ctxleak", home);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", path);
	ck_assert_int_eq(system(cmd), 0);
	strcat(path, "/ctxleak.db");
	copy_file(db, path);
	snprintf(want, sizeof(want), "pass --db %s\n", path);
	/* No --db: the system database, which may or may not exist here. */
	r = run_env(env, "show", "no such request", NULL);
	ck_assert_msg(r.status ==
			  (access("/var/lib/ctxleak/ctxleak.db", F_OK) ? 3 : 4),
		      "exit %d: %s", r.status, r.err);
	ck_assert_msg(strstr(r.err, "/var/lib/ctxleak/ctxleak.db") &&
			  strstr(r.err, want),
		      "%s", r.err);
	run_free(&r);
	/* Given the user's database, no hint. */
	r = run_env(env, "--db", path, "show", "no such request", NULL);
	ck_assert_int_eq(r.status, 4);
	ck_assert_ptr_null(strstr(r.err, "pass --db"));
	run_free(&r);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", home);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ------------------------------------------------------------ export */

/* What the trace held, by the format's rules. */
struct trace {
	int scopes, marks, findings, processes;
	long long finding_ids[16];
	double a_dur; /* of the scope GET /a, in microseconds */
};

/* A JSON number (no string, no literal) as a double; Check fails on
 * anything else. */
static double number(const struct json *j, const char *key)
{
	char buf[64], *end;
	const char *v = member(j, key, buf, sizeof(buf));
	double d;

	ck_assert_msg(v != NULL, "no \"%s\"", key);
	ck_assert_msg(strchr("-0123456789", v[0]), "\"%s\" is %s", key, v);
	d = strtod(v, &end);
	ck_assert_msg(*end == '\0', "\"%s\" is %s", key, v);
	return d;
}

static int is_int(const struct json *j, const char *key)
{
	char buf[64];
	const char *v = member(j, key, buf, sizeof(buf));

	return v && strspn(v, "-0123456789") == strlen(v);
}

/*
 * One event, against the Trace Event Format: name and ph are strings,
 * pid and tid integers; X and i have a number ts (microseconds, here
 * since the earliest event: >= 0); X a dur >= 0; i a scope s of g, p or
 * t; M (metadata) args with a name.
 */
static void check_event(const struct json *ev, struct trace *t)
{
	char ph[8], buf[8192], cat[32], args_text[8192];
	struct json args;

	ck_assert_ptr_nonnull(member(ev, "name", buf, sizeof(buf)));
	ck_assert(buf[0] == '"');
	ck_assert_ptr_nonnull(member(ev, "ph", ph, sizeof(ph)));
	ck_assert(is_int(ev, "pid") && is_int(ev, "tid"));
	ck_assert_ptr_nonnull(member(ev, "args", args_text, sizeof(args_text)));
	json_line(&args, args_text, strlen(args_text));
	if (!strcmp(ph, "\"M\"")) {
		assert_member(ev, "name", "\"process_name\"");
		ck_assert_ptr_nonnull(member(&args, "name", buf, sizeof(buf)));
		t->processes++;
		return;
	}
	ck_assert_msg(number(ev, "ts") >= 0, "ts < 0");
	ck_assert_ptr_nonnull(member(ev, "cat", cat, sizeof(cat)));
	if (!strcmp(ph, "\"X\"")) {
		ck_assert_msg(number(ev, "dur") >= 0, "dur < 0");
		assert_member(ev, "cat", "\"scope\"");
		t->scopes++;
		if (!strcmp(member(ev, "name", buf, sizeof(buf)), "\"GET /a\""))
			t->a_dur = number(ev, "dur");
		return;
	}
	ck_assert_msg(!strcmp(ph, "\"i\""), "ph %s", ph);
	member(ev, "s", buf, sizeof(buf));
	ck_assert_msg(strstr("\"g\" \"p\" \"t\"", buf), "s %s", buf);
	if (!strcmp(cat, "\"record\"")) {
		t->marks++;
		return;
	}
	assert_member(ev, "cat", "\"finding\"");
	ck_assert_ptr_nonnull(member(&args, "class", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(member(&args, "fix", buf, sizeof(buf)));
	ck_assert_ptr_nonnull(member(&args, "detail", buf, sizeof(buf)));
	ck_assert_int_lt(t->findings, 16);
	t->finding_ids[t->findings++] = (long long)number(&args, "id");
}

/* Parses out, one JSON object whose traceEvents is an array of events,
 * and checks each. */
static void check_trace(const char *out, struct trace *t)
{
	static char events[1 << 20];
	struct json top, el, ev;
	const char *p;

	memset(t, 0, sizeof(*t));
	ck_assert_msg(count_lines(out) == 1, "%s", out);
	json_line(&top, out, strlen(out) - 1);
	assert_member(&top, "displayTimeUnit", "\"ns\"");
	ck_assert_ptr_nonnull(member(&top, "otherData", events, 1024));
	ck_assert_ptr_nonnull(strstr(events, "\"epoch\":\""));
	ck_assert_ptr_nonnull(
	    member(&top, "traceEvents", events, sizeof(events)));
	ck_assert(events[0] == '[');
	for (p = events + 1; *p != ']';) {
		memset(&el, 0, sizeof(el));
		el.p = p;
		el.end = events + strlen(events);
		ck_assert_int_eq(json_parse_value(&el), 0);
		json_line(&ev, p, (size_t)(el.p - p));
		check_event(&ev, t);
		p = el.p;
		if (*p == ',')
			p++;
	}
}

static int has_id(const struct trace *t, long long id)
{
	for (int i = 0; i < t->findings; i++)
		if (t->finding_ids[i] == id)
			return 1;
	return 0;
}

START_TEST(test_export_chrome_trace)
{
	struct run r = cli("export", "--format", "chrome-trace");
	struct trace t;
	long long a_ns;

	ck_assert_msg(r.status == 0, "%s", r.err);
	check_trace(r.out, &t);
	ck_assert_int_eq(t.processes, 2);
	ck_assert_int_eq(t.scopes,
			 harness_query_int(&daemon_, "SELECT count(*) FROM "
						     "records WHERE type = "
						     "'BEGIN'"));
	ck_assert_int_eq(t.marks,
			 harness_query_int(&daemon_, "SELECT count(*) FROM "
						     "records WHERE type IN "
						     "('TAG', 'EVENT')"));
	ck_assert_int_eq(t.findings, 7);
	for (long long id = 1; id <= 7; id++)
		ck_assert_msg(has_id(&t, id), "finding %lld missing", id);
	/* Microseconds: GET /a (thread backend, the newer) lasted its
	 * end_ts - begin_ts ns. */
	a_ns = harness_query_int(&daemon_,
				 "SELECT end_ts - begin_ts FROM requests WHERE"
				 " name = 'GET /a' ORDER BY id DESC LIMIT 1");
	ck_assert_msg((long long)(t.a_dur * 1000 + 0.5) == a_ns,
		      "dur %f us for %lld ns", t.a_dur, a_ns);
	run_free(&r);
	/* A finding filter: its findings, and the scopes of the requests
	 * they involve. */
	r = cli("export", "--format", "chrome-trace", "--class", "bleed");
	ck_assert_msg(r.status == 0, "%s", r.err);
	check_trace(r.out, &t);
	ck_assert_int_eq(t.findings, 2);
	ck_assert_int_eq(
	    t.scopes,
	    harness_query_int(&daemon_,
			      "SELECT count(*) FROM records WHERE type ="
			      " 'BEGIN' AND request_id IN (SELECT"
			      " victim_request_id FROM leaks WHERE class ="
			      " 'bleed' UNION SELECT source_request_id FROM"
			      " leaks WHERE class = 'bleed')"));
	run_free(&r);
	/* Nothing selected: still a valid trace, and stderr says where. */
	r = cli("export", "--format", "chrome-trace", "--since", "2099-01-01");
	ck_assert_int_eq(r.status, 0);
	check_trace(r.out, &t);
	ck_assert_int_eq(t.scopes + t.findings + t.marks, 0);
	ck_assert_ptr_nonnull(strstr(r.err, "ctxleak: read "));
	run_free(&r);
	ck_assert_int_eq(status_of(cli("export", "--format", "chrome-trace",
				       "--fail-on", "stale")),
			 1);
}
END_TEST

/* ------------------------------------------------------------ colour */

START_TEST(test_color)
{
	static const char *const no_color[] = {"NO_COLOR=1", NULL};
	static const char *const color_ok[] = {"NO_COLOR", NULL};
	char *out;
	struct run r;

	/* Not a terminal: never, whatever the command. */
	r = cli("summary");
	ck_assert_ptr_null(strchr(r.out, '\033'));
	run_free(&r);
	r = cli("--color=always", "leaks");
	ck_assert_ptr_nonnull(strchr(r.out, '\033'));
	run_free(&r);
	out = run_on_tty(no_color, db, "leaks");
	ck_assert_ptr_nonnull(strstr(out, "overlap"));
	ck_assert_ptr_null(strchr(out, '\033'));
	free(out);
	out = run_on_tty(color_ok, db, "leaks");
	ck_assert_ptr_nonnull(strchr(out, '\033'));
	free(out);
}
END_TEST

/* ------------------------------------------------------------ live */

/* The CLI reads while the daemon holds the database open and writes. */
START_TEST(test_reads_while_daemon_runs)
{
	struct harness_daemon d;
	struct run r;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, &nasty_example),
			 0);
	ck_assert_int_eq(harness_wait_int(&d, "SELECT count(*) FROM leaks", 7),
			 0);
	r = run("--db", d.db, "leaks", "--json");
	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_int_eq(each_json_line(r.out, NULL, NULL), 7);
	run_free(&r);
	ck_assert_int_eq(harness_stop(&d), 0);
	harness_cleanup(&d);
}
END_TEST

/* Under --keep=leaky (the default) clean requests are counted, not
 * kept: `processes` still counts them, `show` says why it finds none. */
static void assert_requests(const struct json *j, void *want)
{
	assert_member(j, "requests", want);
}

START_TEST(test_leaky_counts_clean_requests)
{
	struct harness_daemon d;
	struct run r;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_TASK,
					harness_worked_example, NULL),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	r = run("--db", d.db, "processes", "--json");
	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_int_eq(each_json_line(r.out, assert_requests, "3"), 1);
	run_free(&r);
	r = run("--db", d.db, "show", "GET /a");
	ck_assert_int_eq(r.status, 4);
	ck_assert_msg(strstr(r.err, "counted in request_stats") != NULL, "%s",
		      r.err);
	run_free(&r);
	harness_cleanup(&d);
}
END_TEST

/* Begins a request, tags it, ships it, then waits for the parent: the
 * request is open while the test looks at it. */
static int open_request(void *arg)
{
	int *pipefd = arg;
	char ch;

	close(pipefd[1]);
	ctxleak_begin("GET /slow");
	ctxleak_tag("user", "carol");
	ctxleak_flush();
	return read(pipefd[0], &ch, 1) == 0 ? 0 : 1;
}

/* A request that has records but no row yet (still open) is shown from
 * its records. */
START_TEST(test_show_open_request)
{
	const char *args[] = {"--keep", "all", NULL};
	struct harness_daemon d;
	int pipefd[2];
	char id[32];
	struct run r;
	pid_t child;

	/* CLOEXEC: the daemon and the CLI must not hold the write end. */
	ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	child = harness_client_spawn(&d, CTXLEAK_BACKEND_THREAD, open_request,
				     pipefd);
	ck_assert_int_gt(child, 0);
	close(pipefd[0]);
	ck_assert_int_eq(harness_wait_int(&d,
					  "SELECT count(*) FROM records WHERE"
					  " type = 'TAG'",
					  1),
			 0);
	snprintf(id, sizeof(id), "#%lld",
		 (long long)harness_query_int(
		     &d, "SELECT request_id FROM records WHERE type = 'TAG'"));
	r = run("--db", d.db, "show", id);
	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_ptr_nonnull(strstr(r.out, "not retired"));
	ck_assert_ptr_nonnull(strstr(r.out, "TAG user=carol"));
	run_free(&r);
	r = run("--db", d.db, "show", "--json", id);
	ck_assert_int_eq(each_json_line(r.out, NULL, NULL), 1);
	ck_assert_ptr_nonnull(strstr(r.out, "\"retired\":false"));
	run_free(&r);
	close(pipefd[1]);
	ck_assert_int_eq(harness_client_wait(child), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	harness_cleanup(&d);
}
END_TEST

/* A client that reports dropped records: the summary must say that its
 * counts are incomplete over that window, and only over it. */
START_TEST(test_dropped_window)
{
	struct proto_record dropped = {.type = PROTO_DROPPED,
				       .ts = 2000000000,
				       .since = 1000000000,
				       .count = 120};
	/* and closes cleanly, as a version 2 client does */
	struct proto_record close_rec = {.type = PROTO_CLOSE,
					 .ts = 2000000001};
	unsigned char buf[128];
	size_t n = proto_encode_record(buf, sizeof(buf), &dropped);
	struct harness_daemon d;
	struct run r;
	struct json j;
	int fd;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	fd = harness_connect(&d);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(harness_send_hello(fd, 42, (uint32_t)getpid()), 0);
	n += proto_encode_record(buf + n, sizeof(buf) - n, &close_rec);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	close(fd);
	ck_assert_int_eq(harness_wait_int(&d, "SELECT count(*) FROM drops", 1),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	r = run("--db", d.db, "summary");
	ck_assert_int_eq(r.status, 0);
	assert_fits(r.out);
	ck_assert_msg(strstr(r.out, "dropped 120 records between "
				    "1970-01-01T00:00:01.000000000Z and") &&
			  strstr(r.out, "1970-01-01T00:00:02.000000000Z: "
					"counts may be incomplete"),
		      "%s", r.out);
	ck_assert_ptr_null(strstr(r.out, "counts are complete"));
	run_free(&r);
	r = run("--db", d.db, "summary", "--json");
	json_line(&j, r.out, strlen(r.out) - 1);
	ck_assert_ptr_nonnull(
	    member(&j, "incomplete", (char *)buf, sizeof(buf)));
	ck_assert_ptr_nonnull(strstr((char *)buf, "\"dropped\":120"));
	run_free(&r);
	r = run("--db", d.db, "leaks");
	ck_assert_str_eq(r.out, "no findings\nbut clients dropped 120 records "
				"in this range: see 'ctxleak summary'\n");
	run_free(&r);
	/* A selection after the window is complete. */
	r = run("--db", d.db, "summary", "--since", "1h");
	ck_assert_ptr_nonnull(strstr(r.out, "counts are complete"));
	run_free(&r);
	harness_cleanup(&d);
}
END_TEST

static Suite *cli_suite(void)
{
	Suite *s = suite_create("cli");
	TCase *tc;

	/* Every case runs the CLI as a program many times, some the daemon
	 * too: generous limits, so that only a hang fails on a loaded
	 * machine. */
	tc = tcase_create("json");
	tcase_add_test(tc, test_json_validator);
	suite_add_tcase(s, tc);

	tc = tcase_create("report");
	tcase_add_unchecked_fixture(tc, report_setup, report_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_leaks_json);
	tcase_add_test(tc, test_leaks_filters);
	tcase_add_test(tc, test_leaks_time_filters);
	tcase_add_test(tc, test_leaks_table);
	tcase_add_test(tc, test_show_table);
	tcase_add_test(tc, test_show_json_and_lookup);
	tcase_add_test(tc, test_escaping);
	tcase_add_test(tc, test_truncation);
	tcase_add_test(tc, test_summary);
	tcase_add_test(tc, test_processes_and_sites);
	tcase_add_test(tc, test_fail_on);
	tcase_add_test(tc, test_color);
	tcase_add_test(tc, test_columns_and_wide);
	tcase_add_test(tc, test_show_end_rows);
	tcase_add_test(tc, test_ctx_never_hex);
	tcase_add_test(tc, test_leaks_json_evidence);
	tcase_add_test(tc, test_show_folds_resume);
	tcase_add_test(tc, test_show_fix_hints);
	tcase_add_test(tc, test_says_which_database);
	tcase_add_test(tc, test_limit_max);
	tcase_add_test(tc, test_export_chrome_trace);
	suite_add_tcase(s, tc);

	/* Its own case: it runs the CLI as another user, which tools that
	 * follow children (valgrind --trace-children) cannot always do. */
	tc = tcase_create("access");
	tcase_add_unchecked_fixture(tc, report_setup, report_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_reader_without_write_access);
	tcase_add_test(tc, test_root_hint);
	suite_add_tcase(s, tc);

	tc = tcase_create("usage");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_usage_errors);
	tcase_add_test(tc, test_help_and_version);
	tcase_add_test(tc, test_valid_values_listed);
	tcase_add_test(tc, test_impossible_dates);
	suite_add_tcase(s, tc);

	tc = tcase_create("database");
	tcase_set_timeout(tc, 60);
	tcase_add_checked_fixture(tc, db_setup, db_teardown);
	tcase_add_test(tc, test_bad_databases);
	suite_add_tcase(s, tc);

	tc = tcase_create("live");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_reads_while_daemon_runs);
	tcase_add_test(tc, test_dropped_window);
	tcase_add_test(tc, test_show_open_request);
	tcase_add_test(tc, test_leaky_counts_clean_requests);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(cli_suite(), NULL);
}
