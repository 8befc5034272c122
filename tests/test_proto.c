/*
 * test_proto.c: tests of the wire protocol in proto/: the encoder against
 * msgpack-c's packer, the decoder's round trips, chunking, limits and
 * malformed input.
 */
#include <check.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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

/* ------------------------------------------------------ round trips */

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
	proto_decoder_free(d);
	free(b.p);
}
END_TEST

static Suite *round_trip_suite(void)
{
	Suite *s = suite_create("round trip");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_round_trip_every_type);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(round_trip_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
