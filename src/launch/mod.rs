//! Stage 4, **launch**: namespaces, id maps, then the child builds the root and execs. The
//! launcher is three calls, cut where runc and crun cut theirs: [`spawn`] (everything up to the
//! child's start gate), [`start`] (open the gate: the child execs), [`wait`] (signals, terminal,
//! exit status). `rcrun run` makes them in a row; the OCI `create`/`start` commands split them.
//!
//! Parent (rcrun)                               Child (clone of rcrun, inside new namespaces)
//! ──────────────                               ──────────────────────────────────────────────
//! ══ spawn
//! block forwarded signals, signalfd
//! cgroup: open v1 `tasks` / the v2 dir
//! clone(CLONE_NEWUSER?|NEWNS|NEWPID|NEWUTS|    waits on the go pipe
//!       NEWIPC)  (v2: clone3 INTO_CGROUP)
//! write uid_map/gid_map (newuidmap, or in the
//!   id holder's namespace: holder.rs)
//! cgroup: write pid to cgroup.procs (if the
//!         child was not born in / cannot join)
//! write 1 byte on the go pipe ───────────────▶ v1: write "0" to each `tasks` (joins itself),
//! root: unshare(CLONE_NEWNET), lo up; userns:  unshare(CLONE_NEWCGROUP), mounts,
//!   a fork enters the child's userns and does
//!   it there; the pid on the net pipe ───────▶ setns(/proc/PID/ns/net), /sys,
//! (caller: housekeeping while it builds)       pivot_root, hostname, cwd, fds,
//!                                              user, caps, no_new_privs;
//! ══ start                                     the start gate: 0 byte on the error pipe,
//! 0 byte read = created ◀───────────────────── then blocks reading the go pipe
//! write 1 byte on the go pipe ───────────────▶ seccomp, execve
//! error pipe EOF = exec happened ◀──────────── (or a failure message + exit code)
//! ══ wait
//! forward signals, relay the pty, reap, report the status

pub mod child;
mod early_net;
pub mod explain;
pub mod failure;
pub mod holder;
pub mod idmap;
pub mod init;
pub mod mounts;
pub mod plan;
pub mod security_steps;
pub mod spawn;
pub mod start;
pub mod user;
pub mod wait;

pub use early_net::EarlyNetns;
pub use failure::{LaunchError, Outcome};
pub use spawn::{spawn, spawn_with, Spawned};
pub use start::{start, Running};
pub use wait::wait;

use plan::{IdMapping, ResolvedUser};
use std::path::PathBuf;

/// Everything the child needs, computed before clone.
#[derive(Debug, Clone)]
pub struct StartupPlan {
    pub id: String,
    pub mapping: IdMapping,
    /// The store whose id holder (launch/holder.rs) a subordinate-id start may enter instead of
    /// running newuidmap/newgidmap: set by `rcrun run`; None maps with the helpers every time.
    pub id_holder: Option<PathBuf>,
    pub new_netns: bool,
    /// Where the child mounts its private scratch tmpfs (the store's run dir).
    pub scratch: PathBuf,
    /// Layer dirs, top layer first (overlayfs lowerdir order).
    pub lowers_top_first: Vec<PathBuf>,
    /// An OCI bundle's root file system: bound (recursively) as the root instead of an overlay
    /// of layers; writes go to it, as runc's do.
    pub rootfs_dir: Option<PathBuf>,
    /// setrlimit(2) before the capability drop (raising a hard limit needs CAP_SYS_RESOURCE).
    pub rlimits: Vec<Rlimit>,
    /// Index in `lowers_top_first` of the topmost layer with an `etc` entry (its /etc decides).
    pub etc_layer: Option<usize>,
    pub mounts: Vec<mounts::MountStep>,
    pub read_only: bool,
    /// Set with sethostname(2) in the new uts namespace; empty = keep the copy of the host's
    /// (an OCI spec without `hostname`).
    pub hostname: String,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: ResolvedUser,
    pub no_new_privs: bool,
    /// Capability sets (bounding, effective, permitted, inheritable, ambient).
    pub caps: crate::security::CapPlan,
    /// The compiled seccomp filter, or None for `seccomp=unconfined` / `--privileged`.
    pub seccomp: Option<crate::security::CompiledFilter>,
    pub tty: bool,
    pub interactive: bool,
    pub init: bool,
    /// How the first process enters its cgroup (empty: no cgroup).
    pub cgroup: crate::cgroup::Join,
    /// The container is killed when rcrun dies (prctl PR_SET_PDEATHSIG, re-armed after the
    /// credential change): `rcrun run`. An OCI `create` leaves it to outlive rcrun.
    pub die_with_rcrun: bool,
    /// What the first process waits on at its start gate.
    pub start_gate: StartGate,
    /// `linux.sysctl`: (key, value), written into the container's /proc/sys before its
    /// masked and read-only paths are applied. Only keys of the container's own namespaces.
    pub sysctls: Vec<(String, String)>,
    /// `process.oomScoreAdj`: written to /proc/self/oom_score_adj while still privileged
    /// (lowering it needs CAP_SYS_RESOURCE).
    pub oom_score_adj: Option<i32>,
    /// `linux.rootfsPropagation`: the propagation of the container's "/" (MS_SHARED, MS_SLAVE,
    /// MS_PRIVATE or MS_UNBINDABLE, MS_REC for the r- forms), set after pivot_root. None: "/"
    /// stays the slave it was made before the mounts.
    pub root_propagation: Option<u64>,
    /// Namespaces the spec does not list: the container shares rcrun's (runtime-spec
    /// config-linux.md, "Namespaces": "If a namespace type is not specified in the namespaces
    /// array, the container MUST inherit the runtime namespace of that type"). Only pid, uts,
    /// ipc and cgroup: rcrun always makes a mount namespace (its mounts must not land in the
    /// host's), the network is `new_netns`, the user namespace `mapping`.
    pub inherit: Vec<NsKind>,
    /// Namespaces joined by path (`linux.namespaces[].path`), in the order they are joined.
    pub joins: Vec<(NsKind, PathBuf)>,
    /// The child stops once the root is built, before pivot_root, until rcrun has run the
    /// spec's prestart, createRuntime and createContainer hooks ([`Spawned::until_hooks_point`]).
    pub hooks_point: bool,
    /// `rcrun exec`: the process enters a running container (every namespace of its first
    /// process is in `joins`, the user namespace entered by rcrun before clone) and skips
    /// building a root: the joined mount namespace's root is the container's.
    pub enter_running: bool,
    /// `--preserve-fds N` plus LISTEN_FDS: descriptors 3 .. 3+N-1 of rcrun go on to the
    /// command; everything above is closed at execve.
    pub preserve_fds: u32,
}

/// A namespace type of an OCI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NsKind {
    // In the order joins happen in the child (crun's and runc's): the mount namespace last,
    // since after it paths resolve in the joined namespace.
    Ipc,
    Uts,
    Net,
    Cgroup,
    Pid,
    Mount,
    User,
}

impl NsKind {
    /// The CLONE_NEW* flag, which is also what setns(2) checks the namespace file against.
    pub fn clone_flag(self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags as C;
        match self {
            NsKind::Ipc => C::CLONE_NEWIPC,
            NsKind::Uts => C::CLONE_NEWUTS,
            NsKind::Net => C::CLONE_NEWNET,
            NsKind::Cgroup => C::CLONE_NEWCGROUP,
            NsKind::Pid => C::CLONE_NEWPID,
            NsKind::Mount => C::CLONE_NEWNS,
            NsKind::User => C::CLONE_NEWUSER,
        }
    }

    /// The name in /proc/PID/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
            NsKind::Net => "net",
            NsKind::Cgroup => "cgroup",
            NsKind::Pid => "pid",
            NsKind::Mount => "mnt",
            NsKind::User => "user",
        }
    }
}

/// How the first process waits at its start gate, with everything but seccomp and execve done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StartGate {
    /// One more byte on the go pipe from this rcrun (`launch::start`): `rcrun run`.
    #[default]
    Pipe,
    /// An OCI `create`: the process blocks opening this fifo for writing until `rcrun start`, a
    /// later process, opens it for reading (runc's exec.fifo). The fifo's directory need not be
    /// reachable from the container: rcrun opens it (O_PATH) before clone.
    ExecFifo(PathBuf),
}

/// One `process.rlimits` entry of an OCI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: nix::sys::resource::Resource,
    pub soft: u64,
    pub hard: u64,
}

impl StartupPlan {
    /// clone(2) flags for this plan.
    pub fn clone_flags(&self) -> nix::sched::CloneFlags {
        use nix::sched::CloneFlags as C;
        let mut f = C::empty();
        for k in [NsKind::Mount, NsKind::Pid, NsKind::Uts, NsKind::Ipc] {
            if self.makes(k) {
                f |= k.clone_flag();
            }
        }
        if self.mapping.user_namespace() && !self.mapping.enters_late() {
            f |= C::CLONE_NEWUSER;
        }
        f
    }

    /// Whether the container gets a new namespace of kind `k` (neither shared with rcrun nor
    /// joined by path).
    pub fn makes(&self, k: NsKind) -> bool {
        !self.inherit.contains(&k) && !self.joins.iter().any(|(j, _)| *j == k)
    }

    /// Who creates the network namespace. Not clone: with ~1 ms in setup_net it is the costliest
    /// namespace here, so it is made while something else would wait anyway.
    pub fn net_setup(&self) -> NetSetup {
        if !self.new_netns {
            NetSetup::Host
        } else if self.mapping.user_namespace() && !self.mapping.enters_late() {
            NetSetup::HelperWhileMounting
        } else {
            NetSetup::ParentWhileMounting
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetSetup {
    /// `--network host`: the host's network namespace.
    Host,
    /// In a user namespace from the start: the namespace must belong to the child's user
    /// namespace (its root then holds CAP_NET_ADMIN over it, and may mount /sys), so a short-lived
    /// fork of rcrun enters the child's user namespace once it is mapped and unshares one there,
    /// on rcrun's otherwise idle CPU while the child mounts (~0.7 ms taken off the child's path;
    /// the child made it itself before). The child joins it before /sys, as in the root case.
    HelperWhileMounting,
    /// As root: rcrun unshares a network namespace for itself while the child builds the root
    /// file system; the child joins it (setns) just before mounting /sys, whose device list
    /// depends on it. The namespace belongs to the initial user namespace either way.
    ParentWhileMounting,
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
