/*
 * ctxleak_event.h: libctxleak's integration with libevent 2.1 (2.1.8 or
 * later), header only (libctxleak itself does not link libevent).
 *
 * Each wrapper registers a libevent callback so that it runs resumed in a
 * context: events, timers, signals and bufferevents in the one that
 * registered them (the token is captured at registration, the callback is
 * entered with ctxleak_resume(token) and left with ctxleak_suspend());
 * accept callbacks in no request; evhttp handlers in a request of their
 * own.  One line per registration:
 *
 *	event_new(base, fd, what, cb, arg)
 *	    -> ctxleak_event_new(base, fd, what, cb, arg)
 *	evtimer_new(base, cb, arg)   -> ctxleak_evtimer_new(base, cb, arg)
 *	evsignal_new(base, sig, cb, arg)
 *	    -> ctxleak_evsignal_new(base, sig, cb, arg)
 *	event_add(ev, tv)            -> ctxleak_event_add(ev, tv)
 *	event_free(ev)               -> ctxleak_event_free(ev)
 *	event_base_once(base, fd, what, cb, arg, tv)
 *	    -> ctxleak_event_base_once(base, fd, what, cb, arg, tv)
 *	bufferevent_setcb(bev, readcb, writecb, eventcb, arg)
 *	    -> ctxleak_bufferevent_setcb(bev, readcb, writecb, eventcb, arg)
 *	bufferevent_free(bev)        -> ctxleak_bufferevent_free(bev)
 *	evconnlistener_new(base, cb, arg, flags, backlog, fd)
 *	    -> ctxleak_evconnlistener_new(base, cb, arg, flags, backlog, fd)
 *	evconnlistener_new_bind(base, cb, arg, flags, backlog, sa, len)
 *	    -> ctxleak_evconnlistener_new_bind(base, cb, arg, flags, backlog,
 *					       sa, len)
 *	evconnlistener_set_cb(lev, cb, arg)
 *	    -> ctxleak_evconnlistener_set_cb(lev, cb, arg)
 *	evconnlistener_set_error_cb(lev, cb)
 *	    -> ctxleak_evconnlistener_set_error_cb(lev, cb)
 *	evconnlistener_free(lev)     -> ctxleak_evconnlistener_free(lev)
 *	evhttp_set_cb(http, path, cb, arg)
 *	    -> ctxleak_evhttp_set_cb(http, path, cb, arg)
 *	evhttp_del_cb(http, path)    -> ctxleak_evhttp_del_cb(http, path)
 *	evhttp_set_gencb(http, cb, arg)
 *	    -> ctxleak_evhttp_set_gencb(http, cb, arg)
 *	evhttp_free(http)            -> ctxleak_evhttp_free(http)
 *	evhttp_connection_set_closecb(evcon, cb, arg)
 *	    -> ctxleak_evhttp_connection_set_closecb(evcon, cb, arg)
 *
 * What each callback runs in:
 *
 * - An event, timer or signal: the context current at ctxleak_event_new,
 *   or at the last ctxleak_event_add, which captures it again (re-arming
 *   with event_add keeps the one it had).  A bufferevent's callbacks: the
 *   context current at ctxleak_bufferevent_setcb.  event_base_once: the
 *   one current at ctxleak_event_base_once.
 * - An accept callback: no request, i.e. ctxleak_resume(0), and whatever
 *   it begins stops being current when it returns.  A request begun there
 *   (one per connection) stays open until the application ends it, in a
 *   callback that runs in it: one registered from the accept callback,
 *   such as the connection's bufferevent.  A listener's error callback:
 *   no request either, given the application's argument; set it with
 *   ctxleak_evconnlistener_set_error_cb, since libevent hands the error
 *   callback the accept callback's argument, which on a wrapped listener
 *   is the adapter's wrapper.
 * - An evhttp handler: a request of its own, begun before the handler in
 *   no request and named "METHOD /path" (the path without its query),
 *   with tags method and path, and ended when evhttp is done with the
 *   request, whichever way, exactly once, on evhttp's loop: when its
 *   reply is written (the request's on-complete callback), or when evhttp
 *   frees the request's connection first (the connection's close
 *   callback): the client closed or reset it, a read or write timed out
 *   (evhttp_set_timeout), writing the reply failed, evhttp_free.  Both
 *   callbacks are the adapter's; the application sets a close callback
 *   of its own with ctxleak_evhttp_connection_set_closecb, which runs
 *   (in the context current where it was set) before the open request's
 *   scope ends.  Handlers need no begin/end.  A deferred reply runs in
 *   the request when the handler registers it through these wrappers
 *   (ctxleak_evtimer_new, ctxleak_event_base_once, ...); a reply made
 *   from elsewhere (a shared upstream connection) enters the request
 *   with the token the handler took with ctxleak_capture():
 *
 *	job->token = ctxleak_capture();		// in the handler
 *	...
 *	ctxleak_resume(job->token);		// where the reply is made
 *	evhttp_send_reply(job->req, 200, "OK", body);
 *	ctxleak_suspend();
 *
 *   A client gone while the handler holds its reply: libevent 2.1.8
 *   still reads the connection then, sees the EOF, reset or timeout, and
 *   frees the connection but not the request, which it detaches
 *   (evhttp_request_get_connection(req) is then NULL) and leaves to the
 *   handler; 2.1.9 and later stop reading once the handler has the
 *   request (libevent commit 5ff8eb26), so they learn of it from the
 *   reply.  Either way libevent's rule holds: a deferred handler replies
 *   (evhttp_send_reply, or evhttp_send_reply_end after a start) to every
 *   request it was given, gone client or not, unless evhttp_free (or
 *   evhttp_connection_free of its connection) freed the request first.
 *   The reply frees a detached request and sends nothing; to a reset
 *   client it fails, and libevent frees the request and its connection;
 *   to a closed one it may still be written, and the request completes.
 *   The scope ends at the first of these, once, and what the handler's
 *   callbacks record in the request after that is its late work, no
 *   finding.  A request the handler never replies to stays open as long
 *   as libevent keeps its connection (with 2.1.9 and later, until
 *   evhttp_free), and is reported unclosed when the process ends first:
 *   the service's own leak.  The adapter never touches a request after
 *   its handler returns.  An on-complete callback of the application's
 *   own (evhttp_request_set_on_complete_cb) replaces the adapter's: the
 *   scope then ends when the connection's next request arrives (evhttp
 *   reads it only once this one completed) or when the connection goes.
 *   evhttp_connection_set_closecb on such a connection replaces the
 *   adapter's close callback: a request whose client goes is then
 *   reported unclosed, and the connection's record is never freed; use
 *   ctxleak_evhttp_connection_set_closecb.
 *
 * The wrappers recognise what they made (by the callback libevent holds)
 * and pass anything else straight to libevent: ctxleak_event_add and
 * ctxleak_event_free on an event of event_new or evtimer_new are
 * event_add and event_free.  Disabled (CTXLEAK_DISABLE=1) or not yet
 * initialised, the library records nothing and the callbacks run as they
 * would without the wrappers.
 *
 * The adapter carries the truth (the cause) across callbacks; records are
 * checked against the backend.  Observing the service's own storage
 * (CTXLEAK_BACKEND_OBSERVE with a getter) finds the bugs in the service's
 * code.  Under `task` a program that carries its context only through
 * these wrappers gives no finding; under `thread` or `global` the loop's
 * one slot holds whichever request began last, and the findings are what
 * such a storage would really do.  Call ctxleak_libevent_setup() before
 * ctxleak_init(): the `auto` backend then picks `task`, and the daemon is
 * told why.
 *
 *	static void on_reply(evutil_socket_t fd, short what, void *arg)
 *	{
 *		ctxleak_tag("status", "200");	// in the request's context
 *	}
 *
 *	ctxleak_libevent_setup();
 *	ctxleak_init(NULL);
 *	...
 *	req->ctx = ctxleak_begin("GET /a");
 *	req->ev = ctxleak_event_new(base, fd, EV_READ, on_reply, req);
 *	event_add(req->ev, NULL);
 *
 * Lifetimes: the wrapper of an event (ctxleak_event_new, _evtimer_new,
 * _evsignal_new) lives as long as its event, persistent or not (a
 * non-persistent event can be added again), and ctxleak_event_free frees
 * both.  The wrapper of ctxleak_event_base_once is freed when the
 * callback runs, which libevent does exactly once; should the base be
 * freed before that, it is lost with it.  The wrapper of a bufferevent is
 * replaced by the next ctxleak_bufferevent_setcb and freed by
 * ctxleak_bufferevent_free.  The wrapper of a listener is replaced by the
 * next ctxleak_evconnlistener_set_cb and freed by
 * ctxleak_evconnlistener_free (which frees that of its error callback,
 * replaced by the next ctxleak_evconnlistener_set_error_cb, too); that of
 * an evhttp callback by ctxleak_evhttp_del_cb (or the next
 * ctxleak_evhttp_set_gencb) and by ctxleak_evhttp_free, which frees all
 * of the evhttp's.  These last two
 * kinds sit in one registry per program (libevent cannot say a listener's
 * or evhttp's callback argument), so free them with these functions.  A
 * connection evhttp serves a wrapped handler's request on has a record
 * of its own (its open request, the application's close callback), in
 * one table per program, freed by the connection's close callback, which
 * libevent calls once for each connection it frees.  Each callback may
 * free its own event, bufferevent or listener: a trampoline does not
 * touch its wrapper after the callback returns.  Replace or free
 * callbacks on the loop's thread, or while none of them runs, as
 * libevent's own arguments ask.
 */
#ifndef CTXLEAK_EVENT_H
#define CTXLEAK_EVENT_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxleak.h"

#if LIBEVENT_VERSION_NUMBER < 0x02010800
#error "ctxleak_event.h needs libevent 2.1.8 or later (evhttp on-complete)"
#endif

/*
 * One copy per program rather than per source file, for what must be the
 * same wherever the header is included: the trampolines, whose address
 * says a wrapper is ours (an event made in one file and freed in another),
 * and the registry.  Weak definitions merge at link time; elsewhere each
 * file has its own, and a wrapper made in another file is then taken for
 * a foreign one: passed through, never misread.
 */
#if defined(__GNUC__) || defined(__clang__)
#define CTXLEAK_EV_ONE __attribute__((weak))
#else
#define CTXLEAK_EV_ONE static inline
#endif

/* Declared first, for programs built with -Wmissing-prototypes. */
struct ctxleak_ev_registry;
CTXLEAK_EV_ONE void ctxleak_ev_run(evutil_socket_t fd, short what, void *p);
CTXLEAK_EV_ONE void ctxleak_bev_read(struct bufferevent *bev, void *p);
CTXLEAK_EV_ONE void ctxleak_bev_write(struct bufferevent *bev, void *p);
CTXLEAK_EV_ONE void ctxleak_bev_event(struct bufferevent *bev, short what,
				      void *p);
CTXLEAK_EV_ONE struct ctxleak_ev_registry *ctxleak_ev_registry(void);
CTXLEAK_EV_ONE void ctxleak_lev_run(struct evconnlistener *lev,
				    evutil_socket_t fd, struct sockaddr *sa,
				    int len, void *p);
CTXLEAK_EV_ONE void ctxleak_lev_error(struct evconnlistener *lev, void *p);
CTXLEAK_EV_ONE void ctxleak_http_run(struct evhttp_request *req, void *p);
struct ctxleak_http_conns;
CTXLEAK_EV_ONE struct ctxleak_http_conns *ctxleak_http_conns(void);
CTXLEAK_EV_ONE void ctxleak_http_closed(struct evhttp_connection *evcon,
					void *p);

/* Use ctxleak_libevent_setup() before ctxleak_init(). */
static inline int ctxleak_libevent_setup(void)
{
	return ctxleak_set_scheduler("libevent");
}

/* ----------------------------------------------------------- events */

struct ctxleak_ev_wrap {
	event_callback_fn fn; /* the application's callback */
	void *arg;	      /* and its argument */
	uint64_t token;	      /* the context it runs in */
};

/* The plain functions: a site inside this header would say nothing. */
CTXLEAK_EV_ONE void ctxleak_ev_run(evutil_socket_t fd, short what, void *p)
{
	struct ctxleak_ev_wrap *w = (struct ctxleak_ev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->fn(fd, what, w->arg);
	(ctxleak_suspend)();
}

/* Our wrapper on ev, or NULL: ev's argument is a struct ctxleak_ev_wrap
 * only when its callback is our trampoline. */
static inline struct ctxleak_ev_wrap *ctxleak_ev_wrapper(struct event *ev)
{
	if (event_get_callback(ev) != ctxleak_ev_run)
		return NULL;
	return (struct ctxleak_ev_wrap *)event_get_callback_arg(ev);
}

static inline struct ctxleak_ev_wrap *ctxleak_ev_wrap_new(event_callback_fn fn,
							  void *arg)
{
	struct ctxleak_ev_wrap *w =
	    (struct ctxleak_ev_wrap *)malloc(sizeof(*w));

	if (w) {
		w->fn = fn;
		w->arg = arg;
		w->token = ctxleak_capture();
	}
	return w;
}

static inline struct event *ctxleak_event_new(struct event_base *base,
					      evutil_socket_t fd, short what,
					      event_callback_fn fn, void *arg)
{
	struct ctxleak_ev_wrap *w = ctxleak_ev_wrap_new(fn, arg);
	struct event *ev;

	if (!w)
		return NULL;
	ev = event_new(base, fd, what, ctxleak_ev_run, w);
	if (!ev)
		free(w);
	else if (arg == event_self_cbarg())
		w->arg = ev; /* what libevent would have passed */
	return ev;
}

static inline struct event *ctxleak_evtimer_new(struct event_base *base,
						event_callback_fn fn, void *arg)
{
	return ctxleak_event_new(base, -1, 0, fn, arg);
}

static inline struct event *ctxleak_evsignal_new(struct event_base *base,
						 int sig, event_callback_fn fn,
						 void *arg)
{
	return ctxleak_event_new(base, sig, EV_SIGNAL | EV_PERSIST, fn, arg);
}

/* event_add, with the current context as the one the callback runs in
 * when the event is ours. */
static inline int ctxleak_event_add(struct event *ev, const struct timeval *tv)
{
	struct ctxleak_ev_wrap *w = ctxleak_ev_wrapper(ev);

	if (w)
		w->token = ctxleak_capture();
	return event_add(ev, tv);
}

static inline void ctxleak_event_free(struct event *ev)
{
	struct ctxleak_ev_wrap *w = ctxleak_ev_wrapper(ev);

	event_free(ev);
	free(w);
}

/* The wrapper goes before the callback runs: it may not come back. */
static inline void ctxleak_ev_run_once(evutil_socket_t fd, short what, void *p)
{
	struct ctxleak_ev_wrap w = *(struct ctxleak_ev_wrap *)p;

	free(p);
	(ctxleak_resume)(w.token);
	w.fn(fd, what, w.arg);
	(ctxleak_suspend)();
}

static inline int ctxleak_event_base_once(struct event_base *base,
					  evutil_socket_t fd, short what,
					  event_callback_fn fn, void *arg,
					  const struct timeval *tv)
{
	struct ctxleak_ev_wrap *w = ctxleak_ev_wrap_new(fn, arg);

	if (!w)
		return -1;
	if (event_base_once(base, fd, what, ctxleak_ev_run_once, w, tv)) {
		free(w);
		return -1;
	}
	return 0;
}

/* ----------------------------------------------------- bufferevents */

struct ctxleak_bev_wrap {
	bufferevent_data_cb readcb, writecb; /* the application's callbacks */
	bufferevent_event_cb eventcb;
	void *arg;	/* their argument */
	uint64_t token; /* the context they run in */
};

CTXLEAK_EV_ONE void ctxleak_bev_read(struct bufferevent *bev, void *p)
{
	struct ctxleak_bev_wrap *w = (struct ctxleak_bev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->readcb(bev, w->arg);
	(ctxleak_suspend)();
}

CTXLEAK_EV_ONE void ctxleak_bev_write(struct bufferevent *bev, void *p)
{
	struct ctxleak_bev_wrap *w = (struct ctxleak_bev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->writecb(bev, w->arg);
	(ctxleak_suspend)();
}

CTXLEAK_EV_ONE void ctxleak_bev_event(struct bufferevent *bev, short what,
				      void *p)
{
	struct ctxleak_bev_wrap *w = (struct ctxleak_bev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->eventcb(bev, what, w->arg);
	(ctxleak_suspend)();
}

/* Our wrapper on bev, NULL when its callbacks are not ours. */
static inline struct ctxleak_bev_wrap *
ctxleak_bev_wrapper(struct bufferevent *bev)
{
	bufferevent_data_cb r, w;
	bufferevent_event_cb e;
	void *arg;

	bufferevent_getcb(bev, &r, &w, &e, &arg);
	if (r == ctxleak_bev_read || w == ctxleak_bev_write ||
	    e == ctxleak_bev_event)
		return (struct ctxleak_bev_wrap *)arg;
	return NULL;
}

static inline int ctxleak_bufferevent_setcb(struct bufferevent *bev,
					    bufferevent_data_cb readcb,
					    bufferevent_data_cb writecb,
					    bufferevent_event_cb eventcb,
					    void *arg)
{
	struct ctxleak_bev_wrap *old = ctxleak_bev_wrapper(bev);
	struct ctxleak_bev_wrap *w;

	if (!readcb && !writecb && !eventcb) {
		/* Nothing to wrap, and nothing would find a wrapper. */
		bufferevent_setcb(bev, NULL, NULL, NULL, arg);
		free(old);
		return 0;
	}
	w = (struct ctxleak_bev_wrap *)malloc(sizeof(*w));
	if (!w)
		return -1;
	w->readcb = readcb;
	w->writecb = writecb;
	w->eventcb = eventcb;
	w->arg = arg;
	w->token = ctxleak_capture();
	bufferevent_setcb(bev, readcb ? ctxleak_bev_read : NULL,
			  writecb ? ctxleak_bev_write : NULL,
			  eventcb ? ctxleak_bev_event : NULL, w);
	free(old);
	return 0;
}

static inline void ctxleak_bufferevent_free(struct bufferevent *bev)
{
	struct ctxleak_bev_wrap *w = ctxleak_bev_wrapper(bev);

	bufferevent_free(bev);
	free(w);
}

/* ------------------------------------------- the registry of callbacks */

typedef void (*ctxleak_evhttp_cb)(struct evhttp_request *, void *);

/* The wrapper of a listener's or an evhttp's callback.  libevent gives no
 * way back from the listener or evhttp to its callback's argument, so the
 * wrappers are kept here, to be found again when replaced or freed. */
struct ctxleak_ev_reg {
	const void *owner; /* the evconnlistener or evhttp it serves */
	char *path;	   /* evhttp_set_cb's path; NULL for a listener and
			      for an evhttp's generic callback */
	union {
		evconnlistener_cb accept;
		evconnlistener_errorcb error;
		ctxleak_evhttp_cb http;
	} fn;			     /* the application's callback */
	void *arg;		     /* and its argument (none for error) */
	int error;		     /* fn is a listener's error callback */
	struct ctxleak_ev_reg *next; /* the registry's list */
};

struct ctxleak_ev_registry {
	pthread_mutex_t lock;	     /* registrations come from any thread */
	struct ctxleak_ev_reg *head; /* a handful: one per registration */
};

CTXLEAK_EV_ONE struct ctxleak_ev_registry *ctxleak_ev_registry(void)
{
	static struct ctxleak_ev_registry r = {PTHREAD_MUTEX_INITIALIZER, NULL};

	return &r;
}

/* A wrapper, not yet registered: its owner exists only once libevent has
 * made it. */
static inline struct ctxleak_ev_reg *ctxleak_ev_reg_new(const char *path,
							void *arg)
{
	struct ctxleak_ev_reg *w =
	    (struct ctxleak_ev_reg *)calloc(1, sizeof(*w));

	if (w && path && !(w->path = strdup(path))) {
		free(w);
		return NULL;
	}
	if (w)
		w->arg = arg;
	return w;
}

static inline void ctxleak_ev_reg_free(struct ctxleak_ev_reg *w)
{
	if (w)
		free(w->path);
	free(w);
}

static inline void ctxleak_ev_reg_add(struct ctxleak_ev_reg *w,
				      const void *owner)
{
	struct ctxleak_ev_registry *r = ctxleak_ev_registry();

	w->owner = owner;
	pthread_mutex_lock(&r->lock);
	w->next = r->head;
	r->head = w;
	pthread_mutex_unlock(&r->lock);
}

/*
 * Take owner's wrappers out of the registry and free them: with error
 * set, the listener's error callback; else the one for path (NULL: the
 * listener's accept callback, or the evhttp's generic one); or with all
 * set, every one of owner's.
 */
static inline void ctxleak_ev_reg_drop(const void *owner, const char *path,
				       int error, int all)
{
	struct ctxleak_ev_registry *r = ctxleak_ev_registry();
	struct ctxleak_ev_reg **pp, *w, *gone = NULL;

	pthread_mutex_lock(&r->lock);
	for (pp = &r->head; (w = *pp);) {
		if (w->owner == owner &&
		    (all || (error ? w->error
				   : !w->error &&
					 (path ? w->path &&
						     !strcmp(w->path, path)
					       : !w->path)))) {
			*pp = w->next;
			w->next = gone;
			gone = w;
		} else {
			pp = &w->next;
		}
	}
	pthread_mutex_unlock(&r->lock);
	while ((w = gone)) {
		gone = w->next;
		ctxleak_ev_reg_free(w);
	}
}

/* ---------------------------------------------------------- listeners */

/* An accept callback runs in no request: what it begins is not current
 * in the next one. */
CTXLEAK_EV_ONE void ctxleak_lev_run(struct evconnlistener *lev,
				    evutil_socket_t fd, struct sockaddr *sa,
				    int len, void *p)
{
	struct ctxleak_ev_reg *w = (struct ctxleak_ev_reg *)p;

	(ctxleak_resume)(0);
	w->fn.accept(lev, fd, sa, len, w->arg);
	(ctxleak_suspend)();
}

/* A wrapper for cb (NULL when cb is NULL, as libevent takes it) in *w;
 * -1 when out of memory. */
static inline int ctxleak_lev_wrap(evconnlistener_cb cb, void *arg,
				   struct ctxleak_ev_reg **w)
{
	*w = NULL;
	if (!cb)
		return 0;
	if (!(*w = ctxleak_ev_reg_new(NULL, arg)))
		return -1;
	(*w)->fn.accept = cb;
	return 0;
}

static inline struct evconnlistener *
ctxleak_evconnlistener_new(struct event_base *base, evconnlistener_cb cb,
			   void *arg, unsigned flags, int backlog,
			   evutil_socket_t fd)
{
	struct ctxleak_ev_reg *w;
	struct evconnlistener *lev;

	if (ctxleak_lev_wrap(cb, arg, &w))
		return NULL;
	lev = evconnlistener_new(base, w ? ctxleak_lev_run : NULL,
				 w ? (void *)w : arg, flags, backlog, fd);
	if (!lev)
		ctxleak_ev_reg_free(w);
	else if (w)
		ctxleak_ev_reg_add(w, lev);
	return lev;
}

static inline struct evconnlistener *
ctxleak_evconnlistener_new_bind(struct event_base *base, evconnlistener_cb cb,
				void *arg, unsigned flags, int backlog,
				const struct sockaddr *sa, int len)
{
	struct ctxleak_ev_reg *w;
	struct evconnlistener *lev;

	if (ctxleak_lev_wrap(cb, arg, &w))
		return NULL;
	lev = evconnlistener_new_bind(base, w ? ctxleak_lev_run : NULL,
				      w ? (void *)w : arg, flags, backlog, sa,
				      len);
	if (!lev)
		ctxleak_ev_reg_free(w);
	else if (w)
		ctxleak_ev_reg_add(w, lev);
	return lev;
}

/* Returns 0, or -1 when out of memory (the old callback then stays). */
static inline int ctxleak_evconnlistener_set_cb(struct evconnlistener *lev,
						evconnlistener_cb cb, void *arg)
{
	struct ctxleak_ev_reg *w;

	if (ctxleak_lev_wrap(cb, arg, &w))
		return -1;
	evconnlistener_set_cb(lev, w ? ctxleak_lev_run : NULL,
			      w ? (void *)w : arg);
	ctxleak_ev_reg_drop(lev, NULL, 0, 0);
	if (w)
		ctxleak_ev_reg_add(w, lev);
	return 0;
}

/*
 * libevent gives a listener's error callback the argument it gives the
 * accept callback, which for a wrapped one is the wrapper: the
 * application's error callback would be handed the adapter's memory.  It
 * is registered here instead, and this trampoline gives it the
 * application's argument (the wrapper's when the accept callback is
 * wrapped, else libevent's own), in no request, as an accept callback.
 */
CTXLEAK_EV_ONE void ctxleak_lev_error(struct evconnlistener *lev, void *p)
{
	struct ctxleak_ev_registry *r = ctxleak_ev_registry();
	evconnlistener_errorcb fn = NULL;
	struct ctxleak_ev_reg *w;
	void *arg = p;

	pthread_mutex_lock(&r->lock);
	for (w = r->head; w; w = w->next)
		if (w->owner == lev && w->error)
			fn = w->fn.error;
		else if (w->owner == lev && w == p)
			arg = w->arg;
	pthread_mutex_unlock(&r->lock);
	if (!fn)
		return; /* removed meanwhile, from another thread */
	(ctxleak_resume)(0);
	fn(lev, arg);
	(ctxleak_suspend)();
}

/* evconnlistener_set_error_cb, for any listener (wrapped accept callback
 * or not); errorcb NULL removes it.  Returns 0, or -1 when out of memory
 * (the old callback then stays). */
static inline int
ctxleak_evconnlistener_set_error_cb(struct evconnlistener *lev,
				    evconnlistener_errorcb errorcb)
{
	struct ctxleak_ev_reg *w = NULL;

	if (errorcb) {
		if (!(w = ctxleak_ev_reg_new(NULL, NULL)))
			return -1;
		w->fn.error = errorcb;
		w->error = 1;
	}
	evconnlistener_set_error_cb(lev, w ? ctxleak_lev_error : NULL);
	ctxleak_ev_reg_drop(lev, NULL, 1, 0);
	if (w)
		ctxleak_ev_reg_add(w, lev);
	return 0;
}

static inline void ctxleak_evconnlistener_free(struct evconnlistener *lev)
{
	evconnlistener_free(lev);
	ctxleak_ev_reg_drop(lev, NULL, 0, 1);
}

/* -------------------------------------------------------------- evhttp */

static inline const char *ctxleak_http_method(struct evhttp_request *req)
{
	switch (evhttp_request_get_command(req)) {
	case EVHTTP_REQ_GET:
		return "GET";
	case EVHTTP_REQ_POST:
		return "POST";
	case EVHTTP_REQ_HEAD:
		return "HEAD";
	case EVHTTP_REQ_PUT:
		return "PUT";
	case EVHTTP_REQ_DELETE:
		return "DELETE";
	case EVHTTP_REQ_OPTIONS:
		return "OPTIONS";
	case EVHTTP_REQ_TRACE:
		return "TRACE";
	case EVHTTP_REQ_CONNECT:
		return "CONNECT";
	case EVHTTP_REQ_PATCH:
		return "PATCH";
	}
	return "?";
}

/*
 * The connections the adapter follows.  libevent 2.1 completes a request
 * (calls its on-complete callback) only once its reply is written; a
 * request whose client goes away first (EOF or reset while the handler
 * defers its reply, a read or write timeout, a failed write of the reply)
 * or that evhttp_free drops never completes.  In every one of those cases
 * libevent frees the request's connection, and evhttp_connection_free
 * calls the connection's close callback first, once: that is where the
 * scope of the request still open on it ends.  evhttp serves one request
 * at a time per connection (the next is read only once the previous one
 * completed), so one connection has at most one open request:
 *
 *	handler runs ──> open = ctx ──┬─ reply written: on-complete ─> end
 *	                              └─ connection freed: close cb ─> end
 *
 * Whichever comes first ends the scope and clears open; the close
 * callback also frees the record.  libevent 2.1 has no way back from a
 * connection to its close callback's argument, hence this table.
 */
struct ctxleak_http_conn {
	const struct evhttp_connection *evcon; /* the connection: the key */
	uint64_t open; /* ctx of the request open on it; 0: none */
	/* The application's close callback (NULL: none), set through
	 * ctxleak_evhttp_connection_set_closecb, its argument, and the
	 * context it runs in. */
	void (*closecb)(struct evhttp_connection *, void *);
	void *closecb_arg;
	uint64_t closecb_token;
	struct ctxleak_http_conn *next; /* its bucket's chain */
};

struct ctxleak_http_conns {
	pthread_mutex_t lock; /* evhttp servers may run on several loops */
	struct ctxleak_http_conn **bucket; /* nbucket chains; NULL when empty */
	size_t nbucket;			   /* a power of two, or 0 */
	size_t count;			   /* connections in the table */
};

CTXLEAK_EV_ONE struct ctxleak_http_conns *ctxleak_http_conns(void)
{
	static struct ctxleak_http_conns t = {PTHREAD_MUTEX_INITIALIZER, NULL,
					      0, 0};

	return &t;
}

static inline size_t ctxleak_http_conn_hash(const void *evcon, size_t nbucket)
{
	/* Fibonacci hashing of the address, whose low bits are alignment. */
	uint64_t h = (uint64_t)(uintptr_t)evcon * 0x9e3779b97f4a7c15ULL;

	return (size_t)(h >> 32) & (nbucket - 1);
}

/* Double the buckets (from 64) once the chains average two; 0, or -1
 * when out of memory (the table then stays as it was).  Lock held. */
static inline int ctxleak_http_conns_grow(struct ctxleak_http_conns *t)
{
	size_t n = t->nbucket ? 2 * t->nbucket : 64, i, h;
	struct ctxleak_http_conn **b, *c;

	if (t->count < 2 * t->nbucket)
		return 0;
	b = (struct ctxleak_http_conn **)calloc(n, sizeof(*b));
	if (!b)
		return t->nbucket ? 0 : -1;
	for (i = 0; i < t->nbucket; i++)
		while ((c = t->bucket[i])) {
			t->bucket[i] = c->next;
			h = ctxleak_http_conn_hash(c->evcon, n);
			c->next = b[h];
			b[h] = c;
		}
	free(t->bucket);
	t->bucket = b;
	t->nbucket = n;
	return 0;
}

/*
 * evcon's record, made (and the close callback armed) when there is none
 * and create is set; NULL when there is none or out of memory.
 */
static inline struct ctxleak_http_conn *
ctxleak_http_conn_get(struct evhttp_connection *evcon, int create)
{
	struct ctxleak_http_conns *t = ctxleak_http_conns();
	struct ctxleak_http_conn *c = NULL;
	size_t h;

	pthread_mutex_lock(&t->lock);
	if (t->nbucket)
		for (c = t->bucket[ctxleak_http_conn_hash(evcon, t->nbucket)];
		     c && c->evcon != evcon; c = c->next)
			;
	if (!c && create && !ctxleak_http_conns_grow(t) &&
	    (c = (struct ctxleak_http_conn *)calloc(1, sizeof(*c)))) {
		c->evcon = evcon;
		h = ctxleak_http_conn_hash(evcon, t->nbucket);
		c->next = t->bucket[h];
		t->bucket[h] = c;
		t->count++;
		evhttp_connection_set_closecb(evcon, ctxleak_http_closed, c);
	}
	pthread_mutex_unlock(&t->lock);
	return c;
}

/* Take c out of the table (the buckets go with the last one). */
static inline void ctxleak_http_conn_drop(struct ctxleak_http_conn *c)
{
	struct ctxleak_http_conns *t = ctxleak_http_conns();
	struct ctxleak_http_conn **pp;

	pthread_mutex_lock(&t->lock);
	for (pp = &t->bucket[ctxleak_http_conn_hash(c->evcon, t->nbucket)];
	     *pp != c; pp = &(*pp)->next)
		;
	*pp = c->next;
	if (--t->count == 0) {
		free(t->bucket);
		t->bucket = NULL;
		t->nbucket = 0;
	}
	pthread_mutex_unlock(&t->lock);
}

/* The scope of the request open on c, if any, ends, in it; exactly once,
 * whoever calls first. */
static inline void ctxleak_http_end_open(struct ctxleak_http_conn *c)
{
	uint64_t ctx = c->open;

	if (!ctx)
		return;
	c->open = 0;
	(ctxleak_resume)(ctx);
	(ctxleak_end)(ctx);
	(ctxleak_suspend)();
}

/* The request is complete (its reply written): its scope ends.  The
 * request is libevent's, and not touched. */
static inline void ctxleak_http_done(struct evhttp_request *req, void *p)
{
	(void)req;
	ctxleak_http_end_open((struct ctxleak_http_conn *)p);
}

/*
 * libevent is freeing the connection: the application's close callback
 * runs (in the context it was set in), then the scope of the request
 * still open on it ends: libevent will never complete that request.  The
 * record goes, and the connection forgets it, so that nothing reaches it
 * again.
 */
CTXLEAK_EV_ONE void ctxleak_http_closed(struct evhttp_connection *evcon,
					void *p)
{
	struct ctxleak_http_conn *c = (struct ctxleak_http_conn *)p;

	if (c->closecb) {
		(ctxleak_resume)(c->closecb_token);
		c->closecb(evcon, c->closecb_arg);
		(ctxleak_suspend)();
	}
	ctxleak_http_conn_drop(c);
	evhttp_connection_set_closecb(evcon, NULL, NULL);
	ctxleak_http_end_open(c);
	free(c);
}

/*
 * evhttp_connection_set_closecb for a connection whose requests the
 * adapter serves (from a handler: evhttp_request_get_connection(req)),
 * which holds the connection's one close callback: cb runs from it, in
 * the context current here, before the open request's scope ends.  cb
 * NULL removes it.  Returns 0, or -1 when out of memory (the old callback
 * then stays).  Not for a client's outgoing connection, which libevent
 * may close and connect again: its close callback runs at each close,
 * and this one only at the first; use evhttp_connection_set_closecb.
 */
static inline int ctxleak_evhttp_connection_set_closecb(
    struct evhttp_connection *evcon,
    void (*cb)(struct evhttp_connection *, void *), void *arg)
{
	struct ctxleak_http_conn *c = ctxleak_http_conn_get(evcon, 1);

	if (!c)
		return -1;
	c->closecb = cb;
	c->closecb_arg = arg;
	c->closecb_token = ctxleak_capture();
	return 0;
}

/*
 * A handler runs in a request of its own, begun in no request (what the
 * loop's thread held before is no part of it) and left current for the
 * handler only: the request goes on in the callbacks it registers and
 * ends when libevent is done with it (above), which may be inside the
 * handler already.  A request still open on the connection when the next
 * one arrives has ended: evhttp completed it (an on-complete callback of
 * the application's own replaced the adapter's).  With no memory for the
 * connection's record, the request ends with its handler rather than
 * stay open for ever.
 */
CTXLEAK_EV_ONE void ctxleak_http_run(struct evhttp_request *req, void *p)
{
	struct ctxleak_ev_reg *w = (struct ctxleak_ev_reg *)p;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	const char *method = ctxleak_http_method(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	struct ctxleak_http_conn *c;
	char name[256];
	uint64_t ctx;
	int followed; /* the connection's record ends the scope */

	if (!path || !*path)
		path = "/";
	snprintf(name, sizeof(name), "%s %s", method, path);
	(ctxleak_resume)(0);
	c = evcon ? ctxleak_http_conn_get(evcon, 0) : NULL;
	if (c)
		ctxleak_http_end_open(c);
	ctx = (ctxleak_begin)(name);
	if (ctx && !c && evcon)
		c = ctxleak_http_conn_get(evcon, 1);
	followed = ctx && c;
	if (ctx) {
		(ctxleak_tag)("method", method);
		(ctxleak_tag)("path", path);
	}
	if (followed) {
		c->open = ctx;
		evhttp_request_set_on_complete_cb(req, ctxleak_http_done, c);
	}
	/* c may be gone when the handler returns: a reply made in it can
	 * complete the request and free its connection. */
	w->fn.http(req, w->arg);
	if (ctx && !followed)
		(ctxleak_end)(ctx);
	(ctxleak_suspend)();
}

/* A wrapper for handler cb of path (NULL: the generic one), not yet
 * registered; NULL when out of memory. */
static inline struct ctxleak_ev_reg *
ctxleak_http_wrap(const char *path, ctxleak_evhttp_cb cb, void *arg)
{
	struct ctxleak_ev_reg *w = ctxleak_ev_reg_new(path, arg);

	if (w)
		w->fn.http = cb;
	return w;
}

/* Returns what evhttp_set_cb does: 0, -1 when path has a callback
 * already, -2 on failure (out of memory included). */
static inline int ctxleak_evhttp_set_cb(struct evhttp *http, const char *path,
					ctxleak_evhttp_cb cb, void *arg)
{
	struct ctxleak_ev_reg *w = ctxleak_http_wrap(path, cb, arg);
	int rc;

	if (!w)
		return -2;
	rc = evhttp_set_cb(http, path, ctxleak_http_run, w);
	if (rc)
		ctxleak_ev_reg_free(w);
	else
		ctxleak_ev_reg_add(w, http);
	return rc;
}

static inline int ctxleak_evhttp_del_cb(struct evhttp *http, const char *path)
{
	int rc = evhttp_del_cb(http, path);

	if (rc == 0)
		ctxleak_ev_reg_drop(http, path, 0, 0);
	return rc;
}

/* cb NULL removes the generic callback.  Returns 0, or -1 when out of
 * memory (the old callback then stays). */
static inline int ctxleak_evhttp_set_gencb(struct evhttp *http,
					   ctxleak_evhttp_cb cb, void *arg)
{
	struct ctxleak_ev_reg *w = NULL;

	if (cb && !(w = ctxleak_http_wrap(NULL, cb, arg)))
		return -1;
	evhttp_set_gencb(http, w ? ctxleak_http_run : NULL,
			 w ? (void *)w : arg);
	ctxleak_ev_reg_drop(http, NULL, 0, 0);
	if (w)
		ctxleak_ev_reg_add(w, http);
	return 0;
}

static inline void ctxleak_evhttp_free(struct evhttp *http)
{
	evhttp_free(http);
	ctxleak_ev_reg_drop(http, NULL, 0, 1);
}

#endif /* CTXLEAK_EVENT_H */
