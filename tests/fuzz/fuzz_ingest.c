/*
 * fuzz_ingest.c: the libFuzzer target over ctxleakd's ingest path: the
 * streaming decoder, one rules engine and the store on an in-memory
 * SQLite database, wired as conn.c and process.c wire them (SITE IDs
 * translated by the store, WATERMARK advances the rules, DROPPED goes to
 * the store, everything judged at the end as at a disconnect).
 *
 * An input is two bytes of options, then a client stream (HELLO and
 * records, as tests/fuzz/mkseeds.c captures them):
 *
 *	byte 0, bit 7	 hold_records (--keep=leaky), else --keep=all
 *	byte 0, bits 0-3 the largest chunk fed at once is 2^n bytes
 *	byte 1		 seeds the sequence of chunk sizes
 *
 * so that the fuzzer explores how the stream is cut as well as what it
 * holds.  The engine's limits are small so that evictions, forced
 * judgements and dropped tags happen within short inputs; they are also
 * checked after every record, since bounded memory is what the limits
 * promise.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "ctxleakd.h"

#define OPTION_BYTES 2
#define MAX_SITES    1024

struct ingest {
	struct store *store;
	struct store_proc proc;
	int have_proc;
	struct rules *rules;
	struct rules_config rc;
	uint64_t request_seq;
	uint32_t sites[MAX_SITES]; /* client site ID -> sites.id */
	uint64_t records, dropped;
};

static void sink_verdict(void *arg, const struct rules_verdict *v)
{
	struct ingest *in = arg;

	store_verdict(in->store, &in->proc, v);
}

static void sink_finding(void *arg, const struct rules_finding *f)
{
	struct ingest *in = arg;

	store_finding(in->store, &in->proc, f);
}

static void sink_request(void *arg, const struct rules_request *rq)
{
	struct ingest *in = arg;

	store_request(in->store, &in->proc, rq);
}

static void sink_update(void *arg, const struct rules_update *u)
{
	struct ingest *in = arg;

	store_update(in->store, &in->proc, u);
}

/* The limits hold after every record, whatever the input. */
static void check_bounds(const struct ingest *in)
{
	struct rules_stats st;

	rules_stats(in->rules, &st);
	if (st.pending > in->rc.max_pending ||
	    st.open_scopes > in->rc.max_open_scopes ||
	    st.ended_scopes > in->rc.max_ended_scopes)
		abort();
}

static void on_hello(struct ingest *in, const struct proto_hello *hello)
{
	struct store_process_info pi = {hello, getpid(), getuid(), getgid()};

	if (store_process_open(in->store, &pi, &in->proc) == 0)
		in->have_proc = 1;
}

static void on_record(struct ingest *in, struct proto_record *rec)
{
	switch (rec->type) {
	case PROTO_SITE:
		if (rec->site != 0 && rec->site < MAX_SITES)
			in->sites[rec->site] =
			    (uint32_t)store_site(in->store, &in->proc, rec);
		break;
	case PROTO_DROPPED:
		in->dropped += rec->count;
		store_dropped(in->store, &in->proc, rec);
		break;
	case PROTO_WATERMARK:
		rules_advance(in->rules, rec->ts);
		break;
	default:
		rec->site = rec->site < MAX_SITES ? in->sites[rec->site] : 0;
		in->records++;
		if (rules_add(in->rules, rec) == -1)
			abort();
		check_bounds(in);
		break;
	}
}

/* Decode what is buffered; 0 to go on, -1 once the stream went bad. */
static int drain(struct ingest *in, struct proto_decoder *dec)
{
	struct proto_msg msg;
	enum proto_status st;

	while ((st = proto_decoder_next(dec, &msg)) == PROTO_OK) {
		if (msg.is_hello)
			on_hello(in, &msg.hello);
		else if (in->have_proc)
			on_record(in, &msg.rec);
	}
	return st == PROTO_MORE ? 0 : -1;
}

/* A xorshift step: the chunk sizes come from the input, reproducibly. */
static uint32_t next_chunk(uint32_t *state, uint32_t max)
{
	*state ^= *state << 13;
	*state ^= *state >> 17;
	*state ^= *state << 5;
	return 1 + *state % max;
}

static void feed_stream(struct ingest *in, const uint8_t *data, size_t size,
			uint8_t opt, uint8_t seed)
{
	struct proto_decoder *dec = proto_decoder_new(NULL);
	uint32_t max = 1u << (opt & 0x0f);
	uint32_t state = 0x9e3779b9u ^ seed;
	size_t off = 0, n;

	if (dec == NULL)
		abort();
	while (off < size) {
		n = next_chunk(&state, max);
		if (n > size - off)
			n = size - off;
		if (proto_decoder_feed(dec, data + off, n) != 0 ||
		    drain(in, dec) == -1)
			break;
		store_tick(in->store);
		off += n;
	}
	proto_decoder_free(dec);
}

static void finish(struct ingest *in)
{
	struct rules_model model;

	rules_finish(in->rules);
	rules_model(in->rules, &model);
	if (in->have_proc)
		store_process_update(in->store, &in->proc, in->records,
				     in->dropped, 0, 0, -1, NULL, &model, 1);
}

const char *__asan_default_options(void);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every input opens and closes a store: with ASan's default 256 MB
 * quarantine of freed memory, page faults took most of the time.  A freed
 * block is still poisoned until 16 MB more have been freed, which covers
 * any use after free within one input. */
const char *__asan_default_options(void)
{
	return "quarantine_size_mb=16:malloc_context_size=10";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_config sc = {.path = ":memory:", .commit_rows = 64};
	struct rules_sink sink = {sink_verdict, sink_finding, sink_request,
				  sink_update, NULL};
	struct ingest *in;
	char err[256];

	if (size < OPTION_BYTES)
		return 0;
	in = calloc(1, sizeof *in);
	if (in == NULL ||
	    (in->store = store_open(&sc, err, sizeof err)) == NULL)
		abort();
	rules_config_default(&in->rc);
	in->rc.max_open_scopes = 64;
	in->rc.max_pending = 256;
	in->rc.max_ended_scopes = 64;
	in->rc.max_tags = 8;
	in->rc.hold_records = (data[0] & 0x80) != 0;
	in->request_seq = store_last_request_id(in->store);
	in->rc.request_seq = &in->request_seq;
	sink.arg = in;
	if ((in->rules = rules_new(&in->rc, &sink)) == NULL)
		abort();
	feed_stream(in, data + OPTION_BYTES, size - OPTION_BYTES, data[0],
		    data[1]);
	finish(in);
	rules_free(in->rules);
	store_close(in->store);
	free(in);
	return 0;
}
