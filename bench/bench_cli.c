/*
 * bench_cli.c: how long the ctxleak CLI takes over a database of many
 * findings, against the baseline of reading the same rows with SQLite
 * in-process (what any report must at least pay).
 *
 * The database comes from the real daemon: one client runs the worked
 * example of docs/DESIGN.md (7 findings each) ROUNDS times under the thread
 * backend.  Each CLI command runs as a program, output to /dev/null.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ctxleak.h"
#include "../tests/harness.h"

#define ROUNDS 3000
#define REPEAT 3 /* best of */

static int worked_examples(void *arg)
{
	(void)arg;
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t a, b, c, token_a, token_b;

		ctxleak_resume(0);
		a = ctxleak_begin("GET /a");
		ctxleak_tag("user", "alice");
		token_a = ctxleak_capture();
		ctxleak_suspend();
		ctxleak_resume(0);
		b = ctxleak_begin("GET /b");
		token_b = ctxleak_capture();
		ctxleak_suspend();
		ctxleak_resume(token_a);
		ctxleak_event("db.done", NULL);
		ctxleak_tag("status", "200");
		ctxleak_end(a);
		ctxleak_suspend();
		ctxleak_resume(token_b);
		ctxleak_event("db.done", NULL);
		ctxleak_end(b);
		ctxleak_suspend();
		ctxleak_resume(0);
		c = ctxleak_begin("GET /c");
		ctxleak_end(c);
		ctxleak_suspend();
	}
	return 0;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Reads every finding with the columns `leaks --json` prints. */
static int baseline(const char *db)
{
	static const char sql[] =
	    "SELECT l.*, p.app, p.pid, s.file, s.line, s.func FROM leaks l"
	    " JOIN processes p ON p.id = l.process_id LEFT JOIN sites s"
	    " ON s.id = l.site_id ORDER BY l.ts DESC, l.id DESC";
	sqlite3 *s;
	sqlite3_stmt *st;
	int n = 0;

	if (sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(s, sql, -1, &st, NULL) != SQLITE_OK)
		return -1;
	while (sqlite3_step(st) == SQLITE_ROW)
		for (int i = 0; i < sqlite3_column_count(st); i++)
			n += sqlite3_column_bytes(st, i) > 0;
	sqlite3_finalize(st);
	sqlite3_close(s);
	return n;
}

static int run_cli(char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		execv(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static double best_cli(char *const argv[])
{
	double best = 1e18;

	for (int i = 0; i < REPEAT; i++) {
		double t = now_ms();

		if (run_cli(argv) != 0)
			return -1;
		t = now_ms() - t;
		best = t < best ? t : best;
	}
	return best;
}

static double best_baseline(const char *db)
{
	double best = 1e18;

	for (int i = 0; i < REPEAT; i++) {
		double t = now_ms();

		if (baseline(db) < 0)
			return -1;
		t = now_ms() - t;
		best = t < best ? t : best;
	}
	return best;
}

int main(void)
{
	const char *bin = getenv("CTXLEAK_BIN");
	struct harness_daemon d;
	char *cli = (char *)(bin && *bin ? bin : "build/ctxleak");
	char *json[] = {cli, "--db", d.db, "leaks", "--json", NULL};
	char *table[] = {cli, "--db", d.db, "leaks", "--limit", "0", NULL};
	char *summary[] = {cli, "--db", d.db, "summary", NULL};
	char *show[] = {cli, "--db", d.db, "show", "GET /b", NULL};
	long long findings;
	double base, ms;

	if (harness_start(&d, NULL) != 0 ||
	    harness_client(&d, CTXLEAK_BACKEND_THREAD, worked_examples, NULL) !=
		0 ||
	    harness_stop(&d) != 0) {
		fprintf(stderr, "bench_cli: %s\n", harness_error());
		harness_cleanup(&d);
		return 0;
	}
	findings = harness_query_int(&d, "SELECT count(*) FROM leaks");
	base = best_baseline(d.db);
	ms = best_cli(json);
	printf("bench_cli: %lld findings, best of %d runs\n", findings, REPEAT);
	printf("  baseline: SQLite reads them in-process  %8.1f ms\n", base);
	printf("  ctxleak leaks --json                    %8.1f ms  "
	       "(%.0f ns a finding, %.1fx the baseline)\n",
	       ms, ms * 1e6 / (double)findings, ms / base);
	printf("  ctxleak leaks --limit 0 (table)         %8.1f ms\n",
	       best_cli(table));
	printf("  ctxleak summary                         %8.1f ms\n",
	       best_cli(summary));
	printf("  ctxleak show 'GET /b'                   %8.1f ms\n",
	       best_cli(show));
	harness_cleanup(&d);
	return 0;
}
