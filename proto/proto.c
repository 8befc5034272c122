/*
 * proto.c: the tables of the wire protocol that both sides share: the
 * record layouts' lengths, the default limits, and the names of types and
 * statuses for logs and messages; moving a decoded string into memory
 * of one's own; and the random numbers both sides seed their IDs and
 * hashes with.
 */
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

uint64_t proto_random64(void)
{
	struct timespec ts;
	uint64_t x;

	if (getrandom(&x, sizeof(x), GRND_NONBLOCK) == sizeof(x) && x != 0)
		return x;
	/* Without the kernel's entropy (early boot, a seccomp filter), the
	 * clock, the pid and the stack differ from run to run, which is all
	 * an ID key or a seed that never leaves the process needs. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	x = proto_mix64(
	    ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) ^
	    ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&x);
	return x ? x : 1;
}

void proto_str_move(struct proto_str *s, char **at)
{
	if (s->ptr == NULL)
		return;
	memcpy(*at, s->ptr, s->len);
	s->ptr = *at;
	*at += s->len;
}

const uint8_t proto_type_fields[PROTO_TYPE_MAX + 1] = {
    [PROTO_SITE] = 9,	 [PROTO_BEGIN] = 9,   [PROTO_END] = 7,
    [PROTO_TAG] = 8,	 [PROTO_EVENT] = 8,   [PROTO_RESUME] = 6,
    [PROTO_SUSPEND] = 6, [PROTO_DROPPED] = 8, [PROTO_WATERMARK] = 6,
    [PROTO_CLOSE] = 6,
};

void proto_limits_default(struct proto_limits *lim)
{
	lim->max_object = PROTO_DEFAULT_MAX_OBJECT;
	lim->max_string = PROTO_DEFAULT_MAX_STRING;
	lim->max_array = PROTO_DEFAULT_MAX_ARRAY;
	lim->max_depth = PROTO_DEFAULT_MAX_DEPTH;
}

const char *proto_type_name(unsigned type)
{
	static const char *const names[PROTO_TYPE_MAX + 1] = {
	    [PROTO_SITE] = "SITE",
	    [PROTO_BEGIN] = "BEGIN",
	    [PROTO_END] = "END",
	    [PROTO_TAG] = "TAG",
	    [PROTO_EVENT] = "EVENT",
	    [PROTO_RESUME] = "RESUME",
	    [PROTO_SUSPEND] = "SUSPEND",
	    [PROTO_DROPPED] = "DROPPED",
	    [PROTO_WATERMARK] = "WATERMARK",
	    [PROTO_CLOSE] = "CLOSE",
	};

	if (type == 0 || type > PROTO_TYPE_MAX)
		return "?";
	return names[type];
}

const char *proto_status_name(enum proto_status st)
{
	switch (st) {
	case PROTO_OK:
		return "ok";
	case PROTO_MORE:
		return "more";
	case PROTO_E_NOT_MSGPACK:
		return "not msgpack";
	case PROTO_E_TOO_BIG:
		return "object too big";
	case PROTO_E_STRING:
		return "string too long";
	case PROTO_E_ARRAY:
		return "array too long";
	case PROTO_E_DEPTH:
		return "nested too deep";
	case PROTO_E_TYPE:
		return "wrong type";
	case PROTO_E_SHORT:
		return "short record";
	case PROTO_E_NO_HELLO:
		return "record before HELLO";
	case PROTO_E_HELLO:
		return "bad HELLO";
	case PROTO_E_VERSION:
		return "unsupported version";
	case PROTO_E_NOMEM:
		return "out of memory";
	}
	return "?";
}
