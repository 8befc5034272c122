/*
 * test_client.c: libctxleak against a real listener.
 *
 * The "daemon" here is a thread of the test: it listens on an AF_UNIX
 * socket in a temporary directory, decodes every connection with proto's
 * decoder and keeps each message, so that a test asserts on exactly what
 * went over the wire.  Check forks every test, which gives each one a
 * fresh library (its state is per process).  Every wait polls with a
 * generous timeout; nothing depends on timing.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "ctxleak.h"
#include "ctxleak_event.h"
#include "harness.h"
#include "proto.h"

#define WAIT_MS	  20000
#define MAX_CONNS 32

/* ------------------------------------------------------------ listener */

/* One decoded message, with its strings copied out of the decoder. */
struct tmsg {
	int hello;
	struct proto_hello h;
	struct proto_record r;
	char *owned[6];
};

struct tconn {
	int fd; /* -1 once closed */
	struct proto_decoder *dec;
	struct tmsg *m;
	size_t n, cap;
	size_t records; /* not counting HELLO */
	int error;	/* a decoder status < 0 */
};

struct listener {
	char dir[64], path[108];
	int lfd;
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct tconn c[MAX_CONNS];
	int nconns;
	_Atomic int stop;
	_Atomic int running; /* the thread has started its loop */
	/* Close a connection once it brought this many records; for this
	 * many connections. */
	size_t close_after;
	int closes_left;
	/* A slow daemon: at most this many bytes a read, then a pause. */
	size_t read_cap;
	int read_pause_ms;
};

static void own(struct proto_str *s, char **slot)
{
	if (!s->ptr)
		return;
	*slot = malloc(s->len + 1);
	ck_assert_ptr_nonnull(*slot);
	memcpy(*slot, s->ptr, s->len);
	(*slot)[s->len] = 0;
	s->ptr = *slot;
}

static void keep(struct tconn *c, struct proto_msg *msg)
{
	struct tmsg *t;

	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 256;
		c->m = realloc(c->m, c->cap * sizeof(*c->m));
		ck_assert_ptr_nonnull(c->m);
	}
	t = &c->m[c->n++];
	memset(t, 0, sizeof(*t));
	t->hello = msg->is_hello;
	if (t->hello) {
		t->h = msg->hello;
		own(&t->h.app, &t->owned[0]);
		own(&t->h.backend, &t->owned[1]);
		own(&t->h.reason, &t->owned[2]);
		own(&t->h.client, &t->owned[3]);
		return;
	}
	c->records++;
	t->r = msg->rec;
	own(&t->r.name, &t->owned[0]);
	own(&t->r.key, &t->owned[1]);
	own(&t->r.value, &t->owned[2]);
	own(&t->r.message, &t->owned[3]);
	own(&t->r.file, &t->owned[4]);
	own(&t->r.func, &t->owned[5]);
}

/* As a daemon of version 2 that commits whatever it reads at once: the
 * RECEIPT after HELLO (it holds nothing from before), an ACK of each
 * WATERMARK.  A client that has hung up gets nothing. */
static void reply(struct tconn *c, const struct proto_msg *msg)
{
	static const struct proto_receipt none = {0, 0};
	unsigned char buf[PROTO_RECEIPT_SIZE_MAX];
	size_t n = 0;

	if (msg->is_hello)
		n = proto_encode_receipt(buf, sizeof buf, &none);
	else if (msg->rec.type == PROTO_WATERMARK)
		n = proto_encode_ack(buf, sizeof buf, msg->rec.ts);
	if (n != 0 && send(c->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		return;
}

static void conn_read(struct listener *l, struct tconn *c)
{
	char buf[65536];
	struct proto_msg msg;
	enum proto_status st;
	size_t cap = l->read_cap ? l->read_cap : sizeof(buf);
	ssize_t n = read(c->fd, buf, cap);

	if (n <= 0) {
		pthread_mutex_lock(&l->mu);
		close(c->fd);
		c->fd = -1;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->mu);
		return;
	}
	pthread_mutex_lock(&l->mu);
	proto_decoder_feed(c->dec, buf, (size_t)n);
	while ((st = proto_decoder_next(c->dec, &msg)) == PROTO_OK) {
		keep(c, &msg);
		reply(c, &msg);
	}
	if (st < 0)
		c->error = st;
	if (l->close_after && l->closes_left > 0 &&
	    c->records >= l->close_after) {
		l->closes_left--;
		close(c->fd);
		c->fd = -1;
	}
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	if (l->read_pause_ms)
		poll(NULL, 0, l->read_pause_ms);
}

static void accept_one(struct listener *l)
{
	int fd = accept4(l->lfd, NULL, NULL, SOCK_CLOEXEC);
	struct tconn *c;

	if (fd < 0)
		return;
	ck_assert_int_lt(l->nconns, MAX_CONNS);
	pthread_mutex_lock(&l->mu);
	c = &l->c[l->nconns++];
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->dec = proto_decoder_new(NULL);
	ck_assert_ptr_nonnull(c->dec);
	pthread_mutex_unlock(&l->mu);
}

static void *listener_main(void *arg)
{
	struct listener *l = arg;
	struct pollfd p[MAX_CONNS + 1];
	int map[MAX_CONNS + 1], n;

	atomic_store(&l->running, 1);
	while (!atomic_load(&l->stop)) {
		p[0] = (struct pollfd){.fd = l->lfd, .events = POLLIN};
		n = 1;
		for (int i = 0; i < l->nconns; i++) {
			if (l->c[i].fd < 0)
				continue;
			p[n] =
			    (struct pollfd){.fd = l->c[i].fd, .events = POLLIN};
			map[n++] = i;
		}
		if (poll(p, (nfds_t)n, 50) <= 0)
			continue;
		if (p[0].revents & POLLIN)
			accept_one(l);
		for (int i = 1; i < n; i++)
			if (p[i].revents)
				conn_read(l, &l->c[map[i]]);
	}
	return NULL;
}

static void socket_path(struct listener *l)
{
	strcpy(l->dir, "/tmp/ctxleak-test-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(l->dir));
	snprintf(l->path, sizeof(l->path), "%s/ctxleak.sock", l->dir);
}

/* Listens on l->path (chosen by socket_path first). */
static void listener_start(struct listener *l)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};

	pthread_mutex_init(&l->mu, NULL);
	pthread_cond_init(&l->cond, NULL);
	strcpy(sa.sun_path, l->path);
	l->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(l->lfd, 0);
	ck_assert_int_eq(bind(l->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(l->lfd, 16), 0);
	ck_assert_int_eq(pthread_create(&l->thread, NULL, listener_main, l), 0);
	/* A test may fork next, and under ASan a child forked while the
	 * new thread is still setting itself up (allocating) inherits the
	 * allocator's lock held, and hangs. */
	while (!atomic_load(&l->running))
		poll(NULL, 0, 1);
}

static void listener_stop(struct listener *l)
{
	atomic_store(&l->stop, 1);
	pthread_join(l->thread, NULL);
	close(l->lfd);
	unlink(l->path);
	rmdir(l->dir);
}

static void listener_free(struct listener *l)
{
	for (int i = 0; i < l->nconns; i++) {
		struct tconn *c = &l->c[i];

		for (size_t j = 0; j < c->n; j++)
			for (int k = 0; k < 6; k++)
				free(c->m[j].owned[k]);
		free(c->m);
		proto_decoder_free(c->dec);
		if (c->fd >= 0)
			close(c->fd);
	}
	pthread_mutex_destroy(&l->mu);
	pthread_cond_destroy(&l->cond);
}

/* Polls pred under the listener's lock until it holds or ms pass. */
static int wait_for_ms(struct listener *l,
		       int (*pred)(struct listener *, void *), void *arg,
		       long ms)
{
	struct timespec until;
	int ok;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += ms % 1000 * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&l->mu);
	while (!(ok = pred(l, arg)) &&
	       pthread_cond_timedwait(&l->cond, &l->mu, &until) != ETIMEDOUT)
		;
	if (!ok)
		ok = pred(l, arg);
	pthread_mutex_unlock(&l->mu);
	return ok;
}

static int wait_for(struct listener *l, int (*pred)(struct listener *, void *),
		    void *arg)
{
	return wait_for_ms(l, pred, arg, WAIT_MS);
}

#define USER_TYPES                                                             \
	(1u << PROTO_BEGIN | 1u << PROTO_END | 1u << PROTO_TAG |               \
	 1u << PROTO_EVENT | 1u << PROTO_RESUME | 1u << PROTO_SUSPEND)

/* type 0: any record of an API call (not SITE, DROPPED or WATERMARK). */
static int record_matches(const struct tmsg *t, uint8_t type, const char *name)
{
	if (t->hello ||
	    (type ? t->r.type != type : !(USER_TYPES >> t->r.type & 1)))
		return 0;
	return !name || (t->r.name.ptr && !strcmp(t->r.name.ptr, name));
}

static size_t count_records(struct listener *l, uint8_t type, const char *name)
{
	size_t n = 0;

	for (int i = 0; i < l->nconns; i++)
		for (size_t j = 0; j < l->c[i].n; j++)
			n += record_matches(&l->c[i].m[j], type, name);
	return n;
}

/* Counts as messages arrive, resuming where it stopped: a wait over a
 * long stream stays linear. */
struct count_arg {
	uint8_t type;	  /* 0: any record of an API call */
	const char *name; /* EVENT name, NULL: any */
	size_t want, have;
	size_t pos[MAX_CONNS]; /* messages counted per connection */
};

static int enough_records(struct listener *l, void *arg)
{
	struct count_arg *a = arg;

	for (int i = 0; i < l->nconns; i++)
		for (; a->pos[i] < l->c[i].n; a->pos[i]++)
			a->have += record_matches(&l->c[i].m[a->pos[i]],
						  a->type, a->name);
	return a->have >= a->want;
}

static int wait_records(struct listener *l, uint8_t type, const char *name,
			size_t want)
{
	struct count_arg a = {.type = type, .name = name, .want = want};

	return wait_for(l, enough_records, &a);
}

/* Every record's site was defined by a SITE earlier on its connection,
 * and no connection saw a decoding error. */
static void check_sites(struct listener *l)
{
	for (int i = 0; i < l->nconns; i++) {
		static char defined[4096];

		memset(defined, 0, sizeof(defined));
		ck_assert_msg(!l->c[i].error, "conn %d: %s", i,
			      proto_status_name(l->c[i].error));
		for (size_t j = 0; j < l->c[i].n; j++) {
			struct proto_record *r = &l->c[i].m[j].r;

			if (l->c[i].m[j].hello)
				continue;
			ck_assert_uint_lt(r->site, sizeof(defined));
			if (r->type == PROTO_SITE)
				defined[r->site] = 1;
			else if (r->site)
				ck_assert_msg(defined[r->site],
					      "site %u used before SITE",
					      r->site);
		}
	}
}

/* The records of the given types in arrival order, across connections. */
static size_t select_records(struct listener *l, unsigned types,
			     struct proto_record **out, size_t max)
{
	size_t n = 0;

	for (int i = 0; i < l->nconns; i++)
		for (size_t j = 0; j < l->c[i].n && n < max; j++)
			if (!l->c[i].m[j].hello &&
			    (types >> l->c[i].m[j].r.type & 1))
				out[n++] = &l->c[i].m[j].r;
	return n;
}

static const struct proto_hello *first_hello(struct listener *l, int conn)
{
	ck_assert_int_gt(l->nconns, conn);
	ck_assert_uint_gt(l->c[conn].n, 0);
	ck_assert(l->c[conn].m[0].hello);
	return &l->c[conn].m[0].h;
}

/* ------------------------------------------------------------ client */

static void init_client(const char *path, enum ctxleak_backend backend,
			size_t limit, uint32_t interval_ms)
{
	struct ctxleak_options o;

	ctxleak_options_init(&o);
	o.socket_path = path;
	o.backend = backend;
	o.app = "test";
	o.buffer_limit = limit;
	o.flush_interval_ms = interval_ms;
	ck_assert_int_eq(ctxleak_init(&o), CTXLEAK_OK);
}

/* A zeroed listener on a new socket path, started. */
static void listen_fresh(struct listener *l)
{
	memset(l, 0, sizeof(*l));
	socket_path(l);
	listener_start(l);
}

static void start(struct listener *l, enum ctxleak_backend backend)
{
	listen_fresh(l);
	init_client(l->path, backend, 0, 0);
}

static void str_eq(struct proto_str s, const char *want)
{
	if (!want) {
		ck_assert_ptr_null(s.ptr);
		return;
	}
	ck_assert_ptr_nonnull(s.ptr);
	ck_assert_str_eq(s.ptr, want);
}

/* --------------------------------------------------------- API records */

START_TEST(test_every_call)
{
	struct listener l;
	struct proto_record *r[16];
	uint64_t req, child, token;
	int line;

	start(&l, CTXLEAK_BACKEND_THREAD);
	line = __LINE__ + 1;
	req = ctxleak_begin("GET /x");
	child = ctxleak_begin_child("db");
	ck_assert_uint_ne(req, 0);
	ck_assert_uint_ne(child, 0);
	ck_assert_uint_ne(req, child);
	ck_assert_uint_eq(ctxleak_current(), child);
	ctxleak_tag("user", "alice");
	ctxleak_event("query", "select 1");
	token = ctxleak_capture();
	ck_assert_uint_eq(token, child);
	ctxleak_end(child);
	ck_assert_uint_eq(ctxleak_current(), req);
	ctxleak_resume(token);
	ctxleak_suspend();
	ctxleak_end(req);
	ck_assert_uint_eq(ctxleak_current(), 0);
	ck_assert_int_eq(ctxleak_flush(), CTXLEAK_OK);
	ck_assert(wait_records(&l, PROTO_END, NULL, 2));
	listener_stop(&l);

	check_sites(&l);
	ck_assert_uint_eq(select_records(&l, USER_TYPES, r, 16), 8);
	ck_assert_uint_eq(r[0]->type, PROTO_BEGIN);
	ck_assert_uint_eq(r[0]->ctx, req);
	ck_assert_uint_eq(r[0]->cause, 0);
	ck_assert_uint_eq(r[0]->prev, 0);
	ck_assert_uint_eq(r[0]->kind, PROTO_KIND_REQUEST);
	str_eq(r[0]->name, "GET /x");
	ck_assert_uint_eq(r[1]->type, PROTO_BEGIN);
	ck_assert_uint_eq(r[1]->ctx, child);
	ck_assert_uint_eq(r[1]->cause, req);
	ck_assert_uint_eq(r[1]->prev, req);
	ck_assert_uint_eq(r[1]->kind, PROTO_KIND_CHILD);
	ck_assert_uint_eq(r[2]->type, PROTO_TAG);
	ck_assert_uint_eq(r[2]->ctx, child);
	ck_assert_uint_eq(r[2]->cause, child);
	str_eq(r[2]->key, "user");
	str_eq(r[2]->value, "alice");
	ck_assert_uint_eq(r[3]->type, PROTO_EVENT);
	str_eq(r[3]->name, "query");
	str_eq(r[3]->message, "select 1");
	ck_assert_uint_eq(r[4]->type, PROTO_END);
	ck_assert_uint_eq(r[4]->ctx, child);
	ck_assert_uint_eq(r[4]->cur, child);
	ck_assert_uint_eq(r[5]->type, PROTO_RESUME);
	ck_assert_uint_eq(r[5]->ctx, req);
	ck_assert_uint_eq(r[5]->cause, child);
	ck_assert_uint_eq(r[6]->type, PROTO_SUSPEND);
	ck_assert_uint_eq(r[6]->cause, child);
	ck_assert_uint_eq(r[7]->type, PROTO_END);
	ck_assert_uint_eq(r[7]->ctx, req);
	ck_assert_uint_eq(r[7]->cause, req);
	ck_assert_uint_eq(r[7]->cur, req);
	for (int i = 0; i < 8; i++) {
		ck_assert_uint_eq(r[i]->tid, (uint64_t)gettid());
		ck_assert_uint_ne(r[i]->site, 0);
		ck_assert_uint_gt(r[i]->ts, 0);
		if (i)
			ck_assert_uint_ge(r[i]->ts, r[i - 1]->ts);
	}
	/* The first call's site names this file, line and function. */
	for (size_t j = 0; j < l.c[0].n; j++) {
		struct proto_record *s = &l.c[0].m[j].r;

		if (l.c[0].m[j].hello || s->type != PROTO_SITE ||
		    s->site != r[0]->site)
			continue;
		str_eq(s->file, __FILE__);
		/* Check names the function behind START_TEST so. */
		str_eq(s->func, "test_every_call_fn");
		ck_assert_uint_eq(s->line, (unsigned)line);
	}
	ck_assert_uint_ne(r[0]->site, r[1]->site); /* one ID per site */
	listener_free(&l);
}
END_TEST

START_TEST(test_hello)
{
	struct listener l;
	const struct proto_hello *h;
	struct ctxleak_stats st;

	start(&l, CTXLEAK_BACKEND_GLOBAL);
	ck_assert_str_eq(ctxleak_backend_name(), "global");
	(ctxleak_event)("plain", NULL);
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, "plain", 1));
	listener_stop(&l);
	h = first_hello(&l, 0);
	ck_assert_uint_eq(h->version, PROTO_VERSION);
	ck_assert_uint_ne(h->instance, 0);
	ck_assert_uint_eq(h->pid, (uint32_t)getpid());
	str_eq(h->app, "test");
	str_eq(h->backend, "global");
	str_eq(h->reason, "chosen by the application");
	str_eq(h->client, "libctxleak " CTXLEAK_VERSION_STRING);
	ck_assert_int_ne(h->clock_offset, 0);
	ck_assert_uint_eq(count_records(&l, PROTO_EVENT, "plain"), 1);
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.records, 1);
	ck_assert_uint_eq(st.connects, 1);
	ck_assert_uint_gt(st.sent_bytes, 0);
	listener_free(&l);
}
END_TEST

/* -------------------------------------------------- the worked example */

enum { NONE, A, B, C };

struct expect {
	uint8_t type;
	int ctx, cause, extra; /* extra: BEGIN's prev, END's cur */
};

/* docs/DESIGN.md's worked example, one thread, every callback wrapped (the
 * harness's), in this process; id[] its requests' ctx IDs. */
static void worked_example(uint64_t id[4])
{
	struct harness_example ex = {0};

	ck_assert_int_eq(harness_worked_example(&ex), 0);
	memcpy(id, ex.id, sizeof ex.id);
}

/* thread and global: the slot is never switched by resume/suspend. */
static const struct expect shared_slot[] = {
    {PROTO_RESUME, NONE, NONE, 0},  {PROTO_BEGIN, A, NONE, NONE},
    {PROTO_TAG, A, A, 0},	    {PROTO_SUSPEND, A, A, 0},
    {PROTO_RESUME, A, NONE, 0},	    {PROTO_BEGIN, B, NONE, A},
    {PROTO_TAG, B, B, 0},	    {PROTO_SUSPEND, B, B, 0},
    {PROTO_RESUME, B, A, 0},	    {PROTO_EVENT, B, A, 0},
    {PROTO_TAG, B, A, 0},	    {PROTO_END, A, A, B},
    {PROTO_SUSPEND, NONE, NONE, 0}, {PROTO_RESUME, NONE, B, 0},
    {PROTO_EVENT, NONE, B, 0},	    {PROTO_END, B, B, NONE},
    {PROTO_SUSPEND, A, NONE, 0},    {PROTO_RESUME, A, NONE, 0},
    {PROTO_BEGIN, C, NONE, A},	    {PROTO_END, C, C, C},
    {PROTO_SUSPEND, A, NONE, 0},
};

/* task: resume and suspend switch the slot, so backend and truth agree. */
static const struct expect task_slot[] = {
    {PROTO_RESUME, NONE, NONE, 0},  {PROTO_BEGIN, A, NONE, NONE},
    {PROTO_TAG, A, A, 0},	    {PROTO_SUSPEND, A, A, 0},
    {PROTO_RESUME, NONE, NONE, 0},  {PROTO_BEGIN, B, NONE, NONE},
    {PROTO_TAG, B, B, 0},	    {PROTO_SUSPEND, B, B, 0},
    {PROTO_RESUME, NONE, A, 0},	    {PROTO_EVENT, A, A, 0},
    {PROTO_TAG, A, A, 0},	    {PROTO_END, A, A, A},
    {PROTO_SUSPEND, NONE, NONE, 0}, {PROTO_RESUME, NONE, B, 0},
    {PROTO_EVENT, B, B, 0},	    {PROTO_END, B, B, B},
    {PROTO_SUSPEND, NONE, NONE, 0}, {PROTO_RESUME, NONE, NONE, 0},
    {PROTO_BEGIN, C, NONE, NONE},   {PROTO_END, C, C, C},
    {PROTO_SUSPEND, NONE, NONE, 0},
};

#define NEXPECT (sizeof(shared_slot) / sizeof(shared_slot[0]))

static void check_example(struct listener *l, const struct expect *e,
			  const uint64_t id[4])
{
	struct proto_record *r[NEXPECT + 1];

	ck_assert_uint_eq(select_records(l, USER_TYPES, r, NEXPECT + 1),
			  NEXPECT);
	for (size_t i = 0; i < NEXPECT; i++) {
		ck_assert_msg(r[i]->type == e[i].type, "record %zu: %s", i,
			      proto_type_name(r[i]->type));
		ck_assert_msg(r[i]->ctx == id[e[i].ctx], "record %zu ctx", i);
		ck_assert_msg(r[i]->cause == id[e[i].cause], "record %zu cause",
			      i);
		if (e[i].type == PROTO_BEGIN)
			ck_assert_msg(r[i]->prev == id[e[i].extra],
				      "record %zu prev", i);
		if (e[i].type == PROTO_END)
			ck_assert_msg(r[i]->cur == id[e[i].extra],
				      "record %zu cur", i);
	}
}

static void run_example(enum ctxleak_backend backend, const char *name,
			const struct expect *e)
{
	struct listener l;
	uint64_t id[4];

	start(&l, backend);
	ck_assert_str_eq(ctxleak_backend_name(), name);
	worked_example(id);
	ctxleak_flush();
	ck_assert(wait_records(&l, 0, NULL, NEXPECT));
	listener_stop(&l);
	check_sites(&l);
	check_example(&l, e, id);
	str_eq(first_hello(&l, 0)->backend, name);
	listener_free(&l);
}

START_TEST(test_example_thread)
{
	run_example(CTXLEAK_BACKEND_THREAD, "thread", shared_slot);
}
END_TEST

START_TEST(test_example_global)
{
	run_example(CTXLEAK_BACKEND_GLOBAL, "global", shared_slot);
}
END_TEST

START_TEST(test_example_task)
{
	run_example(CTXLEAK_BACKEND_TASK, "task", task_slot);
}
END_TEST

/* The global slot is one per process: another thread sees it. */
static void *read_current(void *out)
{
	*(uint64_t *)out = ctxleak_current();
	return NULL;
}

START_TEST(test_global_is_shared)
{
	struct listener l;
	pthread_t t;
	uint64_t seen = 0, ctx;

	start(&l, CTXLEAK_BACKEND_GLOBAL);
	ctx = ctxleak_begin("r");
	pthread_create(&t, NULL, read_current, &seen);
	pthread_join(t, NULL);
	ck_assert_uint_eq(seen, ctx);
	ctxleak_end(ctx);
	listener_stop(&l);
	listener_free(&l);
}
END_TEST

START_TEST(test_thread_is_per_thread)
{
	struct listener l;
	pthread_t t;
	uint64_t seen = 1, ctx;

	start(&l, CTXLEAK_BACKEND_THREAD);
	ctx = ctxleak_begin("r");
	pthread_create(&t, NULL, read_current, &seen);
	pthread_join(t, NULL);
	ck_assert_uint_eq(seen, 0);
	ck_assert_uint_eq(ctxleak_current(), ctx);
	ctxleak_end(ctx);
	listener_stop(&l);
	listener_free(&l);
}
END_TEST

/* ----------------------------------------------------------- backends */

struct app_storage {
	uint64_t ctx;
	int gets, sets;
};

static uint64_t app_get(void *user)
{
	struct app_storage *s = user;

	s->gets++;
	return s->ctx;
}

static void app_set(void *user, uint64_t ctx)
{
	struct app_storage *s = user;

	s->sets++;
	s->ctx = ctx;
}

/* A fresh listener (listen_fresh), and options that point at it. */
static void listen_with_options(struct listener *l, struct ctxleak_options *o)
{
	listen_fresh(l);
	ctxleak_options_init(o);
	o->socket_path = l->path;
}

/* After one request of BEGIN, EVENT, END: flush, stop l once the END is
 * in, and its three records in r. */
static void shipped_begin_event_end(struct listener *l,
				    struct proto_record *r[4])
{
	ctxleak_flush();
	ck_assert(wait_records(l, PROTO_END, NULL, 1));
	listener_stop(l);
	ck_assert_uint_eq(select_records(l,
					 1u << PROTO_BEGIN | 1u << PROTO_EVENT |
					     1u << PROTO_END,
					 r, 4),
			  3);
}

START_TEST(test_custom_backend)
{
	struct listener l;
	struct ctxleak_options o;
	struct app_storage st = {.ctx = 77};
	struct proto_record *r[4];
	uint64_t ctx;

	listen_with_options(&l, &o);
	o.backend = CTXLEAK_BACKEND_CUSTOM;
	o.custom_set = app_set;
	o.custom_user = &st;
	ck_assert_int_eq(ctxleak_init(&o), CTXLEAK_EINVAL); /* no getter */
	o.custom_get = app_get;
	ck_assert_int_eq(ctxleak_init(&o), CTXLEAK_OK);
	ck_assert_str_eq(ctxleak_backend_name(), "custom");

	ctx = ctxleak_begin("r");
	ck_assert_uint_eq(st.ctx, ctx);
	ck_assert_uint_eq(ctxleak_current(), ctx);
	st.ctx = 5; /* the application's storage went wrong */
	ctxleak_event("e", "m");
	ctxleak_resume(ctx); /* custom is not switched by resume */
	ck_assert_uint_eq(st.ctx, 5);
	ctxleak_suspend();
	ctxleak_end(ctx);
	ck_assert_uint_eq(st.ctx, 77); /* restored to what it was before */
	ck_assert_int_gt(st.gets, 0);
	shipped_begin_event_end(&l, r);
	ck_assert_uint_eq(r[0]->prev, 77);
	ck_assert_uint_eq(r[1]->ctx, 5);
	ck_assert_uint_eq(r[1]->cause, ctx);
	ck_assert_uint_eq(r[2]->cur, 5);
	str_eq(first_hello(&l, 0)->backend, "custom");
	listener_free(&l);
}
END_TEST

/* Observe mode: every record carries what the service's storage says, and
 * the library never writes it, whatever the calls. */
START_TEST(test_observe_backend)
{
	struct listener l;
	struct ctxleak_options o;
	struct app_storage st = {.ctx = 0};
	struct proto_record *r[4];
	uint64_t ctx;

	listen_with_options(&l, &o);
	o.backend = _i ? CTXLEAK_BACKEND_OBSERVE : CTXLEAK_BACKEND_CUSTOM;
	o.custom_get = app_get;
	o.custom_user = &st;
	ck_assert_int_eq(ctxleak_init(&o), CTXLEAK_OK);
	ck_assert_str_eq(ctxleak_backend_name(), "observe");

	ctx = ctxleak_begin("r");
	ck_assert_uint_eq(st.ctx, 0); /* not written */
	ck_assert_uint_eq(ctxleak_current(), 0);
	st.ctx = ctx; /* the service sets its own storage */
	ctxleak_event("e", "m");
	ctxleak_end(ctx);
	ck_assert_uint_eq(st.ctx, ctx); /* and clears it, or not */
	ck_assert_int_eq(st.sets, 0);
	shipped_begin_event_end(&l, r);
	ck_assert_uint_eq(r[0]->prev, 0);
	ck_assert_uint_eq(r[1]->ctx, ctx);
	ck_assert_uint_eq(r[1]->cause, ctx);
	ck_assert_uint_eq(r[2]->cur, ctx);
	str_eq(first_hello(&l, 0)->backend, "observe");
	listener_free(&l);
}
END_TEST

static void check_auto(int scheduler, const char *backend, const char *why)
{
	struct listener l;

	if (scheduler)
		ck_assert_int_eq(ctxleak_set_scheduler("libevent"), CTXLEAK_OK);
	start(&l, CTXLEAK_BACKEND_AUTO);
	ck_assert_str_eq(ctxleak_backend_name(), backend);
	ctxleak_event("e", NULL);
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, NULL, 1));
	listener_stop(&l);
	str_eq(first_hello(&l, 0)->backend, backend);
	str_eq(first_hello(&l, 0)->reason, why);
	listener_free(&l);
}

START_TEST(test_auto_without_scheduler)
{
	unsetenv("CTXLEAK_BACKEND");
	check_auto(0, "thread",
		   "auto: no scheduler integration installed; thread-local "
		   "storage");
}
END_TEST

START_TEST(test_auto_with_scheduler)
{
	unsetenv("CTXLEAK_BACKEND");
	check_auto(1, "task",
		   "auto: scheduler integration 'libevent' "
		   "installed");
	ck_assert_int_eq(ctxleak_set_scheduler("late"), CTXLEAK_EALREADY);
}
END_TEST

START_TEST(test_environment)
{
	struct listener l;

	listen_fresh(&l);
	setenv("CTXLEAK_SOCKET", l.path, 1);
	setenv("CTXLEAK_BACKEND", "global", 1);
	setenv("CTXLEAK_APP", "from-env", 1);
	ck_assert_int_eq(ctxleak_init(NULL), CTXLEAK_OK);
	ck_assert_int_eq(ctxleak_init(NULL), CTXLEAK_EALREADY);
	ctxleak_event("e", NULL);
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, NULL, 1));
	listener_stop(&l);
	str_eq(first_hello(&l, 0)->backend, "global");
	str_eq(first_hello(&l, 0)->reason, "CTXLEAK_BACKEND=global");
	str_eq(first_hello(&l, 0)->app, "from-env");
	listener_free(&l);
}
END_TEST

START_TEST(test_bad_backend)
{
	struct ctxleak_options o;

	setenv("CTXLEAK_BACKEND", "fibre", 1);
	ck_assert_int_eq(ctxleak_init(NULL), CTXLEAK_EINVAL);
	unsetenv("CTXLEAK_BACKEND");
	ctxleak_options_init(&o);
	o.backend = (enum ctxleak_backend)99;
	ck_assert_int_eq(ctxleak_init(&o), CTXLEAK_EINVAL);
	ck_assert_uint_eq(ctxleak_begin("off"), 0);
}
END_TEST

/* ------------------------------------------------------------ threads */

#define THREADS	   8
#define PER_THREAD 5000

static void *emit_numbered(void *arg)
{
	char msg[32];
	uint64_t ctx = ctxleak_begin("worker");

	for (int i = 0; i < PER_THREAD; i++) {
		snprintf(msg, sizeof(msg), "%d", i);
		ctxleak_event("n", msg);
	}
	ctxleak_end(ctx);
	(void)arg;
	return NULL;
}

/* Each thread's events arrive complete and in its own order. */
static void check_numbered(struct listener *l, int threads, int per_thread)
{
	uint64_t tids[64] = {0};
	int next[64] = {0}, ntids = 0, k;

	for (int i = 0; i < l->nconns; i++) {
		for (size_t j = 0; j < l->c[i].n; j++) {
			struct proto_record *r = &l->c[i].m[j].r;

			if (l->c[i].m[j].hello || r->type != PROTO_EVENT)
				continue;
			for (k = 0; k < ntids && tids[k] != r->tid; k++)
				;
			if (k == ntids) {
				ck_assert_int_lt(ntids, 64);
				tids[ntids++] = r->tid;
			}
			ck_assert_int_eq(atoi(r->message.ptr), next[k]);
			next[k]++;
		}
	}
	ck_assert_int_eq(ntids, threads);
	for (k = 0; k < ntids; k++)
		ck_assert_int_eq(next[k], per_thread);
}

START_TEST(test_threads)
{
	struct listener l;
	pthread_t t[THREADS];
	struct ctxleak_stats st;

	listen_fresh(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 64 << 20, 0);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&t[i], NULL, emit_numbered, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	ck_assert(
	    wait_records(&l, PROTO_EVENT, "n", (size_t)THREADS * PER_THREAD));
	ck_assert(wait_records(&l, PROTO_END, NULL, THREADS));
	listener_stop(&l);
	check_sites(&l);
	check_numbered(&l, THREADS, PER_THREAD);
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.dropped, 0);
	ck_assert_uint_eq(st.records, (uint64_t)THREADS * (PER_THREAD + 2));
	listener_free(&l);
}
END_TEST

/* ------------------------------------------------------ truth, randomized */

/*
 * Random multi-threaded programs against a reference model of docs/DESIGN.md's
 * per-call table.  The program's calls run one at a time, each on the
 * thread the generator picked (a baton passed through a mailbox per
 * thread), so the model's order is the order of the calls.  The model
 * keeps B per backend, C and the resume stack per thread, and saved pairs
 * per process; every record the library sends must carry the ctx, cause,
 * prev and cur the model says, and capture/current must return its C and
 * B.  Ends pick open scopes of any thread, ended ones and unknown values;
 * resumes pick captured tokens, 0 and open scopes; suspends may find an
 * empty stack.
 */
#define TRUTH_THREADS 3
#define TRUTH_STEPS   3000
#define TRUTH_MAX     (TRUTH_STEPS + 16)

enum truth_op { T_BEGIN, T_CHILD, T_END, T_TAG, T_EVENT, T_CAPTURE,
		T_RESUME, T_SUSPEND, T_STOP };

struct truth_expect { /* one record, as the model says it goes out */
	uint8_t type;
	uint64_t ctx, cause, other; /* other: prev of BEGIN, cur of END */
};

struct truth_thread {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	int has_op, done;
	enum truth_op op;
	uint64_t arg, ret, current, capture; /* in, out */
	uint64_t tid;
	/* The model's state of this thread. */
	uint64_t c, b; /* b: the thread and task backends' slot */
	uint64_t stack_c[TRUTH_MAX], stack_b[TRUTH_MAX];
	size_t depth;
	struct truth_expect *want;
	size_t nwant;
};

static void *truth_worker(void *arg)
{
	struct truth_thread *t = arg;

	t->tid = (uint64_t)gettid();
	pthread_mutex_lock(&t->mu);
	for (;;) {
		while (!t->has_op)
			pthread_cond_wait(&t->cond, &t->mu);
		t->has_op = 0;
		if (t->op == T_STOP)
			break;
		switch (t->op) {
		case T_BEGIN:
			t->ret = ctxleak_begin("req");
			break;
		case T_CHILD:
			t->ret = ctxleak_begin_child("child");
			break;
		case T_END:
			ctxleak_end(t->arg);
			break;
		case T_TAG:
			ctxleak_tag("k", "v");
			break;
		case T_EVENT:
			ctxleak_event("e", NULL);
			break;
		case T_CAPTURE:
			t->ret = ctxleak_capture();
			break;
		case T_RESUME:
			ctxleak_resume(t->arg);
			break;
		default:
			ctxleak_suspend();
			break;
		}
		t->current = ctxleak_current();
		t->capture = ctxleak_capture();
		t->done = 1;
		pthread_cond_broadcast(&t->cond);
	}
	pthread_mutex_unlock(&t->mu);
	ctxleak_flush();
	return NULL;
}

/* Runs op on t and waits for it. */
static uint64_t truth_call(struct truth_thread *t, enum truth_op op,
			   uint64_t arg)
{
	pthread_mutex_lock(&t->mu);
	t->op = op;
	t->arg = arg;
	t->has_op = 1;
	t->done = 0;
	pthread_cond_broadcast(&t->cond);
	while (op != T_STOP && !t->done)
		pthread_cond_wait(&t->cond, &t->mu);
	pthread_mutex_unlock(&t->mu);
	return t->ret;
}

struct truth_model {
	enum ctxleak_backend backend;
	uint64_t global;
	/* Saved pairs of open scopes, process-wide: ctx, B, C. */
	uint64_t open[TRUTH_MAX], open_b[TRUTH_MAX], open_c[TRUTH_MAX];
	size_t nopen;
	uint64_t ended[TRUTH_MAX], tokens[TRUTH_MAX];
	size_t nended, ntokens;
};

static uint64_t *model_b(struct truth_model *m, struct truth_thread *t)
{
	return m->backend == CTXLEAK_BACKEND_GLOBAL ? &m->global : &t->b;
}

static void expect(struct truth_thread *t, uint8_t type, uint64_t ctx,
		   uint64_t cause, uint64_t other)
{
	t->want[t->nwant++] = (struct truth_expect){type, ctx, cause, other};
}

static uint64_t truth_pick(struct truth_model *m, unsigned *seed, int end)
{
	unsigned r = (unsigned)rand_r(seed) % 10;

	if (r < 7 && m->nopen)
		return m->open[(unsigned)rand_r(seed) % m->nopen];
	if (r < 8 && m->nended)
		return m->ended[(unsigned)rand_r(seed) % m->nended];
	if (!end && r < 9 && m->ntokens)
		return m->tokens[(unsigned)rand_r(seed) % m->ntokens];
	return r == 9 ? 0x5eed0000u + (unsigned)rand_r(seed) % 7 : 0;
}

/* One step of the program: the call on its thread, the model beside it. */
static void truth_step(struct truth_model *m, struct truth_thread *t,
		       unsigned *seed)
{
	static const enum truth_op mix[] = {
	    T_BEGIN, T_BEGIN, T_CHILD, T_CHILD, T_CHILD, T_END,	  T_END,
	    T_END,   T_END,   T_TAG,   T_TAG,   T_EVENT, T_CAPTURE, T_RESUME,
	    T_RESUME, T_SUSPEND, T_SUSPEND,
	};
	enum truth_op op = mix[(unsigned)rand_r(seed) % (sizeof(mix) /
							  sizeof(mix[0]))];
	uint64_t *b = model_b(m, t), arg = 0, x;
	size_t i;

	if (op == T_END || op == T_RESUME)
		arg = truth_pick(m, seed, op == T_END);
	if (op == T_END && !arg)
		op = T_EVENT; /* end(0) is ignored: nothing to check */
	x = truth_call(t, op, arg);
	switch (op) {
	case T_BEGIN:
	case T_CHILD:
		expect(t, PROTO_BEGIN, x, t->c, *b);
		m->open[m->nopen] = x;
		m->open_b[m->nopen] = *b;
		m->open_c[m->nopen++] = t->c;
		*b = x;
		t->c = x;
		break;
	case T_END:
		expect(t, PROTO_END, arg, t->c, *b);
		for (i = 0; i < m->nopen && m->open[i] != arg; i++)
			;
		if (i == m->nopen)
			break; /* unknown, or ended already: nothing restored */
		*b = m->open_b[i];
		t->c = m->open_c[i];
		m->ended[m->nended++] = arg;
		m->nopen--;
		m->open[i] = m->open[m->nopen];
		m->open_b[i] = m->open_b[m->nopen];
		m->open_c[i] = m->open_c[m->nopen];
		break;
	case T_TAG:
	case T_EVENT:
		expect(t, op == T_TAG ? PROTO_TAG : PROTO_EVENT, *b, t->c, 0);
		break;
	case T_CAPTURE:
		ck_assert_uint_eq(x, t->c);
		m->tokens[m->ntokens++] = x;
		break;
	case T_RESUME:
		expect(t, PROTO_RESUME, *b, arg, 0);
		t->stack_c[t->depth] = t->c;
		t->stack_b[t->depth++] = *b;
		t->c = arg;
		if (m->backend == CTXLEAK_BACKEND_TASK)
			*b = arg;
		break;
	default:
		expect(t, PROTO_SUSPEND, *b, t->c, 0);
		if (!t->depth)
			break; /* reported; nothing restored */
		t->c = t->stack_c[--t->depth];
		if (m->backend == CTXLEAK_BACKEND_TASK)
			*b = t->stack_b[t->depth];
		break;
	}
	ck_assert_uint_eq(t->capture, t->c);
	ck_assert_uint_eq(t->current, *b);
}

/* The records from tid, in the order they were made. */
static void truth_check_thread(struct listener *l, struct truth_thread *t)
{
	size_t k = 0;

	for (int i = 0; i < l->nconns; i++)
		for (size_t j = 0; j < l->c[i].n; j++) {
			const struct proto_record *r = &l->c[i].m[j].r;
			const struct truth_expect *w;

			if (l->c[i].m[j].hello || r->tid != t->tid ||
			    !(USER_TYPES >> r->type & 1))
				continue;
			ck_assert_uint_lt(k, t->nwant);
			w = &t->want[k++];
			ck_assert_uint_eq(r->type, w->type);
			ck_assert_uint_eq(r->ctx, w->ctx);
			ck_assert_uint_eq(r->cause, w->cause);
			if (r->type == PROTO_BEGIN)
				ck_assert_uint_eq(r->prev, w->other);
			if (r->type == PROTO_END)
				ck_assert_uint_eq(r->cur, w->other);
		}
	ck_assert_uint_eq(k, t->nwant);
}

static const enum ctxleak_backend truth_backends[] = {
    CTXLEAK_BACKEND_THREAD, CTXLEAK_BACKEND_GLOBAL, CTXLEAK_BACKEND_TASK};

/* _i: backend (thread, global, task) and seed. */
START_TEST(test_truth_random)
{
	static struct truth_model m;
	static struct truth_thread t[TRUTH_THREADS];
	struct listener l;
	unsigned seed = 0x5eed + (unsigned)_i;
	size_t total = 0;

	memset(&m, 0, sizeof(m));
	m.backend = truth_backends[_i % 3];
	start(&l, m.backend);
	for (int i = 0; i < TRUTH_THREADS; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		pthread_mutex_init(&t[i].mu, NULL);
		pthread_cond_init(&t[i].cond, NULL);
		t[i].want = calloc(TRUTH_MAX, sizeof(*t[i].want));
		ck_assert_ptr_nonnull(t[i].want);
		pthread_create(&t[i].thread, NULL, truth_worker, &t[i]);
	}
	for (int s = 0; s < TRUTH_STEPS; s++)
		truth_step(&m, &t[(unsigned)rand_r(&seed) % TRUTH_THREADS],
			   &seed);
	for (int i = 0; i < TRUTH_THREADS; i++) {
		truth_call(&t[i], T_STOP, 0);
		pthread_join(t[i].thread, NULL);
		total += t[i].nwant;
	}
	ctxleak_flush();
	ck_assert(wait_records(&l, 0, NULL, total));
	listener_stop(&l);
	for (int i = 0; i < TRUTH_THREADS; i++) {
		truth_check_thread(&l, &t[i]);
		free(t[i].want);
	}
	listener_free(&l);
}
END_TEST

/* A worker whose daemon is away says so once on stderr, unless
 * CTXLEAK_QUIET=1; its stats say it is not connected.  _i: quiet. */
START_TEST(test_says_unreachable)
{
	char path[] = "/tmp/ctxleak-stderr-XXXXXX", text[1024];
	int fd = mkstemp(path), saved = dup(2);
	struct ctxleak_stats st;
	ssize_t n;
	const char *hit;

	ck_assert_int_ge(fd, 0);
	if (_i)
		setenv("CTXLEAK_QUIET", "1", 1);
	else
		unsetenv("CTXLEAK_QUIET");
	dup2(fd, 2);
	init_client("/nonexistent/ctxleak.sock", CTXLEAK_BACKEND_THREAD, 0,
		    10);
	for (int i = 0; i < 3; i++) {
		ctxleak_event("e", NULL);
		ctxleak_flush();
		poll(NULL, 0, 30); /* past a reconnect or two */
	}
	ctxleak_stats(&st);
	ctxleak_shutdown();
	dup2(saved, 2);
	n = pread(fd, text, sizeof(text) - 1, 0);
	ck_assert_int_ge(n, 0);
	text[n] = 0;
	close(fd);
	unlink(path);
	ck_assert_uint_eq(st.connected, 0);
	if (_i) {
		ck_assert_str_eq(text, "");
		return;
	}
	hit = strstr(text, "ctxleak: no daemon at /nonexistent/ctxleak.sock");
	ck_assert_msg(hit, "stderr: %s", text);
	ck_assert_ptr_null(strstr(hit + 1, "ctxleak: no daemon"));
}
END_TEST

/* Connected while a daemon has the connection. */
START_TEST(test_stats_connected)
{
	struct listener l;
	struct ctxleak_stats st;

	start(&l, CTXLEAK_BACKEND_THREAD);
	ctxleak_event("e", NULL);
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, NULL, 1));
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.connected, 1);
	ck_assert_uint_eq(st.connects, 1);
	listener_stop(&l);
	listener_free(&l);
}
END_TEST

/* ----------------------------------------------- daemon absent, limits */

START_TEST(test_daemon_appears)
{
	struct listener l;
	struct ctxleak_stats st;

	memset(&l, 0, sizeof(l));
	socket_path(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 0, 10);
	for (int i = 0; i < 100; i++)
		ctxleak_event("early", NULL);
	ck_assert_int_eq(ctxleak_flush(), CTXLEAK_OK);
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.connects, 0);
	ck_assert_uint_eq(st.sent_bytes, 0);
	listener_start(&l);
	ck_assert(wait_records(&l, PROTO_EVENT, "early", 100));
	listener_stop(&l);
	check_sites(&l);
	ck_assert_uint_eq(count_records(&l, PROTO_EVENT, "early"), 100);
	ck_assert_uint_eq(count_records(&l, PROTO_DROPPED, NULL), 0);
	listener_free(&l);
}
END_TEST

static uint64_t dropped_on_wire(struct listener *l, uint64_t *since)
{
	struct proto_record *r[64];
	size_t n = select_records(l, 1u << PROTO_DROPPED, r, 64);
	uint64_t total = 0;

	for (size_t i = 0; i < n; i++) {
		total += r[i]->count;
		if (!i)
			*since = r[i]->since;
	}
	return total;
}

START_TEST(test_buffer_limit)
{
	enum { EVENTS = 20000 };
	struct listener l;
	struct ctxleak_stats st;
	uint64_t since = 0, received;

	memset(&l, 0, sizeof(l));
	socket_path(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 64 * 1024, 10);
	for (int i = 0; i < EVENTS; i++)
		ctxleak_event("fill", "0123456789");
	ctxleak_stats(&st);
	ck_assert_uint_gt(st.dropped, 0);
	ck_assert_uint_lt(st.dropped, EVENTS);
	ck_assert_uint_eq(st.records, EVENTS);
	listener_start(&l);
	ck_assert(wait_records(&l, PROTO_DROPPED, NULL, 1));
	ck_assert(
	    wait_records(&l, PROTO_EVENT, "fill", st.records - st.dropped));
	listener_stop(&l);
	received = count_records(&l, PROTO_EVENT, "fill");
	ck_assert_uint_eq(received, st.records - st.dropped);
	ck_assert_uint_eq(dropped_on_wire(&l, &since), st.dropped);
	ck_assert_uint_gt(since, 0);
	/* The budget holds: what was buffered is about the limit. */
	ck_assert_uint_le(received * 20, 64 * 1024);
	listener_free(&l);
}
END_TEST

/* ------------------------------------------------ broken connections */

/* The newest connection's last EVENT carries message `arg`. */
static int last_event_is(struct listener *l, void *arg)
{
	struct tconn *c = l->nconns ? &l->c[l->nconns - 1] : NULL;

	for (size_t j = c ? c->n : 0; j-- > 0;)
		if (!c->m[j].hello && c->m[j].r.type == PROTO_EVENT)
			return c->m[j].r.message.ptr &&
			       !strcmp(c->m[j].r.message.ptr, arg);
	return 0;
}

static int first_closed(struct listener *l, void *arg)
{
	(void)arg;
	return l->nconns && l->c[0].fd < 0;
}

START_TEST(test_reconnect)
{
	enum { EVENTS = 3000 };
	struct listener l;
	struct ctxleak_stats st;
	char msg[32];
	int prev = -1;

	memset(&l, 0, sizeof(l));
	socket_path(&l);
	l.close_after = 1000;
	l.closes_left = 1;
	listener_start(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 0, 5);
	for (int i = 0; i < EVENTS; i++) {
		snprintf(msg, sizeof(msg), "%d", i);
		ctxleak_event("n", msg);
		if (i % 100 == 99)
			ctxleak_flush();
		/* Half of them after the listener hung up. */
		if (i == EVENTS / 2)
			ck_assert(wait_for(&l, first_closed, NULL));
	}
	ctxleak_flush();
	ck_assert(wait_for(&l, last_event_is, "2999"));
	listener_stop(&l);
	ck_assert_int_ge(l.nconns, 2);
	check_sites(&l); /* no half record: the decoder saw no error */
	ck_assert_uint_eq(first_hello(&l, 0)->instance,
			  first_hello(&l, 1)->instance);
	ctxleak_stats(&st);
	ck_assert_uint_ge(st.connects, 2);
	/* On the new connection the events go on in order to the last. */
	for (size_t j = 0; j < l.c[1].n; j++) {
		struct proto_record *r = &l.c[1].m[j].r;

		if (l.c[1].m[j].hello || r->type != PROTO_EVENT)
			continue;
		ck_assert_int_gt(atoi(r->message.ptr), prev);
		prev = atoi(r->message.ptr);
	}
	ck_assert_int_eq(prev, EVENTS - 1);
	listener_free(&l);
}
END_TEST

/* --------------------------------------------------------------- fork */

#ifndef __SANITIZE_THREAD__

static int has_message(struct tconn *c, const char *message)
{
	for (size_t j = 0; j < c->n; j++)
		if (!c->m[j].hello && c->m[j].r.message.ptr &&
		    !strcmp(c->m[j].r.message.ptr, message))
			return 1;
	return 0;
}

static int conn_of_pid(struct listener *l, pid_t pid)
{
	for (int i = 0; i < l->nconns; i++)
		if (l->c[i].n && l->c[i].m[0].hello &&
		    l->c[i].m[0].h.pid == (uint32_t)pid)
			return i;
	return -1;
}

START_TEST(test_fork)
{
	struct listener l;
	pid_t child;
	int status, pc, cc;

	listen_fresh(&l);
	/* A long interval: the parent's events stay buffered over fork. */
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 0, 60000);
	ctxleak_event("e", "hello");
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, "e", 1));
	ctxleak_event("e", "parent");
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		ctxleak_event("e", "child");
		ctxleak_shutdown();
		_exit(0);
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, "e", 3));
	listener_stop(&l);
	check_sites(&l);
	pc = conn_of_pid(&l, getpid());
	cc = conn_of_pid(&l, child);
	ck_assert_int_ge(pc, 0);
	ck_assert_int_ge(cc, 0);
	ck_assert_uint_ne(l.c[pc].m[0].h.instance, l.c[cc].m[0].h.instance);
	ck_assert(has_message(&l.c[cc], "child"));
	ck_assert(!has_message(&l.c[cc], "parent"));
	ck_assert(!has_message(&l.c[cc], "hello"));
	ck_assert(has_message(&l.c[pc], "parent"));
	ck_assert(!has_message(&l.c[pc], "child"));
	ck_assert_uint_eq(count_records(&l, PROTO_EVENT, "e"), 3);
	listener_free(&l);
}
END_TEST

#endif

/* ----------------------------------------------------------- SIGPIPE */

static int hung_up_enough(struct listener *l, void *arg)
{
	(void)arg;
	return l->closes_left == 0;
}

START_TEST(test_no_sigpipe)
{
	struct listener l;
	struct ctxleak_stats st;
	char big[CTXLEAK_MAX_STRING];

	ck_assert(signal(SIGPIPE, SIG_DFL) != SIG_ERR);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = 0;
	memset(&l, 0, sizeof(l));
	socket_path(&l);
	l.close_after = 1;
	l.closes_left = 3;
	listener_start(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 64 << 20, 1);
	/* Big records keep the client sending while the listener hangs up
	 * three times. */
	for (int i = 0; i < 3000; i++) {
		ctxleak_event("big", big);
		if (i % 50 == 0)
			ctxleak_flush();
	}
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, "big", 1));
	/* The third hang-up may come after the last of those records.  Then
	 * more records find the connection gone (the first write into it may
	 * still succeed, and be lost) and need a fourth. */
	ck_assert(wait_for(&l, hung_up_enough, NULL));
	for (int i = 0; i < 500; i++) {
		ctxleak_event("after", "last");
		ctxleak_flush();
		if (wait_for_ms(&l, last_event_is, "last", 10))
			break;
	}
	ck_assert(wait_for(&l, last_event_is, "last"));
	listener_stop(&l);
	ctxleak_stats(&st);
	ck_assert_uint_ge(st.connects, 4);
	check_sites(&l);
	listener_free(&l);
}
END_TEST

#ifndef __SANITIZE_THREAD__ /* forks a multi-threaded process: see main */
/* A process that exits without ctxleak_shutdown still delivers what it
 * buffered (atexit), and with no daemon its exit does not hang. */
static pid_t emit_and_exit_child(const char *path)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		init_client(path, CTXLEAK_BACKEND_THREAD, 0, 60000);
		ctxleak_event("at exit", NULL);
		exit(0);
	}
	return pid;
}

START_TEST(test_exit_flushes)
{
	struct listener l;
	int status;
	pid_t pid;

	listen_fresh(&l);
	pid = emit_and_exit_child(l.path);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert(wait_records(&l, PROTO_EVENT, "at exit", 1));
	listener_stop(&l);
	listener_free(&l);
	pid = emit_and_exit_child("/nonexistent/ctxleak.sock");
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}
END_TEST
#endif

/* Scopes that never end: the process keeps 16,384 in its ring and 65,536
 * beyond it, forgets the oldest of those beyond (counted), and every
 * other one's end still restores its pair. */
START_TEST(test_scopes_never_ended)
{
	enum { N = 90000, RING = 16384, SPILL = 65536 };
	static uint64_t x[N];
	struct ctxleak_stats st;

	init_client("/nonexistent/ctxleak.sock", CTXLEAK_BACKEND_THREAD,
		    64 << 20, 0);
	for (int i = 0; i < N; i++)
		x[i] = ctxleak_begin_child("never ended");
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.evicted, N - RING - SPILL);
	ctxleak_end(x[RING + 10]); /* evicted: restores nothing */
	ck_assert_uint_eq(ctxleak_current(), x[N - 1]);
	ctxleak_end(x[N - 1]);
	ck_assert_uint_eq(ctxleak_current(), x[N - 2]);
	ctxleak_end(x[N - SPILL + 5]); /* beyond the ring, kept */
	ck_assert_uint_eq(ctxleak_current(), x[N - SPILL + 4]);
	ctxleak_end(x[7]); /* in the ring */
	ck_assert_uint_eq(ctxleak_current(), x[6]);
	ck_assert_uint_eq(ctxleak_capture(), x[6]);
}
END_TEST

static void *end_on_this_thread(void *arg)
{
	ctxleak_end(*(uint64_t *)arg);
	*(uint64_t *)arg = ctxleak_current();
	return NULL;
}

/* A request stays open while 40,000 others begin and end, on another
 * thread: its slot came round again, and its end still restores. */
START_TEST(test_scope_outlives_the_ring)
{
	uint64_t outer, inner, arg;
	pthread_t th;

	init_client("/nonexistent/ctxleak.sock", CTXLEAK_BACKEND_GLOBAL,
		    64 << 20, 0);
	outer = ctxleak_begin("long poll");
	inner = ctxleak_begin_child("waiting");
	for (int i = 0; i < 40000; i++)
		ctxleak_end(ctxleak_begin_child("short"));
	ck_assert_uint_eq(ctxleak_current(), inner);
	arg = inner;
	pthread_create(&th, NULL, end_on_this_thread, &arg);
	pthread_join(th, NULL);
	ck_assert_uint_eq(arg, outer); /* global: the ending thread restored */
	ck_assert_uint_eq(ctxleak_current(), outer);
	ctxleak_end(outer);
	ck_assert_uint_eq(ctxleak_current(), 0);
}
END_TEST

/* Scopes ended in the order they began: each end moves later entries of
 * the scope table back into the hole, and every end still restores what
 * was current before its scope.  Built with ASan + UBSan and linked
 * statically, this once tripped a false null check on the thread's
 * state (see the top of client/api.c). */
START_TEST(test_scopes_ended_in_begin_order)
{
	uint64_t x[64];

	init_client("/nonexistent/ctxleak.sock", CTXLEAK_BACKEND_THREAD,
		    64 << 20, 0);
	for (int i = 0; i < 64; i++)
		x[i] = ctxleak_begin("nested");
	for (int i = 0; i < 64; i++) {
		ctxleak_end(x[i]);
		ck_assert_uint_eq(ctxleak_current(), i ? x[i - 1] : 0);
		ck_assert_uint_eq(ctxleak_capture(), i ? x[i - 1] : 0);
	}
}
END_TEST

/* With no daemon to take them, what shutdown could not send is counted
 * as dropped, not silently lost. */
START_TEST(test_shutdown_no_daemon_counts)
{
	struct ctxleak_stats st;

	init_client("/nonexistent/ctxleak.sock", CTXLEAK_BACKEND_THREAD, 0,
		    60000);
	for (int i = 0; i < 10; i++)
		ctxleak_event("unsent", NULL);
	ctxleak_shutdown();
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.records, 10);
	ck_assert_uint_eq(st.dropped, 10);
	ck_assert_uint_eq(st.sent_bytes, 0);
}
END_TEST

/* ------------------------------------------- shutdown, slow daemon */

/*
 * A process emits a burst, on several threads and beside busy threads,
 * and shuts down at once while a slow daemon still has most of it to
 * read.  Every record must reach the daemon or be counted as dropped:
 * records received + dropped = records produced, in every run (a loop
 * test: Check runs each in a process of its own).
 */
#define BURST_RUNS    3
#define BURST_THREADS 4
#define BURST_EVENTS  3000
#define BURST_SPIN    2

static _Atomic int burst_done;

static void *emit_burst(void *arg)
{
	static const char pad[] = "a message long enough to fill the "
				  "socket and the buffers quickly";
	uint64_t ctx = ctxleak_begin("burst");

	for (int i = 0; i < BURST_EVENTS; i++)
		ctxleak_event("b", pad);
	ctxleak_end(ctx);
	(void)arg;
	return NULL;
}

static void *spin_until_done(void *arg)
{
	while (!atomic_load_explicit(&burst_done, memory_order_relaxed))
		;
	(void)arg;
	return NULL;
}

/* Emits the burst and shuts down at once; returns the drop count. */
static uint64_t burst(const char *path)
{
	pthread_t emit[BURST_THREADS], spin[BURST_SPIN];
	struct ctxleak_stats st;

	init_client(path, CTXLEAK_BACKEND_THREAD, 64 << 20, 0);
	for (int i = 0; i < BURST_SPIN; i++)
		pthread_create(&spin[i], NULL, spin_until_done, NULL);
	for (int i = 0; i < BURST_THREADS; i++)
		pthread_create(&emit[i], NULL, emit_burst, NULL);
	for (int i = 0; i < BURST_THREADS; i++)
		pthread_join(emit[i], NULL);
	ctxleak_shutdown();
	atomic_store(&burst_done, 1);
	for (int i = 0; i < BURST_SPIN; i++)
		pthread_join(spin[i], NULL);
	ctxleak_stats(&st);
	return st.dropped;
}

static int first_conn_closed(struct listener *l, void *arg)
{
	(void)arg;
	return l->nconns > 0 && l->c[0].fd < 0;
}

static size_t api_records(struct tconn *c)
{
	size_t n = 0;

	for (size_t j = 0; j < c->n; j++)
		n += record_matches(&c->m[j], 0, NULL);
	return n;
}

/* Bounded, so that the buffer limit drops nothing: every record counted
 * in stats.dropped is then one that shutdown did not send. */
static void *emit_until_done(void *arg)
{
	for (int i = 0;
	     i < 20 * BURST_EVENTS &&
	     !atomic_load_explicit(&burst_done, memory_order_relaxed);
	     i++)
		ctxleak_event("late", NULL);
	(void)arg;
	return NULL;
}

/* Threads still emitting while shutdown runs: a record published after
 * the last batch is sent by one more, or counted, never lost. */
START_TEST(test_shutdown_while_emitting)
{
	pthread_t emit[BURST_THREADS];
	struct ctxleak_stats st;
	struct listener l;

	listen_fresh(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 64 << 20, 0);
	for (int i = 0; i < BURST_THREADS; i++)
		pthread_create(&emit[i], NULL, emit_until_done, NULL);
	ck_assert(wait_records(&l, PROTO_EVENT, "late", 1000));
	ctxleak_shutdown();
	atomic_store(&burst_done, 1);
	for (int i = 0; i < BURST_THREADS; i++)
		pthread_join(emit[i], NULL);
	ck_assert(wait_for(&l, first_conn_closed, NULL));
	listener_stop(&l);
	ck_assert_int_eq(l.nconns, 1);
	ctxleak_stats(&st);
	ck_assert_uint_eq(api_records(&l.c[0]) + st.dropped, st.records);
	listener_free(&l);
}
END_TEST

START_TEST(test_shutdown_slow_daemon)
{
	const size_t produced = BURST_THREADS * (BURST_EVENTS + 2);
	struct listener l;
	uint64_t dropped;

	memset(&l, 0, sizeof(l));
	l.read_cap = 4096;
	l.read_pause_ms = 5;
	socket_path(&l);
	listener_start(&l);
	dropped = burst(l.path);
	/* The library closes its connection at shutdown. */
	ck_assert(wait_for(&l, first_conn_closed, NULL));
	listener_stop(&l);
	ck_assert_int_eq(l.nconns, 1);
	check_sites(&l);
	ck_assert_uint_eq(api_records(&l.c[0]) + dropped, produced);
	listener_free(&l);
}
END_TEST

/* CPU ticks the shipper thread ("ctxleak-ship") has used so far. */
static long shipper_ticks(void)
{
	char path[300], buf[512];
	unsigned long utime, stime;
	long ticks = -1;
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	FILE *f;

	ck_assert_ptr_nonnull(d);
	while (ticks < 0 && (e = readdir(d)) != NULL) {
		snprintf(path, sizeof(path), "/proc/self/task/%s/stat",
			 e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		/* utime and stime are fields 14 and 15, the name field 2. */
		if (fgets(buf, sizeof(buf), f) &&
		    strstr(buf, "(ctxleak-ship)") &&
		    sscanf(
			strrchr(buf, ')') + 2,
			"%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
			&utime, &stime) == 2)
			ticks = (long)(utime + stime);
		fclose(f);
	}
	closedir(d);
	return ticks;
}

/* A daemon that accepts and then reads nothing: the shipper waits for
 * the socket instead of spinning, also with request ends waking it. */
START_TEST(test_full_socket_no_spin)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct listener l;
	int lfd, cfd;
	long before, after;

	memset(&l, 0, sizeof(l));
	socket_path(&l);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", l.path);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	ck_assert_int_ge(lfd, 0);
	ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(lfd, 1), 0);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 64 << 20, 0);
	cfd = accept(lfd, NULL, NULL);
	ck_assert_int_ge(cfd, 0);
	/* Far more than the socket holds. */
	for (int i = 0; i < 20000; i++)
		ctxleak_end(ctxleak_begin("fill the socket, then some more"));
	harness_sleep_ms(200);
	before = shipper_ticks();
	ck_assert_int_ge(before, 0);
	for (int i = 0; i < 10; i++) {
		ctxleak_end(ctxleak_begin("wake it"));
		harness_sleep_ms(100);
	}
	after = shipper_ticks();
	/* A second of waiting: spinning takes all of it, waiting next to
	 * none. */
	ck_assert_msg(after - before < sysconf(_SC_CLK_TCK) / 4,
		      "the shipper used %ld ticks in 1 s", after - before);
	close(cfd);
	close(lfd);
	ctxleak_shutdown();
	unlink(l.path);
	rmdir(l.dir);
}
END_TEST

/* ------------------------------------------------------ bad arguments */

START_TEST(test_bad_arguments)
{
	struct listener l;
	struct proto_record *r[16];
	struct ctxleak_stats st;
	char *longer = malloc(CTXLEAK_MAX_STRING + 100);
	uint64_t ctx;

	memset(longer, 'a', CTXLEAK_MAX_STRING + 99);
	longer[CTXLEAK_MAX_STRING + 99] = 0;
	start(&l, CTXLEAK_BACKEND_THREAD);
	ctx = ctxleak_begin(NULL);     /* BEGIN, name nil */
	ctxleak_tag(NULL, "v");	       /* nothing */
	ctxleak_tag("k", NULL);	       /* TAG, value nil */
	ctxleak_event(NULL, "m");      /* nothing */
	ctxleak_event("e", NULL);      /* EVENT, message nil */
	ctxleak_event(longer, longer); /* both cut */
	ctxleak_end(0);		       /* nothing */
	ctxleak_end(12345);	       /* END, nothing restored */
	ck_assert_uint_eq(ctxleak_current(), ctx);
	ck_assert_uint_eq(ctxleak_capture(), ctx);
	ctxleak_suspend(); /* no resume: SUSPEND, nothing restored */
	ck_assert_uint_eq(ctxleak_current(), ctx);
	ck_assert_uint_eq(ctxleak_capture(), ctx);
	ctxleak_end(ctx);
	ctxleak_end(ctx); /* twice: reported, the daemon calls it misnest */
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_END, NULL, 3));
	listener_stop(&l);
	ck_assert_uint_eq(select_records(&l, USER_TYPES, r, 16), 8);
	ck_assert_uint_eq(r[0]->type, PROTO_BEGIN);
	str_eq(r[0]->name, NULL);
	ck_assert_uint_eq(r[1]->type, PROTO_TAG);
	str_eq(r[1]->key, "k");
	str_eq(r[1]->value, NULL);
	ck_assert_uint_eq(r[2]->type, PROTO_EVENT);
	str_eq(r[2]->message, NULL);
	ck_assert_uint_eq(r[3]->type, PROTO_EVENT);
	ck_assert_uint_eq(r[3]->name.len, CTXLEAK_MAX_STRING);
	ck_assert_uint_eq(r[3]->message.len, CTXLEAK_MAX_STRING);
	ck_assert_uint_eq(r[4]->type, PROTO_END);
	ck_assert_uint_eq(r[4]->ctx, 12345);
	ck_assert_uint_eq(r[4]->cur, ctx);
	ck_assert_uint_eq(r[5]->type, PROTO_SUSPEND);
	ck_assert_uint_eq(r[5]->ctx, ctx);
	ck_assert_uint_eq(r[5]->cause, ctx);
	ck_assert_uint_eq(r[6]->type, PROTO_END);
	ck_assert_uint_eq(r[6]->cur, ctx);
	ck_assert_uint_eq(r[7]->type, PROTO_END);
	ck_assert_uint_eq(r[7]->ctx, ctx);
	ck_assert_uint_eq(r[7]->cur, 0);
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.truncated, 2);
	free(longer);
	listener_free(&l);
}
END_TEST

/* ------------------------------------------- disabled, uninitialised */

static void check_all_off(uint64_t records)
{
	struct ctxleak_stats st;

	ck_assert_uint_eq(ctxleak_begin("x"), 0);
	ck_assert_uint_eq(ctxleak_begin_child("x"), 0);
	ctxleak_tag("k", "v");
	ctxleak_event("e", "m");
	ctxleak_resume(42);
	ck_assert_uint_eq(ctxleak_capture(), 0);
	ctxleak_suspend();
	ctxleak_end(42);
	ck_assert_uint_eq(ctxleak_current(), 0);
	ck_assert_int_eq(ctxleak_flush(), CTXLEAK_ENOTINIT);
	ck_assert_str_eq(ctxleak_backend_name(), "none");
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.records, records);
	ctxleak_shutdown();
}

START_TEST(test_uninitialised)
{
	check_all_off(0);
}
END_TEST

START_TEST(test_disabled)
{
	struct listener l;

	listen_fresh(&l);
	setenv("CTXLEAK_DISABLE", "1", 1);
	setenv("CTXLEAK_SOCKET", l.path, 1);
	ck_assert_int_eq(ctxleak_init(NULL), CTXLEAK_EDISABLED);
	check_all_off(0);
	listener_stop(&l);
	ck_assert_int_eq(l.nconns, 0);
	listener_free(&l);
}
END_TEST

START_TEST(test_shutdown)
{
	struct listener l;
	struct ctxleak_stats st;

	/* Slow flushes: only shutdown sends the event. */
	listen_fresh(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 0, 60000);
	ctxleak_event("last", NULL);
	ctxleak_shutdown();
	ck_assert(wait_records(&l, PROTO_EVENT, "last", 1));
	ctxleak_shutdown();
	ctxleak_stats(&st);
	ck_assert_uint_eq(st.records, 1);
	check_all_off(1);
	ck_assert_int_eq(ctxleak_init(NULL), CTXLEAK_EALREADY);
	listener_stop(&l);
	listener_free(&l);
}
END_TEST

/* A thread that exits hands its records over. */
static void *emit_and_exit(void *arg)
{
	ctxleak_event("gone", arg);
	return NULL;
}

START_TEST(test_thread_exit)
{
	struct listener l;
	pthread_t t;

	start(&l, CTXLEAK_BACKEND_THREAD);
	for (int i = 0; i < 50; i++) {
		pthread_create(&t, NULL, emit_and_exit, "bye");
		pthread_join(t, NULL);
	}
	ctxleak_flush();
	ck_assert(wait_records(&l, PROTO_EVENT, "gone", 50));
	listener_stop(&l);
	ck_assert_uint_eq(count_records(&l, PROTO_EVENT, "gone"), 50);
	listener_free(&l);
}
END_TEST

/* ---------------------------------------------------------- watermark */

static _Atomic int keep_emitting;

/* Bursts with pauses: the shipper and the listener share the CPUs. */
static void *emit_until_told(void *arg)
{
	while (atomic_load(&keep_emitting)) {
		for (int i = 0; i < 20; i++)
			ctxleak_event("w", arg);
		usleep(1000);
	}
	return NULL;
}

/* No record arrives after a watermark that is not newer than it. */
static void check_watermarks(struct tconn *c, size_t *marks)
{
	uint64_t wm = 0;

	for (size_t j = 0; j < c->n; j++) {
		struct proto_record *r = &c->m[j].r;

		if (c->m[j].hello || r->type == PROTO_SITE)
			continue;
		if (r->type == PROTO_WATERMARK) {
			ck_assert_uint_gt(r->ts, wm);
			wm = r->ts;
			++*marks;
		} else if (r->type != PROTO_DROPPED) {
			ck_assert_msg(r->ts > wm,
				      "record at %" PRIu64
				      " after watermark %" PRIu64,
				      r->ts, wm);
		}
	}
}

START_TEST(test_watermark)
{
	struct listener l;
	pthread_t t[4];
	size_t marks = 0;

	listen_fresh(&l);
	init_client(l.path, CTXLEAK_BACKEND_THREAD, 0, 1);
	atomic_store(&keep_emitting, 1);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, emit_until_told, "x");
	ck_assert(wait_records(&l, PROTO_WATERMARK, NULL, 50));
	atomic_store(&keep_emitting, 0);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	ctxleak_flush();
	listener_stop(&l);
	for (int i = 0; i < l.nconns; i++)
		check_watermarks(&l.c[i], &marks);
	ck_assert_uint_ge(marks, 50);
	listener_free(&l);
}
END_TEST

/* ---------------------------------------------------------- libevent */

/* The worked example again, as libevent callbacks wrapped by
 * ctxleak_event.h.  The test steps the loop one callback at a time, so
 * the order is the example's whatever the machine's speed. */
struct loop_example {
	struct event_base *base;
	uint64_t id[4];
	struct event *db[2]; /* the DB callbacks of A and B */
};

static void db_done(evutil_socket_t fd, short what, void *arg)
{
	uint64_t *ctx = arg;

	(void)fd, (void)what;
	ctxleak_event("db.done", NULL);
	if (ctx[0] == ctx[1]) /* request A's callback */
		ctxleak_tag("status", "200");
	ctxleak_end(ctx[0]);
}

static struct loop_example ex;

static void accept_req(evutil_socket_t fd, short what, void *arg)
{
	static uint64_t pair[3][2];
	int i = (int)(intptr_t)arg;
	static const char *const names[] = {"GET /a", "GET /b", "GET /c"};
	static const char *const users[] = {"alice", "bob"};

	(void)fd, (void)what;
	ex.id[A + i] = ctxleak_begin(names[i]);
	if (i == 2) {
		ctxleak_end(ex.id[C]);
		return;
	}
	ctxleak_tag("user", users[i]);
	pair[i][0] = ex.id[A + i];
	pair[i][1] = ex.id[A]; /* db_done tags status only for A */
	ex.db[i] = ctxleak_event_new(ex.base, -1, 0, db_done, pair[i]);
	ck_assert_ptr_nonnull(ex.db[i]);
}

static void step(void)
{
	ck_assert_int_ge(event_base_loop(ex.base, EVLOOP_NONBLOCK), 0);
}

static void accept_step(int i)
{
	struct timeval now = {0, 0};

	ck_assert_int_eq(ctxleak_event_base_once(ex.base, -1, EV_TIMEOUT,
						 accept_req,
						 (void *)(intptr_t)i, &now),
			 0);
	step();
}

static void db_step(int i)
{
	event_active(ex.db[i], EV_TIMEOUT, 1);
	step();
	ctxleak_event_free(ex.db[i]);
}

static void run_loop_example(struct listener *l)
{
	ex.base = event_base_new();
	ck_assert_ptr_nonnull(ex.base);
	accept_step(0);
	accept_step(1);
	db_step(0);
	db_step(1);
	accept_step(2);
	event_base_free(ex.base);
	ctxleak_flush();
	ck_assert(wait_records(l, 0, NULL, NEXPECT));
	listener_stop(l);
	check_sites(l);
}

START_TEST(test_libevent_task)
{
	struct listener l;

	ck_assert_int_eq(ctxleak_libevent_setup(), CTXLEAK_OK);
	unsetenv("CTXLEAK_BACKEND");
	start(&l, CTXLEAK_BACKEND_AUTO);
	ck_assert_str_eq(ctxleak_backend_name(), "task");
	run_loop_example(&l);
	check_example(&l, task_slot, ex.id);
	listener_free(&l);
}
END_TEST

START_TEST(test_libevent_thread)
{
	struct listener l;

	start(&l, CTXLEAK_BACKEND_THREAD);
	run_loop_example(&l);
	check_example(&l, shared_slot, ex.id);
	listener_free(&l);
}
END_TEST

static void on_read(struct bufferevent *bev, void *arg)
{
	char buf[16];

	*(uint64_t *)arg = ctxleak_capture();
	bufferevent_read(bev, buf, sizeof(buf));
}

/* A bufferevent's callbacks run in the context that set them, and the
 * wrappers are freed (LeakSanitizer and valgrind check). */
START_TEST(test_libevent_bufferevent)
{
	struct listener l;
	struct event_base *base = event_base_new();
	struct bufferevent *bev;
	uint64_t ctx, seen = 0;
	int sv[2];

	start(&l, CTXLEAK_BACKEND_THREAD);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(bev);
	ctx = ctxleak_begin("conn");
	ck_assert_int_eq(
	    ctxleak_bufferevent_setcb(bev, on_read, NULL, NULL, &seen), 0);
	/* Set again: the first wrapper is replaced and freed. */
	ck_assert_int_eq(
	    ctxleak_bufferevent_setcb(bev, on_read, NULL, NULL, &seen), 0);
	bufferevent_enable(bev, EV_READ);
	ctxleak_end(ctx);
	ck_assert_uint_eq(ctxleak_capture(), 0);
	ck_assert_int_eq(write(sv[1], "x", 1), 1);
	ck_assert_int_eq(event_base_loop(base, EVLOOP_ONCE), 0);
	ck_assert_uint_eq(seen, ctx);
	ck_assert_uint_eq(ctxleak_capture(), 0);
	ctxleak_bufferevent_free(bev);
	close(sv[1]);
	event_base_free(base);
	listener_stop(&l);
	listener_free(&l);
}
END_TEST

/* --------------------------------------------------------------- main */

int main(void)
{
	TCase *backends =
	    check_tcase("backends", 0, test_global_is_shared,
			test_thread_is_per_thread, test_custom_backend, NULL);
	/* The shipping tests move a few hundred thousand records. */
	TCase *ship = check_tcase("shipping", 30, test_threads,
				  test_thread_exit, test_daemon_appears, NULL);
	TCase *robust = check_tcase("robustness", 30, test_reconnect, NULL);
	TCase *slow_daemon = check_tcase("slow daemon", 60,
					 test_shutdown_no_daemon_counts, NULL);

	tcase_add_loop_test(backends, test_observe_backend, 0, 2);
	tcase_add_test(backends, test_auto_without_scheduler);
	tcase_add_test(backends, test_auto_with_scheduler);
	tcase_add_test(backends, test_environment);
	tcase_add_test(backends, test_bad_backend);
	tcase_add_loop_test(backends, test_truth_random, 0, 6);
	tcase_add_loop_test(ship, test_says_unreachable, 0, 2);
	tcase_add_test(ship, test_stats_connected);
	tcase_add_test(ship, test_buffer_limit);
	tcase_add_test(ship, test_watermark);
#ifndef __SANITIZE_THREAD__
	/* The child starts the library's thread again, as a real child
	 * does, and ThreadSanitizer cannot follow threads made after a
	 * multi-threaded fork.  The plain and ASan runs cover it. */
	tcase_add_test(robust, test_fork);
	tcase_add_test(robust, test_exit_flushes);
#endif
	tcase_add_test(robust, test_no_sigpipe);
	tcase_add_test(robust, test_bad_arguments);
	tcase_add_test(robust, test_scopes_never_ended);
	tcase_add_test(robust, test_scope_outlives_the_ring);
	tcase_add_test(robust, test_scopes_ended_in_begin_order);
	tcase_add_loop_test(slow_daemon, test_shutdown_while_emitting, 0,
			    BURST_RUNS);
	tcase_add_loop_test(slow_daemon, test_shutdown_slow_daemon, 0,
			    BURST_RUNS);
	tcase_add_test(slow_daemon, test_full_socket_no_spin);
	return check_main(
	    check_suite("client",
			check_tcase("api", 0, test_every_call, test_hello,
				    test_shutdown, test_uninitialised,
				    test_disabled, NULL),
			check_tcase("libevent", 0, test_libevent_task,
				    test_libevent_thread,
				    test_libevent_bufferevent, NULL),
			check_tcase("worked example", 0, test_example_thread,
				    test_example_global, test_example_task,
				    NULL),
			backends, ship, robust, slow_daemon, NULL),
	    NULL);
}
