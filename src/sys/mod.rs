//! The kernel seam: the only modules that make system calls. Everything else (manifest parsing,
//! mount options, id maps, the startup plan) is plain data, unit-tested without privileges.

pub mod bpf;
pub mod clone;
pub mod exec;
pub mod fs;
pub mod mount;
pub mod net;
pub mod process;
pub mod sched;
pub mod seccomp;
pub mod terminal;
pub mod userns;
