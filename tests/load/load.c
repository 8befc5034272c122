/*
 * load.c: ctxleakd under load: 1,000 client connections at once and 10M
 * records between them, under --keep=leaky.
 *
 * Two kinds of clients.  Raw connections (written by this program's
 * threads with the protocol encoder, blocking, so that nothing is dropped)
 * measure the daemon alone: every record must be received, every finding
 * the clients provoked stored, exactly.  Then 1,000 processes of the real
 * library, which may drop (and count) what a loaded daemon does not take
 * in time: every record they produced must be received or counted, and
 * what the daemon found must be exactly what the records it received
 * provoke.
 *
 * Both assert what load must not change: no descriptor left behind, and
 * the daemon's peak memory (VmHWM) within a bound computed from its
 * limits.  Each prints its figures: run time, records/s, peak RSS and
 * bound, descriptors before and after.
 *
 * Too slow for every `make check` under the sanitizers and valgrind, it
 * is its own program (a tests/NAME.c that is not a test_NAME.c would be
 * linked into every test): `make check-load` builds and runs it.
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../harness_check.h"
#include "check_main.h"
#include "ctxleak.h"
#include "proto.h"

#define CLIENTS		    1000
#define REQUESTS_PER_CLIENT 1000
#define RECORDS_PER_REQUEST 10
#define RECORDS_PER_CLIENT  (REQUESTS_PER_CLIENT * RECORDS_PER_REQUEST)
/* One request in LEAKY_EVERY begins a second request inside itself: one
 * overlap finding, and all ten records of the pair are kept. */
#define LEAKY_EVERY	 100
#define LEAKY_PER_CLIENT (REQUESTS_PER_CLIENT / LEAKY_EVERY)
/* Raw clients send a WATERMARK after every BURST requests. */
#define BURST	       10
#define BURSTS	       (REQUESTS_PER_CLIENT / BURST)
#define RAW_WRITERS    4
#define RAW_DROPPED    7 /* each raw client reports this many dropped */
#define RAW_INSTANCE_0 1000000

/* The limits the daemon runs with. */
#define MAX_CONNECTIONS 1024
#define MAX_OPEN_SCOPES 64
#define MAX_RECORD_SIZE (4 * 1024)

/*
 * What those limits let the daemon hold, from the costs it documents:
 * - an open scope, under 200 bytes (README, "daemon memory per open
 *   scope"); the engine remembers ended scopes too, at the same cost, as
 *   many as each client ends here;
 * - a connection's decoder, at most one read (64 KiB, conn.c) plus one
 *   record (proto.h, struct proto_limits); its other state (the site map,
 *   the rules engine's tables, libevent's event) a few KiB, 16 KiB in all
 *   (test_hostile);
 * - records waiting for their watermark: one burst of a raw client; the
 *   library sends one after each batch, which the bound must then cover
 *   (LIB_BATCH_RECORDS), at about 200 bytes each with their strings;
 * - SQLite's page cache, 16 MiB (cache_size in store.c);
 * - what the allocator keeps of freed memory, and libevent's tables.
 */
#define SCOPE_COST	  200
#define CONN_COST	  (64 * 1024 + MAX_RECORD_SIZE + 16 * 1024)
#define RECORD_COST	  200
#define SQLITE_CACHE	  (16L * 1024 * 1024)
#define ALLOCATOR_SLACK	  (32L * 1024 * 1024)
#define LIB_BATCH_RECORDS RECORDS_PER_CLIENT
#define SCOPES_PER_CLIENT (REQUESTS_PER_CLIENT + LEAKY_PER_CLIENT)

#define WAIT_SEC 300

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int is_leaky(int n)
{
	return n % LEAKY_EVERY == LEAKY_EVERY - 1;
}

/* ---------------------------------------------------- the daemon's state */

/* Poll sql until it returns want, for as long as a loaded daemon may
 * need. */
static void wait_for(const struct harness_daemon *d, const char *sql,
		     int64_t want)
{
	int64_t v = 0;

	for (int i = 0; i < WAIT_SEC * 10; i++) {
		v = harness_query_int(d, sql);
		if (v == want)
			return;
		harness_sleep_ms(100);
	}
	ck_abort_msg("%s: %lld, not %lld after %d s", sql, (long long)v,
		     (long long)want, WAIT_SEC);
}

static void wait_fds(pid_t pid, int want)
{
	int n = daemon_fds(pid);

	for (int i = 0; n != want && i < WAIT_SEC * 10; i++) {
		harness_sleep_ms(100);
		n = daemon_fds(pid);
	}
	ck_assert_msg(n == want, "the daemon holds %d descriptors, %d before",
		      n, want);
}

/* A run: the daemon with the limits, and what was measured of it. */
struct run {
	struct harness_daemon d;
	const char *what;
	long idle_kb, bound_kb, hwm_kb;
	int fds_before, fds_peak, fds_after;
	double started, secs;
};

static void run_start(struct run *r, const char *what, long pending_per_client)
{
	char conns[16], scopes[16], record[16];

	ck_assert_msg(harness_raise_fd_limit(CLIENTS + 100) == 0, "%s",
		      harness_error());
	snprintf(conns, sizeof conns, "%d", MAX_CONNECTIONS);
	snprintf(scopes, sizeof scopes, "%d", MAX_OPEN_SCOPES);
	snprintf(record, sizeof record, "%d", MAX_RECORD_SIZE);
	r->what = what;
	START(&r->d, "--keep", "leaky", "--max-connections", conns,
	      "--max-open-scopes", scopes, "--max-record-size", record,
	      "--log-level", "debug");
	/* The readiness probe's descriptor is closed once this is logged. */
	ck_assert_msg(harness_wait_log(&r->d, "and before HELLO", 1) == 0, "%s",
		      harness_error());
	r->fds_before = daemon_fds(r->d.pid);
	r->idle_kb = daemon_status_kb(r->d.pid, "VmRSS");
	r->bound_kb =
	    r->idle_kb +
	    (SQLITE_CACHE + ALLOCATOR_SLACK +
	     (long)MAX_CONNECTIONS * (CONN_COST + MAX_OPEN_SCOPES * SCOPE_COST +
				      SCOPES_PER_CLIENT * SCOPE_COST +
				      pending_per_client * RECORD_COST)) /
		1024;
}

/* Every client connected at once: then the clock starts. */
static void run_all_connected(struct run *r)
{
	wait_for(&r->d, "SELECT count(*) FROM processes", CLIENTS);
	r->fds_peak = daemon_fds(r->d.pid);
	ck_assert_int_ge(r->fds_peak, r->fds_before + CLIENTS);
	r->started = now_sec();
}

/* Every client gone and finalised: the clock stops; the daemon stops. */
static void run_finish(struct run *r)
{
	wait_for(&r->d,
		 "SELECT count(*) FROM processes WHERE disconnected_at IS "
		 "NOT NULL",
		 CLIENTS);
	r->secs = now_sec() - r->started;
	wait_fds(r->d.pid, r->fds_before);
	r->fds_after = daemon_fds(r->d.pid);
	r->hwm_kb = daemon_status_kb(r->d.pid, "VmHWM");
	ck_assert_int_eq(harness_stop(&r->d), 0);
}

static void run_report(const struct run *r, int64_t received)
{
	printf("load, %s: %d connections at once, %lld records received in "
	       "%.1f s: %.0f records/s\n",
	       r->what, CLIENTS, (long long)received, r->secs,
	       (double)received / r->secs);
	printf("load, %s: daemon peak RSS %ld KiB, bound %ld KiB (idle %ld "
	       "KiB); descriptors %d before, %d with every client, %d "
	       "after\n",
	       r->what, r->hwm_kb, r->bound_kb, r->idle_kb, r->fds_before,
	       r->fds_peak, r->fds_after);
	fflush(stdout);
	ck_assert_int_lt(r->hwm_kb, r->bound_kb);
}

/* ---------------------------------------------------- raw connections */

struct raw_conn {
	int fd;
	uint64_t instance;
	uint64_t ts; /* of the last record */
	uint64_t sent;
};

struct raw_writer {
	pthread_t thread;
	struct raw_conn *conns;
	int n;
	int failed;
};

static size_t put(unsigned char *buf, size_t cap, struct raw_conn *c,
		  struct proto_record r)
{
	size_t n;

	r.ts = ++c->ts;
	r.tid = 1;
	n = proto_encode_record(buf, cap, &r);
	if (n > 0 && r.type != PROTO_WATERMARK && r.type != PROTO_DROPPED)
		c->sent++;
	return n;
}

#define STR(s) ((struct proto_str){s, sizeof s - 1})

/* Request n of a connection as the library would write it with the thread
 * backend: plain, or a pair in which the inner one overlaps the outer. */
static size_t raw_request(unsigned char *buf, size_t cap, struct raw_conn *c,
			  int n)
{
	uint64_t a = c->instance << 20 | (uint64_t)(2 * n + 1), b = a + 1;
	uint64_t cur = is_leaky(n) ? b : a;
	int events =
	    is_leaky(n) ? RECORDS_PER_REQUEST - 5 : RECORDS_PER_REQUEST - 3;
	size_t len = 0;

	len +=
	    put(buf + len, cap - len, c,
		(struct proto_record){
		    .type = PROTO_BEGIN, .ctx = a, .name = STR("GET /load")});
	if (is_leaky(n))
		len += put(buf + len, cap - len, c,
			   (struct proto_record){.type = PROTO_BEGIN,
						 .ctx = b,
						 .cause = a,
						 .prev = a,
						 .name = STR("GET /inner")});
	len += put(buf + len, cap - len, c,
		   (struct proto_record){.type = PROTO_TAG,
					 .ctx = cur,
					 .cause = cur,
					 .key = STR("user"),
					 .value = STR("u")});
	for (int i = 0; i < events; i++)
		len += put(buf + len, cap - len, c,
			   (struct proto_record){.type = PROTO_EVENT,
						 .ctx = cur,
						 .cause = cur,
						 .name = STR("step")});
	if (is_leaky(n))
		len +=
		    put(buf + len, cap - len, c,
			(struct proto_record){
			    .type = PROTO_END, .ctx = b, .cause = b, .cur = b});
	len += put(buf + len, cap - len, c,
		   (struct proto_record){
		       .type = PROTO_END, .ctx = a, .cause = a, .cur = a});
	return len;
}

/* One burst of requests and its watermark, written whole: the socket
 * blocks while the daemon is behind, so nothing is ever dropped. */
static int raw_burst(struct raw_conn *c, int burst)
{
	unsigned char buf[BURST * RECORDS_PER_REQUEST * 64 + 64];
	size_t len = 0;

	for (int n = burst * BURST; n < (burst + 1) * BURST; n++)
		len += raw_request(buf + len, sizeof buf - len, c, n);
	len += put(buf + len, sizeof buf - len, c,
		   (struct proto_record){.type = PROTO_WATERMARK});
	return harness_write_all(c->fd, buf, len);
}

/* Round robin over the writer's connections, a burst each, so that all of
 * them are busy at once. */
static void *raw_writer_main(void *arg)
{
	struct raw_writer *w = arg;

	for (int b = 0; b < BURSTS; b++)
		for (int i = 0; i < w->n; i++)
			if (raw_burst(&w->conns[i], b) == -1)
				w->failed++;
	for (int i = 0; i < w->n; i++)
		close(w->conns[i].fd);
	return NULL;
}

static void raw_connect(const struct harness_daemon *d, struct raw_conn *c,
			uint64_t instance)
{
	unsigned char buf[64];
	size_t len;

	c->instance = instance;
	c->fd = harness_connect(d);
	ck_assert_msg(c->fd >= 0, "%s", harness_error());
	ck_assert_int_eq(harness_send_hello(c->fd, instance, 0), 0);
	len = put(buf, sizeof buf, c,
		  (struct proto_record){
		      .type = PROTO_DROPPED, .count = RAW_DROPPED, .since = 1});
	ck_assert_int_eq(harness_write_all(c->fd, buf, len), 0);
}

START_TEST(test_raw_connections)
{
	static struct raw_conn conns[CLIENTS];
	struct raw_writer w[RAW_WRITERS];
	struct run r;
	const int per = CLIENTS / RAW_WRITERS;
	uint64_t sent = 0;

	run_start(&r, "raw", BURST * RECORDS_PER_REQUEST);
	for (int i = 0; i < CLIENTS; i++)
		raw_connect(&r.d, &conns[i], RAW_INSTANCE_0 + (uint64_t)i);
	run_all_connected(&r);
	for (int t = 0; t < RAW_WRITERS; t++) {
		w[t] = (struct raw_writer){.conns = conns + t * per, .n = per};
		ck_assert_int_eq(
		    pthread_create(&w[t].thread, NULL, raw_writer_main, &w[t]),
		    0);
	}
	for (int t = 0; t < RAW_WRITERS; t++) {
		pthread_join(w[t].thread, NULL);
		ck_assert_int_eq(w[t].failed, 0);
	}
	run_finish(&r);
	for (int i = 0; i < CLIENTS; i++)
		sent += conns[i].sent;
	ck_assert_uint_eq(sent, (uint64_t)CLIENTS * RECORDS_PER_CLIENT);
	run_report(&r, query_int(&r.d, "SELECT sum(records) FROM processes"));

	/* Per process: every record received, the drops it reported
	 * stored. */
	ck_assert_int_eq(query_int(&r.d,
				   "SELECT count(*) FROM processes WHERE "
				   "records = %d AND dropped = %d",
				   RECORDS_PER_CLIENT, RAW_DROPPED),
			 CLIENTS);
	ck_assert_int_eq(query_int(&r.d,
				   "SELECT count(*) FROM leaks WHERE class = "
				   "'overlap'"),
			 CLIENTS * LEAKY_PER_CLIENT);
	ck_assert_int_eq(query_int(&r.d, "SELECT count(*) FROM leaks"),
			 CLIENTS * LEAKY_PER_CLIENT);
	ck_assert_int_eq(query_int(&r.d, "SELECT count(*) FROM records"),
			 CLIENTS * LEAKY_PER_CLIENT * RECORDS_PER_REQUEST);
	/* The pairs have rows; the clean requests are counted, with their
	 * records: between them, every request and every record. */
	ck_assert_int_eq(query_int(&r.d, "SELECT count(*) FROM requests"),
			 CLIENTS * LEAKY_PER_CLIENT * 2);
	ck_assert_int_eq(
	    query_int(&r.d, "SELECT sum(requests) FROM request_stats"),
	    CLIENTS * (REQUESTS_PER_CLIENT - LEAKY_PER_CLIENT));
	ck_assert_int_eq(
	    query_int(&r.d, "SELECT sum(records) FROM request_stats"),
	    CLIENTS * (REQUESTS_PER_CLIENT - LEAKY_PER_CLIENT) *
		RECORDS_PER_REQUEST);
	harness_cleanup(&r.d);
}
END_TEST

/* ---------------------------------------------------- library clients */

/* A client process's view, in memory shared with the test. */
struct slot {
	pid_t pid;
	uint64_t produced;
	struct ctxleak_stats st;
};

struct lib_arg {
	int go_rd, go_wr; /* the test closes go_wr: start emitting */
	struct slot *slots;
	int index;
};

/* Request n, through the library, with the same shapes as raw_request. */
static void lib_request(int n)
{
	uint64_t a = ctxleak_begin("GET /load"), b = 0;
	int events =
	    is_leaky(n) ? RECORDS_PER_REQUEST - 5 : RECORDS_PER_REQUEST - 3;

	if (is_leaky(n))
		b = ctxleak_begin("GET /inner");
	ctxleak_tag("user", "u");
	for (int i = 0; i < events; i++)
		ctxleak_event("step", NULL);
	if (is_leaky(n))
		ctxleak_end(b);
	ctxleak_end(a);
}

/* Connect with the first request, wait for the others, emit the rest as
 * fast as the library takes it, shut down. */
static int lib_client(void *arg)
{
	struct lib_arg *l = arg;
	struct slot *slot = &l->slots[l->index];
	char byte;

	close(l->go_wr);
	lib_request(0);
	ctxleak_flush();
	if (read(l->go_rd, &byte, 1) != 0)
		return 3;
	for (int n = 1; n < REQUESTS_PER_CLIENT; n++)
		lib_request(n);
	slot->produced = RECORDS_PER_CLIENT;
	ctxleak_shutdown();
	ctxleak_stats(&slot->st);
	slot->pid = getpid();
	return 0;
}

/* What the daemon must make of the first `received` records of a client:
 * what a client drops at shutdown is the end of its stream. */
struct expect {
	int64_t overlap, unclosed;
	int64_t records;  /* rows: those of requests a finding involves */
	int64_t involved; /* requests with a row */
	int64_t clean;	  /* requests only counted */
};

static void expect_of(int64_t received, struct expect *e)
{
	for (int n = 0; n < REQUESTS_PER_CLIENT; n++) {
		int64_t got = received - (int64_t)n * RECORDS_PER_REQUEST;

		if (got <= 0)
			break;
		if (got > RECORDS_PER_REQUEST)
			got = RECORDS_PER_REQUEST;
		if (is_leaky(n)) {
			/* BEGIN A, BEGIN B, TAG, 5 EVENT, END B, END A. */
			e->involved += got >= 2 ? 2 : 1;
			e->overlap += got >= 2;
			if (got < RECORDS_PER_REQUEST)
				e->unclosed += got >= 2 && got <= 8 ? 2 : 1;
			e->records += got; /* all involved */
		} else if (got < RECORDS_PER_REQUEST) {
			e->involved++;
			e->unclosed++;
			e->records += got;
		} else {
			e->clean++;
		}
	}
}

/* Per process: every record it produced was received or counted as
 * dropped, and the daemon knows of no more drops than the client
 * counted (what the client gives up at shutdown it cannot report). */
static int64_t lib_accounting(const struct harness_daemon *d,
			      const struct slot *slots, struct expect *e,
			      uint64_t *dropped)
{
	int64_t received, reported, total = 0;

	for (int i = 0; i < CLIENTS; i++) {
		const struct slot *s = &slots[i];

		ck_assert_int_gt(s->pid, 0);
		received =
		    query_int(d, "SELECT records FROM processes WHERE pid = %d",
			      (int)s->pid);
		reported =
		    query_int(d, "SELECT dropped FROM processes WHERE pid = %d",
			      (int)s->pid);
		ck_assert_msg((uint64_t)received + s->st.dropped ==
				      s->produced &&
				  (uint64_t)reported <= s->st.dropped,
			      "pid %d: produced %llu, dropped %llu; the daemon "
			      "received %lld, was told of %lld dropped",
			      (int)s->pid, (unsigned long long)s->produced,
			      (unsigned long long)s->st.dropped,
			      (long long)received, (long long)reported);
		expect_of(received, e);
		*dropped += s->st.dropped;
		total += received;
	}
	return total;
}

static void spawn_lib_clients(const struct harness_daemon *d, struct lib_arg *l,
			      pid_t *pids)
{
	for (int i = 0; i < CLIENTS; i++) {
		l->index = i;
		pids[i] = harness_client_spawn(d, CTXLEAK_BACKEND_THREAD,
					       lib_client, l);
		ck_assert_msg(pids[i] > 0, "%s", harness_error());
	}
}

START_TEST(test_library_clients)
{
	static pid_t pids[CLIENTS];
	struct expect e = {0};
	struct lib_arg l;
	struct run r;
	uint64_t dropped = 0;
	int64_t received;
	int go[2], st;

	/* The library may ship a client's whole stream as one batch. */
	run_start(&r, "library", LIB_BATCH_RECORDS);
	l.slots = mmap(NULL, CLIENTS * sizeof *l.slots, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(l.slots, MAP_FAILED);
	ck_assert_int_eq(pipe(go), 0);
	l.go_rd = go[0];
	l.go_wr = go[1];
	spawn_lib_clients(&r.d, &l, pids);
	close(go[0]);
	run_all_connected(&r);
	close(go[1]);
	for (int i = 0; i < CLIENTS; i++) {
		ck_assert_int_eq(waitpid(pids[i], &st, 0), pids[i]);
		ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "client %d: status %#x", (int)pids[i], st);
	}
	run_finish(&r);
	received = lib_accounting(&r.d, l.slots, &e, &dropped);
	printf("load, library: %llu records dropped by the clients\n",
	       (unsigned long long)dropped);
	run_report(&r, received);

	ck_assert_int_eq(query_int(&r.d,
				   "SELECT count(*) FROM leaks WHERE class = "
				   "'overlap'"),
			 e.overlap);
	ck_assert_int_eq(query_int(&r.d,
				   "SELECT count(*) FROM leaks WHERE class = "
				   "'unclosed'"),
			 e.unclosed);
	ck_assert_int_eq(query_int(&r.d, "SELECT count(*) FROM leaks"),
			 e.overlap + e.unclosed);
	ck_assert_int_eq(query_int(&r.d, "SELECT count(*) FROM records"),
			 e.records);
	ck_assert_int_eq(query_int(&r.d, "SELECT count(*) FROM requests"),
			 e.involved);
	ck_assert_int_eq(
	    query_int(&r.d, "SELECT sum(requests) FROM request_stats"),
	    e.clean);
	ck_assert_int_eq(
	    query_int(&r.d, "SELECT sum(records) FROM request_stats"),
	    e.clean * RECORDS_PER_REQUEST);
	munmap(l.slots, CLIENTS * sizeof *l.slots);
	harness_cleanup(&r.d);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("load");
	TCase *tc = tcase_create("load");

	tcase_set_timeout(tc, 2 * WAIT_SEC);
	tcase_add_test(tc, test_raw_connections);
	tcase_add_test(tc, test_library_clients);
	suite_add_tcase(s, tc);
	return check_main(s, NULL);
}
