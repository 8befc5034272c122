/*
 * store_lock.c: one ctxleakd per database.
 *
 * Two daemons writing one file would each assign the same process, site
 * and request ids from the same max(id) and fail on the other's rows
 * ("UNIQUE constraint failed: processes.id": everything the second one
 * received was lost), and two starting at once on a new file would both
 * try to create the schema.  SQLite's own locks do not exclude a second
 * writer for longer than one transaction, so the daemon holds a lock of
 * its own for its whole life: flock(2) on DB-path ".lock", a file beside
 * the database that holds the pid of the daemon that has it.  The kernel
 * drops the lock when that daemon exits in whatever way, so a crash
 * leaves no stale lock behind; the file itself stays.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "ctxleakd.h"

/* The pid the holder wrote, or 0 when it has not yet (it is starting at
 * this very moment) or the file says something else. */
static long holder_pid(int fd)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	char *end;
	long pid;

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	pid = strtol(buf, &end, 10);
	return end != buf && (*end == '\n' || *end == '\0') && pid > 0 ? pid
								       : 0;
}

static void say_held(int fd, const char *db, char *err, size_t errlen)
{
	long pid = holder_pid(fd);

	if (pid > 0)
		snprintf(err, errlen,
			 "database %s is in use by another ctxleakd (pid %ld)",
			 db, pid);
	else
		snprintf(err, errlen,
			 "database %s is in use by another ctxleakd", db);
}

int store_lock(const char *db, char *err, size_t errlen)
{
	char path[4096 + 8], pid[32];
	int fd, len;

	snprintf(path, sizeof path, "%s.lock", db);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1) {
		snprintf(err, errlen, "cannot open lock file %s: %s", path,
			 strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		if (errno == EWOULDBLOCK)
			say_held(fd, db, err, errlen);
		else
			snprintf(err, errlen, "cannot lock %s: %s", path,
				 strerror(errno));
		close(fd);
		return -1;
	}
	len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) == -1 || pwrite(fd, pid, (size_t)len, 0) != len)
		log_warn("cannot write the pid into %s: %s", path,
			 strerror(errno));
	return fd;
}
