/*
 * ingest.c: one connection's decoded messages into its process: the HELLO
 * that ties the connection to a process (process.c: its rules engine, its
 * store row), the connection's site IDs, DROPPED, WATERMARK, and its
 * records, those a version 2 client sends again dropped.
 *
 * No sockets, no timers: conn.c reads the socket, decodes, feeds each
 * message here and writes what the client is told; tests/fuzz/fuzz_ingest.c
 * feeds the fuzzer's streams here the same way, so that what is fuzzed is
 * the daemon's own path.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "ctxleakd.h"

/* Client site IDs are small and dense (the library counts from 1), so a
 * plain array maps them; this bounds it to 256 KiB per connection.  A
 * client that defines more gets 0 (no site) for the rest. */
#define MAX_SITES_PER_CONN 65536

struct ingest {
	struct ucred cred;    /* the kernel's, not the HELLO's */
	struct process *proc; /* NULL until HELLO */
	uint32_t *sites;      /* client site ID -> sites.id (records carry 32
				 bits) */
	uint32_t nsites;
	int sites_full_logged;
	int v2;	       /* a version 2 HELLO: ACKs, duplicates dropped */
	uint64_t next; /* its seq: 1 + the stream position of its next record
			  (process_resume); 0: no seq */
};

struct ingest *ingest_open(const struct ucred *cred)
{
	struct ingest *in = calloc(1, sizeof *in);

	if (in != NULL)
		in->cred = *cred;
	return in;
}

void ingest_close(struct ingest *in, const char *error, uint64_t skipped)
{
	if (in == NULL)
		return;
	if (in->proc != NULL)
		process_detach(in->proc, error, skipped);
	free(in->sites);
	free(in);
}

struct process *ingest_process(const struct ingest *in)
{
	return in->proc;
}

int ingest_acks(const struct ingest *in)
{
	return in->v2 && in->proc != NULL;
}

/* Record the mapping; the table grows to the highest ID seen. */
static void map_site(struct ingest *in, uint32_t client_id, int64_t db_id)
{
	uint32_t n;
	uint32_t *grown;

	if (client_id == 0)
		return;
	if (client_id >= MAX_SITES_PER_CONN) {
		if (!in->sites_full_logged)
			log_warn("pid %d: site ID %u over %d ignored",
				 (int)in->cred.pid, client_id,
				 MAX_SITES_PER_CONN);
		in->sites_full_logged = 1;
		return;
	}
	if (client_id >= in->nsites) {
		n = in->nsites != 0 ? in->nsites : 64;
		while (n <= client_id)
			n *= 2;
		grown = realloc(in->sites, n * sizeof *grown);
		if (grown == NULL)
			return;
		memset(grown + in->nsites, 0, (n - in->nsites) * sizeof *grown);
		in->sites = grown;
		in->nsites = n;
	}
	in->sites[client_id] = (uint32_t)db_id;
}

static uint32_t lookup_site(const struct ingest *in, uint32_t client_id)
{
	if (client_id >= in->nsites)
		return 0;
	return in->sites[client_id];
}

static void ingest_record(struct ingest *in, struct proto_record *rec)
{
	switch (rec->type) {
	case PROTO_SITE:
		map_site(in, rec->site, process_site(in->proc, rec));
		break;
	case PROTO_DROPPED:
		process_dropped(in->proc, rec);
		break;
	case PROTO_WATERMARK:
		process_watermark(in->proc, rec->ts);
		break;
	case PROTO_CLOSE:
		process_closed(in->proc);
		break;
	default:
		rec->site = lookup_site(in, rec->site);
		process_record(in->proc, rec, in->v2 ? &in->next : NULL);
		break;
	}
}

static enum ingest_status ingest_hello(struct ingest *in,
				       const struct proto_hello *hello)
{
	if (hello->pid != (uint32_t)in->cred.pid)
		log_info("pid %d: HELLO claims pid %u; the kernel's is kept",
			 (int)in->cred.pid, hello->pid);
	in->proc = process_attach(hello, &in->cred);
	if (in->proc == NULL)
		return INGEST_REFUSED;
	if (hello->version >= 2) {
		in->v2 = 1;
		if (hello->has_seq)
			in->next = process_resume(in->proc, hello->seq);
	}
	return INGEST_ATTACHED;
}

enum ingest_status ingest_message(struct ingest *in, struct proto_msg *msg)
{
	if (msg->is_hello)
		return ingest_hello(in, &msg->hello);
	/* The decoder takes no record before the HELLO; after a refused
	 * one, the caller closes the connection. */
	if (in->proc == NULL)
		return INGEST_REFUSED;
	ingest_record(in, &msg->rec);
	return INGEST_OK;
}
