/*
 * ctxleak_event.h: libctxleak's integration with libevent 2.1, header
 * only (libctxleak itself does not link libevent).
 *
 * Each wrapper registers a libevent callback so that it runs resumed in
 * the context that registered it: the token is captured at registration,
 * the callback is entered with ctxleak_resume(token) and left with
 * ctxleak_suspend().  One line per registration:
 *
 *	event_new(base, fd, what, cb, arg)
 *	    -> ctxleak_event_new(base, fd, what, cb, arg)
 *	       freed with ctxleak_event_free(ev); ctxleak_event_add(ev, tv)
 *	       captures the token again when the event is re-armed
 *	event_base_once(base, fd, what, cb, arg, tv)
 *	    -> ctxleak_event_base_once(base, fd, what, cb, arg, tv)
 *	bufferevent_setcb(bev, readcb, writecb, eventcb, arg)
 *	    -> ctxleak_bufferevent_setcb(bev, readcb, writecb, eventcb, arg)
 *	       freed with ctxleak_bufferevent_free(bev)
 *
 * Call ctxleak_libevent_setup() before ctxleak_init(): the `auto` backend
 * then picks `task`, and the daemon is told why.
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
 * Lifetimes: the wrapper of ctxleak_event_new lives as long as its event,
 * persistent or not (a non-persistent event can be added again), and
 * ctxleak_event_free frees both.  The wrapper of ctxleak_event_base_once
 * is freed when the callback runs, which libevent does exactly once;
 * should the base be freed before that, it is lost with it.  The wrapper
 * of a bufferevent is replaced by the next ctxleak_bufferevent_setcb and
 * freed by ctxleak_bufferevent_free.  Each callback may free its own event
 * or bufferevent: a trampoline does not touch its wrapper after the
 * callback returns.
 */
#ifndef CTXLEAK_EVENT_H
#define CTXLEAK_EVENT_H

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>

#include "ctxleak.h"

/* Use ctxleak_libevent_setup() before ctxleak_init(). */
static inline int ctxleak_libevent_setup(void)
{
	return ctxleak_set_scheduler("libevent");
}

/* ----------------------------------------------------------- events */

struct ctxleak_ev_wrap {
	event_callback_fn fn;
	void *arg;
	uint64_t token;
};

/* The plain functions: a site inside this header would say nothing. */
static inline void ctxleak_ev_run(evutil_socket_t fd, short what, void *p)
{
	struct ctxleak_ev_wrap *w = (struct ctxleak_ev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->fn(fd, what, w->arg);
	(ctxleak_suspend)();
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
	return ev;
}

/* event_add, with the current context as the one the callback runs in. */
static inline int ctxleak_event_add(struct event *ev, const struct timeval *tv)
{
	struct ctxleak_ev_wrap *w =
	    (struct ctxleak_ev_wrap *)event_get_callback_arg(ev);

	w->token = ctxleak_capture();
	return event_add(ev, tv);
}

static inline void ctxleak_event_free(struct event *ev)
{
	void *w = event_get_callback_arg(ev);

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
	bufferevent_data_cb readcb, writecb;
	bufferevent_event_cb eventcb;
	void *arg;
	uint64_t token;
};

static inline void ctxleak_bev_read(struct bufferevent *bev, void *p)
{
	struct ctxleak_bev_wrap *w = (struct ctxleak_bev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->readcb(bev, w->arg);
	(ctxleak_suspend)();
}

static inline void ctxleak_bev_write(struct bufferevent *bev, void *p)
{
	struct ctxleak_bev_wrap *w = (struct ctxleak_bev_wrap *)p;

	(ctxleak_resume)(w->token);
	w->writecb(bev, w->arg);
	(ctxleak_suspend)();
}

static inline void ctxleak_bev_event(struct bufferevent *bev, short what,
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

#endif /* CTXLEAK_EVENT_H */
