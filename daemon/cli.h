/*
 * cli.h: the internal header of the ctxleak CLI, which queries the database
 * that ctxleakd writes (daemon/SCHEMA.md).  Every cli*.c file includes it,
 * and only it, for the declarations of the others.  One section per file.
 *
 * The CLI links SQLite and nothing of the daemon: it depends on the schema
 * alone, so that it can be shipped and upgraded on its own.
 */
#ifndef CTXLEAK_CLI_H
#define CTXLEAK_CLI_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <sqlite3.h>

#define CLI_VERSION "0.1.0"
/* The PRAGMA user_version this CLI reads: a newer file needs a newer
 * CLI, an older one a start of ctxleakd, which migrates it. */
#define CLI_SCHEMA_VERSION 3
/* PRAGMA application_id of every ctxleak database: "cxlk". */
#define CLI_APPLICATION_ID 0x63786c6b

/* Exit codes, for scripts. */
enum {
	CLI_EXIT_OK = 0,
	CLI_EXIT_MATCH = 1, /* --fail-on matched a finding */
	CLI_EXIT_USAGE = 2,
	CLI_EXIT_DB = 3, /* database missing, unreadable or not ours */
};

/* Leak classes, in the order reports list them. */
#define CLI_CLASS_COUNT 6
extern const char *const cli_class_names[CLI_CLASS_COUNT];
#define CLI_CLASS_ALL ((1u << CLI_CLASS_COUNT) - 1)

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
};

struct cli {
	const char *db_path;
	int json;
	unsigned fail_on; /* classes that make the exit code 1; 0: off */
	enum cli_color color_mode;
	int color; /* resolved: emit escape codes */
	struct cli_filter filter;
	int nargs; /* positional arguments after the subcommand */
	char **args;
	sqlite3 *db;
	FILE *out;
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
};

/* "ctxleak: ..." on stderr; returns code so that callers can return it. */
int cli_error(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Parses a comma list of class names (or "any"); -1 on an unknown one. */
int cli_parse_classes(const char *list, unsigned *out);

/* ------------------------------------------------------------ cli_db.c */

/* The daemon's default database path for this user, in buf. */
const char *cli_db_default(char *buf, size_t len);
/* Opens c->db_path read-only and checks that it is a ctxleak database
 * this CLI can read; else one line on stderr and CLI_EXIT_DB. */
int cli_db_open(struct cli *c);
void cli_db_close(struct cli *c);
/* Prepares sql; a failure (a schema we do not know) is reported on stderr
 * and gives NULL. */
sqlite3_stmt *cli_db_prepare(struct cli *c, const char *sql);
/* The condition on drops d that its window overlaps --since/--until. */
#define CLI_DROPS_IN_RANGE                                                     \
	" AND (:since = 0 OR d.until_ts >= :since)"                            \
	" AND (:until = 0 OR d.since_ts <= :until)"
/* Records that clients of the selection (--app, --pid) said they dropped
 * in its time range: when nonzero, no count over it is complete.  -1 on
 * error. */
long long cli_db_dropped(struct cli *c);
/* The filter's process conditions alone (--app, --pid), as below. */
void cli_db_process_sql(const struct cli_filter *f, char *buf, size_t len);
/* Binds the filter's values to the named parameters the statement has. */
void cli_db_bind_filter(sqlite3_stmt *st, const struct cli_filter *f);
/* " AND ..." conditions on leaks l JOIN processes p for the filter, into
 * buf (bound by cli_db_bind_filter). */
void cli_db_filter_sql(const struct cli_filter *f, char *buf, size_t len);
/* The exit code for a command whose selection is where: CLI_EXIT_MATCH when
 * --fail-on is set and matches, else CLI_EXIT_OK (CLI_EXIT_DB on error). */
int cli_db_fail_exit(struct cli *c, const char *where);
/* sqlite3_step's end: 0 when rc is SQLITE_DONE, else a message on stderr
 * and CLI_EXIT_DB (a locked or damaged file). */
int cli_db_done(struct cli *c, int rc);
/* Text of a column (NULL when SQL NULL). */
const char *cli_db_str(sqlite3_stmt *st, int col);
/* Text of a column with its length (NULL when SQL NULL). */
const char *cli_db_text(sqlite3_stmt *st, int col, int *len);

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

/* Decodes one UTF-8 sequence at s (n bytes left) into *cp; returns its
 * length, or 0 when it is invalid (overlong, surrogate, truncated...). */
size_t cli_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
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

/* A table that fits the terminal (80 columns when not one). */
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
/* A column as it is: null, integer, or string. */
void cli_json_kcol(struct cli_json *j, const char *key, sqlite3_stmt *st,
		   int col);

/* ------------------------------------------------------------ commands */

int cli_leaks(struct cli *c);	  /* cli_leaks.c */
int cli_show(struct cli *c);	  /* cli_show.c */
int cli_summary(struct cli *c);	  /* cli_summary.c */
int cli_processes(struct cli *c); /* cli_list.c */
int cli_sites(struct cli *c);	  /* cli_list.c */

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
