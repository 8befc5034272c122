/*
 * ship.c: the connection to ctxleakd and the background thread
 * ("ctxleak-ship") that drains every thread's buffer into it.
 *
 * What goes out on a connection: HELLO and every SITE registered so far;
 * then batches, each made of the SITEs registered since, a DROPPED record
 * when records were dropped, every thread's records, and a WATERMARK.
 * The socket is non-blocking and sent to with MSG_NOSIGNAL: the host's
 * threads never wait for the daemon and never get SIGPIPE.  While there is
 * no daemon the records stay in the thread buffers, under their limit.
 *
 * Nothing the kernel took is known to be stored: a daemon killed before
 * its next commit loses it.  So a batch's records, once sent, are kept
 * (SEG_KEPT) until the daemon's ACK says they are committed: it names a
 * watermark, and the kept records are freed from the first up to the first
 * one of a later ts (PROTOCOL.md 2.3).  Only then do their bytes go back
 * to the budget, so buffer_limit bounds the kept records too.  After a
 * reconnection everything kept goes out again, then the rest of a batch
 * that a broken connection cut; the HELLO's seq says at which position of
 * the stream the first of them is, and the daemon drops what it has.  A
 * connection that closes before its RECEIPT was refused (over the
 * daemon's connection limit, say): it held nothing, and the next one
 * comes after a backoff.
 *
 * Right after each HELLO the daemon says, once, what it holds of this
 * process from before the connection (its RECEIPT).  Of it the shipper
 * uses the drops: DROPPED counts a daemon crash lost go out again, so that
 * for every process the records stored plus the drops reported make the
 * records produced.  The RECEIPT is also what shows a daemon: until it
 * came, whatever listens on the socket may be anything (a daemon that
 * refuses, a stale program that writes junk and hangs up), so nothing
 * the peer does counts as progress, no ACK is believed, and nothing sent
 * counts as taken.  Shutting down, the shipper waits, within STOP_STALL
 * of the last progress, for the ACK of its final batch; what stays
 * unacknowledged then and no live daemon took is counted as dropped
 * (count_unsent).
 *
 * The watermark W promises that every record of this process with
 * ts <= W has been sent.  A thread sets its buffer's `busy` before it
 * reads the clock and clears it after publishing.  The shipper reads
 * T = now, then fences every thread (membarrier), then collects (both in
 * cl_buf_collect_all).  A record with ts < T had its busy store made before T
 * was read, so after the fence the shipper sees either busy (and then lowers W
 * below that thread's last published ts, since the record in flight may
 * be as old as that) or the record itself.  So W = min(T - 1, each busy
 * thread's last ts - 1).  Only the threads pay nothing but a plain store.
 */
#include <errno.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define MS	    1000000ull
#define BACKOFF_MIN (10 * MS)
#define BACKOFF_MAX (1000 * MS)
/* At shutdown and exit, the longest the daemon may take no byte (or stay
 * away) before the rest is given up and counted as dropped. */
#define STOP_STALL   (1000 * MS)
#define WAKE_MIN_GAP (1 * MS) /* between flushes woken by request ends */
/* After a failed send, how long the connection is still read: a daemon
 * that stops in order stops reading first, then acknowledges what it
 * read, then closes. */
#define SEND_DEAD_WAIT (1000 * MS)

/* The parts of what goes out, in order.  Each is sent from off to len.
 * SEG_KEPT holds what was sent and is not acknowledged yet: its off is at
 * its end, but for a new connection, which sends it all again. */
enum { SEG_HELLO, SEG_SITES, SEG_KEPT, SEG_DROPPED, SEG_RECORDS, NSEG };

struct seg {
	struct proto_bytes b;
	size_t off;
};

static struct {
	pthread_t thread;
	_Atomic int stop;
	int wake_fd;
	/* Held by the shipper except while it sleeps, so that fork()
	 * finds its state whole. */
	pthread_mutex_t mu;

	pthread_mutex_t flush_mu;
	pthread_cond_t flush_cond;
	uint64_t flush_req, flush_done; /* under flush_mu */

	/* The shipper's own. */
	int fd;
	struct seg seg[NSEG];
	uint64_t drops, drop_since; /* collected, not yet encoded */
	unsigned conn_sites;
	uint64_t backoff, next_connect, next_flush, last_batch, last_wm;
	uint64_t stop_at, last_progress;
	int final_collected;
	uint64_t send_dead; /* when a send failed (0: none): the connection
			       is only read, until it ends or SEND_DEAD_WAIT */
	/* The last connection closed before its RECEIPT: the next one waits
	 * for the backoff, shutting down too (a peer that accepts and hangs
	 * up at once would be called again and again). */
	int refused;
	int outq; /* bytes sent that the daemon had not read, when last
		     looked at (SIOCOUTQ) */

	uint64_t kept_pos;     /* stream position of SEG_KEPT's first record */
	uint64_t kept_records; /* records in SEG_KEPT (watermarks aside) */
	/* The counts of whole DROPPED records the kernel took for the
	 * daemon, less what receipts showed lost. */
	uint64_t drops_handed;
	uint64_t seg_drops; /* the count of the DROPPED in SEG_DROPPED */
	/* The earliest `since` of those handed and not yet confirmed by a
	 * receipt, on earlier connections and on this one. */
	uint64_t since_old, since_conn;
	/* This connection's RECEIPT: the drops the daemon should hold from
	 * before it, and whether it came. */
	struct {
		uint64_t drops, since;
		int due;
	} receipt;
	/* What the daemon said that is not parsed yet. */
	unsigned char in[64];
	size_t in_len;

	_Atomic uint64_t sent_bytes, connects;
	_Atomic int connected; /* a daemon has the connection now */
	int said_unreachable;  /* the one line on stderr was written */
} ship = {
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .flush_mu = PTHREAD_MUTEX_INITIALIZER,
    .flush_cond = PTHREAD_COND_INITIALIZER,
    .fd = -1,
    .wake_fd = -1,
};

static _Atomic int wake_pending;
static _Atomic uint64_t unsent; /* records shutdown gave up on */
/* The settings of ctxleak_init, kept for the child of a fork. */
static struct cl_config config;
static uint64_t instance; /* HELLO's: random per process */

/* ------------------------------------------------------- connection */

static void seg_clear(struct seg *s)
{
	s->b.len = s->off = 0;
}

static void note_drops(uint64_t n, uint64_t since)
{
	if (n && (!ship.drops || since < ship.drop_since))
		ship.drop_since = since;
	ship.drops += n;
}

/* SEG_DROPPED went out whole. */
static void count_drops_handed(void)
{
	ship.drops_handed += ship.seg_drops;
	ship.seg_drops = 0;
}

/* A send failed: the daemon may still acknowledge what it read. */
static void send_failed(uint64_t now)
{
	ship.send_dead = now;
}

static int all_sent(void)
{
	for (int i = 0; i < NSEG; i++)
		if (ship.seg[i].off < ship.seg[i].b.len)
			return 0;
	return 1;
}

static void schedule_retry(uint64_t now)
{
	ship.next_connect = now + ship.backoff;
	ship.backoff =
	    ship.backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : ship.backoff * 2;
}

static void disconnect(uint64_t now)
{
	struct seg *dropped = &ship.seg[SEG_DROPPED];

	close(ship.fd);
	ship.fd = -1;
	ship.send_dead = 0;
	atomic_store(&ship.connected, 0);
	ship.refused = ship.receipt.due;
	ship.receipt.due = 0;
	ship.in_len = 0;
	/* The next connection starts with its own HELLO and all SITEs, and
	 * sends again everything not acknowledged. */
	seg_clear(&ship.seg[SEG_HELLO]);
	seg_clear(&ship.seg[SEG_SITES]);
	if (dropped->off == dropped->b.len) {
		count_drops_handed();
		seg_clear(dropped);
	}
	dropped->off = 0;
	ship.seg[SEG_KEPT].off = 0;
	ship.seg[SEG_RECORDS].off = 0;
	schedule_retry(now);
}

/* ------------------------------------------------- receipt and acks */

/* A new connection: the drops the daemon should say it holds. */
static void expect_receipt(void)
{
	if (ship.since_conn < ship.since_old)
		ship.since_old = ship.since_conn;
	ship.since_conn = UINT64_MAX;
	ship.receipt.drops = ship.drops_handed;
	ship.receipt.since = ship.since_old;
	ship.receipt.due = 1;
	ship.in_len = 0;
}

/* DROPPED counts the daemon lacks died with it: they go out again.  The
 * daemon took the connection: reconnections are quick again, and a
 * daemon is there, which is progress for a shutdown that waited for
 * one. */
static void take_receipt(const struct proto_receipt *r)
{
	uint64_t want = ship.receipt.drops, since = ship.receipt.since;
	uint64_t drops = r->dropped < want ? want - r->dropped : 0;

	ship.receipt.due = 0;
	ship.drops_handed -= drops;
	note_drops(drops, since != UINT64_MAX ? since : cl_now());
	ship.since_old = UINT64_MAX;
	ship.backoff = BACKOFF_MIN;
	ship.last_progress = cl_now();
}

/* A daemon took this connection (its RECEIPT came). */
static int daemon_took(void)
{
	return ship.fd >= 0 && !ship.receipt.due;
}

/* Every record of ts <= w is committed: the kept records are freed from
 * the first up to the first of a later ts (the watermarks among them
 * with them), and their bytes go back to the budget.  Being sent again,
 * they are freed only as far as they went out whole: the rest of a
 * record begun on the connection must follow its start. */
static void take_ack(uint64_t w)
{
	struct seg *k = &ship.seg[SEG_KEPT];
	size_t pos = 0, n, credit = 0;
	uint64_t records = 0;

	while ((n = proto_frame_size(k->b.p + pos, k->b.len - pos)) &&
	       pos + n <= k->off) {
		if (!proto_frame_is_mark(k->b.p + pos, n)) {
			if (proto_frame_ts(k->b.p + pos, n) > w)
				break;
			records++;
			credit += n;
		}
		pos += n;
	}
	if (pos == 0)
		return;
	memmove(k->b.p, k->b.p + pos, k->b.len - pos);
	k->b.len -= pos;
	k->off -= pos;
	ship.kept_pos += records;
	ship.kept_records -= records;
	cl_buf_give_back(credit);
	ship.last_progress = cl_now();
}

/* What the daemon said: a RECEIPT, then ACKs.  Anything else is
 * discarded, an ACK before the RECEIPT too: no daemon sends one, and
 * junk read as one would free records that nothing stored. */
static void read_replies(void)
{
	struct proto_reply r;
	size_t pos = 0;
	int64_t n;

	while ((n = proto_parse_reply(ship.in + pos, ship.in_len - pos, &r)) >
	       0) {
		pos += (size_t)n;
		if (r.kind == PROTO_MSG_RECEIPT && ship.receipt.due)
			take_receipt(&r.receipt);
		else if (r.kind == PROTO_MSG_ACK && !ship.receipt.due)
			take_ack(r.watermark);
	}
	if (n < 0 || (pos == 0 && ship.in_len == sizeof(ship.in)))
		pos = ship.in_len;
	memmove(ship.in, ship.in + pos, ship.in_len - pos);
	ship.in_len -= pos;
}

/* Reads what the daemon said; returns whether the connection is gone. */
static int peer_closed(void)
{
	ssize_t n = recv(ship.fd, ship.in + ship.in_len,
			 sizeof(ship.in) - ship.in_len, MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return 1;
	if (n > 0) {
		ship.in_len += (size_t)n;
		read_replies();
	}
	return 0;
}

static int64_t clock_offset(void)
{
	struct timespec rt, mono;

	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	return (int64_t)(rt.tv_sec - mono.tv_sec) * 1000000000 +
	       (rt.tv_nsec - mono.tv_nsec);
}

static struct proto_str pstr(const char *s)
{
	return (struct proto_str){s, (uint32_t)strlen(s)};
}

static int encode_hello(struct proto_bytes *out)
{
	struct proto_hello h = {
	    .version = PROTO_VERSION,
	    .instance = instance,
	    .pid = (uint32_t)getpid(),
	    .app = pstr(config.app),
	    .backend = pstr(cl_backend_str(cl_backend)),
	    .reason = pstr(config.reason),
	    .clock_offset = clock_offset(),
	    .client = pstr("libctxleak " CTXLEAK_VERSION_STRING),
	    .has_seq = 1,
	    .seq = ship.kept_pos,
	};

	if (proto_bytes_reserve(out, 1024))
		return -1;
	out->len +=
	    proto_encode_hello(out->p + out->len, out->cap - out->len, &h);
	return 0;
}

/* A worker whose records go nowhere says so, once, unless told not to:
 * a silent library looked like a clean service. */
static void say_unreachable(int err)
{
	const char *quiet = getenv("CTXLEAK_QUIET");

	if (ship.said_unreachable || (quiet && !strcmp(quiet, "1")))
		return;
	ship.said_unreachable = 1;
	fprintf(stderr,
		"ctxleak: no daemon at %s (%s); records are kept, up to %zu "
		"bytes, until one listens (CTXLEAK_QUIET=1 silences this)\n",
		config.socket_path, strerror(err), config.buffer_limit);
}

static void connect_daemon(uint64_t now)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct proto_bytes *hello = &ship.seg[SEG_HELLO].b;

	memcpy(sa.sun_path, config.socket_path, strlen(config.socket_path));
	ship.fd =
	    socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (ship.fd < 0 ||
	    connect(ship.fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    encode_hello(hello)) {
		if (atomic_load(&ship.connects) == 0)
			say_unreachable(errno);
		if (ship.fd >= 0)
			close(ship.fd);
		ship.fd = -1;
		seg_clear(&ship.seg[SEG_HELLO]);
		schedule_retry(now);
		return;
	}
	ship.conn_sites = cl_site_encode(hello, 0);
	atomic_fetch_add(&ship.connects, 1);
	atomic_store(&ship.connected, 1);
	expect_receipt();
}

/* SEG_RECORDS, sent, joins SEG_KEPT; -1 when memory lacks (it is then
 * sent again with the next batch's records, after SEG_KEPT). */
static int keep_sent(void)
{
	struct seg *k = &ship.seg[SEG_KEPT], *r = &ship.seg[SEG_RECORDS];

	if (!r->b.len)
		return 0;
	if (proto_bytes_reserve(&k->b, r->b.len))
		return -1;
	memcpy(k->b.p + k->b.len, r->b.p, r->b.len);
	k->b.len += r->b.len;
	k->off = k->b.len;
	ship.kept_records += proto_frame_count(r->b.p, r->b.len);
	seg_clear(r);
	return 0;
}

/* Sends what it can; 0, or -1 when the connection broke. */
static int send_pending(void)
{
	struct seg *s;
	ssize_t n;

	for (int i = 0; i < NSEG; i++) {
		s = &ship.seg[i];
		while (s->off < s->b.len) {
			n = send(ship.fd, s->b.p + s->off, s->b.len - s->off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return errno == EAGAIN ? 0 : -1;
			s->off += (size_t)n;
			if (daemon_took())
				ship.last_progress = cl_now();
			atomic_fetch_add_explicit(&ship.sent_bytes, (uint64_t)n,
						  memory_order_relaxed);
		}
	}
	/* The whole batch is out: its records are kept until acknowledged,
	 * their bytes still in the budget's account. */
	if (keep_sent())
		return 0;
	count_drops_handed();
	seg_clear(&ship.seg[SEG_SITES]);
	seg_clear(&ship.seg[SEG_DROPPED]);
	return 0;
}

/* ------------------------------------------------------------ batch */

/* Takes every thread's published records into SEG_RECORDS; returns W. */
static uint64_t collect(int *complete)
{
	return cl_buf_collect_all(&ship.seg[SEG_RECORDS].b, complete,
				  note_drops);
}

static void build_batch(uint64_t now)
{
	struct proto_record r = {0};
	uint64_t w;
	int complete = 1;
	/* Read before collecting: a stop that comes while collect() runs
	 * may follow records it did not see, so this batch is not the
	 * final one then. */
	int stopping = atomic_load(&ship.stop);

	atomic_store(&wake_pending, 0);
	w = collect(&complete);
	/* After the records: a record is only encoded once its site is
	 * registered, so every site they name is in the table now. */
	ship.conn_sites =
	    cl_site_encode(&ship.seg[SEG_SITES].b, ship.conn_sites);
	if (ship.drops) {
		r.type = PROTO_DROPPED;
		r.ts = now;
		r.count = ship.drops;
		r.since = ship.drop_since;
		if (!proto_bytes_record(&ship.seg[SEG_DROPPED].b, &r)) {
			ship.seg_drops += ship.drops;
			ship.drops = 0;
			if (r.since < ship.since_conn)
				ship.since_conn = r.since;
		}
	}
	if (complete && w > ship.last_wm) {
		r = (struct proto_record){.type = PROTO_WATERMARK, .ts = w};
		if (!proto_bytes_record(&ship.seg[SEG_RECORDS].b, &r))
			ship.last_wm = w;
	}
	/* The first batch of a shutdown says so (CLOSE): a process that
	 * ends without one vanished, and the daemon cannot vouch for what
	 * it still held.  What follows it (threads inside a call then) is
	 * still taken; kept and sent again like a record, it reaches a
	 * restarted daemon too. */
	if (stopping && !ship.final_collected) {
		r = (struct proto_record){.type = PROTO_CLOSE, .ts = now};
		proto_bytes_record(&ship.seg[SEG_RECORDS].b, &r);
	}
	ship.last_batch = now;
	ship.next_flush = now + config.flush_interval_ms * MS;
	if (stopping)
		ship.final_collected = 1;
}

/* ------------------------------------------------------------ thread */

static uint64_t flush_requested(void)
{
	uint64_t req;

	pthread_mutex_lock(&ship.flush_mu);
	req = ship.flush_req;
	pthread_mutex_unlock(&ship.flush_mu);
	return req;
}

static void flush_answer(uint64_t req)
{
	pthread_mutex_lock(&ship.flush_mu);
	if (req > ship.flush_done) {
		ship.flush_done = req;
		pthread_cond_broadcast(&ship.flush_cond);
	}
	pthread_mutex_unlock(&ship.flush_mu);
}

static int batch_due(uint64_t now, uint64_t req)
{
	/* After the final batch, records of threads that were inside a
	 * call when shutdown began, or that exited just then. */
	if (atomic_load(&ship.stop))
		return !ship.final_collected || !cl_buf_all_empty() ||
		       ship.drops;
	if (req > ship.flush_done || now >= ship.next_flush)
		return 1;
	return atomic_load(&wake_pending) &&
	       now >= ship.last_batch + WAKE_MIN_GAP;
}

static int until(uint64_t now, uint64_t when)
{
	return when <= now ? 0 : (int)((when - now + MS - 1) / MS);
}

static int poll_timeout(uint64_t now)
{
	int t = until(now, ship.next_flush);

	if (atomic_load(&ship.stop))
		return 10;
	if (ship.send_dead)
		return until(now, ship.send_dead + SEND_DEAD_WAIT);
	/* No batch is built while the last one is not out, so the batch
	 * deadlines (past due by then) would only spin the thread: only the
	 * socket (POLLOUT, or the daemon closing) or a stop can change
	 * anything. */
	if (ship.fd >= 0 && !all_sent())
		return -1;
	if (ship.fd < 0 && until(now, ship.next_connect) < t)
		t = until(now, ship.next_connect);
	if (atomic_load(&wake_pending) &&
	    until(now, ship.last_batch + WAKE_MIN_GAP) < t)
		t = until(now, ship.last_batch + WAKE_MIN_GAP);
	return t;
}

/* Sleeps until woken, the socket is ready, or the next deadline. */
static void wait_events(uint64_t now)
{
	struct pollfd p[2] = {{.fd = ship.wake_fd, .events = POLLIN},
			      {.fd = ship.fd, .events = POLLIN}};
	uint64_t count;

	if (ship.fd >= 0 && !all_sent() && !ship.send_dead)
		p[1].events |= POLLOUT;
	if (poll(p, ship.fd >= 0 ? 2 : 1, poll_timeout(now)) <= 0)
		return;
	if (p[0].revents & POLLIN && read(ship.wake_fd, &count, 8) < 0)
		return;
	if (ship.fd >= 0 && p[1].revents & (POLLIN | POLLHUP | POLLERR) &&
	    peer_closed())
		disconnect(cl_now());
}

/* One round; returns whether the flush request req has been served. */
static int ship_once(uint64_t now, uint64_t req)
{
	if (ship.send_dead && now >= ship.send_dead + SEND_DEAD_WAIT)
		disconnect(now);
	/* Shutting down, a daemon has only STOP_STALL to appear: no
	 * backoff then, but after a refusal. */
	if (ship.fd < 0 && (now >= ship.next_connect ||
			    (atomic_load(&ship.stop) && !ship.refused)))
		connect_daemon(now);
	if (ship.fd >= 0 && !ship.send_dead && send_pending())
		send_failed(now);
	if (ship.fd < 0 || ship.send_dead)
		return 1; /* nothing can be shipped now */
	if (!all_sent() || !batch_due(now, req))
		return req <= ship.flush_done;
	build_batch(now);
	if (send_pending())
		send_failed(now);
	return 1;
}

/* Shutting down: records sent and not yet acknowledged, or a receipt that
 * may show lost drops. */
static int ack_awaited(void)
{
	return ship.fd >= 0 &&
	       (ship.kept_records || (ship.receipt.due && ship.receipt.drops));
}

/* The daemon reads what the kernel holds for it: that is progress too,
 * the ACK of the last batch comes only once it has read all of it. */
static void note_peer_reading(void)
{
	int n;

	if (ship.fd < 0 || ioctl(ship.fd, SIOCOUTQ, &n) == -1)
		return;
	if (n < ship.outq && daemon_took())
		ship.last_progress = cl_now();
	ship.outq = n;
}

/* Stopping, the shipper waits as long as the daemon takes bytes, reads
 * them or acknowledges them: under load a slow daemon is still a working
 * one. */
static int finished(void)
{
	uint64_t since;

	if (!atomic_load(&ship.stop))
		return 0;
	note_peer_reading();
	if (all_sent() && !ship.drops && cl_buf_all_empty() && !ack_awaited())
		return ship.final_collected || ship.fd < 0;
	since = ship.last_progress > ship.stop_at ? ship.last_progress
						  : ship.stop_at;
	return cl_now() >= since + STOP_STALL;
}

static void *ship_main(void *arg)
{
	uint64_t now, req;

	(void)arg;
	pthread_setname_np(pthread_self(), "ctxleak-ship");
	pthread_mutex_lock(&ship.mu);
	for (;;) {
		now = cl_now();
		req = flush_requested();
		if (ship_once(now, req))
			flush_answer(req);
		if (finished())
			break;
		pthread_mutex_unlock(&ship.mu);
		wait_events(now);
		pthread_mutex_lock(&ship.mu);
	}
	pthread_mutex_unlock(&ship.mu);
	return NULL;
}

static void reset_state(void)
{
	atomic_store(&ship.stop, 0);
	ship.fd = -1;
	ship.drops = ship.drop_since = 0;
	ship.conn_sites = 0;
	ship.backoff = BACKOFF_MIN;
	ship.next_connect = ship.last_batch = ship.last_wm = 0;
	ship.next_flush = cl_now() + config.flush_interval_ms * MS;
	ship.final_collected = 0;
	ship.send_dead = 0;
	ship.refused = 0;
	ship.flush_req = ship.flush_done = 0;
	ship.kept_pos = ship.kept_records = 0;
	ship.drops_handed = ship.seg_drops = 0;
	ship.since_old = ship.since_conn = UINT64_MAX;
	memset(&ship.receipt, 0, sizeof(ship.receipt));
	ship.in_len = 0;
	atomic_store(&ship.sent_bytes, 0);
	atomic_store(&ship.connects, 0);
	atomic_store(&ship.connected, 0);
	ship.said_unreachable = 0;
	atomic_store(&unsent, 0);
	atomic_store(&wake_pending, 0);
	instance = proto_random64();
}

/* The shipper takes no signal meant for the host. */
static int spawn(void)
{
	sigset_t all, old;
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&ship.thread, NULL, ship_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		return CTXLEAK_ESYS;
	cl_buf_consumer_start(cl_ship_wake);
	return CTXLEAK_OK;
}

static int start(void)
{
	int err;

	if (ship.wake_fd < 0)
		ship.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ship.wake_fd < 0)
		return CTXLEAK_ESYS;
	reset_state();
	err = spawn();
	if (err) {
		close(ship.wake_fd);
		ship.wake_fd = -1;
	}
	return err;
}

static void kick(void)
{
	uint64_t one = 1;

	if (write(ship.wake_fd, &one, sizeof(one)) < 0)
		return; /* the counter is full: a wakeup is pending anyway */
}

/* Coalesced: one write per flush, however many requests end before it. */
void cl_ship_wake(void)
{
	if (!atomic_load_explicit(&wake_pending, memory_order_relaxed) &&
	    !atomic_exchange(&wake_pending, 1))
		kick();
}

int cl_ship_flush(void)
{
	struct timespec deadline;
	uint64_t mine;

	pthread_mutex_lock(&ship.flush_mu);
	mine = ++ship.flush_req;
	kick();
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	while (ship.flush_done < mine &&
	       pthread_cond_timedwait(&ship.flush_cond, &ship.flush_mu,
				      &deadline) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&ship.flush_mu);
	return CTXLEAK_OK;
}

/* Frees every byte the shipper owns (the thread is gone). */
static void release_all(void)
{
	if (ship.fd >= 0)
		close(ship.fd);
	ship.fd = -1;
	atomic_store(&ship.connected, 0);
	for (int i = 0; i < NSEG; i++) {
		proto_bytes_free(&ship.seg[i].b);
		ship.seg[i].off = 0;
	}
}

/* Whole records of s that the kernel took on the open connection, once a
 * daemon took it. */
static uint64_t records_taken(const struct seg *s)
{
	return daemon_took() ? proto_frame_count(s->b.p, s->off) : 0;
}

/*
 * The shipper gave up, or records came after its last batch: what no
 * daemon can have is counted as dropped, so that stored + dropped =
 * recorded.  That is every record not yet acknowledged, but for those
 * the kernel took on a connection still open when the shipper gave up,
 * whose RECEIPT came: a live daemon has them, busy as it may be (a
 * thousand clients at once can keep its ACK past the shutdown bound),
 * and counting them too would count them twice.  Should that daemon die
 * before it commits them, its successor reports the window as incomplete
 * (daemon/store_runs.c).  The shipper is gone; its state is ours.
 */
static void count_unsent(void)
{
	struct seg *r = &ship.seg[SEG_RECORDS], *k = &ship.seg[SEG_KEPT];
	int complete = 1;
	uint64_t taken;

	collect(&complete);
	taken = records_taken(k) + records_taken(r);
	atomic_fetch_add(&unsent, ship.kept_records +
				      proto_frame_count(r->b.p, r->b.len) - taken);
}

void cl_ship_stop(void)
{
	ship.stop_at = cl_now();
	atomic_store(&ship.stop, 1);
	kick();
	pthread_join(ship.thread, NULL);
	count_unsent();
	release_all();
	cl_buf_consumer_stop();
}

void cl_ship_fork_prepare(void)
{
	pthread_mutex_lock(&ship.mu);
	pthread_mutex_lock(&ship.flush_mu);
}

void cl_ship_fork_release(void)
{
	pthread_mutex_unlock(&ship.flush_mu);
	pthread_mutex_unlock(&ship.mu);
}

int cl_ship_start(const struct cl_config *c)
{
	config = *c;
	return start();
}

/* In the child: the parent's connection and batch are the parent's. */
int cl_ship_after_fork(void)
{
	release_all();
	close(ship.wake_fd);
	ship.wake_fd = -1;
	return start();
}

/* Adds what shutdown gave up on to the buffers' drops. */
void cl_ship_stats(struct ctxleak_stats *out)
{
	out->dropped += atomic_load(&unsent);
	out->sent_bytes = atomic_load(&ship.sent_bytes);
	out->connects = atomic_load(&ship.connects);
	out->connected = (uint64_t)atomic_load(&ship.connected);
}
