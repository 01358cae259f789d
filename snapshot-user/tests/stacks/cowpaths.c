/* Copies made by known code in known memory, for `snapshot trace --stacks`.
 * The parent fills an anonymous region of 4N pages and a private mapping of
 * FILE (N pages; its first writes are file copies, made before the fork),
 * forks, and while the child waits it rewrites: write_three() 3N anonymous
 * pages, write_one() N anonymous pages, write_file() the N file pages. It
 * prints one JSON line with the pages whose frame changed across those
 * writes (from /proc/self/pagemap: needs root), the ground truth, and
 * whether the kernel let it name write_one()'s pages "cowpaths-one"
 * (prctl PR_SET_VMA_ANON_NAME, CONFIG_ANON_VMA_NAME):
 *   {"pid":P,"three":A,"one":B,"file":C,"named":0|1}
 * Build with -O0 -fno-omit-frame-pointer so the kernel can walk the whole
 * stack (at -O1 GCC gives these leaf functions no frame of their own).
 * Usage: cowpaths FILE N */
#define _GNU_SOURCE
#define PROGRAM "cowpaths"
#include <sys/mman.h>
#include <sys/prctl.h>

#include "pagemap.h"

/* Not static, so the compiler keeps their names. Each writes one byte per
 * page: one copy per page while the child shares them. */
__attribute__((noinline)) void write_three(volatile char *p, long pages) {
	for (long i = 0; i < pages; i++)
		p[i * page] = 3;
}

__attribute__((noinline)) void write_one(volatile char *p, long pages) {
	for (long i = 0; i < pages; i++)
		p[i * page] = 1;
}

__attribute__((noinline)) void write_file(volatile char *p, long pages) {
	for (long i = 0; i < pages; i++)
		p[i * page] = 7;
}

int main(int argc, char **argv) {
	if (argc != 3)
		return fprintf(stderr, "usage: cowpaths FILE N\n"), 2;
	page = sysconf(_SC_PAGESIZE);
	long n = atol(argv[2]);
	char *anon = mmap(NULL, 4 * n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd = open(argv[1], O_RDWR);
	if (anon == MAP_FAILED || fd < 0)
		die("mapping");
	char *file = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (file == MAP_FAILED)
		die("mapping the file");
	memset(anon, 9, 4 * n * page);
	int named = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, anon + 3 * n * page, n * page, "cowpaths-one") == 0;
	memset(file, 9, n * page);
	uint64_t *before = calloc(5 * n, sizeof *before), *after = calloc(5 * n, sizeof *after);
	if (!before || !after)
		die("setting up");
	frames(anon, 4 * n, before);
	frames(file, n, before + 4 * n);
	fork_sharer();
	write_three(anon, 3 * n);
	write_one(anon + 3 * n * page, n);
	write_file(file, n);
	frames(anon, 4 * n, after);
	frames(file, n, after + 4 * n);
	release_sharer();
	printf("{\"pid\":%d,\"three\":%ld,\"one\":%ld,\"file\":%ld,\"named\":%d}\n", getpid(),
	       changed(before, after, 3 * n), changed(before + 3 * n, after + 3 * n, n),
	       changed(before + 4 * n, after + 4 * n, n), named);
	return 0;
}
