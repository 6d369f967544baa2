//! Removing the cgroups of runs that were killed before they could clean up.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fsutil::*;
use super::hierarchy::*;
use super::types::*;
use tracing::debug;

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
pub(super) fn start_time(stat: &str) -> Option<u64> {
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

pub(super) fn owner_in_name(name: &str) -> Option<Owner> {
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
    gc_stale_beside(fs, rootless_uid, min_age, &[])
}

/// [`gc_stale_older_than`] for a run that has made its own cgroup directories (`own`): a group
/// directory whose subdirectories can only be those is not listed at all. Its link count says
/// how many it has: 2 + subdirectories on kernfs (kernfs_refresh_inode), as on ext4 and tmpfs;
/// a link count below 2 (file systems that do not count) means "unknown" and it is listed.
/// Without leftovers, the usual case, the start path's sweep is then one stat per hierarchy
/// instead of a listing plus a /proc read per container cgroup (~0.2 ms of rcrun's time here,
/// on a CPU the child and the network namespace holder also want).
pub fn gc_stale_beside(
    fs: &CgroupFs,
    rootless_uid: Option<u32>,
    min_age: Duration,
    own: &[&Path],
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
                Controller::Freezer,
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
        use std::os::unix::fs::MetadataExt;
        let (identity, meta) = dir_identity_and_metadata(&g);
        if !seen.insert(identity) {
            continue;
        }
        let Some(meta) = meta else {
            continue; // no such group directory: nothing was ever made there
        };
        let own_here = own
            .iter()
            .filter(|p| p.parent() == Some(g.as_path()))
            .count();
        if meta.nlink() >= 2 && meta.nlink() - 2 <= own_here as u64 {
            continue; // only this run's own directories (or none) below it
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

pub(super) fn subtree_procs_empty(d: &Path) -> bool {
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
