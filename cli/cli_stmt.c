/*
 * cli_stmt.c: the statements every command runs, on either database: a
 * host's SQLite file (a thin wrapper over sqlite3_stmt) or the fleet's
 * central PostgreSQL database (docs/CENTRAL.md, through libpq).
 *
 * The commands write SQL once, in the dialect both accept, with SQLite's
 * parameters (?N, ?, :name).  For PostgreSQL a statement is rewritten
 * outside quoted strings and identifiers: each parameter becomes $N with
 * the index SQLite would give it, and COLLATE BINARY (SQLite's byte order,
 * its default) becomes COLLATE "C", the same order.  Values are sent with
 * their types (int8, text), so that "SELECT ?1 UNION SELECT id" and
 * "? IS NULL" type as they do in SQLite.
 *
 * A PostgreSQL statement runs as a cursor in the read-only transaction that
 * cli_db_open began, fetched FETCH_ROWS rows at a time: memory stays
 * bounded whatever the result's size, and other statements may run between
 * two steps (a finding's detail looks up requests while leaks iterates),
 * which libpq's single-row mode would not allow on one connection.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Rows a cursor fetches at once: a round trip per FETCH_ROWS rows. */
#define FETCH_ROWS 1000

/* PostgreSQL type OIDs (catalog/pg_type.h, stable across versions). */
#define OID_BOOL    16
#define OID_INT8    20
#define OID_INT2    21
#define OID_INT4    23
#define OID_TEXT    25
#define OID_NUMERIC 1700

/* A named parameter (:name) and the index SQLite gives it. */
struct pg_name {
	char *name; /* with its ':' */
	int index;
};

struct cli_stmt {
	struct cli *c;
	sqlite3_stmt *lite; /* SQLite: the statement; NULL on PostgreSQL */
	/* PostgreSQL from here on. */
	char *sql;	       /* "DECLARE name NO SCROLL CURSOR FOR ..." */
	char cursor[32];       /* its name, unique on the connection */
	int nparams;	       /* the highest parameter index */
	struct pg_name *names; /* the named ones */
	int nnames;
	const char **values; /* per parameter: its text, NULL for NULL */
	Oid *types;	     /* per parameter: OID_INT8 or OID_TEXT */
	char (*ints)[24];    /* per parameter: the text of a bound int */
	PGresult *res;	     /* the rows of the last FETCH */
	int row, nrows;	     /* the current row in it, and its count */
	int declared;	     /* the cursor is open */
	int done;	     /* the last FETCH was short: no more rows */
};

int cli_db_is_pg(const struct cli *c)
{
	return c->pg != NULL;
}

/* ------------------------------------------------------------ translation */

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (p == NULL)
		abort();
	return p;
}

static int name_char(char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || ch == '_';
}

/* The index of :name (len bytes at s), given the next one when new. */
static int name_index(struct cli_stmt *st, const char *s, size_t len)
{
	for (int i = 0; i < st->nnames; i++)
		if (strlen(st->names[i].name) == len &&
		    memcmp(st->names[i].name, s, len) == 0)
			return st->names[i].index;
	st->names = xrealloc(st->names, (st->nnames + 1) * sizeof(*st->names));
	st->names[st->nnames].name = strndup(s, len);
	if (st->names[st->nnames].name == NULL)
		abort();
	st->names[st->nnames].index = ++st->nparams;
	return st->names[st->nnames++].index;
}

/* Rewrites sql for PostgreSQL into st->sql after the DECLARE. */
static void translate(struct cli_stmt *st, const char *sql)
{
	static const char collate[] = "COLLATE BINARY";
	size_t cap = strlen(sql) * 2 + 128, n;
	char *out = xrealloc(NULL, cap);

	n = (size_t)snprintf(out, cap, "DECLARE %s NO SCROLL CURSOR FOR ",
			     st->cursor);
	for (const char *p = sql; *p;) {
		if (n + 32 > cap)
			out = xrealloc(out, cap *= 2);
		if (*p == '\'' || *p == '"') {
			/* A quoted string or identifier, as it is ('' and ""
			 * inside quote themselves). */
			const char *q = p + 1;

			while (*q && *q != *p)
				q++;
			q += *q != '\0';
			while (n + (size_t)(q - p) + 32 > cap)
				out = xrealloc(out, cap *= 2);
			memcpy(out + n, p, (size_t)(q - p));
			n += (size_t)(q - p);
			p = q;
		} else if (*p == '?') {
			char *end;
			long i = strtol(p + 1, &end, 10);

			if (end == p + 1)
				i = st->nparams + 1;
			if (i > st->nparams)
				st->nparams = (int)i;
			n += (size_t)snprintf(out + n, cap - n, "$%ld", i);
			p = end;
		} else if (*p == ':' && name_char(p[1]) && p[1] != ':' &&
			   (p == sql || p[-1] != ':')) {
			const char *q = p + 1;

			while (name_char(*q))
				q++;
			n += (size_t)snprintf(
			    out + n, cap - n, "$%d",
			    name_index(st, p, (size_t)(q - p)));
			p = q;
		} else if (strncmp(p, collate, sizeof(collate) - 1) == 0 &&
			   !name_char(p[sizeof(collate) - 1])) {
			n +=
			    (size_t)snprintf(out + n, cap - n, "COLLATE \"C\"");
			p += sizeof(collate) - 1;
		} else {
			out[n++] = *p++;
		}
	}
	out[n] = '\0';
	st->sql = out;
}

static struct cli_stmt *pg_prepare(struct cli *c, const char *sql)
{
	struct cli_stmt *st = calloc(1, sizeof(*st));

	if (st == NULL)
		abort();
	st->c = c;
	snprintf(st->cursor, sizeof(st->cursor), "cli_%u", ++c->pg_cursors);
	translate(st, sql);
	st->values = xrealloc(NULL, (st->nparams + 1) * sizeof(*st->values));
	st->types = xrealloc(NULL, (st->nparams + 1) * sizeof(*st->types));
	st->ints = xrealloc(NULL, (st->nparams + 1) * sizeof(*st->ints));
	/* Unbound is NULL, as in SQLite; text, so that "? IS NULL" types. */
	for (int i = 0; i < st->nparams; i++) {
		st->values[i] = NULL;
		st->types[i] = OID_TEXT;
	}
	return st;
}

/* ------------------------------------------------------------ statements */

struct cli_stmt *cli_db_prepare(struct cli *c, const char *sql)
{
	struct cli_stmt *st;
	sqlite3_stmt *lite;

	if (c->pg)
		return pg_prepare(c, sql);
	if (sqlite3_prepare_v2(c->db, sql, -1, &lite, NULL) != SQLITE_OK) {
		cli_error(CLI_EXIT_DB, "%s: unexpected schema: %s", c->db_path,
			  sqlite3_errmsg(c->db));
		return NULL;
	}
	st = malloc(sizeof(*st));
	if (st == NULL)
		abort();
	st->c = c;
	st->lite = lite;
	return st;
}

int cli_stmt_param(struct cli_stmt *st, const char *name)
{
	if (st->lite)
		return sqlite3_bind_parameter_index(st->lite, name);
	for (int i = 0; i < st->nnames; i++)
		if (strcmp(st->names[i].name, name) == 0)
			return st->names[i].index;
	return 0;
}

int cli_stmt_nparams(struct cli_stmt *st)
{
	return st->lite ? sqlite3_bind_parameter_count(st->lite) : st->nparams;
}

void cli_stmt_bind_int(struct cli_stmt *st, int i, int64_t v)
{
	if (st->lite) {
		sqlite3_bind_int64(st->lite, i, v);
		return;
	}
	if (i < 1 || i > st->nparams)
		return;
	snprintf(st->ints[i - 1], sizeof(st->ints[i - 1]), "%lld",
		 (long long)v);
	st->values[i - 1] = st->ints[i - 1];
	st->types[i - 1] = OID_INT8;
}

void cli_stmt_bind_text(struct cli_stmt *st, int i, const char *s)
{
	if (st->lite) {
		sqlite3_bind_text(st->lite, i, s, -1, SQLITE_STATIC);
		return;
	}
	if (i < 1 || i > st->nparams)
		return;
	st->values[i - 1] = s;
	st->types[i - 1] = OID_TEXT;
}

/* A failed PostgreSQL command: its message kept for cli_db_done. */
static int pg_failed(struct cli_stmt *st, PGresult *res)
{
	const char *msg = PQresultErrorMessage(res);

	snprintf(
	    st->c->pg_error, sizeof(st->c->pg_error), "%.*s",
	    (int)strcspn(msg && *msg ? msg : PQerrorMessage(st->c->pg), "\n"),
	    msg && *msg ? msg : PQerrorMessage(st->c->pg));
	PQclear(res);
	return CLI_STEP_ERROR;
}

static int pg_fetch(struct cli_stmt *st)
{
	char sql[64];

	PQclear(st->res);
	st->res = NULL;
	snprintf(sql, sizeof(sql), "FETCH %d FROM %s", FETCH_ROWS, st->cursor);
	st->res = PQexec(st->c->pg, sql);
	if (PQresultStatus(st->res) != PGRES_TUPLES_OK) {
		PGresult *res = st->res;

		st->res = NULL;
		return pg_failed(st, res);
	}
	st->row = 0;
	st->nrows = PQntuples(st->res);
	st->done = st->nrows < FETCH_ROWS;
	return st->nrows ? CLI_STEP_ROW : CLI_STEP_DONE;
}

static int pg_step(struct cli_stmt *st)
{
	if (!st->declared) {
		PGresult *res =
		    PQexecParams(st->c->pg, st->sql, st->nparams, st->types,
				 st->values, NULL, NULL, 0);

		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			return pg_failed(st, res);
		PQclear(res);
		st->declared = 1;
		return pg_fetch(st);
	}
	if (st->res && ++st->row < st->nrows)
		return CLI_STEP_ROW;
	if (st->res == NULL || st->done)
		return CLI_STEP_DONE;
	return pg_fetch(st);
}

int cli_stmt_step(struct cli_stmt *st)
{
	if (st->lite) {
		int rc = sqlite3_step(st->lite);

		return rc == SQLITE_ROW	   ? CLI_STEP_ROW
		       : rc == SQLITE_DONE ? CLI_STEP_DONE
					   : CLI_STEP_ERROR;
	}
	return pg_step(st);
}

void cli_stmt_finalize(struct cli_stmt *st)
{
	char sql[64];

	if (st == NULL)
		return;
	if (st->lite) {
		sqlite3_finalize(st->lite);
		free(st);
		return;
	}
	/* A cursor left open would last as long as the transaction. */
	if (st->declared) {
		snprintf(sql, sizeof(sql), "CLOSE %s", st->cursor);
		PQclear(PQexec(st->c->pg, sql));
	}
	PQclear(st->res);
	for (int i = 0; i < st->nnames; i++)
		free(st->names[i].name);
	free(st->names);
	free(st->values);
	free(st->types);
	free(st->ints);
	free(st->sql);
	free(st);
}

/* ------------------------------------------------------------ columns */

/* Whether column col of the current PostgreSQL row is SQL NULL. */
static int pg_null(const struct cli_stmt *st, int col)
{
	return st->res == NULL || st->row >= st->nrows ||
	       col >= PQnfields(st->res) || PQgetisnull(st->res, st->row, col);
}

int cli_stmt_type(struct cli_stmt *st, int col)
{
	Oid type;

	if (st->lite)
		switch (sqlite3_column_type(st->lite, col)) {
		case SQLITE_NULL:
			return CLI_TYPE_NULL;
		case SQLITE_INTEGER:
			return CLI_TYPE_INT;
		default:
			return CLI_TYPE_TEXT;
		}
	if (pg_null(st, col))
		return CLI_TYPE_NULL;
	/* sum() of bigint is numeric: an integer here, as in SQLite. */
	type = PQftype(st->res, col);
	return type == OID_INT8 || type == OID_INT4 || type == OID_INT2 ||
		       type == OID_NUMERIC || type == OID_BOOL
		   ? CLI_TYPE_INT
		   : CLI_TYPE_TEXT;
}

long long cli_stmt_int(struct cli_stmt *st, int col)
{
	const char *s;

	if (st->lite)
		return sqlite3_column_int64(st->lite, col);
	if (pg_null(st, col))
		return 0;
	s = PQgetvalue(st->res, st->row, col);
	if (PQftype(st->res, col) == OID_BOOL)
		return *s == 't';
	return strtoll(s, NULL, 10);
}

const char *cli_db_str(struct cli_stmt *st, int col)
{
	if (st->lite)
		return (const char *)sqlite3_column_text(st->lite, col);
	return pg_null(st, col) ? NULL : PQgetvalue(st->res, st->row, col);
}

const char *cli_db_text(struct cli_stmt *st, int col, int *len)
{
	const char *s;

	if (st->lite) {
		/* Text before bytes: sqlite3_column_bytes may convert the
		 * value. */
		s = (const char *)sqlite3_column_text(st->lite, col);
		*len = s ? sqlite3_column_bytes(st->lite, col) : 0;
		return s;
	}
	s = cli_db_str(st, col);
	*len = s ? PQgetlength(st->res, st->row, col) : 0;
	return s;
}

const char *cli_db_host_sql(const struct cli *c)
{
	return c->pg ? CLI_HOST_OF_P : "NULL";
}
