//! Mount primitives for building the container root. Targets inside the new root are resolved
//! with `openat2(RESOLVE_IN_ROOT)` and mounted through `/proc/self/fd/N`, so a symlink planted in
//! the image (`/etc -> /host/etc`) resolves inside the root, never on the host (CVE-2019-16884,
//! CVE-2019-19921 class).

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn in_root(root: BorrowedFd<'_>, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root, rel, how)
}

/// What to create at a mount point that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
    /// Never create (masking /proc or /sys entries that this kernel lacks).
    Nothing,
}

/// Opens `path` (absolute, inside the container) beneath `root` as an `O_PATH` fd, creating the
/// missing components (directories, and the leaf as `create` says). `None` when the leaf is
/// absent and `create` is `Nothing`. Symlinks on the way are followed inside the root, also
/// when they dangle: the directories they name are created inside the root, as runc's
/// securejoin.MkdirAllInRoot does, so an image whose `/etc` points at `/srv/conf` gets
/// `<root>/srv/conf/hostname`, never the host's.
pub fn mountpoint(
    root: BorrowedFd<'_>,
    path: &str,
    create: Create,
) -> nix::Result<Option<OwnedFd>> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.as_os_str().is_empty() {
        return in_root(root, Path::new("."), OFlag::O_PATH).map(Some);
    }
    match in_root(root, rel, OFlag::O_PATH) {
        Ok(fd) => return Ok(Some(fd)),
        Err(Errno::ENOENT) if create != Create::Nothing => {}
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    }
    create_in_root(root, &lexical_in_root(Path::new("/"), rel), create, 0)?;
    in_root(root, rel, OFlag::O_PATH).map(Some)
}

/// The symlink depth at which path resolution gives up (path_resolution(7): 40, ELOOP).
const MAX_SYMLINKS: usize = 40;

/// Creates `rel` (normalized, relative to `root`) component by component. Every lookup is an
/// `openat2(RESOLVE_IN_ROOT)` from `root`, every creation an `*at` call on a directory fd
/// opened that way, so nothing is ever created outside the root. A dangling symlink on the way
/// has its target (resolved as the kernel would inside the root) created first.
fn create_in_root(
    root: BorrowedFd<'_>,
    rel: &Path,
    create: Create,
    depth: usize,
) -> nix::Result<()> {
    if depth > MAX_SYMLINKS {
        return Err(Errno::ELOOP);
    }
    let comps: Vec<_> = rel.components().collect();
    let mut cur = PathBuf::new();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let here = cur.join(c);
        match in_root(root, &here, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(fd.as_fd())?;
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    match in_root(root, &here, OFlag::O_PATH) {
                        Ok(_) => {}
                        Err(Errno::ENOENT) => {
                            let to = nix::fcntl::readlinkat(fd.as_fd(), "")?;
                            let parent = in_root(
                                root,
                                dot_if_empty(&cur),
                                OFlag::O_PATH | OFlag::O_DIRECTORY,
                            )?;
                            let base = real_path_in_root(root, parent.as_fd())?;
                            let target = lexical_in_root(&base, Path::new(&to));
                            let kind = if last { create } else { Create::Dir };
                            create_in_root(root, &target, kind, depth + 1)?;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(Errno::ENOENT) => {
                let parent = in_root(root, dot_if_empty(&cur), OFlag::O_PATH | OFlag::O_DIRECTORY)?;
                create_entry(
                    parent.as_fd(),
                    c.as_os_str(),
                    if last { create } else { Create::Dir },
                )?;
            }
            Err(e) => return Err(e),
        }
        cur = here;
    }
    Ok(())
}

fn dot_if_empty(p: &Path) -> &Path {
    if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    }
}

/// One directory or empty file named `name` in `parent`; an existing entry is fine.
fn create_entry(parent: BorrowedFd<'_>, name: &std::ffi::OsStr, create: Create) -> nix::Result<()> {
    match create {
        Create::Nothing => Err(Errno::ENOENT),
        Create::Dir => match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o755))
        {
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(e),
        },
        Create::File => {
            let cname = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
                .map_err(|_| Errno::EINVAL)?;
            // SAFETY: openat with a valid dir fd and a NUL-terminated name; O_NOFOLLOW|O_CREAT
            // never follows a symlink planted at the name; the returned fd is ours and closed
            // right away.
            let fd = unsafe {
                libc::openat(
                    parent.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: fd was just returned by openat and is not shared.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                Ok(())
            } else {
                match Errno::last() {
                    Errno::EEXIST => Ok(()),
                    e => Err(e),
                }
            }
        }
    }
}

/// Where `dir` (opened beneath `root`) is, as a path inside the root: the kernel's names of the
/// two fds, one the prefix of the other.
fn real_path_in_root(root: BorrowedFd<'_>, dir: BorrowedFd<'_>) -> nix::Result<PathBuf> {
    let root_at = std::fs::read_link(fd_path(root)).map_err(|_| Errno::EBADF)?;
    let dir_at = std::fs::read_link(fd_path(dir)).map_err(|_| Errno::EBADF)?;
    let inside = dir_at.strip_prefix(&root_at).map_err(|_| Errno::EXDEV)?;
    Ok(Path::new("/").join(inside))
}

/// `to` taken from directory `base` (both inside the root), with `.` and `..` applied and `..`
/// stopping at the root, as RESOLVE_IN_ROOT does; relative to the root.
pub fn lexical_in_root(base: &Path, to: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    let start = if to.is_absolute() {
        Path::new("/")
    } else {
        base
    };
    for c in start.components().chain(to.components()) {
        match c {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n.to_owned()),
        }
    }
    out.iter().collect()
}

/// `Ok` when `path` (absolute, inside the container) is absent or a directory, looked up beneath
/// `root` without following a symlink at the end; otherwise `Err` with what is there instead
/// ("a symlink to /etc", "a regular file").
pub fn refuse_non_directory(root: BorrowedFd<'_>, path: &str) -> Result<(), String> {
    let rel = Path::new(path.trim_start_matches('/'));
    let fd = match in_root(root, rel, OFlag::O_PATH | OFlag::O_NOFOLLOW) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(format!("unreachable ({e})")),
    };
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| format!("unreadable ({e})"))?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(()),
        libc::S_IFLNK => {
            let to = nix::fcntl::readlinkat(fd.as_fd(), "")
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "?".into());
            Err(format!("a symlink to {to}"))
        }
        libc::S_IFREG => Err("a regular file".into()),
        _ => Err("a special file".into()),
    }
}

pub fn mount_at(
    source: Option<&Path>,
    target: BorrowedFd<'_>,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> nix::Result<()> {
    mount(source, &fd_path(target), fstype, flags, data)
}

/// `MS_REMOUNT|MS_BIND|MS_RDONLY`, keeping the flags the kernel locks in a user namespace
/// (nosuid/nodev/noexec of the underlying mount must be repeated, see mount(2) EPERM).
pub fn remount_readonly(target: BorrowedFd<'_>) -> nix::Result<()> {
    let st = nix::sys::statvfs::fstatvfs(target)?;
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    let f = st.flags();
    if f.contains(FsFlags::ST_NOSUID) {
        flags |= MsFlags::MS_NOSUID;
    }
    if f.contains(FsFlags::ST_NODEV) {
        flags |= MsFlags::MS_NODEV;
    }
    if f.contains(FsFlags::ST_NOEXEC) {
        flags |= MsFlags::MS_NOEXEC;
    }
    mount_at(None, target, None, flags, None)
}

/// Makes the mount at `target` and every mount below it read-only. A recursive bind (`MS_BIND|
/// MS_REC`) copies the submounts too, and `MS_REMOUNT|MS_RDONLY` only changes the top one: the
/// host's /sys bound this way kept /sys/fs/cgroup/* writable. mount_setattr(2) with
/// `AT_RECURSIVE` (Linux 5.12) changes the whole tree in one call; older kernels get each mount
/// of the tree (from /proc/self/mountinfo) remounted one by one.
pub fn make_tree_readonly(target: BorrowedFd<'_>) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr(2) on our O_PATH fd with an empty path (AT_EMPTY_PATH) and a valid
    // struct mount_attr of the size passed; nothing is retained after the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match Errno::result(rc) {
        Ok(_) => return Ok(()),
        Err(Errno::ENOSYS) => {}
        Err(e) => return Err(e),
    }
    let top = std::fs::read_link(fd_path(target)).map_err(|_| Errno::EINVAL)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|_| Errno::EIO)?;
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(&top))
        .collect();
    // Parents first, so a later (child) mount is not hidden behind a remount of its parent.
    points.sort();
    points.dedup();
    for p in points {
        let fd = nix::fcntl::open(&p, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        remount_readonly(fd.as_fd())?;
    }
    Ok(())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` (proc_pid_mountinfo(5)).
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(octal, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// How the overlay was mounted (for narration).
pub enum OverlayMethod {
    NewApi,
    Classic,
}

fn fsconfig_string(fs: BorrowedFd<'_>, key: &str, value: Option<&str>) -> nix::Result<()> {
    const FSCONFIG_SET_FLAG: u32 = 0;
    const FSCONFIG_SET_STRING: u32 = 1;
    let key = CString::new(key).map_err(|_| Errno::EINVAL)?;
    let value = value
        .map(|v| CString::new(v).map_err(|_| Errno::EINVAL))
        .transpose()?;
    let (cmd, vptr) = match &value {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: fsconfig(2) with a valid fs context fd and NUL-terminated key/value that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.as_ptr(),
            vptr,
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Mounts overlayfs at `target`. Prefers the new mount API with one `lowerdir+` per layer
/// (Linux ≥ 6.8), which has no length limit up to the kernel's 500 layers; falls back to a
/// classic `mount(2)` option string, limited to one page.
/// Overlay mount options, for the classic `mount(2)` string and for narration: the lower layers
/// top first, and no features that trust what a layer says about itself (user xattrs in a user
/// namespace, no index, no metacopy: Documentation/filesystems/overlayfs.rst).
pub fn overlay_options(lower_top_first: &[String], upper: &str, work: &str) -> String {
    format!(
        "lowerdir={},upperdir={upper},workdir={work},userxattr,index=off,metacopy=off",
        lower_top_first.join(":")
    )
}

pub fn mount_overlay(
    lower_top_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> nix::Result<OverlayMethod> {
    match mount_overlay_new_api(lower_top_first, upper, work, target) {
        Ok(()) => return Ok(OverlayMethod::NewApi),
        Err(Errno::ENOSYS) | Err(Errno::EINVAL) => {}
        Err(e) => return Err(e),
    }
    let lowers: Vec<String> = lower_top_first
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let opts = overlay_options(
        &lowers,
        &upper.display().to_string(),
        &work.display().to_string(),
    );
    if opts.len() >= 4096 {
        return Err(Errno::E2BIG);
    }
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )?;
    Ok(OverlayMethod::Classic)
}

fn mount_overlay_new_api(
    lower_top_first: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> nix::Result<()> {
    let name = CString::new("overlay").expect("static");
    // SAFETY: fsopen(2) with a NUL-terminated fs name; returns a new fd we own.
    let fd = Errno::result(unsafe {
        libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC)
    })?;
    // SAFETY: the syscall returned a fresh fd.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    for l in lower_top_first {
        fsconfig_string(fs.as_fd(), "lowerdir+", Some(&l.display().to_string()))?;
    }
    fsconfig_string(fs.as_fd(), "upperdir", Some(&upper.display().to_string()))?;
    fsconfig_string(fs.as_fd(), "workdir", Some(&work.display().to_string()))?;
    fsconfig_string(fs.as_fd(), "userxattr", None)?;
    fsconfig_string(fs.as_fd(), "index", Some("off"))?;
    fsconfig_string(fs.as_fd(), "metacopy", Some("off"))?;
    const FSCONFIG_CMD_CREATE: u32 = 6;
    // SAFETY: fsconfig(2) CREATE on our fs context fd; no pointers.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            0,
            0,
            0,
        )
    })?;
    // SAFETY: fsmount(2) on the created context; returns a new mount fd we own.
    let m = Errno::result(unsafe {
        libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, 0)
    })?;
    // SAFETY: fresh fd from fsmount.
    let mnt = unsafe { OwnedFd::from_raw_fd(m as i32) };
    let empty = CString::new("").expect("static");
    let tgt = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: move_mount(2) of our detached mount fd onto an absolute path; strings outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            tgt.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(rc).map(drop)
}

/// `mount(NULL, "/", NULL, MS_REC|MS_SLAVE)`: nothing mounted in this mount namespace from here
/// on propagates back to the host's (mount_namespaces(7)), while the host's unmounts still reach
/// us.
pub fn stop_propagation() -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
}

/// Sets the propagation of the (new) root: `flags` is one of MS_SHARED, MS_SLAVE, MS_PRIVATE,
/// MS_UNBINDABLE, optionally with MS_REC (mount(2), "Changing the propagation type").
pub fn set_root_propagation(flags: MsFlags) -> nix::Result<()> {
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
}

/// A tmpfs at `target` with `flags` and mount data `data`.
pub fn mount_tmpfs(target: &Path, flags: MsFlags, data: &str) -> nix::Result<()> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(data))
}

/// A bind mount of `source` at `target`, with its submounts when `recursive` (MS_REC).
pub fn bind(source: &Path, target: &Path, recursive: bool) -> nix::Result<()> {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(Some(source), target, None::<&str>, flags, None::<&str>)
}

/// pivot_root(2) NOTES: `pivot_root(".", ".")` stacks the old root on top of the new one at
/// "/", and the detaching unmount then removes it — no temporary directory needed. Errors name
/// the step.
pub fn pivot_into(newroot: &Path) -> Result<(), (&'static str, nix::Error)> {
    nix::unistd::chdir(newroot).map_err(|e| ("chdir new root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| ("pivot_root", e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| ("detach old root", e))?;
    nix::unistd::chdir("/").map_err(|e| ("chdir /", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);
    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("rcrun-mount-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn open_dir(p: &Path) -> OwnedFd {
        nix::fcntl::open(
            p,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    #[test]
    fn lexical_in_root_stops_dotdot_at_the_root() {
        let l = |b: &str, t: &str| lexical_in_root(Path::new(b), Path::new(t));
        assert_eq!(l("/a/b", "c"), PathBuf::from("a/b/c"));
        assert_eq!(l("/a/b", "../../../../x/./y"), PathBuf::from("x/y"));
        assert_eq!(l("/a/b", "/srv/conf"), PathBuf::from("srv/conf"));
        assert_eq!(l("/", ".."), PathBuf::new());
    }

    #[test]
    fn dangling_symlinks_are_created_inside_the_root() {
        let outer = Scratch::new("dangling");
        let root = outer.path().join("root");
        std::fs::create_dir(&root).unwrap();
        // Points at a directory that exists on the host beside the root: it must be created
        // inside the root, and the host one left alone.
        let host = outer.path().join("host");
        std::fs::create_dir(&host).unwrap();
        symlink(&host, root.join("etc")).unwrap();
        symlink("../../../../../../rel/target", root.join("up")).unwrap();
        symlink("leaf-target", root.join("leaf")).unwrap();
        let r = open_dir(&root);
        mountpoint(r.as_fd(), "/etc/hostname", Create::File)
            .unwrap()
            .unwrap();
        mountpoint(r.as_fd(), "/up/deeper", Create::Dir)
            .unwrap()
            .unwrap();
        mountpoint(r.as_fd(), "/leaf", Create::Dir)
            .unwrap()
            .unwrap();
        let inside = root.join(host.strip_prefix("/").unwrap()).join("hostname");
        assert!(inside.is_file(), "{} not created", inside.display());
        assert!(root.join("rel/target/deeper").is_dir());
        assert!(root.join("leaf-target").is_dir());
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            0,
            "host dir written"
        );
        assert!(!outer.path().join("rel").exists());
    }

    #[test]
    fn symlink_loops_and_absent_leaves() {
        let outer = Scratch::new("loops");
        symlink("b", outer.path().join("a")).unwrap();
        symlink("a", outer.path().join("b")).unwrap();
        let r = open_dir(outer.path());
        assert_eq!(
            mountpoint(r.as_fd(), "/a/x", Create::Dir).unwrap_err(),
            Errno::ELOOP
        );
        assert!(mountpoint(r.as_fd(), "/absent", Create::Nothing)
            .unwrap()
            .is_none());
        std::fs::write(outer.path().join("file"), "").unwrap();
        assert_eq!(
            mountpoint(r.as_fd(), "/file/x", Create::Dir).unwrap_err(),
            Errno::ENOTDIR
        );
    }
}
