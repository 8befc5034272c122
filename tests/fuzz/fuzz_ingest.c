/*
 * fuzz_ingest.c: the libFuzzer target over ctxleakd's ingest path, the
 * daemon's own: the streaming decoder under the daemon's limits, then
 * ingest.c and process.c as a connection drives them (HELLO, site map,
 * DROPPED, WATERMARK, records, duplicates, the daemon-wide limits, the
 * what-if), into the store on an in-memory SQLite database; everything is
 * finalised at the end as at a disconnect.
 *
 * An input is two bytes of options, then a client stream (HELLO and
 * records, as tests/fuzz/mkseeds.c captures them):
 *
 *	byte 0, bit 7	 --keep=leaky, else --keep=all
 *	byte 0, bit 6	 the stream is sent again on a second connection,
 *			 as a client does after a reconnection
 *	byte 0, bit 5	 ... while the process lingers, else after it was
 *			 finalised (its row then says what it has)
 *	byte 0, bit 4	 --what-if=off
 *	byte 0, bits 0-3 the largest chunk fed at once is 2^n bytes
 *	byte 1		 seeds the sequence of chunk sizes; its bit 0 also
 *			 sets the daemon-wide scope limits under one
 *			 process's, so that they are what trims it
 *
 * so that the fuzzer explores how the stream is cut as well as what it
 * holds.  The limits are small so that evictions, forced judgements and
 * records not held happen within short inputs; the engine's are also
 * checked after every message, since bounded memory is what they promise.
 * A stream sent again to its lingering process, from a HELLO that says
 * where it starts, must be dropped whole: the same records twice would be
 * counted and judged twice.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

#define OPTION_BYTES 2
/* Scopes one engine holds, open and ended (--max-open-scopes,
 * --max-ended-scopes): about 30 bytes each on the wire, so a few KiB of
 * input passes them. */
#define SCOPES 64

/* What ctxleakd.c defines for the daemon; set here per input. */
struct config cfg;

/* For the timer of a lingering process; never dispatched: the process is
 * continued or finalised by the end of the input. */
static struct event_base *base;

/* What one connection sent that the process keeps track of. */
struct sent {
	uint64_t records; /* records for the engine, duplicates or not */
	int resumable;	  /* a HELLO with the stream position of its first
			     record, one the daemon can count on from */
};

static void set_config(uint8_t opt0, uint8_t opt1)
{
	struct rules_config rc;

	rules_config_default(&rc);
	cfg.keep_all = (opt0 & 0x80) == 0;
	cfg.what_if = (opt0 & 0x10) == 0;
	cfg.max_open_scopes = SCOPES;
	cfg.max_ended_scopes = SCOPES;
	cfg.max_open_scopes_total = opt1 & 1 ? SCOPES / 2 : 0;
	cfg.max_ended_scopes_total = opt1 & 1 ? SCOPES / 2 : 0;
	cfg.max_request_age = rc.max_request_age;
	cfg.max_held = 8192;
	cfg.max_pending = 4096;
	cfg.linger = opt0 & 0x20 ? 1000000000u : 0;
	proto_limits_default(&cfg.limits);
}

/* The limits hold after every message, whatever the input. */
static void check_bounds(const struct ingest *in)
{
	struct rules_config rc;
	struct rules_stats st;

	if (ingest_process(in) == NULL)
		return;
	rules_config_default(&rc);
	process_rules_stats(ingest_process(in), &st);
	if (st.pending > rc.max_pending || st.open_scopes > SCOPES ||
	    st.ended_scopes > SCOPES)
		abort();
}

/* Decode what is buffered; 0 to go on, -1 once the connection must close
 * (the decoder's error then says why, if the stream went bad). */
static int drain(struct ingest *in, struct proto_decoder *dec,
		 struct sent *sent)
{
	struct proto_msg msg;
	enum proto_status st;

	while ((st = proto_decoder_next(dec, &msg)) == PROTO_OK) {
		if (msg.is_hello)
			/* Positions are int64_t: one past that is unknown. */
			sent->resumable = msg.hello.has_seq &&
					  msg.hello.seq < (UINT64_C(1) << 62);
		else if (msg.rec.type != PROTO_SITE &&
			 msg.rec.type != PROTO_DROPPED &&
			 msg.rec.type != PROTO_WATERMARK)
			sent->records++;
		if (ingest_message(in, &msg) == INGEST_REFUSED)
			return -1;
		check_bounds(in);
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

/* One connection that sends the stream, then closes. */
static struct sent connection(struct store *store, const uint8_t *data,
			      size_t size, uint8_t opt, uint8_t seed)
{
	struct sent sent = {0, 0};
	struct ucred cred = {getpid(), getuid(), getgid()};
	struct proto_decoder *dec = proto_decoder_new(&cfg.limits);
	struct ingest *in = ingest_open(&cred);
	uint32_t max = 1u << (opt & 0x0f);
	uint32_t state = 0x9e3779b9u ^ seed;
	const char *error = NULL;
	size_t off = 0, n;

	if (dec == NULL || in == NULL)
		abort();
	while (off < size) {
		n = next_chunk(&state, max);
		if (n > size - off)
			n = size - off;
		if (proto_decoder_feed(dec, data + off, n) != 0 ||
		    drain(in, dec, &sent) == -1) {
			error = proto_decoder_error(dec);
			break;
		}
		store_tick(store);
		off += n;
	}
	ingest_close(in, error, proto_decoder_skipped(dec));
	proto_decoder_free(dec);
	return sent;
}

const char *__asan_default_options(void);
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every input opens and closes a store: with ASan's default 256 MB
 * quarantine of freed memory, page faults took most of the time.  A freed
 * block is still poisoned until 16 MB more have been freed, which covers
 * any use after free within one input. */
const char *__asan_default_options(void)
{
	return "quarantine_size_mb=16:malloc_context_size=10";
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* The daemon's warnings, once per input, would drown the fuzzer's
	 * own lines. */
	log_set_level(LOG_LEVEL_ERROR);
	if ((base = event_base_new()) == NULL)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct store_config sc = {.path = ":memory:", .commit_rows = 64};
	struct process_stats before, after;
	struct sent again;
	struct store *store;
	char err[256];

	if (size < OPTION_BYTES)
		return 0;
	set_config(data[0], data[1]);
	sc.keep_all = cfg.keep_all;
	if ((store = store_open(&sc, err, sizeof err)) == NULL)
		abort();
	process_init(base, store);
	connection(store, data + OPTION_BYTES, size - OPTION_BYTES, data[0],
		   data[1]);
	if (data[0] & 0x40) {
		process_stats(&before);
		again = connection(store, data + OPTION_BYTES,
				   size - OPTION_BYTES, data[0], data[1]);
		process_stats(&after);
		if (cfg.linger != 0 && again.resumable &&
		    after.duplicates - before.duplicates != again.records)
			abort();
	}
	process_finalise_all();
	store_close(store);
	/* Nothing of this input stays for the next one. */
	process_stats(&after);
	if (after.live != 0)
		abort();
	return 0;
}
