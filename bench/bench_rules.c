/*
 * bench_rules.c: how fast the rules engine judges records, alone, against
 * two baselines in the same run: decoding the same records from the wire
 * (proto's decoder, the step before the engine in the daemon), and copying
 * each record into fresh memory and freeing it, the least that queueing a
 * record can cost.
 *
 * The stream is 8 threads serving requests in turn, 8 records a request
 * (BEGIN, TAG, child BEGIN, EVENT, END, TAG, EVENT, END), one request in
 * ten with a lost tag, a watermark every 1024 records as a flushing
 * client sends.  Rates are per CPU second of this process, so that other
 * load on the machine matters less; the best of five runs is printed.
 *
 * Usage: bench_rules [REQUESTS]   (default 250000)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"
#include "rules.h"

#define RECORDS_PER_REQUEST 8
#define THREADS		    8
#define WATERMARK_EVERY	    128 /* requests */
#define RUNS		    5

static double cpu_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static struct proto_str str(const char *s)
{
	struct proto_str p = {s, (uint32_t)strlen(s)};

	return p;
}

/* The records of request i, in ts order. */
static void request_records(uint64_t i, struct proto_record *v)
{
	uint64_t ts = i * RECORDS_PER_REQUEST + 1;
	uint64_t tid = 100 + i % THREADS;
	/* As the client library makes them (see bench_ingest's ctx_of). */
	uint64_t a = proto_mix64(i + 1), child = a ^ 0x55;
	const uint8_t type[RECORDS_PER_REQUEST] = {
	    PROTO_BEGIN, PROTO_TAG, PROTO_BEGIN, PROTO_EVENT,
	    PROTO_END,	 PROTO_TAG, PROTO_EVENT, PROTO_END,
	};

	memset(v, 0, RECORDS_PER_REQUEST * sizeof(*v));
	for (int k = 0; k < RECORDS_PER_REQUEST; k++) {
		v[k].type = type[k];
		v[k].ts = ts + (uint64_t)k;
		v[k].tid = tid;
		v[k].ctx = a;
		v[k].cause = a;
		v[k].cur = a;
	}
	v[0].cause = 0;
	v[0].name = str("GET /item");
	v[1].key = str("user");
	v[1].value = str("alice");
	v[2].ctx = child;
	v[2].prev = a;
	v[2].kind = PROTO_KIND_CHILD;
	v[2].name = str("db.query");
	v[3].ctx = v[3].cause = child;
	v[3].name = str("db.rows");
	v[3].message = str("1 row");
	v[4].ctx = v[4].cause = v[4].cur = child;
	v[5].ctx = i % 10 == 0 ? 0 : a; /* lost */
	v[5].key = str("status");
	v[5].value = str("200");
	v[6].name = str("response");
}

static void no_verdict(void *arg, const struct rules_verdict *v)
{
	(void)arg;
	(void)v;
}

static void no_finding(void *arg, const struct rules_finding *f)
{
	(void)arg;
	(void)f;
}

static void no_request(void *arg, const struct rules_request *rq)
{
	(void)arg;
	(void)rq;
}

static double run_rules(uint64_t requests, int hold)
{
	struct rules_sink sink = {no_verdict, no_finding, no_request, NULL,
				  NULL};
	struct proto_record v[RECORDS_PER_REQUEST];
	struct rules_config cfg;
	uint64_t seq = 0;
	struct rules *r;
	double t0;

	rules_config_default(&cfg);
	cfg.request_seq = &seq;
	cfg.hold_records = hold;
	r = rules_new(&cfg, &sink);
	if (r == NULL)
		return 0;
	t0 = cpu_now();
	for (uint64_t i = 0; i < requests; i++) {
		request_records(i, v);
		for (int k = 0; k < RECORDS_PER_REQUEST; k++)
			rules_add(r, &v[k]);
		if (i % WATERMARK_EVERY == WATERMARK_EVERY - 1)
			rules_advance(r, v[RECORDS_PER_REQUEST - 1].ts);
	}
	rules_finish(r);
	t0 = cpu_now() - t0;
	rules_free(r);
	return (double)(requests * RECORDS_PER_REQUEST) / t0;
}

static double run_copy(uint64_t requests, int unused)
{
	struct proto_record v[RECORDS_PER_REQUEST];
	volatile unsigned char sink = 0;
	double t0 = cpu_now();

	(void)unused;
	for (uint64_t i = 0; i < requests; i++) {
		request_records(i, v);
		for (int k = 0; k < RECORDS_PER_REQUEST; k++) {
			unsigned char *p = malloc(sizeof(v[k]) + 64);

			if (p == NULL)
				return 0;
			memcpy(p, &v[k], sizeof(v[k]));
			sink ^= p[1];
			free(p);
		}
	}
	return (double)(requests * RECORDS_PER_REQUEST) / (cpu_now() - t0);
}

/* Only the decoding is timed: encoding is the client's work. */
static double run_decode(uint64_t requests, int unused)
{
	static unsigned char buf[WATERMARK_EVERY * RECORDS_PER_REQUEST * 128];
	struct proto_hello hello = {.version = PROTO_VERSION, .instance = 1};
	struct proto_record v[RECORDS_PER_REQUEST];
	struct proto_decoder *d = proto_decoder_new(NULL);
	struct proto_msg msg;
	double spent = 0, t0;
	uint64_t decoded = 0;
	size_t len;

	(void)unused;
	if (d == NULL)
		return 0;
	len = proto_encode_hello(buf, sizeof(buf), &hello);
	for (uint64_t i = 0; i < requests; i += WATERMARK_EVERY) {
		for (uint64_t j = i; j < i + WATERMARK_EVERY && j < requests;
		     j++) {
			request_records(j, v);
			for (int k = 0; k < RECORDS_PER_REQUEST; k++)
				len += proto_encode_record(
				    buf + len, sizeof(buf) - len, &v[k]);
		}
		t0 = cpu_now();
		proto_decoder_feed(d, buf, len);
		while (proto_decoder_next(d, &msg) == PROTO_OK)
			decoded += !msg.is_hello;
		spent += cpu_now() - t0;
		len = 0;
	}
	proto_decoder_free(d);
	if (decoded != requests * RECORDS_PER_REQUEST) {
		fprintf(stderr, "bench_rules: decoded %llu records\n",
			(unsigned long long)decoded);
		return 0;
	}
	return (double)decoded / spent;
}

static double best_of(double (*fn)(uint64_t, int), uint64_t requests, int arg)
{
	double best = 0;

	for (int i = 0; i < RUNS; i++) {
		double rate = fn(requests, arg);

		if (rate > best)
			best = rate;
	}
	return best;
}

int main(int argc, char **argv)
{
	uint64_t requests = argc > 1 ? strtoull(argv[1], NULL, 10) : 250000;
	double copy, decode, one, held;

	if (requests == 0)
		requests = 250000;
	copy = best_of(run_copy, requests, 0);
	decode = best_of(run_decode, requests, 0);
	one = best_of(run_rules, requests, 0);
	held = best_of(run_rules, requests, 1);
	printf("stream: %llu records, %d threads, watermark every %d "
	       "records\n",
	       (unsigned long long)(requests * RECORDS_PER_REQUEST), THREADS,
	       WATERMARK_EVERY * RECORDS_PER_REQUEST);
	printf("                               records/CPU-s  vs decode\n");
	printf("baseline: copy and free         %12.0f\n", copy);
	printf("baseline: decode (proto)        %12.0f\n", decode);
	printf("rules, verdicts one by one      %12.0f  %5.1f%%\n", one,
	       100 * one / decode);
	printf("rules, hold_records (leaky)     %12.0f  %5.1f%%\n", held,
	       100 * held / decode);
	return 0;
}
