//! Executing programs that are not files of the container: a sealed in-memory copy
//! (memfd_create(2) + F_ADD_SEALS) executed by descriptor (execveat(2) with AT_EMPTY_PATH).

use nix::errno::Errno;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `bytes` in a close-on-exec memfd named `name`, sealed against writes, growth, shrinking and
/// further seal changes (F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL): nobody,
/// whatever descriptor they get, can modify it (memfd_create(2), "File sealing"). Errors name the
/// step.
pub fn sealed_memfd(name: &CStr, bytes: &[u8]) -> Result<OwnedFd, (&'static str, std::io::Error)> {
    // SAFETY: memfd_create(2) with a NUL-terminated name; returns a new fd we own.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    let fd = Errno::result(fd).map_err(|e| ("memfd_create", e.into()))?;
    // SAFETY: fd was just returned by memfd_create and is not shared.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    std::io::Write::write_all(&mut file, bytes)
        .map_err(|e| ("write the program into the memfd", e))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl(F_ADD_SEALS) on our memfd with a plain integer argument.
    Errno::result(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) })
        .map_err(|e| ("seal the memfd", e.into()))?;
    Ok(OwnedFd::from(file))
}

/// execveat(2) of the program behind `fd` (AT_EMPTY_PATH) with `argv` and an empty
/// environment. Returns only on failure, with the reason.
pub fn exec_fd(fd: BorrowedFd<'_>, argv: &[&CStr]) -> Errno {
    let mut args: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    args.push(std::ptr::null());
    let envp = [std::ptr::null::<libc::c_char>()];
    // SAFETY: execveat(2) with AT_EMPTY_PATH on a descriptor we hold, and NULL-terminated
    // argv/envp arrays whose strings outlive the call; it only returns on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            args.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
    Errno::last()
}
