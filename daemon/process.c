/*
 * process.c: the client processes ctxleakd knows, by instance ID.  Each
 * has one rules engine whose sink writes straight to the store, and
 * outlives its connections: after the last one closes it lingers for
 * --linger so that a client that reconnects (after a failed send, say)
 * continues it, then it is finalised: everything queued is judged, open
 * scopes become unclosed, and its row gets its counters and concurrency
 * model.
 *
 * Before that, every commit carries the row's counters of the records
 * judged so far (not those received: a record waiting for its watermark
 * has no row yet), so that after a crash the row says exactly how many
 * records of the process the database holds.  A client that reconnects is
 * told that number in its RECEIPT (a version 1 client counts the rest as
 * lost).
 *
 * Each commit also carries the committed watermark: every record with
 * ts <= it is judged and in the file.  It is the highest WATERMARK taken,
 * lowered below the oldest record the engine still holds for a request not
 * yet retired (--keep=leaky: those go to the store when the request does),
 * but by HELD_ACK_LAG at most: a request that never ends must not make its
 * client keep everything after it.  A crash loses the records held for a
 * request older than that.  Records judged early (a queue over its limit)
 * do not raise it: records of lower ts may still come.  Once the commit is
 * done, every version 2 connection of the process is told it (an ACK), and
 * its client frees what it kept for sending again.  A process that says
 * CLOSE is settled at once (settle_closed), so that its last ACK comes
 * within a commit interval of it.  A client that
 * reconnects sends again everything not acknowledged; the daemon drops
 * what it already has (duplicates): by stream position when it knows it
 * (the process was live in memory, or finalised in order), by ts against
 * the row's committed watermark after a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "ctxleakd.h"

struct process {
	uint64_t instance;
	pid_t pid; /* the kernel's, for log lines */
	uid_t uid;
	struct store_proc sp;
	struct rules *rules;
	struct whatif *whatif; /* NULL: --no-what-if */
	unsigned conns;	      /* connections attached now */
	struct event *linger; /* pending while no connection is attached */
	uint64_t records, dropped, skipped;
	uint64_t judged;     /* records the rules delivered to the store */
	uint64_t watermark;  /* the highest WATERMARK taken */
	uint64_t max_ts;     /* the highest ts of a record received */
	uint64_t committing; /* committed watermark in the open transaction */
	uint64_t committed;  /* ... and in the file: what ACKs say */
	uint64_t floor; /* restored after a crash: a record with ts <= floor
			   is stored already */
	int64_t pos;	/* stream position of the next record; -1: not
			   known (restored after a crash, until a HELLO with
			   seq) */
	uint64_t duplicates; /* records received again and dropped */
	int acks;   /* a version 2 client: it says CLOSE when it shuts down */
	int closed; /* it said CLOSE */
	int dirty;   /* counters changed since the store last had them */
	char *error; /* the last protocol error that closed a connection */
	int held_warned;
	int forced_warned;
	int names_warned;
	unsigned limits_warned; /* a bit per total_limits[] entry */
	uint32_t max_queued;	/* the engine's max_pending, for the log */
	TAILQ_ENTRY(process) entry;
};

/* Searched once per HELLO only, so a list is enough. */
static TAILQ_HEAD(, process) processes = TAILQ_HEAD_INITIALIZER(processes);
static struct event_base *process_base;
static struct store *process_store;
/* Daemon-wide, so that requests.id stays unique across processes and
 * restarts. */
static uint64_t request_seq;
/* Daemon-wide too: --max-held and --max-pending bound all the processes
 * together. */
static uint64_t held_bytes, pending_bytes;
/* And --max-open-scopes-total and --max-ended-scopes-total. */
static uint64_t open_scopes_total, ended_scopes_total;
static struct process_stats stats;
/* Some process is dirty. */
static int counts_dirty;
/* Some process's committed watermark advanced in the open transaction. */
static int acks_pending;
/* Every engine's rules_config.hash_seed: secret, so that no client can
 * pick ctx values that collide in the engines' tables. */
static uint64_t hash_seed;

static void mark_dirty(struct process *p)
{
	p->dirty = 1;
	counts_dirty = 1;
}

/* The longest the committed watermark waits for a request to retire, in
 * the client's ts (ns): what the client keeps meanwhile, about a second
 * of its records, stays well within its 4 MiB default buffer at tens of
 * thousands of records a second. */
#define HELD_ACK_LAG 1000000000ull

/* What the open transaction commits of p's stream: the watermark, below
 * what the engine holds. */
static void advance_committing(struct process *p)
{
	uint64_t w = p->watermark, held;

	if (w <= p->committing)
		return;
	held = rules_held_since(p->rules);
	if (held <= w)
		w = held - 1;
	if (w + HELD_ACK_LAG < p->watermark)
		w = p->watermark - HELD_ACK_LAG;
	if (w <= p->committing)
		return;
	p->committing = w;
	acks_pending = 1;
	mark_dirty(p);
}

/* The commit is done: what it held is acknowledged. */
static void committed(void)
{
	struct process *p;

	if (!acks_pending)
		return;
	acks_pending = 0;
	TAILQ_FOREACH(p, &processes, entry)
	p->committed = p->committing;
	conn_ack_all();
}

/* The store's commit hook: each process's counters go into the
 * transaction that holds the rows they count. */
static int write_counts(struct store *s, enum store_hook_event ev, void *arg)
{
	struct process *p;
	int rc;

	(void)arg;
	if (ev == STORE_HOOK_ROLLBACK) {
		TAILQ_FOREACH(p, &processes, entry)
		{
			p->committing = p->committed;
			mark_dirty(p);
		}
		acks_pending = 0;
		return 0;
	}
	if (ev == STORE_HOOK_COMMITTED) {
		committed();
		return 0;
	}
	TAILQ_FOREACH(p, &processes, entry)
	advance_committing(p);
	if (!counts_dirty)
		return 0;
	TAILQ_FOREACH(p, &processes, entry)
	{
		if (!p->dirty || p->sp.id == 0)
			continue;
		rc = store_process_counts(s, &p->sp, p->judged, p->dropped,
					  p->skipped, p->committing);
		if (rc != 0)
			return rc;
		p->dirty = 0;
	}
	counts_dirty = 0;
	return 0;
}

void process_init(struct event_base *base, struct store *store)
{
	process_base = base;
	process_store = store;
	request_seq = store_last_request_id(store);
	store_set_commit_hook(store, write_counts, NULL);
	hash_seed = proto_random64();
}

void process_stats(struct process_stats *out)
{
	*out = stats;
}

/* Counted before the store call: a commit it makes must count its row. */
static void sink_verdict(void *arg, const struct rules_verdict *v)
{
	struct process *p = arg;

	p->judged++;
	mark_dirty(p);
	store_verdict(process_store, &p->sp, v);
}

static void sink_finding(void *arg, const struct rules_finding *f)
{
	struct process *p = arg;

	stats.findings++;
	/* Names and details only: tag values and messages stay out of logs. */
	log_debug("pid %d: %s of request %llu at site %u", (int)p->pid,
		  leak_class_name(f->leak), (unsigned long long)f->victim_rid,
		  f->rec != NULL ? f->rec->site : 0);
	store_finding(process_store, &p->sp, f);
	if (f->leak == LEAK_UNCLOSED && p->whatif != NULL)
		whatif_unclosed(p->whatif, f->rec);
}

static void on_judged(void *arg, const struct proto_record *rec)
{
	struct process *p = arg;

	whatif_record(p->whatif, rec);
}

/* Records counted in the update came through sink_verdict already. */
static void sink_update(void *arg, const struct rules_update *u)
{
	struct process *p = arg;

	store_update(process_store, &p->sp, u);
}

static void sink_request(void *arg, const struct rules_request *rq)
{
	struct process *p = arg;

	/* Records over --max-held were judged all the same. */
	p->judged += rq->nheld + rq->held_dropped;
	mark_dirty(p);
	if (rq->held_dropped != 0 && !p->held_warned) {
		log_warn("pid %d: --max-held reached: request %llu (and maybe "
			 "others) keeps only part of its records",
			 (int)p->pid, (unsigned long long)rq->rid);
		p->held_warned = 1;
	}
	store_request(process_store, &p->sp, rq);
}

static struct process *process_find(uint64_t instance)
{
	struct process *p;

	TAILQ_FOREACH(p, &processes, entry)
	if (p->instance == instance)
		return p;
	return NULL;
}

static struct process *process_new(const struct proto_hello *hello)
{
	struct rules_config rc;
	struct rules_sink sink = {sink_verdict, sink_finding, sink_request,
				  sink_update, NULL};
	static const char observe[] = "observe";
	struct process *p = calloc(1, sizeof *p);

	if (p == NULL)
		return NULL;
	rules_config_default(&rc);
	rc.max_open_scopes = cfg.max_open_scopes;
	rc.max_ended_scopes = cfg.max_ended_scopes;
	rc.max_request_age = cfg.max_request_age;
	rc.hold_records = !cfg.keep_all;
	rc.request_seq = &request_seq;
	rc.max_held_bytes = cfg.max_held;
	rc.held_bytes = &held_bytes;
	rc.max_pending_bytes = cfg.max_pending;
	rc.pending_bytes = &pending_bytes;
	rc.open_scopes_total = &open_scopes_total;
	rc.ended_scopes_total = &ended_scopes_total;
	rc.hash_seed = hash_seed;
	/* An observed storage is the service's own, cleared in its order. */
	rc.observe =
	    hello->backend.len == sizeof(observe) - 1 &&
	    memcmp(hello->backend.ptr, observe, sizeof(observe) - 1) == 0;
	sink.arg = p;
	p->max_queued = rc.max_pending;
	p->instance = hello->instance;
	if (cfg.what_if)
		p->whatif = whatif_new(rc.max_ended_scopes, hash_seed);
	p->rules = rules_new(&rc, &sink);
	if (p->rules == NULL || (cfg.what_if && p->whatif == NULL)) {
		rules_free(p->rules);
		whatif_free(p->whatif);
		free(p);
		return NULL;
	}
	if (p->whatif != NULL)
		rules_on_judged(p->rules, on_judged, p);
	TAILQ_INSERT_TAIL(&processes, p, entry);
	stats.live++;
	return p;
}

static void process_free(struct process *p)
{
	if (p->linger != NULL)
		event_free(p->linger);
	TAILQ_REMOVE(&processes, p, entry);
	stats.live--;
	rules_free(p->rules);
	whatif_free(p->whatif);
	free(p->error);
	free(p);
}

/* A process new to this daemon, or finalised and back: what its row
 * says is stored already.  What is not in the file yet is acknowledged
 * after the commit that writes it. */
static void restore(struct process *p)
{
	p->watermark = p->committing = p->sp.base_watermark;
	p->committed = p->sp.base_acked;
	if (p->committing > p->committed)
		acks_pending = 1;
	p->pos = p->sp.base_position;
	/* Finalised in order, its position says all; after a crash, the
	 * committed watermark does. */
	p->floor = p->pos < 0 ? p->sp.base_watermark : 0;
}

struct process *process_attach(const struct proto_hello *hello,
			       const struct ucred *cred)
{
	struct store_process_info pi = {hello, cred->pid, cred->uid, cred->gid};
	struct process *p = process_find(hello->instance);
	int fresh = p == NULL;

	/* Another user must not feed records into someone else's
	 * process by naming its instance. */
	if (!fresh && p->uid != cred->uid) {
		log_warn("pid %d: instance of a process of uid %u refused for "
			 "uid %u",
			 (int)cred->pid, (unsigned)p->uid, (unsigned)cred->uid);
		return NULL;
	}
	if (fresh && (p = process_new(hello)) == NULL) {
		log_error("pid %d: out of memory", (int)cred->pid);
		return NULL;
	}
	if (store_process_open(process_store, &pi, &p->sp) == -1) {
		log_error("pid %d: cannot record the process", (int)cred->pid);
		if (fresh)
			process_free(p);
		return NULL;
	}
	if (fresh)
		restore(p);
	if (p->linger != NULL) {
		event_free(p->linger);
		p->linger = NULL;
	}
	p->pid = cred->pid;
	p->uid = cred->uid;
	p->acks = hello->version >= 2;
	p->conns++;
	log_debug("pid %d: %s process %llu", (int)cred->pid,
		  fresh ? "new" : "continues", (unsigned long long)p->sp.id);
	return p;
}

int64_t process_site(struct process *p, const struct proto_record *site)
{
	return store_site(process_store, &p->sp, site);
}

/*
 * Daemon-wide limits on what every process's engine holds.  Past one, the
 * process that holds most gives back its oldest, down to 15/16 of the
 * limit, so that finding that process is paid once for many: whoever
 * holds without letting go pays, not whichever process adds the next one.
 */
struct total_limit {
	const char *flag;
	const uint64_t *limit; /* in cfg; 0: none */
	const uint64_t *total;
	uint64_t (*held)(const struct rules_stats *st);
	uint64_t (*give_back)(struct rules *r, uint64_t n);
	const char *consequence; /* for the log, once per process */
};

static uint64_t open_held(const struct rules_stats *st)
{
	return st->open_scopes;
}

static uint64_t ended_held(const struct rules_stats *st)
{
	return st->ended_scopes;
}

static const struct total_limit total_limits[] = {
    {"--max-open-scopes-total", &cfg.max_open_scopes_total, &open_scopes_total,
     open_held, rules_forget_open,
     "its oldest open scopes are forgotten and reported unclosed"},
    {"--max-ended-scopes-total", &cfg.max_ended_scopes_total,
     &ended_scopes_total, ended_held, rules_forget_ended,
     "its oldest ended scopes are forgotten: a record under one of their "
     "contexts will be a bleed of an unknown request, not stale"},
};

/* The process that holds most, and how much. */
static struct process *holds_most(const struct total_limit *l, uint64_t *most)
{
	struct process *p, *found = NULL;
	struct rules_stats st;

	*most = 0;
	TAILQ_FOREACH(p, &processes, entry)
	{
		rules_stats(p->rules, &st);
		if (l->held(&st) > *most) {
			*most = l->held(&st);
			found = p;
		}
	}
	return found;
}

static void enforce(const struct total_limit *l, unsigned bit)
{
	uint64_t limit = *l->limit, target, most;
	struct process *p;

	if (limit == 0 || *l->total <= limit)
		return;
	target = limit - limit / 16;
	while (*l->total > target && (p = holds_most(l, &most)) != NULL) {
		if (!(p->limits_warned & bit))
			log_warn("pid %d: %s reached: %s", (int)p->pid, l->flag,
				 l->consequence);
		p->limits_warned |= bit;
		if (l->give_back(p->rules, *l->total - target) == 0)
			break;
	}
}

static void enforce_total_limits(void)
{
	for (unsigned i = 0; i < sizeof total_limits / sizeof total_limits[0];
	     i++)
		enforce(&total_limits[i], 1u << i);
}

/* Positions, not a count of records to skip: the connection before may
 * still hold records not read yet when the next one says HELLO, and they
 * come between its records. */
uint64_t process_resume(struct process *p, uint64_t seq)
{
	if (p->pos > (int64_t)seq)
		log_debug("pid %d: its next %llu records are sent again",
			  (int)p->pid, (unsigned long long)p->pos - seq);
	else if (p->pos >= 0 && p->pos < (int64_t)seq)
		log_info("pid %d: the client resumes at record %llu, %llu "
			 "after the last one received",
			 (int)p->pid, (unsigned long long)seq,
			 (unsigned long long)(seq - (uint64_t)p->pos));
	if (p->pos < (int64_t)seq)
		p->pos = (int64_t)seq;
	return seq + 1;
}

uint64_t process_committed(const struct process *p)
{
	return p->committed;
}

void process_rules_stats(const struct process *p, struct rules_stats *out)
{
	rules_stats(p->rules, out);
}

void process_record(struct process *p, const struct proto_record *rec,
		    uint64_t *next)
{
	int again = 0;

	if (next != NULL && *next != 0) {
		/* process_resume made pos at least the cursor. */
		int64_t at = (int64_t)(*next)++ - 1;

		again = at < p->pos;
		if (!again)
			p->pos = at + 1;
	} else if (p->pos >= 0) {
		p->pos++;
	}
	if (next != NULL && (again || (p->floor != 0 && rec->ts <= p->floor))) {
		p->duplicates++;
		stats.duplicates++;
		return;
	}
	p->records++;
	if (rec->ts > p->max_ts)
		p->max_ts = rec->ts;
	if (rules_add(p->rules, rec) == -1)
		log_error("pid %d: out of memory: record lost", (int)p->pid);
	enforce_total_limits();
}

/* Each said once per process, at a watermark or at the end, where asking
 * the engine costs nothing. */
static void warn_limits(struct process *p)
{
	struct rules_stats st;

	if (p->forced_warned && p->names_warned)
		return;
	rules_stats(p->rules, &st);
	if (st.forced != 0 && !p->forced_warned) {
		log_warn("pid %d: %llu records judged before a watermark "
			 "ordered them (over --max-pending, or a queue of %u "
			 "records): their findings may depend on arrival order",
			 (int)p->pid, (unsigned long long)st.forced,
			 p->max_queued);
		p->forced_warned = 1;
	}
	if (st.names_dropped != 0 && !p->names_warned) {
		log_warn("pid %d: --max-held reached: %llu scopes (and maybe "
			 "more) kept without their names",
			 (int)p->pid, (unsigned long long)st.names_dropped);
		p->names_warned = 1;
	}
}

/*
 * A process that said CLOSE is shutting down, and its client waits for
 * the ACK of its last records before it returns: the stream is settled
 * as at its end (everything queued judged, open scopes unclosed, every
 * request retired, so that --keep=leaky holds nothing back), and the
 * committed watermark may reach the highest ts received.  Else a request
 * still open would hold the ACK back HELD_ACK_LAG (1 s), and the client
 * wait that long for nothing.  What comes after CLOSE (threads that were
 * inside a call) is settled at its batch's WATERMARK the same way.
 */
static void settle_closed(struct process *p)
{
	rules_finish(p->rules);
	if (p->max_ts > p->watermark)
		p->watermark = p->max_ts;
	mark_dirty(p);
}

void process_closed(struct process *p)
{
	p->closed = 1;
	settle_closed(p);
}

void process_watermark(struct process *p, uint64_t ts)
{
	/* The engine judges and stores what ts releases first: a commit
	 * made meanwhile (every 10000 rows) acknowledges p->watermark, which
	 * must not yet cover records still in the engine's queue. */
	rules_advance(p->rules, ts);
	if (ts > p->watermark)
		p->watermark = ts;
	if (p->closed)
		settle_closed(p);
	enforce_total_limits();
	warn_limits(p);
}

void process_dropped(struct process *p, const struct proto_record *rec)
{
	p->dropped += rec->count;
	mark_dirty(p);
	store_dropped(process_store, &p->sp, rec);
}

void process_receipt(const struct process *p, struct proto_receipt *out)
{
	out->records = p->sp.base_records + p->records;
	out->dropped = p->sp.base_dropped + p->dropped;
}

static void process_finalise(struct process *p)
{
	struct rules_model model;
	struct rules_stats st;

	warn_limits(p);
	rules_finish(p->rules);
	if (p->whatif != NULL) {
		uint64_t findings[WHATIF_BACKENDS][LEAK_CLASS_COUNT];

		if (whatif_approximate(p->whatif) != 0)
			log_warn("pid %d: the what-if could not follow %llu "
				 "calls (past its memory bounds): its counts "
				 "are approximate",
				 (int)p->pid,
				 (unsigned long long)whatif_approximate(
				     p->whatif));
		whatif_totals(p->whatif, findings);
		rules_model_measured(p->rules, findings, &model);
	} else {
		rules_model(p->rules, &model);
	}
	rules_stats(p->rules, &st);
	/* Everything received is judged: the whole stream so far is in
	 * the commit that takes this. */
	store_process_update(process_store, &p->sp, p->records, p->dropped,
			     p->skipped, p->watermark, p->pos, p->error, &model,
			     1);
	if (p->whatif != NULL)
		store_what_if(process_store, &p->sp, p->whatif);
	if (p->acks && !p->closed) {
		log_info("pid %d: process %llu ended without closing (killed, "
			 "or it never shut the library down): what it still "
			 "held is lost uncounted",
			 (int)p->pid, (unsigned long long)p->sp.id);
		store_process_vanished(process_store, &p->sp);
	}
	log_debug("pid %d: process %llu finalised: %llu records (%llu late "
		  "work), %s",
		  (int)p->pid, (unsigned long long)p->sp.id,
		  (unsigned long long)p->records, (unsigned long long)st.late,
		  model.model);
	process_free(p);
}

static void on_linger_end(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	process_finalise(arg);
}

void process_detach(struct process *p, const char *error, uint64_t skipped)
{
	struct timeval tv = {(time_t)(cfg.linger / 1000000000),
			     (suseconds_t)(cfg.linger % 1000000000 / 1000)};

	p->skipped += skipped;
	mark_dirty(p);
	if (p->duplicates != 0)
		log_debug("pid %d: %llu records received again dropped so far",
			  (int)p->pid, (unsigned long long)p->duplicates);
	if (error != NULL) {
		free(p->error);
		p->error = strdup(error);
	}
	if (--p->conns > 0)
		return;
	if (cfg.linger == 0) {
		process_finalise(p);
		return;
	}
	p->linger = evtimer_new(process_base, on_linger_end, p);
	if (p->linger == NULL || evtimer_add(p->linger, &tv) == -1)
		process_finalise(p);
}

void process_judge_connected(void)
{
	struct process *p;

	TAILQ_FOREACH(p, &processes, entry)
	{
		if (p->conns == 0)
			continue;
		rules_finish(p->rules);
		if (p->max_ts > p->watermark)
			p->watermark = p->max_ts;
		mark_dirty(p);
	}
	/* The counters may be the only rows (--keep=leaky, records of no
	 * request): they open the transaction the commit needs. */
	write_counts(process_store, STORE_HOOK_WRITE, NULL);
	store_commit(process_store);
}

void process_finalise_all(void)
{
	struct process *p;

	while ((p = TAILQ_FIRST(&processes)) != NULL)
		process_finalise(p);
}
