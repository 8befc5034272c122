/*
 * test_crash.c: ctxleakd killed with SIGKILL while real clients emit, or
 * just after they exited, then restarted on the same socket and database.
 * The clients keep what no ACK covered, send it again to the next daemon,
 * which drops what it has, so that for every client the records stored
 * plus the drops it reported equal the records it produced, exactly, and
 * nothing is counted lost while the client's buffer holds it.
 *
 * Around it: raw peers of both protocol versions (a version 1 peer gets
 * its RECEIPT only; records sent again are dropped by position or by ts),
 * a peer that never reads its RECEIPT, a client refused over the
 * connection limit, and the client's side against a scripted daemon.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "ctxleak.h"
#include "emitter.h"
#include "harness_check.h"
#include "proto.h"
#include "raw.h"

#define CLIENTS 8
/* Records each client must have stored before a kill, and after each
 * restart before the next step. */
#define STORED_BEFORE 100
/* Bytes each client must hand a stopped daemon before it is killed: some
 * whole records, which the kill then certainly loses. */
#define HANDED_TO_STOPPED 2000

static void expect_receipt(int fd, uint64_t records, uint64_t dropped);

/* ------------------------------------------------------ emitting clients */

/* n clients of the thread backend that hold between stop and quit (see
 * emitter.h), their pids in pids. */
static struct emitters *fleet_start(const struct harness_daemon *d, int n,
				    pid_t *pids)
{
	struct emitters *f = emitters_new(n, 2000, 1);

	for (int i = 0; i < n; i++)
		pids[i] = emitters_spawn(d, f, i, CTXLEAK_BACKEND_THREAD);
	return f;
}

/* Every client has sent everything, and the daemon has it: stored, or
 * counted as dropped. */
static void fleet_stop(const struct harness_daemon *d, struct emitters *f,
		       const pid_t *pids)
{
	struct emitter *sl;
	char sql[128];

	f->stop = 1;
	for (int i = 0; i < f->n; i++) {
		sl = &f->e[i];
		for (int r = 0; !sl->idle && r < HARNESS_TIMEOUT_SEC * 100; r++)
			harness_sleep_ms(10);
		ck_assert_msg(sl->idle, "client %d did not stop", (int)pids[i]);
		snprintf(sql, sizeof sql,
			 "SELECT records + dropped FROM processes "
			 "WHERE pid = %d",
			 (int)pids[i]);
		if (harness_wait_int(d, sql, (int64_t)sl->produced) == -1)
			printf("%s\n", harness_error());
	}
	f->quit = 1;
	for (int i = 0; i < f->n; i++)
		ck_assert_int_eq(harness_client_wait(pids[i]), 0);
}

/* Every client has `connections` connections, and STORED_BEFORE more
 * records stored (committed) than when it had them. */
static void wait_all_storing(const struct harness_daemon *d, int n,
			     const pid_t *pids, int connections)
{
	char sql[CLIENTS][128];
	int64_t base[CLIENTS];

	snprintf(sql[0], sizeof sql[0],
		 "SELECT count(*) FROM processes WHERE connections >= %d",
		 connections);
	ck_assert_msg(harness_wait_int(d, sql[0], n) == 0, "%s",
		      harness_error());
	for (int i = 0; i < n; i++) {
		snprintf(sql[i], sizeof sql[i],
			 "SELECT records FROM processes WHERE pid = %d",
			 (int)pids[i]);
		base[i] = query_int(d, "%s", sql[i]);
	}
	for (int i = 0; i < n; i++)
		ck_assert_msg(
		    harness_wait_int(d, sql[i], base[i] + STORED_BEFORE) == 0,
		    "%s", harness_error());
}

/* The state letter of /proc/PID/stat ('T': stopped). */
static char process_state(pid_t pid)
{
	char path[64], line[512], *paren;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	ck_assert_ptr_nonnull(fgets(line, sizeof line, f));
	fclose(f);
	paren = strrchr(line, ')');
	ck_assert_ptr_nonnull(paren);
	return paren[2];
}

/* Stop the daemon and let every client hand its socket more bytes than a
 * record, which the daemon will never read. */
static void freeze_with_bytes_in_flight(const struct harness_daemon *d,
					struct emitters *f)
{
	uint64_t before[CLIENTS];
	int behind;

	ck_assert_int_eq(kill(d->pid, SIGSTOP), 0);
	/* The signal takes effect a moment later: what the clients hand
	 * over counts from then on. */
	for (int i = 0; process_state(d->pid) != 'T'; i++) {
		ck_assert_int_lt(i, HARNESS_TIMEOUT_SEC * 100);
		harness_sleep_ms(10);
	}
	for (int i = 0; i < f->n; i++)
		before[i] = f->e[i].sent_bytes;
	for (int round = 0; round < HARNESS_TIMEOUT_SEC * 100; round++) {
		behind = 0;
		for (int i = 0; i < f->n; i++)
			behind +=
			    f->e[i].sent_bytes < before[i] + HANDED_TO_STOPPED;
		if (behind == 0)
			return;
		harness_sleep_ms(10);
	}
	ck_abort_msg("%d clients handed the stopped daemon nothing", behind);
}

static void restart(struct harness_daemon *d, const char *const *args)
{
	ck_assert_msg(harness_launch(d, args) == 0, "%s", harness_error());
}

/* For every client: its row, its records rows (one per record stored
 * when keep_all), its own counters. */
static uint64_t check_counts(const struct harness_daemon *d,
			     const struct emitters *f, int min_connections,
			     int keep_all)
{
	uint64_t lost_total = 0;

	printf("pid, produced, lost or dropped (client), records, dropped, "
	       "records rows, connections\n");
	for (int i = 0; i < f->n; i++) {
		const struct emitter *sl = &f->e[i];
		int64_t records = emitter_process(d, sl, "records");
		int64_t dropped = emitter_process(d, sl, "dropped");
		int64_t conns = emitter_process(d, sl, "connections");
		int64_t rows = emitter_stored(d, sl);
		printf("  %d: %llu, %llu, %lld, %lld, %lld, %lld\n",
		       (int)sl->pid, (unsigned long long)sl->produced,
		       (unsigned long long)sl->st.dropped, (long long)records,
		       (long long)dropped, (long long)rows, (long long)conns);
		ck_assert_uint_eq(sl->st.records, sl->produced);
		ck_assert_int_ge(conns, min_connections);
		if (keep_all)
			ck_assert_int_eq(rows, records);
		ck_assert_uint_eq((uint64_t)(records + dropped), sl->produced);
		ck_assert_uint_eq((uint64_t)dropped, sl->st.dropped);
		lost_total += sl->st.dropped;
	}
	return lost_total;
}

/*
 * Two kills: the first of a daemon stopped (SIGSTOP) while every client
 * handed its socket bytes the daemon never read; the second of a running
 * daemon, which loses what it had received or judged since its last
 * commit.  The clients send both again: nothing is lost.  _i: 0
 * --keep=all, 1 --keep=leaky (records of clean requests are judged and
 * counted, but not kept).
 */
START_TEST(test_sigkill_twice_loses_nothing_uncounted)
{
	const char *args[] = {"--keep", _i ? "leaky" : "all", NULL};
	struct harness_daemon d;
	pid_t pids[CLIENTS];
	struct emitters *f;
	uint64_t lost;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	f = fleet_start(&d, CLIENTS, pids);
	wait_all_storing(&d, CLIENTS, pids, 1);
	freeze_with_bytes_in_flight(&d, f);
	harness_kill(&d);
	restart(&d, args);
	wait_all_storing(&d, CLIENTS, pids, 2);
	harness_kill(&d);
	restart(&d, args);
	wait_all_storing(&d, CLIENTS, pids, 3);
	fleet_stop(&d, f, pids);
	ck_assert_int_eq(harness_stop(&d), 0);
	printf("SIGKILL twice under load, --keep=%s:\n", args[1]);
	lost = check_counts(&d, f, 3, !_i);
	printf("records lost in the crashes and counted: %llu\n",
	       (unsigned long long)lost);
	/* What the stopped daemon never read, the clients sent again. */
	ck_assert_uint_eq(lost, 0);
	emitters_free(f);
	harness_cleanup(&d);
}
END_TEST

/* Clients that exit cleanly had their last records acknowledged: a daemon
 * killed 0.1 s later has them all in the file. */
START_TEST(test_sigkill_after_clean_exit)
{
	const char *args[] = {"--keep", _i ? "leaky" : "all", NULL};
	struct harness_daemon d;
	pid_t pids[4];
	struct emitters *f;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	f = fleet_start(&d, 4, pids);
	wait_all_storing(&d, 4, pids, 1);
	f->stop = 1;
	f->quit = 1;
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(harness_client_wait(pids[i]), 0);
	harness_sleep_ms(100);
	harness_kill(&d);
	restart(&d, args);
	ck_assert_int_eq(harness_stop(&d), 0);
	printf("SIGKILL 0.1 s after a clean exit, --keep=%s:\n", args[1]);
	ck_assert_uint_eq(check_counts(&d, f, 1, !_i), 0);
	emitters_free(f);
	harness_cleanup(&d);
}
END_TEST

/* A daemon killed under load and away until the clients exit: what
 * they had sent and no ACK covered they count as dropped with the rest,
 * so that stored + counted = produced, though the counts of what never
 * reached a daemon stay with the clients. */
START_TEST(test_sigkill_until_clients_exit)
{
	const char *args[] = {"--keep", "all", NULL};
	struct harness_daemon d;
	pid_t pids[4];
	struct emitters *f;
	int64_t records;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	f = fleet_start(&d, 4, pids);
	wait_all_storing(&d, 4, pids, 1);
	harness_kill(&d);
	f->stop = 1;
	f->quit = 1;
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(harness_client_wait(pids[i]), 0);
	restart(&d, args);
	ck_assert_int_eq(harness_stop(&d), 0);
	printf("SIGKILL, no daemon until the clients exit: pid, produced, "
	       "dropped (client), records\n");
	for (int i = 0; i < 4; i++) {
		const struct emitter *sl = &f->e[i];

		records = query_int(&d,
				    "SELECT records FROM processes WHERE "
				    "pid = %d",
				    (int)sl->pid);
		printf("  %d: %llu, %llu, %lld\n", (int)sl->pid,
		       (unsigned long long)sl->produced,
		       (unsigned long long)sl->st.dropped, (long long)records);
		ck_assert_uint_eq(sl->st.records, sl->produced);
		ck_assert_uint_eq((uint64_t)records + sl->st.dropped,
				  sl->produced);
	}
	emitters_free(f);
	harness_cleanup(&d);
}
END_TEST

/* Over --max-connections the daemon closes a connection before its
 * RECEIPT: the client keeps its records and sends them once a slot is
 * free. */
START_TEST(test_refused_client_delivers_later)
{
	const char *args[] = {"--keep", "all", "--max-connections", "1", NULL};
	struct harness_daemon d;
	pid_t pids[1];
	struct emitters *f;
	struct proto_receipt r;
	int fd;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	/* The one slot, once the harness's probe of the socket left it. */
	for (int i = 0;; i++) {
		ck_assert_int_lt(i, HARNESS_TIMEOUT_SEC * 10);
		fd = harness_connect(&d);
		ck_assert_msg(fd >= 0, "%s", harness_error());
		if (harness_send_hello(fd, 0xf111, 0) == 0 &&
		    harness_read_receipt(fd, &r) == 0)
			break;
		close(fd);
		harness_sleep_ms(100);
	}
	f = fleet_start(&d, 1, pids);
	/* Refused while it sends: connections come and go, nothing stays. */
	for (int i = 0; f->e[0].sent_bytes < 4 * HANDED_TO_STOPPED; i++) {
		ck_assert_int_lt(i, HARNESS_TIMEOUT_SEC * 100);
		harness_sleep_ms(10);
	}
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes"), 1);
	/* The client has a copy of the descriptor (it forked after). */
	shutdown(fd, SHUT_RDWR);
	close(fd);
	ck_assert_msg(
	    harness_wait_int(&d, "SELECT count(*) FROM processes", 2) == 0,
	    "%s", harness_error());
	wait_all_storing(&d, 1, pids, 1);
	fleet_stop(&d, f, pids);
	ck_assert_int_eq(harness_stop(&d), 0);
	printf("refused over --max-connections, then served:\n");
	ck_assert_uint_eq(check_counts(&d, f, 1, 1), 0);
	emitters_free(f);
	harness_cleanup(&d);
}
END_TEST

/* A stop in order loses nothing the kernel took: the clients reconnect to
 * the next daemon and count no loss. */
START_TEST(test_sigterm_restart_counts_no_loss)
{
	const char *args[] = {"--keep", "all", NULL};
	struct harness_daemon d;
	pid_t pids[2];
	struct emitters *f;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	f = fleet_start(&d, 2, pids);
	wait_all_storing(&d, 2, pids, 1);
	ck_assert_int_eq(harness_stop(&d), 0);
	restart(&d, args);
	wait_all_storing(&d, 2, pids, 2);
	fleet_stop(&d, f, pids);
	ck_assert_int_eq(harness_stop(&d), 0);
	printf("SIGTERM and restart under load:\n");
	ck_assert_uint_eq(check_counts(&d, f, 2, 1), 0);
	emitters_free(f);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------- raw peers */

/* raw_request at ts, then, when `judge`, a watermark past it. */
static size_t encode_request(unsigned char *buf, size_t cap, uint64_t ctx,
			     uint64_t ts, int judge)
{
	const struct proto_record wm = {.type = PROTO_WATERMARK,
					.ts = ts + 1000};
	size_t n = raw_request(buf, cap, ctx, ts);

	if (judge)
		n += raw_encode(buf + n, cap - n, &wm);
	return n;
}

static size_t encode_dropped(unsigned char *buf, size_t cap, uint64_t count)
{
	struct proto_record r = {
	    .type = PROTO_DROPPED, .ts = 3000, .count = count, .since = 2500};
	return raw_encode(buf, cap, &r);
}

static void expect_receipt(int fd, uint64_t records, uint64_t dropped)
{
	struct proto_receipt r;

	ck_assert_msg(harness_read_receipt(fd, &r) == 0, "%s", harness_error());
	ck_assert_uint_eq(r.records, records);
	ck_assert_uint_eq(r.dropped, dropped);
}

/* The daemon has finalised a connection's process: its row shows it
 * disconnected. */
static void wait_disconnected(const struct harness_daemon *d, int conns)
{
	char sql[160];

	snprintf(sql, sizeof sql,
		 "SELECT count(*) FROM processes WHERE app = 'raw' AND "
		 "connections = %d AND disconnected_at IS NOT NULL",
		 conns);
	ck_assert_msg(harness_wait_int(d, sql, 1) == 0, "%s", harness_error());
}

/*
 * An instance over three connections to a live daemon.  The first never
 * reads its RECEIPT and closes with it unread: its records are all kept,
 * and the daemon takes the close for a plain end of stream.  Each later
 * one is told exactly what the earlier ones sent: nothing lost.  _i is 0
 * for a daemon that finalises a process as soon as its connection closes
 * (the RECEIPT then comes from the row), 1 for one that keeps it in
 * memory for a reconnection.
 */
START_TEST(test_raw_reconnections_live_daemon)
{
	const char *linger = _i ? "30s" : "0";
	struct harness_daemon d;
	unsigned char buf[512];
	size_t n;
	int fd;
	char *log;

	START(&d, "--keep", "all", "--linger", linger, "--log-level", "debug");
	fd = raw_hello(&d, 0x5eed, 0);
	n = encode_request(buf, sizeof buf, 11, 1000, 1);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	/* The records are in when the request is. */
	ck_assert_msg(
	    harness_wait_int(&d, "SELECT count(*) FROM requests", 1) == 0, "%s",
	    harness_error());
	close(fd);
	if (!_i)
		wait_disconnected(&d, 1);
	fd = raw_hello(&d, 0x5eed, 0);
	expect_receipt(fd, 4, 0);
	n = encode_dropped(buf, sizeof buf, 3);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	close(fd);
	/* Its end of stream is read with the DROPPED. */
	ck_assert_msg(harness_wait_int(&d, "SELECT count(*) FROM drops", 1) ==
			  0,
		      "%s", harness_error());
	fd = raw_hello(&d, 0x5eed, 0);
	expect_receipt(fd, 4, 3);
	close(fd);
	/* A new instance holds nothing. */
	fd = raw_hello(&d, 0xf00d, 0);
	expect_receipt(fd, 0, 0);
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM processes WHERE "
				   "instance = %d AND records = 4 AND "
				   "dropped = 3 AND connections = 3 AND "
				   "error IS NULL",
				   0x5eed),
			 1);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 4);
	log = harness_log(&d);
	ck_assert_msg(strstr(log, "reset") == NULL &&
			  strstr(log, "closing connection") == NULL &&
			  strstr(log, "RECEIPT") == NULL,
		      "%s", log);
	free(log);
	harness_cleanup(&d);
}
END_TEST

/* After a kill, the RECEIPT is what was committed: the restarted daemon's
 * count for an instance equals its stored rows. */
START_TEST(test_raw_receipt_after_kill_is_committed)
{
	const char *args[] = {"--keep", "all", NULL};
	struct harness_daemon d;
	unsigned char buf[512];
	struct proto_receipt r;
	size_t n;
	int fd;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	fd = raw_hello(&d, 0xbeef, 0);
	n = encode_request(buf, sizeof buf, 12, 1000, 1);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT records FROM processes WHERE "
				       "instance = 48879",
				       4) == 0,
		      "%s", harness_error());
	/* Four more that the daemon receives but cannot judge: no watermark
	 * covers them.  A request row says they are in. */
	n = encode_request(buf, sizeof buf, 13, 5000, 0);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	n = encode_request(buf, sizeof buf, 14, 3000, 1);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	ck_assert_msg(
	    harness_wait_int(&d, "SELECT count(*) FROM requests", 2) == 0, "%s",
	    harness_error());
	harness_kill(&d);
	close(fd);
	restart(&d, args);
	fd = raw_hello(&d, 0xbeef, 0);
	ck_assert_msg(harness_read_receipt(fd, &r) == 0, "%s", harness_error());
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_uint_eq(r.records, 8);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 8);
	harness_cleanup(&d);
}
END_TEST

/* A raw HELLO of this version, with seq when has_seq; the RECEIPT read. */
static int hello_v(const struct harness_daemon *d, uint64_t instance,
		   uint32_t version, int has_seq, uint64_t seq,
		   uint64_t records)
{
	struct proto_hello h = {.version = version,
				.instance = instance,
				.app = {"raw", 3},
				.has_seq = has_seq,
				.seq = seq};
	unsigned char buf[256];
	size_t n = proto_encode_hello(buf, sizeof buf, &h);
	int fd = raw_connect(d);

	ck_assert_uint_gt(n, 0);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	expect_receipt(fd, records, 0);
	return fd;
}

/* The next daemon message, within timeout_ms; its kind, 0 for none. */
static uint64_t read_reply(int fd, struct proto_reply *r, int timeout_ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	unsigned char buf[64];
	size_t len = 0;
	int64_t n = 0;

	while (n == 0 && len < sizeof buf) {
		if (poll(&pfd, 1, timeout_ms) != 1 ||
		    recv(fd, buf + len, 1, 0) != 1)
			return 0;
		n = proto_parse_reply(buf, ++len, r);
	}
	ck_assert_int_gt(n, 0);
	return r->kind;
}

/* ACKs until one says watermark. */
static void expect_ack(int fd, uint64_t watermark)
{
	struct proto_reply r = {0};

	do {
		ck_assert_msg(read_reply(fd, &r, HARNESS_TIMEOUT_SEC * 1000) ==
				  PROTO_MSG_ACK,
			      "no ACK of %llu", (unsigned long long)watermark);
		ck_assert_uint_le(r.watermark, watermark);
	} while (r.watermark < watermark);
}

static void send_request(int fd, uint64_t ctx, uint64_t ts, int judge)
{
	unsigned char buf[512];
	size_t n = encode_request(buf, sizeof buf, ctx, ts, judge);

	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
}

/* Version 1 gets its RECEIPT and nothing else; version 2 an ACK once its
 * records are committed. */
START_TEST(test_raw_v1_receipt_only_v2_acks)
{
	struct harness_daemon d;
	struct proto_reply r;
	int v1, v2;

	START(&d, "--keep", "all");
	v1 = hello_v(&d, 0x1111, 1, 0, 0, 0);
	v2 = hello_v(&d, 0x2222, 2, 1, 0, 0);
	send_request(v1, 21, 1000, 1);
	send_request(v2, 22, 1000, 1);
	expect_ack(v2, 2000);
	ck_assert_msg(harness_wait_int(&d, "SELECT count(*) FROM records", 8) ==
			  0,
		      "%s", harness_error());
	/* Committed well before now: an ACK would be here. */
	ck_assert_uint_eq(read_reply(v1, &r, 500), 0);
	close(v1);
	close(v2);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 8);
	ck_assert_int_eq(query_int(&d, "SELECT sum(records) FROM processes"),
			 8);
	harness_cleanup(&d);
}
END_TEST

/* One record (r NULL: none), then a WATERMARK when wm is not 0. */
static void send_one(int fd, const struct proto_record *r, uint64_t wm)
{
	struct proto_record w = {.type = PROTO_WATERMARK, .ts = wm};
	unsigned char buf[256];
	size_t n = r != NULL ? proto_encode_record(buf, sizeof buf, r) : 0;

	if (wm != 0)
		n += proto_encode_record(buf + n, sizeof buf - n, &w);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
}

/* Under --keep=leaky a request's records go to the store when it ends:
 * until then the ACK stays below its BEGIN, for a second of ts at
 * most. */
START_TEST(test_raw_ack_waits_for_open_request)
{
	const uint64_t s = 1000000000;
	struct proto_record begin = BEGIN(10 * s, 7, 61, 0, 0, "GET /open");
	struct proto_record end = END(10 * s + 500, 7, 61, 61, 61);
	struct harness_daemon d;
	int fd;

	START(&d, "--keep", "leaky");
	fd = hello_v(&d, 0x6666, 2, 1, 0, 0);
	send_one(fd, &begin, 10 * s + 100);
	expect_ack(fd, 10 * s - 1);
	send_one(fd, &end, 10 * s + 1000);
	expect_ack(fd, 10 * s + 1000);
	begin.ts = 20 * s;
	begin.ctx = end.ctx = end.cause = end.cur = 62;
	send_one(fd, &begin, 20 * s + 100);
	expect_ack(fd, 20 * s - 1);
	/* A request that does not end holds it back a second at most. */
	send_one(fd, NULL, 25 * s);
	expect_ack(fd, 24 * s);
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	harness_cleanup(&d);
}
END_TEST

/* A live process: a reconnection that sends records again from seq on
 * has those whose positions the daemon took already dropped. */
START_TEST(test_raw_resend_to_live_daemon)
{
	struct harness_daemon d;
	int fd;

	START(&d, "--keep", "all", "--linger", "30s");
	fd = hello_v(&d, 0x3333, 2, 1, 0, 0);
	send_request(fd, 31, 1000, 1);
	expect_ack(fd, 2000);
	close(fd);
	/* As if the ACK had not come: everything again, then more. */
	fd = hello_v(&d, 0x3333, 2, 1, 0, 4);
	expect_ack(fd, 2000);
	send_request(fd, 31, 1000, 1);
	send_request(fd, 32, 3000, 1);
	expect_ack(fd, 4000);
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 8);
	ck_assert_int_eq(query_int(&d,
				   "SELECT records FROM processes WHERE "
				   "instance = %d AND connections = 2",
				   0x3333),
			 8);
	harness_cleanup(&d);
}
END_TEST

/* After a kill the row's committed watermark says what is stored: what
 * is sent again at or below it is dropped, what is above is taken. */
START_TEST(test_raw_resend_after_kill)
{
	const char *args[] = {"--keep", "all", NULL};
	struct harness_daemon d;
	int fd;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	fd = hello_v(&d, 0x4444, 2, 1, 0, 0);
	send_request(fd, 41, 1000, 1);
	expect_ack(fd, 2000);
	/* Received, never judged: the kill loses it. */
	send_request(fd, 42, 5000, 0);
	harness_kill(&d);
	close(fd);
	restart(&d, args);
	fd = hello_v(&d, 0x4444, 2, 1, 0, 4);
	/* What the daemon before had committed, at once. */
	expect_ack(fd, 2000);
	send_request(fd, 41, 1000, 1);
	send_request(fd, 42, 5000, 1);
	expect_ack(fd, 6000);
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"), 8);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes"), 8);
	harness_cleanup(&d);
}
END_TEST

/* A stop in order reads, commits and acknowledges everything before it
 * closes; its row's committed position then drops by stream position
 * what is sent again to the next daemon.  _i: 0 --keep=all, 1
 * --keep=leaky (where the counters may be all the commit holds). */
START_TEST(test_raw_resend_after_stop)
{
	const char *args[] = {"--keep", _i ? "leaky" : "all", NULL};
	struct harness_daemon d;
	int fd;

	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
	fd = hello_v(&d, 0x5555, 2, 1, 0, 0);
	send_request(fd, 51, 1000, 1);
	send_request(fd, 52, 5000, 0);
	expect_ack(fd, 2000);
	ck_assert_int_eq(harness_stop(&d), 0);
	/* Its last ACK: every record it read, the unjudged ones too. */
	expect_ack(fd, 5003);
	close(fd);
	restart(&d, args);
	fd = hello_v(&d, 0x5555, 2, 1, 4, 8);
	send_request(fd, 52, 5000, 0);
	send_request(fd, 53, 7000, 1);
	expect_ack(fd, 8000);
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"),
			 _i ? 0 : 12);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes"), 12);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------- a scripted daemon */

/* One connection of the client to the scripted daemon, and what came on
 * it. */
struct peer {
	int fd;
	struct proto_decoder *dec;
	int hello, eof;
	struct proto_hello h; /* its numbers; the strings are gone */
	uint64_t records;     /* every record but SITE, DROPPED, WATERMARK */
	uint64_t dropped;     /* the DROPPED counts */
	uint64_t ts[128];     /* of the first records */
	int ack_all;	      /* each WATERMARK is acknowledged at once */
};

static int script_listen(struct harness_daemon *fake)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	ck_assert_msg(harness_prepare(fake) == 0, "%s", harness_error());
	memcpy(sun.sun_path, fake->socket, strlen(fake->socket));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	ck_assert_int_eq(listen(fd, 8), 0);
	return fd;
}

static void peer_accept(struct peer *p, int lfd)
{
	struct pollfd pfd = {.fd = lfd, .events = POLLIN};

	memset(p, 0, sizeof *p);
	ck_assert_int_eq(poll(&pfd, 1, HARNESS_TIMEOUT_SEC * 1000), 1);
	p->fd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(p->fd, 0);
	p->dec = proto_decoder_new(NULL);
	ck_assert_ptr_nonnull(p->dec);
}

static void peer_ack(struct peer *p, uint64_t watermark)
{
	unsigned char buf[PROTO_ACK_SIZE_MAX];
	size_t n = proto_encode_ack(buf, sizeof buf, watermark);

	/* A client that had what it waited for may be gone already: its
	 * counts, asserted later, say whether it gave up too early. */
	if (harness_write_all(p->fd, buf, n) != 0)
		ck_assert_msg(errno == EPIPE || errno == ECONNRESET, "ACK: %s",
			      strerror(errno));
}

static void peer_take(struct peer *p, const struct proto_msg *m)
{
	if (m->is_hello) {
		p->hello = 1;
		p->h = m->hello;
	} else if (m->rec.type == PROTO_DROPPED) {
		p->dropped += m->rec.count;
	} else if (m->rec.type == PROTO_WATERMARK) {
		if (p->ack_all)
			peer_ack(p, m->rec.ts);
	} else if (m->rec.type != PROTO_SITE && m->rec.type != PROTO_CLOSE) {
		if (p->records < sizeof p->ts / sizeof p->ts[0])
			p->ts[p->records] = m->rec.ts;
		p->records++;
	}
}

/* Read until the peer has said HELLO and sent at least this much (or,
 * with eof, until it closed). */
static void peer_until(struct peer *p, uint64_t records, uint64_t dropped,
		       int eof)
{
	struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
	unsigned char buf[4096];
	struct proto_msg m;
	ssize_t n;

	for (int i = 0; i < HARNESS_TIMEOUT_SEC * 100; i++) {
		if (p->hello && p->records >= records &&
		    p->dropped >= dropped && (!eof || p->eof))
			return;
		if (poll(&pfd, 1, 10) != 1)
			continue;
		n = read(p->fd, buf, sizeof buf);
		/* A client that closes with ACKs unread resets the
		 * connection after its last byte. */
		if (n < 0 && errno == ECONNRESET)
			n = 0;
		ck_assert_int_ge(n, 0);
		p->eof = n == 0;
		ck_assert_int_eq(proto_decoder_feed(p->dec, buf, (size_t)n), 0);
		while (proto_decoder_next(p->dec, &m) == PROTO_OK)
			peer_take(p, &m);
	}
	ck_abort_msg("the client sent %llu records and %llu dropped, not %llu "
		     "and %llu%s",
		     (unsigned long long)p->records,
		     (unsigned long long)p->dropped,
		     (unsigned long long)records, (unsigned long long)dropped,
		     eof ? " and its end" : "");
}

/* One byte at a time when `split`: the client must put it together. */
static void peer_receipt(struct peer *p, uint64_t records, uint64_t dropped,
			 int split)
{
	struct proto_receipt r = {records, dropped};
	unsigned char buf[PROTO_RECEIPT_SIZE_MAX];
	size_t n = proto_encode_receipt(buf, sizeof buf, &r);

	for (size_t off = 0; split && off < n; off++) {
		ck_assert_int_eq(harness_write_all(p->fd, buf + off, 1), 0);
		harness_sleep_ms(20);
	}
	if (!split)
		ck_assert_int_eq(harness_write_all(p->fd, buf, n), 0);
}

static void peer_close(struct peer *p)
{
	close(p->fd);
	proto_decoder_free(p->dec);
}

/* A client of the library scripted against a fake daemon the test
 * plays by hand (struct peer). */
struct scripted {
	struct harness_daemon fake; /* its directory and socket path only */
	int lfd;		    /* the fake daemon's listening socket */
	pid_t pid;		    /* the client */
	int go[2];		    /* the test's go, after the first 100 */
	struct emitter *slot;	    /* the client's ctxleak_stats, shared */
};

/* 100 records, then wait for the test's go, then 4 more. */
static int hundred_then_four(void *arg)
{
	struct scripted *sc = arg;
	char byte;

	close(sc->go[1]);
	for (int i = 0; i < 26; i++) {
		uint64_t ctx = ctxleak_begin("GET /scripted");

		ctxleak_tag("k", "v");
		ctxleak_event("e", NULL);
		ctxleak_end(ctx);
		if (i == 24 && (ctxleak_flush() != CTXLEAK_OK ||
				read(sc->go[0], &byte, 1) != 1))
			return 3;
	}
	ctxleak_shutdown();
	ctxleak_stats(&sc->slot->st);
	return 0;
}

/* The fake daemon listening, and the client started against it. */
static void scripted_start(struct scripted *sc)
{
	sc->lfd = script_listen(&sc->fake);
	sc->slot = mmap(NULL, sizeof *sc->slot, PROT_READ | PROT_WRITE,
			MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(sc->slot, MAP_FAILED);
	ck_assert_int_eq(pipe(sc->go), 0);
	sc->pid = harness_client_spawn(&sc->fake, CTXLEAK_BACKEND_THREAD,
				       hundred_then_four, sc);
	ck_assert_int_gt(sc->pid, 0);
	close(sc->go[0]);
}

static void scripted_go(struct scripted *sc)
{
	ck_assert_int_eq(write(sc->go[1], "g", 1), 1);
	close(sc->go[1]);
}

/* The client exits cleanly, with these counts in its ctxleak_stats;
 * then the fake daemon goes. */
static void scripted_end(struct scripted *sc, uint64_t records,
			 uint64_t dropped)
{
	ck_assert_int_eq(harness_client_wait(sc->pid), 0);
	ck_assert_uint_eq(sc->slot->st.records, records);
	ck_assert_uint_eq(sc->slot->st.dropped, dropped);
	munmap(sc->slot, sizeof *sc->slot);
	close(sc->lfd);
	harness_cleanup(&sc->fake);
}

/*
 * The first connection is refused (closed before its RECEIPT): the client
 * keeps its records.  The second takes all 100 and acknowledges the first
 * 40, then dies: the third gets a HELLO with seq 40 and the other 60
 * again, then the last 4, all acknowledged: nothing is counted lost.
 */
START_TEST(test_client_sends_again_what_no_ack_covered)
{
	struct scripted sc;
	struct peer p;

	scripted_start(&sc);

	peer_accept(&p, sc.lfd);
	peer_until(&p, 0, 0, 0);
	peer_close(&p);

	peer_accept(&p, sc.lfd);
	peer_until(&p, 0, 0, 0);
	ck_assert(p.h.has_seq);
	ck_assert_uint_eq(p.h.seq, 0);
	peer_receipt(&p, 0, 0, 1);
	peer_until(&p, 100, 0, 0);
	ck_assert_uint_eq(p.records, 100);
	peer_ack(&p, p.ts[39]);
	/* It is read before the connection ends. */
	harness_sleep_ms(100);
	peer_close(&p);

	peer_accept(&p, sc.lfd);
	peer_until(&p, 0, 0, 0);
	ck_assert_uint_eq(p.h.seq, 40);
	peer_receipt(&p, 100, 0, 0);
	p.ack_all = 1;
	peer_until(&p, 60, 0, 0);
	scripted_go(&sc);
	peer_until(&p, 64, 0, 1);
	ck_assert_uint_eq(p.records, 64);
	ck_assert_uint_eq(p.dropped, 0);
	peer_close(&p);

	scripted_end(&sc, 104, 0);
}
END_TEST

/* A daemon that reads everything and never acknowledges (too busy, or
 * its disk full): shutting down, the client waits for the ACK within its
 * bound, then leaves what that live daemon took to it, and counts
 * nothing: the daemon counts what it fails to store, and its successor
 * reports the window should it die first (test_outage.c).  What no
 * daemon took is counted: test_sigkill_until_clients_exit. */
START_TEST(test_client_without_acks)
{
	struct scripted sc;
	struct peer p;

	scripted_start(&sc);

	peer_accept(&p, sc.lfd);
	peer_until(&p, 0, 0, 0);
	peer_receipt(&p, 0, 0, 0);
	peer_until(&p, 100, 0, 0);
	scripted_go(&sc);
	peer_until(&p, 104, 0, 1);
	peer_close(&p);
	scripted_end(&sc, 104, 0);
}
END_TEST

static Suite *crash_suite(void)
{
	Suite *s = suite_create("crash");
	TCase *tc;

	tc = check_tcase("sigkill", 120, NULL);
	tcase_add_loop_test(tc, test_sigkill_twice_loses_nothing_uncounted, 0,
			    2);
	tcase_add_test(tc, test_sigterm_restart_counts_no_loss);
	tcase_add_loop_test(tc, test_sigkill_after_clean_exit, 0, 2);
	tcase_add_test(tc, test_sigkill_until_clients_exit);
	tcase_add_test(tc, test_refused_client_delivers_later);
	suite_add_tcase(s, tc);
	tc = check_tcase("raw", 60, NULL);
	tcase_add_loop_test(tc, test_raw_reconnections_live_daemon, 0, 2);
	tcase_add_test(tc, test_raw_receipt_after_kill_is_committed);
	tcase_add_test(tc, test_raw_v1_receipt_only_v2_acks);
	tcase_add_test(tc, test_raw_ack_waits_for_open_request);
	tcase_add_test(tc, test_raw_resend_to_live_daemon);
	tcase_add_test(tc, test_raw_resend_after_kill);
	tcase_add_loop_test(tc, test_raw_resend_after_stop, 0, 2);
	suite_add_tcase(s, tc);
	suite_add_tcase(s,
			check_tcase("client", 60,
				    test_client_sends_again_what_no_ack_covered,
				    test_client_without_acks, NULL));
	return s;
}

int main(void)
{
	/* Peers that the daemon hangs up on must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	/* The figures of a test that fails are printed all the same. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	return check_main(crash_suite(), NULL);
}
