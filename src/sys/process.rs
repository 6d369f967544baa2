//! The calling process's own state: credentials, namespaces it unshares, the prctl(2) flags the
//! launcher sets, its file descriptors across execve, its hostname. Each a thin wrapper that
//! names the rule it follows; the order in which they are called is the launcher's.

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

/// unshare(2) of `flags` for the calling (single-threaded) process.
pub fn unshare(flags: CloneFlags) -> nix::Result<()> {
    nix::sched::unshare(flags)
}

/// setresgid then setresuid to 0: in a fresh user namespace the process is "root" only once the
/// maps exist and it switches to the mapped 0 (user_namespaces(7)); files it creates are then
/// owned by the mapped root. Group first: after setresuid a non-root could no longer change it.
pub fn become_root() -> nix::Result<()> {
    let (g, u) = (Gid::from_raw(0), Uid::from_raw(0));
    nix::unistd::setresgid(g, g, g)?;
    nix::unistd::setresuid(u, u, u)
}

/// The container's user: supplementary groups (when `groups` is Some: setgroups(2) is denied in
/// a user namespace whose setgroups file says "deny"), then the group, then the user, each for
/// real, effective and saved ids. Errors name the call that failed.
pub fn set_credentials(
    uid: u32,
    gid: u32,
    groups: Option<&[u32]>,
) -> Result<(), (String, nix::Error)> {
    if let Some(groups) = groups {
        let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(|e| ("setgroups".to_string(), e))?;
    }
    let g = Gid::from_raw(gid);
    nix::unistd::setresgid(g, g, g).map_err(|e| (format!("setresgid({gid})"), e))?;
    let u = Uid::from_raw(uid);
    nix::unistd::setresuid(u, u, u).map_err(|e| (format!("setresuid({uid})"), e))
}

/// PR_SET_PDEATHSIG SIGKILL: the process dies with its parent. A credential change clears it
/// (prctl(2)), so it is armed again after one.
pub fn die_with_parent() -> nix::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
}

/// PR_SET_DUMPABLE: a non-dumpable process's /proc/PID files (exe, mem, fd) belong to root and
/// need CAP_SYS_PTRACE over its memory's namespace to open (proc(5), ptrace(2)).
pub fn set_dumpable(dumpable: bool) -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(dumpable)
}

/// PR_SET_KEEPCAPS: a switch away from uid 0 keeps the permitted set (the effective set is
/// still cleared); reset by execve(2).
pub fn set_keep_caps(keep: bool) -> nix::Result<()> {
    nix::sys::prctl::set_keepcaps(keep)
}

/// PR_SET_NO_NEW_PRIVS: execve can no longer grant privileges (setuid bits, file
/// capabilities); needed for an unprivileged seccomp filter (seccomp(2)).
pub fn set_no_new_privs() -> nix::Result<()> {
    nix::sys::prctl::set_no_new_privs()
}

/// The OOM killer's adjustment of the calling process (proc(5), /proc/PID/oom_score_adj:
/// -1000..1000; lowering it needs CAP_SYS_RESOURCE).
pub fn set_oom_score_adj(value: i32) -> std::io::Result<()> {
    std::fs::write("/proc/self/oom_score_adj", value.to_string())
}

/// sethostname(2) in the process's uts namespace.
pub fn set_hostname(name: &str) -> nix::Result<()> {
    nix::unistd::sethostname(name)
}

/// Marks every descriptor from `first` up close-on-exec: close_range(2) with
/// CLOSE_RANGE_CLOEXEC (Linux 5.11), else each one listed in /proc/self/fd.
pub fn cloexec_from(first: u32) -> std::io::Result<()> {
    // SAFETY: close_range(2) with the CLOEXEC flag only changes descriptor flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a descriptor we may not own is harmless (EBADF ignored).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Writes `bytes` to `fd` (if it is open) and leaves at once with `code` (_exit(2)): a forked
/// copy of rcrun must not run the destructors or atexit handlers of the image it was copied from.
pub fn write_and_exit(fd: Option<std::os::fd::BorrowedFd<'_>>, bytes: &[u8], code: i32) -> ! {
    use std::os::fd::AsRawFd;
    if let Some(fd) = fd {
        // SAFETY: write(2) of a buffer we own to a descriptor we hold.
        unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    }
    // SAFETY: _exit(2) ends the process without returning; nothing of ours runs after it.
    unsafe { libc::_exit(code) }
}

/// Every signal back to SIG_DFL (but SIGKILL and SIGSTOP, which cannot change) and an empty
/// signal mask, for the calling thread.
pub fn default_signal_dispositions() -> nix::Result<()> {
    // The kernel's struct sigaction (not glibc's): the raw call reaches 32 and 33 too, which
    // glibc's wrappers refuse as its own, and which a caller may still have ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: libc::c_ulong,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction(2) with a valid struct and no old-action pointer; SIG_DFL
        // installs no handler, so nothing of ours runs on a signal.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
    nix::sys::signal::SigSet::empty().thread_set_mask()
}

/// ioctl_ns(2) NS_GET_NSTYPE, `_IO(0xb7, 0x3)`: the CLONE_NEW* type of a namespace file.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The CLONE_NEW* flag of the namespace `fd` refers to (ioctl_ns(2), NS_GET_NSTYPE, Linux ≥ 4.11);
/// ENOTTY for a file that is no namespace.
pub fn namespace_type(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<CloneFlags> {
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor we hold.
    let t = nix::errno::Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) })?;
    Ok(CloneFlags::from_bits_truncate(t))
}

/// Whether `fd` refers to the calling process's own namespace of the kind `name` names
/// (`/proc/self/ns/NAME`): namespaces(7) identifies a namespace by the device and inode number of
/// its file.
pub fn is_own_namespace(fd: std::os::fd::BorrowedFd<'_>, name: &str) -> nix::Result<bool> {
    let ours = nix::sys::stat::stat(format!("/proc/self/ns/{name}").as_str())?;
    let theirs = nix::sys::stat::fstat(fd)?;
    Ok((ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino))
}

/// Opens /proc/PID/ns/NAME (`name` as in namespaces(7): net, user, …) of process `pid`, as the
/// procfs at /proc names it; opening needs ptrace read access to the process (proc(5)).
pub fn open_namespace_of(
    pid: impl std::fmt::Display,
    name: &str,
) -> nix::Result<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        format!("/proc/{pid}/ns/{name}").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// setns(2) into the namespace `fd` refers to; `kind` makes the kernel refuse a file of another
/// type (EINVAL). For a pid namespace only the children made afterwards are inside it.
pub fn join_namespace(fd: std::os::fd::BorrowedFd<'_>, kind: CloneFlags) -> nix::Result<()> {
    nix::sched::setns(fd, kind)
}

/// Whether descriptor `fd` is open (fcntl F_GETFD).
pub fn fd_is_open(fd: i32) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags; a closed one gives EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Clears FD_CLOEXEC on `fd`: it is passed on through execve (`--preserve-fds`).
pub fn keep_on_exec(fd: i32) -> nix::Result<()> {
    // SAFETY: F_SETFD with 0 only clears the close-on-exec flag of a descriptor we were given.
    nix::errno::Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// fork(2) for `run -d`'s monitor: the child (None) leaves rcrun's session with setsid(2), so
/// the terminal's hangup and the shell's job control no longer reach it (credentials(7): a new
/// session has no controlling terminal). Refused unless the process has one thread: a fork
/// copies only the calling thread, and a lock another thread held stays locked in the copy.
pub fn fork_monitor() -> std::io::Result<Option<nix::unistd::Pid>> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(std::io::Error::other(format!(
            "rcrun has {threads} threads: a monitor can only be forked from one"
        )));
    }
    // SAFETY: single-threaded (checked above), so the child's copy of the heap and of every lock
    // is consistent; the child goes on as a normal rcrun process.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Some(child)),
        nix::unistd::ForkResult::Child => {
            nix::unistd::setsid()?;
            Ok(None)
        }
    }
}

/// Makes `fd` the process's stdout and stderr, and /dev/null its stdin (dup2(2) closes what
/// they were).
pub fn redirect_stdio(out: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::File::open("/dev/null")?;
    for (from, to) in [
        (null.as_raw_fd(), 0),
        (out.as_raw_fd(), 1),
        (out.as_raw_fd(), 2),
    ] {
        // SAFETY: dup2(2) of descriptors we hold onto the standard ones, which this process
        // gives up (std's handles keep working: they name the numbers, not the files).
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The id holder's execve (launch/holder.rs), in the forked holder: a session of its own
/// (setsid(2): no terminal's signals reach it), /dev/null as stdin, stdout and stderr (it must
/// not keep a caller's pipes open: `$(rcrun run …)` would wait for it), every other descriptor
/// close-on-exec, "/" as its directory, an empty environment, default signal handling and an
/// empty signal mask. Returns why it failed.
pub fn exec_holder(
    exe: &std::ffi::CStr,
    argv: &[std::ffi::CString],
    null: std::os::fd::BorrowedFd<'_>,
) -> String {
    let _ = nix::unistd::setsid();
    // The fork came from inside spawn, where rcrun blocks the signals it forwards: a blocked mask
    // survives execve (signal(7)), and the holder must die of SIGTERM (`rcrun gc`).
    if let Err(e) = default_signal_dispositions() {
        return format!("reset signals: {e}");
    }
    if let Err(e) = redirect_stdio(null) {
        return format!("/dev/null as stdin, stdout and stderr: {e}");
    }
    if let Err(e) = cloexec_from(3) {
        return format!("close_range: {e}");
    }
    if let Err(e) = nix::unistd::chdir("/") {
        return format!("chdir /: {e}");
    }
    let env: [&std::ffi::CStr; 0] = [];
    match nix::unistd::execve(exe, argv, &env) {
        Err(e) => format!("execve {}: {e}", exe.to_string_lossy()),
        Ok(never) => match never {},
    }
}
