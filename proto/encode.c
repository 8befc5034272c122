/*
 * encode.c: the encoder of the wire protocol: one record or the HELLO map
 * (and, for the daemon, its RECEIPT) appended to a caller-owned buffer as
 * msgpack bytes.
 *
 * It sits on the client's hot path (every ctxleak_* call ends here), so it
 * writes the bytes itself instead of going through msgpack-c's packer: no
 * callback per field, no allocation, and one capacity check per record
 * against PROTO_RECORD_SIZE_MAX instead of one per field.  Integers take
 * msgpack's smallest format, exactly as msgpack-c's packer writes them, so
 * the output is byte for byte what msgpack-c would produce (the tests hold
 * it to that).
 */
#include <endian.h>
#include <string.h>

#include "proto.h"

static inline uint8_t *put_be16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof(v));
	return p + sizeof(v);
}

static inline uint8_t *put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
	return p + sizeof(v);
}

static inline uint8_t *put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof(v));
	return p + sizeof(v);
}

static inline uint8_t *put_uint(uint8_t *p, uint64_t v)
{
	if (v < 0x80) {
		*p = (uint8_t)v;
		return p + 1;
	}
	if (v <= UINT8_MAX) {
		p[0] = 0xcc;
		p[1] = (uint8_t)v;
		return p + 2;
	}
	if (v <= UINT16_MAX) {
		*p = 0xcd;
		return put_be16(p + 1, (uint16_t)v);
	}
	if (v <= UINT32_MAX) {
		*p = 0xce;
		return put_be32(p + 1, (uint32_t)v);
	}
	*p = 0xcf;
	return put_be64(p + 1, v);
}

static inline size_t uint_size(uint64_t v)
{
	if (v < 0x80)
		return 1;
	if (v <= UINT8_MAX)
		return 2;
	if (v <= UINT16_MAX)
		return 3;
	return v <= UINT32_MAX ? 5 : 9;
}

/* Negative values take the signed formats; the others are unsigned, as
 * msgpack-c's msgpack_pack_int64 writes them. */
static uint8_t *put_int(uint8_t *p, int64_t v)
{
	if (v >= 0)
		return put_uint(p, (uint64_t)v);
	if (v >= -32) {
		*p = (uint8_t)v;
		return p + 1;
	}
	if (v >= INT8_MIN) {
		p[0] = 0xd0;
		p[1] = (uint8_t)v;
		return p + 2;
	}
	if (v >= INT16_MIN) {
		*p = 0xd1;
		return put_be16(p + 1, (uint16_t)v);
	}
	if (v >= INT32_MIN) {
		*p = 0xd2;
		return put_be32(p + 1, (uint32_t)v);
	}
	*p = 0xd3;
	return put_be64(p + 1, (uint64_t)v);
}

static size_t int_size(int64_t v)
{
	if (v >= 0)
		return uint_size((uint64_t)v);
	if (v >= -32)
		return 1;
	if (v >= INT8_MIN)
		return 2;
	if (v >= INT16_MIN)
		return 3;
	return v >= INT32_MIN ? 5 : 9;
}

/* A NULL string has no bytes, whatever its len says. */
static inline uint32_t str_len(const struct proto_str *s)
{
	return s->ptr ? s->len : 0;
}

/*
 * Names and tag values are mostly a few bytes: copy those with fixed-size
 * moves (two overlapping ones) instead of a call to memcpy, which costs
 * more than the rest of the record.
 */
static inline void copy_bytes(uint8_t *p, const char *s, uint32_t len)
{
	uint64_t a, b;
	uint32_t c, d;

	if (len > 16) {
		memcpy(p, s, len);
	} else if (len >= 8) {
		memcpy(&a, s, 8);
		memcpy(&b, s + len - 8, 8);
		memcpy(p, &a, 8);
		memcpy(p + len - 8, &b, 8);
	} else if (len >= 4) {
		memcpy(&c, s, 4);
		memcpy(&d, s + len - 4, 4);
		memcpy(p, &c, 4);
		memcpy(p + len - 4, &d, 4);
	} else if (len > 0) {
		p[0] = (uint8_t)s[0];
		p[len / 2] = (uint8_t)s[len / 2];
		p[len - 1] = (uint8_t)s[len - 1];
	}
}

static inline uint8_t *put_str_bytes(uint8_t *p, const char *s, uint32_t len)
{
	if (len < 32) {
		*p++ = (uint8_t)(0xa0 | len);
	} else if (len <= UINT8_MAX) {
		p[0] = 0xd9;
		p[1] = (uint8_t)len;
		p += 2;
	} else if (len <= UINT16_MAX) {
		*p = 0xda;
		p = put_be16(p + 1, (uint16_t)len);
	} else {
		*p = 0xdb;
		p = put_be32(p + 1, len);
	}
	copy_bytes(p, s, len);
	return p + len;
}

static inline size_t str_size(uint32_t len)
{
	if (len < 32)
		return 1 + len;
	if (len <= UINT8_MAX)
		return 2 + (size_t)len;
	return (len <= UINT16_MAX ? 3 : 5) + (size_t)len;
}

/* A field that must be a string: NULL goes out as "". */
static inline uint8_t *put_str(uint8_t *p, const struct proto_str *s)
{
	return put_str_bytes(p, s->ptr, str_len(s));
}

/* A field that may be nil: NULL goes out as nil. */
static inline uint8_t *put_str_or_nil(uint8_t *p, const struct proto_str *s)
{
	if (!s->ptr) {
		*p = 0xc0;
		return p + 1;
	}
	return put_str_bytes(p, s->ptr, s->len);
}

/* nil takes one byte, as does the empty string's header. */
static inline size_t field_str_size(const struct proto_str *s)
{
	return str_size(str_len(s));
}

/*
 * SITE, DROPPED, WATERMARK and CLOSE describe no scope: their ctx and
 * cause (and the site of the last three) are 0 on the wire whatever the
 * struct holds.
 */
static inline int has_scope(unsigned type)
{
	return type != PROTO_SITE && type != PROTO_DROPPED &&
	       type != PROTO_WATERMARK && type != PROTO_CLOSE;
}

static inline int has_site(unsigned type)
{
	return type != PROTO_DROPPED && type != PROTO_WATERMARK &&
	       type != PROTO_CLOSE;
}

static inline uint8_t *put_head(uint8_t *p, const struct proto_record *r)
{
	int scoped = has_scope(r->type);

	*p++ = (uint8_t)(0x90 | proto_type_fields[r->type]);
	*p++ = r->type;
	p = put_uint(p, r->ts);
	p = put_uint(p, r->tid);
	p = put_uint(p, scoped ? r->ctx : 0);
	p = put_uint(p, scoped ? r->cause : 0);
	return put_uint(p, has_site(r->type) ? r->site : 0);
}

static size_t head_size(const struct proto_record *r)
{
	int scoped = has_scope(r->type);

	return 2 + uint_size(r->ts) + uint_size(r->tid) +
	       uint_size(scoped ? r->ctx : 0) +
	       uint_size(scoped ? r->cause : 0) +
	       uint_size(has_site(r->type) ? r->site : 0);
}

static inline uint8_t *put_record(uint8_t *p, const struct proto_record *r)
{
	p = put_head(p, r);
	switch (r->type) {
	case PROTO_SITE:
		p = put_str(p, &r->file);
		p = put_uint(p, r->line);
		return put_str(p, &r->func);
	case PROTO_BEGIN:
		p = put_uint(p, r->prev);
		p = put_uint(p, r->kind);
		return put_str_or_nil(p, &r->name);
	case PROTO_END:
		return put_uint(p, r->cur);
	case PROTO_TAG:
		p = put_str(p, &r->key);
		return put_str_or_nil(p, &r->value);
	case PROTO_EVENT:
		p = put_str(p, &r->name);
		return put_str_or_nil(p, &r->message);
	case PROTO_DROPPED:
		p = put_uint(p, r->count);
		return put_uint(p, r->since);
	}
	return p;
}

/* The exact encoded size, for when the cheap upper bound does not fit. */
static size_t record_size(const struct proto_record *r)
{
	size_t n = head_size(r);

	switch (r->type) {
	case PROTO_SITE:
		return n + field_str_size(&r->file) + uint_size(r->line) +
		       field_str_size(&r->func);
	case PROTO_BEGIN:
		return n + uint_size(r->prev) + uint_size(r->kind) +
		       field_str_size(&r->name);
	case PROTO_END:
		return n + uint_size(r->cur);
	case PROTO_TAG:
		return n + field_str_size(&r->key) + field_str_size(&r->value);
	case PROTO_EVENT:
		return n + field_str_size(&r->name) +
		       field_str_size(&r->message);
	case PROTO_DROPPED:
		return n + uint_size(r->count) + uint_size(r->since);
	}
	return n;
}

static inline size_t record_strings(const struct proto_record *r)
{
	switch (r->type) {
	case PROTO_SITE:
		return (size_t)str_len(&r->file) + str_len(&r->func);
	case PROTO_BEGIN:
		return str_len(&r->name);
	case PROTO_TAG:
		return (size_t)str_len(&r->key) + str_len(&r->value);
	case PROTO_EVENT:
		return (size_t)str_len(&r->name) + str_len(&r->message);
	}
	return 0;
}

size_t proto_encode_record(void *buf, size_t cap, const struct proto_record *r)
{
	if (r->type == 0 || r->type > PROTO_TYPE_MAX)
		return 0;
	if (cap < PROTO_RECORD_SIZE_MAX(record_strings(r)) &&
	    record_size(r) > cap)
		return 0;
	return (size_t)(put_record(buf, r) - (uint8_t *)buf);
}

/* ------------------------------------------------------------ HELLO */

static uint8_t *put_key(uint8_t *p, const char *key)
{
	return put_str_bytes(p, key, (uint32_t)strlen(key));
}

static size_t key_size(const char *key)
{
	return str_size((uint32_t)strlen(key));
}

/* The optional string keys are left out when their string is NULL. */
static uint8_t *put_opt_str(uint8_t *p, const char *key,
			    const struct proto_str *s)
{
	return s->ptr ? put_str(put_key(p, key), s) : p;
}

static size_t opt_str_size(const char *key, const struct proto_str *s,
			   unsigned *keys)
{
	if (!s->ptr)
		return 0;
	(*keys)++;
	return key_size(key) + str_size(s->len);
}

static size_t hello_size(const struct proto_hello *h, unsigned *keys)
{
	*keys = 4 + !!h->has_seq;
	return 1 + (h->has_seq ? key_size("seq") + uint_size(h->seq) : 0) +
	       key_size("version") + uint_size(h->version) +
	       key_size("instance") + uint_size(h->instance) + key_size("pid") +
	       uint_size(h->pid) + opt_str_size("app", &h->app, keys) +
	       opt_str_size("backend", &h->backend, keys) +
	       opt_str_size("reason", &h->reason, keys) +
	       key_size("clock_offset") + int_size(h->clock_offset) +
	       opt_str_size("client", &h->client, keys);
}

size_t proto_encode_hello(void *buf, size_t cap, const struct proto_hello *h)
{
	unsigned keys;
	uint8_t *p = buf;

	if (hello_size(h, &keys) > cap)
		return 0;
	*p++ = (uint8_t)(0x80 | keys);
	p = put_uint(put_key(p, "version"), h->version);
	p = put_uint(put_key(p, "instance"), h->instance);
	p = put_uint(put_key(p, "pid"), h->pid);
	p = put_opt_str(p, "app", &h->app);
	p = put_opt_str(p, "backend", &h->backend);
	p = put_opt_str(p, "reason", &h->reason);
	p = put_int(put_key(p, "clock_offset"), h->clock_offset);
	p = put_opt_str(p, "client", &h->client);
	if (h->has_seq)
		p = put_uint(put_key(p, "seq"), h->seq);
	return (size_t)(p - (uint8_t *)buf);
}

size_t proto_encode_receipt(void *buf, size_t cap,
			    const struct proto_receipt *r)
{
	uint8_t *p = buf;
	size_t size = 2 + uint_size(r->records) + uint_size(r->dropped);

	if (size > cap)
		return 0;
	*p++ = 0x93;
	*p++ = PROTO_MSG_RECEIPT;
	p = put_uint(p, r->records);
	put_uint(p, r->dropped);
	return size;
}

size_t proto_encode_ack(void *buf, size_t cap, uint64_t watermark)
{
	uint8_t *p = buf;
	size_t size = 2 + uint_size(watermark);

	if (size > cap)
		return 0;
	*p++ = 0x92;
	*p++ = PROTO_MSG_ACK;
	put_uint(p, watermark);
	return size;
}
