//! `--init`: a minimal PID 1 that reaps zombies and forwards signals to the command.
//!
//! PID 1 must not be rcrun itself. A process of the container that can read /proc/1/exe (container
//! root with CAP_SYS_PTRACE, or anyone under `--privileged`) would get a handle on the host's rcrun
//! binary, and once it is no longer running, write it (CVE-2019-5736). So PID 1 is a small static
//! program of its own (`init/init.c`, built by build.rs and embedded here), which the container's
//! first process writes into a sealed memfd ([`SealedInit`]) and, after forking the command,
//! executes. /proc/1/exe is then `/memfd:rcrun-init (deleted)`, whose seals forbid every write
//! (memfd_create(2), F_SEAL_WRITE), and nothing of the host is reachable through it.

use super::failure::{fail, Failure, EXIT_RCRUN_FAILED, FORWARDED};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use std::os::fd::{AsFd, OwnedFd};

/// The static init program (see build.rs).
static INIT_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rcrun-init"));

/// The init program in a memfd that nobody can modify.
pub struct SealedInit(OwnedFd);

impl SealedInit {
    /// Writes the embedded init into a memfd and seals it against writes, growth, shrinking and
    /// further seal changes.
    pub fn create() -> Result<SealedInit, Failure> {
        crate::sys::exec::sealed_memfd(c"rcrun-init", INIT_PROGRAM)
            .map(SealedInit)
            .map_err(|(step, e)| fail(&format!("init: {step}"), e))
    }
}

/// The signals init passes on to the command, plus SIGCHLD to reap.
fn init_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED.iter().chain([Signal::SIGCHLD].iter()) {
        set.add(*s);
    }
    set
}

/// In the container's first process, at the point where it would exec the command: forks. The
/// child returns (and execs the command); this process becomes init by executing `image`.
///
/// The child must not run the command while this process is still a copy of the host's rcrun:
/// the command could open /proc/1/exe and hold the host binary (CVE-2019-5736). So the child
/// first reads a pipe whose only write end this process holds close-on-exec, and goes on at
/// EOF. execve(2) replaces /proc/PID/exe (begin_new_exec: set_mm_exe_file) before it closes
/// the close-on-exec descriptors (do_close_on_exec), so at EOF PID 1 is already the sealed
/// init. If this process dies instead, the pid namespace dies with it (pid_namespaces(7)), and
/// if its execve fails it kills the child first.
///
/// The signals are blocked *before* the fork, so none sent in between is lost: blocked signals
/// are never discarded, even for PID 1 (kernel/signal.c, sig_ignored), and they stay queued
/// across execve (signal(7)) until the new init reads them from its signalfd.
pub fn fork_and_become_init(image: &SealedInit) -> Result<(), Failure> {
    use nix::sys::signal::SigmaskHow;
    let set = init_signals();
    let old = set
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| fail("init: block signals", e))?;
    let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| fail("init: pipe2 for the start gate", e))?;
    // SAFETY: we are single-threaded (the cloned container process); the child only execs.
    match unsafe { nix::unistd::fork() }.map_err(|e| fail("init: fork", e))? {
        nix::unistd::ForkResult::Child => {
            drop(gate_write);
            let _ = crate::sys::process::die_with_parent();
            wait_until_init_runs(gate_read)?;
            let _ = old.thread_set_mask();
            Ok(())
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(gate_read);
            let pid = std::ffi::CString::new(child.as_raw().to_string()).expect("digits");
            let e = crate::sys::exec::exec_fd(image.0.as_fd(), &[c"rcrun-init", &pid]);
            // The command must not start without its init: take it down before the gate opens.
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            drop(gate_write);
            let msg = format!("rcrun: error: init: execveat of the sealed init: {e}\n");
            crate::sys::process::write_and_exit(
                Some(std::io::stderr().as_fd()),
                msg.as_bytes(),
                EXIT_RCRUN_FAILED,
            )
        }
    }
}

/// The command's side of the start gate: blocks until every write end is closed, which happens
/// when PID 1's execve of the sealed init has replaced its exe (see [`fork_and_become_init`]).
fn wait_until_init_runs(gate: OwnedFd) -> Result<(), Failure> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&gate, &mut byte) {
            Ok(0) => return Ok(()),
            // Nobody writes to the gate; a byte would be a bug, not a go signal.
            Ok(_) => return Err(fail("init: start gate", "unexpected data")),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail("init: wait for PID 1 to become the sealed init", e)),
        }
    }
}
