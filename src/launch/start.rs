//! *start*, the launcher's second call: opens the start gate of a spawned container. Its first
//! process then installs its seccomp filter and execs the command; start returns once execve
//! happened (the close-on-exec error pipe reaches EOF) or failed.

use super::explain::Explain;
use super::failure::LaunchError;
use super::spawn::Spawned;
use nix::sys::signal::SigSet;
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::OwnedFd;

/// A started container, for [`super::wait::wait`].
pub struct Running {
    pub pid: Pid,
    pub(super) sfd: SignalFd,
    pub(super) master: Option<OwnedFd>,
    pub(super) interactive: bool,
    /// The child's own report of a failed step (exit code 125/126/127, message): before the
    /// gate, or its execve.
    pub(super) failure: Option<(i32, String)>,
    pub(super) old_mask: SigSet,
}

impl Running {
    /// The process's own report of a failed step or execve (exit code, message).
    pub fn failure(&self) -> Option<(i32, &str)> {
        self.failure.as_ref().map(|(c, m)| (*c, m.as_str()))
    }

    /// Leaves the process running on its own (`exec --detach`): rcrun's signal mask goes back
    /// and nobody waits for it (its parent's exit hands it to the subreaper or init).
    pub fn detach(self) {
        let _ = self.old_mask.thread_set_mask();
    }
}

/// Opens the gate of `spawned` and waits for its execve. With --explain (or after
/// [`Spawned::until_created`]) it first waits until the child sits at the gate, so the narration
/// shows spawn and start in order; otherwise it opens the gate at once and the child finds the
/// byte waiting when it gets there, which saves rcrun a wakeup on the start path.
pub fn start(mut spawned: Spawned, ex: &Explain) -> Result<Running, LaunchError> {
    if ex.enabled {
        spawned.until_created()?;
    } else {
        spawned.receive_console();
    }
    let waited = spawned.created.is_some();
    let mut failure = spawned.created.take().flatten();
    let gate = spawned.gate.take();
    if failure.is_none() {
        ex.phase(
            "start",
            "open the start gate: the child installs seccomp and execs the command",
        );
        if let Some(gate) = &gate {
            let _ = nix::unistd::write(gate, b"1");
        }
    }
    drop(gate);
    // The error pipe closes on execve (close-on-exec) or carries the child's failure.
    let mut rest = Vec::new();
    if let Some(mut pipe) = spawned.err_read.take() {
        let _ = pipe.read_to_end(&mut rest);
    }
    if !waited && rest.first() == Some(&0) {
        // The child's "created" byte, not read before.
        rest.remove(0);
    }
    if failure.is_none() && !rest.is_empty() {
        failure = Some((
            rest[0] as i32,
            String::from_utf8_lossy(&rest[1..]).into_owned(),
        ));
    }
    if let Some((r, w)) = spawned.report.take() {
        drop(w);
        let mut text = String::new();
        let _ = std::fs::File::from(r).read_to_string(&mut text);
        ex.absorb_totals(&text);
    }
    let sfd = spawned
        .sfd
        .take()
        .expect("spawn made the signalfd before it returned");
    let master = spawned.master.take();
    let interactive = spawned.interactive;
    let old_mask = spawned.old_mask;
    let pid = spawned.take_pid();
    Ok(Running {
        pid,
        sfd,
        master,
        interactive,
        failure,
        old_mask,
    })
}
