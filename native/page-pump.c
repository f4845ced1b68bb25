/*
 * page-pump: moves CRIU's page-server conversation between `criu dump` and the direct page channel (a TCP
 * connection to the target's `criu page-server`) without the agent's event loop in the middle.
 *
 *   fd 0  the page channel (TCP, already authenticated by the agent)
 *   fd 1  the agent's end of the socketpair whose other end is `criu dump --ps-socket`
 *   fd 2  progress and errors, one line each:  "bytes N" (pages moved so far), "error MESSAGE"
 *
 * Two threads: the bulk direction (dump → channel) and the reply direction (channel → dump: the page server's
 * answers to flush/close requests). The bulk direction copies through user space with large reads, on purpose:
 * splicing the dump's pages into loopback TCP left a ~200 ms retransmission stall at the end of every dump
 * (docs/migration-performance.md, levers 4 and 8; a splicing variant of this pump measured 2x slower than copying).
 *
 * Exit status: 0 when the dump closed its end and every byte reached the channel; 1 on any I/O error (the agent
 * then kills the dump, which resumes the task on the source); 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BULK_BUFFER (4u << 20)
#define REPLY_BUFFER (64u << 10)
#define PROGRESS_EVERY (32ull << 20)

static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int failed;

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	pthread_mutex_lock(&report_lock);
	ssize_t off = 0;
	while (off < n) {
		ssize_t w = write(2, line + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += w;
	}
	pthread_mutex_unlock(&report_lock);
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

/* dump (fd 1) → channel (fd 0) */
static void *bulk(void *arg)
{
	(void)arg;
	unsigned long long total = 0, next_report = PROGRESS_EVERY;
	char *buf = malloc(BULK_BUFFER);
	if (!buf) {
		report("error out of memory");
		failed = 1;
		return NULL;
	}
	for (;;) {
		ssize_t n = read(1, buf, BULK_BUFFER);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			report("error reading from the dump: %s", strerror(errno));
			failed = 1;
			break;
		}
		if (n == 0)
			break;
		if (write_all(0, buf, (size_t)n) < 0) {
			report("error writing to the page channel: %s", strerror(errno));
			failed = 1;
			break;
		}
		total += (unsigned long long)n;
		if (total >= next_report) {
			report("bytes %llu", total);
			next_report = total + PROGRESS_EVERY;
		}
	}
	if (!failed) {
		report("bytes %llu", total);
		/* The page server sees the end of the conversation; replies may still come back on fd 0. */
		shutdown(0, SHUT_WR);
	}
	free(buf);
	return NULL;
}

/* channel (fd 0) → dump (fd 1) */
static void *replies(void *arg)
{
	(void)arg;
	char *buf = malloc(REPLY_BUFFER);
	if (!buf) {
		report("error out of memory");
		failed = 1;
		return NULL;
	}
	for (;;) {
		ssize_t n = read(0, buf, REPLY_BUFFER);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			/* The bulk thread failing first shuts nothing down here; a reset after our end is normal. */
			if (!failed)
				report("error reading from the page channel: %s", strerror(errno));
			failed = 1;
			break;
		}
		if (n == 0)
			break;
		if (write_all(1, buf, (size_t)n) < 0) {
			/* The dump is gone: the bulk thread sees it too and reports. */
			break;
		}
	}
	shutdown(1, SHUT_WR);
	free(buf);
	return NULL;
}

int main(int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		fprintf(stderr, "error usage: page-pump  (fd 0: page channel, fd 1: dump socket, fd 2: progress)\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int type;
	socklen_t len = sizeof(type);
	if (getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || getsockopt(1, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
		fprintf(stderr, "error fd 0 and fd 1 must be sockets: %s\n", strerror(errno));
		return 2;
	}
	pthread_t a, b;
	if (pthread_create(&a, NULL, bulk, NULL) != 0 || pthread_create(&b, NULL, replies, NULL) != 0) {
		fprintf(stderr, "error cannot start threads\n");
		return 1;
	}
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return failed ? 1 : 0;
}
