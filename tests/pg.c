/*
 * pg.c: a PostgreSQL server of the test's own on a temporary directory,
 * Unix socket only.  See pg.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "pg.h"

#define POLL_MS 20

static char error_buf[8192];

static void __attribute__((format(printf, 1, 2)))
set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(error_buf, sizeof error_buf, fmt, ap);
	va_end(ap);
}

const char *pg_error(void)
{
	return error_buf;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int is_executable_in(const char *dir, const char *name)
{
	char path[512];

	snprintf(path, sizeof path, "%s/%s", dir, name);
	return access(path, X_OK) == 0;
}

/* The directory of initdb and postgres, in buf: `pg_config --bindir`
 * (libpq-dev's pg_config names the server's directory), else the newest
 * /usr/lib/postgresql/<N>/bin.  0 or -1. */
static int find_bin(char *buf, size_t len)
{
	FILE *p = popen("pg_config --bindir 2>/dev/null", "r");
	glob_t g;

	buf[0] = '\0';
	if (p != NULL) {
		if (fgets(buf, (int)len, p) == NULL)
			buf[0] = '\0';
		pclose(p);
		buf[strcspn(buf, "\n")] = '\0';
		if (*buf && is_executable_in(buf, "initdb") &&
		    is_executable_in(buf, "postgres"))
			return 0;
	}
	if (glob("/usr/lib/postgresql/*/bin", 0, NULL, &g) == 0) {
		/* glob sorts; the last is the newest of one-digit-length
		 * majors, which is every Debian release's */
		for (size_t i = g.gl_pathc; i-- > 0;)
			if (is_executable_in(g.gl_pathv[i], "initdb") &&
			    is_executable_in(g.gl_pathv[i], "postgres")) {
				snprintf(buf, len, "%s", g.gl_pathv[i]);
				globfree(&g);
				return 0;
			}
		globfree(&g);
	}
	set_error("no PostgreSQL server binaries (initdb, postgres): "
		  "apt-get install postgresql");
	return -1;
}

int pg_available(void)
{
	char bin[256];

	return find_bin(bin, sizeof bin);
}

char *pg_log(const struct pg_server *s)
{
	FILE *f = fopen(s->log, "r");
	size_t len = 0, cap = 4096, n;
	char *buf = malloc(cap);

	if (buf == NULL)
		abort();
	buf[0] = '\0';
	if (f == NULL)
		return buf;
	do {
		if (cap - len < 2048) {
			cap *= 2;
			buf = realloc(buf, cap);
			if (buf == NULL)
				abort();
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return buf;
}

/* The failure message with the end of the server's log, which says why. */
static void set_error_with_log(const struct pg_server *s, const char *what)
{
	char *log = pg_log(s);
	size_t len = strlen(log);
	const char *tail = len > 4000 ? log + len - 4000 : log;

	set_error("%s; %s says:\n%s", what, s->log, tail);
	free(log);
}

/*
 * Fork and exec bin/argv[0] as the server's user, its output appended to
 * the log.  The child dies with the caller: the death signal is set after
 * the change of user, which would clear it.
 */
static pid_t spawn(const struct pg_server *s, char *const *argv)
{
	pid_t parent = getpid(), pid = fork();
	char path[512];
	int fd;

	if (pid != 0)
		return pid;
	fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (fd == -1)
		_exit(126);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	if (geteuid() == 0 && (setgroups(0, NULL) == -1 ||
			       setgid(s->gid) == -1 || setuid(s->uid) == -1)) {
		fprintf(stderr, "cannot become uid %d: %s\n", (int)s->uid,
			strerror(errno));
		_exit(126);
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
		_exit(125);
	if (chdir(s->dir) == -1)
		_exit(126);
	setenv("LC_ALL", "C", 1);
	unsetenv("PGDATA");
	snprintf(path, sizeof path, "%s/%s", s->bin, argv[0]);
	execv(path, argv);
	fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
	_exit(127);
}

/* Wait for pid's exit at most PG_TIMEOUT_SEC; its status, or -1 on
 * timeout. */
static int wait_exit(pid_t pid)
{
	int st;

	for (int i = 0; i < PG_TIMEOUT_SEC * 1000 / POLL_MS; i++) {
		pid_t r = waitpid(pid, &st, WNOHANG);

		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st)
					     : 128 + WTERMSIG(st);
		if (r == -1)
			return -1;
		sleep_ms(POLL_MS);
	}
	return -1;
}

static int initdb(struct pg_server *s)
{
	char *argv[] = {"initdb",
			"-D",
			s->data,
			"-U",
			s->user,
			"-A",
			"trust",
			"-E",
			"UTF8",
			"--locale",
			"C",
			"--no-sync",
			"--no-instructions",
			NULL};
	pid_t pid = spawn(s, argv);
	int st = pid == -1 ? -1 : wait_exit(pid);

	if (st != 0) {
		if (pid > 0 && st == -1) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		set_error_with_log(s, "initdb failed");
		return -1;
	}
	return 0;
}

/* Start postgres on the cluster and wait until it accepts connections. */
static int launch(struct pg_server *s)
{
	char sockdir[96], *argv[] = {"postgres",
				     "-D",
				     s->data,
				     "-c",
				     "listen_addresses=",
				     "-c",
				     sockdir,
				     "-c",
				     "fsync=off",
				     "-c",
				     "synchronous_commit=off",
				     "-c",
				     "full_page_writes=off",
				     NULL};
	int st;

	snprintf(sockdir, sizeof sockdir, "unix_socket_directories=%s", s->dir);
	s->pid = spawn(s, argv);
	if (s->pid == -1) {
		s->pid = 0;
		set_error("fork: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < PG_TIMEOUT_SEC * 1000 / POLL_MS; i++) {
		if (PQping(s->admin) == PQPING_OK)
			return 0;
		if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
			s->pid = 0;
			set_error_with_log(s, "postgres exited at start");
			return -1;
		}
		sleep_ms(POLL_MS);
	}
	set_error_with_log(s, "postgres did not accept connections in time");
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
	return -1;
}

static int create_database(struct pg_server *s)
{
	PGconn *c = PQconnectdb(s->admin);
	PGresult *r;
	int ok;

	if (PQstatus(c) != CONNECTION_OK) {
		set_error("connect %s: %s", s->admin, PQerrorMessage(c));
		PQfinish(c);
		return -1;
	}
	r = PQexec(c, "CREATE DATABASE ctxleak");
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		set_error("CREATE DATABASE: %s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	return ok ? 0 : -1;
}

/* The user the server runs as: nobody for root, else the caller. */
static int pick_user(struct pg_server *s)
{
	struct passwd *pw;

	if (geteuid() != 0) {
		s->uid = geteuid();
		s->gid = getegid();
		return 0;
	}
	pw = getpwnam("nobody");
	if (pw == NULL) {
		set_error("running as root, and there is no user nobody to "
			  "run postgres as");
		return -1;
	}
	s->uid = pw->pw_uid;
	s->gid = pw->pw_gid;
	return 0;
}

int pg_start(struct pg_server *s)
{
	memset(s, 0, sizeof *s);
	if (find_bin(s->bin, sizeof s->bin) == -1 || pick_user(s) == -1)
		return -1;
	snprintf(s->dir, sizeof s->dir, "/tmp/ctxleak-pg-XXXXXX");
	if (mkdtemp(s->dir) == NULL) {
		set_error("mkdtemp: %s", strerror(errno));
		return -1;
	}
	/* Others may enter to reach the socket; the cluster's directory is
	 * made 0700 by initdb. */
	if (chmod(s->dir, 0755) == -1 ||
	    (geteuid() == 0 && chown(s->dir, s->uid, s->gid) == -1)) {
		set_error("%s: %s", s->dir, strerror(errno));
		return -1;
	}
	snprintf(s->data, sizeof s->data, "%s/data", s->dir);
	snprintf(s->log, sizeof s->log, "%s/postgres.log", s->dir);
	snprintf(s->user, sizeof s->user, "postgres");
	snprintf(s->url, sizeof s->url, "postgresql:///ctxleak?host=%s&user=%s",
		 s->dir, s->user);
	snprintf(s->admin, sizeof s->admin,
		 "postgresql:///postgres?host=%s&user=%s", s->dir, s->user);
	if (initdb(s) == -1 || launch(s) == -1)
		return -1;
	return create_database(s);
}

int pg_stop(struct pg_server *s, enum pg_stop_mode mode)
{
	int st;

	if (s->pid == 0)
		return 0;
	kill(s->pid, mode == PG_STOP_FAST ? SIGINT : SIGQUIT);
	st = wait_exit(s->pid);
	if (st == -1) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
		set_error_with_log(s, "postgres did not stop in time");
		return -1;
	}
	s->pid = 0;
	/* Backends notice the postmaster's exit; a new one must not find
	 * the old one's shared memory still held. */
	for (int i = 0; i < PG_TIMEOUT_SEC * 1000 / POLL_MS; i++) {
		if (PQping(s->admin) == PQPING_NO_RESPONSE)
			return 0;
		sleep_ms(POLL_MS);
	}
	set_error("postgres still answers after its postmaster exited");
	return -1;
}

int pg_restart(struct pg_server *s)
{
	if (s->pid != 0) {
		set_error("postgres is running");
		return -1;
	}
	return launch(s);
}

void pg_cleanup(struct pg_server *s)
{
	char cmd[128];

	if (s->pid != 0 && pg_stop(s, PG_STOP_IMMEDIATE) == -1 && s->pid) {
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
	}
	s->pid = 0;
	if (s->dir[0] != '\0' && strncmp(s->dir, "/tmp/ctxleak-pg-", 16) == 0) {
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "pg_cleanup: %s failed\n", cmd);
	}
	s->dir[0] = '\0';
}
