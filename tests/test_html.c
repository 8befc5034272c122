/*
 * test_html.c: `ctxleak show REQUEST --html FILE`, rendered by a real
 * browser.  The real ctxleakd (--keep=all) records the worked example of
 * docs/DESIGN.md under the thread backend while three other threads run
 * thousands of clean requests in the middle of it; the page of GET /b is
 * then loaded in headless Chromium (Debian's chromium, which .ci/deps
 * installs), and the DOM it built must hold exactly what the database
 * says: one lane expanded for the thread the involved requests ran on,
 * one folded lane per other thread, a scope bar per BEGIN of the involved
 * requests, a mark per TAG and EVENT, a flag per finding linked to its
 * row of evidence; no console error; and the clean requests summarised,
 * not drawn one by one.
 *
 * Without chromium on the machine the test says so and skips.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "cli_run.h"
#include "ctxleak.h"
#include "harness_check.h"

/* Clean requests per background thread, each 4 records: with 3 threads,
 * thousands of records the picture must not draw one by one. */
#define CLEAN_PER_THREAD 700
#define CLEAN_THREADS	 3

/* A tag value that would be markup if written raw. */
#define MARKUP_VALUE "<img src=x onerror=alert(1)>&\"'"

static struct harness_daemon daemon_;
static char dir[64]; /* the pages and the browser's profile */

static void markup_tag(void)
{
	ctxleak_tag("html", MARKUP_VALUE);
}

static void *clean_requests(void *arg)
{
	(void)arg;
	for (int i = 0; i < CLEAN_PER_THREAD; i++) {
		uint64_t ctx = ctxleak_begin("GET /clean");

		ctxleak_tag("i", "x");
		ctxleak_event("done", "ok");
		ctxleak_end(ctx);
		/* Keep the client's buffer from dropping any. */
		if (i % 50 == 49)
			ctxleak_flush();
	}
	return NULL;
}

/* Between the worked example's steps 2 and 3: inside its time window. */
static int busy_threads(void *arg)
{
	pthread_t t[CLEAN_THREADS];

	(void)arg;
	for (int i = 0; i < CLEAN_THREADS; i++)
		if (pthread_create(&t[i], NULL, clean_requests, NULL))
			return 1;
	for (int i = 0; i < CLEAN_THREADS; i++)
		pthread_join(t[i], NULL);
	return 0;
}

static struct harness_example busy_example = {
    .tag_a = markup_tag,
    .between = busy_threads,
};

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ctxleak-html-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	START(&daemon_, "--keep", "all");
	ck_assert_int_eq(harness_client(&daemon_, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, &busy_example),
			 0);
	ck_assert_int_eq(harness_stop(&daemon_), 0);
	ck_assert_int_eq(query_int(&daemon_, "SELECT count(*) FROM leaks"), 7);
}

static void teardown(void)
{
	char cmd[128];

	harness_cleanup(&daemon_);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ------------------------------------------------------------ browser */

static int have_chromium(void)
{
	return system("command -v chromium >/dev/null 2>&1") == 0;
}

/* Loads file in headless Chromium; *dom gets the DOM it built, *log its
 * stderr (console messages included).  Returns the exit status. */
static int chromium(const char *file, char **dom, char **log)
{
	char url[256], profile[128], out[128], err[128];
	char *argv[] = {"chromium",
			"--headless",
			"--no-sandbox",
			"--disable-gpu",
			"--disable-background-networking",
			"--disable-component-update",
			"--disable-sync",
			"--no-first-run",
			profile,
			"--enable-logging=stderr",
			"--v=0",
			"--dump-dom",
			url,
			NULL};
	pid_t pid;
	int st;

	snprintf(url, sizeof(url), "file://%s", file);
	/* A fresh profile each time: nothing carried over. */
	snprintf(profile, sizeof(profile), "--user-data-dir=%s/profile-%d", dir,
		 rand());
	snprintf(out, sizeof(out), "%s/dom.html", dir);
	snprintf(err, sizeof(err), "%s/chromium.log", dir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (!freopen(out, "w", stdout) || !freopen(err, "w", stderr))
			_exit(126);
		execvp(argv[0], argv);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	*dom = read_file_at(out);
	*log = read_file_at(err);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Occurrences of needle in s. */
static int count(const char *s, const char *needle)
{
	int n = 0;

	for (; (s = strstr(s, needle)); s += strlen(needle))
		n++;
	return n;
}

/* Console messages at warning level or worse, and uncaught exceptions:
 * Chromium logs them as "...:WARNING:CONSOLE(...)" or "ERROR:CONSOLE". */
static void assert_no_console_error(const char *log)
{
	for (const char *p = log; (p = strstr(p, ":CONSOLE")); p++) {
		const char *bol = p;

		while (bol > log && bol[-1] != '\n')
			bol--;
		ck_assert_msg(strncmp(p - 4, "INFO", 4) == 0, "console: %.*s",
			      (int)(strchrnul(p, '\n') - bol), bol);
	}
	ck_assert_msg(strstr(log, "Uncaught") == NULL, "%s", log);
}

/* ------------------------------------------------------------ tests */

/* Each thread of clean requests is one line that counts its records and
 * requests, as the database does. */
static void assert_folded_lanes(const char *dom)
{
	char tids[256], want[128], *save = NULL;
	char *list = harness_query_str(
	    &daemon_, "SELECT group_concat(tid) FROM (SELECT DISTINCT tid"
		      " FROM records WHERE name = 'GET /clean')");

	ck_assert_ptr_nonnull(list);
	snprintf(tids, sizeof(tids), "%s", list);
	free(list);
	for (char *t = strtok_r(tids, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		snprintf(want, sizeof(want),
			 "thread %s: %lld records of %lld other requests", t,
			 (long long)query_int(&daemon_,
					      "SELECT count(*) FROM records"
					      " WHERE tid = %s",
					      t),
			 (long long)query_int(&daemon_,
					      "SELECT count(DISTINCT"
					      " request_id) FROM records"
					      " WHERE tid = %s",
					      t));
		ck_assert_msg(strstr(dom, want), "no \"%s\"", want);
	}
}

/* The involved requests of GET /b, as `show` lists them, for SQL. */
static void involved(char *ids, size_t len)
{
	struct run r = run("--db", daemon_.db, "show", "--json", "GET /b");
	const char *p = strstr(r.out, "\"request\":{\"id\":");
	size_t n;

	ck_assert_msg(r.status == 0 && p, "%s", r.err);
	n = (size_t)snprintf(ids, len, "%lld",
			     atoll(p + strlen("\"request\":{\"id\":")));
	p = strstr(r.out, "\"related\":[");
	ck_assert_ptr_nonnull(p);
	while ((p = strstr(p, "{\"id\":")) && n < len) {
		p += strlen("{\"id\":");
		n += (size_t)snprintf(ids + n, len - n, ",%lld", atoll(p));
	}
	run_free(&r);
}

START_TEST(test_html_in_chromium)
{
	char page[128], ids[256], *dom, *log, want[64];
	long long begins, tags, events, findings, drawn_tids, tids, records;
	struct run r;
	struct stat st;

	if (!have_chromium()) {
		printf("test_html_in_chromium: SKIPPED: no chromium on PATH "
		       "(Debian's chromium; `make deps` as root installs "
		       "it)\n");
		return;
	}
	snprintf(page, sizeof(page), "%s/b.html", dir);
	r = run("--db", daemon_.db, "show", "GET /b", "--html", page);
	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_msg(strstr(r.out, page), "%s", r.out); /* says where */
	run_free(&r);
	involved(ids, sizeof(ids));
	begins = query_int(&daemon_,
			   "SELECT count(*) FROM records WHERE type = 'BEGIN'"
			   " AND request_id IN (%s)",
			   ids);
	tags = query_int(&daemon_,
			 "SELECT count(*) FROM records WHERE type = 'TAG'"
			 " AND request_id IN (%s)",
			 ids);
	events = query_int(&daemon_,
			   "SELECT count(*) FROM records WHERE type = 'EVENT'"
			   " AND request_id IN (%s)",
			   ids);
	drawn_tids = query_int(&daemon_,
			       "SELECT count(DISTINCT tid) FROM records"
			       " WHERE request_id IN (%s)",
			       ids);
	findings = query_int(&daemon_,
			     "SELECT count(*) FROM leaks WHERE %lld IN"
			     " (victim_request_id, source_request_id)",
			     atoll(ids)); /* the first id is GET /b's */
	tids = query_int(&daemon_, "SELECT count(DISTINCT tid) FROM records");
	records = query_int(&daemon_, "SELECT count(*) FROM records");
	ck_assert_int_eq(drawn_tids, 1); /* the event loop's thread */
	ck_assert_int_eq(tids, 1 + CLEAN_THREADS);
	ck_assert_int_ge(records, 3000);
	ck_assert_int_gt(findings, 0);

	ck_assert_int_eq(chromium(page, &dom, &log), 0);
	assert_no_console_error(log);
	/* The script ran to its end and said so on the console. */
	ck_assert_msg(strstr(dom, "data-ready=\"1\""), "%s", dom);
	snprintf(want, sizeof(want),
		 "ctxleak: timeline drawn: %lld lanes, "
		 "%lld findings",
		 tids, findings);
	ck_assert_msg(strstr(log, want), "%s", log);
	ck_assert_int_eq(count(dom, "<g class=\"lane expanded\""), drawn_tids);
	ck_assert_int_eq(count(dom, "<g class=\"lane collapsed\""),
			 tids - drawn_tids);
	ck_assert_int_eq(count(dom, "<rect class=\"scope"), begins);
	ck_assert_int_eq(count(dom, "<g class=\"mark tag"), tags);
	ck_assert_int_eq(count(dom, "<g class=\"mark event"), events);
	ck_assert_int_eq(count(dom, "<a class=\"finding "), findings);
	ck_assert_int_eq(count(dom, "<tr class=\"evidence\""), findings);
	ck_assert_int_eq(count(dom, "<a class=\"finding overlap\""), 1);
	/* Each flag's link lands on its row, which has the fix. */
	for (const char *p = dom; (p = strstr(p, "<a class=\"finding ")); p++) {
		const char *href = strstr(p, "href=\"#f");

		ck_assert_ptr_nonnull(href);
		snprintf(want, sizeof(want),
			 "<tr class=\"evidence\" id=\"f%lld\"",
			 atoll(href + strlen("href=\"#f")));
		ck_assert_msg(strstr(dom, want), "no %s", want);
	}
	ck_assert_ptr_nonnull(strstr(dom, "one storage slot is shared"));
	/* The victim and source are named as such. */
	ck_assert_int_eq(count(dom, "<li class=\"req"), count(ids, ",") + 1);
	ck_assert_ptr_nonnull(strstr(dom, "<li class=\"req shown victim"));
	ck_assert_ptr_nonnull(strstr(dom, "class=\"badge source\""));
	/* Thousands of other records, summarised: a bounded number of
	 * elements, whatever their count. */
	ck_assert_msg(count(dom, "<rect") < 600, "%d rects",
		      count(dom, "<rect"));
	assert_folded_lanes(dom);
	/* Client bytes are text, never markup. */
	ck_assert_ptr_null(strstr(dom, "<img"));
	free(dom);
	free(log);
	ck_assert_int_eq(stat(page, &st), 0);
	printf("html: %lld records in the database, %lld drawn one by one; "
	       "the page is %lld bytes\n",
	       records, begins + tags + events, (long long)st.st_size);
}
END_TEST

/* The page needs no browser to be right about what it may fetch:
 * nothing.  No http(s) URL and no src or href attribute that leaves the
 * page. */
START_TEST(test_html_self_contained)
{
	char page[128], *html;
	struct run r;

	snprintf(page, sizeof(page), "%s/a.html", dir);
	r = run("--db", daemon_.db, "show", "GET /a", "--html", page);
	ck_assert_msg(r.status == 0, "%s", r.err);
	run_free(&r);
	html = read_file_at(page);
	ck_assert_ptr_null(strstr(html, "http:"));
	ck_assert_ptr_null(strstr(html, "https:"));
	ck_assert_ptr_null(strstr(html, "src=\""));
	ck_assert_int_eq(count(html, "href=\""), count(html, "href=\"#f"));
	ck_assert_ptr_nonnull(strstr(html, "default-src 'none'"));
	ck_assert_ptr_nonnull(
	    strstr(html, "&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#39;"));
	free(html);
	/* Not found: exit 4, and nothing written. */
	snprintf(page, sizeof(page), "%s/none.html", dir);
	r = run("--db", daemon_.db, "show", "no such", "--html", page);
	ck_assert_int_eq(r.status, 4);
	ck_assert_int_ne(access(page, F_OK), 0);
	run_free(&r);
}
END_TEST

static Suite *html_suite(void)
{
	Suite *s = suite_create("html");
	TCase *tc;

	/* A browser's start on a loaded machine: generous. */
	tc = check_tcase("chromium", 120, NULL);
	tcase_add_unchecked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_html_self_contained);
	tcase_add_test(tc, test_html_in_chromium);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(html_suite(), NULL);
}
