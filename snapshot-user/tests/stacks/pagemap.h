/* What the test programs here share: failing with the reason, the physical
 * frames of pages from /proc/self/pagemap (needs root), the ground truth of
 * which pages were copied, and a child that shares the pages meanwhile.
 * Define PROGRAM before including. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static long page;

static void die(const char *what) {
	fprintf(stderr, PROGRAM ": %s: %s\n", what, strerror(errno));
	exit(2);
}

/* Frame numbers of n pages from p. */
static void frames(const char *p, long n, uint64_t *out) {
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0)
		die("opening pagemap");
	for (long i = 0; i < n; i++) {
		uint64_t e;
		off_t at = ((uintptr_t)p / page + i) * sizeof e;
		if (pread(fd, &e, sizeof e, at) != sizeof e)
			die("reading pagemap");
		out[i] = e & ((1ULL << 55) - 1);
	}
	close(fd);
}

/* Pages whose frame changed. */
static long changed(const uint64_t *before, const uint64_t *after, long n) {
	long c = 0;
	for (long i = 0; i < n; i++)
		c += before[i] != after[i];
	return c;
}

static pid_t sharer;
static int sharer_gate;

/* Forks a child that shares every page until release_sharer(). */
static void fork_sharer(void) {
	int gate[2];
	if (pipe(gate))
		die("pipe");
	sharer = fork();
	if (sharer < 0)
		die("fork");
	if (sharer == 0) {
		char c;
		close(gate[1]);
		if (read(gate[0], &c, 1) < 0)
			die("waiting");
		_exit(0);
	}
	close(gate[0]);
	sharer_gate = gate[1];
}

static void release_sharer(void) {
	close(sharer_gate);
	if (waitpid(sharer, NULL, 0) != sharer)
		die("waitpid");
}
