/*
 * test_outage.c: a daemon that dies leaves a window no report calls
 * complete.
 *
 * Clients that run through a daemon's death send again what was not
 * acknowledged (test_crash.c counts that exact), but a client that ends
 * while no daemon listens can report neither its records nor its drops.
 * So the daemon notes its own run in the database (daemon/store_runs.c),
 * its successor marks a run that never finished, and `ctxleak summary`
 * names the window instead of saying "the counts are complete".  Likewise
 * a process that ended without saying CLOSE (killed): what it still held
 * is lost, and the report names it.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "cli_run.h"
#include "ctxleak.h"
#include "harness.h"

static int one_request(void *arg)
{
	uint64_t x = ctxleak_begin("GET /outage");

	(void)arg;
	ctxleak_tag("k", "v");
	ctxleak_end(x);
	return 0;
}

/* A daemon that records one client, then dies (kill9) or stops. */
static void first_life(struct harness_daemon *d, int kill9)
{
	ck_assert_msg(harness_start(d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(d, CTXLEAK_BACKEND_THREAD,
					one_request, NULL),
			 0);
	ck_assert_int_eq(harness_wait_int(d,
					  "SELECT count(*) FROM runs WHERE "
					  "last_commit_at IS NOT NULL",
					  1),
			 0);
	if (kill9)
		harness_kill(d);
	else
		ck_assert_int_eq(harness_stop(d), 0);
}

static struct run summary(const struct harness_daemon *d, const char *json)
{
	return run_env(NULL, "--db", d->db, "summary", json, NULL);
}

/* SIGKILL, then a second daemon on the same file: the first run is
 * marked, logged by its successor, and reported in text and JSON. */
/* The summary succeeds, says why (want), and does not call the counts
 * complete. */
static void summary_not_complete(const struct harness_daemon *d,
				 const char *want)
{
	struct run r = summary(d, NULL);

	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_msg(strstr(r.out, want) != NULL, "%s", r.out);
	ck_assert_ptr_null(strstr(r.out, "counts are complete"));
	run_free(&r);
}

START_TEST(test_dead_daemon_reported)
{
	struct harness_daemon d;
	struct run r;

	first_life(&d, 1);
	ck_assert_msg(harness_launch(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_wait_log(&d, "stopped without finishing", 1),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM runs"),
			 2);
	ck_assert_int_eq(harness_query_int(&d, "SELECT sum(unclean) FROM runs"),
			 1);
	summary_not_complete(&d, "died after its commit");
	r = summary(&d, "--json");
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.out, "\"daemon_pid\":") != NULL, "%s", r.out);
	run_free(&r);
	harness_cleanup(&d);
}
END_TEST

/* A process killed before it shut the library down: its last records
 * may have been in its buffers, so it is named, and the counts are not
 * called complete.  A process that shut down is not. */
static int killed_after_one(void *arg)
{
	(void)arg;
	one_request(NULL);
	ctxleak_flush();
	harness_sleep_ms(300); /* the daemon reads the batch */
	raise(SIGKILL);
	return 1;
}

START_TEST(test_vanished_process_reported)
{
	struct harness_daemon d;
	struct run r;

	ck_assert_msg(harness_start(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					one_request, NULL),
			 0);
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					killed_after_one, NULL),
			 128 + SIGKILL);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM processes"),
			 2);
	ck_assert_int_eq(
	    harness_query_int(&d, "SELECT sum(vanished) FROM processes"), 1);
	ck_assert_int_eq(harness_query_int(&d, "SELECT records FROM processes "
					       "WHERE vanished = 1"),
			 3);
	summary_not_complete(&d, "ended without closing");
	r = summary(&d, "--json");
	ck_assert_msg(strstr(r.out, "\"vanished\":true") != NULL, "%s", r.out);
	run_free(&r);
	harness_cleanup(&d);
}
END_TEST

/* An orderly stop and a restart leave nothing to report. */
START_TEST(test_orderly_restart_complete)
{
	struct harness_daemon d;
	struct run r;

	first_life(&d, 0);
	ck_assert_msg(harness_launch(&d, NULL) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT sum(unclean) FROM runs"),
			 0);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM runs "
					       "WHERE stopped_at IS NULL"),
			 0);
	r = summary(&d, NULL);
	ck_assert_msg(r.status == 0, "%s", r.err);
	ck_assert_msg(strstr(r.out, "counts are complete") != NULL, "%s",
		      r.out);
	run_free(&r);
	harness_cleanup(&d);
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite("outage",
			check_tcase("runs", 60, test_dead_daemon_reported,
				    test_orderly_restart_complete,
				    test_vanished_process_reported, NULL),
			NULL),
	    NULL);
}
