/* forkrewrite: the fork + rewrite window of `snapshot workload --memory private
 * --scenario parent-writes --no-pagemap`, timed from inside.
 * Maps N private anonymous 4 KiB pages, writes each once (populate), then
 * times: fork() (the child waits on a pipe) -> the parent writes one byte per
 * page (each write = one COW copy) -> the child is released and reaped.
 * Prints: fork_us rewrite_us total_us (total = fork .. child reaped).
 * Usage: forkrewrite PAGES [hugetlb]: with "hugetlb", the process also maps
 * and touches one 2 MiB MAP_HUGETLB page first (needs vm.nr_hugepages > 0),
 * which the tracer's hugetlb path must not make every 4 KiB fault pay for.
 * With FORKREWRITE_STEPS=1 in the environment, it prints "populated" before the
 * fork and "rewritten" after the rewrite (before the child is released), and
 * after each waits for a line on stdin: a caller can read counters around
 * exactly the fork + rewrite (bench/bench_bpfcost.py reads the eBPF programs'). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/wait.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Tells the caller which step is done and waits for its go (FORKREWRITE_STEPS=1). */
static void step(const char *name) {
    static int on = -1;
    if (on < 0) { const char *e = getenv("FORKREWRITE_STEPS"); on = e && strcmp(e, "1") == 0; }
    if (!on) return;
    printf("%s\n", name);
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) { fprintf(stderr, "forkrewrite: no go after %s\n", name); exit(1); }
}

int main(int argc, char **argv) {
    size_t pages = argc > 1 ? strtoul(argv[1], NULL, 10) : 262144;
    size_t len = pages * 4096;
    if (argc > 2 && strcmp(argv[2], "hugetlb") == 0) {
        char *h = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
        if (h == MAP_FAILED) { perror("mmap MAP_HUGETLB"); return 1; }
        h[0] = 1;
    }
    volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < pages; i++) p[i * 4096] = 1;
    int fd[2];
    if (pipe(fd)) { perror("pipe"); return 1; }
    step("populated");
    double t0 = now_us();
    pid_t child = fork();
    if (child < 0) { perror("fork"); return 1; }
    if (child == 0) {
        char b;
        close(fd[1]);
        (void)!read(fd[0], &b, 1);   /* share every page until released */
        _exit(0);
    }
    double t1 = now_us();
    close(fd[0]);
    for (size_t i = 0; i < pages; i++) p[i * 4096] = 2;
    double t2 = now_us();
    step("rewritten");
    close(fd[1]);
    if (waitpid(child, NULL, 0) != child) { perror("waitpid"); return 1; }
    double t3 = now_us();
    printf("%.0f %.0f %.0f\n", t1 - t0, t2 - t1, t3 - t0);
    return 0;
}
