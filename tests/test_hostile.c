/*
 * test_hostile.c: the real ctxleakd against hostile and broken peers on
 * raw AF_UNIX connections: random bytes, truncated objects, absurd length
 * prefixes, deep nesting, wrong types, lying HELLOs, connection storms.
 *
 * In every test a well-behaved client (the real library in a forked child)
 * is connected alongside: it sends the first half of docs/DESIGN.md's worked
 * example, waits while the hostile peers do their worst, sends the second
 * half, and its findings must come out exactly as the worked example says.
 * The daemon's open descriptors are counted before and after each storm
 * (no leak), and its resident memory is held under a stated bound.
 */
#include <check.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "ctxleak.h"
#include "emitter.h"
#include "harness_check.h"
#include "proto.h"
#include "raw.h"

/* Resident memory the daemon may gain in any storm here.  1,000 open
 * connections cost it about 16 MiB; the rest is head room for the
 * allocator keeping freed buffers, and for ASan or valgrind, whose own
 * memory a bound on the total would measure instead. */
#define RSS_GROWTH_BOUND_KB    (64 * 1024)
#define CHURN_CONNECTIONS      10000
#define CONCURRENT_CONNECTIONS 1000
/* Records in the worked example: 5 RESUME/SUSPEND pairs, 3 BEGIN, 3 END,
 * 3 TAG, 2 EVENT. */

/* ------------------------------------------------- the daemon's health */

/* Closing is asynchronous on the daemon's side: poll until its count is
 * back at `want`, and report what it was when time ran out. */
static void assert_fds_return_to(const struct harness_daemon *d, int want)
{
	int n = daemon_fds(d->pid);

	for (int i = 0; n != want && i < HARNESS_TIMEOUT_SEC * 100; i++) {
		harness_sleep_ms(10);
		n = daemon_fds(d->pid);
	}
	ck_assert_msg(n == want, "the daemon holds %d descriptors, %d before",
		      n, want);
}

/* The daemon is up, and its RSS is within the bound of what it was
 * (before_kb) before the storm. */
static void assert_alive_and_small(const struct harness_daemon *d,
				   long before_kb, const char *after)
{
	long kb;

	ck_assert_msg(kill(d->pid, 0) == 0, "the daemon died");
	kb = daemon_status_kb(d->pid, "VmRSS");
	printf("daemon RSS before and after %s: %ld KiB, %ld KiB (bound "
	       "%ld KiB)\n",
	       after, before_kb, kb, before_kb + RSS_GROWTH_BOUND_KB);
	ck_assert_msg(kb > 0 && kb < before_kb + RSS_GROWTH_BOUND_KB,
		      "the daemon's RSS is %ld KiB, %ld KiB before", kb,
		      before_kb);
}

/* ------------------------------------------------ the well-behaved client */

struct companion {
	pid_t pid;
	int go[2];
};

/* Between the halves of the worked example (steps 1-2, then 3-5): ship
 * the first half and wait for a byte on the pipe. */
static int wait_for_go(void *arg)
{
	struct companion *comp = arg;
	char byte;

	ctxleak_flush();
	return read(comp->go[0], &byte, 1) == 1 ? 0 : 3;
}

/* The worked example of docs/DESIGN.md in two halves. */
static int worked_example_in_halves(void *arg)
{
	struct companion *comp = arg;
	struct harness_example ex = {.between = wait_for_go, .arg = comp};

	/* A test that fails before its go closes the pipe: then read() sees
	 * the end and the client does not wait forever. */
	close(comp->go[1]);
	return harness_worked_example(&ex);
}

/* Start the client and wait until the daemon has its first half. */
static void companion_start(const struct harness_daemon *d, struct companion *c)
{
	ck_assert_int_eq(pipe(c->go), 0);
	c->pid = harness_client_spawn(d, CTXLEAK_BACKEND_THREAD,
				      worked_example_in_halves, c);
	ck_assert_msg(c->pid > 0, "%s", harness_error());
	close(c->go[0]);
	ck_assert_msg(harness_wait_int(d,
				       "SELECT count(*) FROM processes "
				       "WHERE app = 'harness'",
				       1) == 0,
		      "%s", harness_error());
}

static void companion_finish(struct companion *c)
{
	ck_assert_int_eq(write(c->go[1], "g", 1), 1);
	close(c->go[1]);
	ck_assert_int_eq(harness_client_wait(c->pid), 0);
}

/* Stop the daemon and check that the client's data came through whole:
 * every record, and exactly the worked example's findings. */
static void stop_and_check_companion(struct harness_daemon *d)
{
	static const struct {
		const char *class;
		int count;
	} expected[] = {
	    {"overlap", 1}, {"bleed", 2}, {"misnest", 2},
	    {"lost", 1},    {"stale", 1},
	};
	const char *proc = "(SELECT id FROM processes WHERE app = 'harness')";

	ck_assert_int_eq(harness_stop(d), 0);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM processes WHERE "
				      "app = 'harness' AND error IS NULL"),
			 1);
	ck_assert_msg(
	    query_int(d, "SELECT records FROM processes WHERE "
			 "app = 'harness'") == HARNESS_EXAMPLE_RECORDS,
	    "the client's process has %lld records, %lld dropped, "
	    "%lld connections; %d expected",
	    (long long)query_int(d, "SELECT records FROM processes "
				    "WHERE app = 'harness'"),
	    (long long)query_int(d, "SELECT dropped FROM processes "
				    "WHERE app = 'harness'"),
	    (long long)query_int(d, "SELECT connections FROM "
				    "processes WHERE app = 'harness'"),
	    HARNESS_EXAMPLE_RECORDS);
	ck_assert_int_eq(query_int(d,
				   "SELECT count(*) FROM records WHERE "
				   "process_id = %s",
				   proc),
			 HARNESS_EXAMPLE_RECORDS);
	ck_assert_int_eq(query_int(d,
				   "SELECT count(*) FROM requests WHERE "
				   "process_id = %s",
				   proc),
			 3);
	ck_assert_int_eq(
	    query_int(d, "SELECT count(*) FROM leaks WHERE process_id = %s",
		      proc),
	    7);
	for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
		ck_assert_int_eq(query_int(d,
					   "SELECT count(*) FROM leaks WHERE "
					   "process_id = %s AND class = '%s'",
					   proc, expected[i].class),
				 expected[i].count);
	/* B's rebuilt context holds status=200, set by A's code. */
	ck_assert_int_eq(query_int(d, HARNESS_EXAMPLE_BLED_TAG_SQL), 1);
}

/* A storm of hostile peers beside the companion, and what the daemon held
 * before it. */
struct storm {
	struct companion c;
	int fds;  /* the daemon's open descriptors before */
	long rss; /* its VmRSS before (KiB); -1: its growth is not bounded */
};

/* Starts the companion and counts the daemon's descriptors, and with
 * bound_rss its RSS too. */
static void storm_begin(const struct harness_daemon *d, struct storm *s,
			int bound_rss)
{
	companion_start(d, &s->c);
	s->fds = daemon_fds(d->pid);
	s->rss = bound_rss ? daemon_status_kb(d->pid, "VmRSS") : -1;
}

/* After the storm (`after` names it): the descriptors are back, the RSS
 * is within the bound when one was asked, and the companion's data came
 * through whole once the daemon stopped. */
static void storm_end(struct harness_daemon *d, struct storm *s,
		      const char *after)
{
	assert_fds_return_to(d, s->fds);
	if (s->rss >= 0)
		assert_alive_and_small(d, s->rss, after);
	companion_finish(&s->c);
	stop_and_check_companion(d);
}

/* ------------------------------------------------------ hostile peers */

/* The daemon must close the connection by itself: bad input is refused
 * at once, not waited out. */
static void send_and_expect_close(const struct harness_daemon *d, int hello,
				  const void *buf, size_t len)
{
	static uint64_t instance = 1u << 20;
	int fd = hello ? raw_hello(d, ++instance, 0) : raw_connect(d);

	raw_send_until_closed(fd, buf, len);
}

static uint32_t xorshift(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

START_TEST(test_random_bytes)
{
	struct harness_daemon d;
	struct storm storm;
	unsigned char junk[4096];
	uint32_t seed = 0x2545f491;
	int fd;

	START(&d, "--keep", "all");
	storm_begin(&d, &storm, 1);
	/* Random bytes may stop inside an object the daemon then waits
	 * for, so the peer closes; half of them come after a HELLO. */
	for (int i = 0; i < 200; i++) {
		for (size_t j = 0; j < sizeof junk; j++)
			junk[j] = (unsigned char)xorshift(&seed);
		fd = i % 2 ? raw_hello(&d, 100 + (uint64_t)i, 0)
			   : raw_connect(&d);
		harness_write_all(fd, junk, 1 + xorshift(&seed) % sizeof junk);
		close(fd);
	}
	storm_end(&d, &storm, "random bytes");
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_truncated_objects_then_close)
{
	struct harness_daemon d;
	struct storm storm;
	unsigned char buf[1024], tag[256];
	struct proto_record r = TAG(1004, 7, 5, 5, "cut", "somewhere in here");
	size_t n, tlen = raw_encode(tag, sizeof tag, &r);
	int fd;

	START(&d, "--keep", "all");
	storm_begin(&d, &storm, 0);
	n = raw_request(buf, sizeof buf, 5, 1000);
	/* Every cut of the fifth record: the four before it are kept. */
	for (size_t cut = 1; cut < tlen; cut++) {
		fd = raw_hello(&d, 1000 + cut, 0);
		ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
		ck_assert_int_eq(harness_write_all(fd, tag, cut), 0);
		close(fd);
	}
	storm_end(&d, &storm, NULL);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND records = 4"),
			 (int64_t)tlen - 1);
	ck_assert_int_eq(raw_records(&d), 4 * ((int64_t)tlen - 1));
	harness_cleanup(&d);
}
END_TEST

/* A record begun and never finished: past --partial-timeout the daemon
 * closes that connection, says whose it was, counts it, and keeps the
 * four records that came before.  A connection that is merely quiet
 * between whole records stays open. */
START_TEST(test_partial_record_times_out)
{
	struct harness_daemon d;
	struct proto_receipt receipt;
	struct pollfd pfd = {.events = POLLIN};
	unsigned char buf[1024], tag[256];
	struct proto_record r = TAG(1004, 7, 5, 5, "held", "open for ever");
	size_t n, tlen = raw_encode(tag, sizeof tag, &r);
	char want[160];
	int fd, quiet;

	START(&d, "--keep", "all", "--partial-timeout", "500ms");
	quiet = raw_hello(&d, 4100, 0);
	ck_assert_msg(harness_read_receipt(quiet, &receipt) == 0, "%s",
		      harness_error());
	fd = raw_hello(&d, 4101, 0);
	n = raw_request(buf, sizeof buf, 5, 1000);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	raw_send_until_closed(fd, tag, tlen / 2);
	snprintf(want, sizeof want,
		 "pid %d: closing connection: a record left incomplete for "
		 "500 ms (%zu bytes of it came; --partial-timeout)",
		 (int)getpid(), tlen / 2);
	ck_assert_msg(harness_wait_log(&d, want, 1) == 0, "%s",
		      harness_error());
	/* Quiet, not incomplete: still open, nothing to read. */
	pfd.fd = quiet;
	ck_assert_int_eq(poll(&pfd, 1, 0), 0);
	close(quiet);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes WHERE "
				       "instance = 4101 AND error LIKE "
				       "'a record left incomplete%%'"),
			 4);
	ck_assert_int_eq(raw_records_of(&d, 4101), 4);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "instance = 4100 AND error IS NULL"),
			 1);
	/* Counted: among the bad input, as incomplete. */
	ck_assert_msg(harness_wait_log(&d, "1 bad input (1 incomplete)", 1) ==
			  0,
		      "%s", harness_error());
	harness_cleanup(&d);
}
END_TEST

/* A record dripped a byte at a time: each byte is progress on the wire
 * but not a record, so the clock is not reset and the connection goes
 * about --partial-timeout after its first byte, long before the last. */
START_TEST(test_partial_record_dripped_times_out)
{
	struct harness_daemon d;
	unsigned char tag[256];
	char value[100];
	struct proto_record r = {.type = PROTO_TAG,
				 .ts = 1004,
				 .tid = 7,
				 .ctx = 5,
				 .cause = 5,
				 .key = {"drip", 4},
				 .value = {value, sizeof value}};
	size_t tlen, sent = 0;
	struct timespec t0, t1;
	double secs;
	int fd;

	memset(value, 'd', sizeof value);
	tlen = raw_encode(tag, sizeof tag, &r);
	START(&d, "--partial-timeout", "500ms");
	fd = raw_hello(&d, 4200, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* 100 ms a byte: the whole record would take over 10 s. */
	while (sent < tlen && harness_write_all(fd, tag + sent, 1) == 0) {
		sent++;
		harness_sleep_ms(100);
	}
	ck_assert_msg(harness_wait_closed(fd) == 0, "%s", harness_error());
	clock_gettime(CLOCK_MONOTONIC, &t1);
	close(fd);
	secs = (double)(t1.tv_sec - t0.tv_sec) +
	       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	ck_assert_msg(sent < tlen / 2 && secs < 3.0,
		      "closed after %.1f s and %zu of %zu bytes", secs, sent,
		      tlen);
	ck_assert_int_eq(harness_stop(&d), 0);
	harness_cleanup(&d);
}
END_TEST

/* Length prefixes that announce 4 GiB: the daemon refuses them from the
 * header alone, without waiting for (or allocating) the payload. */
START_TEST(test_four_gib_prefixes)
{
	static const unsigned char str32[] = {0x98, 0x04, 0x01, 0x07, 0x05,
					      0x05, 0x00, 0xa1, 'k',  0xdb,
					      0xff, 0xff, 0xff, 0xff, 'x'};
	static const unsigned char bin32[] = {0x98, 0x04, 0x01, 0x07, 0x05,
					      0x05, 0x00, 0xa1, 'k',  0xc6,
					      0xff, 0xff, 0xff, 0xff, 'x'};
	static const unsigned char ext32[] = {0xc9, 0xff, 0xff, 0xff,
					      0xff, 0x01, 'x'};
	struct harness_daemon d;
	struct storm storm;

	START(&d, "--keep", "all");
	storm_begin(&d, &storm, 1);
	send_and_expect_close(&d, 1, str32, sizeof str32);
	send_and_expect_close(&d, 1, bin32, sizeof bin32);
	send_and_expect_close(&d, 1, ext32, sizeof ext32);
	/* The same as the HELLO's application name. */
	send_and_expect_close(&d, 0,
			      "\x81\xa3"
			      "app"
			      "\xdb\xff\xff\xff\xff",
			      10);
	storm_end(&d, &storm, "4 GiB prefixes");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND error LIKE "
				       "'%%4294967295 bytes exceeds%%'"),
			 3);
	harness_cleanup(&d);
}
END_TEST

START_TEST(test_huge_arrays_and_deep_nesting)
{
	static const unsigned char array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
	static const unsigned char map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
	static const unsigned char array16[] = {0xdc, 0xff, 0xff};
	struct harness_daemon d;
	struct storm storm;
	/* Far deeper than the limit, and small enough to be written whole
	 * before the daemon hangs up. */
	unsigned char deep[4096];

	START(&d, "--keep", "all");
	storm_begin(&d, &storm, 1);
	send_and_expect_close(&d, 1, array32, sizeof array32);
	send_and_expect_close(&d, 1, map32, sizeof map32);
	send_and_expect_close(&d, 1, array16, sizeof array16);
	send_and_expect_close(&d, 0, map32, sizeof map32);
	/* Nesting: one-element arrays, and one-entry maps as HELLO. */
	memset(deep, 0x91, sizeof deep);
	send_and_expect_close(&d, 1, deep, sizeof deep);
	memset(deep, 0x81, sizeof deep);
	send_and_expect_close(&d, 0, deep, sizeof deep);
	storm_end(&d, &storm, "huge arrays, deep nesting");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND error LIKE "
				       "'%%exceeds the limit%%'"),
			 3);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND error LIKE "
				       "'%%nested deeper%%'"),
			 1);
	harness_cleanup(&d);
}
END_TEST

/* Records before HELLO and fields of the wrong msgpack type: each closes
 * its connection, and nothing of it is stored as a record. */
START_TEST(test_wrong_types_and_order)
{
#define BYTES(s) s, sizeof(s) - 1
	static const struct {
		int hello;
		const char *bytes;
		size_t len;
	} cases[] = {
	    /* a record before HELLO */
	    {0, BYTES("\x98\x04\x01\x07\x05\x05\x00\xa1k\xa1v")},
	    /* HELLO as an array, as a string, as nil */
	    {0, BYTES("\x92\x01\x02")},
	    {0, BYTES("\xa5hello")},
	    {0, BYTES("\xc0")},
	    /* HELLO whose version is a string */
	    {0, BYTES("\x81\xa7version\xa1\x31")},
	    /* a record that is a map, a string, a float */
	    {1, BYTES("\x81\x01\x02")},
	    {1, BYTES("\xa3\x42\x45G")},
	    {1, BYTES("\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00")},
	    /* type as a string; ts as a string; ctx negative */
	    {1, BYTES("\x98\xa1\x34\x01\x07\x05\x05\x00\xa1k\xa1v")},
	    {1, BYTES("\x98\x04\xa2ts\x07\x05\x05\x00\xa1k\xa1v")},
	    {1, BYTES("\x98\x04\x01\x07\xff\x05\x00\xa1k\xa1v")},
	    /* a second HELLO */
	    {1, BYTES("\x81\xa7version\x01")},
	};
#undef BYTES
	struct harness_daemon d;
	struct storm storm;

	START(&d, "--keep", "all");
	storm_begin(&d, &storm, 0);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		send_and_expect_close(&d, cases[i].hello, cases[i].bytes,
				      cases[i].len);
	storm_end(&d, &storm, NULL);
	ck_assert_int_eq(raw_records(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND error IS NULL"),
			 0);
	harness_cleanup(&d);
}
END_TEST

/* A peer that claims to be the well-behaved client's pid: the kernel's
 * credentials are recorded as the pid, the claim only as hello_pid, and
 * the real client's row is untouched. */
START_TEST(test_hello_claims_another_pid)
{
	struct harness_daemon d;
	struct companion c;
	int fd;

	START(&d, "--keep", "all");
	companion_start(&d, &c);
	fd = raw_hello(&d, 4242, (uint32_t)c.pid);
	raw_send_request(fd, 77, 1000);
	close(fd);
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT count(*) FROM processes WHERE "
				       "instance = 4242 AND disconnected_at "
				       "IS NOT NULL",
				       1) == 0,
		      "%s", harness_error());
	companion_finish(&c);
	stop_and_check_companion(&d);
	ck_assert_int_eq(query_int(&d, "SELECT pid FROM processes WHERE "
				       "instance = 4242"),
			 getpid());
	ck_assert_int_eq(query_int(&d, "SELECT hello_pid FROM processes "
				       "WHERE instance = 4242"),
			 c.pid);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM processes WHERE "
				   "pid = %d",
				   (int)c.pid),
			 1);
	ck_assert_int_eq(raw_records_of(&d, 4242), 4);
	harness_cleanup(&d);
}
END_TEST

/* Strings at the default limit, 16,000 bytes of them, for the tests of
 * what the daemon holds in memory. */
#define LONG_STRING 16000
static char long_text[LONG_STRING];

/* A daemon with one limit set, and a raw connection to it past its HELLO;
 * *rss is the daemon's RSS before. */
static int start_with_limit(struct harness_daemon *d, const char *limit,
			    const char *value, uint64_t instance, long *rss)
{
	memset(long_text, 'x', sizeof long_text);
	START(d, limit, value);
	*rss = daemon_status_kb(d->pid, "VmRSS");
	return raw_hello(d, instance, 0);
}

static void send_record(int fd, const struct proto_record *r)
{
	static unsigned char buf[PROTO_RECORD_SIZE_MAX(2 * LONG_STRING)];

	ck_assert_int_eq(
	    harness_write_all(fd, buf, proto_encode_record(buf, sizeof buf, r)),
	    0);
}

/* Records at the string limit and never a watermark: the daemon holds
 * them until a watermark orders them, but no more than --max-pending, and
 * judges the oldest early rather than grow (by 96 MB here, without it). */
START_TEST(test_long_strings_without_watermark)
{
	enum { RECORDS = 3000 };
	struct proto_record r = {.type = PROTO_EVENT,
				 .tid = 5,
				 .name = {long_text, LONG_STRING},
				 .message = {long_text, LONG_STRING}};
	struct harness_daemon d;
	long rss;
	int fd;

	fd = start_with_limit(&d, "--max-pending", "4M", 4343, &rss);
	for (int i = 0; i < RECORDS; i++) {
		r.ts = 1000 + (uint64_t)i;
		send_record(fd, &r);
	}
	assert_alive_and_small(&d, rss, "3000 records of 32 KB");
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT records FROM processes WHERE "
				       "instance = 4343"),
			 RECORDS);
	ck_assert_int_ge(harness_log_count(&d, "judged before a watermark"), 1);
	harness_cleanup(&d);
}
END_TEST

/* Requests left open, each with as many tags as it may keep, each at the
 * string limit: what they hold is bounded by --max-held (100 MB here
 * without it), and the tags past it are counted in tags_dropped. */
START_TEST(test_long_tags_on_open_requests)
{
	enum { REQUESTS = 100, TAGS = 64 };
	struct proto_record begin = BEGIN(0, 5, 0, 0, 0, "GET /");
	struct proto_record tag = {
	    .type = PROTO_TAG, .tid = 5, .value = {long_text, LONG_STRING}};
	struct proto_record wm = {.type = PROTO_WATERMARK};
	struct harness_daemon d;
	char key[16];
	uint64_t ts = 1000;
	long rss;
	int fd;

	fd = start_with_limit(&d, "--max-held", "4M", 4444, &rss);
	for (uint64_t q = 1; q <= REQUESTS; q++) {
		begin.ts = ts++;
		begin.ctx = q;
		send_record(fd, &begin);
		for (int i = 0; i < TAGS; i++) {
			snprintf(key, sizeof key, "key%d", i);
			tag.key =
			    (struct proto_str){key, (uint32_t)strlen(key)};
			tag.ts = ts++;
			tag.ctx = tag.cause = q;
			send_record(fd, &tag);
		}
		wm.ts = ts;
		send_record(fd, &wm);
	}
	assert_alive_and_small(&d, rss, "100 open requests of 1 MB of tags");
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	/* Every tag is a row or counted, and the rows are within the limit. */
	ck_assert_int_eq(query_int(&d, "SELECT (SELECT count(*) FROM tags) + "
				       "(SELECT sum(tags_dropped) FROM "
				       "requests)"),
			 REQUESTS * TAGS);
	ck_assert_int_le(query_int(&d, "SELECT sum(length(value)) FROM tags"),
			 4 << 20);
	ck_assert_int_gt(query_int(&d, "SELECT count(*) FROM tags"), 0);
	harness_cleanup(&d);
}
END_TEST

/* Requests left open, each with a name of its own at the string limit:
 * the names count against --max-held (160 MB here without it), and past
 * it scopes are kept without them. */
START_TEST(test_long_names_on_open_requests)
{
	enum { REQUESTS = 10000 };
	struct proto_record begin = {.type = PROTO_BEGIN,
				     .tid = 5,
				     .kind = PROTO_KIND_REQUEST,
				     .name = {long_text, LONG_STRING}};
	struct proto_record wm = {.type = PROTO_WATERMARK};
	struct harness_daemon d;
	long rss;
	int fd;

	fd = start_with_limit(&d, "--max-held", "4M", 4545, &rss);
	for (uint64_t q = 1; q <= REQUESTS; q++) {
		snprintf(long_text, 16, "%015llu", (unsigned long long)q);
		begin.ts = wm.ts = q;
		begin.ctx = q;
		send_record(fd, &begin);
		if (q % 100 == 0)
			send_record(fd, &wm);
	}
	assert_alive_and_small(&d, rss, "10000 open requests of 16 KB names");
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"),
			 REQUESTS);
	ck_assert_int_gt(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "name IS NULL"),
			 REQUESTS / 2);
	ck_assert_int_ge(harness_log_count(&d, "kept without their names"), 1);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------- storms */

START_TEST(test_connection_churn)
{
	struct harness_daemon d;
	struct storm storm;
	unsigned char buf[512];
	size_t n = raw_request(buf, sizeof buf, 9, 1000);
	int fd;

	START(&d, "--keep", "all");
	storm_begin(&d, &storm, 1);
	/* Most connect and leave at once; every tenth says HELLO and sends
	 * one request first. */
	for (int i = 0; i < CHURN_CONNECTIONS; i++) {
		fd = raw_connect(&d);
		if (i % 10 == 0) {
			ck_assert_int_eq(harness_send_hello(fd, 10000 + i, 0),
					 0);
			ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
		}
		close(fd);
	}
	storm_end(&d, &storm, "the connection churn");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND records = 4"),
			 CHURN_CONNECTIONS / 10);
	harness_cleanup(&d);
}
END_TEST

/* The test's own descriptor limit, inherited by the daemon it starts. */
START_TEST(test_thousand_concurrent_connections)
{
	struct harness_daemon d;
	struct storm storm;
	unsigned char buf[512];
	struct proto_record wm = {.type = PROTO_WATERMARK, .ts = 2000};
	int fd[CONCURRENT_CONNECTIONS];
	size_t n;

	ck_assert_msg(
	    harness_raise_fd_limit(2 * CONCURRENT_CONNECTIONS + 256) == 0, "%s",
	    harness_error());
	START(&d, "--keep", "all", "--max-connections", "2000");
	storm_begin(&d, &storm, 1);
	n = raw_request(buf, sizeof buf, 11, 1000);
	n += raw_encode(buf + n, sizeof buf - n, &wm);
	for (int i = 0; i < CONCURRENT_CONNECTIONS; i++) {
		fd[i] = raw_hello(&d, 20000 + (uint64_t)i, 0);
		ck_assert_int_eq(harness_write_all(fd[i], buf, n), 0);
	}
	/* All of them at once: the watermark retires each request while
	 * every connection is still open. */
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT count(*) FROM requests r JOIN "
				       "processes p ON p.id = r.process_id "
				       "WHERE p.app = 'raw' AND "
				       "p.disconnected_at IS NULL",
				       CONCURRENT_CONNECTIONS) == 0,
		      "%s", harness_error());
	ck_assert_int_eq(daemon_fds(d.pid), storm.fds + CONCURRENT_CONNECTIONS);
	for (int i = 0; i < CONCURRENT_CONNECTIONS; i++)
		close(fd[i]);
	storm_end(&d, &storm, "the concurrent connections");
	ck_assert_int_eq(raw_records(&d), 4 * CONCURRENT_CONNECTIONS);
	harness_cleanup(&d);
}
END_TEST

/* More workers than the old default of 1,024 connections. */
#define MANY_WORKERS 1100

/* A host with more than a thousand instrumented workers: with the
 * default limits, every one of them is taken (its HELLO gets a RECEIPT)
 * and every record it sends is stored. */
START_TEST(test_default_limits_take_many_workers)
{
	static int fd[MANY_WORKERS];
	struct harness_daemon d;
	struct proto_receipt receipt;
	unsigned char buf[512];
	struct rlimit rl;
	size_t n;

	/* Started from a shell's usual soft limit of 1,024 files: the
	 * daemon raises its own to what its connections need. */
	ck_assert_msg(harness_raise_fd_limit(MANY_WORKERS + 256) == 0, "%s",
		      harness_error());
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = 1024;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	START(&d, "--keep", "all");
	ck_assert_msg(harness_raise_fd_limit(MANY_WORKERS + 256) == 0, "%s",
		      harness_error());
	n = raw_request(buf, sizeof buf, 11, 1000);
	for (int i = 0; i < MANY_WORKERS; i++) {
		fd[i] = raw_hello(&d, 40000 + (uint64_t)i, 0);
		ck_assert_msg(harness_read_receipt(fd[i], &receipt) == 0,
			      "connection %d: %s", i, harness_error());
		ck_assert_int_eq(harness_write_all(fd[i], buf, n), 0);
	}
	for (int i = 0; i < MANY_WORKERS; i++)
		close(fd[i]);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND records = 4"),
			 MANY_WORKERS);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records"),
			 4 * MANY_WORKERS);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------ sites and retention */

#define FLOODERS     4
#define FLOOD_SITES  10000
#define RETAIN_BYTES (2 << 20)

/* Defines FLOOD_SITES sites nobody will name, each new; returns the
 * connection, still open. */
static int flood_sites_held(const struct harness_daemon *d, int flooder)
{
	static unsigned char buf[FLOOD_SITES * 256];
	char file[200];
	size_t n = 0;
	int fd = raw_hello(d, 50000 + (uint64_t)flooder, 0);

	for (int i = 0; i < FLOOD_SITES; i++) {
		struct proto_record r = {.type = PROTO_SITE,
					 .site = (uint32_t)i + 1,
					 .line = (uint32_t)i,
					 .file = {file, 0},
					 .func = {"flood", 5}};

		r.file.len = (size_t)snprintf(file, sizeof file,
					      "flood/%d/%0150d.c", flooder, i);
		n += raw_encode(buf + n, sizeof buf - n, &r);
	}
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	return fd;
}

static void flood_sites(const struct harness_daemon *d, int flooder)
{
	close(flood_sites_held(d, flooder));
}

/* Five processes of the worked example: 35 findings. */
static void thirty_five_findings(const struct harness_daemon *d)
{
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(harness_client(d, CTXLEAK_BACKEND_THREAD,
						harness_worked_example, NULL),
				 0);
	ck_assert_msg(harness_wait_int(d, "SELECT count(*) FROM leaks", 35) ==
			  0,
		      "%s", harness_error());
}

/* Sites a live process holds cannot go: retention is over its limit with
 * nothing more it may delete, says so, and keeps the findings rather
 * than emptying them. */
START_TEST(test_held_sites_do_not_empty_the_findings)
{
	struct harness_daemon d;
	char limit[32];
	int fd;

	snprintf(limit, sizeof limit, ",%d", RETAIN_BYTES / 2);
	START(&d, "--retention", limit);
	thirty_five_findings(&d);
	fd = flood_sites_held(&d, 0);
	ck_assert_msg(harness_wait_log(&d, "nothing more may be deleted", 1) ==
			  0,
		      "%s", harness_error());
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 35);
	close(fd);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 35);
	harness_cleanup(&d);
}
END_TEST

/*
 * A flood of SITE records under a small size retention: sites are stored
 * once per (file, line, function), the flood's go once their processes
 * have, the findings all stay, and retention says what it deleted.
 */
START_TEST(test_site_flood_under_size_retention)
{
	static const char *const naming[] = {"records", "requests", "tags",
					     "leaks", "request_stats"};
	struct harness_daemon d;
	char limit[32], under[200];
	int64_t sites_once;

	snprintf(limit, sizeof limit, ",%d", RETAIN_BYTES);
	START(&d, "--retention", limit);
	/* The same code in five processes: its sites are stored once. */
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
					harness_worked_example, NULL),
			 0);
	ck_assert_msg(harness_wait_int(&d, "SELECT count(*) FROM leaks", 7) ==
			  0,
		      "%s", harness_error());
	sites_once = query_int(&d, "SELECT count(*) FROM sites");
	ck_assert_int_gt(sites_once, 0);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD,
						harness_worked_example, NULL),
				 0);
	ck_assert_msg(harness_wait_int(&d, "SELECT count(*) FROM leaks", 35) ==
			  0,
		      "%s", harness_error());
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM sites"),
			 sites_once);
	for (int i = 0; i < FLOODERS; i++)
		flood_sites(&d, i);
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT count(*) FROM processes WHERE "
				       "app = 'raw' AND disconnected_at IS "
				       "NOT NULL",
				       FLOODERS) == 0,
		      "%s", harness_error());
	snprintf(under, sizeof under,
		 "SELECT ((SELECT page_count FROM pragma_page_count) - "
		 "(SELECT freelist_count FROM pragma_freelist_count)) * "
		 "(SELECT page_size FROM pragma_page_size) <= %d",
		 RETAIN_BYTES);
	ck_assert_msg(harness_wait_int(&d, under, 1) == 0, "%s",
		      harness_error());
	ck_assert_msg(harness_wait_log(&d, "retention by size deleted", 1) ==
			  0,
		      "%s", harness_error());
	ck_assert_int_eq(harness_stop(&d), 0);
	{
		char *log = harness_log(&d);
		char *line = strstr(log, "retention by size deleted");

		ck_assert_msg(line != NULL && strstr(line, " sites") != NULL,
			      "%s", log);
		free(log);
	}
	/* Every finding stayed, and every site a row names. */
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 35);
	for (size_t i = 0; i < sizeof naming / sizeof naming[0]; i++)
		ck_assert_msg(query_int(&d,
					"SELECT count(*) FROM %s WHERE site_id "
					"NOT IN (SELECT id FROM sites)",
					naming[i]) == 0,
			      "%s names a deleted site", naming[i]);
	ck_assert_int_gt(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "site_id IS NOT NULL"),
			 0);
	/* The flood's sites are bounded by the limit: 40,000 rows of some
	 * 200 bytes are 8 MB, four times the limit. */
	ck_assert_int_lt(query_int(&d, "SELECT count(*) FROM sites"),
			 FLOODERS * FLOOD_SITES / 4);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------ SIGTERM under load */

#define LOAD_CLIENTS 8

/* The bytes the daemon consumed from pid's connection, from its debug
 * log ("pid N: disconnected after B bytes"); -1 when not logged. */
static long long bytes_read_from(const char *log, pid_t pid)
{
	char needle[64];
	const char *p;
	long long bytes = -1;

	snprintf(needle, sizeof needle, "pid %d: disconnected after ",
		 (int)pid);
	if ((p = strstr(log, needle)) != NULL)
		bytes = strtoll(p + strlen(needle), NULL, 10);
	return bytes;
}

/*
 * Eight clients emit while the daemon is stopped with SIGTERM.  Measured,
 * per client: what it produced and dropped, what reached the daemon
 * (processes.records) and what is stored (records rows, with --keep=all),
 * and the bytes the kernel took from it against the bytes the daemon
 * consumed.  Asserted: the daemon stores every record it received, and
 * every record produced is either stored or counted as dropped by the
 * client: the drain loses nothing the kernel took.
 */
START_TEST(test_sigterm_under_load)
{
	struct harness_daemon d;
	struct emitters *load = emitters_new(LOAD_CLIENTS, 1000, 0);
	pid_t pid[LOAD_CLIENTS];
	int64_t received, stored;
	char *log;

	START(&d, "--keep", "all", "--log-level", "debug");
	for (int i = 0; i < LOAD_CLIENTS; i++)
		pid[i] = emitters_spawn(&d, load, i, CTXLEAK_BACKEND_THREAD);
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT count(*) FROM records r JOIN "
				       "processes p ON p.id = r.process_id "
				       "GROUP BY p.id ORDER BY count(*) "
				       "LIMIT 1",
				       100) == 0 &&
			  harness_wait_int(&d, "SELECT count(*) FROM processes",
					   LOAD_CLIENTS) == 0,
		      "%s", harness_error());
	ck_assert_int_eq(harness_stop(&d), 0);
	load->stop = 1;
	for (int i = 0; i < LOAD_CLIENTS; i++)
		ck_assert_int_eq(harness_client_wait(pid[i]), 0);
	log = harness_log(&d);
	printf("SIGTERM under load: pid, produced, dropped, received, stored, "
	       "lost; bytes the kernel took, bytes the daemon read\n");
	for (int i = 0; i < LOAD_CLIENTS; i++) {
		struct emitter *sl = &load->e[i];

		received = emitter_process(&d, sl, "records");
		stored = emitter_stored(&d, sl);
		printf("  %d: %llu, %llu, %lld, %lld, %lld; %llu, %lld\n",
		       (int)sl->pid, (unsigned long long)sl->produced,
		       (unsigned long long)sl->st.dropped, (long long)received,
		       (long long)stored,
		       (long long)(sl->produced - sl->st.dropped -
				   (uint64_t)stored),
		       (unsigned long long)sl->st.sent_bytes,
		       bytes_read_from(log, sl->pid));
		ck_assert_int_eq(stored, received);
		ck_assert_uint_eq((uint64_t)stored + sl->st.dropped,
				  sl->produced);
	}
	free(log);
	emitters_free(load);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------- modes */

START_TEST(test_socket_and_database_modes)
{
	struct harness_daemon d;
	struct stat st;
	mode_t old = umask(0);

	/* With no umask at all the daemon must still restrict both. */
	START(&d, "--keep", "all");
	umask(old);
	ck_assert_int_eq(stat(d.socket, &st), 0);
	ck_assert_msg(S_ISSOCK(st.st_mode), "%s is not a socket", d.socket);
	ck_assert_uint_eq(st.st_mode & 07777, 0660);
	ck_assert_int_eq(stat(d.db, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0640);
	ck_assert_int_eq(harness_stop(&d), 0);
	harness_cleanup(&d);
}
END_TEST

static Suite *hostile_suite(void)
{
	return check_suite(
	    "hostile",
	    check_tcase(
		"input", 60, test_random_bytes,
		test_truncated_objects_then_close,
		test_partial_record_times_out,
		test_partial_record_dripped_times_out, test_four_gib_prefixes,
		test_huge_arrays_and_deep_nesting, test_wrong_types_and_order,
		test_hello_claims_another_pid,
		test_long_strings_without_watermark,
		test_long_tags_on_open_requests,
		test_long_names_on_open_requests, NULL),
	    check_tcase("storms", 120, test_connection_churn,
			test_thousand_concurrent_connections,
			test_default_limits_take_many_workers,
			test_site_flood_under_size_retention,
			test_held_sites_do_not_empty_the_findings, NULL),
	    check_tcase("modes", 0, test_socket_and_database_modes, NULL),
	    check_tcase("faults", 60, test_sigterm_under_load, NULL), NULL);
}

int main(void)
{
	/* Peers that the daemon hangs up on must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	/* A daemon built with ASan keeps up to 256 MB of freed memory in
	 * quarantine; the RSS bound is about the daemon's memory, not that.
	 * Ignored by a daemon without ASan. */
	setenv("ASAN_OPTIONS", "quarantine_size_mb=8", 0);
	return check_main(hostile_suite(), NULL);
}
