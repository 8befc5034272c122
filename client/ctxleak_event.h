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
 *	evconnlistener_free(lev)     -> ctxleak_evconnlistener_free(lev)
 *	evhttp_set_cb(http, path, cb, arg)
 *	    -> ctxleak_evhttp_set_cb(http, path, cb, arg)
 *	evhttp_del_cb(http, path)    -> ctxleak_evhttp_del_cb(http, path)
 *	evhttp_set_gencb(http, cb, arg)
 *	    -> ctxleak_evhttp_set_gencb(http, cb, arg)
 *	evhttp_free(http)            -> ctxleak_evhttp_free(http)
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
 *   such as the connection's bufferevent.
 * - An evhttp handler: a request of its own, begun before the handler in
 *   no request and named "METHOD /path" (the path without its query),
 *   with tags method and path, and ended when libevent completes the
 *   request (its reply written, through the request's on-complete
 *   callback, which is the wrapper's: do not set your own), whether the
 *   handler replies at once or later from another callback.  Handlers
 *   need no begin/end.  A deferred reply runs in the request when the
 *   handler registers it through these wrappers (ctxleak_evtimer_new,
 *   ctxleak_event_base_once, ...); a reply made from elsewhere (a shared
 *   upstream connection) enters the request with the token the handler
 *   took with ctxleak_capture():
 *
 *	job->token = ctxleak_capture();		// in the handler
 *	...
 *	ctxleak_resume(job->token);		// where the reply is made
 *	evhttp_send_reply(job->req, 200, "OK", body);
 *	ctxleak_suspend();
 *
 *   libevent 2.1 completes no request whose client went away before the
 *   reply was written, nor those evhttp_free drops: their scopes stay
 *   open and the daemon reports them unclosed.
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
 * ctxleak_evconnlistener_free; that of an evhttp callback by
 * ctxleak_evhttp_del_cb (or the next ctxleak_evhttp_set_gencb) and by
 * ctxleak_evhttp_free, which frees all of the evhttp's.  These last two
 * kinds sit in one registry per program (libevent cannot say a listener's
 * or evhttp's callback argument), so free them with these functions.  An
 * evhttp request's scope needs no memory of its own: its ctx travels as
 * the on-complete callback's argument.  Each callback may free its own
 * event, bufferevent or listener: a trampoline does not touch its wrapper
 * after the callback returns.  Replace or free callbacks on the loop's
 * thread, or while none of them runs, as libevent's own arguments ask.
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
CTXLEAK_EV_ONE void ctxleak_http_run(struct evhttp_request *req, void *p);

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
		ctxleak_evhttp_cb http;
	} fn;			     /* the application's callback */
	void *arg;		     /* and its argument */
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
 * Take owner's wrappers out of the registry and free them: the one for
 * path (NULL: the listener's, or the evhttp's generic callback), or with
 * all set, every one of owner's.
 */
static inline void ctxleak_ev_reg_drop(const void *owner, const char *path,
				       int all)
{
	struct ctxleak_ev_registry *r = ctxleak_ev_registry();
	struct ctxleak_ev_reg **pp, *w, *gone = NULL;

	pthread_mutex_lock(&r->lock);
	for (pp = &r->head; (w = *pp);) {
		if (w->owner == owner &&
		    (all ||
		     (path ? w->path && !strcmp(w->path, path) : !w->path))) {
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
	ctxleak_ev_reg_drop(lev, NULL, 0);
	if (w)
		ctxleak_ev_reg_add(w, lev);
	return 0;
}

static inline void ctxleak_evconnlistener_free(struct evconnlistener *lev)
{
	evconnlistener_free(lev);
	ctxleak_ev_reg_drop(lev, NULL, 1);
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
 * A request's ctx as the on-complete callback's argument: the pointer
 * itself where it holds 64 bits; elsewhere a copy on the heap, lost with
 * a request libevent never completes.
 */
#if UINTPTR_MAX >= UINT64_MAX
static inline void *ctxleak_http_box(uint64_t ctx)
{
	return (void *)(uintptr_t)ctx;
}

static inline uint64_t ctxleak_http_unbox(void *p)
{
	return (uint64_t)(uintptr_t)p;
}
#else
static inline void *ctxleak_http_box(uint64_t ctx)
{
	uint64_t *p = (uint64_t *)malloc(sizeof(*p));

	if (p)
		*p = ctx;
	return p;
}

static inline uint64_t ctxleak_http_unbox(void *p)
{
	uint64_t ctx = p ? *(uint64_t *)p : 0;

	free(p);
	return ctx;
}
#endif

/* The request is complete (its reply written): its scope ends, in it. */
static inline void ctxleak_http_done(struct evhttp_request *req, void *p)
{
	uint64_t ctx = ctxleak_http_unbox(p);

	(void)req;
	(ctxleak_resume)(ctx);
	(ctxleak_end)(ctx);
	(ctxleak_suspend)();
}

/*
 * A handler runs in a request of its own, begun in no request (what the
 * loop's thread held before is no part of it) and left current for the
 * handler only: the request goes on in the callbacks it registers and
 * ends when libevent completes it, which may be inside the handler
 * already.
 */
CTXLEAK_EV_ONE void ctxleak_http_run(struct evhttp_request *req, void *p)
{
	struct ctxleak_ev_reg *w = (struct ctxleak_ev_reg *)p;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *method = ctxleak_http_method(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	char name[256];
	uint64_t ctx;

	if (!path || !*path)
		path = "/";
	snprintf(name, sizeof(name), "%s %s", method, path);
	(ctxleak_resume)(0);
	ctx = (ctxleak_begin)(name);
	if (ctx) {
		(ctxleak_tag)("method", method);
		(ctxleak_tag)("path", path);
		evhttp_request_set_on_complete_cb(req, ctxleak_http_done,
						  ctxleak_http_box(ctx));
	}
	w->fn.http(req, w->arg);
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
		ctxleak_ev_reg_drop(http, path, 0);
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
	ctxleak_ev_reg_drop(http, NULL, 0);
	if (w)
		ctxleak_ev_reg_add(w, http);
	return 0;
}

static inline void ctxleak_evhttp_free(struct evhttp *http)
{
	evhttp_free(http);
	ctxleak_ev_reg_drop(http, NULL, 1);
}

#endif /* CTXLEAK_EVENT_H */
