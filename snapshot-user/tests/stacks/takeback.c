/* Copies that are taken back, made by one thread while another thread of the
 * same process makes real COW copies on the same CPU, for
 * `snapshot trace --stacks`. The tracer counts a write to a private file
 * page mapped from the page cache as a copy when the page is allocated and
 * takes it back when the fault moves MM_FILEPAGES (a file copy, not COW):
 * that take-back must leave the stack of the thread that made it.
 * The process forks a child that waits, then two threads pinned to one CPU
 * run at once: cow_writer() rewrites N anonymous pages the child shares,
 * file_writer() maps FILE privately ROUNDS times, reads each of its N pages
 * (mapping the page-cache page) and writes it (a file copy). It prints the
 * anonymous pages whose frame changed (from /proc/self/pagemap: needs root):
 *   {"pid":P,"anon":A,"file_writes":W}
 * Build with -O0 -fno-omit-frame-pointer -pthread.
 * Usage: takeback FILE N ROUNDS */
#define _GNU_SOURCE
#define PROGRAM "takeback"
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include "pagemap.h"

static long n, rounds;
static int fd;
static char *anon;
static pthread_barrier_t start;

/* Both threads run on the CPU the process started on. */
static void pin(void) {
	static int cpu = -1;
	if (cpu < 0)
		cpu = sched_getcpu();
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof set, &set))
		die("pinning");
}

__attribute__((noinline)) void write_cow(volatile char *p, long pages) {
	for (long i = 0; i < pages; i++)
		p[i * page] = 3;
}

__attribute__((noinline)) long write_file_pages(volatile char *p, long pages) {
	long sum = 0;
	for (long i = 0; i < pages; i++) {
		sum += p[i * page]; /* maps the page-cache page read-only */
		p[i * page] = 7;    /* copies it: a file copy */
	}
	return sum;
}

static void *cow_writer(void *arg) {
	(void)arg;
	pin();
	pthread_barrier_wait(&start);
	write_cow(anon, n);
	return NULL;
}

static void *file_writer(void *arg) {
	long *writes = arg;
	pin();
	pthread_barrier_wait(&start);
	for (long r = 0; r < rounds; r++) {
		char *file = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		if (file == MAP_FAILED)
			die("mapping the file");
		write_file_pages(file, n);
		*writes += n;
		munmap(file, n * page);
	}
	return NULL;
}

int main(int argc, char **argv) {
	if (argc != 4)
		return fprintf(stderr, "usage: takeback FILE N ROUNDS\n"), 2;
	page = sysconf(_SC_PAGESIZE);
	n = atol(argv[2]);
	rounds = atol(argv[3]);
	fd = open(argv[1], O_RDONLY);
	anon = mmap(NULL, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd < 0 || anon == MAP_FAILED)
		die("mapping");
	memset(anon, 9, n * page);
	uint64_t *before = calloc(n, sizeof *before), *after = calloc(n, sizeof *after);
	if (!before || !after || pthread_barrier_init(&start, NULL, 2))
		die("setting up");
	frames(anon, n, before);
	fork_sharer();
	pin();
	long writes = 0;
	pthread_t cow, filer;
	if (pthread_create(&cow, NULL, cow_writer, NULL) || pthread_create(&filer, NULL, file_writer, &writes))
		die("starting threads");
	pthread_join(cow, NULL);
	pthread_join(filer, NULL);
	frames(anon, n, after);
	release_sharer();
	printf("{\"pid\":%d,\"anon\":%ld,\"file_writes\":%ld}\n", getpid(), changed(before, after, n), writes);
	return 0;
}
