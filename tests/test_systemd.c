/*
 * test_systemd.c: ctxleakd as a systemd service and ctxleak as an
 * installed package.  The units pass systemd-analyze verify and its
 * offline security review; the sysusers.d and tmpfiles.d files create the
 * user and directories the units expect; the daemon adopts a socket passed
 * by systemd-socket-activate and reports READY, WATCHDOG and STOPPING on
 * $NOTIFY_SOCKET, and still works inside a rebuilt version of the unit's
 * sandbox; the man pages render without a warning; `make install` into a
 * DESTDIR gives a header, library and .pc file that a program builds and
 * runs against, and `make uninstall` takes every file back.
 *
 * Run from the top of the tree (tests/run does): it reads systemd/ and
 * runs make there.  Cases whose tools are missing (the systemd package's,
 * groff) are left out with a message, not failed; so are the ones that
 * need root (sysusers, the sandbox).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "ctxleak.h"
#include "harness.h"

/* Exposure score (0-100, lower is safer) that systemd-analyze security may
 * give the service at most: 10 is "1.0 SAFE"; the unit scores 4 with
 * systemd 252. */
#define MAX_EXPOSURE "10"

/* ---------------------------------------------------------------- helpers */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;

	ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	ck_assert_int_ge(len, 0);
	rewind(f);
	buf = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_msg(f != NULL, "create %s: %s", path, strerror(errno));
	ck_assert_int_ge(fputs(text, f), 0);
	ck_assert_int_eq(fclose(f), 0);
}

/* text with every `from` replaced by `to`; free() it. */
static char *replace_all(const char *text, const char *from, const char *to)
{
	size_t from_len = strlen(from), to_len = strlen(to), n = 0;
	const char *p;
	char *out, *o;

	for (p = strstr(text, from); p != NULL; p = strstr(p + from_len, from))
		n++;
	out = malloc(strlen(text) + n * to_len + 1);
	ck_assert_ptr_nonnull(out);
	for (o = out; (p = strstr(text, from)) != NULL; text = p + from_len) {
		memcpy(o, text, (size_t)(p - text));
		o += p - text;
		memcpy(o, to, to_len);
		o += to_len;
	}
	strcpy(o, text);
	return out;
}

static void path_join(char *out, const char *dir, const char *name)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

	ck_assert(n > 0 && n < PATH_MAX);
}

/* mkdir -p */
static void make_dirs(const char *path)
{
	char buf[PATH_MAX];

	ck_assert_uint_lt(strlen(path), sizeof buf);
	strcpy(buf, path);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		ck_assert(mkdir(buf, 0755) == 0 || errno == EEXIST);
		*p = '/';
	}
	ck_assert(mkdir(buf, 0755) == 0 || errno == EEXIST);
}

/*
 * Run argv in the background, stdout and stderr appended to log.  env
 * entries "NAME=VALUE" set a variable, plain "NAME" removes one (env may
 * be NULL).
 */
static pid_t spawn(const char *const *argv, const char *const *env,
		   const char *log)
{
	pid_t pid = fork();
	int fd;

	ck_assert_int_ne(pid, -1);
	if (pid != 0)
		return pid;
	for (; env != NULL && *env != NULL; env++)
		if (strchr(*env, '=') != NULL)
			putenv((char *)*env);
		else
			unsetenv(*env);
	fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd == -1)
		_exit(126);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	execvp(argv[0], (char *const *)argv);
	fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

/* The exit status of argv run to completion (128 + signal if killed). */
static int run(const char *const *argv, const char *const *env, const char *log)
{
	pid_t pid = spawn(argv, env, log);
	int status;

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Like run(), asserting exit status 0 and showing the log otherwise. */
static void run_ok(const char *const *argv, const char *const *env,
		   const char *log)
{
	int rc = run(argv, env, log);
	char *out;

	if (rc == 0)
		return;
	out = slurp(log);
	ck_abort_msg("%s exited %d:\n%s", argv[0], rc, out);
}

/* Everything a command printed; it must exit 0.  free() it. */
static char *capture(const char *const *argv, const char *const *env,
		     const char *log)
{
	unlink(log);
	run_ok(argv, env, log);
	return slurp(log);
}

/* The first line of a command's output, without its newline; free() it. */
static char *output_of(const char *const *argv, const char *const *env,
		       const char *log)
{
	char *out = capture(argv, env, log);

	out[strcspn(out, "\n")] = '\0';
	return out;
}

static int have_cmd(const char *name)
{
	char cmd[256];

	snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

/* A temporary directory (removed by harness_cleanup), nothing started. */
static void scratch(struct harness_daemon *d)
{
	ck_assert_msg(harness_prepare(d) == 0, "%s", harness_error());
}

/* The units as the tests run them: ExecStart= on the built binaries. */
static void write_test_units(const char *dir)
{
	char path[PATH_MAX], bin[PATH_MAX], exec[PATH_MAX + 8], *unit, *fixed;

	/* ExecStart= takes only an absolute path. */
	ck_assert_msg(realpath(harness_daemon_path(), bin) != NULL, "%s: %s",
		      harness_daemon_path(), strerror(errno));
	unit = slurp("systemd/ctxleakd.service");
	ck_assert_ptr_nonnull(strstr(unit, "@SBINDIR@/ctxleakd"));
	fixed = replace_all(unit, "@SBINDIR@/ctxleakd", bin);
	path_join(path, dir, "ctxleakd.service");
	write_text(path, fixed);
	free(unit);
	free(fixed);
	unit = slurp("systemd/ctxleakd.socket");
	path_join(path, dir, "ctxleakd.socket");
	write_text(path, unit);
	free(unit);
	ck_assert_msg(realpath(harness_cli_path(), bin) != NULL, "%s: %s",
		      harness_cli_path(), strerror(errno));
	unit = slurp("systemd/ctxleak-forward.service");
	ck_assert_ptr_nonnull(strstr(unit, "@BINDIR@/ctxleak --db"));
	snprintf(exec, sizeof exec, "%s --db", bin);
	fixed = replace_all(unit, "@BINDIR@/ctxleak --db", exec);
	path_join(path, dir, "ctxleak-forward.service");
	write_text(path, fixed);
	free(unit);
	free(fixed);
}

/* ------------------------------------------------------------- units */

/* systemd-analyze verify checks that the Documentation= man pages exist:
 * give it ours, in a man tree of their own. */
static void make_man_tree(const char *dir, char *manpath_env, size_t len)
{
	static const char *const pages[] = {
	    "daemon/ctxleakd.8", "cli/ctxleak.1", "client/libctxleak.3"};
	char cwd[PATH_MAX], sub[PATH_MAX], src[PATH_MAX], dst[PATH_MAX];

	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
		const char *name = strrchr(pages[i], '/') + 1;

		snprintf(sub, sizeof sub, "%s/man/man%s", dir,
			 strrchr(name, '.') + 1);
		make_dirs(sub);
		path_join(src, cwd, pages[i]);
		path_join(dst, sub, name);
		ck_assert_int_eq(symlink(src, dst), 0);
	}
	snprintf(manpath_env, len, "MANPATH=%s/man", dir);
}

START_TEST(test_units_verify)
{
	struct harness_daemon d;
	char service[PATH_MAX], socket_unit[PATH_MAX], log[PATH_MAX];
	char forward[PATH_MAX], manpath[PATH_MAX + 16];
	char *out;

	scratch(&d);
	write_test_units(d.dir);
	make_man_tree(d.dir, manpath, sizeof manpath);
	path_join(service, d.dir, "ctxleakd.service");
	path_join(socket_unit, d.dir, "ctxleakd.socket");
	path_join(forward, d.dir, "ctxleak-forward.service");
	path_join(log, d.dir, "verify.log");
	{
		/* Without man(1) (a minimal container) the pages cannot be
		 * looked up; everything else is still verified. */
		const char *argv[] = {
		    "systemd-analyze",
		    "verify",
		    have_cmd("man") ? "--man=yes" : "--man=no",
		    service,
		    socket_unit,
		    forward,
		    NULL};
		const char *env[] = {manpath, NULL};

		run_ok(argv, env, log);
	}
	/* verify exits 0 on some warnings: a clean unit says nothing. */
	out = slurp(log);
	ck_assert_msg(out[0] == '\0', "systemd-analyze verify warned:\n%s",
		      out);
	free(out);
	harness_cleanup(&d);
}
END_TEST

/* The checks of systemd-analyze security that the service fails on
 * purpose; any other failed check is a sandbox line gone missing. */
static const char *const accepted_exposures[] = {
    "RootDirectory=/RootImage=",	/* the host's libraries, read-only */
    "RestrictAddressFamilies=~AF_UNIX", /* its clients and sd_notify */
    "PrivateUsers=",			/* SO_PEERCRED uids are evidence */
    "DeviceAllow=",			/* char-rtc:r, from ProtectClock= */
    "UMask=",				/* group ctxleak reads the database */
    NULL,
};

static int exposure_accepted(const char *name, size_t len)
{
	for (const char *const *a = accepted_exposures; *a != NULL; a++)
		if (strlen(*a) == len && strncmp(*a, name, len) == 0)
			return 1;
	return 0;
}

START_TEST(test_units_security)
{
	struct harness_daemon d;
	char service[PATH_MAX], log[PATH_MAX];
	char *out, *line;
	const char *argv[] = {"systemd-analyze",
			      "security",
			      "--offline=true",
			      "--threshold=" MAX_EXPOSURE,
			      "--no-pager",
			      service,
			      NULL};

	scratch(&d);
	write_test_units(d.dir);
	path_join(service, d.dir, "ctxleakd.service");
	path_join(log, d.dir, "security.log");
	out = capture(argv, NULL, log);
	for (line = strstr(out, "\u2717 "); line != NULL;
	     line = strstr(line + 1, "\u2717 ")) {
		const char *name = line + strlen("\u2717 ");

		ck_assert_msg(exposure_accepted(name, strcspn(name, " ")),
			      "the service lost a sandbox setting: %.*s",
			      (int)strcspn(line, "\n"), line);
	}
	free(out);
	harness_cleanup(&d);
}
END_TEST

/* "NAME=VALUE" of a unit file; the value is returned in out. */
static void unit_value(const char *unit, const char *name, char *out,
		       size_t len)
{
	char key[64];
	const char *p;

	snprintf(key, sizeof key, "\n%s=", name);
	p = strstr(unit, key);
	ck_assert_msg(p != NULL, "no %s= in the unit", name);
	p += strlen(key);
	snprintf(out, len, "%.*s", (int)strcspn(p, "\n"), p);
}

static void assert_dir(const char *root, const char *path, mode_t mode,
		       uid_t uid, gid_t gid)
{
	char full[PATH_MAX];
	struct stat st;

	path_join(full, root, path + 1);
	ck_assert_msg(stat(full, &st) == 0, "%s: %s", path, strerror(errno));
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_msg((st.st_mode & 07777) == mode, "%s: mode %o, not %o", path,
		      st.st_mode & 07777, mode);
	ck_assert_uint_eq(st.st_uid, uid);
	ck_assert_uint_eq(st.st_gid, gid);
}

/* Copies the file src into root/dir (made) as ctxleak.conf, where
 * systemd-sysusers and systemd-tmpfiles look for it. */
static void install_conf(const char *root, const char *dir, const char *src)
{
	char to[PATH_MAX], path[PATH_MAX];
	char *text = slurp(src);

	path_join(to, root, dir);
	make_dirs(to);
	path_join(path, to, "ctxleak.conf");
	write_text(path, text);
	free(text);
}

/* The sysusers.d and tmpfiles.d files, applied to an empty root, make the
 * user, the group and the directories with the modes the units ask for. */
START_TEST(test_sysusers_tmpfiles)
{
	struct harness_daemon d;
	char root[PATH_MAX], dir[PATH_MAX], path[PATH_MAX], log[PATH_MAX];
	char rootopt[PATH_MAX + 8], state_mode[16], runtime_mode[16];
	char *text, *line;
	unsigned uid, gid;

	scratch(&d);
	path_join(root, d.dir, "root");
	path_join(log, d.dir, "tools.log");
	snprintf(rootopt, sizeof rootopt, "--root=%s", root);
	/* sysusers writes etc/passwd and etc/group, but makes no etc/. */
	path_join(dir, root, "etc");
	make_dirs(dir);
	install_conf(root, "usr/lib/sysusers.d", "systemd/ctxleak.conf");
	install_conf(root, "usr/lib/tmpfiles.d",
		     "systemd/ctxleak-tmpfiles.conf");
	{
		const char *sysusers[] = {"systemd-sysusers", rootopt, NULL};
		const char *tmpfiles[] = {"systemd-tmpfiles", "--create",
					  rootopt, NULL};

		run_ok(sysusers, NULL, log);
		run_ok(tmpfiles, NULL, log);
	}

	path_join(path, root, "etc/passwd");
	text = slurp(path);
	line = strstr(text, "ctxleak:");
	ck_assert_msg(line == text || (line != NULL && line[-1] == '\n'),
		      "no user ctxleak in:\n%s", text);
	ck_assert_int_eq(sscanf(line, "ctxleak:x:%u:%u:", &uid, &gid), 2);
	free(text);
	path_join(path, root, "etc/group");
	text = slurp(path);
	snprintf(dir, sizeof dir, "ctxleak:x:%u:", gid);
	ck_assert_msg(strstr(text, dir) != NULL, "no group ctxleak in:\n%s",
		      text);
	free(text);

	text = slurp("systemd/ctxleakd.service");
	unit_value(text, "StateDirectoryMode", state_mode, sizeof state_mode);
	unit_value(text, "RuntimeDirectoryMode", runtime_mode,
		   sizeof runtime_mode);
	free(text);
	assert_dir(root, "/var/lib/ctxleak",
		   (mode_t)strtoul(state_mode, NULL, 8), uid, gid);
	assert_dir(root, "/run/ctxleak", (mode_t)strtoul(runtime_mode, NULL, 8),
		   uid, gid);
	harness_cleanup(&d);
}
END_TEST

/* -------------------------------------------------------- activation */

static int notify_bind(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ne(fd, -1);
	ck_assert_uint_lt(strlen(path), sizeof sun.sun_path);
	strcpy(sun.sun_path, path);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
	return fd;
}

/* Read datagrams until one has the line `want`; everything read is
 * appended to seen (for the failure message).  0, or -1 on timeout. */
static int notify_wait(int fd, const char *want, char *seen, size_t len)
{
	char msg[4096], *line, *save;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	ssize_t n;

	while (poll(&pfd, 1, HARNESS_TIMEOUT_SEC * 1000) == 1) {
		n = recv(fd, msg, sizeof msg - 1, 0);
		ck_assert_int_gt(n, 0);
		msg[n] = '\0';
		snprintf(seen + strlen(seen), len - strlen(seen), "%s|", msg);
		for (line = strtok_r(msg, "\n", &save); line != NULL;
		     line = strtok_r(NULL, "\n", &save))
			if (strcmp(line, want) == 0)
				return 0;
	}
	return -1;
}

static void wait_for_path(const char *path, pid_t pid)
{
	for (int i = 0; i < HARNESS_TIMEOUT_SEC * 100; i++) {
		if (access(path, F_OK) == 0)
			return;
		ck_assert_msg(waitpid(pid, NULL, WNOHANG) == 0,
			      "systemd-socket-activate exited");
		usleep(10000);
	}
	ck_abort_msg("%s did not appear", path);
}

static int activated_client(void *arg)
{
	uint64_t req;

	(void)arg;
	req = ctxleak_begin("GET /activated");
	ctxleak_tag("user", "alice");
	ctxleak_event("db.done", "ok");
	ctxleak_end(req);
	return ctxleak_flush() == CTXLEAK_OK ? 0 : 1;
}

/*
 * The daemon is given, on purpose, a --socket it could not create: it
 * reaches the client only through the socket systemd-socket-activate
 * passed it.
 */
START_TEST(test_socket_activation)
{
	struct harness_daemon d;
	char notify_path[PATH_MAX], notify_env[PATH_MAX + 16];
	char seen[8192] = "", *log;
	int nfd, st;

	scratch(&d);
	path_join(notify_path, d.dir, "notify.sock");
	nfd = notify_bind(notify_path);
	snprintf(notify_env, sizeof notify_env, "NOTIFY_SOCKET=%s",
		 notify_path);
	{
		const char *argv[] = {"systemd-socket-activate", "-l", d.socket,
				      "-E", notify_env, "-E",
				      /* Pings every 0.5 s: the kernel queues
				       * only net.unix.max_dgram_qlen (10) of
				       * them before sd_notify blocks the
				       * daemon until this test reads. */
				      "WATCHDOG_USEC=1000000",
				      harness_daemon_path(), "--socket",
				      "/nonexistent/ctxleak/ctxleak.sock",
				      "--db", d.db, "--keep", "all", NULL};

		d.pid = spawn(argv, NULL, d.log);
	}
	wait_for_path(d.socket, d.pid);
	/* The first connection starts the daemon. */
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_THREAD, activated_client, NULL),
	    0);
	log = harness_log(&d);
	ck_assert_msg(notify_wait(nfd, "READY=1", seen, sizeof seen) == 0,
		      "no READY=1; got %s\nlog:\n%s", seen, log);
	ck_assert_msg(notify_wait(nfd, "WATCHDOG=1", seen, sizeof seen) == 0,
		      "no WATCHDOG=1; got %s\nlog:\n%s", seen, log);
	/* systemctl status shows it. */
	ck_assert_msg(strstr(seen, "STATUS=") != NULL, "no STATUS=; got %s",
		      seen);
	free(log);
	st = harness_stop(&d);
	log = harness_log(&d);
	ck_assert_msg(st == 0, "exit %d\n%s", st, log);
	ck_assert_msg(notify_wait(nfd, "STOPPING=1", seen, sizeof seen) == 0,
		      "no STOPPING=1; got %s\nlog:\n%s", seen, log);
	free(log);
	close(nfd);

	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM processes"
					       " WHERE app = 'harness'"),
			 1);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM requests"
					       " WHERE name = 'GET /activated'"
					       " AND end_ts IS NOT NULL"),
			 1);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM tags"
					       " WHERE key = 'user'"
					       " AND value = 'alice'"),
			 1);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM records"
					       " WHERE type = 'EVENT'"
					       " AND name = 'db.done'"),
			 1);
	harness_cleanup(&d);
}
END_TEST

/* The unit's user and a worker's, as numbers that need no passwd entry. */
#define DAEMON_UID "61234"
#define READER_UID "61235"

/* Exit status of `ctxleak processes` on db as READER_UID, with the
 * daemon's group as a supplementary group (member) or none. */
static int read_as_reader(const char *cli, const char *db, int member,
			  const char *log)
{
	const char *argv[] = {"setpriv",
			      "--reuid=" READER_UID,
			      "--regid=" READER_UID,
			      member ? "--groups=" DAEMON_UID
				     : "--clear-groups",
			      cli,
			      "--db",
			      db,
			      "processes",
			      NULL};

	unlink(log);
	return run(argv, NULL, log);
}

/*
 * ProtectSystem=strict, ProtectHome=yes and UMask=0027 in a new mount
 * namespace: the whole tree read-only but the state directory ($1), the
 * home directories empty, then the command that follows.
 */
static const char protect_system_script[] =
    "state=$1; shift;"
    " mount --bind \"$state\" \"$state\" &&"
    " mount -o remount,bind,ro / &&"
    " for d in /home /root /run/user; do"
    "   if [ -d $d ]; then mount -t tmpfs -o ro,mode=0755 none $d || exit 1;"
    "   fi;"
    " done &&"
    " umask 0027 && exec \"$@\"";

/*
 * What the unit's User=, UMask=, CapabilityBoundingSet=, NoNewPrivileges=,
 * PrivateNetwork=, ProtectSystem=strict and ProtectHome= leave the daemon,
 * rebuilt with unshare and setpriv: it must still take the passed socket,
 * hear workers from the host's network namespace, write its database where
 * nothing else is writable, and its group, and only its group, must be
 * able to read that database.
 */
START_TEST(test_sandboxed_daemon)
{
	struct harness_daemon d;
	char state[PATH_MAX], log[PATH_MAX], daemon[PATH_MAX], cli[PATH_MAX];
	struct stat st;
	int rc;

	scratch(&d);
	ck_assert_int_eq(chmod(d.dir, 0755), 0);
	path_join(state, d.dir, "state");
	path_join(log, d.dir, "reader.log");
	/* The programs run from here: the sandbox hides /root and /home,
	 * where the tree may be, and the other users may not enter them. */
	path_join(daemon, d.dir, "ctxleakd");
	path_join(cli, d.dir, "ctxleak");
	{
		const char *argv[] = {"cp", harness_daemon_path(),
				      harness_cli_path(), d.dir, NULL};

		run_ok(argv, NULL, log);
	}
	ck_assert_int_eq(mkdir(state, 0750), 0);
	ck_assert_int_eq(chown(state, 61234, 61234), 0);
	/* The harness's queries read the database where the daemon puts it. */
	path_join(d.db, state, "ctxleak.db");
	{
		const char *argv[] = {"systemd-socket-activate",
				      "-l",
				      d.socket,
				      "unshare",
				      "--mount",
				      "--net",
				      "sh",
				      "-c",
				      protect_system_script,
				      "sh",
				      state,
				      "setpriv",
				      "--reuid=" DAEMON_UID,
				      "--regid=" DAEMON_UID,
				      "--clear-groups",
				      "--no-new-privs",
				      "--bounding-set=-all",
				      "--inh-caps=-all",
				      daemon,
				      "--socket",
				      "/nonexistent/ctxleak/ctxleak.sock",
				      "--db",
				      d.db,
				      "--keep",
				      "all",
				      NULL};

		d.pid = spawn(argv, NULL, d.log);
	}
	wait_for_path(d.socket, d.pid);
	ck_assert_int_eq(
	    harness_client(&d, CTXLEAK_BACKEND_THREAD, activated_client, NULL),
	    0);
	ck_assert_msg(harness_wait_int(&d,
				       "SELECT count(*) FROM records"
				       " WHERE name = 'db.done'",
				       1) == 0,
		      "%s\n%s", harness_error(), harness_log(&d));
	rc = read_as_reader(cli, d.db, 1, log);
	ck_assert_msg(rc == 0, "a member of the group cannot read: %s",
		      slurp(log));
	rc = harness_stop(&d);
	ck_assert_msg(rc == 0, "exit %d:\n%s", rc, harness_log(&d));

	/* Before anything else opens it: a reader as root would leave the
	 * -wal and -shm files that the group's reads need. */
	rc = read_as_reader(cli, d.db, 1, log);
	ck_assert_msg(rc == 0,
		      "a member of the group cannot read once the daemon "
		      "stopped: %s",
		      slurp(log));
	ck_assert_int_eq(stat(d.db, &st), 0);
	ck_assert_uint_eq(st.st_uid, 61234);
	ck_assert_uint_eq(st.st_mode & 0777, 0640);
	ck_assert_int_eq(harness_query_int(&d,
					   "SELECT count(*) FROM requests"
					   " WHERE name = 'GET /activated'"),
			 1);
	ck_assert_int_eq(read_as_reader(cli, d.db, 0, log), 3);
	harness_cleanup(&d);
}
END_TEST

/* ----------------------------------------------------------- install */

/* The build directory of the daemon under test, for make's B=: relative
 * when it is in the tree, as make's own dependency files name it. */
static void build_dir(char *out, size_t len)
{
	const char *bin = harness_daemon_path();
	const char *slash = strrchr(bin, '/');
	char cwd[PATH_MAX];
	size_t cwd_len;

	ck_assert_ptr_nonnull(slash);
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
	cwd_len = strlen(cwd);
	if (strncmp(bin, cwd, cwd_len) == 0 && bin[cwd_len] == '/')
		bin += cwd_len + 1;
	snprintf(out, len, "B=%.*s", (int)(slash - bin), bin);
}

/* make TARGET with the variables of this build, outside the make that may
 * be running the tests (its jobserver and flags are not ours). */
static void make(const char *target, const char *destdir, const char *log)
{
	char b[PATH_MAX + 4], dest[PATH_MAX + 16];
	const char *env[] = {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", NULL};
	const char *argv[] = {
		"make",
		"-s",
		b,
		target,
		dest,
		"PREFIX=/usr",
#if defined(__SANITIZE_ADDRESS__)
		"SAN=1",
#endif
		NULL
	};

	build_dir(b, sizeof b);
	snprintf(dest, sizeof dest, "DESTDIR=%s", destdir);
	run_ok(argv, env, log);
}

/* A directory systemd's pkg-config file names, or fallback without it. */
static void systemd_dir(const char *var, const char *fallback, char *out,
			size_t len, const char *log)
{
	const char *argv[] = {"pkg-config", var, "systemd", NULL};
	char *dir;

	unlink(log);
	if (run(argv, NULL, log) != 0) {
		snprintf(out, len, "%s", fallback);
		return;
	}
	dir = slurp(log);
	snprintf(out, len, "%.*s", (int)strcspn(dir, "\n"), dir);
	free(dir);
}

/* Every file and symlink under root, as "/path\n" lines; free() it. */
static char *list_files(const char *root, const char *log)
{
	const char *argv[] = {
	    "sh", "-c", "cd \"$1\" && find . ! -type d | sed 's/^\\.//' | sort",
	    "sh", root, NULL};

	return capture(argv, NULL, log);
}

/* What `make install PREFIX=/usr` must put, sorted as list_files does. */
static char *expected_files(const char *log)
{
	char units[PATH_MAX], sysusers[PATH_MAX], tmpfiles[PATH_MAX];
	const char *argv[] = {
	    "sh",
	    "-c",
	    "{ echo /usr/include/ctxleak.h;"
	    "  [ -e client/ctxleak_event.h ] &&"
	    "    echo /usr/include/ctxleak_event.h;"
	    "  for f in libctxleak.a libctxleak.so libctxleak.so.0"
	    "    libctxleak.so.$4 pkgconfig/libctxleak.pc; do"
	    "    echo /usr/lib/$f; done;"
	    "  echo /usr/bin/ctxleak; echo /usr/sbin/ctxleakd;"
	    "  echo $1/ctxleakd.service; echo $1/ctxleakd.socket;"
	    "  echo $1/ctxleak-forward.service;"
	    "  echo $2/ctxleak.conf; echo $3/ctxleak.conf;"
	    "  echo /usr/share/man/man1/ctxleak.1;"
	    "  echo /usr/share/man/man3/libctxleak.3;"
	    "  echo /usr/share/man/man8/ctxleakd.8;"
	    "  for f in client/python/ctxleak/*.py; do"
	    "    echo /usr/lib/python3/dist-packages/ctxleak/${f##*/}; done;"
	    "} | sort",
	    "sh",
	    units,
	    sysusers,
	    tmpfiles,
	    CTXLEAK_VERSION_STRING,
	    NULL};

	systemd_dir("--variable=systemdsystemunitdir",
		    "/usr/lib/systemd/system", units, sizeof units, log);
	systemd_dir("--variable=sysusersdir", "/usr/lib/sysusers.d", sysusers,
		    sizeof sysusers, log);
	systemd_dir("--variable=tmpfilesdir", "/usr/lib/tmpfiles.d", tmpfiles,
		    sizeof tmpfiles, log);
	return capture(argv, NULL, log);
}

static void assert_link(const char *dir, const char *name, const char *to)
{
	char path[PATH_MAX], target[PATH_MAX];
	ssize_t n;

	path_join(path, dir, name);
	n = readlink(path, target, sizeof target - 1);
	ck_assert_msg(n > 0, "%s is not a symlink", path);
	target[n] = '\0';
	ck_assert_str_eq(target, to);
}

/* A program of the library's user: it prints which libctxleak it runs
 * with, then reports one request. */
static const char installed_prog[] =
    "#define _GNU_SOURCE\n"
    "#include <dlfcn.h>\n"
    "#include <stdio.h>\n"
    "#include <ctxleak.h>\n"
    "int main(void)\n"
    "{\n"
    "	Dl_info info;\n"
    "	uint64_t req;\n"
    "	if (ctxleak_init(NULL) != CTXLEAK_OK)\n"
    "		return 1;\n"
    "	if (!dladdr((void *)ctxleak_init, &info))\n"
    "		return 2;\n"
    "	printf(\"%s\\n\", info.dli_fname);\n"
    "	req = ctxleak_begin(\"GET /installed\");\n"
    "	ctxleak_tag(\"via\", \"pkg-config\");\n"
    "	ctxleak_end(req);\n"
    "	ctxleak_shutdown();\n"
    "	return 0;\n"
    "}\n";

/* cc prog.c $(pkg-config --cflags --libs libctxleak) against the DESTDIR:
 * the sysroot puts DESTDIR before the installed .pc file's paths. */
static void build_installed_prog(const char *dest, const char *src,
				 const char *prog, const char *log)
{
	const char *argv[] = {
		"sh",
		"-c",
		"flags=$(PKG_CONFIG_LIBDIR=\"$1/usr/lib/pkgconfig\""
		" PKG_CONFIG_SYSROOT_DIR=\"$1\""
		" pkg-config --cflags --libs libctxleak) &&"
		" echo \"$flags\" &&"
		" exec cc -Wall -Wextra -Werror $2 -o \"$3\" \"$4\" $flags",
		"sh",
		dest,
#if defined(__SANITIZE_ADDRESS__)
		/* The installed library is the sanitizer build's: so is its
		 * user. */
		"-fsanitize=address,undefined",
#else
		"",
#endif
		prog,
		src,
		NULL
	};

	unlink(log);
	run_ok(argv, NULL, log);
}

/* The library's files: SONAME links, the SONAME itself, the .pc file's
 * paths (those of the install, not of the build). */
static void assert_library(const char *lib, const char *log)
{
	char so_version[64], so[PATH_MAX], *text;
	const char *argv[] = {"sh", "-c",
			      "objdump -p \"$0\" | awk '/SONAME/ { print $2 }'",
			      so, NULL};

	snprintf(so_version, sizeof so_version, "libctxleak.so.%s",
		 CTXLEAK_VERSION_STRING);
	assert_link(lib, "libctxleak.so.0", so_version);
	assert_link(lib, "libctxleak.so", "libctxleak.so.0");
	path_join(so, lib, so_version);
	text = output_of(argv, NULL, log);
	ck_assert_str_eq(text, "libctxleak.so.0");
	free(text);
	path_join(so, lib, "pkgconfig/libctxleak.pc");
	text = slurp(so);
	ck_assert_ptr_nonnull(strstr(text, "libdir=/usr/lib\n"));
	free(text);
}

/* `systemctl enable ctxleakd.socket`, offline on the DESTDIR: the socket's
 * [Install] section hooks it into sockets.target; disable undoes it. */
static void assert_socket_enables(const char *dest, const char *log)
{
	char root[PATH_MAX + 8], link[PATH_MAX];
	const char *enable[] = {"systemctl", root, "enable", "ctxleakd.socket",
				NULL};
	const char *disable[] = {"systemctl", root, "disable",
				 "ctxleakd.socket", NULL};
	struct stat st;

	if (!have_cmd("systemctl"))
		return;
	snprintf(root, sizeof root, "--root=%s", dest);
	path_join(link, dest,
		  "etc/systemd/system/sockets.target.wants/ctxleakd.socket");
	run_ok(enable, NULL, log);
	ck_assert_msg(lstat(link, &st) == 0 && S_ISLNK(st.st_mode),
		      "enable made no %s", link);
	run_ok(disable, NULL, log);
	ck_assert_int_eq(lstat(link, &st), -1);
}

/* Build installed_prog against the DESTDIR and run it on the daemon d;
 * it must have loaded the installed library. */
static void run_installed_prog(const struct harness_daemon *d, const char *dest,
			       const char *lib, const char *log)
{
	char src[PATH_MAX], prog[PATH_MAX], loaded[PATH_MAX], *ran;
	char env_lib[PATH_MAX + 32], env_sock[PATH_MAX + 32];
	const char *argv[] = {prog, NULL};
	const char *env[] = {env_lib, env_sock, "CTXLEAK_APP=installed",
			     "CTXLEAK_BACKEND=thread", NULL};

	path_join(src, d->dir, "prog.c");
	path_join(prog, d->dir, "prog");
	write_text(src, installed_prog);
	build_installed_prog(dest, src, prog, log);
	snprintf(env_lib, sizeof env_lib, "LD_LIBRARY_PATH=%s", lib);
	snprintf(env_sock, sizeof env_sock, "CTXLEAK_SOCKET=%s", d->socket);
	ran = output_of(argv, env, log);
	path_join(loaded, lib, "libctxleak.so.0");
	ck_assert_str_eq(ran, loaded);
	free(ran);
}

START_TEST(test_install_uninstall)
{
	struct harness_daemon d;
	const char *keep[] = {"--keep", "all", NULL};
	char dest[PATH_MAX], lib[PATH_MAX], log[PATH_MAX];
	char *files, *want;

	ck_assert_msg(harness_start(&d, keep) == 0, "%s", harness_error());
	path_join(dest, d.dir, "dest");
	path_join(log, d.dir, "install.log");
	path_join(lib, dest, "usr/lib");
	make("install", dest, log);

	files = list_files(dest, log);
	want = expected_files(log);
	ck_assert_str_eq(files, want);
	free(files);
	free(want);
	assert_library(lib, log);
	assert_socket_enables(dest, log);
	run_installed_prog(&d, dest, lib, log);
	ck_assert_int_eq(harness_stop(&d), 0);
	ck_assert_int_eq(
	    harness_query_int(&d, "SELECT count(*) FROM requests r"
				  " JOIN processes p ON p.id = r.process_id"
				  " WHERE p.app = 'installed'"
				  " AND r.name = 'GET /installed'"),
	    1);
	ck_assert_int_eq(harness_query_int(&d, "SELECT count(*) FROM tags"
					       " WHERE key = 'via'"
					       " AND value = 'pkg-config'"),
			 1);

	make("uninstall", dest, log);
	files = list_files(dest, log);
	ck_assert_msg(files[0] == '\0', "left after uninstall:\n%s", files);
	free(files);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------- man */

/* groff -ww warns of every doubtful construct (unknown macros, bad
 * escapes, lines it cannot break): a clean page says nothing. */
START_TEST(test_man_pages)
{
	static const char *const pages[] = {
	    "daemon/ctxleakd.8", "cli/ctxleak.1", "client/libctxleak.3"};
	struct harness_daemon d;
	char log[PATH_MAX], *out;

	scratch(&d);
	path_join(log, d.dir, "groff.log");
	for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
		const char *argv[] = {"groff", "-man",	 "-Tutf8", "-ww",
				      "-z",    pages[i], NULL};

		out = capture(argv, NULL, log);
		ck_assert_msg(out[0] == '\0', "%s:\n%s", pages[i], out);
		free(out);
	}
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------- main */

static int have_tools(const char *const *tools, const char *what)
{
	for (; *tools != NULL; tools++) {
		if (have_cmd(*tools))
			continue;
		printf("test_systemd: skipping %s: %s not found "
		       "(Debian: apt-get install systemd)\n",
		       what, *tools);
		return 0;
	}
	return 1;
}

static Suite *systemd_suite(void)
{
	static const char *const analyze[] = {"systemd-analyze", NULL};
	static const char *const users[] = {"systemd-sysusers",
					    "systemd-tmpfiles", NULL};
	static const char *const activate[] = {"systemd-socket-activate", NULL};
	static const char *const groff[] = {"groff", NULL};
	static const char *const sandbox[] = {"systemd-socket-activate",
					      "unshare", "setpriv", NULL};
	Suite *s = suite_create("systemd");
	TCase *tc;

	if (have_tools(analyze, "the unit checks")) {
		tc = tcase_create("units");
		/* systemd-analyze takes seconds on a loaded machine. */
		tcase_set_timeout(tc, 60);
		tcase_add_test(tc, test_units_verify);
		tcase_add_test(tc, test_units_security);
		suite_add_tcase(s, tc);
	}
	/* They chown to the new user: only root can. */
	if (geteuid() != 0)
		printf("test_systemd: skipping sysusers/tmpfiles: not root\n");
	else if (have_tools(users, "sysusers/tmpfiles")) {
		tc = tcase_create("sysusers");
		tcase_add_test(tc, test_sysusers_tmpfiles);
		suite_add_tcase(s, tc);
	}
	if (have_tools(activate, "socket activation")) {
		tc = tcase_create("activation");
		tcase_set_timeout(tc, 60);
		tcase_add_test(tc, test_socket_activation);
		suite_add_tcase(s, tc);
	}
	/* It changes user and mounts: only root can. */
	if (geteuid() != 0)
		printf("test_systemd: skipping the sandboxed daemon: not "
		       "root\n");
	else if (have_tools(sandbox, "the sandboxed daemon")) {
		tc = tcase_create("sandbox");
		tcase_set_timeout(tc, 60);
		tcase_add_test(tc, test_sandboxed_daemon);
		suite_add_tcase(s, tc);
	}
	if (have_tools(groff, "the man pages")) {
		tc = tcase_create("man");
		tcase_add_test(tc, test_man_pages);
		suite_add_tcase(s, tc);
	}
	tc = tcase_create("install");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_install_uninstall);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (access("systemd/ctxleakd.service", R_OK) != 0) {
		fprintf(stderr, "test_systemd: run from the top of the tree\n");
		return 1;
	}
	return check_main(systemd_suite(), NULL);
}
