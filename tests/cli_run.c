/*
 * cli_run.c: running the ctxleak CLI as a program from a test, and a
 * strict JSON parser for its output (cli_run.h).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_run.h"
#include "harness.h"

/* ------------------------------------------------------------ running */

void run_free(struct run *r)
{
	free(r->out);
	free(r->err);
}

char *read_all_fd(int fd)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	ssize_t n;

	ck_assert_ptr_nonnull(buf);
	for (;;) {
		if (len + 1 == cap) {
			buf = realloc(buf, cap *= 2);
			ck_assert_ptr_nonnull(buf);
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) /* EOF, or EIO once a pty's slave is closed */
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

char *read_file_at(const char *path)
{
	int fd = open(path, O_RDONLY);
	char *s;

	ck_assert_int_ge(fd, 0);
	s = read_all_fd(fd);
	close(fd);
	return s;
}

static int wait_status(pid_t pid)
{
	int st;

	while (waitpid(pid, &st, 0) < 0)
		ck_assert_int_eq(errno, EINTR);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Child side: environment changes ("K=V" sets, "K" unsets), then exec. */
static void exec_cli(const char *const *env, char **argv)
{
	/* Tables fit 80 columns unless a test sets COLUMNS itself. */
	unsetenv("COLUMNS");
	for (; env && *env; env++) {
		const char *eq = strchr(*env, '=');

		if (eq) {
			char key[64];

			snprintf(key, sizeof(key), "%.*s", (int)(eq - *env),
				 *env);
			setenv(key, eq + 1, 1);
		} else {
			unsetenv(*env);
		}
	}
	argv[0] = (char *)harness_cli_path();
	execv(argv[0], argv);
	_exit(127);
}

/* Runs the CLI with argv (argv[0] is replaced), stdout and stderr to
 * files, as user uid unless it is 0. */
struct run run_argv(const char *const *env, char **argv, uid_t uid)
{
	char out[] = "/tmp/ctxleak-cli-out-XXXXXX";
	char err[] = "/tmp/ctxleak-cli-err-XXXXXX";
	char bin[120];
	int ofd = mkstemp(out), efd = mkstemp(err);
	struct run r;
	pid_t pid;

	ck_assert_int_ge(ofd, 0);
	ck_assert_int_ge(efd, 0);
	/* Another user may not reach the build directory. */
	if (uid)
		ck_assert_msg(harness_copy_for_anyone(harness_cli_path(), bin,
						      sizeof bin) == 0,
			      "%s", harness_error());
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		dup2(ofd, 1);
		dup2(efd, 2);
		if (uid && (setenv("CTXLEAK_BIN", bin, 1) || setgroups(0, NULL) ||
			    setgid(uid) || setuid(uid)))
			_exit(126);
		exec_cli(env, argv);
	}
	r.status = wait_status(pid);
	if (uid)
		harness_remove_copy(bin);
	r.out = read_file_at(out);
	r.err = read_file_at(err);
	close(ofd);
	close(efd);
	unlink(out);
	unlink(err);
	return r;
}

#define MAX_ARGS 32

/* run(env, "leaks", "--json", NULL): the CLI with these arguments. */
struct run run_env(const char *const *env, ...)
{
	char *argv[MAX_ARGS] = {NULL};
	va_list ap;
	int n = 1;

	va_start(ap, env);
	while ((argv[n] = va_arg(ap, char *)) != NULL)
		ck_assert_int_lt(++n, MAX_ARGS - 1);
	va_end(ap);
	return run_argv(env, argv, 0);
}

/* The CLI with stdout on a pseudo-terminal; returns what it wrote. */
char *run_on_tty(const char *const *env, const char *db, const char *cmd)
{
	char *argv[] = {NULL, "--db", (char *)db, (char *)cmd, NULL};
	int master = posix_openpt(O_RDWR | O_NOCTTY);
	char *out;
	pid_t pid;

	ck_assert_int_ge(master, 0);
	ck_assert_int_eq(grantpt(master), 0);
	ck_assert_int_eq(unlockpt(master), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int slave = open(ptsname(master), O_RDWR | O_NOCTTY);

		if (slave < 0)
			_exit(126);
		close(master);
		dup2(slave, 1);
		exec_cli(env, argv);
	}
	/* Read while it runs: a full pty would block it. */
	out = read_all_fd(master);
	ck_assert_int_eq(wait_status(pid), 0);
	close(master);
	return out;
}

/* ------------------------------------------------------------ JSON */

static void skip_ws(struct json *j)
{
	while (j->p < j->end && strchr(" \t\r\n", *j->p))
		j->p++;
}

static int utf8_len(const unsigned char *s, size_t n)
{
	int len = s[0] < 0x80		  ? 1
		  : (s[0] & 0xe0) == 0xc0 ? 2
		  : (s[0] & 0xf0) == 0xe0 ? 3
		  : (s[0] & 0xf8) == 0xf0 ? 4
					  : 0;
	unsigned v;

	if (len == 0 || (size_t)len > n)
		return 0;
	v = len == 1 ? s[0] : s[0] & (0x7f >> len);
	for (int i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	if ((len == 2 && v < 0x80) || (len == 3 && v < 0x800) ||
	    (len == 4 && v < 0x10000) || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	return len;
}

static int parse_string(struct json *j)
{
	if (j->p >= j->end || *j->p++ != '"')
		return -1;
	while (j->p < j->end && *j->p != '"') {
		unsigned char ch = (unsigned char)*j->p;
		int n;

		if (ch < 0x20)
			return -1;
		if (ch == '\\') {
			if (++j->p >= j->end)
				return -1;
			if (*j->p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (j->p + i >= j->end ||
					    !strchr("0123456789abcdefABCDEF",
						    j->p[i]))
						return -1;
				j->p += 5;
			} else if (strchr("\"\\/bfnrt", *j->p) && *j->p) {
				j->p++;
			} else {
				return -1;
			}
			continue;
		}
		n = utf8_len((const unsigned char *)j->p,
			     (size_t)(j->end - j->p));
		if (n == 0)
			return -1;
		j->p += n;
	}
	if (j->p >= j->end)
		return -1;
	j->p++;
	return 0;
}

static int parse_number(struct json *j)
{
	const char *start;

	if (j->p < j->end && *j->p == '-')
		j->p++;
	start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
		j->p++;
	if (j->p == start || (*start == '0' && j->p - start > 1))
		return -1;
	if (j->p < j->end && *j->p == '.') {
		start = ++j->p;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
		if (j->p == start)
			return -1;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		start = j->p;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
		if (j->p == start)
			return -1;
	}
	return 0;
}

static int parse_literal(struct json *j, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(j->end - j->p) < n || strncmp(j->p, lit, n) != 0)
		return -1;
	j->p += n;
	return 0;
}

static int parse_members(struct json *j, int top)
{
	skip_ws(j);
	if (j->p < j->end && *j->p == '}')
		return j->p++, 0;
	for (;;) {
		struct member m = {.key = j->p};

		skip_ws(j);
		m.key = j->p;
		if (parse_string(j) < 0)
			return -1;
		m.klen = (size_t)(j->p - m.key);
		skip_ws(j);
		if (j->p >= j->end || *j->p++ != ':')
			return -1;
		skip_ws(j);
		m.val = j->p;
		if (json_parse_value(j) < 0)
			return -1;
		m.vlen = (size_t)(j->p - m.val);
		if (top && j->ntop < 64)
			j->top[j->ntop++] = m;
		skip_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		return j->p < j->end && *j->p++ == '}' ? 0 : -1;
	}
}

static int parse_elements(struct json *j)
{
	skip_ws(j);
	if (j->p < j->end && *j->p == ']')
		return j->p++, 0;
	for (;;) {
		if (json_parse_value(j) < 0)
			return -1;
		skip_ws(j);
		if (j->p < j->end && *j->p == ',') {
			j->p++;
			continue;
		}
		return j->p < j->end && *j->p++ == ']' ? 0 : -1;
	}
}

int json_parse_value(struct json *j)
{
	int rc;

	skip_ws(j);
	if (j->p >= j->end || ++j->depth > 64)
		return -1;
	switch (*j->p) {
	case '{':
		j->p++;
		rc = parse_members(j, j->depth == 1);
		break;
	case '[':
		j->p++;
		rc = parse_elements(j);
		break;
	case '"':
		rc = parse_string(j);
		break;
	case 't':
		rc = parse_literal(j, "true");
		break;
	case 'f':
		rc = parse_literal(j, "false");
		break;
	case 'n':
		rc = parse_literal(j, "null");
		break;
	default:
		rc = parse_number(j);
	}
	j->depth--;
	return rc;
}

/* Parses one line that must be exactly one JSON object. */
void json_line(struct json *j, const char *line, size_t len)
{
	memset(j, 0, sizeof(*j));
	j->p = line;
	j->end = line + len;
	skip_ws(j);
	ck_assert_msg(j->p < j->end && *j->p == '{', "not an object: %.*s",
		      (int)len, line);
	ck_assert_msg(json_parse_value(j) == 0, "invalid JSON: %.*s", (int)len,
		      line);
	skip_ws(j);
	ck_assert_msg(j->p == j->end, "trailing bytes: %.*s", (int)len, line);
}

/* The raw JSON text of a top-level member, NUL-terminated in buf; NULL
 * when absent. */
const char *member(const struct json *j, const char *key, char *buf, size_t len)
{
	for (int i = 0; i < j->ntop; i++) {
		const struct member *m = &j->top[i];

		if (m->klen == strlen(key) + 2 &&
		    strncmp(m->key + 1, key, strlen(key)) == 0) {
			snprintf(buf, len, "%.*s", (int)m->vlen, m->val);
			return buf;
		}
	}
	return NULL;
}

/* Calls fn on every line of out, each a JSON object; returns the count. */
int each_json_line(const char *out, void (*fn)(const struct json *j, void *arg),
		   void *arg)
{
	struct json j;
	int n = 0;

	for (const char *p = out; *p;) {
		const char *nl = strchr(p, '\n');

		ck_assert_msg(nl != NULL, "unterminated last line");
		json_line(&j, p, (size_t)(nl - p));
		if (fn)
			fn(&j, arg);
		n++;
		p = nl + 1;
	}
	return n;
}

void assert_member(const struct json *j, const char *key, const char *want)
{
	char buf[4096];
	const char *v = member(j, key, buf, sizeof(buf));

	ck_assert_msg(v != NULL, "no \"%s\"", key);
	ck_assert_msg(strcmp(v, want) == 0, "\"%s\" is %s, not %s", key, v,
		      want);
}

int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}
