/*
 * bench_proto.c: the speed of the wire protocol's encoder and decoder,
 * each against msgpack-c doing the same work in the same run: the encoder
 * against msgpack-c's packer writing the same record into a fixed buffer,
 * the decoder (framing, limits, conversion to struct proto_msg) against
 * msgpack-c's own streaming unpacker merely unpacking the same stream in
 * the same chunks.
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"

#define ENCODE_RECORDS 20000000
#define DECODE_RECORDS 2000000
#define CHUNK	       65536

static volatile size_t sink;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct proto_record event_record(void)
{
	struct proto_record r = {
	    .type = PROTO_EVENT,
	    .ts = 1234567890123ULL,
	    .tid = 48213,
	    .ctx = 0x9c2f11d0a4b3e871ULL,
	    .cause = 0x9c2f11d0a4b3e871ULL,
	    .site = 17,
	    .name = {"db.done", 7},
	    .message = {"3 rows", 6},
	};
	return r;
}

/* A fixed buffer for msgpack-c's packer, wrapping like the encoder's. */
struct fixed {
	char buf[CHUNK];
	size_t len;
};

static int fixed_write(void *data, const char *p, size_t n)
{
	struct fixed *f = data;

	if (f->len + n > sizeof(f->buf))
		f->len = 0;
	memcpy(f->buf + f->len, p, n);
	f->len += n;
	return 0;
}

static void pack_event(msgpack_packer *pk, const struct proto_record *r)
{
	msgpack_pack_array(pk, 8);
	msgpack_pack_uint64(pk, r->type);
	msgpack_pack_uint64(pk, r->ts);
	msgpack_pack_uint64(pk, r->tid);
	msgpack_pack_uint64(pk, r->ctx);
	msgpack_pack_uint64(pk, r->cause);
	msgpack_pack_uint32(pk, r->site);
	msgpack_pack_str_with_body(pk, r->name.ptr, r->name.len);
	msgpack_pack_str_with_body(pk, r->message.ptr, r->message.len);
}

static void bench_encode(void)
{
	static uint8_t buf[CHUNK];
	static struct fixed f;
	struct proto_record r = event_record();
	msgpack_packer pk;
	size_t pos = 0, total = 0;
	double t0, ours, theirs;

	t0 = now_s();
	for (long i = 0; i < ENCODE_RECORDS; i++) {
		size_t n;

		r.ts++;
		n = proto_encode_record(buf + pos, sizeof(buf) - pos, &r);
		if (!n) {
			pos = 0;
			n = proto_encode_record(buf, sizeof(buf), &r);
		}
		pos += n;
		total += n;
	}
	ours = now_s() - t0;
	sink = total + buf[pos / 2];

	msgpack_packer_init(&pk, &f, fixed_write);
	r = event_record();
	t0 = now_s();
	for (long i = 0; i < ENCODE_RECORDS; i++) {
		r.ts++;
		pack_event(&pk, &r);
	}
	theirs = now_s() - t0;
	sink = f.len + (size_t)f.buf[f.len / 2];

	printf("encode EVENT (%zu bytes): proto_encode_record %.2f ns, "
	       "msgpack-c packer %.2f ns (%.1fx)\n",
	       total / ENCODE_RECORDS, ours * 1e9 / ENCODE_RECORDS,
	       theirs * 1e9 / ENCODE_RECORDS, theirs / ours);
}

/* A HELLO then a realistic mix: begin, tags, events, end. */
static uint8_t *make_stream(size_t *len)
{
	struct proto_hello h = {.version = PROTO_VERSION,
				.instance = 7,
				.pid = 1,
				.app = {"bench", 5}};
	size_t cap = (size_t)DECODE_RECORDS * 64 + 4096, n = 0;
	uint8_t *p = malloc(cap);
	struct proto_record r = event_record();

	if (!p)
		exit(1);
	n += proto_encode_hello(p, cap, &h);
	for (long i = 0; i < DECODE_RECORDS; i++) {
		static const uint8_t mix[] = {PROTO_BEGIN, PROTO_TAG,
					      PROTO_EVENT, PROTO_TAG,
					      PROTO_EVENT, PROTO_END};

		r.type = mix[i % sizeof(mix)];
		r.ts++;
		r.key = (struct proto_str){"user", 4};
		r.value = (struct proto_str){"alice", 5};
		r.prev = r.cur = r.ctx;
		n += proto_encode_record(p + n, cap - n, &r);
	}
	*len = n;
	return p;
}

static double decode_ours(const uint8_t *p, size_t len, long *msgs)
{
	struct proto_decoder *d = proto_decoder_new(NULL);
	struct proto_msg msg;
	double t0 = now_s();

	*msgs = 0;
	for (size_t at = 0; at < len; at += CHUNK) {
		size_t n = len - at < CHUNK ? len - at : CHUNK;

		if (proto_decoder_feed(d, p + at, n) != 0)
			exit(1);
		while (proto_decoder_next(d, &msg) == PROTO_OK) {
			sink += msg.rec.ts;
			(*msgs)++;
		}
	}
	t0 = now_s() - t0;
	proto_decoder_free(d);
	return t0;
}

static double decode_msgpack_c(const uint8_t *p, size_t len, long *msgs)
{
	msgpack_unpacker u;
	msgpack_unpacked res;
	double t0;

	msgpack_unpacker_init(&u, CHUNK * 2);
	msgpack_unpacked_init(&res);
	*msgs = 0;
	t0 = now_s();
	for (size_t at = 0; at < len; at += CHUNK) {
		size_t n = len - at < CHUNK ? len - at : CHUNK;

		if (!msgpack_unpacker_reserve_buffer(&u, n))
			exit(1);
		memcpy(msgpack_unpacker_buffer(&u), p + at, n);
		msgpack_unpacker_buffer_consumed(&u, n);
		while (msgpack_unpacker_next(&u, &res) ==
		       MSGPACK_UNPACK_SUCCESS) {
			sink += res.data.type;
			(*msgs)++;
		}
	}
	t0 = now_s() - t0;
	msgpack_unpacked_destroy(&res);
	msgpack_unpacker_destroy(&u);
	return t0;
}

static void bench_decode(void)
{
	size_t len;
	uint8_t *p = make_stream(&len);
	long ours_n, theirs_n;
	double ours = decode_ours(p, len, &ours_n);
	double theirs = decode_msgpack_c(p, len, &theirs_n);

	printf("decode %ld messages, %.1f MB in %d-byte reads:\n"
	       "  proto_decoder     %.1f ns/record, %.2f M records/s\n"
	       "  msgpack_unpacker  %.1f ns/record, %.2f M records/s "
	       "(unpack only, no checks)\n",
	       ours_n, (double)len / 1e6, CHUNK, ours * 1e9 / (double)ours_n,
	       (double)ours_n / ours / 1e6, theirs * 1e9 / (double)theirs_n,
	       (double)theirs_n / theirs / 1e6);
	free(p);
}

int main(void)
{
	bench_encode();
	bench_decode();
	return 0;
}
