/* Ground truth for the tracer: each case makes a process tree, writes pages,
 * and measures the pages really copied from its own /proc/self/pagemap (a
 * page whose frame changed across the writes was copied). It appends one JSON
 * line per measured figure to the file named by argv[2]:
 *   {"parent":P,"child":C,"side":"parent"|"child","copied":N}
 *     N copies made in the fork P->C's parent (or child) while it shared
 *   {"pid":P,"copied":N}        N copies made in process P, charged to no fork
 *   {"pid":P,"file_copies":N}   N page-cache pages copied by P's private file mapping
 *   {"parent":P,"child":C,"end_reason":"..."}  how that fork's sharing ends
 * Usage: truth CASE OUT [PAGES]. Needs root (pagemap frame numbers). With
 * TRUTH_GATE=PATH it waits for PATH to exist before it starts. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
static long page;
static int npages = 4096;
static int out_fd = -1;
static const char *out_path;

static void die(const char *what) {
	fprintf(stderr, "truth: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void emit(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void emit(const char *fmt, ...) {
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	line[n++] = '\n';
	/* One write per line: several processes append to the same file. */
	if (write(out_fd, line, n) != n)
		die("writing the truth file");
}

static void fork_copies(pid_t parent, pid_t child, const char *side, long copied) {
	emit("{\"parent\":%d,\"child\":%d,\"side\":\"%s\",\"copied\":%ld}", parent, child, side, copied);
}

static char *region(int pages, int flags) {
	char *p = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static void touch(char *p, int pages) {
	for (int i = 0; i < pages; i++)
		p[i * page] += 1;
}

/* Frame numbers of `pages` pages from p (0 for a page not present). */
static uint64_t *frames(char *p, int pages) {
	uint64_t *f = calloc(pages, 8);
	int fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd < 0 || !f)
		die("open /proc/self/pagemap");
	off_t off = (uintptr_t)p / page * 8;
	if (pread(fd, f, pages * 8, off) != pages * 8)
		die("read pagemap");
	close(fd);
	for (int i = 0; i < pages; i++) {
		int present = f[i] >> 63;
		f[i] = present ? f[i] & ((1ULL << 55) - 1) : 0;
		if (present && f[i] == 0) {
			errno = EPERM;
			die("pagemap gives no frame numbers (run as root)");
		}
	}
	return f;
}

static long changed(uint64_t *a, uint64_t *b, int pages) {
	long n = 0;
	for (int i = 0; i < pages; i++)
		n += a[i] && b[i] && a[i] != b[i];
	free(a);
	free(b);
	return n;
}

/* Writes one byte into each page and returns how many were copied. */
static long write_and_count(char *p, int pages) {
	uint64_t *before = frames(p, pages);
	touch(p, pages);
	return changed(before, frames(p, pages), pages);
}

/* A child that holds its pages until the parent closes `*release`. */
static pid_t holder_until(int *release) {
	int fds[2];
	if (pipe2(fds, O_CLOEXEC))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(fds[1]);
		char c;
		while (read(fds[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(fds[0]);
	*release = fds[1];
	return pid;
}

/* A holder whose pipe's write end stays open in the parent (and closes at its exit). */
static pid_t holder(void) {
	int release;
	return holder_until(&release);
}

static void reap(pid_t pid) {
	int status;
	if (waitpid(pid, &status, 0) != pid)
		die("waitpid");
}

static void case_sibling_exit(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	pid_t b = fork();
	if (b == 0)
		_exit(0);
	reap(b);
	fork_copies(getpid(), a, "parent", write_and_count(p, npages));
	fork_copies(getpid(), b, "parent", 0);
}

static void case_parent_exits_first(void) {
	pid_t a = holder(); /* waits for our exit, then leaves */
	emit("{\"parent\":%d,\"child\":%d,\"end_reason\":\"parent_exit\"}", getpid(), a);
}

static void case_exec_children(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	pid_t kids[9];
	for (int i = 0; i < 9; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			execl("/bin/sleep", "sleep", "30", (char *)NULL);
			_exit(127);
		}
	}
	usleep(100000); /* let them exec */
	fork_copies(getpid(), a, "parent", write_and_count(p, npages));
	for (int i = 0; i < 9; i++) {
		kill(kids[i], SIGKILL);
		reap(kids[i]);
	}
}

static void case_grandchild(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t parent = getpid();
	int done[2];
	if (pipe(done))
		die("pipe");
	pid_t c = fork();
	if (c == 0) {
		pid_t me = getpid();
		fork_copies(parent, me, "child", write_and_count(p, npages));
		pid_t g = holder();
		fork_copies(me, g, "parent", write_and_count(p, npages));
		_exit(0); /* g sees EOF and exits */
	}
	reap(c);
}

static void case_orphan_grandchild(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	int ready[2], hold[2];
	if (pipe(ready) || pipe(hold))
		die("pipe");
	pid_t c = fork();
	if (c == 0) {
		pid_t g = fork();
		if (g == 0) {
			close(hold[1]);
			char ch;
			while (read(hold[0], &ch, 1) > 0)
				;
			_exit(0);
		}
		_exit(0); /* the grandchild lives on, holding our parent's pages */
	}
	close(hold[0]);
	reap(c);
	/* Pages still shared with the grandchild: the fork to c made them so. */
	fork_copies(getpid(), c, "parent", write_and_count(p, npages));
	close(hold[1]);
}

static char *shared_region;
static long clone_copied;

static int clone_writer(void *arg) {
	(void)arg;
	clone_copied = write_and_count(shared_region, npages);
	return 0;
}

/* A CLONE_VM child (vfork when `vfork_flag`) writes pages shared with the
 * parent's live child a: a's fork made them shared. */
static void clone_vm_case(int vfork_flag) {
	shared_region = region(npages, 0);
	touch(shared_region, npages);
	pid_t a = holder();
	size_t stack_size = 1 << 20;
	char *stack = region(stack_size / page, 0);
	pid_t w = clone(clone_writer, stack + stack_size, CLONE_VM | vfork_flag | SIGCHLD, NULL);
	if (w < 0)
		die("clone");
	reap(w);
	fork_copies(getpid(), a, "parent", clone_copied);
}

static void case_vfork_writes(void) { clone_vm_case(CLONE_VFORK); }
static void case_clone_vm_writes(void) { clone_vm_case(0); }

/* Zero-page fills: pages read (mapping the shared zero page), then written. */
static void case_zero_fills(void) {
	char *p = region(npages, 0);
	volatile char sum = 0;
	for (int i = 0; i < npages; i++)
		sum += p[i * page];
	pid_t a = holder();
	touch(p, npages);
	fork_copies(getpid(), a, "parent", 0);
}

/* The same with the THP huge zero page. */
static void case_thp_zero_fills(void) {
	size_t len = 8 << 20;
	char *raw = region(len / page + 512, 0);
	char *p = (char *)(((uintptr_t)raw + (2 << 20) - 1) & ~((uintptr_t)(2 << 20) - 1));
	if (madvise(p, len, MADV_HUGEPAGE))
		die("madvise(MADV_HUGEPAGE)");
	volatile char sum = 0;
	for (size_t i = 0; i < len; i += page)
		sum += p[i];
	pid_t a = holder();
	touch(p, len / page);
	fork_copies(getpid(), a, "parent", 0);
}

static void case_read_into_shared(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	int fd = open("/dev/zero", O_RDONLY);
	uint64_t *before = frames(p, npages);
	for (int i = 0; i < npages; i++)
		if (read(fd, p + i * page, 64) != 64)
			die("read");
	fork_copies(getpid(), a, "parent", changed(before, frames(p, npages), npages));
	close(fd);
}

/* FUTEX_WAKE_OP writes the second futex word from kernel mode. */
static void case_futex_wake_op(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	uint64_t *before = frames(p, npages);
	for (int i = 0; i < npages; i++) {
		uint32_t *uaddr2 = (uint32_t *)(p + i * page);
		uint32_t dummy = 0;
		syscall(SYS_futex, &dummy, FUTEX_WAKE_OP_PRIVATE, 0, 0, uaddr2, FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0));
	}
	fork_copies(getpid(), a, "parent", changed(before, frames(p, npages), npages));
}

static void case_mremap_after_fork(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	char *q = mremap(p, npages * page, npages * page, MREMAP_MAYMOVE | MREMAP_FIXED, region(npages, 0));
	if (q == MAP_FAILED)
		die("mremap");
	fork_copies(getpid(), a, "parent", write_and_count(q, npages));
}

static void case_madv_dontneed(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	if (madvise(p, npages * page, MADV_DONTNEED))
		die("madvise");
	touch(p, npages); /* fresh zeroed pages: no copy */
	fork_copies(getpid(), a, "parent", 0);
}

static void case_posix_spawn(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	pid_t s;
	char *argv[] = {"sleep", "1", NULL};
	if (posix_spawn(&s, "/bin/sleep", NULL, NULL, argv, environ))
		die("posix_spawn");
	fork_copies(getpid(), a, "parent", write_and_count(p, npages));
	kill(s, SIGKILL);
	reap(s);
}

static void case_many_children(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t kids[64];
	for (int i = 0; i < 64; i++)
		kids[i] = holder();
	/* The newest live fork takes the parent's copies. */
	fork_copies(getpid(), kids[63], "parent", write_and_count(p, npages));
}

static volatile int stop_writer;
static char *thread_region;

static void *thread_writer(void *arg) {
	(void)arg;
	while (!stop_writer)
		thread_region[npages * page - 1] += 1;
	return NULL;
}

static void case_thread_during_fork(void) {
	char *p = region(npages, 0);
	thread_region = p;
	touch(p, npages);
	pthread_t t;
	if (pthread_create(&t, NULL, thread_writer, NULL))
		die("pthread_create");
	pid_t a = holder();
	long copied = write_and_count(p, npages - 1);
	stop_writer = 1;
	pthread_join(t, NULL);
	fork_copies(getpid(), a, "parent", copied);
}

static void case_short_children(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	int n = getenv("TRUTH_CHILDREN") ? atoi(getenv("TRUTH_CHILDREN")) : 40000;
	for (int i = 0; i < n; i++) {
		pid_t c = fork();
		if (c == 0)
			_exit(0);
		if (c < 0)
			die("fork");
		reap(c);
	}
	pid_t a = holder();
	fork_copies(getpid(), a, "parent", write_and_count(p, npages));
}

/* Writes to a private mapping of `fd`'s pages copy them out of the page
 * cache, fork or not. With `present`, the pages are read (mapped) first, so
 * the writes are write-protect faults; else they are not-present faults.
 * Truth: pages whose private frame differs from the page cache's frame. */
static void file_case(int fd, int present) {
	size_t len = (size_t)npages * page;
	char *data = calloc(1, page);
	for (int i = 0; i < npages; i++)
		if (pwrite(fd, data, page, (off_t)i * page) != page)
			die("filling the file");
	fsync(fd);
	char *cache = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	char *priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (cache == MAP_FAILED || priv == MAP_FAILED)
		die("mmap the file");
	volatile char sum = 0;
	for (int i = 0; i < npages; i++) {
		sum += cache[i * page];
		if (present)
			sum += priv[i * page];
	}
	pid_t a = holder();
	uint64_t *before = frames(cache, npages);
	touch(priv, npages);
	uint64_t *after = frames(priv, npages);
	long copied = 0;
	for (int i = 0; i < npages; i++)
		copied += after[i] && before[i] && after[i] != before[i];
	emit("{\"pid\":%d,\"file_copies\":%ld}", getpid(), copied);
	fork_copies(getpid(), a, "parent", 0);
}

/* A file in the truth file's directory (the test's private one). */
static int disk_file(void) {
	char dir[4096];
	snprintf(dir, sizeof dir, "%s", out_path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	int fd = open(slash ? dir : ".", O_TMPFILE | O_RDWR, 0600);
	if (fd < 0)
		die("O_TMPFILE in the truth file's directory");
	return fd;
}

static int memfd(void) {
	int fd = memfd_create("truth", 0);
	if (fd < 0)
		die("memfd_create");
	return fd;
}

/* A shared memfd mapping written where no page exists yet: the writes fill
 * the page cache itself; nothing is copied. */
static void case_memfd_shared(void) {
	int fd = memfd();
	if (ftruncate(fd, (off_t)npages * page))
		die("ftruncate");
	char *p = mmap(NULL, (size_t)npages * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap the memfd");
	pid_t a = holder();
	touch(p, npages);
	emit("{\"pid\":%d,\"file_copies\":0}", getpid());
	fork_copies(getpid(), a, "parent", 0);
}

static void case_file_present(void) { file_case(disk_file(), 1); }
static void case_file_not_present(void) { file_case(disk_file(), 0); }
static void case_memfd_present(void) { file_case(memfd(), 1); }
static void case_memfd_not_present(void) { file_case(memfd(), 0); }

/* --- io_uring through raw syscalls --- */
struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask, *sq_flags;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static void ring_setup(struct ring *r, unsigned flags) {
	struct io_uring_params params = {.flags = flags, .sq_thread_idle = 2000};
	r->fd = syscall(SYS_io_uring_setup, 64, &params);
	if (r->fd < 0)
		die("io_uring_setup (the kernel must have io_uring enabled: sysctl kernel.io_uring_disabled=0)");
	size_t sq_len = params.sq_off.array + params.sq_entries * sizeof(unsigned);
	size_t cq_len = params.cq_off.cqes + params.cq_entries * sizeof(struct io_uring_cqe);
	size_t len = sq_len > cq_len ? sq_len : cq_len;
	char *sq = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		die("mmap io_uring");
	char *cq = sq; /* IORING_FEAT_SINGLE_MMAP: one mapping for both rings */
	r->sq_tail = (unsigned *)(sq + params.sq_off.tail);
	r->sq_mask = (unsigned *)(sq + params.sq_off.ring_mask);
	r->sq_array = (unsigned *)(sq + params.sq_off.array);
	r->sq_flags = (unsigned *)(sq + params.sq_off.flags);
	r->cq_head = (unsigned *)(cq + params.cq_off.head);
	r->cq_tail = (unsigned *)(cq + params.cq_off.tail);
	r->cq_mask = (unsigned *)(cq + params.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)(cq + params.cq_off.cqes);
	r->sqes = mmap(NULL, params.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		die("mmap io_uring sqes");
}

static void ring_push(struct ring *r, int op, int fd, void *buf, unsigned len, unsigned sqe_flags) {
	unsigned tail = *r->sq_tail;
	unsigned idx = tail & *r->sq_mask;
	struct io_uring_sqe *sqe = &r->sqes[idx];
	memset(sqe, 0, sizeof *sqe);
	sqe->opcode = op;
	sqe->fd = fd;
	sqe->addr = (uintptr_t)buf;
	sqe->len = len;
	sqe->off = -1; /* the file position */
	sqe->flags = sqe_flags;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
}

/* Submits what was pushed and waits for `n` completions. */
static void ring_run(struct ring *r, unsigned n, int sqpoll) {
	unsigned enter_flags = IORING_ENTER_GETEVENTS;
	if (sqpoll && (__atomic_load_n(r->sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_NEED_WAKEUP))
		enter_flags |= IORING_ENTER_SQ_WAKEUP;
	if (syscall(SYS_io_uring_enter, r->fd, sqpoll ? 0 : n, n, enter_flags, NULL, 0) < 0)
		die("io_uring_enter");
	for (unsigned got = 0; got < n;) {
		unsigned head = *r->cq_head;
		if (head == __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE)) {
			if (syscall(SYS_io_uring_enter, r->fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
				die("io_uring_enter");
			continue;
		}
		if (r->cqes[head & *r->cq_mask].res < 0) {
			errno = -r->cqes[head & *r->cq_mask].res;
			die("io_uring request");
		}
		__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
		got++;
	}
}

/* Reads from /dev/zero into each page through io_uring. With `tmpfs_fd`,
 * each read is linked to a write of that page to a tmpfs file, which
 * allocates a page-cache page on the same io-wq worker. */
static long ring_reads(char *p, unsigned setup, unsigned sqe_flags, int tmpfs_fd) {
	struct ring r;
	ring_setup(&r, setup);
	int zero = open("/dev/zero", O_RDONLY);
	uint64_t *before = frames(p, npages);
	for (int i = 0; i < npages; i++) {
		if (tmpfs_fd >= 0) {
			ring_push(&r, IORING_OP_READ, zero, p + i * page, 64, sqe_flags | IOSQE_IO_LINK);
			ring_push(&r, IORING_OP_WRITE, tmpfs_fd, p + i * page, page, sqe_flags);
			ring_run(&r, 2, setup & IORING_SETUP_SQPOLL);
		} else {
			ring_push(&r, IORING_OP_READ, zero, p + i * page, 64, sqe_flags);
			ring_run(&r, 1, setup & IORING_SETUP_SQPOLL);
		}
	}
	close(zero);
	close(r.fd);
	return changed(before, frames(p, npages), npages);
}

static int tmpfs_file(void) {
	char path[] = "/dev/shm/truth-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0)
		die("mkstemp in /dev/shm");
	unlink(path);
	return fd;
}

static void iouring_shared(unsigned setup, unsigned sqe_flags) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = holder();
	fork_copies(getpid(), a, "parent", ring_reads(p, setup, sqe_flags, -1));
}

static void case_iouring_inline(void) { iouring_shared(0, 0); }
static void case_iouring_async(void) { iouring_shared(0, IOSQE_ASYNC); }
static void case_iouring_sqpoll(void) { iouring_shared(IORING_SETUP_SQPOLL, 0); }

/* The sharer exited before the reads: every read reuses its page. */
static void case_iouring_reuse(void) {
	char *p = region(npages, 0);
	touch(p, npages);
	pid_t a = fork();
	if (a == 0)
		_exit(0);
	reap(a);
	long copied = ring_reads(p, 0, IOSQE_ASYNC, tmpfs_file());
	emit("{\"pid\":%d,\"copied\":%ld}", getpid(), copied);
}

/* --- hugetlb --- */
static char *huge_region(int pages) {
	char *p = mmap(NULL, pages * (2 << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	if (p == MAP_FAILED)
		die("mmap MAP_HUGETLB (reserve pages: /proc/sys/vm/nr_hugepages)");
	return p;
}

static long huge_write_and_count(char *p, int pages) {
	uint64_t *before = frames(p, pages * 512);
	for (int i = 0; i < pages; i++)
		p[(size_t)i * (2 << 20)] += 1;
	return changed(before, frames(p, pages * 512), pages * 512) / 512;
}

/* The child writes the shared huge pages first (and copies them); the
 * parent then writes its own, which nobody shares any more. */
static void case_hugetlb_child_first(void) {
	int n = 4;
	char *p = huge_region(n);
	for (int i = 0; i < n; i++)
		p[(size_t)i * (2 << 20)] = 1;
	int go[2], done[2];
	if (pipe(go) || pipe(done))
		die("pipe");
	pid_t parent = getpid();
	pid_t c = fork();
	if (c == 0) {
		close(go[1]);
		fork_copies(parent, getpid(), "child", huge_write_and_count(p, n));
		if (write(done[1], "x", 1) != 1)
			die("write");
		char ch;
		while (read(go[0], &ch, 1) > 0)
			;
		_exit(0);
	}
	close(go[0]);
	char ch;
	if (read(done[0], &ch, 1) != 1)
		die("read");
	fork_copies(parent, c, "parent", huge_write_and_count(p, n));
	close(go[1]);
	reap(c);
}

/* Huge pages mapped after the fork: the parent's alone. */
static void case_hugetlb_after_fork(void) {
	pid_t a = holder();
	int n = 4;
	char *p = huge_region(n);
	volatile char sum = 0;
	for (int i = 0; i < n; i++)
		sum += p[(size_t)i * (2 << 20)];
	fork_copies(getpid(), a, "parent", huge_write_and_count(p, n));
}

/* Write faults that reuse their huge page, each followed by a TLB flush in
 * a syscall (mprotect of another huge page) before any other fault: a flush
 * after a fault is over is not that fault's copy. Each round forks a child
 * that exits at once, so the next write faults on a write-protected page
 * nobody shares any more. */
static void case_hugetlb_reuse_flush(void) {
	int n = 4, rounds = 200;
	char *p = huge_region(n), *q = huge_region(1);
	for (int i = 0; i < n; i++)
		p[(size_t)i * (2 << 20)] = 1;
	q[0] = 1;
	long copied = 0;
	for (int r = 0; r < rounds; r++) {
		pid_t c = fork();
		if (c < 0)
			die("fork");
		if (c == 0)
			_exit(0);
		reap(c);
		/* Frames of the page written, around each round: a copy's old page
		 * goes back to the pool, so a later copy can bring it back and
		 * frames compared over all rounds would miss both. Read before the
		 * write and after the flushes, so no fault comes between them. */
		char *h = p + (size_t)(r % n) * (2 << 20);
		uint64_t *before = frames(h, 1);
		*h += 1;
		if (mprotect(q, 2 << 20, PROT_READ) || mprotect(q, 2 << 20, PROT_READ | PROT_WRITE))
			die("mprotect");
		copied += changed(before, frames(h, 1), 1);
	}
	/* Only the huge pages: each fork also copies a few 4 KiB pages of stack. */
	emit("{\"pid\":%d,\"huge_copied\":%ld}", getpid(), copied);
}

/* Hugetlb copies while another thread of the process keeps taking write
 * faults of its own (copy-on-write after each fork) on the other CPU: each
 * copy's flush sends that thread a shootdown, maybe inside one of its faults,
 * and only the writer's own flush is a copy. Each round's child holds the
 * huge pages until the parent wrote them all, so every write copies. */
static volatile int spinning;

static void *fault_spinner(void *arg) {
	char *b = arg;
	for (unsigned i = 0; spinning; i++)
		b[(size_t)(i % 64) * page] += 1;
	return NULL;
}

static void case_hugetlb_threads(void) {
	int n = 4, rounds = 60;
	char *p = huge_region(n), *b = region(64, 0);
	for (int i = 0; i < n; i++)
		p[(size_t)i * (2 << 20)] = 1;
	touch(b, 64);
	spinning = 1;
	pthread_t t;
	if (pthread_create(&t, NULL, fault_spinner, b))
		die("pthread_create");
	long copied = 0;
	for (int r = 0; r < rounds; r++) {
		int release;
		pid_t c = holder_until(&release);
		copied += huge_write_and_count(p, n);
		close(release);
		reap(c);
	}
	spinning = 0;
	pthread_join(t, NULL);
	emit("{\"pid\":%d,\"huge_copied\":%ld}", getpid(), copied);
}

static const struct {
	const char *name;
	void (*run)(void);
} cases[] = {
	{"sibling_exit", case_sibling_exit},
	{"parent_exits_first", case_parent_exits_first},
	{"exec_children", case_exec_children},
	{"grandchild", case_grandchild},
	{"orphan_grandchild", case_orphan_grandchild},
	{"vfork_writes", case_vfork_writes},
	{"clone_vm_writes", case_clone_vm_writes},
	{"zero_fills", case_zero_fills},
	{"thp_zero_fills", case_thp_zero_fills},
	{"read_into_shared", case_read_into_shared},
	{"futex_wake_op", case_futex_wake_op},
	{"mremap_after_fork", case_mremap_after_fork},
	{"madv_dontneed", case_madv_dontneed},
	{"posix_spawn", case_posix_spawn},
	{"many_children", case_many_children},
	{"thread_during_fork", case_thread_during_fork},
	{"short_children", case_short_children},
	{"iouring_inline", case_iouring_inline},
	{"iouring_async", case_iouring_async},
	{"iouring_sqpoll", case_iouring_sqpoll},
	{"iouring_reuse", case_iouring_reuse},
	{"hugetlb_child_first", case_hugetlb_child_first},
	{"file_present", case_file_present},
	{"file_not_present", case_file_not_present},
	{"memfd_present", case_memfd_present},
	{"memfd_not_present", case_memfd_not_present},
	{"memfd_shared", case_memfd_shared},
	{"hugetlb_after_fork", case_hugetlb_after_fork},
	{"hugetlb_reuse_flush", case_hugetlb_reuse_flush},
	{"hugetlb_threads", case_hugetlb_threads},
};

int main(int argc, char **argv) {
	page = sysconf(_SC_PAGESIZE);
	if (argc < 3) {
		fprintf(stderr, "usage: truth CASE OUT [PAGES]\n");
		return 2;
	}
	if (argc > 3)
		npages = atoi(argv[3]);
	out_path = argv[2];
	out_fd = open(argv[2], O_WRONLY | O_APPEND | O_CLOEXEC);
	if (out_fd < 0)
		die("opening the truth file");
	/* Started before the tracer: wait until it is attached. */
	const char *gate = getenv("TRUTH_GATE");
	while (gate && access(gate, F_OK) != 0)
		usleep(10000);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		if (!strcmp(argv[1], cases[i].name)) {
			cases[i].run();
			return 0;
		}
	}
	fprintf(stderr, "truth: no case %s\n", argv[1]);
	return 2;
}
