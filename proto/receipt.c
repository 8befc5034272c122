/*
 * receipt.c: reading what the daemon says back, its RECEIPT and ACKs,
 * and the msgpack object bounds that reading them (and the client's
 * shipper, which finds record boundaries in its own batches) needs.
 *
 * The client library links this file but not msgpack-c, so the bounds are
 * found here from the format's headers alone.  They are general (every
 * msgpack format, any nesting) because a daemon message may carry trailing
 * elements of a later revision, of any type, which a client skips.
 */
#include "proto.h"

/* What a value's first byte says about its size. */
struct head {
	unsigned size;	 /* header bytes, the length field included */
	unsigned lenlen; /* bytes of the big-endian length at byte 1; 0:
			    the length is n */
	unsigned counts; /* the length counts 0: payload bytes, 1: values
			    (array), 2: pairs of values (map) */
	uint64_t n;
};

static uint64_t be(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | *p++;
	return v;
}

/* -1 for 0xc1, the one byte msgpack never uses. */
static int read_head(uint8_t c, struct head *h)
{
	*h = (struct head){1, 0, 0, 0};
	if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
		return 0;
	if (c <= 0x9f) {
		h->counts = c <= 0x8f ? 2 : 1;
		h->n = c & 0x0f;
		return 0;
	}
	if (c <= 0xbf) {
		h->n = c & 0x1f;
		return 0;
	}
	if (c >= 0xc4 && c <= 0xc6) {
		h->lenlen = 1u << (c - 0xc4); /* bin */
	} else if (c >= 0xc7 && c <= 0xc9) {
		h->lenlen = 1u << (c - 0xc7); /* ext: length, then type */
		h->size++;
	} else if (c == 0xca || c == 0xcb) {
		h->n = c == 0xca ? 4 : 8; /* float */
	} else if (c >= 0xcc && c <= 0xd3) {
		h->n = 1u << ((c - 0xcc) & 3); /* uint, int */
	} else if (c >= 0xd4 && c <= 0xd8) {
		h->n = 1 + (1u << (c - 0xd4)); /* fixext: type, data */
	} else if (c >= 0xd9 && c <= 0xdb) {
		h->lenlen = 1u << (c - 0xd9); /* str */
	} else if (c >= 0xdc && c <= 0xdf) {
		h->lenlen = 2u << (c & 1); /* array, map 16/32 */
		h->counts = c <= 0xdd ? 1 : 2;
	} else {
		return -1;
	}
	h->size += h->lenlen;
	return 0;
}

int64_t proto_object_size(const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t left = 1, n;
	size_t off = 0;
	struct head h;

	/* Every value takes at least a byte, so this ends within len
	 * rounds whatever the headers announce. */
	while (left-- > 0) {
		if (off >= len)
			return 0;
		if (read_head(p[off], &h) == -1)
			return -1;
		if (h.size > len - off)
			return 0;
		n = h.lenlen ? be(p + off + 1, h.lenlen) : h.n;
		off += h.size;
		if (h.counts) {
			left += h.counts * n;
		} else {
			if (n > len - off)
				return 0;
			off += n;
		}
	}
	return (int64_t)off;
}

/* An unsigned integer at p[0..n): its bytes, or -1 for anything else. */
static int read_uint(const uint8_t *p, size_t n, uint64_t *v)
{
	unsigned size;

	if (n == 0 || (p[0] > 0x7f && (p[0] < 0xcc || p[0] > 0xcf)))
		return -1;
	if (p[0] <= 0x7f) {
		*v = p[0];
		return 1;
	}
	size = 1u << (p[0] - 0xcc);
	if (size >= n)
		return -1;
	*v = be(p + 1, size);
	return 1 + (int)size;
}

/* Fields each known kind has after its kind (index: PROTO_MSG_*). */
static const unsigned reply_fields[] = {0, 2, 1};

int64_t proto_parse_reply(const void *buf, size_t len, struct proto_reply *out)
{
	const uint8_t *p = buf;
	int64_t size = proto_object_size(buf, len);
	uint64_t field[3], elems;
	unsigned want;
	struct head h;
	size_t off;
	int n;

	if (size <= 0)
		return size;
	read_head(p[0], &h);
	elems = h.lenlen ? be(p + 1, h.lenlen) : h.n;
	if (h.counts != 1 || elems < 1)
		return -1;
	off = h.size;
	n = read_uint(p + off, (size_t)size - off, &field[0]);
	if (n == -1)
		return -1;
	off += (size_t)n;
	want = field[0] < sizeof reply_fields / sizeof reply_fields[0]
		   ? reply_fields[field[0]]
		   : 0;
	if (field[0] == 0 || elems < 1 + want)
		return -1;
	for (unsigned i = 1; i <= want; i++) {
		n = read_uint(p + off, (size_t)size - off, &field[i]);
		if (n == -1)
			return -1;
		off += (size_t)n;
	}
	*out = (struct proto_reply){.kind = field[0]};
	if (field[0] == PROTO_MSG_RECEIPT)
		out->receipt = (struct proto_receipt){field[1], field[2]};
	else if (field[0] == PROTO_MSG_ACK)
		out->watermark = field[1];
	return size;
}

int64_t proto_parse_receipt(const void *buf, size_t len,
			    struct proto_receipt *out)
{
	struct proto_reply r;
	int64_t size = proto_parse_reply(buf, len, &r);

	if (size <= 0)
		return size;
	if (r.kind != PROTO_MSG_RECEIPT)
		return -1;
	*out = r.receipt;
	return size;
}
