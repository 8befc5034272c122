/*
 * fleet.c: the daemon's findings and health where fleets already look:
 * the findings log (fleet_log.c), the journal (fleet_journal.c) and a
 * metrics file for node_exporter's textfile collector, written here.
 *
 * All three are fed by the store's commit observer: after each COMMIT
 * the findings it stored are read back from the file (store_feed.c), in
 * id order, which is commit order, so nothing the database lost is ever
 * told.  A daemon that dies between a commit and its lines loses those
 * lines (the database keeps the findings; `ctxleak leaks --json --since`
 * gives them again).
 *
 * The metrics file is Prometheus's text exposition format 0.0.4, written
 * to FILE.tmp in FILE's directory and renamed over FILE (a reader
 * never sees half of it; a fixed name, so that what a killed daemon left
 * half written is its successor's to overwrite, not litter) after a commit when the last write is at least
 * --metrics-interval old, on a timer of that interval when no commit
 * comes, and at exit.  Totals that must survive restarts come from the
 * file (processes, runs, drops: small tables), the findings by class from
 * one count of leaks at start plus what each commit stored since; the
 * rest are the daemon's own counters since it started.  Each HELP line
 * says which.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

#define NS_PER_SEC 1000000000ull

/* ctxleak_commit_duration_seconds's buckets: a commit takes about a
 * millisecond on an idle disk, 10-100 ms with a full batch of rows, and
 * seconds when the disk stalls. */
static const double commit_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
					0.025,	0.05,  0.1,    0.25,  0.5,
					1,	2.5,   5,      10};
#define NBUCKETS (sizeof commit_buckets / sizeof commit_buckets[0])

static struct {
	struct store *store;	     /* NULL: no output on */
	struct event *metrics_timer; /* writes the metrics when idle */
	char host[256];		     /* --host, or the system's */
	char machine_id[64];	     /* /etc/machine-id's */
	int have_machine_id;	     /* ... when it has one */
	int log, journal;	     /* the outputs on */
	/* Commits since start: how long they took, and the last one. */
	uint64_t commits;
	uint64_t commit_bucket[NBUCKETS]; /* per bucket, not cumulative */
	double commit_seconds;		  /* their sum */
	int64_t last_commit_wall;	  /* ns; 0: none yet */
	/* leaks rows by class: the file's at start, plus each commit's. */
	uint64_t findings[COMMON_CLASS_COUNT];
	uint64_t metrics_written_at; /* CLOCK_MONOTONIC ns; 0: never */
	int metrics_failing;	     /* the last write failed, was logged */
} fl;

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ metrics */

static void metric_head(FILE *f, const char *name, const char *type,
			const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric(FILE *f, const char *name, const char *type,
		   const char *help, uint64_t v)
{
	metric_head(f, name, type, help);
	fprintf(f, "%s %" PRIu64 "\n", name, v);
}

static void write_commit_histogram(FILE *f)
{
	uint64_t cumulative = 0;

	metric_head(f, "ctxleak_commit_duration_seconds", "histogram",
		    "How long the daemon's commits took (its counter since "
		    "start).");
	for (size_t i = 0; i < NBUCKETS; i++) {
		cumulative += fl.commit_bucket[i];
		fprintf(f,
			"ctxleak_commit_duration_seconds_bucket{le=\"%g\"} "
			"%" PRIu64 "\n",
			commit_buckets[i], cumulative);
	}
	fprintf(f,
		"ctxleak_commit_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64
		"\n"
		"ctxleak_commit_duration_seconds_sum %.9f\n"
		"ctxleak_commit_duration_seconds_count %" PRIu64 "\n",
		fl.commits, fl.commit_seconds, fl.commits);
}

static void write_metrics_to(FILE *f, const struct store_totals *t)
{
	struct store_stats ss;
	struct process_stats ps;
	struct fleet_log_stats ls = {0};
	struct fleet_journal_stats js = {0};

	store_stats(fl.store, &ss);
	process_stats(&ps);
	fleet_log_stats(&ls);
	fleet_journal_stats(&js);
	metric_head(f, "ctxleak_build_info", "gauge",
		    "The daemon's version, as a label; always 1.");
	fprintf(f, "ctxleak_build_info{version=\"%s\"} 1\n", CTXLEAKD_VERSION);
	metric_head(f, "ctxleak_findings_total", "counter",
		    "Findings stored, by class (the database's leaks rows at "
		    "daemon start plus those committed since; retention does "
		    "not lower it).");
	for (int c = 0; c < COMMON_CLASS_COUNT; c++)
		fprintf(f, "ctxleak_findings_total{class=\"%s\"} %" PRIu64 "\n",
			common_class_names[c], fl.findings[c]);
	metric(f, "ctxleak_records_stored_total", "counter",
	       "Records judged and committed, all processes (the database: "
	       "sum of processes.records; survives restarts).",
	       t->records_stored);
	metric(f, "ctxleak_records_dropped_total", "counter",
	       "Records clients reported dropped before the daemon had them "
	       "(the database: sum of processes.dropped; survives restarts).",
	       t->records_dropped);
	metric(f, "ctxleak_rows_not_stored_total", "counter",
	       "Rows (records, findings, requests) the daemon could not store: "
	       "full disk, I/O error (its counter since start).",
	       ss.rows_failed);
	metric(f, "ctxleak_rows_stored_total", "counter",
	       "Rows the daemon committed (its counter since start).",
	       ss.rows_written);
	metric(f, "ctxleak_store_degraded", "gauge",
	       "1 while the daemon's last write failed and it retries.",
	       (uint64_t)ss.degraded);
	metric_head(f, "ctxleak_incomplete_windows", "gauge",
		    "Windows reports call incomplete, as ctxleak summary lists "
		    "them (the database): drops, windows of records clients "
		    "dropped; unclean_runs, daemons that died; vanished, "
		    "processes that ended without CLOSE.");
	fprintf(f,
		"ctxleak_incomplete_windows{kind=\"drops\"} %" PRIu64 "\n"
		"ctxleak_incomplete_windows{kind=\"unclean_runs\"} %" PRIu64
		"\n"
		"ctxleak_incomplete_windows{kind=\"vanished\"} %" PRIu64 "\n",
		t->drop_windows, t->unclean_runs, t->vanished);
	metric(f, "ctxleak_connections", "gauge",
	       "Client connections open now.", conn_count());
	metric(f, "ctxleak_processes", "gauge",
	       "Client processes the daemon holds now: connected, or "
	       "waiting --linger for a reconnection.",
	       ps.live);
	write_commit_histogram(f);
	metric_head(f, "ctxleak_last_commit_timestamp_seconds", "gauge",
		    "When the daemon's last commit ended (Unix time; 0: none "
		    "since start).");
	fprintf(f, "ctxleak_last_commit_timestamp_seconds %.3f\n",
		(double)fl.last_commit_wall / 1e9);
	metric(f, "ctxleak_findings_log_lines_written_total", "counter",
	       "Lines the daemon appended to --findings-log (its counter "
	       "since start).",
	       ls.lines_written);
	metric(f, "ctxleak_findings_log_lines_failed_total", "counter",
	       "Findings whose --findings-log line could not be written: "
	       "full disk (its counter since start).",
	       ls.lines_failed);
	metric(f, "ctxleak_findings_log_rotations_total", "counter",
	       "Times --findings-log was rotated by size (its counter since "
	       "start).",
	       ls.rotations);
	metric(f, "ctxleak_findings_journal_entries_sent_total", "counter",
	       "Findings sent to the journal (its counter since start).",
	       js.sent);
	metric(f, "ctxleak_findings_journal_entries_dropped_total", "counter",
	       "Findings the journal could not take: absent, or too slow "
	       "(its counter since start).",
	       js.dropped);
}

/* FILE.tmp beside FILE, renamed over it. */
static void write_metrics(void)
{
	struct store_totals t;
	char tmp[PATH_MAX];
	FILE *f;
	int fd, rc, bad;

	fl.metrics_written_at = mono_ns();
	if ((rc = store_totals(fl.store, &t, 0)) != 0) {
		if (!fl.metrics_failing)
			log_error("metrics: cannot read the database's totals "
				  "(SQLite error %d); %s not updated",
				  rc, cfg.metrics_file);
		fl.metrics_failing = 1;
		return;
	}
	snprintf(tmp, sizeof tmp, "%s.tmp", cfg.metrics_file);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	/* 0644 whatever the umask: node_exporter runs as another user, and
	 * the file holds counts only. */
	if (fd != -1)
		fchmod(fd, 0644);
	if (fd == -1 || (f = fdopen(fd, "w")) == NULL) {
		if (fd != -1)
			close(fd);
		goto fail;
	}
	write_metrics_to(f, &t);
	bad = ferror(f);
	if (fclose(f) != 0 || bad || rename(tmp, cfg.metrics_file) != 0)
		goto fail;
	if (fl.metrics_failing)
		log_info("metrics: %s written again", cfg.metrics_file);
	fl.metrics_failing = 0;
	return;
fail:
	if (!fl.metrics_failing)
		log_error("metrics: cannot write %s: %s", cfg.metrics_file,
			  strerror(errno));
	fl.metrics_failing = 1;
	unlink(tmp);
}

static void metrics_if_due(void)
{
	if (cfg.metrics_file != NULL &&
	    (fl.metrics_written_at == 0 ||
	     mono_ns() - fl.metrics_written_at >= cfg.metrics_interval))
		write_metrics();
}

static void on_metrics_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	metrics_if_due();
}

/* ------------------------------------------------------------ commits */

static void on_finding(void *arg, const struct store_finding_row *f)
{
	const struct store_value *cls = &f->col[SF_CLASS];
	const char *mid = fl.have_machine_id ? fl.machine_id : NULL;

	(void)arg;
	for (int c = 0; cls->type == STORE_TEXT && c < COMMON_CLASS_COUNT; c++)
		if (strlen(common_class_names[c]) == cls->len &&
		    memcmp(common_class_names[c], cls->s, cls->len) == 0)
			fl.findings[c]++;
	if (fl.log)
		fleet_log_add(f, fl.host, mid);
	if (fl.journal)
		fleet_journal_add(f, fl.host);
}

static void on_commit(struct store *s, const struct store_commit_info *ci,
		      void *arg)
{
	double secs = (double)ci->duration_ns / 1e9;
	size_t b;
	int rc;

	(void)arg;
	fl.commits++;
	fl.commit_seconds += secs;
	for (b = 0; b < NBUCKETS && secs > commit_buckets[b]; b++)
		;
	if (b < NBUCKETS)
		fl.commit_bucket[b]++;
	fl.last_commit_wall = ci->wall_ns;
	if (ci->first_finding != 0 &&
	    (rc = store_committed_findings(s, ci->first_finding, on_finding,
					   NULL)) != 0)
		log_error("fleet: cannot read the findings just committed "
			  "(SQLite error %d)",
			  rc);
	if (fl.log)
		fleet_log_flush();
	metrics_if_due();
}

/* ------------------------------------------------------------ lifetime */

void fleet_open(struct event_base *base, struct store *store)
{
	struct store_totals t;
	int rc;

	fl.log = cfg.findings_log != NULL;
	fl.journal = cfg.findings_journal;
	if (!fl.log && !fl.journal && cfg.metrics_file == NULL)
		return;
	fl.store = store;
	if (cfg.host != NULL)
		snprintf(fl.host, sizeof fl.host, "%s", cfg.host);
	else if (common_host_name(fl.host, sizeof fl.host) == -1)
		snprintf(fl.host, sizeof fl.host, "unknown");
	fl.have_machine_id =
	    common_machine_id(fl.machine_id, sizeof fl.machine_id) == 0;
	if (fl.log &&
	    fleet_log_open(cfg.findings_log, cfg.findings_log_max_size,
			   cfg.findings_log_keep) == -1)
		fatal("cannot open the findings log %s", cfg.findings_log);
	if (fl.journal)
		fleet_journal_open(base);
	if (cfg.metrics_file != NULL) {
		/* --metrics-interval 0 writes after every commit; an idle
		 * daemon's file is still written every second. */
		uint64_t every =
		    cfg.metrics_interval ? cfg.metrics_interval : NS_PER_SEC;
		struct timeval tv = {(time_t)(every / NS_PER_SEC),
				     (suseconds_t)(every % NS_PER_SEC / 1000)};

		/* The one count of leaks: later commits add to it. */
		if ((rc = store_totals(store, &t, 1)) != 0)
			fatalx("metrics: cannot count the findings in %s "
			       "(SQLite error %d)",
			       cfg.db_path, rc);
		memcpy(fl.findings, t.findings, sizeof fl.findings);
		fl.metrics_timer =
		    event_new(base, -1, EV_PERSIST, on_metrics_timer, NULL);
		if (fl.metrics_timer == NULL ||
		    event_add(fl.metrics_timer, &tv) == -1)
			fatalx("cannot add an event");
		write_metrics();
	}
	store_set_commit_observer(store, on_commit, NULL);
}

void fleet_reopen(void)
{
	if (fl.log)
		fleet_log_reopen();
}

void fleet_close(void)
{
	if (fl.store == NULL)
		return;
	store_set_commit_observer(fl.store, NULL, NULL);
	if (fl.journal)
		fleet_journal_close();
	if (cfg.metrics_file != NULL) {
		write_metrics();
		event_free(fl.metrics_timer);
		fl.metrics_timer = NULL;
	}
	if (fl.log)
		fleet_log_close();
	fl.store = NULL;
}
