/*
 * harness.h: run the real ctxleakd for integration tests and benchmarks.
 *
 * A test starts the daemon binary ($CTXLEAKD_BIN, set by tests/run; else
 * build/ctxleakd) on a fresh temporary directory that holds its socket,
 * database and stderr log, drives it with real clients (the static client
 * library in a forked child, or raw sockets speaking proto), stops it, and
 * asserts on the database.  A typical test:
 *
 *	struct harness_daemon d;
 *	const char *args[] = {"--keep", "all", NULL};
 *
 *	ck_assert_msg(harness_start(&d, args) == 0, "%s", harness_error());
 *	ck_assert_int_eq(harness_client(&d, CTXLEAK_BACKEND_THREAD, fn, NULL),
 *			 0);
 *	ck_assert_int_eq(harness_stop(&d), 0);
 *	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM leaks"),
 *			 7);
 *	harness_cleanup(&d);
 *
 * Functions that can fail return -1 (or NULL) and leave a message for
 * harness_error(); none of them calls Check, so benchmarks use them too.
 * Every wait polls with a generous timeout: no result depends on timing.
 */
#ifndef CTXLEAK_HARNESS_H
#define CTXLEAK_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctxleak.h"

/* Seconds any wait gives the daemon before it counts as a failure. */
#define HARNESS_TIMEOUT_SEC 20

struct harness_daemon {
	pid_t pid;	  /* 0: not running */
	char dir[64];	  /* the temporary directory; harness_cleanup
			     removes it */
	char socket[108]; /* dir/ctxleak.sock; fits in sun_path */
	char db[128];	  /* dir/ctxleak.db */
	char log[128];	  /* dir/stderr.log: the daemon's stderr */
};

/* The message of the last failure ("" when none). */
const char *harness_error(void);

/* Sleep ms milliseconds. */
void harness_sleep_ms(int ms);

/* What /proc says of a process (the daemon): its open descriptors, and a
 * "kB" field of its status (VmRSS, VmHWM); -1 when it is gone. */
int harness_fd_count(pid_t pid);
long harness_status_kb(pid_t pid, const char *field);

/* Raise this process's soft limit of open descriptors to its hard limit,
 * which must be at least want: a thousand connections, say, are more than
 * some systems' default soft limit of 1,024.  A daemon started after
 * inherits it.  0, or -1 (see harness_error()). */
int harness_raise_fd_limit(unsigned long want);

/* The daemon binary under test ($CTXLEAKD_BIN), the CLI ($CTXLEAK_BIN)
 * and the directory of the example workers ($CTXLEAK_EXAMPLES); set by
 * tests/run, else under build/. */
const char *harness_daemon_path(void);
const char *harness_cli_path(void);
const char *harness_examples_path(void);

/*
 * Another user (nobody, for tests run as root) may not reach the build
 * directory: a checkout under /root, say.  Copies the program at src into
 * a new directory that every user may enter, and writes the copy's path
 * to out.  0, or -1 (see harness_error()).  harness_remove_copy removes
 * both.
 */
int harness_copy_for_anyone(const char *src, char *out, size_t len);
void harness_remove_copy(const char *path);

/* Create the temporary directory and fill in the paths; nothing runs yet.
 * Lets a test put things in place (a stale socket file) before
 * harness_launch. */
int harness_prepare(struct harness_daemon *d);

/* Start ctxleakd with --socket d->socket --db d->db --linger 0, then args
 * (NULL-terminated, may be NULL; later options override earlier ones), and
 * wait until its socket accepts connections.  Fails, with the daemon's
 * stderr in the message, when the daemon exits first. */
int harness_launch(struct harness_daemon *d, const char *const *args);

/* harness_prepare + harness_launch. */
int harness_start(struct harness_daemon *d, const char *const *args);

/* SIGTERM, then wait for the exit.  Returns the exit status, 128 + the
 * signal when it died of one, or -1 on timeout (it is then killed). */
int harness_stop(struct harness_daemon *d);

/* Wait for an exit the test asked for by other means (a signal sent while
 * the daemon was stopped); the same result as harness_stop. */
int harness_wait_exit(struct harness_daemon *d);

/* SIGKILL and reap. */
void harness_kill(struct harness_daemon *d);

/* Kill the daemon if still running and remove the directory. */
void harness_cleanup(struct harness_daemon *d);

/* The daemon's stderr so far, NUL-terminated; free() it. */
char *harness_log(const struct harness_daemon *d);

/* How many times the daemon's log contains needle so far; -1 when it
 * cannot be read. */
int harness_log_count(const struct harness_daemon *d, const char *needle);

/* Poll until the daemon's log contains needle at least count times.
 * Returns 0, or -1 on timeout. */
int harness_wait_log(const struct harness_daemon *d, const char *needle,
		     int count);

/*
 * Run ctxleakd to completion with exactly argv (argv[0] is ignored; the
 * daemon binary is used), capturing stdout and stderr together into *out
 * (free() it; may be NULL).  Returns the exit status, or -1 on timeout.
 */
int harness_exec(const char *const *argv, char **out);

/* ------------------------------------------------------------ database */

/* Open d->db read-only (the daemon may still be writing), run sql, return
 * the first column of the first row.  INT64_MIN on error or no row (see
 * harness_error()); a NULL value reads as 0 / NULL. */
int64_t harness_query_int(const struct harness_daemon *d, const char *sql);
/* The same as a string; free() it.  NULL on error, no row or NULL. */
char *harness_query_str(const struct harness_daemon *d, const char *sql);
/* Poll until harness_query_int(d, sql) >= want.  Returns 0, or -1. */
int harness_wait_int(const struct harness_daemon *d, const char *sql,
		     int64_t want);

/* ------------------------------------------------------------- clients */

/* What a client child runs after ctxleak_init(); its return value is the
 * child's exit status. */
typedef int (*harness_client_fn)(void *arg);

/*
 * Fork a client process: CTXLEAK_SOCKET points at the daemon, the library
 * is initialised with backend (and app "harness"), fn(arg) runs, then
 * ctxleak_shutdown() flushes.  harness_client waits and returns the exit
 * status (128 + signal when killed, -1 on timeout); harness_client_spawn
 * returns the child's pid at once, for harness_client_wait.
 */
int harness_client(const struct harness_daemon *d, enum ctxleak_backend backend,
		   harness_client_fn fn, void *arg);
pid_t harness_client_spawn(const struct harness_daemon *d,
			   enum ctxleak_backend backend, harness_client_fn fn,
			   void *arg);
int harness_client_wait(pid_t pid);

/*
 * The worked example of docs/DESIGN.md as a client function: one thread runs an
 * event loop whose callbacks are wrapped (resume of the registering token
 * on entry, suspend on exit); requests GET /a, GET /b, GET /c; 21 records.
 * arg may point at a struct harness_example to add tags to request A, to
 * pause between its steps, or to learn the requests' ctx IDs.
 */
#define HARNESS_EXAMPLE_RECORDS 21
struct harness_example {
	void (*tag_a)(void); /* called in A's accept callback, after user */
	/* Called between step 2 and step 3 (both requests begun, no DB
	 * callback yet); a nonzero return ends the scenario with it. */
	int (*between)(void *arg);
	void *arg;
	/* Filled in: id[1], id[2], id[3] the ctx of GET /a, /b and /c as
	 * each begins; id[0] is left alone (0 in a zeroed struct: "no
	 * request", for tables indexed by request). */
	uint64_t id[4];
};
int harness_worked_example(void *arg);

/* The example's bleed in the database: B's rebuilt context holds
 * status=200, set by A's code (one row under thread). */
#define HARNESS_EXAMPLE_BLED_TAG_SQL                                           \
	"SELECT count(*) FROM tags t "                                         \
	"JOIN requests r ON r.id = t.request_id "                              \
	"JOIN requests s ON s.id = t.setter_request_id "                       \
	"WHERE r.name = 'GET /b' AND t.key = 'status' AND "                    \
	"t.value = '200' AND s.name = 'GET /a'"

/* ----------------------------------------------------- raw connections */

/* A blocking connection to the daemon's socket; -1 on error. */
int harness_connect(const struct harness_daemon *d);
/* Send a HELLO with this instance and claimed pid; 0 or -1. */
int harness_send_hello(int fd, uint64_t instance, uint32_t pid);
/* Write all len bytes; 0 or -1. */
int harness_write_all(int fd, const void *buf, size_t len);
/* Read the RECEIPT the daemon sends after a HELLO it accepted, waiting
 * at most the timeout; 0 and *out filled, or -1 (timeout, close, or bytes
 * that are not a RECEIPT).  Reads no byte past it. */
struct proto_receipt;
int harness_read_receipt(int fd, struct proto_receipt *out);
/* Poll until the daemon closes fd (read() returns 0 or an error).
 * Returns 0, or -1 on timeout; data the daemon sends is discarded. */
int harness_wait_closed(int fd);

#endif /* CTXLEAK_HARNESS_H */
