/*
 * test_fleet_logs.c: ctxleakd's outputs for fleets, against the real daemon
 * with real clients: --findings-log (one JSON line per leaks row, byte for
 * byte the CLI's `leaks --json` line after "host" and "machine_id"; size
 * rotation; SIGHUP's reopen; a disk that refuses writes), --metrics-file
 * (the textfile format checked by a strict validator, values equal to the
 * database's, across a daemon that died) and --findings-journal (datagrams
 * of journald's native protocol, and the memfd of an entry too large for
 * one, caught on a socket of the test's own through
 * $CTXLEAKD_JOURNAL_SOCKET).
 */
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "check_main.h"
#include "common.h"
#include "cli_run.h"
#include "harness_check.h"
#include "raw.h"

/* The documented MESSAGE_ID (ctxleakd(8)): it must never change. */
#define MESSAGE_ID "378e9d4ef4324d278d4f741892a5677a"
#define HOST	   "fleet-test-host"

static void stop_ok(struct harness_daemon *d)
{
	static char msg[16384];
	int status = harness_stop(d);
	char *log;

	if (status == 0)
		return;
	log = harness_log(d);
	snprintf(msg, sizeof msg, "ctxleakd stopped with %d: %s\nits log:\n%s",
		 status, harness_error(), log ? log : "");
	free(log);
	ck_abort_msg("%s", msg);
}

/* ------------------------------------------------------------ clients */

/* Findings of several classes, n times over, whose client strings
 * JSON must escape: quotes, backslashes, control characters, DEL, invalid
 * and truncated UTF-8, and valid multibyte characters. */
static int hostile_findings(void *arg)
{
	int n = arg != NULL ? *(int *)arg : 1;

	for (int i = 0; i < n; i++) {
		uint64_t a = ctxleak_begin("GET /\"q\"\\p\x01\xff");
		uint64_t token_a = ctxleak_capture();
		uint64_t b = ctxleak_begin("GET /b\xc3\xa9\x7f");

		ctxleak_resume(token_a);
		ctxleak_tag("k\n\t\x7f", "v\xff\xfe\"\\ \xe2\x82");
		ctxleak_event("evt\r", "m\x1b[31m \xf0\x9f\x98\x80 \xc0\xaf");
		ctxleak_suspend();
		/* Out of order every other time: misnest, whose detail names
		 * the backend's current request. */
		if (i % 2) {
			ctxleak_end(a);
			ctxleak_end(b);
		} else {
			ctxleak_end(b);
			ctxleak_end(a);
		}
	}
	return harness_worked_example(NULL);
}

static void run_client(struct harness_daemon *d, int n)
{
	ck_assert_int_eq(
	    harness_client(d, CTXLEAK_BACKEND_THREAD, hostile_findings, &n), 0);
}

/* ------------------------------------------------------------ files */

static char *path_in(const struct harness_daemon *d, const char *name)
{
	static char path[4][256];
	static int next;
	char *p = path[next++ % 4];

	snprintf(p, sizeof path[0], "%s/%s", d->dir, name);
	return p;
}

/* The file's text; NULL when it does not exist. */
static char *slurp(const char *path)
{
	struct stat st;

	if (stat(path, &st) == -1)
		return NULL;
	return read_file_at(path);
}

/* The lines of the findings log FILE, FILE.1, ... FILE.keep, oldest
 * first, concatenated; *nfiles: how many exist. */
static char *all_log_lines(const char *path, int keep, int *nfiles)
{
	char name[512];
	size_t len = 0;
	char *all = calloc(1, 1);

	*nfiles = 0;
	for (int i = keep; i >= 0; i--) {
		char *text;

		if (i > 0)
			snprintf(name, sizeof name, "%s.%d", path, i);
		else
			snprintf(name, sizeof name, "%s", path);
		if ((text = slurp(name)) == NULL)
			continue;
		(*nfiles)++;
		all = realloc(all, len + strlen(text) + 1);
		memcpy(all + len, text, strlen(text) + 1);
		len += strlen(text);
		free(text);
	}
	return all;
}

/* ------------------------------------------------------------ JSON */

/* Every line a strict JSON object for Python's json module too, read as
 * strict UTF-8; returns its count of lines. */
static int python_json_lines(const char *path)
{
	char cmd[1024];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof cmd,
		 "python3 -c 'import json, sys\n"
		 "n = 0\n"
		 "for line in open(sys.argv[1], \"rb\"):\n"
		 "    assert line.endswith(b\"\\n\")\n"
		 "    assert isinstance(json.loads(line.decode(\"utf-8\")), "
		 "dict)\n"
		 "    n += 1\n"
		 "print(n)' '%s'",
		 path);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	ck_assert_int_eq(pclose(p), 0);
	return n;
}

static int64_t line_id(const char *line, size_t len)
{
	struct json j;
	char buf[64];

	json_line(&j, line, len);
	ck_assert_ptr_nonnull(member(&j, "id", buf, sizeof buf));
	return strtoll(buf, NULL, 10);
}

/* The machine ID as the daemon reads it; "" when there is none. */
static void machine_id(char *buf, size_t len)
{
	FILE *f = fopen("/etc/machine-id", "r");

	buf[0] = '\0';
	if (f != NULL && fgets(buf, (int)len, f) != NULL)
		buf[strcspn(buf, "\n")] = '\0';
	if (f != NULL)
		fclose(f);
	if (strlen(buf) != 32)
		buf[0] = '\0';
}

/* What the log's line for a CLI line must be: host and machine_id first,
 * then the CLI's members as they are. */
static char *expected_line(const char *cli_line, size_t len)
{
	char mid[64], *out;

	machine_id(mid, sizeof mid);
	ck_assert_msg(len > 2 && cli_line[0] == '{', "%.*s", (int)len,
		      cli_line);
	out = malloc(len + 256);
	snprintf(out, len + 256, "{\"host\":\"%s\",%s%s%s%.*s", HOST,
		 *mid ? "\"machine_id\":\"" : "", mid, *mid ? "\"," : "",
		 (int)len - 1, cli_line + 1);
	return out;
}

/* Every line of the log text equals the CLI's line of its id, and the
 * ids rise (commit order); returns the count of lines. */
static int assert_lines_match_cli(const struct harness_daemon *d,
				  const char *text)
{
	struct run r =
	    run("--db", (char *)d->db, "leaks", "--json", "--limit", "0");
	int64_t last = 0;
	int n = 0;

	ck_assert_msg(r.status == 0, "%s", r.err);
	for (const char *p = text; *p != '\0';) {
		const char *nl = strchr(p, '\n');
		int64_t id;
		char key[32], *want;
		const char *c;

		ck_assert_msg(nl != NULL, "a line without its newline: %s", p);
		id = line_id(p, (size_t)(nl - p));
		ck_assert_msg(id > last, "id %" PRId64 " after %" PRId64, id,
			      last);
		last = id;
		/* The CLI's line of that id. */
		snprintf(key, sizeof key, "{\"id\":%" PRId64 ",", id);
		c = strstr(r.out, key);
		ck_assert_msg(c != NULL, "id %" PRId64 " not in the CLI's", id);
		want = expected_line(c, strcspn(c, "\n"));
		ck_assert_msg(
		    strlen(want) == (size_t)(nl - p) &&
			memcmp(want, p, (size_t)(nl - p)) == 0,
		    "the log's line:\n%.*s\nthe CLI's, with host:\n%s",
		    (int)(nl - p), p, want);
		free(want);
		n++;
		p = nl + 1;
	}
	run_free(&r);
	return n;
}

/* ------------------------------------------------------------ log tests */

START_TEST(test_log_lines_are_the_cli_lines)
{
	struct harness_daemon d;
	char *text, *log_path;
	int64_t leaks;

	ck_assert_int_eq(harness_prepare(&d), 0);
	log_path = strdup(path_in(&d, "findings.log"));
	{
		const char *args[] = {"--findings-log", log_path, "--host",
				      HOST, NULL};

		ck_assert_msg(harness_launch(&d, args) == 0, "%s",
			      harness_error());
	}
	run_client(&d, 20);
	/* Lines come after commits, with the daemon still running. */
	ck_assert_int_eq(
	    harness_wait_int(&d, "SELECT count(*) > 0 FROM leaks", 1), 0);
	stop_ok(&d);
	leaks = query_int(&d, "SELECT count(*) FROM leaks");
	ck_assert_int_gt(leaks, 60);
	/* Several classes, and details that name requests. */
	ck_assert_int_ge(query_int(&d, "SELECT count(DISTINCT class) FROM "
				       "leaks"),
			 4);
	ck_assert_int_gt(query_int(&d, "SELECT count(*) FROM leaks WHERE "
				       "detail LIKE '%%ctx%%0x%%'"),
			 0);
	text = slurp(log_path);
	ck_assert_ptr_nonnull(text);
	ck_assert_int_eq(assert_lines_match_cli(&d, text), leaks);
	ck_assert_int_eq(python_json_lines(log_path), leaks);
	/* Created 0640. */
	{
		struct stat st;

		ck_assert_int_eq(stat(log_path, &st), 0);
		ck_assert_int_eq(st.st_mode & 0777, 0640);
	}
	free(text);
	free(log_path);
	harness_cleanup(&d);
}
END_TEST

/* A second run appends the findings of its own commits only. */
START_TEST(test_log_appends_across_restarts)
{
	struct harness_daemon d;
	char *text, *log_path;
	const char *args[] = {"--findings-log", NULL, "--host", HOST, NULL};

	ck_assert_int_eq(harness_prepare(&d), 0);
	log_path = strdup(path_in(&d, "findings.log"));
	args[1] = log_path;
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_client(&d, 3);
	stop_ok(&d);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_client(&d, 3);
	stop_ok(&d);
	text = slurp(log_path);
	ck_assert_int_eq(assert_lines_match_cli(&d, text),
			 query_int(&d, "SELECT count(*) FROM leaks"));
	free(text);
	free(log_path);
	harness_cleanup(&d);
}
END_TEST

/* SIGHUP reopens the file: after an outside rotation (a rename), the
 * lines of later commits go to a new FILE. */
START_TEST(test_log_reopen_on_hangup)
{
	struct harness_daemon d;
	char *log_path, moved[512], *old_text, *new_text, *all;
	const char *args[] = {"--findings-log", NULL, "--host", HOST, NULL};
	int64_t before;

	ck_assert_int_eq(harness_prepare(&d), 0);
	log_path = strdup(path_in(&d, "findings.log"));
	args[1] = log_path;
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_client(&d, 3);
	ck_assert_int_eq(harness_wait_int(&d,
					  "SELECT count(*) FROM processes "
					  "WHERE disconnected_at IS NOT NULL",
					  1),
			 0);
	before = query_int(&d, "SELECT count(*) FROM leaks");
	snprintf(moved, sizeof moved, "%s.moved", log_path);
	ck_assert_int_eq(rename(log_path, moved), 0);
	ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
	/* The signal is handled before the next client's records. */
	harness_sleep_ms(200);
	run_client(&d, 3);
	stop_ok(&d);
	old_text = slurp(moved);
	new_text = slurp(log_path);
	ck_assert_ptr_nonnull(new_text);
	ck_assert_int_eq(count_lines(old_text), before);
	ck_assert_int_eq(count_lines(new_text),
			 query_int(&d, "SELECT count(*) FROM leaks") - before);
	all = malloc(strlen(old_text) + strlen(new_text) + 1);
	strcpy(all, old_text);
	strcat(all, new_text);
	ck_assert_int_eq(assert_lines_match_cli(&d, all),
			 query_int(&d, "SELECT count(*) FROM leaks"));
	free(all);
	free(old_text);
	free(new_text);
	free(log_path);
	harness_cleanup(&d);
}
END_TEST

/* Rotation at a small size: numbered files of whole lines, each under
 * the size, the newest in FILE, every finding once. */
START_TEST(test_log_rotation)
{
	struct harness_daemon d;
	char *text, *log_path, name[512];
	int nfiles;
	int64_t leaks;

	ck_assert_int_eq(harness_prepare(&d), 0);
	log_path = strdup(path_in(&d, "findings.log"));
	{
		const char *args[] = {"--findings-log",
				      log_path,
				      "--host",
				      HOST,
				      "--findings-log-max-size",
				      "4K",
				      "--findings-log-keep",
				      "1000",
				      NULL};

		ck_assert_msg(harness_launch(&d, args) == 0, "%s",
			      harness_error());
	}
	run_client(&d, 40);
	stop_ok(&d);
	leaks = query_int(&d, "SELECT count(*) FROM leaks");
	text = all_log_lines(log_path, 1000, &nfiles);
	ck_assert_int_gt(nfiles, 5);
	/* Oldest first, so the ids rise through the files too. */
	ck_assert_int_eq(assert_lines_match_cli(&d, text), leaks);
	for (int i = 0; i < nfiles; i++) {
		struct stat st;
		char *t;

		if (i > 0)
			snprintf(name, sizeof name, "%s.%d", log_path, i);
		else
			snprintf(name, sizeof name, "%s", log_path);
		ck_assert_msg(stat(name, &st) == 0, "%s missing", name);
		ck_assert_int_le(st.st_size, 4096);
		t = slurp(name);
		ck_assert_msg(t[0] != '\0' && t[strlen(t) - 1] == '\n',
			      "%s does not end with a whole line", name);
		ck_assert_int_eq(python_json_lines(name), count_lines(t));
		free(t);
	}
	free(text);
	harness_cleanup(&d);

	/* Keep 2: FILE, FILE.1 and FILE.2, the newest findings. */
	ck_assert_int_eq(harness_prepare(&d), 0);
	free(log_path);
	log_path = strdup(path_in(&d, "findings.log"));
	{
		const char *args[] = {"--findings-log",
				      log_path,
				      "--host",
				      HOST,
				      "--findings-log-max-size",
				      "4K",
				      "--findings-log-keep",
				      "2",
				      NULL};

		ck_assert_msg(harness_launch(&d, args) == 0, "%s",
			      harness_error());
	}
	run_client(&d, 40);
	stop_ok(&d);
	snprintf(name, sizeof name, "%s.3", log_path);
	ck_assert_int_eq(access(name, F_OK), -1);
	text = all_log_lines(log_path, 2, &nfiles);
	ck_assert_int_eq(nfiles, 3);
	ck_assert_int_gt(query_int(&d, "SELECT count(*) FROM leaks"),
			 count_lines(text));
	assert_lines_match_cli(&d, text);
	/* The last line is the last finding. */
	{
		const char *last = text + strlen(text) - 1;

		while (last > text && last[-1] != '\n')
			last--;
		ck_assert_int_eq(line_id(last, strcspn(last, "\n")),
				 query_int(&d, "SELECT max(id) FROM leaks"));
	}
	free(text);
	free(log_path);
	harness_cleanup(&d);
}
END_TEST

/* A disk that refuses every write: logged once, counted, and the daemon
 * and its database go on. */
START_TEST(test_log_write_failure)
{
	struct harness_daemon d;
	char *metrics;
	const char *args[] = {"--findings-log",
			      "/dev/full",
			      "--metrics-file",
			      NULL,
			      "--metrics-interval",
			      "0",
			      NULL};
	int64_t leaks;
	char want[128], *text;

	ck_assert_int_eq(access("/dev/full", W_OK), 0);
	ck_assert_int_eq(harness_prepare(&d), 0);
	metrics = strdup(path_in(&d, "ctxleak.prom"));
	args[3] = metrics;
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_client(&d, 5);
	run_client(&d, 5);
	stop_ok(&d);
	leaks = query_int(&d, "SELECT count(*) FROM leaks");
	ck_assert_int_gt(leaks, 20);
	ck_assert_int_eq(harness_log_count(&d, "findings log: cannot write"),
			 1);
	text = slurp(metrics);
	snprintf(want, sizeof want,
		 "\nctxleak_findings_log_lines_failed_total %" PRId64 "\n",
		 leaks);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	ck_assert_ptr_nonnull(
	    strstr(text, "\nctxleak_findings_log_lines_written_total 0\n"));
	free(text);
	free(metrics);
	harness_cleanup(&d);
}
END_TEST

/* A write that comes up short (the file-size limit reached mid-chunk) is
 * cut back to its last whole line; the lines after it are counted as
 * failed, and a reader never sees half a line. */
#define FSIZE_LIMIT (16 << 20)
#define FSIZE_ROOM  1500 /* bytes left under the limit: a line or two */
START_TEST(test_log_short_write)
{
	struct harness_daemon d;
	char *log_path, *metrics, *text, want[160];
	const char *args[] = {"--findings-log",
			      NULL,
			      "--findings-log-max-size",
			      "1G",
			      "--metrics-file",
			      NULL,
			      "--metrics-interval",
			      "0",
			      "--host",
			      HOST,
			      NULL};
	struct rlimit rl = {FSIZE_LIMIT, FSIZE_LIMIT};
	size_t prefix = FSIZE_LIMIT - FSIZE_ROOM;
	int64_t leaks, after = 0;
	FILE *f;

	ck_assert_int_eq(harness_prepare(&d), 0);
	log_path = strdup(path_in(&d, "findings.log"));
	metrics = strdup(path_in(&d, "ctxleak.prom"));
	args[1] = log_path;
	args[5] = metrics;
	/* Lines of an earlier run, "{}", up to FSIZE_ROOM under the
	 * limit. */
	f = fopen(log_path, "w");
	for (size_t i = 0; i < prefix / 3; i++)
		fputs("{}\n", f);
	fclose(f);
	prefix = prefix / 3 * 3;
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	ck_assert_int_eq(prlimit(d.pid, RLIMIT_FSIZE, &rl, NULL), 0);
	run_client(&d, 5);
	stop_ok(&d);
	leaks = query_int(&d, "SELECT count(*) FROM leaks");
	text = slurp(log_path);
	ck_assert_uint_le(strlen(text), FSIZE_LIMIT);
	ck_assert_msg(text[strlen(text) - 1] == '\n', "half a line at the end");
	/* What came after the old lines: whole lines of findings, in order,
	 * each the CLI's. */
	after = assert_lines_match_cli(&d, text + prefix);
	ck_assert_int_gt(after, 0);
	ck_assert_int_lt(after, leaks);
	ck_assert_int_eq(harness_log_count(&d, "findings log: cannot write"),
			 1);
	free(text);
	text = slurp(metrics);
	snprintf(want, sizeof want,
		 "\nctxleak_findings_log_lines_written_total %" PRId64 "\n",
		 after);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	snprintf(want, sizeof want,
		 "\nctxleak_findings_log_lines_failed_total %" PRId64 "\n",
		 leaks - after);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	free(text);
	free(metrics);
	free(log_path);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------ metrics */

/* One sample of the file: its name, its labels as written, its value. */
struct sample {
	char name[128];
	char labels[256]; /* between the braces; "" without */
	double value;
};

struct exposition {
	struct sample s[256];
	int n;
};

static int is_name(const char *s, size_t n, int colon)
{
	if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' ||
			(colon && s[0] == ':')))
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_' ||
		      (colon && s[i] == ':')))
			return 0;
	return 1;
}

/* A value of the format: a Go float (strtod's, whole) or +Inf, -Inf,
 * NaN. */
static int parse_value(const char *s, double *out)
{
	char *end;

	if (!strcmp(s, "+Inf") || !strcmp(s, "-Inf") || !strcmp(s, "NaN")) {
		*out = !strcmp(s, "NaN") ? NAN
					 : (s[0] == '+' ? INFINITY : -INFINITY);
		return 0;
	}
	if (*s == '\0' || isspace((unsigned char)*s))
		return -1;
	*out = strtod(s, &end);
	return *end == '\0' ? 0 : -1;
}

/* {name="value",...}: label names, quoted values with only \\, \" and \n
 * escapes; returns the length through the closing brace, or -1. */
static int parse_labels(const char *p, char *copy, size_t len)
{
	const char *start = p;

	if (*p++ != '{')
		return -1;
	while (*p != '}') {
		size_t n = strcspn(p, "=");

		if (!is_name(p, n, 0) || p[n] != '=' || p[n + 1] != '"')
			return -1;
		p += n + 2;
		while (*p != '"') {
			if (*p == '\0' || *p == '\n')
				return -1;
			if (*p == '\\' &&
			    !(p[1] == '\\' || p[1] == '"' || p[1] == 'n'))
				return -1;
			p += *p == '\\' ? 2 : 1;
		}
		p++;
		if (*p == ',')
			p++;
		else if (*p != '}')
			return -1;
	}
	snprintf(copy, len, "%.*s", (int)(p - start - 1), start + 1);
	return (int)(p - start + 1);
}

/* The family a sample name belongs to, by its TYPE: histograms own
 * _bucket, _sum and _count. */
static int in_family(const char *sample, const char *family, const char *type)
{
	size_t n = strlen(family);

	if (!strcmp(sample, family))
		return strcmp(type, "histogram") != 0;
	if (strncmp(sample, family, n) != 0 || strcmp(type, "histogram") != 0)
		return 0;
	return !strcmp(sample + n, "_bucket") || !strcmp(sample + n, "_sum") ||
	       !strcmp(sample + n, "_count");
}

/*
 * The text exposition format 0.0.4, strictly: every line ends in "\n";
 * "# HELP name text" and "# TYPE name type" once per family, both before
 * its samples, which follow together; names and labels of the format's
 * syntax; values that are floats; a histogram's buckets carry le, rise,
 * and end at +Inf equal to _count; no sample twice.
 */
static void parse_exposition(const char *text, struct exposition *e)
{
	char family[128] = "", type[32] = "", help_of[128] = "";
	char seen[64][128];
	int nseen = 0;
	double last_bucket = -1;

	e->n = 0;
	ck_assert_msg(*text != '\0' && text[strlen(text) - 1] == '\n',
		      "the file must end with a newline");
	for (const char *p = text; *p != '\0';) {
		size_t len = strcspn(p, "\n");
		char line[1024];

		ck_assert_uint_lt(len, sizeof line);
		memcpy(line, p, len);
		line[len] = '\0';
		p += len + 1;
		if (!strncmp(line, "# HELP ", 7)) {
			size_t n = strcspn(line + 7, " ");

			ck_assert_msg(is_name(line + 7, n, 1), "%s", line);
			ck_assert_msg(line[7 + n] == ' ' && line[8 + n] != '\0',
				      "HELP without text: %s", line);
			snprintf(help_of, sizeof help_of, "%.*s", (int)n,
				 line + 7);
			for (int i = 0; i < nseen; i++)
				ck_assert_msg(strcmp(seen[i], help_of),
					      "%s twice", help_of);
			continue;
		}
		if (!strncmp(line, "# TYPE ", 7)) {
			size_t n = strcspn(line + 7, " ");
			const char *t = line + 8 + n;

			ck_assert_msg(is_name(line + 7, n, 1), "%s", line);
			snprintf(family, sizeof family, "%.*s", (int)n,
				 line + 7);
			ck_assert_msg(!strcmp(family, help_of),
				      "TYPE %s without its HELP before",
				      family);
			ck_assert_msg(
			    !strcmp(t, "counter") || !strcmp(t, "gauge") ||
				!strcmp(t, "histogram") ||
				!strcmp(t, "summary") || !strcmp(t, "untyped"),
			    "%s", line);
			snprintf(type, sizeof type, "%s", t);
			ck_assert_int_lt(nseen, 64);
			snprintf(seen[nseen++], sizeof seen[0], "%s", family);
			last_bucket = -1;
			continue;
		}
		ck_assert_msg(line[0] != '#' || line[1] == ' ',
			      "bad comment: %s", line);
		if (line[0] == '#')
			continue;
		ck_assert_msg(len > 0, "an empty line");
		{
			struct sample *s = &e->s[e->n];
			size_t n = strcspn(line, "{ ");
			const char *v;
			int l = 0;

			ck_assert_int_lt(e->n, 256);
			ck_assert_msg(is_name(line, n, 1), "%s", line);
			snprintf(s->name, sizeof s->name, "%.*s", (int)n, line);
			ck_assert_msg(*family &&
					  in_family(s->name, family, type),
				      "sample %s outside its family (%s)",
				      s->name, family);
			s->labels[0] = '\0';
			if (line[n] == '{') {
				l = parse_labels(line + n, s->labels,
						 sizeof s->labels);
				ck_assert_msg(l > 0, "bad labels: %s", line);
			}
			v = line + n + l;
			ck_assert_msg(*v == ' ', "%s", line);
			ck_assert_msg(parse_value(v + 1, &s->value) == 0,
				      "bad value: %s", line);
			for (int i = 0; i < e->n; i++)
				ck_assert_msg(
				    strcmp(e->s[i].name, s->name) ||
					strcmp(e->s[i].labels, s->labels),
				    "%s twice", line);
			if (strstr(s->name, "_bucket") != NULL &&
			    !strcmp(type, "histogram")) {
				ck_assert_msg(!strncmp(s->labels, "le=\"", 4),
					      "bucket without le: %s", line);
				ck_assert_msg(s->value >= last_bucket,
					      "buckets fall: %s", line);
				last_bucket = s->value;
			}
			e->n++;
		}
	}
}

/* The value of a sample; fails when absent. */
static double value_of(const struct exposition *e, const char *name,
		       const char *labels)
{
	for (int i = 0; i < e->n; i++)
		if (!strcmp(e->s[i].name, name) &&
		    !strcmp(e->s[i].labels, labels))
			return e->s[i].value;
	ck_abort_msg("no sample %s{%s}", name, labels);
	return 0;
}

static void assert_metrics_match_db(const struct harness_daemon *d,
				    const char *path)
{
	static const char *const classes[] = {"bleed", "stale",	  "overlap",
					      "lost",  "misnest", "unclosed"};
	struct exposition e;
	char *text = slurp(path), labels[64];

	ck_assert_msg(text != NULL, "no %s", path);
	parse_exposition(text, &e);
	for (size_t c = 0; c < sizeof classes / sizeof classes[0]; c++) {
		snprintf(labels, sizeof labels, "class=\"%s\"", classes[c]);
		ck_assert_double_eq(
		    value_of(&e, "ctxleak_findings_total", labels),
		    (double)query_int(d,
				      "SELECT count(*) FROM leaks WHERE "
				      "class = '%s'",
				      classes[c]));
	}
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_records_stored_total", ""),
	    (double)query_int(d, "SELECT sum(records) FROM processes"));
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_records_dropped_total", ""),
	    (double)query_int(d, "SELECT sum(dropped) FROM processes"));
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_incomplete_windows", "kind=\"drops\""),
	    (double)query_int(d, "SELECT count(*) FROM drops"));
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_incomplete_windows", "kind=\"unclean_runs\""),
	    (double)query_int(d, "SELECT count(*) FROM runs WHERE unclean"));
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_incomplete_windows", "kind=\"vanished\""),
	    (double)query_int(d, "SELECT count(*) FROM processes WHERE "
				 "vanished"));
	ck_assert_double_eq(value_of(&e, "ctxleak_connections", ""), 0);
	ck_assert_double_eq(value_of(&e, "ctxleak_rows_not_stored_total", ""),
			    0);
	ck_assert_double_eq(value_of(&e, "ctxleak_build_info",
				     "version=\"" COMMON_VERSION "\""),
			    1);
	/* Commits were timed: +Inf is the count, and the last one ended
	 * after the test began. */
	ck_assert_double_gt(
	    value_of(&e, "ctxleak_commit_duration_seconds_count", ""), 0);
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_commit_duration_seconds_bucket",
		     "le=\"+Inf\""),
	    value_of(&e, "ctxleak_commit_duration_seconds_count", ""));
	ck_assert_double_gt(
	    value_of(&e, "ctxleak_last_commit_timestamp_seconds", ""),
	    (double)time(NULL) - 600);
	free(text);
}

START_TEST(test_metrics_file)
{
	struct harness_daemon d;
	char *metrics, *text;
	const char *args[] = {"--metrics-file", NULL, "--metrics-interval", "0",
			      NULL};
	struct exposition e;

	ck_assert_int_eq(harness_prepare(&d), 0);
	metrics = strdup(path_in(&d, "ctxleak.prom"));
	args[1] = metrics;
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	/* Written at start, before any commit of rows. */
	text = slurp(metrics);
	ck_assert_ptr_nonnull(text);
	parse_exposition(text, &e);
	ck_assert_double_eq(
	    value_of(&e, "ctxleak_findings_total", "class=\"bleed\""), 0);
	free(text);
	run_client(&d, 5);
	stop_ok(&d);
	assert_metrics_match_db(&d, metrics);

	/* A daemon that dies, and its successor: the totals go on from
	 * the file, and the unclean run is an incomplete window. */
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_client(&d, 2);
	ck_assert_int_eq(harness_wait_int(&d,
					  "SELECT count(*) FROM processes "
					  "WHERE disconnected_at IS NOT NULL",
					  2),
			 0);
	harness_kill(&d);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	run_client(&d, 2);
	stop_ok(&d);
	ck_assert_int_eq(query_int(&d, "SELECT count(*) FROM runs WHERE "
				       "unclean"),
			 1);
	assert_metrics_match_db(&d, metrics);
	/* Nothing left of the temporary files. */
	{
		char tmp[512];

		snprintf(tmp, sizeof tmp, "ls %s | grep -c tmp", d.dir);
		FILE *p = popen(tmp, "r");
		int n = -1;

		ck_assert_int_eq(fscanf(p, "%d", &n), 1);
		pclose(p);
		ck_assert_int_eq(n, 0);
	}
	free(metrics);
	harness_cleanup(&d);
}
END_TEST

/* ------------------------------------------------------------ journal */

/* What the test's journal socket received. */
struct journal_rx {
	int fd;
	volatile int stop; /* the daemon has exited: read what is left */
	char *dgram[4096];
	size_t len[4096];
	int n;
};

/* A datagram's bytes, or those of the memfd it carries. */
static void receive_one(struct journal_rx *rx)
{
	static char buf[1 << 20];
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} control;
	struct iovec iov = {buf, sizeof buf};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = control.b,
			    .msg_controllen = sizeof control.b};
	ssize_t n = recvmsg(rx->fd, &mh, MSG_DONTWAIT);
	struct cmsghdr *c;

	if (n < 0 || rx->n == 4096)
		return;
	for (c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_type == SCM_RIGHTS) {
			int fd;
			struct stat st;

			memcpy(&fd, CMSG_DATA(c), sizeof fd);
			fstat(fd, &st);
			n = pread(fd, buf, sizeof buf, 0);
			close(fd);
		}
	rx->dgram[rx->n] = malloc((size_t)n + 1);
	memcpy(rx->dgram[rx->n], buf, (size_t)n);
	rx->dgram[rx->n][n] = '\0';
	rx->len[rx->n++] = (size_t)n;
}

static void *journal_reader(void *arg)
{
	struct journal_rx *rx = arg;
	struct pollfd pfd = {rx->fd, POLLIN, 0};

	for (;;) {
		int ready = poll(&pfd, 1, 50);

		if (ready > 0)
			receive_one(rx);
		else if (rx->stop)
			break;
	}
	return NULL;
}

/* KEY=value or KEY\n<le64 length><bytes>\n, as journald reads them. */
static const char *field_of(const char *p, size_t len, const char *key,
			    char *out, size_t outlen)
{
	const char *end = p + len;

	while (p < end) {
		size_t k = strcspn(p, "=\n");
		uint64_t n = 0;
		const char *v;

		ck_assert_msg(p + k < end, "a field without its end");
		if (p[k] == '=') {
			v = p + k + 1;
			n = (uint64_t)((const char *)memchr(v, '\n',
							    (size_t)(end - v)) -
				       v);
		} else {
			for (int i = 0; i < 8; i++)
				n |= (uint64_t)(unsigned char)p[k + 1 + i]
				     << (8 * i);
			v = p + k + 9;
		}
		ck_assert_msg(v + n < end && v[n] == '\n', "bad field");
		if (k == strlen(key) && !memcmp(p, key, k)) {
			snprintf(out, outlen, "%.*s", (int)n, v);
			return out;
		}
		p = v + n + 1;
	}
	return NULL;
}

/* The one string a printf-formed query returns, in buf ("" for NULL). */
static const char *query_str(const struct harness_daemon *d, char *buf,
			     size_t len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const char *query_str(const struct harness_daemon *d, char *buf,
			     size_t len, const char *fmt, ...)
{
	char sql[512], *s;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof sql, fmt, ap);
	va_end(ap);
	s = harness_query_str(d, sql);
	snprintf(buf, len, "%s", s != NULL ? s : "");
	free(s);
	return buf;
}

START_TEST(test_journal_entries)
{
	struct harness_daemon d;
	struct journal_rx *rx = calloc(1, sizeof *rx);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	const char *args[] = {"--findings-journal", "--host", HOST, NULL};
	pthread_t reader;
	char v[4096], want[512];
	int64_t leaks;

	ck_assert_int_eq(harness_prepare(&d), 0);
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s/journal.sock", d.dir);
	rx->fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	ck_assert_int_ge(rx->fd, 0);
	ck_assert_int_eq(bind(rx->fd, (struct sockaddr *)&addr, sizeof addr),
			 0);
	ck_assert_int_eq(pthread_create(&reader, NULL, journal_reader, rx), 0);
	setenv("CTXLEAKD_JOURNAL_SOCKET", addr.sun_path, 1);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	unsetenv("CTXLEAKD_JOURNAL_SOCKET");
	run_client(&d, 20);
	stop_ok(&d);
	rx->stop = 1;
	pthread_join(reader, NULL);
	leaks = query_int(&d, "SELECT count(*) FROM leaks");
	ck_assert_int_gt(leaks, 60);
	ck_assert_int_eq(rx->n, leaks);
	for (int i = 0; i < rx->n; i++) {
		const char *e = rx->dgram[i];
		size_t len = rx->len[i];
		int64_t id;

		ck_assert_str_eq(field_of(e, len, "MESSAGE_ID", v, sizeof v),
				 MESSAGE_ID);
		ck_assert_str_eq(field_of(e, len, "PRIORITY", v, sizeof v),
				 "4");
		ck_assert_str_eq(field_of(e, len, "CTXLEAK_HOST", v, sizeof v),
				 HOST);
		ck_assert_ptr_nonnull(field_of(e, len, "MESSAGE", v, sizeof v));
		ck_assert_ptr_nonnull(
		    field_of(e, len, "CTXLEAK_ID", v, sizeof v));
		id = strtoll(v, NULL, 10);
		/* In commit order, each finding once. */
		ck_assert_int_eq(id, query_int(&d,
					       "SELECT id FROM leaks ORDER BY "
					       "id LIMIT 1 OFFSET %d",
					       i));
		ck_assert_str_eq(field_of(e, len, "CTXLEAK_CLASS", v, sizeof v),
				 query_str(&d, want, sizeof want,
					   "SELECT class FROM leaks WHERE id = "
					   "%" PRId64,
					   id));
		ck_assert_str_eq(field_of(e, len, "CTXLEAK_APP", v, sizeof v),
				 "harness");
		ck_assert_int_eq(
		    strtoll(field_of(e, len, "CTXLEAK_PID", v, sizeof v), NULL,
			    10),
		    query_int(&d,
			      "SELECT p.pid FROM leaks l JOIN processes p ON "
			      "p.id = l.process_id WHERE l.id = %" PRId64,
			      id));
		ck_assert_str_eq(
		    field_of(e, len, "CTXLEAK_VICTIM", v, sizeof v),
		    query_str(&d, want, sizeof want,
			      "SELECT victim_request_id FROM leaks WHERE id = "
			      "%" PRId64,
			      id));
		if (query_int(&d,
			      "SELECT site_id IS NOT NULL FROM leaks WHERE "
			      "id = %" PRId64,
			      id)) {
			ck_assert_ptr_nonnull(
			    field_of(e, len, "CTXLEAK_SITE", v, sizeof v));
			ck_assert_ptr_nonnull(strstr(v, ".c:"));
		}
		ck_assert_ptr_nonnull(
		    field_of(e, len, "CTXLEAK_DETAIL", v, sizeof v));
		if (query_int(&d,
			      "SELECT source_request_id IS NOT NULL FROM "
			      "leaks WHERE id = %" PRId64,
			      id))
			ck_assert_ptr_nonnull(
			    field_of(e, len, "CTXLEAK_SOURCE", v, sizeof v));
		/* Event messages and the value field stay out of the
		 * journal. */
		ck_assert_ptr_null(memmem(e, len, "\x1b[31m", 5));
		ck_assert_ptr_null(
		    field_of(e, len, "CTXLEAK_VALUE", v, sizeof v));
		ck_assert_ptr_null(
		    field_of(e, len, "CTXLEAK_MESSAGE", v, sizeof v));
		free(rx->dgram[i]);
	}
	close(rx->fd);
	free(rx);
	harness_cleanup(&d);
}
END_TEST

/* A request named by 300 KiB of bytes, whose event is recorded with no
 * context: a finding whose journal entry is larger than a datagram.  The
 * library cuts strings to 4 KiB, so it is written raw. */
#define HUGE_NAME (300 * 1024)
static void send_huge_name(const struct harness_daemon *d)
{
	size_t cap = 2 * HUGE_NAME, n = 0;
	unsigned char *buf = malloc(cap);
	char *name = malloc(HUGE_NAME);
	int fd = harness_connect(d);
	const struct proto_record r[] = {
	    {.type = PROTO_BEGIN,
	     .ts = 1000,
	     .tid = 7,
	     .ctx = 77,
	     .kind = PROTO_KIND_REQUEST,
	     .name = {name, HUGE_NAME}},
	    {.type = PROTO_EVENT,
	     .ts = 1001,
	     .tid = 7,
	     .ctx = 0,
	     .cause = 77,
	     .name = {"e", 1}},
	    {.type = PROTO_END,
	     .ts = 1002,
	     .tid = 7,
	     .ctx = 77,
	     .cause = 77,
	     .cur = 77},
	};

	memset(name, 'n', HUGE_NAME);
	ck_assert_msg(fd >= 0, "%s", harness_error());
	ck_assert_int_eq(harness_send_hello(fd, 4343, 0), 0);
	for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
		n += raw_encode(buf + n, cap - n, &r[i]);
	ck_assert_int_eq(harness_write_all(fd, buf, n), 0);
	close(fd);
	free(name);
	free(buf);
}

START_TEST(test_journal_memfd)
{
	struct harness_daemon d;
	struct journal_rx *rx = calloc(1, sizeof *rx);
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	const char *args[] = {"--findings-journal", "--max-string", "1M",
			      "--max-record-size",  "4M",	    NULL};
	pthread_t reader;
	char *v = malloc(400 * 1024);
	int huge = 0;

	ck_assert_int_eq(harness_prepare(&d), 0);
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s/journal.sock", d.dir);
	rx->fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	ck_assert_int_eq(bind(rx->fd, (struct sockaddr *)&addr, sizeof addr),
			 0);
	ck_assert_int_eq(pthread_create(&reader, NULL, journal_reader, rx), 0);
	setenv("CTXLEAKD_JOURNAL_SOCKET", addr.sun_path, 1);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	unsetenv("CTXLEAKD_JOURNAL_SOCKET");
	send_huge_name(&d);
	ck_assert_int_eq(harness_wait_int(&d,
					  "SELECT count(*) FROM processes "
					  "WHERE disconnected_at IS NOT NULL",
					  1),
			 0);
	ck_assert_int_ge(query_int(&d,
				   "SELECT count(*) FROM leaks WHERE "
				   "length(victim_name) = %d",
				   HUGE_NAME),
			 1);
	stop_ok(&d);
	rx->stop = 1;
	pthread_join(reader, NULL);
	ck_assert_int_eq(rx->n, query_int(&d, "SELECT count(*) FROM leaks"));
	for (int i = 0; i < rx->n; i++) {
		if (field_of(rx->dgram[i], rx->len[i], "CTXLEAK_VICTIM_NAME", v,
			     400 * 1024) != NULL &&
		    strlen(v) == HUGE_NAME) {
			huge++;
			ck_assert_str_eq(field_of(rx->dgram[i], rx->len[i],
						  "MESSAGE_ID", v, 400 * 1024),
					 MESSAGE_ID);
		}
		free(rx->dgram[i]);
	}
	ck_assert_int_ge(huge, 1);
	free(v);
	close(rx->fd);
	free(rx);
	harness_cleanup(&d);
}
END_TEST

/* No journal listens: entries are dropped and counted, the daemon goes
 * on. */
START_TEST(test_journal_absent)
{
	struct harness_daemon d;
	char *metrics, *text, want[128];
	const char *args[] = {"--findings-journal", "--metrics-file", NULL,
			      NULL};
	int64_t leaks;

	ck_assert_int_eq(harness_prepare(&d), 0);
	metrics = strdup(path_in(&d, "ctxleak.prom"));
	args[2] = metrics;
	setenv("CTXLEAKD_JOURNAL_SOCKET", path_in(&d, "nobody.sock"), 1);
	ck_assert_msg(harness_launch(&d, args) == 0, "%s", harness_error());
	unsetenv("CTXLEAKD_JOURNAL_SOCKET");
	run_client(&d, 2);
	stop_ok(&d);
	leaks = query_int(&d, "SELECT count(*) FROM leaks");
	ck_assert_int_gt(leaks, 0);
	ck_assert_int_eq(harness_log_count(&d, "findings journal: cannot "
					       "reach"),
			 1);
	text = slurp(metrics);
	snprintf(want, sizeof want,
		 "\nctxleak_findings_journal_entries_dropped_total %" PRId64
		 "\n",
		 leaks);
	ck_assert_msg(strstr(text, want) != NULL, "%s", text);
	free(text);
	free(metrics);
	harness_cleanup(&d);
}
END_TEST

static Suite *fleet_suite(void)
{
	Suite *s = suite_create("fleet_logs");

	suite_add_tcase(
	    s,
	    check_tcase("findings_log", 120, test_log_lines_are_the_cli_lines,
			test_log_appends_across_restarts,
			test_log_reopen_on_hangup, test_log_rotation,
			test_log_write_failure, test_log_short_write, NULL));
	suite_add_tcase(s,
			check_tcase("metrics", 120, test_metrics_file, NULL));
	suite_add_tcase(s, check_tcase("journal", 120, test_journal_entries,
				       test_journal_memfd, test_journal_absent,
				       NULL));
	return s;
}

int main(void)
{
	return check_main(fleet_suite(), NULL);
}
