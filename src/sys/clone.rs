//! Fork-like clones: clone(2) with new namespaces, and clone3(2) into a cgroup v2 directory.
//! Both run without CLONE_VM, so the child gets a copy of the caller's address space and
//! continues after the call; the caller must be single-threaded, since the child keeps running
//! Rust code (allocations included).

use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd};

/// clone(2) with `flags` (namespaces) and SIGCHLD as the exit signal: `None` in the child, the
/// child's pid in the parent.
pub fn fork_into_namespaces(flags: nix::sched::CloneFlags) -> Result<Option<Pid>, Errno> {
    // SAFETY: raw clone(2) without CLONE_VM and with a null stack behaves like fork(2) in a
    // single-threaded process; no memory is shared with the child.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags.bits() as libc::c_long) | libc::SIGCHLD as libc::c_long,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match rc {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ => Err(Errno::last()),
    }
}

/// clone3(2) with CLONE_INTO_CGROUP: like [`fork_into_namespaces`], and the child starts as a
/// member of the cgroup v2 directory `cgroup` (Linux >= 5.7). The raw errno is returned so the
/// caller can fall back on kernels without it (ENOSYS, E2BIG, EINVAL).
pub fn fork_into_cgroup(
    flags: nix::sched::CloneFlags,
    cgroup: BorrowedFd<'_>,
) -> Result<Option<Pid>, Errno> {
    /// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, include/uapi/linux/sched.h).
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as for fork_into_namespaces: no CLONE_VM and no stack, so the child runs on a copy
    // of our address space; `args` is a valid clone_args of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ => Err(Errno::last()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::waitpid;
    use std::os::fd::AsFd;

    /// A cgroup v2 mount of this machine: /sys/fs/cgroup on a v2 host, /sys/fs/cgroup/unified
    /// on a hybrid one.
    fn cgroup2_mount() -> Option<std::path::PathBuf> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2")
            .map(|f| std::path::PathBuf::from(f[1]))
    }

    /// The child of clone3(CLONE_INTO_CGROUP) is a member of the cgroup from its first
    /// instruction: it reads its own /proc/self/cgroup (raw syscalls only: the test harness is
    /// multi-threaded) and exits 0 only if the v2 line names the new cgroup.
    #[test]
    fn clone3_starts_the_child_inside_a_v2_cgroup() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "\n*** SKIPPED clone3 CLONE_INTO_CGROUP test: needs root to create a cgroup ***"
            );
            return;
        }
        let Some(mount) = cgroup2_mount() else {
            eprintln!("\n*** SKIPPED clone3 CLONE_INTO_CGROUP test: no cgroup2 mount ***");
            return;
        };
        let name = format!("rcrun-clone3-test-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir).unwrap();
        let want = std::ffi::CString::new(format!("0::/{name}\n")).unwrap();
        let fd = nix::fcntl::open(
            &dir,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let forked = fork_into_cgroup(nix::sched::CloneFlags::empty(), fd.as_fd());
        let pid = match forked {
            Ok(None) => {
                // Child: only async-signal-safe calls from here to _exit.
                let mut buf = [0u8; 4096];
                // SAFETY: plain syscalls on a stack buffer; _exit never returns.
                unsafe {
                    let f = libc::open(c"/proc/self/cgroup".as_ptr(), libc::O_RDONLY);
                    let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                    let hay = &buf[..n.max(0) as usize];
                    let needle = want.as_bytes();
                    let found = hay.windows(needle.len()).any(|w| w == needle);
                    libc::_exit(if found { 0 } else { 1 });
                }
            }
            Ok(Some(pid)) => pid,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                if matches!(e, Errno::ENOSYS | Errno::E2BIG) {
                    eprintln!(
                        "\n*** SKIPPED clone3 CLONE_INTO_CGROUP test: kernel lacks it ({e}) ***"
                    );
                    return;
                }
                panic!("clone3(CLONE_INTO_CGROUP) into {}: {e}", dir.display());
            }
        };
        let status = waitpid(pid, None).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(pid, 0),
            "the child did not see itself in {name}"
        );
    }
}
