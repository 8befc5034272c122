/*
 * ctxleakd.c: main() of the ctxleak daemon: the command line, struct
 * config cfg, the store's lifetime, the timers and the signals.
 *
 * It runs in the foreground (systemd or the user supervises it) until
 * SIGTERM or SIGINT, then drains: nothing the kernel accepted from a
 * client is lost, and what clients send after that fails on their side.
 *
 * Every option is one row of options[]: its name, argument, default, help
 * text, cfg field and kind.  --help, getopt_long's array and the parsing
 * all come from that table; daemon/ctxleakd.8 describes each row
 * (tests/test_options.c checks that it names them all).
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

#define NS_PER_SEC    1000000000ULL
#define STORE_TICK_MS 100

struct config cfg;

static struct store *store;
static struct event_base *base;
static char default_socket[PATH_MAX];
static char default_db[PATH_MAX];

static void __attribute__((noreturn, format(printf, 1, 2)))
bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs("ctxleakd: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'ctxleakd --help'.\n", stderr);
	exit(2);
}

/* A number followed by a unit from units[] (each with its multiplier).
 * Returns -1 on syntax errors and overflow. */
struct unit {
	const char *suffix;
	uint64_t mult;
};

static int parse_with_unit(const char *s, const struct unit *units,
			   int unit_required, uint64_t *out)
{
	unsigned long long n;
	char *end;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	if (*end == '\0' && (!unit_required || n == 0)) {
		*out = n;
		return 0;
	}
	for (; units->suffix != NULL; units++) {
		if (strcmp(end, units->suffix) != 0)
			continue;
		if (n > UINT64_MAX / units->mult)
			return -1;
		*out = n * units->mult;
		return 0;
	}
	return -1;
}

static const struct unit duration_units[] = {
    {"ns", 1},
    {"us", 1000},
    {"ms", 1000000},
    {"s", NS_PER_SEC},
    {"m", 60 * NS_PER_SEC},
    {"h", 3600 * NS_PER_SEC},
    {"d", 86400 * NS_PER_SEC},
    {NULL, 0},
};

static const struct unit size_units[] = {
    {"K", 1ULL << 10}, {"M", 1ULL << 20}, {"G", 1ULL << 30},
    {"k", 1ULL << 10}, {"T", 1ULL << 40}, {NULL, 0},
};

static uint64_t parse_duration(const char *opt, const char *s)
{
	uint64_t v;

	if (parse_with_unit(s, duration_units, 1, &v) == -1)
		bad_usage("--%s: bad duration '%s' (e.g. 500ms, 10s, 7d)", opt,
			  s);
	return v;
}

static uint64_t parse_size(const char *opt, const char *s, uint64_t max)
{
	uint64_t v;

	if (parse_with_unit(s, size_units, 0, &v) == -1 || v > max)
		bad_usage("--%s: bad size '%s' (e.g. 4096, 64K, 1G; at most "
			  "%llu)",
			  opt, s, (unsigned long long)max);
	return v;
}

static uint32_t parse_count(const char *opt, const char *s)
{
	uint64_t v;

	if (parse_with_unit(s, size_units, 0, &v) == -1 || v == 0 ||
	    v > UINT32_MAX)
		bad_usage("--%s: bad number '%s' (a positive integer)", opt, s);
	return (uint32_t)v;
}

static void parse_retention(const char *s)
{
	const char *comma = strchr(s, ',');
	char age[64];
	size_t n = comma != NULL ? (size_t)(comma - s) : strlen(s);

	if (n >= sizeof age || (n == 0 && (comma == NULL || comma[1] == '\0')))
		bad_usage("--retention: bad value '%s' (e.g. 7d, 7d,1G or "
			  ",500M)",
			  s);
	memcpy(age, s, n);
	age[n] = '\0';
	cfg.retention_age = n > 0 ? parse_duration("retention", age) : 0;
	cfg.retention_bytes =
	    comma != NULL ? parse_size("retention", comma + 1, UINT64_MAX) : 0;
}

/* The defaults of --socket and --db: the rule of proto/common.h, by which
 * the client and the CLI find them. */
static void set_default_paths(void)
{
	if (common_default_path(COMMON_SOCKET, default_socket,
				sizeof default_socket) == -1 ||
	    common_default_path(COMMON_DB, default_db, sizeof default_db) == -1)
		fatalx("the default socket or database path is longer than "
		       "%d bytes: pass --socket and --db",
		       PATH_MAX - 1);
}

/* ------------------------------------------------------------ options */

/* How an option's argument is read into its cfg field (kinds[]). */
enum opt_kind {
	K_PATH,	     /* a string; max: its length limit (0: none) */
	K_CHOICE,    /* one of choices[]: the field is its index */
	K_OFF,	     /* no argument: the field is 0 */
	K_ON,	     /* no argument: the field is 1 */
	K_LOG,	     /* a log level by name */
	K_COUNT,     /* a positive integer (K, M, G allowed) */
	K_SIZE,	     /* bytes, with K, M or G, min to max */
	K_DURATION,  /* with a unit: 500ms, 10s, 7d */
	K_RETENTION, /* AGE[,SIZE] into retention_age and retention_bytes */
	K_HELP,	     /* no argument: --help, then exit */
	K_VERSION,   /* no argument: the version, then exit */
};

struct opt {
	const char *name;	    /* --name */
	const char *arg;	    /* the argument in --help; NULL: none */
	enum opt_kind kind;	    /* how the argument is read (kinds[]) */
	size_t offset, size;	    /* the cfg field (FIELD); 0, 0: none */
	const char *def;	    /* the default, read as an argument; NULL:
				       set_defaults' (shown), or none */
	uint64_t min, max;	    /* K_SIZE's bounds; K_PATH's max length */
	const char *const *choices; /* K_CHOICE's values, NULL-terminated */
	const char *help;	    /* --help's text, wrapped there */
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)
#define NO_FIELD 0, 0 /* the kind's parser knows what to set */
/* A Unix socket's path fits in sun_path, 108 bytes with its NUL. */
#define SOCKET_PATH_MAX 107

static const char *const keep_choices[] = {"leaky", "all", NULL};
static const char *const on_off[] = {"off", "on", NULL};

static const struct opt options[] = {
    {"socket", "PATH", K_PATH, FIELD(socket_path), NULL, 0, SOCKET_PATH_MAX,
     NULL, "listen here"},
    {"db", "PATH", K_PATH, FIELD(db_path), NULL, 0, 0, NULL, "database file"},
    {"keep", "leaky|all", K_CHOICE, FIELD(keep_all), "leaky", 0, 0,
     keep_choices,
     "leaky: rows and records of the requests in a finding, counts of the "
     "others; all: every one"},
    {"what-if", "on|off", K_CHOICE, FIELD(what_if), "on", 0, 0, on_off,
     "replay every process under the thread, global and task backends and "
     "count what each would find"},
    {"no-what-if", NULL, K_OFF, FIELD(what_if), NULL, 0, 0, NULL,
     "the same as --what-if off"},
    {"log-level", "LEVEL", K_LOG, FIELD(log_level), "info", 0, 0, NULL,
     "error, warn, info or debug"},
    {"log-file", "PATH", K_PATH, FIELD(log_path), NULL, 0, 0, NULL,
     "append the log here instead of stderr; SIGHUP reopens it"},
    /* A host with several thousand instrumented workers, one connection
     * each.  Each costs the daemon about 16 KiB idle, at most one read
     * (64 KiB), one record (--max-record-size) and its sites (512 KiB)
     * more, and one descriptor (the unit's LimitNOFILE=16384 leaves
     * room). */
    {"max-connections", "N", K_COUNT, FIELD(max_connections), "4096", 0, 0,
     NULL,
     "client connections at once; each costs about 16K idle, 656K "
     "at most"},
    {"max-open-scopes", "N", K_COUNT, FIELD(max_open_scopes), NULL, 0, 0, NULL,
     "open scopes per process"},
    /* About 200 MB of open scopes (under 200 bytes each). */
    {"max-open-scopes-total", "N", K_COUNT, FIELD(max_open_scopes_total), "1M",
     0, 0, NULL,
     "open scopes of all processes together; past it, the process with the "
     "most forgets its oldest"},
    {"max-ended-scopes", "N", K_COUNT, FIELD(max_ended_scopes), NULL, 0, 0,
     NULL, "ended scopes remembered per process, to tell stale context"},
    /* About 75 MB of ended scopes with their requests (under 300 bytes
     * each): sixteen processes' worth of the per-process default. */
    {"max-ended-scopes-total", "N", K_COUNT, FIELD(max_ended_scopes_total),
     "256K", 0, 0, NULL,
     "ended scopes of all processes together; past it, the process with "
     "the most forgets its oldest"},
    {"max-request-age", "DUR", K_DURATION, FIELD(max_request_age), NULL, 0, 0,
     NULL, "report requests open longer as unclosed; 0: never"},
    /* Held records are those of requests still open under --keep=leaky,
     * kept in case a finding names the request: far more than the
     * in-flight requests of any service need, far less than an unbounded
     * request could take. */
    {"max-held", "SIZE", K_SIZE, FIELD(max_held), "64M", 0, UINT64_MAX, NULL,
     "memory that requests hold: scope names, tags, and records under "
     "--keep=leaky"},
    {"max-pending", "SIZE", K_SIZE, FIELD(max_pending), "64M", 0, UINT64_MAX,
     NULL, "records held in memory until a watermark orders them"},
    {"retention", "AGE[,SIZE]", K_RETENTION, NO_FIELD, NULL, 0, 0, NULL,
     "delete data older than AGE or beyond SIZE (e.g. 7d, 7d,1G or ,500M; "
     "default: keep)"},
    {"linger", "DUR", K_DURATION, FIELD(linger), "1s", 0, 0, NULL,
     "wait for a reconnection this long before finalising a process"},
    /* The library writes a record with one send() on a local socket, so
     * a record stays incomplete only while a client is stopped mid-write
     * or means harm: seconds are generous. */
    {"partial-timeout", "DUR", K_DURATION, FIELD(partial_timeout), "5s", 0, 0,
     NULL,
     "close a connection whose record stays incomplete this long, keeping "
     "what came before it; 0: never"},
    {"max-record-size", "N", K_SIZE, FIELD(limits.max_object), NULL, 64,
     64ULL << 20, NULL, "bytes in one record"},
    {"max-string", "N", K_SIZE, FIELD(limits.max_string), NULL, 0, 64ULL << 20,
     NULL, "bytes in one string"},
    /* Fleets: findings and metrics where log pipelines and Prometheus
     * look (fleet.c).  Files of 64M, five kept: the log never takes more
     * than 384M of disk, however many findings come. */
    {"findings-log", "FILE", K_PATH, FIELD(findings_log), NULL, 0, 0, NULL,
     "append each committed finding to FILE as one JSON line: the fields "
     "of ctxleak leaks --json, and host"},
    {"findings-log-max-size", "SIZE", K_SIZE, FIELD(findings_log_max_size),
     "64M", 1, UINT64_MAX, NULL,
     "rotate the findings log before it grows past SIZE"},
    {"findings-log-keep", "N", K_COUNT, FIELD(findings_log_keep), "5", 0, 0,
     NULL, "rotated findings logs kept: FILE.1 (the newest) to FILE.N"},
    {"findings-journal", NULL, K_ON, FIELD(findings_journal), NULL, 0, 0, NULL,
     "send each committed finding to the systemd journal, with "
     "MESSAGE_ID=" FLEET_MESSAGE_ID},
    {"host", "NAME", K_PATH, FIELD(host), NULL, 0, 0, NULL,
     "the host name findings carry (default: the system's, or machine-ID "
     "when that is localhost)"},
    {"metrics-file", "FILE", K_PATH, FIELD(metrics_file), NULL, 0, 0, NULL,
     "write metrics to FILE for node_exporter's textfile collector"},
    {"metrics-interval", "DUR", K_DURATION, FIELD(metrics_interval), "15s", 0,
     0, NULL, "write the metrics file after commits at most this often"},
    {"help", NULL, K_HELP, NO_FIELD, NULL, 0, 0, NULL, "this help"},
    {"version", NULL, K_VERSION, NO_FIELD, NULL, 0, 0, NULL, "the version"},
};
#define NOPTIONS (sizeof options / sizeof options[0])

/* The option's cfg field. */
static void *field(const struct opt *o)
{
	assert(o->size > 0 && o->offset + o->size <= sizeof cfg);
	return (char *)&cfg + o->offset;
}

/* Integer fields are 4 or 8 bytes (unsigned, uint32_t, int, an enum,
 * uint64_t): v is stored in the field's width. */
static void set_uint(const struct opt *o, uint64_t v)
{
	uint32_t v32 = (uint32_t)v;

	assert(o->size == sizeof v32 || o->size == sizeof v);
	if (o->size == sizeof v32)
		memcpy(field(o), &v32, sizeof v32);
	else
		memcpy(field(o), &v, sizeof v);
}

static uint64_t get_uint(const struct opt *o)
{
	uint32_t v32;
	uint64_t v;

	assert(o->size == sizeof v32 || o->size == sizeof v);
	if (o->size == sizeof v)
		memcpy(&v, field(o), sizeof v);
	else {
		memcpy(&v32, field(o), sizeof v32);
		v = v32;
	}
	return v;
}

static void parse_path(const struct opt *o, const char *arg)
{
	if (o->max > 0 && (*arg == '\0' || strlen(arg) > o->max))
		bad_usage("--%s: path empty or longer than %llu bytes", o->name,
			  (unsigned long long)o->max);
	memcpy(field(o), &arg, sizeof arg);
}

static void parse_choice(const struct opt *o, const char *arg)
{
	const char *const *c;

	for (c = o->choices; *c != NULL; c++)
		if (strcmp(arg, *c) == 0) {
			set_uint(o, (uint64_t)(c - o->choices));
			return;
		}
	bad_usage("--%s: '%s' is neither %s nor %s", o->name, arg,
		  o->choices[0], o->choices[1]);
}

static void parse_off(const struct opt *o, const char *arg)
{
	(void)arg;
	set_uint(o, 0);
}

static void parse_on(const struct opt *o, const char *arg)
{
	(void)arg;
	set_uint(o, 1);
}

static void parse_log(const struct opt *o, const char *arg)
{
	int level = log_level_from_name(arg);

	if (level < 0)
		bad_usage("--%s: '%s' is not one of error, warn, info, debug",
			  o->name, arg);
	set_uint(o, (uint64_t)level);
}

static void parse_count_opt(const struct opt *o, const char *arg)
{
	set_uint(o, parse_count(o->name, arg));
}

static void parse_size_opt(const struct opt *o, const char *arg)
{
	uint64_t v = parse_size(o->name, arg, o->max);

	if (v < o->min)
		bad_usage("--%s: at least %llu bytes", o->name,
			  (unsigned long long)o->min);
	set_uint(o, v);
}

static void parse_duration_opt(const struct opt *o, const char *arg)
{
	set_uint(o, parse_duration(o->name, arg));
}

static void parse_retention_opt(const struct opt *o, const char *arg)
{
	(void)o;
	parse_retention(arg);
}

static void usage(FILE *out);

static void parse_help(const struct opt *o, const char *arg)
{
	(void)o;
	(void)arg;
	usage(stdout);
	exit(0);
}

static void parse_version(const struct opt *o, const char *arg)
{
	(void)o;
	(void)arg;
	printf("ctxleakd %s\n", CTXLEAKD_VERSION);
	exit(0);
}

/* By enum opt_kind. */
static void (*const kinds[])(const struct opt *o, const char *arg) = {
    [K_PATH] = parse_path,
    [K_CHOICE] = parse_choice,
    [K_OFF] = parse_off,
    [K_ON] = parse_on,
    [K_LOG] = parse_log,
    [K_COUNT] = parse_count_opt,
    [K_SIZE] = parse_size_opt,
    [K_DURATION] = parse_duration_opt,
    [K_RETENTION] = parse_retention_opt,
    [K_HELP] = parse_help,
    [K_VERSION] = parse_version,
};

/* The largest unit that divides v exactly ("64M", "1h"); v itself when
 * none does. */
static const char *with_unit(uint64_t v, const struct unit *units, char *buf,
			     size_t len)
{
	const struct unit *best = NULL;

	for (; v > 0 && units->suffix != NULL; units++)
		if (v % units->mult == 0 &&
		    (best == NULL || units->mult > best->mult))
			best = units;
	if (best == NULL || best->mult == 1)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else
		snprintf(buf, len, "%llu%s",
			 (unsigned long long)(v / best->mult), best->suffix);
	return buf;
}

/* An option's default as --help shows it, in buf; NULL: none to show. */
static const char *shown_default(const struct opt *o, char *buf, size_t len)
{
	const char *s;

	if (o->def != NULL)
		return o->def;
	switch (o->kind) {
	case K_PATH:
		memcpy(&s, field(o), sizeof s);
		return s;
	case K_COUNT:
		snprintf(buf, len, "%llu", (unsigned long long)get_uint(o));
		return buf;
	case K_SIZE:
		return with_unit(get_uint(o), size_units, buf, len);
	case K_DURATION:
		return with_unit(get_uint(o), duration_units, buf, len);
	default:
		return NULL;
	}
}

/* Words of text from column `col` to 79, each line after the first
 * indented to `indent`. */
static void wrap(FILE *out, const char *text, int col, int indent)
{
	while (*text != '\0') {
		int n = (int)strcspn(text, " ");

		if (col > indent && col + 1 + n > 79) {
			fprintf(out, "\n%*s", indent, "");
			col = indent;
		} else if (col > indent) {
			fputc(' ', out);
			col++;
		}
		fprintf(out, "%.*s", n, text);
		col += n;
		text += n;
		text += strspn(text, " ");
	}
	fputc('\n', out);
}

#define HELP_COLUMN 26

static void usage(FILE *out)
{
	char name[64], def[PATH_MAX], text[PATH_MAX + 512];
	const char *d;

	fputs("usage: ctxleakd [options]\n"
	      "Collect records from ctxleak clients, find context leaks, "
	      "store them in SQLite.\n\n",
	      out);
	for (size_t i = 0; i < NOPTIONS; i++) {
		const struct opt *o = &options[i];
		int n;

		snprintf(name, sizeof name, "  --%s%s%s", o->name,
			 o->arg != NULL ? " " : "",
			 o->arg != NULL ? o->arg : "");
		d = shown_default(o, def, sizeof def);
		snprintf(text, sizeof text, "%s%s%s%s", o->help,
			 d != NULL ? " (default " : "", d != NULL ? d : "",
			 d != NULL ? ")" : "");
		n = fprintf(out, "%s", name);
		if (n + 1 > HELP_COLUMN) {
			fputc('\n', out);
			n = 0;
		}
		fprintf(out, "%*s", HELP_COLUMN - n, "");
		wrap(out, text, HELP_COLUMN, HELP_COLUMN);
	}
	fputs(
	    "\nDurations take a unit: ns, us, ms, s, m, h, d (0 needs none).  "
	    "Sizes take\nan optional K, M or G (powers of 1024).\n",
	    out);
}

/* The defaults the rules engine and the protocol keep, then every
 * option's default read as its argument would be. */
static void set_defaults(void)
{
	struct rules_config rc;

	rules_config_default(&rc);
	set_default_paths();
	cfg.socket_path = default_socket;
	cfg.db_path = default_db;
	cfg.max_open_scopes = rc.max_open_scopes;
	cfg.max_ended_scopes = rc.max_ended_scopes;
	cfg.max_request_age = rc.max_request_age;
	proto_limits_default(&cfg.limits);
	for (size_t i = 0; i < NOPTIONS; i++)
		if (options[i].def != NULL)
			kinds[options[i].kind](&options[i], options[i].def);
}

/* getopt_long's array from the table: option i returns OPT_BASE + i. */
#define OPT_BASE 256

static void parse_args(int argc, char **argv)
{
	struct option longopts[NOPTIONS + 1];
	int opt;

	for (size_t i = 0; i < NOPTIONS; i++)
		longopts[i] = (struct option){
		    options[i].name,
		    options[i].arg != NULL ? required_argument : no_argument,
		    NULL, OPT_BASE + (int)i};
	memset(&longopts[NOPTIONS], 0, sizeof longopts[NOPTIONS]);
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (opt < OPT_BASE || opt >= OPT_BASE + (int)NOPTIONS) {
			fputs("Try 'ctxleakd --help'.\n", stderr);
			exit(2);
		}
		kinds[options[opt - OPT_BASE].kind](&options[opt - OPT_BASE],
						    optarg);
	}
	if (optind < argc)
		bad_usage("unexpected argument '%s'", argv[optind]);
}

static void open_store(void)
{
	struct store_config sc = {
	    .path = cfg.db_path,
	    .keep_all = cfg.keep_all,
	    .retention_age = cfg.retention_age,
	    .retention_bytes = cfg.retention_bytes,
	    .commit_ms = 200,
	    .commit_rows = 10000,
	};
	char err[512] = "";

	/* The store creates missing directories itself, 0750 so that group
	 * ctxleak may read the database. */
	store = store_open(&sc, err, sizeof err);
	if (store == NULL)
		fatalx("%s", err); /* the store's line names the path */
}

static void on_store_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	store_tick(store);
}

static void on_terminate(evutil_socket_t sig, short what, void *arg)
{
	char status[256];
	struct store_stats ss;

	(void)what;
	(void)arg;
	log_info("%s: draining", strsignal((int)sig));
	sdnotify_stopping();
	server_drain();
	server_status(status, sizeof status);
	store_commit(store);
	fleet_close(); /* the last lines and metrics, after the last commit */
	store_stats(store, &ss);
	store_close(store);
	store = NULL;
	/* Rows not stored are data lost after the clients handed it over:
	 * the last line says how many, even when the disk never recovered. */
	log_info("stopped: %s; %llu rows stored, %llu not stored", status,
		 (unsigned long long)ss.rows_written,
		 (unsigned long long)ss.rows_failed);
	event_base_loopbreak(base);
}

static void on_hangup(evutil_socket_t sig, short what, void *arg)
{
	(void)sig;
	(void)what;
	(void)arg;
	log_reopen();
	fleet_reopen();
}

static struct event *add_event(int fd, short what, event_callback_fn cb,
			       const struct timeval *tv)
{
	struct event *ev = event_new(base, fd, what, cb, NULL);

	if (ev == NULL || event_add(ev, tv) == -1)
		fatalx("cannot add an event");
	return ev;
}

int main(int argc, char **argv)
{
	const struct timeval tick = {0, STORE_TICK_MS * 1000};
	struct event *events[4];

	set_defaults();
	parse_args(argc, argv);
	log_open(cfg.log_path);
	log_set_level(cfg.log_level);
	signal(SIGPIPE, SIG_IGN);
	/* A file-size limit (ulimit -f, systemd's LimitFSIZE=) would
	 * otherwise kill the daemon on the write that crosses it.  Ignored,
	 * the write fails with EFBIG, which the store treats like a full
	 * disk: rows are counted as lost, clients are still served, and
	 * writing resumes once the limit is raised. */
	signal(SIGXFSZ, SIG_IGN);

	base = event_base_new();
	if (base == NULL)
		fatalx("cannot create the event loop");
	/* Before the socket listens: a client may connect and a supervisor
	 * signal at once, and SIGTERM must then drain, not kill. */
	events[0] =
	    add_event(SIGTERM, EV_SIGNAL | EV_PERSIST, on_terminate, NULL);
	events[1] =
	    add_event(SIGINT, EV_SIGNAL | EV_PERSIST, on_terminate, NULL);
	events[2] = add_event(SIGHUP, EV_SIGNAL | EV_PERSIST, on_hangup, NULL);
	server_prepare();
	open_store();
	fleet_open(base, store);
	process_init(base, store);
	server_listen(base);
	events[3] = add_event(-1, EV_PERSIST, on_store_tick, &tick);
	sdnotify_start(base);
	sdnotify_ready();
	log_info("ctxleakd %s ready: database %s, keep %s, what-if %s",
		 CTXLEAKD_VERSION, cfg.db_path, cfg.keep_all ? "all" : "leaky",
		 cfg.what_if ? "on" : "off");

	event_base_dispatch(base);

	for (size_t i = 0; i < sizeof events / sizeof events[0]; i++)
		event_free(events[i]);
	event_base_free(base);
	return 0;
}
