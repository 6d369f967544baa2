//! Resource limits for containers through Linux control groups (v1 and v2).
//!
//! What this module does, in runtime order:
//!
//! 1. [`Cgroup::create`] picks where the container's cgroup goes and creates it:
//!    * as root: `rcrun/<id>` under the root of each needed v1 controller
//!      hierarchy (`/sys/fs/cgroup/memory/rcrun/<id>`, ...) or under the v2
//!      root (`/sys/fs/cgroup/rcrun/<id>`);
//!    * rootless: only inside a subtree delegated to the user (see
//!      [`CgroupError::NoDelegation`] and the conventions below); when limits
//!      are requested and nothing is delegated that is an error, when no limits
//!      are requested the container simply runs without a cgroup (`Ok(None)`).
//!
//!    It then writes the limits (memory, memory+swap, pids, CPU quota, CPU
//!    shares/weight, cpuset) and records every write for `--explain`.
//! 2. [`Cgroup::add_process`] moves the container's init into it before exec.
//! 3. After the container exits: [`Cgroup::oom_killed`], [`Cgroup::stats`].
//! 4. [`Cgroup::remove`] kills leftovers and rmdirs; [`gc_stale`] cleans up
//!    after runs that were SIGKILLed before they could do so.
//!
//! Delegation conventions for rootless use:
//! * v2: the process's own cgroup (from `/proc/self/cgroup`, line `0::/path`)
//!   or the nearest ancestor of it that the user can write and whose
//!   `cgroup.controllers` lists the controllers the limits need — what
//!   `systemd-run --user --scope -p Delegate=yes rcrun ...` provides. The
//!   container goes to `<that cgroup>/rcrun/<id>`. Because of the "no internal
//!   processes" rule (Documentation/admin-guide/cgroup-v2.rst, "No Internal
//!   Process Constraint") controllers can only be enabled in the delegated
//!   cgroup's `cgroup.subtree_control` once it holds no processes, so when it
//!   is our own cgroup the processes in it (rcrun itself) are first moved to
//!   the leaf `<that cgroup>/rcrun-runtime` (podman does the same).
//! * v1: for each controller, `/sys/fs/cgroup/<controller>/rcrun-<uid>/`
//!   created and `chown -R`ed to the user by root once; the container goes to
//!   `rcrun-<uid>/<id>`. The process's current v1 cgroup is accepted as well
//!   when the user can write it (container in `<current>/rcrun/<id>`).
//!
//! cgroups-rs (0.3) is used for the limit writes themselves (its per-controller
//! setters, pointed at our directory). Directory layout, delegation, process
//! moves, kill and removal are done with direct file operations because
//! cgroups-rs' `Cgroup`/`Hierarchy` hard-code `/sys/fs/cgroup` and
//! `/proc/self/mountinfo` (so they cannot run against a test tree or a
//! delegated subtree), swallow mkdir and `cgroup.subtree_control` errors, and
//! report neither the full path nor an `Option` for absent stat files.

pub mod devices;
mod parse;

pub use parse::{cpu_shares_to_weight, format_size, parse_cpus, parse_cpuset, parse_size};

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cgroups_rs::cpu::CpuController;
use cgroups_rs::cpuset::CpuSetController;
use cgroups_rs::memory::MemController;
use cgroups_rs::pid::PidController;
use cgroups_rs::MaxValue;
use tracing::{debug, warn};

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
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Resource limits for one container, with Docker's flag semantics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// `--memory`: hard limit in bytes.
    pub memory: Option<u64>,
    /// `--memory-swap`: memory + swap total in bytes; `-1` = unlimited swap.
    /// Unset (or 0) with `memory` set means, as in Docker, "as much swap as
    /// memory" (total 2 × memory) where the kernel accounts swap.
    pub memory_swap: Option<i64>,
    /// `--pids-limit`: max number of tasks; 0 or negative = unlimited.
    pub pids: Option<i64>,
    /// `--cpus`: CPU bandwidth in CPUs (0.5 = half a CPU).
    pub cpus: Option<f64>,
    /// `--cpu-shares`: relative weight (v1 cpu.shares scale, default 1024).
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`: CPUs allowed, list format (`0-1,3`).
    pub cpuset_cpus: Option<String>,
    /// The device policy ([`devices`]): v1 `devices.deny`/`devices.allow` writes or a v2 BPF
    /// program. `Some` makes the cgroup mandatory (rcrun sets one whenever it runs as root).
    pub devices: Option<Vec<devices::DeviceRule>>,
}

impl Limits {
    /// True when no limit at all is requested.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.memory_swap.is_none()
            && self.pids.is_none()
            && self.cpus.is_none()
            && self.cpu_shares.is_none()
            && self.cpuset_cpus.is_none()
    }

    /// Checks combinations the kernel would reject or that make no sense.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let invalid = |m: String| Err(CgroupError::InvalidLimits(m));
        if self.memory == Some(0) {
            return invalid("--memory must be greater than 0".into());
        }
        if let Some(m) = self.memory {
            if m > i64::MAX as u64 {
                return invalid(format!("--memory {m} is too large"));
            }
        }
        match (self.memory_swap, self.memory) {
            (Some(s), _) if s < -1 => {
                return invalid(format!("--memory-swap {s}: use -1 for unlimited swap"))
            }
            (Some(s), None) if s > 0 => {
                return invalid("--memory-swap needs --memory (it is the memory+swap total)".into())
            }
            (Some(s), Some(m)) if s > 0 && (s as u64) < m => {
                return invalid(format!(
                "--memory-swap ({}) is the memory+swap total and must be at least --memory ({})",
                format_size(s as u64),
                format_size(m)
            ))
            }
            _ => {}
        }
        if let Some(c) = self.cpus {
            if !c.is_finite() || c < 0.01 {
                return invalid(format!("--cpus {c}: must be at least 0.01"));
            }
        }
        if self.cpu_shares == Some(0) {
            return invalid("--cpu-shares must be greater than 0".into());
        }
        if let Some(s) = &self.cpuset_cpus {
            parse_cpuset(s)?;
        }
        Ok(())
    }

    /// Controllers whose absence makes the requested limits impossible.
    fn required(&self) -> Vec<Controller> {
        let mut v = Vec::new();
        if self.devices.is_some() {
            v.push(Controller::Devices);
        }
        if self.memory.is_some() || self.memory_swap.is_some() {
            v.push(Controller::Memory);
        }
        if self.pids.is_some() {
            v.push(Controller::Pids);
        }
        if self.cpus.is_some() || self.cpu_shares.is_some() {
            v.push(Controller::Cpu);
        }
        if self.cpuset_cpus.is_some() {
            v.push(Controller::Cpuset);
        }
        v
    }

    /// Controllers joined when available: the required ones plus those giving
    /// statistics and OOM detection. cpuset only when asked for (it has no
    /// statistics and v1 needs cpus/mems initialised in every new cgroup).
    fn wanted(&self, version: Version) -> Vec<Controller> {
        let mut v = vec![Controller::Memory, Controller::Pids];
        if version == Version::V1 && self.devices.is_some() {
            // v2 has no devices controller: its policy is a BPF program on the cgroup.
            v.push(Controller::Devices);
        }
        if version == Version::V1 {
            // v1: cpuacct counts CPU time; the cpu hierarchy only enforces quotas and shares, so
            // without them it would be one more directory to create, join and remove per run.
            v.push(Controller::Cpuacct);
            if self.cpus.is_some() || self.cpu_shares.is_some() {
                v.push(Controller::Cpu);
            }
        } else {
            // v2 has cpu.stat in every cgroup; the controller adds the pressure and throttling
            // figures and is one write in the same directory.
            v.push(Controller::Cpu);
        }
        if self.cpuset_cpus.is_some() {
            v.push(Controller::Cpuset);
        }
        v
    }
}

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
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn names(cs: &[Controller]) -> String {
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

/// Predicate deciding whether the (rootless) user may write a path; injectable
/// so tests can simulate ownership on a fake tree.
pub type WritableCheck = Arc<dyn Fn(&Path) -> bool + Send + Sync>;

/// Where the cgroup filesystem and procfs are, and who we are. Everything the
/// module reads or writes is below `root` or `proc`, so tests point them at a
/// temporary mock tree (as youki and Firecracker do).
#[derive(Clone)]
pub struct CgroupFs {
    /// Usually `/sys/fs/cgroup`.
    pub root: PathBuf,
    /// Usually `/proc` (only `<proc>/self/cgroup` is read).
    pub proc: PathBuf,
    /// Effective uid; 0 selects the root layout, anything else rootless.
    pub uid: u32,
    writable: WritableCheck,
}

impl fmt::Debug for CgroupFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CgroupFs")
            .field("root", &self.root)
            .field("proc", &self.proc)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl CgroupFs {
    /// The real system: `/sys/fs/cgroup`, `/proc`, the effective uid.
    pub fn host() -> Self {
        Self::new("/sys/fs/cgroup", "/proc")
    }

    /// A cgroup tree at `root` and procfs at `proc`, for the effective uid,
    /// with writability checked by `eaccess(2)`-style permission checks.
    pub fn new(root: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> Self {
        CgroupFs {
            root: root.into(),
            proc: proc.into(),
            uid: nix::unistd::geteuid().as_raw(),
            writable: Arc::new(|p: &Path| {
                nix::unistd::eaccess(p, nix::unistd::AccessFlags::W_OK).is_ok()
            }),
        }
    }

    /// Overrides the uid (0 = root layout).
    pub fn with_uid(mut self, uid: u32) -> Self {
        self.uid = uid;
        self
    }

    /// Overrides the writability check (tests).
    pub fn with_writable_check(
        mut self,
        f: impl Fn(&Path) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.writable = Arc::new(f);
        self
    }

    /// True when running as a non-root user.
    pub fn is_rootless(&self) -> bool {
        self.uid != 0
    }

    /// Detects the cgroup version from the layout, like runc's
    /// `IsCgroup2UnifiedMode` but by file presence so it also works on a mock
    /// tree: a unified mount has `cgroup.controllers` at its root; a v1 (or
    /// hybrid, where `/sys/fs/cgroup` is a tmpfs of per-controller mounts plus
    /// `unified/`) layout has per-controller directories. Hybrid counts as v1:
    /// its v2 part usually has no controllers. `None`: no cgroup fs at all.
    pub fn version(&self) -> Option<Version> {
        if self.root.join("cgroup.controllers").is_file() {
            return Some(Version::V2);
        }
        let v1 = [
            Controller::Memory,
            Controller::Pids,
            Controller::Cpu,
            Controller::Cpuacct,
            Controller::Cpuset,
        ];
        if v1
            .iter()
            .any(|c| self.root.join(c.name()).join("cgroup.procs").is_file())
        {
            return Some(Version::V1);
        }
        None
    }

    fn can_write(&self, p: &Path) -> bool {
        (self.writable)(p)
    }

    /// Parses `<proc>/self/cgroup`: (controller list, path) per line.
    fn self_cgroups(&self) -> Vec<(Vec<String>, String)> {
        let text = fs::read_to_string(self.proc.join("self/cgroup")).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':');
                let _id = it.next()?;
                let ctrls = it.next()?;
                let path = it.next()?;
                let ctrls = if ctrls.is_empty() {
                    vec![]
                } else {
                    ctrls.split(',').map(str::to_string).collect()
                };
                Some((ctrls, path.to_string()))
            })
            .collect()
    }

    /// Own v2 cgroup directory (`0::/path`).
    fn own_v2(&self) -> Option<PathBuf> {
        self.self_cgroups()
            .into_iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| join_rel(&self.root, &p))
    }

    /// Own v1 cgroup directory for a controller (`N:cpu,cpuacct:/path`).
    fn own_v1(&self, c: Controller) -> Option<PathBuf> {
        self.self_cgroups()
            .into_iter()
            .find(|(cs, _)| cs.iter().any(|n| n == c.name()))
            .map(|(_, p)| join_rel(&self.root.join(c.name()), &p))
    }
}

/// `base` joined with an absolute cgroup path from /proc/self/cgroup.
fn join_rel(base: &Path, p: &str) -> PathBuf {
    let rel = p.trim_start_matches('/');
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

/// Resource usage of a container, read after it exited (or while it runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Highest memory usage: v1 `memory.max_usage_in_bytes`, v2 `memory.peak`
    /// (Linux ≥ 5.19).
    pub peak_memory_bytes: Option<u64>,
    /// CPU time used: v1 `cpuacct.usage` (ns), v2 `cpu.stat` `usage_usec`.
    pub cpu_time: Option<Duration>,
    /// Tasks now: `pids.current`.
    pub pids_current: Option<u64>,
    /// Most tasks at once: v2 `pids.peak` (Linux ≥ 6.1); v1 has no equivalent.
    pub pids_peak: Option<u64>,
}

/// One container cgroup directory and the controllers it stands for.
#[derive(Debug, Clone)]
struct CgDir {
    controllers: Vec<Controller>,
    /// Mount point of the hierarchy (v1: `<root>/<controller>`, v2: `<root>`).
    mount: PathBuf,
    path: PathBuf,
}

/// A container's cgroup (one directory per v1 hierarchy, or one v2 directory).
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    id: String,
    dirs: Vec<CgDir>,
    writes: Vec<(PathBuf, String)>,
    memory_limit: Option<u64>,
    /// Process that created the cgroup: `Drop` cleans up only there, never in a
    /// forked child that still has a copy of this value.
    owner_pid: u32,
    done: bool,
}

/// A v1 hierarchy the container joins: its mount and the directory under
/// which `<id>` is created.
struct V1Target {
    controllers: Vec<Controller>,
    mount: PathBuf,
    group: PathBuf,
}

/// The v2 cgroup under which `rcrun/<id>` is created.
struct V2Target {
    parent: PathBuf,
    /// Controllers to enable down to the container (subset of available).
    enable: Vec<Controller>,
    /// The parent holds processes that must move to a leaf first.
    move_procs: bool,
}

impl Cgroup {
    /// Creates the container's cgroup and writes the limits.
    ///
    /// Returns `Ok(None)` when no cgroup can be used and no limits are
    /// requested (rootless without delegation, or no cgroup fs): the container
    /// then runs without one. With limits requested that case is an error
    /// ([`CgroupError::NoDelegation`] rootless).
    pub fn create(fs: &CgroupFs, id: &str, limits: &Limits) -> Result<Option<Cgroup>, CgroupError> {
        if id.is_empty() || id.contains('/') || id.contains('\0') || id == "." || id == ".." {
            return Err(CgroupError::BadId(id.to_string()));
        }
        limits.validate()?;
        let Some(version) = fs.version() else {
            if limits.is_empty() && limits.devices.is_none() {
                debug!(root = %fs.root.display(), "no cgroup filesystem: running without a cgroup");
                return Ok(None);
            }
            return Err(CgroupError::NoCgroupFs {
                root: fs.root.clone(),
            });
        };
        let mut cg = Cgroup {
            version,
            id: id.to_string(),
            dirs: Vec::new(),
            writes: Vec::new(),
            memory_limit: limits.memory,
            owner_pid: std::process::id(),
            done: false,
        };
        // On any error below, dropping `cg` removes what was created so far.
        match version {
            Version::V1 => {
                let targets = plan_v1(fs, limits)?;
                if targets.is_empty() {
                    return Ok(None);
                }
                for t in targets {
                    cg.create_v1(t)?;
                }
            }
            Version::V2 => {
                let Some(t) = plan_v2(fs, limits)? else {
                    return Ok(None);
                };
                cg.create_v2(t)?;
            }
        }
        cg.apply(limits)?;
        debug!(id, version = %version, dirs = ?cg.paths(), "cgroup created");
        Ok(Some(cg))
    }

    /// cgroup version of this cgroup.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Container id the cgroup was created for.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's cgroup directories (one per v1 hierarchy, one for v2).
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// Every file write performed so far, as (file, value), in order — for
    /// `--explain` ("cgroup: write 67108864 to .../memory.limit_in_bytes").
    pub fn writes(&self) -> &[(PathBuf, String)] {
        &self.writes
    }

    /// Memory limit applied, if any (for the OOM message).
    pub fn memory_limit(&self) -> Option<u64> {
        self.memory_limit
    }

    fn dir_for(&self, c: Controller) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&c))
            .map(|d| d.path.as_path())
    }

    // ---- creation -------------------------------------------------------

    fn create_v1(&mut self, t: V1Target) -> Result<(), CgroupError> {
        let cpuset = t.controllers.contains(&Controller::Cpuset);
        if !t.group.is_dir() {
            mkdir(&t.group, true)?;
        }
        if cpuset {
            self.init_cpuset(&t.group, &t.mount)?;
        }
        let path = t.group.join(&self.id);
        mkdir(&path, false)?;
        self.dirs.push(CgDir {
            controllers: t.controllers,
            mount: t.mount.clone(),
            path: path.clone(),
        });
        if cpuset {
            self.init_cpuset(&path, &t.mount)?;
        }
        Ok(())
    }

    /// cpuset v1 refuses tasks while `cpuset.cpus`/`cpuset.mems` are empty,
    /// and a new cgroup starts empty (Documentation/admin-guide/cgroup-v1/
    /// cpusets.rst, 1.4 "... before attaching tasks, cpus and mems must be
    /// set"). Copy them from the nearest non-empty ancestor, top-down.
    fn init_cpuset(&mut self, dir: &Path, mount: &Path) -> Result<(), CgroupError> {
        for file in ["cpuset.cpus", "cpuset.mems"] {
            self.init_cpuset_file(dir, mount, file)?;
        }
        Ok(())
    }

    fn init_cpuset_file(
        &mut self,
        dir: &Path,
        mount: &Path,
        file: &str,
    ) -> Result<String, CgroupError> {
        let cur = read_trim(&dir.join(file)).unwrap_or_default();
        if !cur.is_empty() || dir == mount {
            return Ok(cur);
        }
        let Some(parent) = dir.parent().filter(|p| p.starts_with(mount)) else {
            return Ok(cur);
        };
        let value = self.init_cpuset_file(parent, mount, file)?;
        if value.is_empty() {
            return Ok(value);
        }
        let ctl = CpuSetController::new(dir.to_path_buf(), false);
        self.cg_write(dir, file, value.clone(), || {
            if file == "cpuset.cpus" {
                ctl.set_cpus(&value)
            } else {
                ctl.set_mems(&value)
            }
        })?;
        Ok(value)
    }

    fn create_v2(&mut self, t: V2Target) -> Result<(), CgroupError> {
        let enable_in = |this: &mut Self, dir: &Path| -> Result<(), CgroupError> {
            let on: BTreeSet<String> = read_trim(&dir.join("cgroup.subtree_control"))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            let missing: Vec<String> = t
                .enable
                .iter()
                .filter(|c| !on.contains(c.name()))
                .map(|c| format!("+{}", c.name()))
                .collect();
            if !missing.is_empty() {
                // One write enables several controllers ("+memory +pids").
                this.write_file(&dir.join("cgroup.subtree_control"), &missing.join(" "))?;
            }
            Ok(())
        };
        let needs_enabling = {
            let on = read_trim(&t.parent.join("cgroup.subtree_control")).unwrap_or_default();
            t.enable
                .iter()
                .any(|c| !on.split_whitespace().any(|n| n == c.name()))
        };
        if t.move_procs && needs_enabling {
            let leaf = t.parent.join(RUNTIME_LEAF);
            if !leaf.is_dir() {
                mkdir(&leaf, true)?;
            }
            for pid in read_procs(&t.parent) {
                // A process that exited meanwhile (ESRCH) is fine to skip.
                match self.write_file(&leaf.join("cgroup.procs"), &pid.to_string()) {
                    Err(CgroupError::Write { source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    r => r?,
                }
            }
        }
        enable_in(self, &t.parent)?;
        let group = t.parent.join(GROUP_DIR);
        if !group.is_dir() {
            mkdir(&group, true)?;
        }
        enable_in(self, &group)?;
        let path = group.join(&self.id);
        mkdir(&path, false)?;
        self.dirs.push(CgDir {
            controllers: t.enable.clone(),
            mount: t.parent.clone(),
            path,
        });
        Ok(())
    }

    // ---- limits ---------------------------------------------------------

    fn apply(&mut self, l: &Limits) -> Result<(), CgroupError> {
        let v2 = self.version == Version::V2;
        if let Some(rules) = &l.devices {
            self.apply_devices(rules)?;
        }
        if let Some(dir) = self.dir_for(Controller::Memory).map(Path::to_path_buf) {
            self.apply_memory(&dir, l)?;
        }
        if let (Some(n), Some(dir)) = (
            l.pids,
            self.dir_for(Controller::Pids).map(Path::to_path_buf),
        ) {
            let max = if n > 0 {
                MaxValue::Value(n)
            } else {
                MaxValue::Max
            };
            let ctl = PidController::new(dir.clone(), v2);
            self.cg_write(&dir, "pids.max", max.to_string(), || ctl.set_pid_max(max))?;
        }
        if let Some(dir) = self.dir_for(Controller::Cpu).map(Path::to_path_buf) {
            let ctl = CpuController::new(dir.clone(), v2);
            if let Some(cpus) = l.cpus {
                let quota = ((cpus * CPU_PERIOD_US as f64).round() as i64).max(1000);
                if v2 {
                    // cpu.max is "$MAX $PERIOD" (cgroup-v2.rst, "cpu.max"). Written
                    // directly: cgroups-rs 0.3 does a read-modify-write of it even
                    // when both fields are given.
                    self.write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                } else {
                    // Period first: the kernel validates quota against it.
                    self.cg_write(&dir, "cpu.cfs_period_us", CPU_PERIOD_US.to_string(), || {
                        ctl.set_cfs_period(CPU_PERIOD_US)
                    })?;
                    self.cg_write(&dir, "cpu.cfs_quota_us", quota.to_string(), || {
                        ctl.set_cfs_quota(quota)
                    })?;
                }
            }
            if let Some(shares) = l.cpu_shares {
                let (file, value) = if v2 {
                    ("cpu.weight", cpu_shares_to_weight(shares))
                } else {
                    // The kernel clamps to [2, 262144] itself; clamp so the
                    // recorded value is what takes effect.
                    ("cpu.shares", shares.clamp(2, 262_144))
                };
                // cgroups-rs' set_shares writes cpu.weight on v2 unconverted.
                self.cg_write(&dir, file, value.to_string(), || ctl.set_shares(value))?;
            }
        }
        if let (Some(cpus), Some(dir)) = (
            &l.cpuset_cpus,
            self.dir_for(Controller::Cpuset).map(Path::to_path_buf),
        ) {
            let cpus = parse_cpuset(cpus)?;
            let ctl = CpuSetController::new(dir.clone(), v2);
            self.cg_write(&dir, "cpuset.cpus", cpus.clone(), || ctl.set_cpus(&cpus))?;
        }
        Ok(())
    }

    /// The device policy, before any process is in the cgroup. v1: `devices.deny a` empties the
    /// new cgroup's list (it inherited its parent's "a *:* rwm"), then one `devices.allow` per
    /// rule (Documentation/admin-guide/cgroup-v1/devices.rst). v2: a BPF_PROG_TYPE_CGROUP_DEVICE
    /// program attached to the directory (cgroup-v2.rst, "Device controller"), as crun and
    /// youki do; it stays attached after rcrun closes its fds and goes with the cgroup.
    fn apply_devices(&mut self, rules: &[devices::DeviceRule]) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                let Some(dir) = self.dir_for(Controller::Devices).map(Path::to_path_buf) else {
                    // plan_v1 made the controller required: it is there.
                    return Ok(());
                };
                for (file, value) in devices::v1_writes(rules) {
                    self.write_file(&dir.join(file), &value)?;
                }
            }
            Version::V2 => {
                let Some(dir) = self.dirs.first().map(|d| d.path.clone()) else {
                    return Ok(());
                };
                let program = devices::bpf_program(rules);
                crate::sys::bpf::apply_device_policy(&dir, &program).map_err(|source| {
                    CgroupError::DevicePolicy {
                        path: dir.clone(),
                        source,
                    }
                })?;
                self.writes.push((
                    dir,
                    format!(
                        "bpf(BPF_PROG_LOAD, CGROUP_DEVICE, {} instructions) + bpf(BPF_PROG_ATTACH, BPF_CGROUP_DEVICE)",
                        program.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn apply_memory(&mut self, dir: &Path, l: &Limits) -> Result<(), CgroupError> {
        let v2 = self.version == Version::V2;
        let ctl = MemController::new(dir.to_path_buf(), v2);
        if let Some(m) = l.memory {
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            self.cg_write(dir, file, m.to_string(), || ctl.set_limit(m as i64))?;
        }
        // Swap: Docker's --memory-swap is the memory+swap total; -1 unlimited;
        // unset/0 with --memory = as much swap as memory (total 2 × memory).
        let explicit = l.memory_swap.filter(|s| *s != 0);
        let total: Option<i64> = match (explicit, l.memory) {
            (Some(s), _) => Some(s),
            (None, Some(m)) => Some((m as i64).saturating_mul(2)),
            (None, None) => None,
        };
        let Some(total) = total else { return Ok(()) };
        // Whether the kernel accounts swap: v1 has memory.memsw.* only with
        // swap accounting (CONFIG_MEMCG_SWAP, swapaccount=1), visible at the
        // hierarchy root; v2 has memory.swap.max in non-root cgroups likewise.
        let (probe, file) = if v2 {
            (
                dir.parent().unwrap_or(dir).join("memory.swap.max"),
                "memory.swap.max",
            )
        } else {
            let mount = self
                .dirs
                .iter()
                .find(|d| d.path == dir)
                .map(|d| d.mount.clone());
            (
                mount
                    .unwrap_or_else(|| dir.to_path_buf())
                    .join("memory.memsw.limit_in_bytes"),
                "memory.memsw.limit_in_bytes",
            )
        };
        let supported = probe.exists() || dir.join(file).exists();
        if !supported {
            if explicit.is_some_and(|s| s > 0) {
                return Err(CgroupError::SwapUnsupported { path: probe });
            }
            // Unlimited or Docker's implicit default: nothing to enforce.
            debug!(path = %probe.display(), "no swap accounting; swap limit left as is");
            return Ok(());
        }
        let (value, raw): (String, i64) = if v2 {
            // memory.swap.max limits swap alone: total − memory.
            match (total, l.memory) {
                (-1, _) => ("max".into(), -1),
                (t, Some(m)) => {
                    let s = t - m as i64;
                    (s.to_string(), s)
                }
                (_, None) => return Ok(()), // rejected by validate()
            }
        } else {
            (total.to_string(), total)
        };
        self.cg_write(dir, file, value, || ctl.set_memswap_limit(raw))
    }

    // ---- processes ------------------------------------------------------

    /// Moves process `pid` (all its threads) into the cgroup: writes it to
    /// `cgroup.procs` of every directory (v1: one per hierarchy). Call before
    /// the container execs so that all its memory is charged here.
    pub fn add_process(&mut self, pid: i32) -> Result<(), CgroupError> {
        let files: Vec<PathBuf> = self
            .dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect();
        let value = pid.to_string();
        // One write per v1 hierarchy, in parallel: each migration waits for an RCU grace period
        // (cgroup_threadgroup_rwsem), ~3 ms here, so four in a row cost ~13 ms on the start path
        // and four at once ~1.5 ms.
        let results: Vec<Result<(), io::Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = files
                .iter()
                .map(|f| s.spawn(|| write_procs(f, &value)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(io::Error::other("writer panicked")))
                })
                .collect()
        });
        for (f, r) in files.into_iter().zip(results) {
            r.map_err(|source| CgroupError::Write {
                path: f.clone(),
                value: value.clone(),
                source,
            })?;
            self.writes.push((f, value.clone()));
        }
        Ok(())
    }

    /// v1: the `tasks` file of every hierarchy, for the container's first process to write "0"
    /// into: a single thread moving itself skips the global `cgroup_threadgroup_rwsem`
    /// (kernel/cgroup/cgroup.c, cgroup_procs_write_start: "If we migrate a single thread, we
    /// don't care about threadgroup stability ... we can skip the global lock"). Taking that lock
    /// for writing waits for an RCU grace period, 7 ms per hierarchy here; the self-move costs
    /// 0.05 ms. v2 has no per-thread file outside threaded cgroups, so it returns nothing and the
    /// parent writes `cgroup.procs` ([`Cgroup::add_process`]).
    pub fn self_join_files(&self) -> Vec<PathBuf> {
        match self.version {
            Version::V1 => self.dirs.iter().map(|d| d.path.join("tasks")).collect(),
            Version::V2 => Vec::new(),
        }
    }

    /// v2: the directory a process can be started in with clone3(CLONE_INTO_CGROUP)
    /// (cgroup-v2.rst: the migration is then part of fork, and no process is ever moved).
    pub fn clone_into_dir(&self) -> Option<&Path> {
        match self.version {
            Version::V2 => self.dirs.first().map(|d| d.path.as_path()),
            Version::V1 => None,
        }
    }

    /// Pids currently in the cgroup (union over v1 hierarchies).
    pub fn procs(&self) -> Vec<i32> {
        let mut all = BTreeSet::new();
        for d in &self.dirs {
            all.extend(read_procs(&d.path));
        }
        all.into_iter().collect()
    }

    /// Whether the kernel's OOM killer killed a process of this cgroup because
    /// of its memory limit. v2: `memory.events` `oom_kill` (cgroup-v2.rst).
    /// v1: `memory.oom_control` `oom_kill` (Linux ≥ 4.13); on older kernels
    /// `memory.failcnt` > 0 (the limit was hit) as an approximation.
    pub fn oom_killed(&self) -> bool {
        let Some(dir) = self.dir_for(Controller::Memory) else {
            return false;
        };
        let key = |file: &str, key: &str| -> Option<u64> {
            let text = fs::read_to_string(dir.join(file)).ok()?;
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        match self.version {
            Version::V2 => key("memory.events", "oom_kill").unwrap_or(0) > 0,
            Version::V1 => match key("memory.oom_control", "oom_kill") {
                Some(n) => n > 0,
                None => read_u64(&dir.join("memory.failcnt")).unwrap_or(0) > 0,
            },
        }
    }

    /// Resource usage. Read directly rather than via cgroups-rs, whose stat
    /// structs turn absent files into 0 (we report `None`).
    pub fn stats(&self) -> Stats {
        let mut s = Stats::default();
        match self.version {
            Version::V1 => {
                if let Some(d) = self.dir_for(Controller::Memory) {
                    s.peak_memory_bytes = read_u64(&d.join("memory.max_usage_in_bytes"));
                }
                if let Some(d) = self.dir_for(Controller::Cpuacct) {
                    s.cpu_time = read_u64(&d.join("cpuacct.usage")).map(Duration::from_nanos);
                }
            }
            Version::V2 => {
                if let Some(d) = self.dirs.first() {
                    s.peak_memory_bytes = read_u64(&d.path.join("memory.peak"));
                    s.cpu_time = fs::read_to_string(d.path.join("cpu.stat"))
                        .ok()
                        .and_then(|t| {
                            t.lines().find_map(|l| {
                                l.strip_prefix("usage_usec ")
                                    .and_then(|v| v.trim().parse().ok())
                                    .map(Duration::from_micros)
                            })
                        });
                    s.pids_peak = read_u64(&d.path.join("pids.peak"));
                }
            }
        }
        if let Some(d) = self.dir_for(Controller::Pids) {
            s.pids_current = read_u64(&d.join("pids.current"));
        }
        s
    }

    // ---- removal --------------------------------------------------------

    /// Kills whatever is still in the cgroup and removes its directories.
    /// `rmdir` is retried while it fails with EBUSY for up to ~2 s: a cgroup
    /// whose tasks just died stays busy until the kernel has finished tearing
    /// them down.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.teardown()
    }

    /// Gives up ownership without removing anything (the cgroup outlives this
    /// process; `gc_stale` or a later `remove` must clean it up).
    pub fn keep(mut self) -> Vec<PathBuf> {
        self.done = true;
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    fn teardown(&mut self) -> Result<(), CgroupError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        self.kill_all(deadline);
        let mut first_err = None;
        let paths: Vec<PathBuf> = self.dirs.iter().rev().map(|d| d.path.clone()).collect();
        // In order (v2 paths may nest). An empty cgroup's rmdir takes ~0.05 ms here, less than
        // spawning a thread per v1 hierarchy would.
        let results: Vec<io::Result<()>> = paths.iter().map(|p| rmdir_retry(p, deadline)).collect();
        for (p, r) in paths.into_iter().zip(results) {
            if let Err(e) = r {
                warn!(path = %p.display(), error = %e, "cgroup removal failed");
                first_err.get_or_insert(CgroupError::Remove { path: p, source: e });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// v2 with `cgroup.kill` (Linux ≥ 5.14): one write kills the whole
    /// subtree (cgroup-v2.rst, "cgroup.kill"). Otherwise SIGKILL every pid in
    /// `cgroup.procs`, repeatedly, since a forking process can add new ones.
    fn kill_all(&mut self, deadline: Instant) {
        let mut used_kill_file = false;
        loop {
            let pids = self.procs();
            if pids.is_empty() || Instant::now() >= deadline {
                if !pids.is_empty() {
                    warn!(?pids, "processes still in cgroup after SIGKILL");
                }
                return;
            }
            let kill_file = self.dirs.first().map(|d| d.path.join("cgroup.kill"));
            match kill_file {
                Some(f) if self.version == Version::V2 && f.exists() && !used_kill_file => {
                    used_kill_file = true;
                    if let Err(e) = self.write_file(&f, "1") {
                        warn!(error = %e, "cgroup.kill failed, falling back to kill(2)");
                    }
                }
                _ => {
                    for pid in pids {
                        if pid > 0 {
                            // ESRCH (already gone) is fine.
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // ---- write helpers --------------------------------------------------

    /// Direct write of one value to a cgroup file, recorded.
    fn write_file(&mut self, path: &Path, value: &str) -> Result<(), CgroupError> {
        let res = write_value(path, value);
        match res {
            Ok(()) => {
                self.writes.push((path.to_path_buf(), value.to_string()));
                Ok(())
            }
            Err(source) => Err(CgroupError::Write {
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            }),
        }
    }

    /// Runs a cgroups-rs setter that writes `value` to `dir/file`, records it
    /// and maps its error to ours (full path, the OS error).
    fn cg_write(
        &mut self,
        dir: &Path,
        file: &str,
        value: String,
        f: impl FnOnce() -> cgroups_rs::error::Result<()>,
    ) -> Result<(), CgroupError> {
        let path = dir.join(file);
        match f() {
            Ok(()) => {
                self.writes.push((path, value));
                Ok(())
            }
            Err(e) => Err(CgroupError::Write {
                path,
                value,
                source: io_cause(&e),
            }),
        }
    }
}

impl Drop for Cgroup {
    /// Safety net for early returns and panics; `remove` is the main path.
    fn drop(&mut self) {
        if !self.done && std::process::id() == self.owner_pid {
            if let Err(e) = self.teardown() {
                warn!(error = %e, "cgroup cleanup on drop failed");
            }
        }
    }
}

/// Extracts the OS error from a cgroups-rs error (it boxes the io::Error).
fn io_cause(e: &cgroups_rs::error::Error) -> io::Error {
    let src = std::error::Error::source(e);
    if let Some(io) = src.and_then(|s| s.downcast_ref::<io::Error>()) {
        if let Some(code) = io.raw_os_error() {
            return io::Error::from_raw_os_error(code);
        }
        return io::Error::new(io.kind(), io.to_string());
    }
    io::Error::other(e.to_string())
}

// ---- planning: where the cgroup goes ---------------------------------------

fn limit_name(c: Controller) -> &'static str {
    match c {
        Controller::Memory => "--memory/--memory-swap",
        Controller::Pids => "--pids-limit",
        Controller::Cpu => "--cpus/--cpu-shares",
        Controller::Cpuacct => "CPU accounting",
        Controller::Cpuset => "--cpuset-cpus",
        Controller::Devices => "the device policy (rcrun runs no container as root without one)",
    }
}

/// v1: one target per mounted hierarchy (co-mounted controllers such as
/// `cpu,cpuacct` share one directory and are joined once).
fn plan_v1(fs: &CgroupFs, l: &Limits) -> Result<Vec<V1Target>, CgroupError> {
    let required = l.required();
    let mut targets: Vec<(DirIdentity, V1Target)> = Vec::new();
    let mut reasons = Vec::new();
    for c in l.wanted(Version::V1) {
        let mount = fs.root.join(c.name());
        let is_required = required.contains(&c);
        if !mount.join("cgroup.procs").is_file() {
            if is_required {
                return Err(CgroupError::MissingController {
                    controller: c,
                    path: mount,
                    needed_for: limit_name(c),
                });
            }
            continue;
        }
        let canon = dir_identity(&mount);
        if let Some((_, t)) = targets.iter_mut().find(|(k, _)| *k == canon) {
            t.controllers.push(c);
            continue;
        }
        let group = if !fs.is_rootless() {
            Some(mount.join(GROUP_DIR))
        } else {
            let conv = mount.join(format!("rcrun-{}", fs.uid));
            let usable = |d: &Path| fs.can_write(d) && fs.can_write(&d.join("cgroup.procs"));
            if conv.is_dir() && usable(&conv) {
                Some(conv)
            } else {
                match fs.own_v1(c) {
                    Some(own) if own != mount && own.is_dir() && usable(&own) => {
                        Some(own.join(GROUP_DIR))
                    }
                    own => {
                        if is_required {
                            reasons.push(format!(
                                "{} is missing or not writable{}",
                                conv.display(),
                                own.map(|o| format!(
                                    " and so is the current cgroup {}",
                                    o.display()
                                ))
                                .unwrap_or_default()
                            ));
                        }
                        None
                    }
                }
            }
        };
        if let Some(group) = group {
            targets.push((
                canon,
                V1Target {
                    controllers: vec![c],
                    mount,
                    group,
                },
            ));
        }
    }
    if !reasons.is_empty() {
        return Err(no_delegation(fs, Version::V1, reasons.join("; ")));
    }
    Ok(targets.into_iter().map(|(_, t)| t).collect())
}

/// v2: the root (as root) or a delegated cgroup (rootless); `None` when
/// rootless without delegation and no limits requested.
fn plan_v2(fs: &CgroupFs, l: &Limits) -> Result<Option<V2Target>, CgroupError> {
    let required = l.required();
    let wanted = l.wanted(Version::V2);
    let available = |d: &Path| -> BTreeSet<String> {
        read_trim(&d.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let enable_for = |avail: &BTreeSet<String>| -> Vec<Controller> {
        wanted
            .iter()
            .copied()
            .filter(|c| avail.contains(c.name()))
            .collect()
    };
    if !fs.is_rootless() {
        let avail = available(&fs.root);
        if let Some(c) = required.iter().find(|c| !avail.contains(c.name())) {
            return Err(CgroupError::MissingController {
                controller: *c,
                path: fs.root.join("cgroup.controllers"),
                needed_for: limit_name(*c),
            });
        }
        // The root cgroup is exempt from the no-internal-processes rule.
        return Ok(Some(V2Target {
            parent: fs.root.clone(),
            enable: enable_for(&avail),
            move_procs: false,
        }));
    }
    let Some(own) = fs.own_v2() else {
        if required.is_empty() {
            return Ok(None);
        }
        return Err(no_delegation(
            fs,
            Version::V2,
            format!(
                "{} has no cgroup v2 entry",
                fs.proc.join("self/cgroup").display()
            ),
        ));
    };
    let mut reason = None;
    let mut cand = Some(own.as_path());
    while let Some(c) = cand.filter(|c| c.starts_with(&fs.root)) {
        let writable = fs.can_write(c)
            && fs.can_write(&c.join("cgroup.procs"))
            && fs.can_write(&c.join("cgroup.subtree_control"));
        if writable {
            let avail = available(c);
            let missing: Vec<Controller> = required
                .iter()
                .copied()
                .filter(|r| !avail.contains(r.name()))
                .collect();
            let has_procs = !read_procs(c).is_empty();
            if !missing.is_empty() {
                reason.get_or_insert(format!(
                    "{} (writable) does not have the {} controller(s) delegated (cgroup.controllers: {:?})",
                    c.display(),
                    names(&missing),
                    avail.iter().cloned().collect::<Vec<_>>().join(" ")
                ));
            } else if has_procs && c != own {
                // Someone else's processes: we must not move them.
                reason.get_or_insert(format!(
                    "{} is writable but holds other processes",
                    c.display()
                ));
            } else {
                return Ok(Some(V2Target {
                    parent: c.to_path_buf(),
                    enable: enable_for(&avail),
                    move_procs: has_procs,
                }));
            }
        }
        if c == fs.root {
            break;
        }
        cand = c.parent();
    }
    if required.is_empty() {
        debug!(own = %own.display(), "no delegated cgroup: running without a cgroup");
        return Ok(None);
    }
    Err(no_delegation(
        fs,
        Version::V2,
        reason.unwrap_or_else(|| {
            format!(
                "neither the current cgroup {} nor any parent of it is writable",
                own.display()
            )
        }),
    ))
}

/// Builds the NoDelegation error with the exact commands to fix it.
fn no_delegation(fs: &CgroupFs, version: Version, reason: String) -> CgroupError {
    let uid = fs.uid;
    let root = fs.root.display();
    let hint = match version {
        Version::V1 => format!(
            "To delegate, run once as root: for c in memory pids cpu cpuacct cpuset; do \
             mkdir -p {root}/$c/rcrun-{uid} && chown -R {uid} {root}/$c/rcrun-{uid}; done \
             (or run without resource limits)"
        ),
        Version::V2 => "Run rcrun in a delegated systemd scope: systemd-run --user --scope -p Delegate=yes rcrun <arguments>; \
             for --cpus/--cpuset-cpus also delegate those controllers to user sessions, as root: \
             mkdir -p /etc/systemd/system/user@.service.d && \
             printf '[Service]\\nDelegate=cpu cpuset io memory pids\\n' > /etc/systemd/system/user@.service.d/delegate.conf && \
             systemctl daemon-reload, then log in again (or run without resource limits)"
            .to_string(),
    };
    CgroupError::NoDelegation {
        version,
        uid,
        reason,
        hint,
    }
}

// ---- stale cleanup --------------------------------------------------------

/// Removes rcrun container cgroups that hold no process (left behind by runs
/// that were SIGKILLed) and returns the removed directories.
///
/// `rootless_uid`: `None` scans the root layout (`<controller>/rcrun/*`,
/// `rcrun/*`); `Some(uid)` the rootless ones (v1 `<controller>/rcrun-<uid>/*`
/// and `<current cgroup>/rcrun/*`; v2 `rcrun/*` in the current cgroup and its
/// ancestors). A cgroup whose name carries a live owner ([`owned_name`]) is
/// in use or about to be (created, container not yet inside) and is kept.
pub fn gc_stale(fs: &CgroupFs, rootless_uid: Option<u32>) -> Vec<PathBuf> {
    gc_stale_older_than(fs, rootless_uid, Duration::ZERO)
}

/// The rcrun process that made a container cgroup, named in the cgroup's directory name
/// ([`owned_name`]): its pid and its start time in clock ticks after boot (field 22 of
/// /proc/PID/stat), which tells a live owner from a recycled pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start: start_time(&fs::read_to_string("/proc/self/stat").ok()?)?,
        })
    }

    /// Whether the owner still runs. Unknown (no /proc to read) counts as alive: a sweep must
    /// never remove a neighbour's cgroup.
    pub fn alive(&self, proc: &Path) -> bool {
        match fs::read_to_string(proc.join(self.pid.to_string()).join("stat")) {
            Ok(stat) => start_time(&stat) == Some(self.start),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(_) => true,
        }
    }
}

/// Field 22 (`starttime`) of a /proc/PID/stat line; the command name in parentheses may itself
/// hold spaces and parentheses, so fields are counted after the last ')' (proc_pid_stat(5)).
fn start_time(stat: &str) -> Option<u64> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// The cgroup directory name for container `id` made by `owner`: `<id>-<pid>-<start>`. A run
/// killed before it removed its cgroup leaves one whose owner is gone, which the next run's sweep
/// removes at once; a cgroup whose owner lives (a neighbour starting right now, its container not
/// yet inside) is never touched.
pub fn owned_name(id: &str, owner: Option<Owner>) -> String {
    match owner {
        Some(o) => format!("{id}-{}-{}", o.pid, o.start),
        None => id.to_string(),
    }
}

fn owner_in_name(name: &str) -> Option<Owner> {
    let mut parts = name.rsplitn(3, '-');
    let start = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(Owner { pid, start })
}

/// [`gc_stale`], where cgroups without an owner in their name (made by older rcrun versions) must
/// also be at least `min_age` old. A concurrent `rcrun run`
/// creates its cgroup a moment before adding its process, so a sweep on the start path must
/// leave young empty cgroups alone or it deletes a neighbour's.
pub fn gc_stale_older_than(
    fs: &CgroupFs,
    rootless_uid: Option<u32>,
    min_age: Duration,
) -> Vec<PathBuf> {
    let mut groups: Vec<PathBuf> = Vec::new();
    match fs.version() {
        None => return vec![],
        Some(Version::V1) => {
            for c in [
                Controller::Memory,
                Controller::Pids,
                Controller::Cpu,
                Controller::Cpuacct,
                Controller::Cpuset,
                Controller::Devices,
            ] {
                let mount = fs.root.join(c.name());
                match rootless_uid {
                    None => groups.push(mount.join(GROUP_DIR)),
                    Some(uid) => {
                        groups.push(mount.join(format!("rcrun-{uid}")));
                        if let Some(own) = fs.own_v1(c).filter(|o| *o != mount) {
                            groups.push(own.join(GROUP_DIR));
                        }
                    }
                }
            }
        }
        Some(Version::V2) => match rootless_uid {
            None => groups.push(fs.root.join(GROUP_DIR)),
            Some(_) => {
                let mut cand = fs.own_v2();
                while let Some(c) = cand.filter(|c| c.starts_with(&fs.root)) {
                    groups.push(c.join(GROUP_DIR));
                    cand = c.parent().map(Path::to_path_buf);
                }
            }
        },
    }
    let mut seen = BTreeSet::new();
    let mut removed = Vec::new();
    for g in groups {
        if !seen.insert(dir_identity(&g)) {
            continue;
        }
        let Ok(entries) = fs::read_dir(&g) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for d in dirs {
            let owner = d
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(owner_in_name);
            let skip = match owner {
                // Its rcrun runs: in use, or about to be (the container not in it yet).
                Some(o) if o.alive(&fs.proc) => true,
                // Its rcrun is gone: stale however young, once empty.
                Some(_) => false,
                // No owner in the name (made by an older rcrun): only when old enough.
                None => fs::metadata(&d)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age < min_age),
            };
            if skip || !subtree_procs_empty(&d) {
                continue;
            }
            // Short deadline: a stale cgroup is not busy; one that is gets
            // picked up by the next gc.
            match rmdir_retry(&d, Instant::now() + Duration::from_millis(200)) {
                Ok(()) => removed.push(d),
                Err(e) => debug!(path = %d.display(), error = %e, "gc: cannot remove"),
            }
        }
    }
    removed
}

fn subtree_procs_empty(d: &Path) -> bool {
    if !read_procs(d).is_empty() {
        return false;
    }
    fs::read_dir(d)
        .map(|es| {
            es.flatten()
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .all(|e| subtree_procs_empty(&e.path()))
        })
        .unwrap_or(true)
}

// ---- small fs helpers -----------------------------------------------------

fn mkdir(path: &Path, exist_ok: bool) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if exist_ok {
                Ok(())
            } else {
                Err(CgroupError::Exists {
                    path: path.to_path_buf(),
                })
            }
        }
        Err(source) => Err(CgroupError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What makes two paths the same directory: device and inode (co-mounted v1 controllers such as
/// cpu and cpuacct are symlinks to one hierarchy). One stat, where canonicalize(3) reads every
/// component's link; a path that cannot be stat'ed stands for itself.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DirIdentity {
    Inode(u64, u64),
    Path(PathBuf),
}

fn dir_identity(p: &Path) -> DirIdentity {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(p) {
        Ok(m) => DirIdentity::Inode(m.dev(), m.ino()),
        Err(_) => DirIdentity::Path(p.to_path_buf()),
    }
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn read_u64(p: &Path) -> Option<u64> {
    read_trim(p)?.parse().ok()
}

fn read_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn is_cgroupfs(p: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    statfs(p)
        .map(|s| {
            let t = s.filesystem_type();
            t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
        })
        .unwrap_or(false)
}

/// Removes a cgroup directory: nested cgroups first (a container may have
/// made some), retrying EBUSY until `deadline`. A missing directory is fine.
fn rmdir_retry(dir: &Path, deadline: Instant) -> io::Result<()> {
    loop {
        match rmdir_tree(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

fn rmdir_tree(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)?.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            rmdir_tree(&e.path())?;
        }
    }
    match fs::remove_dir(dir) {
        // On cgroupfs rmdir succeeds despite the control files. ENOTEMPTY
        // there means nested cgroups (handled above); elsewhere it is a mock
        // tree from the tests, whose plain files we delete first.
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) && !is_cgroupfs(dir) => {
            for f in fs::read_dir(dir)?.flatten() {
                if f.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    fs::remove_file(f.path())?;
                }
            }
            fs::remove_dir(dir)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests_bpf_attach;
#[cfg(test)]
mod tests_mock;
#[cfg(test)]
mod tests_real;

/// Writes a value into a cgroup file. No O_CREAT on a real cgroupfs: its files always exist and a
/// missing one means the controller is not enabled, which must be an error. Elsewhere (a mock tree
/// in tests) the file is created like a kernel would have.
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    let mock = !path.parent().is_some_and(is_cgroupfs);
    fs::OpenOptions::new()
        .write(true)
        .create(mock)
        .truncate(mock)
        .open(path)
        .and_then(|mut f| io::Write::write_all(&mut f, value.as_bytes()))
}

/// Moves `pid` into a cgroup. EINVAL can mean the task is still being forked (TASK_NEW); runc
/// retries the same way.
fn write_procs(path: &Path, value: &str) -> io::Result<()> {
    let mut tries = 0;
    loop {
        match write_value(path, value) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
            r => return r,
        }
    }
}
