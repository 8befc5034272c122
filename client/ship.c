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
 * A batch cut by a broken connection continues on the next one at the
 * start of the record it broke in (the daemon discards the half it got),
 * after that connection's own HELLO and SITEs.
 *
 * Nothing the kernel took is known to be stored: a daemon killed before
 * its next commit loses it.  So the shipper counts what the kernel took
 * (whole records, and the counts of whole DROPPED records), and right
 * after each HELLO the daemon says, once, what it holds of this process
 * from before the connection (its RECEIPT: records, drops).  What it lacks
 * died with the daemon before it: lost records are counted as dropped,
 * in ctxleak_stats and in a DROPPED record, and lost DROPPED counts go
 * out again, so that for every process the records stored plus the drops
 * reported make the records produced.  Shutting down on a connection whose
 * receipt may show a loss, the shipper waits for it, within STOP_STALL (a
 * daemon older than the RECEIPT never sends one).
 *
 * The watermark W promises that every record of this process with
 * ts <= W has been sent.  A thread sets its buffer's `busy` before it
 * reads the clock and clears it after publishing.  The shipper reads
 * T = now, then fences every thread (cl_buf_fence: membarrier), then
 * collects.  A record with ts < T had its busy store made before T was
 * read, so after the fence the shipper sees either busy (and then lowers W
 * below that thread's last published ts, since the record in flight may
 * be as old as that) or the record itself.  So W = min(T - 1, each busy
 * thread's last ts - 1).  Only the threads pay nothing but a plain store.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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

/* The parts of what goes out, in order.  Each is sent from off to len. */
enum { SEG_HELLO, SEG_SITES, SEG_DROPPED, SEG_RECORDS, NSEG };

struct seg {
	struct cl_bytes b;
	size_t off;
	size_t counted; /* SEG_RECORDS: the records before it are counted
			   in ship.handed */
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
	int64_t credit; /* bytes of SEG_RECORDS to give back to the budget */
	uint64_t drops, drop_since; /* collected, not yet encoded */
	unsigned conn_sites;
	uint64_t backoff, next_connect, next_flush, last_batch, last_wm;
	uint64_t stop_at, last_progress;
	int final_collected;

	/* What the kernel took for the daemon: whole records, and the
	 * counts of whole DROPPED records, less what receipts showed lost. */
	uint64_t handed, drops_handed;
	uint64_t seg_drops; /* the count of the DROPPED in SEG_DROPPED */
	/* The smallest ts handed and not yet confirmed by a receipt, on
	 * earlier connections and on this one: where a loss may start. */
	uint64_t since_old, since_conn;
	/* This connection's RECEIPT: what the daemon should hold from
	 * before it, and the bytes of it read so far. */
	struct {
		uint64_t handed, drops, since;
		int due;
		unsigned char buf[64];
		size_t len;
	} receipt;

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
static _Atomic uint64_t lost;	/* records a daemon crash lost */
uint64_t cl_instance;
int cl_ship_running;

/* ------------------------------------------------------------ bytes */

int cl_bytes_reserve(struct cl_bytes *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 4096;
	unsigned char *grown;

	if (b->len + more <= b->cap)
		return 0;
	while (cap < b->len + more)
		cap *= 2;
	grown = realloc(b->p, cap);
	if (!grown)
		return -1;
	b->p = grown;
	b->cap = cap;
	return 0;
}

int cl_bytes_record(struct cl_bytes *b, const struct proto_record *r)
{
	size_t strings = r->name.len + r->key.len + r->value.len +
			 r->message.len + r->file.len + r->func.len;

	if (cl_bytes_reserve(b, PROTO_RECORD_SIZE_MAX(strings)))
		return -1;
	b->len += proto_encode_record(b->p + b->len, b->cap - b->len, r);
	return 0;
}

static void bytes_free(struct cl_bytes *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* ---------------------------------------------------- record bounds */

/* Bytes of the record at p[0..n), 0 when it does not end there.  The
 * input is our own encoder's output. */
static size_t record_size(const unsigned char *p, size_t n)
{
	int64_t size = proto_object_size(p, n);

	return size > 0 ? (size_t)size : 0;
}

/* A fixarray whose first element is the type. */
static int is_watermark(const unsigned char *p, size_t size)
{
	return size > 1 && p[1] == PROTO_WATERMARK;
}

/* A record's ts: its second element, an unsigned integer right after the
 * fixarray header and the type. */
static uint64_t record_ts(const unsigned char *p, size_t size)
{
	unsigned n = p[2] >= 0xcc && p[2] <= 0xcf ? 1u << (p[2] - 0xcc) : 0;
	uint64_t ts = n ? 0 : p[2];

	for (unsigned i = 0; i < n && 3 + i < size; i++)
		ts = ts << 8 | p[3 + i];
	return ts;
}

uint64_t cl_records_in(const unsigned char *p, size_t n)
{
	uint64_t count = 0;
	size_t pos = 0, len;

	while ((len = record_size(p + pos, n - pos))) {
		count += len > 1 && !is_watermark(p + pos, len);
		pos += len;
	}
	return count;
}

/* ------------------------------------------------------- connection */

static void seg_clear(struct seg *s)
{
	s->b.len = s->off = s->counted = 0;
}

static void note_drops(uint64_t n, uint64_t since)
{
	if (n && (!ship.drops || since < ship.drop_since))
		ship.drop_since = since;
	ship.drops += n;
}

/* Counts the whole records of SEG_RECORDS before `upto` that are not yet
 * counted as handed; returns where the first one not counted starts. */
static size_t count_handed(size_t upto)
{
	struct seg *s = &ship.seg[SEG_RECORDS];
	size_t pos = s->counted, n;
	uint64_t ts;

	while (pos < upto && (n = record_size(s->b.p + pos, upto - pos))) {
		if (!is_watermark(s->b.p + pos, n)) {
			ship.handed++;
			ts = record_ts(s->b.p + pos, n);
			if (ts < ship.since_conn)
				ship.since_conn = ts;
		}
		pos += n;
	}
	s->counted = pos;
	return pos;
}

/* SEG_DROPPED went out whole. */
static void count_drops_handed(void)
{
	ship.drops_handed += ship.seg_drops;
	ship.seg_drops = 0;
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
	struct seg *records = &ship.seg[SEG_RECORDS];

	close(ship.fd);
	ship.fd = -1;
	atomic_store(&ship.connected, 0);
	ship.receipt.due = 0;
	/* The next connection starts with its own HELLO and all SITEs. */
	seg_clear(&ship.seg[SEG_HELLO]);
	seg_clear(&ship.seg[SEG_SITES]);
	if (dropped->off == dropped->b.len) {
		count_drops_handed();
		seg_clear(dropped);
	}
	dropped->off = 0;
	records->off = count_handed(records->off);
	schedule_retry(now);
}

/* ---------------------------------------------------------- receipt */

/* A new connection: what the daemon should say it holds from before. */
static void expect_receipt(void)
{
	if (ship.since_conn < ship.since_old)
		ship.since_old = ship.since_conn;
	ship.since_conn = UINT64_MAX;
	ship.receipt.handed = ship.handed;
	ship.receipt.drops = ship.drops_handed;
	ship.receipt.since = ship.since_old;
	ship.receipt.due = 1;
	ship.receipt.len = 0;
}

static uint64_t shortfall(uint64_t want, uint64_t got)
{
	return got < want ? want - got : 0;
}

/* What the daemon lacks died with it: records are counted as dropped,
 * and DROPPED counts go out again. */
static void take_receipt(const struct proto_receipt *r)
{
	uint64_t records = shortfall(ship.receipt.handed, r->records);
	uint64_t drops = shortfall(ship.receipt.drops, r->dropped);
	uint64_t since = ship.receipt.since;

	ship.handed -= records;
	ship.drops_handed -= drops;
	note_drops(records + drops, since != UINT64_MAX ? since : cl_now());
	atomic_fetch_add(&lost, records);
	ship.since_old = UINT64_MAX;
}

static void read_receipt(void)
{
	struct proto_receipt r;
	int64_t n = proto_parse_receipt(ship.receipt.buf, ship.receipt.len, &r);

	if (n == 0 && ship.receipt.len < sizeof(ship.receipt.buf))
		return; /* the rest is on its way */
	ship.receipt.due = 0;
	if (n > 0)
		take_receipt(&r);
}

/* Shutting down, wait for a receipt that may show a loss. */
static int receipt_awaited(void)
{
	return ship.fd >= 0 && ship.receipt.due &&
	       (ship.receipt.handed || ship.receipt.drops);
}

/* The daemon sends only its RECEIPT: after it, readable means closed
 * (or misbehaving, and what it sends is discarded). */
static int peer_closed(void)
{
	unsigned char scratch[256];
	int due = ship.receipt.due;
	unsigned char *to = due ? ship.receipt.buf + ship.receipt.len : scratch;
	size_t room =
	    due ? sizeof(ship.receipt.buf) - ship.receipt.len : sizeof(scratch);
	ssize_t n = recv(ship.fd, to, room, MSG_DONTWAIT);

	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		return 1;
	if (n > 0 && due) {
		ship.receipt.len += (size_t)n;
		read_receipt();
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

static int encode_hello(struct cl_bytes *out)
{
	struct proto_hello h = {
	    .version = PROTO_VERSION,
	    .instance = cl_instance,
	    .pid = (uint32_t)getpid(),
	    .app = pstr(cl_config.app),
	    .backend = pstr(cl_backend_str(cl_backend)),
	    .reason = pstr(cl_config.reason),
	    .clock_offset = clock_offset(),
	    .client = pstr("libctxleak " CTXLEAK_VERSION_STRING),
	};

	if (cl_bytes_reserve(out, 1024))
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
		cl_config.socket_path, strerror(err), cl_config.buffer_limit);
}

static void connect_daemon(uint64_t now)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct cl_bytes *hello = &ship.seg[SEG_HELLO].b;

	memcpy(sa.sun_path, cl_config.socket_path,
	       strlen(cl_config.socket_path));
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
			ship.last_progress = cl_now();
			atomic_fetch_add_explicit(&ship.sent_bytes, (uint64_t)n,
						  memory_order_relaxed);
		}
	}
	/* The whole batch is out: its bytes leave the budget's account. */
	atomic_fetch_add(&cl_budget, ship.credit);
	ship.credit = 0;
	count_handed(ship.seg[SEG_RECORDS].b.len);
	count_drops_handed();
	for (int i = SEG_SITES; i < NSEG; i++)
		seg_clear(&ship.seg[i]);
	ship.backoff = BACKOFF_MIN;
	return 0;
}

/* ------------------------------------------------------------ batch */

/* Takes every thread's published records into SEG_RECORDS; returns W. */
static uint64_t collect(int *complete)
{
	uint64_t w, last, n, s;
	struct cl_buf **pp, *b;
	int exited;

	w = cl_now() - 1;
	cl_buf_fence();
	pthread_mutex_lock(&cl_registry_mu);
	for (pp = &cl_registry; (b = *pp);) {
		exited = atomic_load_explicit(&b->exited, memory_order_acquire);
		if (atomic_load_explicit(&b->busy, memory_order_acquire)) {
			last = atomic_load_explicit(&b->last_ts,
						    memory_order_relaxed);
			if (!last || last - 1 < w)
				w = last ? last - 1 : 0;
		}
		ship.credit += (int64_t)cl_buf_collect(
		    b, &ship.seg[SEG_RECORDS].b, complete);
		n = cl_buf_take_drops(b, &s);
		note_drops(n, s);
		if (exited && *complete) {
			*pp = b->next;
			cl_buf_free(b);
		} else {
			pp = &b->next;
		}
	}
	pthread_mutex_unlock(&cl_registry_mu);
	return w;
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
		if (!cl_bytes_record(&ship.seg[SEG_DROPPED].b, &r)) {
			ship.seg_drops += ship.drops;
			ship.drops = 0;
		}
	}
	if (complete && w > ship.last_wm) {
		r = (struct proto_record){.type = PROTO_WATERMARK, .ts = w};
		if (!cl_bytes_record(&ship.seg[SEG_RECORDS].b, &r))
			ship.last_wm = w;
	}
	ship.last_batch = now;
	ship.next_flush = now + cl_config.flush_interval_ms * MS;
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

	if (ship.fd >= 0 && !all_sent())
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
	/* Shutting down, the daemon has only STOP_WAIT to appear. */
	if (ship.fd < 0 &&
	    (now >= ship.next_connect || atomic_load(&ship.stop)))
		connect_daemon(now);
	if (ship.fd >= 0 && send_pending())
		disconnect(now);
	if (ship.fd < 0)
		return 1; /* nothing can be shipped now */
	if (!all_sent() || !batch_due(now, req))
		return req <= ship.flush_done;
	build_batch(now);
	if (send_pending())
		disconnect(now);
	return 1;
}

/* Stopping, the shipper waits as long as the daemon takes bytes: under
 * load a slow daemon is still a working one. */
static int finished(void)
{
	uint64_t since;

	if (!atomic_load(&ship.stop))
		return 0;
	if (all_sent() && !ship.drops && cl_buf_all_empty() &&
	    !receipt_awaited())
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
	ship.credit = 0;
	ship.drops = ship.drop_since = 0;
	ship.conn_sites = 0;
	ship.backoff = BACKOFF_MIN;
	ship.next_connect = ship.last_batch = ship.last_wm = 0;
	ship.next_flush = cl_now() + cl_config.flush_interval_ms * MS;
	ship.final_collected = 0;
	ship.flush_req = ship.flush_done = 0;
	ship.handed = ship.drops_handed = ship.seg_drops = 0;
	ship.since_old = ship.since_conn = UINT64_MAX;
	memset(&ship.receipt, 0, sizeof(ship.receipt));
	atomic_store(&ship.sent_bytes, 0);
	atomic_store(&ship.connects, 0);
	atomic_store(&ship.connected, 0);
	ship.said_unreachable = 0;
	atomic_store(&unsent, 0);
	atomic_store(&lost, 0);
	atomic_store(&wake_pending, 0);
	cl_instance = proto_random64();
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
	pthread_mutex_lock(&cl_registry_mu);
	cl_ship_running = 1;
	pthread_mutex_unlock(&cl_registry_mu);
	return CTXLEAK_OK;
}

int cl_ship_start(void)
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
		bytes_free(&ship.seg[i].b);
		ship.seg[i].off = ship.seg[i].counted = 0;
	}
}

/* The shipper gave up, or records came after its last batch: what was
 * never sent counts as dropped, so that sent + dropped = recorded.  The
 * shipper is gone; its state is ours. */
static void count_unsent(void)
{
	struct seg *r = &ship.seg[SEG_RECORDS];
	int complete = 1;
	size_t from;

	collect(&complete);
	from = count_handed(r->off);
	if (from < r->b.len)
		atomic_fetch_add(&unsent,
				 cl_records_in(r->b.p + from, r->b.len - from));
}

void cl_ship_stop(void)
{
	struct cl_buf **pp, *b;

	ship.stop_at = cl_now();
	atomic_store(&ship.stop, 1);
	kick();
	pthread_join(ship.thread, NULL);
	count_unsent();
	release_all();
	pthread_mutex_lock(&cl_registry_mu);
	cl_ship_running = 0;
	/* Live threads free their own buffer when they exit. */
	for (pp = &cl_registry; (b = *pp);) {
		if (atomic_load(&b->exited) || b == cl_self.buf) {
			*pp = b->next;
			cl_buf_free(b);
		} else {
			pp = &b->next;
		}
	}
	pthread_mutex_unlock(&cl_registry_mu);
	cl_buf_forget_self();
}

void cl_ship_fork_prepare(void)
{
	pthread_mutex_lock(&ship.mu);
	pthread_mutex_lock(&ship.flush_mu);
	pthread_mutex_lock(&cl_registry_mu);
	pthread_mutex_lock(&cl_site_mu);
}

void cl_ship_fork_release(void)
{
	pthread_mutex_unlock(&cl_site_mu);
	pthread_mutex_unlock(&cl_registry_mu);
	pthread_mutex_unlock(&ship.flush_mu);
	pthread_mutex_unlock(&ship.mu);
}

/* In the child: the parent's connection and batch are the parent's. */
void cl_ship_after_fork(void)
{
	release_all();
	close(ship.wake_fd);
	ship.wake_fd = -1;
	cl_ship_running = 0;
	if (cl_ship_start())
		atomic_store(&cl_enabled, 0);
}

void cl_ship_stats(struct ctxleak_stats *out)
{
	struct cl_buf *b;

	out->records = atomic_load(&cl_gone_records);
	out->dropped = atomic_load(&cl_gone_dropped) + atomic_load(&unsent) +
		       atomic_load(&lost);
	pthread_mutex_lock(&cl_registry_mu);
	for (b = cl_registry; b; b = b->next) {
		out->records += atomic_load(&b->records);
		pthread_mutex_lock(&b->drop_mu);
		out->dropped += b->drop_total;
		pthread_mutex_unlock(&b->drop_mu);
	}
	pthread_mutex_unlock(&cl_registry_mu);
	out->sent_bytes = atomic_load(&ship.sent_bytes);
	out->connects = atomic_load(&ship.connects);
	out->connected = (uint64_t)atomic_load(&ship.connected);
	out->evicted = atomic_load(&cl_scopes_evicted);
	out->truncated = atomic_load(&cl_truncated);
}
