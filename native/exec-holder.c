/*
 * exec-holder: a process started ahead of time that becomes another program later.
 *
 *   exec-holder FD
 *
 * The agent starts it early (a Node process with a large heap pays milliseconds per fork: page tables are copied
 * on the event loop's thread) with every descriptor the program will need already in place — its stdin socket,
 * stdout and stderr pipes, a status pipe — plus a control pipe at FD. When the program is to run, the agent
 * writes its command line to FD as NUL-terminated strings (the file to execute first, then its arguments) and
 * closes the pipe; the holder closes FD and execv()s the file. Same pid, same session, same descriptors: to the
 * agent it is as if the program had been spawned at that moment, minus the fork.
 *
 * EOF with nothing written means "not needed after all": exit 0. A command line that cannot be executed: a line
 * "error exec FILE: REASON" on stderr, exit 127 (as a shell would). Bad usage: exit 2 with a usage line (the agent
 * probes for that before relying on the holder).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_COMMAND (1u << 20)
#define MAX_ARGS 4096

int main(int argc, char **argv)
{
	char *end = NULL;
	long fd = argc == 2 ? strtol(argv[1], &end, 10) : -1;
	if (argc != 2 || !end || *end != '\0' || fd < 3 || fd > 1024) {
		fprintf(stderr, "error usage: exec-holder FD  (FD: a pipe that brings FILE\\0ARG\\0...; EOF runs it)\n");
		return 2;
	}
	char *buf = malloc(MAX_COMMAND + 1);
	if (!buf) {
		fprintf(stderr, "error out of memory\n");
		return 1;
	}
	size_t len = 0;
	for (;;) {
		if (len == MAX_COMMAND) {
			fprintf(stderr, "error command line longer than %u bytes\n", MAX_COMMAND);
			return 1;
		}
		ssize_t n = read((int)fd, buf + len, MAX_COMMAND - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "error reading the command line: %s\n", strerror(errno));
			return 1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close((int)fd);
	if (len == 0)
		return 0;
	if (buf[len - 1] != '\0') {
		fprintf(stderr, "error command line not NUL-terminated\n");
		return 1;
	}
	static char *args[MAX_ARGS + 1];
	size_t count = 0;
	for (size_t off = 0; off < len; off += strlen(buf + off) + 1) {
		if (count == MAX_ARGS) {
			fprintf(stderr, "error more than %d arguments\n", MAX_ARGS);
			return 1;
		}
		args[count++] = buf + off;
	}
	args[count] = NULL;
	execv(args[0], args);
	fprintf(stderr, "error exec %s: %s\n", args[0], strerror(errno));
	return 127;
}
