/*
 * raw.c: records written as bytes, and raw connections to the daemon
 * (see raw.h).
 */
#include <check.h>
#include <unistd.h>

#include "harness_check.h"
#include "raw.h"

size_t raw_encode(unsigned char *buf, size_t cap, const struct proto_record *r)
{
	size_t n = proto_encode_record(buf, cap, r);

	ck_assert_uint_gt(n, 0);
	return n;
}

size_t raw_request(unsigned char *buf, size_t cap, uint64_t ctx, uint64_t ts)
{
	const struct proto_record r[RAW_REQUEST_RECORDS] = {
	    BEGIN(ts, 7, ctx, 0, 0, "GET /raw"),
	    TAG(ts + 1, 7, ctx, ctx, "k", "v"),
	    EVENT(ts + 2, 7, ctx, ctx, "e"),
	    END(ts + 3, 7, ctx, ctx, ctx),
	};
	size_t n = 0;

	for (size_t i = 0; i < RAW_REQUEST_RECORDS; i++)
		n += raw_encode(buf + n, cap - n, &r[i]);
	return n;
}

void raw_send(int fd, const struct proto_record *r)
{
	unsigned char buf[1024];

	ck_assert_int_eq(
	    harness_write_all(fd, buf, raw_encode(buf, sizeof buf, r)), 0);
}

void raw_send_request(int fd, uint64_t ctx, uint64_t ts)
{
	unsigned char buf[1024];

	ck_assert_int_eq(
	    harness_write_all(fd, buf, raw_request(buf, sizeof buf, ctx, ts)),
	    0);
}

int raw_connect(const struct harness_daemon *d)
{
	int fd = harness_connect(d);

	ck_assert_msg(fd >= 0, "%s", harness_error());
	return fd;
}

int raw_hello(const struct harness_daemon *d, uint64_t instance, uint32_t pid)
{
	int fd = raw_connect(d);

	ck_assert_int_eq(harness_send_hello(fd, instance, pid), 0);
	return fd;
}

void raw_send_until_closed(int fd, const void *buf, size_t len)
{
	ck_assert_int_eq(harness_write_all(fd, buf, len), 0);
	ck_assert_msg(harness_wait_closed(fd) == 0, "%s", harness_error());
	close(fd);
}

int64_t raw_records(const struct harness_daemon *d)
{
	return query_int(d, "SELECT count(*) FROM records r JOIN processes p "
			    "ON p.id = r.process_id WHERE p.app = 'raw'");
}

int64_t raw_records_of(const struct harness_daemon *d, uint64_t instance)
{
	return query_int(d,
			 "SELECT count(*) FROM records r JOIN processes p ON "
			 "p.id = r.process_id WHERE p.instance = %llu",
			 (unsigned long long)instance);
}
