//! Stage 4, **launch**: namespaces, id maps, then the child builds the root and execs.
//!
//! Parent (rcrun)                               Child (clone of rcrun, inside new namespaces)
//! ──────────────                               ──────────────────────────────────────────────
//! block forwarded signals, signalfd
//! cgroup: create (v1: open each `tasks`)
//! clone(CLONE_NEWUSER?|NEWNS|NEWPID|NEWUTS|    waits on the sync pipe
//!       NEWIPC|NEWNET?)
//! write uid_map/gid_map (or newuidmap)
//! cgroup v2: write pid to cgroup.procs
//! write 1 byte on the sync pipe ─────────────▶ v1: write "0" to each `tasks` (joins itself),
//!                                              unshare(CLONE_NEWCGROUP),
//!                                              mounts, pivot_root, hostname, cwd, fds,
//!                                              user, caps, no_new_privs, seccomp, execve
//! error pipe EOF = exec happened ◀──────────── (or a failure message + exit code)
//! forward signals, wait, exit with its status

pub mod child;
pub mod explain;
pub mod mounts;
pub mod parent;
pub mod plan;
pub mod security_steps;

use plan::{IdMapping, ResolvedUser};
use std::path::PathBuf;

/// Everything the child needs, computed before clone.
#[derive(Debug, Clone)]
pub struct StartupPlan {
    pub id: String,
    pub mapping: IdMapping,
    pub new_netns: bool,
    /// Where the child mounts its private scratch tmpfs (the store's run dir).
    pub scratch: PathBuf,
    /// Layer dirs, top layer first (overlayfs lowerdir order).
    pub lowers_top_first: Vec<PathBuf>,
    pub mounts: Vec<mounts::MountStep>,
    pub read_only: bool,
    pub hostname: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ResolvedUser,
    pub no_new_privs: bool,
    /// Capability sets (bounding, effective, permitted; inheritable and ambient stay empty).
    pub caps: crate::security::CapPlan,
    /// The compiled seccomp filter, or None for `seccomp=unconfined` / `--privileged`.
    pub seccomp: Option<crate::security::CompiledFilter>,
    pub tty: bool,
    pub interactive: bool,
    pub init: bool,
}

impl StartupPlan {
    /// clone(2) flags for this plan.
    pub fn clone_flags(&self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags as C;
        let mut f = C::CLONE_NEWNS | C::CLONE_NEWPID | C::CLONE_NEWUTS | C::CLONE_NEWIPC;
        if self.mapping.user_namespace() && !self.mapping.enters_late() {
            f |= C::CLONE_NEWUSER;
        }
        if self.new_netns {
            f |= C::CLONE_NEWNET;
        }
        f
    }
}

pub fn describe_flags(f: nix::sched::CloneFlags) -> String {
    use nix::sched::CloneFlags as C;
    let names = [
        (C::CLONE_NEWUSER, "CLONE_NEWUSER"),
        (C::CLONE_NEWNS, "CLONE_NEWNS"),
        (C::CLONE_NEWPID, "CLONE_NEWPID"),
        (C::CLONE_NEWUTS, "CLONE_NEWUTS"),
        (C::CLONE_NEWIPC, "CLONE_NEWIPC"),
        (C::CLONE_NEWNET, "CLONE_NEWNET"),
        (C::CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
    ];
    names
        .iter()
        .filter(|(b, _)| f.contains(*b))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|")
}
