//! Network namespace setup: create one for the calling thread, bring up its loopback, join one.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// unshare(CLONE_NEWNET) for the calling (single-threaded) process, then `lo` up: a new network
/// namespace has only a loopback device, and it starts down.
pub fn new_namespace_with_loopback() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    bring_up_loopback()
}

/// Forks the helper of [`crate::launch::NetSetup::HelperWhileMounting`]: it enters the user
/// namespace `userns` (setns(2): a single-threaded process holding CAP_SYS_ADMIN there, which
/// the namespace's owner one level up has), unshares a network namespace (owned by that user
/// namespace), brings lo up, writes its pid (4 bytes, native order) on `ready` for the child to
/// join /proc/PID/ns/net, and stays until `release` reaches EOF (the child closes its end once
/// it joined, or dies). It writes nothing if a step fails: the child then reports the failure.
/// It stays dumpable: the child, root of that user namespace, must be allowed to open its
/// /proc/PID/ns/net; no container code runs while it lives (the child is still rcrun's code).
pub fn fork_namespace_maker(
    userns: std::os::fd::BorrowedFd<'_>,
    ready: OwnedFd,
    release: OwnedFd,
) -> nix::Result<nix::unistd::Pid> {
    fork_namespace_process(Some(userns), ready, Some(release))
}

/// Forks a holder of a new network namespace for rcrun as root, made while rcrun still reads the
/// image ([`crate::launch::EarlyNetns`]): as [`fork_namespace_maker`] in rcrun's own user
/// namespace, but it waits to be killed (rcrun joins the namespace, which setns holds, and
/// kills it: a release pipe would stay open in the child cloned meanwhile), and dies with rcrun
/// (PR_SET_PDEATHSIG).
pub fn fork_namespace_holder(ready: OwnedFd) -> nix::Result<nix::unistd::Pid> {
    fork_namespace_process(None, ready, None)
}

/// The process of both: joins `userns` if given, unshares a network namespace with lo up,
/// writes its pid on `ready`, then stays until `release` reaches EOF or, without one, until it
/// is killed.
fn fork_namespace_process(
    userns: Option<std::os::fd::BorrowedFd<'_>>,
    ready: OwnedFd,
    release: Option<OwnedFd>,
) -> nix::Result<nix::unistd::Pid> {
    let parent = release.is_none().then(nix::unistd::getpid);
    match crate::sys::clone::fork_into_namespaces(nix::sched::CloneFlags::empty())? {
        Some(pid) => Ok(pid),
        None => {
            if let Some(parent) = parent {
                // Nothing else ends it if rcrun dies. Armed before the check: a parent gone in
                // between would leave us orphaned.
                let armed = crate::sys::process::die_with_parent();
                if armed.is_err() || nix::unistd::getppid() != parent {
                    crate::sys::process::write_and_exit(None, &[], 1)
                }
            }
            // A new task may run first on its parent's CPU, ahead of the parent, whose next steps
            // (waking the child, or reading the image) need that CPU: leave it at once (the parent
            // also moves us if it gets there first, see `sched::place_elsewhere`). The mask dies
            // with this process.
            std::mem::forget(crate::sys::sched::step_aside());
            let made = userns
                .map_or(Ok(()), |u| {
                    nix::sched::setns(u, nix::sched::CloneFlags::CLONE_NEWUSER)
                })
                .and_then(|()| new_namespace_with_loopback());
            if made.is_ok() {
                let me = std::process::id().to_ne_bytes();
                let _ = nix::unistd::write(&ready, &me);
                drop(ready);
                match release {
                    Some(release) => {
                        let mut b = [0u8; 1];
                        loop {
                            match nix::unistd::read(&release, &mut b) {
                                Err(Errno::EINTR) | Ok(1..) => continue,
                                _ => break,
                            }
                        }
                    }
                    None => loop {
                        // SAFETY: pause(2) only waits for a signal; SIGKILL ends us.
                        unsafe { libc::pause() };
                    },
                }
            }
            crate::sys::process::write_and_exit(None, &[], i32::from(made.is_err()))
        }
    }
}

/// Joins the network namespace of process `pid` (as named in the procfs at /proc, i.e. the host's
/// before pivot_root): setns(2) with CLONE_NEWNET, which needs CAP_SYS_ADMIN over that namespace.
pub fn join_namespace_of(pid: u32) -> nix::Result<()> {
    let fd = crate::sys::process::open_namespace_of(pid, "net")?;
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
}

/// ioctl(SIOCGIFFLAGS) then ioctl(SIOCSIFFLAGS, flags | IFF_UP) on `lo` (netdevice(7)).
fn bring_up_loopback() -> nix::Result<()> {
    // SAFETY: socket(2) returns a new fd that we wrap and own.
    let s = Errno::result(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: fd fresh from socket(2).
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read/write the ifreq we own; the union field used is
    // ifru_flags for both.
    unsafe {
        Errno::result(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr))?;
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        Errno::result(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr))?;
    }
    Ok(())
}

/// ioctl_ns(2) NS_GET_USERNS, `_IO(0xb7, 0x1)`: the user namespace owning a namespace.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The user namespace that owns the namespace `fd` refers to (ioctl_ns(2), Linux ≥ 4.9): the one
/// a helper must join to hold CAP_SYS_ADMIN over it. EPERM when that user namespace is outside
/// the caller's.
pub fn owning_user_namespace(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor, which we own.
    let u = Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_USERNS) })?;
    // SAFETY: fd fresh from the ioctl.
    Ok(unsafe { OwnedFd::from_raw_fd(u) })
}

/// Prepares `cmd` to run as a network helper (slirp4netns, pasta): the descriptors in `pass`
/// survive its execve, it starts in the network namespace `netns` when given (the host's, which
/// rcrun as root has left for the container's: setns(2) needs CAP_SYS_ADMIN over the target, so
/// only a process that left may go back), and it is killed when rcrun dies (PR_SET_PDEATHSIG,
/// prctl(2): kept across execve of a program that gains no privileges).
pub fn prepare_helper(cmd: &mut std::process::Command, pass: Vec<i32>, netns: Option<i32>) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only async-signal-safe calls: fcntl, setns, prctl; `pass`
    // was allocated before the fork and is only read.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &pass {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
}
