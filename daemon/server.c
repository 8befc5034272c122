/*
 * server.c: ctxleakd's listening socket: creating it (or adopting the one
 * systemd passed), accepting clients within --max-connections, and the
 * orderly stop that reads what clients already sent before exiting.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

/* Refusals come in bursts (a fleet restarting at once).  A burst's first
 * refusal is logged at once; the rest are counted, one line every
 * REFUSED_LOG_SEC while the burst lasts, and one when no refusal came for
 * REFUSED_QUIET_MS: that burst's total. */
#define REFUSED_LOG_SEC	 10
#define REFUSED_QUIET_MS 1000
/* Descriptors besides the connections': the listener, the database and
 * its -wal, -shm and lock files, the log, libevent's and systemd's. */
#define RESERVED_FDS 64
/* Out of descriptors, accept fails at once while the listener stays
 * readable: without a pause the loop would spin on it. */
#define ACCEPT_PAUSE_MS 100

static struct event_base *server_base;
static struct event *listen_event;
static struct event *resume_event;    /* re-arms listen_event after a pause */
static struct event *refused_event;   /* ends a burst of refusals */
static unsigned long accept_failures; /* in this episode; 0: none */
static struct timespec accept_paused_at;
static int listen_fd = -1;
static int from_systemd; /* systemd owns the socket file: never unlink */

/* For the records/s figure of server_status. */
static uint64_t status_records;
static struct timespec status_time;

/* Without root the default directory sits in /tmp when there is no
 * XDG_RUNTIME_DIR, where another user may have made it first to catch
 * the clients' records. */
static void check_socket_directory(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) == -1)
		fatal("socket directory %s", dir);
	if (!S_ISDIR(st.st_mode))
		fatalx("socket directory %s is not a directory", dir);
	if (st.st_uid != geteuid() && st.st_uid != 0)
		fatalx("socket directory %s belongs to uid %u, not to us", dir,
		       (unsigned)st.st_uid);
}

static void make_socket_directory(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof dir, "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL || slash == dir)
		return;
	*slash = '\0';
	/* Only the last component: the one we name (ctxleak/) under a
	 * runtime directory that must already exist. */
	if (mkdir(dir, geteuid() == 0 ? 0755 : 0700) == -1 && errno != EEXIST)
		fatal("cannot create socket directory %s", dir);
	check_socket_directory(dir);
}

static void fill_address(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sun->sun_path)
		fatalx("socket path too long: %s", path);
	memcpy(sun->sun_path, path, strlen(path));
}

/* A socket file may be left by a daemon that crashed.  Remove it only when
 * nothing answers on it: a live daemon must keep its socket. */
static void remove_stale_socket(const struct sockaddr_un *sun)
{
	struct stat st;
	int fd;

	if (lstat(sun->sun_path, &st) == -1)
		return;
	if (!S_ISSOCK(st.st_mode))
		fatalx("%s exists and is not a socket", sun->sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		fatal("socket");
	if (connect(fd, (const struct sockaddr *)sun, sizeof *sun) == 0)
		fatalx("another ctxleakd is listening on %s", sun->sun_path);
	if (errno != ECONNREFUSED)
		fatal("cannot check %s", sun->sun_path);
	close(fd);
	log_info("replacing stale socket %s", sun->sun_path);
	if (unlink(sun->sun_path) == -1)
		fatal("cannot remove stale socket %s", sun->sun_path);
}

static int create_socket(const char *path)
{
	struct sockaddr_un sun;
	int fd;

	fill_address(&sun, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd == -1)
		fatal("socket");
	if (bind(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		if (errno == EADDRINUSE)
			fatalx("another ctxleakd is listening on %s", path);
		fatal("cannot bind %s", path);
	}
	/* After bind: the group (set by the unit or the directory) gets
	 * access, nobody else. */
	if (chmod(path, 0660) == -1)
		fatal("chmod %s", path);
	if (listen(fd, SOMAXCONN) == -1)
		fatal("listen on %s", path);
	return fd;
}

/* The burst of refusals going on (refused 0: none). */
static struct {
	unsigned long refused;	  /* in this burst */
	struct timespec start;	  /* its first */
	time_t logged;		  /* CLOCK_MONOTONIC s of its last line */
} burst;

static double secs_since(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) +
	       (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}

static void on_refusals_ended(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_warn("%lu connection(s) refused in %.1f s: --max-connections %u "
		 "reached; those clients got no RECEIPT",
		 burst.refused, secs_since(&burst.start), cfg.max_connections);
	burst.refused = 0;
}

/* Over --max-connections: closed before any RECEIPT, which is how the
 * client learns it was refused.  Logged once per burst, and counted. */
static void refuse(int fd)
{
	const struct timeval quiet = {0, REFUSED_QUIET_MS * 1000};
	struct timespec now;

	conn_count_rejected();
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (burst.refused++ == 0) {
		burst.start = now;
		burst.logged = now.tv_sec;
		log_warn("connection refused: %u open, --max-connections %u; "
			 "further refusals are counted until none came for "
			 "%d ms",
			 conn_count(), cfg.max_connections, REFUSED_QUIET_MS);
	} else if (now.tv_sec - burst.logged >= REFUSED_LOG_SEC) {
		burst.logged = now.tv_sec;
		log_warn("%lu connection(s) refused so far in %.0f s "
			 "(--max-connections %u)",
			 burst.refused, secs_since(&burst.start),
			 cfg.max_connections);
	}
	if (evtimer_add(refused_event, &quiet) == -1)
		fatalx("cannot add a timer");
	/* After the log line: a client that sees the close finds it. */
	close(fd);
}

/*
 * One descriptor per connection: a soft RLIMIT_NOFILE under
 * --max-connections would turn clients away before the limit does (accept
 * then pauses, out of descriptors).  Raised to what is needed when the
 * hard limit allows; otherwise said once, with the figure to set.
 */
static void fit_descriptor_limit(void)
{
	rlim_t need = (rlim_t)cfg.max_connections + RESERVED_FDS;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= need)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
		rl.rlim_cur = rl.rlim_max;
	else
		rl.rlim_cur = need;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < need)
		log_warn("--max-connections %u needs %llu descriptors, the "
			 "limit is %llu: past about %llu connections clients "
			 "wait (raise LimitNOFILE= or ulimit -n)",
			 cfg.max_connections, (unsigned long long)need,
			 (unsigned long long)rl.rlim_cur,
			 (unsigned long long)(rl.rlim_cur > RESERVED_FDS
						  ? rl.rlim_cur - RESERVED_FDS
						  : 0));
}

static int out_of_descriptors(int err)
{
	return err == EMFILE || err == ENFILE || err == ENOBUFS ||
	       err == ENOMEM;
}

/*
 * Stop watching the listener for ACCEPT_PAUSE_MS, and log once per
 * episode.  Waiting rather than the reserve-descriptor trick (accept and
 * close at once) keeps the pending clients, and what they already wrote,
 * in the kernel's backlog until a connection closes and frees a
 * descriptor; the library does not block its host meanwhile.
 */
static void pause_accepting(int err)
{
	const struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};

	if (accept_failures++ == 0) {
		clock_gettime(CLOCK_MONOTONIC, &accept_paused_at);
		log_warn("accept: %s with %u connections open; retrying every "
			 "%d ms",
			 strerror(err), conn_count(), ACCEPT_PAUSE_MS);
	}
	event_del(listen_event);
	if (evtimer_add(resume_event, &pause) == -1)
		fatalx("cannot add a timer");
}

static void on_resume_accepting(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (listen_event != NULL && event_add(listen_event, NULL) == -1)
		fatalx("cannot watch the listening socket");
}

/* The episode's one summary line, once a connection is accepted again. */
static void end_accept_episode(void)
{
	struct timespec now;
	double secs;

	if (accept_failures == 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - accept_paused_at.tv_sec) +
	       (double)(now.tv_nsec - accept_paused_at.tv_nsec) / 1e9;
	log_info("accepting again after %lu failed attempt(s) in %.1f s",
		 accept_failures, secs);
	accept_failures = 0;
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
	int cfd;

	(void)what;
	(void)arg;
	/* A few at a time: a storm of connections must not starve the
	 * clients already connected. */
	for (int i = 0; i < 64; i++) {
		cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1) {
			if (out_of_descriptors(errno))
				pause_accepting(errno);
			else if (errno != EAGAIN && errno != EINTR &&
				 errno != ECONNABORTED)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		end_accept_episode();
		if (conn_count() >= cfg.max_connections) {
			refuse(cfd);
			continue;
		}
		conn_accept(server_base, cfd);
	}
}

void server_prepare(void)
{
	struct sockaddr_un sun;

	listen_fd = sdnotify_listen_fd();
	if (listen_fd >= 0) {
		from_systemd = 1;
		return;
	}
	fill_address(&sun, cfg.socket_path);
	make_socket_directory(cfg.socket_path);
	remove_stale_socket(&sun);
}

/* The unit, not --socket, names this socket: say which it is. */
static void log_systemd_socket(void)
{
	struct sockaddr_un sun;
	socklen_t len = sizeof sun;

	memset(&sun, 0, sizeof sun);
	if (getsockname(listen_fd, (struct sockaddr *)&sun, &len) == -1 ||
	    sun.sun_path[0] == '\0')
		log_info("listening on the socket passed by systemd");
	else
		log_info("listening on %.*s (passed by systemd)",
			 (int)sizeof sun.sun_path, sun.sun_path);
}

void server_listen(struct event_base *base)
{
	server_base = base;
	if (from_systemd) {
		if (fcntl(listen_fd, F_SETFL,
			  fcntl(listen_fd, F_GETFL) | O_NONBLOCK) == -1)
			fatal("fcntl");
		log_systemd_socket();
	} else {
		listen_fd = create_socket(cfg.socket_path);
		log_info("listening on %s", cfg.socket_path);
	}
	fit_descriptor_limit();
	listen_event =
	    event_new(base, listen_fd, EV_READ | EV_PERSIST, on_accept, NULL);
	resume_event = evtimer_new(base, on_resume_accepting, NULL);
	refused_event = evtimer_new(base, on_refusals_ended, NULL);
	if (listen_event == NULL || resume_event == NULL ||
	    refused_event == NULL || event_add(listen_event, NULL) == -1)
		fatalx("cannot watch the listening socket");
	clock_gettime(CLOCK_MONOTONIC, &status_time);
}

static void stop_listening(void)
{
	if (listen_event == NULL)
		return;
	event_free(listen_event);
	event_free(resume_event);
	/* A burst still going on gets its line now. */
	if (burst.refused > 0)
		on_refusals_ended(-1, 0, NULL);
	event_free(refused_event);
	listen_event = resume_event = refused_event = NULL;
	close(listen_fd);
	listen_fd = -1;
	if (!from_systemd && unlink(cfg.socket_path) == -1 && errno != ENOENT)
		log_warn("cannot remove %s: %s", cfg.socket_path,
			 strerror(errno));
}

/*
 * Clients still in the listener's backlog at the stop may have sent HELLO
 * and records that the kernel took: accept them and read them like the
 * others.  Linux refuses new connections to a listener shut down for
 * reading but still hands out the queued ones, so the backlog ends.  The
 * socket systemd passed stays whole for the next start (shutting it down
 * would shut down systemd's too), so there the accepting is bounded.
 */
static void accept_backlog(void)
{
	unsigned long limit = from_systemd ? SOMAXCONN : ULONG_MAX;
	int cfd;

	if (!from_systemd && shutdown(listen_fd, SHUT_RD) == -1)
		log_warn("shutdown of the listener: %s", strerror(errno));
	for (unsigned long n = 0; n < limit; n++) {
		cfd = accept4(listen_fd, NULL, NULL,
			      SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd == -1 && (errno == EINTR || errno == ECONNABORTED))
			continue;
		if (cfd == -1 && out_of_descriptors(errno) &&
		    conn_count() > 0) {
			conn_drain_all();
			continue;
		}
		if (cfd == -1) {
			if (errno != EAGAIN)
				log_warn("accept: %s", strerror(errno));
			return;
		}
		/* Within --max-connections still: read those open first. */
		if (conn_count() >= cfg.max_connections)
			conn_drain_all();
		conn_accept(server_base, cfd);
	}
}

void server_drain(void)
{
	if (listen_fd >= 0)
		accept_backlog();
	stop_listening();
	conn_drain_all();
	process_finalise_all();
}

void server_status(char *buf, size_t len)
{
	struct conn_stats cs;
	struct process_stats ps;
	struct timespec now;
	double secs, rate;

	conn_stats(&cs);
	process_stats(&ps);
	clock_gettime(CLOCK_MONOTONIC, &now);
	secs = (double)(now.tv_sec - status_time.tv_sec) +
	       (double)(now.tv_nsec - status_time.tv_nsec) / 1e9;
	rate = secs > 0 ? (double)(cs.records - status_records) / secs : 0;
	status_records = cs.records;
	status_time = now;
	snprintf(buf, len,
		 "%u connections, %llu processes, %.0f records/s, %llu "
		 "records, %llu findings, %llu refused, %llu bad input "
		 "(%llu incomplete)",
		 conn_count(), (unsigned long long)ps.live, rate,
		 (unsigned long long)cs.records,
		 (unsigned long long)ps.findings,
		 (unsigned long long)cs.rejected,
		 (unsigned long long)cs.proto_errors,
		 (unsigned long long)cs.partial_timeouts);
}
