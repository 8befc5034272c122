/*
 * raw.h: records written as bytes, for tests that speak the protocol to
 * the daemon over a raw socket (harness_connect, harness_send_hello)
 * instead of through the client library.
 */
#ifndef CTXLEAK_RAW_H
#define CTXLEAK_RAW_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* The records raw_request writes. */
#define RAW_REQUEST_RECORDS 4

/* Encodes r at buf (cap bytes); its length, or the test fails. */
size_t raw_encode(unsigned char *buf, size_t cap, const struct proto_record *r);

/* One clean request of ctx on thread 7, at ts .. ts + 3: BEGIN 'GET /raw',
 * TAG k=v, EVENT e, END; RAW_REQUEST_RECORDS records, their length. */
size_t raw_request(unsigned char *buf, size_t cap, uint64_t ctx, uint64_t ts);

#endif /* CTXLEAK_RAW_H */
