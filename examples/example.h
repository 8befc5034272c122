/*
 * example.h: what every example worker shares: reading the request count
 * from the command line, starting libctxleak, the rule that an example
 * exits 0 whether or not a daemon is listening (the library never makes
 * its host fail), and the work queue of the thread pools.
 */
#ifndef CTXLEAK_EXAMPLE_H
#define CTXLEAK_EXAMPLE_H

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctxleak.h"

/* The last argument, when it is a number, is how many requests to serve. */
static inline unsigned example_requests(int argc, char **argv, unsigned def)
{
	char *end;
	unsigned long n;

	if (argc < 2 || argv[argc - 1][0] == '-')
		return def;
	errno = 0;
	n = strtoul(argv[argc - 1], &end, 10);
	if (errno || *end || n == 0 || n > 10000000) {
		fprintf(stderr, "%s: bad request count '%s'\n", argv[0],
			argv[argc - 1]);
		exit(2);
	}
	return (unsigned)n;
}

/* opt NULL: everything from the environment (CTXLEAK_SOCKET,
 * CTXLEAK_BACKEND, CTXLEAK_APP).  A library that cannot start is reported
 * and the example serves its requests anyway, as a real service would. */
static inline void example_start(const char *prog,
				 const struct ctxleak_options *opt)
{
	int rc = ctxleak_init(opt);

	if (rc != CTXLEAK_OK && rc != CTXLEAK_EDISABLED)
		fprintf(stderr, "%s: ctxleak_init: %s\n", prog,
			ctxleak_strerror(rc));
}

static inline void example_fail(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

/* A link in a work queue: the first member of what is queued. */
struct example_link {
	struct example_link *next;
};

/* A work queue between threads: FIFO, unbounded, closed once the
 * producer is done. */
struct example_queue {
	pthread_mutex_t lock;
	pthread_cond_t ready;		   /* signalled on push and close */
	struct example_link *head, **tail; /* tail: where the next goes */
	int closed;			   /* nothing more will be pushed */
};

static inline void example_queue_init(struct example_queue *q)
{
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->ready, NULL);
	q->head = NULL;
	q->tail = &q->head;
	q->closed = 0;
}

static inline void example_queue_push(struct example_queue *q,
				      struct example_link *item)
{
	pthread_mutex_lock(&q->lock);
	item->next = NULL;
	*q->tail = item;
	q->tail = &item->next;
	pthread_cond_signal(&q->ready);
	pthread_mutex_unlock(&q->lock);
}

static inline void example_queue_close(struct example_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = 1;
	pthread_cond_broadcast(&q->ready);
	pthread_mutex_unlock(&q->lock);
}

/* NULL once the queue is closed and drained. */
static inline struct example_link *example_queue_pop(struct example_queue *q)
{
	struct example_link *item;

	pthread_mutex_lock(&q->lock);
	while (!q->head && !q->closed)
		pthread_cond_wait(&q->ready, &q->lock);
	item = q->head;
	if (item) {
		q->head = item->next;
		if (!q->head)
			q->tail = &q->head;
	}
	pthread_mutex_unlock(&q->lock);
	return item;
}

#endif /* CTXLEAK_EXAMPLE_H */
