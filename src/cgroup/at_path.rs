//! A container's cgroup at an OCI `linux.cgroupsPath`, the place engines choose
//! (containerd: `/default/<id>`, kubelet: `/kubepods/…/pod<uid>/<id>`, podman:
//! `/libpod_parent/libpod-<id>`), instead of rcrun's own `rcrun/<id>`.
//!
//! runtime-spec config-linux.md, "Control groups": an absolute path is taken relative to the
//! cgroups mount point; a relative one "MAY" be interpreted relative to a runtime-determined
//! location: rcrun, as runc, takes it relative to its own cgroup in each hierarchy.

use std::io;
use std::path::{Component, Path, PathBuf};

use tracing::debug;

use super::fsutil::*;
use super::*;

/// A checked `cgroupsPath`: whether it is absolute, and its components (no `..`, no `.`).
fn check_path(path: &str) -> Result<(bool, PathBuf), CgroupError> {
    let bad = |reason| CgroupError::BadPath {
        path: path.to_string(),
        reason,
    };
    if path.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let mut rel = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => rel.push(n),
            Component::ParentDir => {
                return Err(bad("'..' would leave the cgroup hierarchy"));
            }
            Component::Prefix(_) => return Err(bad("not a Linux path")),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(bad("it names no directory below the hierarchy's root"));
    }
    Ok((path.starts_with('/'), rel))
}

/// Errors a rootless start may run past when no limit needs the cgroup (runc's rootless rule:
/// without resources, a cgroup it may not make is no reason to fail).
fn is_permission_problem(e: &CgroupError) -> bool {
    let errno = match e {
        CgroupError::Create { source, .. } | CgroupError::Write { source, .. } => {
            source.raw_os_error()
        }
        _ => None,
    };
    matches!(
        errno,
        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::EBUSY)
    )
}

impl Cgroup {
    /// Creates the container's cgroup at `cgroups_path` (see the module text) and writes the
    /// limits. Directories missing on the way are made and later removed with it; an existing
    /// leaf is joined and left in place. `Ok(None)`: `unprivileged` (rootless, or root of a
    /// user namespace such as `unshare -Ur`), the path cannot be made and no limit needs it.
    pub fn create_at(
        fs: &CgroupFs,
        id: &str,
        cgroups_path: &str,
        limits: &Limits,
        unprivileged: bool,
    ) -> Result<Option<Cgroup>, CgroupError> {
        let (absolute, rel) = check_path(cgroups_path)?;
        let Some(mut cg) = Cgroup::empty(fs, id, limits)? else {
            return Ok(None);
        };
        let version = cg.version;
        let made = match version {
            Version::V1 => cg.make_v1_at(fs, absolute, &rel, limits),
            Version::V2 => cg.make_v2_at(fs, absolute, &rel, limits),
        };
        if let Err(e) = made {
            if unprivileged && limits.required().is_empty() && is_permission_problem(&e) {
                debug!(error = %e, "rootless: no cgroup at linux.cgroupsPath, and no limit needs one");
                return Ok(None);
            }
            return Err(e);
        }
        if cg.dirs.is_empty() {
            return Ok(None);
        }
        cg.apply(limits)?;
        debug!(id, %version, dirs = ?cg.paths(), "cgroup created at linux.cgroupsPath");
        Ok(Some(cg))
    }

    /// Makes `leaf` and whatever is missing between `top` and it; returns whether the leaf is
    /// new. A directory that appears meanwhile (another container under the same parent) is
    /// fine.
    fn make_dirs(&mut self, top: &Path, leaf: &Path) -> Result<bool, CgroupError> {
        let Ok(below) = leaf.strip_prefix(top) else {
            return Err(CgroupError::Create {
                path: leaf.to_path_buf(),
                source: io::Error::other("outside the hierarchy"),
            });
        };
        let mut dir = top.to_path_buf();
        let mut leaf_new = false;
        for c in below.components() {
            dir.push(c);
            match std::fs::create_dir(&dir) {
                Ok(()) if dir == leaf => leaf_new = true,
                Ok(()) => self.parents_made.push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(CgroupError::Create { path: dir, source });
                }
            }
        }
        Ok(leaf_new)
    }

    fn make_v1_at(
        &mut self,
        fs: &CgroupFs,
        absolute: bool,
        rel: &Path,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        let required = limits.required();
        let mut seen: Vec<(DirIdentity, usize)> = Vec::new();
        for c in limits.wanted(Version::V1) {
            let mount = fs.root.join(c.name());
            if !mount.join("cgroup.procs").is_file() {
                if required.contains(&c) {
                    return Err(CgroupError::MissingController {
                        controller: c,
                        path: mount,
                        needed_for: placement::limit_name(c),
                    });
                }
                continue;
            }
            // Co-mounted controllers (cpu,cpuacct) share one directory.
            let identity = dir_identity(&mount);
            if let Some((_, i)) = seen.iter().find(|(k, _)| *k == identity) {
                self.dirs[*i].controllers.push(c);
                continue;
            }
            let base = if absolute {
                mount.clone()
            } else {
                fs.own_v1(c)
                    .filter(|own| own.starts_with(&mount))
                    .unwrap_or_else(|| mount.clone())
            };
            let leaf = base.join(rel);
            let owned = self.make_dirs(&mount, &leaf)?;
            seen.push((identity, self.dirs.len()));
            self.dirs.push(CgDir {
                controllers: vec![c],
                mount: mount.clone(),
                path: leaf.clone(),
                owned,
            });
            if c == Controller::Cpuset {
                self.init_cpuset(&leaf, &mount)?;
            }
        }
        Ok(())
    }

    fn make_v2_at(
        &mut self,
        fs: &CgroupFs,
        absolute: bool,
        rel: &Path,
        limits: &Limits,
    ) -> Result<(), CgroupError> {
        let avail: BTreeSet<String> = read_trim(&fs.root.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if let Some(c) = limits
            .required()
            .into_iter()
            .find(|c| !avail.contains(c.v2_name()))
        {
            return Err(CgroupError::MissingController {
                controller: c,
                path: fs.root.join("cgroup.controllers"),
                needed_for: placement::limit_name(c),
            });
        }
        let enable: Vec<Controller> = limits
            .wanted(Version::V2)
            .into_iter()
            .filter(|c| avail.contains(c.v2_name()))
            .collect();
        let base = if absolute {
            fs.root.clone()
        } else {
            fs.own_v2()
                .filter(|own| own.starts_with(&fs.root))
                .unwrap_or_else(|| fs.root.clone())
        };
        let leaf = base.join(rel);
        // Controllers are enabled top-down in every ancestor's cgroup.subtree_control before
        // its child is made (cgroup-v2.rst, "Enabling and Disabling": a controller is
        // available in a cgroup only if its parent enables it).
        let below = leaf.strip_prefix(&fs.root).unwrap_or(rel).to_path_buf();
        let mut dir = fs.root.clone();
        let mut owned = false;
        for c in below.components() {
            let on = read_trim(&dir.join("cgroup.subtree_control")).unwrap_or_default();
            let missing: Vec<String> = enable
                .iter()
                .filter(|c| !on.split_whitespace().any(|n| n == c.v2_name()))
                .map(|c| format!("+{}", c.v2_name()))
                .collect();
            if !missing.is_empty() {
                self.write_file(&dir.join("cgroup.subtree_control"), &missing.join(" "))?;
            }
            let child = dir.join(c);
            owned = self.make_dirs(&dir, &child)?;
            if owned && child != leaf {
                // make_dirs took it for the leaf.
                self.parents_made.push(child.clone());
            }
            dir = child;
        }
        self.dirs.push(CgDir {
            controllers: enable,
            mount: fs.root.clone(),
            path: leaf,
            owned,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_path;

    #[test]
    fn cgroups_paths_stay_inside_the_hierarchy() {
        assert_eq!(
            check_path("/default/abc").unwrap(),
            (true, "default/abc".into())
        );
        assert_eq!(
            check_path("testdir/cgrouptest/container").unwrap(),
            (false, "testdir/cgrouptest/container".into())
        );
        assert!(check_path("/a/../../etc").is_err());
        assert!(check_path("/").is_err());
        assert!(check_path("a\0b").is_err());
    }
}
