/*
 * sdnotify.c: ctxleakd under systemd, through libsystemd's sd-daemon API:
 * the socket passed by socket activation, readiness and stopping
 * notifications, the watchdog, and a STATUS= line with live counters.
 *
 * Without systemd (no LISTEN_FDS, no NOTIFY_SOCKET) every function does
 * nothing, so the daemon behaves the same when started by hand.
 *
 * sd_notify() sends with a blocking sendmsg() (libsystemd passes
 * MSG_NOSIGNAL, not MSG_DONTWAIT), and the notify socket queues few
 * datagrams (net.unix.max_dgram_qlen, 10 by default): a slow or stuck
 * systemd would stop the event loop, and with it every client.  So the
 * loop never calls it.  It posts each message for a notifier thread,
 * which sends them one at a time; a message posted while the previous one
 * of its kind still waits replaces it, so a stuck systemd costs stale
 * STATUS lines and, in the end, the watchdog's verdict, which is then the
 * right one.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "ctxleakd.h"

#define STATUS_INTERVAL_SEC 2
/* At exit, how long STOPPING may take to go through. */
#define STOPPING_WAIT_SEC 1
#define NOTE_MAX	  320

/* In the order they are sent when several wait. */
enum note { NOTE_READY, NOTE_WATCHDOG, NOTE_STATUS, NOTE_STOPPING, NOTES };

static struct event *watchdog_event;
static struct event *status_event;

static pthread_t notifier;
static int notifier_started;
static pthread_mutex_t notes_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t notes_posted = PTHREAD_COND_INITIALIZER;
static char notes[NOTES][NOTE_MAX];
static int pending[NOTES];

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

/* The first note waiting, taken into msg; -1 when none. */
static int take_note(char *msg)
{
	for (int i = 0; i < NOTES; i++) {
		if (!pending[i])
			continue;
		memcpy(msg, notes[i], NOTE_MAX);
		pending[i] = 0;
		return i;
	}
	return -1;
}

static void *notifier_main(void *arg)
{
	char msg[NOTE_MAX];
	int kind;

	(void)arg;
	do {
		pthread_mutex_lock(&notes_lock);
		while ((kind = take_note(msg)) == -1)
			pthread_cond_wait(&notes_posted, &notes_lock);
		pthread_mutex_unlock(&notes_lock);
		sd_notify(0, msg);
	} while (kind != NOTE_STOPPING);
	return NULL;
}

/* Never waits for systemd: the lock is held only to copy a message. */
static void post(enum note kind, const char *msg)
{
	if (!notifier_started)
		return;
	pthread_mutex_lock(&notes_lock);
	snprintf(notes[kind], NOTE_MAX, "%s", msg);
	pending[kind] = 1;
	pthread_cond_signal(&notes_posted);
	pthread_mutex_unlock(&notes_lock);
}

/* Lets STOPPING go out before the process ends, unless systemd is stuck:
 * then the exit does not wait for it. */
static void wait_for_stopping(void)
{
	struct timespec deadline;
	int stopping;

	pthread_mutex_lock(&notes_lock);
	/* Empty when the exit is not a drain's (fatal): no wait then. */
	stopping = notes[NOTE_STOPPING][0] != '\0';
	pthread_mutex_unlock(&notes_lock);
	if (!stopping)
		return;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += STOPPING_WAIT_SEC;
	pthread_timedjoin_np(notifier, NULL, &deadline);
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	post(NOTE_WATCHDOG, "WATCHDOG=1");
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
	char status[256], msg[NOTE_MAX];

	(void)fd;
	(void)what;
	(void)arg;
	server_status(status, sizeof status);
	snprintf(msg, sizeof msg, "STATUS=%s", status);
	post(NOTE_STATUS, msg);
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
	int err;

	if (getenv("NOTIFY_SOCKET") == NULL)
		return;
	err = pthread_create(&notifier, NULL, notifier_main, NULL);
	if (err != 0)
		fatalx("cannot start the notifier thread: %s", strerror(err));
	notifier_started = 1;
	atexit(wait_for_stopping);
	/* Pinging at half the period leaves room for one late wakeup. */
	if (sd_watchdog_enabled(0, &usec) > 0)
		watchdog_event = add_timer(base, usec / 2, on_watchdog);
	status_event =
	    add_timer(base, STATUS_INTERVAL_SEC * 1000000ULL, on_status);
}

void sdnotify_ready(void)
{
	post(NOTE_READY, "READY=1\nSTATUS=listening");
}

void sdnotify_stopping(void)
{
	if (watchdog_event != NULL)
		event_free(watchdog_event);
	if (status_event != NULL)
		event_free(status_event);
	watchdog_event = status_event = NULL;
	post(NOTE_STOPPING, "STOPPING=1\nSTATUS=draining");
}
