/*
 * proto.h: the ctxleak wire protocol v2, shared by the client library and
 * the daemon.  The normative description is proto/PROTOCOL.md; this header
 * is its C form.
 *
 * A connection carries a stream of msgpack objects: one HELLO map, then
 * records.  Every record is an array that starts with the same six fields,
 *
 *     [type, ts, tid, ctx, cause, site, ...type-specific fields...]
 *
 * The encoder (proto_encode_*) writes msgpack bytes directly into a
 * caller-owned buffer: it sits on the client's hot path, so it allocates
 * nothing and does not go through msgpack-c's generic packer.  The decoder
 * (proto_decoder_*) is streaming: feed it bytes in any chunking and take
 * typed messages out; it frames and bounds every object itself before
 * msgpack-c decodes it, so that no input can make it allocate more than its
 * limits.
 *
 * Nothing here does I/O or keeps global state.
 */
#ifndef CTXLEAK_PROTO_H
#define CTXLEAK_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* 2: HELLO's seq and the daemon's ACK (PROTOCOL.md, 2.2 and 2.3).  A
 * decoder accepts HELLOs of every version up to this one. */
#define PROTO_VERSION 2

/* Record types: the first element of every record array. */
enum proto_type {
	PROTO_SITE = 1,	     /* defines a call-site ID: file, line, function */
	PROTO_BEGIN = 2,     /* a scope begins: prev, kind, name */
	PROTO_END = 3,	     /* a scope ends: cur */
	PROTO_TAG = 4,	     /* key, value on the current scope */
	PROTO_EVENT = 5,     /* name, message in the current scope */
	PROTO_RESUME = 6,    /* a continuation of `cause` is entered */
	PROTO_SUSPEND = 7,   /* the continuation is left */
	PROTO_DROPPED = 8,   /* count records were dropped since `since` */
	PROTO_WATERMARK = 9, /* every record of this process with ts <= this
				ts has been sent */
	PROTO_CLOSE = 10,    /* version 2: the process shuts down cleanly
				(what it still sends follows; a process
				that ends without one vanished) */
};
#define PROTO_TYPE_MAX PROTO_CLOSE

/* Elements in a record of each type (index: enum proto_type; 0 for 0).
 * A decoder accepts more (a later version may append fields), never
 * fewer. */
extern const uint8_t proto_type_fields[PROTO_TYPE_MAX + 1];

/* BEGIN's kind field. */
enum proto_kind {
	PROTO_KIND_REQUEST = 0, /* ctxleak_begin: a new root scope */
	PROTO_KIND_CHILD = 1,	/* ctxleak_begin_child */
};

/*
 * A string on the wire: bytes with a length, not NUL-terminated, may hold
 * NUL bytes and need not be UTF-8.  ptr == NULL means msgpack nil (allowed
 * only where PROTOCOL.md says so).  Decoded strings point into the
 * decoder's memory and stay valid until the next proto_decoder_next() or
 * proto_decoder_feed() call.
 */
struct proto_str {
	const char *ptr;
	uint32_t len;
};
/* Copies s's bytes to *at, points s at the copy and moves *at past it:
 * how a decoded string is made to outlive the decoder. */
void proto_str_move(struct proto_str *s, char **at);

/* splitmix64's finaliser: a bijection, so distinct inputs stay distinct,
 * and every bit of x moves every bit of the result.  The client makes its
 * ctx values with it (from a counter), the daemon hashes them with it. */
static inline uint64_t proto_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9u;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebu;
	x ^= x >> 31;
	return x;
}

/* Random and nonzero: the kernel's, or when it has none to give, mixed
 * from the clock and the pid. */
uint64_t proto_random64(void);

/*
 * One record, decoded or to be encoded.  The first six fields are common to
 * every type; the others are meaningful only for the types named beside
 * them and are zero / {NULL, 0} otherwise.
 */
struct proto_record {
	uint8_t type;	/* enum proto_type */
	uint64_t ts;	/* CLOCK_MONOTONIC, ns */
	uint64_t tid;	/* OS thread id (gettid) */
	uint64_t ctx;	/* backend ctx; for BEGIN the new scope, for END the
			   scope being ended; 0: none */
	uint64_t cause; /* true (causal) ctx; 0: none */
	uint32_t site;	/* call site ID (0: none); for SITE the ID defined */

	uint64_t prev;		  /* BEGIN: backend ctx before it */
	uint8_t kind;		  /* BEGIN: enum proto_kind */
	uint64_t cur;		  /* END: backend ctx at that moment */
	uint64_t count;		  /* DROPPED: records dropped */
	uint64_t since;		  /* DROPPED: ts of the first dropped record */
	uint32_t line;		  /* SITE */
	struct proto_str name;	  /* BEGIN (nil allowed), EVENT */
	struct proto_str key;	  /* TAG */
	struct proto_str value;	  /* TAG (nil allowed) */
	struct proto_str message; /* EVENT (nil allowed) */
	struct proto_str file;	  /* SITE */
	struct proto_str func;	  /* SITE */
};

/* The first object on a connection: a msgpack map (see PROTOCOL.md). */
struct proto_hello {
	uint32_t version;	  /* PROTO_VERSION of the sender */
	uint64_t instance;	  /* random per process, new after fork */
	uint32_t pid;		  /* what the process says its pid is */
	struct proto_str app;	  /* application name */
	struct proto_str backend; /* thread | global | task | custom */
	struct proto_str reason;  /* why that backend was chosen */
	int64_t clock_offset;	  /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
	struct proto_str client;  /* client library and version, informative */
	int has_seq;		  /* version 2: seq is there */
	uint64_t seq; /* the stream position of the first record this
			 connection carries: records counted as the
			 RECEIPT counts them, since the process began */
};

/* ---------------------------------------------------------------- limits */

/*
 * Decoder limits.  Every one is enforced before memory is committed, so a
 * stream costs at most about max_object bytes of buffering beyond the
 * bytes of one read.
 */
struct proto_limits {
	uint32_t max_object; /* bytes in one msgpack object */
	uint32_t max_string; /* bytes in one string */
	uint32_t max_array;  /* elements in one array or entries in one map */
	uint32_t max_depth;  /* nesting of arrays and maps */
};

#define PROTO_DEFAULT_MAX_OBJECT (64 * 1024)
#define PROTO_DEFAULT_MAX_STRING (16 * 1024)
#define PROTO_DEFAULT_MAX_ARRAY	 64
#define PROTO_DEFAULT_MAX_DEPTH	 8

void proto_limits_default(struct proto_limits *lim);

/* --------------------------------------------------------------- encoder */

/*
 * Upper bound of the encoded size of a record whose strings total
 * `strings` bytes: every fixed field at its widest encoding, plus a
 * 5-byte header per string.
 */
#define PROTO_RECORD_FIXED_MAX	       96
#define PROTO_RECORD_SIZE_MAX(strings) (PROTO_RECORD_FIXED_MAX + (strings))

/*
 * Append record `r` to buf[0..cap).  Returns the bytes written, or 0 when
 * they would not fit or r->type is not a known type (nothing is written
 * then).  A string field whose ptr is NULL is written as nil where the
 * type allows nil, else as the empty string.  Integers use msgpack's
 * smallest encoding.  Fields that the record's type does not have are not
 * written.  Allocates nothing.
 */
size_t proto_encode_record(void *buf, size_t cap, const struct proto_record *r);

/* Append the HELLO map; same contract as proto_encode_record. */
size_t proto_encode_hello(void *buf, size_t cap, const struct proto_hello *h);

/* --------------------------------------------------------------- decoder */

/* What proto_decoder_next returns.  Errors are sticky: once one is
 * returned, every later call returns it again. */
enum proto_status {
	PROTO_OK = 0,		  /* a message was decoded into *msg */
	PROTO_MORE = 1,		  /* need more bytes */
	PROTO_E_NOT_MSGPACK = -1, /* bytes that are not valid msgpack */
	PROTO_E_TOO_BIG = -2,	  /* an object over max_object bytes */
	PROTO_E_STRING = -3,	  /* a string over max_string bytes */
	PROTO_E_ARRAY = -4,	  /* an array or map over max_array entries */
	PROTO_E_DEPTH = -5,	  /* nesting over max_depth */
	PROTO_E_TYPE = -6,	  /* a field of the wrong msgpack type, or a
				     record that is not an array */
	PROTO_E_SHORT = -7, /* a record with fewer fields than its type has */
	PROTO_E_NO_HELLO = -8, /* a record before HELLO */
	PROTO_E_HELLO = -9,    /* a HELLO that lacks a required key, or a
				  second HELLO */
	PROTO_E_VERSION = -10, /* a HELLO of a newer protocol version */
	PROTO_E_NOMEM = -11,   /* allocation failed */
};

/* A decoded message: the HELLO or one record. */
struct proto_msg {
	int is_hello;
	struct proto_hello hello; /* when is_hello */
	struct proto_record rec;  /* otherwise */
};

struct proto_decoder; /* opaque */

/* lim NULL: proto_limits_default; a zero field of *lim takes its default.
 * max_depth is capped at 32, the deepest nesting msgpack-c decodes.
 * Returns NULL when out of memory. */
struct proto_decoder *proto_decoder_new(const struct proto_limits *lim);
void proto_decoder_free(struct proto_decoder *d);

/*
 * Append len bytes of the stream.  Returns 0, or a negative proto_status
 * (sticky) when the object at the head of the buffer, complete or not,
 * already breaks a limit (its buffered or announced bytes exceed
 * max_object, a string or array header over its limit, ...).  Bytes are
 * copied; buf may be reused at once.  Drain proto_decoder_next() after
 * each feed: the buffer then holds at most one incomplete object.
 */
int proto_decoder_feed(struct proto_decoder *d, const void *buf, size_t len);

/*
 * Decode the next message.  PROTO_OK fills *msg (strings point into the
 * decoder until the next feed/next call); PROTO_MORE means the buffered
 * bytes end inside an object (or are empty).  Records of an unknown type
 * are skipped and counted, never returned.
 */
enum proto_status proto_decoder_next(struct proto_decoder *d,
				     struct proto_msg *msg);

/* A one-line description of the error, with the stream offset at which
 * the offending object starts ("" when there is none). */
const char *proto_decoder_error(const struct proto_decoder *d);

/* Bytes of the stream consumed by complete messages so far. */
uint64_t proto_decoder_offset(const struct proto_decoder *d);

/* Records of an unknown type skipped so far. */
uint64_t proto_decoder_skipped(const struct proto_decoder *d);

/* Bytes buffered but not yet consumed (for memory accounting). */
size_t proto_decoder_buffered(const struct proto_decoder *d);

/* A name for a status ("ok", "not msgpack", ...) and for a record type
 * ("BEGIN", ...; "?" when unknown). */
const char *proto_status_name(enum proto_status st);
const char *proto_type_name(unsigned type);

/* ------------------------------------------------------- daemon messages */

/*
 * What the daemon writes to a client (PROTOCOL.md, sections 2.2 and 2.3),
 * each a msgpack array that starts with its kind:
 *
 *     [PROTO_MSG_RECEIPT, records, dropped, ...]  once, right after HELLO:
 *         what the daemon holds of this process instance from before the
 *         connection, so that a client counts what a daemon crash lost
 *     [PROTO_MSG_ACK, watermark, ...]  version 2 clients only, after each
 *         commit that advanced it: every record of this instance with
 *         ts <= watermark is judged and committed
 *
 * Encoder and parser need no msgpack-c: the client links neither.
 */
#define PROTO_MSG_RECEIPT 1
#define PROTO_MSG_ACK	  2

struct proto_receipt {
	uint64_t records; /* records received, counted as the client counts
			     them: every record but SITE, DROPPED and
			     WATERMARK */
	uint64_t dropped; /* the sum of the DROPPED records' counts */
};

/* A RECEIPT's bytes at most: fixarray, kind, two uint 64. */
#define PROTO_RECEIPT_SIZE_MAX 20
/* An ACK's: fixarray, kind, one uint 64. */
#define PROTO_ACK_SIZE_MAX 11

/* Same contract as proto_encode_record. */
size_t proto_encode_receipt(void *buf, size_t cap,
			    const struct proto_receipt *r);
size_t proto_encode_ack(void *buf, size_t cap, uint64_t watermark);

/* One daemon message, parsed. */
struct proto_reply {
	uint64_t kind;		      /* PROTO_MSG_*, or a later kind */
	struct proto_receipt receipt; /* PROTO_MSG_RECEIPT */
	uint64_t watermark;	      /* PROTO_MSG_ACK */
};

/*
 * The daemon message at the start of buf[0..len): returns its size in
 * bytes and fills *out, 0 when buf ends inside it (nothing is filled), -1
 * when the bytes are not one (not an array that starts with an unsigned
 * kind, or a known kind without its fields).  A message of a later kind
 * is returned with only its kind filled, for the caller to skip; trailing
 * extra elements of any msgpack type are skipped.
 */
int64_t proto_parse_reply(const void *buf, size_t len, struct proto_reply *out);

/* The RECEIPT at the start of buf: as proto_parse_reply, and -1 for any
 * other kind. */
int64_t proto_parse_receipt(const void *buf, size_t len,
			    struct proto_receipt *out);

/*
 * Bytes of the msgpack object at the start of buf[0..len), 0 when buf
 * ends inside it, -1 at a byte that msgpack never uses (0xc1).  Any
 * format and nesting; it reads no byte outside buf.
 */
int64_t proto_object_size(const void *buf, size_t len);

/* --------------------------------------------------------------- framing */

/*
 * A growable byte array that records are encoded into (proto/frame.c):
 * the client's per-thread buffers hand their records over in one, and its
 * shipper sends from them.  Needs no msgpack-c.
 */
struct proto_bytes {
	unsigned char *p;
	size_t len; /* bytes in use */
	size_t cap; /* bytes allocated at p */
};
/* Room for `more` bytes past len (doubling from 4 KiB); -1 when memory
 * lacks, b unchanged. */
int proto_bytes_reserve(struct proto_bytes *b, size_t more);
/* Encodes one record at the end of b; -1 when memory lacks. */
int proto_bytes_record(struct proto_bytes *b, const struct proto_record *r);
void proto_bytes_free(struct proto_bytes *b);

/*
 * Records in a run of them as proto_encode_record wrote them, one after
 * another.  proto_frame_size: bytes of the record at p[0..n), 0 when the
 * run ends inside it.  proto_frame_is_mark (a WATERMARK or a CLOSE,
 * which mark the stream and count as no record) and proto_frame_ts read
 * the record of `size` bytes at p; proto_frame_count: the whole records in
 * p[0..n) other than marks.
 */
size_t proto_frame_size(const void *p, size_t n);
int proto_frame_is_mark(const void *p, size_t size);
uint64_t proto_frame_ts(const void *p, size_t size);
uint64_t proto_frame_count(const void *p, size_t n);

#endif /* CTXLEAK_PROTO_H */
