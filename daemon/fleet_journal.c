/*
 * fleet_journal.c: ctxleakd --findings-journal, each committed finding as
 * a structured entry of the systemd journal: MESSAGE_ID=FLEET_MESSAGE_ID,
 * PRIORITY=4 (warning), a one-line MESSAGE and CTXLEAK_* fields, so that
 * `journalctl MESSAGE_ID=...` or a journal shipper picks findings out.
 *
 * It speaks journald's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL)
 * itself rather than call sd_journal_send(): that blocks while the
 * journal's socket queue is full, and the event loop must never wait for
 * systemd (sdnotify.c says why).  The socket is non-blocking; entries the
 * journal cannot take yet wait in a bounded queue, sent as the socket
 * becomes writable; past the bound, and while no journal listens, entries
 * are dropped and counted (ctxleak_findings_journal_entries_dropped_total).
 * An entry too large for a datagram goes as a sealed memfd, as
 * libsystemd sends one.  $CTXLEAKD_JOURNAL_SOCKET names another socket
 * (the tests listen on their own).
 *
 * The TAG value and EVENT message fields are not sent: the journal is read
 * more widely than the database, where they are (the findings log and the
 * CLI show them).  The detail line, as the database has it, quotes the
 * first bytes of a tag value (daemon/rules_detail.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctxleakd.h"

/* A commit may store thousands of findings at once, and the journal's
 * socket queues a few hundred datagrams: the queue takes a burst of
 * several commits' worth, and bounds the memory a stuck journal costs. */
#define QUEUE_MAX_ENTRIES 8192
#define QUEUE_MAX_BYTES	  (16u << 20)
/* An absent journal is tried again at most this often. */
#define RECONNECT_NS (1000000000ull)
/* At exit, how long the queue may take to go through. */
#define CLOSE_WAIT_MS 1000

struct entry {
	struct entry *next; /* the next queued; NULL: the last */
	size_t len;	    /* bytes of data */
	char data[];	    /* the native protocol's fields */
};

static struct {
	struct event_base *base;    /* NULL: not open */
	struct event *writable;	    /* armed while the queue waits */
	int fd;			    /* connected; -1: not */
	struct sockaddr_un addr;    /* the journal's socket */
	uint64_t next_connect;	    /* CLOCK_MONOTONIC ns of the next try */
	int absent_logged;	    /* the journal's absence was logged */
	int full_logged;	    /* a full queue was logged */
	struct entry *head, **tail; /* the queue, oldest first */
	unsigned queued;	    /* entries in it */
	size_t queued_bytes;	    /* and their bytes */
	struct fleet_journal_stats stats;
} jn = {.fd = -1};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ entries */

/* KEY=value, or KEY, a little-endian 64-bit length and the bytes when the
 * value holds a newline.  The value is made valid UTF-8 first. */
static void field(struct fleet_buf *b, const char *key, const char *s,
		  size_t len)
{
	struct fleet_buf v = {0};
	unsigned char le[8];

	fleet_buf_utf8(&v, s, len);
	if (v.oom) {
		b->oom = 1;
		return;
	}
	fleet_buf_puts(b, key);
	if (v.len > 0 && memchr(v.p, '\n', v.len) != NULL) {
		fleet_buf_put(b, "\n", 1);
		for (int i = 0; i < 8; i++)
			le[i] = (unsigned char)((uint64_t)v.len >> (8 * i));
		fleet_buf_put(b, (const char *)le, 8);
	} else {
		fleet_buf_put(b, "=", 1);
	}
	fleet_buf_put(b, v.p != NULL ? v.p : "", v.len);
	fleet_buf_put(b, "\n", 1);
	fleet_buf_free(&v);
}

static void field_str(struct fleet_buf *b, const char *key, const char *s)
{
	if (s != NULL)
		field(b, key, s, strlen(s));
}

/* A column: text as it is, an integer in decimal, NULL left out. */
static void field_col(struct fleet_buf *b, const char *key,
		      const struct store_value *v)
{
	char num[24];

	if (v->type == STORE_TEXT)
		field(b, key, v->s, v->len);
	else if (v->type == STORE_INT) {
		snprintf(num, sizeof num, "%" PRId64, v->i);
		field_str(b, key, num);
	}
}

/* A ctx: unsigned decimal, as the CLI shows it; 0 (none) left out. */
static void field_ctx(struct fleet_buf *b, const char *key,
		      const struct store_value *v)
{
	char num[24];

	if (v->i == 0)
		return;
	snprintf(num, sizeof num, "%" PRIu64, (uint64_t)v->i);
	field_str(b, key, num);
}

/* "stale finding #12 in shop pid 4711 at app.c:10 serve: <detail>" */
static void message(struct fleet_buf *b, const struct store_finding_row *f)
{
	struct fleet_buf m = {0};
	const struct store_value *cls = &f->col[SF_CLASS],
				 *app = &f->col[SF_APP];
	char num[64];

	fleet_buf_put(&m, cls->s != NULL ? cls->s : "?",
		      cls->s != NULL ? cls->len : 1);
	snprintf(num, sizeof num, " finding #%" PRId64 " in ", f->col[SF_ID].i);
	fleet_buf_puts(&m, num);
	if (app->type == STORE_TEXT)
		fleet_buf_put(&m, app->s, app->len);
	else
		fleet_buf_puts(&m, "?");
	snprintf(num, sizeof num, " pid %" PRId64, f->col[SF_PID].i);
	fleet_buf_puts(&m, num);
	if (f->site != NULL) {
		fleet_buf_puts(&m, " at ");
		fleet_buf_puts(&m, f->site);
	}
	if (f->detail != NULL) {
		fleet_buf_puts(&m, ": ");
		fleet_buf_puts(&m, f->detail);
	}
	if (m.oom)
		b->oom = 1;
	else
		field(b, "MESSAGE", m.p, m.len);
	fleet_buf_free(&m);
}

static void build(struct fleet_buf *b, const struct store_finding_row *f,
		  const char *host)
{
	const struct store_value *record = &f->col[SF_RECORD];
	char ts[64];

	field_str(b, "MESSAGE_ID", FLEET_MESSAGE_ID);
	field_str(b, "PRIORITY", "4");
	field_str(b, "SYSLOG_IDENTIFIER", "ctxleakd");
	message(b, f);
	field_str(b, "CTXLEAK_HOST", host);
	field_col(b, "CTXLEAK_ID", &f->col[SF_ID]);
	field_col(b, "CTXLEAK_CLASS", &f->col[SF_CLASS]);
	field_col(b, "CTXLEAK_APP", &f->col[SF_APP]);
	field_col(b, "CTXLEAK_PID", &f->col[SF_PID]);
	field_col(b, "CTXLEAK_TID", &f->col[SF_TID]);
	if (f->col[SF_TS].i != 0)
		field_str(b, "CTXLEAK_TS",
			  fleet_rfc3339(f->col[SF_TS].i, ts, sizeof ts));
	field_col(b, "CTXLEAK_VICTIM", &f->col[SF_VICTIM_ID]);
	field_ctx(b, "CTXLEAK_VICTIM_CTX", &f->col[SF_VICTIM_CTX]);
	field_col(b, "CTXLEAK_VICTIM_NAME", &f->col[SF_VICTIM_NAME]);
	field_col(b, "CTXLEAK_SOURCE", &f->col[SF_SOURCE_ID]);
	field_ctx(b, "CTXLEAK_SOURCE_CTX", &f->col[SF_SOURCE_CTX]);
	field_col(b, "CTXLEAK_SOURCE_NAME", &f->col[SF_SOURCE_NAME]);
	field_col(b, "CTXLEAK_RECORD", record);
	/* The BEGIN or EVENT name, the TAG key; never the value. */
	field_col(b, "CTXLEAK_NAME", &f->col[SF_NAME]);
	field_ctx(b, "CTXLEAK_CTX", &f->col[SF_CTX]);
	field_str(b, "CTXLEAK_SITE", f->site);
	if (f->col[SF_CLASS].type == STORE_TEXT) {
		char cls[16] = "";

		if (f->col[SF_CLASS].len < sizeof cls)
			memcpy(cls, f->col[SF_CLASS].s, f->col[SF_CLASS].len);
		field_str(b, "CTXLEAK_FIX", common_class_fix(cls));
	}
	field_str(b, "CTXLEAK_DETAIL", f->detail);
}

/* ------------------------------------------------------------ socket */

static void on_writable(evutil_socket_t fd, short what, void *arg);

static void disconnect(void)
{
	if (jn.writable != NULL) {
		event_free(jn.writable);
		jn.writable = NULL;
	}
	if (jn.fd >= 0)
		close(jn.fd);
	jn.fd = -1;
}

/* 0 when connected; the journal may be absent (no systemd, a
 * container). */
static int connect_journal(void)
{
	uint64_t now = mono_ns();
	int fd;

	if (jn.fd >= 0)
		return 0;
	if (now < jn.next_connect)
		return -1;
	jn.next_connect = now + RECONNECT_NS;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	/* Connected, so that writability waits for the journal's queue. */
	if (connect(fd, (struct sockaddr *)&jn.addr, sizeof jn.addr) == -1) {
		if (!jn.absent_logged)
			log_warn("findings journal: cannot reach %s: %s; "
				 "findings are dropped until it can be "
				 "reached",
				 jn.addr.sun_path, strerror(errno));
		jn.absent_logged = 1;
		close(fd);
		return -1;
	}
	jn.writable = event_new(jn.base, fd, EV_WRITE, on_writable, NULL);
	if (jn.writable == NULL) {
		close(fd);
		return -1;
	}
	if (jn.absent_logged)
		log_info("findings journal: %s reached", jn.addr.sun_path);
	jn.absent_logged = 0;
	jn.fd = fd;
	return 0;
}

/* What does not fit in a datagram goes as a sealed memfd. */
static int send_memfd(const struct entry *e)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	struct msghdr mh = {0};
	struct cmsghdr *cmsg;
	int fd =
	    memfd_create("ctxleakd-journal", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	int rc = -1;

	if (fd == -1)
		return -1;
	if (write(fd, e->data, e->len) != (ssize_t)e->len ||
	    fcntl(fd, F_ADD_SEALS,
		  F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) ==
		-1)
		goto out;
	memset(&control, 0, sizeof control);
	mh.msg_control = control.buf;
	mh.msg_controllen = sizeof control.buf;
	cmsg = CMSG_FIRSTHDR(&mh);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));
	rc = sendmsg(jn.fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) == -1 ? -1 : 0;
out:
	close(fd);
	return rc;
}

/* 0 sent, 1 the journal cannot take it yet, -1 lost. */
static int send_entry(const struct entry *e)
{
	if (connect_journal() == -1)
		return -1;
	if (send(jn.fd, e->data, e->len, MSG_DONTWAIT | MSG_NOSIGNAL) ==
	    (ssize_t)e->len)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return 1;
	if (errno == EMSGSIZE || errno == ENOBUFS)
		return send_memfd(e) == 0 ? 0 : -1;
	/* The journal went away (restarted): connect again next time. */
	disconnect();
	return -1;
}

static void pop(int sent)
{
	struct entry *e = jn.head;

	jn.head = e->next;
	if (jn.head == NULL)
		jn.tail = &jn.head;
	jn.queued--;
	jn.queued_bytes -= e->len;
	if (sent)
		jn.stats.sent++;
	else
		jn.stats.dropped++;
	free(e);
}

static void flush(void)
{
	int rc;

	while (jn.head != NULL) {
		if ((rc = send_entry(jn.head)) == 1) {
			event_add(jn.writable, NULL);
			return;
		}
		pop(rc == 0);
	}
	if (jn.full_logged)
		log_info("findings journal: the queue is empty again");
	jn.full_logged = 0;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	flush();
}

/* ------------------------------------------------------------ API */

void fleet_journal_open(struct event_base *base)
{
	const char *path = getenv(FLEET_JOURNAL_ENV);

	if (path == NULL || *path == '\0')
		path = FLEET_JOURNAL_SOCKET;
	if (strlen(path) >= sizeof jn.addr.sun_path)
		fatalx("$%s: path longer than %zu bytes", FLEET_JOURNAL_ENV,
		       sizeof jn.addr.sun_path - 1);
	jn.base = base;
	jn.addr.sun_family = AF_UNIX;
	memcpy(jn.addr.sun_path, path, strlen(path) + 1);
	jn.tail = &jn.head;
	connect_journal();
}

void fleet_journal_add(const struct store_finding_row *f, const char *host)
{
	struct fleet_buf b = {0};
	struct entry *e;

	build(&b, f, host);
	if (b.oom || jn.queued >= QUEUE_MAX_ENTRIES ||
	    jn.queued_bytes + b.len > QUEUE_MAX_BYTES ||
	    (e = malloc(sizeof *e + b.len)) == NULL) {
		if (!b.oom && !jn.full_logged)
			log_warn("findings journal: the journal takes entries "
				 "slower than findings come; dropping them "
				 "until it catches up");
		jn.full_logged = 1;
		jn.stats.dropped++;
		fleet_buf_free(&b);
		return;
	}
	e->next = NULL;
	e->len = b.len;
	memcpy(e->data, b.p, b.len);
	fleet_buf_free(&b);
	*jn.tail = e;
	jn.tail = &e->next;
	jn.queued++;
	jn.queued_bytes += e->len;
	if (jn.queued == 1)
		flush();
}

void fleet_journal_close(void)
{
	uint64_t deadline = mono_ns() + CLOSE_WAIT_MS * 1000000ull;
	uint64_t now;

	if (jn.base == NULL)
		return;
	/* The loop is ending: the last commit's entries may wait a moment
	 * for a journal that is merely busy. */
	flush();
	while (jn.head != NULL && jn.fd >= 0 && (now = mono_ns()) < deadline) {
		struct pollfd pfd = {jn.fd, POLLOUT, 0};

		if (poll(&pfd, 1, (int)((deadline - now) / 1000000) + 1) <= 0)
			break;
		flush();
	}
	while (jn.head != NULL)
		pop(0);
	disconnect();
	jn.base = NULL;
}

void fleet_journal_stats(struct fleet_journal_stats *out)
{
	*out = jn.stats;
}
