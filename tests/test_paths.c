/*
 * test_paths.c: the daemon and the CLI find the same default database
 * (proto/common.h): with a relative XDG_STATE_HOME, which the XDG
 * specification says to ignore, and with no HOME, where the password
 * database's home counts.  Both programs run as a user other than root
 * (nobody, for tests run as root), since root's default is the system
 * database whatever the environment says.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_run.h"
#include "check_main.h"
#include "harness.h"

#define NOBODY 65534

/* Who runs the programs: root's defaults ignore the environment. */
static uid_t test_uid(void)
{
	return geteuid() == 0 ? NOBODY : geteuid();
}

/* Child side: in dir, environment changes ("K=V" sets, "K" unsets) as
 * for run_argv, stdout and stderr to fd, as test_uid(); then the daemon
 * (a copy any user may reach) with argv. */
static void exec_daemon(const char *bin, const char *dir,
			const char *const *env, const char *const *argv, int fd)
{
	for (; *env != NULL; env++) {
		const char *eq = strchr(*env, '=');
		char key[64];

		if (eq == NULL) {
			unsetenv(*env);
			continue;
		}
		snprintf(key, sizeof key, "%.*s", (int)(eq - *env), *env);
		setenv(key, eq + 1, 1);
	}
	dup2(fd, 1);
	dup2(fd, 2);
	if (chdir(dir) == -1 ||
	    (geteuid() == 0 && (setgid(NOBODY) == -1 || setuid(NOBODY) == -1)))
		_exit(126);
	execv(bin, (char *const *)argv);
	_exit(127);
}

/* Starts ctxleakd (argv) as test_uid() in dir with env, its output into
 * dir/log; its pid.  *bin: the copy, for harness_remove_copy. */
static pid_t spawn_daemon(const char *dir, const char *const *env,
			  const char *const *argv, char *bin, size_t len)
{
	char log[200];
	int fd;
	pid_t pid;

	ck_assert_msg(
	    harness_copy_for_anyone(harness_daemon_path(), bin, len) == 0, "%s",
	    harness_error());
	snprintf(log, sizeof log, "%s/log", dir);
	fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
	ck_assert_int_ge(fd, 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		exec_daemon(bin, dir, env, argv, fd);
	close(fd);
	return pid;
}

static int wait_exit(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) == -1)
		ck_assert_int_eq(errno, EINTR);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A directory that test_uid() owns, for a home. */
static void make_home(char *dir)
{
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0755), 0);
	ck_assert_int_eq(chown(dir, test_uid(), (gid_t)-1), 0);
}

/* The path after "default" (and ": ") up to ')' on the line of "--db" in
 * a help text, in buf. */
static const char *help_db(const char *help, char *buf, size_t len)
{
	const char *db = strstr(help, "--db");
	const char *def = db != NULL ? strstr(db, "default") : NULL;
	const char *end;

	ck_assert_msg(def != NULL, "no default database in: %s", help);
	def += strlen("default");
	def += strspn(def, ": \n"); /* --help wraps before a long path */
	end = strchr(def, ')');
	ck_assert_ptr_nonnull(end);
	snprintf(buf, len, "%.*s", (int)(end - def), def);
	return buf;
}

/* The default database that ctxleakd --help and ctxleak --help name
 * under env, which must be the same, in buf. */
static const char *agreed_db(const char *const *env, char *buf, size_t len)
{
	char home[] = "/tmp/ctxleak-paths-XXXXXX", bin[120], path[200];
	char cli_db[4096], *help;
	const char *argv[] = {"ctxleakd", "--help", NULL};
	char *cli_argv[] = {"ctxleak", "--help", NULL};
	struct run r;
	pid_t pid;

	make_home(home);
	pid = spawn_daemon(home, env, argv, bin, sizeof bin);
	ck_assert_int_eq(wait_exit(pid), 0);
	harness_remove_copy(bin);
	snprintf(path, sizeof path, "%s/log", home);
	help = read_file_at(path);
	help_db(help, buf, len);
	free(help);
	unlink(path);
	rmdir(home);

	r = run_argv(env, cli_argv, test_uid());
	ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
	help_db(r.out, cli_db, sizeof cli_db);
	ck_assert_msg(strcmp(buf, cli_db) == 0,
		      "the daemon writes %s, the CLI reads %s", buf, cli_db);
	run_free(&r);
	return buf;
}

/* Both take the home of the password database under env. */
static void assert_passwd_home(const char *const *env)
{
	struct passwd *pw = getpwuid(test_uid());
	char db[4096], want[4096];

	ck_assert_ptr_nonnull(pw);
	snprintf(want, sizeof want, "%s/.local/state/ctxleak/ctxleak.db",
		 pw->pw_dir);
	ck_assert_str_eq(agreed_db(env, db, sizeof db), want);
}

/* No HOME. */
START_TEST(test_no_home)
{
	const char *env[] = {"HOME", "XDG_STATE_HOME", NULL};

	assert_passwd_home(env);
}
END_TEST

/* A relative HOME is no home either. */
START_TEST(test_relative_home)
{
	const char *env[] = {"HOME=home", "XDG_STATE_HOME", NULL};

	assert_passwd_home(env);
}
END_TEST

/* An absolute XDG_STATE_HOME wins over HOME. */
START_TEST(test_absolute_state_home)
{
	const char *env[] = {"HOME=/tmp/h", "XDG_STATE_HOME=/tmp/s", NULL};
	char db[4096];

	ck_assert_str_eq(agreed_db(env, db, sizeof db),
			 "/tmp/s/ctxleak/ctxleak.db");
}
END_TEST

/* A relative XDG_STATE_HOME is ignored: the daemon, run for real, writes
 * HOME's database, and the CLI, run with the same environment, opens
 * it. */
START_TEST(test_relative_state_home)
{
	char home[] = "/tmp/ctxleak-paths-XXXXXX", bin[120], sock[120];
	char home_env[120], want[200], rel[200], log[200], *text;
	const char *env[] = {home_env, "XDG_STATE_HOME=state", NULL};
	const char *argv[] = {"ctxleakd", "--socket", sock, NULL};
	char *cli_argv[] = {"ctxleak", "processes", "--json", NULL};
	struct stat st;
	struct run r;
	pid_t pid;
	int i;

	make_home(home);
	snprintf(home_env, sizeof home_env, "HOME=%s", home);
	snprintf(sock, sizeof sock, "%s/ctxleak.sock", home);
	snprintf(want, sizeof want, "%s/.local/state/ctxleak/ctxleak.db", home);
	snprintf(rel, sizeof rel, "%s/state/ctxleak/ctxleak.db", home);
	snprintf(log, sizeof log, "%s/log", home);
	pid = spawn_daemon(home, env, argv, bin, sizeof bin);
	/* It opens the database before it listens. */
	for (i = 0; i < HARNESS_TIMEOUT_SEC * 100 && stat(sock, &st) == -1; i++)
		harness_sleep_ms(10);
	kill(pid, SIGTERM);
	ck_assert_int_eq(wait_exit(pid), 0);
	harness_remove_copy(bin);
	text = read_file_at(log);
	ck_assert_msg(stat(want, &st) == 0, "no %s; the daemon said: %s", want,
		      text);
	ck_assert_msg(stat(rel, &st) == -1, "the daemon wrote %s", rel);
	free(text);

	r = run_argv(env, cli_argv, test_uid());
	ck_assert_msg(r.status == 0, "status %d: %s", r.status, r.err);
	ck_assert_str_eq(r.out, "");
	run_free(&r);
	snprintf(rel, sizeof rel, "rm -rf %s", home);
	ck_assert_int_eq(system(rel), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("paths");

	suite_add_tcase(s, check_tcase("default database", 60, test_no_home,
				       test_relative_home,
				       test_absolute_state_home,
				       test_relative_state_home, NULL));
	return check_main(s, NULL);
}
