/*
 * test_redeliver.c: acknowledged delivery (PROTOCOL.md 2.3) when a
 * version 2 process reconnects and sends again what no ACK covered, at
 * the moments where the daemon's view of the process is in flux: right
 * after it finalised the previous connection, before the commit that
 * writes the process's row (200 ms at most); while the disk refuses
 * writes (the row's update, or the row itself, held in memory); across
 * a crash of the daemon in that window; and while the connection given
 * up still holds records the daemon has not read.  Every record must be
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
	uint64_t seq;	      /* the connection's first position: its HELLO's
				 seq, whatever ACKs free after it */
	uint64_t acked;	      /* the highest ACK read */
	unsigned connections; /* HELLOs the daemon accepted */
	int close_at_ack;     /* the connection ends at the next ACK */
	int requests; /* its records are requests of three (BEGIN, EVENT,
			 END), for --keep=leaky: else EVENTs only */
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

/* The record at pos: an EVENT whose message names the instance and the
 * position, outside any request (no finding), or, for a peer of
 * requests, the BEGIN, EVENT or END of request pos / 3 + 1 (none is
 * ended twice: misnest findings come only from a request cut in two by a
 * finalise). */
static size_t encode_at(const struct peer *p, uint64_t pos, unsigned char *buf,
			size_t cap)
{
	char msg[48];
	int len =
	    snprintf(msg, sizeof msg, "%" PRIx64 ":%" PRIu64, p->instance, pos);
	uint64_t ctx = p->requests ? pos / 3 + 1 : 0;
	struct proto_record r = {.type = PROTO_EVENT,
				 .ts = ts_of(pos),
				 .tid = 7,
				 .ctx = ctx,
				 .cause = ctx,
				 .name = {"e", 1},
				 .message = {msg, (uint32_t)len}};
	size_t n;

	if (p->requests && pos % 3 == 0) {
		r = (struct proto_record){.type = PROTO_BEGIN,
					  .ts = ts_of(pos),
					  .tid = 7,
					  .ctx = ctx,
					  .kind = PROTO_KIND_REQUEST,
					  .name = {"GET /r", 6}};
	} else if (p->requests && pos % 3 == 2) {
		r = (struct proto_record){.type = PROTO_END,
					  .ts = ts_of(pos),
					  .tid = 7,
					  .ctx = ctx,
					  .cause = ctx,
					  .cur = ctx};
	}
	n = proto_encode_record(buf, cap, &r);

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

/* A new connection: HELLO with seq the first position kept; its
 * RECEIPT is read by peer_hello_receipt. */
static void peer_hello_send(struct peer *p, const struct harness_daemon *d)
{
	struct proto_hello h = {.version = 2,
				.instance = p->instance,
				.pid = 1,
				.app = {"redeliver", 9},
				.has_seq = 1,
				.seq = p->kept};
	unsigned char buf[256];
	size_t n = proto_encode_hello(buf, sizeof buf, &h);

	ck_assert_uint_gt(n, 0);
	p->seq = p->kept;
	p->fd = harness_connect(d);
	ck_assert_msg(p->fd >= 0, "%s", harness_error());
	ck_assert_int_eq(harness_write_all(p->fd, buf, n), 0);
	p->inlen = 0;
	p->receipt = (struct proto_receipt){UINT64_MAX, UINT64_MAX};
}

static void peer_hello_receipt(struct peer *p)
{
	for (int waited = 0; p->receipt.records == UINT64_MAX; waited += 10) {
		ck_assert_msg(waited < HARNESS_TIMEOUT_SEC * 1000,
			      "no RECEIPT for %" PRIx64, p->instance);
		ck_assert_msg(peer_read(p, 10) >= 0, "%" PRIx64 " refused",
			      p->instance);
	}
	p->connections++;
}

/* A new connection, its RECEIPT read.  Nothing is sent again yet
 * (peer_resend). */
static void peer_hello(struct peer *p, const struct harness_daemon *d)
{
	peer_hello_send(p, d);
	peer_hello_receipt(p);
}

/* Everything kept at the HELLO, sent again in the order first sent, with
 * a WATERMARK of the last.  An ACK read with the RECEIPT may have freed
 * some of it since: the connection carries them all the same, from the
 * seq it announced. */
static void peer_resend(struct peer *p)
{
	peer_send(p, p->seq, p->sent, 1);
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

/* Shutting down as libctxleak does: what was never sent, CLOSE, then
 * (peer_finish_wait) the ACK that covers everything. */
static void peer_finish_send(struct peer *p, const struct harness_daemon *d)
{
	unsigned char buf[64];

	if (p->fd < 0) {
		peer_hello(p, d);
		peer_resend(p);
	}
	/* Its last request ends: under --keep=leaky no ACK passes an open
	 * one before its process is finalised. */
	if (p->requests)
		p->made += (3 - p->made % 3) % 3;
	peer_send(p, p->sent, p->made, 1);
	ck_assert_int_eq(
	    harness_write_all(p->fd, buf,
			      encode_mark(PROTO_CLOSE, ts_of(p->made - 1) + 1,
					  buf, sizeof buf)),
	    0);
}

static void peer_finish_wait(struct peer *p)
{
	peer_wait_acked(p);
	peer_disconnect(p);
}

static void peer_finish(struct peer *p, const struct harness_daemon *d)
{
	peer_finish_send(p, d);
	peer_finish_wait(p);
}

/* ------------------------------------------------------------ checks */

/* The instance's records rows and distinct payloads (for a peer of
 * requests: its requests, with a row or counted clean), and its row's
 * counters, printed; then each record stored exactly once and counted
 * once.  what names the run in the figures and the failure. */
static void check_once(const struct harness_daemon *d, const struct peer *p,
		       const char *what)
{
	const char *of = "(SELECT id FROM processes WHERE instance = %lld)";
	char q[512];
	int64_t rows, distinct, procs, records, dropped, conns, stored;

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
	if (p->requests) {
		snprintf(q, sizeof q,
			 "SELECT (SELECT count(*) FROM requests WHERE "
			 "process_id IN %s) + (SELECT coalesce(sum(requests), "
			 "0) FROM request_stats WHERE process_id IN %s)",
			 of, of);
		stored = query_int(d, q, (long long)p->instance,
				   (long long)p->instance);
		printf("%s: instance %" PRIx64 ": %" PRIu64 " requests, "
		       "%lld stored or counted\n",
		       what, p->instance, p->made / 3, (long long)stored);
		ck_assert_msg(stored == (int64_t)(p->made / 3),
			      "%s: instance %" PRIx64 ": requests not stored "
			      "exactly once",
			      what, p->instance);
	} else {
		ck_assert_msg(distinct == (int64_t)p->made &&
				  rows == (int64_t)p->made,
			      "%s: instance %" PRIx64 ": rows not stored "
			      "exactly once",
			      what, p->instance);
	}
	ck_assert_msg(procs == 1 && records == (int64_t)p->made &&
			  dropped == 0 && conns == (int64_t)p->connections,
		      "%s: instance %" PRIx64 " not counted exactly once", what,
		      p->instance);
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
	/* BEFORE, unless the commit came before the kill (a slow
	 * machine): then everything, and the window was missed. */
	ck_assert_msg(p.receipt.records == BEFORE ||
			  p.receipt.records == BEFORE + IN_WINDOW,
		      "RECEIPT of %" PRIu64 " records", p.receipt.records);
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

/* Records a connection holds for the daemon to read when the next one
 * says HELLO: more than the daemon reads of one connection per wakeup
 * (1 MiB), so that the two are read in turns. */
#define UNREAD 120000

/* Room in the kernel for UNREAD records and more, while the daemon does
 * not read. */
static void big_send_buffer(int fd)
{
	int size = 4 << 20;
	struct timeval limit = {HARNESS_TIMEOUT_SEC, 0};

	ck_assert_int_eq(
	    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size), 0);
	/* A buffer too small fails the test instead of hanging it. */
	ck_assert_int_eq(
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit), 0);
}

/*
 * A client gives up on a connection (closes it) with records still in
 * the kernel for the daemon to read, and says HELLO on a new one that
 * sends them again.  The daemon reads the two connections in turns: the
 * old one's records come between the new one's, and each record is
 * still stored once, by its position.
 */
START_TEST(test_reconnect_before_old_is_read)
{
	struct harness_daemon d;
	struct peer p;

	START(&d, "--keep", "all");
	peer_init(&p, 0x7e5000);
	peer_hello(&p, &d);
	big_send_buffer(p.fd);
	peer_produce(&p, 10, 1);
	peer_wait_acked(&p);
	ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
	peer_produce(&p, UNREAD, 1);
	peer_disconnect(&p);
	peer_hello_send(&p, &d);
	big_send_buffer(p.fd);
	peer_resend(&p);
	ck_assert_int_eq(kill(d.pid, SIGCONT), 0);
	peer_hello_receipt(&p);
	peer_finish(&p, &d);
	ck_assert_int_eq(harness_stop(&d), 0);
	check_once(&d, &p, "reconnect before the old one is read");
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------- randomized */

/* Peers against one daemon, and the steps they take in all. */
#define RANDOM_PEERS 6
#define RANDOM_STEPS 800

/* xorshift64*: the run is the seed's, whatever the libc. */
static uint64_t rng_next(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * 2685821657736338717ull;
}

static unsigned rng_below(uint64_t *state, unsigned n)
{
	return (unsigned)(rng_next(state) % n);
}

/* CTXLEAK_SEED, else the clock's. */
static uint64_t random_seed(void)
{
	const char *env = getenv("CTXLEAK_SEED");
	struct timespec ts;

	if (env != NULL && *env != '\0')
		return strtoull(env, NULL, 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
	       (uint64_t)getpid();
}

/* The connection breaks inside the record it was writing, a new one: the
 * client keeps that record (no ACK covers it) and sends it again. */
static void peer_cut(struct peer *p)
{
	unsigned char buf[128];
	size_t n = encode_at(p, p->made, buf, sizeof buf);

	p->made++;
	p->sent = p->made;
	ck_assert_int_eq(harness_write_all(p->fd, buf, n / 2), 0);
	peer_disconnect(p);
}

/* One step of a connected peer: a batch (with a WATERMARK or not), ACKs
 * read, or the end of its connection at some point of its exchange. */
static void connected_step(struct peer *p, uint64_t *rng)
{
	unsigned what = rng_below(rng, 100);

	if (what < 45) {
		peer_produce(p, 1 + rng_below(rng, 40), rng_below(rng, 4) != 0);
	} else if (what < 75) {
		ck_assert_int_ge(peer_read(p, (int)rng_below(rng, 3)), 0);
	} else if (what < 83) {
		/* Right after the next ACK (read at its next steps). */
		peer_produce(p, 1 + rng_below(rng, 10), 1);
		p->close_at_ack = 1;
	} else if (what < 91) {
		/* Before an ACK: what it sent may be judged or not. */
		peer_disconnect(p);
	} else {
		peer_cut(p);
	}
}

/*
 * Several peers that produce, read ACKs, and lose their connections at
 * random points (mid-batch, mid-record, right after an ACK, before one)
 * with random pauses, so that reconnections fall before, across and after
 * the daemon's commits and finalises.  In the end every record must be
 * stored exactly once (a peer keeps everything, so none is dropped).  _i
 * 0: each disconnect finalises the process (--linger 0); 1: a process
 * waits 20 ms for its reconnection; 2: as 0, under --keep=leaky with
 * requests, whose records the daemon holds until they end (the ACK stays
 * below the oldest).
 */
START_TEST(test_random_reconnections)
{
	uint64_t seed = random_seed(), rng = seed | 1;
	struct harness_daemon d;
	struct peer peers[RANDOM_PEERS];
	char what[64];

	printf("random reconnections %d: seed %" PRIu64
	       " (CTXLEAK_SEED=%" PRIu64 " repeats it)\n",
	       _i, seed, seed);
	START(&d, "--keep", _i == 2 ? "leaky" : "all", "--linger",
	      _i == 1 ? "20ms" : "0");
	for (int i = 0; i < RANDOM_PEERS; i++) {
		peer_init(&peers[i], 0x7f0000 + (uint64_t)(_i * 64 + i));
		peers[i].requests = _i == 2;
	}
	for (int step = 0; step < RANDOM_STEPS; step++) {
		struct peer *p = &peers[rng_below(&rng, RANDOM_PEERS)];

		/* About a millisecond a step, now and then much more: the
		 * run spans several commits, and the steps fall at every
		 * point between them. */
		harness_sleep_ms(rng_below(&rng, 50) == 0
				     ? (int)rng_below(&rng, 30)
				     : (int)rng_below(&rng, 3));
		if (p->close_at_ack) {
			uint64_t acked = p->acked;

			ck_assert_int_ge(peer_read(p, 0), 0);
			if (p->acked != acked) {
				p->close_at_ack = 0;
				peer_disconnect(p);
			}
		} else if (p->fd < 0) {
			peer_hello(p, &d);
			peer_resend(p);
		} else {
			connected_step(p, &rng);
		}
	}
	for (int i = 0; i < RANDOM_PEERS; i++)
		peer_finish_send(&peers[i], &d);
	for (int i = 0; i < RANDOM_PEERS; i++)
		peer_finish_wait(&peers[i]);
	ck_assert_int_eq(harness_stop(&d), 0);
	snprintf(what, sizeof what, "seed %" PRIu64, seed);
	for (int i = 0; i < RANDOM_PEERS; i++)
		check_once(&d, &peers[i], what);
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
	tcase_add_test(tc, test_reconnect_before_old_is_read);
	suite_add_tcase(s, tc);
	tc = check_tcase("random", 60, NULL);
	tcase_add_loop_test(tc, test_random_reconnections, 0, 3);
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
