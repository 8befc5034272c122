/*
 * bench_forward.c: how fast `ctxleak forward` copies findings into a
 * PostgreSQL server (tests/pg.h, on this machine, Unix socket, fsync off),
 * and what a forwarder running beside the daemon costs its ingest:
 *
 *   (a) forward --once of a database of FINDINGS findings (default
 *       200,000) into an empty central database, schema creation
 *       included: findings per second (target: at least 50,000/s).  The
 *       database is written by the real ctxleakd (--keep=leaky) from a
 *       raw client's stream in which every request writes a tag under
 *       the context of another open one (a bleed), so that each finding
 *       names two requests whose rows, with their tags, go too;
 *   (b) the baseline beside it, the physical limit: the same leaks rows
 *       read from SQLite and sent by one plain COPY into a table without
 *       indexes or keys;
 *   (c) ctxleakd --keep=leaky ingesting a stream in which one request in
 *       100 bleeds (bench_ingest's proportion), timed from the first
 *       byte to the daemon's exit with everything committed, without and
 *       with a continuous forwarder (--interval 1) on its database
 *       (target: within 10% of without).  Beside the wall-clock rate,
 *       records per CPU-second of the daemon: on a machine of few cores
 *       the forwarder, its PostgreSQL backend and the daemon share them,
 *       and that rate says what the forwarder costs the daemon itself.
 *
 * Each measure runs ROUNDS times, (c)'s two sides back to back so that a
 * round's ratio compares them at the same moment of a shared machine;
 * figures are medians with their range.  The exit status is 0 unless the
 * run itself failed.
 *
 * Usage: bench_forward [FINDINGS [RECORDS]]   (defaults 200000, 5000000)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "../tests/harness.h"
#include "../tests/pg.h"
#include "proto.h"

#define ROUNDS		5
#define OPEN_AT_ONCE	8    /* requests interleaved in the stream */
#define STEPS		5    /* records per request */
#define INGEST_LEAKY	100  /* (c): one request in this many bleeds */
#define WATERMARK_EVERY 4096 /* records between watermarks, as a flush */

static void die(const char *what)
{
	fprintf(stderr, "bench_forward: %s\n", what);
	exit(1);
}

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The median of n values (sorted in place). */
static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof *v, by_value);
	return v[n / 2];
}

static void print_rate(const char *what, double *v, int n, const char *unit)
{
	double m = median(v, n);

	printf("%-34s %10.0f %s/s  (%.0f to %.0f)\n", what, m, unit, v[0],
	       v[n - 1]);
}

/* ------------------------------------------------------------ streams */

/* A request's ctx, made as the client library makes them. */
static uint64_t ctx_of(uint64_t rq)
{
	return proto_mix64(rq + 1);
}

struct stream {
	unsigned char *bytes; /* HELLO, records, watermarks */
	size_t len;
	size_t records; /* records, watermarks not counted */
};

static void append(struct stream *s, size_t cap, const struct proto_record *r)
{
	size_t n = proto_encode_record(s->bytes + s->len, cap - s->len, r);

	if (n == 0)
		die("encode failed");
	s->len += n;
}

/*
 * requests requests of STEPS records (BEGIN, TAG user, EVENT, TAG status,
 * END), in groups of OPEN_AT_ONCE whose steps take turns, as an event
 * loop's do; one in leaky_every writes its status tag under the context
 * of the next request of its group: a bleed.
 */
static void build_stream(struct stream *s, size_t requests,
			 unsigned leaky_every, uint64_t instance)
{
	struct proto_hello h = {.version = PROTO_VERSION,
				.instance = instance,
				.pid = (uint32_t)getpid(),
				.app = {"bench", 5},
				.backend = {"task", 4},
				.reason = {"bench", 5}};
	struct proto_record r, wm = {.type = PROTO_WATERMARK};
	size_t cap = 512 + requests * STEPS * PROTO_RECORD_SIZE_MAX(32);
	uint64_t ts = 1000;

	s->bytes = malloc(cap);
	if (s->bytes == NULL)
		die("out of memory");
	s->len = proto_encode_hello(s->bytes, cap, &h);
	s->records = 0;
	for (size_t g = 0; g < requests; g += OPEN_AT_ONCE) {
		size_t in_group =
		    requests - g < OPEN_AT_ONCE ? requests - g : OPEN_AT_ONCE;

		for (int step = 0; step < STEPS; step++)
			for (size_t k = 0; k < in_group; k++) {
				uint64_t rq = g + k, ctx = ctx_of(rq);

				memset(&r, 0, sizeof r);
				r.ts = ts++;
				r.tid = 1000 + rq % 4;
				r.ctx = r.cause = ctx;
				if (step == 0) {
					r.type = PROTO_BEGIN;
					r.cause = 0;
					r.kind = PROTO_KIND_REQUEST;
					r.name = (struct proto_str){
					    "GET /api/items", 14};
				} else if (step == 1 || step == 3) {
					r.type = PROTO_TAG;
					r.key = (struct proto_str){
					    step == 1 ? "user" : "status",
					    step == 1 ? 4 : 6};
					r.value = (struct proto_str){
					    step == 1 ? "user-000042" : "200",
					    step == 1 ? 11 : 3};
					if (step == 3 && in_group > 1 &&
					    rq % leaky_every == 0)
						r.ctx = ctx_of(
						    g + (k + 1) % in_group);
				} else if (step == 2) {
					r.type = PROTO_EVENT;
					r.name =
					    (struct proto_str){"db.query", 8};
					r.message = (struct proto_str){
					    "SELECT items", 12};
				} else {
					r.type = PROTO_END;
					r.cur = ctx;
				}
				append(s, cap, &r);
				if (++s->records % WATERMARK_EVERY == 0) {
					wm.ts = ts - 1;
					append(s, cap, &wm);
				}
			}
	}
	wm.ts = ts;
	append(s, cap, &wm);
}

/* CPU seconds of the children reaped so far (the daemons). */
static double children_cpu_sec(void)
{
	struct rusage ru;

	getrusage(RUSAGE_CHILDREN, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Feeds the stream to a started daemon and stops it: the seconds from the
 * first byte to its exit, everything committed, and in *cpu the CPU
 * seconds the daemon used (when not NULL). */
static double feed(struct harness_daemon *d, const struct stream *s,
		   double *cpu)
{
	double t0 = now_sec(), c0 = children_cpu_sec();
	int fd = harness_connect(d);

	if (fd == -1 || harness_write_all(fd, s->bytes, s->len) == -1)
		die(harness_error());
	close(fd);
	if (harness_stop(d) != 0)
		die("ctxleakd did not stop cleanly");
	if (cpu)
		*cpu = children_cpu_sec() - c0;
	return now_sec() - t0;
}

/* ------------------------------------------------------------ central */

/* The central database emptied: dropped and made again. */
static void fresh_central(const struct pg_server *pg)
{
	PGconn *c = PQconnectdb(pg->admin);
	PGresult *r;

	if (PQstatus(c) != CONNECTION_OK)
		die(PQerrorMessage(c));
	r = PQexec(c, "DROP DATABASE ctxleak WITH (FORCE)");
	PQclear(r);
	r = PQexec(c, "CREATE DATABASE ctxleak");
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die(PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

static long long central_count(const struct pg_server *pg, const char *sql)
{
	PGconn *c = PQconnectdb(pg->url);
	PGresult *r = PQexec(c, sql);
	long long n = -1;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		n = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return n;
}

/* The CLI's forward on db, --once or continuous; its pid. */
static pid_t spawn_forward(const char *db, const struct pg_server *pg, int once)
{
	pid_t pid = fork();
	int null;

	if (pid != 0)
		return pid;
	null = open("/dev/null", O_WRONLY);
	if (null >= 0) {
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
	}
	if (once)
		execl(harness_cli_path(), "ctxleak", "--db", db, "forward",
		      "--to", pg->url, "--host", "bench", "--once",
		      (char *)NULL);
	else
		execl(harness_cli_path(), "ctxleak", "--db", db, "forward",
		      "--to", pg->url, "--host", "bench", "--interval", "1",
		      (char *)NULL);
	_exit(127);
}

/* (a): seconds of one forward --once into an empty central database. */
static double forward_once(const char *db, const struct pg_server *pg,
			   long long findings)
{
	double t0;
	int st;
	pid_t pid;

	fresh_central(pg);
	t0 = now_sec();
	pid = spawn_forward(db, pg, 1);
	if (pid == -1 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0)
		die("ctxleak forward --once failed");
	t0 = now_sec() - t0;
	if (central_count(pg, "SELECT count(*) FROM leaks") != findings)
		die("the central database has not every finding");
	return t0;
}

/* COPY text of a value: NULL, or text with COPY's escapes. */
static void put_value(char **buf, size_t *len, size_t *cap, sqlite3_stmt *st,
		      int col)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (*len + 2 * (size_t)n + 4 > *cap) {
		while (*len + 2 * (size_t)n + 4 > *cap)
			*cap *= 2;
		*buf = realloc(*buf, *cap);
		if (*buf == NULL)
			die("out of memory");
	}
	if (s == NULL) {
		memcpy(*buf + *len, "\\N", 2);
		*len += 2;
		return;
	}
	for (int i = 0; i < n; i++) {
		char c = (char)s[i];

		if (c == '\\' || c == '\t' || c == '\n' || c == '\r') {
			(*buf)[(*len)++] = '\\';
			c = c == '\t'	? 't'
			    : c == '\n' ? 'n'
			    : c == '\r' ? 'r'
					: c;
		}
		(*buf)[(*len)++] = c;
	}
}

/* (b): seconds to read the leaks rows from SQLite and COPY them into an
 * unindexed table, in one transaction. */
static double plain_copy(const char *db, const struct pg_server *pg)
{
	static const char cols[] =
	    "id, process_id, class, ts, tid, victim_request_id, victim_ctx, "
	    "victim_name, source_request_id, source_ctx, source_name, record, "
	    "ctx, cause, other, name, value, site_id, detail";
	char sql[1024];
	size_t len = 0, cap = 1 << 24;
	char *buf = malloc(cap);
	sqlite3 *s;
	sqlite3_stmt *st;
	PGconn *c;
	PGresult *r;
	double t0;

	fresh_central(pg);
	c = PQconnectdb(pg->url);
	r = PQexec(c, "CREATE TABLE plain (id bigint, process_id bigint, "
		      "class text, ts bigint, tid bigint, victim_request_id "
		      "bigint, victim_ctx bigint, victim_name text, "
		      "source_request_id bigint, source_ctx bigint, "
		      "source_name text, record text, ctx bigint, cause "
		      "bigint, other bigint, name text, value text, site_id "
		      "bigint, detail text)");
	if (buf == NULL || PQresultStatus(r) != PGRES_COMMAND_OK)
		die(PQerrorMessage(c));
	PQclear(r);
	t0 = now_sec();
	if (sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		die("open the local database");
	snprintf(sql, sizeof sql, "SELECT %s FROM leaks ORDER BY id", cols);
	if (sqlite3_prepare_v2(s, sql, -1, &st, NULL) != SQLITE_OK)
		die(sqlite3_errmsg(s));
	while (sqlite3_step(st) == SQLITE_ROW) {
		for (int i = 0; i < sqlite3_column_count(st); i++) {
			if (i)
				buf[len++] = '\t';
			put_value(&buf, &len, &cap, st, i);
		}
		buf[len++] = '\n';
	}
	sqlite3_finalize(st);
	sqlite3_close(s);
	r = PQexec(c, "COPY plain FROM STDIN");
	if (PQresultStatus(r) != PGRES_COPY_IN ||
	    PQputCopyData(c, buf, (int)len) != 1 || PQputCopyEnd(c, NULL) != 1)
		die(PQerrorMessage(c));
	PQclear(r);
	r = PQgetResult(c);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		die(PQerrorMessage(c));
	PQclear(r);
	while ((r = PQgetResult(c)) != NULL)
		PQclear(r);
	t0 = now_sec() - t0;
	PQfinish(c);
	free(buf);
	return t0;
}

/* (c): records/s of one ingest, with a continuous forwarder beside the
 * daemon or not; records per CPU-second of the daemon in *per_cpu. */
static double ingest(const struct stream *s, const struct pg_server *pg,
		     int with_forwarder, double *per_cpu)
{
	const char *args[] = {"--keep", "leaky", "--log-level", "warn", NULL};
	struct harness_daemon d;
	pid_t fw = 0;
	double sec, cpu;
	int st;

	if (harness_start(&d, args) == -1)
		die(harness_error());
	if (with_forwarder) {
		fresh_central(pg);
		fw = spawn_forward(d.db, pg, 0);
		if (fw == -1)
			die("fork");
		harness_sleep_ms(300); /* connected, schema made, polling */
	}
	sec = feed(&d, s, &cpu);
	*per_cpu = (double)s->records / cpu;
	if (fw) {
		kill(fw, SIGTERM);
		waitpid(fw, &st, 0);
	}
	harness_cleanup(&d);
	return (double)s->records / sec;
}

int main(int argc, char **argv)
{
	size_t findings = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
	size_t records = argc > 2 ? strtoul(argv[2], NULL, 10) : 5000000;
	const char *args[] = {"--keep", "leaky", "--log-level", "warn", NULL};
	double fwd[ROUNDS], base[ROUNDS], without[ROUNDS], with[ROUNDS],
	    ratio[ROUNDS], ingest_ratio[ROUNDS], cpu_without[ROUNDS],
	    cpu_with[ROUNDS], cpu_ratio[ROUNDS];
	struct harness_daemon d;
	struct pg_server pg;
	struct stream s;
	long long leaks, requests;

	if (findings < OPEN_AT_ONCE || records < STEPS * OPEN_AT_ONCE)
		die("usage: bench_forward [FINDINGS [RECORDS]]");
	if (pg_start(&pg) == -1)
		die(pg_error());

	/* The database of (a) and (b). */
	build_stream(&s, findings, 1, 77);
	if (harness_start(&d, args) == -1)
		die(harness_error());
	feed(&d, &s, NULL);
	free(s.bytes);
	leaks = harness_query_int(&d, "SELECT count(*) FROM leaks");
	requests = harness_query_int(&d, "SELECT count(*) FROM requests");
	printf("local database: %lld findings, %lld requests rows (ctxleakd "
	       "--keep=leaky, a bleed in every request)\n",
	       leaks, requests);
	for (int i = 0; i < ROUNDS; i++) {
		double f = forward_once(d.db, &pg, leaks);
		double b = plain_copy(d.db, &pg);

		fwd[i] = (double)leaks / f;
		base[i] = (double)leaks / b;
		ratio[i] = b / f;
	}
	print_rate("(a) forward --once", fwd, ROUNDS, "findings");
	print_rate("(b) SQLite + plain COPY", base, ROUNDS, "findings");
	printf("(a)/(b): %.0f%% (median of rounds); (a) target 50000/s: %s\n",
	       100 * median(ratio, ROUNDS),
	       median(fwd, ROUNDS) >= 50000 ? "met" : "NOT met");
	harness_cleanup(&d);

	build_stream(&s, records / STEPS, INGEST_LEAKY, 78);
	for (int i = 0; i < ROUNDS; i++) {
		without[i] = ingest(&s, &pg, 0, &cpu_without[i]);
		with[i] = ingest(&s, &pg, 1, &cpu_with[i]);
		ingest_ratio[i] = with[i] / without[i];
		cpu_ratio[i] = cpu_with[i] / cpu_without[i];
	}
	free(s.bytes);
	print_rate("(c) ctxleakd keep=leaky", without, ROUNDS, "records");
	print_rate("    with a forwarder beside it", with, ROUNDS, "records");
	printf("(c) with/without: %.1f%% (median of rounds); target >= 90%%: "
	       "%s\n",
	       100 * median(ingest_ratio, ROUNDS),
	       median(ingest_ratio, ROUNDS) >= 0.9 ? "met" : "NOT met");
	print_rate("(c) per CPU-second of the daemon", cpu_without, ROUNDS,
		   "records");
	print_rate("    with a forwarder beside it", cpu_with, ROUNDS,
		   "records");
	printf("(c) per CPU-second, with/without: %.1f%% (median of rounds): "
	       "the forwarder's cost to the daemon itself, apart from the "
	       "CPU they share\n",
	       100 * median(cpu_ratio, ROUNDS));
	pg_cleanup(&pg);
	return 0;
}
