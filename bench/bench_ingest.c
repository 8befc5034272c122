/*
 * bench_ingest.c: how fast ctxleakd ingests records end to end, against
 * the two baselines that bound it, all in one run on the same stream:
 *
 *   (a) socket + decode: a socket pair carries the encoded stream and
 *       proto's decoder decodes it, 64 KiB reads, nothing else;
 *   (b) raw SQLite: the same rows inserted into the records table with a
 *       prepared statement (WAL, synchronous=NORMAL, 10k-row transactions);
 *   (c) ctxleakd --keep=all and (d) --keep=leaky, fed the stream as fast as
 *       the socket takes it, timed until the daemon has committed it all
 *       (SIGTERM, then its exit).
 *
 * Targets (issue 4): (c) >= 70% of (b); (d) >= 50% of (a).  Also the
 * daemon's RSS per open scope with 100k scopes open (target < 200 bytes).
 * Figures are printed; the exit status is 0 unless the run itself failed.
 *
 * Usage: bench_ingest [RECORDS]   (default 1000000)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/sockios.h>
#include <sqlite3.h>

#include "../tests/harness.h"
#include "proto.h"

#define OPEN_AT_ONCE	8    /* requests interleaved in the stream */
#define LEAKY_EVERY	100  /* one request in this many has a bleed */
#define WATERMARK_EVERY 4096 /* records between watermarks, as a flush */
#define RSS_SCOPES	100000

struct stream {
	struct proto_record *recs; /* the records, in stream order */
	uint64_t *rids;		   /* the request each belongs to */
	size_t n;		   /* records (watermarks not included) */
	unsigned char *bytes;	   /* HELLO + encoded records + watermarks */
	size_t len;
};

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the calling thread: on a shared machine, records per CPU
 * second compare the parts where wall-clock rates depend on the load. */
static double thread_cpu_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds of the children reaped so far (the daemons). */
static double children_cpu_sec(void)
{
	struct rusage ru;

	getrusage(RUSAGE_CHILDREN, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Records per wall-clock second and per CPU second of the part measured. */
struct rate {
	double wall, cpu;
};

static struct rate rate_of(size_t n, double wall, double cpu)
{
	return (struct rate){(double)n / wall, (double)n / cpu};
}

static void die(const char *what)
{
	fprintf(stderr, "bench_ingest: %s\n", what);
	exit(1);
}

/* ------------------------------------------------------------ the stream */

/* Per request: BEGIN, TAG user, EVENT, TAG status, END.  Each step of a
 * request comes in turn with the others open at the same time, so that
 * requests interleave the way an event loop's do. */
enum { STEPS = 5 };

static void make_step(struct proto_record *r, uint64_t rq, int step,
		      uint64_t ts, uint64_t other_ctx)
{
	uint64_t ctx = 0x9e3779b97f4a7c15ULL * (rq + 1); /* random-looking */

	memset(r, 0, sizeof *r);
	r->ts = ts;
	r->tid = 1000 + rq % 4;
	r->ctx = ctx;
	r->cause = ctx;
	r->site = 0;
	switch (step) {
	case 0:
		r->type = PROTO_BEGIN;
		r->cause = 0;
		r->kind = PROTO_KIND_REQUEST;
		r->name = (struct proto_str){"GET /api/items", 14};
		break;
	case 1:
		r->type = PROTO_TAG;
		r->key = (struct proto_str){"user", 4};
		r->value = (struct proto_str){"user-000042", 11};
		break;
	case 2:
		r->type = PROTO_EVENT;
		r->name = (struct proto_str){"db.query", 8};
		r->message = (struct proto_str){"SELECT items", 12};
		break;
	case 3:
		r->type = PROTO_TAG;
		r->key = (struct proto_str){"status", 6};
		r->value = (struct proto_str){"200", 3};
		/* A bleed: written under another open request. */
		if (rq % LEAKY_EVERY == 0 && other_ctx != 0)
			r->ctx = other_ctx;
		break;
	default:
		r->type = PROTO_END;
		r->cur = ctx;
		break;
	}
}

static void append(struct stream *s, size_t cap, const struct proto_record *r)
{
	size_t n = proto_encode_record(s->bytes + s->len, cap - s->len, r);

	if (n == 0)
		die("encode failed");
	s->len += n;
}

static void build_stream(struct stream *s, size_t want)
{
	size_t requests = want / STEPS, cap;
	struct proto_hello h = {.version = PROTO_VERSION,
				.instance = 77,
				.pid = (uint32_t)getpid(),
				.app = {"bench", 5},
				.backend = {"task", 4},
				.reason = {"bench", 5}};
	struct proto_record wm = {.type = PROTO_WATERMARK};
	uint64_t ts = 1000;

	s->n = requests * STEPS;
	cap = 512 + s->n * PROTO_RECORD_SIZE_MAX(32);
	s->recs = malloc(s->n * sizeof *s->recs);
	s->rids = malloc(s->n * sizeof *s->rids);
	s->bytes = malloc(cap);
	if (s->recs == NULL || s->rids == NULL || s->bytes == NULL)
		die("out of memory");
	s->len = proto_encode_hello(s->bytes, cap, &h);
	/* Groups of OPEN_AT_ONCE requests, their steps round-robin. */
	for (size_t g = 0, i = 0; g < requests; g += OPEN_AT_ONCE) {
		size_t in_group =
		    requests - g < OPEN_AT_ONCE ? requests - g : OPEN_AT_ONCE;
		for (int step = 0; step < STEPS; step++) {
			for (size_t k = 0; k < in_group; k++, i++) {
				uint64_t rq = g + k;
				uint64_t other =
				    in_group > 1
					? 0x9e3779b97f4a7c15ULL *
					      (g + (k + 1) % in_group + 1)
					: 0;

				make_step(&s->recs[i], rq, step, ts++, other);
				s->rids[i] = rq + 1;
				append(s, cap, &s->recs[i]);
				if ((i + 1) % WATERMARK_EVERY == 0) {
					wm.ts = ts - 1;
					append(s, cap, &wm);
				}
			}
		}
	}
	wm.ts = ts;
	append(s, cap, &wm);
}

/* ---------------------------------------------------- (a) socket + decode */

struct writer {
	int fd;
	const unsigned char *buf;
	size_t len;
};

static void *write_all_thread(void *arg)
{
	struct writer *w = arg;

	if (harness_write_all(w->fd, w->buf, w->len) == -1)
		die(harness_error());
	shutdown(w->fd, SHUT_WR);
	return NULL;
}

static struct rate bench_decode(const struct stream *s)
{
	static unsigned char buf[64 * 1024];
	struct proto_decoder *dec = proto_decoder_new(NULL);
	struct writer w = {.buf = s->bytes, .len = s->len};
	struct proto_msg msg;
	uint64_t decoded = 0;
	pthread_t th;
	ssize_t n;
	int sv[2];
	double t0, c0;

	if (dec == NULL || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1)
		die("socketpair");
	w.fd = sv[0];
	t0 = now_sec();
	c0 = thread_cpu_sec();
	pthread_create(&th, NULL, write_all_thread, &w);
	while ((n = read(sv[1], buf, sizeof buf)) > 0) {
		if (proto_decoder_feed(dec, buf, (size_t)n) != 0)
			die("decoder refused the stream");
		while (proto_decoder_next(dec, &msg) == PROTO_OK)
			decoded +=
			    !msg.is_hello && msg.rec.type != PROTO_WATERMARK;
	}
	t0 = now_sec() - t0;
	c0 = thread_cpu_sec() - c0;
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	proto_decoder_free(dec);
	if (decoded != s->n)
		die("socket + decode: record count differs");
	return rate_of(s->n, t0, c0);
}

/* ---------------------------------------------------------- (b) raw SQLite */

/* The records table of daemon/SCHEMA.md, with its index. */
static const char records_schema[] =
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    "CREATE TABLE records (id INTEGER PRIMARY KEY, process_id INTEGER "
    "NOT NULL, request_id INTEGER, ctx_request_id INTEGER, type TEXT NOT "
    "NULL, ts INTEGER NOT NULL, tid INTEGER NOT NULL, ctx INTEGER NOT "
    "NULL, cause INTEGER NOT NULL, other INTEGER, site_id INTEGER, name "
    "TEXT, value TEXT, leak TEXT);"
    "CREATE INDEX records_request ON records(request_id);";

static void bind_text(sqlite3_stmt *st, int col, struct proto_str s)
{
	if (s.ptr == NULL)
		sqlite3_bind_null(st, col);
	else
		sqlite3_bind_text(st, col, s.ptr, (int)s.len, SQLITE_STATIC);
}

static void insert_row(sqlite3_stmt *st, const struct proto_record *r,
		       uint64_t rid)
{
	int text = r->type == PROTO_TAG;

	sqlite3_bind_int64(st, 1, 1);
	sqlite3_bind_int64(st, 2, (int64_t)rid);
	sqlite3_bind_int64(st, 3, (int64_t)rid);
	sqlite3_bind_text(st, 4, proto_type_name(r->type), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, (int64_t)r->ts);
	sqlite3_bind_int64(st, 6, (int64_t)r->tid);
	sqlite3_bind_int64(st, 7, (int64_t)r->ctx);
	sqlite3_bind_int64(st, 8, (int64_t)r->cause);
	sqlite3_bind_int64(
	    st, 9, (int64_t)(r->type == PROTO_BEGIN ? r->prev : r->cur));
	sqlite3_bind_null(st, 10);
	bind_text(st, 11, text ? r->key : r->name);
	bind_text(st, 12, text ? r->value : r->message);
	sqlite3_bind_null(st, 13);
	if (sqlite3_step(st) != SQLITE_DONE)
		die("insert failed");
	sqlite3_reset(st);
}

static struct rate bench_sqlite(const struct stream *s, const char *dir)
{
	char path[256];
	sqlite3 *db;
	sqlite3_stmt *st;
	double t0, c0;

	snprintf(path, sizeof path, "%s/raw.db", dir);
	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db, records_schema, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "INSERT INTO records (process_id, request_id, "
			       "ctx_request_id, type, ts, tid, ctx, cause, "
			       "other, site_id, name, value, leak) VALUES "
			       "(?,?,?,?,?,?,?,?,?,?,?,?,?)",
			       -1, &st, NULL) != SQLITE_OK)
		die(sqlite3_errmsg(db));
	t0 = now_sec();
	c0 = thread_cpu_sec();
	for (size_t i = 0; i < s->n; i++) {
		if (i % 10000 == 0)
			sqlite3_exec(db, i == 0 ? "BEGIN" : "COMMIT; BEGIN",
				     NULL, NULL, NULL);
		insert_row(st, &s->recs[i], s->rids[i]);
	}
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	t0 = now_sec() - t0;
	c0 = thread_cpu_sec() - c0;
	sqlite3_finalize(st);
	sqlite3_close(db);
	return rate_of(s->n, t0, c0);
}

/* ------------------------------------------------------- (c, d) ctxleakd */

static struct rate bench_daemon(const struct stream *s, const char *keep,
				int64_t *records_stored,
				int64_t *requests_stored)
{
	const char *args[] = {"--keep", keep, "--log-level", "warn", NULL};
	struct harness_daemon d;
	double t0, c0;
	int fd, st;

	if (harness_start(&d, args) == -1)
		die(harness_error());
	t0 = now_sec();
	c0 = children_cpu_sec();
	fd = harness_connect(&d);
	if (fd == -1 || harness_write_all(fd, s->bytes, s->len) == -1)
		die(harness_error());
	close(fd);
	st = harness_stop(&d);
	t0 = now_sec() - t0;
	c0 = children_cpu_sec() - c0;
	if (st != 0)
		die("ctxleakd did not stop cleanly");
	*records_stored = harness_query_int(&d, "SELECT count(*) FROM records");
	*requests_stored =
	    harness_query_int(&d, "SELECT count(*) FROM requests");
	harness_cleanup(&d);
	return rate_of(s->n, t0, c0);
}

/* ---------------------------------------------------------- RSS per scope */

static long vm_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* Until the daemon has read all we wrote, then until its RSS settles. */
static long settled_rss(int fd, pid_t pid)
{
	struct timespec tick = {0, 50 * 1000000};
	long rss = -1, prev;
	int unread = 1, same = 0;

	for (int i = 0; i < 400 && unread > 0; i++) {
		if (ioctl(fd, SIOCOUTQ, &unread) == -1)
			unread = 0;
		nanosleep(&tick, NULL);
	}
	for (int i = 0; i < 400 && same < 4; i++) {
		prev = rss;
		nanosleep(&tick, NULL);
		rss = vm_rss_kib(pid);
		same = rss == prev ? same + 1 : 0;
	}
	return rss;
}

static void bench_rss(void)
{
	const char *args[] = {"--max-open-scopes", "1000000", "--log-level",
			      "warn", NULL};
	size_t cap = RSS_SCOPES * PROTO_RECORD_SIZE_MAX(8), len = 0;
	unsigned char *buf = malloc(cap);
	struct proto_record r = {.type = PROTO_BEGIN,
				 .tid = 5,
				 .kind = PROTO_KIND_REQUEST,
				 .name = {"GET /open", 9}};
	struct proto_record wm = {.type = PROTO_WATERMARK};
	struct harness_daemon d;
	long before, after;
	int fd;

	if (buf == NULL || harness_start(&d, args) == -1)
		die(harness_error());
	fd = harness_connect(&d);
	if (fd == -1 || harness_send_hello(fd, 78, 0) == -1)
		die(harness_error());
	before = settled_rss(fd, d.pid);
	/* Watermarks as a client's flushes send them, so that what is
	 * measured is open scopes, not records waiting to be judged. */
	for (uint64_t i = 0; i < RSS_SCOPES; i++) {
		r.type = PROTO_BEGIN;
		r.ts = 1000 + i;
		r.ctx = 0x9e3779b97f4a7c15ULL * (i + 1);
		len += proto_encode_record(buf + len, cap - len, &r);
		if ((i + 1) % WATERMARK_EVERY != 0 && i + 1 != RSS_SCOPES)
			continue;
		wm.ts = r.ts;
		len += proto_encode_record(buf + len, cap - len, &wm);
	}
	if (harness_write_all(fd, buf, len) == -1)
		die(harness_error());
	after = settled_rss(fd, d.pid);
	printf("RSS: %ld KiB before, %ld KiB with %d open scopes: %.0f bytes "
	       "per open scope (target < 200)\n",
	       before, after, RSS_SCOPES,
	       (double)(after - before) * 1024.0 / RSS_SCOPES);
	close(fd);
	harness_cleanup(&d);
	free(buf);
}

static void print_rate(const char *what, struct rate r)
{
	printf("%-24s %10.0f %14.0f\n", what, r.wall, r.cpu);
}

int main(int argc, char **argv)
{
	size_t want = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
	char dir[] = "/tmp/ctxleak-bench-XXXXXX";
	struct rate decode, raw, all, leaky;
	int64_t all_rows, all_reqs, leaky_rows, leaky_reqs;
	struct stream s;
	char cmd[64];

	if (want < STEPS * OPEN_AT_ONCE || mkdtemp(dir) == NULL)
		die("usage: bench_ingest [RECORDS >= 40]");
	build_stream(&s, want);
	printf("stream: %zu records in %zu requests, %.1f MB, 1 request in %d "
	       "leaky\n",
	       s.n, s.n / STEPS, (double)s.len / 1e6, LEAKY_EVERY);

	decode = bench_decode(&s);
	raw = bench_sqlite(&s, dir);
	all = bench_daemon(&s, "all", &all_rows, &all_reqs);
	leaky = bench_daemon(&s, "leaky", &leaky_rows, &leaky_reqs);

	printf("                          records/s  records/CPU-s\n");
	print_rate("(a) socket + decode", decode);
	print_rate("(b) raw SQLite inserts", raw);
	print_rate("(c) ctxleakd keep=all", all);
	print_rate("(d) ctxleakd keep=leaky", leaky);
	printf("(c)/(b) %5.1f%% wall, %5.1f%% CPU (target >= 70%%); stored "
	       "%lld records, %lld requests\n",
	       100 * all.wall / raw.wall, 100 * all.cpu / raw.cpu,
	       (long long)all_rows, (long long)all_reqs);
	printf("(d)/(a) %5.1f%% wall, %5.1f%% CPU (target >= 50%%); stored "
	       "%lld records, %lld requests\n",
	       100 * leaky.wall / decode.wall, 100 * leaky.cpu / decode.cpu,
	       (long long)leaky_rows, (long long)leaky_reqs);
	bench_rss();

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return 0;
}
