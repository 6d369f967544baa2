//! seccomp(2): installing compiled filter programs on the calling thread.

use seccompiler::sock_filter;
use std::io;

/// `struct sock_fprog` (linux/filter.h) pointing at seccompiler's
/// `sock_filter`, which is `#[repr(C)]` with the kernel layout.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

/// Install the programs on the calling thread, in order, with
/// seccomp(SECCOMP_SET_MODE_FILTER, 0, ..).
///
/// Requires `no_new_privs` (see [`super::process::set_no_new_privs`]) or
/// `CAP_SYS_ADMIN` in the thread's user namespace (seccomp(2)); this function
/// does *not* set `no_new_privs` itself (unlike `seccompiler::apply_filter`),
/// so the caller decides. Call it as the very last step before execve(2).
///
/// Async-signal-safe on success (no allocation, no locks): it may be called
/// in a child after fork(2) of a multithreaded process.
///
/// On failure: the index of the program that failed, and why.
pub fn install_programs(programs: &[Vec<sock_filter>]) -> Result<(), (usize, io::Error)> {
    for (i, prog) in programs.iter().enumerate() {
        if prog.is_empty() || prog.len() > u16::MAX as usize {
            return Err((i, io::Error::from_raw_os_error(libc::EINVAL)));
        }
        let fprog = SockFprog {
            len: prog.len() as libc::c_ushort,
            filter: prog.as_ptr(),
        };
        // SAFETY: `fprog` points to `prog.len()` initialized sock_filter
        // structs that outlive the call; the kernel copies the program
        // (copy_from_user) and keeps no reference to our memory.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                &fprog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err((i, io::Error::last_os_error()));
        }
    }
    Ok(())
}
