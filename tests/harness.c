/*
 * harness.c: the integration-test harness: the real ctxleakd in a
 * temporary directory, client children, raw connections, and read-only
 * queries on the daemon's database.  See harness.h.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "harness.h"
#include "proto.h"

#define POLL_MS 10

static char error_buf[4096];

static void __attribute__((format(printf, 1, 2)))
set_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(error_buf, sizeof error_buf, fmt, ap);
	va_end(ap);
}

const char *harness_error(void)
{
	return error_buf;
}

const char *harness_daemon_path(void)
{
	const char *bin = getenv("CTXLEAKD_BIN");

	return bin != NULL && *bin != '\0' ? bin : "build/ctxleakd";
}

const char *harness_cli_path(void)
{
	const char *bin = getenv("CTXLEAK_BIN");

	return bin != NULL && *bin != '\0' ? bin : "build/ctxleak";
}

const char *harness_examples_path(void)
{
	const char *dir = getenv("CTXLEAK_EXAMPLES");

	return dir != NULL && *dir != '\0' ? dir : "build/examples";
}

int harness_copy_for_anyone(const char *src, char *out, size_t len)
{
	char dir[] = "/tmp/ctxleak-bin-XXXXXX", buf[65536];
	const char *base = strrchr(src, '/');
	int in, to = -1, rc = -1;
	ssize_t n;

	if (mkdtemp(dir) == NULL || chmod(dir, 0755) == -1) {
		set_error("mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(out, len, "%s/%s", dir, base != NULL ? base + 1 : src);
	if ((in = open(src, O_RDONLY | O_CLOEXEC)) == -1 ||
	    (to = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755)) ==
		-1) {
		set_error("copy %s: %s", src, strerror(errno));
		goto done;
	}
	while ((n = read(in, buf, sizeof buf)) > 0)
		if (write(to, buf, (size_t)n) != n)
			break;
	if (n == 0)
		rc = 0;
	else
		set_error("copy %s: %s", src, strerror(errno));
done:
	if (in != -1)
		close(in);
	if (to != -1)
		close(to);
	return rc;
}

void harness_remove_copy(const char *path)
{
	char dir[256];
	const char *slash = strrchr(path, '/');

	unlink(path);
	if (slash == NULL || (size_t)(slash - path) >= sizeof dir)
		return;
	snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
	rmdir(dir);
}

int harness_raise_fd_limit(unsigned long want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		set_error("getrlimit: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_max < want) {
		set_error("RLIMIT_NOFILE hard limit %llu is under %lu",
			  (unsigned long long)rl.rlim_max, want);
		return -1;
	}
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		set_error("setrlimit: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void harness_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

int harness_fd_count(pid_t pid)
{
	char path[64];
	struct dirent *e;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
	if ((dir = opendir(path)) == NULL) {
		set_error("%s: %s", path, strerror(errno));
		return -1;
	}
	while ((e = readdir(dir)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

long harness_status_kb(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t len = strlen(field);
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	if ((f = fopen(path, "r")) == NULL) {
		set_error("%s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, field, len) == 0 && line[len] == ':')
			kb = strtol(line + len + 1, NULL, 10);
	fclose(f);
	return kb;
}

/* Polls of POLL_MS within HARNESS_TIMEOUT_SEC. */
#define POLL_ROUNDS (HARNESS_TIMEOUT_SEC * 1000 / POLL_MS)

/* Exit status as a shell reports it. */
static int exit_status(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/* Blocks until pid exits or the timeout passes, through a pidfd, so that
 * the caller (bench_ingest times the daemon up to its exit) learns of the
 * exit at once rather than at the next poll.  1 when it exited, 0 when
 * the timeout passed, -1 when pidfds are not there. */
static int wait_pidfd(pid_t pid, int timeout_ms)
{
	int fd = (int)syscall(SYS_pidfd_open, pid, 0), n;
	struct pollfd p;

	if (fd == -1)
		return -1;
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	do
		n = poll(&p, 1, timeout_ms);
	while (n == -1 && errno == EINTR);
	close(fd);
	return n == 1;
}

/* Wait for pid within the timeout; -1 when it is still running. */
static int wait_exit(pid_t pid)
{
	int status, exited = wait_pidfd(pid, HARNESS_TIMEOUT_SEC * 1000);

	if (exited == 1 && waitpid(pid, &status, 0) == pid)
		return exit_status(status);
	if (exited == 0)
		return -1;
	for (int i = 0; i < POLL_ROUNDS; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return exit_status(status);
		if (r == -1 && errno != EINTR)
			return -1;
		harness_sleep_ms(POLL_MS);
	}
	return -1;
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL)
		return strdup("");
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap * 2 + 8192;
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

int harness_prepare(struct harness_daemon *d)
{
	memset(d, 0, sizeof *d);
	snprintf(d->dir, sizeof d->dir, "/tmp/ctxleak-test-XXXXXX");
	if (mkdtemp(d->dir) == NULL) {
		set_error("mkdtemp: %s", strerror(errno));
		return -1;
	}
	snprintf(d->socket, sizeof d->socket, "%s/ctxleak.sock", d->dir);
	snprintf(d->db, sizeof d->db, "%s/ctxleak.db", d->dir);
	snprintf(d->log, sizeof d->log, "%s/stderr.log", d->dir);
	return 0;
}

/* -1 when path does not fit in sun_path. */
static int fill_address(struct sockaddr_un *sun, const char *path)
{
	size_t len = strlen(path);

	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	if (len >= sizeof sun->sun_path) {
		set_error("socket path too long: %s", path);
		return -1;
	}
	memcpy(sun->sun_path, path, len);
	return 0;
}

static int socket_accepts(const char *path)
{
	struct sockaddr_un sun;
	int fd, ok;

	if (fill_address(&sun, path) == -1)
		return 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return 0;
	ok = connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0;
	close(fd);
	return ok;
}

/* In a child just forked: it goes when the test does, so that a test
 * killed (a timeout, a crash) leaves no daemon or client behind to hold
 * sockets and CPU for the next ones. */
static void die_with_parent(pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() != parent)
		_exit(125);
}

static pid_t spawn_daemon(const char *const *argv, const char *out_path)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	int fd;

	if (pid != 0)
		return pid;
	die_with_parent(parent);
	fd = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (fd == -1)
		_exit(126);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
	execv(harness_daemon_path(), (char *const *)argv);
	fprintf(stderr, "exec %s: %s\n", harness_daemon_path(),
		strerror(errno));
	_exit(127);
}

int harness_launch(struct harness_daemon *d, const char *const *args)
{
	const char *argv[64] = {"ctxleakd", "--socket", d->socket, "--db",
				d->db,	    "--linger", "0"};
	size_t n = 7;
	char *log;
	int st;

	for (; args != NULL && *args != NULL; args++)
		if (n < sizeof argv / sizeof argv[0] - 1)
			argv[n++] = *args;
	argv[n] = NULL;
	d->pid = spawn_daemon(argv, d->log);
	if (d->pid == -1) {
		set_error("fork: %s", strerror(errno));
		return -1;
	}
	for (int i = 0; i < POLL_ROUNDS; i++) {
		if (socket_accepts(d->socket))
			return 0;
		if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
			d->pid = 0;
			log = harness_log(d);
			set_error("ctxleakd exited with status %d before "
				  "listening:\n%s",
				  exit_status(st), log);
			free(log);
			return -1;
		}
		harness_sleep_ms(POLL_MS);
	}
	harness_kill(d);
	set_error("ctxleakd did not listen on %s in %d s", d->socket,
		  HARNESS_TIMEOUT_SEC);
	return -1;
}

int harness_start(struct harness_daemon *d, const char *const *args)
{
	if (harness_prepare(d) == -1)
		return -1;
	return harness_launch(d, args);
}

int harness_stop(struct harness_daemon *d)
{
	if (d->pid <= 0) {
		set_error("ctxleakd is not running");
		return -1;
	}
	kill(d->pid, SIGTERM);
	return harness_wait_exit(d);
}

int harness_wait_exit(struct harness_daemon *d)
{
	int st;

	st = wait_exit(d->pid);
	if (st == -1) {
		set_error("ctxleakd did not stop in %d s", HARNESS_TIMEOUT_SEC);
		harness_kill(d);
		return -1;
	}
	d->pid = 0;
	return st;
}

void harness_kill(struct harness_daemon *d)
{
	if (d->pid <= 0)
		return;
	kill(d->pid, SIGKILL);
	waitpid(d->pid, NULL, 0);
	d->pid = 0;
}

void harness_cleanup(struct harness_daemon *d)
{
	char cmd[400];

	harness_kill(d);
	if (d->dir[0] == '\0')
		return;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "harness: cannot remove %s\n", d->dir);
	d->dir[0] = '\0';
}

char *harness_log(const struct harness_daemon *d)
{
	return read_file(d->log);
}

static int count_occurrences(const char *hay, const char *needle)
{
	int n = 0;

	while ((hay = strstr(hay, needle)) != NULL) {
		n++;
		hay += strlen(needle);
	}
	return n;
}

int harness_log_count(const struct harness_daemon *d, const char *needle)
{
	char *log = harness_log(d);
	int n;

	if (log == NULL) {
		set_error("cannot read %s", d->log);
		return -1;
	}
	n = count_occurrences(log, needle);
	free(log);
	return n;
}

int harness_wait_log(const struct harness_daemon *d, const char *needle,
		     int count)
{
	char *log;
	int n;

	for (int i = 0; i < POLL_ROUNDS; i++) {
		log = harness_log(d);
		n = count_occurrences(log, needle);
		free(log);
		if (n >= count)
			return 0;
		harness_sleep_ms(POLL_MS);
	}
	set_error("'%s' not %d times in the daemon's log", needle, count);
	return -1;
}

int harness_exec(const char *const *argv, char **out)
{
	char path[] = "/tmp/ctxleak-exec-XXXXXX";
	int fd = mkstemp(path);
	pid_t pid;
	int st;

	if (fd == -1) {
		set_error("mkstemp: %s", strerror(errno));
		return -1;
	}
	close(fd);
	pid = spawn_daemon(argv, path);
	st = pid == -1 ? -1 : wait_exit(pid);
	if (st == -1 && pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		set_error("ctxleakd did not exit in %d s", HARNESS_TIMEOUT_SEC);
	}
	if (out != NULL)
		*out = read_file(path);
	unlink(path);
	return st;
}

/* ------------------------------------------------------------ database */

static sqlite3_stmt *query(const struct harness_daemon *d, const char *sql,
			   sqlite3 **db)
{
	sqlite3_stmt *st = NULL;

	if (sqlite3_open_v2(d->db, db, SQLITE_OPEN_READONLY, NULL) !=
	    SQLITE_OK) {
		set_error("open %s: %s", d->db, sqlite3_errmsg(*db));
		return NULL;
	}
	sqlite3_busy_timeout(*db, HARNESS_TIMEOUT_SEC * 1000);
	if (sqlite3_prepare_v2(*db, sql, -1, &st, NULL) != SQLITE_OK) {
		set_error("%s: %s", sql, sqlite3_errmsg(*db));
		return NULL;
	}
	if (sqlite3_step(st) != SQLITE_ROW) {
		set_error("%s: no row (%s)", sql, sqlite3_errmsg(*db));
		sqlite3_finalize(st);
		return NULL;
	}
	return st;
}

int64_t harness_query_int(const struct harness_daemon *d, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = query(d, sql, &db);
	int64_t v = INT64_MIN;

	if (st != NULL)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

char *harness_query_str(const struct harness_daemon *d, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = query(d, sql, &db);
	const unsigned char *text;
	char *v = NULL;

	if (st != NULL && (text = sqlite3_column_text(st, 0)) != NULL)
		v = strdup((const char *)text);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

int harness_wait_int(const struct harness_daemon *d, const char *sql,
		     int64_t want)
{
	int64_t v = INT64_MIN;

	for (int i = 0; i < POLL_ROUNDS; i++) {
		v = harness_query_int(d, sql);
		if (v != INT64_MIN && v >= want)
			return 0;
		harness_sleep_ms(POLL_MS);
	}
	set_error("%s: %lld, not >= %lld after %d s", sql, (long long)v,
		  (long long)want, HARNESS_TIMEOUT_SEC);
	return -1;
}

/* ------------------------------------------------------------- clients */

pid_t harness_client_spawn(const struct harness_daemon *d,
			   enum ctxleak_backend backend, harness_client_fn fn,
			   void *arg)
{
	struct ctxleak_options opt;
	pid_t parent = getpid();
	pid_t pid = fork();
	int rc;

	if (pid != 0) {
		if (pid == -1)
			set_error("fork: %s", strerror(errno));
		return pid;
	}
	die_with_parent(parent);
	setenv("CTXLEAK_SOCKET", d->socket, 1);
	ctxleak_options_init(&opt);
	opt.socket_path = d->socket;
	opt.backend = backend;
	opt.app = "harness";
	if (ctxleak_init(&opt) != CTXLEAK_OK)
		_exit(125);
	rc = fn(arg);
	ctxleak_shutdown();
	_exit(rc);
}

int harness_client_wait(pid_t pid)
{
	int st = wait_exit(pid);

	if (st == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		set_error("client %d did not exit in %d s", (int)pid,
			  HARNESS_TIMEOUT_SEC);
	}
	return st;
}

int harness_client(const struct harness_daemon *d, enum ctxleak_backend backend,
		   harness_client_fn fn, void *arg)
{
	pid_t pid = harness_client_spawn(d, backend, fn, arg);

	return pid == -1 ? -1 : harness_client_wait(pid);
}

int harness_worked_example(void *arg)
{
	struct harness_example *ex = arg;
	uint64_t a, b, c, token_a, token_b;

	ctxleak_resume(0); /* accept callback */
	a = ctxleak_begin("GET /a");
	if (ex)
		ex->id[1] = a;
	ctxleak_tag("user", "alice");
	if (ex && ex->tag_a)
		ex->tag_a();
	token_a = ctxleak_capture();
	ctxleak_suspend();

	ctxleak_resume(0); /* accept callback */
	b = ctxleak_begin("GET /b");
	if (ex)
		ex->id[2] = b;
	ctxleak_tag("user", "bob");
	token_b = ctxleak_capture();
	ctxleak_suspend();
	if (ex && ex->between) {
		int status = ex->between(ex->arg);

		if (status)
			return status;
	}

	ctxleak_resume(token_a); /* DB callback of A */
	ctxleak_event("db.done", NULL);
	ctxleak_tag("status", "200");
	ctxleak_end(a);
	ctxleak_suspend();

	ctxleak_resume(token_b); /* DB callback of B */
	ctxleak_event("db.done", NULL);
	ctxleak_end(b);
	ctxleak_suspend();

	ctxleak_resume(0); /* accept callback */
	c = ctxleak_begin("GET /c");
	if (ex)
		ex->id[3] = c;
	ctxleak_end(c);
	ctxleak_suspend();
	return 0;
}

/* ----------------------------------------------------- raw connections */

int harness_connect(const struct harness_daemon *d)
{
	struct sockaddr_un sun;
	int fd;

	if (fill_address(&sun, d->socket) == -1)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof sun) == -1) {
		set_error("connect %s: %s", d->socket, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	return fd;
}

int harness_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			set_error("write: %s", strerror(errno));
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int harness_send_hello(int fd, uint64_t instance, uint32_t pid)
{
	struct proto_hello h = {
	    .version = PROTO_VERSION,
	    .instance = instance,
	    .pid = pid,
	    .app = {"raw", 3},
	    .backend = {"thread", 6},
	    .reason = {"test", 4},
	    .client = {"harness", 7},
	};
	unsigned char buf[512];
	size_t n = proto_encode_hello(buf, sizeof buf, &h);

	if (n == 0) {
		set_error("proto_encode_hello failed");
		return -1;
	}
	return harness_write_all(fd, buf, n);
}

/* One byte at a time: a RECEIPT is a few bytes, and whatever follows it
 * stays in the socket for the test to see. */
int harness_read_receipt(int fd, struct proto_receipt *out)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	unsigned char buf[64];
	size_t len = 0;
	int64_t n = 0;

	for (int i = 0; i < POLL_ROUNDS && n == 0 && len < sizeof buf; i++) {
		if (poll(&pfd, 1, POLL_MS) != 1)
			continue;
		if (recv(fd, buf + len, 1, 0) != 1) {
			set_error("the daemon closed before its RECEIPT");
			return -1;
		}
		n = proto_parse_receipt(buf, ++len, out);
	}
	if (n <= 0) {
		set_error("no RECEIPT: %zu bytes, %s", len,
			  n < 0 ? "not a RECEIPT" : "incomplete");
		return -1;
	}
	return 0;
}

int harness_wait_closed(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char buf[256];

	for (int i = 0; i < POLL_ROUNDS; i++) {
		if (poll(&pfd, 1, POLL_MS) == 1) {
			ssize_t n = read(fd, buf, sizeof buf);

			if (n <= 0)
				return 0;
		}
	}
	set_error("the daemon kept the connection open for %d s",
		  HARNESS_TIMEOUT_SEC);
	return -1;
}
