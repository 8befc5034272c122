/*
 * event_loop.c: a libevent server with asynchronous callbacks, the model
 * where one thread serves many requests in turn.
 *
 * The server speaks a tiny line protocol on an abstract Unix socket: the
 * client sends "item-N\n", the server begins a request, queries its
 * "database" (a timer of a few hundred microseconds, standing for a round
 * trip to another service), replies "200 item-N\n" and ends the request.
 * A load generator thread in the same process keeps CONNECTIONS requests in
 * flight at once, so their callbacks interleave on the loop's thread.
 *
 * The connection's callbacks and the database's are registered through
 * ctxleak_event.h, so each runs resumed in the context that registered it
 * and the database callback of a request carries that request as its
 * truth.  The accept callback needs none: it runs in no request and
 * records nothing.  With
 * the task backend the context follows; with thread and global the loop's
 * one slot holds whichever request began last, and the requests' tags,
 * events and ends land in each other.
 *
 * usage: event_loop [REQUESTS]
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctxleak_event.h"
#include "example.h"

#define CONNECTIONS 16

struct server {
	struct event_base *base;
	unsigned expected, served, open;
};

struct conn {
	struct server *srv;
	struct bufferevent *bev;
	uint64_t request;
	char item[32];
	unsigned seq;
};

/* ------------------------------------------------------------- server */

static void db_reply(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	ctxleak_event("db.done", "1 row");
	ctxleak_tag("status", "200");
	evbuffer_add_printf(bufferevent_get_output(c->bev), "200 %s\n",
			    c->item);
	ctxleak_end(c->request);
	c->srv->served++;
}

static void on_request(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct timeval latency = {0, 100 + 150 * (c->seq++ % 4)};
	char *line;

	line =
	    evbuffer_readln(bufferevent_get_input(bev), NULL, EVBUFFER_EOL_LF);
	if (!line)
		return;
	snprintf(c->item, sizeof(c->item), "%s", line);
	free(line);
	c->request = ctxleak_begin("GET /item");
	ctxleak_tag("item", c->item);
	if (ctxleak_event_base_once(c->srv->base, -1, EV_TIMEOUT, db_reply, c,
				    &latency) < 0)
		example_fail("event_base_once");
}

static void on_close(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct server *srv = c->srv;

	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	ctxleak_bufferevent_free(bev);
	free(c);
	if (--srv->open == 0 && srv->served == srv->expected)
		event_base_loopbreak(srv->base);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd,
		      struct sockaddr *sa, int len, void *arg)
{
	struct server *srv = arg;
	struct conn *c = calloc(1, sizeof(*c));

	(void)l;
	(void)sa;
	(void)len;
	if (!c)
		example_fail("calloc");
	c->srv = srv;
	c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev)
		example_fail("bufferevent_socket_new");
	if (ctxleak_bufferevent_setcb(c->bev, on_request, NULL, on_close, c))
		example_fail("ctxleak_bufferevent_setcb");
	bufferevent_enable(c->bev, EV_READ);
	srv->open++;
}

/* ----------------------------------------------------- load generator */

struct load {
	struct sockaddr_un addr;
	socklen_t addrlen;
	unsigned requests;
};

static void send_line(int fd, const char *line)
{
	size_t len = strlen(line);

	if (write(fd, line, len) != (ssize_t)len)
		example_fail("load: write");
}

/* Replies are short and the client sends one request at a time per
 * connection, so a reply is the bytes up to its newline. */
static void read_reply(int fd)
{
	char c;

	do {
		if (read(fd, &c, 1) != 1)
			example_fail("load: read");
	} while (c != '\n');
}

static void *generate(void *arg)
{
	struct load *load = arg;
	unsigned nconn =
	    load->requests < CONNECTIONS ? load->requests : CONNECTIONS;
	int fd[CONNECTIONS];
	unsigned sent = 0, i, round;
	char line[32];

	for (i = 0; i < nconn; i++) {
		fd[i] = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd[i] < 0 || connect(fd[i], (struct sockaddr *)&load->addr,
					 load->addrlen) < 0)
			example_fail("load: connect");
	}
	while (sent < load->requests) {
		for (round = 0; round < nconn && sent < load->requests;
		     round++) {
			snprintf(line, sizeof(line), "item-%u\n", sent++);
			send_line(fd[round], line);
		}
		for (i = 0; i < round; i++)
			read_reply(fd[i]);
	}
	for (i = 0; i < nconn; i++)
		close(fd[i]);
	return NULL;
}

/* An abstract socket: nothing to clean up on the file system. */
static void load_address(struct load *load)
{
	int len;

	memset(&load->addr, 0, sizeof(load->addr));
	load->addr.sun_family = AF_UNIX;
	len = snprintf(load->addr.sun_path + 1, sizeof(load->addr.sun_path) - 1,
		       "ctxleak-event-loop-%ld", (long)getpid());
	load->addrlen = offsetof(struct sockaddr_un, sun_path) + 1 + len;
}

int main(int argc, char **argv)
{
	struct load load = {.requests = example_requests(argc, argv, 1000)};
	struct server srv = {.expected = load.requests};
	struct evconnlistener *listener;
	pthread_t generator;
	int rc;

	ctxleak_libevent_setup();
	example_start("event_loop", NULL);
	load_address(&load);
	if (!(srv.base = event_base_new()))
		example_fail("event_base_new");
	listener = evconnlistener_new_bind(
	    srv.base, on_accept, &srv,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 64,
	    (struct sockaddr *)&load.addr, (int)load.addrlen);
	if (!listener)
		example_fail("listen");
	rc = pthread_create(&generator, NULL, generate, &load);
	if (rc) {
		errno = rc;
		example_fail("pthread_create");
	}
	event_base_dispatch(srv.base);
	pthread_join(generator, NULL);
	printf("event_loop: %u requests over %u connections on one libevent "
	       "thread, backend %s\n",
	       srv.served, CONNECTIONS, ctxleak_backend_name());
	evconnlistener_free(listener);
	event_base_free(srv.base);
	ctxleak_shutdown();
	return srv.served == load.requests ? 0 : 1;
}
