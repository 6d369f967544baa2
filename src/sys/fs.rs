//! File-system primitives relative to directory fds: the only way extraction touches the disk.
//!
//! Every path an archive supplies is resolved *beneath* a directory fd with `openat2(2)`
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV`, so neither
//! `..`, an absolute symlink, nor a mount point can lead outside the layer directory, whatever
//! was extracted before. Leaves are created with the `*at` calls on the parent fd and opened
//! with `O_NOFOLLOW`.

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, mkdirat, FileStat, Mode, SFlag};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

pub const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens the directory `rel` beneath `root` without following any symlink or leaving `root`.
/// `rel` empty means `root` itself.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new().flags(DIR_FLAGS).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    );
    match openat2(root, rel, how) {
        Err(Errno::ENOSYS) => walk_beneath(root, rel),
        // openat2 returns EAGAIN when a concurrent rename races the lookup; retry the slow way.
        Err(Errno::EAGAIN) => walk_beneath(root, rel),
        other => other,
    }
}

/// The pre-5.6 fallback: one `openat(O_NOFOLLOW)` per component. `..` never reaches here
/// (callers reject it), so each step stays beneath the previous directory.
fn walk_beneath(root: BorrowedFd<'_>, rel: &Path) -> nix::Result<OwnedFd> {
    let mut cur = openat(root, ".", DIR_FLAGS, Mode::empty())?;
    for comp in rel.components() {
        let std::path::Component::Normal(name) = comp else {
            continue;
        };
        cur = openat(cur.as_fd(), name, DIR_FLAGS, Mode::empty())?;
    }
    Ok(cur)
}

/// Opens child directory `name` of `dir` (no symlink follow).
pub fn open_child_dir(dir: BorrowedFd<'_>, name: &Path) -> nix::Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty())
}

pub fn lstat_at(dir: BorrowedFd<'_>, name: &Path) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
}

pub fn mkdir_at(dir: BorrowedFd<'_>, name: &Path, mode: u32) -> nix::Result<()> {
    mkdirat(dir, name, Mode::from_bits_truncate(mode))
}

/// An overlayfs whiteout: a character device 0/0 (allowed unprivileged since Linux 5.8).
pub fn mknod_whiteout(dir: BorrowedFd<'_>, name: &Path) -> nix::Result<()> {
    nix::sys::stat::mknodat(
        dir,
        name,
        SFlag::S_IFCHR,
        Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
}

pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &Path,
    kind: SFlag,
    mode: u32,
    major: u64,
    minor: u64,
) -> nix::Result<()> {
    nix::sys::stat::mknodat(
        dir,
        name,
        kind,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major, minor),
    )
}

/// Sets an extended attribute on an open file or directory.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> nix::Result<()> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `name` is a valid NUL-terminated string and `value` a valid slice for the duration
    // of the call; the fd is borrowed, so it stays open.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc).map(drop)
}

/// Removes an extended attribute; absent already is success.
pub fn fremovexattr(fd: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `name` is NUL-terminated and lives through the call; the fd is borrowed.
    match Errno::result(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) }) {
        Ok(_) | Err(Errno::ENODATA) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads an extended attribute; `None` when absent.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &str) -> nix::Result<Option<Vec<u8>>> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut buf = vec![0u8; 256];
    // SAFETY: buffer pointer and length describe `buf`; name is NUL-terminated.
    let rc = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    match Errno::result(rc) {
        Ok(n) => {
            buf.truncate(n as usize);
            Ok(Some(buf))
        }
        Err(Errno::ENODATA) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `syncfs(2)`: flush the file system holding `fd`, once per layer rather than once per file.
pub fn syncfs(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: plain syscall on a borrowed, open fd.
    Errno::result(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// Removes a directory tree, first making directories writable/searchable so that trees with
/// mode-0 directories (overlay's `work/work`, images shipping `d---------`) can be removed.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return std::fs::remove_file(path),
        Ok(_) => {}
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    fn open_up(p: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        if meta.is_dir() {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
            for entry in std::fs::read_dir(p)? {
                open_up(&entry?.path())?;
            }
        }
        Ok(())
    }
    open_up(path)?;
    std::fs::remove_dir_all(path)
}

/// FS_TOPDIR_FL (include/uapi/linux/fs.h; `chattr +T`).
const FS_TOPDIR_FL: libc::c_long = 0x0002_0000;

/// Marks `dir` as the top of unrelated directory hierarchies (`chattr +T`): ext4's Orlov
/// allocator then spreads the directories created under it across block groups instead of
/// packing them next to their parent (chattr(1), "T"). Returns whether the flag is set now;
/// file systems without inode flags (tmpfs, overlayfs) answer ENOTTY or EOPNOTSUPP, which is
/// reported as `Ok(false)`: only a hint.
pub fn mark_top_dir(dir: &Path) -> std::io::Result<bool> {
    let fd = nix::fcntl::open(dir, DIR_FLAGS, Mode::empty())?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long (the kernel uses int-sized flags, read as long as
    // e2fsprogs does) into `flags`, which we own, on our own fd.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return match Errno::last() {
            Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL => Ok(false),
            e => Err(e.into()),
        };
    }
    if flags & FS_TOPDIR_FL != 0 {
        return Ok(true);
    }
    flags |= FS_TOPDIR_FL;
    // SAFETY: FS_IOC_SETFLAGS reads the long we pass, on our own fd.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) } != 0 {
        return match Errno::last() {
            Errno::ENOTTY | Errno::EOPNOTSUPP | Errno::EINVAL | Errno::EPERM => Ok(false),
            e => Err(e.into()),
        };
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a file system with inode flags (ext4 here) the flag is set, stays set, and a second
    /// call is a no-op; elsewhere the call says it could not and nothing fails.
    #[test]
    fn mark_top_dir_sets_the_topdir_flag() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(format!("topdir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let set = mark_top_dir(&dir).unwrap();
        let fd = nix::fcntl::open(&dir, DIR_FLAGS, Mode::empty()).unwrap();
        let mut flags: libc::c_long = 0;
        // SAFETY: as in mark_top_dir.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
        std::fs::remove_dir(&dir).unwrap();
        if !set {
            eprintln!(
                "SKIP: {} has no inode flags (chattr +T unsupported)",
                dir.display()
            );
            return;
        }
        assert_eq!(rc, 0);
        assert_ne!(flags & FS_TOPDIR_FL, 0, "FS_TOPDIR_FL not set: {flags:#x}");
    }
}

/// Reads the regular file `path` (absolute, inside a running container) through the
/// container's root `/proc/PID/root`: every component resolved with `openat2(2)`
/// `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS`, so an absolute symlink or `..` planted by the
/// container stays inside its root, and opened `O_NONBLOCK` so a FIFO cannot hang the reader
/// (it is refused as not a regular file). None when absent; at most `max` bytes.
pub fn read_in_container(pid: i32, path: &str, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let root = std::fs::File::open(format!("/proc/{pid}/root"))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(root.as_fd(), Path::new(path.trim_start_matches('/')), how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{path} in the container is not a regular file"
        )));
    }
    let mut bytes = Vec::new();
    file.take(max).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}
