/*
 * ctxleakd.h: the internal header of the ctxleakd daemon.  Every daemon
 * source file includes it, and only it, for the declarations of the other
 * files.  One section per file.
 */
#ifndef CTXLEAKD_H
#define CTXLEAKD_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common.h"
#include "proto.h"
#include "rules.h"

#define CTXLEAKD_VERSION COMMON_VERSION

/* ------------------------------------------------------------ log.c */

enum log_level {
	LOG_LEVEL_ERROR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG
};

/* Logs go to stderr (journald takes them from there), one line each,
 * "<N>" syslog priority prefixes when stderr is the journal, else a
 * timestamp and the level name. */
void log_open(const char *path); /* NULL: stderr; else append to a file */
void log_reopen(void);		 /* SIGHUP: reopen the file */
void log_set_level(enum log_level level);
int log_level_from_name(const char *name); /* -1: unknown */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log and exit(1); fatal appends strerror(errno), fatalx does not. */
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* ------------------------------------------------------------ store.c */

/* The only module that speaks SQL.  Schema: daemon/SCHEMA.md.  Every write
 * goes into one open transaction that store_tick commits every commit_ms or
 * commit_rows rows.  A failed write (disk full, I/O error, another writer's
 * lock) rolls that transaction back and counts its rows in rows_failed;
 * the writing functions return nothing, so the caller goes on as before,
 * and the store writes again from the next tick. */

struct store_config {
	const char *path;
	int keep_all;		  /* --keep=all: every record; else leaky */
	uint64_t retention_age;	  /* ns; 0: keep forever */
	uint64_t retention_bytes; /* database size; 0: no limit */
	uint32_t commit_ms;	  /* commit at least this often; 0: 200 */
	uint32_t commit_rows;	  /* ... or after this many rows; 0: 10000 */
	uint32_t retention_ms;	  /* start a retention pass this often;
				     0: every 5 s */
};

/* What the store knows of a connected process, owned by the caller.  Zero
 * it for a process the caller has not seen; pass the same one again when
 * that process reconnects. */
struct store_proc {
	int64_t id;	      /* processes.id */
	int64_t clock_offset; /* realtime - monotonic, from HELLO */
	/* The row's counters before the caller first saw the process (a
	 * restarted daemon), to which store_process_update adds its own. */
	uint64_t base_records, base_dropped, base_skipped;
	struct site_holds *site_holds; /* the sites it was given, let go
					  when it is finalised */
	/* The row's committed_watermark then: every record of the process
	 * with ts <= it was in the file, or in the update held for the row
	 * (a process finalised since the last commit); and its
	 * committed_position: the records of its stream before it were all
	 * there (-1: not known; 0 for a new row). */
	uint64_t base_watermark;
	int64_t base_position;
	/* How much of base_watermark is in the file now: what an ACK may
	 * say before the next commit (0: none known). */
	uint64_t base_acked;
};

struct store_process_info {
	const struct proto_hello *hello;
	pid_t pid; /* SO_PEERCRED */
	uid_t uid;
	gid_t gid;
};

struct store_stats {
	uint64_t rows_written;
	uint64_t rows_failed; /* not stored: disk full, I/O error */
	uint64_t commits;
	uint64_t retention_deleted;
	int degraded; /* the last write failed; retrying */
};

struct store;

/* NULL and a one-line reason in err when the file cannot be opened,
 * created, or is of a newer schema. */
struct store *store_open(const struct store_config *cfg, char *err,
			 size_t errlen);
void store_close(struct store *s); /* commits what is pending */

/* A HELLO arrived.  A known instance continues its row (connections+1),
 * as the update held for it says if it has one.  Commits at once, so
 * that the row exists before anything refers to it; when that fails, the
 * row (or its update) is held until a commit takes it; -1 when even that
 * fails for a new row. */
int store_process_open(struct store *s, const struct store_process_info *pi,
		       struct store_proc *out);
/* The process is gone (or its connection is): counters, model, error,
 * held until a commit holds them (also through a full disk).
 * The counters are the caller's totals since it first saw the process;
 * the watermark replaces the row's when higher, the position (the
 * records of the stream received, all of them stored; -1: unknown) the
 * row's; error and model NULL leave the row's as they are. */
void store_process_update(struct store *s, struct store_proc *p,
			  uint64_t records, uint64_t dropped,
			  uint64_t unknown_skipped, uint64_t watermark,
			  int64_t position, const char *error,
			  const struct rules_model *model, int disconnected);
/* The caller's rows that must commit with everything else: the hook runs
 * in the open transaction right before each COMMIT, and at each tick with
 * no transaction open (writing opens one).  It returns an SQLite result
 * code; an error fails the transaction.  After any rollback it runs with
 * STORE_HOOK_ROLLBACK: what it wrote is gone; after each COMMIT with
 * STORE_HOOK_COMMITTED: what it wrote is in the file. */
enum store_hook_event {
	STORE_HOOK_WRITE,
	STORE_HOOK_ROLLBACK,
	STORE_HOOK_COMMITTED
};
typedef int (*store_commit_hook)(struct store *s, enum store_hook_event ev,
				 void *arg);
void store_set_commit_hook(struct store *s, store_commit_hook hook, void *arg);
/* For the hook: the process row's counters (the caller's totals since it
 * first saw the process, as for store_process_update) and committed
 * watermark, in the open transaction or a new one.  Returns an SQLite
 * result code. */
int store_process_counts(struct store *s, const struct store_proc *p,
			 uint64_t records, uint64_t dropped,
			 uint64_t unknown_skipped, uint64_t watermark);
/* Returns sites.id for a SITE record; 0 on failure.  Records given to the
 * store carry sites.id in their site field: the caller translates the
 * client's site IDs with this before the records reach the rules. */
int64_t store_site(struct store *s, struct store_proc *p,
		   const struct proto_record *site);
void store_verdict(struct store *s, const struct store_proc *p,
		   const struct rules_verdict *v);
void store_finding(struct store *s, const struct store_proc *p,
		   const struct rules_finding *f);
void store_request(struct store *s, const struct store_proc *p,
		   const struct rules_request *rq);
void store_update(struct store *s, const struct store_proc *p,
		  const struct rules_update *u);
void store_dropped(struct store *s, const struct store_proc *p,
		   const struct proto_record *dropped);
/* A finalised process's what-if, right after its store_process_update: a
 * what_if row per nonzero count, and processes.what_if = 1 with that
 * update. */
struct whatif;
void store_what_if(struct store *s, const struct store_proc *p,
		   const struct whatif *w);
/* A finalised process ended without CLOSE, right after its
 * store_process_update: processes.vanished = 1 with that update. */
void store_process_vanished(struct store *s, const struct store_proc *p);
/* Commit when due; retention now and then.  Called from a timer. */
void store_tick(struct store *s);
void store_commit(struct store *s);
void store_stats(const struct store *s, struct store_stats *out);
/* The highest request id stored anywhere in the file (0: none), so that
 * the daemon-wide request_seq continues after a restart. */
uint64_t store_last_request_id(struct store *s);
/* Caps the file at its current size plus `extra` pages (PRAGMA
 * max_page_count), or lifts the cap (extra < 0): how the tests make the
 * disk full. */
void store_limit_pages(struct store *s, int64_t extra);

/* After each commit, ctxleakd's fleet outputs (fleet.c) are told what it
 * stored: the first leaks.id it wrote (0: no finding), how long it took
 * (its hook rows, summaries and the COMMIT) and when it ended. */
struct store_commit_info {
	int64_t first_finding; /* leaks.id; the commit's findings are those
				  from it on */
	uint64_t duration_ns;  /* CLOCK_MONOTONIC */
	int64_t wall_ns;       /* wall-clock ns at its end */
};
typedef void (*store_commit_observer)(struct store *s,
				      const struct store_commit_info *ci,
				      void *arg);
void store_set_commit_observer(struct store *s, store_commit_observer fn,
			       void *arg);

/* store_feed.c: what the fleet outputs read of the file.  A committed
 * finding as `ctxleak leaks --json` reads it (cli/cli_leaks.c): the leaks
 * row joined with its process and site, column by column. */
enum store_finding_col {
	SF_ID,
	SF_CLASS,
	SF_APP,
	SF_PID,
	SF_TID,
	SF_TS,
	SF_VICTIM_ID,
	SF_VICTIM_CTX,
	SF_VICTIM_NAME,
	SF_SOURCE_ID,
	SF_SOURCE_CTX,
	SF_SOURCE_NAME,
	SF_RECORD,
	SF_NAME,
	SF_VALUE,
	SF_CTX,
	SF_CAUSE,
	SF_OTHER,
	SF_PROCESS,
	SF_COLS
};
enum store_value_type { STORE_NULL, STORE_INT, STORE_TEXT };
struct store_value {
	enum store_value_type type;
	int64_t i;     /* STORE_INT */
	const char *s; /* STORE_TEXT: len bytes, any of them (client text) */
	size_t len;    /* STORE_TEXT: s's bytes */
};
struct store_finding_row {
	struct store_value col[SF_COLS]; /* by enum store_finding_col */
	const char *site;   /* "file:line func" as the CLI prints it; NULL:
			       none */
	const char *detail; /* the detail line, contexts named as below;
			       NULL: none */
};
/* Each finding with leaks.id >= first, in id order (commit order), to fn;
 * the row's strings last until fn returns.  The detail names a context
 * as the CLI does ("#ID" of its request, else its unsigned decimal
 * value), looking among the requests that began last rather than all of
 * them (store_feed.c).  An SQLite result code. */
typedef void (*store_finding_fn)(void *arg, const struct store_finding_row *f);
int store_committed_findings(struct store *s, int64_t first,
			     store_finding_fn fn, void *arg);
/* The file's totals that survive restarts, read cheaply (processes, runs
 * and drops are small tables): what the metrics report. */
struct store_totals {
	uint64_t records_stored;	       /* sum of processes.records */
	uint64_t records_dropped;	       /* sum of processes.dropped */
	uint64_t drop_windows;		       /* drops rows */
	uint64_t unclean_runs;		       /* runs.unclean */
	uint64_t vanished;		       /* processes.vanished */
	uint64_t findings[COMMON_CLASS_COUNT]; /* leaks by class, in the
						  order of common_class_names */
};
/* With findings counted (a scan of leaks: at start only, then the
 * caller adds what each commit stored) when with_findings. */
int store_totals(struct store *s, struct store_totals *out, int with_findings);
struct feed;
struct sqlite3;
struct feed *feed_new(struct sqlite3 *db);
void feed_free(struct feed *f);
int feed_findings(struct feed *f, int64_t first, store_finding_fn fn,
		  void *arg);
int feed_totals(struct feed *f, struct store_totals *out, int with_findings);

/* store_schema.c: creates or migrates the schema of an open connection.
 * -1 and a one-line reason when the file is not a ctxleak database or is
 * of a newer schema. */
struct sqlite3;
#define STORE_SCHEMA_VERSION COMMON_SCHEMA_VERSION
#define STORE_APPLICATION_ID COMMON_APPLICATION_ID
int store_schema_open(struct sqlite3 *db, const char *path, char *err,
		      size_t errlen);

/* store_sites.c: sites once per (file, line, function), and what
 * retention needs to know of them: which ones live processes hold (the
 * SQL function site_held(id)) and which ones a row names (sites.used). */
struct sites;
struct site_holds;
struct sites *sites_new(struct sqlite3 *db);
void sites_free(struct sites *ss);
/* sites.id of the site's key; 0 when it is not stored yet. */
int64_t sites_find(struct sites *ss, const struct proto_record *site);
/* 1 (and a log line once) when the process holds as many sites as one
 * may; it gets no more. */
int sites_full(struct site_holds *h, int64_t process_id);
/* The process holds the site from now on; -1 when out of memory. */
int sites_hold(struct sites *ss, struct site_holds **holds, int64_t id);
/* The process is finalised: it lets go of all its sites. */
void sites_release(struct sites *ss, struct site_holds **holds);
/* A row names the site (0: none); in the open transaction. */
void sites_used(struct sites *ss, uint64_t id);
/* The open transaction was rolled back, and sites.used with it. */
void sites_rolled_back(struct sites *ss);

/* store_check.c: PRAGMA quick_check of an open database within a bounded
 * time; damage is logged as a warning, and the store goes on. */
void store_quick_check(struct sqlite3 *db, const char *path);

/* store_lock.c: the lock that keeps a second daemon off the database,
 * held on DB-path ".lock" for as long as the returned descriptor is open;
 * -1 and a one-line reason (naming the database and the holder's pid)
 * when another daemon holds it. */
int store_lock(const char *db, char *err, size_t errlen);

/* store_runs.c: each daemon's run in the `runs` table.  runs_open marks
 * runs that never finished (a daemon that died) unclean, logs them, and
 * adds this one: its id, 0 when it could not.  runs_note_commit, in each
 * transaction, with the statement ST_RUN_COMMIT; runs_close at an orderly
 * stop. */
int64_t runs_open(struct sqlite3 *db);
struct sqlite3_stmt;
int runs_note_commit(struct sqlite3_stmt *st, int64_t id);
void runs_close(struct sqlite3 *db, int64_t id);

/* store_retain.c: retention by age and by size in bounded chunks, inside
 * the store's open transaction. */
struct retention;
struct retention *retention_new(struct sqlite3 *db);
void retention_free(struct retention *r);
/* One bounded step: deletes rows older than cutoff (wall-clock ns; 0: no
 * age limit) and, over max_bytes (0: no limit), the oldest rows until the
 * file is back under 90% of it.  Returns 1 when more remains to delete,
 * 0 when done, or a negative SQLite result code; *deleted counts rows. */
int retention_step(struct retention *r, int64_t cutoff, uint64_t max_bytes,
		   uint64_t *deleted);
/* Logs the rows deleted per table since the last report, if any, as
 * "retention <why> deleted ..." (then returns 1); the store calls it when
 * a pass ends. */
int retention_report(struct retention *r, const char *why);

/* store_summary.c: under --keep=leaky, requests with no finding counted
 * per process, minute, site and name (request_stats) instead of a row
 * each.  Counts gather in memory; the store flushes them into its open
 * transaction just before each commit. */
struct summaries;
struct summaries *summaries_new(struct sqlite3 *db);
void summaries_free(struct summaries *sm);
/* Counts a clean request that began at begin_wall (wall-clock ns):
 * sign 1 when it retires; -1 to take it back when a later finding gives it
 * a row (duration_max keeps it); 0 to add only rq's nrecords and late,
 * judged after it retired.  0 when counted, 1 when the table is full
 * (flush, then add again), -1 when out of memory. */
int summaries_add(struct summaries *sm, int64_t process_id, int64_t begin_wall,
		  const struct rules_request *rq, int sign);
/* Writes every key counted since the last flush or clear, then forgets
 * them all; the rows written, or a negative SQLite result code. */
int64_t summaries_flush(struct summaries *sm);
void summaries_clear(struct summaries *sm);
unsigned summaries_pending(const struct summaries *sm); /* keys counted */

/* ------------------------------------------------------------ whatif.c */

/* What the library-kept backends would have recorded in a process, and the
 * findings of the rules on that, counted per backend, class and site (the
 * what-if of docs/DESIGN.md).  Pure: no I/O. */
enum whatif_backend { WHATIF_THREAD, WHATIF_GLOBAL, WHATIF_TASK };
#define WHATIF_BACKENDS 3
struct whatif;
/* max_ended_scopes as the process's rules engine has it. */
struct whatif *whatif_new(uint32_t max_ended_scopes, uint64_t hash_seed);
void whatif_free(struct whatif *w);
/* Every record the rules engine judged, in the order it judged them. */
void whatif_record(struct whatif *w, const struct proto_record *rec);
/* An unclosed finding of the rules engine: the same under every backend. */
void whatif_unclosed(struct whatif *w, const struct proto_record *begin);
void whatif_totals(const struct whatif *w,
		   uint64_t out[WHATIF_BACKENDS][LEAK_CLASS_COUNT]);
typedef void (*whatif_row_fn)(void *arg, int backend, enum leak_class c,
			      uint32_t site, uint64_t count);
/* Each nonzero (backend, class, site) count; site 0: none, or past the
 * replay's bound on sites. */
void whatif_rows(const struct whatif *w, whatif_row_fn fn, void *arg);
/* Calls the replay could not follow (past its memory bounds): nonzero,
 * its counts are approximate. */
uint64_t whatif_approximate(const struct whatif *w);
const char *whatif_backend_name(int backend); /* "thread", ... */

/* ------------------------------------------------------------ server.c */

/* The listening socket: created at cfg.socket_path, or adopted from
 * systemd.  server_prepare, before the store opens, fails early when
 * another daemon listens there and removes a stale socket file;
 * server_listen then listens.  Both exit with a clear message on error. */
struct event_base;
void server_prepare(void);
void server_listen(struct event_base *base);
/* SIGTERM: stop accepting, read what clients already sent, finalise every
 * process.  The caller then commits and closes the store. */
void server_drain(void);
/* Live counters, one line, for sd_notify STATUS= and the log. */
void server_status(char *buf, size_t len);

/* ------------------------------------------------------------ conn.c */

/* Take a connected client socket; it is closed on EOF, error or bad
 * input.  Every connection holds at most one process. */
void conn_accept(struct event_base *base, int fd);
/* Read what the kernel holds for every connection now, then close them
 * all. */
void conn_drain_all(void);
/* The same at the end of an orderly stop, with a last ACK to each version
 * 2 connection for everything it sent before it closes. */
void conn_drain_final(void);
unsigned conn_count(void);
/* After a commit: each version 2 connection whose process's committed
 * watermark advanced gets an ACK. */
void conn_ack_all(void);

struct conn_stats {
	uint64_t accepted;
	uint64_t rejected;     /* over --max-connections */
	uint64_t proto_errors; /* connections closed for bad input */
	uint64_t partial_timeouts; /* ... of them, for a record left
				      incomplete past --partial-timeout */
	uint64_t records;      /* records received */
};
void conn_stats(struct conn_stats *out);
void conn_count_rejected(void);

/* ------------------------------------------------------------ ingest.c */

/* One connection's decoded messages into its process's rules engine and
 * store rows: the HELLO, SITE (the connection's own site IDs), DROPPED,
 * WATERMARK and records.  No sockets: the daemon's connections and the
 * fuzzer use it alike. */
struct ingest;
struct process;
struct ucred;
/* cred: the peer's, which the process is kept under.  NULL when out of
 * memory. */
struct ingest *ingest_open(const struct ucred *cred);
enum ingest_status {
	INGEST_OK,	 /* taken */
	INGEST_ATTACHED, /* a HELLO, now tied to its process: the client is
			    owed its RECEIPT, and ACKs if ingest_acks */
	INGEST_REFUSED	 /* the HELLO was not accepted: close */
};
/* A record's site is translated to sites.id in place. */
enum ingest_status ingest_message(struct ingest *in, struct proto_msg *msg);
/* The process the HELLO tied it to; NULL before. */
struct process *ingest_process(const struct ingest *in);
/* Attached by a version 2 HELLO: the client is told what is committed. */
int ingest_acks(const struct ingest *in);
/* The connection is gone (error NULL: cleanly); skipped: records of an
 * unknown type its decoder skipped.  The process lives on without it.
 * NULL does nothing. */
void ingest_close(struct ingest *in, const char *error, uint64_t skipped);

/* ------------------------------------------------------------ process.c */

/* A client process by instance ID: its rules engine and its store row.
 * It outlives its connections for cfg.linger so that a reconnection
 * continues it.  struct process is declared with ingest.c. */

/* Before the first connection: the store gives the last request id. */
void process_init(struct event_base *base, struct store *store);
/* A HELLO: find or create the process.  NULL when the store failed, or
 * when the instance is a live process of another uid. */
struct process *process_attach(const struct proto_hello *hello,
			       const struct ucred *cred);
/* The connection is gone (error NULL: cleanly).  skipped: records of an
 * unknown type the connection's decoder skipped. */
void process_detach(struct process *p, const char *error, uint64_t skipped);
int64_t process_site(struct process *p, const struct proto_record *site);
/* A version 2 HELLO's seq: the connection's cursor for process_record,
 * 1 + the stream position of its next record. */
uint64_t process_resume(struct process *p, uint64_t seq);
/* A record.  next: NULL for a version 1 connection, whose records are
 * all new; else the connection's cursor (0: it gave no seq), which this
 * advances: a record at a position the process has received already, on
 * this connection or on another one still being read, is dropped, and so
 * is one the process has already stored (by ts). */
void process_record(struct process *p, const struct proto_record *rec,
		    uint64_t *next);
/* The committed watermark the last commit made: what ACKs say. */
uint64_t process_committed(const struct process *p);
/* What its rules engine holds now, within the limits it was given. */
void process_rules_stats(const struct process *p, struct rules_stats *out);
void process_watermark(struct process *p, uint64_t ts);
/* The process said CLOSE: it shuts down cleanly.  A version 2 process
 * finalised without it vanished (store_process_vanished). */
void process_closed(struct process *p);
void process_dropped(struct process *p, const struct proto_record *rec);
/* The RECEIPT for a HELLO process_attach just took: what the daemon holds
 * of the process from before this connection (received while it runs;
 * after a restart, what was committed). */
void process_receipt(const struct process *p, struct proto_receipt *out);
/* Drain, with every connection read to its end: judge everything every
 * connected process sent and commit it, so that each connection can be
 * told (its last ACK) before it closes. */
void process_judge_connected(void);
/* Drain: finalise every process, lingering or not. */
void process_finalise_all(void);

struct process_stats {
	uint64_t live;	     /* processes in memory */
	uint64_t findings;   /* findings reported since start */
	uint64_t duplicates; /* records received again and dropped */
};
void process_stats(struct process_stats *out);

/* ------------------------------------------------------------ sdnotify.c */

/* systemd integration; every call does nothing without systemd. */
int sdnotify_listen_fd(void); /* the socket systemd passed, or -1 */
void sdnotify_start(struct event_base *base); /* watchdog, STATUS= timers */
void sdnotify_ready(void);
void sdnotify_stopping(void);

/* ------------------------------------------------------------ fleet.c */

/* What fleets already run gets the daemon's findings: --findings-log
 * (fleet_log.c), --findings-journal (fleet_journal.c) and --metrics-file,
 * all fed after each commit from what it stored.  fleet_open after the
 * store opens; fleet_close after the last commit, before store_close. */
void fleet_open(struct event_base *base, struct store *store);
void fleet_close(void);
void fleet_reopen(void); /* SIGHUP: reopen the findings log */

/* fleet_log.c: a growing buffer, the CLI's JSON string escaping, the JSON
 * line of a finding, and the findings log file with its rotation. */
struct fleet_buf {
	char *p;	 /* NUL-terminated; NULL until something is put */
	size_t len, cap; /* bytes used (without the NUL), allocated */
	int oom;	 /* an allocation failed: what came after is lost */
};
void fleet_buf_put(struct fleet_buf *b, const char *s, size_t n);
void fleet_buf_puts(struct fleet_buf *b, const char *s);
void fleet_buf_free(struct fleet_buf *b);
/* s as valid UTF-8: each invalid byte as U+FFFD. */
void fleet_buf_utf8(struct fleet_buf *b, const char *s, size_t len);
/* s as a quoted JSON string, as cli/cli_out.c writes one. */
void fleet_buf_json_str(struct fleet_buf *b, const char *s, size_t len);
char *fleet_rfc3339(int64_t ns, char *buf, size_t len);
/* One line, '\n' included; machine_id NULL: not known. */
void fleet_finding_json(struct fleet_buf *b, const struct store_finding_row *f,
			const char *host, const char *machine_id);
struct fleet_log_stats {
	uint64_t lines_written; /* whole lines appended */
	uint64_t lines_failed;	/* not written: disk full, out of memory */
	uint64_t rotations;	/* FILE renamed to FILE.1 */
};
/* -1 (errno) when FILE cannot be opened. */
int fleet_log_open(const char *path, uint64_t max_size, uint32_t keep);
void fleet_log_reopen(void);
void fleet_log_add(const struct store_finding_row *f, const char *host,
		   const char *machine_id);
void fleet_log_flush(void); /* appends what the commit added */
void fleet_log_close(void);
void fleet_log_stats(struct fleet_log_stats *out);

/* fleet_journal.c: each finding as a structured journal entry, spoken
 * in journald's native protocol on a non-blocking socket, with a bounded
 * queue, so that a slow journal never stops the event loop. */
#define FLEET_JOURNAL_SOCKET "/run/systemd/journal/socket"
#define FLEET_JOURNAL_ENV    "CTXLEAKD_JOURNAL_SOCKET" /* overrides it */
/* The MESSAGE_ID of every finding's entry (journalctl MESSAGE_ID=...). */
#define FLEET_MESSAGE_ID "378e9d4ef4324d278d4f741892a5677a"
void fleet_journal_open(struct event_base *base);
void fleet_journal_add(const struct store_finding_row *f, const char *host);
void fleet_journal_close(void); /* sends what it can without waiting */
struct fleet_journal_stats {
	uint64_t sent;	  /* entries the journal's socket took */
	uint64_t dropped; /* the queue was full, or the journal absent */
};
void fleet_journal_stats(struct fleet_journal_stats *out);

/* ------------------------------------------------------------ ctxleakd.c */

struct config {
	const char *socket_path;
	const char *db_path;
	const char *log_path; /* NULL: stderr */
	int keep_all;
	int what_if; /* replay each process under every backend */
	enum log_level log_level;
	unsigned max_connections;
	uint32_t max_open_scopes;
	uint64_t max_open_scopes_total; /* all processes together; 0: none */
	uint32_t max_ended_scopes;
	uint64_t max_ended_scopes_total; /* all processes together; 0: none */
	uint64_t max_request_age;	 /* ns */
	uint64_t max_held;		 /* bytes of records held, all processes
					    together (--keep=leaky); 0: no limit */
	uint64_t max_pending;		 /* bytes of records waiting for a
					    watermark, all processes together;
					    0: no limit */
	uint64_t retention_age;		 /* ns */
	uint64_t retention_bytes;
	uint64_t linger; /* ns a disconnected process waits for a
			    reconnection before it is finalised */
	uint64_t partial_timeout; /* ns a record may stay incomplete
				     before its connection is closed;
				     0: for ever */
	struct proto_limits limits;
	/* fleet.c's outputs */
	const char *findings_log;	/* NULL: none */
	uint64_t findings_log_max_size; /* bytes; rotate before passing */
	uint32_t findings_log_keep;	/* rotated files kept */
	int findings_journal;		/* send each finding to the journal */
	const char *host;		/* NULL: common_host_name */
	const char *metrics_file;	/* NULL: none */
	uint64_t metrics_interval;	/* ns between metrics writes, at most */
};

extern struct config cfg;

#endif /* CTXLEAKD_H */
