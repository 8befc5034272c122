/*
 * common.h: the constants that the client library, the daemon and the CLI
 * must agree on, in one place: the version, the database's schema version
 * and application ID, the names of the leak classes, and the default
 * socket and database paths.  proto/common.c is compiled into each of the
 * three programs, as the rest of proto/ is.
 *
 * The version comes from the Makefile (VERSION, passed as
 * -DCTXLEAK_BUILD_VERSION); the public header client/ctxleak.h spells it
 * too, for its users' preprocessors, and the Makefile stops the build when
 * the two differ.
 */
#ifndef CTXLEAK_COMMON_H
#define CTXLEAK_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifndef CTXLEAK_BUILD_VERSION
#error "CTXLEAK_BUILD_VERSION comes from the Makefile's VERSION"
#endif
#define COMMON_VERSION CTXLEAK_BUILD_VERSION

/* The PRAGMA user_version that the daemon writes (daemon/SCHEMA.md) and
 * the CLI reads: a newer file needs a newer CLI, an older one a start of
 * ctxleakd, which migrates it. */
#define COMMON_SCHEMA_VERSION 8
/* The PRAGMA application_id of every ctxleak database: "cxlk". */
#define COMMON_APPLICATION_ID 0x63786c6b

/*
 * The leak classes (docs/DESIGN.md), in the order reports list them: the tag of
 * the rules engine's enum leak_class, and the name the database stores.
 * X is a macro of (tag, name); the engine indexes its names by its enum
 * with it, the CLI lists common_class_names.
 */
#define COMMON_LEAK_CLASSES(X)                                                 \
	X(BLEED, "bleed")                                                      \
	X(STALE, "stale")                                                      \
	X(OVERLAP, "overlap")                                                  \
	X(LOST, "lost")                                                        \
	X(MISNEST, "misnest")                                                  \
	X(UNCLOSED, "unclosed")
#define COMMON_CLASS_COUNT 6
extern const char *const common_class_names[COMMON_CLASS_COUNT];
/* What to change in the code, per class in the same order (the README's
 * class table): the "fix" of `ctxleak leaks` and of ctxleakd's findings
 * log, which must say the same. */
extern const char *const common_class_fixes[COMMON_CLASS_COUNT];
/* The fix of a class by name; NULL for a name that is none. */
const char *common_class_fix(const char *cls);

/* Decodes one UTF-8 sequence at s (n bytes left) into *cp; returns its
 * length, or 0 when it is invalid (overlong, surrogate, truncated...).
 * What the CLI and the daemon's findings log print of client strings is
 * valid UTF-8 by it. */
size_t common_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);

/* Whether a hex ctx the daemon wrote into a finding's detail starts at p
 * (within detail): "ctx 0x2a" or "ctx was 0x2a" (daemon/rules_detail.c),
 * not client text that looks like one.  The CLI and the findings log name
 * its request instead. */
int common_detail_ctx_at(const char *detail, const char *p);

/* As root, the system daemon's (the systemd units' and tmpfiles.d's). */
#define COMMON_SYSTEM_SOCKET "/run/ctxleak/ctxleak.sock"
#define COMMON_SYSTEM_DB     "/var/lib/ctxleak/ctxleak.db"

enum common_path {
	COMMON_SOCKET, /* where the daemon listens, the library connects */
	COMMON_DB,     /* where the daemon writes, the CLI reads */
};

/*
 * The default path of `which` for this process, in buf: as root the
 * system paths; otherwise those of common_user_path with no home given.
 * 0, or -1 when it does not fit in len bytes.
 */
int common_default_path(enum common_path which, char *buf, size_t len);

/*
 * A user's path after the XDG base directory rule:
 *   socket: $XDG_RUNTIME_DIR/ctxleak/ctxleak.sock, else
 *           /tmp/ctxleak-UID/ctxleak.sock;
 *   db:     $XDG_STATE_HOME/ctxleak/ctxleak.db, else
 *           HOME/.local/state/ctxleak/ctxleak.db.
 * As the XDG specification says, an XDG_* variable that is empty or not an
 * absolute path is ignored.  home NULL: $HOME when it is absolute, else
 * the home directory of the real uid in the password database; a home
 * given (another user's) ignores the environment.  0, or -1 when it does
 * not fit.
 */
int common_user_path(enum common_path which, const char *home, char *buf,
		     size_t len);

/*
 * Which host this is, for what leaves it (ctxleakd --findings-log, ctxleak
 * forward): fleets key their rows by it.  common_machine_id gives the 32
 * hex digits of /etc/machine-id (systemd's stable identity of an
 * installation: machine-id(5)); common_host_name gives the host name
 * (gethostname), or, when that is empty or "localhost" (an unconfigured
 * container), "machine-" and the machine ID.  0, or -1 when there is
 * none or it does not fit in len bytes.
 */
int common_machine_id(char *buf, size_t len);
int common_host_name(char *buf, size_t len);

#endif /* CTXLEAK_COMMON_H */
