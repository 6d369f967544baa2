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
