//! Planning where a container's cgroup goes: the v1 hierarchies or the v2 cgroup it is created
//! under, as root or inside a delegated subtree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::fsutil::*;
use super::hierarchy::*;
use super::limits::*;
use super::types::*;
use tracing::debug;

/// A v1 hierarchy the container joins: its mount and the directory under
/// which `<id>` is created.
pub(super) struct V1Target {
    pub(super) controllers: Vec<Controller>,
    pub(super) mount: PathBuf,
    pub(super) group: PathBuf,
}

/// The v2 cgroup under which `rcrun/<id>` is created.
pub(super) struct V2Target {
    pub(super) parent: PathBuf,
    /// Controllers to enable down to the container (subset of available).
    pub(super) enable: Vec<Controller>,
    /// The parent holds processes that must move to a leaf first.
    pub(super) move_procs: bool,
}

// ---- planning: where the cgroup goes ---------------------------------------

pub(super) fn limit_name(c: Controller) -> &'static str {
    match c {
        Controller::Memory => "--memory/--memory-swap",
        Controller::Pids => "--pids-limit",
        Controller::Cpu => "--cpus/--cpu-shares",
        Controller::Cpuacct => "CPU accounting",
        Controller::Cpuset => "--cpuset-cpus",
        Controller::Devices => "the device policy (rcrun runs no container as root without one)",
        Controller::Blkio => "linux.resources.blockIO",
        Controller::Hugetlb => "linux.resources.hugepageLimits",
        Controller::NetCls => "linux.resources.network.classID",
        Controller::NetPrio => "linux.resources.network.priorities",
        Controller::Rdma => "linux.resources.rdma",
        Controller::Freezer => "pause/resume",
    }
}

/// v1: one target per mounted hierarchy (co-mounted controllers such as
/// `cpu,cpuacct` share one directory and are joined once).
pub(super) fn plan_v1(fs: &CgroupFs, l: &Limits) -> Result<Vec<V1Target>, CgroupError> {
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
pub(super) fn plan_v2(fs: &CgroupFs, l: &Limits) -> Result<Option<V2Target>, CgroupError> {
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
            .filter(|c| avail.contains(c.v2_name()))
            .collect()
    };
    if !fs.is_rootless() {
        let avail = available(&fs.root);
        if let Some(c) = required.iter().find(|c| !avail.contains(c.v2_name())) {
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
                .filter(|r| !avail.contains(r.v2_name()))
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
pub(super) fn no_delegation(fs: &CgroupFs, version: Version, reason: String) -> CgroupError {
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

/// Moves process `pid` (all its threads) into a cgroup: writes it to each `cgroup.procs` file
/// (v1: one per hierarchy). Called before the container execs, so that all its memory is charged
/// there.
pub fn move_process(procs_files: &[PathBuf], pid: i32) -> Result<(), CgroupError> {
    let value = pid.to_string();
    // One write per v1 hierarchy, in parallel: each migration waits for an RCU grace period
    // (cgroup_threadgroup_rwsem), ~3 ms here, so four in a row cost ~13 ms on the start path
    // and four at once ~1.5 ms.
    let results: Vec<Result<(), std::io::Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = procs_files
            .iter()
            .map(|f| s.spawn(|| write_procs(f, &value)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")))
            })
            .collect()
    });
    for (f, r) in procs_files.iter().zip(results) {
        r.map_err(|source| CgroupError::Write {
            path: f.clone(),
            value: value.clone(),
            source,
        })?;
    }
    Ok(())
}
