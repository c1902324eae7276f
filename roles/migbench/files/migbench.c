// SPDX-License-Identifier: GPL-2.0-only
/*
 * migbench: time move_pages() of N folios of a verified size between two NUMA nodes.
 *
 * One process per cell: allocate once (aligned, bound to the source node, THP/mTHP asked for
 * with MADV_HUGEPAGE or refused with MADV_NOHUGEPAGE), write a per-page pattern into every base
 * page, then move the whole set back and forth: `--warmup` unrecorded moves, then `--reps`
 * recorded samples (each direction is a sample). Only the move_pages() call is inside the
 * CLOCK_MONOTONIC window; everything that verifies or measures is outside it.
 *
 * PTE-mapped large folios (mTHP: larger than a base page, smaller than the PMD size) are
 * allocated afresh before every move and always move from --src to --dst: migrating such a
 * folio unmaps it one PTE at a time, which leaves it marked partially mapped, and the next
 * migration splits it (6.12, with or without any patch), so a second move of the same
 * buffer would measure base pages. The pattern of each buffer is checked before it is freed.
 *
 * CPU time around each move (read outside the timed window, its cost reported as
 * accounting_ns): the calling thread's (caller_cpu_ns), all CPUs' non-idle time, the run time
 * of every kernel thread (kworkers and the like, PF_KTHREAD, from /proc/<pid>/schedstat:
 * kthread_cpu_ns, the copy work nobody is charged for) and, on cgroup v2, the CPU time charged
 * to the cgroup v2 migbench was told to join (--cgroup: cgroup_cpu_ns, from its cpu.stat).
 *
 * Verified, never assumed:
 *   - before every move: every folio has the requested size (pagemap PFN + kpageflags:
 *     head with KPF_THP, exactly size/page_size - 1 contiguous tails, next PFN not a tail;
 *     for base pages: no compound page at all). Bytes are computed from what was verified.
 *   - after every move: every base page of the buffer reports the destination node.
 *   - at the end: the pattern in every word of every base page.
 * A failure is reported in the JSON record (backing_ok=false, failed_pages>0) or an error
 * line, on stderr, and by a non-zero exit code; it never becomes a quiet GB/s figure.
 *
 * --ceiling: what the machine can copy at all from memory on --src to memory on --dst, from
 * user space with T threads (memcpy of a buffer bound to --src into one bound to --dst,
 * both faulted in and their node placement verified first; the threads pinned to CPUs of
 * the source node for "push", of the destination node for "pull"): one "ceiling" line per
 * (direction, T, rep), each T of --threads.
 *
 * Output (stdout): one JSON object per line, "type" = "sample" | "summary" | "error" |
 * "ceiling".
 * Exit codes: 0 ok, 1 usage, 2 host unsuitable (fewer than two NUMA nodes with memory, folio
 * size not offered or disabled, PFNs unreadable without CAP_SYS_ADMIN), 3 verification failed
 * (backing, node, pattern), 4 system error (allocation, move_pages() itself).
 *
 * Build: gcc -O2 -Wall -Wextra -pthread -o migbench migbench.c -lnuma
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <dirent.h>
#include <stdarg.h>
#include <numaif.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define MIGBENCH_VERSION "1.3"
#ifndef MIGBENCH_SOURCE_SHA256
#define MIGBENCH_SOURCE_SHA256 "unknown"
#endif

enum {
	EXIT_USAGE = 1,
	EXIT_HOST = 2,
	EXIT_VERIFY = 3,
	EXIT_SYSTEM = 4,
};

#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_HUGE 17
#define KPF_THP 22

#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)

#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage"
#define MAX_NODES 1024
#define MAX_CPUS 4096

static const char *prog = "migbench";

struct options {
	const char *kind;
	long count;
	int src;
	int dst;
	long reps;
	long warmup;
	uint64_t seed;
	bool check_host;
	bool loopback;     /* test only: src == dst on a one-node machine */
	const char *cgroup; /* a cgroup v2 directory to join first (its CPU time is measured) */
	bool ceiling;       /* measure the user-space copy ceiling instead of move_pages() */
	const char *threads; /* --ceiling: thread counts, e.g. "1,2,4" */
	long size_mib;      /* --ceiling: MiB copied per measurement */
};

struct cpu_snapshot {
	uint64_t busy_ticks;   /* /proc/stat "cpu" line: user nice system irq softirq steal */
	uint64_t sched_ns;     /* /proc/schedstat: sum of per-CPU run time (0 if unavailable) */
	bool sched_ok;
};

/* Run time of every kernel thread, sorted by pid. */
struct kthread_time {
	int pid;
	uint64_t ns;
};

struct kthread_snapshot {
	struct kthread_time *v;
	size_t n, cap;
	bool ok;
};

struct vm_snapshot {
	long long pgmigrate_success, pgmigrate_fail;
	long long thp_migration_success, thp_migration_fail, thp_migration_split;
	/* kernels with a multi-threaded copy path that counts its work (the lab's own patch) */
	long long mt_batches, mt_folios, mt_works, mt_fallbacks;
};

struct backing {
	bool ok;
	long good;             /* folios of exactly the requested size */
	long bad;
	uint64_t bytes;        /* bytes the move of the folio addresses actually covers */
	long not_present;
	long smaller;          /* folios found smaller than requested (incl. base pages) */
	long larger;           /* addresses inside a larger folio than requested */
	char detail[256];
};

struct ctx {
	struct options opt;
	long page_size;
	uint64_t folio_size;
	long pages_per_folio;
	long n_pages;            /* base pages in the buffer */
	char *buf;
	void **folio_addrs;      /* one address per folio: what move_pages() gets */
	int *target_nodes;
	int *status;
	void **page_addrs;       /* one address per base page: node verification */
	int *page_status;
	uint64_t *pagemap_buf;
	uint64_t *kflags_buf;
	int pagemap_fd, kpageflags_fd, stat_fd, vmstat_fd, schedstat_fd;
	int cgroup_stat_fd;      /* cpu.stat of our cgroup (cgroup v2), -1 without */
	bool fresh;              /* mTHP: a new buffer for every move (see the top of the file) */
	long clk_tck;
	char arch[65];
};

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void json_error(const char *stage, const char *msg)
{
	/* message is produced by us: no quotes or backslashes in it except via %s of paths */
	printf("{\"type\":\"error\",\"stage\":\"%s\",\"message\":\"", stage);
	for (const char *p = msg; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		if ((unsigned char)*p < 0x20)
			continue;
		putchar(*p);
	}
	printf("\"}\n");
	fflush(stdout);
}

static void die(int code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s\n", prog, msg);
	json_error(code == EXIT_HOST ? "host" : code == EXIT_VERIFY ? "verify" :
		   code == EXIT_USAGE ? "usage" : "system", msg);
	exit(code);
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: %s --kind KIND --count N [--src NODE] [--dst NODE] [--reps R] [--warmup W]\n"
		"       %s --check-host\n"
		"       %s --version\n"
		"  KIND   'base' or a folio size such as 2M, 64K (power of two, larger than the base page)\n"
		"  N      folios moved by each move_pages() call (>= 1)\n"
		"  R      recorded samples, alternating direction (default 10)\n"
		"  W      unrecorded warm-up moves before the samples (default 2)\n"
		"  --cgroup DIR     join this cgroup v2 directory first; cgroup_cpu_ns is its CPU time\n"
		"  --ceiling [--threads 1,2,4] [--size-mib M] [--reps R]\n"
		"                   user-space copy throughput from --src memory to --dst memory with\n"
		"                   T threads, pinned to source-node CPUs (push) and destination-node\n"
		"                   CPUs (pull)\n"
		"  --loopback-test  TEST ONLY: src = dst, no migration happens; exercises allocation,\n"
		"                   verification and output on a one-node machine (records say loopback)\n"
		"Output: JSON lines on stdout; run as root (PFNs in /proc/self/pagemap need CAP_SYS_ADMIN).\n",
		prog, prog, prog);
}

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void iso_timestamp(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%s.%06ldZ", base, ts.tv_nsec / 1000);
}

static ssize_t read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return n;
}

static ssize_t reread_fd(int fd, char *buf, size_t len)
{
	ssize_t n, total = 0;

	if (lseek(fd, 0, SEEK_SET) < 0)
		return -1;
	while ((size_t)total < len - 1) {
		n = read(fd, buf + total, len - 1 - total);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		total += n;
	}
	buf[total] = '\0';
	return total;
}

/* Parse a kernel list such as "0-1,3" into a bitmap of `max` entries; returns how many. */
static int parse_list(const char *s, bool *set, int max)
{
	int count = 0;

	while (*s && *s != '\n') {
		char *end;
		long a = strtol(s, &end, 10), b;

		if (end == s)
			break;
		b = a;
		if (*end == '-') {
			s = end + 1;
			b = strtol(s, &end, 10);
		}
		for (long i = a; i <= b && i < max; i++) {
			if (!set[i])
				count++;
			set[i] = true;
		}
		s = end;
		if (*s == ',')
			s++;
	}
	return count;
}

static int parse_nodelist(const char *s, bool *nodes)
{
	return parse_list(s, nodes, MAX_NODES);
}

/* The selected mode of a THP "enabled" file: "always [madvise] never" -> "madvise". */
static bool thp_mode(const char *path, char *mode, size_t len)
{
	char buf[256], *l, *r;

	if (read_file(path, buf, sizeof(buf)) < 0)
		return false;
	l = strchr(buf, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!l || !r)
		return false;
	*r = '\0';
	snprintf(mode, len, "%s", l + 1);
	return true;
}

static uint64_t pmd_size(void)
{
	char buf[64];

	if (read_file(THP_SYSFS "/hpage_pmd_size", buf, sizeof(buf)) < 0)
		return 0;
	return strtoull(buf, NULL, 10);
}

static void format_size(uint64_t bytes, char *out, size_t len)
{
	if (bytes % (1ULL << 30) == 0)
		snprintf(out, len, "%" PRIu64 "G", bytes >> 30);
	else if (bytes % (1ULL << 20) == 0)
		snprintf(out, len, "%" PRIu64 "M", bytes >> 20);
	else
		snprintf(out, len, "%" PRIu64 "K", bytes >> 10);
}

/* "2M" -> 2097152; 0 on a malformed kind. "base" is handled by the caller. */
static uint64_t parse_kind(const char *kind)
{
	char *end;
	unsigned long long v;

	if (!kind[0] || kind[0] < '1' || kind[0] > '9')
		return 0;
	errno = 0;
	v = strtoull(kind, &end, 10);
	if (errno || end[0] == '\0' || end[1] != '\0')
		return 0;
	switch (end[0]) {
	case 'K': v <<= 10; break;
	case 'M': v <<= 20; break;
	case 'G': v <<= 30; break;
	default: return 0;
	}
	if (v == 0 || (v & (v - 1)))
		return 0;
	return v;
}

/*
 * Effective THP mode for a folio size: the per-size mTHP file if the kernel has one
 * ("inherit" means the top-level file), else the top-level file for the PMD size.
 * Returns false if the kernel does not offer the size at all.
 */
static bool size_mode(uint64_t size, char *mode, size_t len)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), THP_SYSFS "/hugepages-%" PRIu64 "kB/enabled", size >> 10);
	if (stat(path, &st) == 0) {
		if (!thp_mode(path, mode, len))
			return false;
		if (strcmp(mode, "inherit") == 0)
			return thp_mode(THP_SYSFS "/enabled", mode, len);
		return true;
	}
	if (size == pmd_size())
		return thp_mode(THP_SYSFS "/enabled", mode, len);
	return false;
}

static int nodes_with_memory(bool *nodes)
{
	char buf[4096];

	memset(nodes, 0, sizeof(bool) * MAX_NODES);
	if (read_file("/sys/devices/system/node/has_memory", buf, sizeof(buf)) < 0) {
		/* kernels without NUMA: one node */
		nodes[0] = true;
		return 1;
	}
	return parse_nodelist(buf, nodes);
}

static void format_nodes(const bool *nodes, char *out, size_t len)
{
	size_t off = 0;

	out[0] = '\0';
	for (int i = 0; i < MAX_NODES && off < len; i++)
		if (nodes[i])
			off += snprintf(out + off, len - off, "%s%d", off ? "," : "", i);
}

/* Refuses (exit 2) on a host with fewer than two NUMA nodes with memory. */
static void require_two_nodes(const bool *nodes, int n)
{
	char list[512];

	if (n >= 2)
		return;
	format_nodes(nodes, list, sizeof(list));
	die(EXIT_HOST,
	    "refusing to run: this host has %d NUMA node%s with memory (node%s %s); "
	    "move_pages() between nodes needs at least two (see `numactl -H`)",
	    n, n == 1 ? "" : "s", n == 1 ? "" : "s", list);
}

static int check_host(void)
{
	bool nodes[MAX_NODES];
	int n = nodes_with_memory(nodes);
	char list[512], mode[32], name[32];
	long ps = sysconf(_SC_PAGESIZE);
	uint64_t pmd = pmd_size();
	struct utsname u;
	bool first = true;

	uname(&u);
	format_nodes(nodes, list, sizeof(list));
	printf("{\"type\":\"host\",\"arch\":\"%s\",\"kernel_release\":\"%s\",\"base_page_size\":%ld,"
	       "\"pmd_size\":%" PRIu64 ",\"nodes_with_memory\":[%s],\"folio_sizes\":{",
	       u.machine, u.release, ps, pmd, list);
	/* every size the kernel offers (the runner sets the modes) and its current mode */
	for (uint64_t size = (uint64_t)ps * 2; size <= (1ULL << 30); size <<= 1) {
		if (!size_mode(size, mode, sizeof(mode)))
			continue;
		format_size(size, name, sizeof(name));
		printf("%s\"%s\":\"%s\"", first ? "" : ",", name, mode);
		first = false;
	}
	printf("},\"migbench_version\":\"%s\",\"source_sha256\":\"%s\"}\n",
	       MIGBENCH_VERSION, MIGBENCH_SOURCE_SHA256);
	fflush(stdout);
	require_two_nodes(nodes, n);
	return 0;
}

static void snapshot_cpu(struct ctx *c, struct cpu_snapshot *s)
{
	static char buf[1 << 16];
	unsigned long long v[10] = {0};

	s->busy_ticks = 0;
	if (reread_fd(c->stat_fd, buf, sizeof(buf)) > 0 &&
	    sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu",
		   &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) >= 8)
		/* user nice system [idle] [iowait] irq softirq steal; guest is inside user */
		s->busy_ticks = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];

	s->sched_ok = false;
	s->sched_ns = 0;
	if (c->schedstat_fd >= 0 && reread_fd(c->schedstat_fd, buf, sizeof(buf)) > 0) {
		char *line = buf;
		int version = 0;

		while (line && *line) {
			char *next = strchr(line, '\n');
			unsigned long long f[9];

			if (next)
				*next++ = '\0';
			if (sscanf(line, "version %d", &version) == 1) {
				/* field layout checked below */
			} else if (version >= 15 && strncmp(line, "cpu", 3) == 0 &&
				   sscanf(line, "%*s %llu %llu %llu %llu %llu %llu %llu %llu %llu",
					  &f[0], &f[1], &f[2], &f[3], &f[4], &f[5], &f[6], &f[7],
					  &f[8]) == 9) {
				s->sched_ns += f[6];   /* rq_cpu_time: non-idle run time, ns */
				s->sched_ok = true;
			}
			line = next;
		}
	}
}

static long long vmstat_field(const char *buf, const char *name)
{
	size_t len = strlen(name);
	const char *p = buf;

	while ((p = strstr(p, name))) {
		if ((p == buf || p[-1] == '\n') && p[len] == ' ')
			return strtoll(p + len + 1, NULL, 10);
		p += len;
	}
	return -1;
}

static void snapshot_vm(struct ctx *c, struct vm_snapshot *s)
{
	static char buf[1 << 16];

	memset(s, 0xff, sizeof(*s));   /* -1: unavailable */
	if (reread_fd(c->vmstat_fd, buf, sizeof(buf)) <= 0)
		return;
	s->pgmigrate_success = vmstat_field(buf, "pgmigrate_success");
	s->pgmigrate_fail = vmstat_field(buf, "pgmigrate_fail");
	s->thp_migration_success = vmstat_field(buf, "thp_migration_success");
	s->thp_migration_fail = vmstat_field(buf, "thp_migration_fail");
	s->thp_migration_split = vmstat_field(buf, "thp_migration_split");
	s->mt_batches = vmstat_field(buf, "pgmigrate_mt_batches");
	s->mt_folios = vmstat_field(buf, "pgmigrate_mt_folios");
	s->mt_works = vmstat_field(buf, "pgmigrate_mt_works");
	s->mt_fallbacks = vmstat_field(buf, "pgmigrate_mt_fallbacks");
}

#define PF_KTHREAD 0x00200000

static int by_pid(const void *a, const void *b)
{
	const struct kthread_time *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/*
 * What migbench knows about each pid it has seen: a kernel thread (its schedstat kept open)
 * or not (never read again). Pids are not reused within a run (pid_max wraps after
 * millions), so a process is classified once, and a snapshot costs one readdir of /proc plus
 * one pread per kernel thread, however many other processes the host runs.
 */
struct pid_entry {
	int pid;
	int schedstat_fd;        /* -1: not a kernel thread (or one that has exited) */
};

static struct {
	struct pid_entry *v;
	size_t n, cap;
} known_pids;

static int entry_by_pid(const void *a, const void *b)
{
	const struct pid_entry *x = a, *y = b;

	return (x->pid > y->pid) - (x->pid < y->pid);
}

/* Classify a pid not seen before: -1 if it is not a kernel thread (or is gone). */
static int open_kthread_schedstat(int pid)
{
	char path[64], buf[1024], *close_paren;
	unsigned int flags = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	close_paren = strrchr(buf, ')');
	/* ") S ppid pgrp session tty_nr tpgid flags" */
	if (!close_paren ||
	    sscanf(close_paren + 1, " %*c %*d %*d %*d %*d %*d %u", &flags) != 1 ||
	    !(flags & PF_KTHREAD))
		return -1;
	snprintf(path, sizeof(path), "/proc/%d/schedstat", pid);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/*
 * Every kernel thread's run time (PF_KTHREAD in the flags of /proc/<pid>/stat; run time in
 * ns from /proc/<pid>/schedstat). Kernel threads are single-threaded processes, so /proc
 * itself lists them all.
 */
static void snapshot_kthreads(struct kthread_snapshot *s)
{
	DIR *proc = opendir("/proc");
	struct dirent *de;
	size_t sorted = known_pids.n;
	char buf[128];

	s->n = 0;
	s->ok = false;
	if (!proc)
		return;
	while ((de = readdir(proc))) {
		struct pid_entry *e;
		unsigned long long run_ns;
		ssize_t len;
		int pid;

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		pid = atoi(de->d_name);
		e = bsearch(&(struct pid_entry){ .pid = pid }, known_pids.v, sorted,
			    sizeof(*e), entry_by_pid);
		if (!e) {
			if (known_pids.n == known_pids.cap) {
				known_pids.cap = known_pids.cap ? 2 * known_pids.cap : 1024;
				known_pids.v = realloc(known_pids.v, known_pids.cap * sizeof(*e));
				if (!known_pids.v)
					die(EXIT_SYSTEM, "out of memory");
			}
			e = &known_pids.v[known_pids.n++];
			e->pid = pid;
			e->schedstat_fd = open_kthread_schedstat(pid);
		}
		if (e->schedstat_fd < 0)
			continue;
		len = pread(e->schedstat_fd, buf, sizeof(buf) - 1, 0);
		if (len <= 0) {
			/* exited: kworkers come and go, so do not keep their files open */
			close(e->schedstat_fd);
			e->schedstat_fd = -1;
			continue;
		}
		buf[len] = '\0';
		if (sscanf(buf, "%llu", &run_ns) != 1)
			continue;
		if (s->n == s->cap) {
			s->cap = s->cap ? 2 * s->cap : 512;
			s->v = realloc(s->v, s->cap * sizeof(*s->v));
			if (!s->v)
				die(EXIT_SYSTEM, "out of memory");
		}
		s->v[s->n].pid = pid;
		s->v[s->n].ns = run_ns;
		s->n++;
		s->ok = true;
	}
	closedir(proc);
	if (known_pids.n > sorted)
		qsort(known_pids.v, known_pids.n, sizeof(*known_pids.v), entry_by_pid);
	qsort(s->v, s->n, sizeof(*s->v), by_pid);
}

/* Run time kernel threads gained between two snapshots (a thread born meanwhile: all of it). */
static uint64_t kthread_delta(const struct kthread_snapshot *before,
			      const struct kthread_snapshot *after)
{
	uint64_t sum = 0;
	size_t i = 0;

	for (size_t j = 0; j < after->n; j++) {
		while (i < before->n && before->v[i].pid < after->v[j].pid)
			i++;
		if (i < before->n && before->v[i].pid == after->v[j].pid &&
		    before->v[i].ns <= after->v[j].ns)
			sum += after->v[j].ns - before->v[i].ns;
		else if (i >= before->n || before->v[i].pid != after->v[j].pid)
			sum += after->v[j].ns;
	}
	return sum;
}

/* Move this process into a cgroup v2 directory (the runner's own, for migbench alone). */
static void join_cgroup(const char *dir)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0\n", 2) != 2)
		die(EXIT_SYSTEM, "cannot join cgroup %s: %s", dir, strerror(errno));
	close(fd);
}

/* DIR/cpu.stat of the cgroup v2 we joined; -1 if unreadable. */
static int open_cgroup_stat(const char *dir)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/cpu.stat", dir);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* usage_usec of our cgroup in ns; -1 if unavailable. */
static long long cgroup_usage_ns(struct ctx *c)
{
	char buf[1024];
	long long usec;

	if (c->cgroup_stat_fd < 0 || reread_fd(c->cgroup_stat_fd, buf, sizeof(buf)) <= 0)
		return -1;
	usec = vmstat_field(buf, "usage_usec");
	return usec < 0 ? -1 : usec * 1000;
}

static void print_delta(const char *name, long long before, long long after)
{
	if (before < 0 || after < 0 || after < before)
		printf(",\"%s\":null", name);
	else
		printf(",\"%s\":%lld", name, after - before);
}

static inline uint64_t pattern_word(uint64_t seed, uint64_t page, uint64_t word)
{
	uint64_t x = seed ^ (page << 20) ^ word;

	x *= 0x9E3779B97F4A7C15ULL;
	return x ^ (x >> 29);
}

static void write_pattern(struct ctx *c)
{
	long words = c->page_size / 8;

	for (long p = 0; p < c->n_pages; p++) {
		uint64_t *w = (uint64_t *)(c->buf + p * c->page_size);

		for (long i = 0; i < words; i++)
			w[i] = pattern_word(c->opt.seed, (uint64_t)p, (uint64_t)i);
	}
}

static long check_pattern(struct ctx *c)
{
	long words = c->page_size / 8, bad = 0;

	for (long p = 0; p < c->n_pages; p++) {
		const uint64_t *w = (const uint64_t *)(c->buf + p * c->page_size);

		for (long i = 0; i < words; i++)
			if (w[i] != pattern_word(c->opt.seed, (uint64_t)p, (uint64_t)i)) {
				bad++;
				break;
			}
	}
	return bad;
}

static void read_pagemap(struct ctx *c)
{
	size_t want = (size_t)c->n_pages * sizeof(uint64_t), got = 0;
	off_t off = (off_t)((uintptr_t)c->buf / (uintptr_t)c->page_size) * (off_t)sizeof(uint64_t);

	while (got < want) {
		ssize_t n = pread(c->pagemap_fd, (char *)c->pagemap_buf + got, want - got,
				  off + (off_t)got);
		if (n <= 0)
			die(EXIT_SYSTEM, "reading /proc/self/pagemap: %s", n ? strerror(errno) : "short read");
		got += (size_t)n;
	}
}

/* kpageflags of [pfn, pfn+n); entries past the end of memory read as 0. */
static void read_kflags(struct ctx *c, uint64_t pfn, long n)
{
	ssize_t r;

	memset(c->kflags_buf, 0, (size_t)n * sizeof(uint64_t));
	r = pread(c->kpageflags_fd, c->kflags_buf, (size_t)n * sizeof(uint64_t),
		  (off_t)(pfn * sizeof(uint64_t)));
	if (r < 0)
		die(EXIT_SYSTEM, "reading /proc/kpageflags: %s", strerror(errno));
}

#define F(x) (1ULL << (x))

/*
 * Verify that every folio of the buffer has the requested size; compute the bytes a move of
 * the folio addresses really covers (an address inside a smaller folio moves only that folio).
 */
static void verify_backing(struct ctx *c, struct backing *b)
{
	long k = c->pages_per_folio;

	memset(b, 0, sizeof(*b));
	read_pagemap(c);
	for (long f = 0; f < c->opt.count; f++) {
		const uint64_t *pm = c->pagemap_buf + f * k;
		uint64_t pfn0 = pm[0] & PM_PFN_MASK;
		bool good = true;
		uint64_t covered;

		for (long j = 0; j < k; j++)
			if (!(pm[j] & PM_PRESENT)) {
				b->not_present++;
				good = false;
				break;
			}
		if (!good) {
			b->bad++;
			b->bytes += (uint64_t)c->page_size;
			continue;
		}
		if (pfn0 == 0)
			die(EXIT_HOST, "cannot verify folio backing: /proc/self/pagemap shows no PFNs "
			    "(needs CAP_SYS_ADMIN: run migbench as root)");

		if (k == 1) {
			/* base pages: must not be part of any compound page */
			read_kflags(c, pfn0, 1);
			if (c->kflags_buf[0] & (F(KPF_COMPOUND_HEAD) | F(KPF_COMPOUND_TAIL) | F(KPF_THP) |
						F(KPF_HUGE))) {
				b->larger++;
				b->bad++;
			} else {
				b->good++;
			}
			b->bytes += (uint64_t)c->page_size;
			continue;
		}

		/* folio of k pages: head with THP, k-1 contiguous tails, next PFN not a tail */
		read_kflags(c, pfn0, k + 1);
		const uint64_t *fl = c->kflags_buf;
		if (!(fl[0] & F(KPF_COMPOUND_HEAD))) {
			if (fl[0] & F(KPF_COMPOUND_TAIL)) {
				b->larger++;               /* address inside a folio that started earlier */
				covered = c->folio_size;   /* at least; the record is marked bad anyway */
			} else {
				b->smaller++;              /* a base page */
				covered = (uint64_t)c->page_size;
			}
			b->bad++;
			b->bytes += covered;
			continue;
		}
		long tails = 0;
		for (long j = 1; j < k; j++) {
			if ((pm[j] & PM_PFN_MASK) != pfn0 + (uint64_t)j || !(fl[j] & F(KPF_COMPOUND_TAIL)))
				break;
			tails++;
		}
		if (tails < k - 1) {
			b->smaller++;
			b->bad++;
			b->bytes += (uint64_t)(tails + 1) * (uint64_t)c->page_size;
			continue;
		}
		if ((fl[k] & F(KPF_COMPOUND_TAIL)) || !(fl[0] & F(KPF_THP)) || (pfn0 % (uint64_t)k)) {
			b->larger += (fl[k] & F(KPF_COMPOUND_TAIL)) ? 1 : 0;
			b->bad++;
			b->bytes += c->folio_size;
			continue;
		}
		b->good++;
		b->bytes += c->folio_size;
	}
	b->ok = b->bad == 0;
	snprintf(b->detail, sizeof(b->detail),
		 "%ld of %ld folios have the requested size %s; %ld smaller, %ld larger, %ld not present",
		 b->good, c->opt.count, c->opt.kind, b->smaller, b->larger, b->not_present);
}

/* Folios with at least one base page not on `node` (negative status counts as not there). */
static long folios_not_on(struct ctx *c, int node)
{
	long bad = 0;

	if (move_pages(0, (unsigned long)c->n_pages, c->page_addrs, NULL, c->page_status, 0) != 0)
		die(EXIT_SYSTEM, "move_pages() node query failed: %s", strerror(errno));
	for (long f = 0; f < c->opt.count; f++)
		for (long j = 0; j < c->pages_per_folio; j++)
			if (c->page_status[f * c->pages_per_folio + j] != node) {
				bad++;
				break;
			}
	return bad;
}

static void parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{"kind", required_argument, NULL, 'k'},
		{"count", required_argument, NULL, 'n'},
		{"src", required_argument, NULL, 's'},
		{"dst", required_argument, NULL, 'd'},
		{"reps", required_argument, NULL, 'r'},
		{"warmup", required_argument, NULL, 'w'},
		{"seed", required_argument, NULL, 'S'},
		{"check-host", no_argument, NULL, 'C'},
		{"loopback-test", no_argument, NULL, 'L'},
		{"cgroup", required_argument, NULL, 'G'},
		{"ceiling", no_argument, NULL, 'X'},
		{"threads", required_argument, NULL, 'T'},
		{"size-mib", required_argument, NULL, 'M'},
		{"version", no_argument, NULL, 'V'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int ch;

	memset(o, 0, sizeof(*o));
	o->count = -1;
	o->src = 0;
	o->dst = 1;
	o->reps = 10;
	o->warmup = 2;
	o->seed = 0x6d69676c6162ULL;
	while ((ch = getopt_long(argc, argv, "k:n:s:d:r:w:S:G:T:M:XCLVh", longopts, NULL)) != -1) {
		char *end = NULL;
		long v = 0;

		if (optarg) {
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (ch != 'k' && ch != 'G' && ch != 'T' && (errno || *end || end == optarg))
				die(EXIT_USAGE, "--%s: not an integer: '%s'",
				    ch == 'n' ? "count" : ch == 's' ? "src" : ch == 'd' ? "dst" :
				    ch == 'r' ? "reps" : ch == 'w' ? "warmup" : ch == 'M' ? "size-mib" :
				    "seed", optarg);
		}
		switch (ch) {
		case 'k': o->kind = optarg; break;
		case 'n': o->count = v; break;
		case 's': o->src = (int)v; break;
		case 'd': o->dst = (int)v; break;
		case 'r': o->reps = v; break;
		case 'w': o->warmup = v; break;
		case 'S': o->seed = (uint64_t)v; break;
		case 'C': o->check_host = true; break;
		case 'L': o->loopback = true; break;
		case 'G': o->cgroup = optarg; break;
		case 'X': o->ceiling = true; break;
		case 'T': o->threads = optarg; break;
		case 'M': o->size_mib = v; break;
		case 'V':
			printf("{\"type\":\"version\",\"migbench_version\":\"%s\",\"source_sha256\":\"%s\","
			       "\"compiler\":\"%s\"}\n", MIGBENCH_VERSION, MIGBENCH_SOURCE_SHA256,
#ifdef __VERSION__
			       __VERSION__
#else
			       "unknown"
#endif
			);
			exit(0);
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
		die(EXIT_USAGE, "unexpected argument '%s'", argv[optind]);
	if (o->check_host)
		return;
	if (o->ceiling) {
		if (!o->threads)
			o->threads = "1";
		if (o->size_mib < 1)
			o->size_mib = 256;
		if (o->loopback)
			o->dst = o->src;
		if (o->reps < 1)
			die(EXIT_USAGE, "--reps must be >= 1, got %ld", o->reps);
		if (o->src < 0 || o->dst < 0 || o->src >= MAX_NODES || o->dst >= MAX_NODES ||
		    (o->src == o->dst && !o->loopback))
			die(EXIT_USAGE, "--src and --dst must be two different nodes, got %d and %d",
			    o->src, o->dst);
		return;
	}
	if (!o->kind)
		die(EXIT_USAGE, "--kind is required ('base' or a folio size such as 2M)");
	if (o->count < 1)
		die(EXIT_USAGE, "--count must be >= 1, got %ld", o->count);
	if (o->reps < 1)
		die(EXIT_USAGE, "--reps must be >= 1, got %ld", o->reps);
	if (o->warmup < 0)
		die(EXIT_USAGE, "--warmup must be >= 0, got %ld", o->warmup);
	if (o->loopback)
		o->dst = o->src;
	if (o->src < 0 || o->dst < 0 || o->src >= MAX_NODES || o->dst >= MAX_NODES ||
	    (o->src == o->dst && !o->loopback))
		die(EXIT_USAGE, "--src and --dst must be two different nodes, got %d and %d", o->src, o->dst);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (!p)
		die(EXIT_SYSTEM, "out of memory allocating %zu x %zu bytes", n, size);
	return p;
}

static void setup(struct ctx *c)
{
	bool nodes[MAX_NODES];
	int n = nodes_with_memory(nodes);
	char mode[32];
	struct utsname u;

	/* host checks first: the one-node refusal must not depend on anything else */
	if (!c->opt.loopback)
		require_two_nodes(nodes, n);
	if (!nodes[c->opt.src] || !nodes[c->opt.dst])
		die(EXIT_HOST, "node %d or %d has no memory on this host", c->opt.src, c->opt.dst);

	uname(&u);
	snprintf(c->arch, sizeof(c->arch), "%s", u.machine);
	c->page_size = sysconf(_SC_PAGESIZE);
	c->clk_tck = sysconf(_SC_CLK_TCK);
	if (strcmp(c->opt.kind, "base") == 0) {
		c->folio_size = (uint64_t)c->page_size;
	} else {
		c->folio_size = parse_kind(c->opt.kind);
		if (!c->folio_size)
			die(EXIT_USAGE, "unknown folio kind '%s' (use 'base' or a power-of-two size "
			    "such as 64K, 2M)", c->opt.kind);
		if (c->folio_size == (uint64_t)c->page_size)
			die(EXIT_USAGE, "folio kind '%s' is the base page size of this host: use 'base'",
			    c->opt.kind);
		if (c->folio_size < (uint64_t)c->page_size)
			die(EXIT_USAGE, "folio kind '%s' is smaller than the base page (%ld bytes)",
			    c->opt.kind, c->page_size);
		if (!size_mode(c->folio_size, mode, sizeof(mode)))
			die(EXIT_HOST, "folio size %s is not offered by this kernel (no %s/hugepages-%"
			    PRIu64 "kB and PMD size is %" PRIu64 ")", c->opt.kind, THP_SYSFS,
			    c->folio_size >> 10, pmd_size());
		if (strcmp(mode, "always") != 0 && strcmp(mode, "madvise") != 0)
			die(EXIT_HOST, "folio size %s is disabled (THP mode '%s'); set it to madvise "
			    "(the sweep runner does this for each cell)", c->opt.kind, mode);
	}
	c->pages_per_folio = (long)(c->folio_size / (uint64_t)c->page_size);
	if ((uint64_t)c->opt.count > (SIZE_MAX / 4) / c->folio_size)
		die(EXIT_USAGE, "--count %ld x %s is too large", c->opt.count, c->opt.kind);
	c->n_pages = c->opt.count * c->pages_per_folio;

	c->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	c->kpageflags_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (c->pagemap_fd < 0 || c->kpageflags_fd < 0)
		die(EXIT_HOST, "cannot open /proc/self/pagemap or /proc/kpageflags (%s): run as root",
		    strerror(errno));
	c->stat_fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	c->vmstat_fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
	c->schedstat_fd = open("/proc/schedstat", O_RDONLY | O_CLOEXEC);
	c->cgroup_stat_fd = -1;
	if (c->opt.cgroup) {
		join_cgroup(c->opt.cgroup);
		c->cgroup_stat_fd = open_cgroup_stat(c->opt.cgroup);
	}
	if (c->stat_fd < 0 || c->vmstat_fd < 0)
		die(EXIT_SYSTEM, "cannot open /proc/stat or /proc/vmstat: %s", strerror(errno));

	c->folio_addrs = xcalloc((size_t)c->opt.count, sizeof(void *));
	c->target_nodes = xcalloc((size_t)c->opt.count, sizeof(int));
	c->status = xcalloc((size_t)c->opt.count, sizeof(int));
	c->page_addrs = xcalloc((size_t)c->n_pages, sizeof(void *));
	c->page_status = xcalloc((size_t)c->n_pages, sizeof(int));
	c->pagemap_buf = xcalloc((size_t)c->n_pages, sizeof(uint64_t));
	c->kflags_buf = xcalloc((size_t)c->pages_per_folio + 1, sizeof(uint64_t));
	c->fresh = c->pages_per_folio > 1 && c->folio_size != pmd_size();
}

/* The folios: an aligned buffer bound to the source node, THP/mTHP asked for or refused. */
static void map_buffer(struct ctx *c)
{
	unsigned long mask[MAX_NODES / (8 * sizeof(unsigned long))] = {0};
	/* map size + alignment, trim both ends */
	size_t len = (size_t)c->opt.count * c->folio_size;
	size_t map_len = len + c->folio_size;
	char *raw = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (raw == MAP_FAILED)
		die(EXIT_SYSTEM, "mmap of %zu bytes failed: %s", map_len, strerror(errno));
	uintptr_t start = ((uintptr_t)raw + c->folio_size - 1) & ~(uintptr_t)(c->folio_size - 1);
	if (start > (uintptr_t)raw)
		munmap(raw, start - (uintptr_t)raw);
	if ((uintptr_t)raw + map_len > start + len)
		munmap((void *)(start + len), (uintptr_t)raw + map_len - (start + len));
	c->buf = (char *)start;

	mask[c->opt.src / (8 * sizeof(unsigned long))] |= 1UL << (c->opt.src % (8 * sizeof(unsigned long)));
	if (mbind(c->buf, len, MPOL_BIND, mask, MAX_NODES + 1, 0) != 0)
		die(EXIT_SYSTEM, "mbind to node %d failed: %s", c->opt.src, strerror(errno));
	if (madvise(c->buf, len, c->pages_per_folio > 1 ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
		die(EXIT_HOST, "madvise(%s) failed: %s", c->pages_per_folio > 1 ? "MADV_HUGEPAGE" :
		    "MADV_NOHUGEPAGE", strerror(errno));
	for (long f = 0; f < c->opt.count; f++)
		c->folio_addrs[f] = c->buf + (size_t)f * c->folio_size;
	for (long p = 0; p < c->n_pages; p++)
		c->page_addrs[p] = c->buf + (size_t)p * (size_t)c->page_size;
}

static void unmap_buffer(struct ctx *c)
{
	munmap(c->buf, (size_t)c->opt.count * c->folio_size);
	c->buf = NULL;
}

/* --ceiling ---------------------------------------------------------------------------- */

struct copier {
	pthread_t thread;
	pthread_barrier_t *start, *done;
	const char *from;
	char *to;
	size_t len;
	int cpu;                 /* -1: not pinned (a node without CPUs) */
	bool stop;
};

static void *copier_main(void *arg)
{
	struct copier *w = arg;

	if (w->cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	for (;;) {
		pthread_barrier_wait(w->start);
		if (w->stop)
			return NULL;
		memcpy(w->to, w->from, w->len);
		pthread_barrier_wait(w->done);
	}
}

/* CPUs of a node (sysfs cpulist) into out[]; returns how many. */
static int node_cpus(int node, int *out, int max)
{
	char path[96], buf[4096];
	bool *set = xcalloc(MAX_CPUS, sizeof(bool));
	int n = 0;

	snprintf(path, sizeof(path), "/sys/devices/system/node/node%d/cpulist", node);
	if (read_file(path, buf, sizeof(buf)) >= 0)
		parse_list(buf, set, MAX_CPUS);
	for (int cpu = 0; cpu < MAX_CPUS && n < max; cpu++)
		if (set[cpu])
			out[n++] = cpu;
	free(set);
	return n;
}

/* A buffer bound to a node, faulted in; exits if the kernel placed any page elsewhere. */
static char *node_buffer(size_t len, int node, long page_size)
{
	unsigned long mask[MAX_NODES / (8 * sizeof(unsigned long))] = {0};
	char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t pages = len / (size_t)page_size;
	void **addrs;
	int *status;
	long wrong = 0;

	if (buf == MAP_FAILED)
		die(EXIT_SYSTEM, "mmap of %zu bytes failed: %s", len, strerror(errno));
	mask[node / (8 * sizeof(unsigned long))] |= 1UL << (node % (8 * sizeof(unsigned long)));
	if (mbind(buf, len, MPOL_BIND, mask, MAX_NODES + 1, 0) != 0)
		die(EXIT_SYSTEM, "mbind to node %d failed: %s", node, strerror(errno));
	madvise(buf, len, MADV_HUGEPAGE);   /* fewer TLB misses, as the kernel's linear map */
	memset(buf, 0x5a, len);
	addrs = xcalloc(pages, sizeof(void *));
	status = xcalloc(pages, sizeof(int));
	for (size_t p = 0; p < pages; p++)
		addrs[p] = buf + p * (size_t)page_size;
	if (move_pages(0, pages, addrs, NULL, status, 0) != 0)
		die(EXIT_SYSTEM, "move_pages() query failed: %s", strerror(errno));
	for (size_t p = 0; p < pages; p++)
		if (status[p] != node)
			wrong++;
	free(addrs);
	free(status);
	if (wrong)
		die(EXIT_VERIFY, "ceiling: %ld of %zu pages of the node %d buffer are not on node %d",
		    wrong, pages, node, node);
	return buf;
}

/* One direction, one thread count: R timed copies of the whole buffer, split among T threads. */
static void ceiling_run(const struct options *o, const char *direction, int threads,
			const int *cpus, int n_cpus, const char *from, char *to, size_t len)
{
	pthread_barrier_t start, done;
	struct copier *w = xcalloc((size_t)threads, sizeof(*w));
	size_t chunk = len / (size_t)threads;

	pthread_barrier_init(&start, NULL, (unsigned int)threads + 1);
	pthread_barrier_init(&done, NULL, (unsigned int)threads + 1);
	for (int t = 0; t < threads; t++) {
		w[t].start = &start;
		w[t].done = &done;
		w[t].from = from + (size_t)t * chunk;
		w[t].to = to + (size_t)t * chunk;
		w[t].len = t == threads - 1 ? len - (size_t)t * chunk : chunk;
		w[t].cpu = n_cpus ? cpus[t % n_cpus] : -1;
		if (pthread_create(&w[t].thread, NULL, copier_main, &w[t]) != 0)
			die(EXIT_SYSTEM, "pthread_create failed");
	}
	for (long r = -1; r < o->reps; r++) {   /* rep -1: a warm-up copy, not printed */
		uint64_t t0, t1;

		pthread_barrier_wait(&start);
		t0 = now_ns(CLOCK_MONOTONIC);
		pthread_barrier_wait(&done);
		t1 = now_ns(CLOCK_MONOTONIC);
		if (r < 0)
			continue;
		printf("{\"type\":\"ceiling\",\"direction\":\"%s\",\"threads\":%d,\"cpus\":%d,"
		       "\"rep\":%ld,\"src_node\":%d,\"dst_node\":%d,\"bytes\":%zu,"
		       "\"elapsed_ns\":%" PRIu64 ",\"gbps\":%.9g,\"placement_ok\":true,"
		       "\"loopback\":%s}\n",
		       direction, threads, n_cpus < threads ? n_cpus : threads, r, o->src, o->dst,
		       len, t1 - t0, (double)len / (double)(t1 - t0), o->loopback ? "true" : "false");
	}
	for (int t = 0; t < threads; t++)
		w[t].stop = true;
	pthread_barrier_wait(&start);
	for (int t = 0; t < threads; t++)
		pthread_join(w[t].thread, NULL);
	pthread_barrier_destroy(&start);
	pthread_barrier_destroy(&done);
	free(w);
}

static int ceiling(const struct options *o)
{
	long page_size = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)o->size_mib << 20;
	int src_cpus[MAX_CPUS], dst_cpus[MAX_CPUS];
	int n_src, n_dst, counts[64], n_counts = 0;
	bool nodes[MAX_NODES];
	const char *p = o->threads;
	char *src_buf, *dst_buf;

	while (*p) {
		char *end;
		long t = strtol(p, &end, 10);

		if (end == p || t < 1 || t > 1024 || (*end && *end != ',') || n_counts == 64)
			die(EXIT_USAGE, "--threads: a list of thread counts such as 1,2,4, got '%s'",
			    o->threads);
		counts[n_counts++] = (int)t;
		p = *end ? end + 1 : end;
	}
	if (!o->loopback)
		require_two_nodes(nodes, nodes_with_memory(nodes));
	n_src = node_cpus(o->src, src_cpus, MAX_CPUS);
	n_dst = node_cpus(o->dst, dst_cpus, MAX_CPUS);
	src_buf = node_buffer(len, o->src, page_size);
	dst_buf = node_buffer(len, o->dst, page_size);
	for (int i = 0; i < n_counts; i++) {
		/* push: the source node's CPUs pull the data across; pull: the destination's */
		ceiling_run(o, "push", counts[i], src_cpus, n_src, src_buf, dst_buf, len);
		ceiling_run(o, "pull", counts[i], dst_cpus, n_dst, src_buf, dst_buf, len);
	}
	munmap(src_buf, len);
	munmap(dst_buf, len);
	return 0;
}

int main(int argc, char **argv)
{
	struct ctx c;
	struct backing b;
	long failed_total = 0, moves, samples = 0;
	int exit_code = 0;
	uint64_t t_alloc, t_populated;

	memset(&c, 0, sizeof(c));
	c.schedstat_fd = -1;
	c.cgroup_stat_fd = -1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	parse_args(argc, argv, &c.opt);
	if (c.opt.check_host)
		return check_host();
	if (c.opt.ceiling)
		return ceiling(&c.opt);

	t_alloc = now_ns(CLOCK_MONOTONIC);
	setup(&c);
	map_buffer(&c);
	write_pattern(&c);
	t_populated = now_ns(CLOCK_MONOTONIC);
	long bad_pages = 0, checked_pages = 0;
	struct kthread_snapshot kt0 = {0}, kt1 = {0};

	int cur_src = c.opt.src, cur_dst = c.opt.dst;
	long not_on_src = folios_not_on(&c, cur_src);
	if (not_on_src)
		fprintf(stderr, "%s: warning: %ld folios not on source node %d after allocation\n",
			prog, not_on_src, cur_src);

	moves = c.opt.warmup + c.opt.reps;
	for (long m = 0; m < moves; m++) {
		struct cpu_snapshot cpu0, cpu1;
		struct vm_snapshot vm0, vm1;
		uint64_t t0, t1, th0, th1, acct0, acct1;
		long long cg0, cg1;
		char ts[64];
		long ret, status_errors = 0, failed;
		bool warm = m < c.opt.warmup;

		verify_backing(&c, &b);
		if (!b.ok) {
			fprintf(stderr, "%s: backing check failed before move %ld: %s\n", prog, m, b.detail);
			/* time this one move anyway so the failure is a record, then stop */
			warm = false;
		}
		for (long f = 0; f < c.opt.count; f++)
			c.target_nodes[f] = cur_dst;

		/* the widest snapshots outermost, the caller's own clocks innermost */
		acct0 = now_ns(CLOCK_MONOTONIC);
		snapshot_kthreads(&kt0);
		snapshot_cpu(&c, &cpu0);
		snapshot_vm(&c, &vm0);
		cg0 = cgroup_usage_ns(&c);
		th0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		t0 = now_ns(CLOCK_MONOTONIC);
		ret = move_pages(0, (unsigned long)c.opt.count, c.folio_addrs, c.target_nodes, c.status,
				 MPOL_MF_MOVE);
		t1 = now_ns(CLOCK_MONOTONIC);
		th1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		cg1 = cgroup_usage_ns(&c);
		snapshot_vm(&c, &vm1);
		snapshot_cpu(&c, &cpu1);
		snapshot_kthreads(&kt1);
		acct1 = now_ns(CLOCK_MONOTONIC);
		if (ret < 0)
			die(EXIT_SYSTEM, "move_pages() of %ld folios from node %d to %d failed: %s",
			    c.opt.count, cur_src, cur_dst, strerror(errno));
		for (long f = 0; f < c.opt.count; f++)
			if (c.status[f] < 0)
				status_errors++;
		failed = folios_not_on(&c, cur_dst);
		failed_total += failed;
		if (failed)
			warm = false;   /* a failing move becomes a record even during warm-up */

		if (!warm) {
			uint64_t elapsed = t1 > t0 ? t1 - t0 : 1;
			uint64_t sys_ticks = cpu1.busy_ticks - cpu0.busy_ticks;

			iso_timestamp(ts, sizeof(ts));
			printf("{\"type\":\"sample\",\"rep\":%ld,\"src_node\":%d,\"dst_node\":%d,"
			       "\"page_kind\":\"%s\",\"folio_size\":%" PRIu64 ",\"page_count\":%ld,"
			       "\"bytes\":%" PRIu64 ",\"elapsed_ns\":%" PRIu64 ",\"gbps\":%.9g,"
			       "\"failed_pages\":%ld,\"backing_ok\":%s,\"caller_cpu_ns\":%" PRIu64 ","
			       "\"system_cpu_ns\":%" PRIu64 ",\"system_cpu_resolution_ns\":%ld",
			       m - c.opt.warmup < 0 ? 0 : m - c.opt.warmup, cur_src, cur_dst, c.opt.kind,
			       b.ok ? c.folio_size : b.bytes / (uint64_t)c.opt.count, c.opt.count,
			       b.bytes, elapsed, (double)b.bytes / (double)elapsed, failed,
			       b.ok ? "true" : "false", th1 - th0,
			       sys_ticks * (uint64_t)(1000000000L / c.clk_tck), 1000000000L / c.clk_tck);
			if (cpu0.sched_ok && cpu1.sched_ok && cpu1.sched_ns >= cpu0.sched_ns)
				printf(",\"system_cpu_ns_schedstat\":%" PRIu64, cpu1.sched_ns - cpu0.sched_ns);
			else
				printf(",\"system_cpu_ns_schedstat\":null");
			print_delta("pgmigrate_success", vm0.pgmigrate_success, vm1.pgmigrate_success);
			print_delta("pgmigrate_fail", vm0.pgmigrate_fail, vm1.pgmigrate_fail);
			print_delta("thp_migration_success", vm0.thp_migration_success,
				    vm1.thp_migration_success);
			print_delta("thp_migration_fail", vm0.thp_migration_fail, vm1.thp_migration_fail);
			print_delta("thp_migration_split", vm0.thp_migration_split, vm1.thp_migration_split);
			print_delta("pgmigrate_mt_batches", vm0.mt_batches, vm1.mt_batches);
			print_delta("pgmigrate_mt_folios", vm0.mt_folios, vm1.mt_folios);
			print_delta("pgmigrate_mt_works", vm0.mt_works, vm1.mt_works);
			print_delta("pgmigrate_mt_fallbacks", vm0.mt_fallbacks, vm1.mt_fallbacks);
			if (kt0.ok && kt1.ok)
				printf(",\"kthread_cpu_ns\":%" PRIu64 ",\"kthreads\":%zu",
				       kthread_delta(&kt0, &kt1), kt1.n);
			else
				printf(",\"kthread_cpu_ns\":null,\"kthreads\":null");
			print_delta("cgroup_cpu_ns", cg0, cg1);
			/* what the snapshots around the window cost (none of it inside the window) */
			printf(",\"accounting_ns\":%" PRIu64, (acct1 - acct0) - (t1 - t0));
			printf(",\"move_pages_ret\":%ld,\"status_errors\":%ld,\"warmup_moves\":%ld,"
			       "\"base_page_size\":%ld,\"loopback\":%s,\"fresh_buffer\":%s,"
			       "\"timestamp\":\"%s\"",
			       ret, status_errors, c.opt.warmup, c.page_size,
			       c.opt.loopback ? "true" : "false", c.fresh ? "true" : "false", ts);
			if (!b.ok)
				printf(",\"backing_detail\":\"%s\"", b.detail);
			printf("}\n");
			samples++;
		}
		if (!b.ok) {
			exit_code = EXIT_VERIFY;
			json_error("backing", b.detail);
			break;
		}
		if (failed) {
			char msg[256];

			snprintf(msg, sizeof(msg), "%ld of %ld folios not on node %d after %s move %ld",
				 failed, c.opt.count, cur_dst, warm ? "warm-up" : "measured", m);
			fprintf(stderr, "%s: %s\n", prog, msg);
			json_error("node", msg);
			exit_code = EXIT_VERIFY;
			break;
		}
		if (c.fresh) {
			if (m + 1 < moves) {
				/* this buffer is done: check it, then fault in a new one on --src */
				bad_pages += check_pattern(&c);
				checked_pages += c.n_pages;
				unmap_buffer(&c);
				map_buffer(&c);
				write_pattern(&c);
			}
			continue;
		}
		cur_src = cur_dst;
		cur_dst = cur_dst == c.opt.dst ? c.opt.src : c.opt.dst;
	}

	if (exit_code == 0) {
		/* the state after the last move: sizes still right (no split on the way) */
		verify_backing(&c, &b);
		if (!b.ok) {
			fprintf(stderr, "%s: backing check failed after the last move: %s\n", prog, b.detail);
			json_error("backing", b.detail);
			exit_code = EXIT_VERIFY;
		}
	}
	uint64_t t_check = now_ns(CLOCK_MONOTONIC);
	bad_pages += check_pattern(&c);
	checked_pages += c.n_pages;
	uint64_t t_end = now_ns(CLOCK_MONOTONIC);
	if (bad_pages) {
		char msg[128];

		snprintf(msg, sizeof(msg), "pattern check failed in %ld of %ld base pages", bad_pages,
			 checked_pages);
		fprintf(stderr, "%s: %s\n", prog, msg);
		json_error("pattern", msg);
		exit_code = EXIT_VERIFY;
	}
	printf("{\"type\":\"summary\",\"ok\":%s,\"samples\":%ld,\"pattern_ok\":%s,\"bad_pages\":%ld,"
	       "\"failed_folios_total\":%ld,\"populate_ns\":%" PRIu64 ",\"pattern_check_ns\":%"
	       PRIu64 ",\"migbench_version\":\"%s\",\"source_sha256\":\"%s\",\"arch\":\"%s\"}\n",
	       exit_code == 0 ? "true" : "false", samples, bad_pages ? "false" : "true", bad_pages,
	       failed_total, t_populated - t_alloc, t_end - t_check, MIGBENCH_VERSION,
	       MIGBENCH_SOURCE_SHA256, c.arch);
	return exit_code;
}
