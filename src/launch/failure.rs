//! What every part of the launcher shares, kept apart so that none of them imports another for
//! it: the exit codes (docker's), a failed step of the container's first process ([`Failure`]),
//! and the signals rcrun passes on to the container.

use nix::sys::signal::Signal;

/// rcrun itself failed (docker's 125).
pub const EXIT_RCRUN_FAILED: i32 = 125;
/// The command exists but cannot be executed (docker's 126).
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// The command was not found (docker's 127).
pub const EXIT_NOT_FOUND: i32 = 127;

/// A failed step of the container's first process: the exit code rcrun reports (125, 126, 127)
/// and the message, sent to rcrun over the error pipe.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

/// What a successful execve returns: nothing, ever (`Result<Never, Failure>` can only be `Err`).
pub enum Never {}

/// A step that failed for a reason of rcrun's (125): "`step`: `e`".
pub fn fail(step: &str, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: EXIT_RCRUN_FAILED,
        message: format!("{step}: {e}"),
    }
}

/// The signals rcrun forwards to the container's PID 1 (and `--init` passes on to the command).
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// What the launcher's parent side (spawn, start, wait) reports when rcrun itself fails.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: nix::errno::Errno,
    },
    #[error("{0}")]
    Child(String),
    #[error("{step}: {detail}")]
    IdMap { step: &'static str, detail: String },
}

/// How a container ended.
pub struct Outcome {
    /// Exit status docker-style: code, or 128+signal.
    pub status: i32,
    /// Set when the child failed before execve (rcrun's own message, exit code 125/126/127).
    pub failure: Option<String>,
    pub signaled: Option<Signal>,
}

/// The step named in a failed clone's error: EPERM and friends mostly mean user namespaces are
/// off for unprivileged users.
pub fn clone_step(e: nix::errno::Errno) -> &'static str {
    use nix::errno::Errno;
    match e {
        Errno::EPERM | Errno::ENOSPC | Errno::EUSERS => "clone: cannot create namespaces (are unprivileged user namespaces enabled? sysctl kernel.unprivileged_userns_clone / user.max_user_namespaces)",
        _ => "clone",
    }
}
