/*
 * test_demo.c: the headline of `make demo`, asserted on the real daemon.
 *
 * Each test runs one example worker (from $CTXLEAK_EXAMPLES) under one
 * backend against a fresh ctxleakd, stops the daemon so that everything is
 * committed, and reads the findings from its database.  The leaky
 * combinations must produce the classes that their programs make certain
 * (derived in each test); every task run, the thread-per-request server
 * under thread and the coroutines with their storage switched must produce
 * none, over data that arrived complete.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

/* Enough for several bursts, batches and rounds of every example. */
#define REQUESTS	    200
#define EXAMPLE_TIMEOUT_SEC 60
/* As in examples/coroutines.c and examples/event_loop.c. */
#define COROUTINE_BATCH 16
#define CONNECTIONS	16

struct run {
	const char *example;
	const char *backend;
	const char *flag; /* NULL or the example's option */
};

struct findings {
	int64_t lost, stale, bleed, overlap, misnest, unclosed, total;
	/* overlap or stale on a request's BEGIN: it began over another */
	int64_t began_over;
	char recommend[32]; /* the daemon's backend for the process */
};

/* Records each example sends, so that a test can tell a clean result from
 * data that did not arrive: each request's own, plus, for the event loop,
 * a resume and a suspend around each connection's close callback. */
static int64_t records_expected(const char *example)
{
	if (strcmp(example, "thread_per_request") == 0)
		return 8 * REQUESTS;
	if (strcmp(example, "thread_pool") == 0)
		return 12 * REQUESTS;
	if (strcmp(example, "event_loop") == 0)
		return 9 * REQUESTS + 2 * CONNECTIONS;
	return 13 * REQUESTS;
}

static const char *examples_dir(void)
{
	const char *dir = getenv("CTXLEAK_EXAMPLES");

	return dir && *dir ? dir : "build/examples";
}

static void exec_example(const struct harness_daemon *d, const struct run *r)
{
	char path[512], count[16];
	int null = open("/dev/null", O_WRONLY);

	if (null >= 0)
		dup2(null, STDOUT_FILENO);
	snprintf(path, sizeof(path), "%s/%s", examples_dir(), r->example);
	snprintf(count, sizeof(count), "%d", REQUESTS);
	setenv("CTXLEAK_SOCKET", d->socket, 1);
	setenv("CTXLEAK_BACKEND", r->backend, 1);
	setenv("CTXLEAK_APP", r->example, 1);
	unsetenv("CTXLEAK_DISABLE");
	if (r->flag)
		execl(path, r->example, r->flag, count, (char *)NULL);
	else
		execl(path, r->example, count, (char *)NULL);
	fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
	_exit(127);
}

/* The example's exit status; -1 when it outlived the timeout. */
static int run_example(const struct harness_daemon *d, const struct run *r)
{
	struct timespec tick = {0, 10 * 1000 * 1000};
	int status, waited;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		exec_example(d, r);
	for (waited = 0; waited < EXAMPLE_TIMEOUT_SEC * 100; waited++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status)
						 : 128 + WTERMSIG(status);
		nanosleep(&tick, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/* INT64_MIN on error, which no assertion below accepts. */
static int64_t count_class(const struct harness_daemon *d, const char *cls)
{
	char sql[128];

	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM leaks WHERE class = '%s'", cls);
	return harness_query_int(d, sql);
}

/* What the daemon stored about the one process of a run. */
struct stored {
	int example_status, daemon_status;
	int64_t processes, dropped, records, requests;
};

static void read_findings(const struct harness_daemon *d, struct findings *f)
{
	char *recommend;

	f->lost = count_class(d, "lost");
	f->stale = count_class(d, "stale");
	f->bleed = count_class(d, "bleed");
	f->overlap = count_class(d, "overlap");
	f->misnest = count_class(d, "misnest");
	f->unclosed = count_class(d, "unclosed");
	f->total = harness_query_int(d, "SELECT count(*) FROM leaks");
	f->began_over = harness_query_int(
	    d, "SELECT count(*) FROM leaks WHERE record = 'BEGIN' AND "
	       "name = 'GET /item' AND class IN ('overlap', 'stale')");
	recommend = harness_query_str(d, "SELECT recommend FROM processes");
	snprintf(f->recommend, sizeof(f->recommend), "%s",
		 recommend ? recommend : "(none)");
	free(recommend);
}

/*
 * Runs r against its own daemon and returns its findings, after checking
 * that the data is whole: one process, nothing dropped, every record and
 * every request stored.  Zero findings mean nothing unless the records
 * arrived.  Everything is read before the first assertion, so that a
 * failure leaves no daemon running.
 */
static struct findings run_under_daemon(const struct run *r)
{
	struct harness_daemon d;
	struct findings f;
	struct stored st;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	st.example_status = run_example(&d, r);
	st.daemon_status = harness_stop(&d);
	st.processes = harness_query_int(&d, "SELECT count(*) FROM processes");
	st.dropped = harness_query_int(&d, "SELECT dropped FROM processes");
	st.records = harness_query_int(&d, "SELECT records FROM processes");
	/* Rows of the leaky requests, counts of the clean ones. */
	st.requests = harness_query_int(
	    &d, "SELECT (SELECT count(*) FROM requests WHERE name = "
		"'GET /item') + (SELECT coalesce(sum(requests), 0) FROM "
		"request_stats WHERE name = 'GET /item')");
	read_findings(&d, &f);
	harness_cleanup(&d);

	ck_assert_msg(st.example_status == 0, "%s under %s exited %d",
		      r->example, r->backend, st.example_status);
	ck_assert_int_eq(st.daemon_status, 0);
	ck_assert_int_eq(st.processes, 1);
	ck_assert_int_eq(st.dropped, 0);
	ck_assert_int_eq(st.records, records_expected(r->example));
	ck_assert_int_eq(st.requests, REQUESTS);
	return f;
}

/* Every example but the thread-per-request server needs the task
 * backend, whichever backend it ran under; that one is clean under thread
 * and task alike (the daemon's what-if measures it). */
static void assert_recommends(const struct findings *f, const char *backend)
{
	ck_assert_str_eq(f->recommend, backend);
}

/* --------------------------------------------------------------- clean */

static const struct run clean_runs[] = {
    {"thread_per_request", "thread", NULL},
    {"thread_per_request", "task", NULL},
    {"thread_pool", "task", NULL},
    {"event_loop", "task", NULL},
    {"coroutines", "task", NULL},
    {"coroutines", "custom", "--fixed"},
};

START_TEST(test_clean)
{
	const struct run *r = &clean_runs[_i];
	struct findings f = run_under_daemon(r);

	ck_assert_msg(f.total == 0, "%s under %s%s%s: %lld findings",
		      r->example, r->backend, r->flag ? " " : "",
		      r->flag ? r->flag : "", (long long)f.total);
	assert_recommends(&f, strcmp(r->example, "thread_per_request") == 0
				  ? "thread,task"
				  : "task");
}
END_TEST

/* --------------------------------------------------------------- leaky */

/* Each burst's requests all begin before any of them goes on (the
 * barrier), so a begin finds another request of the burst, still open, in
 * the one global slot; how many do depends on how the begins race. */
START_TEST(test_thread_per_request_global)
{
	struct run r = {"thread_per_request", "global", NULL};
	struct findings f = run_under_daemon(&r);

	ck_assert_int_gt(f.overlap, 0);
	ck_assert_int_eq(f.unclosed, 0);
}
END_TEST

/*
 * The dispatcher begins every request and the workers end them, so a
 * worker's slot is never set: each job records its event, its child's
 * begin and its status tag with no context (3 lost) and ends its request
 * with nothing current (1 misnest).  The dispatcher's slot still holds the
 * request it queued last when it begins the next one: every request but
 * the first begins over it (overlap while open, stale once ended).
 */
START_TEST(test_thread_pool_thread)
{
	struct run r = {"thread_pool", "thread", NULL};
	struct findings f = run_under_daemon(&r);

	ck_assert_int_eq(f.lost, 3 * REQUESTS);
	ck_assert_int_eq(f.misnest, REQUESTS);
	ck_assert_int_eq(f.began_over, REQUESTS - 1);
	ck_assert_int_eq(f.bleed, 0);
	ck_assert_int_eq(f.unclosed, 0);
	assert_recommends(&f, "task");
}
END_TEST

/* One slot for all: the workers write into whichever request the
 * dispatcher began last (how often depends on the race), and the slot is
 * never empty again, so every request but the first begins over another. */
START_TEST(test_thread_pool_global)
{
	struct run r = {"thread_pool", "global", NULL};
	struct findings f = run_under_daemon(&r);

	ck_assert_int_eq(f.began_over, REQUESTS - 1);
	ck_assert_int_gt(f.bleed + f.lost, 0);
	ck_assert_int_eq(f.unclosed, 0);
	assert_recommends(&f, "task");
}
END_TEST

/*
 * With 16 connections in flight, a request begins while another waits for
 * its database (overlap), and a database reply runs while a later request
 * is in the loop's slot (bleed) and ends its request with that one current
 * (misnest): the worked example of DESIGN.md, many times over.  global
 * behaves as thread on one thread.
 */
static void assert_event_loop_leaks(const char *backend)
{
	struct run r = {"event_loop", backend, NULL};
	struct findings f = run_under_daemon(&r);

	ck_assert_int_gt(f.overlap, 0);
	ck_assert_int_gt(f.bleed, 0);
	ck_assert_int_gt(f.misnest, 0);
	ck_assert_int_eq(f.unclosed, 0);
	assert_recommends(&f, "task");
}

START_TEST(test_event_loop_thread)
{
	assert_event_loop_leaks("thread");
}
END_TEST

START_TEST(test_event_loop_global)
{
	assert_event_loop_leaks("global");
}
END_TEST

/*
 * One thread, round robin, no timing: the counts are exact.  A batch of k
 * coroutines begins its requests one after the other in a slot nobody
 * switches: each begin after the batch's first finds the previous one
 * open (k-1 overlap), the first finds the last batch's ended request
 * (stale, from the second batch on).  Resumed, each coroutine but the
 * batch's last begins its child under the last request begun (bleed) and
 * later tags its status there (bleed): 2(k-1).  Both of its ends find
 * another scope current (2 misnest).
 */
static void assert_coroutines_leak(const char *backend, const char *flag)
{
	struct run r = {"coroutines", backend, flag};
	struct findings f = run_under_daemon(&r);
	int64_t batches = (REQUESTS + COROUTINE_BATCH - 1) / COROUTINE_BATCH;

	ck_assert_int_eq(f.overlap, REQUESTS - batches);
	ck_assert_int_eq(f.stale, batches - 1);
	ck_assert_int_eq(f.bleed, 2 * (REQUESTS - batches));
	ck_assert_int_eq(f.misnest, 2 * REQUESTS);
	ck_assert_int_eq(f.lost, 0);
	ck_assert_int_eq(f.unclosed, 0);
	assert_recommends(&f, "task");
}

START_TEST(test_coroutines_thread)
{
	assert_coroutines_leak("thread", NULL);
}
END_TEST

START_TEST(test_coroutines_global)
{
	assert_coroutines_leak("global", NULL);
}
END_TEST

/* The naive scheduler's one variable is a global by another name. */
START_TEST(test_coroutines_custom_naive)
{
	assert_coroutines_leak("custom", NULL);
}
END_TEST

static Suite *demo_suite(void)
{
	Suite *s = suite_create("demo");
	TCase *clean = tcase_create("clean");
	TCase *leaky = tcase_create("leaky");

	tcase_set_timeout(clean, 120);
	tcase_add_loop_test(clean, test_clean, 0,
			    sizeof(clean_runs) / sizeof(clean_runs[0]));
	suite_add_tcase(s, clean);

	tcase_set_timeout(leaky, 120);
	tcase_add_test(leaky, test_thread_per_request_global);
	tcase_add_test(leaky, test_thread_pool_thread);
	tcase_add_test(leaky, test_thread_pool_global);
	tcase_add_test(leaky, test_event_loop_thread);
	tcase_add_test(leaky, test_event_loop_global);
	tcase_add_test(leaky, test_coroutines_thread);
	tcase_add_test(leaky, test_coroutines_global);
	tcase_add_test(leaky, test_coroutines_custom_naive);
	suite_add_tcase(s, leaky);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(demo_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
