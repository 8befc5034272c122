/*
 * test_daemon.c: integration tests of ctxleakd: the real daemon on a
 * temporary socket and database, driven by the real client library in
 * forked children and by raw connections, with exact assertions on what
 * the database holds afterwards.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check_main.h"
#include "ctxleak.h"
#include "emitter.h"
#include "harness_check.h"
#include "proto.h"
#include "raw.h"

/* A daemon that does not stop cleanly says why, with its log. */
static void stop_ok(struct harness_daemon *d)
{
	static char msg[16384];
	int status = harness_stop(d);
	char *log;

	if (status == 0)
		return;
	log = harness_log(d);
	snprintf(msg, sizeof msg, "ctxleakd stopped with %d: %s\nits log:\n%s",
		 status, harness_error(), log ? log : "");
	free(log); /* ck_abort does not return, even without a fork */
	ck_abort_msg("%s", msg);
}
#define STOP_OK(d) stop_ok(d)

static void assert_log_has(const struct harness_daemon *d, const char *s)
{
	char *log = harness_log(d);

	ck_assert_msg(strstr(log, s) != NULL, "'%s' not in the log:\n%s", s,
		      log);
	free(log);
}

/* Until the query says n. */
static void wait_for_int(const struct harness_daemon *d, const char *sql,
			 int64_t n)
{
	ck_assert_msg(harness_wait_int(d, sql, n) == 0, "%s", harness_error());
}

/* Until n connections have closed and their processes are finalised. */
static void wait_disconnected(const struct harness_daemon *d, int64_t n)
{
	wait_for_int(d,
		     "SELECT count(*) FROM processes WHERE "
		     "disconnected_at IS NOT NULL",
		     n);
}

/* ------------------------------------------------------ client scenarios */

/* The worked example in one client under backend, which exits 0. */
static void example_client(const struct harness_daemon *d,
			   enum ctxleak_backend backend)
{
	ck_assert_int_eq(
	    harness_client(d, backend, harness_worked_example, NULL), 0);
}

/* Rows of table (leaks, requests, records) of processes of backend. */
static int64_t rows_of_backend(const struct harness_daemon *d,
			       const char *table, const char *backend)
{
	return query_int(d,
			 "SELECT count(*) FROM %s x JOIN processes p ON "
			 "p.id = x.process_id WHERE p.backend = '%s'",
			 table, backend);
}

static int64_t leaks_of(const struct harness_daemon *d, const char *cls,
			const char *victim, const char *source)
{
	if (source == NULL)
		return query_int(d,
				 "SELECT count(*) FROM leaks WHERE class = '%s'"
				 " AND victim_name = '%s' AND source_name IS "
				 "NULL",
				 cls, victim);
	return query_int(d,
			 "SELECT count(*) FROM leaks WHERE class = '%s' AND "
			 "victim_name = '%s' AND source_name = '%s'",
			 cls, victim, source);
}

static void assert_worked_example_leaks(const struct harness_daemon *d)
{
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM leaks"), 7);
	ck_assert_int_eq(leaks_of(d, "overlap", "GET /b", "GET /a"), 1);
	ck_assert_int_eq(leaks_of(d, "bleed", "GET /a", "GET /b"), 2);
	ck_assert_int_eq(leaks_of(d, "misnest", "GET /a", NULL), 1);
	ck_assert_int_eq(leaks_of(d, "misnest", "GET /b", NULL), 1);
	ck_assert_int_eq(leaks_of(d, "lost", "GET /b", NULL), 1);
	ck_assert_int_eq(leaks_of(d, "stale", "GET /c", "GET /a"), 1);
	/* The evidence: the two bleeds are A's event and tag under B. */
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM leaks WHERE "
				      "class = 'bleed' AND record = 'EVENT' "
				      "AND name = 'db.done'"),
			 1);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM leaks WHERE "
				      "class = 'bleed' AND record = 'TAG' AND "
				      "name = 'status'"),
			 1);
	/* B's rebuilt context holds status=200, set by A's code. */
	ck_assert_int_eq(query_int(d, HARNESS_EXAMPLE_BLED_TAG_SQL), 1);
}

static void run_worked_example(enum ctxleak_backend backend, const char *name)
{
	struct harness_daemon d;

	START(&d, "--keep", "all");
	example_client(&d, backend);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM processes "
				   "WHERE backend = '%s'",
				   name),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), 3);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}

START_TEST(test_worked_example_thread)
{
	run_worked_example(CTXLEAK_BACKEND_THREAD, "thread");
}
END_TEST

START_TEST(test_worked_example_global)
{
	run_worked_example(CTXLEAK_BACKEND_GLOBAL, "global");
}
END_TEST

START_TEST(test_worked_example_task)
{
	struct harness_daemon d;

	START(&d, "--keep", "all");
	example_client(&d, CTXLEAK_BACKEND_TASK);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "leaks = 0 AND end_ts IS NOT NULL"),
			 3);
	/* Under task, status=200 stays in A's own context. */
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM tags t JOIN requests r ON "
			  "r.id = t.request_id WHERE r.name = 'GET /a' "
			  "AND t.key = 'status' AND t.setter_request_id "
			  "= r.id"),
	    1);
	harness_cleanup(&d);
}
END_TEST

/* A bleed whose tag value and event message are secrets. */
static int leak_secrets(void *arg)
{
	uint64_t a, b, token_a;

	(void)arg;
	a = ctxleak_begin("GET /login");
	token_a = ctxleak_capture();
	b = ctxleak_begin("GET /other");
	ctxleak_resume(token_a);
	ctxleak_tag("token", "s3cr3t-t0ken");
	ctxleak_event("auth", "p4ssw0rd-in-message");
	ctxleak_suspend();
	ctxleak_end(b);
	ctxleak_end(a);
	return 0;
}

START_TEST(test_no_secrets_in_logs)
{
	struct harness_daemon d;
	char *log;

	START(&d, "--log-level", "debug");
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_THREAD, leak_secrets, NULL), 0);
	STOP_OK(&d);
	/* The values reached the daemon and are in the database... */
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "value IN ('s3cr3t-t0ken', "
				       "'p4ssw0rd-in-message')"),
			 2);
	/* ...but never in its log, even at debug level. */
	log = harness_log(&d);
	ck_assert_msg(strstr(log, "bleed") != NULL, "%s", log);
	ck_assert_msg(strstr(log, "s3cr3t") == NULL, "%s", log);
	ck_assert_msg(strstr(log, "p4ssw0rd") == NULL, "%s", log);
	free(log);
	harness_cleanup(&d);
}
END_TEST

/* Children that start together: each waits for the parent to close the
 * pipe. */
struct barrier {
	int rd, wr;
};

static int after_barrier(void *arg)
{
	struct barrier *b = arg;
	char c;

	close(b->wr);
	if (read(b->rd, &c, 1) != 0)
		return 1;
	return harness_worked_example(NULL);
}

START_TEST(test_two_clients_at_once)
{
	struct harness_daemon d;
	struct barrier b;
	int fds[2];
	pid_t thread_pid, task_pid;

	START(&d, "--keep", "all");
	ck_assert_int_eq(pipe(fds), 0);
	b.rd = fds[0];
	b.wr = fds[1];
	thread_pid =
	    harness_client_spawn(&d, CTXLEAK_BACKEND_THREAD, after_barrier, &b);
	task_pid =
	    harness_client_spawn(&d, CTXLEAK_BACKEND_TASK, after_barrier, &b);
	ck_assert(thread_pid > 0 && task_pid > 0);
	close(fds[0]);
	close(fds[1]);
	ck_assert_int_eq(harness_client_wait(thread_pid), 0);
	ck_assert_int_eq(harness_client_wait(task_pid), 0);
	STOP_OK(&d);

	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"), 2);
	ck_assert_int_eq(query_int(&d, "SELECT pid FROM processes WHERE "
				       "backend = 'thread'"),
			 thread_pid);
	ck_assert_int_eq(query_int(&d, "SELECT pid FROM processes WHERE "
				       "backend = 'task'"),
			 task_pid);
	ck_assert_int_eq(rows_of_backend(&d, "leaks", "thread"), 7);
	ck_assert_int_eq(rows_of_backend(&d, "leaks", "task"), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests r JOIN "
				       "processes p ON p.id = r.process_id "
				       "GROUP BY p.id ORDER BY 1 LIMIT 1"),
			 3);
	ck_assert_int_eq(query_int(&d, "SELECT count(DISTINCT process_id) "
				       "FROM requests"),
			 2);
	harness_cleanup(&d);
}
END_TEST

/* Begins a request, makes sure it reached the daemon, then waits to be
 * killed. */
static int hang_in_request(void *arg)
{
	(void)arg;
	ctxleak_begin("GET /hang");
	ctxleak_tag("user", "carol");
	ctxleak_flush();
	for (;;)
		pause();
	return 1;
}

START_TEST(test_killed_client_gives_unclosed)
{
	struct harness_daemon d;
	pid_t pid;

	START(&d, "--keep", "all");
	pid = harness_client_spawn(&d, CTXLEAK_BACKEND_THREAD, hang_in_request,
				   NULL);
	ck_assert(pid > 0);
	/* --keep=all stores each record once a watermark covers it. */
	wait_for_int(&d,
		     "SELECT count(*) FROM records WHERE "
		     "type = 'BEGIN' AND name = 'GET /hang'",
		     1);
	kill(pid, SIGKILL);
	ck_assert_int_eq(harness_client_wait(pid), 128 + SIGKILL);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 1);
	ck_assert_int_eq(leaks_of(&d, "unclosed", "GET /hang", NULL), 1);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "name = 'GET /hang' AND end_ts IS NULL "
				       "AND unclosed = 1"),
			 1);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------ raw connections */

START_TEST(test_garbage_closes_only_its_connection)
{
	struct harness_daemon d;
	const char junk[] = "\xc1\xc1\xc1 this is not msgpack";
	int fd;

	START(&d, "--keep", "all");
	fd = raw_hello(&d, 4711, (uint32_t)getpid());
	raw_send_until_closed(fd, junk, sizeof junk);

	example_client(&d, CTXLEAK_BACKEND_THREAD);
	STOP_OK(&d);
	assert_log_has(&d, "closing connection");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "instance = 4711 AND error IS NOT NULL "
				       "AND error <> ''"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "instance <> 4711 AND error IS NULL"),
			 1);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_bad_input_keeps_what_came_before)
{
	struct harness_daemon d;
	unsigned char buf[1024];
	size_t n;
	int fd;

	START(&d, "--keep", "all");
	fd = raw_hello(&d, 4712, 0);
	n = raw_request(buf, sizeof buf, 99, 1000);
	buf[n++] = 0xc1; /* never used in msgpack */
	raw_send_until_closed(fd, buf, n);
	STOP_OK(&d);
	ck_assert_int_eq(raw_records_of(&d, 4712), 4);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes WHERE "
				       "instance = 4712"),
			 4);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_string_limit_closes_connection)
{
	struct harness_daemon d;
	char big[100];
	unsigned char buf[1024];
	struct proto_record tag = {.type = PROTO_TAG,
				   .ts = 2000,
				   .tid = 7,
				   .ctx = 99,
				   .cause = 99,
				   .key = {"k", 1},
				   .value = {big, sizeof big}};
	size_t n;
	int fd;

	memset(big, 'x', sizeof big);
	START(&d, "--keep", "all", "--max-string", "64");
	fd = raw_hello(&d, 4717, 0);
	n = raw_request(buf, sizeof buf, 99, 1000);
	n += raw_encode(buf + n, sizeof buf - n, &tag);
	raw_send_until_closed(fd, buf, n);
	STOP_OK(&d);
	assert_log_has(&d, "closing connection: ");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 4);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "error LIKE '%%string%%'"),
			 1);
	harness_cleanup(&d);
}
END_TEST

/* Opens n request scopes (never ended) from ts 1000 on, then sends a
 * watermark at ts `watermark`. */
static void open_scopes(int fd, int n, uint64_t watermark)
{
	struct proto_record r = BEGIN(0, 7, 0, 0, 0, "GET /open");

	for (int i = 0; i < n; i++) {
		r.ts = 1000 + (uint64_t)i;
		r.ctx = 500 + (uint64_t)i;
		raw_send(fd, &r);
	}
	r = (struct proto_record){.type = PROTO_WATERMARK, .ts = watermark};
	raw_send(fd, &r);
}

/* Until the leaks table holds n unclosed findings. */
static void wait_unclosed(const struct harness_daemon *d, int n)
{
	wait_for_int(d, "SELECT count(*) FROM leaks WHERE class = 'unclosed'",
		     n);
}

START_TEST(test_max_open_scopes)
{
	struct harness_daemon d;
	int fd;

	START(&d, "--keep", "all", "--max-open-scopes", "10");
	fd = raw_hello(&d, 4718, 0);
	open_scopes(fd, 25, 2000);
	/* While connected only the scopes evicted over the limit are
	 * unclosed; the rest follow at the disconnect. */
	wait_unclosed(&d, 15);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 15);
	close(fd);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "class = 'unclosed'"),
			 25);
	harness_cleanup(&d);
}
END_TEST

/* Two raw clients, of instances `instance` and the next. */
static void connect_two(const struct harness_daemon *d, uint64_t instance,
			int *a, int *b)
{
	*a = raw_hello(d, instance, 0);
	*b = raw_hello(d, instance + 1, 0);
}

/* Scopes of the process of that instance forgotten over a limit. */
static int64_t evicted_of(const struct harness_daemon *d, int instance)
{
	return query_int(d,
			 "SELECT count(*) FROM leaks l JOIN processes p ON "
			 "p.id = l.process_id WHERE p.instance = %d AND "
			 "l.detail LIKE '%%open-scope limit%%'",
			 instance);
}

/* Past the daemon-wide limit the process holding most open scopes
 * forgets its oldest, down to 15/16 of the limit: not the process that
 * opened the last one. */
START_TEST(test_max_open_scopes_total)
{
	struct harness_daemon d;
	int a, b;

	START(&d, "--keep", "all", "--max-open-scopes-total", "32");
	connect_two(&d, 4720, &a, &b);
	open_scopes(a, 40, 2000);
	wait_unclosed(&d, 10);
	open_scopes(b, 20, 2000);
	wait_unclosed(&d, 30);
	ck_assert_int_eq(evicted_of(&d, 4720), 30);
	close(a);
	close(b);
	STOP_OK(&d);
	ck_assert_int_eq(evicted_of(&d, 4721), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "class = 'unclosed'"),
			 60);
	harness_cleanup(&d);
}
END_TEST

/* n complete requests from ctx first on, then a watermark past them. */
static void send_requests(int fd, uint64_t first, int n, uint64_t ts)
{
	struct proto_record wm = {.type = PROTO_WATERMARK,
				  .ts = ts + 10 * (uint64_t)n};

	for (int i = 0; i < n; i++)
		raw_send_request(fd, first + (uint64_t)i,
				 ts + 10 * (uint64_t)i);
	raw_send(fd, &wm);
}

/* A TAG of a new request (ctx 1000) under the context of an ended one. */
static void send_probe(int fd, uint64_t ended_ctx, uint64_t ts)
{
	struct proto_record tag = {.type = PROTO_TAG,
				   .ts = ts + 5,
				   .tid = 7,
				   .ctx = ended_ctx,
				   .cause = 1000,
				   .key = {"probe", 5}};

	raw_send_request(fd, 1000, ts);
	raw_send(fd, &tag);
}

/* The class of the finding of process `instance` under ctx. */
static char *probe_class(const struct harness_daemon *d, int instance,
			 uint64_t ctx)
{
	char sql[256];

	snprintf(
	    sql, sizeof sql,
	    "SELECT group_concat(l.class) FROM leaks l JOIN processes p "
	    "ON p.id = l.process_id WHERE p.instance = %d AND l.ctx = %llu",
	    instance, (unsigned long long)ctx);
	return harness_query_str(d, sql);
}

/* Past the daemon-wide limit of ended scopes the process remembering most
 * forgets its oldest: a record under one of their contexts is then of an
 * unknown request (bleed), where the other process still tells stale. */
START_TEST(test_max_ended_scopes_total)
{
	struct harness_daemon d;
	char *class;
	int a, b;

	START(&d, "--keep", "all", "--max-ended-scopes-total", "64");
	connect_two(&d, 4722, &a, &b);
	/* A remembers 100, forgets down to 60; then B's 20 make A forget 20
	 * more: A keeps 560-599, B all of its 500-519. */
	send_requests(a, 500, 100, 1000);
	wait_for_int(&d, "SELECT count(*) FROM requests", 100);
	send_requests(b, 500, 20, 1000);
	wait_for_int(&d, "SELECT count(*) FROM requests", 120);
	send_probe(a, 500, 5000);
	send_probe(a, 590, 6000);
	send_probe(b, 500, 5000);
	close(a);
	close(b);
	STOP_OK(&d);
	class = probe_class(&d, 4722, 500);
	ck_assert_str_eq(class, "bleed");
	free(class);
	class = probe_class(&d, 4722, 590);
	ck_assert_str_eq(class, "stale");
	free(class);
	class = probe_class(&d, 4723, 500);
	ck_assert_str_eq(class, "stale");
	free(class);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_max_request_age)
{
	struct harness_daemon d;
	int fd;

	START(&d, "--keep", "all", "--max-request-age", "1s");
	fd = raw_hello(&d, 4719, 0);
	/* The watermark is 2 s of client time later: every scope is too
	 * old, with the connection still open. */
	open_scopes(fd, 3, 1000 + 2000000000ULL);
	wait_unclosed(&d, 3);
	close(fd);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 3);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_dropped_and_unknown_counted)
{
	struct harness_daemon d;
	/* A record of a type from a later version: [99, ts, tid, ctx,
	 * cause, site] */
	static const unsigned char unknown[] = {0x96, 0x63, 0x01, 0x02,
						0x03, 0x04, 0x00};
	struct proto_record dropped = {.type = PROTO_DROPPED,
				       .ts = 5000,
				       .tid = 7,
				       .count = 42,
				       .since = 4000};
	unsigned char buf[1024];
	size_t n;
	int fd;

	START(&d, "--keep", "all");
	fd = raw_hello(&d, 4722, 0);
	n = raw_request(buf, sizeof buf, 99, 1000);
	memcpy(buf + n, unknown, sizeof unknown);
	n += sizeof unknown;
	n += raw_encode(buf + n, sizeof buf - n, &dropped);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	close(fd);
	wait_disconnected(&d, 1);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT dropped FROM processes"), 42);
	ck_assert_int_eq(query_int(&d, "SELECT unknown_skipped FROM processes"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes"), 4);
	ck_assert_int_eq(query_int(&d, "SELECT sum(count) FROM drops"), 42);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 4);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_record_before_hello)
{
	struct harness_daemon d;
	unsigned char buf[512];
	size_t n;
	int fd;

	START(&d, "--keep", "all");
	fd = raw_connect(&d);
	n = raw_request(buf, sizeof buf, 5, 1000);
	raw_send_until_closed(fd, buf, n);
	/* Only that connection: the daemon still serves clients. */
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	STOP_OK(&d);
	assert_log_has(&d, "closing connection");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"), 1);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_kernel_pid_wins)
{
	struct harness_daemon d;
	int fd;

	START(&d, "--keep", "all");
	fd = raw_hello(&d, 4713, 1);
	raw_send_request(fd, 5, 1000);
	close(fd);
	wait_disconnected(&d, 1);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT pid FROM processes WHERE "
				       "instance = 4713"),
			 getpid());
	ck_assert_int_eq(query_int(&d, "SELECT hello_pid FROM processes "
				       "WHERE instance = 4713"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT uid FROM processes WHERE "
				       "instance = 4713"),
			 getuid());
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_reconnection_continues_process)
{
	struct harness_daemon d;
	int fd;

	/* Long enough that the second connection comes within it. */
	START(&d, "--keep", "all", "--linger", "60s");
	for (int i = 0; i < 2; i++) {
		fd = raw_hello(&d, 4714, 0);
		raw_send_request(fd, 10 + (uint64_t)i,
				 1000 + 100 * (uint64_t)i);
		close(fd);
	}
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"), 1);
	ck_assert_int_eq(query_int(&d, "SELECT connections FROM processes"), 2);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes"), 8);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), 2);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	harness_cleanup(&d);
}
END_TEST

/* The child, as another user, names the instance of the parent's
 * connection: 0 when the daemon closes its connection. */
static int hijack_instance(const struct harness_daemon *d)
{
	int fd;

	if (setgid(65534) == -1 || setuid(65534) == -1)
		return 2;
	fd = harness_connect(d);
	if (fd == -1 || harness_send_hello(fd, 4721, 0) == -1)
		return 3;
	return harness_wait_closed(fd) == 0 ? 0 : 4;
}

START_TEST(test_instance_of_another_uid_refused)
{
	struct harness_daemon d;
	pid_t pid;
	int fd;

	if (geteuid() != 0)
		return; /* needs a second user */
	START(&d, "--keep", "all", "--log-level", "debug");
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	ck_assert_int_eq(chmod(d.socket, 0666), 0);
	fd = raw_hello(&d, 4721, 0);
	ck_assert_msg(harness_wait_log(&d, "new process", 1) == 0, "%s",
		      harness_error());
	pid = fork();
	if (pid == 0)
		_exit(hijack_instance(&d));
	ck_assert_int_eq(harness_client_wait(pid), 0);
	close(fd);
	STOP_OK(&d);
	assert_log_has(&d, "refused for uid 65534");
	ck_assert_int_eq(query_int(&d, "SELECT connections FROM processes "
				       "WHERE instance = 4721"),
			 1);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_sigterm_drains)
{
	enum { N = 5000 };
	struct harness_daemon d;
	size_t cap = N * 4 * PROTO_RECORD_SIZE_MAX(16), n = 0;
	unsigned char *buf = malloc(cap);
	int fd;

	ck_assert_ptr_nonnull(buf);
	START(&d, "--keep", "all");
	for (uint64_t i = 0; i < N; i++)
		n += raw_request(buf + n, cap - n, 1000 + i, 10 * (i + 1));
	fd = raw_hello(&d, 4715, 0);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	/* At once, with the connection still open: what the kernel took
	 * must all be stored. */
	STOP_OK(&d);
	close(fd);
	free(buf);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 4 * N);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), N);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes"), 4 * N);
	assert_log_has(&d, "draining");
	ck_assert_int_eq(access(d.socket, F_OK), -1);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_sigterm_loses_nothing_of_busy_clients)
{
	enum { CLIENTS = 4 };
	/* Busy, but within what the daemon ingests, even under ASan or
	 * valgrind: a flood would only test how long the drain of a backlog
	 * takes, not whether it loses anything. */
	struct emitters *e = emitters_new(CLIENTS, 500, 0);
	struct harness_daemon d;
	pid_t pids[CLIENTS];
	int64_t stored;

	START(&d, "--keep", "all");
	for (int i = 0; i < CLIENTS; i++)
		pids[i] = emitters_spawn(&d, e, i, CTXLEAK_BACKEND_THREAD);
	/* Every client connected and its batches flowing. */
	wait_for_int(&d, "SELECT count(DISTINCT process_id) FROM records",
		     CLIENTS);
	STOP_OK(&d);
	/* The clients shut down with the daemon gone: their own figures. */
	e->stop = 1;
	for (int i = 0; i < CLIENTS; i++) {
		const struct emitter *r = &e->e[i];

		ck_assert_int_eq(harness_client_wait(pids[i]), 0);
		stored = emitter_stored(&d, r);
		ck_assert_msg((uint64_t)stored + r->st.dropped == r->produced,
			      "pid %d: %lld stored + %llu dropped != %llu "
			      "produced (%llu recorded)",
			      (int)r->pid, (long long)stored,
			      (unsigned long long)r->st.dropped,
			      (unsigned long long)r->produced,
			      (unsigned long long)r->st.records);
		/* The library counts what it was given, kept or dropped. */
		ck_assert_uint_eq(r->st.records, r->produced);
	}
	emitters_free(e);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_sigterm_accepts_the_backlog)
{
	/* More than the daemon accepts per wakeup (64): some are still in
	 * the backlog when the signal is seen, whatever libevent runs
	 * first once the daemon continues. */
	enum { CONNS = 100, REQUESTS = 10 };
	struct harness_daemon d;
	unsigned char buf[REQUESTS * 4 * PROTO_RECORD_SIZE_MAX(16)];
	int fds[CONNS], st;
	size_t n = 0;

	START(&d, "--keep", "all");
	for (uint64_t i = 0; i < REQUESTS; i++)
		n += raw_request(buf + n, sizeof buf - n, 1000 + i,
				 10 * (i + 1));
	/* Stopped, it accepts nothing: the connections wait in the
	 * listener's backlog with all they sent. */
	ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
	ck_assert_int_eq(waitpid(d.pid, &st, WUNTRACED), d.pid);
	ck_assert(WIFSTOPPED(st));
	for (int i = 0; i < CONNS; i++) {
		fds[i] = raw_hello(&d, 9000 + i, 0);
		ck_assert_int_eq(harness_write_all(fds[i], buf, n), 0);
	}
	ck_assert_int_eq(kill(d.pid, SIGTERM), 0);
	ck_assert_int_eq(kill(d.pid, SIGCONT), 0);
	ck_assert_int_eq(harness_wait_exit(&d), 0);
	for (int i = 0; i < CONNS; i++)
		close(fds[i]);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"),
			 CONNS);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"),
			 CONNS * REQUESTS * 4);
	harness_cleanup(&d);
}
END_TEST

/* A request that never ends, with far more records than --max-held lets
 * the daemon hold: it is reported unclosed, its row says how many of its
 * records were not kept, and the log says why, once. */
static int long_unclosed_request(void *arg)
{
	char value[64];

	(void)arg;
	memset(value, 'v', sizeof value - 1);
	value[sizeof value - 1] = '\0';
	ctxleak_begin("GET /endless");
	for (int i = 0; i < 500; i++)
		ctxleak_tag("k", value);
	return 0;
}

START_TEST(test_max_held)
{
	struct harness_daemon d;
	int64_t kept, not_kept;
	char *log;

	START(&d, "--max-held", "4K");
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					long_unclosed_request, NULL),
			 0);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "class = 'unclosed'"),
			 1);
	kept = query_int(&d, "SELECT count(*) FROM records");
	not_kept = query_int(&d, "SELECT records_not_kept FROM requests");
	ck_assert_int_gt(not_kept, 0);
	ck_assert_int_gt(kept, 0);
	/* BEGIN and 500 TAGs: each kept or counted. */
	ck_assert_int_eq(kept + not_kept, 501);
	log = harness_log(&d);
	ck_assert_ptr_nonnull(strstr(log, "--max-held reached"));
	ck_assert_ptr_eq(
	    strstr(strstr(log, "--max-held reached") + 1, "--max-held reached"),
	    NULL);
	free(log);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_keep_leaky)
{
	struct harness_daemon d;

	START(&d, "--keep", "leaky");
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	example_client(&d, CTXLEAK_BACKEND_TASK);
	STOP_OK(&d);
	/* Rows and records of the leaky requests (all three under thread),
	 * counts of the clean ones (all three under task). */
	ck_assert_int_eq(rows_of_backend(&d, "requests", "thread"), 3);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), 3);
	ck_assert_int_eq(query_int(&d, "SELECT sum(s.requests) FROM "
				       "request_stats s JOIN processes p ON "
				       "p.id = s.process_id WHERE "
				       "p.backend = 'task'"),
			 3);
	ck_assert_int_eq(query_int(&d, "SELECT sum(requests) FROM "
				       "request_stats"),
			 3);
	ck_assert_int_eq(rows_of_backend(&d, "records", "task"), 0);
	ck_assert_int_gt(rows_of_backend(&d, "records", "thread"), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records r JOIN "
				       "requests q ON q.id = r.request_id "
				       "WHERE q.leaks = 0 AND q.source_of = 0"),
			 0);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------ socket and limits */

START_TEST(test_second_daemon_refused)
{
	struct harness_daemon d;
	char db2[400], *out;
	int st;

	START(&d, "--keep", "all");
	snprintf(db2, sizeof db2, "%s/other.db", d.dir);
	{
		const char *argv[] = {"ctxleakd", "--socket", d.socket,
				      "--db",	  db2,	      NULL};
		st = harness_exec(argv, &out);
	}
	ck_assert_msg(st == 1, "status %d: %s", st, out);
	ck_assert_msg(strstr(out, "another ctxleakd is listening on") != NULL,
		      "%s", out);
	free(out);
	/* The first one is untouched. */
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	STOP_OK(&d);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

/* A second daemon on a database in use, on a socket of its own: the one
 * line naming the database and the holder, exit 1, the first untouched. */
START_TEST(test_second_daemon_on_the_database_refused)
{
	struct harness_daemon d;
	char sock2[400], want[400], *out;
	int st;

	START(&d, "--keep", "all");
	snprintf(sock2, sizeof sock2, "%s/other.sock", d.dir);
	{
		const char *argv[] = {"ctxleakd", "--socket", sock2,
				      "--db",	  d.db,	      NULL};
		st = harness_exec(argv, &out);
	}
	snprintf(want, sizeof want,
		 "database %s is in use by another ctxleakd (pid %d)\n", d.db,
		 (int)d.pid);
	ck_assert_msg(st == 1, "status %d: %s", st, out);
	ck_assert_msg(strstr(out, want) != NULL, "%s", out);
	free(out);
	ck_assert_int_eq(access(sock2, F_OK), -1);
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	STOP_OK(&d);
	assert_worked_example_leaks(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"), 1);
	harness_cleanup(&d);
}
END_TEST

/* Exec ctxleakd on d's socket and log and on db once the pipe's write
 * end is closed everywhere. */
static pid_t spawn_on_barrier(const int barrier[2],
			      const struct harness_daemon *d, const char *db)
{
	pid_t pid = fork();
	char c;
	int fd;

	if (pid != 0)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close(barrier[1]);
	fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd == -1 || dup2(fd, STDERR_FILENO) == -1)
		_exit(126);
	if (read(barrier[0], &c, 1) != 0)
		_exit(126);
	execl(harness_daemon_path(), "ctxleakd", "--socket", d->socket, "--db",
	      db, "--linger", "0", (char *)NULL);
	_exit(127);
}

#define RACE_ROUNDS 5

/* Two daemons started at the same instant on a new database, on sockets
 * of their own: exactly one runs, the other says why and exits 1. */
START_TEST(test_two_daemons_start_at_once)
{
	for (int round = 0; round < RACE_ROUNDS; round++) {
		struct harness_daemon d[2];
		char want[300], *text;
		pid_t pid[2];
		int barrier[2], loser = -1, st = 0;

		for (int i = 0; i < 2; i++)
			ck_assert_int_eq(harness_prepare(&d[i]), 0);
		ck_assert_int_eq(pipe(barrier), 0);
		for (int i = 0; i < 2; i++)
			pid[i] = spawn_on_barrier(barrier, &d[i], d[0].db);
		close(barrier[0]);
		close(barrier[1]); /* both go */
		for (int t = 0; loser == -1 && t < HARNESS_TIMEOUT_SEC * 100;
		     t++) {
			for (int i = 0; i < 2 && loser == -1; i++)
				if (waitpid(pid[i], &st, WNOHANG) == pid[i])
					loser = i;
			harness_sleep_ms(10);
		}
		ck_assert_msg(loser != -1, "round %d: both still run", round);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1,
			      "round %d: status %d", round, st);
		/* The winner runs and serves its socket. */
		d[1 - loser].pid = pid[1 - loser];
		if (loser == 0)
			memcpy(d[1].db, d[0].db, sizeof d[1].db);
		ck_assert_msg(harness_wait_log(&d[1 - loser], " ready: ", 1) ==
				  0,
			      "%s", harness_error());
		ck_assert_int_eq(harness_client(&d[1 - loser],
						CTXLEAK_BACKEND_THREAD,
						harness_worked_example, NULL),
				 0);
		STOP_OK(&d[1 - loser]);
		assert_worked_example_leaks(&d[1 - loser]);
		/* The loser said so in one line: the holder's pid, when it
		 * had written it yet. */
		text = harness_log(&d[loser]);
		snprintf(want, sizeof want,
			 "database %s is in use by another ctxleakd", d[0].db);
		ck_assert_msg(strstr(text, want) != NULL, "round %d: %s", round,
			      text);
		free(text);
		for (int i = 0; i < 2; i++)
			harness_cleanup(&d[i]);
	}
}
END_TEST

/* Fills the records table of a stopped daemon's database with rows of
 * its own, then overwrites a leaf page of it with garbage, as a disk
 * error would: returns that page's number. */
static int64_t damage_records(const char *db)
{
	sqlite3 *h;
	sqlite3_stmt *st;
	int64_t page = 0, page_size = 0;
	unsigned char junk[512];
	int fd;

	ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_exec(h,
			 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT "
			 "i + 1 FROM n WHERE i < 5000) INSERT INTO records("
			 "process_id, type, ts, tid, ctx, cause, name) SELECT "
			 "1, 'EVENT', i, 1, i, i, printf('filler %050d', i) "
			 "FROM n; PRAGMA wal_checkpoint(TRUNCATE)",
			 NULL, NULL, NULL),
	    SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_prepare_v2(h,
			       "SELECT pageno, (SELECT page_size FROM "
			       "pragma_page_size) FROM dbstat WHERE name = "
			       "'records' AND pagetype = 'leaf' "
			       "ORDER BY pageno LIMIT 1 OFFSET 5",
			       -1, &st, NULL),
	    SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	page = sqlite3_column_int64(st, 0);
	page_size = sqlite3_column_int64(st, 1);
	sqlite3_finalize(st);
	ck_assert_int_eq(sqlite3_close(h), SQLITE_OK);
	memset(junk, 0xa5, sizeof junk);
	fd = open(db, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(
	    pwrite(fd, junk, sizeof junk, (off_t)((page - 1) * page_size)),
	    (ssize_t)sizeof junk);
	close(fd);
	return page;
}

/* A database with a damaged page: a warning at start that says so, and
 * the daemon serves as before. */
START_TEST(test_damaged_database_warned)
{
	struct harness_daemon d;
	char want[200];

	START(&d, "--keep", "all");
	STOP_OK(&d);
	snprintf(want, sizeof want, "Page %lld", (long long)damage_records(d.db));
	ck_assert_msg(harness_launch(&d, NULL) == 0, "%s", harness_error());
	assert_log_has(&d, "is damaged: PRAGMA quick_check found");
	assert_log_has(&d, want);
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	STOP_OK(&d);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_stale_socket_replaced)
{
	struct harness_daemon d;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	int fd;

	ck_assert_int_eq(harness_prepare(&d), 0);
	/* A socket file nobody listens on, as a crash leaves it. */
	snprintf(sun.sun_path, sizeof sun.sun_path, "%s", d.socket);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	close(fd);
	ck_assert_msg(harness_launch(&d, NULL) == 0, "%s", harness_error());
	assert_log_has(&d, "replacing stale socket");
	ck_assert_int_eq(stat(d.socket, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0660);
	STOP_OK(&d);
	harness_cleanup(&d);
}
END_TEST

/* As nobody, a socket directory made by another user is refused.  bin:
 * a copy of the daemon that nobody can reach. */
static int start_in_foreign_dir(const char *dir, const char *bin, char **out)
{
	char sock[128], db[128];
	const char *argv[] = {"ctxleakd", "--socket", sock, "--db", db, NULL};

	snprintf(sock, sizeof sock, "%s/ctxleak.sock", dir);
	snprintf(db, sizeof db, "/tmp/ctxleak-nobody-%d.db", (int)getpid());
	if (setenv("CTXLEAKD_BIN", bin, 1) == -1 || setgid(65534) == -1 ||
	    setuid(65534) == -1)
		return -2;
	return harness_exec(argv, out);
}

START_TEST(test_foreign_socket_directory)
{
	struct harness_daemon d;
	char dir[100], bin[120], *out = NULL;
	int fds[2], st;
	pid_t pid;

	if (geteuid() != 0)
		return; /* needs a second user */
	ck_assert_msg(harness_copy_for_anyone(harness_daemon_path(), bin,
					      sizeof bin) == 0,
		      "%s", harness_error());
	ck_assert_int_eq(harness_prepare(&d), 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	snprintf(dir, sizeof dir, "%s/other", d.dir);
	ck_assert_int_eq(mkdir(dir, 0777), 0);
	ck_assert_int_eq(chown(dir, 1, 1), 0); /* daemon, not nobody */
	ck_assert_int_eq(chmod(dir, 0777), 0);
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	if (pid == 0) {
		st = start_in_foreign_dir(dir, bin, &out);
		if (out != NULL && write(fds[1], out, strlen(out)) < 0)
			_exit(3);
		_exit(st == 1 ? 0 : 2);
	}
	close(fds[1]);
	ck_assert_int_eq(harness_client_wait(pid), 0);
	{
		char buf[512] = "";
		ssize_t n = read(fds[0], buf, sizeof buf - 1);

		ck_assert_msg(n > 0 && strstr(buf, "belongs to uid 1") != NULL,
			      "%s", buf);
	}
	close(fds[0]);
	ck_assert_int_eq(access(dir, F_OK), 0);
	harness_remove_copy(bin);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_unwritable_db)
{
	struct harness_daemon d;
	char file[400], db[420], *out;
	FILE *f;
	int st;

	ck_assert_int_eq(harness_prepare(&d), 0);
	/* A path under a regular file: unwritable even for root. */
	snprintf(file, sizeof file, "%s/file", d.dir);
	snprintf(db, sizeof db, "%s/x.db", file);
	f = fopen(file, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	{
		const char *argv[] = {"ctxleakd", "--socket", d.socket,
				      "--db",	  db,	      NULL};
		st = harness_exec(argv, &out);
	}
	ck_assert_msg(st == 1, "status %d: %s", st, out);
	ck_assert_msg(strstr(out, "cannot open database") != NULL &&
			  strstr(out, db) != NULL,
		      "%s", out);
	free(out);
	/* It failed before listening. */
	ck_assert_int_eq(access(d.socket, F_OK), -1);
	harness_cleanup(&d);
}
END_TEST

/* The store's reason names the database once: the daemon adds nothing. */
START_TEST(test_db_error_said_once)
{
	struct harness_daemon d;
	char want[200], twice[200], *out;
	int st;

	ck_assert_int_eq(harness_prepare(&d), 0);
	{
		const char *argv[] = {"ctxleakd", "--socket", d.socket,
				      "--db",	  d.dir,      NULL};
		st = harness_exec(argv, &out);
	}
	ck_assert_msg(st == 1, "status %d: %s", st, out);
	snprintf(want, sizeof want, "cannot open database %s: Is a directory\n",
		 d.dir);
	snprintf(twice, sizeof twice, "%s: cannot open database", d.dir);
	ck_assert_msg(strstr(out, want) != NULL, "%s", out);
	ck_assert_msg(strstr(out, twice) == NULL, "%s", out);
	free(out);
	harness_cleanup(&d);
}
END_TEST

/* Missing directories of the database are made 0750: group ctxleak reads
 * the database, others do not. */
START_TEST(test_db_directories_0750)
{
	struct harness_daemon d;
	char top[100], leaf[110], db[130];
	struct stat st;

	ck_assert_int_eq(harness_prepare(&d), 0);
	snprintf(top, sizeof top, "%s/state", d.dir);
	snprintf(leaf, sizeof leaf, "%s/ctxleak", top);
	snprintf(db, sizeof db, "%s/ctxleak.db", leaf);
	{
		const char *args[] = {"--db", db, NULL};
		ck_assert_msg(harness_launch(&d, args) == 0, "%s",
			      harness_error());
	}
	STOP_OK(&d);
	ck_assert_int_eq(stat(top, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0750);
	ck_assert_int_eq(stat(leaf, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0750);
	ck_assert_int_eq(stat(db, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0640);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_max_connections)
{
	struct harness_daemon d;
	int fds[3];

	START(&d, "--max-connections", "2", "--log-level", "debug");
	for (int i = 0; i < 2; i++) {
		fds[i] = raw_hello(&d, 100 + (uint64_t)i, 0);
		/* Once the daemon has handled this HELLO, the harness's
		 * readiness probe is long closed and uncounted. */
		ck_assert_msg(harness_wait_log(&d, "new process", i + 1) == 0,
			      "%s", harness_error());
	}
	fds[2] = raw_connect(&d);
	ck_assert_msg(harness_wait_closed(fds[2]) == 0, "%s", harness_error());
	assert_log_has(&d, "--max-connections");
	/* A slot frees up when a client leaves. */
	close(fds[0]);
	ck_assert_msg(harness_wait_log(&d, "finalised", 1) == 0, "%s",
		      harness_error());
	close(fds[2]);
	fds[2] = raw_hello(&d, 102, 0);
	ck_assert_msg(harness_wait_log(&d, "new process", 3) == 0, "%s",
		      harness_error());
	close(fds[1]);
	close(fds[2]);
	STOP_OK(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"), 3);
	harness_cleanup(&d);
}
END_TEST

/* The lowest descriptor number pid has free: the next it would get. */
static int lowest_free_fd(pid_t pid)
{
	char path[64];
	int fd;

	for (fd = 0;; fd++) {
		snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
		if (access(path, F_OK) == -1)
			return fd;
	}
}

/* User plus system CPU time of pid, in seconds. */
static double cpu_seconds(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long utime, stime;
	FILE *f;
	size_t n;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* Fields 14 and 15, counted after the command name's ')'. */
	p = strrchr(buf, ')');
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p + 2,
				"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u "
				"%llu %llu",
				&utime, &stime),
			 2);
	return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

#define REFUSED 20

/* A burst of refusals: one line when it begins, one with its total when
 * it is over, and the count in the daemon's status. */
START_TEST(test_refusals_logged_per_burst)
{
	struct harness_daemon d;
	char want[160];
	int fds[2], fd;

	START(&d, "--max-connections", "2", "--log-level", "debug");
	for (int i = 0; i < 2; i++) {
		fds[i] = raw_hello(&d, 200 + (uint64_t)i, 0);
		ck_assert_msg(harness_wait_log(&d, "new process", i + 1) == 0,
			      "%s", harness_error());
	}
	for (int i = 0; i < REFUSED; i++) {
		fd = raw_connect(&d);
		ck_assert_msg(harness_wait_closed(fd) == 0, "%s",
			      harness_error());
		close(fd);
	}
	snprintf(want, sizeof want,
		 "%d connection(s) refused in ", REFUSED);
	ck_assert_msg(harness_wait_log(&d, want, 1) == 0, "%s",
		      harness_error());
	assert_log_has(&d, "--max-connections 2 reached; those clients got "
			   "no RECEIPT");
	ck_assert_int_eq(harness_log_count(&d, "refused"), 2);
	close(fds[0]);
	close(fds[1]);
	STOP_OK(&d);
	snprintf(want, sizeof want, "%d refused", REFUSED);
	assert_log_has(&d, want);
	harness_cleanup(&d);
}
END_TEST

#define FD_STORM 16

/* Out of descriptors, the daemon pauses accepting instead of spinning on
 * the listener, logs the episode once, and accepts the waiting clients
 * when descriptors free up. */
START_TEST(test_out_of_descriptors)
{
	const struct timespec second = {1, 0};
	struct harness_daemon d;
	struct rlimit rl;
	int fds[FD_STORM];
	double cpu;

	START(&d, "--log-level", "debug");
	/* The harness's readiness probe is closed first: freeing its
	 * descriptor would end the episode early. */
	ck_assert_msg(harness_wait_log(&d, "before HELLO", 1) == 0, "%s",
		      harness_error());
	/* Room for three more descriptors at most. */
	rl.rlim_cur = rl.rlim_max = (rlim_t)lowest_free_fd(d.pid) + 3;
	ck_assert_int_eq(prlimit(d.pid, RLIMIT_NOFILE, &rl, NULL), 0);
	for (int i = 0; i < FD_STORM; i++)
		fds[i] = raw_connect(&d);
	ck_assert_msg(harness_wait_log(&d, "Too many open files", 1) == 0, "%s",
		      harness_error());
	cpu = cpu_seconds(d.pid);
	nanosleep(&second, NULL);
	cpu = cpu_seconds(d.pid) - cpu;
	/* A spinning loop burns the whole second and logs each turn. */
	ck_assert_msg(cpu < 0.5, "%.2f s of CPU in 1 s", cpu);
	ck_assert_int_eq(harness_log_count(&d, "Too many open files"), 1);

	for (int i = 0; i < FD_STORM; i++)
		close(fds[i]);
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	ck_assert_msg(harness_wait_log(&d, "accepting again after", 1) == 0,
		      "%s", harness_error());
	/* The client waited in the backlog: its process row says it got
	 * through. */
	wait_disconnected(&d, 1);
	STOP_OK(&d);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_sighup_reopens_log_file)
{
	struct harness_daemon d;
	char path[100], rotated[110];
	int fd;

	ck_assert_int_eq(harness_prepare(&d), 0);
	snprintf(path, sizeof path, "%s/daemon.log", d.dir);
	snprintf(rotated, sizeof rotated, "%s.1", path);
	{
		const char *args[] = {"--log-file", path, "--log-level",
				      "debug", NULL};
		ck_assert_msg(harness_launch(&d, args) == 0, "%s",
			      harness_error());
	}
	ck_assert_int_eq(rename(path, rotated), 0);
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	/* The file is back once the daemon handled the signal; a
	 * connection then logs into it, not into the rotated one. */
	snprintf(d.log, sizeof d.log, "%s", path);
	ck_assert_msg(harness_wait_log(&d, "log file reopened", 1) == 0, "%s",
		      harness_error());
	fd = raw_hello(&d, 4716, 0);
	ck_assert_msg(harness_wait_log(&d, "new process", 1) == 0, "%s",
		      harness_error());
	close(fd);
	STOP_OK(&d);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_journal_prefixes)
{
	struct harness_daemon d;
	char stream[64];
	struct stat st;
	FILE *f;

	ck_assert_int_eq(harness_prepare(&d), 0);
	/* journald tells its streams apart by device and inode. */
	f = fopen(d.log, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	ck_assert_int_eq(stat(d.log, &st), 0);
	snprintf(stream, sizeof stream, "%llu:%llu",
		 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", stream, 1);
	ck_assert_msg(harness_launch(&d, NULL) == 0, "%s", harness_error());
	unsetenv("JOURNAL_STREAM");
	STOP_OK(&d);
	assert_log_has(&d, "<6>ctxleakd 0.1.0 ready");
	assert_log_has(&d, "\n<6>stopped: ");
	harness_cleanup(&d);
}
END_TEST

/* Reads one datagram from the notify socket, waiting at most the
 * harness's timeout.  "" on timeout. */
static void read_notify(int fd, char *buf, size_t len)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	ssize_t n = 0;

	if (poll(&pfd, 1, HARNESS_TIMEOUT_SEC * 1000) == 1)
		n = recv(fd, buf, len - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
}

/* Reads notifications until one contains needle: 1, or 0 when none did
 * among the next 1000 (watchdog pings come every 100 ms). */
static int wait_notify(int fd, const char *needle, char *msg, size_t len)
{
	for (int i = 0; i < 1000; i++) {
		read_notify(fd, msg, len);
		if (strstr(msg, needle) != NULL)
			return 1;
		if (*msg == '\0')
			return 0;
	}
	return 0;
}

/* Starts the daemon as systemd would under Type=notify with a 200 ms
 * watchdog; returns the notify socket, bound at *sun in its directory,
 * once READY=1 came on it.  READY=1 is first: the store is open and the
 * socket listens, which harness_launch has seen. */
static int launch_notified(struct harness_daemon *d, struct sockaddr_un *sun)
{
	char msg[512];
	int fd;

	ck_assert_int_eq(harness_prepare(d), 0);
	snprintf(sun->sun_path, sizeof sun->sun_path, "%s/notify", d->dir);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)sun, sizeof *sun), 0);
	setenv("NOTIFY_SOCKET", sun->sun_path, 1);
	setenv("WATCHDOG_USEC", "200000", 1);
	ck_assert_msg(harness_launch(d, NULL) == 0, "%s", harness_error());
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	read_notify(fd, msg, sizeof msg);
	ck_assert_msg(strstr(msg, "READY=1") != NULL, "%s", msg);
	return fd;
}

/* Stops the daemon of launch_notified, which says STOPPING=1 on fd. */
static void stop_notified(struct harness_daemon *d, int fd)
{
	char msg[512];

	STOP_OK(d);
	ck_assert_msg(wait_notify(fd, "STOPPING=1", msg, sizeof msg), "%s",
		      msg);
	close(fd);
}

START_TEST(test_sd_notify)
{
	struct harness_daemon d;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char msg[512];
	int fd;

	fd = launch_notified(&d, &sun);
	ck_assert(wait_notify(fd, "WATCHDOG=1", msg, sizeof msg));
	ck_assert_msg(wait_notify(fd, "STATUS=0 connections, 0 processes", msg,
				  sizeof msg),
		      "%s", msg);
	stop_notified(&d, fd);
	harness_cleanup(&d);
}
END_TEST

/* Fills the notify socket's queue, as a systemd that has stopped reading
 * would leave it. */
static void fill_notify_queue(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int n = 0;

	ck_assert_int_ge(fd, 0);
	while (sendto(fd, "X=1", 3, 0, (const struct sockaddr *)sun,
		      sizeof *sun) == 3)
		n++;
	ck_assert_msg(errno == EAGAIN, "sendto: %s", strerror(errno));
	ck_assert_int_gt(n, 0);
	close(fd);
}

/* libsystemd's sd_notify blocks while the notify socket's queue is full:
 * the daemon must go on serving its clients meanwhile, and notify again
 * once systemd reads. */
START_TEST(test_sd_notify_never_blocks)
{
	struct harness_daemon d;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	char msg[512];
	int fd;

	fd = launch_notified(&d, &sun);

	/* The next watchdog ping, 100 ms away, finds the queue full. */
	fill_notify_queue(&sun);
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	wait_disconnected(&d, 1);

	ck_assert(wait_notify(fd, "WATCHDOG=1", msg, sizeof msg));
	stop_notified(&d, fd);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

/* Takes the daemon's HELLO timeout, 10 s, to run. */
START_TEST(test_silent_connection_closed)
{
	struct harness_daemon d;
	struct pollfd pfd = {.events = POLLIN};
	struct proto_receipt receipt;
	int talker, silent;

	START(&d, "--log-level", "debug");
	talker = raw_hello(&d, 4723, 0);
	ck_assert_msg(harness_wait_log(&d, "new process", 1) == 0, "%s",
		      harness_error());
	silent = raw_connect(&d);
	ck_assert_msg(harness_wait_closed(silent) == 0, "%s", harness_error());
	assert_log_has(&d, "closing connection: no HELLO within 10 s");
	/* The one that said HELLO earlier is still open: past its RECEIPT,
	 * nothing to read. */
	ck_assert_msg(harness_read_receipt(talker, &receipt) == 0, "%s",
		      harness_error());
	pfd.fd = talker;
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	close(talker);
	close(silent);
	STOP_OK(&d);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------ command line */

static int run_cli(const char *a1, const char *a2, char **out)
{
	const char *argv[] = {"ctxleakd", a1, a2, NULL};

	return harness_exec(argv, out);
}

START_TEST(test_help_and_version)
{
	char *out;

	ck_assert_int_eq(run_cli("--help", NULL, &out), 0);
	ck_assert_msg(strstr(out, "--socket PATH") != NULL &&
			  strstr(out, "--keep leaky|all") != NULL,
		      "%s", out);
	free(out);
	ck_assert_int_eq(run_cli("--version", NULL, &out), 0);
	ck_assert_str_eq(out, "ctxleakd 0.1.0\n");
	free(out);
}
END_TEST

START_TEST(test_every_option_accepted)
{
	struct harness_daemon d;

	START(&d, "--keep", "all", "--log-level", "warn", "--max-connections",
	      "10", "--max-open-scopes", "1000", "--max-open-scopes-total",
	      "100000", "--max-ended-scopes-total", "100000",
	      "--max-ended-scopes", "100", "--max-request-age", "10m",
	      "--max-held", "1M", "--max-pending", "2M", "--retention", "7d,1G",
	      "--linger", "250ms", "--partial-timeout", "2s",
	      "--max-record-size", "64K", "--max-string", "4096");
	example_client(&d, CTXLEAK_BACKEND_THREAD);
	STOP_OK(&d);
	assert_worked_example_leaks(&d);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_bad_options)
{
	static const char *const cases[][3] = {
	    {"--keep", "some", "neither leaky nor all"},
	    {"--log-level", "loud", "--log-level"},
	    {"--max-connections", "0", "--max-connections"},
	    {"--max-ended-scopes", "0", "--max-ended-scopes"},
	    {"--max-held", "lots", "bad size"},
	    {"--max-pending", "64Q", "bad size"},
	    {"--max-request-age", "10", "bad duration"},
	    {"--retention", "7x", "bad duration"},
	    {"--retention", ",lots", "bad size"},
	    {"--linger", "-1s", "bad duration"},
	    {"--bogus", NULL, "Try 'ctxleakd --help'"},
	};
	char *out;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		ck_assert_int_eq(run_cli(cases[i][0], cases[i][1], &out), 2);
		ck_assert_msg(strstr(out, cases[i][2]) != NULL, "%s %s: %s",
			      cases[i][0], cases[i][1], out);
		free(out);
	}
}
END_TEST

int main(void)
{
	return check_main(
	    check_suite(
		"daemon",
		check_tcase("findings", 60, test_worked_example_thread,
			    test_worked_example_global,
			    test_worked_example_task, test_two_clients_at_once,
			    test_killed_client_gives_unclosed, test_keep_leaky,
			    test_max_held, test_no_secrets_in_logs, NULL),
		check_tcase(
		    "input", 60, test_garbage_closes_only_its_connection,
		    test_bad_input_keeps_what_came_before,
		    test_record_before_hello, test_dropped_and_unknown_counted,
		    test_string_limit_closes_connection, test_max_open_scopes,
		    test_max_open_scopes_total, test_max_ended_scopes_total,
		    test_max_request_age, test_instance_of_another_uid_refused,
		    test_kernel_pid_wins, test_reconnection_continues_process,
		    NULL),
		check_tcase(
		    "lifecycle", 60, test_sigterm_drains,
		    test_sigterm_loses_nothing_of_busy_clients,
		    test_sigterm_accepts_the_backlog,
		    test_second_daemon_refused,
		    test_second_daemon_on_the_database_refused,
		    test_two_daemons_start_at_once,
		    test_damaged_database_warned, test_stale_socket_replaced,
		    test_unwritable_db, test_db_error_said_once,
		    test_db_directories_0750, test_foreign_socket_directory,
		    test_max_connections, test_refusals_logged_per_burst,
		    test_out_of_descriptors, test_sighup_reopens_log_file,
		    test_sd_notify, test_sd_notify_never_blocks,
		    test_journal_prefixes, NULL),
		check_tcase("command line", 60, test_help_and_version,
			    test_bad_options, test_every_option_accepted, NULL),
		check_tcase("slow", 60, test_silent_connection_closed, NULL),
		NULL),
	    NULL);
}
