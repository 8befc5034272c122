/*
 * conn.c: one client connection: the peer's credentials, reading and
 * decoding its stream, what is written back to it, its timers, and closing
 * it on EOF or bad input.  What it decodes goes to ingest.c, which turns it
 * into its process's engine input and store rows.
 *
 * Bad input closes this connection only.  What was decoded before it stays
 * with the process and is judged like the records of any disconnect.
 *
 * What is written to a client: the RECEIPT right after its HELLO
 * (PROTOCOL.md, 2.2), and to a version 2 client an ACK after each commit
 * that advanced its process's committed watermark (2.3).  A client that
 * never reads leaves them unread, and closing then makes the kernel report
 * ECONNRESET to our read after the last byte it sent: that is its end of
 * stream, not an error.  An ACK the socket cannot take now waits for the
 * next commit: a later ACK says more.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

/* libevent's bufferevent reads 4 KiB at a time; one large read per wakeup
 * decodes noticeably faster. */
#define READ_CHUNK (64 * 1024)
/* Reads per wakeup before yielding to the other connections. */
#define READS_PER_WAKEUP 16
/* A connection that says nothing holds one of --max-connections slots;
 * the library sends HELLO as soon as it connects. */
#define HELLO_TIMEOUT_SEC 10

struct conn {
	int fd;
	struct event *ev;
	struct event *hello_timer; /* until HELLO */
	struct event *partial_timer; /* while a record is incomplete;
					created on first need */
	uint64_t partial_at; /* stream offset of that record */
	struct proto_decoder *dec;
	struct ucred cred;
	struct ingest *in; /* the path of what it decodes */
	uint64_t acked; /* the watermark of the last ACK sent */
	unsigned char out[PROTO_ACK_SIZE_MAX]; /* the rest of an ACK the
						  socket took part of */
	size_t outlen;
	LIST_ENTRY(conn) entry;
};

static LIST_HEAD(, conn) conns = LIST_HEAD_INITIALIZER(conns);
static unsigned nconns;
static struct conn_stats stats;
static unsigned char read_buf[READ_CHUNK];

unsigned conn_count(void)
{
	return nconns;
}

void conn_stats(struct conn_stats *out)
{
	*out = stats;
}

void conn_count_rejected(void)
{
	stats.rejected++;
}

static void conn_free(struct conn *c, const char *error)
{
	log_debug("pid %d: disconnected after %llu bytes%s", (int)c->cred.pid,
		  (unsigned long long)proto_decoder_offset(c->dec),
		  ingest_process(c->in) == NULL ? " and before HELLO" : "");
	ingest_close(c->in, error, proto_decoder_skipped(c->dec));
	LIST_REMOVE(c, entry);
	nconns--;
	event_free(c->ev);
	if (c->hello_timer != NULL)
		event_free(c->hello_timer);
	if (c->partial_timer != NULL)
		event_free(c->partial_timer);
	close(c->fd);
	proto_decoder_free(c->dec);
	free(c);
}

/* The socket is fresh, so its few bytes fit at once; a client that cannot
 * take them cannot be waited for, so it goes without. */
static void send_receipt(struct conn *c)
{
	unsigned char buf[PROTO_RECEIPT_SIZE_MAX];
	struct proto_receipt r;
	size_t len;
	ssize_t n;

	process_receipt(ingest_process(c->in), &r);
	len = proto_encode_receipt(buf, sizeof buf, &r);
	n = send(c->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n != (ssize_t)len)
		log_info("pid %d: no RECEIPT sent: %s", (int)c->cred.pid,
			 n == -1 ? strerror(errno) : "short write");
}

/* Whatever the socket takes now of out[0..len), the rest kept. */
static void send_out(struct conn *c, const unsigned char *out, size_t len)
{
	ssize_t n = send(c->fd, out, len, MSG_NOSIGNAL | MSG_DONTWAIT);

	if (n < 0)
		n = 0;
	memmove(c->out, out + n, len - (size_t)n);
	c->outlen = len - (size_t)n;
}

static void send_ack(struct conn *c)
{
	unsigned char buf[PROTO_ACK_SIZE_MAX];
	uint64_t w = process_committed(ingest_process(c->in));

	if (c->outlen != 0)
		send_out(c, memcpy(buf, c->out, c->outlen), c->outlen);
	if (c->outlen != 0 || w <= c->acked)
		return;
	send_out(c, buf, proto_encode_ack(buf, sizeof buf, w));
	c->acked = w;
}

void conn_ack_all(void)
{
	struct conn *c;

	LIST_FOREACH(c, &conns, entry)
	if (ingest_acks(c->in))
		send_ack(c);
}

/* Returns 0, or -1 when the connection must close (the reason is in
 * error). */
static int handle_message(struct conn *c, struct proto_msg *msg, char *error,
			  size_t errlen)
{
	if (!msg->is_hello)
		stats.records++;
	switch (ingest_message(c->in, msg)) {
	case INGEST_OK:
		return 0;
	case INGEST_REFUSED:
		snprintf(error, errlen, "HELLO not accepted");
		return -1;
	case INGEST_ATTACHED:
		break;
	}
	event_free(c->hello_timer);
	c->hello_timer = NULL;
	send_receipt(c);
	/* What a daemon before this one committed, at once. */
	if (ingest_acks(c->in))
		send_ack(c);
	return 0;
}

/* Decode every complete message buffered.  Returns 0, or -1 with the
 * reason in error. */
static int decode_all(struct conn *c, char *error, size_t errlen)
{
	struct proto_msg msg;
	enum proto_status st;

	while ((st = proto_decoder_next(c->dec, &msg)) == PROTO_OK)
		if (handle_message(c, &msg, error, errlen) == -1)
			return -1;
	if (st == PROTO_MORE)
		return 0;
	snprintf(error, errlen, "%s", proto_decoder_error(c->dec));
	if (*error == '\0')
		snprintf(error, errlen, "%s", proto_status_name(st));
	return -1;
}

enum read_result { READ_AGAIN, READ_EOF, READ_BAD };

/* Read and decode until the socket is empty, at most max_reads times. */
static enum read_result read_some(struct conn *c, int max_reads, char *error,
				  size_t errlen)
{
	ssize_t n;
	int st;

	for (int i = 0; i < max_reads; i++) {
		n = read(c->fd, read_buf, sizeof read_buf);
		if (n == 0 || (n == -1 && errno == ECONNRESET))
			return READ_EOF;
		if (n == -1) {
			if (errno == EAGAIN || errno == EINTR)
				return READ_AGAIN;
			snprintf(error, errlen, "read: %s", strerror(errno));
			return READ_EOF;
		}
		st = proto_decoder_feed(c->dec, read_buf, (size_t)n);
		if (st == 0 && decode_all(c, error, errlen) == 0)
			continue;
		if (st != 0)
			snprintf(error, errlen, "%s",
				 proto_decoder_error(c->dec));
		return READ_BAD;
	}
	return READ_AGAIN;
}

/* Finish a connection whose stream ended or went bad. */
static void conn_close(struct conn *c, enum read_result how, const char *error)
{
	if (how == READ_BAD) {
		stats.proto_errors++;
		log_warn("pid %d: closing connection: %s", (int)c->cred.pid,
			 error);
		conn_free(c, error);
		return;
	}
	if (*error != '\0')
		log_info("pid %d: %s", (int)c->cred.pid, error);
	conn_free(c, NULL);
}

static void on_partial_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char error[128];

	(void)fd;
	(void)what;
	stats.partial_timeouts++;
	snprintf(error, sizeof error,
		 "a record left incomplete for %llu ms (%zu bytes of it "
		 "came; --partial-timeout)",
		 (unsigned long long)(cfg.partial_timeout / 1000000),
		 proto_decoder_buffered(c->dec));
	conn_close(c, READ_BAD, error);
}

/*
 * A client that sends part of a record and then nothing holds a
 * connection slot and the record's buffer for ever, and delays nothing
 * else: the clock starts when a read leaves a record incomplete, goes on
 * while it stays so, and stops once it is whole.  What came before it has
 * been judged already and stays.
 */
static void watch_partial(struct conn *c)
{
	struct timeval tv;
	uint64_t at = proto_decoder_offset(c->dec);

	if (proto_decoder_buffered(c->dec) == 0 || cfg.partial_timeout == 0) {
		if (c->partial_timer != NULL)
			evtimer_del(c->partial_timer);
		return;
	}
	if (c->partial_timer == NULL) {
		c->partial_timer = evtimer_new(event_get_base(c->ev),
					       on_partial_timeout, c);
		if (c->partial_timer == NULL)
			return; /* unwatched, as before: not worth a close */
	} else if (evtimer_pending(c->partial_timer, NULL) &&
		   at == c->partial_at) {
		return; /* the same record: its clock runs on */
	}
	c->partial_at = at;
	tv.tv_sec = (time_t)(cfg.partial_timeout / 1000000000u);
	tv.tv_usec = (suseconds_t)(cfg.partial_timeout % 1000000000u / 1000);
	evtimer_add(c->partial_timer, &tv);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	char error[512] = "";
	enum read_result r;

	(void)fd;
	(void)what;
	r = read_some(c, READS_PER_WAKEUP, error, sizeof error);
	if (r != READ_AGAIN)
		conn_close(c, r, error);
	else
		watch_partial(c);
}

static void on_hello_timeout(evutil_socket_t fd, short what, void *arg)
{
	char error[64];

	(void)fd;
	(void)what;
	snprintf(error, sizeof error, "no HELLO within %d s",
		 HELLO_TIMEOUT_SEC);
	conn_close(arg, READ_BAD, error);
}

void conn_accept(struct event_base *base, int fd)
{
	const struct timeval hello_timeout = {HELLO_TIMEOUT_SEC, 0};
	socklen_t len = sizeof(struct ucred);
	struct conn *c = calloc(1, sizeof *c);

	if (c == NULL) {
		log_error("out of memory: connection refused");
		close(fd);
		return;
	}
	c->fd = fd;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c->cred, &len) == -1)
		log_warn("SO_PEERCRED: %s", strerror(errno));
	c->dec = proto_decoder_new(&cfg.limits);
	c->in = ingest_open(&c->cred);
	c->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
	c->hello_timer = evtimer_new(base, on_hello_timeout, c);
	if (c->dec == NULL || c->in == NULL || c->ev == NULL ||
	    c->hello_timer == NULL ||
	    event_add(c->ev, NULL) == -1 ||
	    evtimer_add(c->hello_timer, &hello_timeout) == -1) {
		log_error("out of memory: connection refused");
		if (c->ev != NULL)
			event_free(c->ev);
		if (c->hello_timer != NULL)
			event_free(c->hello_timer);
		proto_decoder_free(c->dec);
		ingest_close(c->in, NULL, 0);
		close(fd);
		free(c);
		return;
	}
	LIST_INSERT_HEAD(&conns, c, entry);
	nconns++;
	stats.accepted++;
	log_debug("pid %d: connected (%u open)", (int)c->cred.pid, nconns);
}

/*
 * Everything the kernel took from this client, and nothing it will take
 * later.  On Linux, once the reader of an AF_UNIX stream socket has shut
 * it down for reading, the peer's send() fails with EPIPE while the bytes
 * already queued stay readable and then read() returns 0.  Without it, a
 * batch written between our last read and close() would be accepted by
 * the kernel and lost; with it, the client keeps that batch and counts it.
 */
static enum read_result read_to_end(struct conn *c, char *error, size_t errlen)
{
	enum read_result r;
	int avail;

	if (shutdown(c->fd, SHUT_RD) == 0) {
		while ((r = read_some(c, READS_PER_WAKEUP, error, errlen)) ==
		       READ_AGAIN)
			;
		return r;
	}
	log_warn("pid %d: shutdown: %s", (int)c->cred.pid, strerror(errno));
	/* Peers may keep writing: read what the kernel holds now only, so
	 * that the drain ends. */
	if (ioctl(c->fd, FIONREAD, &avail) == -1)
		avail = 0;
	r = read_some(c, avail / READ_CHUNK + 2, error, errlen);
	return r == READ_AGAIN ? READ_EOF : r;
}

void conn_drain_all(void)
{
	struct conn *c;
	char error[512];

	while ((c = LIST_FIRST(&conns)) != NULL) {
		error[0] = '\0';
		conn_close(c, read_to_end(c, error, sizeof error), error);
	}
}

/* Each client of version 2 then keeps nothing for the next daemon to find
 * again: what it sent is read, judged, committed and acknowledged. */
void conn_drain_final(void)
{
	struct conn *c, *next;
	enum read_result r;
	char error[512];

	for (c = LIST_FIRST(&conns); c != NULL; c = next) {
		next = LIST_NEXT(c, entry);
		error[0] = '\0';
		r = read_to_end(c, error, sizeof error);
		if (r == READ_BAD || *error != '\0')
			conn_close(c, r, error);
	}
	process_judge_connected();
	conn_drain_all();
}
