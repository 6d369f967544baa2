//! The vocabulary of the cgroup module: hierarchy versions, controllers, the paths and
//! constants rcrun uses, and its errors.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// CFS bandwidth period used for `--cpus` (the kernel's default, 100 ms):
/// quota = cpus × period (Documentation/scheduler/sched-bwc.rst).
pub const CPU_PERIOD_US: u64 = 100_000;

/// Name of the directory grouping rcrun's container cgroups (as root, and
/// inside a delegated v2 cgroup or the current v1 cgroup).
pub const GROUP_DIR: &str = "rcrun";

/// Leaf that the processes of a delegated v2 cgroup are moved to before
/// controllers are enabled in it (no internal processes rule).
pub const RUNTIME_LEAF: &str = "rcrun-runtime";

/// How long `remove` keeps retrying rmdir on EBUSY / killing leftovers.
pub(super) const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Legacy per-controller hierarchies (also the "hybrid" layout).
    V1,
    /// Unified hierarchy.
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "cgroup v1",
            Version::V2 => "cgroup v2",
        })
    }
}

/// Controllers rcrun uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
    Cpuacct,
    Cpuset,
    Devices,
    /// Block I/O: v1 `blkio`, v2 `io`.
    Blkio,
    Hugetlb,
    /// v1 only (v2 has no network controller).
    NetCls,
    /// v1 only.
    NetPrio,
    Rdma,
    /// v1 only (v2 freezes through the core file cgroup.freeze): `pause` and `resume`.
    Freezer,
}

impl Controller {
    /// Kernel name of the controller.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Devices => "devices",
            Controller::Blkio => "blkio",
            Controller::Hugetlb => "hugetlb",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
            Controller::Rdma => "rdma",
            Controller::Freezer => "freezer",
        }
    }

    /// Name in a v2 `cgroup.controllers` / `cgroup.subtree_control` (the v1 hierarchy name
    /// but for block I/O).
    pub fn v2_name(self) -> &'static str {
        match self {
            Controller::Blkio => "io",
            c => c.name(),
        }
    }

    /// The controller a v2 interface file belongs to (`memory.high` → memory), for
    /// `linux.resources.unified`.
    pub fn of_v2_file(file: &str) -> Option<Controller> {
        let prefix = file.split('.').next()?;
        [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::Cpuset,
            Controller::Blkio,
            Controller::Hugetlb,
            Controller::Rdma,
        ]
        .into_iter()
        .find(|c| c.v2_name() == prefix)
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub(super) fn names(cs: &[Controller]) -> String {
    cs.iter().map(|c| c.name()).collect::<Vec<_>>().join(" ")
}

/// Errors of this module. Messages are one line and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid size {value:?}: {reason} (expected e.g. 64m, 1g, 512k, 100b)")]
    BadSize { value: String, reason: &'static str },
    #[error("invalid --cpus value {value:?}: {reason}")]
    BadCpus { value: String, reason: &'static str },
    #[error("invalid --cpuset-cpus value {value:?}: {reason}")]
    BadCpuset { value: String, reason: &'static str },
    #[error("invalid resource limits: {0}")]
    InvalidLimits(String),
    #[error(
        "invalid container id {0:?} for a cgroup name: it must be non-empty and contain no '/'"
    )]
    BadId(String),
    #[error("resource limits requested but no cgroup filesystem is mounted at {root}")]
    NoCgroupFs { root: PathBuf },
    #[error(
        "cgroup: the {controller} controller is not available at {path}, but {needed_for} needs it"
    )]
    MissingController {
        controller: Controller,
        path: PathBuf,
        needed_for: &'static str,
    },
    #[error(
        "cgroup: --memory-swap needs swap accounting, which this kernel has off ({path} does not exist); \
         boot with swapaccount=1 or drop --memory-swap"
    )]
    SwapUnsupported { path: PathBuf },
    #[error(
        "cgroup: resource limits need a cgroup subtree delegated to uid {uid} ({version}), but {reason}. {hint}"
    )]
    NoDelegation {
        version: Version,
        uid: u32,
        reason: String,
        hint: String,
    },
    #[error("{field} cannot be applied on {version}: {reason}")]
    Unsupported {
        field: String,
        version: Version,
        reason: &'static str,
    },
    #[error("{field} cannot be applied: this kernel has no {path} (the controller lacks that knob here)")]
    NoKnob { field: String, path: PathBuf },
    #[error("invalid linux.cgroupsPath {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("cgroup {path} already exists: a container with this id is running, or run `rcrun gc` to clean up")]
    Exists { path: PathBuf },
    #[error("cgroup: cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cgroup: cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cgroup: cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cgroup: cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
    #[error("cgroup: cannot apply the device policy to {path}: {source}; rcrun does not start a container as root without one")]
    DevicePolicy {
        path: PathBuf,
        source: crate::sys::bpf::BpfError,
    },
}

/// How a container's first process enters its cgroup, decided before clone: a field of the
/// launcher's plan (`launch::spawn` carries it out), in the order it tries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Join {
    /// v2: the directory to start the process in with clone3(CLONE_INTO_CGROUP), so that it is
    /// never migrated (cgroup-v2.rst). Kernels without it fall back on `procs`.
    pub clone_into: Option<PathBuf>,
    /// v1: the `tasks` file of every hierarchy; rcrun opens them before clone and the process
    /// writes "0" into each (see [`crate::cgroup::Cgroup::self_join_files`]). A delegation that
    /// lets rcrun write only `cgroup.procs` falls back on `procs`.
    pub self_join_tasks: Vec<PathBuf>,
    /// `cgroup.procs` of every directory, which rcrun writes the process's pid into when neither
    /// of the above placed it ([`crate::cgroup::move_process`]).
    pub procs: Vec<PathBuf>,
}

impl Join {
    pub fn is_empty(&self) -> bool {
        self.clone_into.is_none() && self.self_join_tasks.is_empty() && self.procs.is_empty()
    }
}
