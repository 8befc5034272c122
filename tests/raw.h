/*
 * raw.h: records built by hand and written as bytes, and the raw
 * connections that carry them, for tests that speak the protocol to the
 * daemon over a raw socket instead of through the client library, and
 * for the rules engine's tests (rules_feed.h), which feed it records
 * directly.  Every function here fails the test (Check) rather than
 * return an error.
 */
#ifndef CTXLEAK_RAW_H
#define CTXLEAK_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

struct harness_daemon;

/*
 * Record builders.  They expand to initializers so that streams can be
 * static tables; a record assigned at run time is cast to a compound
 * literal, e.g. rec = AS END(3, 1, 0xa1, 0xa1, 0xa1).
 */
#define S(s)                                                                   \
	{                                                                      \
		(s), (uint32_t)__builtin_strlen(s)                             \
	}
#define REC(ty, ts_, tid_, ctx_, cause_)                                       \
	.type = (ty), .ts = (ts_), .tid = (tid_), .ctx = (ctx_),               \
	.cause = (cause_)
#define BEGIN(ts, tid, ctx, cause, prev_, name_)                               \
	{                                                                      \
		REC(PROTO_BEGIN, ts, tid, ctx, cause),                         \
		    .prev = (prev_), .kind = PROTO_KIND_REQUEST,               \
		    .name = S(name_)                                           \
	}
#define CHILD(ts, tid, ctx, cause, prev_, name_)                               \
	{                                                                      \
		REC(PROTO_BEGIN, ts, tid, ctx, cause),                         \
		    .prev = (prev_), .kind = PROTO_KIND_CHILD,                 \
		    .name = S(name_)                                           \
	}
#define END(ts, tid, ctx, cause, cur_)                                         \
	{                                                                      \
		REC(PROTO_END, ts, tid, ctx, cause), .cur = (cur_)             \
	}
#define TAG(ts, tid, ctx, cause, key_, value_)                                 \
	{                                                                      \
		REC(PROTO_TAG, ts, tid, ctx, cause), .key = S(key_),           \
						     .value = S(value_)        \
	}
#define EVENT(ts, tid, ctx, cause, name_)                                      \
	{                                                                      \
		REC(PROTO_EVENT, ts, tid, ctx, cause), .name = S(name_)        \
	}
#define RESUME(ts, tid, ctx, cause)                                            \
	{                                                                      \
		REC(PROTO_RESUME, ts, tid, ctx, cause)                         \
	}
#define SUSPEND(ts, tid, ctx, cause)                                           \
	{                                                                      \
		REC(PROTO_SUSPEND, ts, tid, ctx, cause)                        \
	}
#define WATERMARK(ts_)                                                         \
	{                                                                      \
		.type = PROTO_WATERMARK, .ts = (ts_)                           \
	}
#define AS (struct proto_record)

/* The records raw_request writes. */
#define RAW_REQUEST_RECORDS 4

/* Encodes r at buf (cap bytes); its length, or the test fails. */
size_t raw_encode(unsigned char *buf, size_t cap, const struct proto_record *r);

/* One clean request of ctx on thread 7, at ts .. ts + 3: BEGIN 'GET /raw',
 * TAG k=v, EVENT e, END; RAW_REQUEST_RECORDS records, their length. */
size_t raw_request(unsigned char *buf, size_t cap, uint64_t ctx, uint64_t ts);

/* Encodes r and writes it on fd. */
void raw_send(int fd, const struct proto_record *r);
/* Writes raw_request's records (ctx, from ts) on fd. */
void raw_send_request(int fd, uint64_t ctx, uint64_t ts);

/* A blocking connection to d's socket (harness_connect). */
int raw_connect(const struct harness_daemon *d);

/* raw_connect, then a HELLO of app "raw" with this instance and claimed
 * pid (harness_send_hello). */
int raw_hello(const struct harness_daemon *d, uint64_t instance, uint32_t pid);

/* Writes len bytes of buf on fd, waits until the daemon closes the
 * connection (harness_wait_closed: input it refuses ends the connection
 * at once, not after a timeout), and closes fd. */
void raw_send_until_closed(int fd, const void *buf, size_t len);

/* The records the daemon stored from raw peers (app "raw"): all of them,
 * and those of the process of one instance. */
int64_t raw_records(const struct harness_daemon *d);
int64_t raw_records_of(const struct harness_daemon *d, uint64_t instance);

#endif /* CTXLEAK_RAW_H */
