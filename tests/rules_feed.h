/*
 * rules_feed.h: hand-written record streams for the rules engine
 * (daemon/rules*.c) and what it says of them, shared by the
 * test_rules_*.c programs.  engine() makes an engine whose sink copies
 * every verdict, finding, retired request and update into `got`; streams
 * are written with raw.h's record builders.  No sockets, no SQLite:
 * records in, findings out.
 */
#ifndef CTXLEAK_RULES_FEED_H
#define CTXLEAK_RULES_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "raw.h"
#include "rules.h"

/* ------------------------------------------------------------ collector */

#define MAX_FINDINGS 4096
#define MAX_VERDICTS 4096
#define MAX_REQUESTS 4096
#define MAX_HELD     32
#define MAX_TAGS     8
#define MAX_UPDATES  64

struct got_finding {
	enum leak_class leak;
	uint64_t victim_rid, victim_ctx, source_rid, source_ctx;
	char victim_name[80], source_name[80];
	int victim_named, source_named;
	uint8_t type;
	uint64_t ts, ctx;
	enum rules_unclosed_reason reason;
	char detail[512];
};

struct got_verdict {
	uint8_t type;
	uint64_t ts, ctx, rid, rid_ctx;
	enum leak_class leak;
	int late, keep;
};

struct got_tag {
	char key[32], value[32];
	int value_nil;
	uint64_t setter_rid, setter_ctx;
};

struct got_request {
	uint64_t rid, ctx, begin_ts, end_ts;
	char name[80];
	uint32_t nthreads, nscopes, ntags;
	uint64_t threads[RULES_MAX_THREADS];
	uint64_t nrecords, late;
	struct got_tag tags[MAX_TAGS];
	uint32_t victim_of[LEAK_CLASS_COUNT], source_of;
	size_t nheld;
	uint32_t held_dropped, tags_dropped;
	int held_delivered; /* rq->held was not NULL */
	struct got_verdict held[MAX_HELD];
};

/* A rules_update; its row and counted parts, when given, as requests. */
struct got_update {
	uint64_t rid;
	uint32_t victim_of[LEAK_CLASS_COUNT], source_of;
	uint64_t records, late;
	int has_row, has_counted;
	struct got_request row, counted;
};

/* Everything the engine's sink was given since engine() was called. */
struct got {
	size_t nfindings, nverdicts, nrequests, nupdates;
	struct got_finding findings[MAX_FINDINGS];
	struct got_verdict verdicts[MAX_VERDICTS];
	struct got_request requests[MAX_REQUESTS];
	struct got_update updates[MAX_UPDATES];
};

extern struct got got;
/* The request sequence engine() points the engine at (from 0). */
extern uint64_t seq;

/* A new engine on the default configuration, tune(cfg) applied when not
 * NULL; got and seq start empty.  Fails the test when rules_new does. */
struct rules *engine(void (*tune)(struct rules_config *));
/* A tune for engine(): hold_records on. */
void hold(struct rules_config *cfg);

/* The threads and requests of docs/DESIGN.md's worked example, and of most
 * streams here. */
#define T 100 /* the event loop's thread */
#define A 0xa1
#define B 0xb1
#define C 0xc1

/* rules_add every record of recs, each accepted. */
void add_all(struct rules *r, const struct proto_record *recs, size_t n);
/* Judge a whole stream and let the process go. */
void run(struct rules *r, const struct proto_record *recs, size_t n);

#define RUN(r, recs) run(r, recs, sizeof(recs) / sizeof(recs[0]))
/* run() on a fresh engine (engine(NULL)), then freed: what it said of
 * the stream stays in got. */
void judge(const struct proto_record *recs, size_t n);

#define JUDGE(recs) judge(recs, sizeof(recs) / sizeof(recs[0]))

/* Findings of this class in got. */
size_t count(enum leak_class leak);
/* The retired request of ctx, or fail. */
const struct got_request *request_of(uint64_t ctx);
/* The tag key of rq, or fail. */
const struct got_tag *tag_of(const struct got_request *rq, const char *key);
/* Finding i is of this class, victim and source, or fail. */
void check_finding(size_t i, enum leak_class leak, uint64_t victim_ctx,
		   uint64_t source_ctx);
/* Verdicts that marked late work. */
size_t late_verdicts(void);
/* The update of request rid, the nth of them (0 first), or fail. */
const struct got_update *update_of(uint64_t rid, int nth);
/* The verdict of the record at ts, or fail. */
const struct got_verdict *verdict_at(uint64_t ts);

#endif /* CTXLEAK_RULES_FEED_H */
