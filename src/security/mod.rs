//! Process hardening for the container's init process: capabilities,
//! `no_new_privs` and seccomp.
//!
//! # Order of operations in the container child
//!
//! The steps below must run in this order; each one depends on privileges
//! that a later step takes away (see capabilities(7), prctl(2), seccomp(2)):
//!
//! 1. [`apply_bounding`]: drop everything not in the plan from the bounding
//!    set. `PR_CAPBSET_DROP` needs `CAP_SETPCAP` in the effective set, so this
//!    runs while the process is still fully privileged (before setuid).
//! 2. The caller switches `setgroups` / `setgid` / `setuid`. Going from uid 0
//!    to a non-zero uid clears the permitted and effective sets unless
//!    `PR_SET_KEEPCAPS` is set (capabilities(7), "Effect of user ID changes on
//!    capabilities").
//! 3. [`apply_inheritable`], [`apply_sets`], [`apply_ambient`]: inheritable, then effective and
//!    permitted, then the ambient raises (empty for an image run).
//! 4. [`set_no_new_privs`]: after this, execve(2) can never grant privileges
//!    (setuid bits and file capabilities are ignored), and it allows an
//!    unprivileged process to install seccomp filters.
//! 5. [`seccomp::install`]: the very last step before execve(2), so that the
//!    runtime's own setup syscalls are not subject to the container's filter.
//!    `install` needs `no_new_privs` **or** `CAP_SYS_ADMIN`; it does not set
//!    `no_new_privs` itself.
//!
//! Everything here is self-contained: it depends only on external crates
//! (`caps`, `seccompiler`, `serde`, `serde_json`, `thiserror`, `sha2`, `hex`,
//! `libc`, `tracing`).

pub mod caps;
pub mod seccomp;

use std::io;
use std::path::PathBuf;

pub use self::caps::{
    apply_ambient, apply_bounding, apply_inheritable, apply_sets, cap_names, default_caps,
    parse_cap, plan_caps, set_no_new_privs, CapPlan,
};
pub use self::seccomp::{compile, install, load_cached, CompiledFilter, DEFAULT_PROFILE};

/// Every failure of the security module. Messages are one line and name the
/// operation and the offending value or path.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A capability name given by the user is not known.
    #[error(
        "unknown capability {0:?}: use a name from capabilities(7) such as NET_ADMIN or \
         CAP_NET_ADMIN, or ALL (list them with `capsh --print` or `man 7 capabilities`)"
    )]
    UnknownCapability(String),

    /// A capability set operation (capset / PR_CAPBSET_DROP / ambient) failed.
    #[error("cannot {op} {cap}: {message}")]
    Caps {
        op: &'static str,
        cap: String,
        message: String,
    },

    /// A prctl(2) call failed.
    #[error("prctl({op}) failed: {source}")]
    Prctl {
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The seccomp profile is not valid JSON or does not match the format.
    #[error("cannot parse seccomp profile {path}: {source}")]
    ProfileParse {
        path: String,
        #[source]
        source: serde_json::Error,
    },

    /// The seccomp profile parsed but contains a value we cannot translate.
    #[error("invalid seccomp profile {path}: {reason}")]
    ProfileInvalid { path: String, reason: String },

    /// seccompiler refused to build a BPF program (e.g. too many instructions).
    #[error("cannot build seccomp BPF program for {what}: {source}")]
    Bpf {
        what: String,
        #[source]
        source: seccompiler::BackendError,
    },

    /// seccomp(SECCOMP_SET_MODE_FILTER) failed.
    #[error(
        "cannot install seccomp filter {index} of {total}: {source} (installing a filter needs \
         no_new_privs or CAP_SYS_ADMIN; EINVAL means the kernel lacks CONFIG_SECCOMP_FILTER)"
    )]
    Install {
        index: usize,
        total: usize,
        #[source]
        source: io::Error,
    },

    /// uname(2) failed or returned an unparsable release.
    #[error("cannot determine the running kernel version via uname(2): {0}")]
    Uname(#[source] io::Error),

    /// Reading a seccomp cache file failed for a reason other than "absent".
    #[error("cannot read seccomp cache {path}: {source}")]
    CacheRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing a seccomp cache file (temp file + rename) failed.
    #[error("cannot write seccomp cache {path}: {source}")]
    CacheWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
