/*
 * cli.h: the internal header of the ctxleak CLI, which queries the database
 * that ctxleakd writes (daemon/SCHEMA.md).  Every cli*.c file includes it,
 * and only it, for the declarations of the others.  One section per file.
 *
 * The CLI links SQLite and libpq and nothing of the daemon: it depends on
 * the schema alone (a host's, daemon/SCHEMA.md, or the fleet's central one,
 * docs/CENTRAL.md, which has the same tables), so that it can be shipped
 * and upgraded on its own.  Commands run their SQL through cli_stmt.c,
 * never through sqlite3_* or PQ* directly.
 */
#ifndef CTXLEAK_CLI_H
#define CTXLEAK_CLI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>
#include <sqlite3.h>

#include "common.h"

/* The version, schema version and application ID: proto/common.h. */
#define CLI_VERSION	   COMMON_VERSION
#define CLI_SCHEMA_VERSION COMMON_SCHEMA_VERSION
#define CLI_APPLICATION_ID COMMON_APPLICATION_ID

/* Exit codes, for scripts. */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_MATCH = 1, /* --fail-on matched a finding */
	CLI_EXIT_USAGE = 2,
	CLI_EXIT_DB = 3,	/* database missing, unreadable or not ours */
	CLI_EXIT_NOT_FOUND = 4, /* show: no request matches */
};

/* Leak classes, in the order reports list them (proto/common.h). */
#define CLI_CLASS_COUNT COMMON_CLASS_COUNT
#define cli_class_names common_class_names
/* What to change in the code, per class: proto/common.h. */
#define cli_class_fixes common_class_fixes
#define cli_class_fix	common_class_fix
#define CLI_CLASS_ALL	((1u << CLI_CLASS_COUNT) - 1)

enum cli_color { CLI_COLOR_AUTO, CLI_COLOR_ALWAYS, CLI_COLOR_NEVER };

/* The selection a subcommand works on; unset fields select everything. */
struct cli_filter {
	unsigned classes; /* bit per cli_class_names entry; 0: all */
	const char *app;
	long long pid; /* 0: any */
	const char *request;
	const char *site_file;
	long site_line;	      /* 0: any */
	int64_t since, until; /* wall-clock ns; 0: unbounded */
	long limit;	      /* -1: the subcommand's default */
	const char *host;     /* --host NAME: forward's name for this host */
};

struct cli {
	const char *db_path;
	int json;
	int wide;	    /* --wide: tables never cut to the screen */
	int all;	    /* show --all: RESUME/SUSPEND rows too */
	const char *html;   /* show --html FILE: the picture's path */
	const char *format; /* export --format */
	unsigned fail_on;   /* classes that make the exit code 1; 0: off */
	enum cli_color color_mode;
	int color; /* resolved: emit escape codes */
	struct cli_filter filter;
	const char *to; /* forward --to: the central database */
	int once;	/* forward --once: one pass, then exit */
	int interval;	/* forward --interval: seconds between passes */
	int nargs;	/* positional arguments after the subcommand */
	char **args;
	sqlite3 *db;	     /* the host's database, or NULL */
	PGconn *pg;	     /* the central database, or NULL */
	const char *pg_url;  /* its connection string, password and all */
	unsigned pg_cursors; /* cursors declared: each gets a new name */
	char pg_error[512];  /* the last PostgreSQL statement's error */
	FILE *out;
	struct cli_root *roots; /* every request's root ctx, sorted, once
				   cli_db_ctx_request needs them */
	size_t nroots;
	int roots_loaded;
};

/* A statement on either database (SQLite or PostgreSQL): cli_stmt.c. */
struct cli_stmt;

/* A request's root ctx in its process. */
struct cli_root {
	int64_t process, ctx, id;
};

/* ------------------------------------------------------------ cli.c */

/* One subcommand; the table in cli.c drives parsing, help and dispatch. */
struct cli_cmd {
	const char *name;
	const char *summary; /* one line for the program's --help */
	const char *usage;   /* the subcommand's --help text */
	unsigned options;    /* CLI_OPT_* bits it accepts */
	int min_args, max_args;
	int (*run)(struct cli *c);
};

enum {
	CLI_OPT_CLASS = 1 << 0,
	CLI_OPT_APP = 1 << 1,
	CLI_OPT_PID = 1 << 2,
	CLI_OPT_REQUEST = 1 << 3,
	CLI_OPT_SITE = 1 << 4,
	CLI_OPT_TIME = 1 << 5, /* --since, --until */
	CLI_OPT_LIMIT = 1 << 6,
	CLI_OPT_ALL = 1 << 7,	 /* --all */
	CLI_OPT_HTML = 1 << 8,	 /* --html FILE */
	CLI_OPT_FORMAT = 1 << 9, /* --format NAME */
	CLI_OPT_HOST = 1 << 10,	 /* --host NAME */
	CLI_OPT_FORWARD = 1 << 11, /* --to URL, --once, --interval SEC */
};

/* "ctxleak: ..." on stderr; returns code so that callers can return it. */
int cli_error(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Parses a comma list of class names (or "any") given to option; on an
 * unknown one says which and lists the valid ones, and returns
 * CLI_EXIT_USAGE. */
int cli_parse_classes(const char *option, const char *list, unsigned *out);

/* ------------------------------------------------------------ cli_db.c */

/* The system daemon's database, which root reads by default. */
#define CLI_SYSTEM_DB COMMON_SYSTEM_DB

/* The daemon's default database path for this user, in buf (the rule of
 * proto/common.h, the daemon's). */
const char *cli_db_default(char *buf, size_t len);
/* Opens c->db_path read-only and checks that it is a ctxleak database
 * this CLI can read; else one line on stderr and CLI_EXIT_DB. */
int cli_db_open(struct cli *c);
/* When a command found nothing: one line on stderr that names the
 * database read, and, for root on the system database, the user's own
 * database when there is one (a daemon run by hand writes there). */
void cli_db_say_where(const struct cli *c);
/* The request a ctx of a process belongs to: a scope of request hint
 * (looked up by index), or any request's root; 0 when neither.  Other
 * requests' child scopes are not searched: no index leads to them. */
int64_t cli_db_ctx_request(struct cli *c, int64_t process_id, int64_t hint,
			   int64_t ctx);
void cli_db_close(struct cli *c);
/* The condition on drops d that its window overlaps --since/--until. */
#define CLI_DROPS_IN_RANGE                                                     \
	" AND (:since = 0 OR d.until_ts >= :since)"                            \
	" AND (:until = 0 OR d.since_ts <= :until)"
/* Records that clients of the selection (--app, --pid) said they dropped
 * in its time range: when nonzero, no count over it is complete.  -1 on
 * error. */
long long cli_db_dropped(struct cli *c);
/* The filter's process conditions alone (--app, --pid, --host), as
 * below. */
void cli_db_process_sql(const struct cli_filter *f, char *buf, size_t len);
/* Binds the filter's values to the named parameters the statement has. */
void cli_db_bind_filter(struct cli_stmt *st, const struct cli_filter *f);
/* " AND ..." conditions on leaks l JOIN processes p for the filter, into
 * buf (bound by cli_db_bind_filter). */
void cli_db_filter_sql(const struct cli_filter *f, char *buf, size_t len);
/* The exit code for a command whose selection is where: CLI_EXIT_MATCH when
 * --fail-on is set and matches, else CLI_EXIT_OK (CLI_EXIT_DB on error). */
int cli_db_fail_exit(struct cli *c, const char *where);
/* cli_stmt_step's end: 0 when rc is CLI_STEP_DONE, else a message on
 * stderr and CLI_EXIT_DB (a locked or damaged file, a lost server). */
int cli_db_done(struct cli *c, int rc);

/* ------------------------------------------------------------ cli_stmt.c */

/* What cli_stmt_step gives. */
enum { CLI_STEP_ROW, CLI_STEP_DONE, CLI_STEP_ERROR };
/* What a column holds (cli_stmt_type). */
enum { CLI_TYPE_NULL, CLI_TYPE_INT, CLI_TYPE_TEXT };

/* A central id is source_id * 10^12 + the local id (docs/CENTRAL.md): the
 * first id past the source of id, in SQL, on both databases (a local id is
 * under 10^12). */
#define CLI_ID_SPAN_SQL "1000000000000"
#define CLI_SOURCE_END_SQL(id)                                                 \
	"((" id ") / " CLI_ID_SPAN_SQL " + 1) * " CLI_ID_SPAN_SQL

/* Whether c reads the central PostgreSQL database. */
int cli_db_is_pg(const struct cli *c);
/* SQL for the name of the host of processes p: a subquery on the central
 * database, NULL on a host's own. */
#define CLI_HOST_OF_P "(SELECT hp.name FROM hosts hp WHERE hp.id = p.host_id)"
const char *cli_db_host_sql(const struct cli *c);
/* The --host condition on a source id column (central only). */
#define CLI_HOST_SOURCES(col)                                                  \
	" AND " col " IN (SELECT hs.id FROM sources hs JOIN hosts hh ON"       \
	" hh.id = hs.host_id WHERE hh.name = ANY(string_to_array(:host,"       \
	" ',')))"
/* Prepares sql, with SQLite's parameters (?N, ?, :name); a failure (a
 * schema we do not know) is reported on stderr and gives NULL.  On
 * PostgreSQL errors show at the first step instead. */
struct cli_stmt *cli_db_prepare(struct cli *c, const char *sql);
/* The index of a named parameter (":app"); 0 when the statement has none. */
int cli_stmt_param(struct cli_stmt *st, const char *name);
/* The highest parameter index. */
int cli_stmt_nparams(struct cli_stmt *st);
void cli_stmt_bind_int(struct cli_stmt *st, int i, int64_t v);
/* s must outlive the statement; NULL binds NULL. */
void cli_stmt_bind_text(struct cli_stmt *st, int i, const char *s);
/* The next row: CLI_STEP_ROW, CLI_STEP_DONE or CLI_STEP_ERROR. */
int cli_stmt_step(struct cli_stmt *st);
void cli_stmt_finalize(struct cli_stmt *st);
/* A column of the current row: its CLI_TYPE_*, as an integer (0 for
 * NULL), as text (NULL when SQL NULL), as text with its length. */
int cli_stmt_type(struct cli_stmt *st, int col);
long long cli_stmt_int(struct cli_stmt *st, int col);
const char *cli_db_str(struct cli_stmt *st, int col);
const char *cli_db_text(struct cli_stmt *st, int col, int *len);

/* ------------------------------------------------------------ cli_time.c */

/* Parses a duration ("30s", "10m", "2h", "7d": that long before now) or an
 * RFC 3339 timestamp into wall-clock ns since the epoch; -1 when neither. */
int cli_time_parse(const char *s, int64_t now_ns, int64_t *out);
int64_t cli_time_now(void);
/* RFC 3339, UTC, with nanoseconds: "2026-11-25T15:27:01.123456789Z". */
char *cli_time_rfc3339(int64_t ns, char *buf, size_t len);
/* Short local time for tables: "11-25 15:27:01". */
char *cli_time_short(int64_t ns, char *buf, size_t len);
/* A duration in ns, readable: "850ns", "1.25ms", "3.2s", "2m05s". */
char *cli_time_duration(int64_t ns, char *buf, size_t len);

/* ------------------------------------------------------------ cli_out.c */

enum cli_style {
	CLI_STYLE_NONE,
	CLI_STYLE_BOLD,
	CLI_STYLE_RED,
	CLI_STYLE_YELLOW,
	CLI_STYLE_GREEN,
	CLI_STYLE_DIM,
};

/* One UTF-8 sequence: proto/common.h. */
#define cli_utf8_next common_utf8_next
/* Whether the output should be coloured, from --color, NO_COLOR and
 * whether out is a terminal. */
int cli_color_wanted(enum cli_color mode, FILE *out);
const char *cli_style_start(const struct cli *c, enum cli_style style);
const char *cli_style_end(const struct cli *c, enum cli_style style);
/* The colour a leak class is shown in. */
enum cli_style cli_class_style(const char *cls);
/* Writes client bytes for a terminal: invalid UTF-8 as U+FFFD, control
 * characters as '?', so that no client can send escape sequences. */
void cli_print_safe(FILE *out, const char *s, size_t len);
/* Prints s (sanitised as above) as a paragraph that fits the screen, each
 * line indented. */
void cli_print_wrapped(const struct cli *c, enum cli_style style, int indent,
		       const char *s);

/* A finding's detail as the CLI shows it: each hex ctx the daemon wrote
 * ("ctx 0x2a") given as the request it belongs to ("#12", as
 * cli_db_ctx_request finds it with the victim as hint), or in decimal as
 * every other ctx is, in buf. */
char *cli_detail(struct cli *c, int64_t process_id, int64_t victim,
		 const char *detail, char *buf, size_t len);

/* The columns a table may use: --wide none, else COLUMNS, else the
 * terminal's width, else 80. */
int cli_screen_width(const struct cli *c);

/* A table that fits the screen (cli_screen_width). */
enum { CLI_COL_RIGHT = 1, CLI_COL_SHRINK = 2 };
struct cli_col {
	const char *header;
	unsigned flags;
};
struct cli_table;
struct cli_table *cli_table_new(const struct cli *c, const struct cli_col *cols,
				int ncols);
/* Appends the next cell (row-major); NULL prints "-". */
void cli_table_cell(struct cli_table *t, const char *s);
void cli_table_cellf(struct cli_table *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_table_cell_styled(struct cli_table *t, enum cli_style style,
			   const char *s);
void cli_table_print(struct cli_table *t);
void cli_table_free(struct cli_table *t);

/* JSON, one object a line.  Nesting is tracked so that commas and the
 * final newline come out right. */
struct cli_json;
struct cli_json *cli_json_new(FILE *out);
void cli_json_free(struct cli_json *j);
void cli_json_object(struct cli_json *j);
void cli_json_array(struct cli_json *j);
void cli_json_end(struct cli_json *j); /* closes the innermost one */
void cli_json_key(struct cli_json *j, const char *key);
void cli_json_str(struct cli_json *j, const char *s, size_t len);
void cli_json_int(struct cli_json *j, long long v);
void cli_json_null(struct cli_json *j);
void cli_json_kstr(struct cli_json *j, const char *key, const char *s);
void cli_json_kint(struct cli_json *j, const char *key, long long v);
void cli_json_kbool(struct cli_json *j, const char *key, int v);
/* A ctx: the unsigned value as a decimal string; 0 is null. */
void cli_json_kctx(struct cli_json *j, const char *key, int64_t ctx);
/* A wall-clock ns timestamp as RFC 3339; null when ns is 0. */
void cli_json_kts(struct cli_json *j, const char *key, int64_t ns);
/* A span of ns as a number of microseconds, exactly: "1.250" for 1250. */
void cli_json_kusec(struct cli_json *j, const char *key, int64_t ns);
/* A column as it is: null, integer, or string. */
void cli_json_kcol(struct cli_json *j, const char *key, struct cli_stmt *st,
		   int col);

/* ------------------------------------------------------------ cli_pg.c */

/* The central schema version this CLI writes and reads
 * (docs/CENTRAL.md). */
#define CLI_PG_SCHEMA_VERSION 1
/* A central id is source_id * CLI_PG_ID_SPAN + the local id. */
#define CLI_PG_ID_SPAN 1000000000000ll

/* Whether s names a PostgreSQL database rather than a file: a
 * postgresql:// (or postgres://) URL, or libpq's "key=value ..." form. */
int cli_pg_is_url(const char *s);
/* Connects to conninfo (a URL or key=value string) with timeouts that
 * notice a server gone within a minute; check PQstatus. */
PGconn *cli_pg_connect(const char *conninfo, const char *application);
/* Creates or migrates the central schema to CLI_PG_SCHEMA_VERSION, in one
 * transaction; refuses a newer one.  0, or -1 with the reason in err. */
int cli_pg_migrate(PGconn *pg, char *err, size_t len);
/* For readers: 0 when the schema is the one this CLI reads, else one line
 * on stderr naming where, and CLI_EXIT_DB. */
int cli_pg_check_schema(PGconn *pg, const char *where);
/* Runs sql (no parameters, any number of statements): 0 or -1. */
int cli_pg_exec(PGconn *pg, const char *sql);
/* Runs sql with n text parameters; the result, or NULL on failure
 * (cli_pg_message says why). */
PGresult *cli_pg_query(PGconn *pg, const char *sql, int n,
		       const char *const *params);
/* The connection's last error on one line (a static buffer). */
const char *cli_pg_message(PGconn *pg);

/* ------------------------------------------------------------ commands */

int cli_leaks(struct cli *c);	  /* cli_leaks.c */
int cli_show(struct cli *c);	  /* cli_show.c */
int cli_summary(struct cli *c);	  /* cli_summary.c */
int cli_processes(struct cli *c); /* cli_list.c */
int cli_sites(struct cli *c);	  /* cli_list.c */
int cli_hosts(struct cli *c);	  /* cli_hosts.c */
int cli_export(struct cli *c);	  /* cli_export.c */
int cli_forward(struct cli *c);	  /* cli_forward.c */

/* The ids of the requests involved with request ?1, itself included: the
 * other side of its findings, those whose context its records carried or
 * that carried its context, and those that set its tags. */
#define CLI_INVOLVED_SQL                                                       \
	"SELECT ?1"                                                            \
	" UNION SELECT victim_request_id FROM leaks WHERE"                     \
	" source_request_id = ?1"                                              \
	" UNION SELECT source_request_id FROM leaks WHERE"                     \
	" victim_request_id = ?1"                                              \
	" UNION SELECT request_id FROM records WHERE ctx_request_id = ?1"      \
	" UNION SELECT ctx_request_id FROM records WHERE request_id = ?1"      \
	" UNION SELECT setter_request_id FROM tags WHERE request_id = ?1"

/* show's lookup: "#12" and "12" are ids, a number that is none a ctx,
 * anything else the newest request of that name.  0: none; -1: error. */
int64_t cli_show_resolve(struct cli *c, const char *arg);
/* The "no request matches" error, with why and the exit code. */
int cli_show_not_found(struct cli *c, const char *arg);
/* show --html: writes the request's picture to c->html (cli_html.c). */
int cli_html(struct cli *c, int64_t id);

/* A record for a table: "TAG status=200", "EVENT db.done: message",
 * "BEGIN GET /a", in buf. */
char *cli_record_str(const char *type, const char *name, const char *value,
		     char *buf, size_t len);
/* A ctx as unsigned decimal, in buf. */
char *cli_ctx_str(int64_t ctx, char *buf, size_t len);
/* "#12 GET /a" for a request id and name, in buf (ASCII-safe). */
char *cli_request_label(int64_t id, const char *name, int namelen, char *buf,
			size_t len);

#endif /* CTXLEAK_CLI_H */
