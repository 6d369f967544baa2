//! *wait*, the launcher's last call: forwards signals to the container, relays its terminal,
//! reaps it and reports its exit status as docker does (the code, or 128+signal).

use super::failure::{LaunchError, Outcome};
use super::start::Running;
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

/// Waits for the started container: forwards rcrun's signals to it, relays its terminal (raw
/// mode for `-it`), reaps it, and restores rcrun's signal mask.
pub fn wait(running: Running, ex: &super::explain::Explain) -> Result<Outcome, LaunchError> {
    ex.phase(
        "wait",
        "forward signals to the container, relay its terminal, reap it",
    );
    let Running {
        pid,
        sfd,
        master,
        interactive,
        failure,
        old_mask,
    } = running;
    let (raw, stdin_open) = match (&master, interactive) {
        (Some(m), true) => RawMode::enter(m),
        _ => (None, false),
    };
    let result = wait_loop(pid, &sfd, master.as_ref(), stdin_open);
    drop(raw);
    let _ = old_mask.thread_set_mask();
    let (status, signaled) = result?;
    Ok(match failure {
        Some((code, msg)) => Outcome {
            status: code,
            failure: Some(msg),
            signaled: None,
        },
        None => Outcome {
            status,
            failure: None,
            signaled,
        },
    })
}

/// A process running as PID 1 ignores signals it has no handler for (pid_namespaces(7)), so a
/// plain `sleep` would shrug off SIGTERM. rcrun applies the default action for it: the container
/// is killed and reported as killed by the forwarded signal (128+N), as it would be outside.
fn forward(pid: Pid, sig: Signal) -> Option<Signal> {
    let _ = nix::sys::signal::kill(pid, sig);
    // Caught, or blocked (then it stays queued for a signalfd reader, as --init's PID 1 does:
    // signal(7)); only a signal PID 1 neither catches nor blocks is dropped by the kernel.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let handled = (mask("SigCgt:") | mask("SigBlk:")) & (1u64 << (sig as i32 - 1)) != 0;
    if handled {
        return None;
    }
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    Some(sig)
}

fn wait_loop(
    pid: Pid,
    sfd: &SignalFd,
    master: Option<&OwnedFd>,
    stdin_open: bool,
) -> Result<(i32, Option<Signal>), LaunchError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut emulated: Option<Signal> = None;
    let mut stdin_open = stdin_open && master.is_some();
    // The terminal relay's buffer, only with a terminal: zeroing 64 KiB of reused heap touches
    // 16 pages, ~2 µs of page fault each on these VMs, for a buffer a run without -t never reads.
    let mut buf = if master.is_some() {
        vec![0u8; 64 * 1024]
    } else {
        Vec::new()
    };
    loop {
        // Reap first: the child may already be gone.
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => {
                drain_master(master, &mut buf);
                return Ok((code, None));
            }
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                drain_master(master, &mut buf);
                let reported = match (sig, emulated) {
                    (Signal::SIGKILL, Some(s)) => s,
                    (s, _) => s,
                };
                return Ok((128 + reported as i32, Some(reported)));
            }
            Ok(_) => {}
            Err(Errno::ECHILD) => return Ok((super::failure::EXIT_RCRUN_FAILED, None)),
            Err(Errno::EINTR) => continue,
            Err(e) => {
                return Err(LaunchError::Sys {
                    step: "waitpid",
                    source: e,
                })
            }
        }
        let stdin = std::io::stdin();
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if let Some(m) = master {
            fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                return Err(LaunchError::Sys {
                    step: "poll",
                    source: e,
                })
            }
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if !revents[0].is_empty() {
            while let Ok(Some(info)) = sfd.read_signal() {
                let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                    continue;
                };
                match sig {
                    Signal::SIGCHLD => {}
                    Signal::SIGWINCH => {
                        if let (Some(m), Some(ws)) = (master, winsize()) {
                            crate::sys::terminal::set_window_size(m.as_fd(), &ws);
                        }
                    }
                    s => {
                        if let Some(e) = forward(pid, s) {
                            emulated = Some(e);
                        }
                    }
                }
            }
        }
        if let Some(m) = master {
            if revents.len() > 1 && !revents[1].is_empty() {
                match nix::unistd::read(m, &mut buf) {
                    Ok(n) if n > 0 => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    // EIO: the slave side closed (the container exited); wait for the reap.
                    _ => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            if stdin_open && revents.len() > 2 && !revents[2].is_empty() {
                match nix::unistd::read(std::io::stdin().as_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = nix::unistd::write(m, &buf[..n]);
                    }
                    _ => stdin_open = false,
                }
            }
        }
    }
}

fn drain_master(master: Option<&OwnedFd>, buf: &mut [u8]) {
    let Some(m) = master else { return };
    let _ = nix::fcntl::fcntl(
        m,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    let mut out = std::io::stdout().lock();
    while let Ok(n) = nix::unistd::read(m, buf) {
        if n == 0 {
            break;
        }
        let _ = out.write_all(&buf[..n]);
    }
    let _ = out.flush();
}

/// The caller's terminal in raw mode for the duration of a `-ti` session.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    /// Raw mode on rcrun's stdin, and whether that input is still open (true when it is no
    /// terminal: then the relay reads it as it is).
    ///
    /// What the terminal queued while still canonical is read first, still canonical, and
    /// forwarded: a VEOF there (the ^D `script` writes when its own stdin ends, or one typed
    /// early) is no input byte (termios(3): "Recognized when ICANON is set, and then not passed
    /// as input"), but Linux keeps it queued as a NUL, which a switch to raw hands over as data;
    /// forwarded, the container's terminal echoed it as `^@` and never saw an end of input
    /// (issue 25). VEOF is disabled before that read, so one arriving meanwhile stays a plain
    /// ^D byte and reaches the container as one typed in raw mode does.
    fn enter(master: &OwnedFd) -> (Option<RawMode>, bool) {
        use nix::sys::termios::{
            cfmakeraw, tcgetattr, tcsetattr, SetArg, SpecialCharacterIndices, _POSIX_VDISABLE,
        };
        let stdin = std::io::stdin();
        let Ok(orig) = tcgetattr(&stdin) else {
            return (None, true);
        };
        let mut no_eof = orig.clone();
        no_eof.control_chars[SpecialCharacterIndices::VEOF as usize] = _POSIX_VDISABLE;
        let open = match tcsetattr(&stdin, SetArg::TCSANOW, &no_eof) {
            Ok(()) => forward_queued_lines(master),
            Err(_) => true,
        };
        let mut raw = orig.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &orig);
            return (None, open);
        }
        (Some(RawMode(orig)), open)
    }
}

/// Forwards the complete lines rcrun's canonical stdin holds now to the container's terminal.
/// False when it held an end of input (a read of 0): the container's terminal gets its own
/// VEOF for it, as it would have got the ^D raw, and stdin is read no more.
fn forward_queued_lines(master: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdin = std::io::stdin();
    let mut buf = [0u8; 4096];
    loop {
        // Canonical: readable only once a line or a VEOF is queued (a partial line stays for raw).
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(1)
                if fds[0]
                    .revents()
                    .is_some_and(|r| r.contains(PollFlags::POLLIN)) => {}
            Err(Errno::EINTR) => continue,
            _ => return true,
        }
        match nix::unistd::read(stdin.as_fd(), &mut buf) {
            Ok(0) => {
                send_eof(master);
                return false;
            }
            Ok(n) => {
                let _ = nix::unistd::write(master, &buf[..n]);
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return true,
        }
    }
}

/// The container terminal's own VEOF character (read(2) there returns 0 at a line's start),
/// unless it is disabled: writing _POSIX_VDISABLE would be the NUL again.
fn send_eof(master: &OwnedFd) {
    use nix::sys::termios::{tcgetattr, SpecialCharacterIndices, _POSIX_VDISABLE};
    if let Ok(t) = tcgetattr(master) {
        let c = t.control_chars[SpecialCharacterIndices::VEOF as usize];
        if c != _POSIX_VDISABLE {
            let _ = nix::unistd::write(master, &[c]);
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// The size of rcrun's own terminal (stdin), for the container's pty.
pub(super) fn winsize() -> Option<nix::pty::Winsize> {
    crate::sys::terminal::window_size(std::io::stdin().as_fd())
}
