//! How many bits of each syscall argument the kernel reads, so that a profile's argument check
//! judges the value the kernel will act on.
//!
//! A seccomp filter sees the six argument registers as 64-bit values (`struct seccomp_data`,
//! `__u64 args[6]`), but a syscall declared with an `int` or `unsigned int` parameter uses only
//! the low 32 bits: SYSCALL_DEFINEn casts each register to the declared type (`__SC_CAST`,
//! include/linux/syscalls.h). A filter that compares all 64 bits can be walked around: Docker's
//! profile allows `socket` for `family > 40`, and `socket((1UL << 32) | 40, …)` is above 40 as
//! 64 bits while the kernel makes an AF_VSOCK socket (libseccomp issue 383; Docker and runc
//! compare 64 bits). rcrun compares the arguments listed here on their low 32 bits
//! (seccompiler's `SeccompCmpArgLen::Dword`), every other one on all 64, as libseccomp does.
//!
//! Each row is the kernel's prototype (include/linux/syscalls.h, kernel 6.18), argument
//! positions as on x86_64 and aarch64 (the two arches rcrun compiles for; s390's clone swaps
//! its first two). Deliberately left at 64 bits because the kernel reads all of them:
//! `unshare(unsigned long flags)` (EINVAL for any unknown bit, kernel/fork.c
//! check_unshare_flags), `mount(…, unsigned long flags, …)`, `ptrace(long request, long pid, …)`,
//! `mmap`/`mprotect`'s `unsigned long prot`, `mbind`'s `unsigned long mode`, the `unsigned
//! long` arguments of `prctl` and `keyctl` after the first, `ioctl`'s `arg`.

/// Bits of an argument the kernel acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgWidth {
    /// `int`, `unsigned int`, `pid_t`, `uid_t`, `gid_t`, `clockid_t`, `umode_t`, `u32`: compared
    /// on the low 32 bits. (`umode_t` is 16 bits; BPF comparisons of seccompiler have no 16-bit
    /// form, so bits 16–31 of a mode are still judged, which can only refuse more.)
    Low32,
    /// Everything else: all 64 bits.
    Full64,
}

/// (syscall, positions of its 32-bit arguments, the kernel's prototype).
const LOW32_ARGS: &[(&str, &[u8], &str)] = &[
    // Sockets (net/socket.c).
    ("socket", &[0, 1, 2], "int family, int type, int protocol"),
    ("socketpair", &[0, 1, 2], "int family, int type, int protocol, int __user *usockvec"),
    ("bind", &[0, 2], "int fd, struct sockaddr __user *umyaddr, int addrlen"),
    ("connect", &[0, 2], "int fd, struct sockaddr __user *uservaddr, int addrlen"),
    ("listen", &[0, 1], "int fd, int backlog"),
    ("accept", &[0], "int fd, struct sockaddr __user *upeer_sockaddr, int __user *upeer_addrlen"),
    ("accept4", &[0, 3], "int fd, struct sockaddr __user *upeer_sockaddr, int __user *upeer_addrlen, int flags"),
    ("setsockopt", &[0, 1, 2, 4], "int fd, int level, int optname, char __user *optval, int optlen"),
    ("getsockopt", &[0, 1, 2], "int fd, int level, int optname, char __user *optval, int __user *optlen"),
    ("sendto", &[0, 3, 5], "int fd, void __user *buff, size_t len, unsigned int flags, struct sockaddr __user *addr, int addr_len"),
    ("recvfrom", &[0, 3], "int fd, void __user *ubuf, size_t size, unsigned int flags, struct sockaddr __user *addr, int __user *addr_len"),
    ("sendmsg", &[0, 2], "int fd, struct user_msghdr __user *msg, unsigned int flags"),
    ("recvmsg", &[0, 2], "int fd, struct user_msghdr __user *msg, unsigned int flags"),
    ("shutdown", &[0, 1], "int fd, int how"),
    // Processes and namespaces.
    ("personality", &[0], "unsigned int personality (kernel/exec_domain.c)"),
    ("clone", &[0], "unsigned long clone_flags, … — declared 64-bit, but kernel/fork.c reads lower_32_bits(clone_flags) for the flags and the exit signal"),
    ("setns", &[0, 1], "int fd, int flags"),
    ("kill", &[0, 1], "pid_t pid, int sig"),
    ("tkill", &[0, 1], "pid_t pid, int sig"),
    ("tgkill", &[0, 1, 2], "pid_t tgid, pid_t pid, int sig"),
    ("pidfd_open", &[0, 1], "pid_t pid, unsigned int flags"),
    ("pidfd_getfd", &[0, 1, 2], "int pidfd, int fd, unsigned int flags"),
    ("pidfd_send_signal", &[0, 1, 3], "int pidfd, int sig, siginfo_t __user *info, unsigned int flags"),
    ("prctl", &[0], "int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5"),
    ("kcmp", &[0, 1, 2], "pid_t pid1, pid_t pid2, int type, unsigned long idx1, unsigned long idx2"),
    ("sched_setscheduler", &[0, 1], "pid_t pid, int policy, struct sched_param __user *param"),
    ("setpriority", &[0, 1, 2], "int which, int who, int niceval"),
    ("ioprio_set", &[0, 1, 2], "int which, int who, int ioprio"),
    // Credentials.
    ("setuid", &[0], "uid_t uid"),
    ("setgid", &[0], "gid_t gid"),
    ("setreuid", &[0, 1], "uid_t ruid, uid_t euid"),
    ("setregid", &[0, 1], "gid_t rgid, gid_t egid"),
    ("setresuid", &[0, 1, 2], "uid_t ruid, uid_t euid, uid_t suid"),
    ("setresgid", &[0, 1, 2], "gid_t rgid, gid_t egid, gid_t sgid"),
    ("setfsuid", &[0], "uid_t uid"),
    ("setfsgid", &[0], "gid_t gid"),
    ("setgroups", &[0], "int gidsetsize, gid_t __user *grouplist"),
    // Files and descriptors (fs/).
    ("ioctl", &[0, 1], "unsigned int fd, unsigned int cmd, unsigned long arg"),
    ("fcntl", &[0, 1], "unsigned int fd, unsigned int cmd, unsigned long arg"),
    ("open", &[1, 2], "const char __user *filename, int flags, umode_t mode"),
    ("openat", &[0, 2, 3], "int dfd, const char __user *filename, int flags, umode_t mode"),
    ("mknod", &[1, 2], "const char __user *filename, umode_t mode, unsigned dev"),
    ("mknodat", &[0, 2, 3], "int dfd, const char __user *filename, umode_t mode, unsigned int dev"),
    ("chmod", &[1], "const char __user *filename, umode_t mode"),
    ("fchmod", &[0, 1], "unsigned int fd, umode_t mode"),
    ("fchmodat", &[0, 2], "int dfd, const char __user *filename, umode_t mode"),
    ("dup2", &[0, 1], "unsigned int oldfd, unsigned int newfd"),
    ("dup3", &[0, 1, 2], "unsigned int oldfd, unsigned int newfd, int flags"),
    ("umount2", &[1], "char __user *name, int flags"),
    ("memfd_create", &[1], "const char __user *uname, unsigned int flags"),
    ("open_by_handle_at", &[0, 2], "int mountdirfd, struct file_handle __user *handle, int flags"),
    ("fsopen", &[1], "const char __user *fs_name, unsigned int flags"),
    ("fsmount", &[0, 1, 2], "int fs_fd, unsigned int flags, unsigned int attr_flags"),
    ("move_mount", &[0, 2, 4], "int from_dfd, const char __user *from_path, int to_dfd, const char __user *to_path, unsigned int flags"),
    ("open_tree", &[0, 2], "int dfd, const char __user *filename, unsigned flags"),
    // The kernel's own interfaces.
    ("bpf", &[0, 2], "int cmd, union bpf_attr __user *attr, unsigned int size"),
    ("perf_event_open", &[1, 2, 3], "struct perf_event_attr __user *attr_uptr, pid_t pid, int cpu, int group_fd, unsigned long flags"),
    ("keyctl", &[0], "int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5"),
    ("reboot", &[0, 1, 2], "int magic1, int magic2, unsigned int cmd, void __user *arg"),
    ("syslog", &[0, 2], "int type, char __user *buf, int len"),
    ("clock_settime", &[0], "clockid_t which_clock, const struct __kernel_timespec __user *tp"),
    ("clock_adjtime", &[0], "clockid_t which_clock, struct __kernel_timex __user *tx"),
    ("madvise", &[2], "unsigned long start, size_t len_in, int behavior"),
    ("userfaultfd", &[0], "int flags"),
    ("seccomp", &[0, 1], "unsigned int op, unsigned int flags, void __user *uargs"),
    ("io_uring_setup", &[0], "u32 entries, struct io_uring_params __user *params"),
];

/// How many bits of argument `index` of `syscall` the kernel reads.
pub fn width(syscall: &str, index: u8) -> ArgWidth {
    let low32 = LOW32_ARGS
        .iter()
        .any(|(name, args, _)| *name == syscall && args.contains(&index));
    if low32 {
        ArgWidth::Low32
    } else {
        ArgWidth::Full64
    }
}

/// A profile value for a 32-bit argument, as the low 32 bits it must equal: values that fit,
/// and negative ints written sign-extended (`-1` as 0xffff_ffff_ffff_ffff, as a 64-bit C caller
/// would pass it). Anything else names bits the kernel never reads: `None`.
pub fn low32_value(value: u64) -> Option<u64> {
    let high = value >> 32;
    let low = value & 0xffff_ffff;
    match high {
        0 => Some(value),
        0xffff_ffff if low & 0x8000_0000 != 0 => Some(low),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_arguments_are_low32_the_rest_full64() {
        assert_eq!(width("socket", 0), ArgWidth::Low32);
        assert_eq!(width("socket", 2), ArgWidth::Low32);
        assert_eq!(width("personality", 0), ArgWidth::Low32);
        assert_eq!(width("clone", 0), ArgWidth::Low32);
        // clone's newsp, unshare's flags, ioctl's arg: unsigned long, read whole.
        assert_eq!(width("clone", 1), ArgWidth::Full64);
        assert_eq!(width("unshare", 0), ArgWidth::Full64);
        assert_eq!(width("ioctl", 2), ArgWidth::Full64);
        assert_eq!(width("no_such_call", 0), ArgWidth::Full64);
    }

    #[test]
    fn every_row_names_a_known_syscall_once_with_positions_in_range() {
        let table = super::super::syscall_table(seccompiler::TargetArch::x86_64).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for (name, args, proto) in LOW32_ARGS {
            assert!(table.contains_key(name), "{name}: not an x86_64 syscall");
            assert!(seen.insert(*name), "{name}: listed twice");
            assert!(
                !args.is_empty() && args.iter().all(|a| *a <= 5),
                "{name}: {args:?}"
            );
            // Each listed position is a 32-bit type in the prototype written beside it.
            let params: Vec<&str> = proto.split(',').collect();
            for &a in args.iter() {
                let p = params.get(a as usize).unwrap_or(&"");
                let narrow = [
                    "int ",
                    "unsigned ",
                    "pid_t",
                    "uid_t",
                    "gid_t",
                    "clockid_t",
                    "umode_t",
                    "u32",
                ];
                assert!(
                    narrow.iter().any(|t| p.trim_start().starts_with(t))
                        && !p.contains("long")
                        && !p.contains('*')
                        || *name == "clone",
                    "{name} argument {a}: {p:?} is not a 32-bit type"
                );
            }
        }
    }

    #[test]
    fn values_for_32_bit_arguments() {
        assert_eq!(low32_value(40), Some(40));
        assert_eq!(low32_value(0xffff_ffff), Some(0xffff_ffff));
        assert_eq!(low32_value(u64::MAX), Some(0xffff_ffff), "-1 sign-extended");
        assert_eq!(low32_value((1 << 32) | 40), None);
        assert_eq!(
            low32_value(0xffff_ffff_0000_0001),
            None,
            "not a sign extension"
        );
    }
}
