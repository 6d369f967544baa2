//! `rcrun unpack IMAGE DIR`: the image's flattened root file system, built from the same store
//! layers that `rcrun run` stacks with overlayfs, applying overlay semantics by hand:
//! a whiteout (char 0/0) deletes the name from what lower layers put there, an opaque directory
//! (`user.overlay.opaque=y`) first empties the directory, and anything else replaces what was
//! there. Hardlinks within a layer stay hardlinks.
//!
//! The layer dirs are rcrun's own verified output; the target is walked without following
//! symlinks (`symlink_metadata` before every descent), so an image symlink such as `lib -> /usr/lib`
//! is copied as a symlink and never traversed.

use super::extract::OPAQUE_XATTR;
use super::UnpackError;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Copies `layers` (bottom first) into `target`, which must be empty or absent.
pub fn flatten(
    layers: &[PathBuf],
    target: &Path,
    preserve_owners: bool,
) -> Result<(), UnpackError> {
    match fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(UnpackError::TargetNotEmpty(target.to_path_buf()));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(|source| UnpackError::Io {
                op: "create",
                path: target.to_path_buf(),
                source,
            })?;
        }
        Err(source) => {
            return Err(UnpackError::Io {
                op: "read",
                path: target.to_path_buf(),
                source,
            })
        }
    }
    for layer in layers {
        let mut links = HashMap::new();
        let mut m = Merger {
            preserve_owners,
            links: &mut links,
        };
        m.merge_dir(layer, target)
            .map_err(|source| UnpackError::Flatten {
                layer: layer.clone(),
                path: target.to_path_buf(),
                source,
            })?;
        copy_meta(
            &fs::symlink_metadata(layer).map_err(|source| UnpackError::Io {
                op: "stat",
                path: layer.clone(),
                source,
            })?,
            target,
            preserve_owners,
        )
        .map_err(|source| UnpackError::Flatten {
            layer: layer.clone(),
            path: target.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

struct Merger<'a> {
    preserve_owners: bool,
    /// (dev, ino) of a multiply-linked file in this layer → where it was copied.
    links: &'a mut HashMap<(u64, u64), PathBuf>,
}

fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    fs::File::open(dir)
        .ok()
        .and_then(|f| {
            crate::sys::fs::fgetxattr(f.as_fd(), OPAQUE_XATTR)
                .ok()
                .flatten()
        })
        .is_some_and(|v| v == b"y")
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => crate::sys::fs::remove_tree(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Merger<'_> {
    fn merge_dir(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let s = entry.path();
            let d = dst.join(entry.file_name());
            let meta = fs::symlink_metadata(&s)?;
            if is_whiteout(&meta) {
                remove_any(&d)?;
                continue;
            }
            if meta.is_dir() {
                let existing = fs::symlink_metadata(&d).ok();
                match existing {
                    Some(m) if m.is_dir() => {
                        if is_opaque(&s) {
                            crate::sys::fs::remove_tree(&d)?;
                            fs::create_dir(&d)?;
                        }
                    }
                    Some(_) => {
                        fs::remove_file(&d)?;
                        fs::create_dir(&d)?;
                    }
                    None => fs::create_dir(&d)?,
                }
                // Writable while we fill it; the real mode is applied after.
                fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
                self.merge_dir(&s, &d)?;
                copy_meta(&meta, &d, self.preserve_owners)?;
                continue;
            }
            let ft = meta.file_type();
            // Regular files are created with O_EXCL and replace what is there only on EEXIST:
            // most targets are new, and a stat per file would cost a syscall for nothing.
            if !ft.is_file() {
                remove_any(&d)?;
            }
            if ft.is_symlink() {
                let target = fs::read_link(&s)?;
                std::os::unix::fs::symlink(&target, &d)?;
                if self.preserve_owners {
                    std::os::unix::fs::lchown(&d, Some(meta.uid()), Some(meta.gid()))?;
                }
                set_times(&d, &meta, false)?;
                continue;
            }
            if ft.is_file() {
                if meta.nlink() > 1 {
                    if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                        remove_any(&d)?;
                        fs::hard_link(first, &d)?;
                        continue;
                    }
                    self.links.insert((meta.dev(), meta.ino()), d.clone());
                }
                let mut from = fs::File::open(&s)?;
                let create = || fs::OpenOptions::new().write(true).create_new(true).open(&d);
                let mut to = match create() {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        remove_any(&d)?;
                        create()?
                    }
                    other => other?,
                };
                // In-kernel copy (copy_file_range), then metadata through the open fds: owner
                // first, since chown(2) clears setuid bits and file capabilities.
                io::copy(&mut from, &mut to)?;
                if self.preserve_owners {
                    std::os::unix::fs::fchown(&to, Some(meta.uid()), Some(meta.gid()))?;
                }
                // Only security.capability and plain user.* can be in a layer (see extract.rs);
                // the file capability is what matters (ping and friends).
                if let Ok(Some(v)) = crate::sys::fs::fgetxattr(from.as_fd(), "security.capability")
                {
                    let _ = crate::sys::fs::fsetxattr(to.as_fd(), "security.capability", &v);
                }
                to.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
                let times = fs::FileTimes::new()
                    .set_accessed(meta.accessed()?)
                    .set_modified(meta.modified()?);
                to.set_times(times)?;
                continue;
            }
            // Devices and FIFOs.
            let kind = if ft.is_fifo() {
                nix::sys::stat::SFlag::S_IFIFO
            } else if ft.is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if ft.is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else {
                continue;
            };
            let rdev = meta.rdev();
            nix::sys::stat::mknod(
                &d,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                rdev,
            )
            .map_err(io::Error::from)?;
            copy_meta(&meta, &d, self.preserve_owners)?;
        }
        Ok(())
    }
}

fn set_times(path: &Path, meta: &fs::Metadata, follow: bool) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let at = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mt = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    let flag = if follow {
        UtimensatFlags::FollowSymlink
    } else {
        UtimensatFlags::NoFollowSymlink
    };
    utimensat(nix::fcntl::AT_FDCWD, path, &at, &mt, flag).map_err(io::Error::from)
}

/// Owner (when allowed), then mode (chown clears setuid), then times.
fn copy_meta(meta: &fs::Metadata, path: &Path, preserve_owners: bool) -> io::Result<()> {
    if preserve_owners {
        std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    set_times(path, meta, false)
}
