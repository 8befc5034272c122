/*
 * cli_run.h: running the ctxleak CLI ($CTXLEAK_BIN) as a program from a
 * test, and a strict JSON parser for what it writes.  Shared by
 * test_cli.c and test_html.c.
 */
#ifndef CTXLEAK_CLI_RUN_H
#define CTXLEAK_CLI_RUN_H

#include <stddef.h>
#include <sys/types.h>

/* One run of the CLI. */
struct run {
	int status; /* exit status, or -1 */
	char *out;  /* all it wrote on stdout, NUL-terminated */
	char *err;  /* and on stderr */
};

void run_free(struct run *r);
/* Everything readable from fd, NUL-terminated; free() it. */
char *read_all_fd(int fd);
char *read_file_at(const char *path);
/* Runs the CLI with argv (argv[0] is replaced), stdout and stderr to
 * files, as user uid unless it is 0.  env: changes to the environment
 * ("K=V" sets, "K" unsets), NULL-terminated, or NULL; COLUMNS is unset
 * unless env sets it. */
struct run run_argv(const char *const *env, char **argv, uid_t uid);
/* run_env(env, "leaks", "--json", NULL): the CLI with these arguments. */
struct run run_env(const char *const *env, ...);
#define run(...) run_env(NULL, __VA_ARGS__, NULL)
/* The CLI with stdout on a pseudo-terminal; returns what it wrote. */
char *run_on_tty(const char *const *env, const char *db, const char *cmd);
/* Lines in s. */
int count_lines(const char *s);

/*
 * A strict JSON parser (RFC 8259) that keeps the members of the top-level
 * object, so that tests can look at them.  Strings must be valid UTF-8
 * with no raw control characters.
 */
struct member {
	const char *key, *val; /* raw JSON text, key with its quotes */
	size_t klen, vlen;
};

struct json {
	const char *p, *end;
	int depth;
	struct member top[64];
	int ntop;
};

/* Parses one value at j->p (RFC 8259, strict); 0 or -1. */
int json_parse_value(struct json *j);
/* Parses one line that must be exactly one JSON object (Check fails
 * otherwise), keeping its top-level members. */
void json_line(struct json *j, const char *line, size_t len);
/* The raw JSON text of a top-level member, NUL-terminated in buf; NULL
 * when absent. */
const char *member(const struct json *j, const char *key, char *buf,
		   size_t len);
/* Calls fn on every line of out, each a JSON object; returns the count. */
int each_json_line(const char *out, void (*fn)(const struct json *j, void *arg),
		   void *arg);
void assert_member(const struct json *j, const char *key, const char *want);

#endif /* CTXLEAK_CLI_RUN_H */
