/*
 * test_shutdown.c: how long ctxleak_shutdown takes, and what it counts,
 * whatever listens on the socket; and what the daemon makes of a CLOSE.
 *
 * - A peer that is no daemon (it accepts and hangs up, with junk or
 *   without a byte, or holds the connection and never reads): shutdown
 *   gives up within its bound (a second without a daemon) and counts
 *   every record as dropped, since no daemon took any.
 * - A real daemon under --keep=leaky, a request still open at shutdown:
 *   the CLOSE lets the daemon judge and commit what it holds and
 *   acknowledge it, so that shutdown takes about a commit interval
 *   (200 ms), not the second the ACK is otherwise held back, and a daemon
 *   killed right after has every record in its file.
 * - A process finalised without CLOSE (vanished) that comes back: its
 *   reconnection shows it did not vanish; how that one ends decides.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "cli_run.h"
#include "ctxleak.h"
#include "harness_check.h"
#include "proto.h"
#include "raw.h"

#define MS 1000000ull
/* ctxleak_shutdown's bound against no daemon (libctxleak(3): a second
 * without progress or without a daemon), and what a slow machine may
 * add to it. */
#define SHUTDOWN_BOUND_MS 1000
#define SHUTDOWN_SLACK_MS 500
/* Requests the client makes before it shuts down: 6000 records, about
 * 250 KB, more than a Unix socket's buffer takes. */
#define REQUESTS 1500

/* What the client child saw, in memory shared with the test. */
struct shutdown_report {
	uint64_t produced;	 /* records made */
	uint64_t shutdown_ns;	 /* how long ctxleak_shutdown took */
	struct ctxleak_stats st; /* the library's counters after it */
	int open_request;	 /* leave a request open at shutdown */
};

/* A thread's request that never ends: its BEGIN and a TAG. */
static void *begin_and_leave(void *arg)
{
	(void)arg;
	ctxleak_begin("GET /open");
	ctxleak_tag("k", "v");
	return NULL;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000 + (uint64_t)t.tv_nsec;
}

static struct shutdown_report *report_new(void)
{
	struct shutdown_report *r =
	    mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(r, MAP_FAILED);
	memset(r, 0, sizeof *r);
	return r;
}

/* A harness_client_fn: REQUESTS clean requests (and, with open_request,
 * one begun before them that never ends), then a timed shutdown. */
static int produce_then_shut_down(void *arg)
{
	struct shutdown_report *r = arg;
	uint64_t start;

	pthread_t t;

	if (r->open_request) {
		if (pthread_create(&t, NULL, begin_and_leave, NULL) != 0 ||
		    pthread_join(t, NULL) != 0)
			return 3;
		r->produced += 2;
	}
	for (int i = 0; i < REQUESTS; i++) {
		uint64_t ctx = ctxleak_begin("GET /shut");

		ctxleak_tag("k", "v");
		ctxleak_event("e", NULL);
		ctxleak_end(ctx);
		r->produced += 4;
	}
	start = now_ns();
	ctxleak_shutdown();
	r->shutdown_ns = now_ns() - start;
	ctxleak_stats(&r->st);
	return 0;
}

/* ------------------------------------------------- a peer not a daemon */

enum peer_kind { PEER_JUNK, PEER_SILENT, PEER_DEAF };

static const char *const peer_names[] = {
    "writes junk and hangs up", "hangs up without a byte",
    "holds the connection and never reads"};

/* The listening socket on fake's path, and how it answers.  The peer is
 * a process of its own, not a thread: the client is forked from this
 * process, and a fork taken while another thread held an allocator's
 * lock (ASan's) left the client blocked in calloc for ever. */
struct fake_peer {
	struct harness_daemon fake; /* its directory and socket path only */
	int lfd;
	enum peer_kind kind;
	unsigned *accepted; /* shared with the peer process */
	pid_t pid;	    /* the peer process */
};

static void fake_peer_main(struct fake_peer *p)
{
	static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n\xc1\xff";
	int fd;

	for (;;) {
		if ((fd = accept(p->lfd, NULL, NULL)) < 0)
			continue;
		__atomic_add_fetch(p->accepted, 1, __ATOMIC_SEQ_CST);
		if (p->kind == PEER_JUNK &&
		    write(fd, junk, sizeof junk - 1) < 0)
			perror("junk");
		/* PEER_DEAF keeps every connection open until it is killed. */
		if (p->kind != PEER_DEAF)
			close(fd);
	}
}

static void fake_peer_start(struct fake_peer *p, enum peer_kind kind)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	memset(p, 0, sizeof *p);
	p->kind = kind;
	p->accepted = mmap(NULL, sizeof *p->accepted, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(p->accepted, MAP_FAILED);
	ck_assert_msg(harness_prepare(&p->fake) == 0, "%s", harness_error());
	memcpy(sun.sun_path, p->fake.socket, strlen(p->fake.socket));
	p->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(p->lfd, 0);
	ck_assert_int_eq(bind(p->lfd, (struct sockaddr *)&sun, sizeof sun), 0);
	ck_assert_int_eq(listen(p->lfd, 64), 0);
	p->pid = fork();
	ck_assert_int_ge(p->pid, 0);
	if (p->pid == 0) {
		fake_peer_main(p);
		_exit(0);
	}
	close(p->lfd);
}

static void fake_peer_stop(struct fake_peer *p)
{
	kill(p->pid, SIGKILL);
	waitpid(p->pid, NULL, 0);
	harness_cleanup(&p->fake);
}

/*
 * 6000 records kept for no daemon, then shutdown against a peer of each
 * kind: it returns within its bound (a peer that hangs up at once made it
 * reconnect, and count every send as progress, for ever), and counts all
 * 6000 as dropped (the one that holds the connection had its bytes
 * counted as a live daemon's).
 */
START_TEST(test_shutdown_bounded_against_no_daemon)
{
	struct shutdown_report *r = report_new();
	struct fake_peer p;
	int status;

	fake_peer_start(&p, (enum peer_kind)_i);
	status = harness_client(&p.fake, CTXLEAK_BACKEND_THREAD,
				produce_then_shut_down, r);
	fake_peer_stop(&p);
	printf("a peer that %s: shutdown %.0f ms (bound %d ms), %llu "
	       "records, %llu dropped, %llu connections, %u accepted\n",
	       peer_names[_i], (double)r->shutdown_ns / MS, SHUTDOWN_BOUND_MS,
	       (unsigned long long)r->produced,
	       (unsigned long long)r->st.dropped,
	       (unsigned long long)r->st.connects, *p.accepted);
	munmap(p.accepted, sizeof *p.accepted);
	ck_assert_msg(status == 0, "the client: %d (%s)", status,
		      status == -1 ? harness_error() : "exit status");
	ck_assert_uint_le(r->shutdown_ns,
			  (SHUTDOWN_BOUND_MS + SHUTDOWN_SLACK_MS) * MS);
	ck_assert_uint_eq(r->st.records, r->produced);
	ck_assert_uint_eq(r->st.dropped, r->produced);
	munmap(r, sizeof *r);
}
END_TEST

/* ------------------------------------------------ CLOSE at the daemon */

/*
 * --keep=leaky, a request open at shutdown: the daemon holds its records
 * in memory, and the ACK a second of ts behind at most.  The CLOSE makes
 * the daemon judge (the open request: unclosed) and commit all it has
 * and acknowledge it: shutdown takes about a commit interval, and a
 * daemon killed as soon as the client is gone has every record.
 */
START_TEST(test_close_acknowledges_open_request)
{
	const char *args[] = {"--keep", "leaky", NULL};
	struct shutdown_report *r = report_new();
	struct harness_daemon d;

	r->open_request = 1;
	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					produce_then_shut_down, r),
			 0);
	harness_kill(&d);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	ck_assert_int_eq(harness_stop(&d), 0);
	printf("--keep=leaky, a request open at shutdown: shutdown %.0f ms, "
	       "%llu records, %lld stored after a kill, %llu dropped\n",
	       (double)r->shutdown_ns / MS, (unsigned long long)r->produced,
	       (long long)query_int(&d, "SELECT records FROM processes "
					"WHERE app = 'harness'"),
	       (unsigned long long)r->st.dropped);
	ck_assert_uint_eq(r->st.dropped, 0);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes "
				       "WHERE app = 'harness'"),
			 (int64_t)r->produced);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM leaks l JOIN "
				   "requests q ON q.id = l.victim_request_id "
				   "WHERE l.class = 'unclosed' AND "
				   "q.name = 'GET /open'"),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT vanished FROM processes "
				       "WHERE app = 'harness'"),
			 0);
	/* Half the second the ACK was held back. */
	ck_assert_uint_lt(r->shutdown_ns, 500 * MS);
	munmap(r, sizeof *r);
	harness_cleanup(&d);
}
END_TEST

/* ----------------------------------------------------- vanished, back */

/* A version 2 HELLO of instance 0x7a7a with seq, its RECEIPT read. */
static int hello_v2(const struct harness_daemon *d, uint64_t seq)
{
	struct proto_hello h = {.version = 2,
				.instance = 0x7a7a,
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

/* One request of ctx at ts, its WATERMARK, and a CLOSE when close_it;
 * then the connection ends and the process is finalised (--linger 0). */
static void one_connection(const struct harness_daemon *d, uint64_t seq,
			   uint64_t ctx, uint64_t ts, int close_it,
			   int connections)
{
	struct proto_record wm = {.type = PROTO_WATERMARK, .ts = ts + 10};
	struct proto_record cl = {.type = PROTO_CLOSE, .ts = ts + 20};
	char sql[160];
	int fd = hello_v2(d, seq);

	raw_send_request(fd, ctx, ts);
	raw_send(fd, &wm);
	if (close_it)
		raw_send(fd, &cl);
	close(fd);
	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM processes WHERE instance = %d AND "
		 "connections = %d AND disconnected_at IS NOT NULL",
		 0x7a7a, connections);
	ck_assert_msg(harness_wait_int(d, sql, 1) == 0, "%s", harness_error());
}

static int64_t vanished(const struct harness_daemon *d)
{
	return query_int(d,
			 "SELECT vanished FROM processes WHERE "
			 "instance = %d",
			 0x7a7a);
}

/* What `ctxleak summary --json` says of vanished processes: the lines
 * that carry "vanished". */
static int summary_vanished(const struct harness_daemon *d)
{
	struct run r = run("--db", d->db, "summary", "--json");
	char *line, *save = NULL;
	int n = 0;

	ck_assert_msg(r.status == 0 || r.status == 1, "summary: %d: %s",
		      r.status, r.err);
	for (line = strtok_r(r.out, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		n += strstr(line, "\"vanished\"") != NULL;
	run_free(&r);
	return n;
}

/*
 * Finalised without CLOSE: vanished.  It comes back and ends with CLOSE:
 * it did not vanish after all, and summary no longer says so.  It comes
 * back again and ends without: vanished again.
 */
START_TEST(test_vanished_cleared_by_close_after_return)
{
	struct harness_daemon d;

	START(&d, "--keep", "all", "--linger", "0");
	one_connection(&d, 0, 71, 1000, 0, 1);
	ck_assert_int_eq(vanished(&d), 1);
	ck_assert_int_eq(summary_vanished(&d), 1);
	one_connection(&d, RAW_REQUEST_RECORDS, 72, 2000, 1, 2);
	ck_assert_int_eq(vanished(&d), 0);
	ck_assert_int_eq(summary_vanished(&d), 0);
	one_connection(&d, 2 * RAW_REQUEST_RECORDS, 73, 3000, 0, 3);
	ck_assert_int_eq(vanished(&d), 1);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(vanished(&d), 1);
	ck_assert_int_eq(raw_records_of(&d, 0x7a7a), 3 * RAW_REQUEST_RECORDS);
	harness_cleanup(&d);
}
END_TEST

static Suite *shutdown_suite(void)
{
	Suite *s = suite_create("shutdown");
	TCase *tc = check_tcase("no daemon", 90, NULL);

	tcase_add_loop_test(tc, test_shutdown_bounded_against_no_daemon,
			    PEER_JUNK, PEER_DEAF + 1);
	suite_add_tcase(s, tc);
	suite_add_tcase(
	    s, check_tcase("close", 60, test_close_acknowledges_open_request,
			   test_vanished_cleared_by_close_after_return, NULL));
	return s;
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return check_main(shutdown_suite(), NULL);
}
