/*
 * cuda-checkpoint-helper: spotwatch's tiny bridge to the CUDA driver's process checkpoint API.
 *
 *   cuda-checkpoint-helper probe
 *   cuda-checkpoint-helper state|lock|checkpoint|restore|unlock PID [--timeout-ms N]
 *
 * Prints exactly one JSON line on stdout:
 *   {"op":"lock","pid":123,"ok":true,"state":"locked","error":null,"code":0,"ms":1.234}
 * `state` is the process's CUDA state read with cuCheckpointProcessGetState after the operation (null when it
 * cannot be read), `code` the CUresult of the operation, `ms` the operation's own duration.
 *
 * Built without the CUDA toolkit: libcuda.so.1 is opened with dlopen and every type below is written by hand
 * from the documented driver API (CUDA Driver API, "CUDA Checkpointing"; cuda.h of CUDA 12.8+):
 *   CUresult cuCheckpointProcessLock(int pid, CUcheckpointLockArgs *args);        args optional
 *   CUresult cuCheckpointProcessCheckpoint(int pid, CUcheckpointCheckpointArgs *args);   args optional
 *   CUresult cuCheckpointProcessRestore(int pid, CUcheckpointRestoreArgs *args);   args optional
 *   CUresult cuCheckpointProcessUnlock(int pid, CUcheckpointUnlockArgs *args);     args optional
 *   CUresult cuCheckpointProcessGetState(int pid, CUprocessState *state);
 *
 * Exit codes (stable; src/engines/cuda/helper-protocol.ts mirrors them):
 *   0 ok, 2 bad usage, 3 libcuda.so.1 missing (no NVIDIA driver), 4 a symbol is missing (driver too old for
 *   the checkpoint API), 5 the CUDA call failed, 6 cuInit failed (driver present but unusable: no device, …).
 *
 * SPOTWATCH_CUDA_LIBRARY overrides the library opened (default libcuda.so.1); tests use it to load a test double
 * of the driver.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum {
	EXIT_OK = 0,
	EXIT_USAGE = 2,
	EXIT_NO_DRIVER = 3,
	EXIT_DRIVER_TOO_OLD = 4,
	EXIT_CUDA_ERROR = 5,
	EXIT_INIT_FAILED = 6,
};

typedef int CUresult; /* enum cudaError_enum; CUDA_SUCCESS = 0 */
typedef unsigned long long cuuint64_t;

/* enum CUprocessState (values fixed by the driver ABI). */
enum {
	CU_PROCESS_STATE_RUNNING = 0,
	CU_PROCESS_STATE_LOCKED = 1,
	CU_PROCESS_STATE_CHECKPOINTED = 2,
	CU_PROCESS_STATE_FAILED = 3,
	CU_PROCESS_STATE_CHECKPOINTING = 4, /* newer drivers */
	CU_PROCESS_STATE_RESTORING = 5,     /* newer drivers */
};
typedef int CUprocessState;

typedef struct {
	unsigned int timeoutMs; /* 0: no timeout */
	unsigned int reserved0;
	cuuint64_t reserved1[7];
} CUcheckpointLockArgs;

typedef CUresult (*fn_cuInit)(unsigned int);
typedef CUresult (*fn_cuDriverGetVersion)(int *);
typedef CUresult (*fn_cuGetErrorString)(CUresult, const char **);
typedef CUresult (*fn_cuGetErrorName)(CUresult, const char **);
typedef CUresult (*fn_pid_args)(int, void *);
typedef CUresult (*fn_get_state)(int, CUprocessState *);

static const char *op = "?";
static long pid = -1;

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Writes s as a JSON string (or null). */
static void json_str(const char *s)
{
	if (!s) {
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '"': fputs("\\\"", stdout); break;
		case '\\': fputs("\\\\", stdout); break;
		case '\n': fputs("\\n", stdout); break;
		case '\r': fputs("\\r", stdout); break;
		case '\t': fputs("\\t", stdout); break;
		default:
			if (*p < 0x20) printf("\\u%04x", *p);
			else putchar(*p);
		}
	}
	putchar('"');
}

static const char *state_name(CUprocessState s)
{
	switch (s) {
	case CU_PROCESS_STATE_RUNNING: return "running";
	case CU_PROCESS_STATE_LOCKED: return "locked";
	case CU_PROCESS_STATE_CHECKPOINTED: return "checkpointed";
	case CU_PROCESS_STATE_FAILED: return "failed";
	case CU_PROCESS_STATE_CHECKPOINTING: return "checkpointing";
	case CU_PROCESS_STATE_RESTORING: return "restoring";
	default: return "unknown";
	}
}

/* Prints the one JSON line and returns `rc`. `extra` is appended verbatim inside the object (may be NULL). */
static int report(int rc, const char *state, const char *error, int code, double ms, const char *extra)
{
	printf("{\"op\":");
	json_str(op);
	if (pid >= 0) printf(",\"pid\":%ld", pid);
	else fputs(",\"pid\":null", stdout);
	printf(",\"ok\":%s,\"state\":", rc == EXIT_OK ? "true" : "false");
	json_str(state);
	fputs(",\"error\":", stdout);
	json_str(error);
	printf(",\"code\":%d,\"ms\":%.3f,\"exit\":%d", code, ms, rc);
	if (extra) fputs(extra, stdout);
	fputs("}\n", stdout);
	fflush(stdout);
	return rc;
}

static int usage(const char *why)
{
	char msg[512];
	snprintf(msg, sizeof msg,
		 "%s; usage: cuda-checkpoint-helper probe | state|lock|checkpoint|restore|unlock PID [--timeout-ms N]", why);
	return report(EXIT_USAGE, NULL, msg, 0, 0, NULL);
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) return -1;
	*out = v;
	return 0;
}

static fn_cuGetErrorString p_errstr;
static fn_cuGetErrorName p_errname;

/* "CUDA_ERROR_X: description" for a CUresult. */
static const char *cu_error(CUresult r, char *buf, size_t n)
{
	const char *name = NULL, *desc = NULL;
	if (p_errname) p_errname(r, &name);
	if (p_errstr) p_errstr(r, &desc);
	snprintf(buf, n, "%s: %s", name ? name : "CUDA_ERROR_UNKNOWN_CODE", desc ? desc : "no description");
	return buf;
}

int main(int argc, char **argv)
{
	long timeout_ms = -1;
	if (argc < 2) return usage("missing operation");
	op = argv[1];
	int is_probe = strcmp(op, "probe") == 0;
	const char *sym = NULL;
	if (strcmp(op, "state") == 0) sym = "cuCheckpointProcessGetState";
	else if (strcmp(op, "lock") == 0) sym = "cuCheckpointProcessLock";
	else if (strcmp(op, "checkpoint") == 0) sym = "cuCheckpointProcessCheckpoint";
	else if (strcmp(op, "restore") == 0) sym = "cuCheckpointProcessRestore";
	else if (strcmp(op, "unlock") == 0) sym = "cuCheckpointProcessUnlock";
	else if (!is_probe) return usage("unknown operation");

	int i = 2;
	if (!is_probe) {
		if (argc < 3) return usage("missing PID");
		if (parse_long(argv[2], 1, INT_MAX, &pid)) return usage("PID must be a positive integer");
		i = 3;
	}
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--timeout-ms") == 0 && i + 1 < argc) {
			if (parse_long(argv[++i], 0, 0xffffffffL, &timeout_ms))
				return usage("--timeout-ms takes a non-negative integer");
		} else {
			return usage("unexpected argument");
		}
	}

	const char *lib = getenv("SPOTWATCH_CUDA_LIBRARY");
	if (!lib || !*lib) lib = "libcuda.so.1";
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		char msg[768];
		const char *e = dlerror();
		snprintf(msg, sizeof msg, "no NVIDIA driver: cannot load %s (%s)", lib, e ? e : "unknown error");
		return report(EXIT_NO_DRIVER, NULL, msg, 0, 0, NULL);
	}

	fn_cuInit p_init = (fn_cuInit)dlsym(h, "cuInit");
	fn_cuDriverGetVersion p_ver = (fn_cuDriverGetVersion)dlsym(h, "cuDriverGetVersion");
	p_errstr = (fn_cuGetErrorString)dlsym(h, "cuGetErrorString");
	p_errname = (fn_cuGetErrorName)dlsym(h, "cuGetErrorName");
	fn_get_state p_state = (fn_get_state)dlsym(h, "cuCheckpointProcessGetState");
	void *p_op = sym ? dlsym(h, sym) : NULL;
	const char *missing = !p_init ? "cuInit"
			      : !p_state ? "cuCheckpointProcessGetState"
			      : (sym && !p_op) ? sym
			      : NULL;
	if (is_probe && !missing) {
		static const char *all[] = {"cuCheckpointProcessLock", "cuCheckpointProcessCheckpoint",
					    "cuCheckpointProcessRestore", "cuCheckpointProcessUnlock"};
		for (size_t k = 0; k < sizeof all / sizeof all[0] && !missing; k++)
			if (!dlsym(h, all[k])) missing = all[k];
	}
	if (missing) {
		char msg[512];
		snprintf(msg, sizeof msg,
			 "driver too old: %s has no %s (the CUDA checkpoint API needs NVIDIA driver 570 or newer)", lib,
			 missing);
		return report(EXIT_DRIVER_TOO_OLD, NULL, msg, 0, 0, NULL);
	}

	char ebuf[512];
	CUresult r = p_init(0);
	if (r != 0) {
		char msg[600];
		snprintf(msg, sizeof msg, "cuInit failed: %s", cu_error(r, ebuf, sizeof ebuf));
		return report(EXIT_INIT_FAILED, NULL, msg, r, 0, NULL);
	}

	if (is_probe) {
		int v = 0;
		char extra[64] = "";
		if (p_ver && p_ver(&v) == 0) snprintf(extra, sizeof extra, ",\"driverVersion\":%d", v);
		return report(EXIT_OK, NULL, NULL, 0, 0, extra);
	}

	double t0 = now_ms();
	CUprocessState st = -1;
	if (p_op == (void *)p_state) {
		r = p_state((int)pid, &st);
	} else if (strcmp(op, "lock") == 0) {
		CUcheckpointLockArgs args;
		memset(&args, 0, sizeof args);
		args.timeoutMs = timeout_ms < 0 ? 0 : (unsigned int)timeout_ms;
		r = ((fn_pid_args)p_op)((int)pid, &args);
	} else {
		r = ((fn_pid_args)p_op)((int)pid, NULL);
	}
	double ms = now_ms() - t0;

	const char *state = NULL;
	if (p_op == (void *)p_state) {
		if (r == 0) state = state_name(st);
	} else {
		CUprocessState after = -1;
		if (p_state((int)pid, &after) == 0) state = state_name(after);
	}
	if (r != 0) return report(EXIT_CUDA_ERROR, state, cu_error(r, ebuf, sizeof ebuf), r, ms, NULL);
	return report(EXIT_OK, state, NULL, 0, ms, NULL);
}
