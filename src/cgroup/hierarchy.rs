//! Where the cgroup filesystem and procfs are, and who we are ([`CgroupFs`]).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::types::*;

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
    pub(super) writable: WritableCheck,
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

    pub(super) fn can_write(&self, p: &Path) -> bool {
        (self.writable)(p)
    }

    /// Parses `<proc>/self/cgroup`: (controller list, path) per line.
    pub(super) fn self_cgroups(&self) -> Vec<(Vec<String>, String)> {
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
    pub(super) fn own_v2(&self) -> Option<PathBuf> {
        self.self_cgroups()
            .into_iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| join_rel(&self.root, &p))
    }

    /// Own v1 cgroup directory for a controller (`N:cpu,cpuacct:/path`).
    pub(super) fn own_v1(&self, c: Controller) -> Option<PathBuf> {
        self.self_cgroups()
            .into_iter()
            .find(|(cs, _)| cs.iter().any(|n| n == c.name()))
            .map(|(_, p)| join_rel(&self.root.join(c.name()), &p))
    }
}

/// `base` joined with an absolute cgroup path from /proc/self/cgroup.
pub(super) fn join_rel(base: &Path, p: &str) -> PathBuf {
    let rel = p.trim_start_matches('/');
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}
