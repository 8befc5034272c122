/*
 * fleet_log.c: ctxleakd --findings-log FILE, every committed finding as one
 * JSON line for the log shippers fleets run (Filebeat, Fluent Bit,
 * Vector): the fields, names and formats of `ctxleak leaks --json`
 * (cli/cli_leaks.c), after "host" and "machine_id".
 *
 * The lines of a commit are built in memory and appended with one write()
 * per chunk of whole lines, no fsync: the database, not this file, is what
 * must survive a crash, and ingest must not wait for the disk twice.  A
 * write that fails or comes up short (disk full, a file-size limit) is cut
 * back to its last whole line, so a reader never sees half a line; the
 * lines not written are counted, the first failure of an episode is
 * logged, and the next commit tries again.
 *
 * Rotation by size, the way logrotate numbers: when the next chunk would
 * take FILE past --findings-log-max-size, FILE.N-1 becomes FILE.N (the
 * oldest, FILE.N, is dropped), ..., FILE becomes FILE.1, and a new FILE
 * is opened.  SIGHUP reopens FILE, for an outside rotation.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctxleakd.h"

#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD */
#define NS_PER_SEC  1000000000LL

/* The open log: its file and what the current commit adds to it. */
static struct {
	char *path;	       /* FILE; NULL: no log */
	int fd;		       /* -1: none open (a reopen failed) */
	uint64_t max_size;     /* rotate before passing it */
	uint32_t keep;	       /* FILE.1 .. FILE.keep */
	struct fleet_buf line; /* the commit's lines, '\n'-terminated */
	uint64_t pending;      /* lines in it */
	int failing;	       /* the last write failed: not logged again */
	int rotate_failing;    /* the last rotation failed: likewise */
	struct fleet_log_stats stats;
} flog = {.fd = -1};

/* ------------------------------------------------------------ buffer */

void fleet_buf_put(struct fleet_buf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		if ((p = realloc(b->p, cap)) == NULL) {
			b->oom = 1;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void fleet_buf_puts(struct fleet_buf *b, const char *s)
{
	fleet_buf_put(b, s, strlen(s));
}

void fleet_buf_free(struct fleet_buf *b)
{
	free(b->p);
	*b = (struct fleet_buf){0};
}

void fleet_buf_utf8(struct fleet_buf *b, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0, n;
	uint32_t cp;

	while (i < len) {
		if ((n = common_utf8_next(p + i, len - i, &cp)) != 0) {
			i += n;
			continue;
		}
		fleet_buf_put(b, s + run, i - run);
		fleet_buf_puts(b, REPLACEMENT);
		run = ++i;
	}
	fleet_buf_put(b, s + run, i - run);
}

/* A JSON string as the CLI writes one (cli_out.c): invalid UTF-8 as
 * U+FFFD, '"' and '\\' escaped, control characters and DEL as \u00XX,
 * the rest as it is, in runs. */
void fleet_buf_json_str(struct fleet_buf *b, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0, n;
	uint32_t cp;
	char esc[8];

	fleet_buf_put(b, "\"", 1);
	while (i < len) {
		/* Printable ASCII, nearly all of it, without decoding. */
		if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' &&
		    p[i] != '\\') {
			i++;
			continue;
		}
		n = common_utf8_next(p + i, len - i, &cp);
		if (n && cp != '"' && cp != '\\' && cp >= 0x20 && cp != 0x7f) {
			i += n;
			continue;
		}
		fleet_buf_put(b, s + run, i - run);
		if (n == 0)
			fleet_buf_puts(b, REPLACEMENT);
		else if (cp == '"' || cp == '\\')
			fleet_buf_put(b, cp == '"' ? "\\\"" : "\\\\", 2);
		else {
			snprintf(esc, sizeof esc, "\\u%04x", (unsigned)cp);
			fleet_buf_puts(b, esc);
		}
		i += n ? n : 1;
		run = i;
	}
	fleet_buf_put(b, s + run, i - run);
	fleet_buf_put(b, "\"", 1);
}

/* ------------------------------------------------------------ fields */

char *fleet_rfc3339(int64_t ns, char *buf, size_t len)
{
	time_t sec = (time_t)(ns / NS_PER_SEC);
	long rem = (long)(ns % NS_PER_SEC);
	struct tm tm;
	size_t n;

	if (rem < 0) {
		rem += NS_PER_SEC;
		sec--;
	}
	gmtime_r(&sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%09ldZ", rem);
	return buf;
}

/* The separator, the key and its colon. */
static void key(struct fleet_buf *b, const char *k)
{
	if (b->len > 0 && b->p[b->len - 1] != '{')
		fleet_buf_put(b, ",", 1);
	fleet_buf_json_str(b, k, strlen(k));
	fleet_buf_put(b, ":", 1);
}

static void kstr(struct fleet_buf *b, const char *k, const char *s)
{
	key(b, k);
	if (s != NULL)
		fleet_buf_json_str(b, s, strlen(s));
	else
		fleet_buf_puts(b, "null");
}

static void kint(struct fleet_buf *b, const char *k, int64_t v)
{
	char num[24];

	key(b, k);
	snprintf(num, sizeof num, "%" PRId64, v);
	fleet_buf_puts(b, num);
}

/* A column as cli_json_kcol writes it. */
static void kcol(struct fleet_buf *b, const char *k,
		 const struct store_value *v)
{
	switch (v->type) {
	case STORE_NULL:
		kstr(b, k, NULL);
		break;
	case STORE_INT:
		kint(b, k, v->i);
		break;
	case STORE_TEXT:
		key(b, k);
		fleet_buf_json_str(b, v->s, v->len);
	}
}

/* A ctx as the CLI writes it: unsigned decimal in a string; 0 is null. */
static void kctx(struct fleet_buf *b, const char *k,
		 const struct store_value *v)
{
	char num[24];

	snprintf(num, sizeof num, "%" PRIu64, (uint64_t)v->i);
	kstr(b, k, v->i != 0 ? num : NULL);
}

static int text_is(const struct store_value *v, const char *s)
{
	return v->type == STORE_TEXT && v->len == strlen(s) &&
	       memcmp(v->s, s, v->len) == 0;
}

static void request(struct fleet_buf *b, const struct store_finding_row *f,
		    const char *side, int id, int ctx, int name)
{
	char k[32];

	kctx(b, side, &f->col[ctx]);
	snprintf(k, sizeof k, "%s_request", side);
	kcol(b, k, &f->col[id]);
	snprintf(k, sizeof k, "%s_name", side);
	kcol(b, k, &f->col[name]);
}

void fleet_finding_json(struct fleet_buf *b, const struct store_finding_row *f,
			const char *host, const char *machine_id)
{
	const struct store_value *record = &f->col[SF_RECORD];
	int is_tag = text_is(record, "TAG"),
	    is_event = text_is(record, "EVENT");
	char ts[64], cls[16] = "";

	fleet_buf_put(b, "{", 1);
	kstr(b, "host", host);
	if (machine_id != NULL)
		kstr(b, "machine_id", machine_id);
	kint(b, "id", f->col[SF_ID].i);
	kcol(b, "class", &f->col[SF_CLASS]);
	kcol(b, "app", &f->col[SF_APP]);
	kcol(b, "pid", &f->col[SF_PID]);
	kcol(b, "tid", &f->col[SF_TID]);
	kstr(b, "ts",
	     f->col[SF_TS].i ? fleet_rfc3339(f->col[SF_TS].i, ts, sizeof ts)
			     : NULL);
	request(b, f, "victim", SF_VICTIM_ID, SF_VICTIM_CTX, SF_VICTIM_NAME);
	request(b, f, "source", SF_SOURCE_ID, SF_SOURCE_CTX, SF_SOURCE_NAME);
	kcol(b, "record", record);
	kcol(b, is_tag ? "key" : "name", &f->col[SF_NAME]);
	if (is_tag || is_event)
		kcol(b, is_tag ? "value" : "message", &f->col[SF_VALUE]);
	kctx(b, "ctx", &f->col[SF_CTX]);
	kctx(b, "cause", &f->col[SF_CAUSE]);
	if (text_is(record, "BEGIN"))
		kctx(b, "prev", &f->col[SF_OTHER]);
	else if (text_is(record, "END"))
		kctx(b, "cur", &f->col[SF_OTHER]);
	kstr(b, "site", f->site);
	if (f->col[SF_CLASS].type == STORE_TEXT &&
	    f->col[SF_CLASS].len < sizeof cls)
		memcpy(cls, f->col[SF_CLASS].s, f->col[SF_CLASS].len);
	/* "detail" stays last, as in the CLI's. */
	kstr(b, "fix", common_class_fix(cls));
	kstr(b, "detail", f->detail);
	fleet_buf_put(b, "}\n", 2);
}

/* ------------------------------------------------------------ the file */

static int open_file(void)
{
	int fd = open(flog.path,
		      O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0640);

	/* A file created here is 0640 whatever the umask; one that exists
	 * keeps the mode its owner gave it. */
	if (fd >= 0)
		fchmod(fd, 0640);
	else if (errno == EEXIST)
		fd = open(flog.path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd == -1)
		return -1;
	flog.fd = fd;
	return 0;
}

int fleet_log_open(const char *path, uint64_t max_size, uint32_t keep)
{
	if ((flog.path = strdup(path)) == NULL)
		return -1;
	flog.max_size = max_size;
	flog.keep = keep;
	return open_file();
}

void fleet_log_reopen(void)
{
	int old = flog.fd;

	if (flog.path == NULL)
		return;
	if (open_file() == -1) {
		/* Keep the old file rather than lose lines. */
		log_error("findings log: cannot reopen %s: %s", flog.path,
			  strerror(errno));
		return;
	}
	if (old >= 0)
		close(old);
}

/* FILE.keep-1 -> FILE.keep, ..., FILE -> FILE.1, and a new FILE.  When a
 * rename fails, writing goes on in FILE (logged once per episode). */
static void rotate(void)
{
	size_t n = strlen(flog.path) + 16;
	char from[PATH_MAX], to[PATH_MAX];

	if (n > sizeof from)
		return;
	for (uint32_t i = flog.keep; i > 1; i--) {
		snprintf(from, sizeof from, "%s.%u", flog.path, i - 1);
		snprintf(to, sizeof to, "%s.%u", flog.path, i);
		if (rename(from, to) == -1 && errno != ENOENT)
			goto fail;
	}
	snprintf(to, sizeof to, "%s.1", flog.path);
	if (rename(flog.path, to) == -1)
		goto fail;
	fleet_log_reopen();
	flog.stats.rotations++;
	flog.rotate_failing = 0;
	return;
fail:
	if (!flog.rotate_failing)
		log_error("findings log: cannot rotate %s: %s; writing on "
			  "past --findings-log-max-size",
			  flog.path, strerror(errno));
	flog.rotate_failing = 1;
}

static uint64_t count_lines(const char *p, size_t len)
{
	uint64_t n = 0;

	for (const char *end = p + len;
	     (p = memchr(p, '\n', (size_t)(end - p))); p++)
		n++;
	return n;
}

/* Appends len bytes of whole lines, the rest of a short write after it
 * (a signal); 0, or -1 when they were not all written: the file is then
 * cut back to its last whole line. */
static int append(const char *p, size_t len)
{
	size_t done = 0, whole;
	ssize_t n = -1;
	int err = EBADF;
	const char *nl;
	struct stat st;

	while (flog.fd >= 0 && done < len) {
		if ((n = write(flog.fd, p + done, len - done)) > 0)
			done += (size_t)n;
		else if (n == -1 && errno == EINTR)
			continue;
		else {
			err = n == -1 ? errno : EIO;
			break;
		}
	}
	if (done == len) {
		flog.stats.lines_written += count_lines(p, len);
		if (flog.failing)
			log_info("findings log: writing again");
		flog.failing = 0;
		return 0;
	}
	nl = done > 0 ? memrchr(p, '\n', done) : NULL;
	whole = nl != NULL ? (size_t)(nl - p) + 1 : 0;
	if (done > whole &&
	    (fstat(flog.fd, &st) == -1 ||
	     ftruncate(flog.fd, st.st_size - (off_t)(done - whole)) == -1))
		err = errno; /* half a line stays: say why */
	flog.stats.lines_written += count_lines(p, whole);
	flog.stats.lines_failed += count_lines(p + whole, len - whole);
	if (!flog.failing)
		log_error("findings log: cannot write %s: %s; lines not "
			  "written are counted (ctxleak_findings_log_lines_"
			  "failed_total), retrying at the next commit",
			  flog.path != NULL ? flog.path : "", strerror(err));
	flog.failing = 1;
	return -1;
}

void fleet_log_add(const struct store_finding_row *f, const char *host,
		   const char *machine_id)
{
	fleet_finding_json(&flog.line, f, host, machine_id);
	flog.pending++;
}

void fleet_log_flush(void)
{
	const char *p = flog.line.p, *end = p + flog.line.len;
	struct stat st;
	off_t size = 0;

	if (flog.line.oom) {
		flog.stats.lines_failed += flog.pending;
		log_error("findings log: out of memory; %llu lines not written",
			  (unsigned long long)flog.pending);
	}
	if (flog.line.len == 0 || flog.line.oom)
		goto done;
	if (flog.fd >= 0 && fstat(flog.fd, &st) == 0)
		size = st.st_size;
	while (p < end) {
		/* As many whole lines as fit under the limit; at least one
		 * in an empty file, which a longer line must then pass. */
		const char *q = p, *nl;
		size_t room = flog.max_size > (uint64_t)size
				  ? (size_t)(flog.max_size - (uint64_t)size)
				  : 0;

		while (q < end && (nl = memchr(q, '\n', (size_t)(end - q))) &&
		       ((size_t)(nl + 1 - p) <= room || (q == p && size == 0)))
			q = nl + 1;
		if (q == p) {
			rotate();
			if (flog.fd >= 0 && fstat(flog.fd, &st) == 0 &&
			    st.st_size < size) {
				size = st.st_size;
				continue;
			}
			/* Rotation failed: write past the limit. */
			q = memchr(p, '\n', (size_t)(end - p)) + 1;
		}
		if (append(p, (size_t)(q - p)) == -1) {
			flog.stats.lines_failed +=
			    count_lines(q, (size_t)(end - q));
			break;
		}
		size += q - p;
		p = q;
	}
done:
	flog.line.len = 0;
	flog.line.oom = 0;
	flog.pending = 0;
}

void fleet_log_close(void)
{
	fleet_log_flush();
	if (flog.fd >= 0)
		close(flog.fd);
	flog.fd = -1;
	free(flog.path);
	flog.path = NULL;
	fleet_buf_free(&flog.line);
}

void fleet_log_stats(struct fleet_log_stats *out)
{
	*out = flog.stats;
}
