/*
 * ctxleakd.c: main() of the ctxleak daemon: the command line, struct
 * config cfg, the store's lifetime, the timers and the signals.
 *
 * It runs in the foreground (systemd or the user supervises it) until
 * SIGTERM or SIGINT, then drains: nothing the kernel accepted from a
 * client is lost, and what clients send after that fails on their side.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

#define NS_PER_SEC    1000000000ULL
#define STORE_TICK_MS 100
/* Held records are those of requests still open under --keep=leaky, kept
 * in case a finding names the request: far more than the in-flight
 * requests of any service need, far less than an unbounded request
 * could take. */
#define DEFAULT_MAX_HELD    (64ULL << 20)
#define DEFAULT_MAX_PENDING (64ULL << 20)
/* About 200 MB of open scopes (under 200 bytes each). */
#define DEFAULT_MAX_OPEN_SCOPES_TOTAL (1ULL << 20)
/* About 75 MB of ended scopes with their requests (under 300 bytes each):
 * sixteen processes' worth of the per-process default. */
#define DEFAULT_MAX_ENDED_SCOPES_TOTAL (1ULL << 18)
/* A host with several thousand instrumented workers, one connection
 * each.  Each costs the daemon about 16 KiB idle, at most one read
 * (64 KiB), one record (--max-record-size) and its sites (512 KiB) more,
 * and one descriptor (the unit's LimitNOFILE=16384 leaves room). */
#define DEFAULT_MAX_CONNECTIONS 4096
/* The library writes a record with one send() on a local socket, so a
 * record stays incomplete only while a client is stopped mid-write or
 * means harm: seconds are generous. */
#define DEFAULT_PARTIAL_TIMEOUT (5 * NS_PER_SEC)

struct config cfg;

static struct store *store;
static struct event_base *base;
static char default_socket[PATH_MAX];
static char default_db[PATH_MAX];

static const char usage_text[] =
    "usage: ctxleakd [options]\n"
    "Collect records from ctxleak clients, find context leaks, store "
    "them in SQLite.\n"
    "\n"
    "  --socket PATH           listen here (default %s)\n"
    "  --db PATH               database file (default %s)\n"
    "  --keep leaky|all        leaky (default): rows and records of the "
    "requests\n"
    "                          in a finding, counts of the others; all: "
    "every one\n"
    "  --what-if on|off        replay every process under the thread,\n"
    "                          global and task backends and count what\n"
    "                          each would find (default on); --no-what-if\n"
    "                          is off\n"
    "  --log-level LEVEL       error, warn, info (default) or debug\n"
    "  --log-file PATH         append the log here instead of stderr;\n"
    "                          SIGHUP reopens it\n"
    "  --max-connections N     client connections at once (default %u);\n"
    "                          each costs about 16K idle, 656K at most\n"
    "  --max-open-scopes N     open scopes per process (default %u)\n"
    "  --max-open-scopes-total N\n"
    "                          open scopes of all processes together\n"
    "                          (default %llu); past it, the process with the\n"
    "                          most forgets its oldest\n"
    "  --max-ended-scopes N    ended scopes remembered per process, to tell\n"
    "                          stale context (default %u)\n"
    "  --max-ended-scopes-total N\n"
    "                          ended scopes of all processes together\n"
    "                          (default %llu); past it, the process with the\n"
    "                          most forgets its oldest\n"
    "  --max-request-age DUR   report requests open longer as unclosed\n"
    "                          (default 1h; 0: never)\n"
    "  --max-held SIZE         memory that requests hold: scope names,\n"
    "                          tags, and records under --keep=leaky\n"
    "                          (default 64M)\n"
    "  --max-pending SIZE      records held in memory until a watermark\n"
    "                          orders them (default 64M)\n"
    "  --retention AGE[,SIZE]  delete data older than AGE or beyond SIZE\n"
    "                          (e.g. 7d, 7d,1G or ,500M; default: keep)\n"
    "  --linger DUR            wait for a reconnection this long before\n"
    "                          finalising a process (default 1s)\n"
    "  --partial-timeout DUR   close a connection whose record stays\n"
    "                          incomplete this long, keeping what came\n"
    "                          before it (default 5s; 0: never)\n"
    "  --max-record-size N     bytes in one record (default %u)\n"
    "  --max-string N          bytes in one string (default %u)\n"
    "  --help, --version\n"
    "\n"
    "Durations take a unit: ns, us, ms, s, m, h, d (0 needs none).  "
    "Sizes take\n"
    "an optional K, M or G (powers of 1024).\n";

static void usage(FILE *out)
{
	struct rules_config rc;
	struct proto_limits lim;

	rules_config_default(&rc);
	proto_limits_default(&lim);
	fprintf(out, usage_text, default_socket, default_db,
		cfg.max_connections, rc.max_open_scopes,
		(unsigned long long)DEFAULT_MAX_OPEN_SCOPES_TOTAL,
		rc.max_ended_scopes,
		(unsigned long long)DEFAULT_MAX_ENDED_SCOPES_TOTAL,
		lim.max_object, lim.max_string);
}

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

static void set_defaults(void)
{
	struct rules_config rc;

	rules_config_default(&rc);
	set_default_paths();
	cfg.socket_path = default_socket;
	cfg.db_path = default_db;
	cfg.log_level = LOG_LEVEL_INFO;
	cfg.max_connections = DEFAULT_MAX_CONNECTIONS;
	cfg.max_open_scopes = rc.max_open_scopes;
	cfg.max_open_scopes_total = DEFAULT_MAX_OPEN_SCOPES_TOTAL;
	cfg.max_ended_scopes_total = DEFAULT_MAX_ENDED_SCOPES_TOTAL;
	cfg.max_ended_scopes = rc.max_ended_scopes;
	cfg.max_request_age = rc.max_request_age;
	cfg.max_held = DEFAULT_MAX_HELD;
	cfg.max_pending = DEFAULT_MAX_PENDING;
	cfg.linger = NS_PER_SEC;
	cfg.what_if = 1;
	cfg.partial_timeout = DEFAULT_PARTIAL_TIMEOUT;
	proto_limits_default(&cfg.limits);
}

enum {
	OPT_SOCKET = 256,
	OPT_DB,
	OPT_KEEP,
	OPT_WHAT_IF,
	OPT_NO_WHAT_IF,
	OPT_LOG_LEVEL,
	OPT_LOG_FILE,
	OPT_MAX_CONNECTIONS,
	OPT_MAX_OPEN_SCOPES,
	OPT_MAX_ENDED_SCOPES,
	OPT_MAX_REQUEST_AGE,
	OPT_MAX_HELD,
	OPT_MAX_PENDING,
	OPT_MAX_OPEN_SCOPES_TOTAL,
	OPT_MAX_ENDED_SCOPES_TOTAL,
	OPT_RETENTION,
	OPT_LINGER,
	OPT_PARTIAL_TIMEOUT,
	OPT_MAX_RECORD_SIZE,
	OPT_MAX_STRING,
	OPT_HELP,
	OPT_VERSION,
};

static const struct option long_options[] = {
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"db", required_argument, NULL, OPT_DB},
    {"keep", required_argument, NULL, OPT_KEEP},
    {"what-if", required_argument, NULL, OPT_WHAT_IF},
    {"no-what-if", no_argument, NULL, OPT_NO_WHAT_IF},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"log-file", required_argument, NULL, OPT_LOG_FILE},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-open-scopes", required_argument, NULL, OPT_MAX_OPEN_SCOPES},
    {"max-open-scopes-total", required_argument, NULL,
     OPT_MAX_OPEN_SCOPES_TOTAL},
    {"max-ended-scopes", required_argument, NULL, OPT_MAX_ENDED_SCOPES},
    {"max-ended-scopes-total", required_argument, NULL,
     OPT_MAX_ENDED_SCOPES_TOTAL},
    {"max-request-age", required_argument, NULL, OPT_MAX_REQUEST_AGE},
    {"max-held", required_argument, NULL, OPT_MAX_HELD},
    {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
    {"retention", required_argument, NULL, OPT_RETENTION},
    {"linger", required_argument, NULL, OPT_LINGER},
    {"partial-timeout", required_argument, NULL, OPT_PARTIAL_TIMEOUT},
    {"max-record-size", required_argument, NULL, OPT_MAX_RECORD_SIZE},
    {"max-string", required_argument, NULL, OPT_MAX_STRING},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void parse_keep(const char *s)
{
	if (strcmp(s, "all") == 0)
		cfg.keep_all = 1;
	else if (strcmp(s, "leaky") == 0)
		cfg.keep_all = 0;
	else
		bad_usage("--keep: '%s' is neither leaky nor all", s);
}

static void parse_option(int opt, const char *arg)
{
	int level;

	switch (opt) {
	case OPT_SOCKET:
		if (*arg == '\0' || strlen(arg) >= 108)
			bad_usage("--socket: path empty or longer than 107 "
				  "bytes");
		cfg.socket_path = arg;
		break;
	case OPT_DB:
		cfg.db_path = arg;
		break;
	case OPT_KEEP:
		parse_keep(arg);
		break;
	case OPT_WHAT_IF:
		if (strcmp(arg, "on") != 0 && strcmp(arg, "off") != 0)
			bad_usage("--what-if: '%s' is neither on nor off", arg);
		cfg.what_if = strcmp(arg, "on") == 0;
		break;
	case OPT_NO_WHAT_IF:
		cfg.what_if = 0;
		break;
	case OPT_LOG_LEVEL:
		level = log_level_from_name(arg);
		if (level < 0)
			bad_usage("--log-level: '%s' is not one of error, "
				  "warn, info, debug",
				  arg);
		cfg.log_level = (enum log_level)level;
		break;
	case OPT_LOG_FILE:
		cfg.log_path = arg;
		break;
	case OPT_MAX_CONNECTIONS:
		cfg.max_connections = parse_count("max-connections", arg);
		break;
	case OPT_MAX_OPEN_SCOPES:
		cfg.max_open_scopes = parse_count("max-open-scopes", arg);
		break;
	case OPT_MAX_OPEN_SCOPES_TOTAL:
		cfg.max_open_scopes_total =
		    parse_count("max-open-scopes-total", arg);
		break;
	case OPT_MAX_ENDED_SCOPES_TOTAL:
		cfg.max_ended_scopes_total =
		    parse_count("max-ended-scopes-total", arg);
		break;
	case OPT_MAX_ENDED_SCOPES:
		cfg.max_ended_scopes = parse_count("max-ended-scopes", arg);
		break;
	case OPT_MAX_REQUEST_AGE:
		cfg.max_request_age = parse_duration("max-request-age", arg);
		break;
	case OPT_MAX_HELD:
		cfg.max_held = parse_size("max-held", arg, UINT64_MAX);
		break;
	case OPT_MAX_PENDING:
		cfg.max_pending = parse_size("max-pending", arg, UINT64_MAX);
		break;
	case OPT_RETENTION:
		parse_retention(arg);
		break;
	case OPT_LINGER:
		cfg.linger = parse_duration("linger", arg);
		break;
	case OPT_PARTIAL_TIMEOUT:
		cfg.partial_timeout = parse_duration("partial-timeout", arg);
		break;
	case OPT_MAX_RECORD_SIZE:
		cfg.limits.max_object =
		    (uint32_t)parse_size("max-record-size", arg, 64ULL << 20);
		if (cfg.limits.max_object < 64)
			bad_usage("--max-record-size: at least 64 bytes");
		break;
	case OPT_MAX_STRING:
		cfg.limits.max_string =
		    (uint32_t)parse_size("max-string", arg, 64ULL << 20);
		break;
	case OPT_HELP:
		usage(stdout);
		exit(0);
	case OPT_VERSION:
		printf("ctxleakd %s\n", CTXLEAKD_VERSION);
		exit(0);
	default:
		fputs("Try 'ctxleakd --help'.\n", stderr);
		exit(2);
	}
}

static void parse_args(int argc, char **argv)
{
	int opt;

	while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1)
		parse_option(opt, optarg);
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
