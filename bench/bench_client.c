/*
 * bench_client.c: what one ctxleak_event costs the host thread, against
 * the baselines of the same run:
 *
 *   send     one send() per event of the same encoded bytes (what a
 *            naive client would do);
 *   encode   reading the clock and proto_encode_record into a buffer
 *            (the least any client must do);
 *   disabled ctxleak_event before ctxleak_init.
 *
 * And what a scope costs: ctxleak_begin + ctxleak_end on one thread (the
 * common case: two records, the saved pair remembered and restored
 * through the process-wide table), measured against events of the same
 * run.
 *
 * The library is connected to a reader thread that drains its socket, as
 * the daemon would.  Targets: ctxleak_event at least 20x cheaper than
 * send, within 1.2x of encode, disabled at most 2 ns, and a begin/end
 * pair at most 3 events.  Prints the figures and exits 0: it is a
 * measurement, not a test.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ctxleak.h"
#include "proto.h"

#define NAME	"req.done"
#define MESSAGE "ok"

/* The calling thread's CPU time: the machine is shared, and time spent
 * descheduled is no cost of the code measured.  It includes the kernel's
 * time in send(). */
static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------- the reader */

struct reader {
	char dir[64], path[108];
	int lfd;
	pthread_t thread;
};

/* Writes all of buf, or gives up on the connection. */
static void reply(int fd, const void *buf, size_t len)
{
	if (send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len)
		abort();
}

/*
 * Accepts connections one after the other and reads them as the daemon
 * would, at no cost to the measured thread: a RECEIPT after the HELLO and
 * an ACK of every WATERMARK (PROTOCOL.md 2.2, 2.3), so that the library
 * frees what it sent, as it does with a daemon that commits at once.
 * Without the ACKs it would keep every record sent and, once its budget
 * is full, measure the path that drops them.
 */
static void *drain(void *arg)
{
	struct reader *r = arg;
	static char buf[1 << 16];
	unsigned char out[PROTO_RECEIPT_SIZE_MAX + PROTO_ACK_SIZE_MAX];
	struct proto_receipt none = {0, 0};
	struct proto_decoder *dec;
	struct proto_msg m;
	ssize_t n;
	int fd;

	while ((fd = accept(r->lfd, NULL, NULL)) >= 0) {
		if (!(dec = proto_decoder_new(NULL)))
			abort();
		while ((n = read(fd, buf, sizeof(buf))) > 0) {
			proto_decoder_feed(dec, buf, (size_t)n);
			while (proto_decoder_next(dec, &m) == PROTO_OK) {
				if (m.is_hello)
					reply(fd, out,
					      proto_encode_receipt(
						  out, sizeof(out), &none));
				else if (m.rec.type == PROTO_WATERMARK)
					reply(fd, out,
					      proto_encode_ack(out, sizeof(out),
							       m.rec.ts));
			}
		}
		proto_decoder_free(dec);
		close(fd);
	}
	return NULL;
}

static void reader_start(struct reader *r)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	strcpy(r->dir, "/tmp/ctxleak-bench-XXXXXX");
	if (!mkdtemp(r->dir))
		abort();
	snprintf(r->path, sizeof(r->path), "%s/s", r->dir);
	strcpy(sa.sun_path, r->path);
	r->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (r->lfd < 0 || bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(r->lfd, 4) || pthread_create(&r->thread, NULL, drain, r))
		abort();
}

static int reader_connect(const struct reader *r)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, r->path);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)))
		abort();
	return fd;
}

/* ------------------------------------------------------------ baselines */

static struct proto_record sample(void)
{
	return (struct proto_record){
	    .type = PROTO_EVENT,
	    .tid = (uint64_t)gettid(),
	    .ctx = 0x8badf00ddeadbeefu,
	    .cause = 0x8badf00ddeadbeefu,
	    .site = 7,
	    .name = {NAME, sizeof(NAME) - 1},
	    .message = {MESSAGE, sizeof(MESSAGE) - 1},
	};
}

static double bench_send(const struct reader *r, int n)
{
	unsigned char buf[256];
	struct proto_record rec = sample();
	int fd = reader_connect(r);
	double t0;
	size_t len;

	t0 = now_ns();
	for (int i = 0; i < n; i++) {
		rec.ts = mono_ns();
		len = proto_encode_record(buf, sizeof(buf), &rec);
		if (send(fd, buf, len, MSG_NOSIGNAL) != (ssize_t)len)
			abort();
	}
	t0 = (now_ns() - t0) / n;
	close(fd);
	return t0;
}

static double bench_encode(int n)
{
	static unsigned char buf[1 << 20];
	struct proto_record rec = sample();
	size_t pos = 0, len;
	double t0;

	t0 = now_ns();
	for (int i = 0; i < n; i++) {
		rec.ts = mono_ns();
		len = proto_encode_record(buf + pos, sizeof(buf) - pos, &rec);
		if (!len) {
			pos = 0;
			len = proto_encode_record(buf, sizeof(buf), &rec);
		}
		pos += len;
	}
	/* Keeps the buffer observable, so the stores are not elided. */
	if (buf[0] == 0x42 && pos == 1)
		puts("");
	return (now_ns() - t0) / n;
}

static double bench_events(int n)
{
	double t0 = now_ns();

	for (int i = 0; i < n; i++)
		ctxleak_event(NAME, MESSAGE);
	return (now_ns() - t0) / n;
}

/* A scope begun and ended on this thread, under the open request. */
static double bench_pairs(int n)
{
	double t0 = now_ns();

	for (int i = 0; i < n; i++)
		ctxleak_end(ctxleak_begin_child(NAME));
	return (now_ns() - t0) / n;
}

/* Waits until the shipper has sent everything, so that each run starts
 * with empty buffers and measures the path that keeps its records. */
static void drained(void)
{
	struct ctxleak_stats st;
	uint64_t last = 0;

	/* Beyond a watermark or two, nothing more went out. */
	for (;;) {
		ctxleak_flush();
		ctxleak_stats(&st);
		if (st.sent_bytes - last < 256)
			return;
		last = st.sent_bytes;
		usleep(20000);
	}
}

/* The best of a few runs: the machine is shared, the minimum is the
 * cost without interference. */
#define BEST(runs, expr)                                                       \
	({                                                                     \
		double best_ = 1e30, v_;                                       \
		for (int r_ = 0; r_ < (runs); r_++)                            \
			if ((v_ = (expr)) < best_)                             \
				best_ = v_;                                    \
		best_;                                                         \
	})

int main(void)
{
	struct reader rd;
	struct ctxleak_options o;
	struct ctxleak_stats st;
	double disabled, encode, send_each, event, pair;
	uint64_t ctx;

	reader_start(&rd);
	disabled = BEST(5, bench_events(20000000));
	encode = BEST(5, bench_encode(2000000));
	send_each = BEST(3, bench_send(&rd, 200000));

	ctxleak_options_init(&o);
	o.socket_path = rd.path;
	o.backend = CTXLEAK_BACKEND_THREAD;
	o.buffer_limit = 64u << 20;
	if (ctxleak_init(&o))
		abort();
	ctx = ctxleak_begin("bench");
	bench_events(100000); /* the first chunks and the site */
	event = BEST(5, (drained(), bench_events(1000000)));
	bench_pairs(100000);
	pair = BEST(5, (drained(), bench_pairs(500000)));
	ctxleak_end(ctx);
	ctxleak_flush();
	ctxleak_stats(&st);
	ctxleak_shutdown();

	printf("ctxleak_event, connected    %7.1f ns\n", event);
	printf("one send() per event        %7.1f ns\n", send_each);
	printf("clock + encode alone        %7.1f ns\n", encode);
	printf("ctxleak_event, disabled     %7.2f ns\n", disabled);
	printf("begin + end, one thread     %7.1f ns\n", pair);
	printf("send / event    %6.1fx  (target >= 20x)  %s\n",
	       send_each / event, send_each / event >= 20 ? "met" : "MISSED");
	printf("event / encode  %6.2fx  (target <= 1.2x) %s\n", event / encode,
	       event / encode <= 1.2 ? "met" : "MISSED");
	printf("pair / event    %6.2fx  (target <= 3x)   %s\n", pair / event,
	       pair / event <= 3 ? "met" : "MISSED");
	printf("disabled        %6.2f ns (target <= 2 ns) %s\n", disabled,
	       disabled <= 2 ? "met" : "MISSED");
	printf("records %llu, dropped %llu, sent %llu bytes\n",
	       (unsigned long long)st.records, (unsigned long long)st.dropped,
	       (unsigned long long)st.sent_bytes);
	close(rd.lfd);
	unlink(rd.path);
	rmdir(rd.dir);
	return 0;
}
