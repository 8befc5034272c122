/*
 * test_proto.c: tests of the wire protocol in proto/: the encoder against
 * msgpack-c's packer, the decoder's round trips, chunking, limits and
 * malformed input, and the daemon's RECEIPT with the object bounds its
 * parser uses, and the framing of records in a run of them (frame.c).
 */
#include <check.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "proto.h"

/* ------------------------------------------------------------ helpers */

static struct proto_str str_of(const char *s)
{
	return (struct proto_str){s, (uint32_t)strlen(s)};
}

static struct proto_hello sample_hello(void)
{
	struct proto_hello h = {
	    .version = PROTO_VERSION,
	    .instance = 0x1234567890abcdefULL,
	    .pid = 4242,
	    .app = str_of("worker"),
	    .backend = str_of("thread"),
	    .reason = str_of("no scheduler integration"),
	    .clock_offset = 1700000000123456789LL,
	    .client = str_of("libctxleak 0.1.0"),
	};
	return h;
}

/* One record of every type, with ordinary values. */
static size_t sample_records(struct proto_record *out)
{
	struct proto_record r[] = {
	    {.type = PROTO_SITE,
	     .ts = 100,
	     .tid = 7,
	     .site = 1,
	     .file = str_of("server.c"),
	     .line = 142,
	     .func = str_of("on_db_reply")},
	    {.type = PROTO_BEGIN,
	     .ts = 101,
	     .tid = 7,
	     .ctx = 0xa1,
	     .cause = 0,
	     .site = 1,
	     .prev = 0,
	     .kind = PROTO_KIND_REQUEST,
	     .name = str_of("GET /a")},
	    {.type = PROTO_TAG,
	     .ts = 102,
	     .tid = 7,
	     .ctx = 0xa1,
	     .cause = 0xa1,
	     .site = 1,
	     .key = str_of("user"),
	     .value = str_of("alice")},
	    {.type = PROTO_EVENT,
	     .ts = 103,
	     .tid = 7,
	     .ctx = 0xa1,
	     .cause = 0xa1,
	     .site = 1,
	     .name = str_of("db.done"),
	     .message = str_of("3 rows")},
	    {.type = PROTO_RESUME,
	     .ts = 104,
	     .tid = 8,
	     .ctx = 0,
	     .cause = 0xa1,
	     .site = 1},
	    {.type = PROTO_SUSPEND,
	     .ts = 105,
	     .tid = 8,
	     .ctx = 0xa1,
	     .cause = 0xa1,
	     .site = 1},
	    {.type = PROTO_END,
	     .ts = 106,
	     .tid = 7,
	     .ctx = 0xa1,
	     .cause = 0xa1,
	     .site = 1,
	     .cur = 0xa1},
	    {.type = PROTO_DROPPED,
	     .ts = 107,
	     .tid = 7,
	     .count = 12,
	     .since = 90},
	    {.type = PROTO_WATERMARK, .ts = 108, .tid = 7},
	};
	memcpy(out, r, sizeof(r));
	return sizeof(r) / sizeof(r[0]);
}

static int str_equal(struct proto_str a, struct proto_str b)
{
	if (!a.ptr || !b.ptr)
		return a.ptr == b.ptr;
	return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* Check marks every passed assertion with a write to its pipe, so hot
 * loops compare first and assert field by field only on a mismatch. */
static int record_equal(const struct proto_record *a,
			const struct proto_record *b)
{
	return a->type == b->type && a->ts == b->ts && a->tid == b->tid &&
	       a->ctx == b->ctx && a->cause == b->cause && a->site == b->site &&
	       a->prev == b->prev && a->kind == b->kind && a->cur == b->cur &&
	       a->count == b->count && a->since == b->since &&
	       a->line == b->line && str_equal(a->name, b->name) &&
	       str_equal(a->key, b->key) && str_equal(a->value, b->value) &&
	       str_equal(a->message, b->message) &&
	       str_equal(a->file, b->file) && str_equal(a->func, b->func);
}

static void ck_str_eq(struct proto_str got, struct proto_str want)
{
	if (!want.ptr) {
		ck_assert_ptr_null(got.ptr);
		return;
	}
	ck_assert_ptr_nonnull(got.ptr);
	ck_assert_uint_eq(got.len, want.len);
	ck_assert(memcmp(got.ptr, want.ptr, want.len) == 0);
}

static void ck_record_eq(const struct proto_record *got,
			 const struct proto_record *want)
{
	if (record_equal(got, want))
		return;
	ck_assert_uint_eq(got->type, want->type);
	ck_assert_uint_eq(got->ts, want->ts);
	ck_assert_uint_eq(got->tid, want->tid);
	ck_assert_uint_eq(got->ctx, want->ctx);
	ck_assert_uint_eq(got->cause, want->cause);
	ck_assert_uint_eq(got->site, want->site);
	ck_assert_uint_eq(got->prev, want->prev);
	ck_assert_uint_eq(got->kind, want->kind);
	ck_assert_uint_eq(got->cur, want->cur);
	ck_assert_uint_eq(got->count, want->count);
	ck_assert_uint_eq(got->since, want->since);
	ck_assert_uint_eq(got->line, want->line);
	ck_str_eq(got->name, want->name);
	ck_str_eq(got->key, want->key);
	ck_str_eq(got->value, want->value);
	ck_str_eq(got->message, want->message);
	ck_str_eq(got->file, want->file);
	ck_str_eq(got->func, want->func);
}

static void ck_hello_eq(const struct proto_hello *got,
			const struct proto_hello *want)
{
	ck_assert_uint_eq(got->version, want->version);
	ck_assert_uint_eq(got->instance, want->instance);
	ck_assert_uint_eq(got->pid, want->pid);
	ck_assert_int_eq(got->clock_offset, want->clock_offset);
	ck_str_eq(got->app, want->app);
	ck_str_eq(got->backend, want->backend);
	ck_str_eq(got->reason, want->reason);
	ck_str_eq(got->client, want->client);
}

/* Bytes grown by the tests; freed by each test. */
struct bytes {
	uint8_t *p;
	size_t len, cap;
};

static void bytes_reserve(struct bytes *b, size_t n)
{
	if (b->cap - b->len >= n)
		return;
	b->cap = (b->len + n) * 2;
	b->p = realloc(b->p, b->cap);
	ck_assert_ptr_nonnull(b->p);
}

static void add_hello(struct bytes *b, const struct proto_hello *h)
{
	size_t n;

	bytes_reserve(b, 4096);
	n = proto_encode_hello(b->p + b->len, b->cap - b->len, h);
	ck_assert_uint_gt(n, 0);
	b->len += n;
}

static void add_record(struct bytes *b, const struct proto_record *r)
{
	size_t n;

	bytes_reserve(b, PROTO_RECORD_SIZE_MAX(128 * 1024));
	n = proto_encode_record(b->p + b->len, b->cap - b->len, r);
	ck_assert_uint_gt(n, 0);
	b->len += n;
}

/* msgpack-c's packer into a growing buffer: the reference encoder, and the
 * way malformed input is built. */
struct pk {
	msgpack_sbuffer sb;
	msgpack_packer pk;
};

static void pk_init(struct pk *p)
{
	msgpack_sbuffer_init(&p->sb);
	msgpack_packer_init(&p->pk, &p->sb, msgpack_sbuffer_write);
}

static void pk_str(struct pk *p, const char *s)
{
	msgpack_pack_str_with_body(&p->pk, s, strlen(s));
}

static void pk_pstr(struct pk *p, struct proto_str s, int nil_ok)
{
	if (!s.ptr && nil_ok)
		msgpack_pack_nil(&p->pk);
	else
		msgpack_pack_str_with_body(&p->pk, s.ptr ? s.ptr : "",
					   s.ptr ? s.len : 0);
}

/* The record layout of PROTOCOL.md, written with msgpack-c. */
static void pk_record(struct pk *p, const struct proto_record *r)
{
	int scoped = r->type != PROTO_SITE && r->type != PROTO_DROPPED &&
		     r->type != PROTO_WATERMARK && r->type != PROTO_CLOSE;
	int sited = r->type != PROTO_DROPPED && r->type != PROTO_WATERMARK &&
		    r->type != PROTO_CLOSE;

	msgpack_pack_array(&p->pk, proto_type_fields[r->type]);
	msgpack_pack_uint64(&p->pk, r->type);
	msgpack_pack_uint64(&p->pk, r->ts);
	msgpack_pack_uint64(&p->pk, r->tid);
	msgpack_pack_uint64(&p->pk, scoped ? r->ctx : 0);
	msgpack_pack_uint64(&p->pk, scoped ? r->cause : 0);
	msgpack_pack_uint32(&p->pk, sited ? r->site : 0);
	switch (r->type) {
	case PROTO_SITE:
		pk_pstr(p, r->file, 0);
		msgpack_pack_uint32(&p->pk, r->line);
		pk_pstr(p, r->func, 0);
		break;
	case PROTO_BEGIN:
		msgpack_pack_uint64(&p->pk, r->prev);
		msgpack_pack_uint8(&p->pk, r->kind);
		pk_pstr(p, r->name, 1);
		break;
	case PROTO_END:
		msgpack_pack_uint64(&p->pk, r->cur);
		break;
	case PROTO_TAG:
		pk_pstr(p, r->key, 0);
		pk_pstr(p, r->value, 1);
		break;
	case PROTO_EVENT:
		pk_pstr(p, r->name, 0);
		pk_pstr(p, r->message, 1);
		break;
	case PROTO_DROPPED:
		msgpack_pack_uint64(&p->pk, r->count);
		msgpack_pack_uint64(&p->pk, r->since);
		break;
	}
}

static void pk_opt(struct pk *p, const char *key, struct proto_str s)
{
	if (!s.ptr)
		return;
	pk_str(p, key);
	pk_pstr(p, s, 0);
}

static void pk_hello(struct pk *p, const struct proto_hello *h)
{
	unsigned keys = 4 + !!h->app.ptr + !!h->backend.ptr + !!h->reason.ptr +
			!!h->client.ptr;

	msgpack_pack_map(&p->pk, keys);
	pk_str(p, "version");
	msgpack_pack_uint32(&p->pk, h->version);
	pk_str(p, "instance");
	msgpack_pack_uint64(&p->pk, h->instance);
	pk_str(p, "pid");
	msgpack_pack_uint32(&p->pk, h->pid);
	pk_opt(p, "app", h->app);
	pk_opt(p, "backend", h->backend);
	pk_opt(p, "reason", h->reason);
	pk_str(p, "clock_offset");
	msgpack_pack_int64(&p->pk, h->clock_offset);
	pk_opt(p, "client", h->client);
}

/* A decoder that has taken the sample HELLO. */
static struct proto_decoder *decoder_after_hello(const struct proto_limits *l)
{
	struct proto_decoder *d = proto_decoder_new(l);
	struct bytes b = {0};
	struct proto_hello h = sample_hello();
	struct proto_msg msg;

	ck_assert_ptr_nonnull(d);
	add_hello(&b, &h);
	ck_assert_int_eq(proto_decoder_feed(d, b.p, b.len), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_assert(msg.is_hello);
	free(b.p);
	return d;
}

/* Integers at every boundary of msgpack's formats. */
static const uint64_t edge_uints[] = {
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    UINT32_MAX,
    (uint64_t)UINT32_MAX + 1,
    UINT64_MAX - 1,
    UINT64_MAX,
};
#define N_EDGE_UINTS (sizeof(edge_uints) / sizeof(edge_uints[0]))

static const int64_t edge_ints[] = {
    INT64_MIN, (int64_t)INT32_MIN - 1,
    INT32_MIN, -32769,
    -32768,    -129,
    -128,      -33,
    -32,       -1,
    0,	       127,
    128,       65536,
    INT64_MAX,
};
#define N_EDGE_INTS (sizeof(edge_ints) / sizeof(edge_ints[0]))

/* Strings at every boundary of msgpack's str formats, plus a NUL and
 * UTF-8.  Static, so that records may point at them. */
static char big_string[70100];

static struct proto_str edge_str(unsigned i)
{
	/* The encoder's small-copy sizes, then msgpack's str formats. */
	static const uint32_t lens[] = {
	    0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 255, 256, 65535, 65536};
	static const unsigned n = sizeof(lens) / sizeof(lens[0]);
	static const char nul[] = "a\0b\0";
	static const char utf8[] =
	    "Gr\xc3\xbc\xc3\x9f \xe2\x9c\x93 \xf0\x9f\x90\x8d";

	if (!big_string[0])
		for (size_t k = 0; k < sizeof(big_string); k++)
			big_string[k] = (char)('a' + k % 26);
	if (i < n)
		return (struct proto_str){big_string + i, lens[i]};
	if (i == n)
		return (struct proto_str){nul, sizeof(nul) - 1};
	if (i == n + 1)
		return (struct proto_str){utf8, sizeof(utf8) - 1};
	return (struct proto_str){NULL, 0};
}
#define EDGE_NUL    17
#define EDGE_UTF8   18
#define EDGE_NIL    19
#define N_EDGE_STRS 20

/* ----------------------------------------------------------- encoder */

static void ck_encoder_matches(const struct proto_record *r)
{
	struct pk p;
	size_t cap = PROTO_RECORD_SIZE_MAX(2 * 70000);
	uint8_t *buf = malloc(cap);
	size_t n;

	pk_init(&p);
	pk_record(&p, r);
	n = proto_encode_record(buf, cap, r);
	ck_assert_uint_eq(n, p.sb.size);
	ck_assert_mem_eq(buf, p.sb.data, n);
	msgpack_sbuffer_destroy(&p.sb);
	free(buf);
}

START_TEST(test_encode_uints_match_msgpack_c)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs);

	for (size_t i = 0; i < n; i++) {
		for (size_t v = 0; v < N_EDGE_UINTS; v++) {
			struct proto_record r = recs[i];
			uint64_t x = edge_uints[v];

			r.ts = r.tid = r.ctx = r.cause = x;
			r.prev = r.cur = r.count = r.since = x;
			r.site = r.line = (uint32_t)x;
			ck_encoder_matches(&r);
		}
	}
}
END_TEST

START_TEST(test_encode_strings_match_msgpack_c)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs);

	for (size_t i = 0; i < n; i++) {
		for (unsigned k = 0; k < N_EDGE_STRS; k++) {
			struct proto_record r = recs[i];
			struct proto_str s = edge_str(k);

			r.name = r.key = r.value = r.message = s;
			r.file = r.func = s;
			ck_encoder_matches(&r);
		}
	}
}
END_TEST

START_TEST(test_encode_hello_matches_msgpack_c)
{
	uint8_t buf[512];

	for (size_t i = 0; i < N_EDGE_INTS; i++) {
		struct proto_hello h = sample_hello();
		struct pk p;
		size_t n;

		h.clock_offset = edge_ints[i];
		h.instance = edge_uints[i % N_EDGE_UINTS];
		h.pid = (uint32_t)edge_uints[(i + 3) % N_EDGE_UINTS];
		if (i % 2)
			h.reason = h.client = (struct proto_str){NULL, 0};
		if (i % 3 == 0)
			h.app = (struct proto_str){NULL, 0};
		pk_init(&p);
		pk_hello(&p, &h);
		n = proto_encode_hello(buf, sizeof(buf), &h);
		ck_assert_uint_eq(n, p.sb.size);
		ck_assert_mem_eq(buf, p.sb.data, n);
		msgpack_sbuffer_destroy(&p.sb);
	}
}
END_TEST

/* Sentinel bytes stay untouched when the record does not fit. */
static void ck_cap_exact(const void *what, int hello)
{
	uint8_t buf[PROTO_RECORD_SIZE_MAX(1024)];
	size_t need;

	need = hello ? proto_encode_hello(buf, sizeof(buf), what)
		     : proto_encode_record(buf, sizeof(buf), what);
	ck_assert_uint_gt(need, 0);
	for (size_t cap = 0; cap <= need; cap++) {
		size_t n;

		memset(buf, 0xee, sizeof(buf));
		n = hello ? proto_encode_hello(buf, cap, what)
			  : proto_encode_record(buf, cap, what);
		ck_assert_uint_eq(n, cap == need ? need : 0);
		for (size_t i = n; i < sizeof(buf); i++)
			if (buf[i] != 0xee)
				ck_abort_msg("cap %zu: byte %zu written", cap,
					     i);
	}
}

START_TEST(test_encode_cap_too_small)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs);
	struct proto_hello h = sample_hello();

	for (size_t i = 0; i < n; i++) {
		ck_cap_exact(&recs[i], 0);
		recs[i].ts = recs[i].ctx = recs[i].prev = UINT64_MAX;
		ck_cap_exact(&recs[i], 0);
	}
	ck_cap_exact(&h, 1);
}
END_TEST

START_TEST(test_encode_size_bound)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs);
	uint8_t buf[PROTO_RECORD_SIZE_MAX(1024)];

	for (size_t i = 0; i < n; i++) {
		struct proto_record r = recs[i];
		size_t strings = 0;

		r.ts = r.tid = r.ctx = r.cause = r.prev = UINT64_MAX;
		r.cur = r.count = r.since = UINT64_MAX;
		r.site = r.line = UINT32_MAX;
		r.kind = PROTO_KIND_CHILD;
		if (r.file.ptr)
			strings = r.file.len + r.func.len;
		else if (r.key.ptr)
			strings = r.key.len + r.value.len;
		else if (r.name.ptr)
			strings = r.name.len + r.message.len;
		ck_assert_uint_le(proto_encode_record(buf, sizeof(buf), &r),
				  PROTO_RECORD_SIZE_MAX(strings));
	}
}
END_TEST

START_TEST(test_encode_unknown_type_writes_nothing)
{
	struct proto_record r = {.type = 0, .ts = 1};
	uint8_t buf[256];

	memset(buf, 0xee, sizeof(buf));
	ck_assert_uint_eq(proto_encode_record(buf, sizeof(buf), &r), 0);
	r.type = PROTO_TYPE_MAX + 1;
	ck_assert_uint_eq(proto_encode_record(buf, sizeof(buf), &r), 0);
	ck_assert_uint_eq(buf[0], 0xee);
}
END_TEST

/* A required string left NULL goes out as "", an optional one as nil. */
START_TEST(test_encode_null_strings)
{
	struct proto_record r = {.type = PROTO_TAG, .ts = 1};
	static const uint8_t want[] = {0x98, 4, 1, 0, 0, 0, 0, 0xa0, 0xc0};
	uint8_t buf[64];

	ck_assert_uint_eq(proto_encode_record(buf, sizeof(buf), &r),
			  sizeof(want));
	ck_assert_mem_eq(buf, want, sizeof(want));
}
END_TEST

static Suite *encoder_suite(void)
{
	return check_suite(
	    "encoder",
	    check_tcase("core", 0, test_encode_uints_match_msgpack_c,
			test_encode_strings_match_msgpack_c,
			test_encode_hello_matches_msgpack_c,
			test_encode_cap_too_small, test_encode_size_bound,
			test_encode_unknown_type_writes_nothing,
			test_encode_null_strings, NULL),
	    NULL);
}

/* ------------------------------------------------------ round trips */

/* Encode, decode, compare: one record after the sample HELLO. */
static void ck_round_trip(const struct proto_record *r,
			  const struct proto_limits *lim)
{
	struct proto_decoder *d = decoder_after_hello(lim);
	struct bytes b = {0};
	struct proto_msg msg;

	add_record(&b, r);
	ck_assert_int_eq(proto_decoder_feed(d, b.p, b.len), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_assert(!msg.is_hello);
	ck_record_eq(&msg.rec, r);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_MORE);
	proto_decoder_free(d);
	free(b.p);
}

START_TEST(test_round_trip_every_type)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs);
	struct proto_hello h = sample_hello();
	struct bytes b = {0};
	struct proto_decoder *d = proto_decoder_new(NULL);
	struct proto_msg msg;

	add_hello(&b, &h);
	for (size_t i = 0; i < n; i++)
		add_record(&b, &recs[i]);
	ck_assert_int_eq(proto_decoder_feed(d, b.p, b.len), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_assert(msg.is_hello);
	ck_hello_eq(&msg.hello, &h);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
		ck_assert(!msg.is_hello);
		ck_record_eq(&msg.rec, &recs[i]);
	}
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_MORE);
	ck_assert_uint_eq(proto_decoder_offset(d), b.len);
	ck_assert_uint_eq(proto_decoder_buffered(d), 0);
	ck_assert_uint_eq(proto_decoder_skipped(d), 0);
	ck_assert_str_eq(proto_decoder_error(d), "");
	proto_decoder_free(d);
	free(b.p);
}
END_TEST

START_TEST(test_round_trip_edge_integers)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs);

	for (size_t i = 0; i < n; i++) {
		for (size_t v = 0; v < N_EDGE_UINTS; v++) {
			struct proto_record r = recs[i];
			uint64_t x = edge_uints[v];

			r.ts = r.tid = x;
			if (r.type != PROTO_SITE && r.type != PROTO_DROPPED &&
			    r.type != PROTO_WATERMARK && r.type != PROTO_CLOSE)
				r.ctx = r.cause = x;
			if (r.type == PROTO_SITE)
				r.line = (uint32_t)x;
			if (r.type != PROTO_DROPPED &&
			    r.type != PROTO_WATERMARK && r.type != PROTO_CLOSE)
				r.site = (uint32_t)x;
			r.prev = r.type == PROTO_BEGIN ? x : 0;
			r.cur = r.type == PROTO_END ? x : 0;
			if (r.type == PROTO_DROPPED)
				r.count = r.since = x;
			ck_round_trip(&r, NULL);
		}
	}
}
END_TEST

/* Every string a field can hold, up to max_string, nil where allowed. */
START_TEST(test_round_trip_strings)
{
	struct proto_limits lim;

	proto_limits_default(&lim);
	lim.max_string = 65536;
	lim.max_object = 4 * 65536;
	for (unsigned k = 0; k < N_EDGE_STRS; k++) {
		struct proto_str s = edge_str(k);
		struct proto_str req = s.ptr ? s : edge_str(0);
		struct proto_record site = {.type = PROTO_SITE,
					    .ts = 1,
					    .site = 3,
					    .file = req,
					    .line = 9,
					    .func = req};
		struct proto_record begin = {.type = PROTO_BEGIN,
					     .ctx = 5,
					     .kind = PROTO_KIND_CHILD,
					     .name = s};
		struct proto_record tag = {
		    .type = PROTO_TAG, .ctx = 5, .key = req, .value = s};
		struct proto_record event = {
		    .type = PROTO_EVENT, .ctx = 5, .name = req, .message = s};

		ck_round_trip(&site, &lim);
		ck_round_trip(&begin, &lim);
		ck_round_trip(&tag, &lim);
		ck_round_trip(&event, &lim);
	}
}
END_TEST

/* Exactly max_string bytes pass with the default limits. */
START_TEST(test_round_trip_max_string)
{
	static char s[PROTO_DEFAULT_MAX_STRING];
	struct proto_record r = {.type = PROTO_TAG, .ctx = 1};

	memset(s, 'k', sizeof(s));
	r.key = r.value = (struct proto_str){s, sizeof(s)};
	ck_round_trip(&r, NULL);
}
END_TEST

START_TEST(test_round_trip_hello_edges)
{
	for (size_t i = 0; i < N_EDGE_INTS; i++) {
		struct proto_hello h = sample_hello();
		struct proto_decoder *d = proto_decoder_new(NULL);
		struct bytes b = {0};
		struct proto_msg msg;

		h.clock_offset = edge_ints[i];
		h.instance = i % 2 ? UINT64_MAX : 1;
		h.pid = i % 2 ? UINT32_MAX : 0;
		h.app = edge_str(i % N_EDGE_STRS);
		if (h.app.len > 1000)
			h.app.len = 1000;
		h.backend = edge_str(EDGE_NUL);
		h.reason = edge_str(EDGE_UTF8);
		h.client = edge_str(EDGE_NIL);
		add_hello(&b, &h);
		ck_assert_int_eq(proto_decoder_feed(d, b.p, b.len), 0);
		ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
		ck_assert(msg.is_hello);
		ck_hello_eq(&msg.hello, &h);
		proto_decoder_free(d);
		free(b.p);
	}
}
END_TEST

/* Any integer format is accepted when the value fits: uint64 and int8
 * formats for small values, a HELLO built by another packer. */
START_TEST(test_decode_any_int_format)
{
	static const uint8_t rec[] = {
	    0x97, 0xcf, 0, 0, 0, 0, 0, 0, 0, 3, /* END, as uint64 */
	    0xd0, 5,				/* ts 5, as int8 */
	    0xd3, 0,	0, 0, 0, 0, 0, 0, 7,	/* tid 7, as int64 */
	    0xcd, 0,	9,			/* ctx 9, uint16 */
	    0xce, 0,	0, 0, 9,		/* cause 9, uint32 */
	    0xd1, 0,	2,			/* site 2, int16 */
	    0xcc, 9,				/* cur 9, uint8 */
	};
	struct proto_decoder *d = decoder_after_hello(NULL);
	struct proto_msg msg;

	ck_assert_int_eq(proto_decoder_feed(d, rec, sizeof(rec)), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_assert_uint_eq(msg.rec.type, PROTO_END);
	ck_assert_uint_eq(msg.rec.ts, 5);
	ck_assert_uint_eq(msg.rec.tid, 7);
	ck_assert_uint_eq(msg.rec.ctx, 9);
	ck_assert_uint_eq(msg.rec.cause, 9);
	ck_assert_uint_eq(msg.rec.site, 2);
	ck_assert_uint_eq(msg.rec.cur, 9);
	proto_decoder_free(d);
}
END_TEST

static Suite *round_trip_suite(void)
{
	return check_suite(
	    "round trip",
	    check_tcase("core", 0, test_round_trip_every_type,
			test_round_trip_edge_integers, test_round_trip_strings,
			test_round_trip_max_string, test_round_trip_hello_edges,
			test_decode_any_int_format, NULL),
	    NULL);
}

/* ---------------------------------------------------------- chunking */

/* Reads every byte of a decoded string, so that ASan sees any overread. */
static volatile unsigned char sink;

static void sink_bytes(struct proto_str str)
{
	for (uint32_t i = 0; i < str.len; i++)
		sink ^= (unsigned char)str.ptr[i];
}

static void sink_msg(const struct proto_msg *m)
{
	const struct proto_record *r = &m->rec;
	const struct proto_hello *h = &m->hello;

	sink_bytes(h->app);
	sink_bytes(h->backend);
	sink_bytes(h->reason);
	sink_bytes(h->client);
	sink_bytes(r->name);
	sink_bytes(r->key);
	sink_bytes(r->value);
	sink_bytes(r->message);
	sink_bytes(r->file);
	sink_bytes(r->func);
}

static uint64_t rnd(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545f4914f6cdd1dULL;
}

/* Values of every width, zero included. */
static uint64_t rnd_value(uint64_t *state)
{
	uint64_t shift = rnd(state) % 65;

	return shift == 64 ? 0 : rnd(state) >> shift;
}

static struct proto_str rnd_str(uint64_t *state, int nil_ok)
{
	static char pool[4096];
	uint32_t len =
	    (uint32_t)(rnd(state) % 8 ? rnd(state) % 40 : rnd(state) % 1000);

	if (!pool[1])
		for (size_t i = 0; i < sizeof(pool); i++)
			pool[i] = (char)(i * 131 + i / 7);
	if (nil_ok && rnd(state) % 5 == 0)
		return (struct proto_str){NULL, 0};
	return (struct proto_str){pool + rnd(state) % 3000, len};
}

/* A valid record of a random type; fields its type lacks stay 0. */
static void rnd_record(uint64_t *state, struct proto_record *r)
{
	memset(r, 0, sizeof(*r));
	r->type = (uint8_t)(1 + rnd(state) % PROTO_TYPE_MAX);
	r->ts = rnd_value(state);
	r->tid = rnd_value(state);
	switch (r->type) {
	case PROTO_SITE:
		r->site = (uint32_t)rnd_value(state);
		r->file = rnd_str(state, 0);
		r->line = (uint32_t)rnd_value(state);
		r->func = rnd_str(state, 0);
		return;
	case PROTO_DROPPED:
		r->count = rnd_value(state);
		r->since = rnd_value(state);
		return;
	case PROTO_WATERMARK:
	case PROTO_CLOSE:
		return;
	}
	r->ctx = rnd_value(state);
	r->cause = rnd_value(state);
	r->site = (uint32_t)rnd_value(state);
	switch (r->type) {
	case PROTO_BEGIN:
		r->prev = rnd_value(state);
		r->kind = (uint8_t)(rnd(state) % 2);
		r->name = rnd_str(state, 1);
		break;
	case PROTO_END:
		r->cur = rnd_value(state);
		break;
	case PROTO_TAG:
		r->key = rnd_str(state, 0);
		r->value = rnd_str(state, 1);
		break;
	case PROTO_EVENT:
		r->name = rnd_str(state, 0);
		r->message = rnd_str(state, 1);
		break;
	}
}

#define STREAM_RECORDS 1000

struct stream {
	struct bytes b;
	struct proto_hello hello;
	struct proto_record *recs;
	size_t *ends; /* ends[i]: stream offset after message i (0: HELLO) */
	size_t n;     /* records */
};

static void stream_make(struct stream *s, size_t n, uint64_t seed)
{
	memset(s, 0, sizeof(*s));
	s->hello = sample_hello();
	s->recs = calloc(n, sizeof(*s->recs));
	s->ends = calloc(n + 1, sizeof(*s->ends));
	s->n = n;
	add_hello(&s->b, &s->hello);
	s->ends[0] = s->b.len;
	for (size_t i = 0; i < n; i++) {
		rnd_record(&seed, &s->recs[i]);
		add_record(&s->b, &s->recs[i]);
		s->ends[i + 1] = s->b.len;
	}
}

static void stream_free(struct stream *s)
{
	free(s->b.p);
	free(s->recs);
	free(s->ends);
}

/* Takes every complete message out; *next counts messages (0: HELLO). */
static void drain(struct proto_decoder *d, const struct stream *s, size_t *next)
{
	struct proto_msg msg;
	enum proto_status st;

	while ((st = proto_decoder_next(d, &msg)) == PROTO_OK) {
		if (*next > s->n || msg.is_hello != (*next == 0) ||
		    proto_decoder_offset(d) != s->ends[*next])
			ck_abort_msg(
			    "message %zu: hello %d, offset %llu", *next,
			    msg.is_hello,
			    (unsigned long long)proto_decoder_offset(d));
		if (*next == 0)
			ck_hello_eq(&msg.hello, &s->hello);
		else
			ck_record_eq(&msg.rec, &s->recs[*next - 1]);
		(*next)++;
	}
	/* What stays buffered is at most one incomplete object. */
	if (st != PROTO_MORE ||
	    proto_decoder_buffered(d) > PROTO_DEFAULT_MAX_OBJECT)
		ck_abort_msg("drain ended with %s, %zu bytes buffered",
			     proto_status_name(st), proto_decoder_buffered(d));
}

/* chunk 0: random sizes from seed; else that fixed size. */
static void ck_chunked(const struct stream *s, size_t chunk, uint64_t seed)
{
	struct proto_decoder *d = proto_decoder_new(NULL);
	size_t next = 0;

	for (size_t at = 0; at < s->b.len;) {
		size_t n = chunk ? chunk : 1 + rnd(&seed) % 3000;

		if (n > s->b.len - at)
			n = s->b.len - at;
		ck_assert_int_eq(proto_decoder_feed(d, s->b.p + at, n), 0);
		at += n;
		drain(d, s, &next);
	}
	ck_assert_uint_eq(next, s->n + 1);
	ck_assert_uint_eq(proto_decoder_buffered(d), 0);
	proto_decoder_free(d);
}

START_TEST(test_chunking_whole)
{
	struct stream s;

	stream_make(&s, STREAM_RECORDS, 0x5eed);
	ck_chunked(&s, s.b.len, 0);
	stream_free(&s);
}
END_TEST

START_TEST(test_chunking_one_byte)
{
	struct stream s;

	stream_make(&s, STREAM_RECORDS, 0x5eed);
	ck_chunked(&s, 1, 0);
	stream_free(&s);
}
END_TEST

START_TEST(test_chunking_random)
{
	struct stream s;

	stream_make(&s, STREAM_RECORDS, 0x5eed);
	for (uint64_t seed = 1; seed <= 8; seed++)
		ck_chunked(&s, 0, seed * 0x9e3779b97f4a7c15ULL);
	stream_free(&s);
}
END_TEST

/* Many feeds before any next: everything is kept and decodes in order. */
START_TEST(test_chunking_feed_all_then_drain)
{
	struct stream s;
	struct proto_decoder *d = proto_decoder_new(NULL);
	size_t next = 0;

	stream_make(&s, 200, 7);
	for (size_t at = 0; at < s.b.len; at += 17) {
		size_t n = s.b.len - at < 17 ? s.b.len - at : 17;

		ck_assert_int_eq(proto_decoder_feed(d, s.b.p + at, n), 0);
	}
	ck_assert_uint_eq(proto_decoder_buffered(d), s.b.len);
	drain(d, &s, &next);
	ck_assert_uint_eq(next, s.n + 1);
	proto_decoder_free(d);
	stream_free(&s);
}
END_TEST

/* Cut anywhere: never an error, never a half record, PROTO_MORE at the cut,
 * and the rest completes the stream. */
START_TEST(test_truncated_everywhere)
{
	struct stream s;

	stream_make(&s, 25, 99);
	for (size_t cut = 0; cut <= s.b.len; cut++) {
		struct proto_decoder *d = proto_decoder_new(NULL);
		size_t next = 0, whole = 0;

		while (whole <= s.n && s.ends[whole] <= cut)
			whole++;
		ck_assert_int_eq(proto_decoder_feed(d, s.b.p, cut), 0);
		drain(d, &s, &next);
		ck_assert_uint_eq(next, whole);
		ck_assert_uint_eq(proto_decoder_offset(d),
				  whole ? s.ends[whole - 1] : 0);
		ck_assert_int_eq(
		    proto_decoder_feed(d, s.b.p + cut, s.b.len - cut), 0);
		drain(d, &s, &next);
		ck_assert_uint_eq(next, s.n + 1);
		proto_decoder_free(d);
	}
	stream_free(&s);
}
END_TEST

static Suite *chunking_suite(void)
{
	return check_suite(
	    "chunking",
	    check_tcase("core", 0, test_chunking_whole, test_chunking_one_byte,
			test_chunking_random, test_chunking_feed_all_then_drain,
			test_truncated_everywhere, NULL),
	    NULL);
}

/* --------------------------------------------------------- malformed */

/*
 * Feeds p after the sample HELLO (or as the first bytes when !hello) and
 * expects `want`, with `text` in the message and the offset of the object
 * that started at the feed; the error must then be sticky for next and
 * feed alike.
 */
static void ck_rejects_lim(int hello, const void *p, size_t len,
			   enum proto_status want, const char *text,
			   const struct proto_limits *lim)
{
	struct proto_decoder *d =
	    hello ? decoder_after_hello(lim) : proto_decoder_new(lim);
	unsigned long long at = proto_decoder_offset(d);
	struct proto_msg msg;
	char where[64];
	int fed;

	ck_assert_str_eq(proto_decoder_error(d), "");
	fed = proto_decoder_feed(d, p, len);
	ck_assert_msg(fed == 0 || fed == (int)want, "feed returned %d", fed);
	ck_assert_int_eq(proto_decoder_next(d, &msg), want);
	ck_assert_int_eq(proto_decoder_next(d, &msg), want);
	ck_assert_int_eq(proto_decoder_feed(d, "\x90", 1), want);
	ck_assert_msg(strstr(proto_decoder_error(d), text),
		      "\"%s\" lacks \"%s\"", proto_decoder_error(d), text);
	snprintf(where, sizeof(where), "(object at offset %llu)", at);
	ck_assert_msg(strstr(proto_decoder_error(d), where),
		      "\"%s\" lacks \"%s\"", proto_decoder_error(d), where);
	proto_decoder_free(d);
}

static void ck_rejects(int hello, const void *p, size_t len,
		       enum proto_status want, const char *text)
{
	ck_rejects_lim(hello, p, len, want, text, NULL);
}

static void ck_rejects_pk(int hello, struct pk *p, enum proto_status want,
			  const char *text)
{
	ck_rejects(hello, p->sb.data, p->sb.size, want, text);
	msgpack_sbuffer_destroy(&p->sb);
}

/* The six common fields of a record of `type` with n elements. */
static void pk_head(struct pk *p, unsigned n, uint64_t type)
{
	msgpack_pack_array(&p->pk, n);
	msgpack_pack_uint64(&p->pk, type);
	for (int i = 0; i < 5 && i < (int)n - 1; i++)
		msgpack_pack_uint64(&p->pk, 1);
}

START_TEST(test_not_msgpack)
{
	static const uint8_t top[] = {0xc1};
	static const uint8_t inner[] = {0x93, 0x01, 0xc1, 0x02};

	ck_rejects(1, top, sizeof(top), PROTO_E_NOT_MSGPACK, "byte 0xc1");
	ck_rejects(0, inner, sizeof(inner), PROTO_E_NOT_MSGPACK,
		   "byte 0xc1 at offset 2 is not msgpack");
}
END_TEST

START_TEST(test_too_big)
{
	struct proto_limits lim = {.max_object = 200};
	struct proto_record r = {.type = PROTO_TAG, .ctx = 1};
	struct bytes b = {0};

	r.key = r.value = (struct proto_str){big_string, 255};
	add_record(&b, &r);
	ck_rejects_lim(1, b.p, b.len, PROTO_E_TOO_BIG,
		       "exceeds the limit of 200", &lim);
	/* The declared size is enough: the string need not arrive. */
	ck_rejects_lim(1, b.p, 20, PROTO_E_TOO_BIG, "exceeds the limit of 200",
		       &lim);
	free(b.p);
}
END_TEST

/* Bytes of an incomplete object over max_object fail the feed itself. */
START_TEST(test_too_big_incomplete)
{
	struct proto_limits lim = {.max_object = 200, .max_array = 1000};
	struct proto_decoder *d = decoder_after_hello(&lim);
	static const uint8_t head[] = {0xdc, 0x03, 0xe8}; /* array of 1000 */
	size_t fed = sizeof(head);
	int st = 0;

	ck_assert_int_eq(proto_decoder_feed(d, head, sizeof(head)), 0);
	while (st == 0 && fed < 1000) {
		st = proto_decoder_feed(d, "\x01", 1);
		fed++;
	}
	ck_assert_int_eq(st, PROTO_E_TOO_BIG);
	ck_assert_uint_eq(fed, 201);
	ck_assert_uint_le(proto_decoder_buffered(d), 201);
	proto_decoder_free(d);
}
END_TEST

START_TEST(test_string_too_long)
{
	static const uint8_t str16[] = {0x92, 0x04, 0xda, 0x4e, 0x20};
	static const uint8_t str32_4g[] = {0x91, 0xdb, 0xff, 0xff, 0xff, 0xff};
	static const uint8_t bin32_4g[] = {0xc6, 0xff, 0xff, 0xff, 0xff};
	static const uint8_t ext32_4g[] = {0xc9, 0xff, 0xff, 0xff, 0xff};

	ck_rejects(1, str16, sizeof(str16), PROTO_E_STRING,
		   "string of 20000 bytes exceeds the limit of 16384");
	ck_rejects(1, str32_4g, sizeof(str32_4g), PROTO_E_STRING,
		   "string of 4294967295 bytes");
	ck_rejects(1, bin32_4g, sizeof(bin32_4g), PROTO_E_STRING,
		   "binary of 4294967295 bytes");
	ck_rejects(1, ext32_4g, sizeof(ext32_4g), PROTO_E_STRING,
		   "extension of 4294967295 bytes");
}
END_TEST

START_TEST(test_string_limit_default_when_zero)
{
	struct proto_limits zero = {0};
	struct proto_record r = {.type = PROTO_TAG, .ctx = 1};
	struct bytes b = {0};
	static char s[PROTO_DEFAULT_MAX_STRING + 1];

	r.key = (struct proto_str){s, sizeof(s) - 1};
	ck_round_trip(&r, &zero);
	r.key.len = sizeof(s);
	add_record(&b, &r);
	ck_rejects_lim(1, b.p, b.len, PROTO_E_STRING,
		       "string of 16385 bytes exceeds the limit of 16384",
		       &zero);
	free(b.p);
}
END_TEST

START_TEST(test_array_too_long)
{
	static const uint8_t array32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
	static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
	struct pk p;

	ck_rejects(1, array32, sizeof(array32), PROTO_E_ARRAY,
		   "array of 4294967295 elements exceeds the limit of 64");
	ck_rejects(0, map32, sizeof(map32), PROTO_E_ARRAY,
		   "map of 4294967295 entries exceeds the limit of 64");
	pk_init(&p);
	pk_head(&p, 65, PROTO_RESUME);
	for (int i = 6; i < 65; i++)
		msgpack_pack_nil(&p.pk);
	ck_rejects_pk(1, &p, PROTO_E_ARRAY, "array of 65 elements");
}
END_TEST

/* A record whose trailing extra element nests `levels` arrays. */
static void pk_nested_record(struct pk *p, unsigned levels)
{
	pk_init(p);
	pk_head(p, 7, PROTO_SUSPEND);
	for (unsigned i = 0; i < levels; i++)
		msgpack_pack_array(&p->pk, 1);
	msgpack_pack_uint8(&p->pk, 1);
}

START_TEST(test_too_deep)
{
	struct proto_decoder *d = decoder_after_hello(NULL);
	struct proto_msg msg;
	struct pk p;

	/* The record itself is level 1: 7 more make the limit of 8. */
	pk_nested_record(&p, 7);
	ck_assert_int_eq(proto_decoder_feed(d, p.sb.data, p.sb.size), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_assert_uint_eq(msg.rec.type, PROTO_SUSPEND);
	msgpack_sbuffer_destroy(&p.sb);
	proto_decoder_free(d);
	pk_nested_record(&p, 8);
	ck_rejects_pk(1, &p, PROTO_E_DEPTH,
		      "array nested deeper than the limit of 8 levels");
}
END_TEST

START_TEST(test_wrong_field_type)
{
	static const uint8_t top_int[] = {0x05};
	static const uint8_t type_str[] = {0x96, 0xa1, 'x', 1, 1, 1, 1, 1};
	static const uint8_t type_zero[] = {0x96, 0x00, 1, 1, 1, 1, 1};
	struct pk p;

	ck_rejects(1, top_int, sizeof(top_int), PROTO_E_TYPE,
		   "top-level object is an integer");
	ck_rejects(1, type_str, sizeof(type_str), PROTO_E_TYPE,
		   "record field type is a string");
	ck_rejects(1, type_zero, sizeof(type_zero), PROTO_E_TYPE,
		   "record of type 0");

	pk_init(&p);
	pk_head(&p, 9, PROTO_BEGIN);
	msgpack_pack_uint8(&p.pk, 0);
	msgpack_pack_uint8(&p.pk, 0);
	msgpack_pack_uint8(&p.pk, 7);
	ck_rejects_pk(1, &p, PROTO_E_TYPE,
		      "BEGIN field name is an integer, not a string or nil");

	pk_init(&p);
	pk_head(&p, 9, PROTO_BEGIN);
	msgpack_pack_uint8(&p.pk, 0);
	msgpack_pack_uint8(&p.pk, 2);
	msgpack_pack_nil(&p.pk);
	ck_rejects_pk(1, &p, PROTO_E_TYPE, "BEGIN field kind is 2");

	pk_init(&p);
	msgpack_pack_array(&p.pk, 6);
	msgpack_pack_uint8(&p.pk, PROTO_RESUME);
	pk_str(&p, "soon");
	for (int i = 0; i < 4; i++)
		msgpack_pack_uint8(&p.pk, 1);
	ck_rejects_pk(1, &p, PROTO_E_TYPE, "RESUME field ts is a string");

	pk_init(&p);
	pk_head(&p, 8, PROTO_TAG);
	msgpack_pack_bin_with_body(&p.pk, "k", 1);
	msgpack_pack_nil(&p.pk);
	ck_rejects_pk(1, &p, PROTO_E_TYPE, "TAG field key is a binary");

	pk_init(&p);
	pk_head(&p, 8, PROTO_EVENT);
	msgpack_pack_nil(&p.pk);
	msgpack_pack_nil(&p.pk);
	ck_rejects_pk(1, &p, PROTO_E_TYPE,
		      "EVENT field name is nil, not a string");

	pk_init(&p);
	msgpack_pack_array(&p.pk, 6);
	for (int i = 0; i < 5; i++)
		msgpack_pack_uint8(&p.pk, PROTO_WATERMARK);
	msgpack_pack_uint64(&p.pk, (uint64_t)UINT32_MAX + 1);
	ck_rejects_pk(1, &p, PROTO_E_TYPE,
		      "WATERMARK field site is 4294967296, over its maximum "
		      "4294967295");

	pk_init(&p);
	msgpack_pack_array(&p.pk, 6);
	msgpack_pack_uint8(&p.pk, PROTO_WATERMARK);
	msgpack_pack_double(&p.pk, 1.5);
	for (int i = 0; i < 4; i++)
		msgpack_pack_uint8(&p.pk, 0);
	ck_rejects_pk(1, &p, PROTO_E_TYPE, "WATERMARK field ts is a float");
}
END_TEST

START_TEST(test_negative_int)
{
	struct pk p;

	pk_init(&p);
	msgpack_pack_array(&p.pk, 7);
	msgpack_pack_uint8(&p.pk, PROTO_END);
	msgpack_pack_int64(&p.pk, -1);
	for (int i = 0; i < 5; i++)
		msgpack_pack_uint8(&p.pk, 1);
	ck_rejects_pk(1, &p, PROTO_E_TYPE, "END field ts is negative (-1)");

	pk_init(&p);
	pk_head(&p, 6, 0);
	p.sb.data[1] = (char)0xff; /* type -1 as a negative fixint */
	ck_rejects_pk(1, &p, PROTO_E_TYPE, "record field type is negative");

	pk_init(&p);
	msgpack_pack_map(&p.pk, 3);
	pk_str(&p, "version");
	msgpack_pack_uint8(&p.pk, 1);
	pk_str(&p, "instance");
	msgpack_pack_int64(&p.pk, INT64_MIN);
	pk_str(&p, "pid");
	msgpack_pack_uint8(&p.pk, 1);
	ck_rejects_pk(0, &p, PROTO_E_TYPE, "HELLO field instance is negative");
}
END_TEST

START_TEST(test_short_record)
{
	static const uint8_t empty[] = {0x90};
	struct pk p;

	pk_init(&p);
	pk_head(&p, 6, PROTO_END);
	ck_rejects_pk(1, &p, PROTO_E_SHORT,
		      "END record of 6 elements; it has 7");
	pk_init(&p);
	pk_head(&p, 8, PROTO_SITE);
	pk_str(&p, "a.c");
	msgpack_pack_uint8(&p.pk, 3);
	ck_rejects_pk(1, &p, PROTO_E_SHORT, "SITE record of 8 elements");
	ck_rejects(1, empty, sizeof(empty), PROTO_E_SHORT, "empty record");
}
END_TEST

START_TEST(test_record_before_hello)
{
	struct proto_record recs[16];
	struct bytes b = {0};

	sample_records(recs);
	add_record(&b, &recs[1]);
	ck_rejects(0, b.p, b.len, PROTO_E_NO_HELLO, "record before HELLO");
	free(b.p);
}
END_TEST

START_TEST(test_second_hello)
{
	struct proto_hello h = sample_hello();
	struct bytes b = {0};

	add_hello(&b, &h);
	ck_rejects(1, b.p, b.len, PROTO_E_HELLO,
		   "second HELLO on the connection");
	free(b.p);
}
END_TEST

/* A HELLO map with the required keys but `skip`, and instance `inst`. */
static void pk_hello_without(struct pk *p, const char *skip, uint64_t inst)
{
	static const char *const keys[] = {"version", "instance", "pid"};
	uint64_t values[] = {PROTO_VERSION, inst, 77};

	pk_init(p);
	msgpack_pack_map(&p->pk, skip ? 3 : 4);
	pk_str(p, "app");
	pk_str(p, "w");
	for (int i = 0; i < 3; i++) {
		if (skip && strcmp(keys[i], skip) == 0)
			continue;
		pk_str(p, keys[i]);
		msgpack_pack_uint64(&p->pk, values[i]);
	}
}

START_TEST(test_hello_missing_key)
{
	static const char *const keys[] = {"version", "instance", "pid"};
	struct pk p;

	for (int i = 0; i < 3; i++) {
		char text[64];

		snprintf(text, sizeof(text), "HELLO lacks the required key %s",
			 keys[i]);
		pk_hello_without(&p, keys[i], 1);
		ck_rejects_pk(0, &p, PROTO_E_HELLO, text);
	}
	pk_hello_without(&p, NULL, 0);
	ck_rejects_pk(0, &p, PROTO_E_HELLO, "HELLO instance is 0");
}
END_TEST

START_TEST(test_hello_newer_version)
{
	struct proto_hello h = sample_hello();
	struct bytes b = {0};
	struct pk p;

	h.version = PROTO_VERSION + 1;
	add_hello(&b, &h);
	ck_rejects(0, b.p, b.len, PROTO_E_VERSION,
		   "HELLO of protocol version 3; this side speaks up to "
		   "version 2");
	free(b.p);
	/* The version is judged first: a newer HELLO may lack v1's keys. */
	pk_init(&p);
	msgpack_pack_map(&p.pk, 1);
	pk_str(&p, "version");
	msgpack_pack_uint64(&p.pk, UINT64_MAX);
	ck_rejects_pk(0, &p, PROTO_E_VERSION, "version 18446744073709551615");
	pk_init(&p);
	msgpack_pack_map(&p.pk, 3);
	pk_str(&p, "version");
	msgpack_pack_uint64(&p.pk, 0);
	pk_str(&p, "instance");
	msgpack_pack_uint64(&p.pk, 1);
	pk_str(&p, "pid");
	msgpack_pack_uint64(&p.pk, 1);
	ck_rejects_pk(0, &p, PROTO_E_HELLO, "HELLO of version 0");
}
END_TEST

START_TEST(test_error_offset_after_records)
{
	struct stream s;
	struct proto_decoder *d = proto_decoder_new(NULL);
	struct proto_msg msg;
	size_t next = 0;
	char where[64];

	stream_make(&s, 5, 3);
	ck_assert_int_eq(proto_decoder_feed(d, s.b.p, s.b.len), 0);
	ck_assert_int_eq(proto_decoder_feed(d, "\x91\xc1", 2), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	next = 1;
	while (next <= s.n) {
		ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
		ck_record_eq(&msg.rec, &s.recs[next++ - 1]);
	}
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_E_NOT_MSGPACK);
	snprintf(where, sizeof(where),
		 "at offset %zu is not msgpack (object "
		 "at offset %zu)",
		 s.b.len + 1, s.b.len);
	ck_assert_ptr_nonnull(strstr(proto_decoder_error(d), where));
	ck_assert_uint_eq(proto_decoder_offset(d), s.b.len);
	proto_decoder_free(d);
	stream_free(&s);
}
END_TEST

/* Random damage to a valid stream: any outcome but a crash, an overread
 * (ASan) or a decoded string outside the bytes fed. */
START_TEST(test_mutated_streams)
{
	struct stream s;
	uint64_t seed = 0xfeed;

	stream_make(&s, 30, 5);
	for (int round = 0; round < 1500; round++) {
		struct proto_decoder *d = proto_decoder_new(NULL);
		uint8_t *p = malloc(s.b.len);
		struct proto_msg msg;
		int st = 0;

		memcpy(p, s.b.p, s.b.len);
		for (int k = 0; k < 1 + round % 4; k++)
			p[rnd(&seed) % s.b.len] = (uint8_t)rnd(&seed);
		for (size_t at = 0; at < s.b.len && st >= 0;) {
			size_t n = 1 + rnd(&seed) % 200;

			n = n > s.b.len - at ? s.b.len - at : n;
			st = proto_decoder_feed(d, p + at, n);
			at += n;
			while (st >= 0 &&
			       (st = proto_decoder_next(d, &msg)) == PROTO_OK)
				sink_msg(&msg);
		}
		ck_assert_int_le(st, PROTO_MORE);
		ck_assert_int_ge(st, PROTO_E_NOMEM);
		proto_decoder_free(d);
		free(p);
	}
	stream_free(&s);
}
END_TEST

/* An element of a record as PROTOCOL.md lays it out: an unsigned integer,
 * or a string (ptr NULL for nil). */
struct element {
	int is_str;
	uint64_t u;
	struct proto_str str;
};
#define UINT_ELEM(v) ((struct element){0, (v), {NULL, 0}})
#define STR_ELEM(s)  ((struct element){1, 0, (s)})

/* The elements of a record of r's type, in order, into e. */
static void expected_elements(const struct proto_record *r, struct element *e)
{
	e[0] = UINT_ELEM(r->type);
	e[1] = UINT_ELEM(r->ts);
	e[2] = UINT_ELEM(r->tid);
	e[3] = UINT_ELEM(r->ctx);
	e[4] = UINT_ELEM(r->cause);
	e[5] = UINT_ELEM(r->site);
	switch (r->type) {
	case PROTO_SITE:
		e[6] = STR_ELEM(r->file);
		e[7] = UINT_ELEM(r->line);
		e[8] = STR_ELEM(r->func);
		break;
	case PROTO_BEGIN:
		e[6] = UINT_ELEM(r->prev);
		e[7] = UINT_ELEM(r->kind);
		e[8] = STR_ELEM(r->name);
		break;
	case PROTO_END:
		e[6] = UINT_ELEM(r->cur);
		break;
	case PROTO_TAG:
		e[6] = STR_ELEM(r->key);
		e[7] = STR_ELEM(r->value);
		break;
	case PROTO_EVENT:
		e[6] = STR_ELEM(r->name);
		e[7] = STR_ELEM(r->message);
		break;
	case PROTO_DROPPED:
		e[6] = UINT_ELEM(r->count);
		e[7] = UINT_ELEM(r->since);
		break;
	}
}

/* msgpack-c reads the object at p as the record r says it decoded. */
static void ck_reads_as(const uint8_t *p, size_t len,
			const struct proto_record *r)
{
	struct element want[16];
	msgpack_zone zone;
	msgpack_object o;
	size_t off = 0;

	msgpack_zone_init(&zone, 4096);
	ck_assert_int_eq(msgpack_unpack((const char *)p, len, &off, &zone, &o),
			 MSGPACK_UNPACK_SUCCESS);
	ck_assert_uint_eq(off, len);
	ck_assert_int_eq(o.type, MSGPACK_OBJECT_ARRAY);
	ck_assert_uint_ge(o.via.array.size, proto_type_fields[r->type]);
	expected_elements(r, want);
	for (unsigned i = 0; i < proto_type_fields[r->type]; i++) {
		const msgpack_object *e = &o.via.array.ptr[i];
		const struct element *w = &want[i];

		if (!w->is_str) {
			ck_assert_int_eq(e->type,
					 MSGPACK_OBJECT_POSITIVE_INTEGER);
			ck_assert_uint_eq(e->via.u64, w->u);
		} else if (w->str.ptr == NULL) {
			ck_assert_int_eq(e->type, MSGPACK_OBJECT_NIL);
		} else {
			ck_assert_int_eq(e->type, MSGPACK_OBJECT_STR);
			ck_assert_uint_eq(e->via.str.size, w->str.len);
			ck_assert(memcmp(e->via.str.ptr, w->str.ptr,
					 w->str.len) == 0);
		}
	}
	msgpack_zone_destroy(&zone);
}

/* Whatever a damaged record decodes to, msgpack-c reads the same bytes
 * the same way: whichever of the decoder's two paths took it, the direct
 * one or msgpack-c's, it neither invented a value nor took a value of
 * the wrong type. */
START_TEST(test_mutated_records_read_as_msgpack_c)
{
	uint64_t seed = 0xdec0de;
	int decoded = 0;

	for (int round = 0; round < 20000; round++) {
		struct proto_decoder *d = decoder_after_hello(NULL);
		uint64_t start = proto_decoder_offset(d);
		struct proto_record r;
		struct bytes b = {0};
		struct proto_msg msg;

		rnd_record(&seed, &r);
		add_record(&b, &r);
		for (int k = 0; k < 1 + round % 3; k++)
			b.p[rnd(&seed) % b.len] = (uint8_t)rnd(&seed);
		if (proto_decoder_feed(d, b.p, b.len) == 0 &&
		    proto_decoder_next(d, &msg) == PROTO_OK) {
			ck_reads_as(b.p, proto_decoder_offset(d) - start,
				    &msg.rec);
			decoded++;
		}
		proto_decoder_free(d);
		free(b.p);
	}
	/* Most damage hits a value, not the structure. */
	ck_assert_int_gt(decoded, 5000);
}
END_TEST

static Suite *malformed_suite(void)
{
	return check_suite(
	    "malformed",
	    check_tcase(
		"core", 0, test_not_msgpack, test_too_big,
		test_too_big_incomplete, test_string_too_long,
		test_string_limit_default_when_zero, test_array_too_long,
		test_too_deep, test_wrong_field_type, test_negative_int,
		test_short_record, test_record_before_hello, test_second_hello,
		test_hello_missing_key, test_hello_newer_version,
		test_error_offset_after_records, test_mutated_streams,
		test_mutated_records_read_as_msgpack_c, NULL),
	    NULL);
}

/* ------------------------------------------------------ compatibility */

START_TEST(test_unknown_type_skipped)
{
	static const uint64_t types[] = {PROTO_TYPE_MAX + 1, 127, 128,
					 UINT64_MAX};
	struct proto_decoder *d = decoder_after_hello(NULL);
	struct proto_record recs[16];
	struct proto_msg msg;
	struct bytes b = {0};
	struct pk p;

	sample_records(recs);
	pk_init(&p);
	for (size_t i = 0; i < 4; i++) {
		pk_head(&p, (unsigned)(1 + i * 6), types[i]);
		for (size_t k = 6; k < 1 + i * 6; k++)
			pk_str(&p, "future");
	}
	ck_assert_int_eq(proto_decoder_feed(d, p.sb.data, p.sb.size), 0);
	add_record(&b, &recs[3]);
	ck_assert_int_eq(proto_decoder_feed(d, b.p, b.len), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_record_eq(&msg.rec, &recs[3]);
	ck_assert_uint_eq(proto_decoder_skipped(d), 4);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_MORE);
	msgpack_sbuffer_destroy(&p.sb);
	proto_decoder_free(d);
	free(b.p);
}
END_TEST

/* Skipped, but not exempt from the limits. */
START_TEST(test_unknown_type_within_limits)
{
	struct pk p;
	static char s[20000];

	pk_init(&p);
	pk_head(&p, 7, 42);
	msgpack_pack_str_with_body(&p.pk, s, sizeof(s));
	ck_rejects_pk(1, &p, PROTO_E_STRING, "string of 20000 bytes");
}
END_TEST

/* Records with more fields than their type's go through the decoder's
 * general path (msgpack-c), the same records as the client writes them
 * through its direct path (the round trips above): both give the fields
 * sample_records() made. */
START_TEST(test_trailing_elements_ignored)
{
	struct proto_decoder *d = decoder_after_hello(NULL);
	struct proto_record recs[16];
	size_t n = sample_records(recs);
	struct proto_msg msg;
	struct pk p;

	pk_init(&p);
	for (size_t i = 0; i < n; i++) {
		struct pk one;

		pk_init(&one);
		pk_record(&one, &recs[i]);
		/* Bump the fixarray count and append three elements. */
		one.sb.data[0] = (char)(one.sb.data[0] + 3);
		msgpack_pack_map(&one.pk, 1);
		pk_str(&one, "k");
		msgpack_pack_array(&one.pk, 1);
		msgpack_pack_nil(&one.pk);
		msgpack_pack_double(&one.pk, 2.5);
		msgpack_pack_bin_with_body(&one.pk, "\x00\x01", 2);
		msgpack_sbuffer_write(&p.sb, one.sb.data, one.sb.size);
		msgpack_sbuffer_destroy(&one.sb);
	}
	ck_assert_int_eq(proto_decoder_feed(d, p.sb.data, p.sb.size), 0);
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
		ck_record_eq(&msg.rec, &recs[i]);
	}
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_MORE);
	msgpack_sbuffer_destroy(&p.sb);
	proto_decoder_free(d);
}
END_TEST

/* Unknown keys, keys that are not strings, nil optional strings. */
START_TEST(test_hello_lenient)
{
	struct proto_decoder *d = proto_decoder_new(NULL);
	struct proto_msg msg;
	struct pk p;

	pk_init(&p);
	msgpack_pack_map(&p.pk, 7);
	pk_str(&p, "future");
	msgpack_pack_array(&p.pk, 1);
	msgpack_pack_map(&p.pk, 0);
	msgpack_pack_uint8(&p.pk, 5);
	pk_str(&p, "an integer key");
	pk_str(&p, "pid");
	msgpack_pack_uint8(&p.pk, 12);
	pk_str(&p, "instance");
	msgpack_pack_uint8(&p.pk, 9);
	pk_str(&p, "app");
	msgpack_pack_nil(&p.pk);
	pk_str(&p, "clock_offset");
	msgpack_pack_int64(&p.pk, -5);
	pk_str(&p, "version");
	msgpack_pack_uint64(&p.pk, 1);
	ck_assert_int_eq(proto_decoder_feed(d, p.sb.data, p.sb.size), 0);
	ck_assert_int_eq(proto_decoder_next(d, &msg), PROTO_OK);
	ck_assert(msg.is_hello);
	ck_assert_uint_eq(msg.hello.pid, 12);
	ck_assert_uint_eq(msg.hello.instance, 9);
	ck_assert_int_eq(msg.hello.clock_offset, -5);
	ck_assert_ptr_null(msg.hello.app.ptr);
	ck_assert_ptr_null(msg.hello.client.ptr);
	msgpack_sbuffer_destroy(&p.sb);
	proto_decoder_free(d);
}
END_TEST

static Suite *compat_suite(void)
{
	return check_suite("compatibility",
			   check_tcase("core", 0, test_unknown_type_skipped,
				       test_unknown_type_within_limits,
				       test_trailing_elements_ignored,
				       test_hello_lenient, NULL),
			   NULL);
}

/* -------------------------------------------------------------- names */

START_TEST(test_status_names)
{
	const char *seen[16];
	int n = 0;

	for (int st = PROTO_E_NOMEM; st <= PROTO_MORE; st++) {
		const char *name = proto_status_name((enum proto_status)st);

		ck_assert_str_ne(name, "?");
		for (int i = 0; i < n; i++)
			ck_assert_str_ne(name, seen[i]);
		seen[n++] = name;
	}
	ck_assert_str_eq(proto_status_name(PROTO_OK), "ok");
	ck_assert_str_eq(proto_status_name(PROTO_E_STRING), "string too long");
	ck_assert_str_eq(proto_status_name((enum proto_status) - 99), "?");
}
END_TEST

START_TEST(test_type_names)
{
	static const char *const want[] = {
	    "?",     "SITE",   "BEGIN",	  "END",     "TAG",
	    "EVENT", "RESUME", "SUSPEND", "DROPPED", "WATERMARK",
	    "CLOSE",
	};

	for (unsigned t = 0; t <= PROTO_TYPE_MAX; t++)
		ck_assert_str_eq(proto_type_name(t), want[t]);
	ck_assert_str_eq(proto_type_name(PROTO_TYPE_MAX + 1), "?");
	ck_assert_str_eq(proto_type_name(~0u), "?");
}
END_TEST

static Suite *names_suite(void)
{
	return check_suite(
	    "names",
	    check_tcase("core", 0, test_status_names, test_type_names, NULL),
	    NULL);
}

/* ------------------------------------------------------------ receipt */

static void ck_receipt_parses(const void *buf, size_t len, uint64_t records,
			      uint64_t dropped)
{
	struct proto_receipt r = {~0ull, ~0ull};

	ck_assert_int_eq(proto_parse_receipt(buf, len, &r), (int64_t)len);
	ck_assert_uint_eq(r.records, records);
	ck_assert_uint_eq(r.dropped, dropped);
	/* Every cut is incomplete, never malformed. */
	for (size_t cut = 0; cut < len; cut++)
		ck_assert_int_eq(proto_parse_receipt(buf, cut, &r), 0);
}

START_TEST(test_receipt_bytes)
{
	static const unsigned char small[] = {0x93, 0x01, 0x05, 0x00};
	static const unsigned char wide[] = {0x93, 0x01, 0xcd, 0x01, 0x2c,
					     0xcf, 0x00, 0x00, 0x01, 0x00,
					     0x00, 0x00, 0x00, 0x00};
	struct proto_receipt r = {5, 0};
	unsigned char buf[PROTO_RECEIPT_SIZE_MAX];

	ck_assert_uint_eq(proto_encode_receipt(buf, sizeof buf, &r),
			  sizeof small);
	ck_assert_mem_eq(buf, small, sizeof small);
	r = (struct proto_receipt){300, 1ull << 40};
	ck_assert_uint_eq(proto_encode_receipt(buf, sizeof buf, &r),
			  sizeof wide);
	ck_assert_mem_eq(buf, wide, sizeof wide);
	/* Too small a buffer: nothing written. */
	memset(buf, 0xee, sizeof buf);
	ck_assert_uint_eq(proto_encode_receipt(buf, sizeof wide - 1, &r), 0);
	ck_assert_uint_eq(buf[0], 0xee);
}
END_TEST

/* Byte for byte what msgpack-c packs, and back, at every width. */
START_TEST(test_receipt_round_trip)
{
	static const uint64_t v[] = {0,		127,	     128,
				     255,	256,	     65535,
				     65536,	0xffffffffu, 0x100000000ull,
				     UINT64_MAX};
	unsigned char buf[PROTO_RECEIPT_SIZE_MAX];
	size_t n, nv = sizeof v / sizeof v[0];
	struct proto_receipt r;
	struct pk p;

	for (size_t i = 0; i < nv; i++) {
		r = (struct proto_receipt){v[i], v[nv - 1 - i]};
		n = proto_encode_receipt(buf, sizeof buf, &r);
		pk_init(&p);
		msgpack_pack_array(&p.pk, 3);
		msgpack_pack_uint64(&p.pk, PROTO_MSG_RECEIPT);
		msgpack_pack_uint64(&p.pk, r.records);
		msgpack_pack_uint64(&p.pk, r.dropped);
		ck_assert_uint_eq(n, p.sb.size);
		ck_assert_mem_eq(buf, p.sb.data, n);
		ck_receipt_parses(buf, n, r.records, r.dropped);
		msgpack_sbuffer_destroy(&p.sb);
	}
}
END_TEST

/* A later revision may append elements of any type: they are skipped,
 * and what follows the receipt is not taken as part of it. */
START_TEST(test_receipt_trailing_elements)
{
	struct proto_receipt r;
	size_t size;
	struct pk p;

	pk_init(&p);
	msgpack_pack_array(&p.pk, 7);
	msgpack_pack_uint64(&p.pk, PROTO_MSG_RECEIPT);
	msgpack_pack_uint64(&p.pk, 1000);
	msgpack_pack_uint64(&p.pk, 3);
	msgpack_pack_double(&p.pk, 2.5);
	msgpack_pack_map(&p.pk, 1);
	pk_str(&p, "k");
	msgpack_pack_array(&p.pk, 2);
	msgpack_pack_nil(&p.pk);
	msgpack_pack_int64(&p.pk, -40000);
	msgpack_pack_bin_with_body(&p.pk, "\x00\x01", 2);
	msgpack_pack_ext_with_body(&p.pk, "abcd", 4, 7);
	ck_receipt_parses(p.sb.data, p.sb.size, 1000, 3);
	size = p.sb.size;
	msgpack_pack_uint64(&p.pk, 300); /* the next object */
	ck_assert_int_eq(proto_parse_receipt(p.sb.data, p.sb.size, &r),
			 (int64_t)size);
	msgpack_sbuffer_destroy(&p.sb);
}
END_TEST

START_TEST(test_receipt_malformed)
{
	static const struct {
		const char *why;
		unsigned char bytes[8];
		size_t len;
	} bad[] = {
	    {"another kind", {0x93, 0x02, 0x05, 0x00}, 4},
	    {"kind 0", {0x93, 0x00, 0x05, 0x00}, 4},
	    {"two elements", {0x92, 0x01, 0x05}, 3},
	    {"not an array", {0x81, 0x01, 0x05}, 3},
	    {"a bare integer", {0x01}, 1},
	    {"a string count", {0x93, 0x01, 0xa1, '5', 0x00}, 5},
	    {"a negative count", {0x93, 0x01, 0xff, 0x00}, 4},
	    {"a signed-format count", {0x93, 0x01, 0xd0, 0x05, 0x00}, 5},
	    {"nil dropped", {0x93, 0x01, 0x05, 0xc0}, 4},
	    {"the byte msgpack never uses", {0x93, 0x01, 0xc1, 0x00}, 4},
	};
	struct proto_receipt r = {7, 7};

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_msg(
		    proto_parse_receipt(bad[i].bytes, bad[i].len, &r) == -1,
		    "%s was taken for a receipt", bad[i].why);
		ck_assert_uint_eq(r.records, 7);
	}
}
END_TEST

/* The ACK of PROTOCOL.md 2.3, byte for byte, and back. */
START_TEST(test_ack_bytes)
{
	static const unsigned char spec[] = {0x92, 0x02, 0xcf, 0x00, 0x00, 0x00,
					     0x01, 0x2a, 0x06, 0x15, 0x28};
	unsigned char buf[PROTO_ACK_SIZE_MAX];
	struct proto_reply r;
	struct proto_receipt rc;

	ck_assert_uint_eq(proto_encode_ack(buf, sizeof buf, 5000009000u),
			  sizeof spec);
	ck_assert_mem_eq(buf, spec, sizeof spec);
	ck_assert_int_eq(proto_parse_reply(spec, sizeof spec, &r),
			 (int64_t)sizeof spec);
	ck_assert_uint_eq(r.kind, PROTO_MSG_ACK);
	ck_assert_uint_eq(r.watermark, 5000009000u);
	for (size_t cut = 0; cut < sizeof spec; cut++)
		ck_assert_int_eq(proto_parse_reply(spec, cut, &r), 0);
	/* Not a RECEIPT. */
	ck_assert_int_eq(proto_parse_receipt(spec, sizeof spec, &rc), -1);
	ck_assert_uint_eq(proto_encode_ack(buf, sizeof buf, UINT64_MAX),
			  PROTO_ACK_SIZE_MAX);
	ck_assert_uint_eq(proto_encode_ack(buf, 2, 0), 0);
}
END_TEST

/* A RECEIPT, ACKs and a message of a later kind, one after another, as a
 * client reads them; a known kind without its fields is malformed. */
START_TEST(test_reply_stream)
{
	static const unsigned char stream[] = {
	    0x93, 0x01, 0x05, 0x00,	  /* RECEIPT 5 records */
	    0x93, 0x02, 0x07, 0xa1, 'x',  /* ACK 7, one trailing element */
	    0x92, 0x05, 0xc0,		  /* kind 5, later */
	    0x92, 0x02, 0xcd, 0x01, 0x2c, /* ACK 300 */
	};
	static const unsigned char short_ack[] = {0x91, 0x02};
	static const unsigned char nil_ack[] = {0x92, 0x02, 0xc0};
	static const uint64_t kinds[] = {1, 2, 5, 2};
	struct proto_reply r;
	size_t pos = 0;
	int64_t n;

	for (int i = 0; i < 4; i++) {
		n = proto_parse_reply(stream + pos, sizeof stream - pos, &r);
		ck_assert_int_gt(n, 0);
		ck_assert_uint_eq(r.kind, kinds[i]);
		pos += (size_t)n;
		if (i == 0)
			ck_assert_uint_eq(r.receipt.records, 5);
		if (i == 1 || i == 3)
			ck_assert_uint_eq(r.watermark, i == 1 ? 7 : 300);
	}
	ck_assert_uint_eq(pos, sizeof stream);
	ck_assert_int_eq(proto_parse_reply(short_ack, sizeof short_ack, &r),
			 -1);
	ck_assert_int_eq(proto_parse_reply(nil_ack, sizeof nil_ack, &r), -1);
}
END_TEST

/* The version 2 HELLO of PROTOCOL.md 2.3, byte for byte; seq decodes,
 * and is ignored in a version 1 HELLO. */
START_TEST(test_hello_seq)
{
	static const unsigned char tail[] = {0xa3, 's',	 'e', 'q',
					     0xcd, 0x01, 0x2c};
	struct proto_hello h = {.version = 2,
				.instance = 0x5eed0123456789abull,
				.pid = 4242,
				.app = {"worker", 6},
				.backend = {"thread", 6},
				.reason = {"default", 7},
				.clock_offset = 1764000000000000000ll,
				.client = {"libctxleak 0.1.0", 16},
				.has_seq = 1,
				.seq = 300};
	unsigned char buf[256];
	struct proto_decoder *d;
	struct proto_msg m;
	size_t n;

	for (uint32_t version = 2; version >= 1; version--) {
		h.version = version;
		n = proto_encode_hello(buf, sizeof buf, &h);
		ck_assert_uint_eq(n, 129);
		ck_assert_uint_eq(buf[0], 0x89);
		ck_assert_uint_eq(buf[9], version);
		ck_assert_mem_eq(buf + n - sizeof tail, tail, sizeof tail);
		d = proto_decoder_new(NULL);
		ck_assert_int_eq(proto_decoder_feed(d, buf, n), 0);
		ck_assert_int_eq(proto_decoder_next(d, &m), PROTO_OK);
		ck_assert(m.is_hello);
		ck_assert_int_eq(m.hello.has_seq, version == 2);
		ck_assert_uint_eq(m.hello.seq, version == 2 ? 300 : 0);
		proto_decoder_free(d);
	}
	h.has_seq = 0;
	ck_assert_uint_eq(proto_encode_hello(buf, sizeof buf, &h), 122);
}
END_TEST

/* proto_object_size agrees with msgpack-c on every format, and a cut
 * object is incomplete, however large its headers say it is. */
START_TEST(test_object_size)
{
	static const unsigned char str32_4gib[] = {0xdb, 0xff, 0xff,
						   0xff, 0xff, 'x'};
	static const unsigned char array32_huge[] = {0xdd, 0xff, 0xff, 0xff,
						     0xff, 0x01, 0x02};
	char big[70000];
	struct pk p;
	msgpack_unpacked u;
	size_t off = 0, start;
	int objects = 0;

	memset(big, 'b', sizeof big);
	pk_init(&p);
	msgpack_pack_nil(&p.pk);
	msgpack_pack_true(&p.pk);
	msgpack_pack_int64(&p.pk, -1);
	msgpack_pack_int64(&p.pk, -200);
	msgpack_pack_int64(&p.pk, INT64_MIN);
	msgpack_pack_uint64(&p.pk, UINT64_MAX);
	msgpack_pack_float(&p.pk, 1.5f);
	msgpack_pack_double(&p.pk, 1.5);
	msgpack_pack_str_with_body(&p.pk, big, 31);
	msgpack_pack_str_with_body(&p.pk, big, 200);
	msgpack_pack_str_with_body(&p.pk, big, 1000);
	msgpack_pack_str_with_body(&p.pk, big, sizeof big);
	msgpack_pack_bin_with_body(&p.pk, big, 10);
	msgpack_pack_bin_with_body(&p.pk, big, 300);
	msgpack_pack_bin_with_body(&p.pk, big, sizeof big);
	for (size_t n = 1; n <= 16; n *= 2)
		msgpack_pack_ext_with_body(&p.pk, big, n, 1); /* fixext */
	msgpack_pack_ext_with_body(&p.pk, big, 3, 1);
	msgpack_pack_ext_with_body(&p.pk, big, 300, 1);
	msgpack_pack_ext_with_body(&p.pk, big, sizeof big, 1);
	msgpack_pack_array(&p.pk, 20);
	for (int i = 0; i < 20; i++)
		msgpack_pack_map(&p.pk, 0);
	msgpack_pack_map(&p.pk, 17);
	for (int i = 0; i < 17; i++) {
		msgpack_pack_int(&p.pk, i);
		msgpack_pack_array(&p.pk, 1);
		msgpack_pack_array(&p.pk, 0);
	}
	msgpack_unpacked_init(&u);
	while (off < p.sb.size) {
		start = off;
		ck_assert_int_eq(
		    msgpack_unpack_next(&u, p.sb.data, p.sb.size, &off),
		    MSGPACK_UNPACK_SUCCESS);
		ck_assert_int_eq(
		    proto_object_size(p.sb.data + start, p.sb.size - start),
		    (int64_t)(off - start));
		for (size_t cut = start; cut < off; cut += 1 + cut / 64)
			ck_assert_int_eq(
			    proto_object_size(p.sb.data + start, cut - start),
			    0);
		objects++;
	}
	ck_assert_int_eq(objects, 25);
	msgpack_unpacked_destroy(&u);
	msgpack_sbuffer_destroy(&p.sb);
	ck_assert_int_eq(proto_object_size(str32_4gib, sizeof str32_4gib), 0);
	ck_assert_int_eq(proto_object_size(array32_huge, sizeof array32_huge),
			 0);
	ck_assert_int_eq(proto_object_size("\x92\x01\xc1", 3), -1);
}
END_TEST

static Suite *receipt_suite(void)
{
	return check_suite(
	    "receipt",
	    check_tcase("core", 0, test_receipt_bytes, test_receipt_round_trip,
			test_receipt_trailing_elements, test_receipt_malformed,
			test_ack_bytes, test_reply_stream, test_hello_seq,
			test_object_size, NULL),
	    NULL);
}

/* ------------------------------------------------------------ framing */

/* Records appended one by one are the encoder's bytes back to back, in an
 * array that grows from 4 KiB by doubling; freeing leaves it empty. */
START_TEST(test_bytes_append)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs), off = 0, len;
	struct proto_bytes b = {0};
	unsigned char one[1024];

	ck_assert_int_eq(proto_bytes_reserve(&b, 1), 0);
	ck_assert_uint_eq(b.cap, 4096);
	ck_assert_uint_eq(b.len, 0);
	ck_assert_int_eq(proto_bytes_reserve(&b, 4097), 0);
	ck_assert_uint_eq(b.cap, 8192);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(proto_bytes_record(&b, &recs[i]), 0);
	for (size_t i = 0; i < n; i++) {
		len = proto_encode_record(one, sizeof one, &recs[i]);
		ck_assert_uint_gt(len, 0);
		ck_assert_mem_eq(b.p + off, one, len);
		off += len;
	}
	ck_assert_uint_eq(b.len, off);
	proto_bytes_free(&b);
	ck_assert_ptr_null(b.p);
	ck_assert_uint_eq(b.len + b.cap, 0);
}
END_TEST

/* Every record's bounds, type and ts are found in a run of them; a run
 * cut anywhere counts only the records wholly inside it. */
START_TEST(test_frame_bounds)
{
	struct proto_record recs[16];
	size_t n = sample_records(recs), ends[17], pos = 0, len;
	struct proto_bytes b = {0};
	uint64_t whole;

	recs[n++] = (struct proto_record){.type = PROTO_WATERMARK, .ts = 999};
	recs[n++] = (struct proto_record){.type = PROTO_CLOSE, .ts = 1000};
	ends[0] = 0;
	for (size_t i = 0; i < n; i++) {
		ck_assert_int_eq(proto_bytes_record(&b, &recs[i]), 0);
		ends[i + 1] = b.len;
	}
	for (size_t i = 0; i < n; i++) {
		len = proto_frame_size(b.p + pos, b.len - pos);
		ck_assert_uint_eq(len, ends[i + 1] - ends[i]);
		ck_assert_int_eq(proto_frame_is_mark(b.p + pos, len),
				 recs[i].type == PROTO_WATERMARK ||
				     recs[i].type == PROTO_CLOSE);
		ck_assert_uint_eq(proto_frame_ts(b.p + pos, len), recs[i].ts);
		pos += len;
	}
	ck_assert_uint_eq(proto_frame_size(b.p + pos, 0), 0);
	/* Three marks: the sample's watermark, ours, and a CLOSE. */
	ck_assert_uint_eq(proto_frame_count(b.p, b.len), n - 3);
	for (size_t cut = 0; cut <= b.len; cut++) {
		whole = 0;
		for (size_t i = 0; i < n; i++)
			whole += ends[i + 1] <= cut &&
				 recs[i].type != PROTO_WATERMARK &&
				 recs[i].type != PROTO_CLOSE;
		ck_assert_uint_eq(proto_frame_count(b.p, cut), whole);
	}
	proto_bytes_free(&b);
}
END_TEST

/* A ts in each of msgpack's unsigned formats, at both ends of each. */
START_TEST(test_frame_ts_widths)
{
	unsigned char buf[PROTO_RECORD_FIXED_MAX];
	struct proto_record r = {.type = PROTO_END, .ctx = 5, .cur = 6};
	size_t len;

	for (size_t i = 0; i < N_EDGE_UINTS; i++) {
		r.ts = edge_uints[i];
		r.type = i % 2 ? PROTO_WATERMARK : PROTO_END;
		len = proto_encode_record(buf, sizeof buf, &r);
		ck_assert_uint_eq(proto_frame_size(buf, len), len);
		ck_assert_uint_eq(proto_frame_size(buf, len - 1), 0);
		ck_assert_uint_eq(proto_frame_ts(buf, len), edge_uints[i]);
		ck_assert_int_eq(proto_frame_is_mark(buf, len), i % 2);
		ck_assert_uint_eq(proto_frame_count(buf, len), !(i % 2));
	}
}
END_TEST

static Suite *framing_suite(void)
{
	Suite *s = suite_create("framing");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_bytes_append);
	tcase_add_test(tc, test_frame_bounds);
	tcase_add_test(tc, test_frame_ts_widths);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(encoder_suite(), round_trip_suite(), chunking_suite(),
			  malformed_suite(), compat_suite(), names_suite(),
			  receipt_suite(), framing_suite(), NULL);
}
