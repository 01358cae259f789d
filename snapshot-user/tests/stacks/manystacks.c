/* More distinct copying stacks than the kernel's stack table keeps apart:
 * 2^LEVELS code paths (each level calls the next from one of two call
 * sites), each rewriting one page a forked child shares. Two stacks that
 * hash to one bucket of the table cannot both be kept: the later one's
 * copies lose their stack, which `health.dropped_stacks` must count.
 * Prints {"pid":P,"pages":N,"changed":C}, C the pages whose frame changed
 * (/proc/self/pagemap: needs root), the ground truth. Build with -O0 -fno-omit-frame-pointer.
 * Usage: manystacks LEVELS */
#define _GNU_SOURCE
#define PROGRAM "manystacks"
#include <sys/mman.h>

#include "pagemap.h"

/* Calls itself from the call site the path's lowest bit picks, so each path
 * leaves its own return addresses on the stack. */
__attribute__((noinline)) void descend(volatile char *p, int level, unsigned path) {
	if (level == 0) {
		*p = 1;
		return;
	}
	if (path & 1)
		descend(p, level - 1, path >> 1);
	else
		descend(p, level - 1, path >> 1);
}

int main(int argc, char **argv) {
	if (argc != 2)
		return fprintf(stderr, "usage: manystacks LEVELS\n"), 2;
	page = sysconf(_SC_PAGESIZE);
	int levels = atoi(argv[1]);
	long n = 1L << levels;
	char *anon = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *before = calloc(n, sizeof *before), *after = calloc(n, sizeof *after);
	if (anon == MAP_FAILED || !before || !after)
		die("setting up");
	memset(anon, 9, n * page);
	frames(anon, n, before);
	fork_sharer();
	for (long i = 0; i < n; i++)
		descend(anon + i * page, levels, (unsigned)i);
	frames(anon, n, after);
	release_sharer();
	printf("{\"pid\":%d,\"pages\":%ld,\"changed\":%ld}\n", getpid(), n, changed(before, after, n));
	return 0;
}
