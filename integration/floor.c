/* floor: the hand-written C floor of a rootless container start (issue 13).
 *
 *     floor LOWER1:LOWER2:LOWER3 SCRATCHDIR CMD [ARGS...]
 *
 * Run as a plain user, it does what a fully confined rootless start minimally needs, and nothing
 * else, so that integration/bench.sh can say how far rcrun's warm start is from the cost of the
 * kernel work itself:
 *   1. clone(2) into new user, mount, pid, net, uts, ipc and cgroup namespaces;
 *   2. the parent maps the child's root to the user's own uid and gid (a 1-id map, no newuidmap):
 *      "deny" into /proc/PID/setgroups, then "0 UID 1" into uid_map and "0 GID 1" into gid_map,
 *      while the child waits on a pipe;
 *   3. the child makes / private, mounts a tmpfs on SCRATCHDIR and, inside it, an overlay of the
 *      three lower dirs (top first, as overlayfs's lowerdir= reads them) with its upper and work
 *      dirs on that tmpfs (nothing persists), proc on /proc, a tmpfs /dev with bind mounts of the
 *      host's null, zero, full, random, urandom and tty (the OCI default devices; no pts, shm,
 *      mqueue or sysfs), then pivot_root(".", ".") and a detaching unmount of the old root;
 *   4. execvp(CMD); the parent waits and exits with the child's status (128+N when killed by N).
 * No seccomp, no capability dropping, no cgroup, no hostname, no rlimits: it is the floor.
 * Errors print "floor: <step>: <strerror>" and exit 125 (from the child, the parent passes it on).
 *
 * Build: gcc -O2 -o floor integration/floor.c (needs Linux >= 5.11 for an overlay in a user
 * namespace). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void fail(const char *step) {
    fprintf(stderr, "floor: %s: %s\n", step, strerror(errno));
    exit(125);
}

struct args {
    const char *lowers;  /* LOWER1:LOWER2:LOWER3, top first */
    const char *scratch; /* SCRATCHDIR: a tmpfs goes over it, everything else goes in there */
    char **argv;         /* CMD [ARGS...] */
    int sync_fd[2];      /* the pipe on which the parent says the maps are written */
};

static char path[5][4096]; /* SCRATCH/{upper,work,root}, then two for paths under the root */

static void mkpath(char *buf, const char *dir, const char *name) {
    if (snprintf(buf, 4096, "%s/%s", dir, name) >= 4096) {
        errno = ENAMETOOLONG;
        fail(name);
    }
}

static int child(void *arg) {
    struct args *a = arg;
    char c;

    /* Wait for the parent's maps. Until then our uid and gid are unmapped (seen as 65534 in
     * here, user_namespaces(7) "Unmapped user and group IDs") and creating a file fails with
     * EOVERFLOW. A byte means the maps are written; EOF means the parent failed (and said so).
     * Our copy of the write end is closed first, or a dead parent would leave us waiting forever;
     * the read end is O_CLOEXEC, so CMD does not inherit it. */
    close(a->sync_fd[1]);
    ssize_t n;
    do n = read(a->sync_fd[0], &c, 1); while (n < 0 && errno == EINTR);
    if (n != 1) _exit(125);

    /* Our mount namespace is a copy of the host's owned by a less privileged user namespace, so
     * its shared mounts were already reduced to slaves (mount_namespaces(7), "Restrictions on
     * mount namespaces"). Make every mount private all the same, as runtimes do: pivot_root(2)
     * fails with EINVAL if the parent mount of the new root or of the current root is shared,
     * and with private mounts the host's later mounts and unmounts do not propagate in either. */
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail("make / private");

    /* One tmpfs holds the overlay's upper and work dirs and its mount point: the container's
     * writes live in memory and go away with the mount namespace. */
    if (mount("tmpfs", a->scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755") != 0)
        fail("mount tmpfs on scratch dir");
    char *upper = path[0], *work = path[1], *root = path[2], *p = path[3];
    mkpath(upper, a->scratch, "upper");
    mkpath(work, a->scratch, "work");
    mkpath(root, a->scratch, "root");
    if (mkdir(upper, 0755) != 0) fail("mkdir upper");
    if (mkdir(work, 0755) != 0) fail("mkdir work");
    if (mkdir(root, 0755) != 0) fail("mkdir root");

    /* The overlay, with the options rcrun uses (src/sys/mount.rs): userxattr, because in a user
     * namespace overlayfs cannot use trusted.* xattrs on the upper dir; index and metacopy off,
     * the features that trust what a layer says about itself (filesystems/overlayfs.rst). One
     * classic mount(2) option string: three short lowers fit in a page. */
    static char opts[3 * 4096 + 256];
    if (snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s,userxattr,index=off,metacopy=off",
                 a->lowers, upper, work) >= (int)sizeof opts) {
        errno = E2BIG;
        fail("overlay options");
    }
    if (mount("overlay", root, "overlay", 0, opts) != 0) fail("mount overlay");

    /* proc on /proc: this process is PID 1 of the new pid namespace, and proc shows the pid
     * namespace of the process that mounts it (pid_namespaces(7), "/proc and PID namespaces"),
     * so the child mounts it, not the parent. mkdir in case a lower has no /proc (it then goes
     * to the upper dir, on the tmpfs). */
    mkpath(p, root, "proc");
    if (mkdir(p, 0555) != 0 && errno != EEXIST) fail("mkdir /proc");
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail("mount proc");

    /* A minimal /dev: a tmpfs and bind mounts of host nodes. mknod(2) of a device needs
     * CAP_MKNOD in the initial user namespace, so a rootless container can only bind them. */
    mkpath(p, root, "dev");
    if (mkdir(p, 0755) != 0 && errno != EEXIST) fail("mkdir /dev");
    if (mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755") != 0) fail("mount /dev");
    static const char *const devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
        char host[64];
        snprintf(host, sizeof host, "/dev/%s", devs[i]);
        char *node = path[4];
        mkpath(node, p, devs[i]);
        /* A bind mount needs an existing mount point of the same kind: an empty file. */
        int fd = open(node, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0) fail("create /dev node mount point");
        close(fd);
        if (mount(host, node, NULL, MS_BIND, NULL) != 0) fail("bind /dev node");
    }

    /* Enter the root: pivot_root(2) NOTES, "new_root and put_old may be the same directory":
     * pivot_root(".", ".") stacks the old root on top of the new one at /, and unmounting "."
     * with MNT_DETACH then removes the old root, with no put_old directory to create. The chdir
     * first makes "." the new root; the chdir("/") last makes CMD start at the container's
     * root by that name, whatever the detach left behind. */
    if (chdir(root) != 0) fail("chdir new root");
    if (syscall(SYS_pivot_root, ".", ".") != 0) fail("pivot_root");
    if (umount2(".", MNT_DETACH) != 0) fail("detach old root");
    if (chdir("/") != 0) fail("chdir /");

    execvp(a->argv[0], a->argv);
    fail(a->argv[0]);
    return 125;
}

/* Writes all of s in one write(2): a map must come in a single write (user_namespaces(7)). */
static void write_file(const char *file, const char *s, const char *step) {
    int fd = open(file, O_WRONLY | O_CLOEXEC);
    if (fd < 0) fail(step);
    ssize_t len = (ssize_t)strlen(s);
    if (write(fd, s, len) != len) fail(step);
    if (close(fd) != 0) fail(step);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: floor LOWER1:LOWER2:LOWER3 SCRATCHDIR CMD [ARGS...]\n");
        return 125;
    }
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) fail("pipe");
    struct args a = {argv[1], argv[2], argv + 3, {pipefd[0], pipefd[1]}};

    /* clone(2): with CLONE_NEWUSER the user namespace is created first, so the child holds all
     * capabilities over the other namespaces made by the same call, and a plain user may ask for
     * them all. The child is PID 1 of the new pid namespace. glibc's clone() wants a stack; the
     * child runs on this one (a copy: no CLONE_VM), the stack grows down, so pass its top. */
    static char stack[256 * 1024] __attribute__((aligned(16)));
    int flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS |
                CLONE_NEWIPC | CLONE_NEWCGROUP | SIGCHLD;
    pid_t pid = clone(child, stack + sizeof stack, flags, &a);
    if (pid < 0) fail("clone");
    close(pipefd[0]);

    /* The 1-id map, written by the parent: it is in the parent user namespace, owns the child's
     * (so holds CAP_SETUID and CAP_SETGID there) and has the euid of its creator, so it may map
     * its own euid and egid (user_namespaces(7), "Defining user and group ID mappings"). Order
     * matters: an unprivileged gid_map write is refused until
     * setgroups(2) is denied in the namespace (user_namespaces(7), "The /proc/[pid]/setgroups
     * file", since Linux 3.19). */
    char file[64], map[64];
    snprintf(file, sizeof file, "/proc/%d/setgroups", (int)pid);
    write_file(file, "deny", "write setgroups");
    snprintf(file, sizeof file, "/proc/%d/uid_map", (int)pid);
    snprintf(map, sizeof map, "0 %u 1\n", (unsigned)geteuid());
    write_file(file, map, "write uid_map");
    snprintf(file, sizeof file, "/proc/%d/gid_map", (int)pid);
    snprintf(map, sizeof map, "0 %u 1\n", (unsigned)getegid());
    write_file(file, map, "write gid_map");
    /* Maps written: let the child go. (On a failure above, fail() exits and the child reads EOF.) */
    if (write(pipefd[1], "x", 1) != 1) fail("release child");
    close(pipefd[1]);

    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) fail("waitpid");
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
