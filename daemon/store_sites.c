/*
 * store_sites.c: call sites stored once per (file, line, function), and
 * which of them retention may delete.
 *
 * A client defines its sites on each connection (SITE records, with
 * connection-local IDs); the store looks the site up by its unique key
 * and inserts it only when it is new, so a fleet of workers running the
 * same code shares its few hundred rows, and a flood of SITE records adds
 * rows only for sites never seen.
 *
 * A site may be deleted only when nothing can name it: no row does and no
 * connected process holds it (a process hands the site's id to records
 * it may send at any later time).  Both are tracked here rather than
 * looked up, since the tables that name sites have no index on site_id
 * (each index costs every insert):
 * - held: each process's list of the ids it was given, and a count per
 *   id over all live processes, in memory; retention asks through the SQL
 *   function site_held(id);
 * - used: sites.used is set by the first row that names the site (a
 *   bitmap remembers which ids were set since the last rollback, so that
 *   this is one UPDATE per site, not per row);
 * - sites.released_at: when the last process holding it let it go, for
 *   retention by age: once no row older than that is left, none names it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "ctxleakd.h"

/* Sites one process may hold: the connection's site table maps no more
 * (conn.c), and past it a process is flooding, not describing its code.
 * Further definitions get no site (0), which the records then carry. */
#define MAX_HOLDS_PER_PROCESS 65536

enum {
	SS_FIND,
	SS_USED,
	SS_HELD_AGAIN,
	SS_RELEASED,
	SS_NSTMT
};

static const char *const sql[SS_NSTMT] = {
    /* In parentheses: clang takes a literal split over two lines in an
     * array for a missing comma. */
    [SS_FIND] = ("SELECT id FROM sites WHERE file = ?1 AND line = ?2 AND "
		 "func IS ?3"),
    [SS_USED] = "UPDATE sites SET used = 1 WHERE id = ?1 AND used = 0",
    [SS_HELD_AGAIN] = "UPDATE sites SET released_at = NULL WHERE id = ?1",
    [SS_RELEASED] = "UPDATE sites SET released_at = ?2 WHERE id = ?1",
};

/* A process's sites, in the order it was given them. */
struct site_holds {
	struct site_holds *prev, *next; /* all of them, for sites_free */
	struct site_holds **owner;	/* the store_proc's pointer to it */
	uint32_t n, cap;
	int full_logged;
	uint32_t ids[];
};

struct sites {
	sqlite3 *db;
	sqlite3_stmt *st[SS_NSTMT];
	/* Held ids: open addressing with linear probing, id 0 empty. */
	uint32_t *keys, *counts;
	uint32_t cap, n; /* cap a power of two; n < cap / 2 */
	/* Bit i: sites.used of id i set since the last rollback. */
	uint8_t *used;
	size_t used_bytes;
	struct site_holds *holds; /* of every process not finalised */
};

static int64_t now_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint32_t slot_of(const struct sites *ss, uint32_t id)
{
	return (id * 2654435761u) & (ss->cap - 1);
}

static uint32_t *count_of(const struct sites *ss, uint32_t id)
{
	uint32_t i;

	if (ss->cap == 0)
		return NULL;
	for (i = slot_of(ss, id); ss->keys[i] != 0; i = (i + 1) & (ss->cap - 1))
		if (ss->keys[i] == id)
			return &ss->counts[i];
	return NULL;
}

static void put(struct sites *ss, uint32_t id, uint32_t count)
{
	uint32_t i = slot_of(ss, id);

	while (ss->keys[i] != 0)
		i = (i + 1) & (ss->cap - 1);
	ss->keys[i] = id;
	ss->counts[i] = count;
	ss->n++;
}

static int grow(struct sites *ss)
{
	uint32_t *keys = ss->keys, *counts = ss->counts, old = ss->cap;
	uint32_t cap = old ? old * 2 : 1024;

	ss->keys = calloc(cap, sizeof *ss->keys);
	ss->counts = calloc(cap, sizeof *ss->counts);
	if (ss->keys == NULL || ss->counts == NULL) {
		free(ss->keys);
		free(ss->counts);
		ss->keys = keys;
		ss->counts = counts;
		return -1;
	}
	ss->cap = cap;
	ss->n = 0;
	for (uint32_t i = 0; i < old; i++)
		if (keys[i] != 0)
			put(ss, keys[i], counts[i]);
	free(keys);
	free(counts);
	return 0;
}

/* Removes id, shifting back the entries that probed past its slot. */
static void remove_key(struct sites *ss, uint32_t id)
{
	uint32_t mask = ss->cap - 1, i = slot_of(ss, id), j, h;

	while (ss->keys[i] != id)
		i = (i + 1) & mask;
	for (j = i;;) {
		j = (j + 1) & mask;
		if (ss->keys[j] == 0)
			break;
		h = slot_of(ss, ss->keys[j]);
		/* The entry at j stays when its home lies in (i, j]. */
		if (i <= j ? (i < h && h <= j) : (i < h || h <= j))
			continue;
		ss->keys[i] = ss->keys[j];
		ss->counts[i] = ss->counts[j];
		i = j;
	}
	ss->keys[i] = 0;
	ss->n--;
}

static void step_id(sqlite3_stmt *st, int64_t id, int64_t arg)
{
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_bind_parameter_count(st) >= 2)
		sqlite3_bind_int64(st, 2, arg);
	sqlite3_step(st);
	sqlite3_reset(st);
}

/* site_held(id): 1 while a connected process holds the site. */
static void site_held_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	const struct sites *ss = sqlite3_user_data(ctx);
	uint32_t *c;

	(void)argc;
	c = count_of(ss, (uint32_t)sqlite3_value_int64(argv[0]));
	sqlite3_result_int(ctx, c != NULL);
}

static void unlink_holds(struct sites *ss, struct site_holds *h)
{
	if (h->prev != NULL)
		h->prev->next = h->next;
	else
		ss->holds = h->next;
	if (h->next != NULL)
		h->next->prev = h->prev;
	*h->owner = NULL;
	free(h);
}

void sites_free(struct sites *ss)
{
	if (ss == NULL)
		return;
	while (ss->holds != NULL)
		unlink_holds(ss, ss->holds);
	for (int i = 0; i < SS_NSTMT; i++)
		sqlite3_finalize(ss->st[i]);
	free(ss->keys);
	free(ss->counts);
	free(ss->used);
	free(ss);
}

struct sites *sites_new(sqlite3 *db)
{
	struct sites *ss = calloc(1, sizeof *ss);
	char q[128];

	if (ss == NULL)
		return NULL;
	ss->db = db;
	for (int i = 0; i < SS_NSTMT; i++)
		if (sqlite3_prepare_v3(db, sql[i], -1,
				       SQLITE_PREPARE_PERSISTENT, &ss->st[i],
				       NULL) != SQLITE_OK)
			goto fail;
	if (sqlite3_create_function(db, "site_held", 1,
				    SQLITE_UTF8 | SQLITE_DIRECTONLY, ss,
				    site_held_fn, NULL, NULL) != SQLITE_OK)
		goto fail;
	/* Held when the last daemon stopped (or crashed): let go now. */
	snprintf(q, sizeof q,
		 "UPDATE sites SET released_at = %lld WHERE released_at IS "
		 "NULL",
		 (long long)now_wall());
	if (sqlite3_exec(db, q, NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	return ss;
fail:
	sites_free(ss);
	return NULL;
}

int64_t sites_find(struct sites *ss, const struct proto_record *site)
{
	sqlite3_stmt *st = ss->st[SS_FIND];
	int64_t id = 0;

	sqlite3_bind_text(st, 1, site->file.ptr ? site->file.ptr : "",
			  (int)site->file.len, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, site->line);
	if (site->func.ptr == NULL)
		sqlite3_bind_null(st, 3);
	else
		sqlite3_bind_text(st, 3, site->func.ptr, (int)site->func.len,
				  SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		id = sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return id;
}

int sites_full(struct site_holds *h, int64_t process_id)
{
	if (h == NULL || h->n < MAX_HOLDS_PER_PROCESS)
		return 0;
	if (!h->full_logged)
		log_warn("process %lld defined %d sites; the records of "
			 "further ones are stored without a site",
			 (long long)process_id, MAX_HOLDS_PER_PROCESS);
	h->full_logged = 1;
	return 1;
}

int sites_hold(struct sites *ss, struct site_holds **holds, int64_t id)
{
	struct site_holds *h = *holds, *grown;
	uint32_t *c, cap;

	if (h == NULL || h->n == h->cap) {
		cap = h != NULL ? h->cap * 2 : 64;
		grown = realloc(h, sizeof *h + cap * sizeof h->ids[0]);
		if (grown == NULL)
			return -1;
		if (h == NULL) {
			grown->n = grown->full_logged = 0;
			grown->prev = NULL;
			grown->next = ss->holds;
			grown->owner = holds;
		}
		/* Moved: its neighbours point at the new place. */
		if (grown->prev != NULL)
			grown->prev->next = grown;
		else
			ss->holds = grown;
		if (grown->next != NULL)
			grown->next->prev = grown;
		grown->cap = cap;
		*holds = h = grown;
	}
	if ((c = count_of(ss, (uint32_t)id)) == NULL) {
		if (ss->n + 1 >= ss->cap / 2 && grow(ss) == -1)
			return -1;
		put(ss, (uint32_t)id, 0);
		c = count_of(ss, (uint32_t)id);
		step_id(ss->st[SS_HELD_AGAIN], id, 0);
	}
	(*c)++;
	h->ids[h->n++] = (uint32_t)id;
	return 0;
}

void sites_release(struct sites *ss, struct site_holds **holds)
{
	struct site_holds *h = *holds;
	int64_t now = now_wall();
	uint32_t *c;

	if (h == NULL)
		return;
	for (uint32_t i = 0; i < h->n; i++) {
		c = count_of(ss, h->ids[i]);
		if (c == NULL || --*c > 0)
			continue;
		remove_key(ss, h->ids[i]);
		step_id(ss->st[SS_RELEASED], h->ids[i], now);
	}
	unlink_holds(ss, h);
}

void sites_used(struct sites *ss, uint64_t id)
{
	size_t byte = (size_t)(id / 8);
	uint8_t *grown;
	size_t n;

	if (id == 0 || id > UINT32_MAX)
		return;
	if (byte >= ss->used_bytes) {
		n = ss->used_bytes ? ss->used_bytes : 1024;
		while (n <= byte)
			n *= 2;
		if ((grown = realloc(ss->used, n)) == NULL)
			return;
		memset(grown + ss->used_bytes, 0, n - ss->used_bytes);
		ss->used = grown;
		ss->used_bytes = n;
	}
	if (ss->used[byte] & (1u << (id % 8)))
		return;
	step_id(ss->st[SS_USED], (int64_t)id, 0);
	ss->used[byte] |= (uint8_t)(1u << (id % 8));
}

void sites_rolled_back(struct sites *ss)
{
	if (ss != NULL && ss->used != NULL)
		memset(ss->used, 0, ss->used_bytes);
}
