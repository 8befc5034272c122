/*
 * cli_db.c: the CLI's side of the database: where it is, opening it
 * read-only, telling the user plainly when it is not one we can read, and
 * the SQL of the selection shared by the subcommands (filters, --fail-on).
 *
 * The file is opened with SQLITE_OPEN_READONLY: in WAL mode that reads a
 * consistent snapshot while ctxleakd writes, and the CLI can never change
 * or lock out the daemon's data.
 */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* Readers wait this long for a writer's checkpoint instead of failing. */
#define BUSY_TIMEOUT_MS 5000

const char *cli_db_default(char *buf, size_t len)
{
	/* Too long a path for buf is one no file has: opening it fails. */
	if (common_default_path(COMMON_DB, buf, len) == -1)
		snprintf(buf, len, "%s", "");
	return buf;
}

/* The database of a daemon run by hand as this user, or as the user who
 * ran sudo, in buf; NULL when there is none. */
static const char *user_db(char *buf, size_t len)
{
	const char *sudo = getenv("SUDO_USER");
	struct passwd *pw = sudo && *sudo ? getpwnam(sudo) : NULL;
	struct stat st;

	if (common_user_path(COMMON_DB, NULL, buf, len) == 0 &&
	    stat(buf, &st) == 0)
		return buf;
	if (pw && pw->pw_dir &&
	    common_user_path(COMMON_DB, pw->pw_dir, buf, len) == 0 &&
	    stat(buf, &st) == 0)
		return buf;
	return NULL;
}

/* For root on the system database: " (a user daemon's database is at
 * PATH: --db PATH)", or "". */
static const char *user_db_hint(const char *path, char *buf, size_t len)
{
	char user[4096];

	buf[0] = '\0';
	if (geteuid() == 0 && strcmp(path, CLI_SYSTEM_DB) == 0 &&
	    user_db(user, sizeof(user)))
		snprintf(buf, len,
			 "; as root this is the system daemon's database, but "
			 "a daemon run by hand wrote %s: pass --db %s",
			 user, user);
	return buf;
}

void cli_db_say_where(const struct cli *c)
{
	char hint[10000];

	fprintf(stderr, "ctxleak: read %s%s\n", c->db_path,
		user_db_hint(c->db_path, hint, sizeof(hint)));
}

/* Missing and unreadable files, before SQLite turns them into less clear
 * errors (or, for a missing file, into an empty database). */
static int check_file(const char *path)
{
	char hint[10000];
	struct stat st;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			return cli_error(
			    CLI_EXIT_DB,
			    "no database at %s (has ctxleakd run? "
			    "use --db PATH)%s",
			    path, user_db_hint(path, hint, sizeof(hint)));
		return cli_error(CLI_EXIT_DB, "cannot read %s: %s", path,
				 strerror(errno));
	}
	if (!S_ISREG(st.st_mode))
		return cli_error(CLI_EXIT_DB, "%s is not a file", path);
	if (access(path, R_OK) < 0)
		return cli_error(CLI_EXIT_DB, "cannot read %s: %s", path,
				 strerror(errno));
	return 0;
}

/* One integer from a query; -1 when it fails (not SQLite, locked...). */
static long long query_int(sqlite3 *db, const char *sql, int *err)
{
	sqlite3_stmt *st;
	long long v = -1;

	*err = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (*err != SQLITE_OK)
		return -1;
	*err = sqlite3_step(st);
	if (*err == SQLITE_ROW) {
		v = sqlite3_column_int64(st, 0);
		*err = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return v;
}

/* The first read: how many of our tables there are.  Any failure of the
 * file itself (not SQLite, unreadable WAL files) shows here. */
static int probe(sqlite3 *db, long long *tables)
{
	int err;

	*tables = query_int(db,
			    "SELECT count(*) FROM sqlite_master WHERE type = "
			    "'table' AND name IN ('processes', 'leaks')",
			    &err);
	return err;
}

static int check_schema(struct cli *c, int err, long long tables)
{
	long long version;

	if (err == SQLITE_NOTADB)
		return cli_error(CLI_EXIT_DB,
				 "%s is not a ctxleak database (not SQLite)",
				 c->db_path);
	if (err != SQLITE_OK)
		return cli_error(CLI_EXIT_DB, "cannot read %s: %s", c->db_path,
				 sqlite3_errstr(err));
	if (tables != 2)
		return cli_error(CLI_EXIT_DB,
				 "%s is not a ctxleak database (no processes "
				 "and leaks tables)",
				 c->db_path);
	if (query_int(c->db, "PRAGMA application_id", &err) !=
	    CLI_APPLICATION_ID)
		return cli_error(CLI_EXIT_DB,
				 "%s is not a ctxleak database (application_id "
				 "is not \"cxlk\")",
				 c->db_path);
	version = query_int(c->db, "PRAGMA user_version", &err);
	if (err != SQLITE_OK)
		return cli_error(CLI_EXIT_DB, "cannot read %s: %s", c->db_path,
				 sqlite3_errstr(err));
	if (version > CLI_SCHEMA_VERSION)
		return cli_error(CLI_EXIT_DB,
				 "%s has schema version %lld, newer than this "
				 "ctxleak reads (%d): upgrade ctxleak",
				 c->db_path, version, CLI_SCHEMA_VERSION);
	/* Read-only, the CLI cannot migrate; the daemon does on start. */
	if (version < CLI_SCHEMA_VERSION)
		return cli_error(CLI_EXIT_DB,
				 "%s has schema version %lld, older than this "
				 "ctxleak reads (%d): start ctxleakd once to "
				 "migrate it",
				 c->db_path, version, CLI_SCHEMA_VERSION);
	return 0;
}

/* Whether the database's write-ahead log holds nothing: no writer has
 * anything that the main file lacks. */
static int wal_empty(const char *path)
{
	char wal[4096];
	struct stat st;

	snprintf(wal, sizeof(wal), "%s-wal", path);
	return stat(wal, &st) < 0 ? errno == ENOENT : st.st_size == 0;
}

/* "file:PATH?immutable=1", PATH percent-encoded where URIs need it. */
static void immutable_uri(const char *path, char *buf, size_t len)
{
	size_t n = snprintf(buf, len, "file:");

	for (; *path && n + 4 < len; path++)
		n += strchr("?#%", *path)
			 ? (size_t)snprintf(buf + n, len - n, "%%%02X",
					    (unsigned char)*path)
			 : (size_t)snprintf(buf + n, len - n, "%c", *path);
	snprintf(buf + n, len - n, "?immutable=1");
}

static int open_db(struct cli *c, const char *name, int flags)
{
	int err =
	    sqlite3_open_v2(name, &c->db, SQLITE_OPEN_READONLY | flags, NULL);

	if (err == SQLITE_OK)
		sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
	return err;
}

/* The URL without its password ("postgresql://u:secret@h/db" as
 * "postgresql://u@h/db"), for every message that names the database. */
static const char *shown_url(const char *url, char *buf, size_t len)
{
	const char *user = strstr(url, "://");
	const char *at = user ? strchr(user + 3, '@') : NULL;
	const char *colon = user ? strchr(user + 3, ':') : NULL;

	if (at == NULL || colon == NULL || colon > at)
		return url;
	snprintf(buf, len, "%.*s%s", (int)(colon - url), url, at);
	return buf;
}

/*
 * The central database (docs/CENTRAL.md): connected with the forwarder's
 * settings, its schema version checked, then one read-only transaction for
 * the whole command, REPEATABLE READ: every statement sees the same
 * snapshot, as a reader of the SQLite file does while the daemon writes
 * (and as cursors need).
 */
static int open_pg(struct cli *c)
{
	static char shown[4096];
	int rc;

	c->db_path = shown_url(c->db_path, shown, sizeof(shown));
	c->pg = cli_pg_connect(c->pg_url, "ctxleak");
	if (PQstatus(c->pg) != CONNECTION_OK)
		rc = cli_error(CLI_EXIT_DB, "cannot connect to %s: %s",
			       c->db_path, cli_pg_message(c->pg));
	else if ((rc = cli_pg_check_schema(c->pg, c->db_path)) == 0 &&
		 cli_pg_exec(c->pg, "BEGIN ISOLATION LEVEL REPEATABLE READ,"
				    " READ ONLY") < 0)
		rc = cli_error(CLI_EXIT_DB, "cannot read %s: %s", c->db_path,
			       cli_pg_message(c->pg));
	if (rc)
		cli_db_close(c);
	return rc;
}

/*
 * A reader of a WAL database needs its -shm file, and to create it when
 * it is missing: a user allowed to read the file but not to write in its
 * directory (a member of group ctxleak, once the daemon has stopped)
 * cannot.  When the log is empty the main file is the whole database, and
 * SQLite may read it as immutable, without the -shm file.
 */
int cli_db_open(struct cli *c)
{
	char uri[8192];
	long long tables = 0;
	int rc, err;

	if (cli_pg_is_url(c->db_path)) {
		c->pg_url = c->db_path;
		return open_pg(c);
	}
	if ((rc = check_file(c->db_path)) != 0)
		return rc;
	err = open_db(c, c->db_path, 0);
	if (err == SQLITE_OK)
		err = probe(c->db, &tables);
	if ((err == SQLITE_CANTOPEN || (err & 0xff) == SQLITE_READONLY) &&
	    wal_empty(c->db_path)) {
		cli_db_close(c);
		immutable_uri(c->db_path, uri, sizeof(uri));
		err = open_db(c, uri, SQLITE_OPEN_URI);
		if (err == SQLITE_OK)
			err = probe(c->db, &tables);
	}
	if (err == SQLITE_CANTOPEN || (err & 0xff) == SQLITE_READONLY)
		rc =
		    cli_error(CLI_EXIT_DB,
			      "cannot read %s: %s (a reader needs its -wal and "
			      "-shm files too, or write access to its "
			      "directory)",
			      c->db_path, sqlite3_errstr(err));
	else
		rc = check_schema(c, err, tables);
	if (rc)
		cli_db_close(c);
	return rc;
}

void cli_db_close(struct cli *c)
{
	sqlite3_close(c->db);
	c->db = NULL;
	/* The transaction only read: ending the session ends it. */
	PQfinish(c->pg);
	c->pg = NULL;
	free(c->roots);
	c->roots = NULL;
	c->nroots = 0;
	c->roots_loaded = 0;
}

static int cmp_root(const void *a, const void *b)
{
	const struct cli_root *x = a, *y = b;

	if (x->process != y->process)
		return x->process < y->process ? -1 : 1;
	return x->ctx < y->ctx ? -1 : x->ctx > y->ctx;
}

/* One scan of requests, sorted for bsearch: a lookup per finding would
 * scan it (no index on ctx) once each. */
static void load_roots(struct cli *c)
{
	struct cli_stmt *st;
	size_t cap = 0;

	c->roots_loaded = 1;
	st = cli_db_prepare(c, "SELECT process_id, ctx, id FROM requests");
	if (st == NULL)
		return;
	while (cli_stmt_step(st) == CLI_STEP_ROW) {
		if (c->nroots == cap) {
			cap = cap ? 2 * cap : 1024;
			c->roots = realloc(c->roots, cap * sizeof(*c->roots));
			if (c->roots == NULL)
				abort();
		}
		c->roots[c->nroots].process = cli_stmt_int(st, 0);
		c->roots[c->nroots].ctx = cli_stmt_int(st, 1);
		c->roots[c->nroots++].id = cli_stmt_int(st, 2);
	}
	cli_stmt_finalize(st);
	qsort(c->roots, c->nroots, sizeof(*c->roots), cmp_root);
}

int64_t cli_db_ctx_request(struct cli *c, int64_t process_id, int64_t hint,
			   int64_t ctx)
{
	static const char sql[] = "SELECT 1 FROM records WHERE request_id = ?1"
				  " AND ctx = ?2 AND type = 'BEGIN'";
	struct cli_root key = {process_id, ctx, 0}, *found;
	struct cli_stmt *st;
	int mine = 0;

	if (ctx == 0)
		return 0;
	/* Records never leave their host: the central table is empty, and a
	 * lookup there would cost a round trip per finding for nothing. */
	if (hint && !c->pg && (st = cli_db_prepare(c, sql)) != NULL) {
		cli_stmt_bind_int(st, 1, hint);
		cli_stmt_bind_int(st, 2, ctx);
		mine = cli_stmt_step(st) == CLI_STEP_ROW;
		cli_stmt_finalize(st);
		if (mine)
			return hint;
	}
	if (!c->roots_loaded)
		load_roots(c);
	found = c->nroots ? bsearch(&key, c->roots, c->nroots,
				    sizeof(*c->roots), cmp_root)
			  : NULL;
	return found ? found->id : 0;
}

int cli_db_done(struct cli *c, int rc)
{
	if (rc == CLI_STEP_DONE)
		return 0;
	return cli_error(CLI_EXIT_DB, "cannot read %s: %s", c->db_path,
			 c->pg ? c->pg_error : sqlite3_errmsg(c->db));
}

/* " AND l.class IN ('bleed','lost')" for a class mask. */
static size_t class_sql(unsigned classes, char *buf, size_t len)
{
	size_t n = 0;
	const char *sep = " AND l.class IN (";

	for (int i = 0; i < CLI_CLASS_COUNT && n < len; i++) {
		if (!(classes & (1u << i)))
			continue;
		n += snprintf(buf + n, len - n, "%s'%s'", sep,
			      cli_class_names[i]);
		sep = ", ";
	}
	if (n && n < len)
		n += snprintf(buf + n, len - n, ")");
	return n < len ? n : len - 1;
}

void cli_db_filter_sql(const struct cli_filter *f, char *buf, size_t len)
{
	size_t n = class_sql(f->classes, buf, len);

#define ADD(cond, sql)                                                         \
	do {                                                                   \
		if ((cond) && n < len)                                         \
			n += snprintf(buf + n, len - n, "%s", sql);            \
	} while (0)
	buf[n] = '\0';
	ADD(f->app, " AND p.app = :app");
	ADD(f->pid, " AND p.pid = :pid");
	ADD(f->request,
	    " AND (l.victim_name = :request OR l.source_name = :request)");
	/* FILE matches the whole path or its last components (a start
	 * counted from the left: PostgreSQL's substr takes no negative
	 * one). */
	ADD(f->site_file,
	    " AND l.site_id IN (SELECT id FROM sites WHERE (file = :file OR "
	    "substr(file, length(file) - length(:file)) = '/' || :file) AND "
	    "(:line = 0 OR line = :line))");
	/* A comma list of names; only the central database has hosts. */
	ADD(f->host, " AND p.host_id IN (SELECT hf.id FROM hosts hf WHERE"
		     " hf.name = ANY(string_to_array(:host, ',')))");
	ADD(f->since, " AND l.ts >= :since");
	ADD(f->until, " AND l.ts <= :until");
#undef ADD
}

void cli_db_process_sql(const struct cli_filter *f, char *buf, size_t len)
{
	struct cli_filter pf = {.app = f->app, .pid = f->pid, .host = f->host};

	cli_db_filter_sql(&pf, buf, len);
}

static void bind_text(struct cli_stmt *st, const char *name, const char *v)
{
	int i = cli_stmt_param(st, name);

	if (i > 0)
		cli_stmt_bind_text(st, i, v);
}

static void bind_int(struct cli_stmt *st, const char *name, int64_t v)
{
	int i = cli_stmt_param(st, name);

	if (i > 0)
		cli_stmt_bind_int(st, i, v);
}

void cli_db_bind_filter(struct cli_stmt *st, const struct cli_filter *f)
{
	bind_text(st, ":app", f->app);
	bind_int(st, ":pid", f->pid);
	bind_text(st, ":request", f->request);
	bind_text(st, ":host", f->host);
	bind_text(st, ":file", f->site_file);
	bind_int(st, ":line", f->site_line);
	bind_int(st, ":since", f->since);
	bind_int(st, ":until", f->until);
}

/* The one number sql computes under the command's filters; -1 when the
 * query fails. */
static long long filtered_number(struct cli *c, const char *sql)
{
	struct cli_stmt *st = cli_db_prepare(c, sql);
	long long n = -1;

	if (st == NULL)
		return -1;
	cli_db_bind_filter(st, &c->filter);
	if (cli_stmt_step(st) == CLI_STEP_ROW)
		n = cli_stmt_int(st, 0);
	cli_stmt_finalize(st);
	return n;
}

/* Counts the findings that match where and the --fail-on classes. */
static long long fail_count(struct cli *c, const char *where)
{
	char sql[2048], classes[256];

	class_sql(c->fail_on, classes, sizeof(classes));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM leaks l JOIN processes p ON p.id = "
		 "l.process_id WHERE 1 = 1%s%s",
		 where, classes);
	return filtered_number(c, sql);
}

long long cli_db_dropped(struct cli *c)
{
	char where[256], sql[1024];

	cli_db_process_sql(&c->filter, where, sizeof(where));
	snprintf(sql, sizeof(sql),
		 "SELECT coalesce(sum(d.count), 0) FROM drops d JOIN processes"
		 " p ON p.id = d.process_id WHERE 1 = 1%s" CLI_DROPS_IN_RANGE,
		 where);
	return filtered_number(c, sql);
}

int cli_db_fail_exit(struct cli *c, const char *where)
{
	long long n;

	if (!c->fail_on)
		return CLI_EXIT_OK;
	n = fail_count(c, where);
	if (n < 0)
		return CLI_EXIT_DB;
	return n > 0 ? CLI_EXIT_MATCH : CLI_EXIT_OK;
}
