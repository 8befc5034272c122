/*
 * test_event.c: the libevent adapter (client/ctxleak_event.h) on real
 * libevent, with the real client library and the real daemon.
 *
 * Foreign events (made by event_new or evtimer_new, not by the adapter)
 * pass through the wrappers untouched, initialised or not, disabled or
 * not.  Servers built only from the wrappers give zero findings under the
 * task backend: timers and a signal, each in its own request; an
 * evconnlistener server whose accept callback begins a request per
 * connection (and, unwrapped, the overlaps that leaves); an evhttp server
 * whose handlers know nothing of ctxleak, with several requests open at
 * once and deferred replies.  Under thread and global the same evhttp
 * server gives findings: the truth is carried, the loop's slot is not.
 * A listener's error callback is given the application's argument.
 * evhttp requests whose client goes away before a deferred reply (closed,
 * reset, timed out, a POST reset, evhttp_free with replies held), and
 * those of a handler with an on-complete callback of its own, each end
 * exactly once, and none is reported unclosed.
 */
#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "check_main.h"
#include "ctxleak_event.h"
#include "harness_check.h"

/* Connections open at once in the server tests. */
#define CONNS 8
/* The evhttp test's requests: SLOW deferred replies held until all of
 * them have arrived and FAST replied in the handler, each on a connection
 * of its own (HTTP/1.0), then two on one kept-alive connection (HTTP/1.1,
 * pipelined): one more /fast and a 404 from the generic callback. */
#define SLOW	      6
#define FAST	      3
#define HTTP_CONNS    (SLOW + FAST + 1)
#define HTTP_REQUESTS (SLOW + FAST + 2)

/* Fork, run fn in the child, return its exit status (-1: it died).  The
 * child leaves through exit(), so that a sanitizer's leak check runs. */
static int in_child(int (*fn)(void))
{
	pid_t pid;
	int st;

	fflush(NULL);
	pid = fork();
	if (pid == 0)
		exit(fn());
	ck_assert_int_ne(pid, -1);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ------------------------------------------------------ foreign events */

/* What a foreign timer's callback is given: smaller than the adapter's
 * wrapper, so that reading it as one runs past its end. */
struct small {
	int fired; /* how often the callback ran */
};

static void count_fired(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	((struct small *)arg)->fired++;
}

/*
 * A timer of evtimer_new armed with ctxleak_event_add and freed with
 * ctxleak_event_free: both are libevent's own calls, the callback gets
 * its argument, and the argument stays the caller's.  The adapter's own
 * timer next to it runs too.  0 when all held.
 */
static int foreign_timer(void)
{
	struct event_base *base = event_base_new();
	struct small *arg = calloc(1, sizeof(*arg));
	struct small mine = {0};
	struct timeval now = {0, 0};
	struct event *ev, *own;

	if (!base || !arg)
		return 10;
	ev = evtimer_new(base, count_fired, arg);
	own = ctxleak_evtimer_new(base, count_fired, &mine);
	if (!ev || !own)
		return 11;
	if (ctxleak_event_add(ev, &now) || ctxleak_event_add(own, &now))
		return 12;
	event_base_dispatch(base);
	if (arg->fired != 1 || mine.fired != 1)
		return 13;
	/* Arm it again: the argument is still the caller's. */
	if (ctxleak_event_add(ev, &now))
		return 14;
	event_base_dispatch(base);
	if (arg->fired != 2)
		return 15;
	ctxleak_event_free(ev);
	ctxleak_event_free(own);
	arg->fired = 0; /* still ours: the wrapper freed nothing of it */
	free(arg);
	event_base_free(base);
	return 0;
}

START_TEST(test_foreign_event_uninitialised)
{
	ck_assert_int_eq(in_child(foreign_timer), 0);
}
END_TEST

static int foreign_timer_disabled(void)
{
	setenv("CTXLEAK_DISABLE", "1", 1);
	if (ctxleak_init(NULL) != CTXLEAK_EDISABLED)
		return 20;
	return foreign_timer();
}

START_TEST(test_foreign_event_disabled)
{
	ck_assert_int_eq(in_child(foreign_timer_disabled), 0);
}
END_TEST

/*
 * Under task, two requests begun in a callback (resume(0) ... suspend):
 * one arms a foreign timer and one of the adapter's, the other a signal
 * through ctxleak_evsignal_new.  The foreign timer passes through; the
 * adapter's timer and the signal run in their requests and end them.
 */
struct in_request {
	uint64_t req; /* the request */
	int fired;    /* how often its callback ran */
};

static void end_request(evutil_socket_t fd, short what, void *arg)
{
	struct in_request *r = arg;

	(void)fd;
	(void)what;
	ctxleak_tag("status", "200");
	ctxleak_end(r->req);
	r->fired++;
}

/* The signal's request: its callback is given its event
 * (event_self_cbarg), to delete it. */
static struct in_request on_usr1;

static void end_signal(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	ctxleak_tag("signal", sig == SIGUSR1 ? "USR1" : "?");
	ctxleak_end(on_usr1.req);
	on_usr1.fired++;
	event_del(arg);
}

static int timers_signals_task(void *unused)
{
	struct in_request r = {0, 0};
	struct event_base *base = event_base_new();
	struct small foreign = {0};
	struct timeval now = {0, 0};
	struct event *own, *ev, *sig;

	(void)unused;
	if (!base)
		return 30;
	ctxleak_resume(0);
	r.req = ctxleak_begin("GET /timer");
	own = ctxleak_evtimer_new(base, end_request, &r);
	ev = evtimer_new(base, count_fired, &foreign);
	if (!own || !ev || ctxleak_event_add(ev, &now) || event_add(own, &now))
		return 31;
	ctxleak_suspend();
	ctxleak_resume(0);
	on_usr1.req = ctxleak_begin("SIGNAL");
	sig =
	    ctxleak_evsignal_new(base, SIGUSR1, end_signal, event_self_cbarg());
	if (!sig || event_add(sig, NULL))
		return 32;
	ctxleak_suspend();
	raise(SIGUSR1);
	event_base_dispatch(base);
	ctxleak_event_free(ev);
	ctxleak_event_free(own);
	ctxleak_event_free(sig);
	event_base_free(base);
	if (r.fired != 1 || foreign.fired != 1 || on_usr1.fired != 1)
		return 33;
	return foreign_timer();
}

START_TEST(test_timers_signals_task)
{
	struct harness_daemon d;

	START(&d, "--keep", "all");
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_TASK, timers_signals_task, NULL),
	    0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "end_ts IS NOT NULL"),
			 2);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	ck_assert_int_eq(
	    query_int(&d,
		      "SELECT count(*) FROM tags t JOIN requests r ON "
		      "r.id = t.request_id WHERE r.name = 'GET /timer' "
		      "AND t.key = 'status' AND t.setter_request_id = r.id"),
	    1);
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM tags t JOIN requests r ON "
			  "r.id = t.request_id WHERE r.name = 'SIGNAL' AND "
			  "t.key = 'signal' AND t.value = 'USR1' AND "
			  "t.setter_request_id = r.id"),
	    1);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------ listener */

/*
 * The evconnlistener server: its accept callback begins a request per
 * connection and registers the connection's bufferevent in it; a line
 * read there arms a reply timer, whose callback replies and ends the
 * request.  The load, a thread of the same process that makes no ctxleak
 * call, opens CONNS connections before it writes a line on any, so that
 * the requests are open together.
 */
struct lserver {
	struct event_base *base;    /* the loop, on the process's main thread */
	struct evconnlistener *lev; /* the listener */
	struct sockaddr_un addr;    /* an abstract socket */
	socklen_t addrlen;	    /* its length */
	int accepted, closed;	    /* lines read, connections closed */
	int plain; /* accept through evconnlistener_new_bind, unwrapped */
};

struct lconn {
	struct lserver *srv;	 /* its server */
	struct bufferevent *bev; /* the connection */
	struct event *reply;	 /* the reply timer */
	uint64_t req;		 /* the connection's request */
	char line[32];		 /* the line it read */
};

static void lconn_reply(evutil_socket_t fd, short what, void *arg)
{
	struct lconn *c = arg;

	(void)fd;
	(void)what;
	ctxleak_tag("status", "200");
	evbuffer_add_printf(bufferevent_get_output(c->bev), "ok %s\n", c->line);
	ctxleak_end(c->req);
}

static void lconn_read(struct bufferevent *bev, void *arg)
{
	struct lconn *c = arg;
	/* Replies come back in another order than the lines came in. */
	struct timeval later = {0, 1000 * (c->srv->accepted % 3)};
	char *line =
	    evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_LF);

	if (!line)
		return;
	snprintf(c->line, sizeof(c->line), "%s", line);
	free(line);
	ctxleak_tag("line", c->line);
	c->srv->accepted++;
	c->reply = ctxleak_evtimer_new(c->srv->base, lconn_reply, c);
	if (c->reply)
		event_add(c->reply, &later);
}

static void lconn_event(struct bufferevent *bev, short what, void *arg)
{
	struct lconn *c = arg;
	struct lserver *srv = c->srv;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	ctxleak_bufferevent_free(bev);
	if (c->reply)
		ctxleak_event_free(c->reply);
	free(c);
	if (++srv->closed == CONNS)
		event_base_loopbreak(srv->base);
}

static void lserver_accept(struct evconnlistener *lev, evutil_socket_t fd,
			   struct sockaddr *sa, int len, void *arg)
{
	struct lserver *srv = arg;
	struct lconn *c = calloc(1, sizeof(*c));

	(void)lev;
	(void)sa;
	(void)len;
	if (!c) {
		close(fd);
		return;
	}
	c->srv = srv;
	c->req = ctxleak_begin("CONN");
	ctxleak_tag("peer", "unix");
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev ||
	    ctxleak_bufferevent_setcb(c->bev, lconn_read, NULL, lconn_event, c))
		abort();
	bufferevent_enable(c->bev, EV_READ);
}

static void *lserver_load(void *arg)
{
	struct lserver *srv = arg;
	int fd[CONNS], i;
	char line[32], reply[64];
	ssize_t n, got;

	for (i = 0; i < CONNS; i++) {
		fd[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd[i] < 0 ||
		    connect(fd[i], (struct sockaddr *)&srv->addr, srv->addrlen))
			abort();
	}
	for (i = 0; i < CONNS; i++) {
		n = snprintf(line, sizeof(line), "line-%d\n", i);
		if (write(fd[i], line, n) != n)
			abort();
	}
	for (i = 0; i < CONNS; i++) {
		/* "ok line-N\n", up to its newline */
		for (got = 0; got == 0 || reply[got - 1] != '\n'; got += n)
			if ((n = read(fd[i], reply + got,
				      sizeof(reply) - 1 - got)) <= 0)
				abort();
		reply[got] = '\0';
		snprintf(line, sizeof(line), "ok line-%d\n", i);
		if (strcmp(reply, line))
			abort();
		close(fd[i]);
	}
	return NULL;
}

static int lserver_run(void *arg)
{
	struct lserver srv = {.plain = arg != NULL};
	pthread_t load;
	int len;

	srv.addr.sun_family = AF_UNIX;
	len = snprintf(srv.addr.sun_path + 1, sizeof(srv.addr.sun_path) - 1,
		       "ctxleak-test-event-%ld", (long)getpid());
	srv.addrlen = offsetof(struct sockaddr_un, sun_path) + 1 + len;
	if (!(srv.base = event_base_new()))
		return 40;
	if (srv.plain)
		srv.lev = evconnlistener_new_bind(
		    srv.base, lserver_accept, &srv, LEV_OPT_CLOSE_ON_FREE,
		    CONNS, (struct sockaddr *)&srv.addr, (int)srv.addrlen);
	else
		srv.lev = ctxleak_evconnlistener_new_bind(
		    srv.base, lserver_accept, &srv, LEV_OPT_CLOSE_ON_FREE,
		    CONNS, (struct sockaddr *)&srv.addr, (int)srv.addrlen);
	if (!srv.lev)
		return 41;
	if (pthread_create(&load, NULL, lserver_load, &srv))
		return 42;
	event_base_dispatch(srv.base);
	pthread_join(load, NULL);
	if (srv.plain)
		evconnlistener_free(srv.lev);
	else
		ctxleak_evconnlistener_free(srv.lev);
	event_base_free(srv.base);
	return srv.closed == CONNS ? 0 : 43;
}

/* Runs the listener server under backend against a fresh daemon (kept
 * for the caller's queries); every request must have ended. */
static void run_lserver(struct harness_daemon *d, enum ctxleak_backend backend,
			void *plain)
{
	START(d, "--keep", "all");
	ck_assert_int_eq(harness_client(d, backend, lserver_run, plain), 0);
	ck_assert_int_eq(harness_stop(d), 0);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests WHERE "
				      "name = 'CONN' AND end_ts IS NOT NULL"),
			 CONNS);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests"), CONNS);
}

START_TEST(test_listener_task)
{
	struct harness_daemon d;

	run_lserver(&d, CTXLEAK_BACKEND_TASK, NULL);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	/* Each connection's tags are its own, set in its own context. */
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM tags WHERE "
				       "setter_request_id = request_id"),
			 3 * CONNS);
	ck_assert_int_eq(query_int(&d, "SELECT count(DISTINCT value) FROM "
				       "tags WHERE key = 'line'"),
			 CONNS);
	harness_cleanup(&d);
}
END_TEST

/*
 * The same server with the accept callback registered by
 * evconnlistener_new_bind itself, under task: each request begun there
 * stays current, and the next connection's request begins over it, one
 * overlap or stale on each BEGIN but the first, and nothing else.
 */
START_TEST(test_listener_unwrapped_task)
{
	struct harness_daemon d;

	run_lserver(&d, CTXLEAK_BACKEND_TASK, "plain");
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"),
			 CONNS - 1);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "record = 'BEGIN' AND class IN "
				       "('overlap', 'stale')"),
			 CONNS - 1);
	harness_cleanup(&d);
}
END_TEST

/* Under thread the loop's one slot holds whichever request began last:
 * the second connection's BEGIN at least finds the first there. */
START_TEST(test_listener_thread)
{
	struct harness_daemon d;

	run_lserver(&d, CTXLEAK_BACKEND_THREAD, NULL);
	ck_assert_int_ge(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "record = 'BEGIN'"),
			 1);
	harness_cleanup(&d);
}
END_TEST

/* -------------------------------------------------------------- evhttp */

/*
 * The evhttp server.  Its handlers make no begin or end: /slow tags its
 * id and defers its reply to a timer registered in the handler, held
 * until all SLOW requests have arrived (so that they are all open at
 * once, whatever the timing) and then run in the order they came; /fast
 * replies in the handler; anything else gets a 404 from the generic
 * callback.  The load, a thread of the same process that makes no ctxleak
 * call, sends every request (see HTTP_CONNS) before it reads any reply,
 * reads each connection to the end (the server closes after the last
 * reply, once its request completed) and then wakes the loop through a
 * pipe to stop it.
 */
struct hserver {
	struct event_base *base;  /* the loop, on the process's main thread */
	struct evhttp *http;	  /* the server */
	int port;		  /* its port on 127.0.0.1 */
	int stop[2];		  /* the load writes a byte when done */
	struct hslow *slow[SLOW]; /* the deferred replies, in arrival order */
	int nslow;		  /* how many /slow requests have come */
};

struct hslow {
	struct evhttp_request *req; /* the request to reply to */
	struct event *reply;	    /* the timer, made in the request */
	char id[16];		    /* the request's id */
};

/* The request's id (its query's "id=..."), tagged on the request. */
static void tag_id(struct evhttp_request *req, char *id, size_t size)
{
	const char *q =
	    evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));

	snprintf(id, size, "%s", q && !strncmp(q, "id=", 3) ? q + 3 : "?");
	ctxleak_tag("id", id);
}

static void send_text(struct evhttp_request *req, int code, const char *text)
{
	struct evbuffer *body = evbuffer_new();

	if (!body)
		abort();
	evbuffer_add_printf(body, "%s\n", text);
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Not Found", body);
	evbuffer_free(body);
}

static void slow_reply(evutil_socket_t fd, short what, void *arg)
{
	struct hslow *s = arg;

	(void)fd;
	(void)what;
	ctxleak_event("db.done", s->id);
	ctxleak_tag("reply", s->id);
	send_text(s->req, 200, s->id);
}

static void on_slow(struct evhttp_request *req, void *arg)
{
	struct hserver *srv = arg;
	struct hslow *s = calloc(1, sizeof(*s));
	int i;

	if (!s || srv->nslow == SLOW)
		abort();
	s->req = req;
	tag_id(req, s->id, sizeof(s->id));
	if (!(s->reply = ctxleak_evtimer_new(srv->base, slow_reply, s)))
		abort();
	srv->slow[srv->nslow++] = s;
	if (srv->nslow < SLOW)
		return;
	/* The last one in arms them all: event_add keeps each timer's own
	 * context (ctxleak_event_add would give them this one). */
	for (i = 0; i < SLOW; i++)
		event_add(srv->slow[i]->reply, &(struct timeval){0, 0});
}

static void on_fast(struct evhttp_request *req, void *arg)
{
	char id[16];

	(void)arg;
	tag_id(req, id, sizeof(id));
	send_text(req, 200, id);
}

static void on_other(struct evhttp_request *req, void *arg)
{
	char id[16];

	(void)arg;
	tag_id(req, id, sizeof(id));
	send_text(req, 404, id);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

/* What connection i of the load sends: request i, or on the last one
 * requests i and i + 1. */
static int load_request(char *buf, size_t size, int i)
{
	if (i < SLOW + FAST)
		return snprintf(
		    buf, size,
		    "GET %s?id=%d HTTP/1.0\r\nHost: localhost\r\n\r\n",
		    i < SLOW ? "/slow" : "/fast", i);
	return snprintf(buf, size,
			"GET /fast?id=%d HTTP/1.1\r\nHost: localhost\r\n\r\n"
			"GET /nope?id=%d HTTP/1.1\r\nHost: localhost\r\n"
			"Connection: close\r\n\r\n",
			i, i + 1);
}

/* Past the reply to request id, with status line status, at the start of
 * buf (the load aborts on anything else). */
static const char *load_reply(const char *buf, const char *status, int id)
{
	char body[32];
	size_t len = strlen(status);
	const char *end;

	snprintf(body, sizeof(body), "\r\n\r\n%d\n", id);
	if (strncmp(buf, status, len) || !(end = strstr(buf, body)))
		abort();
	return end + strlen(body);
}

static void *hserver_load(void *arg)
{
	struct hserver *srv = arg;
	struct sockaddr_in sin = {.sin_family = AF_INET};
	int fd[HTTP_CONNS], i;
	char buf[2048];
	ssize_t n, got;
	const char *rest;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(srv->port);
	for (i = 0; i < HTTP_CONNS; i++) {
		fd[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fd[i] < 0 ||
		    connect(fd[i], (struct sockaddr *)&sin, sizeof(sin)))
			abort();
		n = load_request(buf, sizeof(buf), i);
		if (write(fd[i], buf, n) != n)
			abort();
	}
	for (i = 0; i < HTTP_CONNS; i++) {
		/* to the end: the server closes after the last reply */
		for (got = 0;
		     (n = read(fd[i], buf + got, sizeof(buf) - 1 - got)) > 0;
		     got += n)
			;
		if (n < 0)
			abort();
		buf[got] = '\0';
		if (i < SLOW + FAST) {
			rest = load_reply(buf, "HTTP/1.0 200 OK\r\n", i);
		} else {
			rest = load_reply(buf, "HTTP/1.1 200 OK\r\n", i);
			rest = load_reply(rest, "HTTP/1.1 404 Not Found\r\n",
					  i + 1);
		}
		if (*rest)
			abort();
		close(fd[i]);
	}
	if (write(srv->stop[1], "", 1) != 1)
		abort();
	return NULL;
}

static int hserver_run(void *unused)
{
	struct hserver srv = {0};
	struct evhttp_bound_socket *bound;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct event *stop;
	pthread_t load;
	int i;

	(void)unused;
	if (!(srv.base = event_base_new()) ||
	    !(srv.http = evhttp_new(srv.base)))
		return 50;
	if (ctxleak_evhttp_set_cb(srv.http, "/slow", on_slow, &srv) ||
	    ctxleak_evhttp_set_cb(srv.http, "/fast", on_fast, &srv) ||
	    ctxleak_evhttp_set_gencb(srv.http, on_other, &srv))
		return 51;
	/* A second registration of a path fails as evhttp_set_cb does. */
	if (ctxleak_evhttp_set_cb(srv.http, "/fast", on_fast, &srv) != -1)
		return 52;
	bound = evhttp_bind_socket_with_handle(srv.http, "127.0.0.1", 0);
	if (!bound || getsockname(evhttp_bound_socket_get_fd(bound),
				  (struct sockaddr *)&sin, &len))
		return 53;
	srv.port = ntohs(sin.sin_port);
	if (pipe(srv.stop) ||
	    !(stop = ctxleak_event_new(srv.base, srv.stop[0], EV_READ, on_stop,
				       srv.base)) ||
	    event_add(stop, NULL))
		return 54;
	if (pthread_create(&load, NULL, hserver_load, &srv))
		return 55;
	event_base_dispatch(srv.base);
	pthread_join(load, NULL);
	ctxleak_event_free(stop);
	close(srv.stop[0]);
	close(srv.stop[1]);
	for (i = 0; i < srv.nslow; i++) {
		ctxleak_event_free(srv.slow[i]->reply);
		free(srv.slow[i]);
	}
	ctxleak_evhttp_free(srv.http);
	event_base_free(srv.base);
	return srv.nslow == SLOW ? 0 : 56;
}

static void run_hserver(struct harness_daemon *d, enum ctxleak_backend backend)
{
	START(d, "--keep", "all");
	ck_assert_int_eq(harness_client(d, backend, hserver_run, NULL), 0);
	ck_assert_int_eq(harness_stop(d), 0);
	/* One request per HTTP request, named by method and path, all
	 * ended. */
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests"),
			 HTTP_REQUESTS);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests WHERE "
				      "end_ts IS NOT NULL"),
			 HTTP_REQUESTS);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests WHERE "
				      "name = 'GET /slow'"),
			 SLOW);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests WHERE "
				      "name = 'GET /fast'"),
			 FAST + 1);
	ck_assert_int_eq(query_int(d, "SELECT count(*) FROM requests WHERE "
				      "name = 'GET /nope'"),
			 1);
}

START_TEST(test_evhttp_task)
{
	struct harness_daemon d;

	run_hserver(&d, CTXLEAK_BACKEND_TASK);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	/* method and path on each request, set in it and matching its
	 * name */
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM requests r "
			  "JOIN tags m ON m.request_id = r.id AND m.key = "
			  "'method' AND m.setter_request_id = r.id "
			  "JOIN tags p ON p.request_id = r.id AND p.key = "
			  "'path' AND p.setter_request_id = r.id "
			  "WHERE r.name = m.value || ' ' || p.value"),
	    HTTP_REQUESTS);
	/* Each request's id, set by its handler, on itself, each once. */
	ck_assert_int_eq(query_int(&d, "SELECT count(DISTINCT request_id) "
				       "FROM tags WHERE key = 'id' AND "
				       "setter_request_id = request_id"),
			 HTTP_REQUESTS);
	ck_assert_int_eq(query_int(&d, "SELECT count(DISTINCT value) FROM "
				       "tags WHERE key = 'id'"),
			 HTTP_REQUESTS);
	/* The deferred reply's tag lands on its own request, beside the
	 * handler's id. */
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(*) FROM tags i JOIN tags r ON "
			  "r.request_id = i.request_id AND r.key = 'reply' "
			  "AND r.setter_request_id = r.request_id WHERE "
			  "i.key = 'id' AND i.value = r.value"),
	    SLOW);
	harness_cleanup(&d);
}
END_TEST

/*
 * Under thread or global the truth is carried and the loop's one slot is
 * not.  What the slot holds at each BEGIN depends on when the /fast
 * requests complete, but not at the deferred replies: they run back to
 * back in the order their requests came, and once the first has ended its
 * request, the slot holds what was there before that request began, which
 * is never the second one, whose reply is then recorded under another
 * request or none.
 */
static const enum ctxleak_backend leaky_backends[] = {
    CTXLEAK_BACKEND_THREAD,
    CTXLEAK_BACKEND_GLOBAL,
};

START_TEST(test_evhttp_leaky)
{
	struct harness_daemon d;

	run_hserver(&d, leaky_backends[_i]);
	ck_assert_int_ge(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "record IN ('TAG', 'EVENT') AND "
				       "victim_name = 'GET /slow'"),
			 1);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------ clients that go away */

/*
 * Requests whose client goes away before the reply, in each way evhttp
 * has of dropping one, on a server whose handler /hold defers its reply
 * (HOLDS requests, each on a connection of its own) until the load says
 * the clients have gone:
 *
 * - GONE_CLOSE: the client closes (FIN) while the reply is held;
 * - GONE_RESET: the client resets (SO_LINGER 0) while it is held;
 * - GONE_TIMEOUT: the client stays but reads nothing, and evhttp's
 *   timeout drops the connection;
 * - GONE_POST_RESET: a POST, reset; evhttp stops reading a connection
 *   once the body is in, so it learns of the reset from the reply;
 * - GONE_FREE: evhttp_free while the replies are held, with a kept-alive
 *   connection beside them whose request completed.
 *
 * What evhttp makes of it depends on its version.  libevent 2.1.8 reads
 * the connection while the reply is held: it sees the EOF, the reset or
 * the timeout at once, frees the connection and leaves the request to
 * the handler, detached; the deferred evhttp_send_reply then frees it and
 * sends nothing.  2.1.9 and later stop reading once the handler has the
 * request (libevent commit 5ff8eb26) and learn of it from the reply:
 * written to a closed client it completes; to a reset one it fails, and
 * evhttp frees the connection and the request; to a client that reads
 * nothing it times out, the same.  Either way each request is to end
 * exactly once.  The handler of every case but GONE_FREE sets a close
 * callback through ctxleak_evhttp_connection_set_closecb (after one it
 * replaces and removes), which says when evhttp is done with the
 * connection.
 */
enum gone_how {
	GONE_CLOSE,
	GONE_RESET,
	GONE_TIMEOUT,
	GONE_POST_RESET,
	GONE_FREE,
};

/* Requests held at once in each case. */
#define HOLDS 3
/* GONE_TIMEOUT's reply: more than a client that reads nothing and the
 * server's socket can hold between them. */
#define BIG_REPLY (8 << 20)

struct gserver {
	struct event_base *base; /* the loop, on the process's main thread */
	struct evhttp *http;	 /* the server */
	int port;		 /* its port on 127.0.0.1 */
	enum gone_how how;	 /* the case */
	int held[2]; /* the handler writes a byte per request it holds */
	int go[2];   /* the load writes a byte once its clients have gone */
	int client[HOLDS];	   /* the load's sockets (GONE_TIMEOUT: closed
				      once the loop is done) */
	struct ghold *hold[HOLDS]; /* the held requests, in arrival order */
	int nhold;		   /* how many have come */
	int replied;		   /* deferred replies made */
	int closed;		   /* close callbacks run */
};

struct ghold {
	struct gserver *srv;	    /* its server */
	struct evhttp_request *req; /* NULL once replied to: libevent's */
	struct event *reply;	    /* the reply's event, made in the request */
	char id[16];		    /* the request's id */
};

/* Every reply made and every connection closed: the case is over. */
static void gserver_maybe_stop(struct gserver *srv)
{
	if (srv->replied == HOLDS && srv->closed == HOLDS)
		event_base_loopbreak(srv->base);
}

/* The application's close callback: once per connection, in the request
 * that set it. */
static void ghold_closed(struct evhttp_connection *evcon, void *arg)
{
	struct ghold *h = arg;

	(void)evcon;
	ctxleak_tag("gone", h->id);
	h->srv->closed++;
	gserver_maybe_stop(h->srv);
}

/* A close callback replaced or removed before the connection closes:
 * never runs. */
static void ghold_closed_never(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	(void)arg;
	abort();
}

/* The deferred reply, once the client has gone: libevent sends it, fails
 * to, or (the request detached) frees the request; the request is
 * libevent's after it. */
static void ghold_reply(evutil_socket_t fd, short what, void *arg)
{
	struct ghold *h = arg;
	struct evbuffer *body;

	(void)fd;
	(void)what;
	ctxleak_tag("reply", h->id);
	if (h->srv->how == GONE_TIMEOUT) {
		if (!(body = evbuffer_new()) ||
		    evbuffer_expand(body, BIG_REPLY))
			abort();
		while (evbuffer_get_length(body) < BIG_REPLY)
			evbuffer_add(body, "0123456789abcdef", 16);
		evhttp_send_reply(h->req, 200, "OK", body);
		evbuffer_free(body);
	} else {
		send_text(h->req, 200, h->id);
	}
	h->req = NULL;
	h->srv->replied++;
	gserver_maybe_stop(h->srv);
}

static void on_hold(struct evhttp_request *req, void *arg)
{
	struct gserver *srv = arg;
	struct ghold *h = calloc(1, sizeof(*h));
	struct evhttp_connection *evcon;

	if (!h || srv->nhold == HOLDS)
		abort();
	h->srv = srv;
	h->req = req;
	tag_id(req, h->id, sizeof(h->id));
	srv->hold[srv->nhold++] = h;
	if (srv->how == GONE_FREE) {
		if (srv->nhold == HOLDS)
			event_base_loopbreak(srv->base);
	} else {
		/* Set, replaced, removed and set again: only the last runs. */
		evcon = evhttp_request_get_connection(req);
		if (ctxleak_evhttp_connection_set_closecb(
			evcon, ghold_closed_never, h) ||
		    ctxleak_evhttp_connection_set_closecb(
			evcon, ghold_closed_never, srv) ||
		    ctxleak_evhttp_connection_set_closecb(evcon, NULL, NULL) ||
		    ctxleak_evhttp_connection_set_closecb(evcon, ghold_closed,
							  h))
			abort();
		/* The byte stays in the pipe: each request's event fires
		 * once. */
		h->reply = ctxleak_event_new(srv->base, srv->go[0], EV_READ,
					     ghold_reply, h);
		if (!h->reply || event_add(h->reply, NULL))
			abort();
	}
	if (write(srv->held[1], "", 1) != 1)
		abort();
}

static int gload_connect(const struct gserver *srv)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(srv->port);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)))
		abort();
	return fd;
}

/* Read fd to its end; how many bytes came (the load aborts on an
 * error). */
static ssize_t gload_drain(int fd, char *buf, size_t size)
{
	ssize_t n, got = 0;

	while ((n = read(fd, buf + got, size - 1 - got)) > 0)
		got += n;
	if (n < 0)
		abort();
	buf[got] = '\0';
	return got;
}

/* Close fd with a reset rather than a FIN. */
static void gload_reset(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)))
		abort();
	close(fd);
}

static void *gload(void *arg)
{
	struct gserver *srv = arg;
	int kept = -1, i, n;
	char buf[2048], c;
	const char *end;

	if (srv->how == GONE_FREE) {
		/* One request completed on a connection that stays. */
		kept = gload_connect(srv);
		n = snprintf(buf, sizeof(buf),
			     "GET /fast?id=%d HTTP/1.1\r\nHost: localhost\r\n"
			     "\r\n",
			     HOLDS);
		if (write(kept, buf, n) != n)
			abort();
		for (n = 0; !(end = strstr(buf, "\r\n\r\n3\n")); n += i) {
			if ((i = read(kept, buf + n, sizeof(buf) - 1 - n)) <=
			    0)
				abort();
			buf[n + i] = '\0';
		}
	}
	for (i = 0; i < HOLDS; i++) {
		srv->client[i] = gload_connect(srv);
		if (srv->how == GONE_TIMEOUT) {
			/* A small window, soon full. */
			n = 4096;
			if (setsockopt(srv->client[i], SOL_SOCKET, SO_RCVBUF,
				       &n, sizeof(n)))
				abort();
		}
		if (srv->how == GONE_POST_RESET)
			n = snprintf(buf, sizeof(buf),
				     "POST /hold?id=%d HTTP/1.0\r\n"
				     "Host: localhost\r\nContent-Length: 4\r\n"
				     "\r\nbody",
				     i);
		else
			n = snprintf(buf, sizeof(buf),
				     "GET /hold?id=%d HTTP/1.0\r\n"
				     "Host: localhost\r\n\r\n",
				     i);
		if (write(srv->client[i], buf, n) != n ||
		    read(srv->held[0], &c, 1) != 1)
			abort();
	}
	for (i = 0; i < HOLDS; i++) {
		switch (srv->how) {
		case GONE_CLOSE:
			close(srv->client[i]);
			break;
		case GONE_RESET:
		case GONE_POST_RESET:
			gload_reset(srv->client[i]);
			break;
		case GONE_TIMEOUT:
			break;
		case GONE_FREE:
			/* The server closes, with no reply. */
			if (gload_drain(srv->client[i], buf, sizeof(buf)))
				abort();
			close(srv->client[i]);
			break;
		}
	}
	if (srv->how != GONE_FREE && write(srv->go[1], "", 1) != 1)
		abort();
	if (kept >= 0) {
		gload_drain(kept, buf, sizeof(buf));
		close(kept);
	}
	return NULL;
}

static int gserver_run(void *arg)
{
	struct gserver srv = {.how = *(const enum gone_how *)arg};
	struct evhttp_bound_socket *bound;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	pthread_t load;
	int i;

	/* A write to a reset connection fails with EPIPE, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	if (!(srv.base = event_base_new()) ||
	    !(srv.http = evhttp_new(srv.base)) || pipe(srv.held) ||
	    pipe(srv.go))
		return 70;
	if (ctxleak_evhttp_set_cb(srv.http, "/hold", on_hold, &srv) ||
	    ctxleak_evhttp_set_cb(srv.http, "/fast", on_fast, &srv))
		return 71;
	if (srv.how == GONE_TIMEOUT)
		evhttp_set_timeout_tv(srv.http, &(struct timeval){0, 200000});
	bound = evhttp_bind_socket_with_handle(srv.http, "127.0.0.1", 0);
	if (!bound || getsockname(evhttp_bound_socket_get_fd(bound),
				  (struct sockaddr *)&sin, &len))
		return 72;
	srv.port = ntohs(sin.sin_port);
	if (pthread_create(&load, NULL, gload, &srv))
		return 73;
	event_base_dispatch(srv.base);
	/* GONE_FREE: the requests are held yet; the others are gone. */
	ctxleak_evhttp_free(srv.http);
	pthread_join(load, NULL);
	for (i = 0; srv.how == GONE_TIMEOUT && i < HOLDS; i++)
		close(srv.client[i]);
	for (i = 0; i < srv.nhold; i++) {
		if (srv.hold[i]->reply)
			ctxleak_event_free(srv.hold[i]->reply);
		free(srv.hold[i]);
	}
	event_base_free(srv.base);
	for (i = 0; i < 2; i++) {
		close(srv.held[i]);
		close(srv.go[i]);
	}
	if (srv.nhold != HOLDS)
		return 74;
	if (srv.how != GONE_FREE && (srv.replied != HOLDS || srv.closed != HOLDS))
		return 75;
	return 0;
}

static const enum gone_how gone_cases[] = {
    GONE_CLOSE, GONE_RESET, GONE_TIMEOUT, GONE_POST_RESET, GONE_FREE,
};

/*
 * Under task, each case: every request the handler saw is one request,
 * ended exactly once (one END each, no misnest), none unclosed, and no
 * finding at all: what the application's close callback tags lands in
 * the request, and the reply made after the request ended is its late
 * work.
 */
START_TEST(test_evhttp_client_gone)
{
	struct harness_daemon d;
	int want = HOLDS + (gone_cases[_i] == GONE_FREE);

	START(&d, "--keep", "all");
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_TASK, gserver_run,
					(void *)&gone_cases[_i]),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests"), want);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "name = 'GET /hold' OR name = "
				       "'POST /hold'"),
			 HOLDS);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "class = 'unclosed'"),
			 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "end_ts IS NOT NULL"),
			 want);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records WHERE "
				       "type = 'END'"),
			 want);
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(DISTINCT ctx) FROM records WHERE "
			  "type = 'END'"),
	    want);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	/* The close callback's tag, once per request, in it (a record: the
	 * tags table may leave out a tag that comes after the END). */
	if (gone_cases[_i] != GONE_FREE)
		ck_assert_int_eq(
		    query_int(&d, "SELECT count(DISTINCT request_id) FROM "
				  "records WHERE type = 'TAG' AND name = "
				  "'gone' AND ctx = cause"),
		    HOLDS);
	harness_cleanup(&d);
}
END_TEST

/*
 * A handler that sets an on-complete callback of its own, replacing the
 * adapter's, on a kept-alive connection with two requests: the first
 * one's scope ends when the second arrives (evhttp reads it only once
 * the first completed), the second's when evhttp closes the connection
 * after it.
 */
static void own_complete(struct evhttp_request *req, void *arg)
{
	(void)req;
	++*(int *)arg;
}

static void on_own(struct evhttp_request *req, void *arg)
{
	struct gserver *srv = arg;
	char id[16];

	tag_id(req, id, sizeof(id));
	evhttp_request_set_on_complete_cb(req, own_complete, &srv->replied);
	send_text(req, 200, id);
}

static void *own_load(void *arg)
{
	struct gserver *srv = arg;
	int fd = gload_connect(srv), n;
	char buf[2048];
	const char *rest;

	n = snprintf(buf, sizeof(buf), "%s",
		     "GET /own?id=0 HTTP/1.1\r\nHost: localhost\r\n\r\n"
		     "GET /own?id=1 HTTP/1.1\r\nHost: localhost\r\n"
		     "Connection: close\r\n\r\n");
	if (write(fd, buf, n) != n)
		abort();
	gload_drain(fd, buf, sizeof(buf));
	rest = load_reply(buf, "HTTP/1.1 200 OK\r\n", 0);
	if (*load_reply(rest, "HTTP/1.1 200 OK\r\n", 1))
		abort();
	close(fd);
	if (write(srv->go[1], "", 1) != 1)
		abort();
	return NULL;
}

static int own_run(void *unused)
{
	struct gserver srv = {.how = GONE_CLOSE};
	struct evhttp_bound_socket *bound;
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	struct event *stop;
	pthread_t load;

	(void)unused;
	if (!(srv.base = event_base_new()) ||
	    !(srv.http = evhttp_new(srv.base)) || pipe(srv.go) ||
	    ctxleak_evhttp_set_cb(srv.http, "/own", on_own, &srv))
		return 80;
	bound = evhttp_bind_socket_with_handle(srv.http, "127.0.0.1", 0);
	if (!bound || getsockname(evhttp_bound_socket_get_fd(bound),
				  (struct sockaddr *)&sin, &len))
		return 81;
	srv.port = ntohs(sin.sin_port);
	if (!(stop = ctxleak_event_new(srv.base, srv.go[0], EV_READ, on_stop,
				       srv.base)) ||
	    event_add(stop, NULL) ||
	    pthread_create(&load, NULL, own_load, &srv))
		return 82;
	event_base_dispatch(srv.base);
	pthread_join(load, NULL);
	ctxleak_event_free(stop);
	ctxleak_evhttp_free(srv.http);
	event_base_free(srv.base);
	close(srv.go[0]);
	close(srv.go[1]);
	return srv.replied == 2 ? 0 : 83;
}

START_TEST(test_evhttp_own_on_complete)
{
	struct harness_daemon d;

	START(&d, "--keep", "all");
	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_TASK, own_run, NULL),
			 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM requests WHERE "
				       "name = 'GET /own' AND end_ts IS NOT "
				       "NULL"),
			 2);
	ck_assert_int_eq(
	    query_int(&d, "SELECT count(DISTINCT ctx) FROM records WHERE "
			  "type = 'END'"),
	    2);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM records WHERE "
				       "type = 'END'"),
			 2);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM leaks"), 0);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------- registrations */

static void accept_count(struct evconnlistener *lev, evutil_socket_t fd,
			 struct sockaddr *sa, int len, void *arg)
{
	(void)sa;
	(void)len;
	close(fd);
	((struct small *)arg)->fired++;
	event_base_loopbreak(evconnlistener_get_base(lev));
}

static void http_never(struct evhttp_request *req, void *arg)
{
	(void)req;
	(void)arg;
	abort();
}

/* How many wrappers the registry holds. */
static int registered(void)
{
	struct ctxleak_ev_reg *w;
	int n = 0;

	for (w = ctxleak_ev_registry()->head; w; w = w->next)
		n++;
	return n;
}

/*
 * Every way to replace or remove a listener's or an evhttp's callback
 * frees the wrapper it replaces, exactly once (the leak check and ASan
 * under SAN=1 say so), and the listener's new callback is the one that
 * runs.  0 when all held.
 */
static int registrations(void)
{
	struct event_base *base = event_base_new();
	struct small first = {0}, second = {0};
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	socklen_t addrlen;
	struct evconnlistener *lev;
	struct evhttp *http;
	int fd, client, len;

	len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1,
		       "ctxleak-test-event-reg-%ld", (long)getpid());
	addrlen = offsetof(struct sockaddr_un, sun_path) + 1 + len;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	/* nonblocking, as evconnlistener_new wants: it accepts until
	 * EAGAIN */
	if (!base || fd < 0 || bind(fd, (struct sockaddr *)&addr, addrlen) ||
	    evutil_make_socket_nonblocking(fd))
		return 60;
	lev = ctxleak_evconnlistener_new(base, accept_count, &first,
					 LEV_OPT_CLOSE_ON_FREE, 4, fd);
	if (!lev || registered() != 1 ||
	    ctxleak_evconnlistener_set_cb(lev, accept_count, &second) ||
	    registered() != 1)
		return 61;
	client = socket(AF_UNIX, SOCK_STREAM, 0);
	if (client < 0 || connect(client, (struct sockaddr *)&addr, addrlen))
		return 62;
	event_base_dispatch(base);
	close(client);
	if (first.fired != 0 || second.fired != 1)
		return 63;
	if (ctxleak_evconnlistener_set_cb(lev, NULL, NULL) || registered())
		return 64;
	ctxleak_evconnlistener_free(lev);

	if (!(http = evhttp_new(base)) ||
	    ctxleak_evhttp_set_cb(http, "/a", http_never, NULL) ||
	    ctxleak_evhttp_set_cb(http, "/b", http_never, NULL) ||
	    ctxleak_evhttp_set_gencb(http, http_never, NULL) ||
	    ctxleak_evhttp_set_gencb(http, http_never, &first) ||
	    registered() != 3)
		return 65;
	if (ctxleak_evhttp_del_cb(http, "/a") ||
	    ctxleak_evhttp_del_cb(http, "/a") != -1 || registered() != 2)
		return 66;
	if (ctxleak_evhttp_set_gencb(http, NULL, NULL) || registered() != 1)
		return 67;
	ctxleak_evhttp_free(http);
	event_base_free(base);
	return registered() ? 68 : 0;
}

START_TEST(test_registrations)
{
	ck_assert_int_eq(in_child(registrations), 0);
}
END_TEST

/* What the listener's error callback was given, and how often it ran. */
static void *accept_error_arg;
static int accept_errors;

static void accept_error(struct evconnlistener *lev, void *arg)
{
	accept_error_arg = arg;
	accept_errors++;
	event_base_loopbreak(evconnlistener_get_base(lev));
}

/* An error callback replaced before any error: never runs. */
static void accept_error_never(struct evconnlistener *lev, void *arg)
{
	(void)lev;
	(void)arg;
	abort();
}

/* Descriptors this process may hold in listener_error. */
#define FD_LIMIT 64

/*
 * An accept that fails (EMFILE: every descriptor below the limit is
 * taken) on a listener whose accept callback is wrapped: the error
 * callback, set through ctxleak_evconnlistener_set_error_cb (after one it
 * replaces), runs and is given the application's argument, not the
 * adapter's wrapper; the accept callback does not run; the wrappers go
 * with the listener.  0 when all held.
 */
static int listener_error(void)
{
	struct event_base *base = event_base_new();
	struct small accepted = {0};
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct rlimit old, lim;
	struct evconnlistener *lev;
	int fill[FD_LIMIT], nfill = 0, fd, client, len, rc = 0;
	socklen_t addrlen;

	len = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1,
		       "ctxleak-test-event-err-%ld", (long)getpid());
	addrlen = offsetof(struct sockaddr_un, sun_path) + 1 + len;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (!base || fd < 0 || bind(fd, (struct sockaddr *)&addr, addrlen) ||
	    evutil_make_socket_nonblocking(fd))
		return 90;
	lev = ctxleak_evconnlistener_new(base, accept_count, &accepted,
					 LEV_OPT_CLOSE_ON_FREE, 4, fd);
	if (!lev ||
	    ctxleak_evconnlistener_set_error_cb(lev, accept_error_never) ||
	    ctxleak_evconnlistener_set_error_cb(lev, accept_error) ||
	    registered() != 2)
		return 91;
	client = socket(AF_UNIX, SOCK_STREAM, 0);
	if (client < 0 || client >= FD_LIMIT - 1 ||
	    connect(client, (struct sockaddr *)&addr, addrlen) ||
	    getrlimit(RLIMIT_NOFILE, &old))
		return 92;
	lim = old;
	lim.rlim_cur = FD_LIMIT;
	if (setrlimit(RLIMIT_NOFILE, &lim))
		return 93;
	while (nfill < FD_LIMIT &&
	       (fill[nfill] = open("/dev/null", O_RDONLY)) >= 0)
		nfill++;
	if (errno != EMFILE)
		rc = 94;
	else
		event_base_dispatch(base);
	while (nfill > 0)
		close(fill[--nfill]);
	setrlimit(RLIMIT_NOFILE, &old);
	if (!rc && (accept_errors != 1 || accept_error_arg != &accepted ||
		    accepted.fired != 0))
		rc = 95;
	ctxleak_evconnlistener_free(lev);
	close(client);
	event_base_free(base);
	return rc ? rc : registered() ? 96 : 0;
}

START_TEST(test_listener_error)
{
	ck_assert_int_eq(in_child(listener_error), 0);
}
END_TEST

/* Disabled or not initialised, the servers run as they would without the
 * adapter (their own checks hold: the application's close callbacks run,
 * once each), with no daemon to talk to. */
static int servers_quiet(void)
{
	int rc = lserver_run(NULL);
	size_t i;

	if (!rc)
		rc = hserver_run(NULL);
	for (i = 0; !rc && i < sizeof(gone_cases) / sizeof(gone_cases[0]);
	     i++)
		rc = gserver_run((void *)&gone_cases[i]);
	return rc ? rc : own_run(NULL);
}

START_TEST(test_servers_uninitialised)
{
	ck_assert_int_eq(in_child(servers_quiet), 0);
}
END_TEST

static int servers_disabled(void)
{
	setenv("CTXLEAK_DISABLE", "1", 1);
	if (ctxleak_init(NULL) != CTXLEAK_EDISABLED)
		return 20;
	return servers_quiet();
}

START_TEST(test_servers_disabled)
{
	ck_assert_int_eq(in_child(servers_disabled), 0);
}
END_TEST

static Suite *event_suite(void)
{
	Suite *s = suite_create("event");
	TCase *tc;

	suite_add_tcase(s, check_tcase("foreign", 0,
				       test_foreign_event_uninitialised,
				       test_foreign_event_disabled,
				       test_timers_signals_task, NULL));
	tc = check_tcase("servers", 0, test_listener_task,
			 test_listener_unwrapped_task, test_listener_thread,
			 test_evhttp_task, NULL);
	tcase_add_loop_test(tc, test_evhttp_leaky, 0,
			    sizeof(leaky_backends) / sizeof(leaky_backends[0]));
	tcase_add_loop_test(tc, test_evhttp_client_gone, 0,
			    sizeof(gone_cases) / sizeof(gone_cases[0]));
	tcase_add_test(tc, test_evhttp_own_on_complete);
	tcase_add_test(tc, test_registrations);
	tcase_add_test(tc, test_listener_error);
	tcase_add_test(tc, test_servers_uninitialised);
	tcase_add_test(tc, test_servers_disabled);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(event_suite(), NULL);
}
