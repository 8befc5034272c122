/*
 * sdnotify.c: ctxleakd under systemd, through libsystemd's sd-daemon API:
 * the socket passed by socket activation, readiness and stopping
 * notifications, the watchdog, and a STATUS= line with live counters.
 *
 * Without systemd (no LISTEN_FDS, no NOTIFY_SOCKET) every function does
 * nothing, so the daemon behaves the same when started by hand.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "ctxleakd.h"

#define STATUS_INTERVAL_SEC 2

static struct event *watchdog_event;
static struct event *status_event;

int sdnotify_listen_fd(void)
{
	int n = sd_listen_fds(1);

	if (n < 0)
		fatalx("sd_listen_fds: %s", strerror(-n));
	if (n == 0)
		return -1;
	if (n > 1)
		fatalx("systemd passed %d sockets; ctxleakd takes exactly one",
		       n);
	if (sd_is_socket_unix(SD_LISTEN_FDS_START, SOCK_STREAM, 1, NULL, 0) <=
	    0)
		fatalx("the socket systemd passed is not a listening AF_UNIX "
		       "stream socket (check ListenStream= in the unit)");
	return SD_LISTEN_FDS_START;
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	sd_notify(0, "WATCHDOG=1");
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
	char status[256];

	(void)fd;
	(void)what;
	(void)arg;
	server_status(status, sizeof status);
	sd_notifyf(0, "STATUS=%s", status);
}

static struct event *add_timer(struct event_base *base, uint64_t usec,
			       event_callback_fn cb)
{
	struct timeval tv = {(time_t)(usec / 1000000),
			     (suseconds_t)(usec % 1000000)};
	struct event *ev = event_new(base, -1, EV_PERSIST, cb, NULL);

	if (ev == NULL || event_add(ev, &tv) == -1)
		fatalx("cannot add a timer");
	return ev;
}

void sdnotify_start(struct event_base *base)
{
	uint64_t usec;

	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	/* Pinging at half the period leaves room for one late wakeup. */
	if (sd_watchdog_enabled(0, &usec) > 0)
		watchdog_event = add_timer(base, usec / 2, on_watchdog);
	status_event =
	    add_timer(base, STATUS_INTERVAL_SEC * 1000000ULL, on_status);
}

void sdnotify_ready(void)
{
	sd_notify(0, "READY=1\nSTATUS=listening");
}

void sdnotify_stopping(void)
{
	if (watchdog_event != NULL)
		event_free(watchdog_event);
	if (status_event != NULL)
		event_free(status_event);
	watchdog_event = status_event = NULL;
	sd_notify(0, "STOPPING=1\nSTATUS=draining");
}
