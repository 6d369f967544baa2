//! Small file-system helpers for cgroup directories and files.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::types::*;

// ---- small fs helpers -----------------------------------------------------

pub(super) fn mkdir(path: &Path, exist_ok: bool) -> Result<(), CgroupError> {
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
pub(super) enum DirIdentity {
    Inode(u64, u64),
    Path(PathBuf),
}

pub(super) fn dir_identity(p: &Path) -> DirIdentity {
    dir_identity_and_metadata(p).0
}

/// [`dir_identity`], with the metadata it read (None: no such directory).
pub(super) fn dir_identity_and_metadata(p: &Path) -> (DirIdentity, Option<fs::Metadata>) {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(p) {
        Ok(m) => (DirIdentity::Inode(m.dev(), m.ino()), Some(m)),
        Err(_) => (DirIdentity::Path(p.to_path_buf()), None),
    }
}

pub(super) fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

pub(super) fn read_u64(p: &Path) -> Option<u64> {
    read_trim(p)?.parse().ok()
}

pub(super) fn read_procs(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

pub(super) fn is_cgroupfs(p: &Path) -> bool {
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
pub(super) fn rmdir_retry(dir: &Path, deadline: Instant) -> io::Result<()> {
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

pub(super) fn rmdir_tree(dir: &Path) -> io::Result<()> {
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

/// Writes a value into a cgroup file. No O_CREAT on a real cgroupfs: its files always exist and a
/// missing one means the controller is not enabled, which must be an error. Elsewhere (a mock tree
/// in tests) the file is created like a kernel would have.
pub(super) fn write_value(path: &Path, value: &str) -> io::Result<()> {
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
pub(super) fn write_procs(path: &Path, value: &str) -> io::Result<()> {
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
