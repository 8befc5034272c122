/*
 * frame.c: records as byte runs.  The growable array that records are
 * encoded into, and the bounds, type and ts of records in a run of them
 * as proto_encode_record wrote them: what the client needs to count the
 * records of a batch and to free, from an ACK's watermark on, what it
 * keeps until the daemon has committed it (PROTOCOL.md 2.3).
 *
 * The client library links this file but not msgpack-c: every answer here
 * comes from the format's headers (proto_object_size) and the layout the
 * encoder always writes, a fixarray whose first element is the type as a
 * positive fixint and whose second is the ts.
 */
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int proto_bytes_reserve(struct proto_bytes *b, size_t more)
{
	size_t cap = b->cap ? b->cap : 4096;
	unsigned char *grown;

	if (b->len + more <= b->cap)
		return 0;
	while (cap < b->len + more)
		cap *= 2;
	grown = realloc(b->p, cap);
	if (!grown)
		return -1;
	b->p = grown;
	b->cap = cap;
	return 0;
}

int proto_bytes_record(struct proto_bytes *b, const struct proto_record *r)
{
	size_t strings = r->name.len + r->key.len + r->value.len +
			 r->message.len + r->file.len + r->func.len;

	if (proto_bytes_reserve(b, PROTO_RECORD_SIZE_MAX(strings)))
		return -1;
	b->len += proto_encode_record(b->p + b->len, b->cap - b->len, r);
	return 0;
}

void proto_bytes_free(struct proto_bytes *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

size_t proto_frame_size(const void *p, size_t n)
{
	int64_t size = proto_object_size(p, n);

	return size > 0 ? (size_t)size : 0;
}

int proto_frame_is_mark(const void *p, size_t size)
{
	const uint8_t *b = p;

	return size > 1 && (b[1] == PROTO_WATERMARK || b[1] == PROTO_CLOSE);
}

/* The ts right after the fixarray header and the type: a positive fixint
 * or uint 8, 16, 32 or 64 (0xcc to 0xcf), big-endian. */
uint64_t proto_frame_ts(const void *p, size_t size)
{
	const uint8_t *b = p;
	unsigned n;
	uint64_t ts;

	if (size < 3)
		return 0;
	n = b[2] >= 0xcc && b[2] <= 0xcf ? 1u << (b[2] - 0xcc) : 0;
	ts = n ? 0 : b[2];
	for (unsigned i = 0; i < n && 3 + i < size; i++)
		ts = ts << 8 | b[3 + i];
	return ts;
}

uint64_t proto_frame_count(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t count = 0;
	size_t pos = 0, len;

	while ((len = proto_frame_size(b + pos, n - pos))) {
		count += len > 1 && !proto_frame_is_mark(b + pos, len);
		pos += len;
	}
	return count;
}
