//! The OCI runtime commands (issue 22), with runc's command line, so that engines (podman
//! through conmon, containerd through its runc v2 shim) can drive rcrun:
//!
//! ```text
//! create ─▶ created ──start──▶ running ──(process exits)──▶ stopped ──delete──▶ (gone)
//!   │  launch::spawn with StartGate::ExecFifo; the first process builds the root, drops
//!   │  privileges and blocks opening exec.fifo; Spawned::detach: `create` returns
//!   └─ start opens exec.fifo for reading: the process writes one byte and execs its command
//! ```
//!
//! Landed so far: the launcher's exec-fifo gate (`launch::StartGate`, tested in
//! tests/launch_phases.rs) and the state directory ([`state`]). Next: the commands themselves
//! (create, start, state, kill, delete, list, features) on top of them.

pub mod control;
pub mod exec;
pub mod hooks;
pub mod info;
pub mod lifecycle;
pub mod state;
pub mod update;
