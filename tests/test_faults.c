/*
 * test_faults.c: the real ctxleakd when its storage fails it.
 *
 * A full disk needs no root and no mount here: a file-size limit
 * (RLIMIT_FSIZE), lowered and raised from outside with prlimit(2), makes
 * every write past it fail as on a full disk (EFBIG, which SQLite reports
 * as an I/O error).  The daemon must log the episode once, keep its
 * clients, count what it could not store, and write again once the limit
 * is gone.
 *
 * A database the daemon may not create must stop it at once with one
 * clear line.  (A path under a regular file is test_daemon's
 * test_unwritable_db; here, a directory without write permission and a
 * read-only file.)
 */
#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "ctxleak.h"
#include "emitter.h"
#include "harness_check.h"

/* Records emitted after the first failure before the limit is raised:
 * enough for many failed commit attempts, not only the first. */
#define RECORDS_WHILE_FULL 4000

static const char failed_line[] = "rows not stored, retrying";
static const char recovered_line[] = "store: writing again; ";

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : 0;
}

/* The daemon's file-size limit, set from outside as an operator would. */
static void set_fsize_limit(pid_t pid, rlim_t limit)
{
	struct rlimit rl = {limit, RLIM_INFINITY};

	ck_assert_msg(prlimit(pid, RLIMIT_FSIZE, &rl, NULL) == 0, "prlimit: %s",
		      strerror(errno));
}

static void assert_running(const struct harness_daemon *d)
{
	ck_assert_msg(waitpid(d->pid, NULL, WNOHANG) == 0, "the daemon exited");
}

/* ------------------------------------------------------------ clients */

static int64_t stored_of(const struct harness_daemon *d, pid_t pid)
{
	return query_int(d,
			 "SELECT count(*) FROM records WHERE process_id = "
			 "(SELECT id FROM processes WHERE pid = %d)",
			 (int)pid);
}

/* Every row of a process: its sites, records, requests and their tags. */
static int64_t rows_of(const struct harness_daemon *d, pid_t pid)
{
	return query_int(
	    d,
	    "SELECT (SELECT count(*) FROM sites WHERE process_id = "
	    "p.id) + (SELECT count(*) FROM records WHERE "
	    "process_id = p.id) + (SELECT count(*) FROM requests "
	    "WHERE process_id = p.id) + (SELECT count(*) FROM tags "
	    "t JOIN requests r ON r.id = t.request_id WHERE "
	    "r.process_id = p.id) FROM processes p WHERE pid = %d",
	    (int)pid);
}

/* ------------------------------------------------------------ disk full */

/* The number that follows the last `before` in the daemon's log. */
static uint64_t number_in_log(const struct harness_daemon *d,
			      const char *before)
{
	char *log = harness_log(d);
	const char *p = NULL;
	unsigned long long n = 0;

	for (const char *q = log; (q = strstr(q, before)) != NULL; q++)
		p = q;
	ck_assert_msg(p != NULL, "no '%s' in:\n%s", before, log);
	ck_assert_int_eq(sscanf(p + strlen(before), "%llu", &n), 1);
	free(log);
	return n;
}

/* A new peer says HELLO while nothing can be written, and hangs up: the
 * daemon takes the process (its row comes with the next commit that
 * works), and closes its end once it has read everything. */
static void hello_while_full(const struct harness_daemon *d)
{
	int fd = harness_connect(d);

	ck_assert_msg(fd >= 0, "%s", harness_error());
	ck_assert_int_eq(harness_send_hello(fd, 4242, 0), 0);
	ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
	ck_assert_msg(harness_wait_closed(fd) == 0, "%s", harness_error());
	close(fd);
}

/* The rows of an emitter (emitter.h): its 4 sites, a record row each,
 * and per request (4 records) its requests row and one tag row. */
static int64_t rows_of_client(int64_t records)
{
	return 4 + records + records / 4 * 2;
}

START_TEST(test_disk_full_then_space_returns)
{
	struct harness_daemon d;
	struct emitter *busy = emitter_new(500), *after = emitter_new(500);
	struct emitter *during = emitter_new(500);
	char wal[160];
	int64_t received, stored, raw_rows;
	uint64_t at_failure, raised, failed;
	pid_t pid;

	START(&d, "--keep", "all");
	snprintf(wal, sizeof wal, "%s-wal", d.db);
	pid = harness_client_spawn(&d, CTXLEAK_BACKEND_TASK, emit_until_stopped,
				   busy);
	ck_assert_int_gt(pid, 0);
	ck_assert_msg(
	    harness_wait_int(&d, "SELECT count(*) FROM records", 100) == 0,
	    "%s", harness_error());

	/* Not one more frame in the WAL: the next commit fails whatever its
	 * size, and so does every later one until the limit goes. */
	set_fsize_limit(d.pid, (rlim_t)file_size(wal));
	ck_assert_msg(harness_wait_log(&d, failed_line, 1) == 0, "%s",
		      harness_error());
	/* os_unix.c retries a short write, and the retry's EFBIG becomes
	 * SQLITE_IOERR_WRITE, not SQLITE_FULL (test_store has that one):
	 * an I/O error must not be fatal either. */
	ck_assert_int_eq(harness_log_count(&d, "failed: disk I/O error"), 1);
	at_failure = atomic_load(&busy->produced);
	emitter_wait_produced(busy, at_failure + RECORDS_WHILE_FULL / 2);
	hello_while_full(&d);
	/* A client that comes while the disk is full is served too. */
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_TASK, emit_batch, during), 0);
	emitter_wait_produced(busy, at_failure + RECORDS_WHILE_FULL);
	assert_running(&d);
	ck_assert_int_eq(harness_log_count(&d, failed_line), 1);
	ck_assert_int_eq(harness_log_count(&d, recovered_line), 0);

	raised = now_ms();
	set_fsize_limit(d.pid, RLIM_INFINITY);
	ck_assert_msg(harness_wait_log(&d, recovered_line, 1) == 0, "%s",
		      harness_error());
	printf("disk full (injected, expected): writing again %llu ms after "
	       "the limit was "
	       "raised\n",
	       (unsigned long long)(now_ms() - raised));
	fflush(stdout); /* before the next client forks */

	/* A client that comes after the episode is stored whole. */
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_TASK, emit_batch, after), 0);
	atomic_store(&busy->set->stop, 1);
	ck_assert_int_eq(harness_client_wait(pid), 0);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(harness_log_count(&d, failed_line), 1);
	ck_assert_int_eq(harness_log_count(&d, recovered_line), 1);
	ck_assert_int_eq(stored_of(&d, after->pid), 40);
	ck_assert_int_eq(query_int(&d,
				   "SELECT count(*) FROM requests WHERE "
				   "process_id = (SELECT id FROM processes "
				   "WHERE pid = %d)",
				   (int)after->pid),
			 10);

	/* The busy client's connection was served throughout: everything
	 * it produced reached the daemon. */
	received = query_int(&d, "SELECT records FROM processes WHERE pid = %d",
			     (int)busy->pid);
	ck_assert_uint_eq(busy->st.dropped, 0);
	ck_assert_uint_eq((uint64_t)received, busy->produced);
	/* The client that came while the disk was full: its process row
	 * (held until the disk took writes again) and every record it sent
	 * judged. */
	ck_assert_int_eq(query_int(&d,
				   "SELECT records FROM processes WHERE "
				   "pid = %d",
				   (int)during->pid),
			 40);
	/* No commit acknowledged them before it shut down, but the live
	 * daemon had taken them: the daemon counts the rows it could not
	 * store, and the client counts nothing twice. */
	ck_assert_uint_eq(during->st.dropped, 0);
	raw_rows = query_int(&d, "SELECT count(*) FROM processes WHERE "
				 "app = 'raw'");
	ck_assert_int_eq(raw_rows, 1);
	/* Each row the daemon did not store is one it counted: the busy
	 * and the during clients' missing rows.  Every other row of the
	 * run was stored. */
	stored = rows_of(&d, busy->pid) + rows_of(&d, during->pid);
	failed = number_in_log(&d, recovered_line);
	printf("disk full (injected, expected): %llu records emitted while "
	       "full; the daemon "
	       "received %lld, stored %lld of %lld rows, counted %llu "
	       "failed\n",
	       (unsigned long long)(busy->produced - at_failure),
	       (long long)received, (long long)stored,
	       (long long)rows_of_client(received), (unsigned long long)failed);
	ck_assert_int_lt(stored, rows_of_client(received) + rows_of_client(40));
	ck_assert_uint_eq(failed, (uint64_t)(rows_of_client(received) +
					     rows_of_client(40) - stored));
	ck_assert_uint_eq(number_in_log(&d, "rows stored, "), failed);
	emitters_free(busy->set);
	emitters_free(after->set);
	emitters_free(during->set);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------ unwritable */

#define NOBODY 65534

/* Who runs the daemon in these tests: root writes through any
 * permission, so as root the daemon runs as nobody. */
static uid_t daemon_uid(void)
{
	return geteuid() == 0 ? NOBODY : geteuid();
}

/* ctxleakd with exactly argv, as daemon_uid(): its exit status, and its
 * output in *out (free() it). */
static int exec_unprivileged(const char *const *argv, char **out)
{
	char buf[4096], bin[120];
	size_t len = 0;
	ssize_t n;
	int fds[2], st;
	pid_t pid;

	if (geteuid() == 0)
		ck_assert_msg(harness_copy_for_anyone(harness_daemon_path(), bin,
						      sizeof bin) == 0,
			      "%s", harness_error());
	ck_assert_int_eq(pipe(fds), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *text = NULL;

		close(fds[0]);
		if (geteuid() == 0 &&
		    (setenv("CTXLEAKD_BIN", bin, 1) == -1 ||
		     setgid(NOBODY) == -1 || setuid(NOBODY) == -1))
			_exit(126);
		st = harness_exec(argv, &text);
		if (text != NULL &&
		    write(fds[1], text, strlen(text)) != (ssize_t)strlen(text))
			_exit(125);
		_exit(st < 0 ? 124 : st);
	}
	close(fds[1]);
	while ((n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
		len += (size_t)n;
	close(fds[0]);
	buf[len] = '\0';
	*out = strdup(buf);
	st = harness_client_wait(pid);
	if (geteuid() == 0)
		harness_remove_copy(bin);
	return st;
}

/* The daemon stops before listening with one line that names the
 * database and the reason. */
static void assert_refused_at_start(const struct harness_daemon *d,
				    const char *db, const char *reason)
{
	char sock_dir[120], sock[140], *out, *nl;
	const char *argv[] = {"ctxleakd", "--socket", sock, "--db", db, NULL};
	int st;

	snprintf(sock_dir, sizeof sock_dir, "%s/run", d->dir);
	snprintf(sock, sizeof sock, "%s/ctxleak.sock", sock_dir);
	mkdir(sock_dir, 0700);
	ck_assert_int_eq(chown(sock_dir, daemon_uid(), (gid_t)-1), 0);
	st = exec_unprivileged(argv, &out);
	ck_assert_msg(st == 1, "status %d: %s", st, out);
	ck_assert_msg(strstr(out, "cannot open database") != NULL &&
			  strstr(out, db) != NULL &&
			  strstr(out, reason) != NULL,
		      "%s", out);
	nl = strchr(out, '\n');
	ck_assert_msg(nl != NULL && nl[1] == '\0', "not one line: %s", out);
	free(out);
	ck_assert_int_eq(access(sock, F_OK), -1);
}

START_TEST(test_database_directory_not_writable)
{
	struct harness_daemon d;
	char dir[100], db[120];

	ck_assert_int_eq(harness_prepare(&d), 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	snprintf(dir, sizeof dir, "%s/ro", d.dir);
	snprintf(db, sizeof db, "%s/ctxleak.db", dir);
	ck_assert_int_eq(mkdir(dir, 0555), 0);
	ck_assert_int_eq(chmod(dir, 0555), 0);
	assert_refused_at_start(&d, db, "Permission denied");
	ck_assert_int_eq(access(db, F_OK), -1);
	harness_cleanup(&d);
}
END_TEST

/* A database the daemon may read but not write: refused at start rather
 * than found out at the first commit. */
START_TEST(test_database_file_read_only)
{
	struct harness_daemon d;
	struct stat before, after;

	START(&d, "--keep", "all");
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	ck_assert_int_eq(chown(d.db, daemon_uid(), (gid_t)-1), 0);
	ck_assert_int_eq(chmod(d.db, 0440), 0);
	ck_assert_int_eq(stat(d.db, &before), 0);
	assert_refused_at_start(&d, d.db, "Permission denied");
	ck_assert_int_eq(stat(d.db, &after), 0);
	ck_assert_int_eq(after.st_size, before.st_size);
	ck_assert_int_eq(after.st_mtime, before.st_mtime);
	harness_cleanup(&d);
}
END_TEST

static Suite *faults_suite(void)
{
	Suite *s = suite_create("faults");

	suite_add_tcase(
	    s,
	    check_tcase("disk", 120, test_disk_full_then_space_returns, NULL));
	suite_add_tcase(s, check_tcase("start", 0,
				       test_database_directory_not_writable,
				       test_database_file_read_only, NULL));
	return s;
}

int main(void)
{
	return check_main(faults_suite(), NULL);
}
