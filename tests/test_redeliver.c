/*
 * test_redeliver.c: acknowledged delivery (PROTOCOL.md 2.3) when a
 * version 2 process reconnects and sends again what no ACK covered, at
 * the moments where the daemon's view of the process is in flux: right
 * after it finalised the previous connection, before the commit that
 * writes the process's row (200 ms at most); while the disk refuses
 * writes (the row's update, or the row itself, held in memory); and
 * across a crash of the daemon in that window.  Every record must be
 * stored exactly once, and the process's row must count it once.
 *
 * The peers are raw version 2 clients written here, so that each test
 * says exactly when a connection ends, which ACKs were read and what is
 * sent again.  A randomized run of several of them against one daemon
 * looks for other windows; it is seeded, prints its seed when it fails,
 * and CTXLEAK_SEED=N repeats a run.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "harness_check.h"
#include "proto.h"

/* A record's ts is TS_BASE + TS_STEP * (its stream position + 1): the
 * stream position gives both its ts and its payload, so that a record
 * sent again is byte for byte the one sent first. */
#define TS_BASE 1000000000ull
#define TS_STEP 16
/* The daemon's debug line when it has finalised a process. */
#define FINALISED "finalised: "
/* Its line when a commit failed. */
#define STORE_FAILED "rows not stored, retrying"

/* One raw version 2 client process: what it produced, what it keeps for
 * sending again, and its connection. */
struct peer {
	uint64_t instance;
	int fd;		      /* -1: not connected */
	uint64_t made;	      /* records produced: positions 0 .. made-1 */
	uint64_t sent;	      /* positions below it were sent at least once */
	uint64_t kept;	      /* the first position no ACK covered */
	uint64_t acked;	      /* the highest ACK read */
	unsigned connections; /* HELLOs the daemon accepted */
	struct proto_receipt receipt; /* the last connection's */
	unsigned char in[64];	      /* daemon bytes not parsed yet */
	size_t inlen;
};

static uint64_t ts_of(uint64_t pos)
{
	return TS_BASE + TS_STEP * (pos + 1);
}

static void peer_init(struct peer *p, uint64_t instance)
{
	*p = (struct peer){.instance = instance, .fd = -1};
}

/* The record at pos: an EVENT outside any request (no finding), whose
 * message names the instance and the position. */
static size_t encode_at(const struct peer *p, uint64_t pos, unsigned char *buf,
			size_t cap)
{
	char msg[48];
	int len =
	    snprintf(msg, sizeof msg, "%" PRIx64 ":%" PRIu64, p->instance, pos);
	struct proto_record r = {.type = PROTO_EVENT,
				 .ts = ts_of(pos),
				 .tid = 7,
				 .name = {"e", 1},
				 .message = {msg, (uint32_t)len}};
	size_t n = proto_encode_record(buf, cap, &r);

	ck_assert_uint_gt(n, 0);
	return n;
}

static size_t encode_mark(uint8_t type, uint64_t ts, unsigned char *buf,
			  size_t cap)
{
	struct proto_record r = {.type = type, .ts = ts};
	size_t n = proto_encode_record(buf, cap, &r);

	ck_assert_uint_gt(n, 0);
	return n;
}

/* An ACK of w: what it covers is freed, in stream order. */
static void peer_acked(struct peer *p, uint64_t w)
{
	if (w > p->acked)
		p->acked = w;
	while (p->kept < p->sent && ts_of(p->kept) <= w)
		p->kept++;
}

/* Reads what the daemon sent within timeout_ms (0: only what is there):
 * the RECEIPT and ACKs.  The messages parsed; -1 at end of file. */
static int peer_read(struct peer *p, int timeout_ms)
{
	struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
	struct proto_reply r;
	int64_t used;
	ssize_t n;
	int msgs = 0;

	if (poll(&pfd, 1, timeout_ms) != 1)
		return 0;
	n = recv(p->fd, p->in + p->inlen, sizeof p->in - p->inlen,
		 MSG_DONTWAIT);
	if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
		return -1;
	if (n > 0)
		p->inlen += (size_t)n;
	while ((used = proto_parse_reply(p->in, p->inlen, &r)) > 0) {
		if (r.kind == PROTO_MSG_RECEIPT)
			p->receipt = r.receipt;
		else if (r.kind == PROTO_MSG_ACK)
			peer_acked(p, r.watermark);
		memmove(p->in, p->in + used, p->inlen - (size_t)used);
		p->inlen -= (size_t)used;
		msgs++;
	}
	ck_assert_int_ge(used, 0);
	return msgs;
}

/* Positions from .. to-1, then a WATERMARK of the last when wm. */
static void peer_send(struct peer *p, uint64_t from, uint64_t to, int wm)
{
	unsigned char buf[8192];
	size_t n = 0;

	for (uint64_t pos = from; pos < to; pos++) {
		if (sizeof buf - n < 128) {
			ck_assert_int_eq(harness_write_all(p->fd, buf, n), 0);
			n = 0;
		}
		n += encode_at(p, pos, buf + n, sizeof buf - n);
	}
	if (wm && to > 0)
		n += encode_mark(PROTO_WATERMARK, ts_of(to - 1), buf + n,
				 sizeof buf - n);
	if (n > 0)
		ck_assert_int_eq(harness_write_all(p->fd, buf, n), 0);
	if (to > p->sent)
		p->sent = to;
}

/* A new connection: HELLO with seq the first position kept, and its
 * RECEIPT read.  Nothing is sent again yet (peer_resend). */
static void peer_hello(struct peer *p, const struct harness_daemon *d)
{
	struct proto_hello h = {.version = 2,
				.instance = p->instance,
				.pid = 1,
				.app = {"redeliver", 9},
				.has_seq = 1,
				.seq = p->kept};
	unsigned char buf[256];
	size_t n = proto_encode_hello(buf, sizeof buf, &h);
	int msgs = 0;

	ck_assert_uint_gt(n, 0);
	p->fd = harness_connect(d);
	ck_assert_msg(p->fd >= 0, "%s", harness_error());
	ck_assert_int_eq(harness_write_all(p->fd, buf, n), 0);
	p->inlen = 0;
	p->receipt = (struct proto_receipt){UINT64_MAX, UINT64_MAX};
	for (int waited = 0; p->receipt.records == UINT64_MAX; waited += 10) {
		ck_assert_msg(waited < HARNESS_TIMEOUT_SEC * 1000,
			      "no RECEIPT for %" PRIx64, p->instance);
		msgs = peer_read(p, 10);
		ck_assert_msg(msgs >= 0, "%" PRIx64 " refused", p->instance);
	}
	p->connections++;
}

/* Everything kept, sent again in the order first sent, with a
 * WATERMARK of the last. */
static void peer_resend(struct peer *p)
{
	peer_send(p, p->kept, p->sent, 1);
}

static void peer_produce(struct peer *p, uint64_t n, int wm)
{
	uint64_t from = p->made;

	p->made += n;
	if (p->fd >= 0)
		peer_send(p, from, p->made, wm);
}

/* Reads ACKs until every record sent is acknowledged. */
static void peer_wait_acked(struct peer *p)
{
	for (int waited = 0; p->kept < p->sent; waited += 10) {
		ck_assert_msg(waited < HARNESS_TIMEOUT_SEC * 1000,
			      "%" PRIx64 ": no ACK past position %" PRIu64
			      " of %" PRIu64,
			      p->instance, p->kept, p->sent);
		ck_assert_int_ge(peer_read(p, 10), 0);
	}
}

/* The connection ends; ACKs not read are lost with it. */
static void peer_disconnect(struct peer *p)
{
	close(p->fd);
	p->fd = -1;
	p->inlen = 0;
}

/* Shutting down as libctxleak does: what was never sent, CLOSE, and the
 * ACK that covers everything. */
static void peer_finish(struct peer *p, const struct harness_daemon *d)
{
	unsigned char buf[64];

	if (p->fd < 0) {
		peer_hello(p, d);
		peer_resend(p);
	}
	peer_send(p, p->sent, p->made, 1);
	ck_assert_int_eq(
	    harness_write_all(p->fd, buf,
			      encode_mark(PROTO_CLOSE, ts_of(p->made - 1) + 1,
					  buf, sizeof buf)),
	    0);
	peer_wait_acked(p);
	peer_disconnect(p);
}

/* ------------------------------------------------------------ checks */

/* The instance's records rows, its distinct payloads, and its row's
 * counters, printed; then each record stored exactly once and counted
 * once.  what names the run in the figures. */
static void check_once(const struct harness_daemon *d, const struct peer *p,
		       const char *what)
{
	const char *of = "(SELECT id FROM processes WHERE instance = %lld)";
	char q[256];
	int64_t rows, distinct, procs, records, dropped, conns;

	snprintf(q, sizeof q,
		 "SELECT count(*) FROM records WHERE process_id IN %s", of);
	rows = query_int(d, q, (long long)p->instance);
	snprintf(q, sizeof q,
		 "SELECT count(DISTINCT value) FROM records WHERE "
		 "process_id IN %s",
		 of);
	distinct = query_int(d, q, (long long)p->instance);
	procs = query_int(d,
			  "SELECT count(*) FROM processes WHERE instance "
			  "= %lld",
			  (long long)p->instance);
	records = query_int(d,
			    "SELECT sum(records) FROM processes WHERE "
			    "instance = %lld",
			    (long long)p->instance);
	dropped = query_int(d,
			    "SELECT sum(dropped) FROM processes WHERE "
			    "instance = %lld",
			    (long long)p->instance);
	conns = query_int(d,
			  "SELECT sum(connections) FROM processes WHERE "
			  "instance = %lld",
			  (long long)p->instance);
	printf("%s: instance %" PRIx64 ": produced %" PRIu64 ", rows %lld "
	       "(%lld distinct), process rows %lld, records %lld, dropped "
	       "%lld, connections %lld of %u\n",
	       what, p->instance, p->made, (long long)rows, (long long)distinct,
	       (long long)procs, (long long)records, (long long)dropped,
	       (long long)conns, p->connections);
	ck_assert_int_eq(procs, 1);
	ck_assert_int_eq(distinct, (int64_t)p->made);
	ck_assert_int_eq(rows, (int64_t)p->made);
	ck_assert_int_eq(records, (int64_t)p->made);
	ck_assert_int_eq(dropped, 0);
	ck_assert_int_eq(conns, (int64_t)p->connections);
}

/* ------------------------------------------------ the commit window */

/* Records acknowledged before the window, and sent in it (received,
 * judged at the finalise, not committed). */
#define BEFORE	  100
#define IN_WINDOW 100

/*
 * The process is finalised at its disconnect (--linger 0) with records
 * the last commit did not hold; it reconnects before the next commit and
 * sends them again.  Its row in the file lacks them: the daemon must
 * take what it holds for the row in memory.  _i 0: the first
 * reconnection (the row has no committed position yet); 1: a later one
 * (the row's is NULL after a reconnection).
 */
START_TEST(test_reconnect_before_commit)
{
	struct harness_daemon d;
	struct peer p;
	uint64_t receipt;

	START(&d, "--keep", "all", "--log-level", "debug");
	peer_init(&p, 0x7e1000 + (uint64_t)_i);
	peer_hello(&p, &d);
	if (_i) {
		peer_produce(&p, 10, 1);
		peer_wait_acked(&p);
		peer_disconnect(&p);
		ck_assert_msg(harness_wait_log(&d, FINALISED, 1) == 0, "%s",
			      harness_error());
		ck_assert_msg(harness_wait_int(&d,
					       "SELECT count(*) FROM processes "
					       "WHERE committed_position = 10",
					       1) == 0,
			      "%s", harness_error());
		peer_hello(&p, &d);
	}
	peer_produce(&p, BEFORE, 1);
	peer_wait_acked(&p);
	/* No WATERMARK: nothing is judged, nothing opens a transaction,
	 * until the disconnect judges them all. */
	peer_produce(&p, IN_WINDOW, 0);
	peer_disconnect(&p);
	ck_assert_msg(harness_wait_log(&d, FINALISED, 1 + _i) == 0, "%s",
		      harness_error());
	/* Within a few ms of the finalise; the commit comes 200 ms after
	 * it. */
	peer_hello(&p, &d);
	receipt = p.receipt.records;
	peer_resend(&p);
	peer_finish(&p, &d);
	ck_assert_int_eq(harness_stop(&d), 0);
	check_once(&d, &p, "reconnect before commit");
	/* Everything it sent before: the daemon had it all. */
	ck_assert_uint_eq(receipt, BEFORE + IN_WINDOW + (_i ? 10 : 0));
	harness_cleanup(&d);
}
END_TEST

/* The same window, and the daemon is killed in it: what the finalise
 * judged is lost with it, the row says what the last commit held, and the
 * next daemon takes what is sent again once. */
START_TEST(test_crash_before_commit)
{
	const char *args[] = {"--keep", "all", "--log-level", "debug", NULL};
	struct harness_daemon d;
	struct peer p;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	peer_init(&p, 0x7e2000);
	peer_hello(&p, &d);
	peer_produce(&p, BEFORE, 1);
	peer_wait_acked(&p);
	peer_produce(&p, IN_WINDOW, 0);
	peer_disconnect(&p);
	ck_assert_msg(harness_wait_log(&d, FINALISED, 1) == 0, "%s",
		      harness_error());
	harness_kill(&d);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	peer_hello(&p, &d);
	ck_assert_uint_eq(p.receipt.records, BEFORE);
	peer_resend(&p);
	peer_finish(&p, &d);
	ck_assert_int_eq(harness_stop(&d), 0);
	check_once(&d, &p, "crash before commit");
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------ a disk that refuses */

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* The daemon's file-size limit at its WAL's size, as test_faults sets it:
 * not one more frame, and every commit fails; RLIM_INFINITY lifts it. */
static void limit_wal(const struct harness_daemon *d, int on)
{
	char wal[160];
	struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};

	snprintf(wal, sizeof wal, "%s-wal", d->db);
	if (on)
		rl.rlim_cur = (rlim_t)file_size(wal);
	ck_assert_msg(prlimit(d->pid, RLIMIT_FSIZE, &rl, NULL) == 0,
		      "prlimit: %s", strerror(errno));
}

/* A commit after the one at last_commit (runs.last_commit_at). */
static void wait_commit(const struct harness_daemon *d, int64_t last_commit)
{
	ck_assert_msg(harness_wait_int(d,
				       "SELECT max(last_commit_at) FROM runs",
				       last_commit + 1) == 0,
		      "%s", harness_error());
}

/*
 * Every record is committed (its ACK never read: the connection broke
 * first), then the disk refuses writes: the finalise's update of the row
 * and the reconnection's are held.  While the process is connected again,
 * once the disk takes writes, its row must say so (not disconnected, no
 * committed position, two connections), and what it sends again is
 * dropped by position.
 */
START_TEST(test_reconnect_while_disk_refuses)
{
	struct harness_daemon d;
	struct peer p;
	int64_t live, last_commit;

	START(&d, "--keep", "all", "--log-level", "debug");
	peer_init(&p, 0x7e3000);
	peer_hello(&p, &d);
	peer_produce(&p, BEFORE, 1);
	peer_wait_acked(&p);
	peer_produce(&p, IN_WINDOW, 1);
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT records FROM processes WHERE "
				       "instance = 8269824",
				       BEFORE + IN_WINDOW) == 0,
		      "%s", harness_error());
	last_commit = query_int(&d, "SELECT max(last_commit_at) FROM runs");
	limit_wal(&d, 1);
	peer_disconnect(&p);
	ck_assert_msg(harness_wait_log(&d, STORE_FAILED, 1) == 0, "%s",
		      harness_error());
	ck_assert_int_eq(harness_log_count(&d, FINALISED), 1);
	peer_hello(&p, &d);
	ck_assert_uint_eq(p.receipt.records, BEFORE + IN_WINDOW);
	limit_wal(&d, 0);
	/* Rows are refused until a commit after that works. */
	wait_commit(&d, last_commit);
	peer_resend(&p);
	peer_produce(&p, 1, 1);
	peer_wait_acked(&p);
	live = query_int(&d, "SELECT count(*) FROM processes WHERE instance = "
			     "8269824 AND disconnected_at IS NULL AND "
			     "committed_position IS NULL AND connections = 2");
	ck_assert_int_eq(live, 1);
	peer_finish(&p, &d);
	ck_assert_int_eq(harness_stop(&d), 0);
	check_once(&d, &p, "reconnect while the disk refuses");
	harness_cleanup(&d);
}
END_TEST

/*
 * A new process comes while the disk refuses writes: its row is held.
 * It sends, is finalised, and reconnects while the row is still held:
 * the daemon must take it for the same process (one row), and drop what
 * it sends again.  The records sent while the disk was full are lost
 * and counted by the daemon (its rows not stored); none is stored
 * twice.
 */
START_TEST(test_reconnect_while_row_held)
{
	struct harness_daemon d;
	struct peer first, p;

	START(&d, "--keep", "all", "--log-level", "debug");
	/* Something committed first, so that the WAL exists. */
	peer_init(&first, 0x7e4000);
	peer_hello(&first, &d);
	peer_produce(&first, 1, 1);
	peer_wait_acked(&first);
	limit_wal(&d, 1);
	peer_init(&p, 0x7e4001);
	peer_hello(&p, &d);
	peer_produce(&p, IN_WINDOW, 1);
	ck_assert_msg(harness_wait_log(&d, STORE_FAILED, 1) == 0, "%s",
		      harness_error());
	peer_disconnect(&p);
	ck_assert_msg(harness_wait_log(&d, FINALISED, 1) == 0, "%s",
		      harness_error());
	peer_hello(&p, &d);
	ck_assert_uint_eq(p.receipt.records, IN_WINDOW);
	limit_wal(&d, 0);
	peer_resend(&p);
	peer_finish(&p, &d);
	peer_finish(&first, &d);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM processes WHERE "
				   "instance = %lld",
				   (long long)p.instance),
			 1);
	ck_assert_int_eq(query_int(&d,
				   "SELECT records FROM processes WHERE "
				   "instance = %lld",
				   (long long)p.instance),
			 IN_WINDOW);
	ck_assert_int_eq(query_int(&d,
				   "SELECT connections FROM processes "
				   "WHERE instance = %lld",
				   (long long)p.instance),
			 2);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM (SELECT value "
				       "FROM records GROUP BY value HAVING "
				       "count(*) > 1)"),
			 0);
	harness_cleanup(&d);
}
END_TEST

static Suite *redeliver_suite(void)
{
	Suite *s = suite_create("redeliver");
	TCase *tc;

	tc = check_tcase("window", 60, NULL);
	tcase_add_loop_test(tc, test_reconnect_before_commit, 0, 2);
	tcase_add_test(tc, test_crash_before_commit);
	tcase_add_test(tc, test_reconnect_while_disk_refuses);
	tcase_add_test(tc, test_reconnect_while_row_held);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	/* A peer the daemon hangs up on must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return check_main(redeliver_suite(), NULL);
}
