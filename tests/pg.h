/*
 * pg.h: a real PostgreSQL server of a test's own, for the fleet tests and
 * benchmarks (ctxleak forward, the CLI on a central database).
 *
 * pg_start runs initdb on a fresh temporary directory and starts postgres
 * on it, listening on a Unix socket in that directory only (no TCP port:
 * tests run side by side and never meet), with fsync off (a test's data
 * need not survive a power cut), then creates the database "ctxleak" and
 * gives its connection URL.  Run as root, initdb and postgres (which refuse
 * root) run as the user nobody, owner of the directory; otherwise as the
 * caller.  The server's binaries are found through `pg_config --bindir`,
 * else /usr/lib/postgresql/<N>/bin (.ci/deps installs them).  A typical
 * test:
 *
 *	struct pg_server pg;
 *
 *	ck_assert_msg(pg_start(&pg) == 0, "%s", pg_error());
 *	... run `ctxleak forward --to pg.url`, connect with libpq to pg.url ...
 *	ck_assert_msg(pg_stop(&pg, PG_STOP_FAST) == 0, "%s", pg_error());
 *	ck_assert_msg(pg_restart(&pg) == 0, "%s", pg_error());
 *	pg_cleanup(&pg);
 *
 * Functions that can fail return -1 and leave a message for pg_error()
 * (the server's log included when it would not start); none calls Check,
 * so benchmarks use them too.  The server is a child of the caller, killed
 * with it (PR_SET_PDEATHSIG), so that a test that dies leaves no server.
 */
#ifndef CTXLEAK_PG_H
#define CTXLEAK_PG_H

#include <stddef.h>
#include <sys/types.h>

/* Seconds initdb, a start or a stop may take before it is a failure. */
#define PG_TIMEOUT_SEC 60

struct pg_server {
	pid_t pid;	 /* the postmaster; 0: not running */
	uid_t uid;	 /* the user the server runs as */
	gid_t gid;	 /* and its group */
	char dir[64];	 /* the temporary directory, the socket's too;
			    pg_cleanup removes it */
	char data[128];	 /* dir/data: the cluster */
	char log[128];	 /* dir/postgres.log: the server's stderr */
	char bin[256];	 /* the directory of initdb and postgres */
	char user[64];	 /* the superuser role the tests connect as */
	char url[256];	 /* postgresql:///ctxleak?host=DIR&user=USER */
	char admin[256]; /* the same for the database "postgres" */
};

/* How pg_stop stops the server. */
enum pg_stop_mode {
	PG_STOP_FAST,	   /* SIGINT: sessions are ended, a clean stop */
	PG_STOP_IMMEDIATE, /* SIGQUIT: no checkpoint, as a crash would */
};

/* The message of the last failure ("" when none). */
const char *pg_error(void);

/* Whether initdb and postgres are installed: 0 or -1 (see pg_error()). */
int pg_available(void);

/* initdb, start, create the database "ctxleak"; url is then ready.
 * 0 or -1. */
int pg_start(struct pg_server *s);

/* Stop the server and wait until it has exited (its socket is gone).
 * 0 or -1 (it is then killed). */
int pg_stop(struct pg_server *s, enum pg_stop_mode mode);

/* Start the stopped server again on the same directory and socket: the
 * same url reaches it, with the data it had.  0 or -1. */
int pg_restart(struct pg_server *s);

/* Kill the server if it runs and remove the directory. */
void pg_cleanup(struct pg_server *s);

/* The server's log so far, NUL-terminated; free() it. */
char *pg_log(const struct pg_server *s);

#endif /* CTXLEAK_PG_H */
