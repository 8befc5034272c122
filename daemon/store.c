/*
 * store.c: the SQLite store of ctxleakd, the only module that speaks SQL.
 *
 * Everything the rules produce is written through prepared statements into
 * one open transaction, committed every commit_ms or commit_rows rows from
 * store_tick: batching is what makes SQLite fast enough to take every
 * record under --keep=all.  Under --keep=leaky only records of requests
 * involved in a finding are kept, and the other requests are counted per
 * minute (store_summary.c) rather than written a row each.
 *
 * A write that fails for want of space or because of an I/O error must not
 * take the daemon down: the transaction is rolled back, its rows are
 * counted as failed, the store is marked degraded (logged once per
 * episode, and at most once a minute when a nearly full disk flaps), rows are
 * refused until the next tick, and from then on writing resumes as normal; the
 * first commit of rows that succeeds ends the episode (enum store_state).
 * Process rows are the exception: a new process's row, a reconnection's
 * update of it and a finalised process's counters are held in memory until
 * a commit holds them, since nothing else could say them again.  What is
 * held of a row is the row's truth until then: a process that connects
 * again reads its row through it (store_process_open), so that it
 * continues from what it sent, not from the last commit.
 *
 * Schema and migrations: store_schema.c; retention: store_retain.c; the
 * contract with the people and the CLI that read the file: SCHEMA.md.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "ctxleakd.h"

#define DEFAULT_COMMIT_MS    200
#define DEFAULT_COMMIT_ROWS  10000
#define DEFAULT_RETENTION_MS 5000
/* Readers never block the writer under WAL; only another writer (someone's
 * sqlite3 shell) can, and waiting for it stalls the event loop: past this,
 * the batch fails like a full disk and is retried on later ticks. */
#define BUSY_TIMEOUT_MS 1000
/* A disk that is nearly full flaps: a small commit fits, the next does
 * not.  Episodes that begin within this long of the last one logged are
 * counted, not logged, and the next one logged says how many there were. */
#define EPISODE_LOG_GAP_NS (60 * 1000000000ull)
/* Retention says what it deleted at most this often. */
#define RETENTION_LOG_NS (60 * 1000000000ull)

enum {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_RECORD,
	ST_LEAK,
	ST_REQUEST,
	ST_UPDATE,
	ST_TAG,
	ST_DROP,
	ST_SITE,
	ST_PROC_FIND,
	ST_PROC_INSERT,
	ST_PROC_RECONNECT,
	ST_PROC_UPDATE,
	ST_SAVE_RID,
	ST_RUN_COMMIT,
	ST_WHAT_IF,
	NSTMT
};

static const char *const sql[NSTMT] = {
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_RECORD] = "INSERT INTO records(process_id, request_id, "
		  "ctx_request_id, type, ts, tid, ctx, cause, other, "
		  "name, value, site_id, leak, late) "
		  "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
		  "?12, ?13, ?14)",
    [ST_LEAK] = "INSERT INTO leaks(process_id, class, ts, tid, "
		"victim_request_id, victim_ctx, victim_name, "
		"source_request_id, source_ctx, source_name, record, ctx, "
		"cause, other, name, value, site_id, detail) "
		"VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
		"?13, ?14, ?15, ?16, ?17, ?18)",
    [ST_REQUEST] = "INSERT INTO requests(id, process_id, ctx, name, "
		   "site_id, begin_ts, end_ts, begin_tid, threads, scopes, "
		   "records, leaks, lost, stale, bleed, overlap, misnest, "
		   "unclosed, source_of, tags_dropped, records_not_kept, "
		   "late) "
		   "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, "
		   "?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
    /* What was judged about a request after it retired. */
    [ST_UPDATE] = "UPDATE requests SET records = records + ?2, "
		  "leaks = leaks + ?3, lost = lost + ?4, stale = stale + ?5, "
		  "bleed = bleed + ?6, overlap = overlap + ?7, "
		  "misnest = misnest + ?8, unclosed = unclosed + ?9, "
		  "source_of = source_of + ?10, late = late + ?11 "
		  "WHERE id = ?1",
    [ST_TAG] = "INSERT INTO tags(request_id, key, value, ts, tid, site_id, "
	       "setter_request_id, setter_ctx) "
	       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_DROP] = "INSERT INTO drops(process_id, since_ts, until_ts, count) "
		"VALUES(?1, ?2, ?3, ?4)",
    [ST_SITE] = "INSERT INTO sites(id, process_id, file, line, func) "
		"VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_PROC_FIND] = "SELECT id, records, dropped, unknown_skipped, "
		     "committed_watermark, committed_position "
		     "FROM processes WHERE instance = ?1",
    /* ?1..?10 are bound alike for both. */
    [ST_PROC_INSERT] = "INSERT INTO processes(id, instance, pid, "
		       "hello_pid, uid, gid, app, backend, "
		       "backend_reason, client, connected_at) "
		       "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
		       "?11)",
    [ST_PROC_RECONNECT] = "UPDATE processes SET "
			  "connections = connections + 1, "
			  "disconnected_at = NULL, "
			  "committed_position = NULL, vanished = 0, "
			  "pid = ?3, "
			  "hello_pid = ?4, uid = ?5, gid = ?6, app = ?7, "
			  "backend = ?8, backend_reason = ?9, client = ?10 "
			  "WHERE id = ?1 AND instance = ?2",
    [ST_PROC_UPDATE] = "UPDATE processes SET records = ?2, dropped = ?3, "
		       "unknown_skipped = ?4, error = coalesce(?5, error), "
		       "model = coalesce(?6, model), "
		       "recommend = coalesce(?7, recommend), "
		       "model_evidence = coalesce(?8, model_evidence), "
		       "disconnected_at = coalesce(?9, disconnected_at), "
		       "committed_watermark = "
		       "max(committed_watermark, ?10), "
		       "committed_position = "
		       "coalesce(?11, committed_position), "
		       "what_if = max(what_if, ?12), "
		       "vanished = max(vanished, ?13) "
		       "WHERE id = ?1",
    [ST_SAVE_RID] = "INSERT OR REPLACE INTO meta(key, value) "
		    "VALUES('last_request_id', ?1)",
    [ST_RUN_COMMIT] = "UPDATE runs SET last_commit_at = ?1 WHERE id = ?2",
    [ST_WHAT_IF] = "INSERT INTO what_if(process_id, backend, class, "
		   "site_id, count) VALUES(?1, ?2, ?3, ?4, ?5)",
};

/*
 * The store's failure state: an episode runs from a failed write to the
 * first commit of rows after it.  Each transition, and the function that
 * makes it:
 *
 *   WRITING  --txn_failed-->          REFUSING  rolled back; logged (at
 *                                               most once a minute)
 *   REFUSING --txn_failed-->          REFUSING
 *   REFUSING --store_tick,
 *              store_process_open-->  RETRYING  rows may be tried again
 *   RETRYING --txn_failed-->          REFUSING  the same episode: not logged
 *   REFUSING,
 *   RETRYING --txn_commit of rows-->  WRITING   the disk takes writes again
 *
 * REFUSING counts every row as failed without trying it, so that a full
 * disk costs one failed write per tick, not one per row.  store_stats says
 * degraded in REFUSING and RETRYING.  Whether a transaction is open
 * (in_txn) is apart from this: process rows and retention open one in any
 * state.  A process row or update that cannot be written stays held, in
 * any state, until a commit takes it.
 */
enum store_state {
	STORE_WRITING,
	STORE_REFUSING,
	STORE_RETRYING,
};

/* A process row that could not be written when its HELLO came (a full
 * disk), with copies of its strings: written with the next transaction
 * that commits, in the order the HELLOs came.  Meanwhile the process is
 * served, and what it sends is stored or counted as failed like everyone
 * else's rows: refusing its HELLO lost what it sent without a count on
 * either side.  A reconnection's update of its row is held the same way:
 * without it the row would say, once the finalised process's update is
 * written, that a live process is disconnected with a committed position,
 * which a restarted daemon would take for where its stream ended. */
struct held_process {
	struct held_process *next;
	int64_t id, connected_at;
	int reconnect; /* ST_PROC_RECONNECT of a row written before (or
			  held before it); else ST_PROC_INSERT */
	struct proto_hello hello;
	pid_t pid;
	uid_t uid;
	gid_t gid;
	char strings[];
};

/* What ST_PROC_UPDATE writes: counters always, the rest when not NULL
 * (0).  A finalised process's is held until a commit holds it, because
 * the process is gone and cannot say it again; it is written at commit,
 * after the rows it counts.  One per process: a later one is merged into
 * it as the row would take both, in order.  Until it is written it is the
 * row's truth, which store_process_open reads through it: a process that
 * reconnects within the commit interval continues from what it sent, not
 * from the last commit (else what it sends again is stored twice). */
struct process_update {
	struct process_update *next;
	int64_t id, disconnected_at; /* 0: still connected */
	uint64_t records, dropped, skipped;
	uint64_t watermark; /* committed_watermark; it only grows */
	int64_t position;   /* committed_position; -1: the row's stays */
	char *error, *model, *recommend, *evidence;
	int what_if;  /* its what_if rows are written */
	int vanished; /* it ended without CLOSE (store_process_vanished) */
};

struct store {
	sqlite3 *db;
	int lock_fd; /* store_lock.c; -1: none (in memory) */
	sqlite3_stmt *st[NSTMT];
	struct retention *retention;
	struct summaries *summaries; /* clean requests under --keep=leaky */
	struct sites *sites;	     /* which sites are held and used */
	int keep_all;
	int64_t retention_age;
	uint64_t retention_bytes;
	uint64_t commit_ns, retention_ns;
	uint32_t commit_rows;

	int in_txn;
	uint64_t txn_start; /* CLOCK_MONOTONIC ns */
	uint64_t pending;   /* rows written in the open transaction */
	uint64_t pending_deleted;
	/* Writing a request's rows, which commit together or not at all. */
	int in_request;
	enum store_state state;
	int row_error_logged;
	int episode_logged;	 /* the current episode was logged */
	uint64_t episode_log_at; /* CLOCK_MONOTONIC ns of that log line */
	unsigned episodes_quiet; /* episodes since, not logged */

	uint64_t next_retention; /* CLOCK_MONOTONIC ns */
	int retention_more;
	uint64_t retention_logged_at; /* CLOCK_MONOTONIC ns; 0: never */

	/* Ids are assigned here rather than by SQLite: SQLite would hand a
	 * rolled-back id out again while the caller still holds it. */
	int64_t last_process_id, last_site_id;
	uint64_t last_rid, saved_rid;

	int64_t run_id; /* this daemon's row in runs (store_runs.c) */
	store_commit_hook hook;
	void *hook_arg;
	/* Told of each commit (ctxleakd's --findings-log, --metrics-file):
	 * store_feed.c reads what it stored. */
	store_commit_observer observer;
	void *observer_arg;
	struct feed *feed;
	/* leaks.id of the open transaction's first finding; 0: none yet. */
	int64_t txn_first_leak;
	struct held_process *held_procs; /* rows the disk refused at HELLO */
	struct process_update *held_updates; /* finalised processes' counters */

	struct store_stats stats;
};

static uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The client's monotonic ts on the wall clock.  Unsigned arithmetic: the
 * sum is what counts, and no overflow is undefined. */
static int64_t wall_ts(const struct store_proc *p, uint64_t ts)
{
	return (int64_t)(ts + (uint64_t)p->clock_offset);
}

/* ------------------------------------------------------------ binding */

/* ctx values and ids are unsigned 64-bit: stored with the same bits. */
static void bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
	sqlite3_bind_int64(st, i, (int64_t)v);
}

/* 0 means "none" for ids, sites and optional ctx values. */
static void bind_opt(sqlite3_stmt *st, int i, uint64_t v)
{
	if (v == 0)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_int64(st, i, (int64_t)v);
}

/* Strings are bound without copy: every statement is stepped before the
 * function that binds it returns. */
static void bind_str(sqlite3_stmt *st, int i, struct proto_str s)
{
	if (s.ptr == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, s.ptr, (int)s.len, SQLITE_STATIC);
}

static void bind_cstr(sqlite3_stmt *st, int i, const char *s)
{
	if (s == NULL)
		sqlite3_bind_null(st, i);
	else
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

/* The type-specific columns a record and a leak share: other (BEGIN's
 * prev, END's cur) at i, name (BEGIN/EVENT name, TAG key) at i + 1 and
 * value (TAG value, EVENT message) at i + 2. */
static void bind_fields(sqlite3_stmt *st, int i, const struct proto_record *r)
{
	struct proto_str none = {NULL, 0};
	struct proto_str name = none, value = none;

	switch (r->type) {
	case PROTO_BEGIN:
		bind_u64(st, i, r->prev);
		name = r->name;
		break;
	case PROTO_END:
		bind_u64(st, i, r->cur);
		break;
	case PROTO_TAG:
		sqlite3_bind_null(st, i);
		name = r->key;
		value = r->value;
		break;
	case PROTO_EVENT:
		sqlite3_bind_null(st, i);
		name = r->name;
		value = r->message;
		break;
	default:
		sqlite3_bind_null(st, i);
	}
	bind_str(st, i + 1, name);
	bind_str(st, i + 2, value);
}

static const char *class_or_null(enum leak_class c)
{
	return c == LEAK_NONE ? NULL : leak_class_name(c);
}

static void note_rid(struct store *s, uint64_t rid)
{
	if (rid > s->last_rid)
		s->last_rid = rid;
}

/* ------------------------------------------------------------ transactions */

static int is_row_error(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
	case SQLITE_TOOBIG:
	case SQLITE_MISMATCH:
	case SQLITE_RANGE:
		return 1;
	}
	return 0;
}

static void episode_begins(struct store *s, int rc, uint64_t lost,
			   const char *what)
{
	uint64_t now = clock_ns(CLOCK_MONOTONIC);
	char quiet[64] = "";

	s->episode_logged = s->episode_log_at == 0 ||
			    now - s->episode_log_at >= EPISODE_LOG_GAP_NS;
	if (!s->episode_logged) {
		s->episodes_quiet++;
		return;
	}
	if (s->episodes_quiet > 0)
		snprintf(quiet, sizeof quiet,
			 " (and %u times since the last report)",
			 s->episodes_quiet);
	log_error("store: %s failed: %s; %llu rows not stored, retrying on "
		  "later ticks%s",
		  what, sqlite3_errstr(rc), (unsigned long long)lost, quiet);
	s->episode_log_at = now;
	s->episodes_quiet = 0;
}

/* The open transaction is lost: `extra` rows beyond those pending were
 * being written when it failed. */
static void txn_failed(struct store *s, int rc, uint64_t extra,
		       const char *what)
{
	uint64_t lost = s->pending + extra;

	if (!sqlite3_get_autocommit(s->db)) {
		sqlite3_step(s->st[ST_ROLLBACK]);
		sqlite3_reset(s->st[ST_ROLLBACK]);
	}
	s->in_txn = 0;
	s->pending = 0;
	s->pending_deleted = 0;
	s->txn_first_leak = 0;
	s->stats.rows_failed += lost;
	if (s->state == STORE_WRITING)
		episode_begins(s, rc, lost, what);
	s->state = STORE_REFUSING;
	sites_rolled_back(s->sites);
	if (s->hook != NULL)
		s->hook(s, STORE_HOOK_ROLLBACK, s->hook_arg);
}

static int txn_begin(struct store *s)
{
	int rc;

	assert(!s->in_txn); /* one transaction open at a time */
	rc = sqlite3_step(s->st[ST_BEGIN]);

	sqlite3_reset(s->st[ST_BEGIN]);
	if (rc != SQLITE_DONE) {
		txn_failed(s, rc, 0, "begin");
		return -1;
	}
	s->in_txn = 1;
	s->txn_start = clock_ns(CLOCK_MONOTONIC);
	return 0;
}

static int step_once(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	sqlite3_reset(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The highest request id goes into the file with the rows that use it. */
static int save_last_rid(struct store *s)
{
	if (s->last_rid == s->saved_rid)
		return SQLITE_OK;
	bind_u64(s->st[ST_SAVE_RID], 1, s->last_rid);
	return step_once(s->st[ST_SAVE_RID]);
}

static int run_hook(struct store *s)
{
	return s->hook != NULL ? s->hook(s, STORE_HOOK_WRITE, s->hook_arg)
			       : SQLITE_OK;
}

/* The summaries counted so far go into the transaction they are
 * committed with; if it fails, its rows count as not stored with them. */
static int write_summaries(struct store *s)
{
	unsigned keys = summaries_pending(s->summaries);
	int64_t n;

	if (keys == 0)
		return SQLITE_OK;
	n = summaries_flush(s->summaries);
	s->pending += n < 0 ? keys : (uint64_t)n;
	return n < 0 ? (int)-n : SQLITE_OK;
}

/* ------------------------------------------------------------ held rows */

/* Binds ?1..?10 of ST_PROC_INSERT and ST_PROC_RECONNECT. */
static void bind_process(sqlite3_stmt *st, int64_t id,
			 const struct store_process_info *pi)
{
	const struct proto_hello *h = pi->hello;

	sqlite3_bind_int64(st, 1, id);
	bind_u64(st, 2, h->instance);
	sqlite3_bind_int64(st, 3, pi->pid);
	if (h->pid == (uint32_t)pi->pid)
		sqlite3_bind_null(st, 4);
	else
		sqlite3_bind_int64(st, 4, h->pid);
	sqlite3_bind_int64(st, 5, pi->uid);
	sqlite3_bind_int64(st, 6, pi->gid);
	bind_str(st, 7, h->app);
	bind_str(st, 8, h->backend);
	bind_str(st, 9, h->reason);
	bind_str(st, 10, h->client);
}

/* The held new row of an instance, or NULL. */
static struct held_process *held_insert_of(struct store *s, uint64_t instance)
{
	struct held_process *h;

	for (h = s->held_procs;
	     h != NULL && (h->reconnect || h->hello.instance != instance);
	     h = h->next)
		;
	return h;
}

/* Appended: a reconnection's update comes after the insert it updates. */
static int hold_process(struct store *s, int64_t id, int reconnect,
			const struct store_process_info *pi,
			int64_t connected_at)
{
	const struct proto_hello *h = pi->hello;
	struct held_process *p =
	    malloc(sizeof(*p) + h->app.len + h->backend.len + h->reason.len +
		   h->client.len);
	struct held_process **tail;
	char *at;

	if (p == NULL)
		return -1;
	p->id = id;
	p->reconnect = reconnect;
	p->connected_at = connected_at;
	p->hello = *h;
	at = p->strings;
	proto_str_move(&p->hello.app, &at);
	proto_str_move(&p->hello.backend, &at);
	proto_str_move(&p->hello.reason, &at);
	proto_str_move(&p->hello.client, &at);
	p->pid = pi->pid;
	p->uid = pi->uid;
	p->gid = pi->gid;
	p->next = NULL;
	for (tail = &s->held_procs; *tail != NULL; tail = &(*tail)->next)
		;
	*tail = p;
	return 0;
}

/* The held process rows, new ones and reconnections, in their order. */
static int write_held_inserts(struct store *s)
{
	struct held_process *h;
	int rc;

	for (h = s->held_procs; h != NULL; h = h->next) {
		struct store_process_info pi = {&h->hello, h->pid, h->uid,
						h->gid};
		sqlite3_stmt *st =
		    s->st[h->reconnect ? ST_PROC_RECONNECT : ST_PROC_INSERT];

		bind_process(st, h->id, &pi);
		if (!h->reconnect)
			sqlite3_bind_int64(st, 11, h->connected_at);
		if ((rc = step_once(st)) != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

static char *dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;
}

static void process_update_free(struct process_update *u)
{
	free(u->error);
	free(u->model);
	free(u->recommend);
	free(u->evidence);
	free(u);
}

/* The update held for a process row, or NULL. */
static struct process_update *pending_update_of(struct store *s, int64_t id)
{
	struct process_update *u;

	for (u = s->held_updates; u != NULL && u->id != id; u = u->next)
		;
	return u;
}

/* A string of a later update replaces the earlier one's; NULL keeps it,
 * as coalesce() in ST_PROC_UPDATE does. */
static void merge_str(char **to, char **from)
{
	if (*from == NULL)
		return;
	free(*to);
	*to = *from;
	*from = NULL;
}

/* The later update `from` merged into `to`, held before it: what the row
 * would hold after both.  from keeps no string. */
static void merge_update(struct process_update *to, struct process_update *from)
{
	to->records = from->records;
	to->dropped = from->dropped;
	to->skipped = from->skipped;
	if (from->watermark > to->watermark)
		to->watermark = from->watermark;
	if (from->position >= 0)
		to->position = from->position;
	if (from->disconnected_at != 0)
		to->disconnected_at = from->disconnected_at;
	merge_str(&to->error, &from->error);
	merge_str(&to->model, &from->model);
	merge_str(&to->recommend, &from->recommend);
	merge_str(&to->evidence, &from->evidence);
	to->what_if |= from->what_if;
	to->vanished |= from->vanished;
}

static int write_process_update(struct store *s, const struct process_update *u)
{
	sqlite3_stmt *st = s->st[ST_PROC_UPDATE];

	sqlite3_bind_int64(st, 1, u->id);
	bind_u64(st, 2, u->records);
	bind_u64(st, 3, u->dropped);
	bind_u64(st, 4, u->skipped);
	bind_cstr(st, 5, u->error);
	bind_cstr(st, 6, u->model);
	bind_cstr(st, 7, u->recommend);
	bind_cstr(st, 8, u->evidence);
	if (u->disconnected_at != 0)
		sqlite3_bind_int64(st, 9, u->disconnected_at);
	else
		sqlite3_bind_null(st, 9);
	bind_u64(st, 10, u->watermark);
	if (u->position >= 0)
		sqlite3_bind_int64(st, 11, u->position);
	else
		sqlite3_bind_null(st, 11);
	sqlite3_bind_int(st, 12, u->what_if);
	sqlite3_bind_int(st, 13, u->vanished);
	return step_once(st);
}

static int write_held_updates(struct store *s)
{
	struct process_update *u;
	int rc;

	for (u = s->held_updates; u != NULL; u = u->next) {
		if ((rc = write_process_update(s, u)) != SQLITE_OK)
			return rc;
	}
	return SQLITE_OK;
}

static void free_held_processes(struct store *s)
{
	struct held_process *h;
	struct process_update *u;

	while ((h = s->held_procs) != NULL) {
		s->held_procs = h->next;
		free(h);
	}
	while ((u = s->held_updates) != NULL) {
		s->held_updates = u->next;
		process_update_free(u);
	}
}

static int txn_commit(struct store *s)
{
	uint64_t rid = s->last_rid;
	uint64_t start = clock_ns(CLOCK_MONOTONIC);
	struct store_commit_info ci;
	int rc;

	if (!s->in_txn)
		return 0;
	/* Process rows before anything else; finalised processes' counters
	 * after the live ones', which they supersede. */
	if ((rc = write_held_inserts(s)) == SQLITE_OK &&
	    (rc = run_hook(s)) == SQLITE_OK &&
	    (rc = write_held_updates(s)) == SQLITE_OK &&
	    (rc = write_summaries(s)) == SQLITE_OK &&
	    (rc = save_last_rid(s)) == SQLITE_OK &&
	    (rc = runs_note_commit(s->st[ST_RUN_COMMIT], s->run_id)) ==
		SQLITE_OK)
		rc = step_once(s->st[ST_COMMIT]);
	if (rc != SQLITE_OK) {
		txn_failed(s, rc, 0, "commit");
		return -1;
	}
	/* Only rows prove that the disk takes writes again: a transaction
	 * that only deleted may need no new page. */
	if (s->state != STORE_WRITING && s->pending > 0) {
		if (s->episode_logged)
			log_info("store: writing again; %llu rows could not be "
				 "stored",
				 (unsigned long long)s->stats.rows_failed);
		s->state = STORE_WRITING;
	}
	assert(sqlite3_get_autocommit(s->db)); /* the COMMIT closed it */
	s->in_txn = 0;
	s->saved_rid = rid;
	free_held_processes(s);
	s->stats.commits++;
	if (s->hook != NULL)
		s->hook(s, STORE_HOOK_COMMITTED, s->hook_arg);
	s->stats.rows_written += s->pending;
	s->stats.retention_deleted += s->pending_deleted;
	s->pending = 0;
	s->pending_deleted = 0;
	ci.first_finding = s->txn_first_leak;
	s->txn_first_leak = 0;
	if (s->observer != NULL) {
		ci.duration_ns = clock_ns(CLOCK_MONOTONIC) - start;
		ci.wall_ns = (int64_t)clock_ns(CLOCK_REALTIME);
		s->observer(s, &ci, s->observer_arg);
	}
	return 0;
}

/* Before binding a row: 0 when it can be written now. */
static int row_begin(struct store *s)
{
	if (s->state == STORE_REFUSING || (!s->in_txn && txn_begin(s) == -1)) {
		s->stats.rows_failed++;
		return -1;
	}
	return 0;
}

static int row_end(struct store *s, sqlite3_stmt *st)
{
	int rc;

	assert(s->in_txn && s->state != STORE_REFUSING); /* row_begin's */
	rc = sqlite3_step(st);

	sqlite3_reset(st);
	if (rc == SQLITE_DONE) {
		/* Before a commit this row may make: that commit's observer
		 * reads the transaction's findings from here on. */
		if (st == s->st[ST_LEAK] && s->txn_first_leak == 0)
			s->txn_first_leak = sqlite3_last_insert_rowid(s->db);
		if (++s->pending >= s->commit_rows && !s->in_request)
			txn_commit(s);
		return 0;
	}
	if (!is_row_error(rc)) {
		txn_failed(s, rc, 1, "insert");
		return -1;
	}
	/* A bad row, not a bad disk: the transaction goes on without it. */
	s->stats.rows_failed++;
	if (!s->row_error_logged)
		log_error("store: a row was refused: %s (later ones are only "
			  "counted)",
			  sqlite3_errmsg(s->db));
	s->row_error_logged = 1;
	return -1;
}

/* ------------------------------------------------------------ rows */

static void write_record(struct store *s, const struct store_proc *p,
			 const struct rules_verdict *v)
{
	sqlite3_stmt *st = s->st[ST_RECORD];
	const struct proto_record *r = v->rec;

	if (row_begin(s) == -1)
		return;
	note_rid(s, v->rid);
	note_rid(s, v->rid_ctx);
	sqlite3_bind_int64(st, 1, p->id);
	bind_opt(st, 2, v->rid);
	bind_opt(st, 3, v->rid_ctx);
	bind_cstr(st, 4, proto_type_name(r->type));
	sqlite3_bind_int64(st, 5, wall_ts(p, r->ts));
	bind_u64(st, 6, r->tid);
	bind_u64(st, 7, r->ctx);
	bind_u64(st, 8, r->cause);
	bind_fields(st, 9, r);
	bind_opt(st, 12, r->site);
	bind_cstr(st, 13, class_or_null(v->leak));
	bind_opt(st, 14, v->late);
	sites_used(s->sites, r->site);
	row_end(s, st);
}

void store_verdict(struct store *s, const struct store_proc *p,
		   const struct rules_verdict *v)
{
	if (s->keep_all || v->leak != LEAK_NONE || v->keep)
		write_record(s, p, v);
}

void store_finding(struct store *s, const struct store_proc *p,
		   const struct rules_finding *f)
{
	sqlite3_stmt *st = s->st[ST_LEAK];
	const struct proto_record *r = f->rec;

	if (row_begin(s) == -1)
		return;
	note_rid(s, f->victim_rid);
	note_rid(s, f->source_rid);
	sqlite3_bind_int64(st, 1, p->id);
	bind_cstr(st, 2, leak_class_name(f->leak));
	sqlite3_bind_int64(st, 3, wall_ts(p, r->ts));
	bind_u64(st, 4, r->tid);
	bind_opt(st, 5, f->victim_rid);
	bind_opt(st, 6, f->victim_ctx);
	bind_str(st, 7, f->victim_name);
	bind_opt(st, 8, f->source_rid);
	bind_opt(st, 9, f->source_ctx);
	bind_str(st, 10, f->source_name);
	bind_cstr(st, 11, proto_type_name(r->type));
	bind_u64(st, 12, r->ctx);
	bind_u64(st, 13, r->cause);
	bind_fields(st, 14, r);
	bind_opt(st, 17, r->site);
	bind_cstr(st, 18, f->detail);
	sites_used(s->sites, r->site);
	row_end(s, st);
}

static void write_tag(struct store *s, const struct rules_request *rq,
		      const struct store_proc *p, const struct rules_tag *t)
{
	sqlite3_stmt *st = s->st[ST_TAG];

	if (row_begin(s) == -1)
		return;
	note_rid(s, t->setter_rid);
	bind_u64(st, 1, rq->rid);
	bind_str(st, 2, t->key);
	bind_str(st, 3, t->value);
	sqlite3_bind_int64(st, 4, wall_ts(p, t->ts));
	bind_u64(st, 5, t->tid);
	bind_opt(st, 6, t->site);
	bind_opt(st, 7, t->setter_rid);
	bind_opt(st, 8, t->setter_ctx);
	sites_used(s->sites, t->site);
	row_end(s, st);
}

/* "4711 4712": the threads that ran the request's code. */
static void format_threads(const struct rules_request *rq, char *buf,
			   size_t len)
{
	uint32_t n =
	    rq->nthreads < RULES_MAX_THREADS ? rq->nthreads : RULES_MAX_THREADS;
	size_t off = 0;

	buf[0] = '\0';
	for (uint32_t i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(buf + off, len - off, "%s%llu",
					i ? " " : "",
					(unsigned long long)rq->threads[i]);
}

static void write_request(struct store *s, const struct store_proc *p,
			  const struct rules_request *rq)
{
	sqlite3_stmt *st = s->st[ST_REQUEST];
	char threads[RULES_MAX_THREADS * 21];
	uint64_t leaks = 0;

	if (row_begin(s) == -1)
		return;
	note_rid(s, rq->rid);
	for (int c = LEAK_NONE + 1; c < LEAK_CLASS_COUNT; c++)
		leaks += rq->victim_of[c];
	format_threads(rq, threads, sizeof threads);
	bind_u64(st, 1, rq->rid);
	sqlite3_bind_int64(st, 2, p->id);
	bind_u64(st, 3, rq->ctx);
	bind_str(st, 4, rq->name);
	bind_opt(st, 5, rq->site);
	sqlite3_bind_int64(st, 6, wall_ts(p, rq->begin_ts));
	if (rq->end_ts == 0)
		sqlite3_bind_null(st, 7);
	else
		sqlite3_bind_int64(st, 7, wall_ts(p, rq->end_ts));
	bind_u64(st, 8, rq->begin_tid);
	bind_cstr(st, 9, threads);
	sqlite3_bind_int64(st, 10, rq->nscopes);
	bind_u64(st, 11, rq->nrecords);
	bind_u64(st, 12, leaks);
	for (int c = LEAK_LOST; c <= LEAK_UNCLOSED; c++)
		sqlite3_bind_int64(st, 13 + c - LEAK_LOST, rq->victim_of[c]);
	sqlite3_bind_int64(st, 19, rq->source_of);
	sqlite3_bind_int64(st, 20, rq->tags_dropped);
	sqlite3_bind_int64(st, 21, rq->held_dropped);
	bind_u64(st, 22, rq->late);
	sites_used(s->sites, rq->site);
	row_end(s, st);
}

/* Under --keep=leaky a request no finding involves is only counted; its
 * held records go (store_summary.c says why).  sign as summaries_add's. */
static void count_clean(struct store *s, const struct store_proc *p,
			const struct rules_request *rq, int sign)
{
	int64_t begin = wall_ts(p, rq->begin_ts);
	int rc;

	if (row_begin(s) == -1)
		return;
	note_rid(s, rq->rid);
	sites_used(s->sites, rq->site);
	rc = summaries_add(s->summaries, p->id, begin, rq, sign);
	if (rc == 1) {
		/* Full: what was counted goes into the open transaction. */
		if ((rc = write_summaries(s)) != SQLITE_OK) {
			txn_failed(s, rc, 1, "summaries");
			return;
		}
		rc = summaries_add(s->summaries, p->id, begin, rq, sign);
	}
	if (rc != 0)
		s->stats.rows_failed++;
}

/* The process's counters already count the request's held records (see
 * process.c): a commit between its rows would, after a crash, leave the
 * row saying the file holds records it does not. */
void store_request(struct store *s, const struct store_proc *p,
		   const struct rules_request *rq)
{
	if (!s->keep_all && !rules_request_involved(rq)) {
		count_clean(s, p, rq, 1);
		return;
	}
	s->in_request = 1;
	write_request(s, p, rq);
	for (uint32_t i = 0; i < rq->ntags; i++)
		write_tag(s, rq, p, &rq->tags[i]);
	for (size_t i = 0; rq->held != NULL && i < rq->nheld; i++)
		write_record(s, p, &rq->held[i]);
	s->in_request = 0;
	if (s->in_txn && s->pending >= s->commit_rows)
		txn_commit(s);
}

static void write_update(struct store *s, const struct rules_update *u)
{
	sqlite3_stmt *st = s->st[ST_UPDATE];
	uint64_t leaks = 0;

	if (row_begin(s) == -1)
		return;
	for (int c = LEAK_NONE + 1; c < LEAK_CLASS_COUNT; c++)
		leaks += u->victim_of[c];
	bind_u64(st, 1, u->rid);
	bind_u64(st, 2, u->records);
	bind_u64(st, 3, leaks);
	for (int c = LEAK_LOST; c <= LEAK_UNCLOSED; c++)
		sqlite3_bind_int64(st, 4 + c - LEAK_LOST, u->victim_of[c]);
	sqlite3_bind_int64(st, 10, u->source_of);
	bind_u64(st, 11, u->late);
	row_end(s, st);
}

/* What was judged about a request after it retired: added to its row.
 * A request that retired clean and is named by a finding now gets its
 * row, and leaves the counts of clean requests, which held it: a request
 * is counted in exactly one of the two.  One still clean adds its late
 * records to those counts. */
void store_update(struct store *s, const struct store_proc *p,
		  const struct rules_update *u)
{
	struct rules_request more;

	if (u->row != NULL) {
		s->in_request = 1;
		write_request(s, p, u->row);
		if (!s->keep_all && u->counted != NULL)
			count_clean(s, p, u->counted, -1);
		s->in_request = 0;
		if (s->in_txn && s->pending >= s->commit_rows)
			txn_commit(s);
	} else if (u->counted != NULL) {
		if (s->keep_all)
			return;
		more = *u->counted;
		more.nrecords = u->records;
		more.late = u->late;
		count_clean(s, p, &more, 0);
	} else {
		write_update(s, u);
	}
}

void store_dropped(struct store *s, const struct store_proc *p,
		   const struct proto_record *dropped)
{
	sqlite3_stmt *st = s->st[ST_DROP];

	if (row_begin(s) == -1)
		return;
	sqlite3_bind_int64(st, 1, p->id);
	sqlite3_bind_int64(st, 2, wall_ts(p, dropped->since));
	sqlite3_bind_int64(st, 3, wall_ts(p, dropped->ts));
	bind_u64(st, 4, dropped->count);
	row_end(s, st);
}

/* Where whatif_rows writes. */
struct what_if_dest {
	struct store *s;
	const struct store_proc *p;
};

static void write_what_if(void *arg, int backend, enum leak_class c,
			  uint32_t site, uint64_t count)
{
	struct what_if_dest *d = arg;
	struct store *s = d->s;
	const struct store_proc *p = d->p;
	sqlite3_stmt *st = s->st[ST_WHAT_IF];

	if (row_begin(s) == -1)
		return;
	sqlite3_bind_int64(st, 1, p->id);
	bind_cstr(st, 2, whatif_backend_name(backend));
	bind_cstr(st, 3, leak_class_name(c));
	bind_opt(st, 4, site);
	bind_u64(st, 5, count);
	row_end(s, st);
}

void store_what_if(struct store *s, const struct store_proc *p,
		   const struct whatif *w)
{
	struct what_if_dest d = {s, p};
	struct process_update *u;

	whatif_rows(w, write_what_if, &d);
	/* The mark rides with the process's final update, held like it
	 * until a commit holds it. */
	if ((u = pending_update_of(s, p->id)) != NULL)
		u->what_if = 1;
}

void store_process_vanished(struct store *s, const struct store_proc *p)
{
	struct process_update *u = pending_update_of(s, p->id);

	/* Rides with the process's final update, as the what-if mark. */
	if (u != NULL)
		u->vanished = 1;
}

/* A site seen before, by this process or any other, keeps its row and id
 * (store_sites.c). */
int64_t store_site(struct store *s, struct store_proc *p,
		   const struct proto_record *site)
{
	sqlite3_stmt *st = s->st[ST_SITE];
	int64_t id;

	if (sites_full(p->site_holds, p->id) || row_begin(s) == -1)
		return 0;
	if ((id = sites_find(s->sites, site)) == 0) {
		id = s->last_site_id + 1;
		sqlite3_bind_int64(st, 1, id);
		sqlite3_bind_int64(st, 2, p->id);
		bind_str(st, 3, site->file);
		sqlite3_bind_int64(st, 4, site->line);
		bind_str(st, 5, site->func);
		if (row_end(s, st) == -1)
			return 0;
		s->last_site_id = id;
	}
	if (sites_hold(s->sites, &p->site_holds, id) == -1)
		return 0;
	return id;
}

/* ------------------------------------------------------------ processes */

/* The row of an instance, with its counters as base, or 0. */
static int64_t find_process(struct store *s, uint64_t instance,
			    struct store_proc *base)
{
	sqlite3_stmt *st = s->st[ST_PROC_FIND];
	int64_t id = 0;

	bind_u64(st, 1, instance);
	if (sqlite3_step(st) == SQLITE_ROW) {
		id = sqlite3_column_int64(st, 0);
		base->base_records = (uint64_t)sqlite3_column_int64(st, 1);
		base->base_dropped = (uint64_t)sqlite3_column_int64(st, 2);
		base->base_skipped = (uint64_t)sqlite3_column_int64(st, 3);
		base->base_watermark = (uint64_t)sqlite3_column_int64(st, 4);
		base->base_position = sqlite3_column_type(st, 5) == SQLITE_NULL
					  ? -1
					  : sqlite3_column_int64(st, 5);
	}
	sqlite3_reset(st);
	return id;
}

/* Written and committed at once: nothing may refer to a process row that
 * is not there.  -1 when that failed (counted as a failed row). */
static int write_process(struct store *s, int64_t id,
			 const struct store_process_info *pi,
			 int64_t connected_at)
{
	sqlite3_stmt *st = s->st[id ? ST_PROC_RECONNECT : ST_PROC_INSERT];

	if (row_begin(s) == -1)
		return -1;
	bind_process(st, id ? id : s->last_process_id + 1, pi);
	if (id == 0)
		sqlite3_bind_int64(st, 11, connected_at);
	if (row_end(s, st) == -1 || txn_commit(s) == -1)
		return -1;
	return 0;
}

/* What the row of process id holds once the update held for it is
 * written: it supersedes the row's counters, watermark and position.
 * The process connects again, so the update no longer ends it: its
 * disconnected_at and committed position are dropped, which the
 * reconnection's update of the row sets to NULL before it is written,
 * and its vanished mark, which that update clears (a process that comes
 * back did not vanish; its next end says again whether it closed). */
static void read_pending_update(struct store *s, int64_t id,
				struct store_proc *row)
{
	struct process_update *u = pending_update_of(s, id);

	if (u == NULL)
		return;
	row->base_records = u->records;
	row->base_dropped = u->dropped;
	row->base_skipped = u->skipped;
	if (u->watermark > row->base_watermark)
		row->base_watermark = u->watermark;
	if (u->position >= 0)
		row->base_position = u->position;
	u->position = -1;
	u->disconnected_at = 0;
	u->vanished = 0;
}

int store_process_open(struct store *s, const struct store_process_info *pi,
		       struct store_proc *out)
{
	struct store_proc found = {.base_position = -1};
	int64_t id = find_process(s, pi->hello->instance, &found);
	int64_t now = (int64_t)clock_ns(CLOCK_REALTIME);
	/* A reconnection of a process whose row is still held: the row
	 * comes, with everything else, at the next commit, and this
	 * connection's update of it after it. */
	struct held_process *held =
	    id == 0 ? held_insert_of(s, pi->hello->instance) : NULL;
	int written = 0;

	if (held != NULL)
		id = held->id;
	if (id != 0)
		read_pending_update(s, id, &found);
	if (held == NULL && s->state == STORE_REFUSING)
		s->state = STORE_RETRYING;
	if (held == NULL && write_process(s, id, pi, now) == 0) {
		written = 1;
	} else if (hold_process(s, id ? id : s->last_process_id + 1, id != 0,
				pi, now) == 0) {
		if (held == NULL)
			s->stats.rows_failed--; /* held, not lost */
	} else if (id == 0) {
		return -1;
	}
	if (id == 0) {
		id = ++s->last_process_id;
		found = (struct store_proc){0};
	}
	if (out->id != id) {
		out->base_records = found.base_records;
		out->base_dropped = found.base_dropped;
		out->base_skipped = found.base_skipped;
		out->base_watermark = found.base_watermark;
		out->base_position = found.base_position;
		/* Written, the row's commit took what was held with it. */
		out->base_acked = written ? found.base_watermark : 0;
	}
	out->id = id;
	out->clock_offset = pi->hello->clock_offset;
	return 0;
}

void store_process_update(struct store *s, struct store_proc *p,
			  uint64_t records, uint64_t dropped,
			  uint64_t unknown_skipped, uint64_t watermark,
			  int64_t position, const char *error,
			  const struct rules_model *model, int disconnected)
{
	struct process_update *u = calloc(1, sizeof(*u)), *held;

	if (u == NULL) {
		s->stats.rows_failed++;
		return;
	}
	u->id = p->id;
	u->records = p->base_records + records;
	u->dropped = p->base_dropped + dropped;
	u->skipped = p->base_skipped + unknown_skipped;
	u->watermark = watermark;
	u->position = position;
	if (disconnected)
		u->disconnected_at = (int64_t)clock_ns(CLOCK_REALTIME);
	u->error = dup_or_null(error);
	if (model != NULL) {
		u->model = dup_or_null(model->model);
		u->recommend = dup_or_null(model->recommend);
		u->evidence =
		    dup_or_null(model->evidence[0] ? model->evidence : NULL);
	}
	if ((held = pending_update_of(s, p->id)) != NULL) {
		merge_update(held, u);
		process_update_free(u);
	} else {
		u->next = s->held_updates;
		s->held_updates = u;
	}
	if (!s->in_txn)
		txn_begin(s);
	if (disconnected)
		sites_release(s->sites, &p->site_holds);
}

void store_set_commit_hook(struct store *s, store_commit_hook hook, void *arg)
{
	s->hook = hook;
	s->hook_arg = arg;
}

int store_process_counts(struct store *s, const struct store_proc *p,
			 uint64_t records, uint64_t dropped,
			 uint64_t unknown_skipped, uint64_t watermark)
{
	struct process_update u = {.id = p->id,
				   .records = p->base_records + records,
				   .dropped = p->base_dropped + dropped,
				   .skipped = p->base_skipped + unknown_skipped,
				   .watermark = watermark,
				   .position = -1};
	struct process_update *held = pending_update_of(s, p->id);

	/* A process that reconnected before its update was written: that
	 * update is written after these counters, and must say them. */
	if (held != NULL)
		merge_update(held, &u);
	if (!s->in_txn && txn_begin(s) == -1)
		return SQLITE_ERROR;
	return write_process_update(s, &u);
}

/* ------------------------------------------------------------ ticks */

/* What retention deleted, per table: when a pass ends, at most once per
 * RETENTION_LOG_NS (age retention deletes a little at every pass). */
static void report_retention(struct store *s, uint64_t now)
{
	if (s->retention_logged_at != 0 &&
	    now - s->retention_logged_at < RETENTION_LOG_NS)
		return;
	if (retention_report(s->retention,
			     s->retention_age == 0     ? "by size"
			     : s->retention_bytes == 0 ? "by age"
						       : "by age and size"))
		s->retention_logged_at = now;
}

static void retain(struct store *s, uint64_t now)
{
	int64_t cutoff = 0;
	uint64_t deleted = 0;
	int rc;

	if (!s->in_txn && txn_begin(s) == -1)
		return;
	if (s->retention_age != 0)
		cutoff = (int64_t)clock_ns(CLOCK_REALTIME) - s->retention_age;
	rc = retention_step(s->retention, cutoff, s->retention_bytes, &deleted);
	if (rc < 0) {
		txn_failed(s, -rc, 0, "retention");
		return;
	}
	s->pending_deleted += deleted;
	s->retention_more = rc;
	if (!rc) {
		s->next_retention = now + s->retention_ns;
		report_retention(s, now);
	}
}

/* The hook's rows may be all that changed (a judged record that is no
 * row under --keep=leaky): they open a transaction of their own. */
static void write_hook_rows(struct store *s)
{
	int rc;

	if (s->in_txn || (rc = run_hook(s)) == SQLITE_OK)
		return;
	if (s->in_txn)
		txn_failed(s, rc, 0, "update");
}

void store_tick(struct store *s)
{
	uint64_t now = clock_ns(CLOCK_MONOTONIC);

	if (s->state == STORE_REFUSING)
		s->state = STORE_RETRYING;
	/* Held process rows must come even if nothing else does. */
	if ((s->held_procs != NULL || s->held_updates != NULL) && !s->in_txn)
		txn_begin(s);
	write_hook_rows(s);
	if ((s->retention_age != 0 || s->retention_bytes != 0) &&
	    (s->retention_more || now >= s->next_retention))
		retain(s, now);
	if (s->in_txn && (now - s->txn_start >= s->commit_ns ||
			  s->pending >= s->commit_rows))
		txn_commit(s);
}

void store_commit(struct store *s)
{
	txn_commit(s);
}

void store_set_commit_observer(struct store *s, store_commit_observer fn,
			       void *arg)
{
	s->observer = fn;
	s->observer_arg = arg;
}

int store_committed_findings(struct store *s, int64_t first,
			     store_finding_fn fn, void *arg)
{
	return feed_findings(s->feed, first, fn, arg);
}

int store_totals(struct store *s, struct store_totals *out, int with_findings)
{
	return feed_totals(s->feed, out, with_findings);
}

void store_stats(const struct store *s, struct store_stats *out)
{
	*out = s->stats;
	out->degraded = s->state != STORE_WRITING;
}

uint64_t store_last_request_id(struct store *s)
{
	return s->last_rid;
}

static int64_t query_int(sqlite3 *db, const char *q)
{
	sqlite3_stmt *st;
	int64_t v = 0;

	if (sqlite3_prepare_v2(db, q, -1, &st, NULL) != SQLITE_OK)
		return 0;
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

void store_limit_pages(struct store *s, int64_t extra)
{
	char q[64];
	int64_t pages = 4294967294; /* SQLite's largest */

	if (extra >= 0)
		pages = query_int(s->db, "PRAGMA page_count") + extra;
	snprintf(q, sizeof q, "PRAGMA max_page_count = %lld", (long long)pages);
	sqlite3_exec(s->db, q, NULL, NULL, NULL);
}

/* ------------------------------------------------------------ open, close */

/* mkdir -p of the file's directory; directories it creates get 0750
 * whatever the umask. */
static int make_parent(const char *path, char *err, size_t errlen)
{
	char *dir = strdup(path);
	char *slash = dir ? strrchr(dir, '/') : NULL;
	int rc = 0;

	if (slash == NULL || slash == dir) {
		free(dir);
		return 0;
	}
	*slash = '\0';
	for (char *p = strchr(dir + 1, '/');; p = strchr(p + 1, '/')) {
		if (p != NULL)
			*p = '\0';
		if (mkdir(dir, 0750) == 0) {
			chmod(dir, 0750);
		} else if (errno != EEXIST) {
			rc = -1;
			break;
		}
		if (p == NULL)
			break;
		*p = '/';
	}
	if (rc == -1)
		snprintf(err, errlen, "cannot create directory %s: %s", dir,
			 strerror(errno));
	free(dir);
	return rc;
}

/* Creates the file 0640 whatever the umask; an existing file keeps its
 * mode.  Opening it here also gives a plain errno for the error line. */
static int create_file(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);

	if (fd >= 0) {
		fchmod(fd, 0640);
	} else if (errno == EEXIST) {
		fd = open(path, O_RDWR | O_CLOEXEC);
	}
	if (fd < 0) {
		snprintf(err, errlen, "cannot open database %s: %s", path,
			 strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

/* SQLite gives the -wal and -shm files the database's mode; say so
 * explicitly rather than depend on it. */
static void match_mode(const char *path)
{
	static const char *const suffix[] = {"-wal", "-shm"};
	struct stat st;
	char aux[4096];

	if (stat(path, &st) == -1)
		return;
	for (size_t i = 0; i < sizeof suffix / sizeof suffix[0]; i++) {
		snprintf(aux, sizeof aux, "%s%s", path, suffix[i]);
		chmod(aux, st.st_mode & 0777);
	}
}

/* SQLite's in-memory database (the fuzz target stores into one): no file
 * to create, no WAL to keep. */
static int is_memory(const char *path)
{
	return strcmp(path, ":memory:") == 0;
}

static int configure(struct store *s, const char *path, char *err,
		     size_t errlen)
{
	char q[128];
	int persist_wal = 1;

	/* Keep the -wal and -shm files when the daemon closes the database:
	 * SQLite needs them to read a WAL database, and a reader that may
	 * not write in the directory (group ctxleak) cannot create them. */
	if (!is_memory(path) &&
	    sqlite3_file_control(s->db, "main", SQLITE_FCNTL_PERSIST_WAL,
				 &persist_wal) != SQLITE_OK)
		goto fail;
	if (sqlite3_exec(
		s->db,
		"PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;"
		"PRAGMA journal_size_limit = 67108864;"
		"PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY",
		NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	/* The daemon has just started: no process is connected. */
	snprintf(q, sizeof q,
		 "UPDATE processes SET disconnected_at = %lld "
		 "WHERE disconnected_at IS NULL",
		 (long long)clock_ns(CLOCK_REALTIME));
	if (sqlite3_exec(s->db, q, NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	match_mode(path);
	for (int i = 0; i < NSTMT; i++)
		if (sqlite3_prepare_v3(s->db, sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &s->st[i],
				       NULL) != SQLITE_OK)
			goto fail;
	/* Sites first: retention's statements call site_held(). */
	if ((s->sites = sites_new(s->db)) == NULL ||
	    (s->retention = retention_new(s->db)) == NULL ||
	    (s->summaries = summaries_new(s->db)) == NULL ||
	    (s->feed = feed_new(s->db)) == NULL)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "cannot open database %s: %s", path,
		 sqlite3_errmsg(s->db));
	return -1;
}

static void load_ids(struct store *s)
{
	s->last_process_id = query_int(s->db, "SELECT max(id) FROM processes");
	s->last_site_id = query_int(s->db, "SELECT max(id) FROM sites");
	s->last_rid = (uint64_t)query_int(
	    s->db, "SELECT max(coalesce((SELECT value FROM meta WHERE "
		   "key = 'last_request_id'), 0), "
		   "coalesce((SELECT max(id) FROM requests), 0))");
	s->saved_rid = s->last_rid;
}

static void apply_config(struct store *s, const struct store_config *cfg)
{
	s->keep_all = cfg->keep_all;
	s->retention_age = (int64_t)cfg->retention_age;
	s->retention_bytes = cfg->retention_bytes;
	s->commit_ns =
	    (uint64_t)(cfg->commit_ms ? cfg->commit_ms : DEFAULT_COMMIT_MS) *
	    1000000u;
	s->commit_rows =
	    cfg->commit_rows ? cfg->commit_rows : DEFAULT_COMMIT_ROWS;
	s->retention_ns = (uint64_t)(cfg->retention_ms ? cfg->retention_ms
						       : DEFAULT_RETENTION_MS) *
			  1000000u;
}

struct store *store_open(const struct store_config *cfg, char *err,
			 size_t errlen)
{
	struct store *s = calloc(1, sizeof *s);
	int rc;

	if (s == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->lock_fd = -1;
	/* The lock comes before SQLite reads or migrates the file; an
	 * empty file is all a second daemon may have created by then. */
	if (!is_memory(cfg->path) &&
	    (make_parent(cfg->path, err, errlen) == -1 ||
	     create_file(cfg->path, err, errlen) == -1 ||
	     (s->lock_fd = store_lock(cfg->path, err, errlen)) == -1))
		goto fail;
	/* Nothing here asks SQLite how much memory it uses, and without
	 * the statistics an allocation takes no global mutex: 5-7% of the
	 * instructions of the daemon.  Refused, harmlessly, once SQLite
	 * is initialised (a second store in one process). */
	sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	rc = sqlite3_open_v2(cfg->path, &s->db,
			     SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "cannot open database %s: %s", cfg->path,
			 sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_extended_result_codes(s->db, 1);
	sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MS);
	if (store_schema_open(s->db, cfg->path, err, errlen) == -1)
		goto fail;
	if (!is_memory(cfg->path))
		store_quick_check(s->db, cfg->path);
	if (configure(s, cfg->path, err, errlen) == -1)
		goto fail;
	apply_config(s, cfg);
	load_ids(s);
	s->run_id = runs_open(s->db);
	return s;
fail:
	store_close(s);
	return NULL;
}

void store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (s->db != NULL)
		txn_commit(s);
	if (s->db != NULL)
		runs_close(s->db, s->run_id);
	free_held_processes(s);
	retention_free(s->retention);
	summaries_free(s->summaries);
	feed_free(s->feed);
	for (int i = 0; i < NSTMT; i++)
		sqlite3_finalize(s->st[i]);
	sites_free(s->sites);
	sqlite3_close(s->db);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* after the last write */
	free(s);
}
