/*
 * rules.h: the leak rules engine of ctxleakd, one instance per client
 * process.
 *
 * It is a pure module: records in, verdicts, findings, rebuilt requests
 * and updates of retired ones out through callbacks, no I/O, no clock, no
 * globals, so that every rule is
 * tested without sockets or SQLite.  The rules are those of "Leak classes"
 * in docs/DESIGN.md.  Records may be added in any order; they are judged in
 * timestamp order once a watermark says that nothing earlier can still
 * arrive (rules_advance), or all at once when the process is gone
 * (rules_finish).
 *
 * Memory is bounded by rules_config: open scopes, remembered ended scopes,
 * records waiting for a watermark, tags per request.
 */
#ifndef CTXLEAKD_RULES_H
#define CTXLEAKD_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

enum leak_class {
	LEAK_NONE = 0,
	LEAK_LOST,
	LEAK_STALE,
	LEAK_BLEED,
	LEAK_OVERLAP,
	LEAK_MISNEST,
	LEAK_UNCLOSED,
};
#define LEAK_CLASS_COUNT 7

/* "lost", "stale", ... ("" for LEAK_NONE); -1 for an unknown name. */
const char *leak_class_name(enum leak_class c);
int leak_class_from_name(const char *name);

/* A fast, non-cryptographic hash of n bytes, 8 at a time, continuing from
 * seed: the engine's names and the store's summaries key tables with it. */
uint64_t rules_hash(const void *p, size_t n, uint64_t seed);

/* Why a scope was reported unclosed. */
enum rules_unclosed_reason {
	RULES_UNCLOSED_DISCONNECT = 1, /* its process went away */
	RULES_UNCLOSED_AGE,	       /* older than max_request_age */
	RULES_UNCLOSED_LIMIT,	       /* evicted: max_open_scopes reached */
};

struct rules_config {
	uint32_t max_open_scopes;     /* past it the oldest open scope is
					 reported unclosed and forgotten;
					 0: no limit */
	uint32_t max_ended_scopes;    /* ended scopes remembered, for stale */
	uint32_t max_pending;	      /* records waiting for a watermark; past
					 it the oldest are judged at once */
	uint32_t max_tags;	      /* final tags kept per request */
	uint64_t max_request_age;     /* ns; 0: no limit */
	int hold_records;	      /* deliver each request's records with
					 the request when it retires instead of
					 one by one (--keep=leaky) */
	uint64_t *request_seq;	      /* daemon-wide request id allocator: the
					 engine takes ++*request_seq for each
					 request; NULL: the engine's own */
	uint64_t max_held_bytes;      /* bytes that requests hold: scope
					 names, final tags, and records under
					 hold_records, counted in
					 *held_bytes; past it new names are
					 dropped (names_dropped), and further
					 tags and records counted
					 (tags_dropped, held_dropped), not
					 kept, so that requests cannot hold
					 memory without bound; 0: no limit */
	uint64_t *held_bytes;	      /* shared like request_seq, so that the
					 limit is daemon-wide; NULL: the
					 engine's own */
	uint64_t max_pending_bytes;   /* bytes of records waiting for a
					 watermark, counted in
					 *pending_bytes; past it this
					 engine's oldest are judged at once,
					 so that a client that sends long
					 strings and no watermark cannot
					 make the daemon hold them; 0: no
					 limit */
	uint64_t *pending_bytes;      /* shared like held_bytes */
	uint64_t *open_scopes_total;  /* every engine's open scopes, and */
	uint64_t *ended_scopes_total; /* ended ones, shared like held_bytes,
					 for daemon-wide limits
					 (rules_forget_open, _ended) */
	uint64_t hash_seed;	      /* mixed into the hash of every ctx, tid
					 and scope name, so that a client
					 cannot choose values that collide;
					 random in the daemon, 0 by default
					 so that tests repeat */
	int observe;		      /* the process observes its own
					 storage (HELLO backend "observe"),
					 which the service clears in its own
					 order: an END while it holds nothing
					 (cur 0) is no misnest */
};

/* A record after judgement. */
struct rules_verdict {
	const struct proto_record *rec;
	uint64_t rid;	      /* request the record belongs to in truth:
				 request(cause) for TAG/EVENT/RESUME/SUSPEND
				 and child BEGIN, the new request for a
				 request BEGIN, the scope's request for END;
				 0: none */
	uint64_t rid_ctx;     /* request the backend attributed it to:
				 request(ctx), or request(prev) for BEGIN;
				 0: none.  A ctx never seen begin is a
				 pseudo request of its own with an id but
				 no rules_request (the engine's spec is at
				 the top of rules.c) */
	enum leak_class leak; /* LEAK_NONE, or the finding it produced */
	uint8_t late;	      /* late work: its storage named its own
				 request after that request ended; no
				 finding, counted on the request */
	uint8_t keep;	      /* hold_records: its request retired before
				 it was judged and has a row, so the record
				 is kept like the ones held were */
};

/* A finding: one per offending record, or per unclosed scope. */
struct rules_finding {
	enum leak_class leak;
	uint64_t victim_rid, victim_ctx; /* the victim request (root ctx) */
	struct proto_str victim_name;
	uint64_t source_rid, source_ctx; /* 0 for lost, misnest, unclosed */
	struct proto_str source_name;
	const struct proto_record *rec;	   /* the evidence; for unclosed a
					      synthesised BEGIN of the scope */
	enum rules_unclosed_reason reason; /* unclosed only */
	const char *detail;		   /* one line, human, for the report */
};

/* A tag of a request's final context. */
struct rules_tag {
	struct proto_str key, value;
	uint64_t ts;
	uint64_t tid;
	uint32_t site;
	uint64_t setter_rid; /* request whose code set it: request(cause) */
	uint64_t setter_ctx;
};

/* A request when it retires: rebuilt context, findings, held records. */
struct rules_request {
	uint64_t rid;
	uint64_t ctx; /* root ctx */
	struct proto_str name;
	uint32_t site;
	uint64_t begin_ts, end_ts; /* end_ts 0: never ended (unclosed) */
	uint64_t begin_tid;
	uint32_t nthreads;	 /* threads that ran its code */
	const uint64_t *threads; /* up to RULES_MAX_THREADS of them */
	uint32_t nscopes;	 /* scopes, itself included */
	uint64_t nrecords;	 /* records whose rid is this request */
	uint64_t late;		 /* of them, late work (rules_verdict) */
	uint32_t ntags;
	const struct rules_tag *tags; /* final value per key, first set first */
	uint32_t tags_dropped;	      /* over max_tags or max_held_bytes */
	uint32_t victim_of[LEAK_CLASS_COUNT]; /* findings with it as victim */
	uint32_t source_of;		      /* findings with it as source */
	size_t nheld;			      /* hold_records only */
	uint32_t held_dropped;		  /* not held: over max_held_bytes */
	const struct rules_verdict *held; /* in ts order; NULL when no
					     finding names the request
					     (nheld still counts them) */
};
#define RULES_MAX_THREADS 16

/*
 * What was judged about a request after it retired: the late work it left
 * running, a finding with it as victim (a callback of it that ran under
 * another request's storage) or as source (a storage that still held it).
 * Delivered once per request per rules_advance, after the records and
 * findings it counts.
 */
struct rules_update {
	uint64_t rid;
	uint32_t victim_of[LEAK_CLASS_COUNT]; /* findings since, as victim */
	uint32_t source_of;		      /* findings since, as source */
	uint64_t records;		      /* records since */
	uint64_t late;			      /* of them, late work */
	/* hold_records only.  Non-NULL when the request retired clean,
	 * counted only as request_stats counts clean ones, and a finding
	 * names it now: its row, from what is still known (no tags, no
	 * held records, threads: its root's only), every count above
	 * included. */
	const struct rules_request *row;
	/* hold_records only: what the counts of clean requests hold of it
	 * (name, site, begin and end, records, late, scopes, tags, and
	 * nthreads, though `threads` lists only the root's).  With row, to
	 * be taken back from them; without, the request is still clean and
	 * its records and late above are to be added to them.  NULL when
	 * the request has a row. */
	const struct rules_request *counted;
};

struct rules_sink {
	/* Every judged record, in ts order, except those held for their
	 * request when hold_records is set. */
	void (*verdict)(void *arg, const struct rules_verdict *v);
	void (*finding)(void *arg, const struct rules_finding *f);
	/* A request whose scopes have all ended (or been reported unclosed)
	 * and whose last END is at or below the watermark. */
	void (*request)(void *arg, const struct rules_request *rq);
	/* A retired request of which more was judged (NULL: ignored). */
	void (*update)(void *arg, const struct rules_update *u);
	void *arg;
};

/* The process's concurrency model, inferred from what was judged. */
struct rules_model {
	const char *model;     /* "thread-per-request", "single-thread",
				  "event-loop", "thread-pool", "mixed",
				  "unknown" */
	const char *recommend; /* backend that isolates its requests:
				  "thread" or "task" (measured: see
				  rules_model_measured); NULL with no
				  requests seen */
	char evidence[256];    /* one line, e.g. "3 requests interleaved on
				  thread 4712; thread backend cannot isolate
				  them; use task" */
	uint64_t requests;
	uint64_t interleaved; /* requests that ran interleaved with another
				 on one thread */
	uint64_t handed_off;  /* requests whose code ran on >1 thread */
	uint64_t max_interleave_tid, max_interleave; /* worst thread */
};

struct rules_stats {
	uint64_t added, judged, pending;
	uint64_t open_scopes, ended_scopes;
	uint64_t findings[LEAK_CLASS_COUNT];
	uint64_t evicted;      /* scopes forgotten because of max_open_scopes */
	uint64_t forced;       /* records judged early: max_pending or
				  max_pending_bytes */
	uint64_t held_dropped; /* records not held: max_held_bytes */
	uint64_t names_dropped; /* scopes left nameless: max_held_bytes */
	uint64_t bytes_used;	/* bytes the engine allocated and holds */
	uint64_t requests_live; /* begun and not yet retired */
	uint64_t late;		/* records of late work: no finding */
	uint64_t updates;	/* rules_update delivered */
};

struct rules; /* opaque */

void rules_config_default(struct rules_config *cfg);
struct rules *rules_new(const struct rules_config *cfg,
			const struct rules_sink *sink);
void rules_free(struct rules *r);

/* Queue a copy of one record: BEGIN, END, TAG, EVENT, RESUME, SUSPEND
 * (others are ignored).  Returns 0, or -1 when out of memory. */
int rules_add(struct rules *r, const struct proto_record *rec);

/* Judge every queued record with ts <= watermark, retire the requests that
 * are complete, report scopes older than max_request_age (measured from
 * the watermark). */
void rules_advance(struct rules *r, uint64_t watermark);

/* The process is gone: judge everything queued, report every open scope
 * unclosed (RULES_UNCLOSED_DISCONNECT), retire every request. */
void rules_finish(struct rules *r);

/* fn(arg, rec) for every record right after it is judged, in judging
 * order, whether or not it is delivered: the what-if replays them. */
void rules_on_judged(struct rules *r,
		     void (*fn)(void *arg, const struct proto_record *rec),
		     void *arg);

void rules_model(const struct rules *r, struct rules_model *out);
/* The same with the what-if's findings per class of the thread, global
 * and task backends (in that order): recommend is then the backends with
 * no finding but unclosed, comma-separated ("task", "thread,task"; NULL
 * when none), and the evidence the model's counts and theirs. */
void rules_model_measured(const struct rules *r,
			  const uint64_t findings[3][LEAK_CLASS_COUNT],
			  struct rules_model *out);
/* Whether a finding names the request, as victim or source. */
int rules_request_involved(const struct rules_request *rq);
/* How a daemon-wide limit takes room back from the engine that holds most.
 * Forget the n oldest open scopes, each reported unclosed (LIMIT) as when
 * max_open_scopes is reached; or the n oldest ended scopes, as when
 * max_ended_scopes is.  Both return how many there were to forget. */
uint64_t rules_forget_open(struct rules *r, uint64_t n);
uint64_t rules_forget_ended(struct rules *r, uint64_t n);
/* Under hold_records, the ts of the oldest record held for a request
 * not yet retired (UINT64_MAX: none): judged, but not yet delivered, so
 * that a crash would lose it.  Walks the open scopes. */
uint64_t rules_held_since(const struct rules *r);
void rules_stats(const struct rules *r, struct rules_stats *out);

#endif /* CTXLEAKD_RULES_H */
