/*
 * mkseeds.c: writes the seed corpus of fuzz_ingest (make fuzz-seeds).
 *
 * The well-formed seeds are real: the client library, in a forked child,
 * runs the worked example of docs/DESIGN.md (and a two-thread hand-off) under
 * each backend against a socket this program listens on, and the bytes it
 * sends are saved as they came.  The malformed seeds are cut from them or
 * written by hand: what a hostile or broken peer sends.  Each file starts
 * with the two option bytes fuzz_ingest reads (chunking, --keep mode, the
 * stream sent again on a second connection...).
 *
 * Usage: mkseeds DIR
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ctxleak.h"
#include "proto.h"

#define ACCEPT_TIMEOUT_MS 10000

struct stream {
	unsigned char *buf;
	size_t len;
};

static void die(const char *what)
{
	fprintf(stderr, "mkseeds: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* The worked example: one event-loop thread, callbacks wrapped. */
static void worked_example(void)
{
	uint64_t a, b, c, token_a, token_b;

	ctxleak_resume(0);
	a = ctxleak_begin("GET /a");
	ctxleak_tag("user", "alice");
	token_a = ctxleak_capture();
	ctxleak_suspend();
	ctxleak_resume(0);
	b = ctxleak_begin("GET /b");
	ctxleak_tag("user", "bob");
	token_b = ctxleak_capture();
	ctxleak_suspend();
	ctxleak_resume(token_a);
	ctxleak_event("db.done", NULL);
	ctxleak_tag("status", "200");
	ctxleak_end(a);
	ctxleak_suspend();
	ctxleak_resume(token_b);
	ctxleak_event("db.done", "slow");
	ctxleak_end(b);
	ctxleak_suspend();
	ctxleak_resume(0);
	c = ctxleak_begin("GET /c");
	ctxleak_end(c);
	ctxleak_suspend();
}

static void *pool_worker(void *arg)
{
	uint64_t token = *(uint64_t *)arg;
	uint64_t child;

	ctxleak_resume(token);
	child = ctxleak_begin_child("db query");
	ctxleak_event("db.done", NULL);
	ctxleak_end(child);
	ctxleak_suspend();
	return NULL;
}

/* A request handed to a second thread and back, one scope left open. */
static void hand_off(void)
{
	uint64_t req = ctxleak_begin("POST /job");
	uint64_t token = ctxleak_capture();
	pthread_t t;

	ctxleak_tag("job", "42");
	if (pthread_create(&t, NULL, pool_worker, &token) != 0)
		die("pthread_create");
	pthread_join(t, NULL);
	ctxleak_begin_child("never ended");
	ctxleak_end(req);
}

/* Listen on a fresh socket in dir; fills sun. */
static int listen_on(const char *dir, struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	snprintf(sun->sun_path, sizeof sun->sun_path, "%s/seed.sock", dir);
	unlink(sun->sun_path);
	if (fd == -1 || bind(fd, (struct sockaddr *)sun, sizeof *sun) == -1 ||
	    listen(fd, 4) == -1)
		die("listen");
	return fd;
}

static void run_client(const char *path, enum ctxleak_backend backend,
		       void (*scenario)(void))
{
	struct ctxleak_options opt;

	ctxleak_options_init(&opt);
	opt.socket_path = path;
	opt.backend = backend;
	opt.app = "seed";
	if (ctxleak_init(&opt) != CTXLEAK_OK)
		_exit(2);
	scenario();
	ctxleak_shutdown();
	_exit(0);
}

/* Everything the peer sends on its first connection, up to EOF. */
static struct stream read_stream(int lfd)
{
	struct pollfd pfd = {.fd = lfd, .events = POLLIN};
	struct stream s = {NULL, 0};
	size_t cap = 0;
	ssize_t n;
	int fd;

	if (poll(&pfd, 1, ACCEPT_TIMEOUT_MS) != 1 ||
	    (fd = accept(lfd, NULL, NULL)) == -1)
		die("accept");
	do {
		if (s.len + 4096 > cap) {
			cap = cap * 2 + 4096;
			if ((s.buf = realloc(s.buf, cap)) == NULL)
				die("realloc");
		}
		n = read(fd, s.buf + s.len, cap - s.len);
		if (n > 0)
			s.len += (size_t)n;
	} while (n > 0 || (n == -1 && errno == EINTR));
	close(fd);
	return s;
}

static struct stream capture(const char *tmp, enum ctxleak_backend backend,
			     void (*scenario)(void))
{
	struct sockaddr_un sun;
	int lfd = listen_on(tmp, &sun);
	pid_t pid = fork();
	struct stream s;
	int st;

	if (pid == -1)
		die("fork");
	if (pid == 0)
		run_client(sun.sun_path, backend, scenario);
	s = read_stream(lfd);
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0) {
		fprintf(stderr, "mkseeds: the client failed\n");
		exit(1);
	}
	close(lfd);
	unlink(sun.sun_path);
	return s;
}

static void save(const char *dir, const char *name, unsigned char opt0,
		 unsigned char opt1, const void *buf, size_t len)
{
	char path[4096];
	unsigned char opts[2] = {opt0, opt1};
	FILE *f;

	snprintf(path, sizeof path, "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL)
		die(path);
	if (fwrite(opts, 1, 2, f) != 2 || fwrite(buf, 1, len, f) != len ||
	    fclose(f) != 0)
		die(path);
}

/* The length of the HELLO map that starts every stream, as the decoder
 * frames it. */
static size_t hello_len(const struct stream *s)
{
	struct proto_decoder *d = proto_decoder_new(NULL);
	struct proto_msg msg;
	size_t len = 0;

	if (d == NULL)
		die("proto_decoder_new");
	if (proto_decoder_feed(d, s->buf, s->len) == 0 &&
	    proto_decoder_next(d, &msg) == PROTO_OK && msg.is_hello)
		len = (size_t)proto_decoder_offset(d);
	proto_decoder_free(d);
	if (len == 0) {
		fprintf(stderr, "mkseeds: the stream starts without HELLO\n");
		exit(1);
	}
	return len;
}

static void save_hostile(const char *dir, const struct stream *good)
{
	static const unsigned char string_4g[] = {0x98, 0x04, 0x01, 0x01, 0x01,
						  0x01, 0x00, 0xa1, 'k',  0xdb,
						  0xff, 0xff, 0xff, 0xff};
	static const unsigned char array_4g[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
	static const unsigned char wrong_type[] = {0x96, 0xa1, '4',  0x01,
						   0x01, 0x01, 0x01, 0x00};
	size_t hl = hello_len(good);
	unsigned char buf[8192];

	save(dir, "truncated", 0x04, 7, good->buf, good->len / 2);
	save(dir, "no-hello", 0x03, 1, good->buf + hl, good->len - hl);
	if (hl + sizeof string_4g > sizeof buf)
		return;
	memcpy(buf, good->buf, hl);
	memcpy(buf + hl, string_4g, sizeof string_4g);
	save(dir, "string-4g", 0x0f, 0, buf, hl + sizeof string_4g);
	memcpy(buf + hl, array_4g, sizeof array_4g);
	save(dir, "array-4g", 0x0f, 0, buf, hl + sizeof array_4g);
	memcpy(buf + hl, wrong_type, sizeof wrong_type);
	save(dir, "wrong-type", 0x0f, 0, buf, hl + sizeof wrong_type);
	memset(buf + hl, 0x91, 64); /* 64 nested one-element arrays */
	save(dir, "deep", 0x0f, 0, buf, hl + 64);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		enum ctxleak_backend backend;
		void (*scenario)(void);
		unsigned char opt0, opt1;
	} seeds[] = {
	    {"worked-thread", CTXLEAK_BACKEND_THREAD, worked_example, 0x0f, 0},
	    {"worked-global", CTXLEAK_BACKEND_GLOBAL, worked_example, 0x83, 5},
	    {"worked-task", CTXLEAK_BACKEND_TASK, worked_example, 0x00, 0},
	    {"hand-off-thread", CTXLEAK_BACKEND_THREAD, hand_off, 0x86, 9},
	    {"hand-off-task", CTXLEAK_BACKEND_TASK, hand_off, 0x0c, 3},
	    /* Sent again on a second connection, to the process lingering
	     * or finalised before it: the path of records sent again. */
	    {"resent-lingering", CTXLEAK_BACKEND_THREAD, worked_example, 0x6f,
	     0},
	    {"resent-finalised", CTXLEAK_BACKEND_TASK, hand_off, 0xcc, 3},
	};
	char tmp[] = "/tmp/ctxleak-seeds-XXXXXX";
	struct stream s, thread = {NULL, 0};

	if (argc != 2) {
		fprintf(stderr, "usage: mkseeds DIR\n");
		return 2;
	}
	if (mkdtemp(tmp) == NULL)
		die("mkdtemp");
	for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
		s = capture(tmp, seeds[i].backend, seeds[i].scenario);
		save(argv[1], seeds[i].name, seeds[i].opt0, seeds[i].opt1,
		     s.buf, s.len);
		if (i == 0)
			thread = s;
		else
			free(s.buf);
	}
	save_hostile(argv[1], &thread);
	free(thread.buf);
	rmdir(tmp);
	return 0;
}
