/*
 * test_late.c: what is judged after a request ended or retired, through
 * the real daemon: late work (a request's own context after it ended) is
 * no finding but is counted on its row and marked by `ctxleak show`; a
 * finding judged after its victim or source retired reaches that
 * request's row, which a request that retired clean gets then; an END
 * with nothing current is no misnest for a process that observes its own
 * storage.  The real client library in forked children, raw connections
 * where a storage must hold what no library-kept backend would.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "cli_run.h"
#include "ctxleak.h"
#include "harness_check.h"
#include "proto.h"
#include "raw.h"

/* `ctxleak --db DB show ID`: its stdout, or fail. */
static char *show(const struct harness_daemon *d, int64_t id)
{
	char ids[24];
	struct run r;

	snprintf(ids, sizeof ids, "%lld", (long long)id);
	r = run("--db", d->db, "show", ids);
	ck_assert_msg(r.status == 0, "%s", r.err);
	free(r.err);
	return r.out;
}

/* Columns of request id's row, as one string, are want. */
static void row_is(const struct harness_daemon *d, int64_t id,
		   const char *columns, const char *want)
{
	char sql[512], *got;

	snprintf(sql, sizeof sql, "SELECT %s FROM requests WHERE id = %lld",
		 columns, (long long)id);
	got = harness_query_str(d, sql);
	ck_assert_msg(got != NULL && strcmp(got, want) == 0,
		      "%s: '%s', expected '%s'", sql, got ? got : "(none)",
		      want);
	free(got);
}

/* ------------------------------------------------------------ late work */

#define JOBS 20

/*
 * Each request starts a background job and ends; the jobs run after all
 * of them ended (and, past the flush's watermark, retired), resumed in
 * their request's context as the task backend carries it.
 */
static int background_jobs(void *arg)
{
	uint64_t token[JOBS];

	(void)arg;
	for (int i = 0; i < JOBS; i++) {
		uint64_t rq = ctxleak_begin("POST /job");

		ctxleak_tag("user", "alice");
		token[i] = ctxleak_capture();
		ctxleak_end(rq);
	}
	ctxleak_flush();
	for (int i = 0; i < JOBS; i++) {
		ctxleak_resume(token[i]);
		ctxleak_event("job.done", "ok");
		ctxleak_suspend();
	}
	return 0;
}

START_TEST(test_late_work_under_task)
{
	struct harness_daemon d;
	int64_t id;
	char *out;

	START(&d, "--keep", "all");
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_TASK, background_jobs, NULL), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), JOBS);
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM requests WHERE late = 1"),
	    JOBS);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records WHERE "
				       "late = 1 AND type = 'EVENT'"),
			 JOBS);
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM records WHERE late IS NOT 1 "
			  "AND type = 'EVENT'"),
	    0);
	/* BEGIN, TAG, END, and its job's RESUME, EVENT, SUSPEND. */
	ck_assert_int_eq(query_int(&d, "SELECT max(records) FROM requests"), 6);
	ck_assert_int_eq(query_int(&d, "SELECT min(records) FROM requests"), 6);
	id = query_int(&d, "SELECT min(id) FROM requests");
	out = show(&d, id);
	ck_assert_msg(strstr(out, "late work") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "(1 late work)") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "stale") == NULL, "%s", out);
	free(out);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------ late rows */

/*
 * Under thread, request A ends clean and retires; then its callbacks run
 * while B is current on the thread (two bleeds, victim A, source B), and
 * once more after B ended (lost, victim A).  Every one is judged after A
 * retired without a row.
 */
static int late_callbacks(void *arg)
{
	uint64_t a, b, token;

	(void)arg;
	a = ctxleak_begin("GET /a");
	token = ctxleak_capture();
	ctxleak_end(a);
	ctxleak_flush();
	b = ctxleak_begin("GET /b");
	ctxleak_resume(token);
	ctxleak_event("db.done", "late");
	ctxleak_tag("status", "200");
	ctxleak_suspend();
	ctxleak_end(b);
	ctxleak_flush();
	ctxleak_resume(token);
	ctxleak_event("cache.done", "later");
	ctxleak_suspend();
	return 0;
}

START_TEST(test_late_findings_on_rows)
{
	struct harness_daemon d;
	int64_t a, b;

	START(&d, "--keep", "leaky");
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_THREAD, late_callbacks, NULL),
	    0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 3);
	a = query_int(&d, "SELECT id FROM requests WHERE name = 'GET /a'");
	b = query_int(&d, "SELECT id FROM requests WHERE name = 'GET /b'");
	/* A: 2 bleed + 1 lost as victim; records: BEGIN, END, then 2 x
	 * (RESUME, SUSPEND) and the 3 findings' records. */
	row_is(&d, a,
	       "leaks || '|' || bleed || '|' || lost || '|' || "
	       "source_of || '|' || records",
	       "3|2|1|0|9");
	row_is(&d, b, "leaks || '|' || source_of", "0|2");
	/* Every row agrees with the findings that name it. */
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM requests r WHERE leaks != "
			  "(SELECT count(*) FROM leaks WHERE "
			  "victim_request_id = r.id) OR source_of != "
			  "(SELECT count(*) FROM leaks WHERE "
			  "source_request_id = r.id)"),
	    0);
	/* A was counted clean when it retired, and taken back: each
	 * request is counted once. */
	ck_assert_int_eq(query_int(&d, "SELECT coalesce(sum(requests), 0) "
				       "FROM request_stats"),
			 0);
	/* Its records are kept from the first finding that names it on:
	 * both bleeds, the first callback's SUSPEND, and all three of the
	 * second (RESUME, the lost EVENT, SUSPEND); not its BEGIN, END and
	 * first RESUME, judged while it was clean. */
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM records WHERE "
				   "request_id = %lld",
				   (long long)a),
			 6);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------ raw */

/* harness_send_hello's HELLO, with this backend. */
static void send_hello(int fd, uint64_t instance, const char *backend)
{
	struct proto_hello h = {
	    .version = PROTO_VERSION,
	    .instance = instance,
	    .pid = 4242,
	    .app = {"raw", 3},
	    .backend = {backend, (uint32_t)strlen(backend)},
	    .reason = {"test", 4},
	    .client = {"test_late", 9},
	};
	unsigned char buf[512];
	size_t n = proto_encode_hello(buf, sizeof buf, &h);

	ck_assert_uint_gt(n, 0);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
}

/* One raw connection under backend: HELLO, the n records, close. */
static void send_stream(const struct harness_daemon *d, uint64_t instance,
			const char *backend, const struct proto_record *recs,
			size_t n)
{
	int fd = raw_connect(d);

	send_hello(fd, instance, backend);
	for (size_t i = 0; i < n; i++)
		raw_send(fd, &recs[i]);
	close(fd);
}

/*
 * C ends clean and retires (the watermark); then D begins while the
 * storage still holds C: stale, victim D, source C.  C gets its row then,
 * and leaves request_stats.
 */
START_TEST(test_clean_source_gets_row)
{
	struct harness_daemon d;
	const struct proto_record recs[] = {
	    BEGIN(100, 7, 0xc1, 0, 0, "GET /c"),
	    END(101, 7, 0xc1, 0xc1, 0xc1),
	    WATERMARK(150),
	    BEGIN(200, 7, 0xd1, 0, 0xc1, "GET /d"),
	    END(201, 7, 0xd1, 0xd1, 0xd1),
	};

	START(&d, "--keep", "leaky");
	send_stream(&d, 77, "thread", recs, sizeof recs / sizeof recs[0]);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "class = 'stale'"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), 2);
	ck_assert_int_eq(query_int(&d, "SELECT source_of FROM requests WHERE "
				       "name = 'GET /c'"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM requests WHERE "
				       "name = 'GET /c'"),
			 2);
	ck_assert_int_eq(query_int(&d, "SELECT end_ts - begin_ts FROM "
				       "requests WHERE name = 'GET /c'"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT leaks FROM requests WHERE "
				       "name = 'GET /d'"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT coalesce(sum(requests), 0) "
				       "FROM request_stats"),
			 0);
	harness_cleanup(&d);
}
END_TEST

/*
 * The service clears its storage before the END (cur 0): no misnest
 * under observe, one under thread.  An END while another live request is
 * current is misnest under both.
 */
START_TEST(test_observe_end_cleared)
{
	struct harness_daemon d;
	const struct proto_record recs[] = {
	    BEGIN(100, 7, 0xa1, 0, 0, "GET /a"),
	    END(101, 7, 0xa1, 0xa1, 0),
	    BEGIN(200, 7, 0xb1, 0, 0, "GET /b"),
	    BEGIN(201, 8, 0xc1, 0, 0, "GET /c"),
	    END(202, 7, 0xb1, 0xb1, 0xc1),
	    END(203, 8, 0xc1, 0xc1, 0xc1),
	};
	const char *backend = _i ? "observe" : "thread";

	START(&d, "--keep", "all");
	send_stream(&d, 78, backend, recs, sizeof recs / sizeof recs[0]);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"),
			 _i ? 1 : 2);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "class = 'misnest' AND victim_name = "
				       "'GET /b'"),
			 1);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM processes WHERE "
				   "backend = '%s'",
				   backend),
			 1);
	harness_cleanup(&d);
}
END_TEST

int main(void)
{
	TCase *tc = check_tcase("late", 0, test_late_work_under_task,
				test_late_findings_on_rows,
				test_clean_source_gets_row, NULL);

	tcase_add_loop_test(tc, test_observe_end_cleared, 0, 2);
	return check_main(check_suite("late", tc, NULL), NULL);
}
