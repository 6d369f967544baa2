//! An OCI `cgroup` mount (podman and containerd put one at /sys/fs/cgroup): the container's own
//! cgroups, seen through its cgroup namespace, which rcrun unshared after joining them (so each
//! hierarchy's root is the container's cgroup, as with docker).
//!
//! * cgroup v2: one `cgroup2` mount.
//! * cgroup v1: a tmpfs holding one `cgroup` mount per hierarchy the host has, named as on the
//!   host (`memory`, `cpu,cpuacct`, `name=systemd` as `systemd`), with the host's links
//!   (`cpu` → `cpu,cpuacct`); read-only afterwards when asked. Only the hierarchies the
//!   container joined: in the others its cgroup namespace is rooted at rcrun's own cgroup, often
//!   the host's root, and a mount there would show every cgroup of the host (docker binds the
//!   container's own directories for the same reason). In a user namespace the kernel
//!   refuses cgroup v1 mounts (the file system is not FS_USERNS_MOUNT), so the host's
//!   /sys/fs/cgroup is bound read-only instead, as podman does rootless.

use super::{fail, Failure};
use crate::sys::mount::{self as sm, Create};
use nix::mount::MsFlags;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

/// One v1 hierarchy of the host: its directory name under /sys/fs/cgroup and mount options.
struct Hierarchy {
    dir: String,
    options: String,
}

/// The host's v1 hierarchies under /sys/fs/cgroup, from /proc/self/mountinfo (still the
/// host's: this runs before pivot_root).
fn host_hierarchies() -> Vec<Hierarchy> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split(' ');
            if r.next()? != "cgroup" {
                return None;
            }
            let _source = r.next()?;
            let super_opts = r.next()?;
            let point = left.split(' ').nth(4)?;
            let dir = point.strip_prefix("/sys/fs/cgroup/")?;
            if dir.contains('/') {
                return None;
            }
            // The controllers (or name=…) from the super options, as mount(2) wants them.
            let options: Vec<&str> = super_opts
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                .collect();
            Some(Hierarchy {
                dir: dir.to_string(),
                options: options.join(","),
            })
        })
        .collect()
}

pub(super) fn mount_cgroup_tree(
    root: BorrowedFd<'_>,
    target: &str,
    read_only: bool,
    in_userns: bool,
    joined_v1_tasks: &[std::path::PathBuf],
) -> Result<(), Failure> {
    let f = |e: nix::Error| fail(&format!("mount the cgroup file system at {target}"), e);
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let ro = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    let t = sm::mountpoint(root, target, Create::Dir)
        .map_err(f)?
        .expect("created");
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return sm::mount_at(
            Some(Path::new("cgroup2")),
            t.as_fd(),
            Some("cgroup2"),
            base | ro,
            None,
        )
        .map_err(f);
    }
    let joined: Vec<(Hierarchy, &Path)> = host_hierarchies()
        .into_iter()
        .filter_map(|h| {
            let dir = Path::new("/sys/fs/cgroup").join(&h.dir);
            let own = joined_v1_tasks.iter().find(|t| t.starts_with(&dir))?;
            Some((h, own.parent()?))
        })
        .collect();
    if in_userns && joined.is_empty() {
        // Nothing of its own to show (rootless without a delegated cgroup): the host's tree,
        // read-only, as runc and podman give a rootless container.
        sm::mount_at(
            Some(Path::new("/sys/fs/cgroup")),
            t.as_fd(),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(f)?;
        // Re-resolve: the fd still refers to the covered mount point.
        let t = sm::mountpoint(root, target, Create::Nothing)
            .map_err(f)?
            .expect("exists");
        return sm::make_tree_readonly(t.as_fd()).map_err(f);
    }
    sm::mount_at(
        Some(Path::new("tmpfs")),
        t.as_fd(),
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(f)?;
    for (h, own) in &joined {
        let sub = format!("{}/{}", target.trim_end_matches('/'), h.dir);
        let d = sm::mountpoint(root, &sub, Create::Dir)
            .map_err(f)?
            .expect("created");
        if in_userns {
            // The kernel refuses a cgroup v1 mount in a user namespace (not FS_USERNS_MOUNT):
            // the container's own directory of the hierarchy is bound there instead.
            sm::mount_at(Some(own), d.as_fd(), None, MsFlags::MS_BIND, None)
                .map_err(|e| fail(&format!("bind {} at {sub}", own.display()), e))?;
            let d = sm::mountpoint(root, &sub, Create::Nothing)
                .map_err(f)?
                .expect("exists");
            if read_only {
                sm::make_tree_readonly(d.as_fd()).map_err(f)?;
            }
            continue;
        }
        sm::mount_at(
            Some(Path::new("cgroup")),
            d.as_fd(),
            Some("cgroup"),
            base | ro,
            Some(&h.options),
        )
        .map_err(|e| fail(&format!("mount cgroup ({}) at {sub}", h.options), e))?;
    }
    let hierarchies: Vec<Hierarchy> = joined.into_iter().map(|(h, _)| h).collect();
    // The host's links for co-mounted controllers: cpu → cpu,cpuacct.
    let tree = sm::mountpoint(root, target, Create::Nothing)
        .map_err(f)?
        .expect("exists");
    for h in hierarchies.iter().filter(|h| h.dir.contains(',')) {
        for name in h.dir.split(',') {
            match nix::unistd::symlinkat(h.dir.as_str(), tree.as_fd(), name) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(f(e)),
            }
        }
    }
    if read_only {
        sm::mount_at(
            None,
            tree.as_fd(),
            None,
            MsFlags::MS_REMOUNT | base | MsFlags::MS_RDONLY,
            Some("mode=755"),
        )
        .map_err(f)?;
    }
    Ok(())
}
