/*
 * cli.c: main() of the ctxleak CLI: global options, the table of
 * subcommands, option parsing shared by all of them, help and dispatch.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#define FILTER_HELP_CLASS                                                      \
	"  --class CLASS[,CLASS]  only these classes: bleed stale overlap "    \
	"lost\n"                                                               \
	"                         misnest unclosed\n"
#define FILTER_HELP_PROC                                                       \
	"  --app NAME             only processes of this application\n"        \
	"  --pid PID              only this process id\n"                      \
	"  --host NAME[,NAME]     only these hosts (a central database; may\n" \
	"                         be repeated)\n"
#define FILTER_HELP_REQUEST                                                    \
	"  --request NAME         only findings whose victim or source "       \
	"request\n"                                                            \
	"                         has this name\n"
#define FILTER_HELP_SITE                                                       \
	"  --site FILE[:LINE]     only findings at this call site (FILE may "  \
	"be\n"                                                                 \
	"                         the end of the path)\n"
#define FILTER_HELP_TIME                                                       \
	"  --since WHEN           only findings at or after WHEN: a duration " \
	"ago\n"                                                                \
	"                         (30s, 10m, 2h, 7d) or an RFC 3339 time\n"    \
	"  --until WHEN           only findings at or before WHEN\n"

static const struct cli_cmd commands[] = {
    {"leaks", "list findings, newest first",
     "usage: ctxleak [OPTIONS] leaks [FILTERS]\n"
     "\n"
     "Lists findings, newest first.\n"
     "\n" FILTER_HELP_CLASS FILTER_HELP_PROC FILTER_HELP_REQUEST
	 FILTER_HELP_SITE FILTER_HELP_TIME
     "  --limit N              at most N findings (default 50 in a "
     "table,\n"
     "                         all with --json; 0: all)\n",
     CLI_OPT_CLASS | CLI_OPT_APP | CLI_OPT_PID | CLI_OPT_HOST |
	 CLI_OPT_REQUEST | CLI_OPT_SITE | CLI_OPT_TIME | CLI_OPT_LIMIT,
     0, 0, cli_leaks},
    {"show", "one request: header, tags, timeline, findings",
     "usage: ctxleak [OPTIONS] show REQUEST [--all] [--html FILE]\n"
     "\n"
     "Shows one request's rebuilt context: its header, its tags and the\n"
     "request whose code set each, its records by thread (when the daemon\n"
     "kept them) with each finding marked, the findings with how to fix\n"
     "each, and the other requests involved.  REQUEST is a request id\n"
     "(#12 or 12), a ctx in decimal, or a request name (the newest such\n"
     "request).\n"
     "\n"
     "  --all                  RESUME and SUSPEND rows too (folded by\n"
     "                         default when they carry no finding)\n"
     "  --html FILE            write the timeline as one self-contained "
     "HTML\n"
     "                         page instead: a lane per thread, the\n"
     "                         findings linked to their evidence\n"
     "  --host NAME[,NAME]     a request of these hosts (a central\n"
     "                         database)\n",
     CLI_OPT_ALL | CLI_OPT_HTML | CLI_OPT_HOST, 1, 1, cli_show},
    {"summary", "counts by class, app, request and site; models; gaps",
     "usage: ctxleak [OPTIONS] summary [FILTERS]\n"
     "\n"
     "Counts findings by class, application, request name and site, gives\n"
     "each process's inferred concurrency model and the backend that "
     "would\n"
     "isolate its requests, and states the windows in which clients "
     "dropped\n"
     "records (counts over them may be incomplete).\n"
     "\n" FILTER_HELP_CLASS FILTER_HELP_PROC FILTER_HELP_REQUEST
	 FILTER_HELP_SITE FILTER_HELP_TIME,
     CLI_OPT_CLASS | CLI_OPT_APP | CLI_OPT_PID | CLI_OPT_HOST |
	 CLI_OPT_REQUEST | CLI_OPT_SITE | CLI_OPT_TIME,
     0, 0, cli_summary},
    {"processes", "client processes, their backend, model and counts",
     "usage: ctxleak [OPTIONS] processes [--app NAME] [--pid PID]\n"
     "\n"
     "Lists the client processes the daemon has seen.\n"
     "\n" FILTER_HELP_PROC,
     CLI_OPT_APP | CLI_OPT_PID | CLI_OPT_HOST, 0, 0, cli_processes},
    {"sites", "call sites and the findings at each",
     "usage: ctxleak [OPTIONS] sites [--app NAME] [--pid PID]\n"
     "\n"
     "Lists call sites, the most findings first.\n"
     "\n" FILTER_HELP_PROC,
     CLI_OPT_APP | CLI_OPT_PID | CLI_OPT_HOST, 0, 0, cli_sites},
    {"export", "findings and scopes as a trace for Perfetto",
     "usage: ctxleak [OPTIONS] export --format chrome-trace [FILTERS]\n"
     "\n"
     "Writes the selection as Trace Event Format JSON, which Perfetto\n"
     "(ui.perfetto.dev) and chrome://tracing open: each scope a complete\n"
     "event on its process and thread, each finding an instant event\n"
     "with its class, requests, detail and fix.  With --class, --request\n"
     "or --site, the scopes of the requests the findings involve; without,\n"
     "every scope kept in the time range.\n"
     "\n"
     "  --format chrome-trace  the format (the only one)\n" FILTER_HELP_CLASS
	 FILTER_HELP_PROC FILTER_HELP_REQUEST FILTER_HELP_SITE FILTER_HELP_TIME,
     CLI_OPT_FORMAT | CLI_OPT_CLASS | CLI_OPT_APP | CLI_OPT_PID |
	 CLI_OPT_HOST | CLI_OPT_REQUEST | CLI_OPT_SITE | CLI_OPT_TIME,
     0, 0, cli_export},
    {"hosts", "the hosts of a central database and their counts",
     "usage: ctxleak --db postgresql://... [OPTIONS] hosts [--host NAME]\n"
     "\n"
     "Lists the hosts that forwarded to a central database: when each was\n"
     "last seen, its databases (sources), processes and findings by class,\n"
     "and the windows over which its counts are incomplete.\n"
     "\n"
     "  --host NAME[,NAME]     only these hosts (may be repeated)\n",
     CLI_OPT_HOST, 0, 0, cli_hosts},
    {"forward", "copy findings to a central PostgreSQL database",
     "usage: ctxleak [OPTIONS] forward --to URL [--once] [--host NAME]\n"
     "                                 [--interval SEC]\n"
     "\n"
     "Copies what a fleet needs from the local database (--db, read-only)\n"
     "into a PostgreSQL database shared by many hosts: processes,\n"
     "findings, the requests and sites they name, clean-request counts,\n"
     "what-if counts, drop windows and daemon runs.  Each batch commits\n"
     "with its cursor, so that a restart or a lost connection neither\n"
     "loses nor repeats a row.  Creates and migrates the central schema.\n"
     "\n"
     "  --to URL               the central database: postgresql://... or\n"
     "                         libpq's \"key=value ...\" form\n"
     "  --once                 forward what is there, then exit (else poll\n"
     "                         until stopped)\n"
     "  --host NAME            the name this host's rows carry (default:\n"
     "                         the host name)\n"
     "  --interval SEC         seconds between passes (default 5)\n",
     CLI_OPT_FORWARD | CLI_OPT_HOST, 0, 0, cli_forward},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const char global_help[] =
    "Global options (before or after the subcommand):\n"
    "  --db PATH              the database (default: %s)\n"
    "  --json                 one JSON object per line\n"
    "  --wide                 tables as wide as their cells (else COLUMNS,\n"
    "                         the terminal's width, or 80)\n"
    "  --fail-on CLASS[,CLASS]|any\n"
    "                         exit 1 when a finding of these classes is\n"
    "                         in the selection (for CI gates)\n"
    "  --color=auto|always|never\n"
    "                         colour (auto: on a terminal, unless "
    "NO_COLOR)\n"
    "  -h, --help             this help\n"
    "  --version              the version\n"
    "\n"
    "Exit codes: 0 ok, 1 --fail-on matched, 2 usage error, 3 database\n"
    "missing or unreadable, 4 no request matches (show).\n";

int cli_error(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("ctxleak: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

static int class_index(const char *name, size_t len)
{
	for (int i = 0; i < CLI_CLASS_COUNT; i++)
		if (strlen(cli_class_names[i]) == len &&
		    strncmp(cli_class_names[i], name, len) == 0)
			return i;
	return -1;
}

/* The usage error for a bad class: which one, and the valid ones. */
static int bad_class(const char *option, const char *name, size_t len)
{
	char valid[128] = "";

	for (int i = 0; i < CLI_CLASS_COUNT; i++) {
		strcat(valid, cli_class_names[i]);
		strcat(valid, ", ");
	}
	return cli_error(CLI_EXIT_USAGE,
			 "%s: unknown class '%.*s'; valid: %sor any", option,
			 (int)len, name, valid);
}

int cli_parse_classes(const char *option, const char *list, unsigned *out)
{
	unsigned mask = 0;

	if (strcmp(list, "any") == 0) {
		*out = CLI_CLASS_ALL;
		return 0;
	}
	for (const char *p = list;; p++) {
		size_t len = strcspn(p, ",");
		int i = class_index(p, len);

		if (i < 0)
			return bad_class(option, p, len);
		mask |= 1u << i;
		p += len;
		if (*p == '\0')
			break;
	}
	*out = mask;
	return 0;
}

static void print_help(FILE *f)
{
	char def[4096];

	fputs("usage: ctxleak [OPTIONS] COMMAND [ARGS]\n"
	      "\n"
	      "Queries the database of ctxleakd: where request context "
	      "leaked.\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name,
			commands[i].summary);
	fputs("\n'ctxleak COMMAND --help' describes each.\n\n", f);
	fprintf(f, global_help, cli_db_default(def, sizeof(def)));
}

static void print_cmd_help(const struct cli_cmd *cmd)
{
	char def[4096];

	fputs(cmd->usage, stdout);
	fputc('\n', stdout);
	printf(global_help, cli_db_default(def, sizeof(def)));
}

enum {
	OPT_DB = 256,
	OPT_JSON,
	OPT_FAIL_ON,
	OPT_COLOR,
	OPT_VERSION,
	OPT_CLASS,
	OPT_APP,
	OPT_PID,
	OPT_REQUEST,
	OPT_SITE,
	OPT_SINCE,
	OPT_UNTIL,
	OPT_LIMIT,
	OPT_WIDE,
	OPT_ALL,
	OPT_HTML,
	OPT_FORMAT,
	OPT_HOST,
	OPT_TO,
	OPT_ONCE,
	OPT_INTERVAL,
};

static const struct option long_options[] = {
    {"db", required_argument, NULL, OPT_DB},
    {"json", no_argument, NULL, OPT_JSON},
    {"fail-on", required_argument, NULL, OPT_FAIL_ON},
    {"color", optional_argument, NULL, OPT_COLOR},
    {"colour", optional_argument, NULL, OPT_COLOR},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"class", required_argument, NULL, OPT_CLASS},
    {"app", required_argument, NULL, OPT_APP},
    {"pid", required_argument, NULL, OPT_PID},
    {"request", required_argument, NULL, OPT_REQUEST},
    {"site", required_argument, NULL, OPT_SITE},
    {"since", required_argument, NULL, OPT_SINCE},
    {"until", required_argument, NULL, OPT_UNTIL},
    {"limit", required_argument, NULL, OPT_LIMIT},
    {"wide", no_argument, NULL, OPT_WIDE},
    {"all", no_argument, NULL, OPT_ALL},
    {"html", required_argument, NULL, OPT_HTML},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"host", required_argument, NULL, OPT_HOST},
    {"to", required_argument, NULL, OPT_TO},
    {"once", no_argument, NULL, OPT_ONCE},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {NULL, 0, NULL, 0},
};

/* Which CLI_OPT_* bit a filter option needs. */
static unsigned option_bit(int opt)
{
	switch (opt) {
	case OPT_CLASS:
		return CLI_OPT_CLASS;
	case OPT_APP:
		return CLI_OPT_APP;
	case OPT_PID:
		return CLI_OPT_PID;
	case OPT_REQUEST:
		return CLI_OPT_REQUEST;
	case OPT_SITE:
		return CLI_OPT_SITE;
	case OPT_SINCE:
	case OPT_UNTIL:
		return CLI_OPT_TIME;
	case OPT_LIMIT:
		return CLI_OPT_LIMIT;
	case OPT_ALL:
		return CLI_OPT_ALL;
	case OPT_HTML:
		return CLI_OPT_HTML;
	case OPT_FORMAT:
		return CLI_OPT_FORMAT;
	case OPT_HOST:
		return CLI_OPT_HOST;
	case OPT_TO:
	case OPT_ONCE:
	case OPT_INTERVAL:
		return CLI_OPT_FORWARD;
	}
	return 0;
}

static int parse_number(const char *s, long long min, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(s, &end, 10);
	return (errno || end == s || *end != '\0' || *out < min) ? -1 : 0;
}

static int parse_site(struct cli_filter *f, char *arg)
{
	char *colon = strrchr(arg, ':');
	long long line;

	f->site_file = arg;
	if (colon && colon[1] != '\0' &&
	    strspn(colon + 1, "0123456789") == strlen(colon + 1)) {
		if (parse_number(colon + 1, 1, &line) < 0)
			return -1;
		*colon = '\0';
		f->site_line = (long)line;
	}
	return *arg ? 0 : -1;
}

static int parse_when(const char *arg, int64_t *out)
{
	if (cli_time_parse(arg, cli_time_now(), out) < 0)
		return cli_error(CLI_EXIT_USAGE,
				 "'%s' is neither a duration (30s, 10m, 2h, "
				 "7d) nor an RFC 3339 time",
				 arg);
	return 0;
}

static int parse_color(struct cli *c, const char *arg)
{
	if (arg == NULL || strcmp(arg, "always") == 0)
		c->color_mode = CLI_COLOR_ALWAYS;
	else if (strcmp(arg, "auto") == 0)
		c->color_mode = CLI_COLOR_AUTO;
	else if (strcmp(arg, "never") == 0)
		c->color_mode = CLI_COLOR_NEVER;
	else
		return cli_error(CLI_EXIT_USAGE,
				 "--color: unknown value '%s'; valid: auto, "
				 "always, never",
				 arg);
	return 0;
}

/* --host again adds to the list: "a,b" and "--host a --host b" are one. */
static int add_host(struct cli_filter *f, const char *arg)
{
	static char hosts[4096];
	size_t n = strlen(hosts);

	if (f->host == NULL) {
		f->host = arg;
		return 0;
	}
	if (f->host != hosts)
		n = (size_t)snprintf(hosts, sizeof(hosts), "%s", f->host);
	if (n + 1 + strlen(arg) >= sizeof(hosts))
		return cli_error(CLI_EXIT_USAGE, "too many --host");
	snprintf(hosts + n, sizeof(hosts) - n, ",%s", arg);
	f->host = hosts;
	return 0;
}

static int parse_filter_option(struct cli *c, int opt, char *arg)
{
	struct cli_filter *f = &c->filter;
	long long n;

	switch (opt) {
	case OPT_CLASS:
		return cli_parse_classes("--class", arg, &f->classes);
	case OPT_APP:
		f->app = arg;
		return 0;
	case OPT_PID:
		if (parse_number(arg, 1, &n) < 0)
			return cli_error(CLI_EXIT_USAGE, "bad --pid '%s'", arg);
		f->pid = n;
		return 0;
	case OPT_REQUEST:
		f->request = arg;
		return 0;
	case OPT_SITE:
		if (parse_site(f, arg) < 0)
			return cli_error(CLI_EXIT_USAGE, "bad --site '%s'",
					 arg);
		return 0;
	case OPT_SINCE:
		return parse_when(arg, &f->since);
	case OPT_UNTIL:
		return parse_when(arg, &f->until);
	case OPT_LIMIT:
		if (parse_number(arg, 0, &n) < 0)
			return cli_error(CLI_EXIT_USAGE, "bad --limit '%s'",
					 arg);
		f->limit = (long)n;
		return 0;
	case OPT_ALL:
		c->all = 1;
		return 0;
	case OPT_HTML:
		c->html = arg;
		return 0;
	case OPT_FORMAT:
		if (strcmp(arg, "chrome-trace") != 0)
			return cli_error(
			    CLI_EXIT_USAGE,
			    "--format: unknown format '%s'; valid: "
			    "chrome-trace",
			    arg);
		c->format = arg;
		return 0;
	case OPT_HOST:
		if (*arg == '\0')
			return cli_error(CLI_EXIT_USAGE, "empty --host");
		return add_host(f, arg);
	case OPT_TO:
		c->to = arg;
		return 0;
	case OPT_ONCE:
		c->once = 1;
		return 0;
	case OPT_INTERVAL:
		if (parse_number(arg, 1, &n) < 0 || n > 86400)
			return cli_error(CLI_EXIT_USAGE,
					 "bad --interval '%s' (1 to 86400 "
					 "seconds)",
					 arg);
		c->interval = (int)n;
		return 0;
	}
	return CLI_EXIT_USAGE;
}

/* Options common to every command; -1 when opt is not one of them. */
static int parse_global_option(struct cli *c, int opt, char *arg)
{
	switch (opt) {
	case OPT_DB:
		c->db_path = arg;
		return 0;
	case OPT_JSON:
		c->json = 1;
		return 0;
	case OPT_FAIL_ON:
		return cli_parse_classes("--fail-on", arg, &c->fail_on);
	case OPT_WIDE:
		c->wide = 1;
		return 0;
	case OPT_COLOR:
		return parse_color(c, arg);
	}
	return -1;
}

/*
 * Parses argv in one pass: global options anywhere, the subcommand's own
 * options after it.  Sets *cmd (NULL: none given).  Returns -1 to go on, or
 * an exit code (help and version print and return CLI_EXIT_OK).
 */
static int parse_args(struct cli *c, int argc, char **argv,
		      const struct cli_cmd **cmd)
{
	int opt, rc;

	*cmd = NULL;
	opterr = 0;
	/* "+": stop at the subcommand so that its name is found first. */
	while ((opt = getopt_long(argc, argv, "+h", long_options, NULL)) !=
	       -1) {
		if (opt == 'h') {
			print_help(stdout);
			return CLI_EXIT_OK;
		}
		if (opt == OPT_VERSION) {
			printf("ctxleak %s (database schema %d)\n", CLI_VERSION,
			       CLI_SCHEMA_VERSION);
			return CLI_EXIT_OK;
		}
		rc = parse_global_option(c, opt, optarg);
		if (rc > 0)
			return rc;
		if (rc < 0)
			return cli_error(CLI_EXIT_USAGE,
					 "%s: not a global option (see "
					 "'ctxleak --help')",
					 argv[optind - 1]);
	}
	if (optind >= argc) {
		print_help(stderr);
		return CLI_EXIT_USAGE;
	}
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(argv[optind], commands[i].name) == 0)
			*cmd = &commands[i];
	if (*cmd == NULL)
		return cli_error(CLI_EXIT_USAGE,
				 "unknown command '%s' (see 'ctxleak --help')",
				 argv[optind]);
	return -1;
}

static int parse_cmd_args(struct cli *c, const struct cli_cmd *cmd, int argc,
			  char **argv)
{
	int opt, rc;

	optind = 0; /* glibc: restart, forgetting the "+" of the first pass */
	while ((opt = getopt_long(argc, argv, "h", long_options, NULL)) != -1) {
		if (opt == 'h') {
			print_cmd_help(cmd);
			return CLI_EXIT_OK;
		}
		if (opt == '?' || opt == ':' || opt == OPT_VERSION)
			return cli_error(CLI_EXIT_USAGE,
					 "%s: bad option '%s' (see 'ctxleak "
					 "%s --help')",
					 cmd->name, argv[optind - 1],
					 cmd->name);
		rc = parse_global_option(c, opt, optarg);
		if (rc > 0)
			return rc;
		if (rc == 0)
			continue;
		if (!(cmd->options & option_bit(opt)))
			return cli_error(CLI_EXIT_USAGE,
					 "%s does not take %s (see 'ctxleak "
					 "%s --help')",
					 cmd->name, argv[optind - 1],
					 cmd->name);
		rc = parse_filter_option(c, opt, optarg);
		if (rc)
			return rc;
	}
	c->nargs = argc - optind;
	c->args = argv + optind;
	if ((cmd->options & CLI_OPT_FORMAT) && c->format == NULL)
		return cli_error(CLI_EXIT_USAGE,
				 "%s: --format is required; valid: "
				 "chrome-trace",
				 cmd->name);
	if (c->nargs < cmd->min_args || c->nargs > cmd->max_args)
		return cli_error(CLI_EXIT_USAGE,
				 "%s: wrong number of arguments (see 'ctxleak "
				 "%s --help')",
				 cmd->name, cmd->name);
	return -1;
}

static int run(struct cli *c, const struct cli_cmd *cmd)
{
	int rc;

	if (c->filter.since && c->filter.until &&
	    c->filter.since > c->filter.until)
		return cli_error(CLI_EXIT_USAGE, "--since is after --until");
	c->color = cli_color_wanted(c->color_mode, c->out);
	rc = cli_db_open(c);
	if (rc)
		return rc;
	/* Only a central database has hosts (forward names its own). */
	if (c->filter.host && !cli_db_is_pg(c) &&
	    !(cmd->options & CLI_OPT_FORWARD))
		rc = cli_error(CLI_EXIT_USAGE,
			       "--host: %s is one host's database; --host "
			       "selects hosts of a central one (--db "
			       "postgresql://...)",
			       c->db_path);
	else
		rc = cmd->run(c);
	cli_db_close(c);
	if (fflush(c->out) != 0 || ferror(c->out))
		return cli_error(CLI_EXIT_DB, "write error: %s",
				 strerror(errno));
	return rc;
}

int main(int argc, char **argv)
{
	char db_default[4096];
	struct cli c = {.out = stdout, .filter = {.limit = -1}};
	const struct cli_cmd *cmd;
	int rc;

	c.db_path = cli_db_default(db_default, sizeof(db_default));
	rc = parse_args(&c, argc, argv, &cmd);
	if (rc >= 0)
		return rc;
	rc = parse_cmd_args(&c, cmd, argc - optind, argv + optind);
	if (rc >= 0)
		return rc;
	return run(&c, cmd);
}
