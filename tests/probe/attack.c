/*
 * attack: what a hostile process inside a container tries, one check per line.
 *
 * Build:  gcc -static -O2 -o attack attack.c      (x86_64; run by tests/attacks.rs)
 *
 * Every result line is "NAME ok", "NAME errno=ENAME" or "NAME killed=SIGNO" (the check ran in a
 * forked child that died of a signal: seccomp's SIGSYS kill is a refusal). Nothing here harms
 * the host when a defence is missing: devices are only opened (then closed), except that a
 * kmsg opened for writing gets one canary line, which is how the test sees the escape; kernel
 * knobs are written with their own current value.
 *
 * Subcommands:
 *   dev PATH MAJOR MINOR [CANARY]  mknod a char device, then open it read-only and write-only
 *   open PATH [CANARY]             open an existing node read-only and write-only
 *   i386                           dangerous calls through int $0x80 (i386 numbers)
 *   x32                            dangerous calls with the x32 bit set
 *   sys                            dangerous native calls (unshare, cgroup v1 release_agent, ...)
 *   ptrace PID                     PTRACE_ATTACH and kill(0) against a host pid
 *   fds                            descriptors open at exec
 *   exe                            "exe PID COMM DEV:INO TARGET" for every visible process
 *   exe-scan DEV:INO PASSES        /proc/1/exe 200 times, then PASSES rounds of opening every
 *                                  /proc/PID/exe; reports any
 *                                  whose file is DEV:INO (the host's rcrun binary)
 *   wide                           syscalls whose int arguments carry bits above 32 (seccomp
 *                                  must judge them as the kernel reads them), next to the same
 *                                  calls without those bits
 *   cwd                            getcwd()
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWUSER
#define CLONE_NEWUSER 0x10000000
#endif
#ifndef CLONE_NEWNS
#define CLONE_NEWNS 0x00020000
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#define X32_BIT 0x40000000L

static const char *errname(int e)
{
	static char buf[32];
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EINVAL: return "EINVAL";
	case EROFS: return "EROFS";
	case ENOSYS: return "ENOSYS";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ELOOP: return "ELOOP";
	case ESTALE: return "ESTALE";
	case EAFNOSUPPORT: return "EAFNOSUPPORT";
	default:
		snprintf(buf, sizeof buf, "E%d", e);
		return buf;
	}
}

static void report(const char *name, int err)
{
	if (err == 0)
		printf("%s ok\n", name);
	else
		printf("%s errno=%s\n", name, errname(err));
}

/* Runs fn in a forked child and reports its errno, or the signal that killed it. */
static void in_child(const char *name, int (*fn)(void *), void *arg)
{
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		printf("%s probe-error=fork\n", name);
		return;
	}
	if (pid == 0)
		_exit(fn(arg) & 0xff);
	int st = 0;
	waitpid(pid, &st, 0);
	if (WIFSIGNALED(st))
		printf("%s killed=%d\n", name, WTERMSIG(st));
	else
		report(name, WEXITSTATUS(st));
}

/* ---- devices ---- */

static void try_open(const char *path, const char *canary)
{
	char name[512];
	snprintf(name, sizeof name, "open %s rdonly", path);
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	report(name, fd < 0 ? errno : 0);
	if (fd >= 0)
		close(fd); /* never read: /dev/mem, /dev/port */
	snprintf(name, sizeof name, "open %s wronly", path);
	fd = open(path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	report(name, fd < 0 ? errno : 0);
	if (fd >= 0) {
		if (canary) {
			ssize_t n = write(fd, canary, strlen(canary));
			(void)n;
		}
		close(fd);
	}
}

static int cmd_dev(int argc, char **argv)
{
	if (argc < 5)
		return 2;
	const char *path = argv[2];
	unsigned maj = (unsigned)atoi(argv[3]), min = (unsigned)atoi(argv[4]);
	char name[512];
	snprintf(name, sizeof name, "mknod %s", path);
	unlink(path);
	report(name, mknod(path, S_IFCHR | 0666, makedev(maj, min)) < 0 ? errno : 0);
	try_open(path, argc > 5 ? argv[5] : NULL);
	return 0;
}

static int cmd_open(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	try_open(argv[2], argc > 3 ? argv[3] : NULL);
	return 0;
}

/* ---- i386 through int $0x80 ---- */

struct call {
	const char *name;
	long nr;
	long a1, a2, a3;
};

static int int80(void *arg)
{
	struct call *c = arg;
	long ret;
	/* i386 ABI: eax = nr, ebx, ecx, edx = args; the 64-bit process enters the compat table
	 * (seccomp sees AUDIT_ARCH_I386). Pointers are NULL: an allowed call fails with EFAULT. */
	__asm__ volatile("int $0x80"
			 : "=a"(ret)
			 : "a"(c->nr), "b"(c->a1), "c"(c->a2), "d"(c->a3)
			 : "memory");
	return ret < 0 ? (int)-ret : 0;
}

static int cmd_i386(void)
{
	struct call calls[] = {
		{ "i386 mount", 21, 0, 0, 0 },
		{ "i386 unshare(CLONE_NEWUSER)", 310, CLONE_NEWUSER, 0, 0 },
		{ "i386 keyctl", 288, 0, 0, 0 },
		{ "i386 bpf", 357, 0, 0, 0 },
		{ "i386 open_by_handle_at", 342, -1, 0, 0 },
		{ "i386 ptrace(PTRACE_ATTACH,1)", 26, 16, 1, 0 },
		{ "i386 setns", 346, -1, 0, 0 },
		{ "i386 userfaultfd", 374, 0, 0, 0 },
	};
	for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
		in_child(calls[i].name, int80, &calls[i]);
	return 0;
}

/* ---- x32 numbers ---- */

static int x32(void *arg)
{
	struct call *c = arg;
	return syscall(c->nr | X32_BIT, c->a1, c->a2, c->a3) < 0 ? errno : 0;
}

static int cmd_x32(void)
{
	struct call calls[] = {
		{ "x32 mount", 165, 0, 0, 0 },
		{ "x32 unshare(CLONE_NEWUSER)", 272, CLONE_NEWUSER, 0, 0 },
		{ "x32 keyctl", 250, 0, 0, 0 },
		{ "x32 bpf", 321, 0, 0, 0 },
		{ "x32 open_by_handle_at", 304, -1, 0, 0 },
		{ "x32 io_uring_setup", 425, 1, 0, 0 },
		{ "x32 userfaultfd", 323, 0, 0, 0 },
	};
	for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++)
		in_child(calls[i].name, x32, &calls[i]);
	return 0;
}

/* ---- native ---- */

static int t_unshare_user(void *a) { (void)a; return syscall(SYS_unshare, CLONE_NEWUSER) < 0 ? errno : 0; }

/* CVE-2022-0492: a new user+cgroup namespace, a cgroup v1 mount there, then release_agent. */
static int t_release_agent(void *a)
{
	(void)a;
	if (syscall(SYS_unshare, CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP) < 0)
		return errno;
	mkdir("/tmp/rcrun-cg", 0700);
	if (mount("cgroup", "/tmp/rcrun-cg", "cgroup", 0, "memory") < 0 &&
	    mount("cgroup", "/tmp/rcrun-cg", "cgroup", 0, "rdma") < 0)
		return errno;
	int fd = open("/tmp/rcrun-cg/release_agent", O_WRONLY);
	if (fd < 0)
		return errno;
	/* An empty write: no agent is ever set, even when a defence is missing. */
	int r = write(fd, "", 0) < 0 ? errno : 0;
	close(fd);
	return r;
}

static int t_cgroup_mount(void *a)
{
	(void)a;
	mkdir("/tmp/rcrun-cg2", 0700);
	return mount("cgroup", "/tmp/rcrun-cg2", "cgroup", 0, "devices") < 0 ? errno : 0;
}

static int t_mount_tmpfs(void *a)
{
	(void)a;
	mkdir("/tmp/rcrun-mnt", 0700);
	return mount("none", "/tmp/rcrun-mnt", "tmpfs", 0, NULL) < 0 ? errno : 0;
}

static int t_mount_bpf(void *a)
{
	(void)a;
	mkdir("/tmp/rcrun-bpf", 0700);
	return mount("bpf", "/tmp/rcrun-bpf", "bpf", 0, NULL) < 0 ? errno : 0;
}

static int t_mount_debugfs(void *a)
{
	(void)a;
	mkdir("/tmp/rcrun-dbg", 0700);
	return mount("debugfs", "/tmp/rcrun-dbg", "debugfs", 0, NULL) < 0 ? errno : 0;
}

static int t_keyctl(void *a) { (void)a; return syscall(SYS_keyctl, 0L, 0L, 0L, 0L, 0L) < 0 ? errno : 0; }
static int t_bpf(void *a) { (void)a; return syscall(SYS_bpf, 0L, NULL, 0L) < 0 ? errno : 0; }
static int t_perf(void *a) { (void)a; return syscall(SYS_perf_event_open, NULL, 0L, -1L, -1L, 0L) < 0 ? errno : 0; }
static int t_userfaultfd(void *a) { (void)a; return syscall(SYS_userfaultfd, 0L) < 0 ? errno : 0; }

static int t_io_uring(void *a)
{
	(void)a;
	unsigned char params[120];
	memset(params, 0, sizeof params);
	long fd = syscall(425 /* io_uring_setup */, 1L, params);
	if (fd < 0)
		return errno;
	close((int)fd);
	return 0;
}

/* The "shocker" escape: a file handle for inode 2 (the root of an ext4) opened through any fd
 * on that file system reaches the host's root, past chroot and bind mounts. */
static int t_shocker(void *a)
{
	(void)a;
	struct {
		unsigned int handle_bytes;
		int handle_type;
		unsigned char f_handle[8];
	} fh = { 8, 1, { 2, 0, 0, 0, 0, 0, 0, 0 } };
	int mfd = open("/", O_RDONLY | O_DIRECTORY);
	if (mfd < 0)
		return errno;
	long fd = syscall(SYS_open_by_handle_at, mfd, &fh, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return errno;
	close((int)fd);
	return 0;
}

static int cmd_sys(void)
{
	struct {
		const char *name;
		int (*fn)(void *);
	} t[] = {
		{ "unshare(CLONE_NEWUSER)", t_unshare_user },
		{ "cgroup-v1 release_agent in a new userns", t_release_agent },
		{ "mount cgroup v1", t_cgroup_mount },
		{ "mount tmpfs", t_mount_tmpfs },
		{ "mount bpf", t_mount_bpf },
		{ "mount debugfs", t_mount_debugfs },
		{ "keyctl", t_keyctl },
		{ "bpf", t_bpf },
		{ "perf_event_open", t_perf },
		{ "userfaultfd", t_userfaultfd },
		{ "io_uring_setup", t_io_uring },
		{ "open_by_handle_at(shocker)", t_shocker },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		in_child(t[i].name, t[i].fn, NULL);
	return 0;
}

static int cmd_ptrace(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	long pid = atol(argv[2]);
	report("ptrace(PTRACE_ATTACH)", syscall(SYS_ptrace, 16L /* PTRACE_ATTACH */, pid, 0L, 0L) < 0 ? errno : 0);
	report("kill(0)", kill((pid_t)pid, 0) < 0 ? errno : 0);
	return 0;
}

static int cmd_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d) {
		printf("fds error=%s\n", errname(errno));
		return 1;
	}
	struct dirent *e;
	printf("fds");
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
			continue;
		printf(" %s", e->d_name);
	}
	printf("\n");
	closedir(d);
	return 0;
}

static int cmd_exe(void)
{
	DIR *d = opendir("/proc");
	if (!d)
		return 1;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		char p[300], t[4096], comm[64] = "?", id[64] = "?";
		snprintf(p, sizeof p, "/proc/%s/comm", e->d_name);
		FILE *f = fopen(p, "r");
		if (f) {
			if (fgets(comm, sizeof comm, f))
				comm[strcspn(comm, "\n")] = 0;
			fclose(f);
		}
		snprintf(p, sizeof p, "/proc/%s/exe", e->d_name);
		/* The file behind the link, as dev:ino: what a process holding it could write. */
		struct stat st;
		if (stat(p, &st) == 0)
			snprintf(id, sizeof id, "%llu:%llu", (unsigned long long)st.st_dev,
				 (unsigned long long)st.st_ino);
		ssize_t n = readlink(p, t, sizeof t - 1);
		if (n < 0) {
			printf("exe %s %s %s errno=%s\n", e->d_name, comm, id, errname(errno));
			continue;
		}
		t[n] = 0;
		printf("exe %s %s %s %s\n", e->d_name, comm, id, t);
	}
	closedir(d);
	return 0;
}

/* CVE-2019-5736's first step, raced: open /proc/PID/exe of every process as early and as often
 * as possible, and compare the file with the host binary's DEV:INO. */
static int cmd_exe_scan(int argc, char **argv)
{
	unsigned long long want_dev, want_ino;
	if (argc < 4 || sscanf(argv[2], "%llu:%llu", &want_dev, &want_ino) != 2)
		return 2;
	int passes = atoi(argv[3]);
	long opened = 0, denied = 0, hits = 0;
	/* First the likeliest target, as fast as possible: PID 1, the parent of an --init command,
	 * which may still be rcrun in the first microseconds. */
	for (int i = 0; i < 200; i++) {
		int fd = open("/proc/1/exe", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		struct stat st;
		if (fstat(fd, &st) == 0 && st.st_dev == want_dev && st.st_ino == want_ino) {
			hits++;
			printf("exe-hit first-loop=%d pid=1\n", i);
			close(fd);
			break;
		}
		close(fd);
	}
	for (int i = 0; i < passes; i++) {
		DIR *d = opendir("/proc");
		if (!d)
			return 1;
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] < '0' || e->d_name[0] > '9')
				continue;
			char p[300];
			snprintf(p, sizeof p, "/proc/%s/exe", e->d_name);
			int fd = open(p, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				denied++;
				continue;
			}
			opened++;
			struct stat st;
			if (fstat(fd, &st) == 0 && st.st_dev == want_dev && st.st_ino == want_ino) {
				hits++;
				printf("exe-hit pass=%d pid=%s\n", i, e->d_name);
			}
			close(fd);
		}
		closedir(d);
	}
	printf("exe-scan passes=%d opened=%ld denied=%ld hits=%ld\n", passes, opened, denied, hits);
	return 0;
}

/* ---- argument widths ---- */

#define HIGH_BIT (1UL << 32)

static int t_socket(void *a)
{
	long family = (long)a;
	long fd = syscall(SYS_socket, family, 1L /* SOCK_STREAM */, 0L);
	if (fd < 0)
		return errno;
	close((int)fd);
	return 0;
}

static int t_personality(void *a)
{
	/* Ask first (0xffffffff only queries), so the report shows what the filter did; the
	 * child exits right after, its personality dies with it. */
	return syscall(SYS_personality, (unsigned long)a) < 0 ? errno : 0;
}

static int cmd_wide(void)
{
	static const struct {
		const char *name;
		int (*fn)(void *);
		unsigned long arg;
	} t[] = {
		{ "socket(AF_UNIX)", t_socket, 1 },
		{ "socket(1<<32|AF_UNIX)", t_socket, HIGH_BIT | 1 },
		{ "socket(AF_VSOCK)", t_socket, 40 },
		{ "socket(1<<32|AF_VSOCK)", t_socket, HIGH_BIT | 40 },
		{ "socket(AF_ALG)", t_socket, 38 },
		{ "socket(1<<32|AF_ALG)", t_socket, HIGH_BIT | 38 },
		{ "personality(PER_LINUX32)", t_personality, 8 },
		{ "personality(1<<32|PER_LINUX32)", t_personality, HIGH_BIT | 8 },
		{ "personality(ADDR_NO_RANDOMIZE)", t_personality, 0x0040000 },
		{ "personality(1<<32|ADDR_NO_RANDOMIZE)", t_personality, HIGH_BIT | 0x0040000 },
	};
	for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
		in_child(t[i].name, t[i].fn, (void *)t[i].arg);
	return 0;
}

static int cmd_cwd(void)
{
	char buf[4096];
	if (!getcwd(buf, sizeof buf))
		printf("cwd errno=%s\n", errname(errno));
	else
		printf("cwd %s\n", buf);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 2)
		return 2;
	const char *c = argv[1];
	/* The checks mount, unshare and mknod when a defence is missing: meant for the inside of a
	 * container only, where that harms nothing. tests/attacks.rs passes this variable. */
	if (!getenv("RCRUN_ATTACK_INSIDE")) {
		fprintf(stderr, "attack: run only inside a container (set RCRUN_ATTACK_INSIDE=1)\n");
		return 2;
	}
	if (!strcmp(c, "dev"))
		return cmd_dev(argc, argv);
	if (!strcmp(c, "open"))
		return cmd_open(argc, argv);
	if (!strcmp(c, "i386"))
		return cmd_i386();
	if (!strcmp(c, "x32"))
		return cmd_x32();
	if (!strcmp(c, "sys"))
		return cmd_sys();
	if (!strcmp(c, "ptrace"))
		return cmd_ptrace(argc, argv);
	if (!strcmp(c, "fds"))
		return cmd_fds();
	if (!strcmp(c, "exe"))
		return cmd_exe();
	if (!strcmp(c, "exe-scan"))
		return cmd_exe_scan(argc, argv);
	if (!strcmp(c, "wide"))
		return cmd_wide();
	if (!strcmp(c, "cwd"))
		return cmd_cwd();
	fprintf(stderr, "attack: unknown subcommand %s\n", c);
	return 2;
}
