/*
 * probe: report the capability / no_new_privs / seccomp state of the current
 * process and how a set of sensitive syscalls is answered.
 *
 * Build:  gcc -static -O2 -o probe probe.c
 *
 * Output: first the /proc/self/status lines CapInh, CapPrm, CapEff, CapBnd,
 * CapAmb, NoNewPrivs, Seccomp verbatim, then one line per syscall:
 *     syscall NAME errno=ERRNAME      (or "syscall NAME ok")
 *
 * Every syscall runs in its own forked child, so side effects (a new user or
 * mount namespace, a changed personality, PTRACE_TRACEME) never leak into the
 * next test. Arguments are chosen so that a syscall that gets past seccomp
 * fails harmlessly with a distinctive errno (EBADF, EINVAL, EFAULT, ENOENT)
 * instead of changing the host. Deviations from the obvious call, and why:
 *   - mount targets /nonexistent-rcrun-probe (not /mnt) so an allowed mount
 *     yields ENOENT instead of really mounting a tmpfs over /mnt.
 *   - kexec_load passes flags=0xffffffff: with flags=0 and no segments it
 *     would *unload* a loaded crash kernel; bad flags give EINVAL instead.
 *   - reboot passes a bad magic, so an allowed call fails with EINVAL.
 *
 * Expected results
 * ----------------
 * Under rcrun's default profile (configs/seccomp.json == Docker's default)
 * with Docker's default capabilities, not privileged:
 *   CapPrm/CapEff/CapBnd:	00000000a80425fb (Docker's 14, root user), CapInh/CapAmb 0
 *   NoNewPrivs:	1        Seccomp:	2
 *   syscall unshare(CLONE_NEWUSER) errno=EPERM
 *   syscall unshare(CLONE_NEWNS) errno=EPERM
 *   syscall clone(CLONE_NEWUSER) errno=EPERM
 *   syscall clone3 errno=ENOSYS        (glibc would fall back to clone)
 *   syscall mount errno=EPERM
 *   syscall setns errno=EPERM
 *   syscall keyctl errno=EPERM
 *   syscall add_key errno=EPERM
 *   syscall bpf errno=EPERM
 *   syscall perf_event_open errno=EPERM
 *   syscall ptrace(PTRACE_TRACEME) ok  (allowed on kernels >= 4.8, as Docker)
 *   syscall reboot errno=EPERM
 *   syscall init_module errno=EPERM
 *   syscall finit_module errno=EPERM
 *   syscall kexec_load errno=EPERM
 *   syscall open_by_handle_at errno=EPERM
 *   syscall swapon errno=EPERM
 *   syscall personality(ADDR_NO_RANDOMIZE) errno=EPERM
 *   syscall personality(0xffffffff) ok
 *
 * With --cap-add SYS_ADMIN (and the profile's includes.caps): unshare/clone/
 * clone3 ok, mount ENOENT, setns EBADF, bpf EINVAL, perf_event_open EFAULT;
 * keyctl/add_key, kexec_load, swapon and the rest stay EPERM (as in Docker).
 *
 * On the host as unconfined root (measured on Linux 6.18, this build host):
 *   CapEff:	000001fffeffffff  NoNewPrivs:	0  Seccomp:	0
 *   syscall unshare(CLONE_NEWUSER) ok
 *   syscall unshare(CLONE_NEWNS) ok
 *   syscall clone(CLONE_NEWUSER) ok
 *   syscall clone3 ok
 *   syscall mount errno=ENOENT
 *   syscall setns errno=EBADF
 *   syscall keyctl errno=EINVAL
 *   syscall add_key errno=EFAULT
 *   syscall bpf errno=EINVAL
 *   syscall perf_event_open errno=EFAULT
 *   syscall ptrace(PTRACE_TRACEME) ok
 *   syscall reboot errno=EINVAL
 *   syscall init_module errno=ENOSYS    } this kernel is built without
 *   syscall finit_module errno=ENOSYS   } CONFIG_MODULES / CONFIG_KEXEC; on a
 *   syscall kexec_load errno=ENOSYS     } distro kernel expect EFAULT/EBADF/EINVAL
 *   syscall open_by_handle_at errno=EFAULT
 *   syscall swapon errno=ENOENT
 *   syscall personality(ADDR_NO_RANDOMIZE) ok
 *   syscall personality(0xffffffff) ok
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef CLONE_NEWUSER
#define CLONE_NEWUSER 0x10000000
#endif
#ifndef CLONE_NEWNS
#define CLONE_NEWNS 0x00020000
#endif
#define PTRACE_TRACEME_ 0
#define ADDR_NO_RANDOMIZE_ 0x0040000UL

static const char *errname(int e)
{
	switch (e) {
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case ENXIO: return "ENXIO";
	case E2BIG: return "E2BIG";
	case ENOEXEC: return "ENOEXEC";
	case EBADF: return "EBADF";
	case ECHILD: return "ECHILD";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case ESPIPE: return "ESPIPE";
	case EROFS: return "EROFS";
	case ERANGE: return "ERANGE";
	case ENOSYS: return "ENOSYS";
	case ENOKEY: return "ENOKEY";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case EUSERS: return "EUSERS";
	case EKEYREVOKED: return "EKEYREVOKED";
	default: return NULL;
	}
}

static void print_status(void)
{
	static const char *keys[] = { "CapInh:", "CapPrm:", "CapEff:", "CapBnd:",
				      "CapAmb:", "NoNewPrivs:", "Seccomp:" };
	char line[512];
	FILE *f = fopen("/proc/self/status", "r");
	if (!f) {
		printf("status error=%s\n", strerror(errno));
		return;
	}
	while (fgets(line, sizeof line, f)) {
		for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
			if (strncmp(line, keys[i], strlen(keys[i])) == 0)
				fputs(line, stdout);
	}
	fclose(f);
}

/* Reap a grandchild created by a successful clone/clone3. */
static void reap(long pid)
{
	if (pid > 0)
		waitpid((pid_t)pid, NULL, 0);
}

/* Each test returns 0 on success or an errno. Runs inside a forked child. */
static int t_unshare_user(void) { return syscall(SYS_unshare, CLONE_NEWUSER) < 0 ? errno : 0; }
static int t_unshare_ns(void) { return syscall(SYS_unshare, CLONE_NEWNS) < 0 ? errno : 0; }

static int t_clone_newuser(void)
{
	/* fork-like raw clone: no CLONE_VM, so the child may keep using the stack */
	long pid = syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), 0UL, 0UL, 0UL, 0UL);
	if (pid == 0)
		_exit(0);
	if (pid < 0)
		return errno;
	reap(pid);
	return 0;
}

static int t_clone3(void)
{
	/* struct clone_args, CLONE_ARGS_SIZE_VER0 = 64 bytes; only exit_signal set */
	uint64_t args[8];
	memset(args, 0, sizeof args);
	args[4] = SIGCHLD; /* offset 32: exit_signal */
	long pid = syscall(SYS_clone3, args, sizeof args);
	if (pid == 0)
		_exit(0);
	if (pid < 0)
		return errno;
	reap(pid);
	return 0;
}

static int t_mount(void)
{
	return syscall(SYS_mount, "none", "/nonexistent-rcrun-probe", "tmpfs", 0UL, NULL) < 0 ? errno : 0;
}
static int t_setns(void) { return syscall(SYS_setns, -1, 0) < 0 ? errno : 0; }
static int t_keyctl(void) { return syscall(SYS_keyctl, 0L, 0L, 0L, 0L, 0L) < 0 ? errno : 0; }
static int t_add_key(void) { return syscall(SYS_add_key, NULL, NULL, NULL, 0L, 0L) < 0 ? errno : 0; }
static int t_bpf(void) { return syscall(SYS_bpf, 0L, NULL, 0L) < 0 ? errno : 0; }
static int t_perf(void) { return syscall(SYS_perf_event_open, NULL, 0L, -1L, -1L, 0L) < 0 ? errno : 0; }
static int t_ptrace(void) { return syscall(SYS_ptrace, (long)PTRACE_TRACEME_, 0L, 0L, 0L) < 0 ? errno : 0; }
static int t_reboot(void) { return syscall(SYS_reboot, 0L, 0L, 0L, NULL) < 0 ? errno : 0; }
static int t_init_module(void) { return syscall(SYS_init_module, NULL, 0UL, "") < 0 ? errno : 0; }
static int t_finit_module(void) { return syscall(SYS_finit_module, -1, "", 0) < 0 ? errno : 0; }
static int t_kexec_load(void)
{
	return syscall(SYS_kexec_load, 0UL, 0UL, NULL, 0xffffffffUL) < 0 ? errno : 0;
}
static int t_open_by_handle_at(void) { return syscall(SYS_open_by_handle_at, -1, NULL, 0) < 0 ? errno : 0; }
static int t_swapon(void) { return syscall(SYS_swapon, "/nonexistent", 0) < 0 ? errno : 0; }
static int t_pers_norand(void) { return syscall(SYS_personality, ADDR_NO_RANDOMIZE_) < 0 ? errno : 0; }
static int t_pers_query(void) { return syscall(SYS_personality, 0xffffffffUL) < 0 ? errno : 0; }

struct test {
	const char *name;
	int (*fn)(void);
};

static const struct test tests[] = {
	{ "unshare(CLONE_NEWUSER)", t_unshare_user },
	{ "unshare(CLONE_NEWNS)", t_unshare_ns },
	{ "clone(CLONE_NEWUSER)", t_clone_newuser },
	{ "clone3", t_clone3 },
	{ "mount", t_mount },
	{ "setns", t_setns },
	{ "keyctl", t_keyctl },
	{ "add_key", t_add_key },
	{ "bpf", t_bpf },
	{ "perf_event_open", t_perf },
	{ "ptrace(PTRACE_TRACEME)", t_ptrace },
	{ "reboot", t_reboot },
	{ "init_module", t_init_module },
	{ "finit_module", t_finit_module },
	{ "kexec_load", t_kexec_load },
	{ "open_by_handle_at", t_open_by_handle_at },
	{ "swapon", t_swapon },
	{ "personality(ADDR_NO_RANDOMIZE)", t_pers_norand },
	{ "personality(0xffffffff)", t_pers_query },
};

int main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	print_status();
	for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		fflush(stdout);
		pid_t pid = fork();
		if (pid < 0) {
			printf("syscall %s probe-error=fork:%s\n", tests[i].name, strerror(errno));
			continue;
		}
		if (pid == 0)
			_exit(tests[i].fn() & 0xff);
		int status = 0;
		if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
			printf("syscall %s probe-error=child-%s%d\n", tests[i].name,
			       WIFSIGNALED(status) ? "signal" : "status",
			       WIFSIGNALED(status) ? WTERMSIG(status) : status);
			continue;
		}
		int e = WEXITSTATUS(status);
		if (e == 0) {
			printf("syscall %s ok\n", tests[i].name);
		} else {
			const char *n = errname(e);
			if (n)
				printf("syscall %s errno=%s\n", tests[i].name, n);
			else
				printf("syscall %s errno=E%d\n", tests[i].name, e);
		}
	}
	return 0;
}
