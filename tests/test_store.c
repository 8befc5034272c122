/*
 * test_store.c: the SQLite store (daemon/store*.c) against real files:
 * creation and refusal, the schema against SCHEMA.md, what each keep mode
 * writes, batching, retention, a full disk, and a reader beside the writer.
 * Rows are checked through a separate read-only connection, as the CLI
 * reads them.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check_main.h"
#include "ctxleakd.h"

#define NS   1000000000LL
#define HOUR (3600 * NS)

static char dir[64];
static char path[128];

static void setup(void)
{
	strcpy(dir, "/tmp/test_store.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/db/ctxleak.db", dir);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, ms % 1000 * 1000000L};

	nanosleep(&ts, NULL);
}

static struct store *open_store(const struct store_config *cfg)
{
	char err[256] = "";
	struct store *s = store_open(cfg, err, sizeof err);

	ck_assert_msg(s != NULL, "store_open: %s", err);
	return s;
}

static struct store *open_default(int keep_all)
{
	struct store_config cfg = {.path = path,
				   .keep_all = keep_all,
				   .commit_ms = 60000,
				   .commit_rows = 1000000};

	return open_store(&cfg);
}

/* The one-line error of a store_open that must fail. */
static void open_fails(const char *p, char *err, size_t len)
{
	struct store_config cfg = {.path = p};

	err[0] = '\0';
	ck_assert_ptr_null(store_open(&cfg, err, len));
	ck_assert_msg(err[0] != '\0' && strchr(err, '\n') == NULL,
		      "error line: '%s'", err);
}

/* ------------------------------------------------------------ reading */

static sqlite3 *reader(void)
{
	sqlite3 *db;

	ck_assert_int_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
			 SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static int64_t q_db(sqlite3 *db, const char *q)
{
	sqlite3_stmt *st;
	int64_t v;

	ck_assert_msg(sqlite3_prepare_v2(db, q, -1, &st, NULL) == SQLITE_OK,
		      "%s: %s", q, sqlite3_errmsg(db));
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* One integer from the file, through a fresh read-only connection. */
static int64_t q(const char *query)
{
	sqlite3 *db = reader();
	int64_t v = q_db(db, query);

	sqlite3_close(db);
	return v;
}

/* One text value ("NULL" for NULL), copied into buf. */
static const char *qs(const char *query, char *buf, size_t len)
{
	sqlite3 *db = reader();
	sqlite3_stmt *st;
	const unsigned char *t;

	ck_assert_int_eq(sqlite3_prepare_v2(db, query, -1, &st, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	t = sqlite3_column_text(st, 0);
	snprintf(buf, len, "%s", t ? (const char *)t : "NULL");
	sqlite3_finalize(st);
	sqlite3_close(db);
	return buf;
}

/* Runs SQL on the file through a writable connection of its own. */
static void exec_on(const char *p, const char *sql)
{
	sqlite3 *db;

	ck_assert_int_eq(sqlite3_open(p, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK,
		      "%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_close(db);
}

/* ------------------------------------------------------------ records */

static struct proto_str str(const char *s)
{
	return (struct proto_str){s, s ? (uint32_t)strlen(s) : 0};
}

static struct proto_hello hello_of(uint64_t instance, uint32_t pid,
				   int64_t clock_offset)
{
	return (struct proto_hello){.version = PROTO_VERSION,
				    .instance = instance,
				    .pid = pid,
				    .app = str("web"),
				    .backend = str("thread"),
				    .reason = str("default"),
				    .clock_offset = clock_offset,
				    .client = str("libctxleak 0.1.0")};
}

static struct store_proc add_process(struct store *s, uint64_t instance,
				     int64_t clock_offset)
{
	struct proto_hello h = hello_of(instance, 100, clock_offset);
	struct store_process_info pi = {&h, 100, 1000, 1000};
	struct store_proc p = {0};

	ck_assert_int_eq(store_process_open(s, &pi, &p), 0);
	return p;
}

static struct proto_record tag_rec(uint64_t ts, uint64_t ctx, uint64_t cause,
				   const char *value)
{
	return (struct proto_record){.type = PROTO_TAG,
				     .ts = ts,
				     .tid = 7,
				     .ctx = ctx,
				     .cause = cause,
				     .key = str("user"),
				     .value = str(value)};
}

static void verdicts(struct store *s, const struct store_proc *p, int n,
		     uint64_t ts, enum leak_class leak, const char *value)
{
	for (int i = 0; i < n; i++) {
		struct proto_record r = tag_rec(ts + (uint64_t)i, 1, 1, value);
		struct rules_verdict v = {&r, 1, 1, leak, 0, 0};

		store_verdict(s, p, &v);
	}
}

static struct rules_request request_of(uint64_t rid, uint64_t ts)
{
	return (struct rules_request){.rid = rid,
				      .ctx = 1000 + rid,
				      .name = str("GET /a"),
				      .begin_ts = ts,
				      .end_ts = ts + 10,
				      .begin_tid = 7,
				      .nthreads = 0,
				      .nscopes = 1,
				      .nrecords = 2};
}

static struct rules_finding finding_of(const struct proto_record *rec,
				       uint64_t victim, uint64_t source)
{
	return (struct rules_finding){.leak = LEAK_BLEED,
				      .victim_rid = victim,
				      .victim_ctx = 1000 + victim,
				      .victim_name = str("GET /a"),
				      .source_rid = source,
				      .source_ctx = source ? 1000 + source : 0,
				      .source_name =
					  str(source ? "GET /b" : NULL),
				      .rec = rec,
				      .detail = "tag of GET /a under GET /b"};
}

/* ------------------------------------------------------------ open */

START_TEST(test_open_creates_dir_and_file)
{
	mode_t old = umask(077);
	struct store *s = open_default(0);
	char db_dir[128], aux[160];
	struct stat st;

	umask(old);
	snprintf(db_dir, sizeof db_dir, "%s/db", dir);
	ck_assert_int_eq(stat(db_dir, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0750);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0640);
	for (int i = 0; i < 2; i++) {
		snprintf(aux, sizeof aux, "%s%s", path, i ? "-shm" : "-wal");
		ck_assert_int_eq(stat(aux, &st), 0);
		ck_assert_int_eq(st.st_mode & 0777, 0640);
	}
	ck_assert_int_eq(q("PRAGMA user_version"), STORE_SCHEMA_VERSION);
	ck_assert_int_eq(q("PRAGMA application_id"), STORE_APPLICATION_ID);
	store_close(s);
}
END_TEST

START_TEST(test_open_is_wal)
{
	struct store *s = open_default(0);
	char buf[16];

	ck_assert_str_eq(qs("PRAGMA journal_mode", buf, sizeof buf), "wal");
	/* Larger than SQLite's default, for the insert rate. */
	ck_assert_int_eq(q("PRAGMA page_size"), 16384);
	store_close(s);
}
END_TEST

static char *read_file(const char *p)
{
	FILE *f = fopen(p, "r");
	char *buf;
	long n;

	if (f == NULL)
		return NULL;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	ck_assert_int_eq(fread(buf, 1, (size_t)n, f), n);
	fclose(f);
	return buf;
}

/* Every table, column (type, not null, default, key) and index. */
static const char shape_sql[] =
    "SELECT group_concat(line, char(10)) FROM ("
    " SELECT m.name || '.' || p.name || ' ' || p.type || ' ' || "
    "  p.\"notnull\" || ' ' || coalesce(p.dflt_value, '-') || ' ' || "
    "  p.pk AS line "
    " FROM sqlite_master m JOIN pragma_table_info(m.name) p "
    " WHERE m.type = 'table' "
    " UNION ALL "
    " SELECT 'index ' || m.name || ' ON ' || m.tbl_name || '(' || "
    "  (SELECT group_concat(name) FROM pragma_index_info(m.name)) || ')' "
    " FROM sqlite_master m "
    " WHERE m.type = 'index' AND m.sql IS NOT NULL "
    " ORDER BY 1)";

static char *shape(sqlite3 *db)
{
	sqlite3_stmt *st;
	char *out;

	ck_assert_int_eq(sqlite3_prepare_v2(db, shape_sql, -1, &st, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
	out = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	return out;
}

/* The SQL of SCHEMA.md, run into an empty database, gives exactly the
 * tables, columns and indexes of a file the store created. */
START_TEST(test_schema_matches_doc)
{
	const char *srcdir = getenv("CTXLEAK_SRCDIR");
	char doc_path[512];
	char *doc, *begin, *end, *want, *got;
	struct store *s = open_default(0);
	sqlite3 *mem, *db;

	store_close(s);
	snprintf(doc_path, sizeof doc_path, "%s/daemon/SCHEMA.md",
		 srcdir ? srcdir : ".");
	doc = read_file(doc_path);
	ck_assert_msg(doc != NULL, "cannot read %s", doc_path);
	begin = strstr(doc, "```sql\n");
	ck_assert_ptr_nonnull(begin);
	begin += strlen("```sql\n");
	end = strstr(begin, "```");
	ck_assert_ptr_nonnull(end);
	*end = '\0';
	ck_assert_int_eq(sqlite3_open(":memory:", &mem), SQLITE_OK);
	ck_assert_msg(sqlite3_exec(mem, begin, NULL, NULL, NULL) == SQLITE_OK,
		      "SCHEMA.md: %s", sqlite3_errmsg(mem));
	want = shape(mem);
	db = reader();
	got = shape(db);
	ck_assert_str_eq(got, want);
	ck_assert_ptr_nonnull(strstr(want, "records.ctx INTEGER 1 - 0"));
	free(want);
	free(got);
	free(doc);
	sqlite3_close(mem);
	sqlite3_close(db);
}
END_TEST

START_TEST(test_reopen_keeps_data)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 42, 0);

	verdicts(s, &p, 5, 1000, LEAK_NONE, "alice");
	store_close(s);
	s = open_default(1);
	p = add_process(s, 43, 0);
	verdicts(s, &p, 2, 2000, LEAK_NONE, "bob");
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 7);
	ck_assert_int_eq(q("SELECT count(*) FROM processes"), 2);
	ck_assert_int_eq(q("SELECT count(DISTINCT process_id) FROM records"),
			 2);
}
END_TEST

START_TEST(test_newer_version_refused)
{
	char err[256], sql[64], want[128];

	store_close(open_default(0));
	snprintf(sql, sizeof sql, "PRAGMA user_version = %d",
		 STORE_SCHEMA_VERSION + 1);
	exec_on(path, sql);
	open_fails(path, err, sizeof err);
	snprintf(want, sizeof want,
		 "database schema version %d is newer than this ctxleakd "
		 "supports (%d)",
		 STORE_SCHEMA_VERSION + 1, STORE_SCHEMA_VERSION);
	ck_assert_msg(strstr(err, want) != NULL, "%s", err);
}
END_TEST

START_TEST(test_not_sqlite_refused)
{
	char err[256], p[160];
	int fd;

	snprintf(p, sizeof p, "%s/text.db", dir);
	fd = open(p, O_WRONLY | O_CREAT, 0640);
	ck_assert_int_ge(fd, 0);
	for (int i = 0; i < 64; i++)
		ck_assert_int_eq(write(fd, "not a database at all\n", 22), 22);
	close(fd);
	open_fails(p, err, sizeof err);
	ck_assert_msg(strstr(err, "file is not a database") != NULL, "%s", err);
	ck_assert_ptr_nonnull(strstr(err, p));
}
END_TEST

START_TEST(test_foreign_sqlite_refused)
{
	char err[256], p[160];

	snprintf(p, sizeof p, "%s/other.db", dir);
	exec_on(p, "CREATE TABLE t(x); INSERT INTO t VALUES(1)");
	open_fails(p, err, sizeof err);
	ck_assert_msg(strstr(err, "is not a ctxleak database") != NULL, "%s",
		      err);
	/* Untouched: still its owner's. */
	exec_on(p, "INSERT INTO t VALUES(2)");
	snprintf(p, sizeof p, "%s/other2.db", dir);
	exec_on(p, "PRAGMA user_version = 1");
	open_fails(p, err, sizeof err);
	ck_assert_msg(strstr(err, "is not a ctxleak database") != NULL, "%s",
		      err);
}
END_TEST

START_TEST(test_unwritable_path)
{
	char err[256], p[160];
	int fd;

	/* A directory where the file should be. */
	snprintf(p, sizeof p, "%s", dir);
	open_fails(p, err, sizeof err);
	ck_assert_msg(strstr(err, "cannot open database") != NULL &&
			  strstr(err, "Is a directory") != NULL,
		      "%s", err);
	/* A file where a directory should be: fails even for root. */
	snprintf(p, sizeof p, "%s/plain", dir);
	fd = open(p, O_WRONLY | O_CREAT, 0640);
	close(fd);
	snprintf(p, sizeof p, "%s/plain/sub/x.db", dir);
	open_fails(p, err, sizeof err);
	ck_assert_msg(strstr(err, "Not a directory") != NULL, "%s", err);
	if (geteuid() != 0) {
		snprintf(p, sizeof p, "%s/ro", dir);
		ck_assert_int_eq(mkdir(p, 0500), 0);
		snprintf(p, sizeof p, "%s/ro/x.db", dir);
		open_fails(p, err, sizeof err);
		ck_assert_msg(strstr(err, "Permission denied") != NULL, "%s",
			      err);
	}
}
END_TEST

/* ------------------------------------------------------------ rows */

static void write_mix(struct store *s, const struct store_proc *p)
{
	struct proto_record held[9];
	struct rules_verdict hv[9];
	struct rules_request rq;

	verdicts(s, p, 10, 1000, LEAK_NONE, "a");
	verdicts(s, p, 2, 2000, LEAK_BLEED, "b");
	for (int i = 0; i < 9; i++) {
		held[i] = tag_rec(3000 + (uint64_t)i, 1, 1, "held");
		hv[i] = (struct rules_verdict){&held[i], 1, 1, LEAK_NONE, 0, 0};
	}
	/* A victim, a bystander, a source: 3, 4 and 2 held records. */
	rq = request_of(1, 3000);
	rq.victim_of[LEAK_BLEED] = 1;
	rq.nheld = 3;
	rq.held = hv;
	store_request(s, p, &rq);
	rq = request_of(2, 3100);
	rq.nheld = 4;
	rq.held = hv + 3;
	store_request(s, p, &rq);
	rq = request_of(3, 3200);
	rq.source_of = 1;
	rq.nheld = 2;
	rq.held = hv + 7;
	store_request(s, p, &rq);
}

START_TEST(test_keep_all_vs_leaky)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);

	write_mix(s, &p);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 10 + 2 + 9);
	ck_assert_int_eq(q("SELECT count(*) FROM requests"), 3);
	snprintf(path + strlen(path), 8, ".leaky");
	s = open_default(0);
	p = add_process(s, 1, 0);
	write_mix(s, &p);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 2 + 3 + 2);
	ck_assert_int_eq(q("SELECT count(*) FROM records WHERE leak = 'bleed'"),
			 2);
	ck_assert_int_eq(q("SELECT count(*) FROM records WHERE value = 'held'"),
			 5);
	/* The clean request is only counted. */
	ck_assert_int_eq(q("SELECT count(*) FROM requests"), 2);
	ck_assert_int_eq(q("SELECT sum(requests) FROM request_stats"), 1);
}
END_TEST

START_TEST(test_record_columns)
{
	struct store *s = open_default(1);
	int64_t offset = (int64_t)1700000000 * NS;
	struct store_proc p = add_process(s, 1, offset);
	struct proto_record b = {.type = PROTO_BEGIN,
				 .ts = 5,
				 .tid = 9,
				 .ctx = UINT64_MAX,
				 .cause = 1ULL << 63,
				 .site = 3,
				 .prev = UINT64_MAX - 1,
				 .name = str("GET /x")};
	struct proto_record e = {
	    .type = PROTO_END, .ts = 6, .tid = 9, .ctx = 4, .cur = 5};
	struct rules_verdict vb = {&b, UINT64_MAX, 0, LEAK_NONE, 0, 0};
	struct rules_verdict ve = {&e, 2, 3, LEAK_MISNEST, 0, 0};
	char buf[64];

	store_verdict(s, &p, &vb);
	store_verdict(s, &p, &ve);
	store_close(s);
	/* The same bits come back: ctx values are unsigned 64-bit. */
	ck_assert_uint_eq((uint64_t)q("SELECT ctx FROM records WHERE id = 1"),
			  UINT64_MAX);
	ck_assert_uint_eq((uint64_t)q("SELECT cause FROM records WHERE id = 1"),
			  1ULL << 63);
	ck_assert_uint_eq((uint64_t)q("SELECT other FROM records WHERE id = 1"),
			  UINT64_MAX - 1);
	ck_assert_uint_eq(
	    (uint64_t)q("SELECT request_id FROM records WHERE id = 1"),
	    UINT64_MAX);
	ck_assert_int_eq(q("SELECT ctx_request_id IS NULL FROM records "
			   "WHERE id = 1"),
			 1);
	ck_assert_int_eq(q("SELECT ts FROM records WHERE id = 1"), offset + 5);
	ck_assert_str_eq(qs("SELECT type || ' ' || name || ' ' || site_id || "
			    "' ' || tid || ' ' || coalesce(leak, '-') FROM "
			    "records WHERE id = 1",
			    buf, sizeof buf),
			 "BEGIN GET /x 3 9 -");
	ck_assert_str_eq(qs("SELECT type || ' ' || other || ' ' || leak || ' ' "
			    "|| request_id || ' ' || ctx_request_id FROM "
			    "records WHERE id = 2",
			    buf, sizeof buf),
			 "END 5 misnest 2 3");
	ck_assert_int_eq(q("SELECT site_id IS NULL AND name IS NULL AND value "
			   "IS NULL FROM records WHERE id = 2"),
			 1);
}
END_TEST

START_TEST(test_finding_evidence)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 1000);
	struct proto_record r = tag_rec(50, 1006, 1005, "alice");
	struct proto_record ev = {.type = PROTO_EVENT,
				  .ts = 60,
				  .tid = 8,
				  .cause = 1005,
				  .name = str("db.done"),
				  .message = str(NULL)};
	struct rules_finding f = finding_of(&r, 5, 6);
	char buf[256];

	r.site = 4;
	store_finding(s, &p, &f);
	f = finding_of(&ev, 5, 0);
	f.leak = LEAK_LOST;
	f.detail = NULL;
	store_finding(s, &p, &f);
	store_close(s);
	ck_assert_str_eq(
	    qs("SELECT class || '|' || ts || '|' || tid || '|' || "
	       "victim_request_id || '|' || victim_ctx || '|' || "
	       "victim_name || '|' || source_request_id || '|' || "
	       "source_ctx || '|' || source_name || '|' || record || '|' "
	       "|| ctx || '|' || cause || '|' || coalesce(other, '-') || "
	       "'|' || name || '|' || value || '|' || site_id || '|' || "
	       "detail FROM leaks WHERE id = 1",
	       buf, sizeof buf),
	    "bleed|1050|7|5|1005|GET /a|6|1006|GET /b|TAG|1006|1005|-|"
	    "user|alice|4|tag of GET /a under GET /b");
	ck_assert_str_eq(
	    qs("SELECT class || '|' || ts || '|' || record || '|' || name "
	       "|| '|' || ctx || '|' || "
	       "(source_request_id IS NULL AND source_ctx IS NULL AND "
	       "source_name IS NULL AND value IS NULL AND site_id IS NULL "
	       "AND detail IS NULL) FROM leaks WHERE id = 2",
	       buf, sizeof buf),
	    "lost|1060|EVENT|db.done|0|1");
}
END_TEST

/* The query plan of sql, one step a line. */
static void query_plan(const char *sql, char *buf, size_t len)
{
	sqlite3 *db = reader();
	sqlite3_stmt *st;
	char eqp[1024];
	size_t off = 0;

	snprintf(eqp, sizeof eqp, "EXPLAIN QUERY PLAN %s", sql);
	ck_assert_int_eq(sqlite3_prepare_v2(db, eqp, -1, &st, NULL), SQLITE_OK);
	buf[0] = '\0';
	while (sqlite3_step(st) == SQLITE_ROW && off < len)
		off += (size_t)snprintf(buf + off, len - off, "%s\n",
					sqlite3_column_text(st, 3));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

/* `ctxleak show` finds the records wrongly attributed to a request
 * through a partial index that holds only those. */
START_TEST(test_misattributed_records_indexed)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);
	struct proto_record r = tag_rec(10, 1002, 1001, "x");
	struct rules_verdict v = {&r, 1, 1, LEAK_NONE, 0, 0};
	char plan[1024];

	for (int i = 0; i < 100; i++)
		store_verdict(s, &p, &v);
	v.rid_ctx = 2;
	v.leak = LEAK_BLEED;
	store_verdict(s, &p, &v);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records INDEXED BY "
			   "records_ctx_request WHERE ctx_request_id IS NOT "
			   "request_id"),
			 1);
	/* The WHERE of cli_show.c's records_sql. */
	query_plan("SELECT * FROM records d WHERE d.request_id = 2 OR "
		   "(d.ctx_request_id = 2 AND d.ctx_request_id IS NOT "
		   "d.request_id)",
		   plan, sizeof plan);
	ck_assert_msg(strstr(plan, "USING INDEX records_ctx_request") &&
			  strstr(plan, "USING INDEX records_request"),
		      "%s", plan);
}
END_TEST

START_TEST(test_request_and_tags)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 1000);
	uint64_t threads[2] = {4711, 4712};
	struct rules_tag tags[2] = {
	    {str("user"), str("alice"), 20, 4711, 2, 7, 1007},
	    {str("status"), str(NULL), 30, 4712, 0, 0, 0},
	};
	struct rules_request rq = request_of(7, 10);
	char buf[256];

	rq.site = 2;
	rq.nthreads = 2;
	rq.threads = threads;
	rq.nscopes = 3;
	rq.nrecords = 12;
	rq.ntags = 2;
	rq.tags = tags;
	rq.tags_dropped = 1;
	rq.held_dropped = 5;
	rq.victim_of[LEAK_BLEED] = 2;
	rq.victim_of[LEAK_UNCLOSED] = 1;
	rq.source_of = 4;
	store_request(s, &p, &rq);
	rq = request_of(8, 40);
	rq.end_ts = 0;
	rq.victim_of[LEAK_UNCLOSED] = 1;
	store_request(s, &p, &rq);
	store_close(s);
	ck_assert_str_eq(
	    qs("SELECT id || '|' || process_id || '|' || ctx || '|' || "
	       "name || '|' || site_id || '|' || begin_ts || '|' || end_ts "
	       "|| '|' || begin_tid || '|' || threads || '|' || scopes || "
	       "'|' || records || '|' || leaks || '|' || lost || stale || "
	       "bleed || overlap || misnest || unclosed || '|' || "
	       "source_of || '|' || tags_dropped || '|' || records_not_kept "
	       "FROM requests WHERE id = 7",
	       buf, sizeof buf),
	    "7|1|1007|GET /a|2|1010|1020|7|4711 4712|3|12|3|002001|4|1|5");
	ck_assert_str_eq(qs("SELECT coalesce(end_ts, 'NULL') || '|' || threads "
			    "|| '|' || (site_id IS NULL) FROM requests WHERE "
			    "id = 8",
			    buf, sizeof buf),
			 "NULL||1");
	ck_assert_str_eq(
	    qs("SELECT group_concat(request_id || ',' || key || ',' || "
	       "coalesce(value, '-') || ',' || ts || ',' || tid || ',' || "
	       "coalesce(site_id, '-') || ',' || coalesce(setter_request_id, "
	       "'-') || ',' || coalesce(setter_ctx, '-'), ' ') FROM "
	       "(SELECT * FROM tags ORDER BY rowid)",
	       buf, sizeof buf),
	    "7,user,alice,1020,4711,2,7,1007 7,status,-,1030,4712,-,-,-");
}
END_TEST

START_TEST(test_process_reconnect)
{
	struct store *s = open_default(0);
	struct proto_hello h = hello_of(0xfeedfacecafebeefULL, 7, 0);
	struct store_process_info pi = {&h, 100, 1000, 1001};
	struct store_proc p = {0}, restarted = {0};
	struct rules_model model = {.model = "event-loop",
				    .recommend = "task",
				    .evidence = "3 requests interleaved"};
	char buf[256];

	ck_assert_int_eq(store_process_open(s, &pi, &p), 0);
	ck_assert_int_eq(p.id, 1);
	store_process_update(s, &p, 10, 1, 2, 0, -1, "bad msgpack", &model, 1);
	store_commit(s);
	ck_assert_int_eq(q("SELECT disconnected_at IS NOT NULL FROM processes"),
			 1);
	h.pid = 100;
	ck_assert_int_eq(store_process_open(s, &pi, &p), 0);
	ck_assert_int_eq(p.id, 1);
	ck_assert_str_eq(
	    qs("SELECT connections || '|' || coalesce(disconnected_at, "
	       "'NULL') || '|' || coalesce(hello_pid, 'NULL') || '|' || "
	       "pid || '|' || uid || '|' || gid || '|' || app || '|' || "
	       "backend || '|' || backend_reason || '|' || client || '|' || "
	       "instance FROM processes",
	       buf, sizeof buf),
	    "2|NULL|NULL|100|1000|1001|web|thread|default|"
	    "libctxleak 0.1.0|-77129852519530769");
	/* The caller's totals; NULL error and model keep the row's. */
	store_process_update(s, &p, 25, 3, 2, 0, -1, NULL, NULL, 0);
	store_commit(s);
	ck_assert_str_eq(qs("SELECT records || '|' || dropped || '|' || "
			    "unknown_skipped || '|' || error || '|' || model "
			    "|| '|' || recommend || '|' || model_evidence "
			    "FROM processes",
			    buf, sizeof buf),
			 "25|3|2|bad msgpack|event-loop|task|"
			 "3 requests interleaved");
	/* A restarted daemon sees the instance again: it adds to the row. */
	store_close(s);
	s = open_default(0);
	ck_assert_int_eq(q("SELECT disconnected_at IS NOT NULL FROM processes"),
			 1);
	ck_assert_int_eq(store_process_open(s, &pi, &restarted), 0);
	ck_assert_int_eq(restarted.id, 1);
	store_process_update(s, &restarted, 5, 0, 0, 0, -1, NULL, NULL, 1);
	pi.hello = &(struct proto_hello){.instance = 99, .pid = 1};
	ck_assert_int_eq(store_process_open(s, &pi, &p), 0);
	ck_assert_int_eq(p.id, 2);
	store_close(s);
	ck_assert_int_eq(q("SELECT records FROM processes WHERE id = 1"), 30);
	ck_assert_int_eq(q("SELECT connections FROM processes WHERE id = 1"),
			 3);
	ck_assert_int_eq(q("SELECT hello_pid FROM processes WHERE id = 2"), 1);
}
END_TEST

START_TEST(test_sites_and_drops)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 1000), other;
	struct proto_record site = {.type = PROTO_SITE,
				    .site = 1,
				    .line = 142,
				    .file = str("server.c"),
				    .func = str("on_db_reply")};
	struct proto_record drop = {
	    .type = PROTO_DROPPED, .ts = 900, .since = 500, .count = 37};
	char buf[128];

	ck_assert_int_eq(store_site(s, &p, &site), 1);
	site.func = str(NULL);
	ck_assert_int_eq(store_site(s, &p, &site), 2);
	store_dropped(s, &p, &drop);
	store_close(s);
	/* Stored once per (file, line, function), whoever defines it,
	 * also after a restart; the first process that did keeps it. */
	s = open_default(0);
	other = add_process(s, 2, 1000);
	ck_assert_int_eq(store_site(s, &other, &site), 2);
	site.line = 143;
	ck_assert_int_eq(store_site(s, &other, &site), 3);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM sites"), 3);
	ck_assert_int_eq(q("SELECT process_id FROM sites WHERE id = 2"), 1);
	ck_assert_str_eq(qs("SELECT process_id || '|' || file || '|' || line "
			    "|| '|' || func FROM sites WHERE id = 1",
			    buf, sizeof buf),
			 "1|server.c|142|on_db_reply");
	ck_assert_int_eq(q("SELECT func IS NULL FROM sites WHERE id = 2"), 1);
	ck_assert_str_eq(qs("SELECT process_id || '|' || since_ts || '|' || "
			    "until_ts || '|' || count FROM drops",
			    buf, sizeof buf),
			 "1|1500|1900|37");
}
END_TEST

START_TEST(test_last_request_id)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 0);
	struct rules_request rq = request_of(41, 10);
	struct proto_record r = tag_rec(5, 1, 1, "x");
	struct rules_finding f = finding_of(&r, 77, 78);

	ck_assert_uint_eq(store_last_request_id(s), 0);
	store_request(s, &p, &rq);
	store_close(s);
	s = open_default(0);
	ck_assert_uint_eq(store_last_request_id(s), 41);
	/* A finding may name requests that never get a row. */
	store_finding(s, &p, &f);
	store_close(s);
	s = open_default(0);
	ck_assert_uint_eq(store_last_request_id(s), 78);
	store_close(s);
}
END_TEST

/* ------------------------------------------------------------ batching */

START_TEST(test_commit_by_rows)
{
	struct store_config cfg = {.path = path,
				   .keep_all = 1,
				   .commit_ms = 60000,
				   .commit_rows = 100};
	struct store *s = open_store(&cfg);
	struct store_proc p = add_process(s, 1, 0);
	struct store_stats st;

	store_stats(s, &st);
	verdicts(s, &p, 99, 0, LEAK_NONE, "x");
	store_tick(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 0);
	verdicts(s, &p, 1, 0, LEAK_NONE, "x");
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 100);
	store_stats(s, &st);
	ck_assert_uint_eq(st.rows_written, 1 + 100);
	verdicts(s, &p, 150, 0, LEAK_NONE, "x");
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 200);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 250);
}
END_TEST

/* A request's row, tags and held records commit together: the process's
 * counters count them all at once. */
START_TEST(test_request_rows_commit_together)
{
	struct store_config cfg = {
	    .path = path, .keep_all = 0, .commit_ms = 60000, .commit_rows = 3};
	struct store *s = open_store(&cfg);
	struct store_proc p = add_process(s, 1, 0);
	struct rules_tag tags[2] = {
	    {str("user"), str("alice"), 20, 7, 0, 7, 1007},
	    {str("status"), str("200"), 30, 7, 0, 7, 1007},
	};
	struct proto_record recs[4];
	struct rules_verdict held[4];
	struct rules_request rq = request_of(7, 10);

	for (int i = 0; i < 4; i++) {
		recs[i] = tag_rec(11 + (uint64_t)i, 1, 1, "x");
		held[i] =
		    (struct rules_verdict){&recs[i], 7, 7, LEAK_NONE, 0, 0};
	}
	rq.ntags = 2;
	rq.tags = tags;
	rq.nheld = 4;
	rq.held = held;
	rq.victim_of[LEAK_BLEED] = 1;
	store_request(s, &p, &rq);
	/* 7 rows over a commit_rows of 3: all of them, at once. */
	ck_assert_int_eq(q("SELECT count(*) FROM requests"), 1);
	ck_assert_int_eq(q("SELECT count(*) FROM tags"), 2);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 4);
	store_close(s);
}
END_TEST

START_TEST(test_commit_by_time)
{
	struct store_config cfg = {
	    .path = path, .keep_all = 1, .commit_ms = 50, .commit_rows = 0};
	struct store *s = open_store(&cfg);
	struct store_proc p = add_process(s, 1, 0);
	struct store_stats st;
	uint64_t t0 = now_ns(CLOCK_MONOTONIC), commits;

	store_stats(s, &st);
	commits = st.commits;
	verdicts(s, &p, 3, 0, LEAK_NONE, "x");
	store_tick(s);
	store_stats(s, &st);
	if (now_ns(CLOCK_MONOTONIC) - t0 < 50 * 1000000ULL)
		ck_assert_uint_eq(st.commits, commits);
	for (int i = 0; i < 5000 && st.commits == commits; i++) {
		sleep_ms(2);
		store_tick(s);
		store_stats(s, &st);
	}
	ck_assert_uint_eq(st.commits, commits + 1);
	ck_assert_uint_ge(now_ns(CLOCK_MONOTONIC) - t0, 50 * 1000000ULL);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 3);
	store_close(s);
}
END_TEST

/* The CLI reads while the daemon writes: WAL lets both go on. */
START_TEST(test_reader_beside_writer)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);
	sqlite3 *r = reader();
	struct store_stats st;

	verdicts(s, &p, 10, 0, LEAK_NONE, "x");
	store_commit(s);
	ck_assert_int_eq(sqlite3_exec(r, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
	ck_assert_int_eq(q_db(r, "SELECT count(*) FROM records"), 10);
	verdicts(s, &p, 5, 0, LEAK_NONE, "x");
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 10);
	store_commit(s);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 0);
	ck_assert_uint_eq(st.rows_failed, 0);
	/* The open read transaction keeps its snapshot; a new one sees the
	 * commit. */
	ck_assert_int_eq(q_db(r, "SELECT count(*) FROM records"), 10);
	ck_assert_int_eq(sqlite3_exec(r, "COMMIT", NULL, NULL, NULL),
			 SQLITE_OK);
	ck_assert_int_eq(q_db(r, "SELECT count(*) FROM records"), 15);
	sqlite3_close(r);
	store_close(s);
}
END_TEST

/* ------------------------------------------------------------ retention */

/* Ticks until the store's retention has stopped deleting. */
static void tick_until_retained(struct store *s)
{
	struct store_stats st;
	uint64_t last = UINT64_MAX;
	int quiet = 0;

	for (int i = 0; i < 10000 && quiet < 20; i++) {
		sleep_ms(2);
		store_tick(s);
		store_commit(s);
		store_stats(s, &st);
		quiet = st.retention_deleted == last ? quiet + 1 : 0;
		last = st.retention_deleted;
	}
	ck_assert_int_ge(quiet, 20);
}

static void write_aged(struct store *s, struct store_proc *p, int n,
		       uint64_t rid0)
{
	struct proto_record r = tag_rec(100, 1, 1, "x");
	struct rules_finding f = finding_of(&r, rid0, 0);
	struct proto_record drop = {
	    .type = PROTO_DROPPED, .ts = 100, .count = 1};
	struct proto_record site = {.type = PROTO_SITE, .file = str("a.c")};
	struct rules_tag tag = {str("k"), str("v"), 100, 1, 0, 0, 0};

	verdicts(s, p, n, 100, LEAK_NONE, "x");
	for (uint64_t i = 0; i < 3; i++) {
		struct rules_request rq = request_of(rid0 + i, 100);

		rq.ntags = 1;
		rq.tags = &tag;
		store_request(s, p, &rq);
	}
	store_finding(s, p, &f);
	store_dropped(s, p, &drop);
	store_site(s, p, &site);
}

START_TEST(test_retention_by_age)
{
	struct store_config cfg = {.path = path,
				   .keep_all = 1,
				   .retention_age = (uint64_t)HOUR,
				   .commit_ms = 60000,
				   .commit_rows = 1000000,
				   .retention_ms = 1};
	struct store *s = open_store(&cfg);
	int64_t now = (int64_t)now_ns(CLOCK_REALTIME);
	/* Clock offsets that put ts 100 two hours ago and now. */
	struct store_proc old = add_process(s, 1, now - 2 * HOUR - 100);
	struct store_proc gone = add_process(s, 2, now - 2 * HOUR - 100);
	struct store_proc cur = add_process(s, 3, now - 100);
	struct store_stats st;
	char q_gone[128], buf[64];

	write_aged(s, &old, 12000, 1);
	write_aged(s, &gone, 10, 10);
	write_aged(s, &cur, 20, 20);
	store_commit(s);
	snprintf(q_gone, sizeof q_gone,
		 "UPDATE processes SET disconnected_at = %lld WHERE id = 2",
		 (long long)(now - 2 * HOUR));
	exec_on(path, q_gone);
	/* Bounded: one tick leaves some of the 12010 old records. */
	store_tick(s);
	store_commit(s);
	ck_assert_int_gt(q("SELECT count(*) FROM records"), 20);
	tick_until_retained(s);
	store_stats(s, &st);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 20);
	ck_assert_int_eq(q("SELECT count(*) FROM records WHERE process_id = 3"),
			 20);
	ck_assert_str_eq(
	    qs("SELECT group_concat(id) FROM requests", buf, sizeof buf),
	    "20,21,22");
	ck_assert_str_eq(
	    qs("SELECT group_concat(request_id) FROM tags", buf, sizeof buf),
	    "20,21,22");
	ck_assert_int_eq(q("SELECT count(*) FROM leaks"), 1);
	ck_assert_int_eq(q("SELECT count(*) FROM drops"), 1);
	/* The disconnected process went; the one still connected stays,
	 * though its rows are old.  Their one shared site, still held,
	 * stays too. */
	ck_assert_str_eq(
	    qs("SELECT group_concat(id) FROM processes", buf, sizeof buf),
	    "1,3");
	ck_assert_int_eq(q("SELECT count(*) FROM sites"), 1);
	/* 12010 records, 6 requests, 6 tags, 2 leaks, 2 drops and a
	 * process. */
	ck_assert_uint_eq(st.retention_deleted, 12010 + 6 + 6 + 2 + 2 + 1);
}
END_TEST

/* By age, a site goes when nothing can name it any more: no live process
 * holds it, and no row ever did or the last holder let it go before the
 * limit.  The highest id stays, so that no id is handed out twice. */
START_TEST(test_sites_retained_by_age)
{
	struct store_config cfg = {.path = path,
				   .retention_age = (uint64_t)HOUR,
				   .commit_ms = 60000,
				   .retention_ms = 1};
	struct store *s = open_store(&cfg);
	struct store_proc live = add_process(s, 1, 0), gone = add_process(s, 2, 0);
	struct proto_record site = {.type = PROTO_SITE, .line = 1};
	struct proto_record r = tag_rec(100, 1, 1, "x");
	struct rules_finding f = finding_of(&r, 1, 0);
	const char *files[] = {"held.c",   "unused.c", "old.c",
			       "recent.c", "last.c"};
	char buf[64], sql[160];

	for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
		site.file = str(files[i]);
		ck_assert_int_eq(store_site(s, i == 0 ? &live : &gone, &site),
				 (int64_t)i + 1);
	}
	/* Rows name old.c and recent.c (a finding at each). */
	r.site = 3;
	store_finding(s, &gone, &f);
	r.site = 4;
	store_finding(s, &gone, &f);
	store_process_update(s, &gone, 0, 0, 0, 0, -1, NULL, NULL, 1);
	store_commit(s);
	/* old.c was let go two hours ago, and its finding is as old. */
	snprintf(sql, sizeof sql,
		 "UPDATE sites SET released_at = %lld WHERE id = 3; "
		 "DELETE FROM leaks WHERE site_id = 3",
		 (long long)((int64_t)now_ns(CLOCK_REALTIME) - 2 * HOUR));
	exec_on(path, sql);
	tick_until_retained(s);
	store_close(s);
	ck_assert_str_eq(
	    qs("SELECT group_concat(file) FROM (SELECT file FROM sites "
	       "ORDER BY id)",
	       buf, sizeof buf),
	    "held.c,recent.c,last.c");
	ck_assert_int_eq(q("SELECT used FROM sites WHERE id = 4"), 1);
	ck_assert_int_eq(q("SELECT count(*) FROM leaks WHERE site_id NOT IN "
			   "(SELECT id FROM sites)"),
			 0);
}
END_TEST

static int64_t used_bytes(void)
{
	return q("SELECT (SELECT page_count FROM pragma_page_count) - "
		 "(SELECT freelist_count FROM pragma_freelist_count)") *
	       q("PRAGMA page_size");
}

/* Closes s and reopens its file under cfg with retention_bytes half of
 * what the file uses; retention must bring the file to 90% of that or
 * less (past the limit it trims down to 90%, not to just under it). */
static void retain_to_half(struct store *s, struct store_config *cfg)
{
	store_close(s);
	cfg->retention_bytes = (uint64_t)used_bytes() / 2;
	s = open_store(cfg);
	tick_until_retained(s);
	store_close(s);
	ck_assert_int_le(used_bytes(), (int64_t)cfg->retention_bytes / 10 * 9);
}

START_TEST(test_retention_by_size)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);
	struct store_config cfg = {
	    .path = path, .keep_all = 1, .commit_ms = 1, .retention_ms = 1};
	int64_t records = 30000, left;

	for (int i = 0; i < 3; i++)
		write_aged(s, &p, (int)records / 3, (uint64_t)(10 * i + 1));
	retain_to_half(s, &cfg);
	/* The oldest records went, the newest stayed, nothing else did. */
	left = q("SELECT count(*) FROM records");
	ck_assert_int_gt(left, 0);
	ck_assert_int_lt(left, records);
	ck_assert_int_eq(q("SELECT max(id) FROM records"), records);
	ck_assert_int_eq(q("SELECT min(id) FROM records"), records - left + 1);
	ck_assert_int_eq(q("SELECT count(*) FROM requests"), 9);
	ck_assert_int_eq(q("SELECT count(*) FROM leaks"), 3);
}
END_TEST

/* With no record left, the oldest requests (with their tags) and leaks
 * go.  Enough of them that a chunk is a small part of the file, whose
 * empty schema alone is 14 pages: with 3 chunks the 90% mark fell within
 * a page of what two chunks leave. */
START_TEST(test_retention_by_size_without_records)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 0);
	struct store_config cfg = {
	    .path = path, .commit_ms = 1, .retention_ms = 1};
	char big[100];
	struct rules_tag tags[2];
	struct proto_record r;
	int64_t n = 6000, left;

	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	r = tag_rec(100, 1, 1, big);
	tags[0] = (struct rules_tag){str("a"), str(big), 1, 1, 0, 0, 0};
	tags[1] = (struct rules_tag){str("b"), str(big), 1, 1, 0, 0, 0};
	for (int64_t i = 1; i <= n; i++) {
		struct rules_request rq = request_of((uint64_t)i, 100);
		struct rules_finding f = finding_of(&r, (uint64_t)i, 0);

		rq.ntags = 2;
		rq.tags = tags;
		rq.victim_of[LEAK_LOST] = 1;
		store_request(s, &p, &rq);
		store_finding(s, &p, &f);
	}
	retain_to_half(s, &cfg);
	left = q("SELECT count(*) FROM requests");
	ck_assert_int_gt(left, 0);
	ck_assert_int_lt(left, n);
	ck_assert_int_eq(q("SELECT min(id) FROM requests"), n - left + 1);
	ck_assert_int_eq(q("SELECT count(*) FROM tags"), 2 * left);
	ck_assert_int_eq(q("SELECT count(*) FROM tags WHERE request_id NOT IN "
			   "(SELECT id FROM requests)"),
			 0);
	ck_assert_int_eq(q("SELECT max(id) FROM leaks"), n);
	ck_assert_int_lt(q("SELECT count(*) FROM leaks"), n);
}
END_TEST

/* ------------------------------------------------------------ summaries */

#define MINUTE (60 * NS)

/* A clean request of `name` (NULL: none) at `site`, `begin` ns into the
 * wall-clock minute `minute`, lasting `duration` ns. */
static void clean_request(struct store *s, const struct store_proc *p,
			  uint64_t rid, const char *name, uint32_t site,
			  int64_t minute, uint64_t begin, uint64_t duration)
{
	uint64_t threads[2] = {7, 8};
	struct rules_tag tag = {str("user"), str("alice"), 1, 7, 0, rid, 0};
	struct rules_request rq = request_of(rid, 0);

	rq.name = str(name);
	rq.site = site;
	rq.begin_ts =
	    (uint64_t)(minute * MINUTE) + begin - (uint64_t)p->clock_offset;
	rq.end_ts = rq.begin_ts + duration;
	rq.nthreads = rid % 2 ? 2 : 1;
	rq.threads = threads;
	rq.ntags = 1;
	rq.tags = &tag;
	store_request(s, p, &rq);
}

/* One row per process, minute, name and site, added to across commits. */
START_TEST(test_clean_requests_counted)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 0);
	char buf[256];

	clean_request(s, &p, 1, "GET /a", 2, 100, 5, 1000);
	clean_request(s, &p, 2, "GET /a", 2, 100, 50 * NS, 3000);
	clean_request(s, &p, 3, "GET /a", 2, 101, 0, 500);
	clean_request(s, &p, 4, "GET /b", 0, 100, 0, 100);
	clean_request(s, &p, 5, NULL, 0, 100, 0, 100);
	clean_request(s, &p, 6, "", 0, 100, 0, 100);
	store_commit(s);
	clean_request(s, &p, 7, "GET /a", 2, 100, 59 * NS, 2000);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM requests"), 0);
	ck_assert_int_eq(q("SELECT count(*) FROM tags"), 0);
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats"), 5);
	ck_assert_str_eq(
	    qs("SELECT process_id || '|' || requests || '|' || records || '|' "
	       "|| scopes || '|' || tags || '|' || handed_off || '|' || "
	       "duration_sum || '|' || duration_max FROM request_stats WHERE "
	       "name = 'GET /a' AND site_id = 2 AND minute = 100 * 60000000000",
	       buf, sizeof buf),
	    "1|3|6|3|3|2|6000|3000");
	ck_assert_int_eq(q("SELECT requests FROM request_stats WHERE minute = "
			   "101 * 60000000000"),
			 1);
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats WHERE name IS "
			   "NULL AND site_id IS NULL"),
			 1);
	ck_assert_int_eq(
	    q("SELECT count(*) FROM request_stats WHERE name = ''"), 1);
	/* Ids stay unique after a restart although no row holds them. */
	s = open_default(0);
	ck_assert_uint_eq(store_last_request_id(s), 7);
	store_close(s);
}
END_TEST

/* More distinct keys than fit in memory between two commits. */
START_TEST(test_summaries_overflow)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 0);
	char name[32];
	int n = 10000;

	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "GET /%d", i);
		clean_request(s, &p, (uint64_t)i + 1, name, 0, 100, 0, 10);
	}
	for (int i = 0; i < n; i += 1000)
		clean_request(s, &p, (uint64_t)(n + i + 1), "GET /0", 0, 100, 0,
			      10);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats"), n);
	ck_assert_int_eq(q("SELECT sum(requests) FROM request_stats"), n + 10);
	ck_assert_int_eq(q("SELECT requests FROM request_stats WHERE name = "
			   "'GET /0'"),
			 11);
}
END_TEST

/* Under --keep=all every request is a row, and nothing is counted. */
START_TEST(test_keep_all_no_summaries)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);

	clean_request(s, &p, 1, "GET /a", 2, 100, 5, 1000);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM requests"), 1);
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats"), 0);
}
END_TEST

/* What judging after a request retired adds to its row. */
START_TEST(test_update_adds_to_row)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 0);
	struct rules_request rq = request_of(1, 1000);
	struct rules_update u = {
	    .rid = 1, .source_of = 1, .records = 3, .late = 1};
	char buf[256];

	rq.victim_of[LEAK_BLEED] = 1;
	rq.late = 2;
	store_request(s, &p, &rq);
	u.victim_of[LEAK_LOST] = 2;
	store_update(s, &p, &u);
	store_update(s, &p, &u);
	store_close(s);
	ck_assert_str_eq(qs("SELECT records || '|' || leaks || '|' || bleed "
			    "|| '|' || lost || '|' || source_of || '|' || late "
			    "FROM requests WHERE id = 1",
			    buf, sizeof buf),
			 "8|5|1|4|2|4");
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats"), 0);
}
END_TEST

/*
 * A request counted clean that a later finding names gets its row and
 * leaves request_stats, whether its count was committed already (_i 1)
 * or not; late records of a still clean one add to its counts.
 */
START_TEST(test_late_row_taken_back)
{
	struct store *s = open_default(0);
	struct store_proc p = add_process(s, 1, 0);
	uint64_t tid = 7;
	struct rules_request counted, row;
	struct rules_update u = {.rid = 1, .source_of = 1, .records = 1};
	char buf[256];

	clean_request(s, &p, 1, "GET /a", 2, 100, 5, 1000);
	clean_request(s, &p, 3, "GET /a", 2, 100, 7, 3000);
	if (_i)
		store_commit(s);
	/* rid 1 as clean_request counted it */
	counted = request_of(1, 0);
	counted.site = 2;
	counted.begin_ts =
	    (uint64_t)(100 * MINUTE) + 5 - (uint64_t)p.clock_offset;
	counted.end_ts = counted.begin_ts + 1000;
	counted.nthreads = 2;
	counted.threads = &tid;
	counted.ntags = 1;
	row = counted;
	row.nthreads = 1;
	row.ntags = 0;
	row.nrecords = 3;
	row.source_of = 1;
	u.row = &row;
	u.counted = &counted;
	store_update(s, &p, &u);
	/* rid 3 stays clean: a late record of late work */
	counted.rid = 3;
	counted.begin_ts += 2;
	u = (struct rules_update){
	    .rid = 3, .records = 1, .late = 1, .counted = &counted};
	store_update(s, &p, &u);
	store_close(s);
	ck_assert_str_eq(qs("SELECT records || '|' || source_of || '|' || "
			    "leaks || '|' || threads || '|' || (end_ts - "
			    "begin_ts) FROM requests",
			    buf, sizeof buf),
			 "3|1|0|7|1000");
	ck_assert_int_eq(q("SELECT count(*) FROM tags"), 0);
	ck_assert_str_eq(
	    qs("SELECT requests || '|' || records || '|' || scopes || '|' || "
	       "tags || '|' || handed_off || '|' || duration_sum || '|' || "
	       "late FROM request_stats",
	       buf, sizeof buf),
	    "1|3|1|1|1|3000|1");
}
END_TEST

/* A version 1 file (no request_stats) is migrated and keeps its rows. */
START_TEST(test_migrates_version_1)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);

	clean_request(s, &p, 1, "GET /a", 2, 100, 5, 1000);
	store_close(s);
	exec_on(path, "DROP TABLE request_stats; DROP INDEX "
		      "records_ctx_request; ALTER TABLE requests DROP COLUMN "
		      "records_not_kept; DROP INDEX sites_key; ALTER TABLE "
		      "sites DROP COLUMN used; ALTER TABLE sites DROP COLUMN "
		      "released_at; ALTER TABLE requests DROP COLUMN late; "
		      "ALTER TABLE records DROP COLUMN late; "
		      "ALTER TABLE processes DROP COLUMN committed_watermark; "
		      "ALTER TABLE processes DROP COLUMN committed_position; "
		      "DROP TABLE what_if; ALTER TABLE processes DROP "
		      "COLUMN what_if; DROP TABLE runs; ALTER TABLE "
		      "processes DROP COLUMN vanished; "
		      "PRAGMA user_version = 1");
	s = open_default(0);
	p = add_process(s, 1, 0);
	clean_request(s, &p, 2, "GET /a", 2, 100, 5, 1000);
	store_close(s);
	ck_assert_int_eq(q("PRAGMA user_version"), STORE_SCHEMA_VERSION);
	ck_assert_int_eq(q("SELECT count(*) FROM processes WHERE "
			   "committed_watermark = 0 AND committed_position "
			   "IS NULL"),
			 1);
	ck_assert_int_eq(q("SELECT count(*) FROM sqlite_master WHERE name = "
			   "'records_ctx_request'"),
			 1);
	ck_assert_int_eq(q("SELECT count(*) FROM requests WHERE "
			   "records_not_kept = 0"),
			 1);
	ck_assert_int_eq(q("SELECT sum(requests) FROM request_stats"), 1);
}
END_TEST

/* A version 2 file, a site row per SITE record: the duplicates merge into
 * the lowest id of their (file, line, func), and the rows that named them
 * follow. */
START_TEST(test_migrates_version_2_merges_sites)
{
	char buf[64];

	store_close(open_default(1));
	exec_on(path,
		"DROP INDEX sites_key; ALTER TABLE sites DROP COLUMN used; "
		"ALTER TABLE sites DROP COLUMN released_at; "
		"ALTER TABLE records DROP COLUMN late; ALTER TABLE requests "
		"DROP COLUMN late; ALTER TABLE request_stats DROP COLUMN late; "
		"ALTER TABLE processes DROP COLUMN committed_watermark; "
		"ALTER TABLE processes DROP COLUMN committed_position; "
		"DROP TABLE what_if; ALTER TABLE processes DROP COLUMN "
		"what_if; DROP TABLE runs; ALTER TABLE processes DROP "
		"COLUMN vanished; "
		"INSERT INTO sites VALUES (1, 1, 'a.c', 1, 'f'), "
		"(2, 2, 'a.c', 1, 'f'), (3, 2, 'a.c', 1, NULL), "
		"(4, 3, 'a.c', 1, NULL), (5, 3, 'a.c', 2, 'f'); "
		"INSERT INTO records(process_id, type, ts, tid, ctx, cause, "
		"site_id) VALUES (2, 'EVENT', 1, 1, 1, 1, 2), "
		"(3, 'EVENT', 1, 1, 1, 1, 4), (3, 'EVENT', 1, 1, 1, 1, 5); "
		"INSERT INTO leaks(process_id, class, ts, record, site_id) "
		"VALUES (2, 'lost', 1, 'EVENT', 2); "
		"INSERT INTO tags(request_id, key, ts, site_id) VALUES "
		"(1, 'k', 1, 4); "
		"INSERT INTO request_stats VALUES (2, 0, 'n', 2, 1, 1, 1, 0, "
		"0, 1, 1); PRAGMA user_version = 2");
	store_close(open_default(1));
	ck_assert_int_eq(q("PRAGMA user_version"), STORE_SCHEMA_VERSION);
	ck_assert_str_eq(qs("SELECT group_concat(id || ':' || used) FROM sites",
			    buf, sizeof buf),
			 "1:1,3:1,5:1");
	ck_assert_str_eq(qs("SELECT group_concat(site_id) FROM records",
			    buf, sizeof buf),
			 "1,3,5");
	ck_assert_int_eq(q("SELECT site_id FROM leaks"), 1);
	ck_assert_int_eq(q("SELECT site_id FROM tags"), 3);
	ck_assert_int_eq(q("SELECT site_id FROM request_stats"), 1);
}
END_TEST

/* A minute's counts go once all of the minute is older than the limit. */
START_TEST(test_summaries_retained_by_age)
{
	struct store_config cfg = {.path = path,
				   .retention_age = (uint64_t)HOUR,
				   .commit_ms = 60000,
				   .commit_rows = 1000000,
				   .retention_ms = 1};
	struct store *s = open_store(&cfg);
	struct store_proc p = add_process(s, 1, 0);
	int64_t now = (int64_t)now_ns(CLOCK_REALTIME) / MINUTE;

	clean_request(s, &p, 1, "old", 0, now - 120, 0, 10);
	clean_request(s, &p, 2, "new", 0, now, 0, 10);
	store_commit(s);
	tick_until_retained(s);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats"), 1);
	ck_assert_int_eq(q("SELECT count(*) FROM request_stats WHERE name = "
			   "'new'"),
			 1);
}
END_TEST

/* ------------------------------------------------------------ disk full */

static int count_lines(const char *p, const char *needle)
{
	char *text = read_file(p), *at = text;
	int n = 0;

	ck_assert_ptr_nonnull(text);
	while ((at = strstr(at, needle)) != NULL) {
		n++;
		at++;
	}
	free(text);
	return n;
}

START_TEST(test_disk_full)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);
	struct store_stats st;
	char big[600], log_path[160];

	snprintf(log_path, sizeof log_path, "%s/log", dir);
	log_open(log_path);
	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	verdicts(s, &p, 100, 0, LEAK_NONE, big);
	store_commit(s);
	store_limit_pages(s, 0);
	verdicts(s, &p, 2000, 0, LEAK_NONE, big);
	store_tick(s);
	verdicts(s, &p, 1000, 0, LEAK_NONE, big);
	store_commit(s);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 1);
	ck_assert_uint_eq(st.rows_failed, 3000);
	ck_assert_int_eq(count_lines(log_path, "store: insert failed"), 1);
	/* Space comes back. */
	store_limit_pages(s, -1);
	store_tick(s);
	verdicts(s, &p, 50, 0, LEAK_NONE, big);
	store_commit(s);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 0);
	ck_assert_uint_eq(st.rows_failed, 3000);
	ck_assert_int_eq(count_lines(log_path, "store: writing again"), 1);
	/* The disk flaps: another episode within the minute is counted,
	 * not logged again. */
	store_limit_pages(s, 0);
	verdicts(s, &p, 1000, 0, LEAK_NONE, big);
	store_commit(s);
	store_limit_pages(s, -1);
	store_tick(s);
	verdicts(s, &p, 50, 0, LEAK_NONE, big);
	store_commit(s);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 0);
	ck_assert_uint_eq(st.rows_failed, 4000);
	ck_assert_int_eq(count_lines(log_path, " failed: "), 1);
	ck_assert_int_eq(count_lines(log_path, "store: writing again"), 1);
	store_close(s);
	log_open(NULL);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 200);
	ck_assert_uint_eq(st.rows_written, 1 + 100 + 50 + 50);
}
END_TEST

/* Says, before the store logs to stderr (these tests' log), that the
 * error and recovery lines that follow are the fault the test injects,
 * so that a reader of `make check` does not take them for a failure. */
static void expect_store_errors(const char *fault)
{
	printf("expected (injected: %s): the store error and \"writing "
	       "again\" lines below\n",
	       fault);
	fflush(stdout);
}

/* Ids handed out in a transaction that is then lost are not handed out
 * again; a process that connects while the disk is full is taken, and
 * its row, held meanwhile, comes when space returns, with the counters
 * of its end. */
START_TEST(test_disk_full_ids)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0), full = {0}, after = {0};
	struct proto_record site = {.type = PROTO_SITE, .file = str("a.c")};
	struct proto_hello h = hello_of(2, 100, 0);
	struct store_process_info pi = {&h, 100, 0, 0};
	struct store_stats st;
	char big[600];

	memset(big, 'v', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	ck_assert_int_eq(store_site(s, &p, &site), 1);
	expect_store_errors("a full disk");
	store_limit_pages(s, 0);
	verdicts(s, &p, 100, 0, LEAK_NONE, big);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 1);
	ck_assert_int_eq(store_process_open(s, &pi, &full), 0);
	ck_assert_int_eq(full.id, 2);
	store_process_update(s, &full, 7, 1, 0, 0, -1, NULL, NULL, 1);
	store_limit_pages(s, -1);
	store_tick(s);
	store_commit(s);
	ck_assert_int_eq(store_site(s, &p, &site), 2);
	h = hello_of(3, 100, 0);
	ck_assert_int_eq(store_process_open(s, &pi, &after), 0);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM sites"), 1);
	ck_assert_int_eq(q("SELECT id FROM sites"), 2);
	ck_assert_int_eq(q("SELECT count(*) FROM processes"), 3);
	ck_assert_int_eq(after.id, 3);
	ck_assert_int_eq(q("SELECT records * 10 + dropped FROM processes "
			   "WHERE id = 2 AND disconnected_at IS NOT NULL"),
			 71);
}
END_TEST

/* Someone else holding the write lock is survived like a full disk. */
START_TEST(test_other_writer)
{
	struct store *s = open_default(1);
	struct store_proc p = add_process(s, 1, 0);
	struct store_stats st;
	sqlite3 *other;

	ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
	ck_assert_int_eq(
	    sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
	    SQLITE_OK);
	expect_store_errors("another writer holding the lock");
	verdicts(s, &p, 10, 0, LEAK_NONE, "x");
	store_commit(s);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 1);
	ck_assert_uint_eq(st.rows_failed, 10);
	ck_assert_int_eq(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL),
			 SQLITE_OK);
	sqlite3_close(other);
	store_tick(s);
	verdicts(s, &p, 5, 0, LEAK_NONE, "x");
	store_commit(s);
	store_stats(s, &st);
	ck_assert_int_eq(st.degraded, 0);
	store_close(s);
	ck_assert_int_eq(q("SELECT count(*) FROM records"), 5);
}
END_TEST

static Suite *store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc;
	struct {
		const char *name;
		const TTest *tests[8];
	} cases[] = {
	    {"open",
	     {test_open_creates_dir_and_file, test_open_is_wal,
	      test_schema_matches_doc, test_reopen_keeps_data,
	      test_newer_version_refused, test_not_sqlite_refused,
	      test_foreign_sqlite_refused, test_unwritable_path}},
	    {"rows",
	     {test_keep_all_vs_leaky, test_record_columns,
	      test_finding_evidence, test_request_and_tags,
	      test_process_reconnect, test_sites_and_drops,
	      test_last_request_id, test_misattributed_records_indexed}},
	    {"batching",
	     {test_commit_by_rows, test_request_rows_commit_together,
	      test_commit_by_time, test_reader_beside_writer}},
	    {"retention",
	     {test_retention_by_age, test_retention_by_size,
	      test_retention_by_size_without_records,
	      test_sites_retained_by_age}},
	    {"summaries",
	     {test_clean_requests_counted, test_summaries_overflow,
	      test_keep_all_no_summaries, test_migrates_version_1,
	      test_migrates_version_2_merges_sites,
	      test_summaries_retained_by_age}},
	    {"disk full",
	     {test_disk_full, test_disk_full_ids, test_other_writer}},
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tc = tcase_create(cases[i].name);

		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 30);
		for (int j = 0; j < 8 && cases[i].tests[j] != NULL; j++)
			tcase_add_test(tc, cases[i].tests[j]);
		suite_add_tcase(s, tc);
	}
	tc = tcase_create("late rows");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_update_adds_to_row);
	tcase_add_loop_test(tc, test_late_row_taken_back, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_main(store_suite(), NULL);
}
