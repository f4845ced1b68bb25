/*
 * A TEST DOUBLE OF THE NVIDIA DRIVER (libcuda.so.1), for CPU-only machines where the real driver cannot exist.
 * It is loaded by the real cuda-checkpoint-helper through SPOTWATCH_CUDA_LIBRARY, so every line of the helper
 * and of spotwatch's CUDA hook runs for real; only the driver is pretended.
 *
 * It implements the documented state machine of the checkpoint API per pid:
 *   lock: running -> locked, checkpoint: locked -> checkpointed, restore: checkpointed -> locked,
 *   unlock: locked -> running; anything else returns CUDA_ERROR_ILLEGAL_STATE (401).
 * State lives in files ($FAKE_CUDA_DIR/<pid>, holding the state number) because every helper call is its own
 * process. A pid without a file is not a CUDA process (GetState returns $FAKE_CUDA_NOT_CUDA_CODE, default 3).
 *
 * Failures are injected through the environment:
 *   FAKE_CUDA_FAIL="op=code[/state],…"  the op returns `code` without its transition (and, with /state, leaves
 *                                       the pid in that state number, e.g. 3 = failed)
 *   FAKE_CUDA_DELAY_MS="op=ms,…"        the op sleeps first (for deadline tests)
 *   FAKE_CUDA_INIT_FAIL=code            cuInit returns `code` (e.g. 100, CUDA_ERROR_NO_DEVICE)
 *   FAKE_CUDA_LOG=path                  appends "op pid timeoutMs" per call, for tests to check call order
 * ops: lock, checkpoint, restore, unlock, state.
 * Built with -DFAKE_OLD_DRIVER it lacks the checkpoint symbols, like a driver older than 570.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef struct {
	unsigned int timeoutMs;
	unsigned int reserved0;
	unsigned long long reserved1[7];
} CUcheckpointLockArgs;

static int initialized;

CUresult cuInit(unsigned int flags)
{
	(void)flags;
	const char *f = getenv("FAKE_CUDA_INIT_FAIL");
	if (f && *f) return atoi(f);
	initialized = 1;
	return 0;
}

CUresult cuDriverGetVersion(int *v)
{
	*v = 12080;
	return 0;
}

static const struct {
	int code;
	const char *name, *desc;
} errors[] = {
	{0, "CUDA_SUCCESS", "no error"},
	{1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
	{3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
	{100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
	{401, "CUDA_ERROR_ILLEGAL_STATE", "the operation cannot be performed in the present state"},
	{500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
	{801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
	{909, "CUDA_ERROR_TIMEOUT", "timeout"},
	{999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

CUresult cuGetErrorName(CUresult e, const char **s)
{
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
		if (errors[i].code == e) {
			*s = errors[i].name;
			return 0;
		}
	*s = NULL;
	return 1;
}

CUresult cuGetErrorString(CUresult e, const char **s)
{
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++)
		if (errors[i].code == e) {
			*s = errors[i].desc;
			return 0;
		}
	*s = NULL;
	return 1;
}

#ifndef FAKE_OLD_DRIVER
/* Value of `op` in a "op=value,op=value" list, or NULL. */
static const char *lookup(const char *env, const char *op)
{
	const char *list = getenv(env);
	if (!list) return NULL;
	size_t n = strlen(op);
	for (const char *p = list; p && *p;) {
		if (strncmp(p, op, n) == 0 && p[n] == '=') return p + n + 1;
		p = strchr(p, ',');
		if (p) p++;
	}
	return NULL;
}

static void path_of(int pid, char *buf, size_t n)
{
	const char *dir = getenv("FAKE_CUDA_DIR");
	snprintf(buf, n, "%s/%d", dir ? dir : "/tmp", pid);
}

static int read_state(int pid, int *st)
{
	char p[4096];
	path_of(pid, p, sizeof p);
	FILE *f = fopen(p, "r");
	if (!f) return -1;
	int ok = fscanf(f, "%d", st) == 1;
	fclose(f);
	return ok ? 0 : -1;
}

static void write_state(int pid, int st)
{
	char p[4096];
	path_of(pid, p, sizeof p);
	FILE *f = fopen(p, "w");
	if (!f) return;
	fprintf(f, "%d\n", st);
	fclose(f);
}

static CUresult step(const char *op, int pid, unsigned int timeout_ms, int from, int to)
{
	const char *logp = getenv("FAKE_CUDA_LOG");
	if (logp) {
		FILE *l = fopen(logp, "a");
		if (l) {
			fprintf(l, "%s %d %u\n", op, pid, timeout_ms);
			fclose(l);
		}
	}
	if (!initialized) return 3;
	const char *d = lookup("FAKE_CUDA_DELAY_MS", op);
	if (d) {
		long ms = atol(d);
		struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
		nanosleep(&ts, NULL);
	}
	int st;
	if (read_state(pid, &st)) {
		const char *c = getenv("FAKE_CUDA_NOT_CUDA_CODE");
		return c && *c ? atoi(c) : 3;
	}
	const char *f = lookup("FAKE_CUDA_FAIL", op);
	if (f) {
		int code = atoi(f);
		const char *slash = strchr(f, '/');
		const char *comma = strchr(f, ',');
		if (slash && (!comma || slash < comma)) write_state(pid, atoi(slash + 1));
		return code;
	}
	if (from < 0) return 0;
	if (st != from) return 401;
	write_state(pid, to);
	return 0;
}

CUresult cuCheckpointProcessGetState(int pid, int *state)
{
	CUresult r = step("state", pid, 0, -1, -1);
	if (r == 0 && read_state(pid, state)) return 1;
	return r;
}

CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args)
{
	return step("lock", pid, args ? args->timeoutMs : 0, 0, 1);
}

CUresult cuCheckpointProcessCheckpoint(int pid, void *args)
{
	(void)args;
	return step("checkpoint", pid, 0, 1, 2);
}

CUresult cuCheckpointProcessRestore(int pid, void *args)
{
	(void)args;
	return step("restore", pid, 0, 2, 1);
}

CUresult cuCheckpointProcessUnlock(int pid, void *args)
{
	(void)args;
	return step("unlock", pid, 0, 1, 0);
}
#endif
