//! The container's root: the overlay of the image's layers on a tmpfs upper dir, the /etc files
//! written into it, every mount of the plan resolved inside the new root, then pivot_root.

use crate::launch::explain::Explain;
use crate::launch::failure::{fail, Failure};
use crate::launch::mounts::{Mnt, MountStep};
use crate::launch::StartupPlan;
use crate::sys::mount::{self as sm, Create};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::unistd::{Gid, Uid};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// tmpfs scratch (upper, work, merged) on the store's run dir, visible only in this mount
/// namespace, then the overlay on `merged`. The tmpfs dies with the namespace: no cleanup.
pub(super) fn mount_rootfs(plan: &StartupPlan, ex: &Explain) -> Result<(PathBuf, bool), Failure> {
    let scratch = &plan.scratch;
    ex.timed("mount", &format!("mount(\"tmpfs\", {}, \"tmpfs\", \"mode=0700\") — scratch for upper/work, private to this mount namespace", scratch.display()), || {
        sm::mount_tmpfs(scratch, MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=0700").map_err(|e| fail("mount scratch tmpfs", e))
    })?;
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    let merged = scratch.join("merged");
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(|e| fail(&format!("mkdir {}", d.display()), e))?;
    }
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o755));
    if let crate::launch::plan::IdMapping::Privileged { uid, gid } = &plan.mapping {
        // The root directory of the container comes from the upper dir: owned by container root.
        nix::unistd::chown(
            &upper,
            Some(Uid::from_raw(uid.outside)),
            Some(Gid::from_raw(gid.outside)),
        )
        .map_err(|e| fail("chown upper dir to the container's root", e))?;
    }
    if let Some(rootfs) = &plan.rootfs_dir {
        // An OCI bundle: its rootfs is the root, bound (with its submounts) onto `merged` so that
        // pivot_root(2) gets the mount point it requires.
        ex.timed(
            "mount",
            &format!(
                "mount({}, {}, MS_BIND|MS_REC) — the bundle's rootfs is the root",
                rootfs.display(),
                merged.display()
            ),
            || {
                sm::bind(rootfs, &merged, true)
                    .map_err(|e| fail(&format!("bind the bundle's rootfs {}", rootfs.display()), e))
            },
        )?;
        return Ok((merged, false));
    }
    let etc_in_upper = write_etc_files_into_upper(plan, &upper, ex)?;
    // Test hook (tests/errors.rs): act like a kernel before 5.11, whose overlayfs answers EPERM
    // to a mount from a user namespace, so that message is checked without such a kernel.
    let simulate_old_kernel =
        plan.mapping.user_namespace() && std::env::var_os("RCRUN_TEST_NO_USERNS_OVERLAY").is_some();
    let t = std::time::Instant::now();
    let method = if simulate_old_kernel {
        Err(Errno::EPERM)
    } else {
        sm::mount_overlay(&plan.lowers_top_first, &upper, &work, &merged)
    };
    let how = match &method {
        Ok(sm::OverlayMethod::NewApi) => {
            "fsopen(\"overlay\") + fsconfig(\"lowerdir+\") per layer + fsmount + move_mount"
        }
        Ok(sm::OverlayMethod::Classic) => "mount(\"overlay\") with an option string",
        Err(_) => "FAILED: mount overlay",
    };
    ex.step(
        "mount",
        &format!(
            "{how} → {}: lowerdir (top first) = {}, upperdir={}, workdir={}, userxattr,index=off,metacopy=off",
            merged.display(),
            describe_lowers(&plan.lowers_top_first),
            upper.display(),
            work.display(),
        ),
        t.elapsed(),
    );
    method.map_err(|e| fail("mount overlay root file system", overlay_hint(e)))?;
    Ok((merged, etc_in_upper))
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf written straight into the (still empty) upper
/// dir: the overlay then shows them over the image's, as the container's own writable files
/// (Docker's are writable bind mounts), with no mount and no copy-up of /etc. Only when the image's
/// /etc is a directory (or absent): a symlink or file there keeps the bind-mount way, whose
/// targets are resolved inside the root. Returns whether it wrote them.
fn write_etc_files_into_upper(
    plan: &StartupPlan,
    upper: &Path,
    ex: &Explain,
) -> Result<bool, Failure> {
    use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
    let files: Vec<(&str, &str)> = plan
        .mounts
        .iter()
        .filter_map(|m| match &m.what {
            Mnt::HostFile { contents } => Some((m.target.as_str(), contents.as_str())),
            _ => None,
        })
        .collect();
    if files.is_empty()
        || files
            .iter()
            .any(|(t, _)| Path::new(t).parent() != Some(Path::new("/etc")))
    {
        return Ok(false);
    }
    // The topmost layer with an /etc entry decides (found once when planning): a directory lends
    // its mode and owner to ours (the overlay shows the upper dir's), a whiteout or no entry
    // means none. Stat'ed here, so owners are seen through our own user namespace.
    let like: Option<std::fs::Metadata> = match plan.etc_layer {
        None => None,
        Some(i) => match std::fs::symlink_metadata(plan.lowers_top_first[i].join("etc")) {
            Ok(m) if m.is_dir() => Some(m),
            Ok(m) if m.file_type().is_char_device() && m.rdev() == 0 => None,
            _ => return Ok(false),
        },
    };
    let f = |e: std::io::Error| fail("write /etc files into the upper dir", e);
    let etc = upper.join("etc");
    std::fs::DirBuilder::new()
        .mode(like.as_ref().map_or(0o755, |m| m.mode() & 0o7777))
        .create(&etc)
        .map_err(f)?;
    let owner = |path: &Path, uid: u32, gid: u32| {
        nix::unistd::chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
            .map_err(|e| fail(&format!("chown {}", path.display()), e))
    };
    // Container root, as seen from here: with --userns as root the child is still outside the
    // user namespace, so that is the mapped id.
    let (root_uid, root_gid) = match &plan.mapping {
        crate::launch::plan::IdMapping::Privileged { uid, gid } => (uid.outside, gid.outside),
        _ => (0, 0),
    };
    match &like {
        Some(m) => owner(&etc, m.uid(), m.gid())?,
        None => owner(&etc, root_uid, root_gid)?,
    }
    for (target, contents) in files {
        ex.timed(
            "mount",
            &format!(
                "write {target} ({} bytes) into the upper dir — the overlay shows it over the image's, no mount needed",
                contents.len()
            ),
            || {
                let path = upper.join(target.trim_start_matches('/'));
                std::fs::write(&path, contents).map_err(f)?;
                owner(&path, root_uid, root_gid)?;
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                    .map_err(f)
            },
        )?;
    }
    Ok(true)
}

/// `<store>/layers/<owners>/{8e1ca14706c1,a364fd49e5aa}/fs`: every lower dir, compactly (the
/// full digests are in the `layer` lines above).
fn describe_lowers(lowers: &[PathBuf]) -> String {
    let parent = lowers
        .first()
        .and_then(|l| l.parent())
        .and_then(|l| l.parent());
    let short: Option<Vec<String>> = lowers
        .iter()
        .map(|l| {
            let digest_dir = l.parent()?;
            (digest_dir.parent() == parent).then(|| {
                digest_dir
                    .file_name()?
                    .to_str()
                    .map(|h| h.chars().take(12).collect())
            })?
        })
        .collect();
    match (parent, short) {
        (Some(p), Some(s)) => format!("{}/{{{}}}/fs", p.display(), s.join(",")),
        _ => lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn overlay_hint(e: Errno) -> String {
    match e {
        Errno::EPERM | Errno::EINVAL => format!(
            "{e}: this kernel ({}) does not allow overlayfs in a user namespace (needs Linux 5.11+ for `userxattr`): upgrade the kernel, or run rcrun as root",
            std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|r| r.trim().to_string()).unwrap_or_else(|_| "?".into())
        ),
        Errno::E2BIG => "too many layers for the mount(2) option string and the kernel lacks fsconfig lowerdir+ (Linux 6.8+)".into(),
        other => other.to_string(),
    }
}

pub(super) fn open_root(root: &Path) -> Result<OwnedFd, Failure> {
    nix::fcntl::open(
        root,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| fail("open new root", e))
}

/// The directory the last device node, fifo or symlink step went into (/dev for the default
/// nodes), kept open for the next such step. Cleared by any other step: a mount may cover that
/// directory, and the cached descriptor would still name the one underneath. Saves the two
/// lookups per node (openat2 of the parent inside the root, then its directory open).
#[derive(Default)]
pub(super) struct NodeDir(Option<(String, OwnedFd)>);

impl NodeDir {
    fn open(
        &mut self,
        root: std::os::fd::BorrowedFd<'_>,
        target: &str,
    ) -> nix::Result<(std::os::fd::BorrowedFd<'_>, std::ffi::OsString)> {
        let p = Path::new(target);
        let name = p.file_name().ok_or(Errno::EINVAL)?.to_owned();
        let parent = p.parent().ok_or(Errno::EINVAL)?.display().to_string();
        if self.0.as_ref().map(|(dir, _)| dir) != Some(&parent) {
            let fd = parent_dir_in_root(root, &parent)?;
            self.0 = Some((parent, fd));
        }
        let (_, fd) = self.0.as_ref().expect("just set");
        Ok((fd.as_fd(), name))
    }
}

pub(super) fn apply_mount(
    plan: &StartupPlan,
    root: std::os::fd::BorrowedFd<'_>,
    m: &MountStep,
    node_dir: &mut NodeDir,
) -> Result<(), Failure> {
    let what = format!("mount {}", m.target);
    let f = |e: Errno| fail(&what, e);
    if !matches!(
        m.what,
        Mnt::Device { .. } | Mnt::Fifo { .. } | Mnt::Symlink { .. }
    ) {
        node_dir.0 = None;
    }
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // The kernel's own file systems go on a real directory only: an image whose /proc is a
    // symlink (to "/", to /etc, …) would otherwise have proc mounted wherever it points, over
    // the root itself or where the masks below cannot find it (runc refuses the same,
    // CVE-2019-16884/19921 class). User-chosen targets (--tmpfs, -v) follow symlinks, inside the
    // root.
    if m.what.is_kernel_fs() || m.target == "/dev" {
        sm::refuse_non_directory(root, &m.target).map_err(|found| {
            fail(
                &what,
                format!("the image's {} is {found}, not a directory: rcrun mounts {} only on a directory of the image (fix the image)", m.target, m.what.fs_name()),
            )
        })?;
    }
    // A fresh instance of a pseudo file system on a directory created inside the root.
    let new_fs = |fstype: &str, flags: MsFlags, data: Option<&str>| {
        let t = sm::mountpoint(root, &m.target, Create::Dir)
            .map_err(f)?
            .expect("created");
        sm::mount_at(
            Some(Path::new(fstype)),
            t.as_fd(),
            Some(fstype),
            flags,
            data,
        )
        .map_err(f)
    };
    match &m.what {
        Mnt::Proc => new_fs("proc", nodev, None),
        Mnt::Sysfs => new_fs("sysfs", nodev | MsFlags::MS_RDONLY, None),
        Mnt::Tmpfs {
            data,
            flags,
            source,
        } => {
            let t = sm::mountpoint(root, &m.target, Create::Dir)
                .map_err(f)?
                .expect("created");
            sm::mount_at(
                Some(Path::new(source)),
                t.as_fd(),
                Some("tmpfs"),
                MsFlags::from_bits_truncate(*flags),
                Some(data),
            )
            .map_err(f)
        }
        Mnt::Devpts => new_fs(
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
        Mnt::Mqueue => new_fs("mqueue", nodev, None),
        Mnt::Cgroup { read_only } => super::cgroupfs::mount_cgroup_tree(
            root,
            &m.target,
            *read_only,
            plan.mapping.in_user_namespace(),
            &plan.cgroup.self_join_tasks,
        ),
        Mnt::Bind {
            source,
            recursive,
            read_only,
        } => {
            let is_dir = std::fs::metadata(source)
                .map(|m| m.is_dir())
                .map_err(|e| fail(&format!("bind source {}", source.display()), e))?;
            let t = sm::mountpoint(
                root,
                &m.target,
                if is_dir { Create::Dir } else { Create::File },
            )
            .map_err(f)?
            .expect("created");
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            sm::mount_at(Some(source), t.as_fd(), None, flags, None).map_err(f)?;
            if *read_only {
                // Re-resolve: the fd still refers to the covered mount point.
                let t = sm::mountpoint(root, &m.target, Create::Nothing)
                    .map_err(f)?
                    .expect("exists");
                if *recursive {
                    sm::make_tree_readonly(t.as_fd()).map_err(f)?;
                } else {
                    sm::remount_readonly(t.as_fd()).map_err(f)?;
                }
            }
            Ok(())
        }
        Mnt::Device {
            block,
            major,
            minor,
            mode,
        } => {
            let kind = if *block {
                nix::sys::stat::SFlag::S_IFBLK
            } else {
                nix::sys::stat::SFlag::S_IFCHR
            };
            let (dir, name) = node_dir.open(root, &m.target).map_err(f)?;
            make_node(dir, &name, kind, *mode, *major, *minor).map_err(f)
        }
        Mnt::Fifo { mode } => {
            let (dir, name) = node_dir.open(root, &m.target).map_err(f)?;
            make_node(dir, &name, nix::sys::stat::SFlag::S_IFIFO, *mode, 0, 0).map_err(f)
        }
        Mnt::Symlink { to } => {
            let (dir, name) = node_dir.open(root, &m.target).map_err(f)?;
            match nix::unistd::symlinkat(to.as_str(), dir, name.as_os_str()) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(f(e)),
            }
        }
        Mnt::Mask => {
            let Some(t) = sm::mountpoint(root, &m.target, Create::Nothing).map_err(f)? else {
                return Ok(());
            };
            let st = nix::sys::stat::fstat(t.as_fd()).map_err(f)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                sm::mount_at(
                    Some(Path::new("tmpfs")),
                    t.as_fd(),
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY | nodev,
                    Some("size=0"),
                )
                .map_err(f)
            } else {
                // Only the real /dev/null (char 1:3) may be used as the mask, and the node
                // checked is the node bound: opened once (O_PATH), checked with fstat, bound
                // through its fd, so nothing can swap it in between (CVE-2025-31133 class). It
                // is the host's: this runs before pivot_root, and the image's /dev is hidden
                // under rcrun's tmpfs anyway.
                let null = nix::fcntl::open(
                    "/dev/null",
                    nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| fail("open /dev/null", e))?;
                let st =
                    nix::sys::stat::fstat(null.as_fd()).map_err(|e| fail("stat /dev/null", e))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFCHR
                    || st.st_rdev != nix::sys::stat::makedev(1, 3)
                {
                    return Err(fail(
                        &what,
                        "host /dev/null is not the 1:3 character device",
                    ));
                }
                sm::mount_at(
                    Some(&sm::fd_path(null.as_fd())),
                    t.as_fd(),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
                .map_err(f)
            }
        }
        Mnt::Propagation { flags } => {
            let t = sm::mountpoint(root, &m.target, Create::Nothing)
                .map_err(f)?
                .ok_or_else(|| fail(&m.target, "no mount to change the propagation of"))?;
            sm::mount_at(
                None,
                t.as_fd(),
                None,
                MsFlags::from_bits_truncate(*flags as _),
                None,
            )
            .map_err(f)
        }
        Mnt::ReadOnly => {
            let Some(t) = sm::mountpoint(root, &m.target, Create::Nothing).map_err(f)? else {
                return Ok(());
            };
            let p = sm::fd_path(t.as_fd());
            sm::bind(&p, &p, true).map_err(f)?;
            let t = sm::mountpoint(root, &m.target, Create::Nothing)
                .map_err(f)?
                .expect("exists");
            sm::make_tree_readonly(t.as_fd()).map_err(f)
        }
        Mnt::HostFile { contents } => {
            let name = m.target.trim_start_matches('/').replace('/', "_");
            let src = plan.scratch.join(name);
            std::fs::write(&src, contents)
                .map_err(|e| fail(&format!("write {}", src.display()), e))?;
            let t = sm::mountpoint(root, &m.target, Create::File)
                .map_err(f)?
                .expect("created");
            sm::mount_at(Some(&src), t.as_fd(), None, MsFlags::MS_BIND, None).map_err(f)?;
            let t = sm::mountpoint(root, &m.target, Create::Nothing)
                .map_err(f)?
                .expect("exists");
            sm::remount_readonly(t.as_fd()).map_err(f)
        }
    }
}

/// mknod of a device node or fifo `name` in `dir` (inside the root), then its exact mode: mknod
/// applied the umask (the name was just created by us: mknodat fails on an existing name).
fn make_node(
    dir: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    kind: nix::sys::stat::SFlag,
    mode: u32,
    major: u64,
    minor: u64,
) -> nix::Result<()> {
    crate::sys::fs::mknod_at(dir, Path::new(name), kind, mode, major, minor)?;
    nix::sys::stat::fchmodat(
        dir,
        name,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// The directory `parent` inside the root (created there if missing), opened for `*at` calls.
fn parent_dir_in_root(root: std::os::fd::BorrowedFd<'_>, parent: &str) -> nix::Result<OwnedFd> {
    let parent = sm::mountpoint(root, parent, Create::Dir)?.ok_or(Errno::ENOENT)?;
    nix::fcntl::openat(
        parent.as_fd(),
        ".",
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
}

/// Into the new root (see [`sm::pivot_into`]).
pub(super) fn pivot_into(newroot: &Path) -> Result<(), Failure> {
    sm::pivot_into(newroot).map_err(|(step, e)| fail(step, e))
}
