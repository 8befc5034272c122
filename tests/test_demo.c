/*
 * test_demo.c: the headline of `make demo`, asserted on the real daemon.
 *
 * Each test runs one example worker (from $CTXLEAK_EXAMPLES) under one
 * backend against a fresh ctxleakd, stops the daemon so that everything is
 * committed, and reads the findings from its database.  The leaky
 * combinations must produce the classes that their programs make certain
 * (derived in each test); every task run, the thread-per-request server
 * under thread, the coroutines with their storage switched and the
 * auth pool with its thread-local set on every path (observed) or under
 * the library's own thread-local must produce none, over data that
 * arrived complete.  Last, examples/demo.sh itself: its closing table,
 * one run per example with the daemon's what-if beside it, must give for
 * each backend what the example gives when really run under it.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"

/* Enough for several bursts, batches and rounds of every example. */
#define REQUESTS	    200
#define EXAMPLE_TIMEOUT_SEC 60
/* As in examples/coroutines.c and examples/event_loop.c. */
#define COROUTINE_BATCH 16
#define CONNECTIONS	16
/* As in examples/auth_pool.c: one request in 5 is anonymous. */
#define ANON_EVERY 5

struct run {
	const char *example;
	const char *backend;
	const char *flag; /* NULL or the example's option */
};

struct findings {
	int64_t lost, stale, bleed, overlap, misnest, unclosed, total;
	/* overlap or stale on a request's BEGIN: it began over another */
	int64_t began_over;
	/* stale events filed under serve(), the caller of the logging
	 * helper that recorded them (CTXLEAK_SITE_HERE passed down) */
	int64_t stale_events_in_serve;
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
	if (strcmp(example, "auth_pool") == 0)
		return 3 * REQUESTS;
	return 13 * REQUESTS;
}

static void exec_example(const struct harness_daemon *d, const struct run *r)
{
	char path[512], count[16];
	int null = open("/dev/null", O_WRONLY);

	if (null >= 0)
		dup2(null, STDOUT_FILENO);
	snprintf(path, sizeof(path), "%s/%s", harness_examples_path(),
		 r->example);
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

/* The child's exit status; -1 when it outlived the timeout, after which
 * it gets sig (a shell gets SIGTERM, which its trap turns into cleanup). */
static int wait_child(pid_t pid, int sig)
{
	struct timespec tick = {0, 10 * 1000 * 1000};
	int status, waited;

	for (waited = 0; waited < EXAMPLE_TIMEOUT_SEC * 100; waited++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status)
						 : 128 + WTERMSIG(status);
		nanosleep(&tick, NULL);
	}
	kill(pid, sig);
	waitpid(pid, &status, 0);
	return -1;
}

/* The example's exit status; -1 when it outlived the timeout. */
static int run_example(const struct harness_daemon *d, const struct run *r)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		exec_example(d, r);
	return wait_child(pid, SIGKILL);
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
	f->stale_events_in_serve = harness_query_int(
	    d, "SELECT count(*) FROM leaks JOIN sites ON sites.id = "
	       "leaks.site_id WHERE class = 'stale' AND record = 'EVENT' "
	       "AND func = 'serve'");
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

/* Every example but the thread-per-request server and the auth pool (a
 * pool of its own, each request on one worker from begin to end) needs
 * the task backend, whichever backend it ran under; those two are clean
 * under thread and task alike (the daemon's what-if measures it). */
static void assert_recommends(const struct findings *f, const char *backend)
{
	ck_assert_str_eq(f->recommend, backend);
}

/* Thread and task keep each request on its thread apart; global does too
 * when no two requests happened to be open at once, which depends on the
 * scheduling. */
static void assert_recommends_thread_task(const struct findings *f)
{
	ck_assert_msg(strcmp(f->recommend, "thread,task") == 0 ||
			  strcmp(f->recommend, "thread,global,task") == 0,
		      "recommended %s", f->recommend);
}

/* --------------------------------------------------------------- clean */

static const struct run clean_runs[] = {
    {"thread_per_request", "thread", NULL},
    {"thread_per_request", "task", NULL},
    {"thread_pool", "task", NULL},
    {"event_loop", "task", NULL},
    {"coroutines", "task", NULL},
    {"coroutines", "custom", "--fixed"},
    {"auth_pool", "observe", "--fixed"},
    /* The bug is there, but the library's own thread-local follows begin
     * and end and never reads the service's: nothing to see. */
    {"auth_pool", "thread", NULL},
};

START_TEST(test_clean)
{
	const struct run *r = &clean_runs[_i];
	struct findings f = run_under_daemon(r);

	ck_assert_msg(f.total == 0, "%s under %s%s%s: %lld findings",
		      r->example, r->backend, r->flag ? " " : "",
		      r->flag ? r->flag : "", (long long)f.total);
	if (strcmp(r->example, "thread_per_request") == 0 ||
	    strcmp(r->example, "auth_pool") == 0)
		assert_recommends_thread_task(&f);
	else
		assert_recommends(&f, "task");
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
 * The dispatcher begins every request and the workers end them.  The
 * dispatcher's slot still holds the request it queued last when it
 * begins the next one: every request but the first begins over it
 * (overlap while open, stale once ended).  A worker's END finds its own
 * slot holding something else (misnest), and restores the request's
 * saved pair into it: the request the dispatcher held at its begin.  So
 * a job runs with an empty slot only as its worker's first, or after its
 * worker ended the first request (whose saved pair is empty): its event,
 * child begin and status tag are lost (3 each); later jobs record under
 * an older request (stale or bleed, as the race falls).
 */
START_TEST(test_thread_pool_thread)
{
	struct run r = {"thread_pool", "thread", NULL};
	struct findings f = run_under_daemon(&r);

	ck_assert_int_eq(f.misnest, REQUESTS);
	ck_assert_int_eq(f.began_over, REQUESTS - 1);
	ck_assert_int_eq(f.lost % 3, 0);
	ck_assert_int_ge(f.lost, 3);
	ck_assert_int_le(f.lost, 3 * (4 + 1)); /* 4 workers */
	ck_assert_int_gt(f.stale + f.bleed, f.began_over);
	ck_assert_int_eq(f.unclosed, 0);
	assert_recommends(&f, "task");
}
END_TEST

/* One slot for all: the workers write into whichever request the
 * dispatcher began last, and each worker's END puts back what the slot
 * held at that request's begin, so how often a request begins over
 * another depends on the race. */
START_TEST(test_thread_pool_global)
{
	struct run r = {"thread_pool", "global", NULL};
	struct findings f = run_under_daemon(&r);

	ck_assert_int_gt(f.began_over, 0);
	ck_assert_int_le(f.began_over, REQUESTS - 1);
	ck_assert_int_gt(f.bleed + f.lost + f.stale, 0);
	ck_assert_int_eq(f.unclosed, 0);
	assert_recommends(&f, "task");
}
END_TEST

/*
 * With 16 connections in flight, a request begins while another waits for
 * its database (overlap), and a database reply runs while a later request
 * is in the loop's slot (bleed) and ends its request with that one current
 * (misnest): the worked example of docs/DESIGN.md, many times over.  global
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

/*
 * The service's own thread-local, observed: request i goes to worker
 * i % 4 and is anonymous when i % 5 == 4, so each worker's first request
 * is signed in and every anonymous request finds the storage holding its
 * worker's last signed-in request, ended: stale on its BEGIN, stale on its
 * log event, misnest on its END (examples/auth_pool.c derives it).  The
 * events are filed under the line of serve() that logged them, not under
 * the helper that recorded them.
 */
START_TEST(test_auth_pool_observe)
{
	struct run r = {"auth_pool", "observe", NULL};
	struct findings f = run_under_daemon(&r);
	int64_t anonymous = REQUESTS / ANON_EVERY;

	ck_assert_int_eq(f.stale, 2 * anonymous);
	ck_assert_int_eq(f.began_over, anonymous);
	ck_assert_int_eq(f.stale_events_in_serve, anonymous);
	ck_assert_int_eq(f.misnest, anonymous);
	ck_assert_int_eq(f.total, 3 * anonymous);
	/* What the library would keep: clean under thread and task. */
	assert_recommends_thread_task(&f);
}
END_TEST

/* ---------------------------------------------------------------- demo */

/*
 * examples/demo.sh itself, at REQUESTS per run: its closing table comes
 * from one run per example, each with the storage it would use, and its
 * what-if columns must say what the same example gives when really run
 * under that backend.
 */

#define DEMO_ROWS 16

/* A row of the demo's closing table. */
struct demo_row {
	char run[64];	  /* example/storage, as the run reported */
	long long ran;	  /* findings of the storage it ran with */
	long long thread; /* what-if totals of the library's backends */
	long long global;
	long long task;
	char clean[64]; /* the backends with no finding, "thread, task" */
};

/* What the demo printed and left behind. */
struct demo {
	struct harness_daemon d; /* its directory and database; no daemon */
	int status;		 /* the demo's exit status */
	int nrows;
	struct demo_row rows[DEMO_ROWS];
};

/* The build directory: where the examples are, one level up. */
static void build_dir(char *out, size_t len)
{
	char *slash;

	snprintf(out, len, "%s", harness_examples_path());
	slash = strrchr(out, '/');
	if (slash)
		*slash = '\0';
	else
		snprintf(out, len, ".");
}

static void exec_demo(const struct demo *dm)
{
	char build[512], out[192], count[16];
	int fd;

	build_dir(build, sizeof(build));
	snprintf(out, sizeof(out), "%s/demo.out", dm->d.dir);
	snprintf(count, sizeof(count), "%d", REQUESTS);
	fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd >= 0)
		dup2(fd, STDOUT_FILENO);
	setenv("DEMO_DIR", dm->d.dir, 1);
	setenv("DEMO_REQUESTS", count, 1);
	unsetenv("CTXLEAK_BACKEND");
	unsetenv("CTXLEAK_DISABLE");
	execl("/bin/sh", "sh", "examples/demo.sh", build, (char *)NULL);
	fprintf(stderr, "exec sh examples/demo.sh: %s\n", strerror(errno));
	_exit(127);
}

/* The rows under the table's header line, up to the blank line after. */
static void read_table(struct demo *dm)
{
	char path[192], line[512];
	int in_table = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/demo.out", dm->d.dir);
	if ((f = fopen(path, "r")) == NULL)
		return;
	while (fgets(line, sizeof(line), f) && dm->nrows < DEMO_ROWS) {
		struct demo_row *r = &dm->rows[dm->nrows];

		if (strncmp(line, "run (example/storage)", 21) == 0) {
			in_table = 1;
			continue;
		}
		if (!in_table)
			continue;
		if (sscanf(line, "%63s %lld %lld %lld %lld %63[^\n]", r->run,
			   &r->ran, &r->thread, &r->global, &r->task,
			   r->clean) != 6)
			break;
		dm->nrows++;
	}
	fclose(f);
}

/* Runs the demo and reads its table; the caller reads what else it needs
 * from the database, then calls harness_cleanup before any assertion. */
static void run_demo(struct demo *dm)
{
	pid_t pid;

	memset(dm, 0, sizeof(*dm));
	ck_assert_msg(harness_prepare(&dm->d) == 0, "%s", harness_error());
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		exec_demo(dm);
	dm->status = wait_child(pid, SIGTERM);
	read_table(dm);
}

static const struct demo_row *demo_row(const struct demo *dm, const char *run)
{
	for (int i = 0; i < dm->nrows; i++)
		if (strcmp(dm->rows[i].run, run) == 0)
			return &dm->rows[i];
	ck_abort_msg("no row %s in the demo's table", run);
	return NULL;
}

/* What the demo's database holds of run's what-if for backend: per class,
 * in the order of struct findings. */
static void demo_what_if(const struct demo *dm, const char *run,
			 const char *backend, struct findings *f)
{
	static const char *const classes[] = {"lost",	 "stale",   "bleed",
					      "overlap", "misnest", "unclosed"};
	int64_t *n[] = {&f->lost,    &f->stale,	  &f->bleed,
			&f->overlap, &f->misnest, &f->unclosed};
	char sql[320];

	memset(f, 0, sizeof(*f));
	for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
		snprintf(
		    sql, sizeof(sql),
		    "SELECT coalesce(sum(w.count), 0) FROM what_if w JOIN "
		    "processes p ON p.id = w.process_id WHERE p.app = '%s' "
		    "AND w.backend = '%s' AND w.class = '%s'",
		    run, backend, classes[i]);
		*n[i] = harness_query_int(&dm->d, sql);
		f->total += *n[i];
	}
}

static void assert_same_classes(const struct findings *a,
				const struct findings *b, const char *what)
{
	ck_assert_msg(
	    a->lost == b->lost && a->stale == b->stale &&
		a->bleed == b->bleed && a->overlap == b->overlap &&
		a->misnest == b->misnest && a->unclosed == b->unclosed,
	    "%s: lost/stale/bleed/overlap/misnest what-if "
	    "%lld/%lld/%lld/%lld/%lld, run %lld/%lld/%lld/%lld/%lld",
	    what, (long long)a->lost, (long long)a->stale, (long long)a->bleed,
	    (long long)a->overlap, (long long)a->misnest, (long long)b->lost,
	    (long long)b->stale, (long long)b->bleed, (long long)b->overlap,
	    (long long)b->misnest);
}

/*
 * The coroutines are exact (one thread, round robin, no timing): the demo
 * ran them once, under their own storage, and its thread, global and task
 * columns, and the what-if rows behind them class by class, must equal
 * the findings of the example really run under each backend, for the
 * naive scheduler and the fixed one alike (the what-if does not depend
 * on the storage the process used).  The event loop's interleaving
 * follows its timers, so two of its runs may differ by a finding: within
 * its one run, the column of thread (the backend it ran with) equals the
 * findings it had, global equals thread (one thread), and task is clean
 * as its own task run is.  In every row, task is clean; where the run's
 * storage was a library backend, its column is the run's own findings.
 */
START_TEST(test_demo_table)
{
	static const char *const backends[] = {"thread", "global", "task"};
	static const char *const coroutine_runs[] = {"coroutines/custom",
						     "coroutines/custom-fixed"};
	struct demo dm;
	struct findings real[3], what_if[3][2], event_task;
	const struct demo_row *r;
	int64_t anonymous = REQUESTS / ANON_EVERY;

	run_demo(&dm);
	for (int b = 0; b < 3; b++)
		for (int k = 0; k < 2; k++)
			demo_what_if(&dm, coroutine_runs[k], backends[b],
				     &what_if[b][k]);
	harness_cleanup(&dm.d);
	ck_assert_msg(dm.status == 0, "demo exited %d", dm.status);
	ck_assert_int_eq(dm.nrows, 7);

	for (int b = 0; b < 3; b++) {
		struct run run = {"coroutines", backends[b], NULL};
		char what[64];

		real[b] = run_under_daemon(&run);
		for (int k = 0; k < 2; k++) {
			snprintf(what, sizeof(what), "%s under %s",
				 coroutine_runs[k], backends[b]);
			assert_same_classes(&what_if[b][k], &real[b], what);
		}
	}
	for (int k = 0; k < 2; k++) {
		r = demo_row(&dm, coroutine_runs[k]);
		ck_assert_int_eq(r->thread, real[0].total);
		ck_assert_int_eq(r->global, real[1].total);
		ck_assert_int_eq(r->task, real[2].total);
		ck_assert_str_eq(r->clean, "task");
	}
	ck_assert_int_gt(real[0].total, 0);
	ck_assert_int_eq(real[2].total, 0);
	/* The naive scheduler's slot behaves as global; the fixed one's is
	 * clean. */
	ck_assert_int_eq(demo_row(&dm, "coroutines/custom")->ran,
			 real[1].total);
	ck_assert_int_eq(demo_row(&dm, "coroutines/custom-fixed")->ran, 0);

	{
		struct run run = {"event_loop", "task", NULL};

		event_task = run_under_daemon(&run);
	}
	r = demo_row(&dm, "event_loop/thread");
	ck_assert_int_gt(r->ran, 0);
	ck_assert_int_eq(r->thread, r->ran);
	ck_assert_int_eq(r->global, r->thread);
	ck_assert_int_eq(r->task, event_task.total);
	ck_assert_str_eq(r->clean, "task");

	r = demo_row(&dm, "thread_pool/thread");
	ck_assert_int_gt(r->ran, 0);
	ck_assert_int_eq(r->thread, r->ran);
	ck_assert_str_eq(r->clean, "task");

	r = demo_row(&dm, "thread_per_request/thread");
	ck_assert_int_eq(r->ran, 0);
	ck_assert_int_eq(r->thread, 0);
	ck_assert_msg(strcmp(r->clean, "thread, task") == 0 ||
			  strcmp(r->clean, "thread, global, task") == 0,
		      "clean under %s", r->clean);

	/* The pool's own thread-local, observed: its bug, 3 findings per
	 * anonymous request (test_auth_pool_observe); the library's
	 * thread-local would have had none. */
	r = demo_row(&dm, "auth_pool/observe");
	ck_assert_int_eq(r->ran, 3 * anonymous);
	ck_assert_int_eq(r->thread, 0);
	ck_assert_int_eq(demo_row(&dm, "auth_pool/observe-fixed")->ran, 0);

	for (int i = 0; i < dm.nrows; i++)
		ck_assert_int_eq(dm.rows[i].task, 0);
}
END_TEST

int main(void)
{
	TCase *clean = check_tcase("clean", 120, NULL);

	tcase_add_loop_test(clean, test_clean, 0,
			    sizeof(clean_runs) / sizeof(clean_runs[0]));
	return check_main(
	    check_suite(
		"demo", clean,
		check_tcase("leaky", 120, test_thread_per_request_global,
			    test_thread_pool_thread, test_thread_pool_global,
			    test_event_loop_thread, test_event_loop_global,
			    test_coroutines_thread, test_coroutines_global,
			    test_coroutines_custom_naive,
			    test_auth_pool_observe, NULL),
		check_tcase("demo", 180, test_demo_table, NULL), NULL),
	    NULL);
}
