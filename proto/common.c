/*
 * common.c: the constants of common.h that are data, and the one rule for
 * the default paths, shared by the library, the daemon and the CLI.
 */
#include <ctype.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define CLASS_NAME(tag, name) name,
const char *const common_class_names[COMMON_CLASS_COUNT] = {
    COMMON_LEAK_CLASSES(CLASS_NAME)};
#undef CLASS_NAME

const char *const common_class_fixes[COMMON_CLASS_COUNT] = {
    /* bleed */
    "the storage does not follow the work: carry the context across the "
    "callback or queue (capture/resume, or the libevent wrapper) or move "
    "to task-local storage",
    /* stale */
    "clear the storage when a request ends (or restore what was there "
    "before it began), and on every exit path",
    /* overlap */
    "one storage slot is shared by concurrent requests (a process global, "
    "one event-loop thread): give each request its own",
    /* lost */
    "the same boundary, where the storage was empty: capture where the "
    "work is created, resume where it runs",
    /* misnest */
    "end scopes in reverse order of beginning, once, in the request they "
    "belong to",
    /* unclosed */
    "an error path skips ctxleak_end: end it on every path",
};

const char *common_class_fix(const char *cls)
{
	for (int i = 0; cls != NULL && i < COMMON_CLASS_COUNT; i++)
		if (strcmp(cls, common_class_names[i]) == 0)
			return common_class_fixes[i];
	return NULL;
}

size_t common_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
	size_t len;
	uint32_t v;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0)
		len = 2, v = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		len = 3, v = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		len = 4, v = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if (v < min_for_len[len] || v > 0x10ffff ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

/* The variable's value when it is an absolute path, else NULL. */
static const char *absolute_env(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && v[0] == '/' ? v : NULL;
}

/* Without HOME (a service, env -i) the password database still knows the
 * user's home: the daemon and the CLI then agree on it. */
static const char *this_home(void)
{
	const char *home = absolute_env("HOME");
	struct passwd *pw;

	if (home != NULL)
		return home;
	pw = getpwuid(getuid());
	return pw != NULL && pw->pw_dir != NULL ? pw->pw_dir : "";
}

int common_user_path(enum common_path which, const char *home, char *buf,
		     size_t len)
{
	const char *xdg = NULL;
	int n;

	if (home == NULL)
		xdg = absolute_env(which == COMMON_SOCKET ? "XDG_RUNTIME_DIR"
							  : "XDG_STATE_HOME");
	if (xdg != NULL)
		n = snprintf(buf, len, "%s/ctxleak/%s", xdg,
			     which == COMMON_SOCKET ? "ctxleak.sock"
						    : "ctxleak.db");
	else if (which == COMMON_SOCKET)
		n = snprintf(buf, len, "/tmp/ctxleak-%u/ctxleak.sock",
			     (unsigned)getuid());
	else
		n = snprintf(buf, len, "%s/.local/state/ctxleak/ctxleak.db",
			     home != NULL ? home : this_home());
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int common_default_path(enum common_path which, char *buf, size_t len)
{
	const char *sys;
	int n;

	if (geteuid() != 0)
		return common_user_path(which, NULL, buf, len);
	sys = which == COMMON_SOCKET ? COMMON_SYSTEM_SOCKET : COMMON_SYSTEM_DB;
	n = snprintf(buf, len, "%s", sys);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* machine-id(5): 32 lower-case hex digits and a newline. */
#define MACHINE_ID_LEN 32

int common_machine_id(char *buf, size_t len)
{
	char id[MACHINE_ID_LEN + 2];
	FILE *f = fopen("/etc/machine-id", "r");
	size_t n = 0;

	if (f == NULL)
		return -1;
	if (fgets(id, sizeof(id), f) != NULL)
		n = strspn(id, "0123456789abcdef");
	fclose(f);
	if (n != MACHINE_ID_LEN || len <= MACHINE_ID_LEN)
		return -1;
	memcpy(buf, id, MACHINE_ID_LEN);
	buf[MACHINE_ID_LEN] = '\0';
	return 0;
}

int common_host_name(char *buf, size_t len)
{
	char name[256] = "", id[MACHINE_ID_LEN + 1];
	int n;

	if (gethostname(name, sizeof(name) - 1) != 0)
		name[0] = '\0';
	if (name[0] != '\0' && strcmp(name, "localhost") != 0)
		n = snprintf(buf, len, "%s", name);
	else if (common_machine_id(id, sizeof(id)) == 0)
		n = snprintf(buf, len, "machine-%s", id);
	else
		return -1;
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int common_detail_ctx_at(const char *detail, const char *p)
{
	if (!(p[0] == '0' && p[1] == 'x' && isxdigit((unsigned char)p[2])))
		return 0;
	return (p - detail >= 4 && !strncmp(p - 4, "ctx ", 4)) ||
	       (p - detail >= 8 && !strncmp(p - 8, "ctx was ", 8));
}
