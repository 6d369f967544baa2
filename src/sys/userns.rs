//! The kernel calls of the id holder (launch/holder.rs): pidfds, which pin one process so that
//! what is read about it through /proc refers to it and not to a later process with the same
//! number, and the ioctls that tell who owns a user namespace and where it hangs (ioctl_ns(2)).

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// ioctl_ns(2): NS_GET_PARENT = _IO(0xb7, 0x2), NS_GET_OWNER_UID = _IO(0xb7, 0x4).
const NS_GET_PARENT: libc::c_ulong = 0xb702;
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// pidfd_open(2) (Linux ≥ 5.3): a descriptor for process `pid` that stays bound to that
/// process, whatever later reuses the number.
pub fn pidfd_open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor, which we own.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fd fresh from the syscall.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// pidfd_send_signal(2): `signal` to exactly the process behind `pidfd`. Signal 0 delivers
/// nothing and checks that it has not exited: once Ok, every /proc/PID read made *before* it was
/// about this process (its number cannot have been reused while it lives).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> nix::Result<()> {
    // SAFETY: a descriptor we hold, a plain signal number, null info and zero flags, as
    // pidfd_send_signal(2) allows.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// The parent of the user namespace `fd` refers to (NS_GET_PARENT, Linux ≥ 4.9); EPERM when it
/// lies outside the caller's own.
pub fn parent_user_namespace(fd: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    // SAFETY: NS_GET_PARENT takes no argument and returns a new descriptor, which we own.
    let p = Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_PARENT) })?;
    // SAFETY: fd fresh from the ioctl.
    Ok(unsafe { OwnedFd::from_raw_fd(p) })
}

/// The uid (in the caller's user namespace) of the user that created the user namespace `fd`
/// refers to (NS_GET_OWNER_UID, Linux ≥ 4.11): that user holds every capability in it.
pub fn user_namespace_owner(fd: BorrowedFd<'_>) -> nix::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which points at ours.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) })?;
    Ok(uid)
}

/// The start time of process `pid` in clock ticks since boot (proc(5), /proc/PID/stat field 22):
/// with the pid, it names one process for good.
pub fn start_time(pid: i32) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: no start time in {stat:?}"),
        )
    })
}

/// Field 22 of a /proc/PID/stat line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after its *last* ')'.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Field 3 (the state) is the first after the name: field 22 is the 20th.
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Names the calling process `name` in ps and /proc/PID/comm (PR_SET_NAME; 15 bytes kept).
pub fn set_process_name(name: &std::ffi::CStr) -> nix::Result<()> {
    nix::sys::prctl::set_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_counted_after_the_last_parenthesis() {
        let line =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
    }

    #[test]
    fn own_start_time_is_readable_and_pidfd_sees_us_alive() {
        let me = std::process::id() as i32;
        assert!(start_time(me).unwrap() > 0);
        let fd = pidfd_open(me).unwrap();
        assert!(pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), 0).is_ok());
    }
}
