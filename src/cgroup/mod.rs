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
mod spec;

pub use spec::from_spec;

pub use parse::{cpu_shares_to_weight, format_size, parse_cpus, parse_cpuset, parse_size};

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::cpuset::CpuSetController;
use tracing::{debug, warn};

mod apply;
mod at_path;
mod fsutil;
mod hierarchy;
mod limits;
mod placement;
mod stale;
mod types;

#[allow(unused_imports)]
use fsutil::*;
pub use hierarchy::*;
pub use limits::*;
pub use placement::move_process;
#[allow(unused_imports)]
use placement::*;
pub use stale::*;
pub use types::*;

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
    /// rcrun made this directory (and so kills what is in it and removes it at the end); an
    /// OCI `cgroupsPath` may name one that exists already, which is joined and left in place.
    owned: bool,
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
    /// Directories made on the way to a `cgroupsPath` leaf, in creation order (top first):
    /// removed after the leaves when empty.
    parents_made: Vec<PathBuf>,
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
        let Some(mut cg) = Cgroup::empty(fs, id, limits)? else {
            return Ok(None);
        };
        let version = cg.version;
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

    /// A cgroup with no directory yet, once the limits are checked against the cgroup file
    /// system: None without one when no limit needs it (the container then runs without).
    fn empty(fs: &CgroupFs, id: &str, limits: &Limits) -> Result<Option<Cgroup>, CgroupError> {
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
        limits.check_version(version)?;
        Ok(Some(Cgroup {
            version,
            id: id.to_string(),
            dirs: Vec::new(),
            writes: Vec::new(),
            memory_limit: limits.memory,
            owner_pid: std::process::id(),
            done: false,
            parents_made: Vec::new(),
        }))
    }

    /// Takes over the cgroup directories an earlier rcrun process made (`rcrun create` exits
    /// and leaves them to `rcrun delete`): `remove` then kills what is left and removes them.
    /// `removable` is what [`Cgroup::removable`] said then (`None`: every path, nothing else).
    pub fn adopt(
        version: Version,
        id: &str,
        paths: Vec<PathBuf>,
        removable: Option<Vec<PathBuf>>,
    ) -> Cgroup {
        let owned = |p: &PathBuf| removable.as_ref().is_none_or(|r| r.contains(p));
        let dirs: Vec<CgDir> = paths
            .iter()
            .map(|p| {
                let (controllers, mount) = controllers_of(version, p);
                CgDir {
                    controllers,
                    mount,
                    path: p.clone(),
                    owned: owned(p),
                }
            })
            .collect();
        // removable lists parents deepest first; parents_made is top first.
        let parents_made = removable
            .unwrap_or_default()
            .into_iter()
            .filter(|p| !paths.contains(p))
            .rev()
            .collect();
        Cgroup {
            version,
            id: id.to_string(),
            dirs,
            writes: Vec::new(),
            memory_limit: None,
            owner_pid: std::process::id(),
            done: false,
            parents_made,
        }
    }

    /// New limits for a running container's cgroup (`rcrun update`): the same writes as at
    /// creation, into the directories [`Cgroup::adopt`] took over.
    pub fn update(&mut self, limits: &Limits) -> Result<(), CgroupError> {
        limits.validate()?;
        limits.check_version(self.version)?;
        if limits.memory.is_some() {
            self.memory_limit = limits.memory;
        }
        self.apply(limits)
    }

    /// What removing this cgroup removes, in order: the leaves rcrun made, then the
    /// directories it made above them, deepest first (for the OCI state, see [`Cgroup::adopt`]).
    pub fn removable(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .filter(|d| d.owned)
            .map(|d| d.path.clone())
            .chain(self.parents_made.iter().rev().cloned())
            .collect()
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
            owned: true,
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
                .filter(|c| !on.contains(c.v2_name()))
                .map(|c| format!("+{}", c.v2_name()))
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
                .any(|c| !on.split_whitespace().any(|n| n == c.v2_name()))
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
            owned: true,
        });
        Ok(())
    }

    // ---- processes ------------------------------------------------------

    /// Moves process `pid` (all its threads) into the cgroup: writes it to
    /// `cgroup.procs` of every directory (v1: one per hierarchy). Call before
    /// the container execs so that all its memory is charged here.
    pub fn add_process(&mut self, pid: i32) -> Result<(), CgroupError> {
        let files = self.procs_files();
        move_process(&files, pid)?;
        let value = pid.to_string();
        self.writes
            .extend(files.into_iter().map(|f| (f, value.clone())));
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// How the container's first process enters this cgroup (the launcher's plan field).
    pub fn join(&self) -> Join {
        Join {
            clone_into: self.clone_into_dir().map(Path::to_path_buf),
            self_join_tasks: self.self_join_files(),
            procs: self.procs_files(),
        }
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

    /// Pids in the directories rcrun made: what `remove` may kill.
    fn owned_procs(&self) -> Vec<i32> {
        let mut all = BTreeSet::new();
        for d in self.dirs.iter().filter(|d| d.owned) {
            all.extend(read_procs(&d.path));
        }
        all.into_iter().collect()
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
                }
            }
        }
        if let Some(d) = self.dir_for(Controller::Pids) {
            s.pids_current = read_u64(&d.join("pids.current"));
            // Read after the container exited, pids.current is 0: the peak (v1 and v2 since
            // Linux 6.13, pids.peak in Documentation/admin-guide/cgroup-v2.rst) is the figure.
            s.pids_peak = read_u64(&d.join("pids.peak"));
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
        let mut first_err = None;
        let paths: Vec<PathBuf> = self
            .dirs
            .iter()
            .rev()
            .filter(|d| d.owned)
            .map(|d| d.path.clone())
            .collect();
        // The common case first: the container's processes are gone and it made no cgroups of its
        // own, so each rmdir(2) succeeds at once; the kernel refuses it (EBUSY) while a process or
        // a child cgroup remains, and a mock tree's plain files refuse it too (ENOTEMPTY). Then
        // no cgroup.procs is read and no directory walked, after the container's exit, before
        // rcrun's. Anything refused takes the full way: kill what is left, remove the subtrees.
        let emptied = paths.iter().all(|p| fs::remove_dir(p).is_ok());
        if !emptied {
            self.kill_all(deadline);
        }
        // In order (v2 paths may nest). An empty cgroup's rmdir takes ~0.05 ms here, less than
        // spawning a thread per v1 hierarchy would. Those removed above are NotFound now: Ok.
        let results: Vec<io::Result<()>> = if emptied {
            Vec::new()
        } else {
            paths.iter().map(|p| rmdir_retry(p, deadline)).collect()
        };
        for (p, r) in paths.into_iter().zip(results) {
            if let Err(e) = r {
                warn!(path = %p.display(), error = %e, "cgroup removal failed");
                first_err.get_or_insert(CgroupError::Remove { path: p, source: e });
            }
        }
        // Parents made on the way to a cgroupsPath: only while empty (another container may
        // live under the same parent by now).
        for p in self.parents_made.iter().rev() {
            match fs::remove_dir(p) {
                Err(e)
                    if e.kind() != io::ErrorKind::NotFound
                        && !matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EBUSY)) =>
                {
                    first_err.get_or_insert(CgroupError::Remove {
                        path: p.clone(),
                        source: e,
                    });
                }
                _ => {}
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
            let pids = self.owned_procs();
            if pids.is_empty() || Instant::now() >= deadline {
                if !pids.is_empty() {
                    warn!(?pids, "processes still in cgroup after SIGKILL");
                }
                return;
            }
            let kill_file = self
                .dirs
                .iter()
                .find(|d| d.owned)
                .map(|d| d.path.join("cgroup.kill"));
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

/// The controllers a cgroup directory stands for, and its hierarchy's mount: v2, all of them at
/// the cgroup root; v1, those named by the hierarchy's directory (`/sys/fs/cgroup/cpu,cpuacct`
/// through the `cpu` link), found by resolving the path.
fn controllers_of(version: Version, dir: &Path) -> (Vec<Controller>, PathBuf) {
    use Controller as C;
    let all = [
        C::Memory,
        C::Pids,
        C::Cpu,
        C::Cpuacct,
        C::Cpuset,
        C::Devices,
        C::Blkio,
        C::Hugetlb,
        C::NetCls,
        C::NetPrio,
        C::Rdma,
        C::Freezer,
    ];
    if version == Version::V2 {
        let mut mount = dir.to_path_buf();
        while let Some(parent) = mount.parent() {
            if !parent.join("cgroup.controllers").exists() {
                break;
            }
            mount = parent.to_path_buf();
        }
        return (all.to_vec(), mount);
    }
    let real = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // The outermost match: a container or cgroupsPath directory may itself be named "memory".
    let mut best = None;
    for a in real.ancestors() {
        let names: Vec<&str> = a
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.split(',').collect())
            .unwrap_or_default();
        let found: Vec<Controller> = all
            .iter()
            .copied()
            .filter(|c| names.contains(&c.name()))
            .collect();
        if !found.is_empty() && a.join("cgroup.procs").exists() {
            best = Some((found, a.to_path_buf()));
        }
    }
    best.unwrap_or_else(|| (Vec::new(), dir.to_path_buf()))
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

#[cfg(test)]
mod tests_accounting;
#[cfg(test)]
mod tests_at_path;
#[cfg(test)]
mod tests_bpf_attach;
#[cfg(test)]
mod tests_mock;
#[cfg(test)]
mod tests_mock_v2;
#[cfg(test)]
mod tests_real;
#[cfg(test)]
mod tests_stale;
