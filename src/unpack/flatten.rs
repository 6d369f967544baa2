//! `rcrun unpack IMAGE DIR`: the image's flattened root file system, built from the same store
//! layers that `rcrun run` stacks with overlayfs, applying overlay semantics by hand:
//! a whiteout (char 0/0) deletes the name from what lower layers put there, an opaque directory
//! (`user.overlay.opaque=y`) first empties the directory, and anything else replaces what was
//! there. Hardlinks within a layer stay hardlinks.
//!
//! Two ways: [`flatten`] copies from the layer store, which stays as it is; [`flatten_moving`]
//! *moves* (rename(2)) the entries of layers extracted for this purpose into a scratch store on
//! the target's own file system, so that nothing is written twice (`rcrun unpack`).
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
    prepare_target(target)?;
    for layer in layers {
        copy_layer(layer, target, preserve_owners)?;
    }
    Ok(())
}

/// Makes `target` an empty directory: creates it when absent (then returns true), refuses one
/// with anything in it.
pub fn prepare_target(target: &Path) -> Result<bool, UnpackError> {
    match fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(UnpackError::TargetNotEmpty(target.to_path_buf()));
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(|source| UnpackError::Io {
                op: "create",
                path: target.to_path_buf(),
                source,
            })?;
            Ok(true)
        }
        Err(source) => Err(UnpackError::Io {
            op: "read",
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// Copies one layer over `target` (overlay semantics), then gives `target` the layer root's
/// mode, owner and times.
fn copy_layer(layer: &Path, target: &Path, preserve_owners: bool) -> Result<(), UnpackError> {
    let mut links = HashMap::new();
    let mut m = Merger {
        preserve_owners,
        links: &mut links,
    };
    let flattening = |source| UnpackError::Flatten {
        layer: layer.to_path_buf(),
        path: target.to_path_buf(),
        source,
    };
    m.merge_dir(layer, target).map_err(flattening)?;
    root_meta(layer, target, preserve_owners)
}

fn root_meta(layer: &Path, target: &Path, preserve_owners: bool) -> Result<(), UnpackError> {
    let meta = fs::symlink_metadata(layer).map_err(|source| UnpackError::Io {
        op: "stat",
        path: layer.to_path_buf(),
        source,
    })?;
    copy_meta(&meta, target, preserve_owners).map_err(|source| UnpackError::Flatten {
        layer: layer.to_path_buf(),
        path: target.to_path_buf(),
        source,
    })
}

/// One layer for [`flatten_moving`]: its extracted directory, and whether it holds whiteouts or
/// opaque directories (its extraction counted them), which a moved subtree must be cleaned of.
pub struct MovableLayer {
    pub dir: PathBuf,
    pub markers: bool,
}

/// Builds `target` from `layers` (bottom first) by moving their entries in: a name new to
/// `target` moves whole (a directory with its subtree: one rename), a non-directory replaces what
/// is there (rename(2) replaces atomically), a directory present on both sides is merged into,
/// unless the layer's is opaque; whiteouts delete. Overlay's semantics, as [`flatten`], without
/// writing any data twice. The layers must be on `target`'s file system (a scratch store inside
/// it, named `reserved`, which no layer entry may be called) and are consumed; a layer that
/// appears again later in the image is copied instead, so the later use still finds it whole.
pub fn flatten_moving(
    layers: &[MovableLayer],
    target: &Path,
    reserved: &std::ffi::OsStr,
    preserve_owners: bool,
) -> Result<(), UnpackError> {
    for (i, layer) in layers.iter().enumerate() {
        if layers[i + 1..].iter().any(|l| l.dir == layer.dir) {
            copy_layer(&layer.dir, target, preserve_owners)?;
            continue;
        }
        let mover = Mover {
            preserve_owners,
            markers: layer.markers,
            reserved,
        };
        mover
            .move_dir(&layer.dir, target, true)
            .map_err(|source| UnpackError::Flatten {
                layer: layer.dir.clone(),
                path: target.to_path_buf(),
                source,
            })?;
        root_meta(&layer.dir, target, preserve_owners)?;
    }
    Ok(())
}

struct Mover<'a> {
    preserve_owners: bool,
    markers: bool,
    reserved: &'a std::ffi::OsStr,
}

impl Mover<'_> {
    fn move_dir(&self, src: &Path, dst: &Path, top: bool) -> io::Result<()> {
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            let name = entry.file_name();
            if top && name == self.reserved {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("the layer has an entry named {name:?}, the name of rcrun's scratch directory"),
                ));
            }
            let s = entry.path();
            let d = dst.join(&name);
            let meta = fs::symlink_metadata(&s)?;
            if is_whiteout(&meta) {
                remove_any(&d)?;
                continue;
            }
            if meta.is_dir() {
                match fs::symlink_metadata(&d) {
                    // Merge into a real directory (never through a symlink: lstat said dir).
                    Ok(m) if m.is_dir() && !(self.markers && is_opaque(&s)) => {
                        self.move_dir(&s, &d, false)?;
                        copy_meta(&meta, &d, self.preserve_owners)?;
                        continue;
                    }
                    Ok(_) => remove_any(&d)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                fs::rename(&s, &d)?;
                if self.markers {
                    // Nothing below `d` came from a lower layer: its whiteouts have nothing to
                    // delete and its opaque marks nothing to hide; neither belongs in `target`.
                    strip_markers(&d)?;
                }
                continue;
            }
            match fs::rename(&s, &d) {
                // A directory is in the way (EISDIR), or something rename cannot replace.
                Err(_) if fs::symlink_metadata(&d).is_ok_and(|m| m.is_dir()) => {
                    remove_any(&d)?;
                    fs::rename(&s, &d)?;
                }
                r => r?,
            }
        }
        Ok(())
    }
}

/// Removes the whiteouts and opaque marks of a subtree moved whole into the target.
fn strip_markers(dir: &Path) -> io::Result<()> {
    if let Ok(f) = fs::File::open(dir) {
        crate::sys::fs::fremovexattr(f.as_fd(), OPAQUE_XATTR).map_err(io::Error::from)?;
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if is_whiteout(&meta) {
            fs::remove_file(&path)?;
        } else if meta.is_dir() {
            strip_markers(&path)?;
        }
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

#[cfg(test)]
#[path = "tests_flatten.rs"]
mod tests;
