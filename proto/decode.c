/*
 * decode.c: the streaming decoder of the wire protocol: stream bytes in,
 * in any chunking; the HELLO and typed records out, under hard limits.
 *
 * Why it frames every object itself before msgpack-c sees it: msgpack-c's
 * streaming unpacker allocates the storage for an array's elements as soon
 * as it has parsed the array's header, before the elements arrive, so a
 * 5-byte header (0xdd and a 32-bit count) from a broken or hostile client
 * could make the daemon allocate gigabytes.  So the decoder keeps its own
 * byte buffer and walks the msgpack tokens of the object at its head with a
 * small resumable scanner that checks each string length, element count,
 * nesting depth and the object's size against the limits before anything
 * is allocated.  Only a complete object within the limits is handed to
 * msgpack-c, which decodes it into a zone reused for every object (strings
 * stay in our buffer), and the result is checked against the record
 * layouts into struct proto_msg.
 *
 * Records, nearly all of a stream, mostly skip both: the direct path
 * (below) reads a record in the form the client library writes in one
 * pass, and leaves everything else to the scanner and msgpack-c.
 *
 * Each byte is scanned once however the stream is chunked: the scanner
 * keeps its place (offset and the elements still due per open container)
 * between calls.  The buffer holds the unconsumed bytes only; it is
 * compacted before it grows, so a caller that drains proto_decoder_next()
 * after each feed keeps at most max_object plus one read of bytes.  The
 * zone holds msgpack-c's view of one object only, at most one 24-byte
 * msgpack_object per input byte, and shrinks back to one chunk after it.
 */
#include <msgpack.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* msgpack-c decodes at most this many nested containers: its unpacker's
 * stack is fixed at MSGPACK_EMBED_STACK_SIZE, which its public headers do
 * not export. */
#define MSGPACK_MAX_DEPTH 32

/* Returned inside this file for a record of an unknown type. */
#define DECODE_SKIPPED 2

struct proto_decoder {
	struct proto_limits lim;
	enum proto_status err; /* sticky, once negative */
	char errmsg[256];
	int hello_seen;
	uint64_t skipped;

	char *buf;
	size_t cap;
	size_t head;   /* first unconsumed byte: the current object */
	size_t tail;   /* end of the buffered bytes */
	uint64_t base; /* stream offset of buf[0] */

	/* The scanner, over the object at head. */
	size_t scan;	/* next token; past tail inside a string */
	int framed;	/* the object ends at scan */
	uint32_t depth; /* open containers */

	msgpack_zone zone;
	uint64_t left[]; /* per open container: elements still due */
};

static enum proto_status fail(struct proto_decoder *d, enum proto_status st,
			      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum proto_status fail(struct proto_decoder *d, enum proto_status st,
			      const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(d->errmsg, sizeof(d->errmsg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(d->errmsg))
		snprintf(d->errmsg + n, sizeof(d->errmsg) - (size_t)n,
			 " (object at offset %llu)",
			 (unsigned long long)(d->base + d->head));
	d->err = st;
	return st;
}

/* -------------------------------------------------------------- scanner */

enum token_kind { TOK_SCALAR, TOK_STR, TOK_BIN, TOK_EXT, TOK_ARRAY, TOK_MAP };

struct token {
	enum token_kind kind;
	uint8_t hdr;	 /* bytes before the payload (or the whole scalar) */
	uint8_t lenw;	 /* width of the big-endian length after the type */
	uint32_t fixlen; /* the length, when lenw is 0 */
};

/* A big-endian unsigned integer of 1, 2, 4 or 8 bytes.  Spelt out per
 * width, which compilers turn into one load and a byte swap. */
static inline __attribute__((always_inline)) uint64_t load_be(const uint8_t *p,
							      unsigned width)
{
	switch (width) {
	case 1:
		return p[0];
	case 2:
		return (uint64_t)p[0] << 8 | p[1];
	case 4:
		return (uint64_t)p[0] << 24 | (uint64_t)p[1] << 16 |
		       (uint64_t)p[2] << 8 | p[3];
	default:
		return (uint64_t)p[0] << 56 | (uint64_t)p[1] << 48 |
		       (uint64_t)p[2] << 40 | (uint64_t)p[3] << 32 |
		       (uint64_t)p[4] << 24 | (uint64_t)p[5] << 16 |
		       (uint64_t)p[6] << 8 | p[7];
	}
}

static struct token sized(enum token_kind kind, unsigned lenw)
{
	return (struct token){kind, (uint8_t)(1 + lenw), (uint8_t)lenw, 0};
}

static struct token scalar(unsigned size)
{
	return (struct token){TOK_SCALAR, (uint8_t)size, 0, 0};
}

/* What a type byte announces; hdr 0 for 0xc1, which msgpack never uses. */
static struct token classify(uint8_t b)
{
	if (b <= 0x7f || b >= 0xe0)
		return scalar(1);
	if (b <= 0x8f)
		return (struct token){TOK_MAP, 1, 0, b & 0x0fu};
	if (b <= 0x9f)
		return (struct token){TOK_ARRAY, 1, 0, b & 0x0fu};
	if (b <= 0xbf)
		return (struct token){TOK_STR, 1, 0, b & 0x1fu};
	switch (b) {
	case 0xc0: /* nil */
	case 0xc2: /* false */
	case 0xc3: /* true */
		return scalar(1);
	case 0xc4:
	case 0xc5:
	case 0xc6:
		return sized(TOK_BIN, 1u << (b - 0xc4));
	case 0xc7:
	case 0xc8:
	case 0xc9:
		return sized(TOK_EXT, 1u << (b - 0xc7));
	case 0xca:
		return scalar(5);
	case 0xcb:
		return scalar(9);
	case 0xcc:
	case 0xcd:
	case 0xce:
	case 0xcf:
		return scalar(1 + (1u << (b - 0xcc)));
	case 0xd0:
	case 0xd1:
	case 0xd2:
	case 0xd3:
		return scalar(1 + (1u << (b - 0xd0)));
	case 0xd4:
	case 0xd5:
	case 0xd6:
	case 0xd7:
	case 0xd8:
		return scalar(2 + (1u << (b - 0xd4))); /* fixext: type, data */
	case 0xd9:
	case 0xda:
	case 0xdb:
		return sized(TOK_STR, 1u << (b - 0xd9));
	case 0xdc:
	case 0xdd:
		return sized(TOK_ARRAY, 2u << (b - 0xdc));
	case 0xde:
	case 0xdf:
		return sized(TOK_MAP, 2u << (b - 0xde));
	}
	return (struct token){TOK_SCALAR, 0, 0, 0};
}

/* A value ended: count it against the containers it completes. */
static void value_done(struct proto_decoder *d)
{
	while (d->depth > 0) {
		if (--d->left[d->depth - 1] > 0)
			return;
		d->depth--;
	}
	d->framed = 1;
}

static enum proto_status open_container(struct proto_decoder *d,
					const struct token *t, uint32_t n)
{
	const char *what = t->kind == TOK_MAP ? "map" : "array";

	if (n > d->lim.max_array)
		return fail(d, PROTO_E_ARRAY,
			    "%s of %u %s exceeds the limit of %u", what, n,
			    t->kind == TOK_MAP ? "entries" : "elements",
			    d->lim.max_array);
	if (d->depth >= d->lim.max_depth)
		return fail(d, PROTO_E_DEPTH,
			    "%s nested deeper than the limit of %u levels",
			    what, d->lim.max_depth);
	d->scan += t->hdr;
	if (n == 0) {
		value_done(d);
		return PROTO_OK;
	}
	d->left[d->depth++] = t->kind == TOK_MAP ? 2 * (uint64_t)n : n;
	return PROTO_OK;
}

static enum proto_status skip_payload(struct proto_decoder *d,
				      const struct token *t, uint32_t len)
{
	static const char *const nouns[] = {
	    [TOK_STR] = "string",
	    [TOK_BIN] = "binary",
	    [TOK_EXT] = "extension",
	};

	if (len > d->lim.max_string)
		return fail(d, PROTO_E_STRING,
			    "%s of %u bytes exceeds the limit of %u",
			    nouns[t->kind], len, d->lim.max_string);
	/* An ext's payload starts with its one-byte type. */
	d->scan += t->hdr + (size_t)len + (t->kind == TOK_EXT);
	value_done(d);
	return PROTO_OK;
}

/* One token at d->scan; PROTO_MORE when its header is not all here. */
static enum proto_status scan_token(struct proto_decoder *d)
{
	const uint8_t *p = (const uint8_t *)d->buf + d->scan;
	struct token t;
	uint32_t n;

	if (d->scan >= d->tail)
		return PROTO_MORE;
	t = classify(*p);
	if (t.hdr == 0)
		return fail(d, PROTO_E_NOT_MSGPACK,
			    "byte 0x%02x at offset %llu is not msgpack", *p,
			    (unsigned long long)(d->base + d->scan));
	if (t.kind == TOK_SCALAR) {
		d->scan += t.hdr;
		value_done(d);
		return PROTO_OK;
	}
	if (d->tail - d->scan < t.hdr)
		return PROTO_MORE;
	n = t.lenw ? (uint32_t)load_be(p + 1, t.lenw) : t.fixlen;
	if (t.kind == TOK_ARRAY || t.kind == TOK_MAP)
		return open_container(d, &t, n);
	return skip_payload(d, &t, n);
}

/*
 * Advance the scanner over the object at head.  PROTO_OK when the whole
 * object is buffered (it ends at d->scan), PROTO_MORE when bytes are still
 * due, or an error.
 */
static enum proto_status frame_object(struct proto_decoder *d)
{
	enum proto_status st = PROTO_OK;

	while (!d->framed) {
		st = scan_token(d);
		if (st != PROTO_OK)
			break;
		if (d->scan - d->head > d->lim.max_object)
			return fail(d, PROTO_E_TOO_BIG,
				    "object of at least %zu bytes exceeds the "
				    "limit of %u",
				    d->scan - d->head, d->lim.max_object);
	}
	if (st < 0)
		return st;
	if (!d->framed && d->tail - d->head > d->lim.max_object)
		return fail(d, PROTO_E_TOO_BIG,
			    "object of more than %zu bytes exceeds the limit "
			    "of %u",
			    d->tail - d->head, d->lim.max_object);
	return d->framed && d->scan <= d->tail ? PROTO_OK : PROTO_MORE;
}

/* The object at head is consumed: the scanner moves on to the next. */
static void next_object(struct proto_decoder *d)
{
	d->head = d->scan;
	d->framed = 0;
	d->depth = 0;
}

/* ----------------------------------------------------------- conversion */

/*
 * Field accessors for one message.  The first failure is kept in st and
 * later accessors do nothing, so a layout reads as a plain list of fields.
 */
struct fields {
	struct proto_decoder *d;
	const char *what; /* "HELLO", "BEGIN", ... for error messages */
	enum proto_status st;
};

static const char *object_type_name(msgpack_object_type type)
{
	switch (type) {
	case MSGPACK_OBJECT_NIL:
		return "nil";
	case MSGPACK_OBJECT_BOOLEAN:
		return "a boolean";
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return "an integer";
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return "a float";
	case MSGPACK_OBJECT_STR:
		return "a string";
	case MSGPACK_OBJECT_ARRAY:
		return "an array";
	case MSGPACK_OBJECT_MAP:
		return "a map";
	case MSGPACK_OBJECT_BIN:
		return "a binary";
	case MSGPACK_OBJECT_EXT:
		return "an extension";
	}
	return "?";
}

static int fields_ok(struct fields *f)
{
	return f->st == PROTO_OK;
}

static uint64_t get_uint(struct fields *f, const msgpack_object *o,
			 const char *name, uint64_t max)
{
	if (!fields_ok(f))
		return 0;
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		f->st =
		    fail(f->d, PROTO_E_TYPE, "%s field %s is negative (%lld)",
			 f->what, name, (long long)o->via.i64);
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
		f->st = fail(f->d, PROTO_E_TYPE,
			     "%s field %s is %s, not an unsigned integer",
			     f->what, name, object_type_name(o->type));
		return 0;
	}
	if (o->via.u64 > max) {
		f->st = fail(f->d, PROTO_E_TYPE,
			     "%s field %s is %llu, over its maximum %llu",
			     f->what, name, (unsigned long long)o->via.u64,
			     (unsigned long long)max);
		return 0;
	}
	return o->via.u64;
}

static int64_t get_int(struct fields *f, const msgpack_object *o,
		       const char *name)
{
	if (fields_ok(f) && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return o->via.i64;
	return (int64_t)get_uint(f, o, name, INT64_MAX);
}

enum nil { NIL_REFUSED, NIL_ALLOWED };

static struct proto_str get_str(struct fields *f, const msgpack_object *o,
				const char *name, enum nil nil)
{
	struct proto_str s = {NULL, 0};

	if (!fields_ok(f))
		return s;
	if (o->type == MSGPACK_OBJECT_STR) {
		/* An empty string must stay distinct from nil. */
		s.ptr = o->via.str.size ? o->via.str.ptr : "";
		s.len = o->via.str.size;
		return s;
	}
	if (o->type != MSGPACK_OBJECT_NIL || nil == NIL_REFUSED)
		f->st =
		    fail(f->d, PROTO_E_TYPE, "%s field %s is %s, not %s",
			 f->what, name, object_type_name(o->type),
			 nil == NIL_ALLOWED ? "a string or nil" : "a string");
	return s;
}

/*
 * The layout of each record type: which element holds which field, of
 * what kind, up to what value.  Both decoders below read records through
 * it, so that they cannot disagree on a field.
 */
enum field_kind {
	FIELD_UINT,    /* unsigned integer up to max */
	FIELD_STR,     /* string */
	FIELD_STR_NIL, /* string or nil */
};

struct field {
	const char *name;
	uint8_t kind; /* enum field_kind */
	uint8_t size; /* of the struct proto_record member, for FIELD_UINT */
	uint16_t off; /* of the member in struct proto_record */
	uint64_t max;
};

/* Written by hand: clang-format would split the stringified names from
 * their initialisers. */
/* clang-format off */
#define UINT_FIELD(member, max_value)                                          \
	{#member, FIELD_UINT, sizeof(((struct proto_record *)0)->member),      \
	 offsetof(struct proto_record, member), max_value}
#define STR_FIELD(member, kind)                                                \
	{#member, kind, 0, offsetof(struct proto_record, member), 0}
/* clang-format on */

/* Elements 1 to 5 of every record. */
static const struct field common_fields[] = {
    UINT_FIELD(ts, UINT64_MAX),	  UINT_FIELD(tid, UINT64_MAX),
    UINT_FIELD(ctx, UINT64_MAX),  UINT_FIELD(cause, UINT64_MAX),
    UINT_FIELD(site, UINT32_MAX),
};
#define COMMON_FIELDS (sizeof common_fields / sizeof common_fields[0])
#define MAX_BODY      3

/* Elements from 6 on, per type; a type not named has none. */
static const struct field body_fields[PROTO_TYPE_MAX + 1][MAX_BODY] = {
    [PROTO_SITE] = {STR_FIELD(file, FIELD_STR), UINT_FIELD(line, UINT32_MAX),
		    STR_FIELD(func, FIELD_STR)},
    [PROTO_BEGIN] = {UINT_FIELD(prev, UINT64_MAX),
		     UINT_FIELD(kind, PROTO_KIND_CHILD),
		     STR_FIELD(name, FIELD_STR_NIL)},
    [PROTO_END] = {UINT_FIELD(cur, UINT64_MAX)},
    [PROTO_TAG] = {STR_FIELD(key, FIELD_STR), STR_FIELD(value, FIELD_STR_NIL)},
    [PROTO_EVENT] = {STR_FIELD(name, FIELD_STR),
		     STR_FIELD(message, FIELD_STR_NIL)},
    [PROTO_DROPPED] = {UINT_FIELD(count, UINT64_MAX),
		       UINT_FIELD(since, UINT64_MAX)},
};

/* Field i (0: the first after the type) of a record of r's type. */
static const struct field *field_at(const struct proto_record *r, unsigned i)
{
	return i < COMMON_FIELDS ? &common_fields[i]
				 : &body_fields[r->type][i - COMMON_FIELDS];
}

static void set_uint(struct proto_record *r, const struct field *fd, uint64_t v)
{
	char *at = (char *)r + fd->off;

	/* fd->max fits the member: the value was checked against it. */
	switch (fd->size) {
	case sizeof(uint8_t):
		*(uint8_t *)at = (uint8_t)v;
		break;
	case sizeof(uint32_t):
		*(uint32_t *)at = (uint32_t)v;
		break;
	default:
		*(uint64_t *)at = v;
	}
}

static void set_str(struct proto_record *r, const struct field *fd,
		    struct proto_str s)
{
	*(struct proto_str *)((char *)r + fd->off) = s;
}

static enum proto_status to_record(struct proto_decoder *d,
				   const msgpack_object_array *a,
				   struct proto_record *r)
{
	struct fields f = {d, "record", PROTO_OK};
	const msgpack_object *e = a->ptr;
	uint64_t type;

	if (!d->hello_seen)
		return fail(d, PROTO_E_NO_HELLO, "record before HELLO");
	if (a->size == 0)
		return fail(d, PROTO_E_SHORT, "empty record");
	type = get_uint(&f, &e[0], "type", UINT64_MAX);
	if (!fields_ok(&f))
		return f.st;
	if (type == 0)
		return fail(d, PROTO_E_TYPE, "record of type 0");
	if (type > PROTO_TYPE_MAX) {
		d->skipped++;
		return DECODE_SKIPPED;
	}
	r->type = (uint8_t)type;
	f.what = proto_type_name(r->type);
	if (a->size < proto_type_fields[type])
		return fail(d, PROTO_E_SHORT,
			    "%s record of %u elements; it has %u", f.what,
			    a->size, proto_type_fields[type]);
	for (unsigned i = 0; i + 1 < proto_type_fields[type]; i++) {
		const struct field *fd = field_at(r, i);

		if (fd->kind == FIELD_UINT)
			set_uint(r, fd,
				 get_uint(&f, &e[i + 1], fd->name, fd->max));
		else
			set_str(r, fd,
				get_str(&f, &e[i + 1], fd->name,
					fd->kind == FIELD_STR_NIL
					    ? NIL_ALLOWED
					    : NIL_REFUSED));
	}
	return f.st;
}

static const msgpack_object *map_get(const msgpack_object_map *m,
				     const char *key)
{
	size_t len = strlen(key);

	for (uint32_t i = 0; i < m->size; i++) {
		const msgpack_object *k = &m->ptr[i].key;

		if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
		    memcmp(k->via.str.ptr, key, len) == 0)
			return &m->ptr[i].val;
	}
	return NULL;
}

static const msgpack_object *
required(struct fields *f, const msgpack_object_map *m, const char *key)
{
	const msgpack_object *o = map_get(m, key);

	if (!o && fields_ok(f))
		f->st = fail(f->d, PROTO_E_HELLO,
			     "HELLO lacks the required key %s", key);
	return o;
}

static struct proto_str
optional_str(struct fields *f, const msgpack_object_map *m, const char *key)
{
	const msgpack_object *o = map_get(m, key);
	struct proto_str none = {NULL, 0};

	return o ? get_str(f, o, key, NIL_ALLOWED) : none;
}

/* The version comes first: a newer HELLO may differ in any other key. */
static void get_version(struct fields *f, const msgpack_object_map *m,
			struct proto_hello *h)
{
	const msgpack_object *o = required(f, m, "version");
	uint64_t version = o ? get_uint(f, o, "version", UINT64_MAX) : 0;

	if (!fields_ok(f))
		return;
	if (version > PROTO_VERSION)
		f->st = fail(f->d, PROTO_E_VERSION,
			     "HELLO of protocol version %llu; this side "
			     "speaks up to version %d",
			     (unsigned long long)version, PROTO_VERSION);
	else if (version == 0)
		f->st = fail(f->d, PROTO_E_HELLO, "HELLO of version 0");
	h->version = (uint32_t)version;
}

static enum proto_status to_hello(struct proto_decoder *d,
				  const msgpack_object_map *m,
				  struct proto_hello *h)
{
	struct fields f = {d, "HELLO", PROTO_OK};
	const msgpack_object *o;

	if (d->hello_seen)
		return fail(d, PROTO_E_HELLO, "second HELLO on the connection");
	get_version(&f, m, h);
	o = required(&f, m, "instance");
	h->instance = o ? get_uint(&f, o, "instance", UINT64_MAX) : 0;
	if (fields_ok(&f) && h->instance == 0)
		f.st = fail(d, PROTO_E_HELLO, "HELLO instance is 0");
	o = required(&f, m, "pid");
	h->pid = o ? (uint32_t)get_uint(&f, o, "pid", UINT32_MAX) : 0;
	h->app = optional_str(&f, m, "app");
	h->backend = optional_str(&f, m, "backend");
	h->reason = optional_str(&f, m, "reason");
	h->client = optional_str(&f, m, "client");
	o = map_get(m, "clock_offset");
	h->clock_offset = o ? get_int(&f, o, "clock_offset") : 0;
	o = map_get(m, "seq");
	h->has_seq = o != NULL && h->version >= 2;
	h->seq = h->has_seq ? get_uint(&f, o, "seq", UINT64_MAX) : 0;
	if (fields_ok(&f))
		d->hello_seen = 1;
	return f.st;
}

static enum proto_status to_msg(struct proto_decoder *d,
				const msgpack_object *o, struct proto_msg *msg)
{
	memset(msg, 0, sizeof(*msg));
	if (o->type == MSGPACK_OBJECT_ARRAY)
		return to_record(d, &o->via.array, &msg->rec);
	if (o->type == MSGPACK_OBJECT_MAP) {
		msg->is_hello = 1;
		return to_hello(d, &o->via.map, &msg->hello);
	}
	return fail(d, PROTO_E_TYPE,
		    "top-level object is %s, not a record array or HELLO map",
		    object_type_name(o->type));
}

/* ---------------------------------------------------------- direct path */

/*
 * Why records have a second decoder: a record is a flat array of integers
 * and strings, and the general path reads each byte twice (the scanner,
 * then msgpack-c) and builds an object tree only to copy fields out of it:
 * three quarters of what decoding cost the daemon.  The direct path reads
 * a record in the form the client library writes (a fixarray of exactly
 * its type's fields: unsigned integers, strings, nil where allowed) in one
 * pass straight into the struct proto_record, under the same limits.
 * Anything else (a HELLO, a record with more fields, a signed encoding, a
 * value out of range, a record not all buffered yet) makes it give up
 * without a trace, and the general path decodes the same bytes and says
 * what is wrong: the direct path changes how fast a stream decodes, never
 * what it decodes to.
 */
struct cursor {
	const uint8_t *p, *end;
	int ok; /* 0 once anything was not as expected */
};

static inline __attribute__((always_inline)) uint64_t
direct_uint(struct cursor *c, uint64_t max)
{
	const uint8_t *p = c->p;
	unsigned width;
	uint64_t v;

	if (p < c->end && *p <= 0x7f) {
		c->p = p + 1;
		v = *p;
	} else if (p < c->end && *p >= 0xcc && *p <= 0xcf) {
		width = 1u << (*p - 0xcc);
		if ((size_t)(c->end - p) <= width) {
			c->ok = 0;
			return 0;
		}
		v = load_be(p + 1, width);
		c->p = p + 1 + width;
	} else {
		c->ok = 0;
		return 0;
	}
	if (v > max)
		c->ok = 0;
	return v;
}

static struct proto_str direct_str(struct cursor *c, uint32_t max_len,
				   int nil_allowed)
{
	const uint8_t *p = c->p;
	struct proto_str s = {NULL, 0};
	size_t hdr;
	uint32_t len;

	if (p < c->end && *p == 0xc0 && nil_allowed) {
		c->p = p + 1;
		return s;
	}
	if (p < c->end && *p >= 0xa0 && *p <= 0xbf) {
		hdr = 1;
		len = *p & 0x1fu;
	} else if (p < c->end && *p >= 0xd9 && *p <= 0xdb &&
		   (size_t)(c->end - p) > (1u << (*p - 0xd9))) {
		hdr = 1 + (1u << (*p - 0xd9));
		len = (uint32_t)load_be(p + 1, (unsigned)hdr - 1);
	} else {
		c->ok = 0;
		return s;
	}
	if (len > max_len || (size_t)(c->end - p) - hdr < len) {
		c->ok = 0;
		return s;
	}
	/* As get_str: an empty string must stay distinct from nil. */
	s.ptr = len ? (const char *)p + hdr : "";
	s.len = len;
	c->p = p + hdr + len;
	return s;
}

/*
 * The fields of a record of the given type.  Inlined with a constant type
 * and unrolled (gcc and clang both take the pragma), so that the compiler
 * lays out each type's fields from the layout table at compile time: the
 * table stays the only statement of the layout, and a record costs no
 * lookups in it (-40% of the direct path's instructions).
 */
static inline __attribute__((always_inline)) void
direct_fields(struct cursor *c, struct proto_record *r, unsigned type,
	      uint32_t max_string)
{
#pragma GCC unroll 8
	for (unsigned i = 0; i < COMMON_FIELDS + MAX_BODY; i++) {
		const struct field *fd =
		    i < COMMON_FIELDS ? &common_fields[i]
				      : &body_fields[type][i - COMMON_FIELDS];

		if (fd->name == NULL)
			break;
		if (fd->kind == FIELD_UINT)
			set_uint(r, fd, direct_uint(c, fd->max));
		else
			set_str(r, fd,
				direct_str(c, max_string,
					   fd->kind == FIELD_STR_NIL));
	}
}

/*
 * The record at head, if it is all in buf[head, end) and in the direct
 * path's form: then it is in *msg, consumed, and the result is 1.
 * Otherwise 0, with nothing changed but *msg.
 */
static int direct_record(struct proto_decoder *d, size_t end,
			 struct proto_msg *msg)
{
	static const struct proto_record zero_record;
	const uint8_t *start = (const uint8_t *)d->buf + d->head;
	struct cursor c = {start + 1, (const uint8_t *)d->buf + end, 1};
	struct proto_record *r = &msg->rec;
	unsigned n;
	uint64_t type;

	if (!d->hello_seen || d->head >= end || (*start & 0xf0) != 0x90)
		return 0;
	n = *start & 0x0fu;
	type = direct_uint(&c, PROTO_TYPE_MAX);
	if (!c.ok || type == 0 || n != proto_type_fields[type] ||
	    n > d->lim.max_array)
		return 0;
	/* Cleared by copying a zero record, not by memset: compilers make
	 * the memset a `rep stos`, whose start-up cost a third of this
	 * function.  The hello part is not read for a record. */
	msg->is_hello = 0;
	*r = zero_record;
	r->type = (uint8_t)type;
	/* A case per type, each with its own constant for direct_fields. */
#define DIRECT_CASE(t)                                                         \
	case t:                                                                \
		direct_fields(&c, r, t, d->lim.max_string);                    \
		break
	switch (type) {
		DIRECT_CASE(PROTO_SITE);
		DIRECT_CASE(PROTO_BEGIN);
		DIRECT_CASE(PROTO_END);
		DIRECT_CASE(PROTO_TAG);
		DIRECT_CASE(PROTO_EVENT);
		DIRECT_CASE(PROTO_DROPPED);
	default: /* the types with the common fields only */
		direct_fields(&c, r, PROTO_RESUME, d->lim.max_string);
	}
#undef DIRECT_CASE
	if (!c.ok || (size_t)(c.p - start) > d->lim.max_object)
		return 0;
	d->scan = (size_t)((const char *)c.p - d->buf);
	next_object(d);
	return 1;
}

/*
 * The framed object at head, through msgpack-c, into *msg.  msgpack_unpack
 * with our own zone, cleared after each object, rather than
 * msgpack_unpack_next: the latter frees its zone and makes a new one (two
 * mallocs) for every object.
 */
static enum proto_status decode_object(struct proto_decoder *d,
				       struct proto_msg *msg)
{
	size_t off = 0;
	msgpack_object obj;
	msgpack_unpack_return ret;
	enum proto_status st;

	if (direct_record(d, d->scan, msg))
		return PROTO_OK;
	ret = msgpack_unpack(d->buf + d->head, d->scan - d->head, &off,
			     &d->zone, &obj);
	if (ret == MSGPACK_UNPACK_NOMEM_ERROR)
		st = fail(d, PROTO_E_NOMEM, "out of memory decoding");
	else if (ret != MSGPACK_UNPACK_SUCCESS)
		st = fail(d, PROTO_E_NOT_MSGPACK, "msgpack-c rejected it");
	else
		st = to_msg(d, &obj, msg);
	msgpack_zone_clear(&d->zone);
	if (st == PROTO_OK || st == DECODE_SKIPPED)
		next_object(d);
	return st;
}

/* ------------------------------------------------------------------ API */

struct proto_decoder *proto_decoder_new(const struct proto_limits *lim)
{
	struct proto_limits l;
	struct proto_decoder *d;

	proto_limits_default(&l);
	if (lim) {
		l.max_object = lim->max_object ? lim->max_object : l.max_object;
		l.max_string = lim->max_string ? lim->max_string : l.max_string;
		l.max_array = lim->max_array ? lim->max_array : l.max_array;
		l.max_depth = lim->max_depth ? lim->max_depth : l.max_depth;
	}
	if (l.max_depth > MSGPACK_MAX_DEPTH)
		l.max_depth = MSGPACK_MAX_DEPTH;
	d = calloc(1, sizeof(*d) + l.max_depth * sizeof(d->left[0]));
	if (!d)
		return NULL;
	d->lim = l;
	if (!msgpack_zone_init(&d->zone, MSGPACK_ZONE_CHUNK_SIZE)) {
		free(d);
		return NULL;
	}
	return d;
}

void proto_decoder_free(struct proto_decoder *d)
{
	if (!d)
		return;
	msgpack_zone_destroy(&d->zone);
	free(d->buf);
	free(d);
}

/* Room for len more bytes: drop the consumed ones first, grow if still
 * short. */
static int make_room(struct proto_decoder *d, size_t len)
{
	size_t need;
	char *nbuf;

	if (d->head > 0) {
		memmove(d->buf, d->buf + d->head, d->tail - d->head);
		d->base += d->head;
		d->scan -= d->head;
		d->tail -= d->head;
		d->head = 0;
	}
	if (d->cap - d->tail >= len)
		return 0;
	if (len > SIZE_MAX - d->tail - 4096)
		return -1;
	need = (d->tail + len + 4095) & ~(size_t)4095;
	nbuf = realloc(d->buf, need);
	if (!nbuf)
		return -1;
	d->buf = nbuf;
	d->cap = need;
	return 0;
}

int proto_decoder_feed(struct proto_decoder *d, const void *buf, size_t len)
{
	if (d->err)
		return d->err;
	if (len == 0)
		return 0;
	if (d->cap - d->tail < len && make_room(d, len) < 0)
		return fail(d, PROTO_E_NOMEM,
			    "out of memory buffering %zu bytes", len);
	memcpy(d->buf + d->tail, buf, len);
	d->tail += len;
	if (!d->framed) {
		enum proto_status st = frame_object(d);

		if (st < 0)
			return st;
	}
	return 0;
}

enum proto_status proto_decoder_next(struct proto_decoder *d,
				     struct proto_msg *msg)
{
	enum proto_status st;

	do {
		if (d->err)
			return d->err;
		/* Unscanned yet: most records decode without the scanner. */
		if (d->scan == d->head && direct_record(d, d->tail, msg))
			return PROTO_OK;
		st = frame_object(d);
		if (st != PROTO_OK)
			return st;
		st = decode_object(d, msg);
	} while (st == (enum proto_status)DECODE_SKIPPED);
	return st;
}

const char *proto_decoder_error(const struct proto_decoder *d)
{
	return d->errmsg;
}

uint64_t proto_decoder_offset(const struct proto_decoder *d)
{
	return d->base + d->head;
}

uint64_t proto_decoder_skipped(const struct proto_decoder *d)
{
	return d->skipped;
}

size_t proto_decoder_buffered(const struct proto_decoder *d)
{
	return d->tail - d->head;
}
