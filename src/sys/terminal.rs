//! Terminal calls (tty_ioctl(4)): window sizes, and the pty slave as a process's controlling
//! terminal and stdio.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// TIOCGWINSZ on `fd`: None when it is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<nix::pty::Winsize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the winsize struct we own; failure (not a tty) is handled.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some(ws)
}

/// TIOCSWINSZ on a pty master: the container's terminal gets this size (and its foreground
/// process group a SIGWINCH).
pub fn set_window_size(master: BorrowedFd<'_>, ws: &nix::pty::Winsize) {
    // SAFETY: TIOCSWINSZ with a valid winsize on a descriptor we hold; an error changes nothing.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, ws) };
}

/// A new session (setsid(2)) whose controlling terminal is the pty `slave` (TIOCSCTTY, without
/// stealing it from another session), on stdin, stdout and stderr.
pub fn attach(slave: BorrowedFd<'_>) -> Result<(), (&'static str, Errno)> {
    nix::unistd::setsid().map_err(|e| ("setsid", e))?;
    // SAFETY: TIOCSCTTY on our pty slave fd, argument 0 (do not steal).
    Errno::result(unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) })
        .map_err(|e| ("ioctl(TIOCSCTTY)", e))?;
    for target in 0..3 {
        // SAFETY: dup2 onto stdio fds 0-2 from our slave fd.
        Errno::result(unsafe { libc::dup2(slave.as_raw_fd(), target) })
            .map_err(|e| ("dup2 pty", e))?;
    }
    Ok(())
}
