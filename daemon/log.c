/*
 * log.c: ctxleakd's log: one line per message to stderr or to --log-file.
 *
 * When stderr is connected to the journal (systemd sets JOURNAL_STREAM to
 * the device and inode of that stream) lines carry a "<N>" syslog priority
 * prefix and no timestamp, since journald adds its own; otherwise each line
 * starts with an ISO 8601 timestamp and the level's name.
 *
 * Callers must never pass tag values or event messages: they may hold
 * secrets of the services under watch.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctxleakd.h"

static FILE *log_stream;
static char *log_path;
static int log_to_journal;
static enum log_level log_threshold = LOG_LEVEL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
/* syslog priorities: LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
static const int level_priorities[] = {3, 4, 6, 7};

static int stderr_is_journal(void)
{
	const char *env = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (env == NULL || sscanf(env, "%llu:%llu", &dev, &ino) != 2)
		return 0;
	if (fstat(STDERR_FILENO, &st) == -1)
		return 0;
	return st.st_dev == (dev_t)dev && st.st_ino == (ino_t)ino;
}

static FILE *open_log_file(const char *path)
{
	FILE *f = fopen(path, "ae");

	if (f != NULL)
		setvbuf(f, NULL, _IOLBF, 0);
	return f;
}

void log_open(const char *path)
{
	if (path == NULL) {
		log_stream = stderr;
		log_to_journal = stderr_is_journal();
		return;
	}
	free(log_path);
	log_path = strdup(path);
	if (log_path == NULL)
		fatalx("out of memory");
	log_stream = open_log_file(path);
	if (log_stream == NULL) {
		log_stream = stderr;
		fatal("cannot open log file %s", path);
	}
	log_to_journal = 0;
}

void log_reopen(void)
{
	FILE *f;

	if (log_path == NULL)
		return;
	/* Keep logging to the old file when the new one cannot be opened:
	 * a rotation gone wrong must not silence the daemon. */
	f = open_log_file(log_path);
	if (f == NULL) {
		log_error("cannot reopen log file %s: %s", log_path,
			  strerror(errno));
		return;
	}
	if (log_stream != NULL && log_stream != stderr)
		fclose(log_stream);
	log_stream = f;
	log_info("log file reopened");
}

void log_set_level(enum log_level level)
{
	log_threshold = level;
}

int log_level_from_name(const char *name)
{
	for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
		if (strcmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

static void log_vwrite(enum log_level level, const char *fmt, va_list ap,
		       const char *suffix)
{
	FILE *f = log_stream != NULL ? log_stream : stderr;
	char stamp[64];
	struct timespec now;
	struct tm tm;

	if (level > log_threshold)
		return;
	if (log_to_journal && f == stderr) {
		fprintf(f, "<%d>", level_priorities[level]);
	} else {
		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		fprintf(f, "%s.%03ldZ %s: ", stamp, now.tv_nsec / 1000000,
			level_names[level]);
	}
	vfprintf(f, fmt, ap);
	if (suffix != NULL)
		fprintf(f, ": %s", suffix);
	fputc('\n', f);
	fflush(f);
}

#define LOG_FUNCTION(fn, level)                                                \
	void fn(const char *fmt, ...)                                          \
	{                                                                      \
		va_list ap;                                                    \
		va_start(ap, fmt);                                             \
		log_vwrite(level, fmt, ap, NULL);                              \
		va_end(ap);                                                    \
	}

LOG_FUNCTION(log_error, LOG_LEVEL_ERROR)
LOG_FUNCTION(log_warn, LOG_LEVEL_WARN)
LOG_FUNCTION(log_info, LOG_LEVEL_INFO)
LOG_FUNCTION(log_debug, LOG_LEVEL_DEBUG)

void fatal(const char *fmt, ...)
{
	const char *reason = strerror(errno);
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap, reason);
	va_end(ap);
	exit(1);
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vwrite(LOG_LEVEL_ERROR, fmt, ap, NULL);
	va_end(ap);
	exit(1);
}
