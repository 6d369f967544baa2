//! Network namespace setup: create one for the calling thread, bring up its loopback, join one.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// unshare(CLONE_NEWNET) for the calling (single-threaded) process, then `lo` up: a new network
/// namespace has only a loopback device, and it starts down.
pub fn new_namespace_with_loopback() -> nix::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    bring_up_loopback()
}

/// Joins the network namespace of process `pid` (as named in the procfs at /proc, i.e. the host's
/// before pivot_root): setns(2) with CLONE_NEWNET, which needs CAP_SYS_ADMIN over that namespace.
pub fn join_namespace_of(pid: u32) -> nix::Result<()> {
    let fd = nix::fcntl::open(
        format!("/proc/{pid}/ns/net").as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
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
